//! Services and their routes: which requests a service takes (host names and path
//! prefixes), its pool of backends in each region it runs in, and its sticky sessions.
//! A file without `[services.*]` has one implicit service, `default`, made of the
//! regions' own backends.

use std::time::Duration;

use super::pool::{Backend, Balance, HealthCheck, UpstreamTls};
use super::upstream::Upstream;

/// The name of the implicit service built from the `backends` of `[regions.*]`.
pub const IMPLICIT_SERVICE: &str = "default";

/// A service: the requests its routes match, served by its pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Unique service name (`[services.NAME]`, or [`IMPLICIT_SERVICE`]).
    pub name: String,
    /// Host names it answers: exact or wildcard. Empty: any host.
    pub hosts: Vec<HostPattern>,
    /// Path prefixes it answers (at least one; `/` matches every path).
    pub paths: Vec<String>,
    /// Requests no route matches go to this service (instead of a 404).
    pub default: bool,
    /// Built from the regions' own `backends` rather than a `[services.NAME]` table.
    pub implicit: bool,
    /// Its pool in each region it runs in, in region order (at most one per region).
    pub pools: Vec<Pool>,
    /// Sticky sessions by an inserted cookie; `None`: off.
    pub sticky: Option<Sticky>,
}

impl Service {
    /// Its pool in region `region` (an index into `Config::regions`).
    pub fn pool(&self, region: usize) -> Option<&Pool> {
        self.pools.iter().find(|p| p.region == region)
    }
}

/// A host name a route matches (stored lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// This name exactly.
    Exact(String),
    /// `*.SUFFIX`: any name ending in `.SUFFIX`, at any depth (holds `SUFFIX`).
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// A service's pool of backends in one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// The region (an index into `Config::regions`).
    pub region: usize,
    /// Its backends, in file order (empty in a region reached through its instances).
    pub backends: Vec<Backend>,
    /// How a backend is picked.
    pub balance: Balance,
    /// Active health checks (merged: global, region, service, pool).
    pub health: HealthCheck,
    /// TLS to the backends; plain HTTP when `None`.
    pub tls: Option<UpstreamTls>,
    /// The protocol spoken to the backends and how HTTP/2 connections are shared (merged:
    /// global, region, service, pool).
    pub upstream: Upstream,
    /// A backend that becomes usable ramps its weight up to full over this window.
    pub slow_start: Option<Duration>,
}

/// Sticky sessions: the first response sets a cookie naming the backend (opaquely); later
/// requests carrying it go to that backend while it is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// The cookie's name.
    pub cookie: String,
    /// `Max-Age`; `None`: a session cookie.
    pub max_age: Option<Duration>,
    /// The cookie's `Path`.
    pub path: String,
    /// `Secure`: always, never, or (`None`) when the request came over HTTPS.
    pub secure: Option<bool>,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite`.
    pub same_site: Option<SameSite>,
    /// What happens to a session whose backend is draining.
    pub draining: DrainingSessions,
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `Strict`.
    Strict,
    /// `Lax`.
    Lax,
    /// `None` (needs `Secure` in browsers).
    None,
}

impl SameSite {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Sessions pinned to a backend that is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainingSessions {
    /// Stay on it until it leaves (maintenance, down, removed): the default.
    Keep,
    /// Move to another backend at their next request (and get a new cookie).
    Move,
}

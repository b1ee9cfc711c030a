//! The validated configuration: what the rest of Meridian consumes.
//!
//! Every value here has passed validation: names resolve, ranges hold, durations parse.
//! Nothing in this module touches the file format; see `file.rs` for that layer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};

mod geodns;
mod limits;
mod mesh;
mod pool;
mod secrets;
mod services;
mod upstream;

pub use geodns::{GeoDns, RecordData, StaticRecord, Zone};
pub use limits::{Admin, Limits, Timeouts};
pub use mesh::{Instance, Mesh, MeshTls, Reach};
pub use pool::{
    Backend, BackendAddress, Balance, ClientCertificate, HashKey, HealthCheck, ProbeKind,
    UpstreamTls,
};
pub use secrets::{PrivateKey, Secret};
pub use services::{
    DrainingSessions, HostPattern, Pool, SameSite, Service, Sticky, IMPLICIT_SERVICE,
};
pub use upstream::{GrpcMethod, Upstream, UpstreamProtocol, GRPC_CODE_NAMES};

/// A fully validated Meridian configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from, if any.
    pub source: Option<PathBuf>,
    /// This instance's identity.
    pub node: Node,
    /// Where Meridian accepts traffic and serves its admin API.
    pub listeners: Listeners,
    /// Worker threads for the proxy service (pingora `threads`).
    pub threads: usize,
    /// Upstream and downstream timeouts.
    pub timeouts: Timeouts,
    /// Log level, format and the access log switch.
    pub logging: Logging,
    /// Regions in file order. `node.region` names one of them.
    pub regions: Vec<Region>,
    /// Where client locations come from.
    pub geoip: GeoIp,
    /// Who the client is: which peers may speak for it.
    pub client: ClientIdentity,
    /// How client location maps to an ordered list of regions.
    pub steering: Steering,
    /// How measured latency and distance rank regions.
    pub latency: Latency,
    /// Passive outlier detection from real traffic.
    pub outlier: Outlier,
    /// Retries of failed upstream attempts.
    pub retry: Retry,
    /// Hot reload settings.
    pub reload: Reload,
    /// DNS resolution of backend names.
    pub dns: Dns,
    /// Bounds on what clients may take: connections, header and body sizes, in-flight
    /// requests, memory.
    pub limits: Limits,
    /// Who may use the admin API's mutating endpoints.
    pub admin: Admin,
    /// How the instances of every region know each other.
    pub mesh: Mesh,
    /// The authoritative GeoDNS server (off by default).
    pub geodns: GeoDns,
    /// The services and their routes (at least one: a file without `[services.*]` has
    /// the implicit service [`IMPLICIT_SERVICE`] of the regions' backends).
    pub services: Vec<Service>,
}

impl Config {
    /// The index of `node.region` in [`Config::regions`].
    pub fn local_region_index(&self) -> usize {
        self.regions
            .iter()
            .position(|r| r.name == self.node.region)
            .unwrap_or(0)
    }

    /// Whether any backend is a DNS name (host name or SRV).
    pub fn uses_dns(&self) -> bool {
        self.backends().any(|b| b.address.as_static().is_none())
    }

    /// Every configured backend entry of every service's pools.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.services
            .iter()
            .flat_map(|s| &s.pools)
            .flat_map(|p| &p.backends)
    }

    /// Looks a service up by name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Looks a region up by name.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Every instance of every region, with its region's index.
    pub fn instances(&self) -> impl Iterator<Item = (usize, &Instance)> {
        self.regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.instances.iter().map(move |inst| (i, inst)))
    }

    /// A digest of the configuration without this instance's identity (`node`), its plain
    /// listener addresses and the file's path: instances deployed with the same file (or
    /// equivalent files) agree on it, so a half-rolled-out change shows. Secrets and keys
    /// count as whether they are set.
    pub fn digest(&self) -> String {
        let mut c = self.clone();
        c.source = None;
        c.node = Node {
            region: String::new(),
            name: String::new(),
        };
        // Listener addresses are the host's own business.
        c.listeners.http.clear();
        c.listeners.redirect_http.clear();
        c.listeners.admin = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        c.geodns.listen.clear();
        let text = format!("{c:?}");
        let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{h:016x}")
    }

    /// This process's own entry in the instance lists (`node.name`), if there are any.
    pub fn own_instance(&self) -> Option<&Instance> {
        self.instances()
            .find(|(_, i)| i.name == self.node.name)
            .map(|(_, i)| i)
    }
}

/// This instance's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The region this instance runs in; one of the configured regions.
    pub region: String,
    /// A name for this instance (defaults to `meridian-<region>`); sent in `Via`.
    pub name: String,
}

/// Listening addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Listeners {
    /// Plain HTTP listeners (HTTP/1.1 and h2c).
    pub http: Vec<SocketAddr>,
    /// The admin listener (`/metrics`, `/status`, `/healthz`, `/reload`).
    pub admin: SocketAddr,
    /// Whether every connection on the HTTP listeners starts with a PROXY protocol (v1 or
    /// v2) header; it is honoured from `client.trusted_proxies` only. (HTTPS listeners
    /// have their own switch, [`HttpsListener::proxy_protocol`].)
    pub proxy_protocol: bool,
    /// HTTPS listeners (HTTP/1.1 and h2 by ALPN).
    pub https: Vec<HttpsListener>,
    /// Plain HTTP listeners that only redirect to HTTPS (308).
    pub redirect_http: Vec<SocketAddr>,
    /// The `Strict-Transport-Security` value sent on responses to HTTPS requests.
    pub hsts: Option<String>,
    /// Whether HTTP/1 header names keep their case on the way through. Off (the default),
    /// they are sent in lower case to backends and clients (the common ones, such as `Host`
    /// and `Content-Length`, in their usual spelling), as HAProxy and Envoy send them and
    /// as HTTP/2 requires: a request keeps one header map instead of two.
    pub preserve_header_case: bool,
}

/// One HTTPS listener and the certificates it serves, chosen by SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsListener {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its certificates; exactly one has `default` set.
    pub certificates: Vec<ServerCertificate>,
    /// Whether every connection starts with a PROXY protocol (v1 or v2) header before the
    /// TLS handshake (an L4 load balancer in front); honoured from `client.trusted_proxies`
    /// only.
    pub proxy_protocol: bool,
}

/// A certificate chain and key an HTTPS listener serves, read from PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    /// The certificate chain file (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The private key file (PEM).
    pub key_file: PathBuf,
    /// Server names it is chosen for (lower-case; `*.example.com` matches one label).
    pub names: Vec<String>,
    /// Served when no name matches the client's SNI (or there is none).
    pub default: bool,
    /// The chain as read, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key as read.
    pub key: PrivateKey,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// A `tracing` filter directive, e.g. `info` or `meridian=debug,info`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Whether to write one access log line per request.
    pub access_log: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A region: a place with coordinates and a pool of backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Unique region name, e.g. `eu-west`.
    pub name: String,
    /// Latitude in degrees, -90..=90.
    pub latitude: f64,
    /// Longitude in degrees, -180..=180.
    pub longitude: f64,
    /// The region's backends, in file order.
    pub backends: Vec<Backend>,
    /// How a backend is picked within this region.
    pub balance: Balance,
    /// Active health check settings (global defaults merged with the region's own).
    pub health: HealthCheck,
    /// TLS to the backends; plain HTTP when `None`.
    pub tls: Option<UpstreamTls>,
    /// The protocol spoken to the backends and how HTTP/2 connections are shared.
    pub upstream: Upstream,
    /// A backend that becomes usable ramps its weight up over this window (`None`: off).
    /// With services, this and `balance`, `health` and `tls` are the defaults of every
    /// service's pool in the region.
    pub slow_start: Option<Duration>,
    /// The Meridian instances running in this region (the mesh, GeoDNS answers).
    pub instances: Vec<Instance>,
    /// How other regions' instances reach this region.
    pub reach: Reach,
}

/// DNS resolution of backend names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Name servers to ask (UDP, then TCP); the system's resolver configuration if empty.
    pub nameservers: Vec<SocketAddr>,
    /// The shortest time between two resolutions of a name (a floor on the record TTL).
    pub min_ttl: Duration,
    /// The longest time between two resolutions of a name (a ceiling on the record TTL).
    pub max_ttl: Duration,
    /// How long one query may take.
    pub timeout: Duration,
    /// Whether answers may name loopback addresses (127.0.0.0/8, ::1). Off by default: a
    /// backend name that resolves to this host is a server-side request forgery risk.
    /// Link-local, metadata (169.254.169.254, fd00:ec2::254), unspecified, multicast and
    /// broadcast addresses are always dropped.
    pub allow_loopback: bool,
}

/// Where client locations come from.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoIp {
    /// A MaxMind DB file; `None` means the DB-IP Country Lite database built into Meridian.
    pub database: Option<PathBuf>,
    /// Static CIDR → location overrides, consulted before the database.
    pub overrides: Vec<GeoOverride>,
}

/// A static CIDR → location override.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoOverride {
    /// The network it covers (longest prefix wins).
    pub network: IpNet,
    /// ISO 3166-1 alpha-2 country code, upper-case.
    pub country: String,
    /// Optional coordinates (latitude, longitude); the country centroid otherwise.
    pub coordinates: Option<(f64, f64)>,
}

/// Which peers may speak for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Steering: client location → ordered candidate regions.
#[derive(Debug, Clone, PartialEq)]
pub struct Steering {
    /// The policy.
    pub policy: SteeringPolicy,
    /// Country code (upper-case) → region indices, first match wins (used by `geo` and `default`).
    pub countries: BTreeMap<String, Vec<usize>>,
    /// Continent code (upper-case) → region indices.
    pub continents: BTreeMap<String, Vec<usize>>,
    /// Fixed region order for `failover` (region indices).
    pub order: Vec<usize>,
    /// Data residency: country code → the only regions allowed.
    pub residency_countries: BTreeMap<String, Vec<usize>>,
    /// Data residency: continent code → the only regions allowed.
    pub residency_continents: BTreeMap<String, Vec<usize>>,
    /// Whether to add `x-meridian-region` and `x-meridian-client-country` response headers.
    pub expose_headers: bool,
}

/// A steering policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteeringPolicy {
    /// Geo map where it matches, else proximity, else the local region first.
    Default,
    /// Only the explicit country/continent maps (then the local region first).
    Geo,
    /// Regions ordered by great-circle distance from the client.
    Proximity,
    /// The fixed `order`.
    Failover,
}

impl SteeringPolicy {
    /// The config spelling (`steering.policy = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            SteeringPolicy::Default => "default",
            SteeringPolicy::Geo => "geo",
            SteeringPolicy::Proximity => "proximity",
            SteeringPolicy::Failover => "failover",
        }
    }
}

/// Latency measurement and region ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// EWMA decay window.
    pub decay: Duration,
    /// Regions whose estimated cost is within this of the best keep their steering order.
    pub tolerance: Duration,
    /// Estimated round-trip time per 100 km of great-circle distance.
    pub rtt_per_100km: Duration,
    /// A constant added to every distance-based RTT estimate.
    pub rtt_base: Duration,
}

/// Passive outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive failures (connect error, timeout, 5xx) that eject a backend.
    pub consecutive_failures: u32,
    /// First ejection time; doubles on each repeat.
    pub base_ejection: Duration,
    /// Ceiling of the ejection time.
    pub max_ejection: Duration,
    /// Below this percentage of healthy backends in a region, spread over all of them.
    /// `None` disables the panic mode.
    pub panic_threshold: Option<u8>,
    /// At most this percentage of a region's backends may be ejected at once (Envoy's
    /// `max_ejection_percent`); one backend may always be ejected. 100 by default: a region
    /// whose backends all fail is better skipped (its traffic fails over to the next
    /// region) than kept; lower it where one region must not lose most of its backends
    /// to passive ejection alone.
    pub max_ejection_percent: u8,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Upstream attempts after the first one, across backends and regions.
    pub attempts: u32,
    /// `Retry-After` seconds sent with a 503 when no region can serve.
    pub retry_after: Duration,
    /// Retries allowed across all requests, as a percentage of requests (the retry budget:
    /// an outage must not multiply the load on what is left).
    pub budget_percent: u32,
    /// Retries per second always allowed, whatever the budget (low traffic still retries).
    pub min_per_second: u32,
    /// gRPC status codes (numbers) of a backend's trailers-only answer that are retried on
    /// another backend, as long as nothing of the response reached the client.
    pub grpc_on: Vec<u8>,
    /// gRPC methods that are safe to send again after a failure once the call was sent
    /// (like an idempotent HTTP method).
    pub grpc_idempotent: Vec<GrpcMethod>,
}

/// Hot reload settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reload {
    /// Watch the config file for changes.
    pub watch: bool,
    /// Debounce window for file change events.
    pub debounce: Duration,
}

//! How Meridian speaks to a region's backends: the HTTP version (HTTP/1.1, HTTP/2 over TLS
//! by ALPN, cleartext HTTP/2 by prior knowledge, or whatever ALPN picks) and how its
//! HTTP/2 connections are shared; and what of gRPC the retry policy may resend.

use std::time::Duration;

/// The protocol spoken to a region's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS when the region has `tls`). The default.
    #[default]
    Http1,
    /// HTTP/2 over TLS, negotiated by ALPN `h2` (needs the region's `tls`).
    H2,
    /// Cleartext HTTP/2 with prior knowledge (no TLS).
    H2c,
    /// Over TLS, whatever ALPN picks: `h2` if the backend offers it, else HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Auto => "auto",
        }
    }

    /// Whether HTTP/2 may be spoken (always for `h2`/`h2c`, by ALPN for `auto`).
    pub fn allows_h2(self) -> bool {
        !matches!(self, UpstreamProtocol::Http1)
    }
}

impl std::fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A region's upstream connection settings (`[upstream]` merged with
/// `[regions.NAME.upstream]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// The protocol spoken to the backends.
    pub protocol: UpstreamProtocol,
    /// Concurrent streams one HTTP/2 connection to a backend carries before another is
    /// opened (the backend's own `SETTINGS_MAX_CONCURRENT_STREAMS` may lower it).
    pub h2_max_streams: u32,
    /// HTTP/2 `PING` frames on each connection this often, so that a dead connection is
    /// found and NAT/firewall state kept; `None`: no pings.
    pub h2_ping_interval: Option<Duration>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            protocol: UpstreamProtocol::Http1,
            h2_max_streams: 100,
            h2_ping_interval: None,
        }
    }
}

/// gRPC status codes, by number, as the retry policy and metrics name them.
pub const GRPC_CODE_NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// A gRPC method pattern of `retry.grpc_idempotent`: `/package.Service/Method`, or
/// `/package.Service/*` for every method of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMethod {
    /// `/package.Service/`, with both slashes.
    pub service: String,
    /// The method name; `None` for `*`.
    pub method: Option<String>,
}

impl GrpcMethod {
    /// Whether a request path (`/package.Service/Method`) is this method (or one of this
    /// service's methods).
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.service.as_str()) {
            Some(rest) => match &self.method {
                None => !rest.is_empty() && !rest.contains('/'),
                Some(m) => rest == m,
            },
            None => false,
        }
    }
}

//! What a pool of backends is made of: the backends and their addresses, the balancing
//! algorithm, the active health check and TLS to the backends.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::secrets::PrivateKey;

/// TLS to a region's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The server name sent and verified; the backend's IP (or host name) when `None`.
    pub sni: Option<String>,
    /// The CA file the backends' certificates are verified against (system roots if `None`).
    pub ca_file: Option<PathBuf>,
    /// The CA certificates read from `ca_file`.
    pub ca: Vec<CertificateDer<'static>>,
    /// A client certificate presented to the backends.
    pub client_cert: Option<ClientCertificate>,
    /// Skip certificate verification entirely (explicit opt-in; warned about at load).
    pub insecure_skip_verify: bool,
}

/// A client certificate chain and key for upstream mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The chain file (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The key file (PEM).
    pub key_file: PathBuf,
    /// The chain as read.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key as read.
    pub key: PrivateKey,
}

/// One upstream backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The backend's address: static, or a DNS name resolved at run time.
    pub address: BackendAddress,
    /// Relative weight, >= 1. Every address a host name resolves to gets it; an SRV
    /// target gets it times the record's weight (capped at 1000).
    pub weight: u32,
    /// A backup: used only while none of the region's primary backends is usable (an SRV
    /// name's higher-priority groups are backups of its lower ones in the same way).
    pub backup: bool,
}

/// Where a backend is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendAddress {
    /// A literal IP and port.
    Static(SocketAddr),
    /// A host name and port, resolved (A and AAAA) and re-resolved on the record TTL;
    /// every address becomes a backend.
    Host {
        /// The DNS name, lower-case, without a trailing dot.
        name: String,
        /// The port.
        port: u16,
    },
    /// A DNS SRV name such as `_http._tcp.api.example.internal`; every target's
    /// addresses, on the record's port, become backends.
    Srv(String),
}

impl BackendAddress {
    /// The static address, if this is one.
    pub fn as_static(&self) -> Option<SocketAddr> {
        match self {
            BackendAddress::Static(a) => Some(*a),
            _ => None,
        }
    }
}

impl std::fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddress::Static(a) => write!(f, "{a}"),
            BackendAddress::Host { name, port } => write!(f, "{name}:{port}"),
            BackendAddress::Srv(name) => write!(f, "srv:{name}"),
        }
    }
}

/// Load-balancing algorithm within a region's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Power of two choices over peak-EWMA latency × (in-flight + 1). The default.
    P2cPeakEwma,
    /// Plain round robin, ignoring weights.
    RoundRobin,
    /// Smooth weighted round robin.
    Weighted,
    /// Fewest in-flight requests (ties broken by weight).
    LeastConnections,
    /// Consistent hashing on a request key, for session affinity.
    ConsistentHash(HashKey),
}

impl Balance {
    /// The config spelling (`balance = "..."`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::P2cPeakEwma => "p2c_ewma",
            Balance::RoundRobin => "round_robin",
            Balance::Weighted => "weighted",
            Balance::LeastConnections => "least_connections",
            Balance::ConsistentHash(_) => "consistent_hash",
        }
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request key for consistent hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value (name stored lower-case).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client IP (after trusted-proxy resolution).
    ClientIp,
}

/// Active health check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: ProbeKind,
    /// Time between probes of one backend.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

/// What a health probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// `GET path` (over the pool's upstream protocol); healthy when the status is in
    /// `expect`.
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Optional `Host` header (defaults to the backend address).
        host: Option<String>,
        /// Accepted status codes, e.g. 200..=399.
        expect: RangeInclusive<u16>,
    },
    /// A TCP connect; healthy when it succeeds.
    Tcp,
    /// A gRPC `grpc.health.v1.Health/Check` call over HTTP/2; healthy when it answers
    /// `SERVING`.
    Grpc {
        /// The service asked about (`""`: the server as a whole).
        service: String,
        /// Optional `:authority` (defaults to the backend address).
        authority: Option<String>,
    },
}

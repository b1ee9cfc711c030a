//! Timeouts and limits: how long and how much a client or a backend may take, and who may
//! use the admin API's mutating endpoints.

use std::time::Duration;

use super::secrets::Secret;

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Upstream TCP connect timeout.
    pub connect: Duration,
    /// Upstream read timeout (each read, including waiting for the response header).
    pub read: Duration,
    /// Upstream write timeout.
    pub write: Duration,
    /// How long an idle upstream keep-alive connection is kept in the pool.
    pub idle: Duration,
    /// How long an idle downstream keep-alive connection is kept open.
    pub downstream_idle: Duration,
    /// How long a new client connection may stay silent before its first request begins
    /// (the h2c preface detection and the HTTP/2 handshake included).
    pub first_byte: Duration,
    /// The longest a request header may take to arrive once it has begun (`408` past it).
    pub request_header: Duration,
    /// How long a write to a client may block (a client that stops reading is cut).
    pub client_write: Duration,
    /// How long an HTTP/2 client connection with no open stream is kept.
    pub h2_idle: Duration,
    /// How long an upgraded connection (WebSocket) or a long-lived stream (gRPC,
    /// server-sent events) may stay silent in both directions, once its response header
    /// has arrived, before it is closed.
    pub tunnel: Duration,
    /// On stop or graceful upgrade, how long in-flight requests get to finish.
    pub shutdown_grace: Duration,
}

/// Bounds on what clients may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request header (`431` beyond).
    pub max_header_size: usize,
    /// The largest request body (`413` beyond); `None`: unlimited.
    pub max_body_size: Option<u64>,
    /// Client connections per listener at once (more are refused, counted).
    pub max_connections: u32,
    /// Client connections per client IP at once, per listener.
    pub max_connections_per_ip: u32,
    /// Requests one keep-alive connection may carry before it is closed.
    pub max_requests_per_connection: u32,
    /// Concurrent streams per HTTP/2 client connection.
    pub max_concurrent_streams: u32,
    /// Requests in flight at once; beyond, new requests are shed (`503`, counted).
    pub max_inflight: u32,
    /// Resident memory above which new requests are shed; `None`: no memory limit.
    pub max_memory: Option<u64>,
}

/// Who may use the admin API's mutating endpoints (`POST /reload`, runtime operations).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admin {
    /// The bearer token mutating requests must carry (from `admin.token` or the file
    /// `admin.token_file`); required when the admin listener is not loopback-only.
    pub token: Option<Secret>,
    /// Host names the admin API answers to besides IP literals and `localhost` (a
    /// defence against DNS rebinding).
    pub hosts: Vec<String>,
    /// Where runtime backend states (drain, maintenance, weight) are kept across
    /// restarts; `None`: they last as long as the process.
    pub state_file: Option<std::path::PathBuf>,
}

//! Why a health probe failed ([`ProbeError`]), and whether that says anything about the
//! backend.

use std::time::Duration;

use crate::control::overload::local_exhaustion;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS server name is not a valid name.
    #[error("tls: server name {name:?}: {reason}")]
    ServerName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The TLS handshake failed (e.g. a certificate that does not verify).
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// Sending the request failed.
    #[error("write: {0}")]
    Write(std::io::Error),
    /// Reading the response failed.
    #[error("read: {0}")]
    Read(std::io::Error),
    /// The backend closed the connection before a status line.
    #[error("connection closed before a status line")]
    Closed,
    /// The status is outside the expected range.
    #[error("status {0}")]
    Status(u16),
    /// The response header is over 16 KiB.
    #[error("response header too large")]
    HeaderTooLarge,
    /// The response is not HTTP.
    #[error("bad response: {0}")]
    BadResponse(httparse::Error),
    /// No answer within the probe timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The HTTP/2 connection or exchange failed.
    #[error("h2: {0}")]
    Http2(String),
    /// A gRPC probe whose TLS handshake did not pick `h2`.
    #[error("tls: the backend did not negotiate h2 (ALPN)")]
    NotH2,
    /// The gRPC health check did not answer `SERVING`.
    #[error("grpc: {0}")]
    Grpc(String),
}

impl ProbeError {
    /// Whether the probe failed for a lack of this host's own resources (file descriptors,
    /// ports): it says nothing about the backend and must not count against it.
    pub fn is_local(&self) -> bool {
        matches!(self, ProbeError::Connect(e) if e.raw_os_error().is_some_and(local_exhaustion))
    }
}

//! The request path's own counters (the per-backend and per-region ones belong to the
//! routing core).

use prometheus::{IntCounter, Registry};

use super::grpc::GrpcMetrics;
use super::tunnel::TunnelMetrics;
use crate::observe::metrics::counter;

/// Counters of outcomes that belong to no backend.
#[derive(Clone)]
pub struct RequestMetrics {
    /// Requests answered 503 because no allowed region had a usable backend.
    pub no_backend: IntCounter,
    /// Requests whose client-address headers were malformed (treated as absent).
    pub bad_client_header: IntCounter,
    /// Retries the retry budget refused.
    pub retries_refused: IntCounter,
    /// Upstream connections that failed for a lack of the proxy's own resources (file
    /// descriptors, ephemeral ports, memory): not counted against any backend.
    pub local_errors: IntCounter,
    /// Requests whose client stopped sending the body (`408`): not counted against any
    /// backend.
    pub client_stalls: IntCounter,
    /// gRPC calls by final status.
    pub grpc: GrpcMetrics,
    /// Upgraded connections (WebSocket).
    pub tunnels: TunnelMetrics,
    /// Requests no route matched (`404`).
    pub unrouted: IntCounter,
}

impl RequestMetrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &Registry) -> Self {
        RequestMetrics {
            no_backend: counter(
                registry,
                "meridian_no_backend_total",
                "Requests answered 503 because no allowed region had a usable backend",
            ),
            bad_client_header: counter(
                registry,
                "meridian_client_header_invalid_total",
                "Malformed X-Forwarded-For/Forwarded headers from trusted peers",
            ),
            retries_refused: counter(
                registry,
                "meridian_retries_refused_total",
                "Retries refused by the retry budget (retry.budget_percent, retry.min_per_second)",
            ),
            local_errors: counter(
                registry,
                "meridian_upstream_local_errors_total",
                "Upstream connects that failed for a lack of the proxy's own resources (file descriptors, ports), not blamed on the backend",
            ),
            client_stalls: counter(
                registry,
                "meridian_client_stalls_total",
                "Requests whose client stopped sending the request body (answered 408), not blamed on the backend",
            ),
            grpc: GrpcMetrics::register(registry),
            tunnels: TunnelMetrics::register(registry),
            unrouted: counter(
                registry,
                "meridian_unrouted_requests_total",
                "Requests no route matched and no default service took (answered 404)",
            ),
        }
    }
}

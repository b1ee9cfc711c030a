//! The instance's metric registry and its text exposition. Every component registers its
//! own families in it, next to its code (the routing core's per-backend and per-region
//! families, the request path's, reload's, discovery's, the mesh's).

use prometheus::{Encoder, Registry, TextEncoder};

pub use meridian_routing::metrics::{counter, counter_vec, gauge, gauge_vec};

/// The text exposition of every metric in `registry`.
pub fn encode(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

//! Meridian's authoritative GeoDNS: answers a zone's geo-steered names with the public
//! addresses of the healthy instances of the best region for the client (EDNS Client
//! Subnet or the resolver's address → GeoIP → the routing core's plan → the mesh's
//! health view), and the rest of the zone (SOA, NS, static records) as any authoritative
//! server does. Wire format by hickory-proto; no pingora.

pub mod answer;
pub mod ecs;
pub mod health;
pub mod metrics;
pub mod server;
pub mod status;
pub mod zones;

pub use answer::{Answerer, Choice, State, Transport};
pub use health::{Health, InstanceState};
pub use metrics::DnsMetrics;
pub use server::{Listeners, ServeError};

/// Errors building GeoDNS state from a config.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A name the config validated is not a DNS name to hickory.
    #[error("invalid DNS name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

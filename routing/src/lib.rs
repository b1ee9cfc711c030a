//! Meridian's routing core, with no pingora in it: the immutable routing [`Snapshot`] built
//! from a validated config (routes to services, each service's pools by region), the live
//! state of every backend by stable ID (health, latency, outlier ejection, the operator's
//! [`admin`] state, slow start), steering and ranking ([`plan`]), the balancers
//! ([`selection`], one file each) and the one routing decision ([`Snapshot::route`], then
//! [`Snapshot::next_backend`]) that the proxy, the tests and the benches all call.

#![forbid(unsafe_code)]

pub mod admin;
pub mod answers;
pub mod backend;
pub mod budget;
pub mod clock;
pub mod decision;
pub mod health;
pub mod latency;
pub mod metrics;
pub mod outlier;
pub mod plan;
pub mod routes;
pub mod selection;
pub mod snapshot;

pub use backend::BackendState;
pub use decision::{Pick, Tried};
pub use health::Health;
pub use metrics::RoutingMetrics;
pub use plan::Plan;
pub use snapshot::{RegionPool, RegionState, ServicePools, Snapshot, StickyTable};

//! Steering and ranking: a client's location → the ordered list of candidate regions.
//!
//! 1. **Steer** by policy (`geo` maps, `proximity`, `failover` order, or the default mix),
//!    then apply data residency: a restricted client only ever sees its allowed regions.
//! 2. **Rank** (all policies but `failover`): each candidate gets an estimated cost, the
//!    distance-based client→region RTT plus the latency measured from this instance to the
//!    region's backends. Regions within `latency.tolerance` of the best keep their steering
//!    order; a region whose measured latency is degraded beyond the tolerance loses its
//!    place (the others follow by cost), and regions with no usable backend go last.
//!
//! Clients located by a country-level database (the built-in DB-IP Country Lite, MaxMind
//! Country) sit at their country's centroid, so step 1 and the distance part of step 2 are
//! precomputed per country when the snapshot is built ([`CountryTable`]); a request then
//! costs one table lookup plus a linear pass over the candidates' measured latencies.
//! Clients with their own coordinates (a City database, an override) are computed on the
//! fly. Nothing here allocates for up to [`INLINE_REGIONS`] regions.

mod anywhere;
mod country;
mod rank;
mod steer;
mod view;

use meridian_config::SteeringPolicy;
use meridian_geoip::Location;

pub use anywhere::plan_anywhere;
pub use country::CountryTable;
pub use rank::rank;
pub use steer::steer;
pub use view::{distance_rtt_us, Plan, RegionList, View, INLINE_REGIONS};

/// Steers and ranks: the full decision for a client at `loc` (`None`: location unknown),
/// over one service's pools (`snap`); the plan's `service` is left for the caller to set.
pub fn plan(snap: View<'_>, table: &CountryTable, loc: Option<&Location>) -> Plan {
    let rank_it = snap.config.steering.policy != SteeringPolicy::Failover;
    if let Some(pre) = table.get(loc) {
        let mut plan = pre.plan.clone();
        if rank_it {
            rank::rank_with(
                snap,
                &mut plan.regions,
                |i| pre.rtt_us[i],
                |i| snap.pool(i).map_or(0, |r| r.state.measured_us()),
            );
        }
        return plan;
    }
    let mut plan = steer(snap, loc);
    if rank_it {
        rank::rank(snap, loc.and_then(|l| l.coordinates), &mut plan.regions);
    }
    plan
}

#[cfg(test)]
mod tests;

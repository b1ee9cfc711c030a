//! The plan as any instance would make it, for answers that must not depend on which
//! instance gives them (GeoDNS): no "this instance's region first".

use meridian_config::SteeringPolicy;
use meridian_geoip::{great_circle_km, Location};

use super::country::CountryTable;
use super::rank::rank_with;
use super::steer::steer;
use super::view::{distance_rtt_us, micros, Plan, RegionList, View};

/// Steers and ranks for a client at `loc` like [`super::plan`], but from no instance's
/// point of view:
///
/// - where steering falls back to "this instance's region first, then by distance from
///   it" (no map entry, unknown location), it uses `neutral_order` instead (the config's
///   region order);
/// - ranking measures each region by the latency its own instance reports for its
///   backends ([`crate::snapshot::RegionState::reported_latency`]; this instance's own
///   measurement for its own region), not by this instance's round trip to it, and a
///   client of unknown place has no distance term.
///
/// So instances that share the mesh's view reach the same plan. Allocation-free like
/// [`super::plan`], and like it served from a per-country table (`table`, built by
/// [`CountryTable::build_anywhere`]) for country-level clients.
pub fn plan_anywhere(
    snap: View<'_>,
    local: usize,
    neutral_order: &RegionList,
    table: &CountryTable,
    loc: Option<&Location>,
) -> Plan {
    let view = View {
        local_order: neutral_order,
        ..snap
    };
    let rank_it = snap.config.steering.policy != SteeringPolicy::Failover;
    let measured = |i: usize| {
        let Some(pool) = snap.pool(i) else {
            return 0;
        };
        match pool.state.reported_latency() {
            Some(us) if i != local => us,
            _ => pool.state.measured_us(),
        }
    };
    if let Some(pre) = table.get(loc) {
        let mut plan = pre.plan.clone();
        if rank_it {
            rank_with(view, &mut plan.regions, |i| pre.rtt_us[i], measured);
        }
        return plan;
    }
    let mut plan = steer(view, loc);
    if !rank_it {
        return plan;
    }
    match loc.and_then(|l| l.coordinates) {
        Some(from) => rank_with(
            view,
            &mut plan.regions,
            |i| {
                let at = snap.coords.get(i).copied().unwrap_or(from);
                micros(distance_rtt_us(view, great_circle_km(from, at)))
            },
            measured,
        ),
        None => rank_with(view, &mut plan.regions, |_| 0, measured),
    }
    plan
}

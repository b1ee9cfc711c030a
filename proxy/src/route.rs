//! Steering and ranking: a client's location → the ordered list of candidate regions.
//!
//! 1. **Steer** by policy (`geo` maps, `proximity`, `failover` order, or the default mix),
//!    then apply data residency: a restricted client only ever sees its allowed regions.
//! 2. **Rank** (all policies but `failover`): each candidate gets an estimated cost, the
//!    distance-based client→region RTT plus the latency measured from this instance to the
//!    region's backends. Regions within `latency.tolerance` of the best keep their steering
//!    order, the others follow by cost, and regions with no usable backend go last.
//!
//! Nothing here allocates for up to [`INLINE_REGIONS`] regions.

use meridian_config::SteeringPolicy;
use meridian_geoip::{great_circle_km, Coordinates, Location};
use smallvec::SmallVec;

use crate::snapshot::Snapshot;

/// Candidate lists up to this many regions live on the stack.
pub const INLINE_REGIONS: usize = 16;

/// An ordered list of region indices.
pub type RegionList = SmallVec<[u16; INLINE_REGIONS]>;

/// The outcome of steering for one request.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Candidate regions, best first.
    pub regions: RegionList,
    /// Whether data residency limited the list.
    pub restricted: bool,
}

/// Estimated round-trip time in microseconds over `km` of fibre.
pub fn distance_rtt_us(snap: &Snapshot, km: f64) -> f64 {
    let lat = &snap.config.latency;
    lat.rtt_base.as_secs_f64() * 1e6 + km / 100.0 * lat.rtt_per_100km.as_secs_f64() * 1e6
}

/// Steers and ranks: the full decision for a client at `loc` (`None`: location unknown).
pub fn plan(snap: &Snapshot, loc: Option<&Location>) -> Plan {
    let mut plan = steer(snap, loc);
    if snap.config.steering.policy != SteeringPolicy::Failover {
        rank(snap, loc.and_then(|l| l.coordinates), &mut plan.regions);
    }
    plan
}

/// Regions ordered by distance from `from`.
fn by_distance(snap: &Snapshot, from: Coordinates) -> RegionList {
    let mut d: SmallVec<[(f64, u16); INLINE_REGIONS]> = snap
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| (great_circle_km(from, r.coords), i as u16))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    d.into_iter().map(|(_, i)| i).collect()
}

fn push_unique(list: &mut RegionList, items: impl IntoIterator<Item = u16>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// Step 1: the policy's order, then residency.
pub fn steer(snap: &Snapshot, loc: Option<&Location>) -> Plan {
    let steering = &snap.config.steering;
    let mut list = RegionList::new();
    let geo_match = || -> Option<&Vec<usize>> {
        let loc = loc?;
        steering.countries.get(loc.country.as_str()).or_else(|| {
            loc.continent
                .and_then(|c| steering.continents.get(c.code()))
        })
    };
    // The fallback tail: by proximity to the client if its coordinates are known, else the
    // local region first and then by proximity to this node.
    let tail = || match loc.and_then(|l| l.coordinates) {
        Some(c) => by_distance(snap, c),
        None => snap.local_order.clone(),
    };
    match steering.policy {
        SteeringPolicy::Failover => {
            list.extend(steering.order.iter().map(|&i| i as u16));
        }
        SteeringPolicy::Geo => {
            if let Some(m) = geo_match() {
                push_unique(&mut list, m.iter().map(|&i| i as u16));
            }
            push_unique(&mut list, snap.local_order.iter().copied());
        }
        SteeringPolicy::Proximity => list = tail(),
        SteeringPolicy::Default => {
            if let Some(m) = geo_match() {
                push_unique(&mut list, m.iter().map(|&i| i as u16));
            }
            push_unique(&mut list, tail());
        }
    }
    let mut restricted = false;
    if let Some(loc) = loc {
        let allowed = steering
            .residency_countries
            .get(loc.country.as_str())
            .or_else(|| {
                loc.continent
                    .and_then(|c| steering.residency_continents.get(c.code()))
            });
        if let Some(allowed) = allowed {
            restricted = true;
            list.retain(|i| allowed.contains(&usize::from(*i)));
            // Allowed regions the policy did not list (e.g. a failover order) still qualify.
            push_unique(&mut list, allowed.iter().map(|&i| i as u16));
        }
    }
    Plan {
        regions: list,
        restricted,
    }
}

/// Step 2: reorder by estimated cost with a tolerance band that keeps the steering order.
pub fn rank(snap: &Snapshot, client: Option<Coordinates>, list: &mut RegionList) {
    if list.len() < 2 {
        return;
    }
    let from = client.unwrap_or(snap.node_coords);
    let tolerance = snap.config.latency.tolerance.as_secs_f64() * 1e6;
    // (steering position, cost, usable, region)
    let mut scored: SmallVec<[(usize, f64, bool, u16); INLINE_REGIONS]> = list
        .iter()
        .enumerate()
        .map(|(pos, &i)| {
            let r = &snap.regions[usize::from(i)];
            let measured = f64::from(r.state.measured_us());
            let cost = distance_rtt_us(snap, great_circle_km(from, r.coords)) + measured;
            (pos, cost, r.state.usable() > 0, i)
        })
        .collect();
    let best = scored
        .iter()
        .filter(|s| s.2)
        .map(|s| s.1)
        .fold(f64::INFINITY, f64::min);
    // Sort key: usable first; within tolerance of the best by steering position; the rest by cost.
    scored.sort_by(|a, b| {
        let band = |s: &(usize, f64, bool, u16)| match (s.2, s.1 <= best + tolerance) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        };
        band(a).cmp(&band(b)).then_with(|| match band(a) {
            0 | 2 => a.0.cmp(&b.0),
            _ => a.1.total_cmp(&b.1),
        })
    });
    for (slot, s) in list.iter_mut().zip(scored.iter()) {
        *slot = s.3;
    }
}

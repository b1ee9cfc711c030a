//! Step 1 of a plan: the steering policy's order of regions, then data residency.

use meridian_config::SteeringPolicy;
use meridian_geoip::{great_circle_km, Coordinates, Location};
use smallvec::SmallVec;

use super::view::{Plan, RegionList, View, INLINE_REGIONS};

/// The service's regions ordered by distance from `from`.
fn by_distance(snap: View<'_>, from: Coordinates) -> RegionList {
    let mut d: SmallVec<[(f64, u16); INLINE_REGIONS]> = snap
        .coords
        .iter()
        .enumerate()
        .filter(|(i, _)| snap.present(*i))
        .map(|(i, c)| (great_circle_km(from, *c), i as u16))
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

/// Step 1: the policy's order, then residency; only regions the service runs in.
pub fn steer(snap: View<'_>, loc: Option<&Location>) -> Plan {
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
    list.retain(|i| snap.present(usize::from(*i)));
    Plan {
        preferred: list.first().copied(),
        regions: list,
        restricted,
        service: 0,
    }
}

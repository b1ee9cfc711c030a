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
    /// The region steering put first, before ranking by health and latency: a request
    /// served elsewhere counts as a failover from it.
    pub preferred: Option<u16>,
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
        preferred: list.first().copied(),
        regions: list,
        restricted,
    }
}

/// Step 2: demote regions whose measured latency is degraded.
///
/// Each candidate's estimated cost is the distance-based client→region RTT plus the latency
/// measured from this instance to the region's usable backends. A region keeps its steering
/// place unless it is *degraded*: both its cost and its measured latency exceed the best
/// candidate's by more than `latency.tolerance`. Distance alone never demotes a region (the
/// steering step already ordered by distance or by the operator's map), and noise within the
/// tolerance never reorders (no flapping). Degraded regions follow, cheapest first; regions
/// with no usable backend go last.
pub fn rank(snap: &Snapshot, client: Option<Coordinates>, list: &mut RegionList) {
    /// One candidate's score.
    struct Scored {
        pos: usize,
        cost: f64,
        measured: f64,
        usable: bool,
        region: u16,
    }
    if list.len() < 2 {
        return;
    }
    let from = client.unwrap_or(snap.node_coords);
    let tolerance = snap.config.latency.tolerance.as_secs_f64() * 1e6;
    let mut scored: SmallVec<[Scored; INLINE_REGIONS]> = list
        .iter()
        .enumerate()
        .map(|(pos, &i)| {
            let r = &snap.regions[usize::from(i)];
            let measured = f64::from(r.state.measured_us());
            Scored {
                pos,
                cost: distance_rtt_us(snap, great_circle_km(from, r.coords)) + measured,
                measured,
                usable: r.state.usable() > 0,
                region: i,
            }
        })
        .collect();
    let (best_cost, best_measured) = scored
        .iter()
        .filter(|s| s.usable)
        .fold((f64::INFINITY, f64::INFINITY), |(c, m), s| {
            (c.min(s.cost), m.min(s.measured))
        });
    let band = |s: &Scored| {
        if !s.usable {
            2
        } else if s.cost > best_cost + tolerance && s.measured > best_measured + tolerance {
            1
        } else {
            0
        }
    };
    scored.sort_by(|a, b| {
        band(a).cmp(&band(b)).then_with(|| match band(a) {
            1 => a.cost.total_cmp(&b.cost),
            _ => a.pos.cmp(&b.pos),
        })
    });
    for (slot, s) in list.iter_mut().zip(scored.iter()) {
        *slot = s.region;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use meridian_geoip::{country_info, CountryCode, LocationSource, Locator};
    use std::sync::Arc;

    const REGIONS: &str = r#"
[regions.us-east]
latitude = 39.04
longitude = -77.49
backends = [{ address = "127.0.0.1:1001" }]

[regions.eu-west]
latitude = 53.35
longitude = -6.26
backends = [{ address = "127.0.0.1:1002" }]

[regions.eu-central]
latitude = 50.11
longitude = 8.68
backends = [{ address = "127.0.0.1:1003" }]

[regions.ap-southeast]
latitude = 1.29
longitude = 103.85
backends = [{ address = "127.0.0.1:1004" }]
"#;

    fn snapshot(extra: &str) -> Snapshot {
        let text = format!("[node]\nregion = \"us-east\"\n{extra}\n{REGIONS}");
        let config = meridian_config::parse(&text, "test.toml", None).unwrap();
        let locator = Arc::new(Locator::builtin(Vec::new()).unwrap());
        let snap = Snapshot::build(
            Arc::new(config),
            locator,
            None,
            &Metrics::new(),
            &Default::default(),
        )
        .unwrap();
        for r in &snap.regions {
            r.state.publish(0, 1);
        }
        snap
    }

    fn at(country: &str) -> Location {
        let cc = CountryCode::parse(country).unwrap();
        let (continent, coords) = country_info(cc).unwrap();
        Location {
            country: cc,
            continent: Some(continent),
            coordinates: Some(coords),
            source: LocationSource::Database,
        }
    }

    fn names(snap: &Snapshot, plan: &Plan) -> Vec<String> {
        plan.regions
            .iter()
            .map(|&i| snap.regions[usize::from(i)].name.to_string())
            .collect()
    }

    #[test]
    fn default_policy_uses_the_map_then_proximity_then_local() {
        let snap = snapshot("[steering.countries]\nGB = [\"eu-central\"]\n[steering.continents]\nOC = [\"us-east\"]\n");
        let gb = plan(&snap, Some(&at("GB")));
        assert_eq!(names(&snap, &gb)[0], "eu-central", "explicit map wins");
        assert_eq!(names(&snap, &gb)[1], "eu-west", "then nearest");
        assert_eq!(
            names(&snap, &plan(&snap, Some(&at("AU"))))[0],
            "us-east",
            "continent map"
        );
        assert_eq!(
            names(&snap, &plan(&snap, Some(&at("JP")))),
            ["ap-southeast", "eu-central", "eu-west", "us-east"],
            "unmapped: by distance from the client"
        );
        assert_eq!(
            names(&snap, &plan(&snap, None)),
            ["us-east", "eu-west", "eu-central", "ap-southeast"],
            "unknown: local first, then by distance from this node"
        );
    }

    #[test]
    fn residency_never_leaves_the_allowed_regions() {
        let snap = snapshot(
            "[steering]\npolicy = \"failover\"\norder = [\"us-east\", \"ap-southeast\"]\n[residency]\ncountries = { DE = [\"eu-central\", \"eu-west\"] }\n",
        );
        let de = plan(&snap, Some(&at("DE")));
        assert!(de.restricted);
        assert_eq!(names(&snap, &de), ["eu-central", "eu-west"]);
        // Even with both allowed regions down the list does not grow.
        for r in &snap.regions {
            r.state.publish(0, 0);
        }
        assert_eq!(
            names(&snap, &plan(&snap, Some(&at("DE")))),
            ["eu-central", "eu-west"]
        );
        let us = plan(&snap, Some(&at("US")));
        assert!(!us.restricted);
        assert_eq!(
            names(&snap, &us),
            ["us-east", "ap-southeast"],
            "failover keeps its fixed order"
        );
    }

    #[test]
    fn proximity_policy_orders_by_distance() {
        let snap = snapshot("[steering]\npolicy = \"proximity\"\n");
        assert_eq!(
            names(&snap, &plan(&snap, Some(&at("PL")))),
            ["eu-central", "eu-west", "us-east", "ap-southeast"]
        );
    }

    #[test]
    fn ranking_keeps_order_within_tolerance_and_demotes_degraded_regions() {
        let snap = snapshot(
            "[latency]\ntolerance = \"20ms\"\n[steering.countries]\nFR = [\"eu-west\", \"eu-central\"]\n",
        );
        let fr = || names(&snap, &plan(&snap, Some(&at("FR"))));
        // Equal measurements: the map order holds (eu-central is nearer to France, but
        // within tolerance the steering order wins: no flapping on noise).
        assert_eq!(fr()[..2], ["eu-west", "eu-central"]);
        // eu-west measures 10 ms slower: still within the 20 ms tolerance.
        snap.regions[1].state.publish(10_000, 1);
        assert_eq!(fr()[..2], ["eu-west", "eu-central"]);
        // 60 ms slower: degraded beyond tolerance, it loses its place.
        snap.regions[1].state.publish(60_000, 1);
        assert_eq!(fr()[..2], ["eu-central", "us-east"]);
        assert_eq!(fr()[3], "eu-west", "ranked by cost: {:?}", fr());
        // A region with no usable backend goes last.
        snap.regions[1].state.publish(0, 1);
        snap.regions[2].state.publish(0, 0);
        assert_eq!(*fr().last().unwrap(), "eu-central");
    }
}

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

use meridian_config::SteeringPolicy;
use meridian_geoip::{great_circle_km, Coordinates, Location};
use smallvec::SmallVec;

use crate::snapshot::Snapshot;

/// Candidate lists up to this many regions live on the stack.
pub const INLINE_REGIONS: usize = 64;

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

/// Steering results and distance RTTs precomputed for clients at a country's centroid (and
/// for clients of unknown location), indexed by country code.
#[derive(Debug, Default)]
pub struct CountryTable {
    /// Slot `(a - 'A') * 26 + (b - 'A')` for country `ab`.
    countries: Vec<Option<Precomputed>>,
    /// For clients whose location is unknown.
    unknown: Precomputed,
}

/// One precomputed decision input.
#[derive(Debug, Default)]
struct Precomputed {
    /// Where the client is assumed to be (for the continent check).
    continent: Option<meridian_geoip::Continent>,
    /// The country's centroid.
    at: Option<Coordinates>,
    /// The steering result.
    plan: Plan,
    /// Distance-based RTT (µs) from the client to each region, by region index.
    rtt_us: Vec<u32>,
}

fn slot(c: meridian_geoip::CountryCode) -> usize {
    let [a, b] = c.to_bytes();
    usize::from(a.wrapping_sub(b'A')) * 26 + usize::from(b.wrapping_sub(b'A'))
}

impl CountryTable {
    /// Precomputes every country of the built-in centroid table for `snap`.
    pub fn build(snap: &Snapshot) -> CountryTable {
        let rtts = |from: Coordinates| -> Vec<u32> {
            snap.regions
                .iter()
                .map(|r| micros(distance_rtt_us(snap, great_circle_km(from, r.coords))))
                .collect()
        };
        let mut countries: Vec<Option<Precomputed>> = (0..26 * 26).map(|_| None).collect();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                let code = [a as char, b as char].iter().collect::<String>();
                let Some(cc) = meridian_geoip::CountryCode::parse(&code) else {
                    continue;
                };
                let Some((continent, at)) = meridian_geoip::country_info(cc) else {
                    continue;
                };
                let loc = Location {
                    country: cc,
                    continent: Some(continent),
                    coordinates: Some(at),
                    source: meridian_geoip::LocationSource::Database,
                };
                countries[slot(cc)] = Some(Precomputed {
                    continent: Some(continent),
                    at: Some(at),
                    plan: steer(snap, Some(&loc)),
                    rtt_us: rtts(at),
                });
            }
        }
        CountryTable {
            countries,
            unknown: Precomputed {
                continent: None,
                at: None,
                plan: steer(snap, None),
                rtt_us: rtts(snap.node_coords),
            },
        }
    }

    /// The precomputed entry for `loc`, if the client sits at its country's centroid.
    fn get(&self, loc: Option<&Location>) -> Option<&Precomputed> {
        let Some(loc) = loc else {
            return Some(&self.unknown);
        };
        let p = self.countries.get(slot(loc.country))?.as_ref()?;
        let same_place = match (loc.coordinates, p.at) {
            (Some(a), Some(b)) => a.latitude == b.latitude && a.longitude == b.longitude,
            (None, _) => true,
            _ => false,
        };
        (same_place && loc.continent == p.continent).then_some(p)
    }
}

/// Steers and ranks: the full decision for a client at `loc` (`None`: location unknown).
pub fn plan(snap: &Snapshot, loc: Option<&Location>) -> Plan {
    let rank_it = snap.config.steering.policy != SteeringPolicy::Failover;
    if let Some(pre) = snap.country_table.get(loc) {
        let mut plan = pre.plan.clone();
        if rank_it {
            rank_with(snap, &mut plan.regions, |i| pre.rtt_us[i]);
        }
        return plan;
    }
    let mut plan = steer(snap, loc);
    if rank_it {
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
    let from = client.unwrap_or(snap.node_coords);
    rank_with(snap, list, |i| {
        micros(distance_rtt_us(
            snap,
            great_circle_km(from, snap.regions[i].coords),
        ))
    });
}

/// Whole microseconds, saturating (ranking works in integers).
fn micros(us: f64) -> u32 {
    us.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// [`rank`] with the distance-based RTT (µs) of region `i` given by `rtt_us(i)`.
///
/// Integer arithmetic, and no list is built in the common case: a first pass finds the
/// best cost and measurement among usable candidates, a second one checks whether any
/// candidate is degraded or unusable; only then are they partitioned.
fn rank_with(snap: &Snapshot, list: &mut RegionList, rtt_us: impl Fn(usize) -> u32) {
    /// One candidate's score.
    #[derive(Clone, Copy)]
    struct Scored {
        cost: u64,
        measured: u64,
        usable: bool,
        region: u16,
    }
    if list.len() < 2 {
        return;
    }
    let score = |i: u16| {
        let r = &snap.regions[usize::from(i)];
        let measured = u64::from(r.state.measured_us());
        Scored {
            cost: u64::from(rtt_us(usize::from(i))) + measured,
            measured,
            usable: r.state.usable() > 0,
            region: i,
        }
    };
    let tolerance = snap
        .config
        .latency
        .tolerance
        .as_micros()
        .min(u128::from(u32::MAX)) as u64;
    let (mut best_cost, mut best_measured) = (u64::MAX, u64::MAX);
    for &i in list.iter() {
        let s = score(i);
        if s.usable {
            best_cost = best_cost.min(s.cost);
            best_measured = best_measured.min(s.measured);
        }
    }
    let (cost_limit, measured_limit) = (
        best_cost.saturating_add(tolerance),
        best_measured.saturating_add(tolerance),
    );
    let degraded = |s: &Scored| s.cost > cost_limit && s.measured > measured_limit;
    // Usually every candidate is usable and none degraded: the steering order stands.
    if list.iter().all(|&i| {
        let s = score(i);
        s.usable && !degraded(&s)
    }) {
        return;
    }
    let scored: SmallVec<[Scored; INLINE_REGIONS]> = list.iter().map(|&i| score(i)).collect();
    // A stable three-way partition: kept (steering order), degraded (by cost), unusable.
    let mut out = 0;
    for s in scored.iter().filter(|s| s.usable && !degraded(s)) {
        list[out] = s.region;
        out += 1;
    }
    let mut demoted: SmallVec<[Scored; INLINE_REGIONS]> = scored
        .iter()
        .filter(|s| s.usable && degraded(s))
        .copied()
        .collect();
    demoted.sort_by_key(|s| s.cost);
    for s in demoted.iter().chain(scored.iter().filter(|s| !s.usable)) {
        list[out] = s.region;
        out += 1;
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

    #[test]
    fn precomputed_country_plans_match_computing_them() {
        let snap = snapshot(
            "[steering.countries]\nGB = [\"eu-central\"]\n[residency]\ncountries = { DE = [\"eu-central\"] }\n",
        );
        // Degrade a region so ranking has work to do on both paths.
        snap.regions[1].state.publish(80_000, 1);
        snap.regions[3].state.publish(0, 0);
        let mut checked = 0;
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                let code: String = [a as char, b as char].iter().collect();
                let Some(cc) = CountryCode::parse(&code) else {
                    continue;
                };
                if country_info(cc).is_none() {
                    continue;
                }
                let loc = at(&code);
                let fast = plan(&snap, Some(&loc));
                let mut slow = steer(&snap, Some(&loc));
                rank(&snap, loc.coordinates, &mut slow.regions);
                assert_eq!(fast.regions, slow.regions, "{code}");
                assert_eq!(fast.restricted, slow.restricted, "{code}");
                checked += 1;
            }
        }
        assert!(checked > 240, "{checked}");
        let mut slow = steer(&snap, None);
        rank(&snap, None, &mut slow.regions);
        assert_eq!(plan(&snap, None).regions, slow.regions);
        // A client with its own coordinates (City database) is computed, not looked up.
        let mut city = at("US");
        city.coordinates = Some(Coordinates {
            latitude: 47.6,
            longitude: -122.3,
        });
        assert!(snap.country_table.get(Some(&city)).is_none());
    }
}

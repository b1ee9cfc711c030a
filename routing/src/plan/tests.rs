//! Steering and ranking, checked region by region.

use super::*;
use crate::snapshot::Snapshot;
use meridian_geoip::Coordinates;
use meridian_geoip::{country_info, CountryCode};

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
    let snap = Snapshot::of_text(&format!("[node]\nregion = \"us-east\"\n{extra}\n{REGIONS}"));
    for (_, _, r) in snap.pools() {
        r.state.publish(0, 1);
    }
    snap
}

fn at(country: &str) -> Location {
    meridian_geoip::at_centroid(CountryCode::parse(country).unwrap()).unwrap()
}

fn names(snap: &Snapshot, plan: &Plan) -> Vec<String> {
    plan.regions
        .iter()
        .map(|&i| snap.pool(0, usize::from(i)).unwrap().name.to_string())
        .collect()
}

#[test]
fn default_policy_uses_the_map_then_proximity_then_local() {
    let snap = snapshot(
        "[steering.countries]\nGB = [\"eu-central\"]\n[steering.continents]\nOC = [\"us-east\"]\n",
    );
    let gb = snap.plan(0, Some(&at("GB")));
    assert_eq!(names(&snap, &gb)[0], "eu-central", "explicit map wins");
    assert_eq!(names(&snap, &gb)[1], "eu-west", "then nearest");
    assert_eq!(
        names(&snap, &snap.plan(0, Some(&at("AU"))))[0],
        "us-east",
        "continent map"
    );
    assert_eq!(
        names(&snap, &snap.plan(0, Some(&at("JP")))),
        ["ap-southeast", "eu-central", "eu-west", "us-east"],
        "unmapped: by distance from the client"
    );
    assert_eq!(
        names(&snap, &snap.plan(0, None)),
        ["us-east", "eu-west", "eu-central", "ap-southeast"],
        "unknown: local first, then by distance from this node"
    );
}

#[test]
fn residency_never_leaves_the_allowed_regions() {
    let snap = snapshot(
        "[steering]\npolicy = \"failover\"\norder = [\"us-east\", \"ap-southeast\"]\n[residency]\ncountries = { DE = [\"eu-central\", \"eu-west\"] }\n",
    );
    let de = snap.plan(0, Some(&at("DE")));
    assert!(de.restricted);
    assert_eq!(names(&snap, &de), ["eu-central", "eu-west"]);
    // Even with both allowed regions down the list does not grow.
    for (_, _, r) in snap.pools() {
        r.state.publish(0, 0);
    }
    assert_eq!(
        names(&snap, &snap.plan(0, Some(&at("DE")))),
        ["eu-central", "eu-west"]
    );
    let us = snap.plan(0, Some(&at("US")));
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
        names(&snap, &snap.plan(0, Some(&at("PL")))),
        ["eu-central", "eu-west", "us-east", "ap-southeast"]
    );
}

#[test]
fn ranking_keeps_order_within_tolerance_and_demotes_degraded_regions() {
    let snap = snapshot(
        "[latency]\ntolerance = \"20ms\"\n[steering.countries]\nFR = [\"eu-west\", \"eu-central\"]\n",
    );
    let fr = || names(&snap, &snap.plan(0, Some(&at("FR"))));
    // Equal measurements: the map order holds (eu-central is nearer to France, but
    // within tolerance the steering order wins: no flapping on noise).
    assert_eq!(fr()[..2], ["eu-west", "eu-central"]);
    // eu-west measures 10 ms slower: still within the 20 ms tolerance.
    snap.pool(0, 1).unwrap().state.publish(10_000, 1);
    assert_eq!(fr()[..2], ["eu-west", "eu-central"]);
    // 60 ms slower: degraded beyond tolerance, it loses its place.
    snap.pool(0, 1).unwrap().state.publish(60_000, 1);
    assert_eq!(fr()[..2], ["eu-central", "us-east"]);
    assert_eq!(fr()[3], "eu-west", "ranked by cost: {:?}", fr());
    // A region with no usable backend goes last.
    snap.pool(0, 1).unwrap().state.publish(0, 1);
    snap.pool(0, 2).unwrap().state.publish(0, 0);
    assert_eq!(*fr().last().unwrap(), "eu-central");
}

#[test]
fn precomputed_country_plans_match_computing_them() {
    let snap = snapshot(
        "[steering.countries]\nGB = [\"eu-central\"]\n[residency]\ncountries = { DE = [\"eu-central\"] }\n",
    );
    // Degrade a region so ranking has work to do on both paths.
    snap.pool(0, 1).unwrap().state.publish(80_000, 1);
    snap.pool(0, 3).unwrap().state.publish(0, 0);
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
            let fast = snap.plan(0, Some(&loc));
            let mut slow = steer(snap.view(0), Some(&loc));
            rank(snap.view(0), loc.coordinates, &mut slow.regions);
            assert_eq!(fast.regions, slow.regions, "{code}");
            assert_eq!(fast.restricted, slow.restricted, "{code}");
            checked += 1;
        }
    }
    assert!(checked > 240, "{checked}");
    let mut slow = steer(snap.view(0), None);
    rank(snap.view(0), None, &mut slow.regions);
    assert_eq!(snap.plan(0, None).regions, slow.regions);
    // A client with its own coordinates (City database) is computed, not looked up.
    let mut city = at("US");
    city.coordinates = Some(Coordinates {
        latitude: 47.6,
        longitude: -122.3,
    });
    assert!(snap.services[0].country_table.get(Some(&city)).is_none());
}

/// Plans made "from anywhere" (GeoDNS) are the same whichever instance makes them: no
/// local-first fallback, and regions ranked by the latency their own instance reports, not
/// by each instance's round trip to them.
#[test]
fn plans_from_anywhere_do_not_depend_on_the_instance() {
    let of = |node: &str, policy: &str| {
        let snap = Snapshot::of_text(&format!(
            "[node]\nregion = \"{node}\"\n[steering]\npolicy = \"{policy}\"\n[steering.countries]\nGB = [\"eu-west\"]\n{REGIONS}"
        ));
        for (i, r) in snap.services[0].regions.iter().flatten().enumerate() {
            // Each instance measures the others through its own round trip...
            r.state.publish(
                if r.name.as_ref() == node {
                    2_000
                } else {
                    150_000 + 10_000 * i as u32
                },
                1,
            );
            // ... while the mesh carries each region's own measurement.
            r.state.set_reported_latency(Some(2_000));
        }
        snap
    };
    for policy in ["default", "geo", "proximity"] {
        let (us, ap) = (of("us-east", policy), of("ap-southeast", policy));
        for loc in [
            None,
            Some(at("GB")),
            Some(at("JP")),
            Some(at("BR")),
            Some(at("DE")),
        ] {
            let a = names(&us, &us.plan_anywhere(0, loc.as_ref()));
            let b = names(&ap, &ap.plan_anywhere(0, loc.as_ref()));
            assert_eq!(a, b, "{policy} {loc:?}");
        }
        // Unknown place: config order, not the instance's own region first.
        assert_eq!(
            names(&ap, &ap.plan_anywhere(0, None))[0],
            "us-east",
            "{policy}"
        );
        // While the HTTP plan keeps its local-first fallback.
        assert_eq!(names(&ap, &ap.plan(0, None))[0], "ap-southeast", "{policy}");
    }
}

/// The per-country table for plans from anywhere gives what computing them gives.
#[test]
fn precomputed_plans_from_anywhere_match_computing_them() {
    let snap = snapshot("[steering.countries]\nGB = [\"eu-central\"]\n[residency]\ncountries = { DE = [\"eu-west\"] }\n");
    for (i, r) in snap.services[0].regions.iter().flatten().enumerate() {
        r.state.publish(1_000 + 40_000 * i as u32, 1);
    }
    let none = CountryTable::default();
    for c in ["GB", "DE", "US", "JP", "BR", "AU", "ZA", "IN", "FR", "NZ"] {
        let loc = at(c);
        let table = snap.plan_anywhere(0, Some(&loc));
        let computed = plan_anywhere(
            snap.view(0),
            snap.local,
            &snap.config_order,
            &none,
            Some(&loc),
        );
        assert_eq!(names(&snap, &table), names(&snap, &computed), "{c}");
        assert_eq!(table.restricted, computed.restricted, "{c}");
    }
}

//! The DB-IP Country Lite database shipped in the binary: what it answers for well-known
//! addresses (checked against the file itself, 2026-06-01 build) and its metadata.

mod common;

use common::{cc, ip};
use std::net::IpAddr;

use meridian_geoip::{
    country_info, great_circle_km, Continent, CountryCode, LocationSource, Locator, Override,
    DBIP_ATTRIBUTION,
};

fn builtin() -> Locator {
    Locator::builtin(Vec::new()).expect("built-in database")
}

#[test]
fn well_known_addresses() {
    let locator = builtin();
    for (addr, country, continent) in [
        ("8.8.8.8", "US", Continent::NorthAmerica),
        ("9.9.9.9", "US", Continent::NorthAmerica),
        // Cloudflare's resolver is registered to APNIC's research lab: DB-IP says AU.
        ("1.1.1.1", "AU", Continent::Oceania),
        // DB-IP places Google's and Cloudflare's IPv6 resolvers in Canada.
        ("2001:4860:4860::8888", "CA", Continent::NorthAmerica),
        ("2606:4700:4700::1111", "CA", Continent::NorthAmerica),
        // Deutsche Telekom.
        ("80.128.0.1", "DE", Continent::Europe),
        ("217.0.0.1", "DE", Continent::Europe),
        ("::ffff:217.0.0.1", "DE", Continent::Europe),
        // RIPE NCC.
        ("193.0.6.139", "NL", Continent::Europe),
        // 6to4 of 8.8.8.8: the file aliases 2002::/16 to its IPv4 tree.
        ("2002:808:808::1", "US", Continent::NorthAmerica),
    ] {
        let found = locator.lookup(ip(addr)).expect(addr);
        assert_eq!(found.country, cc(country), "{addr}");
        assert_eq!(found.continent, Some(continent), "{addr}");
        // DB-IP Country Lite has no coordinates: the centroid stands in.
        assert_eq!(
            found.coordinates,
            country_info(cc(country)).map(|c| c.1),
            "{addr}"
        );
        assert_eq!(found.source, LocationSource::Database, "{addr}");
    }
}

#[test]
fn reserved_space_is_unknown() {
    let locator = builtin();
    for addr in [
        "203.0.113.1",
        "192.0.2.1",
        "10.0.0.1",
        "100.64.0.1",
        "127.0.0.1",
        "0.0.0.0",
        "::1",
        "2001:db8::1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ] {
        assert_eq!(locator.lookup(ip(addr)), None, "{addr}");
    }
}

#[test]
fn every_country_in_the_file_has_a_centroid() {
    // Spot checks across the address space: whatever the file answers, the table knows it.
    let locator = builtin();
    let mut found = 0;
    for a in (1..=223_u8).step_by(2) {
        for b in (0..=255_u8).step_by(37) {
            if let Some(location) = locator.lookup(std::net::IpAddr::from([a, b, 1, 1])) {
                found += 1;
                assert!(location.continent.is_some(), "{location:?}");
                assert!(location.coordinates.is_some(), "{location:?}");
            }
        }
    }
    assert!(found > 500, "{found}");
}

#[test]
fn metadata_and_attribution() {
    let locator = builtin();
    let info = locator.info();
    assert_eq!(info.path, None);
    assert_eq!(info.database_type, "country ipvAll");
    assert_eq!(info.build_epoch, 1_780_345_978); // 2026-06-01T20:32:58Z
    assert_eq!(info.attribution, Some(DBIP_ATTRIBUTION));
    assert_eq!(
        DBIP_ATTRIBUTION,
        "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
    );
}

#[test]
fn distance_between_located_clients() {
    let locator = builtin();
    let at = |addr: &str| {
        locator
            .lookup(ip(addr))
            .and_then(|l| l.coordinates)
            .expect(addr)
    };
    // Centroids of Germany and the USA.
    let km = great_circle_km(at("80.128.0.1"), at("8.8.8.8"));
    assert!((7000.0..8500.0).contains(&km), "{km}");
}

#[test]
fn cached_answers_match_fresh_lookups_across_each_network() {
    // One locator answers pairs of addresses in the same /24 (or /48), the second usually
    // from its cache; a fresh locator per address is the reference.
    let warm = builtin();
    let mut x: u32 = 0x2545_f491;
    let mut compared = 0;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let a = std::net::Ipv4Addr::from(x);
        let b = std::net::Ipv4Addr::from((x & !0xff) | (x.rotate_left(7) & 0xff));
        let _ = warm.lookup(a.into());
        let cached = warm.lookup(b.into());
        assert_eq!(cached, builtin().lookup(b.into()), "{a} then {b}");
        compared += 1;
    }
    for net in [
        "2a00:1450:4001",
        "2001:4860:4860",
        "2c0f:f248:0",
        "2400:cb00:2048",
    ] {
        for host in ["::1", "::ffff", ":8000::1"] {
            let a: std::net::IpAddr = format!("{net}::2").parse().unwrap();
            let b: std::net::IpAddr = format!("{net}{host}").parse().unwrap();
            let _ = warm.lookup(a);
            assert_eq!(warm.lookup(b), builtin().lookup(b), "{a} then {b}");
            compared += 1;
        }
    }
    assert_eq!(compared, 3012);
}

/// `locate` says how far an answer reaches: every address of the network it names gets
/// the same location (checked at both ends and in the middle), for well-known addresses
/// of both families.
#[test]
fn located_networks_hold_the_same_answer_throughout() {
    let locator = builtin();
    for ip in [
        "81.2.69.160",
        "1.0.16.1",
        "8.8.8.8",
        "2001:4860:4860::8888",
        "192.168.1.1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let found = locator.locate(ip);
        assert_eq!(found.location, locator.lookup(ip), "{ip}");
        let max = if ip.is_ipv4() { 32 } else { 128 };
        assert!(found.prefix_len <= max, "{ip}: /{}", found.prefix_len);
        let net = ipnet::IpNet::new(ip, found.prefix_len).unwrap().trunc();
        let hosts: Vec<IpAddr> = match net {
            ipnet::IpNet::V4(n) => vec![n.network().into(), n.broadcast().into()],
            ipnet::IpNet::V6(n) => vec![n.network().into(), n.broadcast().into()],
        };
        for other in hosts {
            assert_eq!(
                locator.lookup(other),
                found.location,
                "{ip} /{} vs {other}",
                found.prefix_len
            );
        }
    }
    // A country-level database answers for networks wider than one address.
    let gb = locator.locate("81.2.69.160".parse().unwrap());
    assert!(gb.prefix_len < 32 && gb.prefix_len >= 8, "{gb:?}");
}

/// An override narrows the reach of the answers around it: inside the database network
/// that contains it, answers hold only for networks as narrow as the override.
#[test]
fn overrides_narrow_the_located_network() {
    let plain = builtin().locate("81.2.69.1".parse().unwrap());
    assert!(plain.prefix_len < 24, "{plain:?}");
    let rule = Override {
        network: "81.2.69.128/25".parse().unwrap(),
        country: CountryCode::parse("JP").unwrap(),
        coordinates: None,
    };
    let locator = Locator::builtin(vec![rule]).unwrap();
    let outside = locator.locate("81.2.69.1".parse().unwrap());
    assert_eq!(outside.location, plain.location);
    assert_eq!(outside.prefix_len, 25, "{outside:?}");
    let inside = locator.locate("81.2.69.200".parse().unwrap());
    assert_eq!(inside.location.unwrap().country.as_str(), "JP");
    assert_eq!(inside.prefix_len, 25);
}

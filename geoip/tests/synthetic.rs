//! Lookups in small databases written by the tests: both record layouts, IPv4, IPv6 and
//! IPv4-mapped addresses, misses, bogus data, overrides, corrupt files, database info.

mod common;

use common::{cc, ip, map, rule, s, TempDb};
use meridian_geoip::{
    country_info, Continent, Coordinates, GeoIpError, Location, LocationSource, Locator, Override,
    DBIP_ATTRIBUTION,
};
use mmdb_writer::Value;

fn close(a: Coordinates, latitude: f64, longitude: f64) -> bool {
    (a.latitude - latitude).abs() < 1e-4 && (a.longitude - longitude).abs() < 1e-4
}

fn centroid(country: &str) -> Option<Coordinates> {
    country_info(cc(country)).map(|(_, at)| at)
}

/// MaxMind GeoIP2 City layout, with the `names` maps and other keys the locator skips.
fn geoip2_city() -> TempDb {
    let names = |en: &str| map([("en", s(en)), ("de", s(en))]);
    let london = map([
        (
            "city",
            map([
                ("geoname_id", Value::from(2_643_743_u32)),
                ("names", names("London")),
            ]),
        ),
        (
            "continent",
            map([
                ("code", s("EU")),
                ("geoname_id", Value::from(6_255_148_u32)),
                ("names", names("Europe")),
            ]),
        ),
        (
            "country",
            map([("iso_code", s("GB")), ("names", names("United Kingdom"))]),
        ),
        (
            "location",
            map([
                ("accuracy_radius", Value::from(100_u16)),
                ("latitude", Value::from(51.5142_f64)),
                ("longitude", Value::from(-0.0931_f64)),
                ("time_zone", s("Europe/London")),
            ]),
        ),
        ("registered_country", map([("iso_code", s("GB"))])),
        (
            "subdivisions",
            Value::array([map([("iso_code", s("ENG"))])]),
        ),
    ]);
    // No `country`: an anycast or satellite range, located by its registration.
    let registered_only = map([
        ("continent", map([("code", s("AS"))])),
        (
            "registered_country",
            map([("iso_code", s("JP")), ("names", names("Japan"))]),
        ),
    ]);
    // A continent-only record (MaxMind's "EU" ranges): no country, so no location.
    let continent_only = map([("continent", map([("code", s("EU"))]))]);
    TempDb::build(
        "geoip2",
        "GeoLite2-City",
        false,
        vec![
            ("81.2.69.0/24", london.clone()),
            ("2a02:db8::/32", london),
            ("2001:db8:1::/48", registered_only),
            ("192.0.2.0/24", continent_only),
        ],
    )
}

#[test]
fn nested_geoip2_layout() {
    let db = geoip2_city();
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    let expected = Location {
        country: cc("GB"),
        continent: Some(Continent::Europe),
        coordinates: Some(Coordinates {
            latitude: 51.5142,
            longitude: -0.0931,
        }),
        source: LocationSource::Database,
    };
    assert_eq!(locator.lookup(ip("81.2.69.160")), Some(expected));
    assert_eq!(locator.lookup(ip("::ffff:81.2.69.160")), Some(expected));
    assert_eq!(locator.lookup(ip("2a02:db8::1")), Some(expected));

    let japan = locator
        .lookup(ip("2001:db8:1::5"))
        .expect("registered country");
    assert_eq!(japan.country, cc("JP"));
    assert_eq!(japan.continent, Some(Continent::Asia));
    assert_eq!(japan.coordinates, centroid("JP"));

    assert_eq!(locator.lookup(ip("192.0.2.1")), None);
    assert_eq!(locator.lookup(ip("81.2.70.1")), None);
    assert_eq!(locator.lookup(ip("2a03::1")), None);
    assert_eq!(locator.lookup(ip("::1")), None);

    let info = locator.info();
    assert_eq!(info.path.as_deref(), Some(db.path()));
    assert_eq!(info.database_type, "GeoLite2-City");
    assert!(info.build_epoch > 1_700_000_000);
    assert_eq!(info.attribution, None);
}

#[test]
fn flat_layout_with_f32_coordinates() {
    let record = |country: &str, lat: f32, lon: f32| {
        map([
            ("city", s("somewhere")),
            ("country_code", s(country)),
            ("latitude", Value::from(lat)),
            ("longitude", Value::from(lon)),
            ("postcode", s("10115")),
        ])
    };
    let mut us = record("us", 37.751, -97.822);
    if let Value::Map(m) = &mut us {
        m.insert("continent_code".into(), s("NA"));
    }
    let db = TempDb::build(
        "flat-f32",
        "DBIP-City-Lite",
        false,
        vec![
            ("5.1.0.0/16", record("DE", 52.52, 13.405)),
            ("2a00:1::/32", record("DE", 52.52, 13.405)),
            ("3.0.0.0/8", us),
        ],
    );
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    for addr in ["5.1.2.3", "::ffff:5.1.2.3", "2a00:1:2::3"] {
        let berlin = locator.lookup(ip(addr)).expect(addr);
        assert_eq!(berlin.country, cc("DE"));
        assert_eq!(berlin.continent, Some(Continent::Europe), "from the table");
        assert!(close(
            berlin.coordinates.expect("coordinates"),
            52.52,
            13.405
        ));
        assert_eq!(berlin.source, LocationSource::Database);
    }
    let us = locator.lookup(ip("3.3.3.3")).expect("US");
    assert_eq!(us.country.as_str(), "US");
    assert_eq!(us.continent, Some(Continent::NorthAmerica));
    assert!(close(us.coordinates.expect("coordinates"), 37.751, -97.822));
    assert_eq!(locator.lookup(ip("5.2.0.1")), None);
    assert_eq!(locator.info().attribution, Some(DBIP_ATTRIBUTION));
}

#[test]
fn flat_country_only_ipv4_database() {
    let db = TempDb::build(
        "flat-v4",
        "country ipv4",
        true,
        vec![("32.0.0.0/8", map([("country_code", s("FR"))]))],
    );
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    let expected = Location {
        country: cc("FR"),
        continent: Some(Continent::Europe),
        coordinates: centroid("FR"),
        source: LocationSource::Database,
    };
    assert!(expected.coordinates.is_some());
    assert_eq!(locator.lookup(ip("32.1.72.96")), Some(expected));
    assert_eq!(locator.lookup(ip("::ffff:32.1.72.96")), Some(expected));
    // An IPv4-only tree would answer for the first 32 bits (32.1.72.96) of this address.
    assert_eq!(locator.lookup(ip("2001:4860::1")), None);
    assert_eq!(locator.lookup(ip("33.0.0.1")), None);
}

#[test]
fn networks_narrower_than_the_cache_key_are_answered_per_address() {
    // Two halves of one /24 in different countries, a /48 split likewise, and a city
    // record with its own coordinates: the per-network cache must not answer for the
    // other half, nor hand out the first client's coordinates to the next.
    let db = TempDb::build(
        "split",
        "split networks",
        false,
        vec![
            ("203.0.113.0/25", map([("country_code", s("FR"))])),
            ("203.0.113.128/25", map([("country_code", s("DE"))])),
            ("2001:db8:1::/49", map([("country_code", s("JP"))])),
            ("2001:db8:1:8000::/49", map([("country_code", s("KR"))])),
            (
                "198.51.100.0/24",
                map([
                    ("country_code", s("FR")),
                    ("latitude", Value::from(48.85f32)),
                    ("longitude", Value::from(2.35f32)),
                ]),
            ),
            ("192.0.2.0/24", map([("country_code", s("IT"))])),
        ],
    );
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    let country = |a: &str| locator.lookup(ip(a)).map(|l| l.country.to_string());
    for _ in 0..3 {
        assert_eq!(country("203.0.113.1").as_deref(), Some("FR"));
        assert_eq!(country("203.0.113.200").as_deref(), Some("DE"));
        assert_eq!(country("2001:db8:1::1").as_deref(), Some("JP"));
        assert_eq!(country("2001:db8:1:ffff::1").as_deref(), Some("KR"));
        assert_eq!(country("192.0.2.1").as_deref(), Some("IT"));
        assert_eq!(country("192.0.2.254").as_deref(), Some("IT"));
        let paris = locator.lookup(ip("198.51.100.7")).expect("city record");
        assert!(close(paris.coordinates.expect("coordinates"), 48.85, 2.35));
    }
}

#[test]
fn bogus_values_read_as_absent() {
    let records = vec![
        // Three-letter code: no usable country.
        ("10.0.1.0/24", map([("country_code", s("DEU"))])),
        // A number where the code should be.
        ("10.0.2.0/24", map([("country_code", Value::from(276_u32))])),
        // Latitude out of range: the centroid instead.
        (
            "10.0.3.0/24",
            map([
                ("country_code", s("DE")),
                ("latitude", Value::from(123.0_f64)),
                ("longitude", Value::from(10.0_f64)),
            ]),
        ),
        // Bad nested code, good flat one; unknown continent code.
        (
            "10.0.4.0/24",
            map([
                ("country", map([("iso_code", s("XX1"))])),
                ("country_code", s("NO")),
                ("continent", map([("code", s("ZZ"))])),
            ]),
        ),
        // `country` as a bare string; coordinates as numeric strings.
        (
            "10.0.5.0/24",
            map([
                ("country", s("SE")),
                ("latitude", s("59.33")),
                ("longitude", s("18.07")),
            ]),
        ),
        // A record that is not a map at all.
        ("10.0.6.0/24", s("DE")),
        // Only a latitude.
        (
            "10.0.7.0/24",
            map([
                ("country_code", s("BR")),
                ("latitude", Value::from(1.0_f32)),
            ]),
        ),
        // A user-assigned code the table does not know.
        ("10.0.8.0/24", map([("country_code", s("ZZ"))])),
        // `location` of the wrong type, then NaN coordinates.
        (
            "10.0.9.0/24",
            map([("country_code", s("IT")), ("location", s("Rome"))]),
        ),
        (
            "10.0.10.0/24",
            map([
                ("country_code", s("IT")),
                (
                    "location",
                    map([
                        ("latitude", Value::from(f64::NAN)),
                        ("longitude", Value::from(12.0_f64)),
                    ]),
                ),
            ]),
        ),
    ];
    let db = TempDb::build("bogus", "Test", false, records);
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    let at = |addr: &str| locator.lookup(ip(addr));

    assert_eq!(at("10.0.1.1"), None);
    assert_eq!(at("10.0.2.1"), None);
    let de = at("10.0.3.1").expect("DE");
    assert_eq!((de.country, de.coordinates), (cc("DE"), centroid("DE")));
    let no = at("10.0.4.1").expect("NO");
    assert_eq!(
        (no.country, no.continent),
        (cc("NO"), Some(Continent::Europe))
    );
    let se = at("10.0.5.1").expect("SE");
    assert_eq!(se.country, cc("SE"));
    assert!(close(se.coordinates.expect("coordinates"), 59.33, 18.07));
    assert_eq!(at("10.0.6.1"), None);
    let br = at("10.0.7.1").expect("BR");
    assert_eq!(
        (br.continent, br.coordinates),
        (Some(Continent::SouthAmerica), centroid("BR"))
    );
    let zz = at("10.0.8.1").expect("ZZ is well-formed");
    assert_eq!(
        (zz.country, zz.continent, zz.coordinates),
        (cc("ZZ"), None, None)
    );
    assert_eq!(at("10.0.9.1").expect("IT").coordinates, centroid("IT"));
    assert_eq!(at("10.0.10.1").expect("IT").coordinates, centroid("IT"));
}

#[test]
fn overrides_longest_prefix_first() {
    let pinned = Coordinates {
        latitude: 35.68,
        longitude: 139.69,
    };
    let overrides = vec![
        rule("8.0.0.0/8", "GB"),
        Override {
            coordinates: Some(pinned),
            ..rule("8.8.8.0/24", "JP")
        },
        rule("8.8.0.0/16", "AU"),
        // IPv4-mapped form: applies to IPv4 clients.
        rule("::ffff:1.1.1.0/120", "NZ"),
        rule("2001:4860::/32", "fr"),
        // Host bits set: the network is what counts.
        rule("10.1.2.3/16", "CH"),
    ];
    let locator = Locator::builtin(overrides).expect("builtin");
    let at = |addr: &str| locator.lookup(ip(addr)).expect(addr);

    let jp = at("8.8.8.8");
    assert_eq!(jp.country, cc("JP"));
    assert_eq!(jp.continent, Some(Continent::Asia));
    assert_eq!(jp.coordinates, Some(pinned));
    assert_eq!(jp.source, LocationSource::Override);
    assert_eq!(at("::ffff:8.8.8.8"), jp);
    assert_eq!(at("8.8.4.4").country, cc("AU"));
    assert_eq!(at("8.8.4.4").coordinates, centroid("AU"));
    assert_eq!(at("8.1.1.1").country, cc("GB"));
    assert_eq!(at("1.1.1.1").country, cc("NZ"));
    assert_eq!(at("10.1.200.1").country, cc("CH"));
    let fr = at("2001:4860:4860::8888");
    assert_eq!(
        (fr.country, fr.source),
        (cc("FR"), LocationSource::Override)
    );
    let db = at("9.9.9.9");
    assert_eq!(db.source, LocationSource::Database);
    assert_eq!(locator.lookup(ip("10.2.0.1")), None);
}

#[test]
fn override_with_bad_coordinates_is_rejected() {
    let bad = Override {
        coordinates: Some(Coordinates {
            latitude: 91.0,
            longitude: 0.0,
        }),
        ..rule("192.0.2.0/24", "DE")
    };
    let err = Locator::builtin(vec![bad]).expect_err("latitude 91");
    assert!(
        matches!(err, GeoIpError::OverrideCoordinates { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("192.0.2.0/24"), "{err}");
}

#[test]
fn corrupt_or_missing_files_name_the_path() {
    let garbage = TempDb::new("garbage", &[0x5a; 4096]);
    // A real header and metadata around a tree cut short.
    let real = include_bytes!("../data/dbip-country-lite.mmdb");
    let marker = b"\xab\xcd\xefMaxMind.com";
    let metadata_at = real
        .windows(marker.len())
        .rposition(|w| w == marker)
        .expect("metadata marker");
    let mut cut = real[..4096].to_vec();
    cut.extend_from_slice(&real[metadata_at..]);
    let truncated = TempDb::new("truncated", &cut);
    let empty = TempDb::new("empty", &[]);
    let missing = std::env::temp_dir().join("meridian-geoip-does-not-exist.mmdb");

    for (path, cause) in [
        (garbage.path(), "no metadata section"),
        (truncated.path(), "truncated: the search tree"),
        (empty.path(), "no metadata section"),
        (missing.as_path(), "No such file"),
    ] {
        let err = Locator::open(path, Vec::new()).expect_err("corrupt");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(cause), "{message}");
        let corrupt = matches!(err, GeoIpError::Corrupt { .. });
        assert_eq!(corrupt, path != missing.as_path(), "{err:?}");
    }
}

#[test]
fn attribution_from_description() {
    let mut writer = mmdb_writer::Writer::builder("Custom-Country")
        .description(&[("en", "IP to Country Lite by DB-IP")])
        .build();
    writer
        .insert_value(
            "8.0.0.0/8"
                .parse::<mmdb_writer::ipnet::IpNet>()
                .expect("net"),
            map([("country_code", s("US"))]),
        )
        .expect("insert");
    let db = TempDb::new("described", &writer.to_bytes().expect("bytes"));
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    assert_eq!(locator.info().attribution, Some(DBIP_ATTRIBUTION));
    assert_eq!(
        locator.lookup(ip("8.8.8.8")).map(|l| l.country),
        Some(cc("US"))
    );
}

#[test]
fn locator_is_send_and_sync() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Locator>();
}

//! `Locator::lookup` does not allocate: hits and misses, both layouts, overrides.
//!
//! `allocation-counter` installs a counting global allocator in this test binary only.

mod common;

use common::{ip, map, rule, s, TempDb};
use meridian_geoip::Locator;
use mmdb_writer::Value;

const ADDRESSES: [&str; 10] = [
    "8.8.8.8",
    "1.1.1.1",
    "80.128.0.1",
    "2001:4860:4860::8888",
    "::ffff:217.0.0.1",
    "203.0.113.1",
    "10.0.0.1",
    "::1",
    "192.0.2.7",
    "2a02:db8::1",
];

fn assert_no_allocation(locator: &Locator) {
    let addresses = ADDRESSES.map(ip);
    let mut hits = 0;
    let info = allocation_counter::measure(|| {
        for addr in addresses {
            hits += usize::from(locator.lookup(addr).is_some());
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert!(hits >= 2, "{hits}");
}

#[test]
fn builtin_lookups_do_not_allocate() {
    let locator = Locator::builtin(vec![rule("192.0.2.0/24", "DE")]).expect("builtin");
    assert_no_allocation(&locator);
}

#[test]
fn nested_and_flat_lookups_do_not_allocate() {
    let names = map([("en", s("Somewhere")), ("ja", s("どこか"))]);
    let nested = map([
        ("city", map([("names", names.clone())])),
        (
            "continent",
            map([("code", s("EU")), ("names", names.clone())]),
        ),
        ("country", map([("iso_code", s("DE")), ("names", names)])),
        (
            "location",
            map([
                ("latitude", Value::from(52.5_f64)),
                ("longitude", Value::from(13.4_f64)),
            ]),
        ),
        ("subdivisions", Value::array([map([("iso_code", s("BE"))])])),
    ]);
    let flat = map([
        ("country_code", s("US")),
        ("latitude", Value::from(37.7_f32)),
        ("longitude", Value::from(-97.8_f32)),
    ]);
    let db = TempDb::build(
        "no-alloc",
        "GeoIP2-City",
        false,
        vec![
            ("8.0.0.0/8", nested.clone()),
            ("80.0.0.0/8", flat),
            ("2001::/16", nested),
        ],
    );
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    assert_no_allocation(&locator);
}

#[test]
fn the_counter_counts() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(String::from("allocates"));
    });
    assert_eq!(info.count_total, 1);
}

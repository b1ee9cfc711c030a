//! Property tests of `Locator::open` on hostile files, run briefly by `cargo test` and at
//! length by `scripts/fuzz.sh` (every `fuzz_*` test, `PROPTEST_CASES` cases): arbitrary
//! bytes and mutated databases never make it panic, a file it rejects is named in the
//! error, and a file it accepts answers every lookup without panicking.

mod common;

use std::net::IpAddr;
use std::sync::LazyLock;

use common::handmade::{country, file, node, one_node, standard_metadata, MARKER};
use common::{map, s, TempDb};
use meridian_geoip::Locator;
use mmdb_writer::{IpVersion, RecordSize, Value, Writer};
use proptest::prelude::*;
use proptest::sample::Index;

/// Looked up in every accepted file: inside and outside the base databases' networks,
/// IPv4, IPv6 and IPv4-mapped, both halves of the IPv4 space.
static ADDRESSES: LazyLock<Vec<IpAddr>> = LazyLock::new(|| {
    [
        "81.2.69.160",
        "81.2.70.1",
        "5.1.2.3",
        "200.1.2.3",
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "2a02:db8::1",
        "2001:db8:1::5",
        "::ffff:81.2.69.160",
        "2002:5102:45a0::1",
        "::1",
        "ffff::1",
    ]
    .iter()
    .map(|a| a.parse().expect("address"))
    .collect()
});

/// Small valid databases to mutate: nested GeoIP2 records in an IPv6 tree with IPv4
/// aliases (28-bit records), flat records in an IPv4 tree (24-bit), and a handmade one.
static BASES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let names = |en: &str| map([("en", s(en)), ("de", s(en))]);
    let city = map([
        ("city", map([("names", names("London"))])),
        (
            "continent",
            map([("code", s("EU")), ("names", names("Europe"))]),
        ),
        (
            "country",
            map([("iso_code", s("GB")), ("names", names("UK"))]),
        ),
        (
            "location",
            map([
                ("latitude", Value::from(51.5_f64)),
                ("longitude", Value::from(-0.09_f64)),
            ]),
        ),
        (
            "subdivisions",
            Value::array([map([("iso_code", s("ENG"))])]),
        ),
    ]);
    let mut nested = Writer::builder("GeoLite2-City")
        .record_size(RecordSize::Bits28)
        .build();
    let mut flat = Writer::builder("DBIP-City-Lite")
        .ip_version(IpVersion::V4)
        .record_size(RecordSize::Bits24)
        .build();
    let flat_record = map([
        ("country_code", s("DE")),
        ("latitude", Value::from(52.5_f32)),
        ("longitude", Value::from(13.4_f32)),
    ]);
    for (net, record) in [
        ("81.2.69.0/24", city.clone()),
        ("2a02:db8::/32", city),
        (
            "2001:db8:1::/48",
            map([("registered_country", map([("iso_code", s("JP"))]))]),
        ),
    ] {
        nested
            .insert_value(
                net.parse::<mmdb_writer::ipnet::IpNet>().expect("net"),
                record,
            )
            .expect("insert");
    }
    for net in ["5.1.0.0/16", "81.2.69.0/24", "200.0.0.0/8"] {
        flat.insert_value(
            net.parse::<mmdb_writer::ipnet::IpNet>().expect("net"),
            flat_record.clone(),
        )
        .expect("insert");
    }
    vec![
        nested.to_bytes().expect("nested"),
        flat.to_bytes().expect("flat"),
        one_node(32, &country("FR")),
    ]
});

/// One edit of a file.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0..8_u8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        4 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        2 => (any::<Index>(), 1..16_usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match m {
            Mutation::Flip(at, bit) => bytes[at.index(len)] ^= 1 << bit,
            Mutation::Set(at, byte) => bytes[at.index(len)] = *byte,
            Mutation::Insert(at, new) => {
                let at = at.index(len);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(len)),
        }
    }
    bytes
}

/// A search tree of records in a range that hits nodes, "no data", the separator, the
/// data section and past it, over arbitrary data, under valid metadata.
fn arbitrary_tree_and_data() -> impl Strategy<Value = Vec<u8>> {
    (
        1..24_u32,
        prop::sample::select(vec![24_u32, 28, 32]),
        prop::bool::ANY,
    )
        .prop_flat_map(|(nodes, record_size, v6)| {
            let records = prop::collection::vec(0..nodes + 16 + 72, 2 * nodes as usize);
            let data = prop::collection::vec(any::<u8>(), 0..64);
            (Just((nodes, record_size, v6)), records, data)
        })
        .prop_map(|((nodes, record_size, v6), records, data)| {
            let tree: Vec<u8> = records
                .chunks(2)
                .flat_map(|pair| node(record_size, pair[0], pair[1]))
                .collect();
            let metadata = standard_metadata(nodes, record_size, if v6 { 6 } else { 4 });
            file(&tree, &data, &metadata)
        })
}

/// Opens `bytes` from `db`'s file: an error must name the file; an accepted file must
/// answer every lookup (any answer) without panicking.
fn open_and_look_up(db: &TempDb, bytes: &[u8]) -> Result<(), TestCaseError> {
    std::fs::write(db.path(), bytes).expect("write the case");
    match Locator::open(db.path(), Vec::new()) {
        Ok(locator) => {
            for &addr in ADDRESSES.iter() {
                let _ = locator.lookup(addr);
            }
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(
                message.contains(&db.path().display().to_string()),
                "{}",
                message
            );
        }
    }
    Ok(())
}

proptest! {
    // The default number of cases; PROPTEST_CASES overrides it (proptest applies the
    // environment on top of this config).
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fuzz_locator_open_arbitrary_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            (prop::collection::vec(any::<u8>(), 0..512), prop::collection::vec(any::<u8>(), 0..256))
                .prop_map(|(before, after)| [&before[..], MARKER, &after[..]].concat()),
            arbitrary_tree_and_data(),
        ]
    ) {
        let db = TempDb::new("fuzz-arbitrary", &[]);
        open_and_look_up(&db, &bytes)?;
    }

    #[test]
    fn fuzz_locator_mutated_database(
        base in 0..3_usize,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let db = TempDb::new("fuzz-mutated", &[]);
        let bytes = apply(BASES[base].clone(), &mutations);
        open_and_look_up(&db, &bytes)?;
    }
}

#[test]
fn the_bases_are_valid_and_answer() {
    let db = TempDb::new("fuzz-bases", &[]);
    for (i, base) in BASES.iter().enumerate() {
        std::fs::write(db.path(), base).expect("write");
        let locator = Locator::open(db.path(), Vec::new()).expect("a valid base");
        let answered = ADDRESSES
            .iter()
            .filter(|&&a| locator.lookup(a).is_some())
            .count();
        assert!(answered >= 1, "base {i} answers nothing");
    }
}

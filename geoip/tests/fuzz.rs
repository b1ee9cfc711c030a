//! Property tests of `Locator::open` on hostile files, run briefly by `cargo test` and at
//! length by `scripts/fuzz.sh` (every `fuzz_*` test, `PROPTEST_CASES` cases): arbitrary
//! bytes and mutated databases never make it panic, a file it rejects is named in the
//! error, and a file it accepts answers every lookup without panicking.

mod common;

use std::net::IpAddr;
use std::sync::LazyLock;

use common::handmade::{
    array, country, file, map as map_header, node, one_node, pointer, standard_metadata, string,
    uint32, MARKER,
};
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
    /// A byte set among the last 512: in the data section or the metadata, which most
    /// edits elsewhere (in the larger search tree) never reach.
    SetNearEnd(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0..8_u8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        4 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        4 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::SetNearEnd(at, b)),
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
            Mutation::SetNearEnd(at, byte) => bytes[len - 1 - at.index(len.min(512))] = *byte,
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

/// One encoded value or container header: sequences of them make data sections that are
/// often well-formed, or nearly.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z_]{0,12}".prop_map(|s| string(&s)),
        any::<u32>().prop_map(uint32),
        any::<u16>().prop_map(|v| [&[0xa2_u8][..], &v.to_be_bytes()].concat()),
        any::<[u8; 8]>().prop_map(|v| [&[0x68_u8][..], &v].concat()),
        any::<[u8; 4]>().prop_map(|v| [&[0x04_u8, 0x08][..], &v].concat()),
        Just(vec![0x01, 0x07]),
        (0..4_u8).prop_map(map_header),
        (0..4_u8).prop_map(array),
        (0..96_u16).prop_map(pointer),
        any::<u8>().prop_map(|b| vec![b]),
    ]
}

/// A search tree and a data section made of [`token`]s, under valid metadata. Records are
/// nodes, "no data", the start of a token or anything (the separator, past the data).
fn arbitrary_tree_and_data() -> impl Strategy<Value = Vec<u8>> {
    let layout = (
        1..24_u32,
        prop::sample::select(vec![24_u32, 28, 32]),
        prop::bool::ANY,
    );
    let tokens = prop::collection::vec(token(), 0..24);
    (layout, tokens)
        .prop_flat_map(|((nodes, record_size, v6), tokens)| {
            let starts: Vec<u32> = tokens
                .iter()
                .scan(0, |at, t| {
                    let start = *at;
                    *at += t.len() as u32;
                    Some(start)
                })
                .collect();
            let record = prop_oneof![
                3 => 0..nodes,
                2 => Just(nodes),
                4 => any::<Index>().prop_map(move |i| match starts.len() {
                    0 => nodes,
                    n => nodes + 16 + starts[i.index(n)],
                }),
                1 => 0..nodes + 16 + 128,
            ];
            let records = prop::collection::vec(record, 2 * nodes as usize);
            (Just((nodes, record_size, v6, tokens)), records)
        })
        .prop_map(|((nodes, record_size, v6, tokens), records)| {
            let tree: Vec<u8> = records
                .chunks(2)
                .flat_map(|pair| node(record_size, pair[0], pair[1]))
                .collect();
            let metadata = standard_metadata(nodes, record_size, if v6 { 6 } else { 4 });
            file(&tree, &tokens.concat(), &metadata)
        })
}

/// Opens `bytes` from a file: an error must name the file; an accepted file must answer
/// every lookup (any answer) without panicking.
fn open_and_look_up(name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    // A new file for every case: rewriting one in place makes ext4 flush it to disk on
    // close, which takes longer than the rest of the case.
    let db = TempDb::new(name, bytes);
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
        open_and_look_up("fuzz-arbitrary", &bytes)?;
    }

    #[test]
    fn fuzz_locator_mutated_database(
        base in 0..3_usize,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(BASES[base].clone(), &mutations);
        open_and_look_up("fuzz-mutated", &bytes)?;
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

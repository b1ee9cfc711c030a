//! Corrupt database files: each kind of damage is rejected by `Locator::open` with an error
//! that names the file and says what is wrong where; files written by `mmdb-writer` and the
//! shipped DB-IP file verify; changing a file after it was opened changes nothing.

mod common;

use common::handmade::{
    array, cat, country, file, map, metadata, node, one_node, pointer, standard_metadata, string,
    uint32, MARKER,
};
use common::{cc, ip, map as value_map, s, TempDb};
use meridian_geoip::{
    Corruption, GeoIpError, Locator, Section, ValueProblem, MAX_DATABASE_BYTES, MAX_DEPTH,
};

/// File offset of the data section of [`one_node`] files, by record size.
fn data_at(record_size: u32) -> usize {
    record_size as usize / 4 + 16
}

/// Opens `bytes` as a file; the error, after checking that its message names the file.
fn rejected(name: &str, bytes: &[u8]) -> GeoIpError {
    let db = TempDb::new(name, bytes);
    let err = Locator::open(db.path(), Vec::new()).expect_err("a corrupt file must be rejected");
    let message = err.to_string();
    assert!(
        message.contains(&db.path().display().to_string()),
        "{message}"
    );
    err
}

/// The [`Corruption`] `bytes` are rejected with.
fn corruption(name: &str, bytes: &[u8]) -> Corruption {
    match rejected(name, bytes) {
        GeoIpError::Corrupt { problem, .. } => problem,
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

/// The problem of a value in the data section, and its file offset.
fn data_problem(name: &str, bytes: &[u8]) -> (usize, ValueProblem) {
    match corruption(name, bytes) {
        Corruption::Value {
            section: Section::Data,
            offset,
            problem,
        } => (offset, problem),
        other => panic!("expected a data section problem, got {other:?}"),
    }
}

#[test]
fn handmade_files_of_every_record_size_open_and_answer() {
    for record_size in [24, 28, 32] {
        let db = TempDb::new(
            &format!("handmade-{record_size}"),
            &one_node(record_size, &country("DE")),
        );
        let locator = Locator::open(db.path(), Vec::new()).expect("well-formed");
        let found = locator.lookup(ip("200.1.2.3")).expect("128.0.0.0/1 is DE");
        assert_eq!(found.country, cc("DE"));
        assert_eq!(locator.lookup(ip("10.0.0.1")), None);
        assert_eq!(locator.info().database_type, "Handmade");
    }
}

#[test]
fn truncated_files_are_rejected() {
    let db = TempDb::build(
        "to-truncate",
        "Test",
        false,
        vec![
            ("81.2.69.0/24", value_map([("country_code", s("GB"))])),
            ("2a02:db8::/32", value_map([("country_code", s("GB"))])),
        ],
    );
    let whole = std::fs::read(db.path()).expect("read");
    let marker_at = whole
        .windows(MARKER.len())
        .rposition(|w| w == MARKER)
        .expect("marker");
    // Every cut: before the metadata marker nothing is found; after it the metadata ends
    // too early.
    for len in (0..whole.len()).step_by(7) {
        let problem = corruption("truncated-prefix", &whole[..len]);
        if len < marker_at + MARKER.len() {
            assert_eq!(problem, Corruption::NoMetadata, "cut at {len}");
        } else {
            assert!(
                matches!(
                    problem,
                    Corruption::Value {
                        section: Section::Metadata,
                        problem: ValueProblem::Truncated | ValueProblem::ContainerTooLarge { .. },
                        ..
                    }
                ),
                "cut at {len}: {problem:?}"
            );
        }
    }
    // The middle of the tree cut out, the metadata kept.
    let cut = [&whole[..64], &whole[marker_at..]].concat();
    let problem = corruption("truncated-tree", &cut);
    assert!(
        matches!(problem, Corruption::Truncated { available: 64, .. }),
        "{problem:?}"
    );
    assert!(problem
        .to_string()
        .starts_with("truncated: the search tree ("));
}

#[test]
fn search_tree_records_out_of_range_are_rejected() {
    for record_size in [24, 28, 32] {
        let metadata = standard_metadata(1, record_size, 4);
        let data = country("DE");
        // Past the data section: the last offset that exists is data.len() - 1.
        let past = 1 + 16 + data.len() as u32;
        let bytes = file(&node(record_size, 1, past), &data, &metadata);
        assert_eq!(
            corruption("tree-past", &bytes),
            Corruption::TreePastData {
                node: 0,
                record: past,
                data_len: data.len(),
            },
            "record size {record_size}"
        );
        // The highest value a record can hold (for 28 bits: the top nibble in the middle
        // byte), in the left record.
        let max = ((1_u64 << record_size) - 1) as u32;
        let bytes = file(&node(record_size, max, 17), &data, &metadata);
        let err = rejected("tree-max", &bytes).to_string();
        assert!(
            err.contains(&format!(
                "search tree node 0 points past the data section (record {max}"
            )),
            "{err}"
        );
        // Between the node count and the start of the data section.
        let bytes = file(&node(record_size, 1, 1 + 5), &data, &metadata);
        assert_eq!(
            corruption("tree-separator", &bytes),
            Corruption::TreeIntoSeparator { node: 0, record: 6 }
        );
    }
    // A node past the first: node 1's right record is bad.
    let data = country("FR");
    let tree = [node(32, 1, 2), node(32, 2 + 16, 2 + 16 + 100)].concat();
    let bytes = file(&tree, &data, &standard_metadata(2, 32, 4));
    assert!(matches!(
        corruption("tree-node-1", &bytes),
        Corruption::TreePastData { node: 1, .. }
    ));
}

#[test]
fn pointer_loops_and_chains_are_rejected() {
    let at = data_at(32);
    // {"a": <pointer to this map>}
    let bytes = one_node(32, &cat(&[map(1), string("a"), pointer(0)]));
    assert_eq!(
        data_problem("loop-map", &bytes),
        (at + 3, ValueProblem::PointerLoop { target: at })
    );
    // A record that is a pointer to itself.
    let bytes = one_node(32, &pointer(0));
    assert_eq!(
        data_problem("loop-self", &bytes),
        (at, ValueProblem::PointerLoop { target: at })
    );
    // Two maps pointing at each other, through an array: A = [ptr B], B = {"b": ptr A}.
    let a = cat(&[array(1), pointer(4)]);
    let b = cat(&[map(1), string("b"), pointer(0)]);
    assert_eq!(a.len(), 4);
    let bytes = one_node(32, &cat(&[a, b]));
    let (offset, problem) = data_problem("loop-two", &bytes);
    assert_eq!(problem, ValueProblem::PointerLoop { target: at });
    assert_eq!(offset, at + 4 + 3);
    let message = rejected("loop-two-message", &bytes).to_string();
    assert!(
        message.contains(&format!(
            "is corrupt: data section value at offset {:#x}: pointer loop",
            at + 7
        )),
        "{message}"
    );
    // A pointer to a pointer.
    let bytes = one_node(32, &cat(&[pointer(2), pointer(4), country("DE")]));
    assert_eq!(
        data_problem("pointer-chain", &bytes),
        (at, ValueProblem::PointerToPointer { target: at + 2 })
    );
    // A pointer past the data section.
    let bytes = one_node(32, &cat(&[map(1), string("a"), pointer(1000)]));
    assert_eq!(
        data_problem("pointer-past", &bytes),
        (at + 3, ValueProblem::PointerPastEnd { target: at + 1000 })
    );
    // A 4-byte pointer with the low bits maxminddb would read as a size.
    let bytes = one_node(32, &[0x3d, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        data_problem("pointer-bits", &bytes),
        (at, ValueProblem::PointerBits(0x3d))
    );
}

#[test]
fn containers_larger_than_the_file_are_rejected() {
    let at = data_at(32);
    // A map of 29 + 255 = 284 entries, with three bytes left.
    let bytes = one_node(32, &[0xe0 | 29, 0xff, 0x41, b'a', 0xa0]);
    assert_eq!(
        data_problem("big-map", &bytes),
        (
            at,
            ValueProblem::ContainerTooLarge {
                what: "map",
                count: 284,
                remaining: 3,
            }
        )
    );
    // An array of 65 821 + 0xffffff elements.
    let bytes = one_node(32, &[0x1f, 0x04, 0xff, 0xff, 0xff, 0xa0]);
    let (_, problem) = data_problem("big-array", &bytes);
    assert!(
        matches!(
            problem,
            ValueProblem::ContainerTooLarge {
                what: "array",
                count: 16_843_036,
                remaining: 1
            }
        ),
        "{problem:?}"
    );
    // A string longer than what is left, and a map whose last value is cut off.
    let bytes = one_node(32, &[0x5d, 0x10, b'x', b'y']);
    assert_eq!(
        data_problem("long-string", &bytes),
        (at, ValueProblem::Truncated)
    );
    let bytes = one_node(32, &cat(&[map(2), string("a"), string("b"), string("c")]));
    assert_eq!(
        data_problem("short-map", &bytes),
        (at + 7, ValueProblem::Truncated)
    );
}

#[test]
fn nesting_is_bounded() {
    let nested = |levels: usize| {
        let mut data: Vec<u8> = (0..levels).flat_map(|_| array(1)).collect();
        data.extend(country("DE"));
        data
    };
    // The record's map is one level below the innermost array, its strings one more.
    let deepest_allowed = MAX_DEPTH - 1;
    let db = TempDb::new("deep-ok", &one_node(32, &nested(deepest_allowed)));
    let locator = Locator::open(db.path(), Vec::new()).expect("within the limit");
    // Not a map: no location, and no panic.
    assert_eq!(locator.lookup(ip("200.0.0.1")), None);
    let (offset, problem) = data_problem("deep", &one_node(32, &nested(deepest_allowed + 1)));
    assert_eq!(problem, ValueProblem::TooDeep);
    assert!(offset > data_at(32), "{offset}");
    // Pointers count too: a chain of 40 maps, each pointing at the next (5 bytes on).
    let mut data = Vec::new();
    for i in 0..40_u16 {
        data.extend(cat(&[map(1), string("n"), pointer(5 * (i + 1))]));
    }
    data.extend(country("DE"));
    let (_, problem) = data_problem("deep-pointers", &one_node(32, &data));
    assert_eq!(problem, ValueProblem::TooDeep);
}

#[test]
fn malformed_values_are_rejected() {
    let at = data_at(32);
    for (name, data, offset, expected) in [
        ("utf8", vec![0x42, 0xff, 0xfe], 0, ValueProblem::NotUtf8),
        ("end-marker", vec![0x00, 0x06], 0, ValueProblem::Type(13)),
        ("cache", vec![0x00, 0x05], 0, ValueProblem::Type(12)),
        (
            "ext-zero",
            vec![0x00, 0x00],
            0,
            ValueProblem::ExtendedType(0),
        ),
        (
            "ext-high",
            vec![0x00, 0xfa],
            0,
            ValueProblem::ExtendedType(0xfa),
        ),
        (
            "double",
            vec![0x64, 0, 0, 0, 0],
            0,
            ValueProblem::Size {
                what: "double",
                size: 4,
            },
        ),
        (
            "uint16",
            vec![0xa3, 1, 2, 3],
            0,
            ValueProblem::Size {
                what: "unsigned integer",
                size: 3,
            },
        ),
        (
            "bool",
            vec![0x02, 0x07],
            0,
            ValueProblem::Size {
                what: "boolean",
                size: 2,
            },
        ),
        (
            "key",
            cat(&[map(1), vec![0xa0], string("x")]),
            1,
            ValueProblem::KeyNotString,
        ),
    ] {
        assert_eq!(
            data_problem(name, &one_node(32, &data)),
            (at + offset, expected),
            "{name}"
        );
    }
}

#[test]
fn garbage_metadata_is_rejected() {
    let tree = node(32, 1, 17);
    let data = country("DE");
    let with = |metadata: &[u8]| file(&tree, &data, metadata);
    let field = |name: &str, value: u32| {
        let mut fields = vec![
            ("binary_format_major_version", 2),
            ("binary_format_minor_version", 0),
            ("ip_version", 4),
            ("node_count", 1),
            ("record_size", 32),
        ];
        fields.retain(|(k, _)| *k != name);
        if value != u32::MAX {
            fields.push((name, value));
        }
        metadata(&fields)
    };
    assert!(matches!(
        corruption("meta-garbage", &with(&[0xff; 40])),
        Corruption::Value {
            section: Section::Metadata,
            ..
        }
    ));
    assert_eq!(
        corruption("meta-string", &with(&string("hello"))),
        Corruption::MetadataNotMap
    );
    assert_eq!(
        corruption("meta-missing", &with(&field("node_count", u32::MAX))),
        Corruption::MetadataField {
            field: "node_count"
        }
    );
    for (name, value, expected) in [
        ("record_size", 30, "24, 28 or 32"),
        ("ip_version", 5, "4 or 6"),
        ("binary_format_major_version", 3, "2"),
    ] {
        assert_eq!(
            corruption("meta-unsupported", &with(&field(name, value))),
            Corruption::Unsupported {
                field: name,
                value: u64::from(value),
                expected,
            }
        );
    }
    let problem = corruption("meta-nodes", &with(&field("node_count", 1_000_000)));
    assert!(
        matches!(
            problem,
            Corruption::Truncated {
                node_count: 1_000_000,
                needed: 8_000_016,
                ..
            }
        ),
        "{problem:?}"
    );
    // Metadata that verifies but lacks what maxminddb needs: an error, not a panic.
    let short = cat(&[
        map(4),
        string("binary_format_major_version"),
        uint32(2),
        string("ip_version"),
        uint32(4),
        string("node_count"),
        uint32(1),
        string("record_size"),
        uint32(32),
    ]);
    let err = rejected("meta-short", &with(&short));
    assert!(matches!(err, GeoIpError::Open { .. }), "{err:?}");
}

#[test]
fn the_separator_must_be_zero() {
    let mut bytes = one_node(32, &country("DE"));
    bytes[8 + 3] = 1;
    assert_eq!(
        corruption("separator", &bytes),
        Corruption::Separator { offset: 8 }
    );
}

#[test]
fn the_shipped_database_verifies_and_answers_like_the_builtin_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dbip-country-lite.mmdb");
    let file = Locator::open(&path, Vec::new()).expect("the shipped file verifies");
    let builtin = Locator::builtin(Vec::new()).expect("built-in");
    for addr in [
        "8.8.8.8",
        "80.128.0.1",
        "2001:4860:4860::8888",
        "10.0.0.1",
        "::1",
    ] {
        assert_eq!(file.lookup(ip(addr)), builtin.lookup(ip(addr)), "{addr}");
    }
    assert_eq!(file.info().database_type, builtin.info().database_type);
}

#[test]
fn changing_the_file_after_open_changes_nothing() {
    let db = TempDb::build(
        "in-place",
        "Test",
        false,
        vec![
            ("81.2.69.0/24", value_map([("country_code", s("GB"))])),
            ("2a02:db8::/32", value_map([("country_code", s("FR"))])),
        ],
    );
    let locator = Locator::open(db.path(), Vec::new()).expect("open");
    let answers = |l: &Locator| {
        ["81.2.69.160", "2a02:db8::1", "10.0.0.1"].map(|a| l.lookup(ip(a)).map(|x| x.country))
    };
    let expected = [Some(cc("GB")), Some(cc("FR")), None];
    assert_eq!(answers(&locator), expected);
    // Overwritten in place with zeros (same inode, same length): a memory map would now
    // read zeros.
    let len = std::fs::metadata(db.path()).expect("stat").len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(db.path())
            .expect("open for writing");
        f.write_all(&vec![0; len as usize]).expect("overwrite");
        f.sync_all().expect("sync");
    }
    assert_eq!(answers(&locator), expected);
    // Truncated in place: a memory map would fault (SIGBUS) on the next lookup.
    std::fs::OpenOptions::new()
        .write(true)
        .open(db.path())
        .expect("open")
        .set_len(0)
        .expect("truncate");
    assert_eq!(answers(&locator), expected);
    // The file itself is now rejected.
    assert!(matches!(
        Locator::open(db.path(), Vec::new()),
        Err(GeoIpError::Corrupt {
            problem: Corruption::NoMetadata,
            ..
        })
    ));
}

#[test]
fn files_over_the_size_limit_are_refused_unread() {
    let db = TempDb::new("huge", &[]);
    // Sparse: no disk space used, and nothing is read.
    std::fs::OpenOptions::new()
        .write(true)
        .open(db.path())
        .expect("open")
        .set_len(MAX_DATABASE_BYTES + 1)
        .expect("extend");
    let err = Locator::open(db.path(), Vec::new()).expect_err("too large");
    assert!(matches!(err, GeoIpError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains(&db.path().display().to_string()));
}

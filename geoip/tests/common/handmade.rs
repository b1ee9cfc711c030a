//! MaxMind DB files assembled byte by byte, for tests that need a file `mmdb-writer` would
//! never write: a search tree, the separator, a data section and metadata, each given.

/// Opens the metadata section.
pub const MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// A string value (shorter than 29 bytes).
pub fn string(s: &str) -> Vec<u8> {
    assert!(s.len() < 29, "short strings only");
    let mut out = vec![0x40 | s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A uint32 value.
pub fn uint32(v: u32) -> Vec<u8> {
    let mut out = vec![0xc4];
    out.extend_from_slice(&v.to_be_bytes());
    out
}

/// The header of a map of `n` entries (fewer than 29).
pub fn map(n: u8) -> Vec<u8> {
    assert!(n < 29);
    vec![0xe0 | n]
}

/// The header of an array of `n` elements (fewer than 29).
pub fn array(n: u8) -> Vec<u8> {
    assert!(n < 29);
    vec![n, 0x04]
}

/// A 1-byte pointer (target below 2048).
pub fn pointer(target: u16) -> Vec<u8> {
    assert!(target < 2048);
    vec![0x20 | (target >> 8) as u8, target as u8]
}

/// Concatenates encoded pieces.
pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// The record `{"country_code": code}`.
pub fn country(code: &str) -> Vec<u8> {
    cat(&[map(1), string("country_code"), string(code)])
}

/// Metadata with the given unsigned fields, plus the other fields `maxminddb` requires.
pub fn metadata(fields: &[(&str, u32)]) -> Vec<u8> {
    let mut out = map(fields.len() as u8 + 4);
    for (key, value) in fields {
        out.extend(string(key));
        out.extend(uint32(*value));
    }
    out.extend(string("build_epoch"));
    out.extend([0x08, 0x02, 0, 0, 0, 0, 0x66, 0, 0, 0]);
    out.extend(string("database_type"));
    out.extend(string("Handmade"));
    out.extend(string("description"));
    out.extend(map(0));
    out.extend(string("languages"));
    out.extend(array(0));
    out
}

/// The usual metadata of a file.
pub fn standard_metadata(node_count: u32, record_size: u32, ip_version: u32) -> Vec<u8> {
    metadata(&[
        ("binary_format_major_version", 2),
        ("binary_format_minor_version", 0),
        ("ip_version", ip_version),
        ("node_count", node_count),
        ("record_size", record_size),
    ])
}

/// One node of `record_size` bits (24, 28 or 32) with two records.
pub fn node(record_size: u32, left: u32, right: u32) -> Vec<u8> {
    match record_size {
        24 => [&left.to_be_bytes()[1..], &right.to_be_bytes()[1..]].concat(),
        28 => {
            let (l, r) = (left.to_be_bytes(), right.to_be_bytes());
            vec![
                l[1],
                l[2],
                l[3],
                (l[0] << 4) | (r[0] & 0x0f),
                r[1],
                r[2],
                r[3],
            ]
        }
        32 => [left.to_be_bytes(), right.to_be_bytes()].concat(),
        other => panic!("record size {other}"),
    }
}

/// A whole file: tree, 16 zero bytes, data, marker, metadata.
pub fn file(tree: &[u8], data: &[u8], metadata: &[u8]) -> Vec<u8> {
    [tree, &[0; 16], data, MARKER, metadata].concat()
}

/// An IPv4 database of one node: 0.0.0.0/1 has no data, 128.0.0.0/1 is the record at data
/// offset 0, which is `data`'s first value.
pub fn one_node(record_size: u32, data: &[u8]) -> Vec<u8> {
    file(
        &node(record_size, 1, 1 + 16),
        data,
        &standard_metadata(1, record_size, 4),
    )
}

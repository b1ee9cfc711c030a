//! Verification of a whole MaxMind DB file before `maxminddb` reads it, so that no corrupt
//! file can make a lookup panic, loop or overflow the stack: the metadata (decoded by the
//! bounded checker in `values.rs`) and its layout fields, the search tree's place in the
//! file and the separator after it, every node of the tree, and every data record a node
//! points at, with everything reachable from it.

use std::fmt;

use crate::values::{Values, MAX_DEPTH};

/// Opens the metadata section; its last occurrence in the file counts.
const MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// The zero bytes between the search tree and the data section.
const SEPARATOR: usize = 16;

/// The part of a database file a value is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The data section: the records the search tree points at.
    Data,
    /// The metadata at the end of the file.
    Metadata,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Data => "data section",
            Section::Metadata => "metadata",
        })
    }
}

/// What is wrong with one value of a section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueProblem {
    /// The value (or its size bytes) runs past the end of its section.
    #[error("runs past the end of the section")]
    Truncated,
    /// An extended type byte that names no type.
    #[error("invalid extended type byte {0}")]
    ExtendedType(u8),
    /// A type that may not appear in a database (12: data cache container, 13: end marker).
    #[error("invalid type {0}")]
    Type(u8),
    /// A scalar whose size its type does not allow.
    #[error("{what} of size {size}")]
    Size {
        /// The type.
        what: &'static str,
        /// The size the control byte gives.
        size: usize,
    },
    /// A 4-byte pointer with low bits set, which `maxminddb` would misread.
    #[error("pointer control byte {0:#04x} has reserved bits set")]
    PointerBits(u8),
    /// A pointer past the end of its section.
    #[error("pointer to offset {target:#x}, past the end of the section")]
    PointerPastEnd {
        /// File offset it points at.
        target: usize,
    },
    /// A pointer to another pointer (the format does not allow chains).
    #[error("pointer to another pointer at offset {target:#x}")]
    PointerToPointer {
        /// File offset it points at.
        target: usize,
    },
    /// A pointer to itself or to a map or array it is part of.
    #[error("pointer loop: points back to offset {target:#x}, which contains it")]
    PointerLoop {
        /// File offset it points at.
        target: usize,
    },
    /// A map or array with more entries than the bytes left could hold.
    #[error("{what} of {count} entries cannot fit in the {remaining} bytes left")]
    ContainerTooLarge {
        /// `map` or `array`.
        what: &'static str,
        /// Its number of entries.
        count: usize,
        /// Bytes from its first entry to the end of the section.
        remaining: usize,
    },
    /// Maps, arrays and pointers nested deeper than [`MAX_DEPTH`].
    #[error("nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    NotUtf8,
    /// A map key that is neither a string nor a pointer to one.
    #[error("map key is not a string")]
    KeyNotString,
}

/// Why a database file was rejected: what is wrong, and where (offsets count from the start
/// of the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The metadata marker is missing.
    #[error("no metadata section (no \\xab\\xcd\\xefMaxMind.com marker): not a MaxMind DB file, or truncated")]
    NoMetadata,
    /// A value in the data section or the metadata is malformed.
    #[error("{section} value at offset {offset:#x}: {problem}")]
    Value {
        /// Where the value is.
        section: Section,
        /// File offset of the value.
        offset: usize,
        /// What is wrong with it.
        problem: ValueProblem,
    },
    /// Verifying a section took more steps than any well-formed file needs.
    #[error("{section} too complex to verify: more than {limit} values in {bytes} bytes")]
    TooComplex {
        /// The section.
        section: Section,
        /// Its size.
        bytes: usize,
        /// The number of values decoded before giving up.
        limit: usize,
    },
    /// The metadata is not a map.
    #[error("the metadata is not a map")]
    MetadataNotMap,
    /// A metadata field the layout depends on is missing or not an unsigned integer.
    #[error("metadata field `{field}` is missing or not an unsigned integer")]
    MetadataField {
        /// The field.
        field: &'static str,
    },
    /// A metadata field has a value this reader does not support.
    #[error("unsupported {field} {value} (expected {expected})")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is supported.
        expected: &'static str,
    },
    /// The search tree the metadata describes does not fit before the metadata.
    #[error(
        "truncated: the search tree ({node_count} nodes) and the data section separator \
         need {needed} bytes, but the metadata starts at offset {available}"
    )]
    Truncated {
        /// Nodes the metadata announces.
        node_count: u32,
        /// Bytes they and the separator take.
        needed: u64,
        /// Where the metadata marker is.
        available: usize,
    },
    /// The 16 bytes after the search tree are not zero.
    #[error("the data section separator at offset {offset:#x} is not 16 zero bytes")]
    Separator {
        /// File offset of the separator.
        offset: usize,
    },
    /// A search tree record that points into the separator.
    #[error("search tree node {node} points into the data section separator (record {record})")]
    TreeIntoSeparator {
        /// The node.
        node: u32,
        /// The record's value.
        record: u32,
    },
    /// A search tree record that points past the end of the data section.
    #[error(
        "search tree node {node} points past the data section (record {record}, \
         data section of {data_len} bytes)"
    )]
    TreePastData {
        /// The node.
        node: u32,
        /// The record's value.
        record: u32,
        /// Size of the data section.
        data_len: usize,
    },
}

/// The layout fields of a verified file's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) node_count: u32,
    pub(crate) record_size: u16,
    pub(crate) ip_version: u16,
}

/// Verifies a whole database file; after it succeeds `maxminddb` can read the file and
/// look up any address without indexing out of bounds or recursing without end.
pub(crate) fn verify(file: &[u8]) -> Result<Layout, Corruption> {
    let marker_at = file
        .windows(MARKER.len())
        .rposition(|w| w == MARKER)
        .ok_or(Corruption::NoMetadata)?;
    let metadata_at = marker_at + MARKER.len();
    let layout = metadata(&file[metadata_at..], metadata_at)?;
    let tree_len = u64::from(layout.node_count) * u64::from(layout.record_size) / 4;
    let needed = tree_len + SEPARATOR as u64;
    let data_at = match usize::try_from(needed) {
        Ok(n) if n <= marker_at => n,
        _ => {
            return Err(Corruption::Truncated {
                node_count: layout.node_count,
                needed,
                available: marker_at,
            })
        }
    };
    let tree_end = data_at - SEPARATOR;
    if file[tree_end..data_at].iter().any(|&b| b != 0) {
        return Err(Corruption::Separator { offset: tree_end });
    }
    let mut data = Values::new(&file[data_at..marker_at], data_at, Section::Data);
    tree(&file[..tree_end], layout, &mut data)?;
    Ok(layout)
}

/// Decodes and checks the metadata (at file offset `base`), and reads its layout fields.
fn metadata(bytes: &[u8], base: usize) -> Result<Layout, Corruption> {
    let mut values = Values::new(bytes, base, Section::Metadata);
    values.record(0)?;
    let entries = values.map_entries(0).ok_or(Corruption::MetadataNotMap)?;
    let field = |field: &'static str| {
        entries
            .iter()
            .find(|(key, _)| *key == field)
            .and_then(|&(_, at)| values.uint(at))
            .ok_or(Corruption::MetadataField { field })
    };
    let unsupported = |field, value, expected| Corruption::Unsupported {
        field,
        value,
        expected,
    };
    let version = field("binary_format_major_version")?;
    if version != 2 {
        return Err(unsupported("binary_format_major_version", version, "2"));
    }
    let node_count = field("node_count")?;
    let record_size = field("record_size")?;
    let ip_version = field("ip_version")?;
    let node_count = u32::try_from(node_count)
        .map_err(|_| unsupported("node_count", node_count, "at most 4294967295"))?;
    let record_size = match record_size {
        24 => 24,
        28 => 28,
        32 => 32,
        other => return Err(unsupported("record_size", other, "24, 28 or 32")),
    };
    let ip_version = match ip_version {
        4 => 4,
        6 => 6,
        other => return Err(unsupported("ip_version", other, "4 or 6")),
    };
    Ok(Layout {
        node_count,
        record_size,
        ip_version,
    })
}

/// Checks every record of every node, and verifies each data record pointed at (once).
fn tree(tree: &[u8], layout: Layout, data: &mut Values<'_>) -> Result<(), Corruption> {
    let Layout {
        node_count,
        record_size,
        ..
    } = layout;
    let be = |b: &[u8]| b.iter().fold(0_u32, |acc, &x| (acc << 8) | u32::from(x));
    // Chunks of exactly record_size / 4 bytes (6, 7 or 8), so the ranges below are in them.
    let nodes = tree.chunks_exact(usize::from(record_size) / 4);
    for (node, bytes) in (0..node_count).zip(nodes) {
        let (left, right) = match record_size {
            24 => (be(&bytes[0..3]), be(&bytes[3..6])),
            28 => (
                u32::from(bytes[3] >> 4) << 24 | be(&bytes[0..3]),
                u32::from(bytes[3] & 0x0f) << 24 | be(&bytes[4..7]),
            ),
            _ => (be(&bytes[0..4]), be(&bytes[4..8])),
        };
        for record in [left, right] {
            if record <= node_count {
                continue; // another node, or "no data"
            }
            let Some(offset) = ((record - node_count) as usize).checked_sub(SEPARATOR) else {
                return Err(Corruption::TreeIntoSeparator { node, record });
            };
            if offset >= data.len() {
                return Err(Corruption::TreePastData {
                    node,
                    record,
                    data_len: data.len(),
                });
            }
            // Verified once: a database has far fewer records than tree pointers to them.
            data.record(offset)?;
        }
    }
    Ok(())
}

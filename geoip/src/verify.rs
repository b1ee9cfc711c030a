//! Verification of a whole MaxMind DB file before `maxminddb` reads it, so that no corrupt
//! file can make a lookup panic, loop or overflow the stack: the metadata (decoded by the
//! bounded checker in `values.rs`) and its layout fields, the search tree's place in the
//! file and the separator after it, every node of the tree, and every data record a node
//! points at, with everything reachable from it.

use crate::corruption::{Corruption, Section};
use crate::values::Values;

/// Opens the metadata section; its last occurrence in the file counts.
const MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// The zero bytes between the search tree and the data section.
const SEPARATOR: usize = 16;

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

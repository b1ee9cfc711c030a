//! What is wrong with a corrupt MaxMind DB file: where ([`Section`]), what
//! ([`Corruption`]) and, for a bad value, why ([`ValueProblem`]).

use std::fmt;

/// The deepest a value may nest: maps, arrays and pointers followed each count a level.
/// GeoIP2 City records nest about six levels deep.
pub const MAX_DEPTH: usize = 32;

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

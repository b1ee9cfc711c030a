//! A bounded checker of the MaxMind DB data format: decodes every value that the
//! `maxminddb` reader could reach from a given offset and rejects anything it would index
//! out of bounds, loop on or recurse into without end. Sizes must fit the section, pointers
//! stay inside it and never point at a pointer or back into a value they are part of,
//! nesting (maps, arrays and pointers followed) stops at [`MAX_DEPTH`], strings are UTF-8
//! and map keys are strings. Work is bounded by a budget proportional to the section size.

pub use crate::corruption::MAX_DEPTH;
use crate::corruption::{Corruption, Section, ValueProblem};

/// The type of a value, as its control byte(s) give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pointer(usize),
    String,
    Double,
    Bytes,
    Uint(usize),
    Map,
    Int32,
    Array,
    Bool,
    Float,
}

/// A value's type and size, and where its payload starts.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: Kind,
    size: usize,
    payload: usize,
}

/// What checking a value found: where it ends and how deep it nests.
#[derive(Debug, Clone, Copy)]
struct Checked {
    /// Offset just past the value (past the pointer itself for a pointer).
    end: usize,
    /// Levels below it: 0 for a scalar, 1 + the deepest child for a container or pointer.
    height: usize,
    /// Whether it is (or points at) a string.
    is_string: bool,
}

/// In [`Values::seen`]: verified, a string (or a pointer to one), and the height in the
/// low bits (at most `MAX_DEPTH + 1`).
const VERIFIED: u8 = 0x80;
const STRING: u8 = 0x40;
const HEIGHT: u8 = 0x3f;

/// The checker of one section (the data section or the metadata), with what it has
/// already verified.
pub(crate) struct Values<'a> {
    bytes: &'a [u8],
    /// File offset of `bytes[0]`, for messages.
    base: usize,
    section: Section,
    /// Values entered by offset (pointer targets and search tree records), once verified:
    /// one byte per offset of the section (a hash map costs more than the rest of the work).
    seen: Vec<u8>,
    /// Containers being checked, outermost first: a pointer back to one is a loop.
    open: Vec<usize>,
    /// Values left to decode before the section counts as too complex.
    budget: usize,
    limit: usize,
}

impl<'a> Values<'a> {
    /// A checker of `bytes`, found at file offset `base`. The budget allows each byte to be
    /// decoded once at every nesting level, which well-formed files never exceed.
    pub(crate) fn new(bytes: &'a [u8], base: usize, section: Section) -> Values<'a> {
        let limit = bytes.len().saturating_mul(MAX_DEPTH + 1).saturating_add(1);
        Values::with_budget(bytes, base, section, limit)
    }

    /// A checker with an explicit budget of values to decode.
    pub(crate) fn with_budget(
        bytes: &'a [u8],
        base: usize,
        section: Section,
        limit: usize,
    ) -> Values<'a> {
        Values {
            bytes,
            base,
            section,
            seen: vec![0; bytes.len()],
            open: Vec::new(),
            budget: limit,
            limit,
        }
    }

    /// The section's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Verifies the value at `at` (inside the section) as a top-level record (nesting depth
    /// 0), once per offset.
    pub(crate) fn record(&mut self, at: usize) -> Result<(), Corruption> {
        self.entered(at, 0).map(|_| ())
    }

    /// The value at `at` (verified beforehand) as a map: its entries' key and value offsets,
    /// keys resolved through a pointer. `None` if it is not a map.
    pub(crate) fn map_entries(&mut self, at: usize) -> Option<Vec<(&'a str, usize)>> {
        let header = self.header(at).ok()?;
        if header.kind != Kind::Map {
            return None;
        }
        // Verified already: walking it again takes what verifying took.
        self.budget = self.limit;
        let mut entries = Vec::with_capacity(header.size);
        let mut pos = header.payload;
        for _ in 0..header.size {
            let key = self.resolve(pos).ok()?;
            let key_end = self.value(pos, 1).ok()?.end;
            let key = (key.kind == Kind::String)
                .then(|| self.bytes.get(key.payload..key.payload + key.size))
                .flatten()
                .and_then(|b| std::str::from_utf8(b).ok())?;
            entries.push((key, key_end));
            pos = self.value(key_end, 1).ok()?.end;
        }
        Some(entries)
    }

    /// The value at `at` (verified beforehand) as an unsigned integer, through a pointer.
    pub(crate) fn uint(&self, at: usize) -> Option<u64> {
        let header = self.resolve(at).ok()?;
        let Kind::Uint(_) = header.kind else {
            return None;
        };
        let payload = self
            .bytes
            .get(header.payload..header.payload + header.size)?;
        let wide = payload
            .iter()
            .fold(0_u128, |acc, &b| (acc << 8) | u128::from(b));
        u64::try_from(wide).ok()
    }

    /// The header at `at`, or the one a pointer there points at.
    fn resolve(&self, at: usize) -> Result<Header, Corruption> {
        let header = self.header(at)?;
        match header.kind {
            Kind::Pointer(target) => self.header(target),
            _ => Ok(header),
        }
    }

    fn fail(&self, at: usize, problem: ValueProblem) -> Corruption {
        Corruption::Value {
            section: self.section,
            offset: self.base + at,
            problem,
        }
    }

    fn byte(&self, at: usize) -> Result<u8, Corruption> {
        self.bytes
            .get(at)
            .copied()
            .ok_or_else(|| self.fail(at, ValueProblem::Truncated))
    }

    /// `n` bytes at `at` read as a big-endian number (n ≤ 4).
    fn number(&self, at: usize, n: usize) -> Result<usize, Corruption> {
        let bytes = at
            .checked_add(n)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| self.fail(at, ValueProblem::Truncated))?;
        Ok(bytes.iter().fold(0, |acc, &b| (acc << 8) | usize::from(b)))
    }

    /// Decodes the control byte(s) at `at`, exactly as `maxminddb` 0.26 reads them.
    fn header(&self, at: usize) -> Result<Header, Corruption> {
        let ctrl = self.byte(at)?;
        let mut pos = at + 1;
        let mut type_num = ctrl >> 5;
        if type_num == 0 {
            let extended = self.byte(pos)?;
            pos += 1;
            type_num = match extended.checked_add(7) {
                Some(t @ 8..=15) => t,
                _ => return Err(self.fail(at, ValueProblem::ExtendedType(extended))),
            };
        }
        let low = usize::from(ctrl & 0x1f);
        if type_num == 1 {
            // The reader takes a low-bit value of 29 or more as a size with extra bytes even
            // for a pointer, where the spec ignores it (4-byte pointers): it would misread.
            if low >= 29 {
                return Err(self.fail(at, ValueProblem::PointerBits(ctrl)));
            }
            let len = (low >> 3) + 1;
            let raw = self.number(pos, len)?;
            let target = match len {
                1 => ((low & 7) << 8) + raw,
                2 => ((low & 7) << 16) + raw + 2048,
                3 => ((low & 7) << 24) + raw + 526_336,
                _ => raw,
            };
            return Ok(Header {
                kind: Kind::Pointer(target),
                size: len,
                payload: pos,
            });
        }
        let (size, payload) = match low {
            0..=28 => (low, pos),
            29 => (29 + self.number(pos, 1)?, pos + 1),
            30 => (285 + self.number(pos, 2)?, pos + 2),
            _ => (65_821 + self.number(pos, 3)?, pos + 3),
        };
        let kind = match type_num {
            2 => Kind::String,
            3 => Kind::Double,
            4 => Kind::Bytes,
            5 => Kind::Uint(2),
            6 => Kind::Uint(4),
            7 => Kind::Map,
            8 => Kind::Int32,
            9 => Kind::Uint(8),
            10 => Kind::Uint(16),
            11 => Kind::Array,
            14 => Kind::Bool,
            15 => Kind::Float,
            t => return Err(self.fail(at, ValueProblem::Type(t))),
        };
        Ok(Header {
            kind,
            size,
            payload,
        })
    }

    /// A value entered by offset (a record or a pointer target) at nesting `depth`: looked
    /// up if already verified, else verified and remembered. Its height and whether it is
    /// a string.
    fn entered(&mut self, at: usize, depth: usize) -> Result<(usize, bool), Corruption> {
        let known = self.seen.get(at).copied().unwrap_or(0);
        if known & VERIFIED != 0 {
            let height = usize::from(known & HEIGHT);
            if depth + height > MAX_DEPTH {
                return Err(self.fail(at, ValueProblem::TooDeep));
            }
            return Ok((height, known & STRING != 0));
        }
        let checked = self.value(at, depth)?;
        if let Some(slot) = self.seen.get_mut(at) {
            // height <= MAX_DEPTH + 1 < 64
            *slot = VERIFIED | if checked.is_string { STRING } else { 0 } | checked.height as u8;
        }
        Ok((checked.height, checked.is_string))
    }

    /// Verifies the value at `at`, nested `depth` levels deep.
    fn value(&mut self, at: usize, depth: usize) -> Result<Checked, Corruption> {
        if depth > MAX_DEPTH {
            return Err(self.fail(at, ValueProblem::TooDeep));
        }
        if self.budget == 0 {
            return Err(Corruption::TooComplex {
                section: self.section,
                bytes: self.bytes.len(),
                limit: self.limit,
            });
        }
        self.budget -= 1;
        let Header {
            kind,
            size,
            payload,
        } = self.header(at)?;
        let scalar = |end: usize, is_string: bool| Checked {
            end,
            height: 0,
            is_string,
        };
        let expect_size = |ok: bool, what: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(self.fail(at, ValueProblem::Size { what, size }))
            }
        };
        match kind {
            Kind::Pointer(target) => {
                let end = payload + size;
                if target >= self.bytes.len() {
                    let problem = ValueProblem::PointerPastEnd {
                        target: self.base + target,
                    };
                    return Err(self.fail(at, problem));
                }
                if target == at || self.open.contains(&target) {
                    let problem = ValueProblem::PointerLoop {
                        target: self.base + target,
                    };
                    return Err(self.fail(at, problem));
                }
                if let Kind::Pointer(_) = self.header(target)?.kind {
                    let problem = ValueProblem::PointerToPointer {
                        target: self.base + target,
                    };
                    return Err(self.fail(at, problem));
                }
                let (height, is_string) = self.entered(target, depth + 1)?;
                Ok(Checked {
                    end,
                    height: height + 1,
                    is_string,
                })
            }
            Kind::Map | Kind::Array => {
                let (what, items) = if kind == Kind::Map {
                    ("map", size.saturating_mul(2))
                } else {
                    ("array", size)
                };
                // Every item takes at least one byte.
                let remaining = self.bytes.len().saturating_sub(payload);
                if items > remaining {
                    let problem = ValueProblem::ContainerTooLarge {
                        what,
                        count: size,
                        remaining,
                    };
                    return Err(self.fail(at, problem));
                }
                self.open.push(at);
                let mut pos = payload;
                let mut height = 0;
                for i in 0..items {
                    let item = self.value(pos, depth + 1)?;
                    if kind == Kind::Map && i % 2 == 0 && !item.is_string {
                        return Err(self.fail(pos, ValueProblem::KeyNotString));
                    }
                    height = height.max(item.height + 1);
                    pos = item.end;
                }
                self.open.pop();
                Ok(Checked {
                    end: pos,
                    height,
                    is_string: false,
                })
            }
            Kind::String | Kind::Bytes => {
                let content = payload
                    .checked_add(size)
                    .and_then(|end| self.bytes.get(payload..end))
                    .ok_or_else(|| self.fail(at, ValueProblem::Truncated))?;
                let is_string = kind == Kind::String;
                if is_string && std::str::from_utf8(content).is_err() {
                    return Err(self.fail(at, ValueProblem::NotUtf8));
                }
                Ok(scalar(payload + size, is_string))
            }
            Kind::Double | Kind::Float | Kind::Uint(_) | Kind::Int32 => {
                match kind {
                    Kind::Double => expect_size(size == 8, "double")?,
                    Kind::Float => expect_size(size == 4, "float")?,
                    Kind::Int32 => expect_size(size <= 4, "int32")?,
                    Kind::Uint(max) => expect_size(size <= max, "unsigned integer")?,
                    _ => {}
                }
                if payload + size > self.bytes.len() {
                    return Err(self.fail(at, ValueProblem::Truncated));
                }
                Ok(scalar(payload + size, false))
            }
            Kind::Bool => {
                expect_size(size <= 1, "boolean")?;
                Ok(scalar(payload, false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `uint16` 0x1234.
    const VALUE: [u8; 3] = [0xa2, 0x12, 0x34];

    #[test]
    fn pointers_of_every_size_resolve_as_the_spec_says() {
        let mut bytes = vec![0xa0; 600_000];
        // (pointer, its target): size 1 adds nothing, 2 adds 2048, 3 adds 526 336, 4 is
        // the plain 32-bit value.
        let pointers: [(&[u8], usize); 4] = [
            (&[0x23, 0x45], 0x345),
            (&[0x29, 0x02, 0x03], 0x1_0203 + 2048),
            (&[0x30, 0x01, 0x02, 0x03], 0x01_0203 + 526_336),
            (&[0x38, 0, 0, 0x10, 0], 0x1000),
        ];
        for (i, (pointer, target)) in pointers.iter().enumerate() {
            bytes[i * 8..i * 8 + pointer.len()].copy_from_slice(pointer);
            bytes[*target..target + 3].copy_from_slice(&VALUE);
        }
        let mut values = Values::new(&bytes, 0, Section::Data);
        for (i, (pointer, _)) in pointers.iter().enumerate() {
            values.record(i * 8).expect("valid pointer");
            let checked = values.value(i * 8, 0).expect("valid pointer");
            assert_eq!(checked.end, i * 8 + pointer.len());
            assert_eq!(values.uint(i * 8), Some(0x1234), "pointer {i}");
        }
    }

    #[test]
    fn the_budget_bounds_the_work() {
        // {"a": 1, "b": 2}: the map, two keys and two values are five values.
        let bytes = [0xe2, 0x41, b'a', 0xa1, 1, 0x41, b'b', 0xa1, 2];
        let ok = Values::with_budget(&bytes, 0, Section::Data, 5).record(0);
        assert!(ok.is_ok(), "{ok:?}");
        let err = Values::with_budget(&bytes, 100, Section::Metadata, 4).record(0);
        assert_eq!(
            err,
            Err(Corruption::TooComplex {
                section: Section::Metadata,
                bytes: 9,
                limit: 4,
            })
        );
    }
}

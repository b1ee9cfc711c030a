//! Deserializing the file layer, collecting *every* unknown-key and type error.
//!
//! serde stops at the first error. To find the others, the entry it rejected is taken
//! out of the text (blanked, see [`crate::removal`], so positions keep pointing at the
//! original file) and the text is deserialized again, at most [`MAX_ERRORS`] times. A
//! syntax error ends the search: it is reported alone if the file has one, and if a
//! removal were ever to produce one (a layout `removal` does not handle), the search stops
//! without reporting it, since it is not in the user's file.

use std::ops::Range;

use crate::context::written;
use crate::error::{self, ConfigError};
use crate::file::FileConfig;
use crate::removal::{self, Step};

/// Top-level keys that are plain values (not tables): easy to misplace after a header.
const TOP_LEVEL_SCALARS: &[&str] = &["threads"];

/// The most file-layer errors reported for one file.
const MAX_ERRORS: usize = 50;

/// Deserializes `text` into the file structures, or returns every file-layer error found.
pub(crate) fn file_config(text: &str, origin: &str) -> Result<FileConfig, Vec<ConfigError>> {
    let mut current = text.to_owned();
    let mut errors: Vec<ConfigError> = Vec::new();
    loop {
        let deserializer = toml::Deserializer::new(&current);
        let error = match serde_path_to_error::deserialize::<_, FileConfig>(deserializer) {
            Ok(file) if errors.is_empty() => return Ok(file),
            Ok(_) => return Err(errors),
            Err(e) => e,
        };
        let failure = Failure::new(error, text, origin);
        let Some(path) = failure.path else {
            // A syntax error: the file's own on the first pass, one of ours after that.
            if errors.is_empty() {
                errors.push(failure.error);
            }
            return Err(errors);
        };
        if errors.len() == MAX_ERRORS {
            errors.push(ConfigError::new(
                origin,
                format!("too many errors; stopped after the first {MAX_ERRORS}"),
            ));
            return Err(errors);
        }
        errors.push(failure.error);
        let Some(ranges) = removal::entry_ranges(&current, &path) else {
            return Err(errors);
        };
        // The rejected text must be part of what is removed, or the next pass could
        // report the same error again.
        let covered = failure
            .span
            .is_some_and(|s| ranges.iter().any(|r| r.contains(&s.start)));
        let next = removal::blank(&current, &ranges);
        if !covered || next == current {
            return Err(errors);
        }
        current = next;
    }
}

/// One error from serde, converted.
struct Failure {
    /// The error as reported.
    error: ConfigError,
    /// The key path of the rejected entry; `None` for syntax errors (no path).
    path: Option<Vec<Step>>,
    /// Where the rejected text is.
    span: Option<Range<usize>>,
}

impl Failure {
    /// Converts a syntax, unknown-key or type error; positions refer to `text`.
    fn new(error: serde_path_to_error::Error<toml::de::Error>, text: &str, origin: &str) -> Self {
        let mut steps = steps(error.path());
        let field = render(&steps);
        let inner = error.into_inner();
        let span = inner.span();
        let message = condense(inner.message());
        let base = |message: String| ConfigError::new(origin, message).at_span(text, span.as_ref());

        if let Some(rest) = message.strip_prefix("unknown field ") {
            let quoted: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
            let Some((unknown, expected)) = quoted.split_first() else {
                return Self::stop(base(message), span);
            };
            // serde_path_to_error usually records the rejected key itself.
            if steps.last() != Some(&Step::Key((*unknown).to_owned())) {
                steps.push(Step::Key((*unknown).to_owned()));
            }
            let field = render(&steps);
            let nested = field.contains('.');
            let mut e = base(format!("unknown key `{unknown}`")).with_field(field);
            e.hint = if nested && TOP_LEVEL_SCALARS.contains(unknown) {
                // TOML puts a key written after a [table] header into that table.
                Some(format!(
                    "`{unknown}` is a top-level key: move it above the first [table] header"
                ))
            } else {
                error::suggest(unknown, expected.iter().copied(), "valid keys are")
            };
            return Self {
                error: e,
                path: Some(steps),
                span,
            };
        }
        if steps.is_empty() {
            // Syntax errors (and duplicate keys) have no path.
            return Self::stop(base(message), span);
        }
        let mut e = base(friendly_types(&message)).with_field(field);
        e.value = span.clone().and_then(|s| written(text, &s));
        Self {
            error: e,
            path: Some(steps),
            span,
        }
    }

    /// An error after which deserialization cannot go on.
    fn stop(error: ConfigError, span: Option<Range<usize>>) -> Self {
        Self {
            error,
            path: None,
            span,
        }
    }
}

/// A serde path as steps, leaving out `Spanned`'s internal fields; `Unknown` segments
/// (which the file structures do not produce) become `?` keys that lead nowhere.
fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } if key.starts_with("$__serde_spanned_private") => None,
            Segment::Map { key } | Segment::Enum { variant: key } => Some(Step::Key(key.clone())),
            _ => Some(Step::Key("?".to_owned())),
        })
        .collect()
}

/// Steps as a field path such as `a.b[1].c`.
fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Index(index) => out.push_str(&format!("[{index}]")),
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
        }
    }
    out
}

/// A multi-line message from toml on one line.
fn condense(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// serde's type names in TOML terms.
fn friendly_types(message: &str) -> String {
    let mut out = message
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(at) = out.find("expected struct ") {
        out.truncate(at);
        out.push_str("expected a table");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

//! The validation context: the source text, key positions and the errors found so far,
//! with helpers that check one value and record what is wrong with it.

use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::error::{suggest, ConfigError};
use crate::file::S;
use crate::keys::KeySpans;

/// The longest value text quoted in an error.
const MAX_SHOWN: usize = 80;

/// The lower bound of a duration.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Min {
    /// Zero is allowed.
    Zero,
    /// Must be greater than zero.
    Positive,
    /// Must be at least this long.
    AtLeast(Duration),
}

/// Validation context: the source text and the errors found so far.
pub(crate) struct Cx<'a> {
    /// The file's text.
    pub text: &'a str,
    /// The file name shown in errors.
    pub origin: &'a str,
    /// Positions of table keys.
    pub keys: KeySpans,
    /// Errors found so far.
    pub errors: Vec<ConfigError>,
    /// The config file's directory: relative paths in the file resolve against it.
    pub base_dir: Option<std::path::PathBuf>,
}

impl<'a> Cx<'a> {
    /// A context for `text`.
    pub(crate) fn new(text: &'a str, origin: &'a str) -> Self {
        Self {
            text,
            origin,
            keys: KeySpans::collect(text),
            errors: Vec::new(),
            base_dir: None,
        }
    }

    /// The text at `span` as written, if it is short and on one line.
    pub(crate) fn written(&self, span: &Range<usize>) -> Option<String> {
        written(self.text, span)
    }

    /// Records an error at `span` (if known) about `field`.
    pub(crate) fn report(
        &mut self,
        span: Option<&Range<usize>>,
        field: &str,
        value: Option<String>,
        problem: impl Into<Problem>,
    ) {
        let problem = problem.into();
        let mut error = ConfigError::new(self.origin, problem.message)
            .with_field(field)
            .at_span(self.text, span);
        error.value = value;
        error.hint = problem.hint;
        self.errors.push(error);
    }

    /// Records an error about a value, quoting it as written.
    pub(crate) fn bad<T>(&mut self, value: &S<T>, field: &str, problem: impl Into<Problem>) {
        let span = value.span();
        let written = self.written(&span);
        self.report(Some(&span), field, written, problem);
    }

    /// Runs `check` on a value, recording its problem if any.
    pub(crate) fn check<T, U>(
        &mut self,
        value: &S<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<U, Problem>,
    ) -> Option<U> {
        match check(value.get_ref()) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.bad(value, field, problem);
                None
            }
        }
    }

    /// Records a missing required key, positioned at the enclosing table's key.
    pub(crate) fn missing(
        &mut self,
        span: Option<Range<usize>>,
        field: &str,
        hint: Option<String>,
    ) {
        let key = field.rsplit('.').next().unwrap_or(field);
        let problem = Problem {
            message: format!("missing required key `{key}`"),
            hint,
        };
        self.report(span.as_ref(), field, None, problem);
    }

    /// The span of a top-level key's first mention.
    pub(crate) fn top_key(&self, name: &str) -> Option<Range<usize>> {
        self.keys.top.get(name).cloned()
    }

    /// A duration field without an upper bound; `None` if it was invalid (the error is
    /// recorded).
    pub(crate) fn duration(
        &mut self,
        value: Option<&S<String>>,
        field: &str,
        default: Duration,
        min: Min,
    ) -> Option<Duration> {
        self.duration_within(value, field, default, min, Duration::MAX)
    }

    /// A duration field of at most `max`; `None` if it was invalid (the error is recorded).
    pub(crate) fn duration_within(
        &mut self,
        value: Option<&S<String>>,
        field: &str,
        default: Duration,
        min: Min,
        max: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let name = last_segment(field);
        self.check(value, field, |text| {
            let d = checks::duration(text)?;
            match min {
                Min::Positive if d.is_zero() => {
                    Err(format!("{name} must be greater than 0").into())
                }
                Min::AtLeast(least) if d < least => {
                    Err(format!("{name} must be at least {}", checks::show(least)).into())
                }
                _ => checks::at_most(d, max, name),
            }
        })
    }

    /// An integer field within `range`; `None` if it was invalid.
    pub(crate) fn int(
        &mut self,
        value: Option<&S<i64>>,
        field: &str,
        default: i64,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let Some(value) = value else {
            return Some(default);
        };
        let name = last_segment(field);
        self.check(value, field, |v| checks::int_in(*v, &range, name))
    }

    /// A reference to a region by name, resolved to its index in `names`.
    pub(crate) fn region_ref(
        &mut self,
        names: &[String],
        value: &S<String>,
        field: &str,
    ) -> Option<usize> {
        let name = value.get_ref();
        if let Some(index) = names.iter().position(|n| n == name) {
            return Some(index);
        }
        let problem = Problem {
            message: format!("unknown region \"{name}\""),
            hint: suggest(name, names.iter().map(String::as_str), "defined regions"),
        };
        self.bad(value, field, problem);
        None
    }
}

/// The text at `span` as written, if it is short and on one line.
pub(crate) fn written(text: &str, span: &Range<usize>) -> Option<String> {
    let raw = text.get(span.clone())?.trim();
    if raw.is_empty() || raw.len() > MAX_SHOWN || raw.contains('\n') {
        None
    } else {
        Some(raw.to_owned())
    }
}

/// The last `.`-separated segment of a field path, without any `[index]`.
pub(crate) fn last_segment(field: &str) -> &str {
    let last = field.rsplit('.').next().unwrap_or(field);
    last.split('[').next().unwrap_or(last)
}

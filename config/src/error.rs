//! Configuration errors: one [`ConfigError`] per problem, collected in [`ConfigErrors`].

use std::ops::Range;

/// One problem found in a configuration file.
///
/// Displays as `file:line:column: field = value: message (hint: ...)`, leaving out the
/// parts that are unknown, e.g.
/// `meridian.toml:12:10: regions.us-east.backends[1].weight = 0: weight must be at least 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file the error is in, as shown to the user.
    pub file: String,
    /// 1-based line of the offending text, if known.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending text, if known.
    pub column: Option<usize>,
    /// Path of the offending key, e.g. `regions.us-east.backends[1].weight`.
    pub field: Option<String>,
    /// The offending value as written in the file, e.g. `"2 secs"` or `0`.
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// A suggestion for fixing it, e.g. ``did you mean `listeners`?``.
    pub hint: Option<String>,
}

impl ConfigError {
    /// An error about `file` as a whole, without a position.
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            field: None,
            value: None,
            message: message.into(),
            hint: None,
        }
    }

    /// Sets the 1-based line and column.
    pub fn with_position(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Sets the field path.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets the value as written.
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets line and column from a byte offset into `text`.
    pub(crate) fn at_offset(self, text: &str, offset: usize) -> Self {
        let (line, column) = position(text, offset);
        self.with_position(line, column)
    }

    /// Sets line and column from an optional byte span into `text`.
    pub(crate) fn at_span(self, text: &str, span: Option<&Range<usize>>) -> Self {
        match span {
            Some(span) => self.at_offset(text, span.start),
            None => self,
        }
    }

    fn render(&self) -> String {
        let mut out = self.file.clone();
        if let (Some(line), Some(column)) = (self.line, self.column) {
            out.push_str(&format!(":{line}:{column}"));
        }
        out.push_str(": ");
        if let Some(field) = &self.field {
            out.push_str(field);
            if let Some(value) = &self.value {
                out.push_str(" = ");
                out.push_str(value);
            }
            out.push_str(": ");
        }
        out.push_str(&self.message);
        if let Some(hint) = &self.hint {
            out.push_str(&format!(" (hint: {hint})"));
        }
        out
    }
}

/// Every problem found in a configuration file. Displays one error per line.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigErrors {
    /// The errors, ordered by position in the file (errors without a position last).
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Wraps a list of errors, ordering them by position in the file.
    pub fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
        Self { errors }
    }

    /// The number of errors.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether there are no errors.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Iterates over the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    fn render(&self) -> String {
        let lines: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        lines.join("\n")
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// 1-based line and column (in characters) of a byte offset into `text`.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let word_lower = word.to_lowercase();
    let limit = (word.chars().count() * 2 / 3).max(1);
    let mut best: Option<(usize, f64, &'a str)> = None;
    for candidate in candidates {
        let cand_lower = candidate.to_lowercase();
        let distance = strsim::levenshtein(&word_lower, &cand_lower);
        let similarity = strsim::jaro_winkler(&word_lower, &cand_lower);
        let close = distance <= limit || similarity >= 0.85;
        if !close || candidate == word {
            continue;
        }
        let better = match best {
            None => true,
            Some((d, s, _)) => similarity > s || (similarity == s && distance < d),
        };
        if better {
            best = Some((distance, similarity, candidate));
        }
    }
    best.map(|(_, _, c)| c)
}

/// A ``did you mean `x`?`` hint, or a list of the valid choices when none is close.
pub(crate) fn suggest<'a, I>(word: &str, candidates: I, what: &str) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let candidates = candidates.into_iter();
    if let Some(best) = closest(word, candidates.clone()) {
        return Some(format!("did you mean `{best}`?"));
    }
    let all: Vec<String> = candidates.map(|c| format!("`{c}`")).collect();
    if all.is_empty() {
        None
    } else {
        Some(format!("{what}: {}", all.join(", ")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_with_everything() {
        let e = ConfigError::new("meridian.toml", "weight must be at least 1")
            .with_position(12, 10)
            .with_field("regions.us-east.backends[1].weight")
            .with_value("0");
        assert_eq!(
            e.to_string(),
            "meridian.toml:12:10: regions.us-east.backends[1].weight = 0: weight must be at least 1"
        );
        let e = ConfigError::new("m.toml", "unknown key `lisen`")
            .with_position(1, 1)
            .with_field("lisen")
            .with_hint("did you mean `listeners`?");
        assert_eq!(
            e.to_string(),
            "m.toml:1:1: lisen: unknown key `lisen` (hint: did you mean `listeners`?)"
        );
        let e = ConfigError::new("/x.toml", "cannot read config file: gone");
        assert_eq!(e.to_string(), "/x.toml: cannot read config file: gone");
    }

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        assert_eq!(position(text, 11), (2, 5));
        assert_eq!(position(text, 999), (3, 1));
    }

    #[test]
    fn suggestions() {
        let keys = ["http", "admin"];
        assert_eq!(closest("htp", keys), Some("http"));
        assert_eq!(closest("zzzzzz", keys), None);
        let top = [
            "node",
            "listeners",
            "threads",
            "timeouts",
            "logging",
            "health_check",
            "regions",
            "geoip",
            "client",
            "steering",
            "residency",
            "latency",
            "outlier",
            "retry",
            "reload",
        ];
        assert_eq!(closest("lisen", top), Some("listeners"));
        assert_eq!(closest("regoins", top), Some("regions"));
        assert_eq!(closest("timeout", top), Some("timeouts"));
        assert_eq!(closest("healthcheck", top), Some("health_check"));
        assert_eq!(closest("us-wst", ["us-east", "eu-west"]), Some("us-east"));
        assert_eq!(closest("frobnicate", top), None);
        assert_eq!(
            suggest("qqqqq", ["a", "b"], "expected one of").as_deref(),
            Some("expected one of: `a`, `b`")
        );
    }
}

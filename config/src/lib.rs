//! Meridian's configuration.
//!
//! Two layers, as in River and pingap: the TOML file is deserialized into permissive
//! file structures (`file.rs`: every key optional, unknown keys rejected, values that
//! later checks need to point at kept with their position), then validated into the
//! [`Config`] model (`model.rs`), collecting *every* semantic error rather than
//! stopping at the first. Errors carry `file:line:column`, the key's path, the value
//! as written and, where possible, a hint.
//!
//! ```
//! let text = r#"
//! [node]
//! region = "a"
//!
//! [regions.a]
//! latitude = 0.0
//! longitude = 0.0
//! backends = [{ address = "127.0.0.1:8080" }]
//! "#;
//! let config = meridian_config::parse(text, "meridian.toml", None).unwrap();
//! assert_eq!(config.regions[0].backends[0].weight, 1);
//! ```

mod checks;
mod error;
mod file;
pub mod model;
mod regions;
mod routing;
mod tls;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use crate::file::FileConfig;
use crate::validate::{written, Cx};

/// Top-level keys that are plain values (not tables): easy to misplace after a header.
const TOP_LEVEL_SCALARS: &[&str] = &["threads"];

/// Reads and validates a config file; relative paths inside (geoip.database, certificate files) resolve against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::from(ConfigError::new(
            origin.clone(),
            format!("cannot read config file: {e}"),
        ))
    })?;
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut config = parse(&text, &origin, base_dir)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Validates text; `origin` is the file name shown in errors; `base_dir` resolves relative paths.
pub fn parse(text: &str, origin: &str, base_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
    let deserializer = toml::Deserializer::new(text);
    let file: FileConfig = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| ConfigErrors::from(serde_error(e, text, origin)))?;
    let mut cx = Cx::new(text, origin);
    cx.base_dir = base_dir.map(Path::to_path_buf);
    match validate::validate(&file, &mut cx, base_dir) {
        Some(config) => Ok(config),
        None => Err(ConfigErrors::new(cx.errors)),
    }
}

/// Converts a syntax, unknown-key or type error from the file layer.
fn serde_error(
    error: serde_path_to_error::Error<toml::de::Error>,
    text: &str,
    origin: &str,
) -> ConfigError {
    let path = render_path(error.path());
    let inner = error.into_inner();
    let span = inner.span();
    let message = condense(inner.message());
    let base = |message: String| ConfigError::new(origin, message).at_span(text, span.as_ref());

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let quoted: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let Some((unknown, expected)) = quoted.split_first() else {
            return base(message);
        };
        // serde_path_to_error usually records the rejected key itself.
        let field = if path.is_empty() {
            (*unknown).to_owned()
        } else if path == *unknown || path.ends_with(&format!(".{unknown}")) {
            path
        } else {
            format!("{path}.{unknown}")
        };
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
        return e;
    }
    if path.is_empty() {
        // Syntax errors (and duplicate keys) have no path.
        return base(message);
    }
    let mut e = base(friendly_types(&message)).with_field(path);
    e.value = span.and_then(|s| written(text, &s));
    e
}

/// A serde path as `a.b[1].c`, leaving out `Spanned`'s internal fields.
fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__serde_spanned_private") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
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

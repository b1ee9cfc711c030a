//! Meridian's configuration.
//!
//! Two layers, as in River and pingap: the TOML file is deserialized into permissive
//! file structures (`file.rs`: every key optional, unknown keys rejected, values that
//! later checks need to point at kept with their position), then validated into the
//! [`Config`] model (`model.rs`). Both layers report *every* error rather than stopping
//! at the first: the file layer takes each rejected entry out and reads on
//! (`file_errors.rs`, `removal.rs`), validation collects as it goes. Errors carry
//! `file:line:column`, the key's path, the value as written and, where possible, a hint.
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
mod context;
mod error;
mod file;
mod file_errors;
pub mod geodns;
mod keys;
mod layer;
mod limits;
mod mesh;
pub mod model;
mod pools;
mod regions;
mod removal;
mod routing;
mod services;
mod sticky;
mod tls;
mod upstream;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use crate::context::Cx;

/// What the command line or the environment may set over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `node.name` (`meridian run --node NAME`, or `MERIDIAN_NODE`): one file can then be
    /// deployed to every instance, each picking its own entry (and region) by name.
    pub node_name: Option<String>,
}

/// Reads and validates a config file; relative paths inside (geoip.database, certificate files) resolve against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &Overrides::default())
}

/// Like [`load`], with `overrides` applied over the file before validation.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::from(ConfigError::new(
            origin.clone(),
            format!("cannot read config file: {e}"),
        ))
    })?;
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut config = parse_with(&text, &origin, base_dir, overrides)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Validates text; `origin` is the file name shown in errors; `base_dir` resolves relative paths.
pub fn parse(text: &str, origin: &str, base_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
    parse_with(text, origin, base_dir, &Overrides::default())
}

/// Like [`parse`], with `overrides` applied over the file before validation.
pub fn parse_with(
    text: &str,
    origin: &str,
    base_dir: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigErrors> {
    // Semantic validation runs only on a file without file-layer errors. Those errors are
    // found by taking each rejected entry out and deserializing again, so validation would
    // see a file with entries missing: a misspelled `latitud` or a wrongly typed
    // `latitude` would come back as "missing required key `latitude`", a misspelled
    // `[regoins.x]` as "unknown region" wherever `x` is named, and defaults standing in for
    // removed values could fail cross-field checks (timeout vs. interval). Reporting those
    // would bury the real errors in follow-on noise; once the file layer is clean, the
    // next `meridian check` reports every semantic error at once.
    let mut file = file_errors::file_config(text, origin).map_err(ConfigErrors::new)?;
    if let Some(name) = &overrides.node_name {
        // Spans past the text: errors about it show no position or value from the file.
        file.node.name = Some(toml::Spanned::new(text.len()..text.len(), name.clone()));
    }
    let mut cx = Cx::new(text, origin);
    cx.base_dir = base_dir.map(Path::to_path_buf);
    match validate::validate(&file, &mut cx, base_dir) {
        Some(config) => Ok(config),
        None => Err(ConfigErrors::new(cx.errors)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

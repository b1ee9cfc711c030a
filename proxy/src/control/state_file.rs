//! The runtime state file (`admin.state_file`): the operator's runtime settings (drain,
//! maintenance, weights) as JSON, read at start and written after every change (a
//! temporary file renamed over it), so that a restart keeps them.

use std::path::Path;

use meridian_routing::admin::{AdminState, BackendOverride, RuntimeSettings};
use serde::{Deserialize, Serialize};

/// The state file's form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// Per backend ID: state and weight.
    #[serde(default)]
    backends: std::collections::BTreeMap<String, BackendEntry>,
    /// Per pool (`service/region`): state.
    #[serde(default)]
    pools: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BackendEntry {
    #[serde(default = "ready")]
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
}

fn ready() -> String {
    AdminState::Ready.as_str().to_owned()
}

/// Reads the runtime settings saved in `path`; a missing file is empty, a bad one is
/// logged and ignored (the instance starts with no runtime settings rather than not at
/// all).
pub fn read_state(path: &Path) -> RuntimeSettings {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return RuntimeSettings::default(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the runtime state file; starting without runtime settings");
            return RuntimeSettings::default();
        }
    };
    let file: StateFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "runtime state file is not valid; starting without runtime settings");
            return RuntimeSettings::default();
        }
    };
    let mut settings = RuntimeSettings::default();
    for (id, b) in file.backends {
        let Some(state) = AdminState::parse(&b.state) else {
            tracing::warn!(file = %path.display(), backend = %id, state = %b.state, "unknown state in the runtime state file; ignored");
            continue;
        };
        let weight = b.weight.filter(|w| (1..=1000).contains(w));
        settings
            .backends
            .insert(id, BackendOverride { state, weight });
    }
    for (pool, state) in file.pools {
        match AdminState::parse(&state) {
            Some(s) => {
                settings.pools.insert(pool, s);
            }
            None => {
                tracing::warn!(file = %path.display(), %pool, %state, "unknown state in the runtime state file; ignored")
            }
        }
    }
    settings.compact();
    if !settings.backends.is_empty() || !settings.pools.is_empty() {
        tracing::info!(file = %path.display(), backends = settings.backends.len(), pools = settings.pools.len(), "runtime settings restored");
    }
    settings
}

/// Writes `settings` to `path` (a temporary file renamed over it).
pub fn write_state(path: &Path, settings: &RuntimeSettings) -> std::io::Result<()> {
    let file = StateFile {
        backends: settings
            .backends
            .iter()
            .map(|(id, b)| {
                let entry = BackendEntry {
                    state: b.state.as_str().to_owned(),
                    weight: b.weight,
                };
                (id.clone(), entry)
            })
            .collect(),
        pools: settings
            .pools
            .iter()
            .map(|(k, s)| (k.clone(), s.as_str().to_owned()))
            .collect(),
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

//! The runtime API's effect: an operator's change (drain, maintenance, ready, weight) to
//! a backend or to a service's whole pool in a region, checked against the running
//! snapshot, recorded in the instance's runtime settings (which every later snapshot
//! build applies, so reloads keep it), applied to the running snapshot at once, saved to
//! `admin.state_file` when there is one (restarts keep it), and for a weight, followed by
//! a rebuild so that every balancer's tables use it.

use meridian_routing::admin::{AdminState, RuntimeSettings};
use meridian_routing::Snapshot;
use serde::Serialize;

use super::instance::Instance;
use super::reload::Reloader;
use super::state_file::write_state;

/// What to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One backend, by stable ID (`region/address`) or by address.
    Backend(String),
    /// A service's pool in a region (the service may be left out when there is one).
    Pool {
        /// The service's name.
        service: Option<String>,
        /// The region's name.
        region: String,
    },
}

/// A change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What it applies to.
    pub target: Target,
    /// The new state, if it changes.
    pub state: Option<AdminState>,
    /// The new weight (`Some(None)`: back to the configured one), if it changes.
    pub weight: Option<Option<u32>>,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// No backend has that ID or address.
    #[error("no backend \"{0}\": give its address (\"10.0.0.1:8080\") or its ID (\"region/10.0.0.1:8080\") as /status lists them")]
    UnknownBackend(String),
    /// No such service.
    #[error("no service \"{0}\" (services: {1})")]
    UnknownService(String, String),
    /// The service has no pool in that region.
    #[error("service \"{0}\" has no pool in region \"{1}\" (its regions: {2})")]
    UnknownPool(String, String, String),
    /// Several services and none named.
    #[error("there are several services ({0}): say which one")]
    WhichService(String),
    /// A pool's weight cannot be set (weights are per backend).
    #[error("weights are set per backend, not for a whole region")]
    PoolWeight,
    /// Nothing to change.
    #[error("nothing to change: give a state (ready, drain, maintenance) or a weight")]
    Nothing,
}

/// The backends a change applied to, as the API reports them.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Each backend's ID, its state and its weight now.
    pub backends: Vec<BackendNow>,
    /// Whether the state file was written (`None`: there is none).
    pub saved: Option<bool>,
    /// Why the state file could not be written.
    pub save_error: Option<String>,
}

/// One backend after a change.
#[derive(Debug, Clone, Serialize)]
pub struct BackendNow {
    /// Its stable ID.
    pub id: String,
    /// Its service.
    pub service: String,
    /// Its state.
    pub state: &'static str,
    /// Its weight (configured or set).
    pub weight: u32,
}

/// The service names of `snap`, for messages.
fn service_list(snap: &Snapshot) -> String {
    let names: Vec<&str> = snap.services.iter().map(|s| &*s.name).collect();
    names.join(", ")
}

/// Checks `change` against `snap`: the runtime keys it touches.
fn resolve(snap: &Snapshot, change: &Change) -> Result<Vec<Key>, RuntimeError> {
    if change.state.is_none() && change.weight.is_none() {
        return Err(RuntimeError::Nothing);
    }
    match &change.target {
        Target::Backend(name) => {
            let mut ids: Vec<Key> = snap
                .backends()
                .filter(|(_, m)| &*m.state.id == name || &*m.state.addr_label == name)
                .map(|(_, m)| Key::Backend(m.state.id.to_string()))
                .collect();
            ids.dedup();
            if ids.is_empty() {
                return Err(RuntimeError::UnknownBackend(name.clone()));
            }
            Ok(ids)
        }
        Target::Pool { service, region } => {
            if change.weight.is_some() {
                return Err(RuntimeError::PoolWeight);
            }
            let si = match service {
                Some(name) => snap.service_index(name).ok_or_else(|| {
                    RuntimeError::UnknownService(name.clone(), service_list(snap))
                })?,
                None if snap.services.len() == 1 => 0,
                None => return Err(RuntimeError::WhichService(service_list(snap))),
            };
            let s = &snap.services[si];
            let pool = snap
                .region_index(region)
                .and_then(|ri| snap.pool(si, ri))
                .ok_or_else(|| {
                    let regions: Vec<&str> = s.regions.iter().flatten().map(|p| &*p.name).collect();
                    RuntimeError::UnknownPool(
                        s.name.to_string(),
                        region.clone(),
                        regions.join(", "),
                    )
                })?;
            Ok(vec![Key::Pool(pool.key.to_string())])
        }
    }
}

/// A runtime setting's key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Backend(String),
    Pool(String),
}

/// Applies the runtime settings to the members of `snap` (their state atomics and gauges).
pub fn apply_to(snap: &Snapshot, settings: &RuntimeSettings) {
    for (r, m) in snap.backends() {
        let state = settings.state_of(&r.key, &m.state.id);
        m.state.set_admin(state);
        m.state.metrics.set_admin(state, m.weight);
    }
}

/// Makes `change` on the instance `reloader` runs: checked, recorded, applied at once,
/// saved, and for a weight, rebuilt into the balancers.
pub fn change(reloader: &Reloader, change: &Change) -> Result<Applied, RuntimeError> {
    let inst: &Instance = reloader.instance();
    let (keys, _, saved) = reloader.exclusive(
        || {
            let active = inst.active();
            let snap = &active.routing;
            let keys = resolve(snap, change)?;
            let mut settings = inst.runtime.lock();
            let mut weight_changed = false;
            for key in &keys {
                match key {
                    Key::Backend(id) => {
                        let entry = settings.backends.entry(id.clone()).or_default();
                        if let Some(state) = change.state {
                            entry.state = state;
                        }
                        if let Some(w) = change.weight {
                            weight_changed |= entry.weight != w;
                            entry.weight = w;
                        }
                    }
                    Key::Pool(key) => {
                        if let Some(state) = change.state {
                            settings.pools.insert(key.clone(), state);
                        }
                    }
                }
            }
            settings.compact();
            apply_to(snap, &settings);
            let saved = snap.config.admin.state_file.as_deref().map(|path| {
                write_state(path, &settings).map_err(|e| format!("{}: {e}", path.display()))
            });
            Ok((keys, weight_changed, saved))
        },
        |(_, weight_changed, _)| *weight_changed,
    )?;
    if let Some(Err(e)) = &saved {
        tracing::error!(error = %e, "runtime change applied but the state file could not be written: a restart would lose it");
    }
    let active = inst.active();
    let snap = &active.routing;
    let backends = snap
        .backends()
        .filter(|(r, m)| {
            keys.iter().any(|k| match k {
                Key::Backend(id) => *m.state.id == **id,
                Key::Pool(key) => *r.key == **key,
            })
        })
        .map(|(r, m)| BackendNow {
            id: m.state.id.to_string(),
            service: r.service.to_string(),
            state: m.state.admin().as_str(),
            weight: m.weight,
        })
        .collect::<Vec<_>>();
    for b in &backends {
        tracing::info!(backend = %b.id, service = %b.service, state = b.state, weight = b.weight, "runtime change by the admin API");
    }
    Ok(Applied {
        backends,
        saved: saved.as_ref().map(Result::is_ok),
        save_error: saved.and_then(Result::err),
    })
}

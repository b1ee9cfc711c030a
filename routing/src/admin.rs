//! Runtime backend states an operator sets through the admin API, kept beside the config
//! by stable ID so that reloads (and, through the proxy's state file, restarts) keep them:
//! a backend's `drain` (no new requests; requests in flight finish), `maintenance` (out at
//! once) or `ready`, its weight, and the same states for a whole pool (a service's
//! backends in one region). Every snapshot applies them to its members' atomics when it
//! is built, and the admin API applies a change to the running snapshot at once.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What an operator says about a backend or a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum AdminState {
    /// Takes requests (health permitting).
    #[default]
    Ready,
    /// No new requests; in-flight requests (and, with sticky sessions kept on drain, the
    /// sessions already pinned to it) finish.
    Drain,
    /// Out at once: no request at all, not even pinned sessions.
    Maintenance,
}

impl AdminState {
    /// The spelling in the API, `/status` and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maintenance => "maintenance",
        }
    }

    /// Parses the API spelling.
    pub fn parse(text: &str) -> Option<AdminState> {
        match text {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maintenance" => Some(AdminState::Maintenance),
            _ => None,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maintenance => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maintenance,
            _ => AdminState::Ready,
        }
    }

    /// All states, in order.
    pub const ALL: [AdminState; 3] = [
        AdminState::Ready,
        AdminState::Drain,
        AdminState::Maintenance,
    ];
}

/// An operator's settings for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendOverride {
    /// Its state (`Ready` when only the weight is set).
    pub state: AdminState,
    /// Its weight instead of the configured one.
    pub weight: Option<u32>,
}

/// Every runtime setting, by backend ID (`region/address`) and by pool (`service/region`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Per backend.
    pub backends: BTreeMap<String, BackendOverride>,
    /// Per pool: key `service/region`.
    pub pools: BTreeMap<String, AdminState>,
}

impl RuntimeSettings {
    /// The key of a pool.
    pub fn pool_key(service: &str, region: &str) -> String {
        format!("{service}/{region}")
    }

    /// The state in force for backend `id` of pool `pool`: the stricter of the two.
    pub fn state_of(&self, pool: &str, id: &str) -> AdminState {
        let own = self.backends.get(id).map(|b| b.state).unwrap_or_default();
        let of_pool = self.pools.get(pool).copied().unwrap_or_default();
        own.max(of_pool)
    }

    /// The weight an operator set for backend `id`.
    pub fn weight_of(&self, id: &str) -> Option<u32> {
        self.backends.get(id).and_then(|b| b.weight)
    }

    /// Drops entries that say nothing (ready, no weight).
    pub fn compact(&mut self) {
        self.backends
            .retain(|_, b| b.state != AdminState::Ready || b.weight.is_some());
        self.pools.retain(|_, s| *s != AdminState::Ready);
    }
}

/// The settings shared by the admin API (writer) and every snapshot build (reader).
#[derive(Debug, Default)]
pub struct Runtime {
    settings: Mutex<RuntimeSettings>,
}

impl Runtime {
    /// Starts from `settings` (read from the state file, say).
    pub fn new(settings: RuntimeSettings) -> Runtime {
        Runtime {
            settings: Mutex::new(settings),
        }
    }

    /// The settings, locked (admin path and snapshot builds only; never the request path).
    pub fn lock(&self) -> MutexGuard<'_, RuntimeSettings> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the settings.
    pub fn get(&self) -> RuntimeSettings {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stricter_state_of_backend_and_pool_wins() {
        let mut s = RuntimeSettings::default();
        s.backends.insert(
            "eu/10.0.0.1:80".into(),
            BackendOverride {
                state: AdminState::Drain,
                weight: Some(5),
            },
        );
        assert_eq!(s.state_of("api/eu", "eu/10.0.0.1:80"), AdminState::Drain);
        s.pools.insert(
            RuntimeSettings::pool_key("api", "eu"),
            AdminState::Maintenance,
        );
        assert_eq!(
            s.state_of("api/eu", "eu/10.0.0.1:80"),
            AdminState::Maintenance
        );
        assert_eq!(s.state_of("web/eu", "eu/10.0.0.2:80"), AdminState::Ready);
        assert_eq!(s.weight_of("eu/10.0.0.1:80"), Some(5));
        s.pools.insert("web/eu".into(), AdminState::Ready);
        s.compact();
        assert_eq!(s.pools.len(), 1);
        assert_eq!(AdminState::parse("drain"), Some(AdminState::Drain));
        assert_eq!(AdminState::parse("Drain"), None);
    }
}

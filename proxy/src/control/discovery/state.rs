//! What is known about each backend DNS name: the last good answer and the latest
//! attempt's outcome, shared by the discovery service, snapshot builds and `/status`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use meridian_config::BackendAddress;
use meridian_routing::answers::Answers;

use super::resolve::{Answer, DiscoveryError, Resolved};

/// What is known about one backend DNS name.
#[derive(Debug, Clone, Default)]
pub struct NameState {
    /// The last good answer (sorted); empty until the name first resolves.
    pub addrs: Vec<Resolved>,
    /// Whether the name ever resolved.
    pub resolved: bool,
    /// When it last resolved.
    pub last_ok: Option<SystemTime>,
    /// When the latest attempt was made.
    pub last_attempt: Option<SystemTime>,
    /// The latest attempt's error, if it failed.
    pub last_error: Option<String>,
    /// SRV targets that did not resolve in the latest attempt (`target: error`), whether
    /// or not the name resolved through others.
    pub target_errors: Vec<String>,
    /// Consecutive failed attempts.
    pub failures: u64,
    /// The time until the next resolution, as last computed.
    pub refresh: Duration,
}

/// The resolved backend names of an instance, shared by the discovery service, snapshot
/// builds and `/status`.
#[derive(Debug, Default)]
pub struct DnsState {
    names: Mutex<BTreeMap<BackendAddress, NameState>>,
}

impl DnsState {
    /// The last good answer of every name.
    pub fn answers(&self) -> Answers {
        self.names
            .lock()
            .map(|n| {
                n.iter()
                    .map(|(k, v)| (k.clone(), v.addrs.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every name and its state (for `/status`).
    pub fn report(&self) -> Vec<(BackendAddress, NameState)> {
        self.names
            .lock()
            .map(|n| n.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Records an attempt and when the next one is due; returns whether the last good
    /// answer changed.
    pub(super) fn record(
        &self,
        name: &BackendAddress,
        result: &Result<Answer, DiscoveryError>,
        refresh: Duration,
    ) -> bool {
        let Ok(mut names) = self.names.lock() else {
            return false;
        };
        let state = names.entry(name.clone()).or_default();
        let now = SystemTime::now();
        state.last_attempt = Some(now);
        state.refresh = refresh;
        match result {
            Ok(answer) => {
                let changed = !state.resolved || state.addrs != answer.addrs;
                state.addrs.clone_from(&answer.addrs);
                state.resolved = true;
                state.last_ok = Some(now);
                state.last_error = None;
                state.target_errors.clone_from(&answer.target_errors);
                state.failures = 0;
                changed
            }
            Err(e) => {
                state.last_error = Some(e.to_string());
                state.target_errors = match e {
                    DiscoveryError::NoTargetResolved(t) => t.clone(),
                    _ => Vec::new(),
                };
                state.failures += 1;
                false
            }
        }
    }

    /// How many addresses of `name` are in use.
    pub(super) fn kept(&self, name: &BackendAddress) -> usize {
        self.names
            .lock()
            .ok()
            .and_then(|n| n.get(name).map(|s| s.addrs.len()))
            .unwrap_or(0)
    }

    /// Whether every name in `wanted` has had an attempt.
    pub(super) fn attempted_all(&self, wanted: &BTreeSet<BackendAddress>) -> bool {
        self.names.lock().is_ok_and(|n| {
            wanted
                .iter()
                .all(|w| n.get(w).is_some_and(|s| s.last_attempt.is_some()))
        })
    }

    /// Forgets names no longer configured; returns them.
    pub(super) fn retain(&self, wanted: &BTreeSet<BackendAddress>) -> Vec<BackendAddress> {
        let Ok(mut names) = self.names.lock() else {
            return Vec::new();
        };
        let gone: Vec<BackendAddress> = names
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            names.remove(k);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::discovery::resolve::tests::resolved;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn state_reports_partial_and_total_srv_failures() {
        let state = DnsState::default();
        let name = BackendAddress::Srv("_http._tcp.x.example".into());
        let ok = Answer {
            addrs: vec![resolved(1, 80, 2)],
            ttl: S(1),
            target_errors: vec!["dead.example (priority 0): no records".into()],
        };
        assert!(state.record(&name, &Ok(ok.clone()), S(1)));
        assert!(
            !state.record(&name, &Ok(ok), S(1)),
            "same answer: no change"
        );
        let s = &state.report()[0].1;
        assert!(s.last_error.is_none() && s.failures == 0);
        assert_eq!(s.target_errors.len(), 1);

        let failed = DiscoveryError::NoTargetResolved(vec!["a: x".into(), "b: y".into()]);
        assert!(!state.record(&name, &Err(failed), S(1)));
        let s = &state.report()[0].1;
        assert_eq!(s.target_errors, vec!["a: x", "b: y"]);
        assert_eq!(
            s.last_error.as_deref(),
            Some("no SRV target resolved: a: x; b: y")
        );
        assert_eq!(
            (s.failures, s.addrs.len()),
            (1, 1),
            "the last good answer is kept"
        );
        assert_eq!(state.kept(&name), 1);
    }
}

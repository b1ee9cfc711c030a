//! Backend discovery: backends written as a host name (`api.example.internal:8080`) or a
//! DNS SRV name are resolved with hickory-resolver (A and AAAA; SRV targets too) and
//! re-resolved when their records expire (`dns.min_ttl` ≤ TTL ≤ `dns.max_ttl`).
//!
//! SRV names follow RFC 2782 as a load balancer needs it: every target becomes backends,
//! but a higher priority value is a backup *tier*, used only while no backend of a lower
//! one is usable — it stands in when the preferred targets fail their health checks, not
//! only when they stop resolving ([`crate::pick`]); each target's SRV weight becomes its
//! addresses' weight.
//! A target that does not resolve is skipped and reported; the name fails only when no
//! target of any priority resolves.
//!
//! [`DnsState`] keeps, per name, the last good answer and the outcome of the latest
//! attempt. Names are resolved concurrently (a few at a time), each on its own schedule, so
//! a slow or dead name server for one name delays no other. When an answer changes, the
//! [`Discovery`] service rebuilds the routing snapshot from the same config plus the new
//! addresses ([`crate::reload::rebuild`], as a reload does): every address is a backend with
//! the stable ID `region/address`, so health and latency survive re-resolution; new
//! addresses are probed at once (the prober reconciles on every swap); addresses that
//! disappeared leave the snapshot, so they get no new requests while requests already on
//! them finish (drained). A failed resolution keeps the last good answer and is reported in
//! `/status` and the metrics; a name that never resolved has no backends (its region fails
//! over or answers 503 as usual). Configs with only static addresses never start a resolver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use meridian_config::{BackendAddress, Config, Dns};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::instance::Instance;

mod resolve;

pub use resolve::{
    refresh_after, resolve, resolver, Answer, DiscoveryError, Resolved, MAX_ADDRESSES, MAX_WEIGHT,
};

/// Names resolved at the same time.
const PARALLEL_NAMES: usize = 8;

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
    first_round: AtomicBool,
}

/// Name → last good addresses, as snapshot builds consume it.
pub type Answers = HashMap<BackendAddress, Vec<Resolved>>;

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

    /// Whether every configured name has been tried at least once.
    pub fn first_round_done(&self) -> bool {
        self.first_round.load(Ordering::Relaxed)
    }

    /// Records an attempt and when the next one is due; returns whether the last good
    /// answer changed.
    fn record(
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
    fn kept(&self, name: &BackendAddress) -> usize {
        self.names
            .lock()
            .ok()
            .and_then(|n| n.get(name).map(|s| s.addrs.len()))
            .unwrap_or(0)
    }

    /// Whether every name in `wanted` has had an attempt.
    fn attempted_all(&self, wanted: &BTreeSet<BackendAddress>) -> bool {
        self.names.lock().is_ok_and(|n| {
            wanted
                .iter()
                .all(|w| n.get(w).is_some_and(|s| s.last_attempt.is_some()))
        })
    }

    /// Forgets names no longer configured; returns them.
    fn retain(&self, wanted: &BTreeSet<BackendAddress>) -> Vec<BackendAddress> {
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

/// The DNS names a config's backends use.
pub fn names(config: &Config) -> BTreeSet<BackendAddress> {
    config
        .regions
        .iter()
        .flat_map(|r| &r.backends)
        .filter(|b| b.address.as_static().is_none())
        .map(|b| b.address.clone())
        .collect()
}

/// When to try a name again after `result`: on its clamped TTL after a clean answer;
/// after `min_ttl` after a failure or when some SRV targets did not resolve (so a preferred
/// target that comes back is used again soon).
fn next_refresh(result: &Result<Answer, DiscoveryError>, dns: &Dns) -> Duration {
    match result {
        Ok(a) if a.target_errors.is_empty() => refresh_after(a.ttl, dns.min_ttl, dns.max_ttl),
        _ => dns.min_ttl,
    }
}

/// Whether to (re)build the resolver before starting the names that are due: when there
/// are names and none was built yet or the `[dns]` settings changed — or when the last build
/// failed (say `/etc/resolv.conf` was missing at boot) and a name is due again, so a system
/// configuration that appears later is picked up within `min_ttl`, not at the next reload.
fn needs_resolver<R, E>(
    current: &Option<(Dns, Result<R, E>)>,
    dns: &Dns,
    wanted: &BTreeSet<BackendAddress>,
    due: &HashMap<BackendAddress, Instant>,
    now: Instant,
) -> bool {
    if wanted.is_empty() {
        return false;
    }
    match current {
        None => true,
        Some((built_for, _)) if built_for != dns => true,
        Some((_, Ok(_))) => false,
        Some((_, Err(_))) => wanted.iter().any(|n| due.get(n).is_none_or(|t| *t <= now)),
    }
}

/// The background service that resolves backend names and swaps snapshots on change.
pub struct Discovery {
    inst: Arc<Instance>,
}

impl Discovery {
    /// Discovery for `inst`.
    pub fn new(inst: Arc<Instance>) -> Self {
        Discovery { inst }
    }
}

/// The outcome of one name's resolution task.
type Outcome = (BackendAddress, Result<Answer, DiscoveryError>);

/// The name resolutions in progress.
#[derive(Default)]
struct Running {
    tasks: JoinSet<Outcome>,
    names: HashMap<Id, BackendAddress>,
}

impl Running {
    fn has(&self, name: &BackendAddress) -> bool {
        self.names.values().any(|n| n == name)
    }

    /// Forgets every task (their results, should they come, are ignored).
    fn abandon_all(&mut self) {
        self.tasks.abort_all();
        self.names.clear();
    }

    /// The name and result of a finished task, unless it was abandoned.
    fn settle(&mut self, joined: Result<(Id, Outcome), JoinError>) -> Option<Outcome> {
        match joined {
            Ok((id, outcome)) => self.names.remove(&id).map(|_| outcome),
            Err(e) => {
                let name = self.names.remove(&e.id())?;
                Some((name, Err(DiscoveryError::Task(e.to_string()))))
            }
        }
    }
}

/// Records a resolution of `name` (state, metrics, log) and schedules the next one;
/// returns whether the name's addresses changed.
fn finish(
    inst: &Instance,
    dns: &Dns,
    due: &mut HashMap<BackendAddress, Instant>,
    name: BackendAddress,
    result: Result<Answer, DiscoveryError>,
) -> bool {
    let refresh = next_refresh(&result, dns);
    let changed = inst.dns.record(&name, &result, refresh);
    let label = name.to_string();
    match &result {
        Ok(answer) => {
            inst.metrics
                .dns_resolution(&label, true, answer.addrs.len());
            if !answer.target_errors.is_empty() {
                let failed = answer.target_errors.join("; ");
                tracing::warn!(name = %label, failed = %failed, addresses = answer.addrs.len(), "SRV targets did not resolve; using the ones that did");
            }
        }
        Err(e) => {
            let kept = inst.dns.kept(&name);
            inst.metrics.dns_resolution(&label, false, kept);
            tracing::warn!(name = %label, error = %e, kept, "DNS resolution failed; keeping the last good addresses");
        }
    }
    due.insert(name, later(refresh));
    changed
}

/// The instant `after` from now (a year from now if that is too far to represent: TTL
/// bounds are not limited).
fn later(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let inst = &self.inst;
        let mut changes = inst.subscribe();
        let mut current: Option<(Dns, Result<TokioResolver, String>)> = None;
        let mut due: HashMap<BackendAddress, Instant> = HashMap::new();
        let mut running = Running::default();
        loop {
            let snap = inst.snapshot();
            let wanted = names(&snap.config);
            for gone in inst.dns.retain(&wanted) {
                inst.metrics.forget_dns_name(&gone.to_string());
            }
            due.retain(|k, _| wanted.contains(k));
            running.names.retain(|_, n| wanted.contains(n));
            let dns = &snap.config.dns;
            if needs_resolver(&current, dns, &wanted, &due, Instant::now()) {
                let built = resolver(dns).map_err(|e| e.to_string());
                if let Err(e) = &built {
                    tracing::error!(error = %e, "cannot build the DNS resolver");
                }
                current = Some((dns.clone(), built));
                due.clear();
                running.abandon_all();
            }
            // Start the names that are due, never-tried and most overdue first.
            let now = Instant::now();
            let mut ready: Vec<(Option<Instant>, &BackendAddress)> = wanted
                .iter()
                .filter(|n| !running.has(n))
                .filter_map(|n| match due.get(n) {
                    Some(t) if *t > now => None,
                    t => Some((t.copied(), n)),
                })
                .collect();
            ready.sort();
            let free = PARALLEL_NAMES.saturating_sub(running.names.len());
            for (_, name) in ready.into_iter().take(free) {
                match current.as_ref().map(|(_, r)| r) {
                    Some(Ok(r)) => {
                        let (r, n) = (r.clone(), name.clone());
                        let task = running.tasks.spawn(async move {
                            let result = resolve(&r, &n).await;
                            (n, result)
                        });
                        running.names.insert(task.id(), name.clone());
                    }
                    Some(Err(e)) => {
                        let result = Err(DiscoveryError::NoResolver(e.clone()));
                        finish(inst, dns, &mut due, name.clone(), result);
                    }
                    None => {}
                }
            }
            if inst.dns.attempted_all(&wanted) {
                inst.dns.first_round.store(true, Ordering::Relaxed);
            }
            // Wake for the next scheduled name; names waiting for a free slot start when a
            // running one finishes.
            let wake = wanted
                .iter()
                .filter(|n| !running.has(n))
                .filter_map(|n| due.get(n).copied())
                .filter(|t| *t > now)
                .min()
                .unwrap_or_else(|| later(Duration::from_secs(3600)));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                Some(joined) = running.tasks.join_next_with_id(), if !running.tasks.is_empty() => {
                    let mut changed = false;
                    let mut next = Some(joined);
                    while let Some(joined) = next {
                        if let Some((name, result)) = running.settle(joined) {
                            changed |= finish(inst, dns, &mut due, name, result);
                        }
                        next = running.tasks.try_join_next_with_id();
                    }
                    if changed {
                        let i = inst.clone();
                        let done = tokio::task::spawn_blocking(move || {
                            crate::reload::rebuild_current(&i, "dns")
                        })
                        .await;
                        if let Ok(Err(e)) | Err(e) = done.map_err(|e| e.to_string()) {
                            tracing::error!(error = %e, "snapshot rebuild after DNS change failed");
                        }
                    }
                }
                r = changes.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        running.abandon_all();
    }
}

#[cfg(test)]
mod tests {
    use super::resolve::tests::resolved;
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn scheduling_far_ahead_does_not_overflow() {
        let soon = later(S(1));
        assert!(soon > Instant::now() && soon <= Instant::now() + S(1));
        assert!(later(Duration::MAX) > Instant::now() + S(300 * 86_400));
    }

    #[test]
    fn failures_and_partial_srv_answers_retry_after_min_ttl() {
        let dns = Dns {
            nameservers: vec![],
            min_ttl: S(5),
            max_ttl: S(300),
            timeout: S(2),
        };
        let answer = |ttl, errors: Vec<String>| Answer {
            addrs: vec![],
            ttl,
            target_errors: errors,
        };
        assert_eq!(next_refresh(&Ok(answer(S(60), vec![])), &dns), S(60));
        assert_eq!(next_refresh(&Ok(answer(S(0), vec![])), &dns), S(5));
        assert_eq!(next_refresh(&Ok(answer(S(9999), vec![])), &dns), S(300));
        let partial = answer(S(60), vec!["dead.example: NXDOMAIN".into()]);
        assert_eq!(next_refresh(&Ok(partial), &dns), S(5));
        assert_eq!(next_refresh(&Err(DiscoveryError::NoAddresses), &dns), S(5));
    }

    #[test]
    fn a_resolver_that_failed_to_build_is_rebuilt_when_a_name_is_due() {
        let dns = Dns {
            nameservers: vec![],
            min_ttl: S(5),
            max_ttl: S(300),
            timeout: S(2),
        };
        let name = BackendAddress::Srv("_http._tcp.x.example".into());
        let wanted: BTreeSet<_> = [name.clone()].into();
        let now = Instant::now();
        let mut due = HashMap::new();
        let built: Option<(Dns, Result<(), ()>)> = Some((dns.clone(), Ok(())));
        let failed: Option<(Dns, Result<(), ()>)> = Some((dns.clone(), Err(())));

        assert!(needs_resolver::<(), ()>(&None, &dns, &wanted, &due, now));
        assert!(!needs_resolver::<(), ()>(
            &None,
            &dns,
            &BTreeSet::new(),
            &due,
            now
        ));
        assert!(!needs_resolver(&built, &dns, &wanted, &due, now));
        let other = Dns {
            min_ttl: S(1),
            ..dns.clone()
        };
        assert!(
            needs_resolver(&built, &other, &wanted, &due, now),
            "settings changed"
        );

        // Failed: retried once the name is due again (a never-tried name is due).
        assert!(needs_resolver(&failed, &dns, &wanted, &due, now));
        due.insert(name.clone(), now + S(5));
        assert!(!needs_resolver(&failed, &dns, &wanted, &due, now));
        assert!(needs_resolver(&failed, &dns, &wanted, &due, now + S(5)));
        assert!(!needs_resolver(&built, &dns, &wanted, &due, now + S(5)));
    }

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

//! Backend discovery: backends written as a host name (`api.example.internal:8080`) or a
//! DNS SRV name are resolved with hickory-resolver (A and AAAA; SRV targets too) and
//! re-resolved when their records expire (`dns.min_ttl` ≤ TTL ≤ `dns.max_ttl`).
//!
//! SRV names follow RFC 2782 as a load balancer needs it: every target becomes backends,
//! but a higher priority value is a backup *tier*, used only while no backend of a lower
//! one is usable — it stands in when the preferred targets fail their health checks, not
//! only when they stop resolving (`meridian_routing::selection`); each target's SRV weight becomes its
//! addresses' weight.
//! A target that does not resolve is skipped and reported; the name fails only when no
//! target of any priority resolves.
//!
//! [`DnsState`] keeps, per name, the last good answer and the outcome of the latest
//! attempt. Names are resolved concurrently (a few at a time), each on its own schedule, so
//! a slow or dead name server for one name delays no other. When an answer changes, the
//! [`Discovery`] service rebuilds the routing snapshot from the same config plus the new
//! addresses (through a [`Rebuilds`] request that the reloader serves, as a reload does): every address is a backend with
//! the stable ID `region/address`, so health and latency survive re-resolution; new
//! addresses are probed at once (the prober reconciles on every swap); addresses that
//! disappeared leave the snapshot, so they get no new requests while requests already on
//! them finish (drained). A failed resolution keeps the last good answer and is reported in
//! `/status` and the metrics; a name that never resolved has no backends (its region fails
//! over or answers 503 as usual). Configs with only static addresses never start a resolver.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use meridian_config::{BackendAddress, Config, Dns};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounterVec, IntGaugeVec, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use super::instance::Instance;
use super::readiness::Condition;
use crate::observe::metrics::{counter_vec, gauge_vec};

pub mod resolve;
pub mod state;

pub use state::DnsState;

use resolve::{refresh_after, resolve, resolver, Answer, DiscoveryError};

/// Names resolved at the same time.
const PARALLEL_NAMES: usize = 8;

/// The discovery metric families.
#[derive(Clone)]
pub struct DnsMetrics {
    resolutions: IntCounterVec,
    addresses: IntGaugeVec,
    failing: IntGaugeVec,
}

impl DnsMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> Self {
        DnsMetrics {
            resolutions: counter_vec(
                registry,
                "meridian_dns_resolutions_total",
                "Resolutions of backend DNS names by result",
                &["name", "result"],
            ),
            addresses: gauge_vec(
                registry,
                "meridian_dns_addresses",
                "Addresses a backend DNS name currently has (the last good answer)",
                &["name"],
            ),
            failing: gauge_vec(
                registry,
                "meridian_dns_failing",
                "1 while the latest resolution of a backend DNS name failed (the last good answer is kept)",
                &["name"],
            ),
        }
    }

    /// Records a resolution of a backend DNS name.
    fn resolution(&self, name: &str, ok: bool, addresses: usize) {
        let result = if ok { "success" } else { "failure" };
        self.resolutions.with_label_values(&[name, result]).inc();
        self.addresses
            .with_label_values(&[name])
            .set(i64::try_from(addresses).unwrap_or(i64::MAX));
        self.failing.with_label_values(&[name]).set(i64::from(!ok));
    }

    /// Drops the series of a DNS name that left the configuration.
    fn forget(&self, name: &str) {
        for result in ["success", "failure"] {
            let _ = self.resolutions.remove_label_values(&[name, result]);
        }
        let _ = self.addresses.remove_label_values(&[name]);
        let _ = self.failing.remove_label_values(&[name]);
    }
}

/// Requests to rebuild the routing snapshot with the latest answers, served by the
/// reloader (which owns snapshot builds); each carries a channel answered once done.
#[derive(Debug, Clone)]
pub struct Rebuilds(mpsc::UnboundedSender<oneshot::Sender<()>>);

impl Rebuilds {
    /// A request handle and the receiver the reloader serves.
    pub fn channel() -> (Rebuilds, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Rebuilds(tx), rx)
    }

    /// Asks for a rebuild and waits until it is done (or the reloader is gone).
    pub async fn request(&self) {
        let (done, wait) = oneshot::channel();
        if self.0.send(done).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The DNS names a config's backends use.
pub fn names(config: &Config) -> BTreeSet<BackendAddress> {
    config
        .backends()
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

/// The background service that resolves backend names and has the snapshot rebuilt on
/// change.
pub struct Discovery {
    inst: Arc<Instance>,
    dns: Arc<DnsState>,
    metrics: DnsMetrics,
    rebuilds: Rebuilds,
}

impl Discovery {
    /// Discovery for `inst`, recording in `dns`, asking `rebuilds` for new snapshots.
    pub fn new(inst: Arc<Instance>, dns: Arc<DnsState>, rebuilds: Rebuilds) -> Self {
        let metrics = DnsMetrics::register(&inst.registry);
        Discovery {
            inst,
            dns,
            metrics,
            rebuilds,
        }
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
    state: &DnsState,
    metrics: &DnsMetrics,
    dns: &Dns,
    due: &mut HashMap<BackendAddress, Instant>,
    name: BackendAddress,
    result: Result<Answer, DiscoveryError>,
) -> bool {
    let refresh = next_refresh(&result, dns);
    let changed = state.record(&name, &result, refresh);
    let label = name.to_string();
    match &result {
        Ok(answer) => {
            metrics.resolution(&label, true, answer.addrs.len());
            if !answer.target_errors.is_empty() {
                let failed = answer.target_errors.join("; ");
                tracing::warn!(name = %label, failed = %failed, addresses = answer.addrs.len(), "SRV targets did not resolve; using the ones that did");
            }
        }
        Err(e) => {
            let kept = state.kept(&name);
            metrics.resolution(&label, false, kept);
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
        let state = &*self.dns;
        let mut changes = inst.subscribe();
        let mut current: Option<(Dns, Result<TokioResolver, String>)> = None;
        let mut due: HashMap<BackendAddress, Instant> = HashMap::new();
        let mut running = Running::default();
        loop {
            let active = inst.active();
            let config = &active.routing.config;
            let wanted = names(config);
            for gone in state.retain(&wanted) {
                self.metrics.forget(&gone.to_string());
            }
            due.retain(|k, _| wanted.contains(k));
            running.names.retain(|_, n| wanted.contains(n));
            let dns = &config.dns;
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
                        let loopback = dns.allow_loopback;
                        let task = running.tasks.spawn(async move {
                            let result = resolve(&r, &n, loopback).await;
                            (n, result)
                        });
                        running.names.insert(task.id(), name.clone());
                    }
                    Some(Err(e)) => {
                        let result = Err(DiscoveryError::NoResolver(e.clone()));
                        finish(state, &self.metrics, dns, &mut due, name.clone(), result);
                    }
                    None => {}
                }
            }
            if state.attempted_all(&wanted) {
                inst.readiness.mark(Condition::Resolved);
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
                            changed |= finish(state, &self.metrics, dns, &mut due, name, result);
                        }
                        next = running.tasks.try_join_next_with_id();
                    }
                    if changed {
                        self.rebuilds.request().await;
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
            allow_loopback: false,
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
            allow_loopback: false,
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
}

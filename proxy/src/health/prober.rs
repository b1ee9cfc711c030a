//! The prober: one task per backend probes it every `interval` on its own slot and feeds
//! the rise/fall state machine; a supervisor follows snapshot swaps (new backends get a
//! task, removed ones lose theirs, unchanged ones keep theirs and their state); a 100 ms
//! tick publishes region measurements and marks the first probe round done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use meridian_config::{HealthCheck, ProbeKind, UpstreamProtocol};
use meridian_routing::backend::{BackendState, ProbeReport};
use meridian_routing::health::{Health, Hysteresis};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{probe_once, ProbeError};
use super::schedule::{next_slot, offset_in, phase_of};
use crate::control::instance::Instance;
use crate::control::readiness::Condition;
use crate::request::upstream::UpstreamPeerTls;
use rustls::ClientConfig;

/// How often region measurements are published.
const MEASURE_EVERY: Duration = Duration::from_millis(100);

/// New backends get their first probe within this long (or within one interval if shorter),
/// at a per-backend offset, so that readiness stays quick while a reload that adds thousands
/// of backends does not probe them all in the same instant.
const FIRST_PROBE_SPREAD: Duration = Duration::from_secs(1);

/// The background service that probes every backend of the current snapshot.
pub struct Prober {
    inst: Arc<Instance>,
}

impl Prober {
    /// A prober for `inst`.
    pub fn new(inst: Arc<Instance>) -> Self {
        Prober { inst }
    }
}

struct ProbeTask {
    /// The state this task probes: a backend removed and re-added between two reconciles
    /// gets a fresh state object, and the task must follow it.
    state: Arc<BackendState>,
    handle: JoinHandle<()>,
    settings: watch::Sender<ProbeSettings>,
}

#[derive(Clone)]
struct ProbeSettings {
    check: HealthCheck,
    decay: Duration,
    max_ejection: Duration,
    /// The pool's TLS and the client config (ALPN) probes use; its upstream protocol.
    tls: Option<(Arc<UpstreamPeerTls>, Arc<ClientConfig>)>,
    protocol: UpstreamProtocol,
}

impl PartialEq for ProbeSettings {
    fn eq(&self, other: &Self) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.0, &b.0) && Arc::ptr_eq(&a.1, &b.1),
            _ => false,
        };
        same_tls
            && self.protocol == other.protocol
            && self.check == other.check
            && self.decay == other.decay
            && self.max_ejection == other.max_ejection
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.inst.subscribe();
        let mut tasks: HashMap<Arc<str>, ProbeTask> = HashMap::new();
        let measure = tokio::spawn(measure_loop(self.inst.clone()));
        loop {
            reconcile(&self.inst, &mut tasks);
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        measure.abort();
        for (_, t) in tasks {
            t.handle.abort();
        }
    }
}

fn reconcile(inst: &Arc<Instance>, tasks: &mut HashMap<Arc<str>, ProbeTask>) {
    let active = inst.active();
    let snap = &active.routing;
    let cfg = &snap.config;
    let mut seen = std::collections::HashSet::new();
    for (si, ri, region) in snap.pools() {
        let settings = ProbeSettings {
            check: region.health.clone(),
            decay: cfg.latency.decay,
            max_ejection: cfg.outlier.max_ejection,
            tls: active.upstreams.probe_tls(
                (si, ri),
                matches!(region.health.kind, ProbeKind::Grpc { .. }),
            ),
            protocol: active.upstreams.settings(si, ri).protocol,
        };
        for member in &region.members {
            let state = &member.state;
            seen.insert(state.id.clone());
            follow(tasks, state, &settings);
        }
    }
    tasks.retain(|id, t| {
        let keep = seen.contains(id);
        if !keep {
            t.handle.abort();
        }
        keep
    });
}

/// Keeps `state`'s probe task running with `settings`: tells a running task about changed
/// settings, or starts a task (replacing one that ended or probes an older state object).
fn follow(
    tasks: &mut HashMap<Arc<str>, ProbeTask>,
    state: &Arc<BackendState>,
    settings: &ProbeSettings,
) {
    match tasks.get(&state.id) {
        Some(t) if !t.handle.is_finished() && Arc::ptr_eq(&t.state, state) => {
            t.settings.send_if_modified(|s| {
                let changed = *s != *settings;
                *s = settings.clone();
                changed
            });
        }
        _ => {
            let (tx, rx) = watch::channel(settings.clone());
            let handle = tokio::spawn(probe_loop(state.clone(), rx));
            let old = tasks.insert(
                state.id.clone(),
                ProbeTask {
                    state: state.clone(),
                    handle,
                    settings: tx,
                },
            );
            if let Some(old) = old {
                old.handle.abort();
            }
        }
    }
}

/// Sleeps until `at` (`Ok(false)`) or until the settings change (`Ok(true)`); `Err` once the
/// backend is gone and the task should end.
async fn sleep_until(
    at: Instant,
    settings: &mut watch::Receiver<ProbeSettings>,
) -> Result<bool, watch::error::RecvError> {
    tokio::select! {
        _ = tokio::time::sleep_until(at) => Ok(false),
        r = settings.changed() => r.map(|()| true),
    }
}

async fn probe_loop(state: Arc<BackendState>, mut settings: watch::Receiver<ProbeSettings>) {
    let mut machine = Hysteresis::new(state.health.get());
    let phase = phase_of(&state.id);
    let first_slot = |settings: &watch::Receiver<ProbeSettings>| {
        let now = Instant::now();
        let window = settings.borrow().check.interval.min(FIRST_PROBE_SPREAD);
        (now, now + offset_in(phase, window))
    };
    let (mut origin, mut at) = first_slot(&settings);
    loop {
        match sleep_until(at, &mut settings).await {
            Ok(false) => {}
            Ok(true) => {
                // A reload changed the settings: start over like a new backend, staggered, so
                // that a change to every backend's check does not probe them all at once.
                (origin, at) = first_slot(&settings);
                continue;
            }
            Err(_) => return,
        }
        let s = settings.borrow_and_update().clone();
        let started = Instant::now();
        let result = match tokio::time::timeout(
            s.check.timeout,
            probe_once(
                state.addr,
                &s.check.kind,
                s.tls
                    .as_ref()
                    .map(|(t, config)| (config, t.server_name(&state.host))),
                s.protocol,
            ),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(s.check.timeout)),
        };
        let rtt = started.elapsed();
        let now = Instant::now();
        if let Err(e) = &result {
            if e.is_local() {
                // Our own descriptors or ports ran out: no verdict on the backend.
                tracing::warn!(backend = %state.id, error = %e, "probe not sent: out of local resources");
                let offset = offset_in(phase, s.check.interval);
                at = next_slot(origin, Instant::now(), offset, s.check.interval);
                continue;
            }
        }
        let ok = result.is_ok();
        if ok {
            state.latency.probe.observe(rtt, now, s.decay);
            state.outlier.probe_ok(now, s.max_ejection);
            state.metrics.probe_ok.inc();
            state.metrics.probe_rtt.set(rtt.as_secs_f64());
        } else {
            state.metrics.probe_fail.inc();
        }
        if let Some(next) = machine.observe(ok, s.check.rise, s.check.fall) {
            state.health.set(next);
            match (next, &result) {
                (Health::Up, _) => {
                    tracing::info!(backend = %state.id, rtt_us = rtt.as_micros() as u64, "backend is up")
                }
                (_, Err(e)) => tracing::warn!(backend = %state.id, error = %e, "backend is down"),
                _ => {}
            }
        }
        state.record_probe(ProbeReport {
            at: SystemTime::now(),
            rtt,
            error: result.err().map(|e| e.to_string()),
        });
        // Next: this backend's own slot of the interval.
        let offset = offset_in(phase, s.check.interval);
        at = next_slot(origin, Instant::now(), offset, s.check.interval);
    }
}

/// Publishes region measurements and backend gauges ([`Snapshot::measure`]) every
/// [`MEASURE_EVERY`]; records when every backend has had its first probe.
///
/// [`Snapshot::measure`]: meridian_routing::Snapshot::measure
async fn measure_loop(inst: Arc<Instance>) {
    let mut tick = tokio::time::interval(MEASURE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let active = inst.active();
        let snap = &active.routing;
        if snap.measure(Instant::now()) && !inst.readiness.is_met(Condition::Probed) {
            inst.readiness.mark(Condition::Probed);
            tracing::info!(generation = snap.generation, "first probe round done");
        }
    }
}

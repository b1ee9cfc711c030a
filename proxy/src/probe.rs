//! Active health probing and region measurement, run as a pingora `BackgroundService`.
//!
//! One task per backend probes it every `interval` (HTTP `GET path` or a TCP connect) and
//! feeds the rise/fall state machine. Each backend probes on its own slot of the interval (a
//! stable hash of its ID), so thousands of backends are probed evenly over the interval, not in
//! bursts. A supervisor re-reads the snapshot whenever it changes: new backends get a task
//! (first probe within `min(interval, 1 s)`), removed ones lose theirs, unchanged ones keep
//! theirs, with their state. A measurement tick publishes each region's usable-backend
//! count and measured latency for ranking, and marks the instance ready once every backend
//! has been probed at least once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use meridian_config::{HealthCheck, ProbeKind};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{BackendState, ProbeReport};
use crate::health::{Health, Hysteresis};
use crate::instance::Instance;
use crate::tls::UpstreamPeerTls;

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
    tls: Option<Arc<UpstreamPeerTls>>,
}

impl PartialEq for ProbeSettings {
    fn eq(&self, other: &Self) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_tls
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
    let snap = inst.snapshot();
    let cfg = &snap.config;
    let mut seen = std::collections::HashSet::new();
    for (region, member) in snap.backends() {
        let state = &member.state;
        seen.insert(state.id.clone());
        let settings = ProbeSettings {
            check: region.health.clone(),
            decay: cfg.latency.decay,
            max_ejection: cfg.outlier.max_ejection,
            tls: region.tls.clone(),
        };
        match tasks.get(&state.id) {
            Some(t) if !t.handle.is_finished() && Arc::ptr_eq(&t.state, state) => {
                t.settings.send_if_modified(|s| {
                    let changed = *s != settings;
                    *s = settings.clone();
                    changed
                });
            }
            _ => {
                let (tx, rx) = watch::channel(settings);
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
    tasks.retain(|id, t| {
        let keep = seen.contains(id);
        if !keep {
            t.handle.abort();
        }
        keep
    });
}

/// A stable pseudo-random number per backend: its probes' phase within the interval.
fn phase_of(id: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    // `DefaultHasher::new()` has fixed keys: the same backend keeps the same phase.
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// `phase` mapped onto `[0, window)`.
fn offset_in(phase: u64, window: Duration) -> Duration {
    let nanos = window.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(phase % nanos)
}

/// The first time `origin + offset + k * interval` (k ≥ 0) strictly after `now`: a backend's
/// probes stay on its own slot of the interval, however long each probe took, so the probes of
/// many backends stay spread over the interval instead of drifting into bursts.
fn next_slot(origin: Instant, now: Instant, offset: Duration, interval: Duration) -> Instant {
    let first = origin + offset;
    if now < first || interval.is_zero() {
        return first.max(now);
    }
    let periods = (now - first).as_nanos() / interval.as_nanos() + 1;
    let periods = u32::try_from(periods).unwrap_or(u32::MAX);
    first + interval.saturating_mul(periods)
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
                    .map(|t| (&t.probe_config, t.server_name(&state.host))),
            ),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {:?}", s.check.timeout)),
        };
        let rtt = started.elapsed();
        let now = Instant::now();
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
            error: result.err(),
        });
        // Next: this backend's own slot of the interval.
        let offset = offset_in(phase, s.check.interval);
        at = next_slot(origin, Instant::now(), offset, s.check.interval);
    }
}

/// One probe: `Ok` when healthy, else a short reason. With `tls` (a client config and the
/// server name), an `http` probe speaks HTTPS and fails on a bad certificate; a `tcp` probe
/// only connects.
pub async fn probe_once(
    addr: SocketAddr,
    kind: &ProbeKind,
    tls: Option<(&Arc<ClientConfig>, String)>,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    if matches!(kind, ProbeKind::Tcp) {
        return Ok(());
    }
    match tls {
        None => probe_http(stream, addr, kind).await,
        Some((config, name)) => {
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| format!("tls: server name {name:?}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(server_name, stream)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            probe_http(stream, addr, kind).await
        }
    }
}

async fn probe_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    kind: &ProbeKind,
) -> Result<(), String> {
    let ProbeKind::Http { path, host, expect } = kind else {
        return Ok(());
    };
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meridian-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a status line".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(_) | Err(httparse::Error::TooManyHeaders) if resp.code.is_some() => {
                let code = resp.code.unwrap_or(0);
                return if expect.contains(&code) {
                    Ok(())
                } else {
                    Err(format!("status {code}"))
                };
            }
            Ok(_) if buf.len() < 16 * 1024 => continue,
            Ok(_) => return Err("response header too large".into()),
            Err(e) => return Err(format!("bad response: {e}")),
        }
    }
}

/// Publishes region measurements and backend gauges ([`Snapshot::measure`]) every
/// [`MEASURE_EVERY`]; records when every backend has had its first probe.
///
/// [`Snapshot::measure`]: crate::snapshot::Snapshot::measure
async fn measure_loop(inst: Arc<Instance>) {
    let mut tick = tokio::time::interval(MEASURE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = inst.snapshot();
        if snap.measure(Instant::now()) && !inst.probed.swap(true, Ordering::Relaxed) {
            tracing::info!(generation = snap.generation, "first probe round done");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn http(path: &str, expect: std::ops::RangeInclusive<u16>) -> ProbeKind {
        ProbeKind::Http {
            path: path.into(),
            host: Some("health.internal".into()),
            expect,
        }
    }

    /// A one-shot server answering every connection with `status`; returns the request seen.
    async fn server(status: u16) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        (addr, h)
    }

    #[tokio::test]
    async fn http_probe_checks_the_status_range_and_sends_host() {
        let (addr, seen) = server(204).await;
        assert_eq!(
            probe_once(addr, &http("/ready", 200..=299), None).await,
            Ok(())
        );
        let req = seen.await.unwrap();
        assert!(req.starts_with("GET /ready HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Host: health.internal\r\n"), "{req}");
        let (addr, _) = server(503).await;
        assert_eq!(
            probe_once(addr, &http("/", 200..=399), None).await,
            Err("status 503".to_string())
        );
    }

    #[tokio::test]
    async fn tcp_probe_is_a_connect() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(probe_once(addr, &ProbeKind::Tcp, None).await, Ok(()));
        drop(l);
        let err = probe_once(addr, &ProbeKind::Tcp, None).await.unwrap_err();
        assert!(err.starts_with("connect:"), "{err}");
    }

    #[test]
    fn probe_slots_are_stable_and_spread_evenly_over_the_interval() {
        let interval = Duration::from_secs(2);
        assert_eq!(
            offset_in(phase_of("r1/10.0.0.1:80"), interval),
            offset_in(phase_of("r1/10.0.0.1:80"), interval)
        );
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let id = format!("r{:02}/127.0.0.1:{}", i / 200, 20_000 + i);
            let o = offset_in(phase_of(&id), interval);
            assert!(o < interval);
            buckets[(o.as_nanos() * 10 / interval.as_nanos()) as usize] += 1;
        }
        for b in buckets {
            assert!((850..1150).contains(&b), "uneven spread: {buckets:?}");
        }
        assert_eq!(offset_in(12345, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn next_slot_keeps_the_phase_whatever_the_probe_took() {
        let o = Instant::now();
        let (off, iv) = (Duration::from_millis(300), Duration::from_secs(2));
        let ms = |n| Duration::from_millis(n);
        // Before the first slot: the first slot.
        assert_eq!(next_slot(o, o, off, iv), o + ms(300));
        // Just after a probe at the slot, or after a slow probe: the next slot, same phase.
        assert_eq!(next_slot(o, o + ms(301), off, iv), o + ms(2300));
        assert_eq!(next_slot(o, o + ms(1299), off, iv), o + ms(2300));
        // Exactly on a slot: the one after (strictly later).
        assert_eq!(next_slot(o, o + ms(2300), off, iv), o + ms(4300));
        // Far later (the task was starved): the next slot, not a burst of missed ones.
        assert_eq!(next_slot(o, o + ms(9000), off, iv), o + ms(10300));
        // A zero interval cannot loop forever.
        assert_eq!(
            next_slot(o, o + ms(9000), off, Duration::ZERO),
            o + ms(9000)
        );
    }

    #[tokio::test]
    async fn garbage_is_a_failure_not_a_panic() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        });
        let err = probe_once(addr, &http("/", 200..=399), None)
            .await
            .unwrap_err();
        assert!(err.starts_with("bad response"), "{err}");
    }
}

//! The live state of one backend, kept under a stable ID (`region/address`) so that a
//! reload that leaves the backend in place keeps its health, latency and ejection history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::admin::AdminState;
use crate::clock::now_ms;
use crate::health::{Health, HealthCell};
use crate::latency::LatencyStats;
use crate::metrics::{BackendMetrics, RoutingMetrics};
use crate::outlier::Outlier;

/// Live state of one backend. Shared (`Arc`) between routing snapshots, the prober and
/// in-flight requests.
pub struct BackendState {
    /// Stable ID: `region/address`.
    pub id: Arc<str>,
    /// The region it belongs to.
    pub region: Arc<str>,
    /// Its address.
    pub addr: SocketAddr,
    /// The host it was configured as: a DNS name, else the IP (the default TLS server name).
    pub host: Arc<str>,
    /// The address as a label string.
    pub addr_label: Arc<str>,
    /// Health according to active probes.
    pub health: HealthCell,
    /// Latency averages and in-flight count.
    pub latency: Arc<LatencyStats>,
    /// Passive outlier ejection.
    pub outlier: Outlier,
    /// Pre-resolved metric handles.
    pub metrics: BackendMetrics,
    /// Probes done so far.
    probes: AtomicU64,
    /// The verdict of the backend's own region's instance (the mesh), which overrides this
    /// instance's probes while that report is fresh: 0 none, 1 usable, 2 not usable.
    remote: AtomicU8,
    /// The last probe's outcome, for `/status` (written by the prober only).
    last_probe: Mutex<Option<ProbeReport>>,
    /// What the operator says ([`AdminState`] as a number), the stricter of the
    /// backend's and its pool's setting.
    admin: AtomicU8,
    /// Whether it was usable at the last measurement tick: 0 never measured, 1 no, 2 yes.
    was_usable: AtomicU8,
    /// When it last became usable ([`now_ms`] stamp), for slow start; 0: not ramping.
    usable_since: AtomicU32,
    /// Whether its first time usable ramps (a backend added after the process started;
    /// those of the first snapshot serve at full weight at once).
    ramp_first: bool,
}

/// The smallest share of its weight a backend in slow start gets.
pub const SLOW_START_MIN_SHARE: f64 = 0.05;

/// The outcome of one active probe, as shown in `/status`.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// When it finished.
    pub at: SystemTime,
    /// Round-trip time (connect + response header).
    pub rtt: Duration,
    /// `None` when the probe passed, else why it failed.
    pub error: Option<String>,
}

impl BackendState {
    /// A new backend with no history.
    pub fn new(region: &str, addr: SocketAddr, metrics: &RoutingMetrics) -> Self {
        Self::named(region, addr, addr.ip().to_string().into(), metrics)
    }

    /// A new backend with no history, found by resolving the DNS name `host`.
    pub fn named(region: &str, addr: SocketAddr, host: Arc<str>, metrics: &RoutingMetrics) -> Self {
        let addr_label: Arc<str> = addr.to_string().into();
        BackendState {
            id: format!("{region}/{addr}").into(),
            region: region.into(),
            addr,
            host,
            metrics: metrics.backend(region, &addr_label),
            addr_label,
            health: HealthCell::default(),
            latency: Arc::new(LatencyStats::new()),
            outlier: Outlier::default(),
            probes: AtomicU64::new(0),
            remote: AtomicU8::new(0),
            last_probe: Mutex::new(None),
            admin: AtomicU8::new(0),
            was_usable: AtomicU8::new(0),
            usable_since: AtomicU32::new(0),
            ramp_first: false,
        }
    }

    /// This backend, added to a running instance: its first time usable ramps up.
    pub fn ramping_first(mut self) -> Self {
        self.ramp_first = true;
        self
    }

    /// What the operator says about it.
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Sets what the operator says (snapshot builds and the admin API).
    pub fn set_admin(&self, state: AdminState) {
        self.admin.store(state.to_u8(), Ordering::Relaxed);
    }

    /// Whether it may take new requests as far as the operator is concerned.
    pub fn admin_open(&self) -> bool {
        self.admin.load(Ordering::Relaxed) == 0
    }

    /// Whether probes and the mesh say it can serve and it is not ejected, whatever the
    /// operator says (a draining backend that still serves its pinned sessions).
    pub fn healthy(&self, now: Instant) -> bool {
        let healthy = match self.remote() {
            Some(usable) => usable,
            None => self.health.get() == Health::Up,
        };
        healthy && !self.outlier.is_ejected(now)
    }

    /// Notes whether it is usable at a measurement tick; a backend that just became usable
    /// (recovered, back from maintenance or drain, or added to a running instance) starts
    /// its slow start.
    pub fn observe_usable(&self, usable: bool, now: Instant) {
        // Not probed yet is not "down": a process that starts (or a backend that is new,
        // unless it ramps anyway) serves at full weight once its first probe passes.
        let unknown = !usable
            && self.admin_open()
            && self.remote().is_none()
            && self.health.get() == Health::Unknown;
        if unknown {
            return;
        }
        let was = self
            .was_usable
            .swap(1 + u8::from(usable), Ordering::Relaxed);
        let starts = usable && (was == 1 || (was == 0 && self.ramp_first));
        if starts {
            self.usable_since
                .store(now_ms(now).max(1), Ordering::Relaxed);
        }
    }

    /// The share of its weight it gets now, in a pool with slow start over `window_ms`:
    /// from [`SLOW_START_MIN_SHARE`] when it became usable, linearly to 1 at the window's
    /// end (1 without slow start, or once it is over).
    pub fn slow_start_share(&self, now: Instant, window_ms: u32) -> f64 {
        let since = self.usable_since.load(Ordering::Relaxed);
        if window_ms == 0 || since == 0 {
            return 1.0;
        }
        let elapsed = now_ms(now).wrapping_sub(since);
        if elapsed >= window_ms {
            // Over: later reads skip the arithmetic.
            self.usable_since.store(0, Ordering::Relaxed);
            return 1.0;
        }
        (f64::from(elapsed) / f64::from(window_ms)).max(SLOW_START_MIN_SHARE)
    }

    /// Whether the backend may take new requests: it is not ejected, and its region's own
    /// instance reports it usable (while that report is fresh) or else this instance's
    /// probes pass.
    /// The operator must not have it drained or in maintenance.
    pub fn usable(&self, now: Instant) -> bool {
        self.admin_open() && self.healthy(now)
    }

    /// The mesh's verdict on the backend (`None`: no fresh report; this instance's probes
    /// decide).
    pub fn remote(&self) -> Option<bool> {
        match self.remote.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// Sets or clears the mesh's verdict (the mesh service only).
    pub fn set_remote(&self, verdict: Option<bool>) {
        let v = match verdict {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        };
        self.remote.store(v, Ordering::Relaxed);
    }

    /// Records a probe result (prober only).
    pub fn record_probe(&self, report: ProbeReport) {
        self.probes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_probe.lock() {
            *last = Some(report);
        }
    }

    /// Probes done so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    /// The last probe's outcome (admin path only).
    pub fn last_probe(&self) -> Option<ProbeReport> {
        self.last_probe.lock().ok().and_then(|l| l.clone())
    }
}

impl std::fmt::Debug for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendState")
            .field("id", &self.id)
            .field("health", &self.health.get())
            .finish()
    }
}

//! The live state of one backend, kept under a stable ID (`region/address`) so that a
//! reload that leaves the backend in place keeps its health, latency and ejection history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

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
}

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
        }
    }

    /// Whether the backend may take new requests: it is not ejected, and its region's own
    /// instance reports it usable (while that report is fresh) or else this instance's
    /// probes pass.
    pub fn usable(&self, now: Instant) -> bool {
        let healthy = match self.remote() {
            Some(usable) => usable,
            None => self.health.get() == Health::Up,
        };
        healthy && !self.outlier.is_ejected(now)
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

//! Overload: requests in flight and resident memory, and the decision to shed a new
//! request (Envoy's overload manager in miniature). The in-flight count also tells a
//! graceful stop when the last request has finished.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use meridian_config::Limits;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounterVec, IntGauge, Registry};

use crate::observe::metrics::{counter_vec, gauge};

/// How often resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Whether an OS error number means this host ran out of its own resources: file
/// descriptors (`EMFILE`, `ENFILE`), ephemeral ports (`EADDRNOTAVAIL`), buffers or memory.
/// Such a failure says nothing about the peer it was meant for.
pub fn local_exhaustion(errno: i32) -> bool {
    [
        libc::EMFILE,
        libc::ENFILE,
        libc::EADDRNOTAVAIL,
        libc::ENOBUFS,
        libc::ENOMEM,
    ]
    .contains(&errno)
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// `limits.max_inflight` requests were already in flight.
    Inflight,
    /// Resident memory was above `limits.max_memory`.
    Memory,
}

impl Shed {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Inflight => "inflight",
            Shed::Memory => "memory",
        }
    }
}

/// The instance's load.
pub struct Overload {
    inflight: Arc<AtomicU32>,
    rss: AtomicU64,
    shed: IntCounterVec,
    inflight_gauge: IntGauge,
    rss_gauge: IntGauge,
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub struct InflightRequest(Arc<AtomicU32>);

impl Drop for InflightRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Overload {
    /// The load of an instance whose metrics live in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Overload {
            inflight: Arc::new(AtomicU32::new(0)),
            rss: AtomicU64::new(0),
            shed: counter_vec(
                registry,
                "meridian_requests_shed_total",
                "Requests refused with 503 because the instance was overloaded, by reason",
                &["reason"],
            ),
            inflight_gauge: gauge(
                registry,
                "meridian_inflight_requests",
                "Requests in flight (sampled every 250 ms)",
            ),
            rss_gauge: gauge(
                registry,
                "meridian_resident_memory_bytes",
                "Resident memory of the process (sampled every 250 ms)",
            ),
        }
    }

    /// Counts a new request in flight.
    pub fn start(&self) -> InflightRequest {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightRequest(self.inflight.clone())
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Whether a request that just started (and is counted) must be shed under `limits`;
    /// a shed request is counted.
    pub fn shed(&self, limits: &Limits) -> Option<Shed> {
        let reason = if self.inflight() > limits.max_inflight {
            Some(Shed::Inflight)
        } else if limits
            .max_memory
            .is_some_and(|max| self.rss.load(Ordering::Relaxed) > max)
        {
            Some(Shed::Memory)
        } else {
            None
        };
        if let Some(r) = reason {
            self.shed.with_label_values(&[r.as_str()]).inc();
        }
        reason
    }

    fn sample(&self) {
        if let Some(rss) = resident_bytes() {
            self.rss.store(rss, Ordering::Relaxed);
            self.rss_gauge.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        self.inflight_gauge.set(i64::from(self.inflight()));
    }
}

/// Resident memory of this process, from `/proc/self/statm` (in 4 KiB pages, the page
/// size of every Linux target Meridian builds for).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The background service that samples memory and the in-flight count.
pub struct Sampler(pub Arc<Overload>);

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => self.0.sample(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_inflight: u32, max_memory: Option<u64>) -> Limits {
        Limits {
            max_header_size: 32 * 1024,
            max_body_size: None,
            max_connections: 10,
            max_connections_per_ip: 10,
            max_requests_per_connection: 10,
            max_concurrent_streams: 10,
            max_inflight,
            max_memory,
        }
    }

    #[test]
    fn sheds_beyond_the_inflight_limit_and_counts_until_dropped() {
        let o = Overload::new(&Registry::new());
        let a = o.start();
        let b = o.start();
        assert_eq!(o.shed(&limits(2, None)), None, "two in flight, two allowed");
        let c = o.start();
        assert_eq!(o.shed(&limits(2, None)), Some(Shed::Inflight));
        drop((a, b, c));
        assert_eq!(o.inflight(), 0);
        assert_eq!(o.shed.with_label_values(&["inflight"]).get(), 1);
    }

    #[test]
    fn sheds_above_the_memory_limit() {
        let o = Overload::new(&Registry::new());
        o.sample();
        let rss = o.rss.load(Ordering::Relaxed);
        assert!(
            rss > 1 << 20,
            "a running test process has some memory: {rss}"
        );
        let _r = o.start();
        assert_eq!(o.shed(&limits(100, Some(rss * 2))), None);
        assert_eq!(o.shed(&limits(100, Some(1024))), Some(Shed::Memory));
    }
}

//! Prometheus metrics. Label handles are resolved once, when a backend or region is created,
//! so the request path only bumps pre-resolved counters: no label lookup, no formatting.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Status classes used as a label, indexed by `status / 100 - 1`; index 5 is "error"
/// (no response from any upstream).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Client continents used as a label (bounded cardinality); the last is "unknown".
pub const CONTINENT_LABELS: [&str; 8] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA", "unknown"];

/// The metric families of one Meridian instance, in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    requests: IntCounterVec,
    upstream_latency: HistogramVec,
    backend_up: IntGaugeVec,
    health_checks: IntCounterVec,
    probe_rtt: prometheus::GaugeVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    failovers: IntCounterVec,
    client_requests: IntCounterVec,
    region_healthy: IntGaugeVec,
    /// Requests answered 503 because no allowed region had a usable backend.
    pub no_backend: IntCounter,
    /// Requests whose client-address headers were malformed (treated as absent).
    pub bad_client_header: IntCounter,
    /// Retries the retry budget refused.
    pub retries_refused: IntCounter,
    /// Pooled upstream connections lost to pingora's hand-over race (process-wide).
    pub pool_reuse_lost: IntCounter,
    reloads: IntCounterVec,
    /// The generation of the routing snapshot in use.
    pub config_generation: IntGauge,
    dns_resolutions: IntCounterVec,
    dns_addresses: IntGaugeVec,
    dns_failing: IntGaugeVec,
}

/// Pooled upstream connections pingora could not take over (see `logging`): one counter
/// per process, since the log records it comes from are process-wide.
#[allow(clippy::expect_used)] // a constant metric definition, checked by the tests
pub fn pool_reuse_lost() -> &'static IntCounter {
    static COUNTER: OnceLock<IntCounter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        IntCounter::new(
            "meridian_upstream_pool_reuse_lost_total",
            "Pooled upstream connections pingora could not hand over to a request (its \"failed to acquire reusable stream\"); the request opened a new connection",
        )
        .expect("valid metric definition")
    })
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> T {
    // Registration only fails on duplicate names, which the fixed set below never has.
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

macro_rules! counter_vec {
    ($reg:expr, $name:expr, $help:expr, $labels:expr) => {
        register(
            $reg,
            IntCounterVec::new(Opts::new($name, $help), $labels).expect("valid metric definition"),
        )
    };
}

impl Metrics {
    /// Creates every metric family in a fresh registry.
    #[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let upstream_latency = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "meridian_upstream_response_seconds",
                    "Time from sending the request upstream to its response header, by region",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["region"],
            )
            .expect("valid metric definition"),
        );
        let probe_rtt = register(
            r,
            prometheus::GaugeVec::new(
                Opts::new(
                    "meridian_probe_rtt_seconds",
                    "Last active health probe round-trip time per backend",
                ),
                &["region", "backend"],
            )
            .expect("valid metric definition"),
        );
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
            )
        };
        Metrics {
            requests: counter_vec!(
                r,
                "meridian_requests_total",
                "Requests served, by region, backend and status class",
                &["region", "backend", "class"]
            ),
            upstream_latency,
            backend_up: gauge(
                "meridian_backend_up",
                "1 when a backend passes active health checks and is not ejected",
                &["region", "backend"],
            ),
            health_checks: counter_vec!(
                r,
                "meridian_health_checks_total",
                "Active health probes by result",
                &["region", "backend", "result"]
            ),
            probe_rtt,
            ejections: counter_vec!(
                r,
                "meridian_ejections_total",
                "Backends ejected by passive outlier detection",
                &["region", "backend"]
            ),
            retries: counter_vec!(
                r,
                "meridian_retries_total",
                "Upstream attempts retried on another backend, by the region of the failed attempt",
                &["region"]
            ),
            failovers: counter_vec!(
                r,
                "meridian_failovers_total",
                "Requests served by another region than the first candidate",
                &["from", "to"]
            ),
            client_requests: counter_vec!(
                r,
                "meridian_client_requests_total",
                "Requests by client continent and chosen region",
                &["continent", "region"]
            ),
            region_healthy: gauge(
                "meridian_region_healthy_backends",
                "Usable backends per region",
                &["region"],
            ),
            no_backend: register(
                r,
                IntCounter::new(
                    "meridian_no_backend_total",
                    "Requests answered 503 because no allowed region had a usable backend",
                )
                .expect("valid metric definition"),
            ),
            bad_client_header: register(
                r,
                IntCounter::new(
                    "meridian_client_header_invalid_total",
                    "Malformed X-Forwarded-For/Forwarded headers from trusted peers",
                )
                .expect("valid metric definition"),
            ),
            pool_reuse_lost: register(r, pool_reuse_lost().clone()),
            retries_refused: register(
                r,
                IntCounter::new(
                    "meridian_retries_refused_total",
                    "Retries refused by the retry budget (retry.budget_percent, retry.min_per_second)",
                )
                .expect("valid metric definition"),
            ),
            reloads: counter_vec!(
                r,
                "meridian_reloads_total",
                "Configuration reloads by result",
                &["result"]
            ),
            config_generation: register(
                r,
                IntGauge::new(
                    "meridian_config_generation",
                    "Generation of the routing snapshot in use",
                )
                .expect("valid metric definition"),
            ),
            dns_resolutions: counter_vec!(
                r,
                "meridian_dns_resolutions_total",
                "Resolutions of backend DNS names by result",
                &["name", "result"]
            ),
            dns_addresses: gauge(
                "meridian_dns_addresses",
                "Addresses a backend DNS name currently has (the last good answer)",
                &["name"],
            ),
            dns_failing: gauge(
                "meridian_dns_failing",
                "1 while the latest resolution of a backend DNS name failed (the last good answer is kept)",
                &["name"],
            ),
            registry,
        }
    }

    /// Records a resolution of a backend DNS name.
    pub fn dns_resolution(&self, name: &str, ok: bool, addresses: usize) {
        let result = if ok { "success" } else { "failure" };
        self.dns_resolutions
            .with_label_values(&[name, result])
            .inc();
        self.dns_addresses
            .with_label_values(&[name])
            .set(i64::try_from(addresses).unwrap_or(i64::MAX));
        self.dns_failing
            .with_label_values(&[name])
            .set(i64::from(!ok));
    }

    /// Drops the series of a DNS name that left the configuration.
    pub fn forget_dns_name(&self, name: &str) {
        for result in ["success", "failure"] {
            let _ = self.dns_resolutions.remove_label_values(&[name, result]);
        }
        let _ = self.dns_addresses.remove_label_values(&[name]);
        let _ = self.dns_failing.remove_label_values(&[name]);
    }

    /// Pre-resolved handles for one backend.
    pub fn backend(&self, region: &str, backend: &str) -> BackendMetrics {
        let labels = [region, backend];
        BackendMetrics {
            requests: STATUS_CLASSES
                .map(|class| self.requests.with_label_values(&[region, backend, class])),
            up: self.backend_up.with_label_values(&labels),
            probe_ok: self
                .health_checks
                .with_label_values(&[region, backend, "success"]),
            probe_fail: self
                .health_checks
                .with_label_values(&[region, backend, "failure"]),
            probe_rtt: self.probe_rtt.with_label_values(&labels),
            ejections: self.ejections.with_label_values(&labels),
        }
    }

    /// Drops the series of a backend that left the configuration.
    pub fn forget_backend(&self, region: &str, backend: &str) {
        for class in STATUS_CLASSES {
            let _ = self.requests.remove_label_values(&[region, backend, class]);
        }
        let _ = self.backend_up.remove_label_values(&[region, backend]);
        let _ = self.probe_rtt.remove_label_values(&[region, backend]);
        let _ = self.ejections.remove_label_values(&[region, backend]);
        for result in ["success", "failure"] {
            let _ = self
                .health_checks
                .remove_label_values(&[region, backend, result]);
        }
    }

    /// Pre-resolved handles for one region.
    pub fn region(&self, region: &str) -> RegionMetrics {
        RegionMetrics {
            upstream_latency: self.upstream_latency.with_label_values(&[region]),
            retries: self.retries.with_label_values(&[region]),
            healthy: self.region_healthy.with_label_values(&[region]),
            by_continent: CONTINENT_LABELS
                .map(|c| self.client_requests.with_label_values(&[c, region])),
        }
    }

    /// The counter of requests steered to region `from` but served by `to` (the snapshot
    /// keeps these handles; see `Snapshot::count_failover`).
    pub fn failover_counter(&self, from: &str, to: &str) -> IntCounter {
        self.failovers.with_label_values(&[from, to])
    }

    /// Counts a reload by result (`ok`, `invalid`, `needs_upgrade`, `unchanged`).
    pub fn reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Handles for one backend's series.
#[derive(Clone)]
pub struct BackendMetrics {
    /// Requests by status class (see [`STATUS_CLASSES`]).
    pub requests: [IntCounter; 6],
    /// 1 when usable.
    pub up: IntGauge,
    /// Successful probes.
    pub probe_ok: IntCounter,
    /// Failed probes.
    pub probe_fail: IntCounter,
    /// Last probe RTT.
    pub probe_rtt: prometheus::Gauge,
    /// Passive ejections.
    pub ejections: IntCounter,
}

impl BackendMetrics {
    /// Counts a response status (`None`: no response at all).
    pub fn count_status(&self, status: Option<u16>) {
        let idx = match status {
            Some(s @ 100..=599) => usize::from(s / 100 - 1),
            _ => 5,
        };
        self.requests[idx].inc();
    }
}

/// Handles for one region's series.
#[derive(Clone)]
pub struct RegionMetrics {
    /// Upstream response-header latency.
    pub upstream_latency: Histogram,
    /// Retries away from this region's backends.
    pub retries: IntCounter,
    /// Usable backends.
    pub healthy: IntGauge,
    /// Requests by client continent (see [`CONTINENT_LABELS`]).
    pub by_continent: [IntCounter; 8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_and_encode() {
        let m = Metrics::new();
        let b = m.backend("eu-west", "127.0.0.1:1");
        b.count_status(Some(204));
        b.count_status(Some(503));
        b.count_status(None);
        m.region("eu-west").by_continent[3].inc();
        m.failover_counter("us-east", "eu-west").inc();
        m.reload("ok");
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(
            r#"meridian_requests_total{backend="127.0.0.1:1",class="2xx",region="eu-west"} 1"#
        ));
        assert!(text.contains(
            r#"meridian_requests_total{backend="127.0.0.1:1",class="error",region="eu-west"} 1"#
        ));
        assert!(text.contains(r#"meridian_failovers_total{from="us-east",to="eu-west"} 1"#));
        assert!(
            text.contains(r#"meridian_client_requests_total{continent="EU",region="eu-west"} 1"#)
        );
        assert!(
            text.contains("\nmeridian_upstream_pool_reuse_lost_total "),
            "the process-wide counter is in every instance's registry"
        );
        m.forget_backend("eu-west", "127.0.0.1:1");
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(!text.contains(r#"backend="127.0.0.1:1""#));
    }
}

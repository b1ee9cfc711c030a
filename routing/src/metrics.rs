//! The routing core's metric families (per backend, per region, failovers), registered next
//! to the state they describe. Label handles are resolved once, when a backend or region is
//! created, so the request path only bumps pre-resolved counters.

use prometheus::core::Collector;

use crate::admin::AdminState;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Status classes used as a label, indexed by `status / 100 - 1`; index 5 is "error"
/// (no response from any upstream).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Client continents used as a label (bounded cardinality); the last is "unknown".
pub const CONTINENT_LABELS: [&str; 8] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA", "unknown"];

/// Registers `c` in `registry` and returns it. Registration fails only for a name
/// registered twice, which a fixed set of families never does; it is logged, not fatal.
pub fn register<T: Collector + Clone + 'static>(registry: &Registry, c: T) -> T {
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

/// A counter family, registered.
#[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
    )
}

/// A gauge family, registered.
#[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
    )
}

/// A single counter, registered.
#[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("valid metric definition"),
    )
}

/// A single gauge, registered.
#[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("valid metric definition"),
    )
}

/// The per-backend and per-region families of one instance.
#[derive(Clone)]
pub struct RoutingMetrics {
    requests: IntCounterVec,
    upstream_latency: HistogramVec,
    backend_up: IntGaugeVec,
    health_checks: IntCounterVec,
    probe_rtt: GaugeVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    failovers: IntCounterVec,
    client_requests: IntCounterVec,
    region_healthy: IntGaugeVec,
    service_usable: IntGaugeVec,
    service_requests: IntCounterVec,
    backend_state: IntGaugeVec,
    backend_weight: IntGaugeVec,
}

impl std::fmt::Debug for RoutingMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoutingMetrics")
    }
}

impl RoutingMetrics {
    /// Creates the families in `registry`.
    #[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
    pub fn register(registry: &Registry) -> Self {
        let r = registry;
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
            GaugeVec::new(
                Opts::new(
                    "meridian_probe_rtt_seconds",
                    "Last active health probe round-trip time per backend",
                ),
                &["region", "backend"],
            )
            .expect("valid metric definition"),
        );
        RoutingMetrics {
            requests: counter_vec(
                r,
                "meridian_requests_total",
                "Requests served, by region, backend and status class",
                &["region", "backend", "class"],
            ),
            upstream_latency,
            backend_up: gauge_vec(
                r,
                "meridian_backend_up",
                "1 when a backend passes active health checks and is not ejected",
                &["region", "backend"],
            ),
            health_checks: counter_vec(
                r,
                "meridian_health_checks_total",
                "Active health probes by result",
                &["region", "backend", "result"],
            ),
            probe_rtt,
            ejections: counter_vec(
                r,
                "meridian_ejections_total",
                "Backends ejected by passive outlier detection",
                &["region", "backend"],
            ),
            retries: counter_vec(
                r,
                "meridian_retries_total",
                "Upstream attempts retried on another backend, by the region of the failed attempt",
                &["region"],
            ),
            failovers: counter_vec(
                r,
                "meridian_failovers_total",
                "Requests served by another region than the first candidate",
                &["from", "to"],
            ),
            client_requests: counter_vec(
                r,
                "meridian_client_requests_total",
                "Requests by client continent and chosen region",
                &["continent", "region"],
            ),
            region_healthy: gauge_vec(
                r,
                "meridian_region_healthy_backends",
                "Usable backends per region (every service's)",
                &["region"],
            ),
            service_usable: gauge_vec(
                r,
                "meridian_service_usable_backends",
                "Usable backends of a service's pool in a region",
                &["service", "region"],
            ),
            service_requests: counter_vec(
                r,
                "meridian_service_requests_total",
                "Requests by service and status class",
                &["service", "class"],
            ),
            backend_state: gauge_vec(
                r,
                "meridian_backend_admin_state",
                "1 for the state an operator set a backend to (ready, drain, maintenance)",
                &["region", "backend", "state"],
            ),
            backend_weight: gauge_vec(
                r,
                "meridian_backend_weight",
                "A backend's weight now: configured or set at run time, times its slow-start share",
                &["region", "backend"],
            ),
        }
    }

    /// Families in a registry of their own (unit tests and benchmarks).
    pub fn detached() -> Self {
        Self::register(&Registry::new())
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
            admin_state: AdminState::ALL.map(|st| {
                self.backend_state
                    .with_label_values(&[region, backend, st.as_str()])
            }),
            weight: self.backend_weight.with_label_values(&labels),
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
        let _ = self.backend_weight.remove_label_values(&[region, backend]);
        for st in AdminState::ALL {
            let _ = self
                .backend_state
                .remove_label_values(&[region, backend, st.as_str()]);
        }
        for result in ["success", "failure"] {
            let _ = self
                .health_checks
                .remove_label_values(&[region, backend, result]);
        }
    }

    /// Pre-resolved handles for one service's pool in one region (the latency, retry and
    /// client counters are the region's, shared by its pools).
    pub fn region(&self, region: &str, service: &str) -> RegionMetrics {
        RegionMetrics {
            upstream_latency: self.upstream_latency.with_label_values(&[region]),
            retries: self.retries.with_label_values(&[region]),
            healthy: self.service_usable.with_label_values(&[service, region]),
            by_continent: CONTINENT_LABELS
                .map(|c| self.client_requests.with_label_values(&[c, region])),
        }
    }

    /// The gauge of a region's usable backends, every service's together.
    pub fn region_usable(&self, region: &str) -> IntGauge {
        self.region_healthy.with_label_values(&[region])
    }

    /// Pre-resolved handles for one service.
    pub fn service(&self, service: &str) -> ServiceMetrics {
        ServiceMetrics {
            requests: STATUS_CLASSES
                .map(|class| self.service_requests.with_label_values(&[service, class])),
        }
    }

    /// The counter of requests steered to region `from` but served by `to` (the snapshot
    /// keeps these handles; see `Snapshot::count_failover`).
    pub fn failover_counter(&self, from: &str, to: &str) -> IntCounter {
        self.failovers.with_label_values(&[from, to])
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
    pub probe_rtt: Gauge,
    /// Passive ejections.
    pub ejections: IntCounter,
    /// 1 for the operator's state, by [`AdminState::ALL`] order.
    pub admin_state: [IntGauge; 3],
    /// The weight now.
    pub weight: IntGauge,
}

impl BackendMetrics {
    /// Shows the operator's state and the backend's full weight.
    pub fn set_admin(&self, state: AdminState, weight: u32) {
        for (st, g) in AdminState::ALL.iter().zip(&self.admin_state) {
            g.set(i64::from(*st == state));
        }
        self.weight.set(i64::from(weight));
    }

    /// Counts a response status (`None`: no response at all).
    pub fn count_status(&self, status: Option<u16>) {
        self.requests[class_index(status)].inc();
    }
}

/// Handles for one service's series.
#[derive(Clone)]
pub struct ServiceMetrics {
    /// Requests by status class (see [`STATUS_CLASSES`]).
    pub requests: [IntCounter; 6],
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceMetrics")
    }
}

impl ServiceMetrics {
    /// Counts a response status (`None`: no response at all).
    pub fn count_status(&self, status: Option<u16>) {
        self.requests[class_index(status)].inc();
    }
}

/// The index in [`STATUS_CLASSES`] of a status (`None`: no response).
fn class_index(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100 - 1),
        _ => 5,
    }
}

/// Handles for one pool's series.
#[derive(Clone)]
pub struct RegionMetrics {
    /// Upstream response-header latency.
    pub upstream_latency: Histogram,
    /// Retries away from this region's backends.
    pub retries: IntCounter,
    /// Usable backends of the pool.
    pub healthy: IntGauge,
    /// Requests by client continent (see [`CONTINENT_LABELS`]).
    pub by_continent: [IntCounter; 8],
}

impl std::fmt::Debug for RegionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegionMetrics")
    }
}

impl RegionMetrics {
    /// Counts a request from a client on `continent` (a code such as `EU`; `None`: unknown).
    pub fn count_client(&self, continent: Option<&str>) {
        let i = continent
            .and_then(|c| CONTINENT_LABELS.iter().position(|l| *l == c))
            .unwrap_or(CONTINENT_LABELS.len() - 1);
        if let Some(counter) = self.by_continent.get(i) {
            counter.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn encode(r: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn families_register_and_encode() {
        let registry = Registry::new();
        let m = RoutingMetrics::register(&registry);
        let b = m.backend("eu-west", "127.0.0.1:1");
        b.count_status(Some(204));
        b.count_status(Some(503));
        b.count_status(None);
        m.region("eu-west", "default").count_client(Some("EU"));
        m.failover_counter("us-east", "eu-west").inc();
        let text = encode(&registry);
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
        m.forget_backend("eu-west", "127.0.0.1:1");
        assert!(!encode(&registry).contains(r#"backend="127.0.0.1:1""#));
    }
}

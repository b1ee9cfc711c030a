//! Upgraded connections (WebSocket): the accounting of a tunnel from its `101` to its
//! end — active and opened counts, bytes each way, and why it closed (an end by either
//! side, the idle timeout `timeouts.tunnel`, an error). A tunnel is an in-flight request
//! until it ends, so a graceful stop or upgrade gives it the grace period like any other.

use prometheus::{IntCounter, IntGauge, Registry};

use crate::observe::metrics::{counter, counter_vec, gauge};

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// One side closed it.
    Closed,
    /// Nothing went through it in either direction for `timeouts.tunnel`.
    Idle,
    /// A read or write failed (a reset, a client that stopped reading).
    Error,
}

/// The tunnel families.
#[derive(Clone)]
pub struct TunnelMetrics {
    active: IntGauge,
    opened: IntCounter,
    to_backend: IntCounter,
    to_client: IntCounter,
    closed: IntCounter,
    idle: IntCounter,
    error: IntCounter,
}

impl TunnelMetrics {
    /// Registers `meridian_tunnels_active`, `meridian_tunnels_total`,
    /// `meridian_tunnel_bytes_total{direction}` and `meridian_tunnels_closed_total{reason}`.
    pub fn register(registry: &Registry) -> Self {
        let bytes = counter_vec(
            registry,
            "meridian_tunnel_bytes_total",
            "Bytes through upgraded connections (WebSocket), by direction",
            &["direction"],
        );
        let closed = counter_vec(
            registry,
            "meridian_tunnels_closed_total",
            "Upgraded connections that ended, by reason: closed (by either side), idle (timeouts.tunnel), error",
            &["reason"],
        );
        TunnelMetrics {
            active: gauge(
                registry,
                "meridian_tunnels_active",
                "Upgraded connections (WebSocket) open now",
            ),
            opened: counter(
                registry,
                "meridian_tunnels_total",
                "Upgraded connections (WebSocket) opened (a 101 from the backend)",
            ),
            to_backend: bytes.with_label_values(&["to_backend"]),
            to_client: bytes.with_label_values(&["to_client"]),
            closed: closed.with_label_values(&["closed"]),
            idle: closed.with_label_values(&["idle"]),
            error: closed.with_label_values(&["error"]),
        }
    }

    /// A tunnel opened: counted as active until the returned guard is ended or dropped.
    pub fn open(&self) -> Tunnel {
        self.active.inc();
        self.opened.inc();
        Tunnel {
            metrics: self.clone(),
            close: None,
            ended: false,
        }
    }
}

/// One open tunnel.
pub struct Tunnel {
    metrics: TunnelMetrics,
    close: Option<Close>,
    ended: bool,
}

impl Tunnel {
    /// Counts bytes from the client to the backend.
    pub fn to_backend(&self, n: usize) {
        self.metrics.to_backend.inc_by(n as u64);
    }

    /// Counts bytes from the backend to the client.
    pub fn to_client(&self, n: usize) {
        self.metrics.to_client.inc_by(n as u64);
    }

    /// Records why it is ending (the first reason given wins).
    pub fn closing(&mut self, why: Close) {
        self.close.get_or_insert(why);
    }

    /// Why it ended (or is ending).
    pub fn close_reason(&self) -> Close {
        self.close.unwrap_or(Close::Closed)
    }

    /// It ended: counted by reason, no longer active.
    pub fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.metrics.active.dec();
        match self.close_reason() {
            Close::Closed => self.metrics.closed.inc(),
            Close::Idle => self.metrics.idle.inc(),
            Close::Error => self.metrics.error.inc(),
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_is_active_until_it_ends_once() {
        let registry = Registry::new();
        let m = TunnelMetrics::register(&registry);
        let mut t = m.open();
        t.to_backend(10);
        t.to_client(5);
        assert_eq!(m.active.get(), 1);
        t.closing(Close::Idle);
        t.closing(Close::Error);
        t.end();
        drop(t);
        assert_eq!(m.active.get(), 0);
        assert_eq!(m.idle.get(), 1);
        assert_eq!(m.error.get(), 0);
        assert_eq!((m.to_backend.get(), m.to_client.get()), (10, 5));
        drop(m.open());
        assert_eq!((m.active.get(), m.closed.get(), m.opened.get()), (0, 1, 2));
    }
}

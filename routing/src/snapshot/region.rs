//! A service's pool in a region, in a snapshot: its members, balancer and health-check
//! settings, and its live state (measured latency, usable count, tier in use), carried
//! across reloads by `service/region`.

use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_config::HealthCheck;
use meridian_geoip::Coordinates;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::metrics::RegionMetrics;
use crate::selection::{Balancer, Member};

/// A region's published latency changes at most this often (see
/// [`RegionState::publish_measurement`]).
pub const MEASUREMENT_DWELL: Duration = Duration::from_secs(1);

/// Live per-pool state, carried across reloads by `service/region`.
#[derive(Debug)]
pub struct RegionState {
    /// Pre-resolved metric handles.
    pub metrics: RegionMetrics,
    /// Measured latency from this instance to the region's usable backends (µs), as
    /// published for ranking.
    measured_us: AtomicU32,
    /// When `measured_us` last changed ([`now_ms`] stamp; 0: never).
    measured_at: AtomicU32,
    /// Usable backends, as of the last measurement tick.
    usable: AtomicU32,
    /// The lowest backend tier with a usable member as of the last measurement tick;
    /// `u8::MAX` (every tier) when the region has no tiers or no usable member.
    pub(super) active_tier: AtomicU8,
    /// Usable backends and all backends of the active tier (of the whole region when it
    /// has no tiers): what the panic threshold compares.
    pub(super) tier_usable: AtomicU32,
    pub(super) tier_members: AtomicU32,
    /// Rotating cursor for round-robin style algorithms.
    pub cursor: AtomicUsize,
    /// Latency to the region as the mesh knows it (its instance's measured latency to its
    /// backends plus the round trip to that instance), in µs; 0 when there is no fresh
    /// report and this instance's own measurements count.
    remote_latency_us: AtomicU32,
    /// The region's own instance's measured latency to its backends, as the mesh reports
    /// it (µs; 0: no fresh report): the same for every instance, unlike
    /// `remote_latency_us`, which adds this instance's round trip.
    reported_us: AtomicU32,
}

impl RegionState {
    pub(crate) fn new(metrics: RegionMetrics) -> Self {
        RegionState {
            metrics,
            measured_us: AtomicU32::new(0),
            measured_at: AtomicU32::new(0),
            usable: AtomicU32::new(0),
            active_tier: AtomicU8::new(u8::MAX),
            tier_usable: AtomicU32::new(0),
            tier_members: AtomicU32::new(0),
            cursor: AtomicUsize::new(0),
            remote_latency_us: AtomicU32::new(0),
            reported_us: AtomicU32::new(0),
        }
    }

    /// Sets or clears (`None`) the latency the mesh reports for the region.
    pub fn set_remote_latency(&self, us: Option<u32>) {
        self.remote_latency_us
            .store(us.map_or(0, |u| u.max(1)), Ordering::Relaxed);
    }

    /// The latency the mesh reports for the region, if any.
    pub fn remote_latency(&self) -> Option<u32> {
        match self.remote_latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us),
        }
    }

    /// Sets or clears (`None`) the latency the region's own instance reports for its
    /// backends.
    pub fn set_reported_latency(&self, us: Option<u32>) {
        self.reported_us
            .store(us.map_or(0, |u| u.max(1)), Ordering::Relaxed);
    }

    /// The latency the region's own instance reports for its backends, if any.
    pub fn reported_latency(&self) -> Option<u32> {
        match self.reported_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us),
        }
    }

    /// Measured latency in microseconds (0 until measured).
    pub fn measured_us(&self) -> u32 {
        self.measured_us.load(Ordering::Relaxed)
    }

    /// Usable backends as of the last measurement.
    pub fn usable(&self) -> u32 {
        self.usable.load(Ordering::Relaxed)
    }

    /// The highest backend tier requests may use (see [`crate::selection::PickInput::max_tier`]).
    pub fn active_tier(&self) -> u8 {
        self.active_tier.load(Ordering::Relaxed)
    }

    /// Usable backends and all backends of the tier in use, for the panic threshold
    /// ([`crate::selection::panic_mode`]): primaries that are down while backups serve do not
    /// make the region panic and spread requests over them.
    pub fn tier_counts(&self) -> (u32, u32) {
        (
            self.tier_usable.load(Ordering::Relaxed),
            self.tier_members.load(Ordering::Relaxed),
        )
    }

    /// Sets both values as they are (tests and benchmarks).
    pub fn publish(&self, measured_us: u32, usable: u32) {
        self.measured_us.store(measured_us, Ordering::Relaxed);
        self.usable.store(usable, Ordering::Relaxed);
        self.metrics.healthy.set(i64::from(usable));
    }

    /// Publishes a measurement (the measurement tick, and right after a swap).
    ///
    /// The usable count is published at once: health must act immediately. The measured
    /// latency moves with hysteresis, so that noise never reorders regions: the published
    /// value changes only when the measurement differs from it by more than `deadband_us`,
    /// and at most once per [`MEASUREMENT_DWELL`]. A region with no usable backend keeps
    /// its last latency (it ranks last anyway). Returns whether the latency changed.
    pub fn publish_measurement(
        &self,
        measured_us: u32,
        usable: u32,
        now: Instant,
        deadband_us: u32,
    ) -> bool {
        self.usable.store(usable, Ordering::Relaxed);
        self.metrics.healthy.set(i64::from(usable));
        if usable == 0 {
            return false;
        }
        let current = self.measured_us.load(Ordering::Relaxed);
        let at = self.measured_at.load(Ordering::Relaxed);
        let stamp = now_ms(now).max(1);
        let first = at == 0;
        let moved = current.abs_diff(measured_us) > deadband_us;
        let dwelt = u128::from(stamp.wrapping_sub(at)) >= MEASUREMENT_DWELL.as_millis();
        if first || (moved && dwelt) {
            self.measured_us.store(measured_us, Ordering::Relaxed);
            self.measured_at.store(stamp, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// One service's pool in one region, in a snapshot.
#[derive(Debug)]
pub struct RegionPool {
    /// The region's name.
    pub name: Arc<str>,
    /// The service's name.
    pub service: Arc<str>,
    /// `service/region`: the key of its live state and of pool-wide runtime settings.
    pub key: Arc<str>,
    /// Its coordinates.
    pub coords: Coordinates,
    /// Its backends.
    pub members: Vec<Member>,
    /// The balancing algorithm, precomputed.
    pub balancer: Balancer,
    /// Live region state.
    pub state: Arc<RegionState>,
    /// Active health check settings.
    pub health: HealthCheck,
    /// Whether the members are the region's Meridian instances (requests are relayed
    /// through them; the mesh, not probes, says whether they are usable).
    pub relay: bool,
    /// The slow-start window in milliseconds (0: none).
    pub slow_start_ms: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RegionState {
        RegionState::new(crate::metrics::RoutingMetrics::detached().region("r", "s"))
    }

    #[tokio::test(start_paused = true)]
    async fn published_latency_ignores_noise_and_changes_at_most_once_per_dwell() {
        let r = state();
        let now = Instant::now;
        assert!(
            r.publish_measurement(10_000, 2, now(), 5_000),
            "first value"
        );
        assert_eq!(r.measured_us(), 10_000);
        tokio::time::advance(MEASUREMENT_DWELL * 3).await;
        // Noise inside the dead band: nothing moves, however long it lasts.
        for v in [12_000, 8_000, 14_900, 5_100] {
            assert!(!r.publish_measurement(v, 2, now(), 5_000), "{v}");
            tokio::time::advance(MEASUREMENT_DWELL).await;
        }
        assert_eq!(r.measured_us(), 10_000);
        // A real shift is published ...
        assert!(r.publish_measurement(40_000, 2, now(), 5_000));
        assert_eq!(r.measured_us(), 40_000);
        // ... and the next shift waits for the dwell time, so the value cannot flap on
        // every 100 ms tick.
        tokio::time::advance(MEASUREMENT_DWELL / 2).await;
        assert!(!r.publish_measurement(10_000, 2, now(), 5_000));
        assert_eq!(r.measured_us(), 40_000);
        tokio::time::advance(MEASUREMENT_DWELL / 2).await;
        assert!(r.publish_measurement(10_000, 2, now(), 5_000));
        assert_eq!(r.measured_us(), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn usable_count_is_published_at_once_and_no_backend_keeps_the_latency() {
        let r = state();
        let now = Instant::now;
        r.publish_measurement(10_000, 2, now(), 5_000);
        r.publish_measurement(90_000, 0, now(), 5_000);
        assert_eq!((r.usable(), r.measured_us()), (0, 10_000));
        r.publish_measurement(10_000, 1, now(), 5_000);
        assert_eq!(r.usable(), 1);
    }
}

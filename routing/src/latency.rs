//! Latency measurement per backend: lock-free EWMAs of probe RTT and of live response time,
//! and the in-flight request count.
//!
//! The response-time average is a *peak* EWMA (as in linkerd2-proxy / tower's `PeakEwma`): a
//! sample above the current estimate replaces it at once, a lower one is blended in with a
//! weight that depends on the time since the previous sample. Without fresh evidence the
//! response estimate decays back towards the probe RTT, so a backend that was slow once is
//! tried again later instead of being starved forever.
//!
//! Each average lives in one `AtomicU64` (an `f32` of microseconds and a millisecond stamp), so
//! readers and writers on the request path never take a lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::now_ms;

const EMPTY: u64 = u64::MAX;

fn pack(value_us: f32, stamp_ms: u32) -> u64 {
    (u64::from(value_us.to_bits()) << 32) | u64::from(stamp_ms)
}

fn unpack(bits: u64) -> Option<(f32, u32)> {
    if bits == EMPTY {
        None
    } else {
        Some((f32::from_bits((bits >> 32) as u32), bits as u32))
    }
}

/// The weight an old estimate keeps after `elapsed_ms` with decay window `tau`.
fn decay(elapsed_ms: u32, tau: Duration) -> f32 {
    let tau_ms = tau.as_secs_f32() * 1000.0;
    if tau_ms <= 0.0 {
        return 0.0;
    }
    if elapsed_ms == 0 {
        // exp(0): samples within the same millisecond (common under load) skip the `exp`
        return 1.0;
    }
    (-(elapsed_ms as f32) / tau_ms).exp()
}

/// An exponentially weighted moving average of a duration, updated lock-free.
#[derive(Debug)]
pub struct Ewma {
    bits: AtomicU64,
    peak: bool,
}

impl Ewma {
    /// A plain EWMA (probe RTT).
    pub fn new() -> Self {
        Ewma {
            bits: AtomicU64::new(EMPTY),
            peak: false,
        }
    }

    /// A peak EWMA: samples above the estimate replace it at once.
    pub fn new_peak() -> Self {
        Ewma {
            bits: AtomicU64::new(EMPTY),
            peak: true,
        }
    }

    /// Adds a sample taken at `now`, with decay window `tau`.
    pub fn observe(&self, sample: Duration, now: Instant, tau: Duration) {
        self.observe_at(sample.as_secs_f32() * 1e6, now_ms(now), tau);
    }

    /// [`Self::observe`] with the sample in microseconds and `now` as a millisecond stamp.
    fn observe_at(&self, sample_us: f32, stamp: u32, tau: Duration) {
        let mut current = self.bits.load(Ordering::Relaxed);
        loop {
            let next = match unpack(current) {
                None => pack(sample_us, stamp),
                Some((old, old_stamp)) => {
                    let value = if self.peak && sample_us > old {
                        sample_us
                    } else {
                        let w = decay(stamp.wrapping_sub(old_stamp), tau);
                        old * w + sample_us * (1.0 - w)
                    };
                    pack(value, stamp)
                }
            };
            match self.bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The current average in microseconds and the age of its last sample, if any sample exists.
    pub fn read(&self, now: Instant) -> Option<(f32, u32)> {
        unpack(self.bits.load(Ordering::Relaxed))
            .map(|(value, stamp)| (value, now_ms(now).wrapping_sub(stamp)))
    }

    /// The current average as a duration, if any sample exists.
    pub fn value(&self) -> Option<Duration> {
        unpack(self.bits.load(Ordering::Relaxed))
            .map(|(v, _)| Duration::from_secs_f32(v.max(0.0) / 1e6))
    }
}

impl Default for Ewma {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency state of one backend.
#[derive(Debug, Default)]
pub struct LatencyStats {
    /// EWMA of active probe round-trip time.
    pub probe: Ewma,
    /// Peak EWMA of live response time (time to the response header): what picking a
    /// backend within a region reacts to, at once.
    pub response: Ewma,
    /// Plain EWMA of the same samples: what region ranking looks at, so that one slow
    /// response cannot move a whole region.
    pub response_avg: Ewma,
    inflight: AtomicU32,
}

/// The estimate used when a backend has no sample at all yet (1 ms).
pub const DEFAULT_ESTIMATE_US: f32 = 1000.0;

impl LatencyStats {
    /// A fresh state with no samples.
    pub fn new() -> Self {
        LatencyStats {
            probe: Ewma::new(),
            response: Ewma::new_peak(),
            response_avg: Ewma::new(),
            inflight: AtomicU32::new(0),
        }
    }

    /// Records a live response time (both averages).
    pub fn observe_response(&self, elapsed: Duration, now: Instant, tau: Duration) {
        let (sample_us, stamp) = (elapsed.as_secs_f32() * 1e6, now_ms(now));
        self.response.observe_at(sample_us, stamp, tau);
        self.response_avg.observe_at(sample_us, stamp, tau);
    }

    /// The backend's expected latency in microseconds at `now`.
    ///
    /// The probe RTT is the baseline; the response peak-EWMA counts above it, and its excess
    /// decays towards the baseline as it ages (window `tau`).
    pub fn estimate_us(&self, now: Instant, tau: Duration) -> f32 {
        Self::blend(&self.probe, &self.response, now, tau)
    }

    /// Like [`Self::estimate_us`] but from the plain response average: the steady view
    /// that region measurements are made of.
    pub fn smooth_estimate_us(&self, now: Instant, tau: Duration) -> f32 {
        Self::blend(&self.probe, &self.response_avg, now, tau)
    }

    fn blend(probe: &Ewma, response: &Ewma, now: Instant, tau: Duration) -> f32 {
        let probe = probe.read(now).map(|(v, _)| v);
        match (probe, response.read(now)) {
            (Some(p), Some((r, age))) => p + (r - p).max(0.0) * decay(age, tau),
            (None, Some((r, age))) => {
                DEFAULT_ESTIMATE_US + (r - DEFAULT_ESTIMATE_US) * decay(age, tau)
            }
            (Some(p), None) => p,
            (None, None) => DEFAULT_ESTIMATE_US,
        }
    }

    /// Requests currently in flight to this backend.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts a request as started; the guard counts it as finished when dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }
}

/// Decrements the in-flight count of a backend when dropped.
#[derive(Debug)]
pub struct InflightGuard(std::sync::Arc<LatencyStats>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const TAU: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn ewma_first_sample_is_the_value() {
        let e = Ewma::new();
        assert!(e.read(Instant::now()).is_none());
        e.observe(Duration::from_millis(5), Instant::now(), TAU);
        let (v, age) = e.read(Instant::now()).unwrap();
        assert!((v - 5000.0).abs() < 1.0, "{v}");
        assert_eq!(age, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ewma_blends_by_elapsed_time() {
        let e = Ewma::new();
        e.observe(Duration::from_millis(10), Instant::now(), TAU);
        // One full decay window later the old value keeps weight e^-1.
        tokio::time::advance(TAU).await;
        e.observe(Duration::from_millis(20), Instant::now(), TAU);
        let (v, _) = e.read(Instant::now()).unwrap();
        let expected = 10_000.0 * (-1.0f32).exp() + 20_000.0 * (1.0 - (-1.0f32).exp());
        assert!((v - expected).abs() < 5.0, "{v} vs {expected}");
        // Two samples at the same instant: the old one keeps all its weight (w = 1).
        e.observe(Duration::from_millis(100), Instant::now(), TAU);
        let (v2, _) = e.read(Instant::now()).unwrap();
        assert!((v2 - v).abs() < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let e = Ewma::new_peak();
        e.observe(Duration::from_millis(2), Instant::now(), TAU);
        tokio::time::advance(Duration::from_millis(1)).await;
        e.observe(Duration::from_millis(50), Instant::now(), TAU);
        let (v, _) = e.read(Instant::now()).unwrap();
        assert!(
            (v - 50_000.0).abs() < 1.0,
            "a peak replaces the estimate: {v}"
        );
        tokio::time::advance(TAU * 3).await;
        e.observe(Duration::from_millis(2), Instant::now(), TAU);
        let (v, _) = e.read(Instant::now()).unwrap();
        assert!(
            v < 5_000.0,
            "three windows later the peak is mostly gone: {v}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn estimate_decays_towards_probe_rtt_without_fresh_samples() {
        let s = LatencyStats::new();
        assert_eq!(s.estimate_us(Instant::now(), TAU), DEFAULT_ESTIMATE_US);
        s.probe
            .observe(Duration::from_millis(1), Instant::now(), TAU);
        s.response
            .observe(Duration::from_millis(101), Instant::now(), TAU);
        let fresh = s.estimate_us(Instant::now(), TAU);
        assert!((fresh - 101_000.0).abs() < 10.0, "{fresh}");
        tokio::time::advance(TAU).await;
        let aged = s.estimate_us(Instant::now(), TAU);
        let expected = 1000.0 + 100_000.0 * (-1.0f32).exp();
        assert!((aged - expected).abs() < 50.0, "{aged} vs {expected}");
        tokio::time::advance(TAU * 20).await;
        let old = s.estimate_us(Instant::now(), TAU);
        assert!((old - 1000.0).abs() < 1.0, "back to the probe RTT: {old}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_slow_response_moves_the_peak_estimate_not_the_smooth_one() {
        let s = LatencyStats::new();
        for _ in 0..20 {
            s.probe
                .observe(Duration::from_millis(1), Instant::now(), TAU);
            s.observe_response(Duration::from_millis(2), Instant::now(), TAU);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        s.observe_response(Duration::from_millis(300), Instant::now(), TAU);
        let now = Instant::now();
        assert!(
            s.estimate_us(now, TAU) > 290_000.0,
            "the peak reacts at once"
        );
        let smooth = s.smooth_estimate_us(now, TAU);
        assert!(
            smooth < 10_000.0,
            "one outlier barely moves the smooth view: {smooth}"
        );
        // A sustained slowdown does move it.
        for _ in 0..50 {
            tokio::time::advance(Duration::from_millis(200)).await;
            s.observe_response(Duration::from_millis(80), Instant::now(), TAU);
        }
        let smooth = s.smooth_estimate_us(Instant::now(), TAU);
        assert!(smooth > 50_000.0, "{smooth}");
    }

    #[test]
    fn inflight_guard_counts() {
        let s = Arc::new(LatencyStats::new());
        let a = s.start();
        let b = s.start();
        assert_eq!(s.inflight(), 2);
        drop(a);
        assert_eq!(s.inflight(), 1);
        drop(b);
        assert_eq!(s.inflight(), 0);
    }
}

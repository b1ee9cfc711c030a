//! Passive outlier detection: consecutive failures of real requests eject a backend for a
//! back-off that doubles on each repeat. No I/O: the request path drives it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::now_ms;

/// The longest ejection the millisecond stamps can represent safely (they are compared as
/// signed 32-bit differences, good for ±24 days); the config allows far less.
const EJECTION_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Passive outlier detection: consecutive failures of real requests eject a backend for a
/// back-off that doubles on each repeat (up to a ceiling). An ejection ends when its time is
/// up or when an active probe succeeds after at least half of it has passed.
#[derive(Debug, Default)]
pub struct Outlier {
    failures: AtomicU32,
    /// Millisecond stamp (see [`now_ms`]) until which the backend is ejected; 0 = not ejected.
    until_ms: AtomicU32,
    /// Millisecond stamp at which the current ejection began.
    since_ms: AtomicU32,
    /// Ejections in a row without a quiet period; drives the back-off.
    streak: AtomicU32,
}

/// The outcome of one request, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered with a non-5xx status.
    Success,
    /// Connect error, reset, timeout or a 5xx answer.
    Failure,
}

impl Outlier {
    /// Whether the backend is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until != 0 && (until.wrapping_sub(now_ms(now)) as i32) > 0
    }

    /// Records a request outcome. Returns the ejection time if this outcome ejected the
    /// backend. When the failures reach `threshold`, `may_eject` says whether the region
    /// can lose the backend now (`max_ejection_percent`); if not, the failures stay counted
    /// and the next one asks again.
    pub fn record(
        &self,
        outcome: Outcome,
        now: Instant,
        threshold: u32,
        base: Duration,
        max: Duration,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        match outcome {
            Outcome::Success => {
                self.failures.store(0, Ordering::Relaxed);
                None
            }
            Outcome::Failure => {
                // Failures of requests that were already on their way when the ejection
                // began say nothing new: they neither extend it nor count towards the next.
                if self.is_ejected(now) {
                    return None;
                }
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n < threshold || !may_eject() {
                    return None;
                }
                self.failures.store(0, Ordering::Relaxed);
                let streak = self.streak.fetch_add(1, Ordering::Relaxed);
                let factor = 1u32 << streak.min(16);
                let ejection = base.saturating_mul(factor).min(max).min(EJECTION_CEILING);
                let stamp = now_ms(now);
                self.since_ms.store(stamp, Ordering::Relaxed);
                // 0 means "not ejected", so never store it as a deadline.
                let until = stamp.wrapping_add(ejection.as_millis() as u32).max(1);
                self.until_ms.store(until, Ordering::Relaxed);
                Some(ejection)
            }
        }
    }

    /// An active probe succeeded: ends an ejection that has served at least half its time,
    /// and forgets the back-off streak once the backend has stayed in for `quiet`.
    pub fn probe_ok(&self, now: Instant, quiet: Duration) {
        let until = self.until_ms.load(Ordering::Relaxed);
        let stamp = now_ms(now);
        if until == 0 {
            let since = self.since_ms.load(Ordering::Relaxed);
            if u128::from(stamp.wrapping_sub(since)) > quiet.as_millis() {
                self.streak.store(0, Ordering::Relaxed);
            }
            return;
        }
        let since = self.since_ms.load(Ordering::Relaxed);
        let total = until.wrapping_sub(since);
        let served = stamp.wrapping_sub(since);
        if served >= total / 2 {
            // Re-admitted with a clean slate: it takes `threshold` new failures to eject
            // it again (with the doubled back-off the streak remembers).
            self.failures.store(0, Ordering::Relaxed);
            self.until_ms.store(0, Ordering::Relaxed);
            self.since_ms.store(stamp, Ordering::Relaxed);
        }
    }

    /// Times this backend was ejected in a row (0 when in good standing).
    pub fn streak(&self) -> u32 {
        self.streak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(35);

    #[tokio::test(start_paused = true)]
    async fn ejection_after_threshold_with_growing_backoff() {
        let o = Outlier::default();
        let now = Instant::now;
        for _ in 0..4 {
            assert_eq!(
                o.record(Outcome::Failure, now(), 5, BASE, MAX, || true),
                None
            );
        }
        assert_eq!(
            o.record(Outcome::Failure, now(), 5, BASE, MAX, || true),
            Some(BASE)
        );
        assert!(o.is_ejected(now()));
        tokio::time::advance(BASE - Duration::from_millis(5)).await;
        assert!(o.is_ejected(now()));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!o.is_ejected(now()), "ejection over");
        // Second ejection doubles, third is capped.
        for _ in 0..5 {
            o.record(Outcome::Failure, now(), 5, BASE, MAX, || true);
        }
        assert!(o.is_ejected(now()));
        tokio::time::advance(BASE * 2 - Duration::from_millis(5)).await;
        assert!(o.is_ejected(now()), "20s the second time");
        tokio::time::advance(Duration::from_millis(10)).await;
        let mut last = None;
        for _ in 0..5 {
            last = o.record(Outcome::Failure, now(), 5, BASE, MAX, || true);
        }
        assert_eq!(last, Some(MAX), "40s capped at 35s");
        assert_eq!(o.streak(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_region_that_cannot_lose_the_backend_keeps_it_and_asks_again() {
        let o = Outlier::default();
        let now = Instant::now;
        for _ in 0..4 {
            assert_eq!(
                o.record(Outcome::Failure, now(), 3, BASE, MAX, || false),
                None
            );
        }
        assert!(
            !o.is_ejected(now()),
            "refused: max_ejection_percent reached"
        );
        assert_eq!(
            o.record(Outcome::Failure, now(), 3, BASE, MAX, || true),
            Some(BASE),
            "the next failure asks again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_consecutive_failures() {
        let o = Outlier::default();
        let now = Instant::now;
        for _ in 0..4 {
            o.record(Outcome::Failure, now(), 5, BASE, MAX, || true);
        }
        o.record(Outcome::Success, now(), 5, BASE, MAX, || true);
        for _ in 0..4 {
            assert_eq!(
                o.record(Outcome::Failure, now(), 5, BASE, MAX, || true),
                None
            );
        }
        assert!(!o.is_ejected(now()));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_during_an_ejection_do_not_count_towards_the_next() {
        let o = Outlier::default();
        let now = Instant::now;
        for _ in 0..3 {
            o.record(Outcome::Failure, now(), 3, BASE, MAX, || true);
        }
        assert!(o.is_ejected(now()));
        // Requests already in flight fail while it is out.
        for _ in 0..10 {
            assert_eq!(
                o.record(Outcome::Failure, now(), 3, BASE, MAX, || true),
                None
            );
        }
        tokio::time::advance(BASE).await;
        o.probe_ok(now(), MAX);
        assert!(!o.is_ejected(now()));
        // Back in: one or two failures are not enough, the third ejects again.
        assert_eq!(
            o.record(Outcome::Failure, now(), 3, BASE, MAX, || true),
            None
        );
        assert_eq!(
            o.record(Outcome::Failure, now(), 3, BASE, MAX, || true),
            None
        );
        assert!(!o.is_ejected(now()));
        assert_eq!(
            o.record(Outcome::Failure, now(), 3, BASE, MAX, || true),
            Some(BASE * 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probe_readmits_after_half_the_ejection() {
        let o = Outlier::default();
        let now = Instant::now;
        o.record(Outcome::Failure, now(), 1, BASE, MAX, || true);
        assert!(o.is_ejected(now()));
        tokio::time::advance(Duration::from_secs(2)).await;
        o.probe_ok(now(), MAX);
        assert!(o.is_ejected(now()), "too early to re-admit");
        tokio::time::advance(Duration::from_secs(4)).await;
        o.probe_ok(now(), MAX);
        assert!(!o.is_ejected(now()), "re-admitted by a good probe");
        assert_eq!(o.streak(), 1, "back-off remembered");
        tokio::time::advance(MAX + Duration::from_secs(1)).await;
        o.probe_ok(now(), MAX);
        assert_eq!(o.streak(), 0, "forgotten after a quiet period");
    }
}

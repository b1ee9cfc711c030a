//! The retry budget (as in linkerd and Envoy): retries across all requests may add at most
//! `retry.budget_percent` % to the requests sent, plus a floor of `retry.min_per_second`.
//!
//! Per-request attempt limits (`retry.attempts`) bound one request; they do not stop an
//! outage from doubling the load on the regions that are left when every request retries.
//! The budget does: every request deposits `budget_percent / 100` of a retry, every retry
//! withdraws one. Deposits fade with a ten-second time constant, so the balance follows the
//! recent request rate (about `budget_percent` % of the last ten seconds' requests) and a
//! quiet hour banks nothing; the floor refills continuously (at most ten seconds' worth), so
//! light traffic still retries. A few atomics per request; no lock.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use tokio::time::Instant;

use crate::clock::now_ms;

/// Milli-retries per retry.
const UNIT: i64 = 1000;
/// The deposits' time constant, in milliseconds.
const WINDOW_MS: f64 = 10_000.0;
/// How often (at most) the balance is faded and the floor added, in milliseconds.
const STEP_MS: u32 = 100;

/// A retry budget shared by every request of an instance (kept across reloads).
#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Balance in milli-retries.
    balance: AtomicI64,
    /// When the balance was last faded ([`now_ms`] stamp; 0: never).
    stepped_ms: AtomicU32,
}

impl RetryBudget {
    /// Counts a request at `now`: it earns the budget `percent` % of a retry.
    pub fn deposit(&self, now: Instant, percent: u32, min_per_second: u32) {
        self.step(now, min_per_second);
        let add = i64::from(percent) * UNIT / 100;
        if add > 0 {
            self.balance.fetch_add(add, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget at `now`; `false` when it is spent.
    pub fn withdraw(&self, now: Instant, min_per_second: u32) -> bool {
        self.step(now, min_per_second);
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= UNIT).then_some(b - UNIT)
            })
            .is_ok()
    }

    /// Fades the balance and adds the floor for the time since the last step, at most every
    /// [`STEP_MS`]. The first step starts the balance with one second of the floor.
    fn step(&self, now: Instant, min_per_second: u32) {
        let stamp = now_ms(now).max(1);
        let last = self.stepped_ms.load(Ordering::Relaxed);
        let elapsed = stamp.wrapping_sub(last);
        if last != 0 && !(STEP_MS..=u32::MAX / 2).contains(&elapsed) {
            return;
        }
        if self
            .stepped_ms
            .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another thread steps
        }
        let floor = i64::from(min_per_second);
        let (fade, refill) = if last == 0 {
            (1.0, floor * UNIT)
        } else {
            // The floor: `min_per_second` retries per 1000 ms, in milli-retries per ms.
            let refill_ms = i64::from(elapsed).min(WINDOW_MS as i64);
            ((-f64::from(elapsed) / WINDOW_MS).exp(), refill_ms * floor)
        };
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                // Faded deposits plus the floor; the floor's own steady state under the fade
                // is about ten seconds' worth.
                Some((b.max(0) as f64 * fade) as i64 + refill)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_requests_plus_a_floor() {
        let b = RetryBudget::default();
        let now = Instant::now;
        // A burst of 100 requests at 20 %: 20 retries, plus the first second of a 5/s floor.
        for _ in 0..100 {
            b.deposit(now(), 20, 5);
        }
        let allowed = (0..100).filter(|_| b.withdraw(now(), 5)).count();
        assert_eq!(allowed, 25);
        assert!(!b.withdraw(now(), 5), "spent");
        // The floor refills with time: 5 per second.
        tokio::time::advance(Duration::from_secs(1)).await;
        let allowed = (0..100).filter(|_| b.withdraw(now(), 5)).count();
        assert_eq!(allowed, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_balance_follows_the_recent_request_rate() {
        let b = RetryBudget::default();
        let now = Instant::now;
        // 1,000 requests a second for 30 s at 20 %: about 20 % of ten seconds' requests.
        for _ in 0..30_000 {
            b.deposit(now(), 20, 0);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let allowed = (0..10_000).filter(|_| b.withdraw(now(), 0)).count();
        assert!((1_800..=2_100).contains(&allowed), "{allowed}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_period_does_not_bank_a_storm() {
        let b = RetryBudget::default();
        let now = Instant::now;
        for _ in 0..100_000 {
            b.deposit(now(), 20, 10);
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        let allowed = (0..100_000).filter(|_| b.withdraw(now(), 10)).count();
        assert!(
            (95..=105).contains(&allowed),
            "an hour later: about ten seconds of the floor, {allowed}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_and_floor_allow_no_retry() {
        let b = RetryBudget::default();
        for _ in 0..1000 {
            b.deposit(Instant::now(), 0, 0);
        }
        assert!(!b.withdraw(Instant::now(), 0));
    }
}

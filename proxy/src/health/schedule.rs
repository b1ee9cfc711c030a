//! When each backend is probed: on its own stable slot of the interval (a hash of its
//! ID), so thousands of backends are probed evenly over the interval, not in bursts.

use std::time::Duration;

use tokio::time::Instant;

/// A stable pseudo-random number per backend: its probes' phase within the interval.
pub fn phase_of(id: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    // `DefaultHasher::new()` has fixed keys: the same backend keeps the same phase.
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// `phase` mapped onto `[0, window)`.
pub fn offset_in(phase: u64, window: Duration) -> Duration {
    let nanos = window.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(phase % nanos)
}

/// The first time `origin + offset + k * interval` (k ≥ 0) strictly after `now`: a backend's
/// probes stay on its own slot of the interval, however long each probe took, so the probes of
/// many backends stay spread over the interval instead of drifting into bursts.
pub fn next_slot(origin: Instant, now: Instant, offset: Duration, interval: Duration) -> Instant {
    let first = origin + offset;
    if now < first || interval.is_zero() {
        return first.max(now);
    }
    let periods = (now - first).as_nanos() / interval.as_nanos() + 1;
    let periods = u32::try_from(periods).unwrap_or(u32::MAX);
    first + interval.saturating_mul(periods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_slots_are_stable_and_spread_evenly_over_the_interval() {
        let interval = Duration::from_secs(2);
        assert_eq!(
            offset_in(phase_of("r1/10.0.0.1:80"), interval),
            offset_in(phase_of("r1/10.0.0.1:80"), interval)
        );
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let id = format!("r{:02}/127.0.0.1:{}", i / 200, 20_000 + i);
            let o = offset_in(phase_of(&id), interval);
            assert!(o < interval);
            buckets[(o.as_nanos() * 10 / interval.as_nanos()) as usize] += 1;
        }
        for b in buckets {
            assert!((850..1150).contains(&b), "uneven spread: {buckets:?}");
        }
        assert_eq!(offset_in(12345, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn next_slot_keeps_the_phase_whatever_the_probe_took() {
        let o = Instant::now();
        let (off, iv) = (Duration::from_millis(300), Duration::from_secs(2));
        let ms = |n| Duration::from_millis(n);
        // Before the first slot: the first slot.
        assert_eq!(next_slot(o, o, off, iv), o + ms(300));
        // Just after a probe at the slot, or after a slow probe: the next slot, same phase.
        assert_eq!(next_slot(o, o + ms(301), off, iv), o + ms(2300));
        assert_eq!(next_slot(o, o + ms(1299), off, iv), o + ms(2300));
        // Exactly on a slot: the one after (strictly later).
        assert_eq!(next_slot(o, o + ms(2300), off, iv), o + ms(4300));
        // Far later (the task was starved): the next slot, not a burst of missed ones.
        assert_eq!(next_slot(o, o + ms(9000), off, iv), o + ms(10300));
        // A zero interval cannot loop forever.
        assert_eq!(
            next_slot(o, o + ms(9000), off, Duration::ZERO),
            o + ms(9000)
        );
    }
}

//! Smooth weighted round robin (as nginx does it), unrolled once over a full cycle when the
//! snapshot is built, so a pick is a cursor step through a table.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::contract::{Member, PickInput, Selection};

/// Upper bound of the unrolled weighted sequence.
const MAX_SEQUENCE: u64 = 8192;

/// The unrolled sequence of member indices.
#[derive(Debug, Clone, Default)]
pub struct Weighted {
    seq: Vec<u16>,
}

impl Weighted {
    /// Unrolls one cycle of smooth WRR over `members`' weights (scaled down
    /// proportionally if the cycle would exceed [`MAX_SEQUENCE`]).
    pub fn build(members: &[Member]) -> Weighted {
        let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
        let scale = total.div_ceil(MAX_SEQUENCE).max(1);
        let weights: Vec<i64> = members
            .iter()
            .map(|m| (u64::from(m.weight) / scale).max(1) as i64)
            .collect();
        let cycle: i64 = weights.iter().sum();
        let mut current = vec![0i64; members.len()];
        let mut seq = Vec::with_capacity(cycle as usize);
        for _ in 0..cycle {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += w;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= cycle;
            seq.push(best as u16);
        }
        Weighted { seq }
    }

    /// The unrolled sequence.
    pub fn sequence(&self) -> &[u16] {
        &self.seq
    }
}

impl Selection for Weighted {
    fn select(&self, members: &[Member], at: &AtomicUsize, input: &PickInput) -> Option<usize> {
        let len = self.seq.len();
        if len == 0 {
            return None;
        }
        let start = at.fetch_add(1, Ordering::Relaxed);
        let eligible = (0..len)
            .map(|k| usize::from(self.seq[(start + k) % len]))
            .filter(|&i| input.eligible(members, i));
        input.first_accepted(members, eligible)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Balancer;
    use meridian_config::Balance;

    #[test]
    fn weighted_follows_weights_smoothly() {
        let ms = members(&[5, 1, 1]);
        let b = Balancer::build(&Balance::Weighted, &ms);
        let Balancer::Weighted(w) = &b else { panic!() };
        assert_eq!(
            w.sequence(),
            &[0, 0, 1, 0, 2, 0, 0],
            "nginx's smooth WRR order"
        );
        let c = counts(&b, &ms, 700);
        assert_eq!((c[&0], c[&1], c[&2]), (500, 100, 100));
    }
}

#[cfg(test)]
mod slow_start_tests {
    use super::super::test_support::*;
    use super::super::{pick, Balancer};
    use meridian_config::Balance;
    use std::sync::atomic::AtomicUsize;
    use tokio::time::Instant;

    #[test]
    fn a_member_in_slow_start_gets_a_small_share_and_a_fresh_start_none() {
        let ms = members(&[1, 1]);
        ms[1].state.health.set(crate::health::Health::Down);
        ms[1].state.observe_usable(false, Instant::now());
        ms[1].state.health.set(crate::health::Health::Up);
        ms[1].state.observe_usable(true, Instant::now());
        let b = Balancer::build(&Balance::Weighted, &ms);
        let cursor = AtomicUsize::new(0);
        let mut input = input(&[], None);
        input.slow_start_ms = 8000;
        let n = (0..1000)
            .filter(|_| pick(&b, &ms, &cursor, &input) == Some(1))
            .count();
        assert!(n < 60, "{n}");
        // Never probed, then up (a process that starts): full weight at once.
        let fresh = members(&[1, 1]);
        fresh[1].state.health.set(crate::health::Health::Unknown);
        fresh[1].state.observe_usable(false, Instant::now());
        fresh[1].state.health.set(crate::health::Health::Up);
        fresh[1].state.observe_usable(true, Instant::now());
        let b = Balancer::build(&Balance::Weighted, &fresh);
        let n = (0..1000)
            .filter(|_| pick(&b, &fresh, &cursor, &input) == Some(1))
            .count();
        assert_eq!(n, 500);
    }
}

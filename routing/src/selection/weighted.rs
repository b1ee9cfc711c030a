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
        (0..len)
            .map(|k| usize::from(self.seq[(start + k) % len]))
            .find(|&i| input.eligible(members, i))
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

//! Consistent hashing (a ring of weighted points per member, Karger-style): a request key
//! maps to the first eligible member clockwise, so keys move only when their member does.
//! Without a key the region falls back to P2C.

use std::sync::atomic::AtomicUsize;

use super::contract::{Member, PickInput, Selection};
use super::p2c::P2c;

/// Points per unit of weight on the hash ring.
const RING_POINTS_PER_WEIGHT: u32 = 40;
/// Upper bound of a region's hash ring (16 bytes a point): with many heavy members the
/// points per unit of weight shrink proportionally, keeping every member at least one.
const MAX_RING_POINTS: u64 = 1 << 18;
/// A pick walks at most this many ring points per member (at least [`MIN_WALK`]) before it
/// falls back to the members in order: with most members ineligible, walking the whole
/// ring would cost up to [`MAX_RING_POINTS`] steps per pick.
const WALK_PER_MEMBER: usize = 4;
/// The shortest walk bound.
const MIN_WALK: usize = 1024;

/// A ring of (point, member index), sorted by point.
#[derive(Debug, Clone, Default)]
pub struct HashRing {
    ring: Vec<(u64, u16)>,
}

/// FNV-1a, 64 bit: stable across processes and versions, so hash affinity survives restarts.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_of(bytes)
}

/// [`fnv1a`] of bytes that need not be contiguous (several fields one after the other).
pub fn fnv1a_of<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalize (splitmix64) so that nearby keys spread over the ring.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl HashRing {
    /// Places `members` on the ring by weight.
    pub fn build(members: &[Member]) -> HashRing {
        let wanted: u64 = members
            .iter()
            .map(|m| u64::from(m.weight) * u64::from(RING_POINTS_PER_WEIGHT))
            .sum();
        let points = |weight: u32| -> u32 {
            let full = u64::from(weight) * u64::from(RING_POINTS_PER_WEIGHT);
            let scaled = if wanted > MAX_RING_POINTS {
                full * MAX_RING_POINTS / wanted
            } else {
                full
            };
            u32::try_from(scaled.max(1)).unwrap_or(u32::MAX)
        };
        let mut ring =
            Vec::with_capacity(wanted.min(MAX_RING_POINTS + members.len() as u64) as usize);
        for (i, m) in members.iter().enumerate() {
            for p in 0..points(m.weight) {
                let key = format!("{}#{p}", m.state.addr);
                ring.push((fnv1a(key.as_bytes()), i as u16));
            }
        }
        ring.sort_unstable();
        HashRing { ring }
    }

    /// Points on the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the ring has no point.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

impl Selection for HashRing {
    fn select(&self, members: &[Member], at: &AtomicUsize, input: &PickInput) -> Option<usize> {
        let ring = &self.ring;
        match input.hash {
            Some(h) if !ring.is_empty() => {
                let start = ring.partition_point(|(p, _)| *p < h);
                let walk = ring
                    .len()
                    .min((members.len() * WALK_PER_MEMBER).max(MIN_WALK));
                let on_ring = (0..walk)
                    .map(|k| usize::from(ring[(start + k) % ring.len()].1))
                    .find(|&i| input.eligible(members, i));
                on_ring.or_else(|| {
                    // Few members left: the next eligible one after the key's own, in order.
                    let first = usize::from(ring[start % ring.len()].1);
                    (1..=members.len())
                        .map(|k| (first + k) % members.len())
                        .find(|&i| input.eligible(members, i))
                })
            }
            _ => P2c.select(members, at, input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{pick, Balancer};
    use super::*;
    use crate::health::Health;
    use meridian_config::{Balance, HashKey};
    use std::collections::HashMap;

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_when_needed() {
        let ms = members(&[1, 1, 1, 1]);
        let b = Balancer::build(&Balance::ConsistentHash(HashKey::ClientIp), &ms);
        let cursor = AtomicUsize::new(0);
        let mut spread = HashMap::new();
        for k in 0..400u32 {
            let h = fnv1a(format!("user-{k}").as_bytes());
            let first = pick(&b, &ms, &cursor, &input(&[], Some(h))).unwrap();
            assert_eq!(pick(&b, &ms, &cursor, &input(&[], Some(h))), Some(first));
            *spread.entry(first).or_insert(0) += 1;
            // Take another member down: keys on the others do not move.
            if first != 2 {
                ms[2].state.health.set(Health::Down);
                assert_eq!(pick(&b, &ms, &cursor, &input(&[], Some(h))), Some(first));
                ms[2].state.health.set(Health::Up);
            }
        }
        assert_eq!(spread.len(), 4);
        assert!(spread.values().all(|&v| v > 50), "{spread:?}");
    }

    #[test]
    fn a_pick_with_almost_every_member_out_is_bounded_and_still_finds_the_last_one() {
        let ms = members(&vec![1000u32; 300]);
        for m in &ms[..299] {
            m.state.health.set(Health::Down);
        }
        let b = Balancer::build(&Balance::ConsistentHash(HashKey::ClientIp), &ms);
        let cursor = AtomicUsize::new(0);
        for k in 0..100u32 {
            let h = fnv1a(format!("user-{k}").as_bytes());
            assert_eq!(pick(&b, &ms, &cursor, &input(&[], Some(h))), Some(299));
        }
        ms[299].state.health.set(Health::Down);
        assert_eq!(pick(&b, &ms, &cursor, &input(&[], Some(7))), None);
    }

    #[test]
    fn a_huge_ring_is_scaled_down_keeping_every_member_and_the_proportions() {
        let mut weights = vec![1000u32; 3000];
        weights[0] = 1;
        let members = members(&weights);
        let ring = HashRing::build(&members).ring;
        assert!(
            ring.len() as u64 <= MAX_RING_POINTS + 3000,
            "{}",
            ring.len()
        );
        let count = |m: u16| ring.iter().filter(|(_, i)| *i == m).count();
        assert_eq!(count(0), 1, "a light member keeps one point");
        assert!((80..=90).contains(&count(1)), "{}", count(1));
    }
}

//! Picking a backend within one region's pool: P2C over peak-EWMA (the default), round robin,
//! smooth weighted round robin, least connections and consistent hashing.
//!
//! Every table an algorithm needs (weighted sequence, hash ring) is computed when the routing
//! snapshot is built; a pick only reads atomics and the snapshot, and never allocates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_config::Balance;
use tokio::time::Instant;

use crate::backend::BackendState;

/// A backend in a region's pool: shared live state plus the config-derived weight.
#[derive(Debug, Clone)]
pub struct Member {
    /// Live state (carried across reloads).
    pub state: Arc<BackendState>,
    /// Weight from the config.
    pub weight: u32,
    /// Preference tier: 0 for primaries; 1 for `backup = true`; an SRV name's priority
    /// groups add their rank. A tier is used only while no lower one has a usable member.
    pub tier: u8,
}

/// The precomputed form of a region's balancing algorithm.
#[derive(Debug)]
pub enum Balancer {
    /// Power of two choices over latency estimate × (in-flight + 1) / weight.
    P2c,
    /// Plain round robin.
    RoundRobin,
    /// Smooth weighted round robin, unrolled into a sequence of member indices.
    Weighted(Vec<u16>),
    /// Fewest in-flight requests relative to weight.
    LeastConnections,
    /// A consistent-hash ring of (point, member index), sorted by point.
    Hash(Vec<(u64, u16)>),
}

/// Points per unit of weight on the hash ring.
const RING_POINTS_PER_WEIGHT: u32 = 40;
/// Upper bound of a region's hash ring (16 bytes a point): with many heavy members the
/// points per unit of weight shrink proportionally, keeping every member at least one.
const MAX_RING_POINTS: u64 = 1 << 18;
/// Upper bound of the unrolled weighted sequence.
const MAX_SEQUENCE: u64 = 8192;

impl Balancer {
    /// Precomputes the algorithm's tables for `members`.
    pub fn build(balance: &Balance, members: &[Member]) -> Balancer {
        match balance {
            Balance::P2cPeakEwma => Balancer::P2c,
            Balance::RoundRobin => Balancer::RoundRobin,
            Balance::LeastConnections => Balancer::LeastConnections,
            Balance::Weighted => Balancer::Weighted(weighted_sequence(members)),
            Balance::ConsistentHash(_) => Balancer::Hash(hash_ring(members)),
        }
    }
}

/// Smooth weighted round robin (as nginx does it), unrolled once over a full cycle.
fn weighted_sequence(members: &[Member]) -> Vec<u16> {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    // Keep the table small: scale weights down proportionally if the cycle is too long.
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
    seq
}

/// FNV-1a, 64 bit: stable across processes and versions, so hash affinity survives restarts.
pub fn fnv1a(bytes: &[u8]) -> u64 {
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

fn hash_ring(members: &[Member]) -> Vec<(u64, u16)> {
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
    let mut ring = Vec::with_capacity(wanted.min(MAX_RING_POINTS + members.len() as u64) as usize);
    for (i, m) in members.iter().enumerate() {
        for p in 0..points(m.weight) {
            let key = format!("{}#{p}", m.state.addr);
            ring.push((fnv1a(key.as_bytes()), i as u16));
        }
    }
    ring.sort_unstable();
    ring
}

/// What a pick needs to know about the request.
pub struct PickInput<'a> {
    /// The time of the pick.
    pub now: Instant,
    /// EWMA decay window.
    pub tau: Duration,
    /// The request's hash key (consistent hashing only).
    pub hash: Option<u64>,
    /// Member indices of this pool already tried by this request.
    pub tried: &'a [u16],
    /// Panic mode: consider every member, usable or not.
    pub panic: bool,
    /// The region has no usable backend yet: backends not probed yet may be tried
    /// (a fresh process, e.g. during a graceful upgrade, serves before its first probe
    /// round; a dead one costs a retry, not an error).
    pub allow_unknown: bool,
    /// The highest tier that may be picked: the region's lowest tier with a usable member
    /// ([`crate::snapshot::RegionState::active_tier`]); `u8::MAX` for every tier. When none
    /// of those is eligible, [`pick`] moves on by itself to the lowest tier that has an
    /// eligible member (a primary that fell since the last measurement, or one this
    /// request already tried).
    pub max_tier: u8,
}

impl PickInput<'_> {
    fn eligible(&self, members: &[Member], i: usize) -> bool {
        let s = &members[i].state;
        members[i].tier <= self.max_tier
            && !self.tried.contains(&(i as u16))
            && (self.panic
                || s.usable(self.now)
                || (self.allow_unknown
                    && s.health.get() == crate::health::Health::Unknown
                    && !s.outlier.is_ejected(self.now)))
    }
}

/// Envoy's panic mode: with fewer than `threshold` % of a region's backends usable (but
/// some), spread over all of them rather than overload the few. A region with none usable
/// is skipped instead.
pub fn panic_mode(threshold: Option<u8>, usable: usize, total: usize) -> bool {
    threshold.is_some_and(|t| usable > 0 && usable * 100 < usize::from(t) * total)
}

/// Picks a member index, or `None` when no member is eligible: first within the tiers up to
/// `input.max_tier`; if none of those is eligible, within the lowest tier that has an
/// eligible member.
pub fn pick(
    balancer: &Balancer,
    members: &[Member],
    cursor: &AtomicUsize,
    input: &PickInput<'_>,
) -> Option<usize> {
    let picked = pick_within(balancer, members, cursor, input);
    if picked.is_some() || input.max_tier == u8::MAX {
        return picked;
    }
    let mut any_tier = PickInput {
        max_tier: u8::MAX,
        ..*input
    };
    any_tier.max_tier = (0..members.len())
        .filter(|&i| members[i].tier > input.max_tier && any_tier.eligible(members, i))
        .map(|i| members[i].tier)
        .min()?;
    pick_within(balancer, members, cursor, &any_tier)
}

fn pick_within(
    balancer: &Balancer,
    members: &[Member],
    cursor: &AtomicUsize,
    input: &PickInput<'_>,
) -> Option<usize> {
    let n = members.len();
    if n == 0 {
        return None;
    }
    match balancer {
        Balancer::P2c => p2c(members, input),
        Balancer::RoundRobin => {
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| input.eligible(members, i))
        }
        Balancer::Weighted(seq) => {
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            let len = seq.len();
            (0..len)
                .map(|k| usize::from(seq[(start + k) % len]))
                .find(|&i| input.eligible(members, i))
        }
        Balancer::LeastConnections => {
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| input.eligible(members, i))
                .min_by(|&a, &b| {
                    let load = |i: usize| {
                        (f64::from(members[i].state.latency.inflight()) + 1.0)
                            / f64::from(members[i].weight)
                    };
                    load(a).total_cmp(&load(b))
                })
        }
        Balancer::Hash(ring) => match input.hash {
            Some(h) if !ring.is_empty() => {
                let start = ring.partition_point(|(p, _)| *p < h);
                (0..ring.len())
                    .map(|k| usize::from(ring[(start + k) % ring.len()].1))
                    .find(|&i| input.eligible(members, i))
            }
            _ => p2c(members, input),
        },
    }
}

fn cost(m: &Member, input: &PickInput<'_>) -> f64 {
    let latency = f64::from(m.state.latency.estimate_us(input.now, input.tau));
    latency * (f64::from(m.state.latency.inflight()) + 1.0) / f64::from(m.weight)
}

/// A random eligible member: a few random draws, then a scan from a random start.
fn random_eligible(members: &[Member], input: &PickInput<'_>, not: Option<usize>) -> Option<usize> {
    let n = members.len();
    for _ in 0..3 {
        let i = fastrand::usize(..n);
        if Some(i) != not && input.eligible(members, i) {
            return Some(i);
        }
    }
    let start = fastrand::usize(..n);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| Some(i) != not && input.eligible(members, i))
}

fn p2c(members: &[Member], input: &PickInput<'_>) -> Option<usize> {
    let a = random_eligible(members, input, None)?;
    let Some(b) = random_eligible(members, input, Some(a)) else {
        return Some(a);
    };
    if cost(&members[b], input) < cost(&members[a], input) {
        Some(b)
    } else {
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use crate::metrics::Metrics;
    use std::collections::HashMap;

    fn members(weights: &[u32]) -> Vec<Member> {
        let m = Metrics::new();
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let s =
                    BackendState::new("r", format!("127.0.0.1:{}", 1000 + i).parse().unwrap(), &m);
                s.health.set(Health::Up);
                Member {
                    state: Arc::new(s),
                    weight: *w,
                    tier: 0,
                }
            })
            .collect()
    }

    fn input<'a>(tried: &'a [u16], hash: Option<u64>) -> PickInput<'a> {
        PickInput {
            now: Instant::now(),
            tau: Duration::from_secs(10),
            hash,
            tried,
            panic: false,
            allow_unknown: false,
            max_tier: u8::MAX,
        }
    }

    fn counts(b: &Balancer, ms: &[Member], rounds: usize) -> HashMap<usize, usize> {
        let cursor = AtomicUsize::new(0);
        let mut c = HashMap::new();
        for _ in 0..rounds {
            *c.entry(pick(b, ms, &cursor, &input(&[], None)).unwrap())
                .or_default() += 1;
        }
        c
    }

    #[test]
    fn weighted_follows_weights_smoothly() {
        let ms = members(&[5, 1, 1]);
        let b = Balancer::build(&Balance::Weighted, &ms);
        let Balancer::Weighted(seq) = &b else {
            panic!()
        };
        assert_eq!(seq, &vec![0, 0, 1, 0, 2, 0, 0], "nginx's smooth WRR order");
        let c = counts(&b, &ms, 700);
        assert_eq!((c[&0], c[&1], c[&2]), (500, 100, 100));
    }

    #[test]
    fn round_robin_skips_unusable_and_tried() {
        let ms = members(&[1, 1, 1]);
        ms[1].state.health.set(Health::Down);
        let b = Balancer::build(&Balance::RoundRobin, &ms);
        let c = counts(&b, &ms, 100);
        assert!(!c.contains_key(&1));
        let cursor = AtomicUsize::new(0);
        assert_eq!(pick(&b, &ms, &cursor, &input(&[0, 2], None)), None);
        let mut panic = input(&[0, 2], None);
        panic.panic = true;
        assert_eq!(
            pick(&b, &ms, &cursor, &panic),
            Some(1),
            "panic mode uses down backends"
        );
    }

    #[test]
    fn panic_mode_below_the_threshold_only() {
        assert!(!panic_mode(None, 1, 10));
        assert!(panic_mode(Some(50), 4, 10));
        assert!(!panic_mode(Some(50), 5, 10));
        assert!(
            !panic_mode(Some(50), 0, 10),
            "a dead region is skipped, not panicked"
        );
    }

    #[test]
    fn unknown_backends_only_when_the_region_has_nothing_better() {
        let ms = members(&[1, 1]);
        ms[0].state.health.set(Health::Unknown);
        ms[1].state.health.set(Health::Down);
        let b = Balancer::build(&Balance::RoundRobin, &ms);
        let cursor = AtomicUsize::new(0);
        assert_eq!(pick(&b, &ms, &cursor, &input(&[], None)), None);
        let mut fresh = input(&[], None);
        fresh.allow_unknown = true;
        assert_eq!(
            pick(&b, &ms, &cursor, &fresh),
            Some(0),
            "never the down one"
        );
    }

    #[test]
    fn backup_tiers_serve_only_while_the_lower_tiers_have_nobody() {
        for balance in [
            Balance::P2cPeakEwma,
            Balance::RoundRobin,
            Balance::Weighted,
            Balance::LeastConnections,
            Balance::ConsistentHash(meridian_config::HashKey::ClientIp),
        ] {
            let mut ms = members(&[1, 1, 1, 1]);
            ms[2].tier = 1;
            ms[3].tier = 2;
            let b = Balancer::build(&balance, &ms);
            let cursor = AtomicUsize::new(0);
            let at = |max_tier: u8, tried: &[u16], key: u64| {
                let mut i = input(tried, Some(fnv1a(&key.to_be_bytes())));
                i.max_tier = max_tier;
                pick(&b, &ms, &cursor, &i)
            };
            for k in 0..50 {
                assert!(matches!(at(0, &[], k), Some(0 | 1)), "{balance:?}");
            }
            // Both primaries tried by this request: the first backup tier, same region.
            assert_eq!(at(0, &[0, 1], 7), Some(2), "{balance:?}");
            assert_eq!(at(0, &[0, 1, 2], 7), Some(3), "{balance:?}");
            // Primaries down since the last measurement: the next tier at once.
            ms[0].state.health.set(Health::Down);
            ms[1].state.health.set(Health::Down);
            for k in 0..50 {
                assert_eq!(at(0, &[], k), Some(2), "{balance:?}");
                assert_eq!(at(1, &[], k), Some(2), "{balance:?}");
            }
            // A primary is back: with the measurement still at tier 1, both tiers up to it
            // serve; once it catches up, only the primary.
            ms[0].state.health.set(Health::Up);
            for k in 0..50 {
                assert!(matches!(at(1, &[], k), Some(0 | 2)), "{balance:?}");
                assert_eq!(at(0, &[], k), Some(0), "{balance:?}");
            }
        }
    }

    #[test]
    fn least_connections_prefers_idle() {
        let ms = members(&[1, 1]);
        let _busy = ms[0].state.latency.start();
        let b = Balancer::build(&Balance::LeastConnections, &ms);
        let c = counts(&b, &ms, 10);
        assert_eq!(c.get(&1), Some(&10));
    }

    #[test]
    fn p2c_prefers_fast_backend() {
        let ms = members(&[1, 1]);
        let now = Instant::now();
        let tau = Duration::from_secs(10);
        ms[0]
            .state
            .latency
            .probe
            .observe(Duration::from_millis(1), now, tau);
        ms[1]
            .state
            .latency
            .probe
            .observe(Duration::from_millis(20), now, tau);
        let c = counts(&Balancer::P2c, &ms, 200);
        // With two members P2C compares both every time unless a random draw collides.
        assert!(c[&0] >= 195, "{c:?}");
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_when_needed() {
        let ms = members(&[1, 1, 1, 1]);
        let b = Balancer::build(
            &Balance::ConsistentHash(meridian_config::HashKey::ClientIp),
            &ms,
        );
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
    fn a_huge_ring_is_scaled_down_keeping_every_member_and_the_proportions() {
        let mut weights = vec![1000u32; 3000];
        weights[0] = 1;
        let members = members(&weights);
        let ring = hash_ring(&members);
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

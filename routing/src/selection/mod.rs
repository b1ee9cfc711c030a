//! Picking a backend within one region's pool: one [`Selection`] per balancing algorithm
//! (one file each), the tiers (primaries before backups) and the panic mode around them.

mod contract;
mod hash_ring;
mod least_connections;
mod p2c;
mod round_robin;
mod weighted;

use std::sync::atomic::AtomicUsize;

use meridian_config::Balance;

pub use contract::{Member, PickInput, Selection};
pub use hash_ring::{fnv1a, fnv1a_of, HashRing};
pub use least_connections::LeastConnections;
pub use p2c::P2c;
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

/// The precomputed form of a region's balancing algorithm.
#[derive(Debug)]
pub enum Balancer {
    /// Power of two choices over latency estimate × (in-flight + 1) / weight.
    P2c(P2c),
    /// Plain round robin.
    RoundRobin(RoundRobin),
    /// Smooth weighted round robin.
    Weighted(Weighted),
    /// Fewest in-flight requests relative to weight.
    LeastConnections(LeastConnections),
    /// A consistent-hash ring.
    Hash(HashRing),
}

impl Balancer {
    /// Precomputes the algorithm's tables for `members`.
    pub fn build(balance: &Balance, members: &[Member]) -> Balancer {
        match balance {
            Balance::P2cPeakEwma => Balancer::P2c(P2c),
            Balance::RoundRobin => Balancer::RoundRobin(RoundRobin),
            Balance::LeastConnections => Balancer::LeastConnections(LeastConnections),
            Balance::Weighted => Balancer::Weighted(Weighted::build(members)),
            Balance::ConsistentHash(_) => Balancer::Hash(HashRing::build(members)),
        }
    }
}

impl Selection for Balancer {
    fn select(&self, members: &[Member], at: &AtomicUsize, input: &PickInput) -> Option<usize> {
        match self {
            Balancer::P2c(s) => s.select(members, at, input),
            Balancer::RoundRobin(s) => s.select(members, at, input),
            Balancer::Weighted(s) => s.select(members, at, input),
            Balancer::LeastConnections(s) => s.select(members, at, input),
            Balancer::Hash(s) => s.select(members, at, input),
        }
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
    if members.is_empty() {
        return None;
    }
    let picked = balancer.select(members, cursor, input);
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
    balancer.select(members, cursor, &any_tier)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Members and inputs for the algorithms' unit tests.
    use super::*;
    use crate::backend::BackendState;
    use crate::health::Health;
    use crate::metrics::RoutingMetrics;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    /// Usable members with these weights, on ports 1000, 1001, …
    pub fn members(weights: &[u32]) -> Vec<Member> {
        let m = RoutingMetrics::detached();
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

    /// An input with nothing tried, every tier allowed.
    pub fn input(tried: &[u16], hash: Option<u64>) -> PickInput<'_> {
        PickInput {
            now: Instant::now(),
            tau: Duration::from_secs(10),
            hash,
            tried,
            panic: false,
            allow_unknown: false,
            max_tier: u8::MAX,
            slow_start_ms: 0,
        }
    }

    /// How often each member is picked in `rounds` picks.
    pub fn counts(b: &Balancer, ms: &[Member], rounds: usize) -> HashMap<usize, usize> {
        let cursor = AtomicUsize::new(0);
        let mut c = HashMap::new();
        for _ in 0..rounds {
            *c.entry(pick(b, ms, &cursor, &input(&[], None)).unwrap())
                .or_default() += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::health::Health;

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
}

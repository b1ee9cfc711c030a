//! Least connections: the eligible member with the fewest in-flight requests relative to
//! its weight; ties go to the first from the rotating cursor.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::contract::{from_cursor, Member, PickInput, Selection};

/// Fewest in-flight requests per unit of weight.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastConnections;

impl Selection for LeastConnections {
    fn select(&self, members: &[Member], at: &AtomicUsize, input: &PickInput) -> Option<usize> {
        let start = at.fetch_add(1, Ordering::Relaxed);
        let load = |i: usize| {
            (f64::from(members[i].state.latency.inflight()) + 1.0) / input.weight(&members[i])
        };
        from_cursor(members, start, input).min_by(|&a, &b| load(a).total_cmp(&load(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Balancer;
    use meridian_config::Balance;

    #[test]
    fn least_connections_prefers_idle() {
        let ms = members(&[1, 1]);
        let _busy = ms[0].state.latency.start();
        let b = Balancer::build(&Balance::LeastConnections, &ms);
        let c = counts(&b, &ms, 10);
        assert_eq!(c.get(&1), Some(&10));
    }
}

//! Plain round robin, ignoring weights: the region's cursor moves one member per pick (a
//! backend in slow start is passed over with the odds of its missing share).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::contract::{from_cursor, Member, PickInput, Selection};

/// Round robin over the eligible members.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin;

impl Selection for RoundRobin {
    fn select(&self, members: &[Member], at: &AtomicUsize, input: &PickInput) -> Option<usize> {
        let start = at.fetch_add(1, Ordering::Relaxed);
        input.first_accepted(members, from_cursor(members, start, input))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{pick, Balancer};
    use crate::health::Health;
    use meridian_config::Balance;
    use std::sync::atomic::AtomicUsize;

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
}

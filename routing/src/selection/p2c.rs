//! Power of two choices over peak-EWMA latency × (in-flight + 1) / weight (the default, as
//! in linkerd2-proxy and Finagle): two random eligible members, the cheaper one wins.

use std::sync::atomic::AtomicUsize;

use super::contract::{Member, PickInput, Selection};

/// P2C over the members' latency estimate and load.
#[derive(Debug, Clone, Copy, Default)]
pub struct P2c;

impl Selection for P2c {
    fn select(&self, members: &[Member], _: &AtomicUsize, input: &PickInput) -> Option<usize> {
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
}

fn cost(m: &Member, input: &PickInput<'_>) -> f64 {
    let latency = f64::from(m.state.latency.estimate_us(input.now, input.tau));
    latency * (f64::from(m.state.latency.inflight()) + 1.0) / input.weight(m)
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Balancer;
    use std::time::Duration;
    use tokio::time::Instant;

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
        let c = counts(&Balancer::P2c(super::P2c), &ms, 200);
        // With two members P2C compares both every time unless a random draw collides.
        assert!(c[&0] >= 195, "{c:?}");
    }
}

//! What every balancing algorithm sees: the region's [`Member`]s, the request's
//! [`PickInput`], and the [`Selection`] contract each algorithm implements.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicUsize;
use tokio::time::Instant;

use crate::backend::BackendState;
use crate::health::Health;

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

/// A balancing algorithm over one region's members.
///
/// Contract: [`Selection::select`] returns the index of a member for which
/// [`PickInput::eligible`] holds, or `None` when it finds none; it reads only the members'
/// atomics, the region's rotating cursor `at` and the tables the algorithm precomputed when
/// the snapshot was built, and it never allocates or blocks (it runs once per upstream
/// attempt).
pub trait Selection {
    /// Chooses an eligible member.
    fn select(&self, members: &[Member], at: &AtomicUsize, input: &PickInput) -> Option<usize>;
}

/// What a pick needs to know about the request.
#[derive(Debug, Clone, Copy)]
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
    /// The pool's slow-start window in milliseconds (0: none): a backend that became
    /// usable within it gets a share of its weight, rising linearly.
    pub slow_start_ms: u32,
}

impl PickInput<'_> {
    /// Whether member `i` may take this attempt: within the tiers allowed, not tried yet by
    /// this request, not drained or in maintenance, and usable (or any member in panic
    /// mode; or not probed yet when the region has nothing better).
    pub fn eligible(&self, members: &[Member], i: usize) -> bool {
        let s = &members[i].state;
        members[i].tier <= self.max_tier
            && !self.tried.contains(&(i as u16))
            && s.admin_open()
            && (self.panic
                || s.usable(self.now)
                || (self.allow_unknown
                    && s.health.get() == Health::Unknown
                    && !s.outlier.is_ejected(self.now)))
    }
}

impl PickInput<'_> {
    /// A member's weight now: its weight times its slow-start share.
    pub fn weight(&self, m: &Member) -> f64 {
        f64::from(m.weight) * m.state.slow_start_share(self.now, self.slow_start_ms)
    }

    /// Whether a member a cursor-driven balancer came to takes the pick: always, unless it
    /// is in slow start, where it does with the probability of its share (so its share of
    /// the picks ramps up with its weight).
    pub fn accepts(&self, m: &Member) -> bool {
        if self.slow_start_ms == 0 {
            return true;
        }
        let share = m.state.slow_start_share(self.now, self.slow_start_ms);
        share >= 1.0 || fastrand::f64() < share
    }

    /// The first of `candidates` that [`PickInput::accepts`] takes, else the first one.
    pub(crate) fn first_accepted(
        &self,
        members: &[Member],
        candidates: impl Iterator<Item = usize>,
    ) -> Option<usize> {
        let mut first = None;
        for i in candidates {
            if self.accepts(&members[i]) {
                return Some(i);
            }
            first.get_or_insert(i);
        }
        first
    }
}

/// Eligible members from `start`, wrapping around (the cursor-driven algorithms' scan).
pub(crate) fn from_cursor<'a>(
    members: &'a [Member],
    start: usize,
    input: &'a PickInput<'_>,
) -> impl Iterator<Item = usize> + 'a {
    let n = members.len();
    (0..n)
        .map(move |k| (start + k) % n)
        .filter(move |&i| input.eligible(members, i))
}

//! Step 2 of a plan: regions whose measured latency is degraded lose their steering place;
//! regions with no usable backend go last.

use meridian_geoip::{great_circle_km, Coordinates};
use smallvec::SmallVec;

use super::view::{distance_rtt_us, micros, RegionList, View, INLINE_REGIONS};

/// Step 2: demote regions whose measured latency is degraded.
///
/// Each candidate's estimated cost is the distance-based client→region RTT plus the latency
/// measured from this instance to the region's usable backends. A region keeps its steering
/// place unless it is *degraded*: both its cost and its measured latency exceed the best
/// candidate's by more than `latency.tolerance`. Distance alone never demotes a region (the
/// steering step already ordered by distance or by the operator's map), and noise within the
/// tolerance never reorders (no flapping). Degraded regions follow, cheapest first; regions
/// with no usable backend go last.
pub fn rank(snap: View<'_>, client: Option<Coordinates>, list: &mut RegionList) {
    let from = client.unwrap_or(snap.node_coords);
    rank_with(
        snap,
        list,
        |i| {
            let at = snap.coords.get(i).copied().unwrap_or(from);
            micros(distance_rtt_us(snap, great_circle_km(from, at)))
        },
        |i| snap.pool(i).map_or(0, |r| r.state.measured_us()),
    );
}

/// [`rank`] with the distance-based RTT (µs) of region `i` given by `rtt_us(i)` and its
/// measured latency (µs) by `measured_us(i)`.
///
/// Integer arithmetic, and no list is built in the common case: a first pass finds the
/// best cost and measurement among usable candidates, a second one checks whether any
/// candidate is degraded or unusable; only then are they partitioned.
pub(crate) fn rank_with(
    snap: View<'_>,
    list: &mut RegionList,
    rtt_us: impl Fn(usize) -> u32,
    measured_us: impl Fn(usize) -> u32,
) {
    /// One candidate's score.
    #[derive(Clone, Copy)]
    struct Scored {
        cost: u64,
        measured: u64,
        usable: bool,
        region: u16,
    }
    if list.len() < 2 {
        return;
    }
    let score = |i: u16| {
        let r = snap.pool(usize::from(i));
        let measured = u64::from(measured_us(usize::from(i)));
        Scored {
            cost: u64::from(rtt_us(usize::from(i))) + measured,
            measured,
            usable: r.is_some_and(|r| r.state.usable() > 0),
            region: i,
        }
    };
    let tolerance = snap
        .config
        .latency
        .tolerance
        .as_micros()
        .min(u128::from(u32::MAX)) as u64;
    let (mut best_cost, mut best_measured) = (u64::MAX, u64::MAX);
    for &i in list.iter() {
        let s = score(i);
        if s.usable {
            best_cost = best_cost.min(s.cost);
            best_measured = best_measured.min(s.measured);
        }
    }
    let (cost_limit, measured_limit) = (
        best_cost.saturating_add(tolerance),
        best_measured.saturating_add(tolerance),
    );
    let degraded = |s: &Scored| s.cost > cost_limit && s.measured > measured_limit;
    // Usually every candidate is usable and none degraded: the steering order stands.
    if list.iter().all(|&i| {
        let s = score(i);
        s.usable && !degraded(&s)
    }) {
        return;
    }
    let scored: SmallVec<[Scored; INLINE_REGIONS]> = list.iter().map(|&i| score(i)).collect();
    // A stable three-way partition: kept (steering order), degraded (by cost), unusable.
    let mut out = 0;
    for s in scored.iter().filter(|s| s.usable && !degraded(s)) {
        list[out] = s.region;
        out += 1;
    }
    let mut demoted: SmallVec<[Scored; INLINE_REGIONS]> = scored
        .iter()
        .filter(|s| s.usable && degraded(s))
        .copied()
        .collect();
    demoted.sort_by_key(|s| s.cost);
    for s in demoted.iter().chain(scored.iter().filter(|s| !s.usable)) {
        list[out] = s.region;
        out += 1;
    }
}

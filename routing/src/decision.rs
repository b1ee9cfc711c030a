//! The routing decision, written once: the first region of a request's plan with an
//! eligible backend wins. The proxy calls it for every upstream attempt (retries included);
//! the no-allocation test and the routing bench call the same function.

use smallvec::SmallVec;
use tokio::time::Instant;

use crate::plan::{self, Plan};
use crate::selection::{self, Member, PickInput};
use crate::snapshot::{RegionPool, Snapshot};

/// The backend chosen for one attempt: indices into the snapshot it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Region index.
    pub region: u16,
    /// Member index within the region.
    pub member: u16,
}

/// What a request has tried so far, and how far down its plan it is.
#[derive(Debug, Clone, Default)]
pub struct Tried {
    /// (region, member) pairs, in attempt order.
    picks: SmallVec<[Pick; 4]>,
    /// Position in the plan of the region being tried.
    region_pos: usize,
}

impl Tried {
    /// Attempts made so far.
    pub fn count(&self) -> usize {
        self.picks.len()
    }

    /// The latest attempt.
    pub fn last(&self) -> Option<Pick> {
        self.picks.last().copied()
    }

    /// Members of region `region` tried so far (on the stack for up to four).
    fn in_region(&self, region: u16) -> SmallVec<[u16; 4]> {
        self.picks
            .iter()
            .filter(|p| p.region == region)
            .map(|p| p.member)
            .collect()
    }
}

impl Snapshot {
    /// Steers and ranks: the candidate regions for a client at `loc`, best first (see
    /// [`crate::plan`]).
    pub fn plan(&self, loc: Option<&meridian_geoip::Location>) -> Plan {
        plan::plan(self.view(), &self.country_table, loc)
    }

    /// The candidate regions for a client at `loc` as any instance would rank them (see
    /// [`plan::plan_anywhere`]): what GeoDNS answers from.
    pub fn plan_anywhere(&self, loc: Option<&meridian_geoip::Location>) -> Plan {
        plan::plan_anywhere(
            self.view(),
            self.local,
            &self.config_order,
            &self.country_table_anywhere,
            loc,
        )
    }

    /// The next backend for a request: in the first region of `plan` (from where `tried`
    /// left off) that has an eligible member, skipping the members this request already
    /// tried. Within a region: panic mode below `outlier.panic_threshold`, backends not
    /// probed yet only while the region has no usable one, and backup tiers only while no
    /// lower tier is eligible ([`selection::pick`]). Records the pick in `tried`; `None` when
    /// no allowed region can serve. Never allocates for plans of up to
    /// [`plan::INLINE_REGIONS`] regions and up to four attempts.
    pub fn next_backend(
        &self,
        plan: &Plan,
        tried: &mut Tried,
        hash: Option<u64>,
        now: Instant,
    ) -> Option<Pick> {
        let panic_threshold = self.config.outlier.panic_threshold;
        while let Some(&ri) = plan.regions.get(tried.region_pos) {
            let region = &self.regions[usize::from(ri)];
            let in_region = tried.in_region(ri);
            let (tier_usable, tier_members) = region.state.tier_counts();
            let input = PickInput {
                now,
                tau: self.config.latency.decay,
                hash,
                tried: &in_region,
                panic: selection::panic_mode(
                    panic_threshold,
                    tier_usable as usize,
                    tier_members as usize,
                ),
                allow_unknown: region.state.usable() == 0,
                max_tier: region.state.active_tier(),
            };
            if let Some(mi) = pick_in(region, &input) {
                let pick = Pick {
                    region: ri,
                    member: mi as u16,
                };
                tried.picks.push(pick);
                return Some(pick);
            }
            tried.region_pos += 1;
        }
        None
    }

    /// The region and member a pick names.
    pub fn picked(&self, pick: Pick) -> Option<(&RegionPool, &Member)> {
        let region = self.regions.get(usize::from(pick.region))?;
        Some((region, region.members.get(usize::from(pick.member))?))
    }
}

fn pick_in(region: &RegionPool, input: &PickInput<'_>) -> Option<usize> {
    selection::pick(
        &region.balancer,
        &region.members,
        &region.state.cursor,
        input,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;

    fn snapshot() -> Snapshot {
        let text = "[node]\nregion = \"a\"\n[regions.a]\nlatitude = 1.0\nlongitude = 2.0\nbackends = [{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:2\" }]\n[regions.b]\nlatitude = 1.0\nlongitude = 3.0\nbackends = [{ address = \"127.0.0.1:3\" }]\n";
        let snap = Snapshot::of_text(text);
        for (_, m) in snap.backends() {
            m.state.health.set(Health::Up);
        }
        snap.measure(Instant::now());
        snap
    }

    #[tokio::test]
    async fn retries_walk_the_region_then_the_next_region_then_give_up() {
        let snap = snapshot();
        let plan = snap.plan(None);
        let mut tried = Tried::default();
        let now = Instant::now();
        let first = snap.next_backend(&plan, &mut tried, None, now).unwrap();
        let second = snap.next_backend(&plan, &mut tried, None, now).unwrap();
        assert_eq!((first.region, second.region), (0, 0));
        assert_ne!(first.member, second.member, "never the same backend twice");
        let third = snap.next_backend(&plan, &mut tried, None, now).unwrap();
        assert_eq!(
            third,
            Pick {
                region: 1,
                member: 0
            },
            "then the next region"
        );
        assert_eq!(snap.next_backend(&plan, &mut tried, None, now), None);
        assert_eq!(tried.count(), 3);
        assert_eq!(tried.last(), Some(third));
    }

    #[tokio::test]
    async fn a_region_with_nothing_probed_yet_is_tried_a_dead_one_skipped() {
        let snap = snapshot();
        let set = |region: usize, h: Health| {
            for m in &snap.regions[region].members {
                m.state.health.set(h);
            }
        };
        // A fresh process: nothing probed anywhere; the plan keeps its order.
        set(0, Health::Unknown);
        set(1, Health::Unknown);
        snap.measure(Instant::now());
        let plan = snap.plan(None);
        let pick = snap.next_backend(&plan, &mut Tried::default(), None, Instant::now());
        assert_eq!(pick.map(|p| p.region), Some(0), "not probed yet: tried");
        set(0, Health::Down);
        snap.measure(Instant::now());
        let pick = snap.next_backend(&plan, &mut Tried::default(), None, Instant::now());
        assert_eq!(pick.map(|p| p.region), Some(1), "down: the next region");
    }
}

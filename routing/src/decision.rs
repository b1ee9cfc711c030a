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
    /// Service index.
    pub service: u16,
    /// Region index.
    pub region: u16,
    /// Member index within the service's pool in the region.
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
    /// The service of a request to `host` (its `Host` or URI authority) and `path`;
    /// `None` when no route matches and there is no default service (see [`crate::routes`]).
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.routes.route(host, path).map(usize::from)
    }

    /// Steers and ranks: the candidate regions of service `service` for a client at `loc`,
    /// best first (see [`crate::plan`]).
    pub fn plan(&self, service: usize, loc: Option<&meridian_geoip::Location>) -> Plan {
        let Some(s) = self.services.get(service) else {
            return Plan::default();
        };
        let mut plan = plan::plan(self.view(service), &s.country_table, loc);
        plan.service = service as u16;
        plan
    }

    /// The candidate regions of service `service` for a client at `loc` as any instance
    /// would rank them (see [`plan::plan_anywhere`]): what GeoDNS answers from.
    pub fn plan_anywhere(&self, service: usize, loc: Option<&meridian_geoip::Location>) -> Plan {
        let Some(s) = self.services.get(service) else {
            return Plan::default();
        };
        let mut plan = plan::plan_anywhere(
            self.view(service),
            self.local,
            &self.config_order,
            &s.country_table_anywhere,
            loc,
        );
        plan.service = service as u16;
        plan
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
        let pools = self.services.get(usize::from(plan.service))?;
        while let Some(&ri) = plan.regions.get(tried.region_pos) {
            let Some(region) = pools.regions.get(usize::from(ri)).and_then(Option::as_ref) else {
                tried.region_pos += 1;
                continue;
            };
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
                slow_start_ms: region.slow_start_ms,
            };
            if let Some(mi) = pick_in(region, &input) {
                let pick = Pick {
                    service: plan.service,
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

    /// The pool and member a pick names.
    pub fn picked(&self, pick: Pick) -> Option<(&RegionPool, &Member)> {
        let region = self.pool(usize::from(pick.service), usize::from(pick.region))?;
        Some((region, region.members.get(usize::from(pick.member))?))
    }

    /// The sticky session's backend for a request's first attempt: `target` (a region and
    /// member of the plan's service, from its cookie) when the plan allows its region and
    /// it can take the request — ready and usable, or draining but healthy when sessions
    /// stay on draining backends (`keep_draining`). Recorded in `tried` like any pick, so
    /// that a retry goes elsewhere.
    pub fn pinned(
        &self,
        plan: &Plan,
        tried: &mut Tried,
        target: (u16, u16),
        keep_draining: bool,
        now: Instant,
    ) -> Option<Pick> {
        let (ri, mi) = target;
        if tried.count() > 0 || !plan.regions.contains(&ri) {
            return None;
        }
        let pick = Pick {
            service: plan.service,
            region: ri,
            member: mi,
        };
        let (_, m) = self.picked(pick)?;
        let s = &m.state;
        let ok = match s.admin() {
            crate::admin::AdminState::Ready => s.healthy(now),
            crate::admin::AdminState::Drain => keep_draining && s.healthy(now),
            crate::admin::AdminState::Maintenance => false,
        };
        if !ok {
            return None;
        }
        tried.picks.push(pick);
        Some(pick)
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
        let plan = snap.plan(0, None);
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
                service: 0,
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
            for m in &snap.pool(0, region).unwrap().members {
                m.state.health.set(h);
            }
        };
        // A fresh process: nothing probed anywhere; the plan keeps its order.
        set(0, Health::Unknown);
        set(1, Health::Unknown);
        snap.measure(Instant::now());
        let plan = snap.plan(0, None);
        let pick = snap.next_backend(&plan, &mut Tried::default(), None, Instant::now());
        assert_eq!(pick.map(|p| p.region), Some(0), "not probed yet: tried");
        set(0, Health::Down);
        snap.measure(Instant::now());
        let pick = snap.next_backend(&plan, &mut Tried::default(), None, Instant::now());
        assert_eq!(pick.map(|p| p.region), Some(1), "down: the next region");
    }
}

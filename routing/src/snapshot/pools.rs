//! Building one service's pools: per region, its members (static addresses, resolved DNS
//! names, or the region's instances when it is relayed), each with the live state carried
//! over by ID, the operator's runtime settings applied, the balancer's tables and the
//! pool's own live state (carried by `service/region`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_config::{Pool, Region, Service};
use meridian_geoip::Coordinates;

use super::region::{RegionPool, RegionState};
use crate::admin::RuntimeSettings;
use crate::answers::{Answers, MAX_WEIGHT};
use crate::backend::BackendState;
use crate::metrics::RoutingMetrics;
use crate::selection::{Balancer, Member};

/// Backends (addresses) a region may have, DNS expansions included: member indices are
/// `u16` on the request path, and the config allows 10,000 configured entries.
pub const MAX_REGION_MEMBERS: usize = 10_000;

/// The live state a new snapshot takes over from the previous one, by stable ID, and the
/// backend states this build made so far (a relay member shared by several services'
/// pools is one backend).
pub(super) struct Carried<'a> {
    pub(super) backends: HashMap<&'a str, &'a Arc<BackendState>>,
    pub(super) pools: HashMap<&'a str, &'a Arc<RegionState>>,
    pub(super) made: HashMap<String, Arc<BackendState>>,
    /// Whether this build replaces a running snapshot (new backends then slow-start).
    pub(super) running: bool,
}

impl<'a> Carried<'a> {
    /// What the pools of the previous snapshot (if `running`) hand over.
    pub(super) fn from(previous: impl Iterator<Item = &'a RegionPool>, running: bool) -> Self {
        let mut carried = Carried {
            backends: HashMap::new(),
            pools: HashMap::new(),
            made: HashMap::new(),
            running,
        };
        for pool in previous {
            carried.pools.insert(&pool.key, &pool.state);
            for m in &pool.members {
                carried.backends.insert(&m.state.id, &m.state);
            }
        }
        carried
    }

    fn backend(
        &mut self,
        region: &str,
        addr: SocketAddr,
        host: Option<&Arc<str>>,
        metrics: &RoutingMetrics,
    ) -> Arc<BackendState> {
        let id = format!("{region}/{addr}");
        if let Some(s) = self.made.get(&id) {
            return Arc::clone(s);
        }
        let state = match self.backends.get(id.as_str()) {
            Some(s) => Arc::clone(s),
            None => {
                let fresh = match host {
                    None => BackendState::new(region, addr, metrics),
                    Some(h) => BackendState::named(region, addr, h.clone(), metrics),
                };
                Arc::new(if self.running {
                    fresh.ramping_first()
                } else {
                    fresh
                })
            }
        };
        self.made.insert(id, Arc::clone(&state));
        state
    }
}

/// What one pool is built from.
pub(super) struct PoolInput<'a> {
    pub(super) service: &'a Service,
    pub(super) pool: &'a Pool,
    pub(super) region: &'a Region,
    pub(super) relay: bool,
    pub(super) answers: &'a Answers,
    pub(super) runtime: &'a RuntimeSettings,
    pub(super) metrics: &'a RoutingMetrics,
}

/// Collects a pool's members, one per address.
struct MemberList<'a, 'c> {
    input: &'a PoolInput<'a>,
    key: &'a str,
    carried: &'a mut Carried<'c>,
    members: Vec<Member>,
    ids: HashSet<SocketAddr>,
    capped: bool,
}

impl MemberList<'_, '_> {
    fn add(&mut self, addr: SocketAddr, host: Option<&Arc<str>>, weight: u32, tier: u8) {
        let region = self.input.region.name.as_str();
        if self.members.len() >= MAX_REGION_MEMBERS {
            if !self.capped {
                self.capped = true;
                tracing::warn!(%region, service = %self.input.service.name, limit = MAX_REGION_MEMBERS, "pool has more backend addresses than allowed; the rest are left out");
            }
            return;
        }
        if !self.ids.insert(addr) {
            return; // a name resolving to an address listed already
        }
        let state = self.carried.backend(region, addr, host, self.input.metrics);
        let runtime = self.input.runtime;
        state.set_admin(runtime.state_of(self.key, &state.id));
        let weight = runtime.weight_of(&state.id).unwrap_or(weight).max(1);
        state.metrics.set_admin(state.admin(), weight);
        self.members.push(Member {
            state,
            weight,
            tier,
        });
    }
}

/// Builds the pool of `input`.
pub(super) fn build(input: &PoolInput<'_>, carried: &mut Carried<'_>) -> RegionPool {
    let (service, r) = (input.service, input.region);
    let key: Arc<str> = RuntimeSettings::pool_key(&service.name, &r.name).into();
    let mut list = MemberList {
        input,
        key: &key,
        carried,
        members: Vec::with_capacity(input.pool.backends.len()),
        ids: HashSet::new(),
        capped: false,
    };
    if input.relay {
        // The region is reached through its instances' proxy listeners.
        for inst in &r.instances {
            list.add(inst.proxy, Some(&Arc::from(inst.name.as_str())), 1, 0);
        }
    }
    for b in input.pool.backends.iter().filter(|_| !input.relay) {
        let weight = b.weight.max(1);
        let backup = u8::from(b.backup);
        match b.address.as_static() {
            Some(addr) => list.add(addr, None, weight, backup),
            None => {
                for a in input.answers.get(&b.address).into_iter().flatten() {
                    // An SRV record's weight, times the configured one.
                    let w = weight.saturating_mul(a.weight).min(MAX_WEIGHT);
                    list.add(a.addr, Some(&a.host), w, a.tier.saturating_add(backup));
                }
            }
        }
    }
    let members = list.members;
    let state = match list.carried.pools.get(&*key) {
        Some(s) => Arc::clone(s),
        None => Arc::new(RegionState::new(
            input.metrics.region(&r.name, &service.name),
        )),
    };
    let slow_start_ms = input
        .pool
        .slow_start
        .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
    RegionPool {
        name: r.name.as_str().into(),
        service: service.name.as_str().into(),
        key,
        coords: Coordinates {
            latitude: r.latitude,
            longitude: r.longitude,
        },
        balancer: Balancer::build(&input.pool.balance, &members),
        members,
        state,
        health: input.pool.health.clone(),
        relay: input.relay,
        slow_start_ms,
    }
}

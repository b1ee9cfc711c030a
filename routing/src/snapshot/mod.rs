//! The routing snapshot: everything a routing decision reads, immutable, built from a
//! validated config and swapped atomically on reload. Live state (backend health, latency,
//! ejections; region measurements) is shared by `Arc` and carried from the previous
//! snapshot by stable ID, so a reload never resets it.

mod measure;
pub mod region;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use meridian_config::{Config, Region};
use meridian_geoip::{great_circle_km, Coordinates, Locator};
use prometheus::IntCounter;

use crate::answers::{Answers, MAX_WEIGHT};
use crate::backend::BackendState;
use crate::metrics::RoutingMetrics;
use crate::plan::{CountryTable, RegionList, View};
use crate::selection::{Balancer, Member};

pub use region::{RegionPool, RegionState, MEASUREMENT_DWELL};

/// Backends (addresses) a region may have, DNS expansions included: member indices are
/// `u16` on the request path, and the config allows 10,000 configured entries.
pub const MAX_REGION_MEMBERS: usize = 10_000;

/// Up to this many regions, failover counters are kept in a (from, to) table; beyond, the
/// (rare) failover looks its label up.
pub const FAILOVER_TABLE_MAX_REGIONS: usize = 128;

/// An immutable routing snapshot.
pub struct Snapshot {
    /// Increases by one on every successful reload.
    pub generation: u64,
    /// The validated config it was built from.
    pub config: Arc<Config>,
    /// Region pools, in config order (indices match `config.regions`).
    pub regions: Vec<RegionPool>,
    /// Index of this node's region.
    pub local: usize,
    /// This node's coordinates (its region's).
    pub node_coords: Coordinates,
    /// The local region first, then the others by distance from this node.
    pub local_order: RegionList,
    /// The regions in config order (the fallback of plans made from no instance's point
    /// of view, [`crate::plan::plan_anywhere`]).
    pub config_order: RegionList,
    /// Client IP → location.
    pub locator: Arc<Locator>,
    /// Steering precomputed per client country (see [`CountryTable`]).
    pub country_table: CountryTable,
    /// The same for plans made from no instance's point of view
    /// ([`crate::plan::plan_anywhere`]).
    pub country_table_anywhere: CountryTable,
    /// Failover counters by (from, to) region index, resolved on first use so the request
    /// path never looks a label up (empty above [`FAILOVER_TABLE_MAX_REGIONS`] regions).
    failovers: Vec<OnceLock<IntCounter>>,
    metrics: RoutingMetrics,
    /// When this snapshot was built.
    pub built_at: SystemTime,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("regions", &self.regions.len())
            .finish()
    }
}

impl AsRef<Snapshot> for Snapshot {
    fn as_ref(&self) -> &Snapshot {
        self
    }
}

/// The live state a new snapshot takes over from the previous one, by stable ID.
#[derive(Default)]
struct Carried<'a> {
    backends: HashMap<&'a str, &'a Arc<BackendState>>,
    regions: HashMap<&'a str, &'a Arc<RegionState>>,
}

impl<'a> Carried<'a> {
    fn from(previous: Option<&'a Snapshot>) -> Self {
        let mut carried = Carried::default();
        for r in previous.iter().flat_map(|p| &p.regions) {
            carried.regions.insert(&r.name, &r.state);
            for m in &r.members {
                carried.backends.insert(&m.state.id, &m.state);
            }
        }
        carried
    }
}

/// Collects a region's members: one per static address, one per resolved address of a
/// DNS name, each with the state carried over for its ID (or a fresh one).
struct MemberList<'a> {
    region: &'a str,
    carried: &'a Carried<'a>,
    metrics: &'a RoutingMetrics,
    members: Vec<Member>,
    ids: HashSet<String>,
    capped: bool,
}

impl MemberList<'_> {
    fn add(&mut self, addr: SocketAddr, host: Option<&Arc<str>>, weight: u32, tier: u8) {
        if self.members.len() >= MAX_REGION_MEMBERS {
            if !self.capped {
                self.capped = true;
                tracing::warn!(region = %self.region, limit = MAX_REGION_MEMBERS, "region has more backend addresses than allowed; the rest are left out");
            }
            return;
        }
        let id = format!("{}/{}", self.region, addr);
        if !self.ids.insert(id.clone()) {
            return; // a name resolving to an address listed already
        }
        let state = match self.carried.backends.get(id.as_str()) {
            Some(s) => Arc::clone(s),
            None => Arc::new(match host {
                None => BackendState::new(self.region, addr, self.metrics),
                Some(h) => BackendState::named(self.region, addr, h.clone(), self.metrics),
            }),
        };
        self.members.push(Member {
            state,
            weight,
            tier,
        });
    }
}

/// The pool of config region `r`: its members (static and resolved), the balancer's
/// tables, and its live state.
fn region_pool(
    r: &Region,
    relay: bool,
    carried: &Carried<'_>,
    metrics: &RoutingMetrics,
    answers: &Answers,
) -> RegionPool {
    let mut list = MemberList {
        region: &r.name,
        carried,
        metrics,
        members: Vec::with_capacity(r.backends.len()),
        ids: HashSet::new(),
        capped: false,
    };
    if relay {
        // The region is reached through its instances' proxy listeners.
        for inst in &r.instances {
            list.add(inst.proxy, Some(&Arc::from(inst.name.as_str())), 1, 0);
        }
    }
    for b in r.backends.iter().filter(|_| !relay) {
        let weight = b.weight.max(1);
        let backup = u8::from(b.backup);
        match b.address.as_static() {
            Some(addr) => list.add(addr, None, weight, backup),
            None => {
                for a in answers.get(&b.address).into_iter().flatten() {
                    // An SRV record's weight, times the configured one.
                    let w = weight.saturating_mul(a.weight).min(MAX_WEIGHT);
                    list.add(a.addr, Some(&a.host), w, a.tier.saturating_add(backup));
                }
            }
        }
    }
    let members = list.members;
    let state = match carried.regions.get(r.name.as_str()) {
        Some(s) => Arc::clone(s),
        None => Arc::new(RegionState::new(metrics.region(&r.name))),
    };
    RegionPool {
        name: r.name.as_str().into(),
        coords: Coordinates {
            latitude: r.latitude,
            longitude: r.longitude,
        },
        balancer: Balancer::build(&r.balance, &members),
        members,
        state,
        health: r.health.clone(),
        relay,
    }
}

/// The local region first, then the others by distance from it.
fn local_order(regions: &[RegionPool], local: usize, from: Coordinates) -> RegionList {
    let mut by_distance: Vec<(f64, u16)> = regions
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != local)
        .map(|(i, r)| (great_circle_km(from, r.coords), i as u16))
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut order = RegionList::new();
    if !regions.is_empty() {
        order.push(local as u16);
    }
    order.extend(by_distance.into_iter().map(|(_, i)| i));
    order
}

impl Snapshot {
    /// Builds a snapshot, taking live state from `previous` for backends and regions that
    /// are still configured. Backends given as DNS names get one member per address in
    /// `answers` (none while the name has never resolved).
    pub fn build(
        config: Arc<Config>,
        locator: Arc<Locator>,
        previous: Option<&Snapshot>,
        metrics: &RoutingMetrics,
        answers: &Answers,
    ) -> Snapshot {
        let carried = Carried::from(previous);
        let local = config.local_region_index();
        let regions: Vec<RegionPool> = config
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let relay = i != local && r.reach == meridian_config::Reach::Instances;
                region_pool(r, relay, &carried, metrics, answers)
            })
            .collect();
        let node_coords = regions.get(local).map(|r| r.coords).unwrap_or(Coordinates {
            latitude: 0.0,
            longitude: 0.0,
        });
        let n = regions.len();
        let mut snap = Snapshot {
            generation: previous.map_or(1, |p| p.generation + 1),
            local_order: local_order(&regions, local, node_coords),
            config_order: (0..n.min(usize::from(u16::MAX)) as u16).collect(),
            config,
            regions,
            local,
            node_coords,
            locator,
            country_table: CountryTable::default(),
            country_table_anywhere: CountryTable::default(),
            failovers: Vec::new(),
            metrics: metrics.clone(),
            built_at: SystemTime::now(),
        };
        let table = CountryTable::build(snap.view());
        snap.country_table = table;
        let anywhere = CountryTable::build_anywhere(View {
            local_order: &snap.config_order,
            ..snap.view()
        });
        snap.country_table_anywhere = anywhere;
        if n <= FAILOVER_TABLE_MAX_REGIONS {
            snap.failovers = (0..n * n).map(|_| OnceLock::new()).collect();
        }
        snap
    }

    /// Counts a request that steering preferred for region `from` but region `to` served.
    pub fn count_failover(&self, from: usize, to: usize) {
        let (Some(f), Some(t)) = (self.regions.get(from), self.regions.get(to)) else {
            return;
        };
        let counter = || self.metrics.failover_counter(&f.name, &t.name);
        match self.failovers.get(from * self.regions.len() + to) {
            Some(cell) => cell.get_or_init(counter).inc(),
            None => counter().inc(),
        }
    }

    /// Every backend in the snapshot.
    pub fn backends(&self) -> impl Iterator<Item = (&RegionPool, &Member)> {
        self.regions
            .iter()
            .flat_map(|r| r.members.iter().map(move |m| (r, m)))
    }

    /// Backends in `self` that `next` no longer has.
    pub fn removed_in<'a>(&'a self, next: &Snapshot) -> Vec<&'a BackendState> {
        let keep: HashSet<&str> = next.backends().map(|(_, m)| &*m.state.id).collect();
        self.backends()
            .filter(|(_, m)| !keep.contains(&*m.state.id))
            .map(|(_, m)| &*m.state)
            .collect()
    }

    /// What steering and ranking read from this snapshot.
    pub fn view(&self) -> View<'_> {
        View {
            config: &self.config,
            regions: &self.regions,
            node_coords: self.node_coords,
            local_order: &self.local_order,
        }
    }

    /// A snapshot of config `text` with the built-in GeoIP database and no DNS answers
    /// (unit tests).
    #[cfg(test)]
    pub(crate) fn of_text(text: &str) -> Snapshot {
        let config = meridian_config::parse(text, "test.toml", None).expect("valid config");
        let locator = Arc::new(Locator::builtin(Vec::new()).expect("built-in database"));
        Snapshot::build(
            Arc::new(config),
            locator,
            None,
            &RoutingMetrics::detached(),
            &Answers::new(),
        )
    }

    /// Looks a region up by name.
    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| &*r.name == name)
    }
}

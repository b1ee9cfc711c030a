//! The routing snapshot: everything a routing decision reads, immutable, built from a
//! validated config and swapped atomically on reload: the routes, and every service's pool
//! in each region it runs in. Live state (backend health, latency, ejections; pool
//! measurements) is shared by `Arc` and carried from the previous snapshot by stable ID,
//! so a reload never resets it.

mod measure;
mod pools;
pub mod region;
mod sticky;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use meridian_config::Config;
use meridian_geoip::{great_circle_km, Coordinates, Locator};
use prometheus::{IntCounter, IntGauge};

use crate::admin::RuntimeSettings;
use crate::answers::Answers;
use crate::backend::BackendState;
use crate::metrics::{RoutingMetrics, ServiceMetrics};
use crate::plan::{CountryTable, RegionList, View};
use crate::routes::RouteTable;
use crate::selection::Member;
pub use pools::MAX_REGION_MEMBERS;
use pools::{Carried, PoolInput};
pub use sticky::StickyTable;

pub use region::{RegionPool, RegionState, MEASUREMENT_DWELL};

/// Up to this many regions, failover counters are kept in a (from, to) table; beyond, the
/// (rare) failover looks its label up.
pub const FAILOVER_TABLE_MAX_REGIONS: usize = 128;

/// An immutable routing snapshot.
pub struct Snapshot {
    /// Increases by one on every successful reload.
    pub generation: u64,
    /// The validated config it was built from.
    pub config: Arc<Config>,
    /// The services (indices match `config.services`), each with its pools by region.
    pub services: Vec<ServicePools>,
    /// Host and path → service.
    pub routes: RouteTable,
    /// Index of this node's region.
    pub local: usize,
    /// This node's coordinates (its region's).
    pub node_coords: Coordinates,
    /// Every region's coordinates, by index.
    pub coords: Vec<Coordinates>,
    /// The local region first, then the others by distance from this node.
    pub local_order: RegionList,
    /// The regions in config order (the fallback of plans made from no instance's point
    /// of view, [`crate::plan::plan_anywhere`]).
    pub config_order: RegionList,
    /// Client IP → location.
    pub locator: Arc<Locator>,
    /// Failover counters by (from, to) region index, resolved on first use so the request
    /// path never looks a label up (empty above [`FAILOVER_TABLE_MAX_REGIONS`] regions).
    failovers: Vec<OnceLock<IntCounter>>,
    /// Usable backends per region, all services together, by region index.
    region_usable: Vec<IntGauge>,
    metrics: RoutingMetrics,
    /// When this snapshot was built.
    pub built_at: SystemTime,
}

/// One service in a snapshot: its pools by region and its precomputed steering.
#[derive(Debug)]
pub struct ServicePools {
    /// The service's name.
    pub name: Arc<str>,
    /// Its pool in each region, by region index (`None` where it does not run).
    pub regions: Vec<Option<RegionPool>>,
    /// Steering precomputed per client country (shared by services in the same regions).
    pub country_table: Arc<CountryTable>,
    /// The same for plans made from no instance's point of view
    /// ([`crate::plan::plan_anywhere`]).
    pub country_table_anywhere: Arc<CountryTable>,
    /// Its request counters.
    pub metrics: ServiceMetrics,
    /// Sticky-cookie tokens → (region, member).
    pub sticky: StickyTable,
}

impl AsRef<Snapshot> for Snapshot {
    fn as_ref(&self) -> &Snapshot {
        self
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("services", &self.services.len())
            .finish()
    }
}

/// The local region first, then the others by distance from it.
fn local_order(coords: &[Coordinates], local: usize, from: Coordinates) -> RegionList {
    let mut by_distance: Vec<(f64, u16)> = coords
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != local)
        .map(|(i, c)| (great_circle_km(from, *c), i as u16))
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut order = RegionList::new();
    if !coords.is_empty() {
        order.push(local as u16);
    }
    order.extend(by_distance.into_iter().map(|(_, i)| i));
    order
}

impl Snapshot {
    /// Builds a snapshot, taking live state from `previous` for backends and pools that
    /// are still configured, and applying the operator's `runtime` settings. Backends given
    /// as DNS names get one member per address in `answers` (none while the name has never
    /// resolved).
    pub fn build(
        config: Arc<Config>,
        locator: Arc<Locator>,
        previous: Option<&Snapshot>,
        metrics: &RoutingMetrics,
        answers: &Answers,
        runtime: &RuntimeSettings,
    ) -> Snapshot {
        let mut carried = Carried::from(
            previous
                .into_iter()
                .flat_map(|p| p.pools())
                .map(|(_, _, p)| p),
            previous.is_some(),
        );
        let local = config.local_region_index();
        let coords: Vec<Coordinates> = config
            .regions
            .iter()
            .map(|r| Coordinates {
                latitude: r.latitude,
                longitude: r.longitude,
            })
            .collect();
        let node_coords = coords.get(local).copied().unwrap_or(Coordinates {
            latitude: 0.0,
            longitude: 0.0,
        });
        let mut services: Vec<ServicePools> = Vec::with_capacity(config.services.len());
        for service in &config.services {
            let mut regions = Vec::with_capacity(config.regions.len());
            for (i, region) in config.regions.iter().enumerate() {
                let pool = service.pool(i).map(|pool| {
                    let input = PoolInput {
                        service,
                        pool,
                        region,
                        relay: i != local && region.reach == meridian_config::Reach::Instances,
                        answers,
                        runtime,
                        metrics,
                    };
                    pools::build(&input, &mut carried)
                });
                regions.push(pool);
            }
            services.push(ServicePools {
                name: service.name.as_str().into(),
                sticky: StickyTable::build(service, &regions, &config),
                regions,
                country_table: Arc::default(),
                country_table_anywhere: Arc::default(),
                metrics: metrics.service(&service.name),
            });
        }
        let n = config.regions.len();
        let region_usable = config
            .regions
            .iter()
            .map(|r| metrics.region_usable(&r.name))
            .collect();
        let mut snap = Snapshot {
            generation: previous.map_or(1, |p| p.generation + 1),
            local_order: local_order(&coords, local, node_coords),
            config_order: (0..n.min(usize::from(u16::MAX)) as u16).collect(),
            routes: RouteTable::build(&config),
            config,
            services,
            local,
            node_coords,
            coords,
            locator,
            failovers: Vec::new(),
            region_usable,
            metrics: metrics.clone(),
            built_at: SystemTime::now(),
        };
        // Services that run in the same regions steer alike: one table for each set.
        let mut tables: HashMap<Vec<bool>, (Arc<CountryTable>, Arc<CountryTable>)> = HashMap::new();
        for i in 0..snap.services.len() {
            let present: Vec<bool> = snap.services[i]
                .regions
                .iter()
                .map(Option::is_some)
                .collect();
            let (table, anywhere) = match tables.get(&present) {
                Some((t, a)) => (Arc::clone(t), Arc::clone(a)),
                None => {
                    let t = Arc::new(CountryTable::build(snap.view(i)));
                    let a = Arc::new(CountryTable::build_anywhere(View {
                        local_order: &snap.config_order,
                        ..snap.view(i)
                    }));
                    tables.insert(present, (Arc::clone(&t), Arc::clone(&a)));
                    (t, a)
                }
            };
            snap.services[i].country_table = table;
            snap.services[i].country_table_anywhere = anywhere;
        }
        if n <= FAILOVER_TABLE_MAX_REGIONS {
            snap.failovers = (0..n * n).map(|_| OnceLock::new()).collect();
        }
        snap
    }

    /// Counts a request that steering preferred for region `from` but region `to` served.
    pub fn count_failover(&self, from: usize, to: usize) {
        let regions = &self.config.regions;
        let (Some(f), Some(t)) = (regions.get(from), regions.get(to)) else {
            return;
        };
        let counter = || self.metrics.failover_counter(&f.name, &t.name);
        match self.failovers.get(from * regions.len() + to) {
            Some(cell) => cell.get_or_init(counter).inc(),
            None => counter().inc(),
        }
    }

    /// Every pool: its service's index, its region's index and the pool.
    pub fn pools(&self) -> impl Iterator<Item = (usize, usize, &RegionPool)> {
        self.services.iter().enumerate().flat_map(|(si, s)| {
            s.regions
                .iter()
                .enumerate()
                .filter_map(move |(ri, p)| Some((si, ri, p.as_ref()?)))
        })
    }

    /// Service `service`'s pool in region `region`.
    pub fn pool(&self, service: usize, region: usize) -> Option<&RegionPool> {
        self.services.get(service)?.regions.get(region)?.as_ref()
    }

    /// Every backend in the snapshot, with its pool (a relay member shared by several
    /// services' pools comes once per pool).
    pub fn backends(&self) -> impl Iterator<Item = (&RegionPool, &Member)> {
        self.pools()
            .flat_map(|(_, _, r)| r.members.iter().map(move |m| (r, m)))
    }

    /// Backends in `self` that `next` no longer has.
    pub fn removed_in<'a>(&'a self, next: &Snapshot) -> Vec<&'a BackendState> {
        let keep: HashSet<&str> = next.backends().map(|(_, m)| &*m.state.id).collect();
        self.backends()
            .filter(|(_, m)| !keep.contains(&*m.state.id))
            .map(|(_, m)| &*m.state)
            .collect()
    }

    /// What steering and ranking read from this snapshot for service `service`.
    pub fn view(&self, service: usize) -> View<'_> {
        View {
            config: &self.config,
            pools: self.services.get(service).map_or(&[], |s| &s.regions),
            coords: &self.coords,
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
            &RuntimeSettings::default(),
        )
    }

    /// Looks a region up by name.
    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.config.regions.iter().position(|r| r.name == name)
    }

    /// Looks a service up by name.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| &*s.name == name)
    }
}

//! The routing snapshot: everything a request needs, immutable, built from a validated
//! config and swapped atomically (one `ArcSwap`) on reload. Live state (backend health,
//! latency, ejections; region measurements) is shared by `Arc` and carried from the previous
//! snapshot by stable ID, so a reload never resets it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use meridian_config::{Config, HealthCheck};
use meridian_geoip::{Coordinates, Locator};

use crate::backend::BackendState;
use crate::discovery::{Answers, MAX_WEIGHT};
use crate::metrics::{Metrics, RegionMetrics};
use crate::pick::{Balancer, Member};
use crate::route::{CountryTable, RegionList};
use crate::tls::{TlsError, UpstreamPeerTls};

/// Live per-region state, carried across reloads by region name.
#[derive(Debug)]
pub struct RegionState {
    /// Pre-resolved metric handles.
    pub metrics: RegionMetrics,
    /// Measured latency from this instance to the region's usable backends (µs).
    measured_us: AtomicU32,
    /// Usable backends, as of the last measurement tick.
    usable: AtomicU32,
    /// Rotating cursor for round-robin style algorithms.
    pub cursor: AtomicUsize,
}

impl std::fmt::Debug for RegionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegionMetrics")
    }
}

impl RegionState {
    fn new(metrics: RegionMetrics) -> Self {
        RegionState {
            metrics,
            measured_us: AtomicU32::new(0),
            usable: AtomicU32::new(0),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Measured latency in microseconds (0 until measured).
    pub fn measured_us(&self) -> u32 {
        self.measured_us.load(Ordering::Relaxed)
    }

    /// Usable backends as of the last measurement.
    pub fn usable(&self) -> u32 {
        self.usable.load(Ordering::Relaxed)
    }

    /// Publishes a measurement (the ranker task only).
    pub fn publish(&self, measured_us: u32, usable: u32) {
        self.measured_us.store(measured_us, Ordering::Relaxed);
        self.usable.store(usable, Ordering::Relaxed);
        self.metrics.healthy.set(i64::from(usable));
    }
}

/// One region's pool in a snapshot.
#[derive(Debug)]
pub struct RegionPool {
    /// The region's name.
    pub name: Arc<str>,
    /// Its coordinates.
    pub coords: Coordinates,
    /// Its backends.
    pub members: Vec<Member>,
    /// The balancing algorithm, precomputed.
    pub balancer: Balancer,
    /// Live region state.
    pub state: Arc<RegionState>,
    /// Active health check settings.
    pub health: HealthCheck,
    /// TLS to the backends (`None`: plain HTTP).
    pub tls: Option<Arc<UpstreamPeerTls>>,
}

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
    /// Client IP → location.
    pub locator: Arc<Locator>,
    /// The `Via` value this node appends: `1.1 <name>` for HTTP/1 clients, `2 <name>` for
    /// HTTP/2 ones (index by `is_http2`).
    pub via: [http::HeaderValue; 2],
    /// Steering precomputed per client country (see [`CountryTable`]).
    pub country_table: CountryTable,
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

/// A `Via` entry; node names are validated visible ASCII, so this cannot fail in practice.
fn via_value(version: &str, name: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("{version} {name}"))
        .unwrap_or_else(|_| http::HeaderValue::from_static("1.1 meridian"))
}

impl Snapshot {
    /// Builds a snapshot, taking live state from `previous` for backends and regions that
    /// are still configured (and a region's upstream TLS state while its settings hold).
    /// Backends given as DNS names get one member per address in `answers` (none while the
    /// name has never resolved).
    pub fn build(
        config: Arc<Config>,
        locator: Arc<Locator>,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        answers: &Answers,
    ) -> Result<Snapshot, TlsError> {
        let mut old_backends: HashMap<&str, &Arc<BackendState>> = HashMap::new();
        let mut old_regions: HashMap<&str, &RegionPool> = HashMap::new();
        if let Some(prev) = previous {
            for r in &prev.regions {
                old_regions.insert(&r.name, r);
                for m in &r.members {
                    old_backends.insert(&m.state.id, &m.state);
                }
            }
        }
        let mut tls: Vec<Option<Arc<UpstreamPeerTls>>> = Vec::with_capacity(config.regions.len());
        for r in &config.regions {
            let old = old_regions
                .get(r.name.as_str())
                .and_then(|p| p.tls.as_ref());
            tls.push(match (&r.tls, old) {
                (None, _) => None,
                (Some(want), Some(old)) if old.settings == *want => Some(old.clone()),
                (Some(want), _) => Some(Arc::new(UpstreamPeerTls::build(&r.name, want)?)),
            });
        }
        let regions: Vec<RegionPool> = config
            .regions
            .iter()
            .zip(tls)
            .map(|(r, tls)| {
                let mut members: Vec<Member> = Vec::with_capacity(r.backends.len());
                let mut ids = std::collections::HashSet::new();
                for b in &r.backends {
                    let weight = b.weight.max(1);
                    let mut add = |addr: SocketAddr, host: Option<&Arc<str>>, weight: u32| {
                        let id = format!("{}/{}", r.name, addr);
                        if !ids.insert(id.clone()) {
                            return; // a name resolving to an address listed already
                        }
                        let state = match old_backends.get(id.as_str()) {
                            Some(s) => Arc::clone(s),
                            None => Arc::new(match host {
                                None => BackendState::new(&r.name, addr, metrics),
                                Some(h) => BackendState::named(&r.name, addr, h.clone(), metrics),
                            }),
                        };
                        members.push(Member { state, weight });
                    };
                    match b.address.as_static() {
                        Some(addr) => add(addr, None, weight),
                        None => {
                            for a in answers.get(&b.address).into_iter().flatten() {
                                // An SRV record's weight, times the configured one.
                                let w = weight.saturating_mul(a.weight).min(MAX_WEIGHT);
                                add(a.addr, Some(&a.host), w);
                            }
                        }
                    }
                }
                let state = match old_regions.get(r.name.as_str()) {
                    Some(p) => Arc::clone(&p.state),
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
                    tls,
                }
            })
            .collect();
        let local = config.local_region_index();
        let node_coords = regions.get(local).map(|r| r.coords).unwrap_or(Coordinates {
            latitude: 0.0,
            longitude: 0.0,
        });
        let mut by_distance: Vec<(f64, u16)> = regions
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != local)
            .map(|(i, r)| {
                (
                    meridian_geoip::great_circle_km(node_coords, r.coords),
                    i as u16,
                )
            })
            .collect();
        by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut local_order = RegionList::new();
        if !regions.is_empty() {
            local_order.push(local as u16);
        }
        local_order.extend(by_distance.into_iter().map(|(_, i)| i));
        let mut snap = Snapshot {
            generation: previous.map_or(1, |p| p.generation + 1),
            via: [
                via_value("1.1", &config.node.name),
                via_value("2", &config.node.name),
            ],
            config,
            regions,
            local,
            node_coords,
            local_order,
            locator,
            country_table: CountryTable::default(),
            built_at: SystemTime::now(),
        };
        snap.country_table = CountryTable::build(&snap);
        Ok(snap)
    }

    /// Every backend in the snapshot.
    pub fn backends(&self) -> impl Iterator<Item = (&RegionPool, &Member)> {
        self.regions
            .iter()
            .flat_map(|r| r.members.iter().map(move |m| (r, m)))
    }

    /// IDs of backends in `self` that `next` no longer has.
    pub fn removed_in<'a>(&'a self, next: &Snapshot) -> Vec<&'a BackendState> {
        let keep: std::collections::HashSet<&str> =
            next.backends().map(|(_, m)| &*m.state.id).collect();
        self.backends()
            .filter(|(_, m)| !keep.contains(&*m.state.id))
            .map(|(_, m)| &*m.state)
            .collect()
    }
}

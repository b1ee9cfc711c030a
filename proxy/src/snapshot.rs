//! The routing snapshot: everything a request needs, immutable, built from a validated
//! config and swapped atomically (one `ArcSwap`) on reload. Live state (backend health,
//! latency, ejections; region measurements) is shared by `Arc` and carried from the previous
//! snapshot by stable ID, so a reload never resets it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use meridian_config::{Config, HealthCheck};
use meridian_geoip::{Coordinates, Locator};
use tokio::time::Instant;

use crate::backend::BackendState;
use crate::discovery::{Answers, MAX_WEIGHT};
use crate::latency::now_ms;
use crate::metrics::{Metrics, RegionMetrics};
use crate::pick::{Balancer, Member};
use crate::route::{CountryTable, RegionList};
use crate::tls::{TlsError, UpstreamPeerTls};

/// Backends (addresses) a region may have, DNS expansions included: member indices are
/// `u16` on the request path, and the config allows 10,000 configured entries.
pub const MAX_REGION_MEMBERS: usize = 10_000;

/// Up to this many regions, failover counters are kept in a (from, to) table; beyond, the
/// (rare) failover looks its label up.
pub const FAILOVER_TABLE_MAX_REGIONS: usize = 128;

/// A region's published latency changes at most this often (see
/// [`RegionState::publish_measurement`]).
pub const MEASUREMENT_DWELL: Duration = Duration::from_secs(1);

/// Live per-region state, carried across reloads by region name.
#[derive(Debug)]
pub struct RegionState {
    /// Pre-resolved metric handles.
    pub metrics: RegionMetrics,
    /// Measured latency from this instance to the region's usable backends (µs), as
    /// published for ranking.
    measured_us: AtomicU32,
    /// When `measured_us` last changed ([`now_ms`] stamp; 0: never).
    measured_at: AtomicU32,
    /// Usable backends, as of the last measurement tick.
    usable: AtomicU32,
    /// The lowest backend tier with a usable member as of the last measurement tick;
    /// `u8::MAX` (every tier) when the region has no tiers or no usable member.
    active_tier: AtomicU8,
    /// Usable backends and all backends of the active tier (of the whole region when it
    /// has no tiers): what the panic threshold compares.
    tier_usable: AtomicU32,
    tier_members: AtomicU32,
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
            measured_at: AtomicU32::new(0),
            usable: AtomicU32::new(0),
            active_tier: AtomicU8::new(u8::MAX),
            tier_usable: AtomicU32::new(0),
            tier_members: AtomicU32::new(0),
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

    /// The highest backend tier requests may use (see [`crate::pick::PickInput::max_tier`]).
    pub fn active_tier(&self) -> u8 {
        self.active_tier.load(Ordering::Relaxed)
    }

    /// Usable backends and all backends of the tier in use, for the panic threshold
    /// ([`crate::pick::panic_mode`]): primaries that are down while backups serve do not
    /// make the region panic and spread requests over them.
    pub fn tier_counts(&self) -> (u32, u32) {
        (
            self.tier_usable.load(Ordering::Relaxed),
            self.tier_members.load(Ordering::Relaxed),
        )
    }

    /// Sets both values as they are (tests and benchmarks).
    pub fn publish(&self, measured_us: u32, usable: u32) {
        self.measured_us.store(measured_us, Ordering::Relaxed);
        self.usable.store(usable, Ordering::Relaxed);
        self.metrics.healthy.set(i64::from(usable));
    }

    /// Publishes a measurement (the measurement tick, and right after a swap).
    ///
    /// The usable count is published at once: health must act immediately. The measured
    /// latency moves with hysteresis, so that noise never reorders regions: the published
    /// value changes only when the measurement differs from it by more than `deadband_us`,
    /// and at most once per [`MEASUREMENT_DWELL`]. A region with no usable backend keeps
    /// its last latency (it ranks last anyway). Returns whether the latency changed.
    pub fn publish_measurement(
        &self,
        measured_us: u32,
        usable: u32,
        now: Instant,
        deadband_us: u32,
    ) -> bool {
        self.usable.store(usable, Ordering::Relaxed);
        self.metrics.healthy.set(i64::from(usable));
        if usable == 0 {
            return false;
        }
        let current = self.measured_us.load(Ordering::Relaxed);
        let at = self.measured_at.load(Ordering::Relaxed);
        let stamp = now_ms(now).max(1);
        let first = at == 0;
        let moved = current.abs_diff(measured_us) > deadband_us;
        let dwelt = u128::from(stamp.wrapping_sub(at)) >= MEASUREMENT_DWELL.as_millis();
        if first || (moved && dwelt) {
            self.measured_us.store(measured_us, Ordering::Relaxed);
            self.measured_at.store(stamp, Ordering::Relaxed);
            return true;
        }
        false
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
    /// The `Via` entry this node appends, by the client's protocol version (see
    /// [`Snapshot::via_for`]).
    via: [http::HeaderValue; 3],
    /// `client.trusted_proxies`, IPv4-mapped networks in IPv4 form
    /// ([`crate::client::canonical_nets`]).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Steering precomputed per client country (see [`CountryTable`]).
    pub country_table: CountryTable,
    /// Failover counters by (from, to) region index, resolved on first use so the request
    /// path never looks a label up (empty above [`FAILOVER_TABLE_MAX_REGIONS`] regions).
    failovers: Vec<OnceLock<prometheus::IntCounter>>,
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
                let mut capped = false;
                for b in &r.backends {
                    let weight = b.weight.max(1);
                    let mut add = |addr: SocketAddr,
                                   host: Option<&Arc<str>>,
                                   weight: u32,
                                   tier: u8| {
                        if members.len() >= MAX_REGION_MEMBERS {
                            if !capped {
                                capped = true;
                                tracing::warn!(region = %r.name, limit = MAX_REGION_MEMBERS, "region has more backend addresses than allowed; the rest are left out");
                            }
                            return;
                        }
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
                        members.push(Member {
                            state,
                            weight,
                            tier,
                        });
                    };
                    let backup = u8::from(b.backup);
                    match b.address.as_static() {
                        Some(addr) => add(addr, None, weight, backup),
                        None => {
                            for a in answers.get(&b.address).into_iter().flatten() {
                                // An SRV record's weight, times the configured one.
                                let w = weight.saturating_mul(a.weight).min(MAX_WEIGHT);
                                add(a.addr, Some(&a.host), w, a.tier.saturating_add(backup));
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
                via_value("1.0", &config.node.name),
                via_value("1.1", &config.node.name),
                via_value("2", &config.node.name),
            ],
            trusted_proxies: crate::client::canonical_nets(&config.client.trusted_proxies),
            config,
            regions,
            local,
            node_coords,
            local_order,
            locator,
            country_table: CountryTable::default(),
            failovers: Vec::new(),
            built_at: SystemTime::now(),
        };
        snap.country_table = CountryTable::build(&snap);
        let n = snap.regions.len();
        if n <= FAILOVER_TABLE_MAX_REGIONS {
            snap.failovers = (0..n * n).map(|_| OnceLock::new()).collect();
        }
        Ok(snap)
    }

    /// The `Via` entry for a request received as `version` (`1.0 <name>`, `1.1 <name>`,
    /// `2 <name>`; RFC 9110 §7.6.3: the protocol the request was *received* with).
    pub fn via_for(&self, version: http::Version) -> &http::HeaderValue {
        match version {
            http::Version::HTTP_09 | http::Version::HTTP_10 => &self.via[0],
            http::Version::HTTP_11 => &self.via[1],
            _ => &self.via[2],
        }
    }

    /// Measures every region at `now` and publishes the result (see
    /// [`RegionState::publish_measurement`]): its usable backends, and the mean of their
    /// smoothed latency estimates. Also refreshes each backend's `up` gauge. Returns whether
    /// every backend has been probed at least once.
    pub fn measure(&self, now: Instant) -> bool {
        let latency = &self.config.latency;
        let deadband = (latency.tolerance.as_micros() / 4).min(u128::from(u32::MAX)) as u32;
        let mut all_probed = true;
        for region in &self.regions {
            let mut usable = 0u32;
            // The lowest tier with a usable member, and the latency of that tier's usable
            // members: the ones requests go to.
            let mut tier = u8::MAX;
            let (mut sum, mut in_tier) = (0f64, 0u32);
            let mut tiered = false;
            for m in &region.members {
                let s = &m.state;
                tiered |= m.tier > 0;
                all_probed &= s.probes() > 0;
                let up = s.usable(now);
                s.metrics.up.set(i64::from(up));
                if up {
                    usable += 1;
                    if m.tier < tier {
                        (tier, sum, in_tier) = (m.tier, 0.0, 0);
                    }
                    if m.tier == tier {
                        in_tier += 1;
                        sum += f64::from(s.latency.smooth_estimate_us(now, latency.decay));
                    }
                }
            }
            let state = &region.state;
            let all = region.members.len();
            let (tier_usable, tier_members) = if tiered && tier != u8::MAX {
                let members = region.members.iter().filter(|m| m.tier == tier).count();
                (in_tier, members)
            } else {
                (usable, all)
            };
            state
                .active_tier
                .store(if tiered { tier } else { u8::MAX }, Ordering::Relaxed);
            state.tier_usable.store(tier_usable, Ordering::Relaxed);
            state.tier_members.store(
                u32::try_from(tier_members).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
            let measured = if in_tier > 0 {
                sum / f64::from(in_tier)
            } else {
                0.0
            };
            let measured = measured.clamp(0.0, f64::from(u32::MAX)) as u32;
            region
                .state
                .publish_measurement(measured, usable, now, deadband);
        }
        all_probed
    }

    /// Counts a request that steering preferred for region `from` but region `to` served.
    pub fn count_failover(&self, metrics: &Metrics, from: usize, to: usize) {
        let (Some(f), Some(t)) = (self.regions.get(from), self.regions.get(to)) else {
            return;
        };
        match self.failovers.get(from * self.regions.len() + to) {
            Some(cell) => cell
                .get_or_init(|| metrics.failover_counter(&f.name, &t.name))
                .inc(),
            None => metrics.failover_counter(&f.name, &t.name).inc(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RegionState {
        RegionState::new(Metrics::new().region("r"))
    }

    #[tokio::test(start_paused = true)]
    async fn published_latency_ignores_noise_and_changes_at_most_once_per_dwell() {
        let r = state();
        let now = Instant::now;
        assert!(
            r.publish_measurement(10_000, 2, now(), 5_000),
            "first value"
        );
        assert_eq!(r.measured_us(), 10_000);
        tokio::time::advance(MEASUREMENT_DWELL * 3).await;
        // Noise inside the dead band: nothing moves, however long it lasts.
        for v in [12_000, 8_000, 14_900, 5_100] {
            assert!(!r.publish_measurement(v, 2, now(), 5_000), "{v}");
            tokio::time::advance(MEASUREMENT_DWELL).await;
        }
        assert_eq!(r.measured_us(), 10_000);
        // A real shift is published ...
        assert!(r.publish_measurement(40_000, 2, now(), 5_000));
        assert_eq!(r.measured_us(), 40_000);
        // ... and the next shift waits for the dwell time, so the value cannot flap on
        // every 100 ms tick.
        tokio::time::advance(MEASUREMENT_DWELL / 2).await;
        assert!(!r.publish_measurement(10_000, 2, now(), 5_000));
        assert_eq!(r.measured_us(), 40_000);
        tokio::time::advance(MEASUREMENT_DWELL / 2).await;
        assert!(r.publish_measurement(10_000, 2, now(), 5_000));
        assert_eq!(r.measured_us(), 10_000);
    }

    #[tokio::test]
    async fn the_tier_in_use_and_its_counts_follow_health() {
        use crate::health::Health;
        let text = "[node]\nregion = \"a\"\n[regions.a]\nlatitude = 1.0\nlongitude = 2.0\nbackends = [\n  { address = \"127.0.0.1:1\" },\n  { address = \"127.0.0.1:2\" },\n  { address = \"127.0.0.1:3\", backup = true },\n]\n[regions.b]\nlatitude = 1.0\nlongitude = 3.0\nbackends = [{ address = \"127.0.0.1:4\" }, { address = \"127.0.0.1:5\" }]\n";
        let config = meridian_config::parse(text, "t.toml", None).unwrap();
        let locator = Arc::new(meridian_geoip::Locator::builtin(Vec::new()).unwrap());
        let metrics = Metrics::new();
        let snap = Snapshot::build(
            Arc::new(config),
            locator,
            None,
            &metrics,
            &Default::default(),
        )
        .unwrap();
        let (a, b) = (&snap.regions[0], &snap.regions[1]);
        let set = |r: &RegionPool, health: &[Health]| {
            for (m, h) in r.members.iter().zip(health) {
                m.state.health.set(*h);
            }
        };
        use Health::{Down, Up};
        let measured = |r: &RegionPool| {
            snap.measure(Instant::now());
            (
                r.state.active_tier(),
                r.state.tier_counts(),
                r.state.usable(),
            )
        };
        set(a, &[Up, Down, Up]);
        assert_eq!(
            measured(a),
            (0, (1, 2), 2),
            "a primary is up: tier 0, half of it"
        );
        set(a, &[Down, Down, Up]);
        assert_eq!(
            measured(a),
            (1, (1, 1), 1),
            "backups only: tier 1, all of it"
        );
        set(a, &[Down, Down, Down]);
        assert_eq!(measured(a), (u8::MAX, (0, 3), 0), "nobody: every tier");
        // A region without tiers: the whole region counts.
        set(b, &[Up, Down]);
        assert_eq!(measured(b), (u8::MAX, (1, 2), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn usable_count_is_published_at_once_and_no_backend_keeps_the_latency() {
        let r = state();
        let now = Instant::now;
        r.publish_measurement(10_000, 2, now(), 5_000);
        r.publish_measurement(90_000, 0, now(), 5_000);
        assert_eq!((r.usable(), r.measured_us()), (0, 10_000));
        r.publish_measurement(10_000, 1, now(), 5_000);
        assert_eq!(r.usable(), 1);
    }
}

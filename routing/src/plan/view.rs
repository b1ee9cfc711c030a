//! What steering and ranking work on: a [`View`] of a snapshot's regions and config, and
//! the [`Plan`] they produce.

use meridian_config::Config;
use meridian_geoip::Coordinates;
use smallvec::SmallVec;

use crate::snapshot::region::RegionPool;

/// Candidate lists up to this many regions live on the stack.
pub const INLINE_REGIONS: usize = 64;

/// An ordered list of region indices.
pub type RegionList = SmallVec<[u16; INLINE_REGIONS]>;

/// The outcome of steering for one request.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Candidate regions, best first.
    pub regions: RegionList,
    /// Whether data residency limited the list.
    pub restricted: bool,
    /// The region steering put first, before ranking by health and latency: a request
    /// served elsewhere counts as a failover from it.
    pub preferred: Option<u16>,
    /// The service whose pools the regions are (an index into `Snapshot::services`).
    pub service: u16,
}

/// Estimated round-trip time in microseconds over `km` of fibre.
pub fn distance_rtt_us(snap: View<'_>, km: f64) -> f64 {
    let lat = &snap.config.latency;
    lat.rtt_base.as_secs_f64() * 1e6 + km / 100.0 * lat.rtt_per_100km.as_secs_f64() * 1e6
}

/// Whole microseconds, saturating (ranking works in integers).
pub fn micros(us: f64) -> u32 {
    us.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// What a plan reads: the config, one service's pools (live measurements) by region, the
/// regions' places and this node's place.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The validated config (steering, residency, latency settings).
    pub config: &'a Config,
    /// The service's pool in each region, by region index (`None` where it does not run).
    pub pools: &'a [Option<RegionPool>],
    /// Every region's coordinates, by index.
    pub coords: &'a [Coordinates],
    /// This node's coordinates.
    pub node_coords: Coordinates,
    /// The local region first, then the others by distance from this node.
    pub local_order: &'a RegionList,
}

impl View<'_> {
    /// The service's pool in region `i`.
    pub fn pool(&self, i: usize) -> Option<&RegionPool> {
        self.pools.get(i).and_then(Option::as_ref)
    }

    /// Whether the service runs in region `i`.
    pub fn present(&self, i: usize) -> bool {
        self.pool(i).is_some()
    }
}

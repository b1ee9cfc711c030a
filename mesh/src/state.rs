//! The document every instance serves about itself: identity, config digest, readiness,
//! its own region's backends, and the peers it cannot reach.

use serde::{Deserialize, Serialize};

/// One instance's view of itself, as served on its mesh endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// The instance's name (`node.name`).
    pub name: String,
    /// Its region.
    pub region: String,
    /// The generation of its routing snapshot.
    pub generation: u64,
    /// A digest of its configuration (`node.name` left out): instances with different
    /// digests run different configurations.
    pub config_digest: String,
    /// Whether it is ready to serve.
    pub ready: bool,
    /// Whether it is stopping or handing over to a new process.
    pub draining: bool,
    /// Its own region's backends, as it probes them.
    pub region_health: RegionReport,
    /// Peers it cannot reach (by name); every other peer it polls is reachable.
    pub unreachable: Vec<String>,
}

/// What an instance knows of its own region's backends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionReport {
    /// Usable backends.
    pub usable: u32,
    /// All backends.
    pub total: u32,
    /// Measured latency from the instance to its usable backends, in milliseconds.
    pub latency_ms: f64,
    /// Every backend, by stable ID (`region/address`).
    pub backends: Vec<BackendReport>,
}

/// One backend of a region report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Stable ID: `region/address`.
    pub id: String,
    /// Whether it may take requests (probes pass, not ejected, not drained or in
    /// maintenance).
    pub usable: bool,
    /// What its operator set it to (`ready`, `drain`, `maintenance`); absent from
    /// instances that predate runtime states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

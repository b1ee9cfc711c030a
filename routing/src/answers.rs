//! What DNS discovery hands the snapshot: the addresses each backend name resolved to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_config::BackendAddress;

/// The highest backend weight (the top of the config's `weight` range). SRV weights are
/// brought into `1..=MAX_WEIGHT`.
pub const MAX_WEIGHT: u32 = 1000;

/// One address a name resolved to, with the host name it came from (the TLS server name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolved {
    /// The rank of the address's SRV priority group among the name's groups (0: the most
    /// preferred); 0 for a host name. Comes first, so that addresses sort by preference.
    pub tier: u8,
    /// The address (the record's port for SRV, the configured port otherwise).
    pub addr: SocketAddr,
    /// The host name: the configured one, or the SRV target.
    pub host: Arc<str>,
    /// The address's weight from DNS: its SRV record's weight (0 counts as 1; a priority
    /// group whose largest weight exceeds [`MAX_WEIGHT`] is scaled down to it), 1 for a
    /// host name. The backend's configured weight multiplies it.
    pub weight: u32,
}

/// Name → last good addresses, as snapshot builds consume it.
pub type Answers = HashMap<BackendAddress, Vec<Resolved>>;

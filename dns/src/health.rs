//! Which instances GeoDNS may answer with: per region, the public addresses of its
//! instances that the mesh holds up and whose region has a usable backend.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use meridian_config::Instance;
use meridian_routing::snapshot::Snapshot;

/// An instance as the shared health view sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceState {
    /// The mesh holds it up, and it says it is ready and not draining.
    pub up: bool,
    /// Usable backends of its region, as it reports them.
    pub usable_backends: u32,
}

impl InstanceState {
    /// Whether GeoDNS may send clients to it.
    pub fn answerable(self) -> bool {
        self.up && self.usable_backends > 0
    }
}

/// Addresses of one family, split by health.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Addresses<T> {
    /// Of the instances that may be answered.
    pub up: Vec<T>,
    /// Of every instance (what a fail-open answer gives).
    pub all: Vec<T>,
}

/// One region as GeoDNS sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegionHealth {
    /// The region's name.
    pub name: Arc<str>,
    /// IPv4 addresses of its instances.
    pub v4: Addresses<Ipv4Addr>,
    /// IPv6 addresses of its instances.
    pub v6: Addresses<Ipv6Addr>,
}

impl<T> Default for Addresses<T> {
    fn default() -> Self {
        Addresses {
            up: Vec::new(),
            all: Vec::new(),
        }
    }
}

impl RegionHealth {
    /// Whether the region can be answered: an instance with an address is up.
    pub fn answerable(&self) -> bool {
        !self.v4.up.is_empty() || !self.v6.up.is_empty()
    }
}

/// Every region, by the snapshot's region index.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Regions in config order.
    pub regions: Vec<RegionHealth>,
    /// Changes whenever what may be answered changes (drives the SOA serial).
    pub fingerprint: u64,
}

impl Health {
    /// The health of `snap`'s regions, asking `state` about each instance.
    pub fn build(snap: &Snapshot, state: impl Fn(&Instance) -> InstanceState) -> Health {
        let mut regions = Vec::with_capacity(snap.config.regions.len());
        for region in &snap.config.regions {
            let mut h = RegionHealth {
                name: region.name.as_str().into(),
                v4: Addresses::default(),
                v6: Addresses::default(),
            };
            for inst in &region.instances {
                let answerable = state(inst).answerable();
                for ip in &inst.public {
                    match ip.to_canonical() {
                        IpAddr::V4(v4) => {
                            push_unique(&mut h.v4.all, v4);
                            if answerable {
                                push_unique(&mut h.v4.up, v4);
                            }
                        }
                        IpAddr::V6(v6) => {
                            push_unique(&mut h.v6.all, v6);
                            if answerable {
                                push_unique(&mut h.v6.up, v6);
                            }
                        }
                    }
                }
            }
            regions.push(h);
        }
        let mut hasher = DefaultHasher::new();
        regions.hash(&mut hasher);
        Health {
            regions,
            fingerprint: hasher.finish(),
        }
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

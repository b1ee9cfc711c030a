//! The instances of every region and how they know each other (the mesh).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::secrets::{PrivateKey, Secret};

/// One Meridian instance of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique across all regions; `node.name` of the process that is this instance.
    pub name: String,
    /// The addresses clients reach it at (what GeoDNS answers with).
    pub public: Vec<IpAddr>,
    /// Its proxy listener, for requests relayed to its region by other instances.
    pub proxy: SocketAddr,
    /// Its mesh endpoint.
    pub mesh: SocketAddr,
}

/// How other regions' instances reach a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// Directly, to its backends (the default).
    #[default]
    Backends,
    /// Through its instances' proxy listeners (relay): its backends need not be reachable
    /// from elsewhere.
    Instances,
}

impl Reach {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Backends => "backends",
            Reach::Instances => "instances",
        }
    }
}

/// Mutual TLS between instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTls {
    /// This instance's certificate chain file.
    pub cert_file: PathBuf,
    /// Its key file.
    pub key_file: PathBuf,
    /// The CA file peers' certificates are verified against (and that signs ours).
    pub ca_file: PathBuf,
    /// The chain as read.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key as read.
    pub key: PrivateKey,
    /// The CA certificates as read.
    pub ca: Vec<CertificateDer<'static>>,
}

/// How the instances poll each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    /// The shared secret that authenticates requests and signs answers.
    pub secret: Option<Secret>,
    /// Mutual TLS, optional (on top of the secret, or instead of it).
    pub tls: Option<MeshTls>,
    /// How often every peer is polled.
    pub interval: Duration,
    /// How long one poll may take.
    pub timeout: Duration,
    /// Consecutive good polls that bring a peer back.
    pub rise: u32,
    /// Consecutive failed polls after which this instance cannot reach a peer.
    pub fall: u32,
}

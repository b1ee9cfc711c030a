//! The file layer of the fleet: `instances` of a region, `[mesh]` and `[geodns]`.

use serde::{Deserialize, Deserializer};

use super::table::{table_only, TableOnly, S};

/// One entry of `instances`: a Meridian instance running in the region.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct InstanceFile {
    pub name: Option<S<String>>,
    pub public: Option<S<Vec<S<String>>>>,
    pub proxy: Option<S<String>>,
    pub mesh: Option<S<String>>,
}

/// `[mesh]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct MeshFile {
    pub secret: Option<S<String>>,
    pub secret_file: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub tls: Option<MeshTlsFile>,
}

/// `[geodns]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct GeoDnsFile {
    pub listen: Option<S<Vec<S<String>>>>,
    pub ttl: Option<S<String>>,
    pub max_addresses: Option<S<i64>>,
    pub udp_payload: Option<S<i64>>,
    pub tcp_idle: Option<S<String>>,
    pub max_tcp_connections: Option<S<i64>>,
    pub threads: Option<S<i64>>,
    pub serial: Option<S<i64>>,
    pub zones: Option<S<Vec<S<ZoneFile>>>>,
}

/// One `[[geodns.zones]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct ZoneFile {
    pub name: Option<S<String>>,
    pub nameservers: Option<S<Vec<S<String>>>>,
    pub hostmaster: Option<S<String>>,
    pub soa_ttl: Option<S<String>>,
    pub negative_ttl: Option<S<String>>,
    pub names: Option<S<Vec<S<String>>>>,
    pub records: Option<S<Vec<S<RecordFile>>>>,
}

/// One entry of a zone's `records`.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct RecordFile {
    pub name: Option<S<String>>,
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub value: Option<S<String>>,
    pub ttl: Option<S<String>>,
}

/// `[mesh.tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct MeshTlsFile {
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
    pub ca: Option<S<String>>,
}

table_only!(
    InstanceFile,
    MeshFile,
    MeshTlsFile,
    GeoDnsFile,
    ZoneFile,
    RecordFile
);

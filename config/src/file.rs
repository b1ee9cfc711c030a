//! The file layer: serde structures mirroring the TOML file, before validation.
//!
//! Everything is optional here so that validation can report *all* missing or bad
//! values at once; serde only rejects syntax errors, unknown keys and wrong types.
//! Values that later checks complain about are wrapped in [`toml::Spanned`] so errors
//! can point at them. Named tables are never `Spanned` (implicit tables such as
//! `regions` in `[regions.a]` have no span, which `Spanned` rejects); array elements
//! always have one. The positions of table keys come from `KeySpans` (`keys.rs`), a second,
//! lenient pass.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

mod table;
pub(crate) use table::S;
use table::{table_only, TableOnly};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub node: NodeFile,
    pub listeners: ListenersFile,
    pub threads: Option<S<i64>>,
    pub timeouts: TimeoutsFile,
    pub logging: LoggingFile,
    pub health_check: HealthCheckFile,
    pub regions: Option<Entries<RegionFile>>,
    pub geoip: GeoIpFile,
    pub client: ClientFile,
    pub steering: SteeringFile,
    pub residency: ResidencyFile,
    pub latency: LatencyFile,
    pub outlier: OutlierFile,
    pub retry: RetryFile,
    pub reload: ReloadFile,
    pub dns: DnsFile,
    pub limits: LimitsFile,
    pub admin: AdminFile,
    pub mesh: MeshFile,
    pub geodns: GeoDnsFile,
    pub sticky: Option<StickyFile>,
    pub services: Option<Entries<ServiceFile>>,
    pub upstream: UpstreamFile,
}

/// `[node]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct NodeFile {
    pub region: Option<S<String>>,
    pub name: Option<S<String>>,
}

/// `[listeners]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct ListenersFile {
    pub http: Option<S<Vec<S<String>>>>,
    pub admin: Option<S<String>>,
    pub proxy_protocol: Option<S<bool>>,
    pub https: Option<S<Vec<S<HttpsFile>>>>,
    pub redirect_http: Option<S<Vec<S<String>>>>,
    pub hsts: Option<S<String>>,
    pub preserve_header_case: Option<S<bool>>,
}

/// One `[[listeners.https]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct HttpsFile {
    pub address: Option<S<String>>,
    pub certificates: Option<S<Vec<S<CertificateFile>>>>,
    pub proxy_protocol: Option<S<bool>>,
}

/// One entry of `certificates`.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct CertificateFile {
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
    pub names: Option<S<Vec<S<String>>>>,
    pub default: Option<S<bool>>,
}

/// `[regions.NAME.tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct UpstreamTlsFile {
    pub enabled: Option<bool>,
    pub sni: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub client_cert: Option<S<String>>,
    pub client_key: Option<S<String>>,
    pub insecure_skip_verify: Option<bool>,
}

/// `[timeouts]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct TimeoutsFile {
    pub connect: Option<S<String>>,
    pub read: Option<S<String>>,
    pub write: Option<S<String>>,
    pub idle: Option<S<String>>,
    pub downstream_idle: Option<S<String>>,
    pub first_byte: Option<S<String>>,
    pub request_header: Option<S<String>>,
    pub client_write: Option<S<String>>,
    pub h2_idle: Option<S<String>>,
    pub tunnel: Option<S<String>>,
    pub shutdown_grace: Option<S<String>>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct LimitsFile {
    pub max_header_size: Option<S<Size>>,
    pub max_body_size: Option<S<Size>>,
    pub max_connections: Option<S<i64>>,
    pub max_connections_per_ip: Option<S<i64>>,
    pub max_requests_per_connection: Option<S<i64>>,
    pub max_concurrent_streams: Option<S<i64>>,
    pub max_inflight: Option<S<i64>>,
    pub max_memory: Option<S<Size>>,
}

/// A size: a byte count, or a string with a unit (`"32KiB"`, `"1 MiB"`, `"1GB"`).
#[derive(Debug, Clone)]
pub(crate) enum Size {
    /// A plain number of bytes.
    Bytes(i64),
    /// A number and a unit.
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"32KiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct AdminFile {
    pub token: Option<S<String>>,
    pub token_file: Option<S<String>>,
    pub hosts: Option<S<Vec<S<String>>>>,
    pub state_file: Option<S<String>>,
}

/// `[logging]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct LoggingFile {
    pub level: Option<S<String>>,
    pub format: Option<S<String>>,
    pub access_log: Option<bool>,
}

/// `[health_check]` and `[regions.X.health_check]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct HealthCheckFile {
    pub kind: Option<S<String>>,
    pub path: Option<S<String>>,
    pub host: Option<S<String>>,
    pub expect_status: Option<S<StatusSpec>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub grpc_service: Option<S<String>>,
}

/// `[upstream]`, `[regions.X.upstream]`, `[services.X.upstream]` and
/// `[services.X.regions.Y.upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    pub protocol: Option<S<String>>,
    pub h2_max_streams: Option<S<i64>>,
    pub h2_ping_interval: Option<S<String>>,
}

/// `expect_status`: a string such as `"200-399"`, or a bare integer such as `200`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusSpec(pub String);

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = StatusSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code or range such as \"200-399\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusSpec, E> {
                Ok(StatusSpec(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSpec, E> {
                Ok(StatusSpec(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSpec, E> {
                Ok(StatusSpec(v.to_string()))
            }
        }
        deserializer.deserialize_any(StatusVisitor)
    }
}

/// `[regions.NAME]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct RegionFile {
    pub latitude: Option<S<f64>>,
    pub longitude: Option<S<f64>>,
    pub balance: Option<S<String>>,
    pub hash_key: Option<S<String>>,
    pub backends: Option<S<Vec<S<BackendFile>>>>,
    pub health_check: Option<HealthCheckFile>,
    pub tls: Option<UpstreamTlsFile>,
    pub upstream: Option<UpstreamFile>,
    pub instances: Option<S<Vec<S<InstanceFile>>>>,
    pub reach: Option<S<String>>,
    pub slow_start: Option<S<String>>,
}

/// `[services.NAME]`: a service, its routes and its pools by region.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct ServiceFile {
    pub hosts: Option<S<Vec<S<String>>>>,
    pub paths: Option<S<Vec<S<String>>>>,
    pub default: Option<S<bool>>,
    pub balance: Option<S<String>>,
    pub hash_key: Option<S<String>>,
    pub health_check: Option<HealthCheckFile>,
    pub tls: Option<UpstreamTlsFile>,
    pub upstream: Option<UpstreamFile>,
    pub slow_start: Option<S<String>>,
    pub sticky: Option<StickyFile>,
    pub certificates: Option<S<Vec<S<CertificateFile>>>>,
    pub regions: Option<Entries<PoolFile>>,
}

/// `[services.NAME.regions.REGION]`: a service's pool in one region.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct PoolFile {
    pub balance: Option<S<String>>,
    pub hash_key: Option<S<String>>,
    pub backends: Option<S<Vec<S<BackendFile>>>>,
    pub health_check: Option<HealthCheckFile>,
    pub tls: Option<UpstreamTlsFile>,
    pub upstream: Option<UpstreamFile>,
    pub slow_start: Option<S<String>>,
}

/// `[sticky]` and `[services.NAME.sticky]`: sticky sessions by an inserted cookie.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct StickyFile {
    pub enabled: Option<S<bool>>,
    pub cookie: Option<S<String>>,
    pub max_age: Option<S<String>>,
    pub path: Option<S<String>>,
    pub secure: Option<S<bool>>,
    pub http_only: Option<S<bool>>,
    pub same_site: Option<S<String>>,
    pub draining: Option<S<String>>,
}

/// One entry of `backends`.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct BackendFile {
    pub address: Option<S<String>>,
    pub srv: Option<S<String>>,
    pub weight: Option<S<i64>>,
    pub backup: Option<bool>,
}

/// `[dns]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct DnsFile {
    pub nameservers: Option<S<Vec<S<String>>>>,
    pub min_ttl: Option<S<String>>,
    pub max_ttl: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub allow_loopback: Option<bool>,
}

/// `[geoip]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct GeoIpFile {
    pub database: Option<S<String>>,
    pub overrides: Vec<S<OverrideFile>>,
}

/// One `[[geoip.overrides]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct OverrideFile {
    pub cidr: Option<S<String>>,
    pub country: Option<S<String>>,
    pub latitude: Option<S<f64>>,
    pub longitude: Option<S<f64>>,
}

/// `[client]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct ClientFile {
    pub trusted_proxies: Vec<S<String>>,
}

/// A region list, as in `DE = ["eu-west", "us-east"]`.
pub(crate) type RegionList = S<Vec<S<String>>>;

/// `[steering]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct SteeringFile {
    pub policy: Option<S<String>>,
    pub order: Option<RegionList>,
    pub expose_headers: Option<bool>,
    pub countries: Entries<RegionList>,
    pub continents: Entries<RegionList>,
}

/// `[residency]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct ResidencyFile {
    pub countries: Entries<RegionList>,
    pub continents: Entries<RegionList>,
}

/// `[latency]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct LatencyFile {
    pub decay: Option<S<String>>,
    pub tolerance: Option<S<String>>,
    pub rtt_per_100km: Option<S<String>>,
    pub rtt_base: Option<S<String>>,
}

/// `[outlier]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct OutlierFile {
    pub consecutive_failures: Option<S<i64>>,
    pub base_ejection: Option<S<String>>,
    pub max_ejection: Option<S<String>>,
    pub panic_threshold: Option<S<i64>>,
    pub max_ejection_percent: Option<S<i64>>,
}

/// `[retry]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct RetryFile {
    pub attempts: Option<S<i64>>,
    pub retry_after: Option<S<String>>,
    pub budget_percent: Option<S<i64>>,
    pub min_per_second: Option<S<i64>>,
    pub grpc_on: Option<S<Vec<S<String>>>>,
    pub grpc_idempotent: Option<S<Vec<S<String>>>>,
}

/// `[reload]`
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub(crate) struct ReloadFile {
    pub watch: Option<bool>,
    pub debounce: Option<S<String>>,
}

table_only!(
    FileConfig,
    NodeFile,
    ListenersFile,
    HttpsFile,
    CertificateFile,
    UpstreamTlsFile,
    TimeoutsFile,
    LoggingFile,
    HealthCheckFile,
    RegionFile,
    BackendFile,
    DnsFile,
    GeoIpFile,
    OverrideFile,
    ClientFile,
    SteeringFile,
    ResidencyFile,
    LatencyFile,
    OutlierFile,
    RetryFile,
    ReloadFile,
    LimitsFile,
    AdminFile,
    ServiceFile,
    PoolFile,
    StickyFile,
    UpstreamFile
);

mod fleet;
pub(crate) use fleet::{GeoDnsFile, InstanceFile, MeshFile, MeshTlsFile, RecordFile, ZoneFile};

/// A table with arbitrary keys, in file order.
#[derive(Debug)]
pub(crate) struct Entries<V>(pub Vec<(String, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, V>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

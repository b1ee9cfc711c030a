//! The authoritative GeoDNS server: its listeners, zones and answer settings.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// `[geodns]`: off unless `listen` names addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoDns {
    /// UDP and TCP addresses to serve on (empty: GeoDNS is off).
    pub listen: Vec<SocketAddr>,
    /// TTL of geo-steered answers.
    pub ttl: Duration,
    /// The most addresses in one answer.
    pub max_addresses: usize,
    /// The largest UDP response this server sends to EDNS clients (bytes).
    pub udp_payload: u16,
    /// How long an idle TCP connection is kept.
    pub tcp_idle: Duration,
    /// The most TCP connections served at once.
    pub max_tcp_connections: usize,
    /// Worker threads (and UDP sockets per address, spread by the kernel).
    pub threads: usize,
    /// The SOA serial of the first answers (`None`: the Unix time at start); it moves up
    /// by one whenever what is answered changes.
    pub serial: Option<u32>,
    /// The zones this server is authoritative for.
    pub zones: Vec<Zone>,
}

impl GeoDns {
    /// Whether GeoDNS is on.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}

impl Default for GeoDns {
    fn default() -> Self {
        GeoDns {
            listen: Vec::new(),
            ttl: Duration::from_secs(30),
            max_addresses: 4,
            udp_payload: 1232,
            tcp_idle: Duration::from_secs(10),
            max_tcp_connections: 1000,
            threads: 2,
            serial: None,
            zones: Vec::new(),
        }
    }
}

/// One zone. Names are lower-case, fully qualified, without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone's apex, e.g. `example.com`.
    pub name: String,
    /// Its name servers (NS records at the apex; SOA MNAME is the first).
    pub nameservers: Vec<String>,
    /// The SOA RNAME (the mailbox, `.` for `@`).
    pub hostmaster: String,
    /// TTL of the SOA and NS records, and of negative answers (SOA MINIMUM).
    pub soa_ttl: Duration,
    /// TTL of negative answers (NXDOMAIN, NODATA): the SOA MINIMUM field.
    pub negative_ttl: Duration,
    /// Names answered with the public addresses of the best region's healthy instances.
    pub names: Vec<String>,
    /// Static records.
    pub records: Vec<StaticRecord>,
}

/// One static record of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRecord {
    /// Its owner name.
    pub name: String,
    /// Its TTL.
    pub ttl: Duration,
    /// Its data.
    pub data: RecordData,
}

/// The data of a static record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// An alias (the target name, fully qualified).
    Cname(String),
    /// Text (one string, split into 255-byte chunks on the wire).
    Txt(String),
    /// A mail exchanger: preference and host.
    Mx(u16, String),
}

impl RecordData {
    /// The record type's name.
    pub fn type_name(&self) -> &'static str {
        match self {
            RecordData::A(_) => "A",
            RecordData::Aaaa(_) => "AAAA",
            RecordData::Cname(_) => "CNAME",
            RecordData::Txt(_) => "TXT",
            RecordData::Mx(..) => "MX",
        }
    }
}

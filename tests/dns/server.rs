//! The DNS side of `tests/dns.rs`: an authoritative server (hickory-server, in-memory zone)
//! for `example.test.` on a loopback port, whose records the tests change while Meridian
//! runs. Queries for names under `slow.example.test.` can be held until the test releases
//! them (a name server that does not answer for a while).

#![allow(dead_code)] // shared by several test crates, each using a part

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use tokio::sync::watch;

/// The TTL of records set without one.
pub const DEFAULT_TTL: u32 = 1;

/// An authoritative server for `example.test.` with records the test changes.
pub struct TestDns {
    /// Its UDP (and TCP) address.
    pub addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    serial: AtomicU32,
    release: watch::Sender<bool>,
}

/// A parsed absolute name.
pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// An SRV record's data.
pub fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(priority, weight, port, name(target)))
}

/// The zone's catalog, holding queries for `slow.example.test.` until released.
struct Handler {
    catalog: Catalog,
    slow: LowerName,
    released: watch::Receiver<bool>,
}

#[async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let held = request
            .request_info()
            .is_ok_and(|i| self.slow.zone_of(i.query.name()));
        if held {
            let mut released = self.released.clone();
            // Bounded: the sender lives as long as the test's TestDns.
            let _ = tokio::time::timeout(Duration::from_secs(120), released.wait_for(|r| *r)).await;
        }
        self.catalog.handle_request(request, response_handle).await
    }
}

impl TestDns {
    /// Starts the server on an ephemeral loopback port (UDP, and TCP on the same port
    /// when it is free).
    pub async fn start() -> TestDns {
        let origin = name("example.test.");
        let zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        let soa = SOA::new(
            name("ns.example.test."),
            name("admin.example.test."),
            1,
            60,
            60,
            60,
            1,
        );
        zone.upsert(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 1)
            .await;
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::from(origin),
            vec![zone.clone() as Arc<dyn AuthorityObject>],
        );
        let (release, released) = watch::channel(true);
        let handler = Handler {
            catalog,
            slow: LowerName::from(name("slow.example.test.")),
            released,
        };
        let mut server = ServerFuture::new(handler);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            server.register_listener(tcp, Duration::from_secs(5));
        }
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        TestDns {
            addr,
            zone,
            serial: AtomicU32::new(2),
            release,
        }
    }

    /// Holds (`true`) or answers (`false`) queries for names under `slow.example.test.`.
    pub fn hold_slow(&self, hold: bool) {
        self.release.send_replace(!hold);
    }

    /// Replaces the records of `host` of type `kind` with `rdata` (none: removes them),
    /// with the given TTL in seconds.
    pub async fn set_ttl(&self, host: &str, kind: RecordType, rdata: Vec<RData>, ttl: u32) {
        let n = name(host);
        self.zone
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::from(n.clone()), kind));
        for r in rdata {
            let serial = self.serial.fetch_add(1, Ordering::Relaxed);
            self.zone
                .upsert(Record::from_rdata(n.clone(), ttl, r), serial)
                .await;
        }
    }

    /// [`TestDns::set_ttl`] with [`DEFAULT_TTL`].
    pub async fn set(&self, host: &str, kind: RecordType, rdata: Vec<RData>) {
        self.set_ttl(host, kind, rdata, DEFAULT_TTL).await;
    }

    /// Sets the A records of `host` (TTL [`DEFAULT_TTL`]).
    pub async fn set_a(&self, host: &str, ips: &[Ipv4Addr]) {
        self.set_a_ttl(host, ips, DEFAULT_TTL).await;
    }

    /// Sets the A records of `host` with a TTL in seconds.
    pub async fn set_a_ttl(&self, host: &str, ips: &[Ipv4Addr], ttl: u32) {
        let rdata = ips.iter().map(|ip| RData::A(A::from(*ip))).collect();
        self.set_ttl(host, RecordType::A, rdata, ttl).await;
    }

    /// Sets the AAAA records of `host` (TTL [`DEFAULT_TTL`]).
    pub async fn set_aaaa(&self, host: &str, ips: &[Ipv6Addr]) {
        let rdata = ips.iter().map(|ip| RData::AAAA(AAAA::from(*ip))).collect();
        self.set(host, RecordType::AAAA, rdata).await;
    }
}

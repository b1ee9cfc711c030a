//! End-to-end DNS discovery: a small authoritative DNS server (hickory-server, in-memory
//! zone) on a loopback port, whose records change during the test; Meridian resolves its
//! backends there and follows the changes.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use meridian_demo_backend::{Backend, BackendSpec};

const T: Duration = Duration::from_secs(20);

/// An authoritative server for `example.test.` with records the test changes.
struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    serial: AtomicU32,
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

impl TestDns {
    async fn start() -> TestDns {
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
        let mut server = ServerFuture::new(catalog);
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
        }
    }

    /// Replaces the records of `host` of type `kind` with `rdata` (none: removes them).
    async fn set(&self, host: &str, kind: RecordType, rdata: Vec<RData>) {
        let n = name(host);
        self.zone
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::from(n.clone()), kind));
        for r in rdata {
            let serial = self.serial.fetch_add(1, Ordering::Relaxed);
            self.zone
                .upsert(Record::from_rdata(n.clone(), 1, r), serial)
                .await;
        }
    }

    async fn set_a(&self, host: &str, ips: &[Ipv4Addr]) {
        let rdata = ips.iter().map(|ip| RData::A(A::from(*ip))).collect();
        self.set(host, RecordType::A, rdata).await;
    }
}

fn config(listen: SocketAddr, admin: SocketAddr, dns: SocketAddr, regions: &str) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[dns]\nnameservers = [\"{dns}\"]\nmin_ttl = \"200ms\"\nmax_ttl = \"1s\"\ntimeout = \"500ms\"\n"
    ));
    cfg.push_str(regions);
    cfg
}

fn backend_ids(m: &Meridian) -> Vec<String> {
    m.status()["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}={}", b["address"], b["health"]))
        .collect()
}

/// Waits until `cond` holds on `/status` (bounded).
fn wait_status(m: &Meridian, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + T;
    loop {
        let s = m.status();
        if cond(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached after {T:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_backend(s: &serde_json::Value, addr: &str, health: &str) -> bool {
    s["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["address"] == addr && b["health"] == health)
}

fn backend_count(s: &serde_json::Value) -> usize {
    s["regions"][0]["backends"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostname_backends_follow_dns_changes_and_survive_failures() {
    let dns = TestDns::start().await;
    let b1 = backend("b1", "local").await;
    let port = b1.addr().port();
    // The same port on another loopback address: the host name's second home.
    let b2 = Backend::start(BackendSpec::new(
        "b2",
        "local",
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port),
    ))
    .await
    .unwrap();
    dns.set_a("api.example.test.", &[Ipv4Addr::new(127, 0, 0, 1)])
        .await;

    let (listen, admin) = (free_addr(), free_addr());
    let regions = format!(
        "\n[regions.local]\nlatitude = 50.0\nlongitude = 8.0\nbalance = \"round_robin\"\nbackends = [{{ address = \"api.example.test:{port}\" }}]\n"
    );
    let m = start(config(listen, admin, dns.addr, &regions), listen, admin).await;
    let first = format!("127.0.0.1:{port}");
    let second = format!("127.0.0.2:{port}");
    assert_eq!(backend_ids(&m), vec![format!("\"{first}\"=\"up\"")]);
    let s = m.status();
    assert_eq!(s["regions"][0]["backends"][0]["host"], "api.example.test");
    assert_eq!(
        s["dns"]["names"][0]["name"],
        format!("api.example.test:{port}")
    );
    assert_eq!(s["dns"]["names"][0]["resolved"], true);
    let c = client();
    for _ in 0..5 {
        let r = c.get(m.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["x-backend"], "b1");
    }

    // The record moves: the new address becomes a backend (probed at once), the old one
    // leaves the pool (drained: no new requests).
    dns.set_a("api.example.test.", &[Ipv4Addr::new(127, 0, 0, 2)])
        .await;
    let m = blocking(move || {
        wait_status(&m, "the new address up and the old gone", |s| {
            has_backend(s, &second, "up") && backend_count(s) == 1
        });
        m
    })
    .await;
    b1.reset_counts();
    for _ in 0..10 {
        let r = c.get(m.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-backend"], "b2");
    }
    assert_eq!(b1.hits(), 0, "the old address gets no new requests");

    // Both addresses: both serve, with their own state.
    dns.set_a(
        "api.example.test.",
        &[Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
    )
    .await;
    let m = blocking(move || {
        wait_status(&m, "two backends up", |s| {
            backend_count(s) == 2 && s["regions"][0]["usable_backends"] == 2
        });
        m
    })
    .await;
    b1.reset_counts();
    b2.reset_counts();
    for _ in 0..20 {
        assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
    }
    assert!(
        b1.hits() >= 5 && b2.hits() >= 5,
        "{} {}",
        b1.hits(),
        b2.hits()
    );

    // Resolution fails (the records are gone): the last good set is kept and the failure
    // is visible in /status and the metrics.
    dns.set("api.example.test.", RecordType::A, vec![]).await;
    let m = blocking(move || {
        wait_status(&m, "a reported DNS failure", |s| {
            !s["dns"]["names"][0]["error"].is_null()
        });
        m
    })
    .await;
    let s = m.status();
    assert_eq!(backend_count(&s), 2, "{s}");
    let series = format!("meridian_dns_failing{{name=\"api.example.test:{port}\"}}");
    assert_eq!(metric(&m.metrics(), &series), 1.0);
    assert!(
        metric(
            &m.metrics(),
            &format!(
                "meridian_dns_resolutions_total{{name=\"api.example.test:{port}\",result=\"failure\"}}"
            )
        ) >= 1.0
    );
    for _ in 0..10 {
        assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
    }

    // It recovers.
    dns.set_a("api.example.test.", &[Ipv4Addr::new(127, 0, 0, 2)])
        .await;
    let m = blocking(move || {
        wait_status(&m, "recovered", |s| {
            s["dns"]["names"][0]["error"].is_null() && backend_count(s) == 1
        });
        m
    })
    .await;
    assert_eq!(metric(&m.metrics(), &series), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn srv_backends_resolve_and_a_name_that_never_resolves_is_reported() {
    let dns = TestDns::start().await;
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let srv = |port: u16, target: &str| RData::SRV(SRV::new(0, 1, port, name(target)));
    dns.set(
        "_http._tcp.api.example.test.",
        RecordType::SRV,
        vec![
            srv(b1.addr().port(), "one.example.test."),
            srv(b2.addr().port(), "two.example.test."),
        ],
    )
    .await;
    dns.set_a("one.example.test.", &[Ipv4Addr::LOCALHOST]).await;
    dns.set_a("two.example.test.", &[Ipv4Addr::LOCALHOST]).await;

    let (listen, admin) = (free_addr(), free_addr());
    let regions = "\n[regions.local]\nlatitude = 50.0\nlongitude = 8.0\nbalance = \"round_robin\"\nbackends = [{ srv = \"_http._tcp.api.example.test\" }]\n\n[regions.far]\nlatitude = -33.9\nlongitude = 151.2\nbackends = [{ address = \"never.example.test:80\" }]\n";
    let m = start(config(listen, admin, dns.addr, regions), listen, admin).await;
    let s = m.status();
    assert_eq!(backend_count(&s), 2, "{s}");
    let hosts: Vec<&str> = s["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["host"].as_str().unwrap())
        .collect();
    assert!(hosts.contains(&"one.example.test") && hosts.contains(&"two.example.test"));
    assert_eq!(s["regions"][1]["backends"].as_array().unwrap().len(), 0);
    let never = s["dns"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "never.example.test:80")
        .unwrap()
        .clone();
    assert_eq!(never["resolved"], false, "{never}");
    assert!(!never["error"].is_null(), "{never}");

    let c = client();
    for _ in 0..10 {
        assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!((b1.hits(), b2.hits()), (5, 5));
}

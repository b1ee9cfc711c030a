//! DNS discovery against a misbehaving DNS server (hickory-server on loopback,
//! `dns/server.rs`): a name whose queries hang delays no other name, and answers naming this
//! host or a cloud metadata service are refused.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "dns/server.rs"]
mod server;
#[path = "dns/setup.rs"]
mod setup;
#[path = "dns/status.rs"]
mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use meridian_demo_backend::{Backend, BackendSpec};
use server::TestDns;
use setup::*;
use status::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_whose_queries_hang_delays_no_other_name() {
    let dns = TestDns::start().await;
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (p1, p2) = (b1.addr().port(), b2.addr().port());
    // fast's second home, so that every backend is up in the end.
    let _b1b = Backend::start(BackendSpec::new(
        "b1b",
        "local",
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), p1),
    ))
    .await
    .unwrap();
    dns.set_a("fast.example.test.", &[Ipv4Addr::LOCALHOST])
        .await;
    dns.set_a("slow.example.test.", &[Ipv4Addr::LOCALHOST])
        .await;
    dns.hold_slow(true);

    let (listen, admin) = (free_addr(), free_addr());
    let (fast, slow) = (
        format!("fast.example.test:{p1}"),
        format!("slow.example.test:{p2}"),
    );
    let mut cfg = header("local", listen, admin);
    // A long query timeout: the slow name's first attempt lasts until it is released.
    cfg.push_str(&dns_table(dns.addr, "200ms", "1s", "30s"));
    cfg.push_str(&local_region(
        "round_robin",
        &format!("{{ address = \"{fast}\" }}, {{ address = \"{slow}\" }}"),
    ));
    // Meridian is not ready before every name had a first answer: start it aside.
    let starting = tokio::spawn(start(cfg, listen, admin));
    // Both phases together stay within start()'s 30 s readiness limit.
    let limit = Duration::from_secs(12);
    let (f, s) = (fast.clone(), slow.clone());
    blocking(move || {
        wait_status_at(
            admin,
            limit,
            "the fast name resolved while the slow one hangs",
            |st| dns_name(st, &f)["resolved"] == true && dns_name(st, &s).is_null(),
        )
    })
    .await;
    dns.set_a("fast.example.test.", &[Ipv4Addr::new(127, 0, 0, 2)])
        .await;
    let (f, s) = (fast.clone(), slow.clone());
    let want = serde_json::json!([format!("127.0.0.2:{p1}")]);
    blocking(move || {
        wait_status_at(
            admin,
            limit,
            "the fast name followed while the slow one hangs",
            |st| dns_name(st, &f)["addresses"] == want && dns_name(st, &s).is_null(),
        )
    })
    .await;

    // The held queries are answered: the slow name resolves and Meridian gets ready.
    dns.hold_slow(false);
    let m = starting.await.unwrap();
    let entry = dns_name(&m.status(), &slow);
    assert_eq!(entry["resolved"], true, "{entry}");
    send(&m, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_naming_this_host_or_a_metadata_service_are_refused() {
    let dns = TestDns::start().await;
    let b = backend("b", "local").await;
    dns.set_a("here.example.test.", &[Ipv4Addr::LOCALHOST])
        .await;
    dns.set_a("meta.example.test.", &[Ipv4Addr::new(169, 254, 169, 254)])
        .await;
    let (listen, admin) = (free_addr(), free_addr());
    let port = b.addr().port();
    let regions = format!(
        "\n[regions.local]\nlatitude = 50.0\nlongitude = 8.0\nbackends = [{{ address = \"here.example.test:{port}\" }}, {{ address = \"meta.example.test:80\" }}]\n"
    );
    // Without `allow_loopback` (the default): neither name becomes a backend.
    let table = format!("\n[dns]\nnameservers = [\"{}\"]\n", dns.addr);
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&table);
    cfg.push_str(&regions);
    let m = blocking(move || Meridian::start_ready(&cfg, listen, admin)).await;
    let s = m.status();
    assert_eq!(backend_count(&s), 0, "{s}");
    let here = dns_name(&s, &format!("here.example.test:{port}"));
    assert!(
        here["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1 (loopback)"),
        "{here}"
    );
    let meta = dns_name(&s, "meta.example.test:80");
    assert!(
        meta["error"].as_str().unwrap().contains("169.254.169.254"),
        "{meta}"
    );
    drop(m);
    // With it, the loopback backend serves; the metadata address never does.
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!("{table}allow_loopback = true\n"));
    cfg.push_str(&regions);
    let m = blocking(move || Meridian::start_ready(&cfg, listen, admin)).await;
    let s = m.status();
    assert_eq!(backend_count(&s), 1, "{s}");
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
}

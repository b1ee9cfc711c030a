//! End-to-end DNS discovery: a small authoritative DNS server (hickory-server, in-memory
//! zone, `dns/server.rs`) on a loopback port, whose records change during the test;
//! Meridian resolves its backends there and follows the changes.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "dns/server.rs"]
mod server;
#[path = "dns/setup.rs"]
mod setup;
#[path = "dns/status.rs"]
mod status;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_server::proto::rr::RecordType;
use meridian_demo_backend::{Backend, BackendSpec};
use serde_json::Value;
use server::{srv, TestDns};
use setup::*;
use status::*;

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
    dns.set(
        "_http._tcp.api.example.test.",
        RecordType::SRV,
        vec![
            srv(0, 1, b1.addr().port(), "one.example.test."),
            srv(0, 1, b2.addr().port(), "two.example.test."),
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
    assert!(weights(&s).iter().all(|(_, w)| *w == 1), "{s}");
    let name = dns_name(&s, "srv:_http._tcp.api.example.test");
    assert_eq!(name["target_errors"], serde_json::json!([]), "{name}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn srv_dead_targets_are_skipped_priorities_fail_over_and_weights_apply() {
    let dns = TestDns::start().await;
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let b3 = backend("b3", "local").await;
    let b4 = backend("b4", "local").await;
    let port = |b: &Backend| b.addr().port();
    let svc = "_http._tcp.svc.example.test.";
    let records = |two_weight: u16| {
        vec![
            srv(10, 3, port(&b1), "one.example.test."),
            srv(10, two_weight, port(&b2), "two.example.test."),
            srv(10, 0, port(&b4), "dead.example.test."),
            srv(20, 5, port(&b3), "backup.example.test."),
        ]
    };
    dns.set(svc, RecordType::SRV, records(1)).await;
    for host in ["one", "two", "backup"] {
        dns.set_a(&format!("{host}.example.test."), &[Ipv4Addr::LOCALHOST])
            .await;
    }
    // dead.example.test has no address (yet).

    let (listen, admin) = (free_addr(), free_addr());
    let regions = local_region("weighted", "{ srv = \"_http._tcp.svc.example.test\" }");
    let m = start(config(listen, admin, dns.addr, &regions), listen, admin).await;
    let a = |b: &Backend| b.addr().to_string();
    let expect = |mut v: Vec<(String, u64)>| {
        v.sort();
        v
    };
    const NAME: &str = "srv:_http._tcp.svc.example.test";

    // The preferred group (priority 10) without its dead target, SRV weights as weights,
    // and the backup group (priority 20) as the next tier; the dead target is reported,
    // the name is not failing.
    let s = m.status();
    assert_eq!(
        weights(&s),
        expect(vec![(a(&b1), 3), (a(&b2), 1), (a(&b3), 5)]),
        "{s}"
    );
    assert_eq!(
        tiers(&s),
        expect(vec![(a(&b1), 0), (a(&b2), 0), (a(&b3), 1)]),
        "{s}"
    );
    let entry = dns_name(&s, NAME);
    assert!(entry["error"].is_null(), "{entry}");
    let errors = entry["target_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{entry}");
    assert!(
        errors[0].as_str().unwrap().starts_with("dead.example.test"),
        "{entry}"
    );
    send(&m, 40).await;
    let (h1, h2) = (b1.hits(), b2.hits());
    assert_eq!(
        b3.hits() + b4.hits(),
        0,
        "backup and dead targets get no requests"
    );
    assert!(
        h1 + h2 == 40 && h1 >= 2 * h2 && h2 >= 5,
        "weights 3:1, hits {h1}:{h2}"
    );

    // The dead target blocks no update of the name.
    dns.set(svc, RecordType::SRV, records(2)).await;
    let want = expect(vec![(a(&b1), 3), (a(&b2), 2), (a(&b3), 5)]);
    let m = wait(m, "two's new weight", move |s| weights(s) == want).await;
    // It comes alive: it joins with weight 0 counted as 1, and no target error remains.
    dns.set_a("dead.example.test.", &[Ipv4Addr::LOCALHOST])
        .await;
    let want = expect(vec![(a(&b1), 3), (a(&b2), 2), (a(&b3), 5), (a(&b4), 1)]);
    let m = wait(m, "the revived target in use", move |s| {
        weights(s) == want && dns_name(s, NAME)["target_errors"] == serde_json::json!([])
    })
    .await;

    // No preferred target resolves: the backup group (priority 20) takes over.
    for host in ["one", "two", "dead"] {
        dns.set(&format!("{host}.example.test."), RecordType::A, vec![])
            .await;
    }
    let (want, backup) = (vec![(a(&b3), 5)], a(&b3));
    let m = wait(m, "the backup target in use and up", move |s| {
        weights(s) == want && has_backend(s, &backup, "up")
    })
    .await;
    let entry = dns_name(&m.status(), NAME);
    assert!(entry["error"].is_null(), "{entry}");
    assert_eq!(
        entry["target_errors"].as_array().unwrap().len(),
        3,
        "{entry}"
    );
    b1.reset_counts();
    b2.reset_counts();
    send(&m, 10).await;
    assert_eq!((b1.hits(), b2.hits(), b3.hits()), (0, 0, 10));

    // A preferred target resolves again: once it is up, it serves and the backup idles.
    dns.set_a("one.example.test.", &[Ipv4Addr::LOCALHOST]).await;
    let want = expect(vec![(a(&b1), 3), (a(&b3), 5)]);
    let one = a(&b1);
    let m = wait(m, "back to the preferred group", move |s| {
        weights(s) == want && has_backend(s, &one, "up")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a measurement tick or more
    b3.reset_counts();
    send(&m, 10).await;
    assert_eq!((b1.hits(), b3.hits()), (10, 0));

    // No target of any priority resolves: the name fails, the last good set is kept.
    for host in ["one", "backup"] {
        dns.set(&format!("{host}.example.test."), RecordType::A, vec![])
            .await;
    }
    let m = wait(m, "a failing SRV name", |s| {
        !dns_name(s, NAME)["error"].is_null()
    })
    .await;
    // (The two targets go one after the other, and a resolution may fall in between or
    // read one of them from the resolver's cache: the last good set is what the last
    // successful resolution saw, one or both of them.)
    let s = m.status();
    let kept = weights(&s);
    assert!(
        !kept.is_empty() && kept.iter().all(|w| *w == (a(&b1), 3) || *w == (a(&b3), 5)),
        "{s}"
    );
    let entry = dns_name(&s, NAME);
    assert_eq!(
        entry["target_errors"].as_array().unwrap().len(),
        4,
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_ttls_are_honoured_within_min_ttl_and_max_ttl() {
    let dns = TestDns::start().await;
    let (b1, b2, b3) = (
        backend("b1", "local").await,
        backend("b2", "local").await,
        backend("b3", "local").await,
    );
    let (p1, p2, p3) = (b1.addr().port(), b2.addr().port(), b3.addr().port());
    let moved = Ipv4Addr::new(127, 0, 0, 2);
    dns.set_a_ttl("long.example.test.", &[Ipv4Addr::LOCALHOST], 3600)
        .await;
    dns.set_a_ttl("short.example.test.", &[Ipv4Addr::LOCALHOST], 1)
        .await;
    dns.set_a_ttl("zero.example.test.", &[Ipv4Addr::LOCALHOST], 0)
        .await;

    let (listen, admin) = (free_addr(), free_addr());
    let (long, short, zero) = (
        format!("long.example.test:{p1}"),
        format!("short.example.test:{p2}"),
        format!("zero.example.test:{p3}"),
    );
    let regions = local_region(
        "round_robin",
        &format!(
            "{{ address = \"{long}\" }}, {{ address = \"{short}\" }}, {{ address = \"{zero}\" }}"
        ),
    );
    let text = move |max_ttl: &str| {
        let mut cfg = header("local", listen, admin);
        cfg.push_str(&dns_table(dns.addr, "300ms", max_ttl, "500ms"));
        cfg.push_str(&regions);
        cfg
    };
    let m = start(text("1h"), listen, admin).await;
    let refresh = |s: &Value, n: &str| dns_name(s, n)["refresh_s"].as_f64().unwrap();
    let s = m.status();
    assert!((3000.0..=3600.0).contains(&refresh(&s, &long)), "{s}");
    // (The TTL counts from when the resolver got the answer, a little after our clock.)
    assert!((0.3..=1.5).contains(&refresh(&s, &short)), "{s}");
    assert!(
        (refresh(&s, &zero) - 0.3).abs() < 1e-6,
        "TTL 0 → min_ttl: {s}"
    );

    // Both records move. The short one is followed; the long one is not asked again
    // before its TTL, however often the short one is.
    let long_attempt = dns_name(&s, &long)["last_attempt"].clone();
    dns.set_a_ttl("long.example.test.", &[moved], 3600).await;
    dns.set_a_ttl("short.example.test.", &[moved], 1).await;
    let (n, want) = (short.clone(), serde_json::json!([format!("{moved}:{p2}")]));
    let m = wait(m, "the short name followed", move |s| {
        dns_name(s, &n)["addresses"] == want
    })
    .await;
    let since = dns_name(&m.status(), &short)["last_attempt"]
        .as_f64()
        .unwrap();
    let n = short.clone();
    let m = wait(m, "two more seconds of short-name resolutions", move |s| {
        dns_name(s, &n)["last_attempt"].as_f64().unwrap() >= since + 2.0
    })
    .await;
    let s = m.status();
    let entry = dns_name(&s, &long);
    assert_eq!(
        entry["addresses"],
        serde_json::json!([format!("127.0.0.1:{p1}")]),
        "{s}"
    );
    assert_eq!(entry["last_attempt"], long_attempt, "{s}");

    // max_ttl = 2s caps the hour-long TTL: the name is re-resolved every 2 s, and a change
    // is followed.
    let m = blocking(move || {
        m.write_config(&text("2s"));
        assert_eq!(m.reload().0, 200, "{}", m.log());
        m
    })
    .await;
    let (n, want) = (long.clone(), serde_json::json!([format!("{moved}:{p1}")]));
    let m = wait(
        m,
        "the long name re-resolved under the new bounds",
        move |s| dns_name(s, &n)["addresses"] == want && refresh(s, &n) <= 2.0,
    )
    .await;
    assert!(refresh(&m.status(), &long) >= 1.0);
    dns.set_a_ttl("long.example.test.", &[Ipv4Addr::LOCALHOST], 3600)
        .await;
    let (n, want) = (long.clone(), serde_json::json!([format!("127.0.0.1:{p1}")]));
    wait(m, "the long name followed within max_ttl", move |s| {
        dns_name(s, &n)["addresses"] == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aaaa_records_become_ipv6_backends() {
    // One port on both 127.0.0.1 and [::1].
    let mut pair = None;
    for _ in 0..20 {
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
        let Ok(b6) = Backend::start(BackendSpec::new("b6", "local", v6)).await else {
            eprintln!("no IPv6 loopback: skipping the AAAA case");
            return;
        };
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), b6.addr().port());
        if let Ok(b4) = Backend::start(BackendSpec::new("b4", "local", v4)).await {
            pair = Some((b4, b6));
            break;
        }
    }
    let (b4, b6) = pair.expect("a port free on both loopback addresses");
    let port = b4.addr().port();
    let dns = TestDns::start().await;
    dns.set_a("dual.example.test.", &[Ipv4Addr::LOCALHOST])
        .await;
    dns.set_aaaa("dual.example.test.", &[Ipv6Addr::LOCALHOST])
        .await;

    let (listen, admin) = (free_addr(), free_addr());
    let regions = local_region(
        "round_robin",
        &format!("{{ address = \"dual.example.test:{port}\" }}"),
    );
    let m = start(config(listen, admin, dns.addr, &regions), listen, admin).await;
    let (v4, v6) = (format!("127.0.0.1:{port}"), format!("[::1]:{port}"));
    let s = m.status();
    assert!(
        backend_count(&s) == 2 && has_backend(&s, &v4, "up") && has_backend(&s, &v6, "up"),
        "{s}"
    );
    send(&m, 20).await;
    assert!(
        b4.hits() >= 5 && b6.hits() >= 5,
        "{} {}",
        b4.hits(),
        b6.hits()
    );

    // Only the AAAA record is left: the IPv6 address serves alone.
    dns.set("dual.example.test.", RecordType::A, vec![]).await;
    let m = wait(m, "only the IPv6 address", move |s| {
        backend_count(s) == 1 && has_backend(s, &v6, "up")
    })
    .await;
    b6.reset_counts();
    send(&m, 10).await;
    assert_eq!(b6.hits(), 10);
}

//! gRPC through a real Meridian with real tonic clients and servers on loopback: unary and
//! server-streaming calls over h2c and over TLS (h2 by ALPN at both ends), trailers and
//! statuses arriving, several streams on one upstream connection, the deadline
//! (`grpc-timeout`) enforced and forwarded, trailers-only errors for calls Meridian refuses,
//! the gRPC health probe, the retry of `UNAVAILABLE`, and a region's backends killed under
//! load with no failed call.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "grpc/support.rs"]
mod g;
#[path = "tls/support.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use g::{Client, GrpcBackend};

/// A `[regions.NAME]` table of gRPC backends spoken to in h2c, probed with the gRPC health
/// check.
fn grpc_region(name: &str, lat: f64, backends: &[&GrpcBackend], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect();
    format!(
        "\n[regions.{name}]\nlatitude = {lat}\nlongitude = 0.0\n{extra}\nbackends = [{}]\n[regions.{name}.upstream]\nprotocol = \"h2c\"\n[regions.{name}.health_check]\nkind = \"grpc\"\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unary_and_streaming_calls_over_h2c_share_one_upstream_connection() {
    let b = g::start("b1", None).await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str("\n[timeouts]\nread = \"1s\"\n\n[limits]\nmax_body_size = \"1KiB\"\n");
    cfg.push_str(&grpc_region("local", 0.0, &[&b], ""));
    let m = start(cfg, listen, admin).await;
    let mut c = Client::h2c(listen).await;

    let reply = c.unary("hello", 0, None).await.unwrap();
    assert_eq!(
        (reply.text.as_str(), reply.server.as_str()),
        ("hello", "b1")
    );
    // A stream whose messages are further apart than timeouts.read.
    let (msgs, trailers) = c.stream("tick", 3, 1300).await.unwrap();
    let texts: Vec<&str> = msgs.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["tick 0", "tick 1", "tick 2"]);
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    // The backend's own error status and message arrive as sent.
    let err = c.unary("fail:5", 0, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "asked to fail by b1");
    // A call over the body limit is refused with RESOURCE_EXHAUSTED.
    let err = c.unary(&"x".repeat(4096), 0, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("over the proxy's limit"), "{err:?}");

    // 40 concurrent calls (each held 300 ms by the backend): a handful of upstream
    // connections at most (one per worker thread, plus a race or two), not 40.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        // 5 ms apart (see tests/h2_upstream.rs), all overlapping.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut c = Client::h2c(listen).await;
        calls.spawn(async move { c.unary(&format!("n{i}"), 300, None).await });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    let conns = b.echo_connections();
    assert!(
        conns <= 6,
        "{conns} upstream connections for 40 concurrent calls"
    );

    let text = m.metrics_when(&[("meridian_grpc_requests_total{code=\"ok\"}", 42.0)]);
    assert!(metric(&text, "meridian_grpc_requests_total{code=\"ok\"}") >= 42.0);
    assert_eq!(
        metric(&text, "meridian_grpc_requests_total{code=\"not_found\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_over_tls_at_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::Ca::new("grpc test CA");
    let backend_leaf = ca.leaf(&["backend.test"], "backend.test");
    let front_leaf = ca.leaf(&["front.test"], "front.test");
    let (front_cert, front_key) = front_leaf.write(dir.path(), "front");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let b = g::start(
        "tls1",
        Some((&backend_leaf.cert_pem, &backend_leaf.key_pem)),
    )
    .await;

    let (listen, https, admin) = (free_addr(), free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[[listeners.https]]\naddress = \"{https}\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        front_cert.display(),
        front_key.display()
    ));
    cfg.push_str(&format!(
        "\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{{ address = \"{}\" }}]\n[regions.local.tls]\nsni = \"backend.test\"\nca_file = \"{}\"\n[regions.local.upstream]\nprotocol = \"h2\"\n[regions.local.health_check]\nkind = \"grpc\"\ngrpc_service = \"test.Echo\"\n",
        b.addr,
        ca_file.display()
    ));
    let m = start(cfg, listen, admin).await;

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .domain_name("front.test");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{https}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = Client::new(channel);
    let reply = c.unary("over tls", 0, None).await.unwrap();
    assert_eq!(
        (reply.text.as_str(), reply.server.as_str()),
        ("over tls", "tls1")
    );
    let (msgs, trailers) = c.stream("s", 2, 10).await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let err = c.unary("fail:7", 0, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // The health probe spoke TLS with ALPN h2 (the backend speaks nothing else).
    let s = m.status();
    assert_eq!(s["regions"][0]["backends"][0]["health"], "up", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deadline_is_enforced_and_forwarded_as_the_time_left() {
    let b = g::start("slow", None).await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&grpc_region("local", 0.0, &[&b], ""));
    let m = start(cfg, listen, admin).await;
    let mut c = Client::h2c(listen).await;

    // The backend gets the time that is left, in grpc-timeout.
    let reply = c.unary("quick", 0, Some("5S")).await.unwrap();
    let left = reply
        .grpc_timeout
        .strip_suffix('m')
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!((1..=5000).contains(&left), "{}", reply.grpc_timeout);

    // A backend slower than the deadline: Meridian answers DEADLINE_EXCEEDED itself (this
    // client sends grpc-timeout but enforces nothing, and the backend ignores it).
    let started = Instant::now();
    let answer = g::raw_unary(listen, "slow", 4000, "400m").await;
    let took = started.elapsed();
    assert_eq!(
        answer.grpc_status().as_deref(),
        Some("4"),
        "{:?}",
        answer.headers
    );
    assert!(
        answer.grpc_message().contains("deadline passed"),
        "{}",
        answer.grpc_message()
    );
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    // Not blamed on the backend.
    let s = m.status();
    assert_eq!(s["regions"][0]["backends"][0]["ejected"], false, "{s}");
    let text = m.metrics_when(&[(
        "meridian_grpc_requests_total{code=\"deadline_exceeded\"}",
        1.0,
    )]);
    assert_eq!(
        metric(
            &text,
            "meridian_grpc_requests_total{code=\"deadline_exceeded\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_meridian_refuses_get_grpc_errors_not_html() {
    // A backend that is down: no region can serve.
    let dead = free_addr();
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{{ address = \"{dead}\" }}]\n[regions.local.upstream]\nprotocol = \"h2c\"\n"
    ));
    let _m = blocking(move || Meridian::start_ready(&cfg, listen, admin)).await;
    let mut c = Client::h2c(listen).await;
    let err = c.unary("anyone?", 0, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no healthy backend"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grpc_health_probe_follows_the_serving_status() {
    let b = g::start("h", None).await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&grpc_region("local", 0.0, &[&b], ""));
    cfg.push_str("grpc_service = \"test.Echo\"\n");
    let m = start(cfg, listen, admin).await;
    b.health
        .set_service_status("test.Echo", tonic_health::ServingStatus::NotServing)
        .await;
    m.wait_backend_health(b.addr, "down", Duration::from_secs(20));
    let s = m.status();
    let err = s["regions"][0]["backends"][0]["last_probe"]["error"].to_string();
    assert!(err.contains("NOT_SERVING"), "{s}");
    b.health
        .set_service_status("test.Echo", tonic_health::ServingStatus::Serving)
        .await;
    m.wait_backend_health(b.addr, "up", Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unavailable_is_retried_on_another_backend() {
    let (a, b) = (g::start("a", None).await, g::start("b", None).await);
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str("\n[outlier]\nconsecutive_failures = 1000\n");
    cfg.push_str(&grpc_region(
        "local",
        0.0,
        &[&a, &b],
        "balance = \"round_robin\"",
    ));
    let m = start(cfg, listen, admin).await;
    a.set_unavailable(true);
    let mut c = Client::h2c(listen).await;
    for i in 0..10 {
        let reply = c.unary(&format!("r{i}"), 0, None).await.unwrap();
        assert_eq!(reply.server, "b");
    }
    assert!(a.calls() >= 3, "a saw {} calls", a.calls());
    let text = m.metrics();
    assert_eq!(
        metric(&text, "meridian_grpc_requests_total{code=\"unavailable\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_regions_grpc_backends_under_load_fails_no_call() {
    let near = [g::start("near1", None).await, g::start("near2", None).await];
    let far = g::start("far1", None).await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("near", listen, admin);
    cfg.push_str(
        "\n[steering]\npolicy = \"failover\"\norder = [\"near\", \"far\"]\n\n[retry]\ngrpc_idempotent = [\"/test.Echo/*\"]\n",
    );
    cfg.push_str(&grpc_region("near", 0.0, &[&near[0], &near[1]], ""));
    cfg.push_str(&grpc_region("far", 10.0, &[&far], ""));
    let m = start(cfg, listen, admin).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = tokio::task::JoinSet::new();
    let limit = Instant::now() + Duration::from_secs(30);
    for w in 0..6 {
        let mut c = Client::h2c(listen).await;
        let (stop, ok, failed, errors) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
        workers.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && Instant::now() < limit && i < 100_000 {
                i += 1;
                match c.unary(&format!("w{w}-{i}"), 5, None).await {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        errors.lock().unwrap().push(format!("{e:?}"));
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        });
    }
    wait_for(
        || ok.load(Ordering::SeqCst) >= 100,
        "100 calls before the kill",
    )
    .await;
    for b in &near {
        b.kill();
    }
    let far_before = far.calls();
    let served = ok.load(Ordering::SeqCst);
    wait_for(
        || far.calls() >= far_before + 200,
        "200 calls served by the far region",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    while workers.join_next().await.is_some() {}
    let errors = errors.lock().unwrap();
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed calls: {errors:?}");
    assert!(ok.load(Ordering::SeqCst) > served);
    let text = m.metrics();
    assert_eq!(
        metric(&text, "meridian_grpc_requests_total{code=\"unavailable\"}"),
        0.0
    );
}

async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! HTTP/2 to backends: a region with `protocol = "h2c"` speaks cleartext HTTP/2 to its
//! backends (prior knowledge), whatever the client spoke, and multiplexes concurrent
//! requests as streams over a few connections (counted at the backend); its health probes
//! speak h2c too. The same load to an `http1` region needs a connection per request.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// 30 overlapping HTTP/1.1 requests to `/delay/300` (each held 300 ms by the backend);
/// the backend's new connections meanwhile.
async fn concurrent_connections(m: &Meridian, b: &meridian_demo_backend::Backend) -> u64 {
    // Warm up: one request opens the first connection.
    let resp = client().get(m.url("/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let before = b.connections();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..30 {
        // 10 ms apart, all overlapping: pingora's pool lends a connection out for a moment
        // while it opens a stream, and a request in that very moment opens another one.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let url = m.url("/delay/300");
        calls.spawn(async move {
            // One client each: 30 client connections, as 30 browsers would.
            let resp = client().get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        });
    }
    while let Some(r) = calls.join_next().await {
        assert!(r.unwrap().starts_with("hello from b"));
    }
    b.connections() - before
}

fn config(
    m: (std::net::SocketAddr, std::net::SocketAddr),
    b: &meridian_demo_backend::Backend,
    protocol: &str,
) -> String {
    let mut cfg = header("local", m.0, m.1);
    // Probes rarely (the first within 1 s), so that the backend's connection count is the
    // proxied traffic's.
    cfg.push_str(&region(
        "local",
        0.0,
        0.0,
        &[b],
        &format!(
            "upstream = {{ protocol = \"{protocol}\" }}\nhealth_check = {{ interval = \"1h\" }}"
        ),
    ));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h2c_region_multiplexes_requests_over_a_few_connections() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let m = start(config((listen, admin), &b, "h2c"), listen, admin).await;

    // An HTTP/1.1 client; the backend is spoken to in HTTP/2.
    let resp = client()
        .post(m.url("/echo"))
        .body("ping")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.headers()["x-echo-version"], "HTTP/2");
    assert_eq!(resp.text().await.unwrap(), "ping");
    // The probe spoke h2c as well (the backend answers both on one port).
    let s = m.status();
    assert_eq!(s["regions"][0]["backends"][0]["health"], "up", "{s}");

    let new = concurrent_connections(&m, &b).await;
    // One connection per worker thread (2), and a race or two: not 30.
    assert!(
        new <= 4,
        "{new} new upstream connections for 30 concurrent requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http1_region_needs_a_connection_per_concurrent_request() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let m = start(config((listen, admin), &b, "http1"), listen, admin).await;
    let resp = client().get(m.url("/echo")).send().await.unwrap();
    assert_eq!(resp.headers()["x-echo-version"], "HTTP/1.1");
    let new = concurrent_connections(&m, &b).await;
    assert!(
        new >= 20,
        "{new} new upstream connections for 30 concurrent requests"
    );
}

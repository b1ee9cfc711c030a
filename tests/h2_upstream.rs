//! HTTP/2 to backends: a region with `protocol = "h2c"` speaks cleartext HTTP/2 to its
//! backends (prior knowledge), whatever the client spoke, and multiplexes concurrent
//! requests as streams over a few connections (counted at the backend); its health probes
//! speak h2c too. The same load to an `http1` region needs a connection per request. With
//! `protocol = "auto"` over TLS the backend's ALPN decides. The protocol is a pool setting:
//! two services in one region speak each their own.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "tls/support.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

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
async fn each_services_pool_speaks_its_own_protocol() {
    let api = backend("api", "local").await;
    let web = backend("web", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    // Global h2c; the service web goes back to HTTP/1.1 in its pool.
    cfg.push_str(&format!(
        "\n[upstream]\nprotocol = \"h2c\"\n\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\n\n[services.api]\nhosts = [\"api.test\"]\n[services.api.regions.local]\nbackends = [{{ address = \"{}\" }}]\n\n[services.web]\ndefault = true\nhosts = [\"web.test\"]\n[services.web.regions.local]\nbackends = [{{ address = \"{}\" }}]\nupstream = {{ protocol = \"http1\" }}\n",
        api.addr(),
        web.addr()
    ));
    // Both pools' probes (h2c, HTTP/1.1) bring their backend up.
    let m = start(cfg, listen, admin).await;
    for (host, version) in [("api.test", "HTTP/2"), ("web.test", "HTTP/1.1")] {
        let resp = client()
            .get(m.url("/echo"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(resp.headers()["x-echo-version"], version, "{host}");
    }
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

/// A TLS backend offering `alpn`, speaking HTTP/1.1 and HTTP/2 (whichever the client
/// starts); answers with the HTTP version of the request.
async fn tls_backend(leaf: &support::Leaf, alpn: &[&[u8]]) -> SocketAddr {
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(support::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let body = format!("{:?}", req.version());
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_speaks_what_the_backends_alpn_picks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::Ca::new("auto test CA");
    let leaf = ca.leaf(&["backend.test"], "backend.test");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    for (offered, want) in [
        (&[&b"h2"[..], b"http/1.1"][..], "HTTP/2.0"),
        (&[&b"http/1.1"[..]][..], "HTTP/1.1"),
    ] {
        let b = tls_backend(&leaf, offered).await;
        let (listen, admin) = (free_addr(), free_addr());
        let mut cfg = header("local", listen, admin);
        cfg.push_str(&format!(
            "\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{{ address = \"{b}\" }}]\n[regions.local.tls]\nsni = \"backend.test\"\nca_file = \"{}\"\n[regions.local.upstream]\nprotocol = \"auto\"\n",
            ca_file.display()
        ));
        let m = start(cfg, listen, admin).await;
        let body = client()
            .get(m.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, want, "backend offering {offered:?}");
    }
}

//! Services and routes end to end: two services on one listener, chosen by host name
//! (exact and wildcard) and by path prefix, each with its own pool; a request no route
//! matches gets a clear 404 (or the default service); per-service metrics and `/status`;
//! a service that runs in another region only; routes changed by a reload.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// A config with two regions and three services: `api` by host (exact and wildcard),
/// `assets` by path prefix on any host, `eu-only` in the remote region only.
fn config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    api: &[&meridian_demo_backend::Backend],
    assets: &meridian_demo_backend::Backend,
    eu: &meridian_demo_backend::Backend,
    extra: &str,
) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        r#"
[regions.local]
latitude = 50.0
longitude = 8.0

[regions.remote]
latitude = 40.0
longitude = -74.0

[services.api]
hosts = ["api.example.test", "*.api.example.test"]
balance = "round_robin"
[services.api.regions.local]
backends = [{{ address = "{}" }}, {{ address = "{}" }}]

[services.assets]
paths = ["/static"]
[services.assets.regions.local]
backends = [{{ address = "{}" }}]

[services.eu-only]
hosts = ["eu.example.test"]
[services.eu-only.regions.remote]
backends = [{{ address = "{}" }}]
{extra}
"#,
        api[0].addr(),
        api[1].addr(),
        assets.addr(),
        eu.addr()
    ));
    cfg
}

/// GET `path` with `Host: host`: status, the `x-backend` header and the body.
async fn get(m: &Meridian, host: &str, path: &str) -> (u16, String, String) {
    let r = client()
        .get(m.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let backend = r
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, backend, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_by_host_and_path_with_their_own_pools_and_a_404_for_the_rest() {
    let a1 = backend("api-1", "local").await;
    let a2 = backend("api-2", "local").await;
    let static1 = backend("static-1", "local").await;
    let eu = backend("eu-1", "remote").await;
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(listen, admin, &[&a1, &a2], &static1, &eu, "");
    let m = start(cfg.clone(), listen, admin).await;

    // By exact host: the api pool only, both of its backends (round robin).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, b, _) = get(&m, "api.example.test", "/users/1").await;
        assert_eq!(status, 200);
        seen.insert(b);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["api-1", "api-2"],
        "api requests go to the api pool, both backends"
    );
    // A port and upper case do not matter; a wildcard covers subdomains at any depth.
    for host in [
        "API.Example.Test:8080",
        "eu.api.example.test",
        "a.b.api.example.test",
    ] {
        let (status, b, _) = get(&m, host, "/").await;
        assert_eq!(status, 200, "{host}");
        assert!(b.starts_with("api-"), "{host} -> {b}");
    }
    // By path prefix, on any host without a route of its own, whole segments only.
    for host in ["www.example.test", "other.test:81"] {
        let (status, b, _) = get(&m, host, "/static/app.js").await;
        assert_eq!((status, b.as_str()), (200, "static-1"), "{host}");
    }
    let (status, _, _) = get(&m, "www.example.test", "/staticfile").await;
    assert_eq!(status, 404, "/staticfile is not under /static");
    // A host's own routes come first: api.example.test routes every path to api.
    let (status, b, _) = get(&m, "api.example.test", "/static/app.js").await;
    assert_eq!(status, 200);
    assert!(
        b.starts_with("api-"),
        "the exact host wins over a path on any host: {b}"
    );
    // A service that runs in another region only is served there.
    let (status, b, _) = get(&m, "eu.example.test", "/").await;
    assert_eq!((status, b.as_str()), (200, "eu-1"));

    // Nothing matches: a clear 404 naming the host and path, from the proxy itself.
    let hits_before: u64 = [&a1, &a2, &static1, &eu].iter().map(|b| b.hits()).sum();
    let (status, b, body) = get(&m, "unknown.example.test", "/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(b, "", "no backend answered");
    assert!(
        body.contains("no service is routed")
            && body.contains("unknown.example.test")
            && body.contains("/nothing"),
        "{body}"
    );
    let hits_after: u64 = [&a1, &a2, &static1, &eu].iter().map(|b| b.hits()).sum();
    assert_eq!(hits_before, hits_after);

    // Per-service metrics and status.
    let text = m.metrics_when(&[
        (
            "meridian_service_requests_total{class=\"2xx\",service=\"api\"}",
            24.0,
        ),
        ("meridian_unrouted_requests_total", 2.0),
    ]);
    assert!(
        metric(
            &text,
            "meridian_service_requests_total{class=\"2xx\",service=\"api\"}"
        ) >= 24.0
    );
    assert_eq!(
        metric(
            &text,
            "meridian_service_requests_total{class=\"2xx\",service=\"assets\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "meridian_service_requests_total{class=\"2xx\",service=\"eu-only\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "meridian_unrouted_requests_total"), 2.0);
    assert_eq!(
        metric(
            &text,
            "meridian_service_usable_backends{region=\"local\",service=\"api\"}"
        ),
        2.0
    );
    let s = m.status();
    let services = s["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "assets", "eu-only"], "{s}");
    assert_eq!(services[0]["hosts"][1], "*.api.example.test");
    assert_eq!(services[0]["pools"][0]["region"], "local");
    assert_eq!(services[0]["pools"][0]["usable_backends"], 2);
    assert_eq!(services[2]["pools"][0]["region"], "remote");
    let local = &s["regions"][0];
    assert_eq!(local["backends"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(local["backends"][2]["service"], "assets");

    // A reload that makes `assets` the default service: unmatched requests go to it.
    let cfg = cfg.replace(
        "[services.assets]\npaths = [\"/static\"]",
        "[services.assets]\npaths = [\"/static\"]\ndefault = true",
    );
    m.write_config(&cfg);
    let (code, body) = m.reload();
    assert_eq!(code, 200, "{body}");
    let (status, b, _) = get(&m, "unknown.example.test", "/nothing").await;
    assert_eq!((status, b.as_str()), (200, "static-1"));
    let (status, b, _) = get(&m, "api.example.test", "/").await;
    assert_eq!(status, 200);
    assert!(b.starts_with("api-"), "routes stay: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_without_services_serves_every_host_and_check_counts_services() {
    // Today's one-service file: every host and path goes to the regions' backends.
    let b = backend("only", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region("local", 50.0, 8.0, &[&b], ""));
    let m = start(cfg, listen, admin).await;
    for host in ["a.example", "b.example:81"] {
        let (status, name, _) = get(&m, host, "/any/path").await;
        assert_eq!((status, name.as_str()), (200, "only"), "{host}");
    }
    let s = m.status();
    assert_eq!(s["services"][0]["name"], "default", "{s}");
    assert_eq!(s["services"][0]["implicit"], true, "{s}");
    assert_eq!(s["regions"][0]["backends"][0]["state"], "ready", "{s}");

    // `meridian check` names the services when there are several.
    let dir = tempfile::tempdir().unwrap();
    let (a1, a2, st, eu) = (
        backend("a1", "local").await,
        backend("a2", "local").await,
        backend("s", "local").await,
        backend("e", "remote").await,
    );
    let path = dir.path().join("m.toml");
    std::fs::write(&path, config(listen, admin, &[&a1, &a2], &st, &eu, "")).unwrap();
    let out = std::process::Command::new(meridian_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("2 regions, 3 services, 4 backends"), "{text}");
}

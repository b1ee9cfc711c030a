//! End-to-end geo routing: a generated GeoIP database, trusted X-Forwarded-For from a
//! trusted loopback address, three countries reaching three regions, spoofing from an
//! untrusted peer ignored, and data residency holding even when its region is down.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;

/// A flat (DB-IP layout) database: documentation ranges placed in four countries.
fn write_db(path: &std::path::Path) {
    std::fs::write(
        path,
        country_db(&[
            ("192.0.2.0/24", "US"),
            ("198.51.100.0/24", "GB"),
            ("203.0.113.0/24", "JP"),
            ("100.64.0.0/16", "DE"),
            ("2001:db8:44::/48", "GB"),
        ]),
    )
    .unwrap();
}

/// A client whose connections come from `source` (127.0.0.2 is the trusted proxy).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_reach_their_regions_and_cannot_spoof_their_country() {
    let us = backend("us-1", "us-east").await;
    let eu = backend("eu-1", "eu-west").await;
    let ap = backend("ap-1", "ap-southeast").await;
    let de = backend("de-1", "eu-central").await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test-country.mmdb");
    write_db(&db);
    let mut cfg = header("us-east", listen, admin);
    cfg.push_str(&format!(
        r#"
[geoip]
database = "{}"

[client]
trusted_proxies = ["127.0.0.2"]

[steering]
expose_headers = true

[residency]
countries = {{ DE = ["eu-central"] }}
"#,
        db.display()
    ));
    cfg.push_str(&region("us-east", 39.04, -77.49, &[&us], ""));
    cfg.push_str(&region("eu-west", 53.35, -6.26, &[&eu], ""));
    cfg.push_str(&region("ap-southeast", 1.29, 103.85, &[&ap], ""));
    cfg.push_str(&region("eu-central", 50.11, 8.68, &[&de], ""));
    let m = start(cfg, listen, admin).await;

    let trusted = client_from("127.0.0.2");
    let get = |c: &reqwest::Client, xff: &str| {
        let req = c.get(m.url("/")).header("x-forwarded-for", xff);
        async move { req.send().await.unwrap() }
    };
    for (xff, country, region, backend) in [
        ("192.0.2.10", "US", "us-east", "us-1"),
        ("198.51.100.7", "GB", "eu-west", "eu-1"),
        ("203.0.113.99", "JP", "ap-southeast", "ap-1"),
        ("2001:db8:44::1", "GB", "eu-west", "eu-1"),
        // A proxy chain: the rightmost untrusted hop is the client.
        ("203.0.113.5, 198.51.100.7", "GB", "eu-west", "eu-1"),
    ] {
        let r = get(&trusted, xff).await;
        assert_eq!(r.status(), 200, "{xff}");
        assert_eq!(r.headers()["x-meridian-client-country"], country, "{xff}");
        assert_eq!(r.headers()["x-meridian-region"], region, "{xff}");
        assert_eq!(r.headers()["x-backend"], backend, "{xff}");
    }

    // The same headers from an untrusted peer (127.0.0.1) are ignored: the client is
    // 127.0.0.1 itself, whose location is unknown, so it is served locally (us-east), and
    // the spoofed header is replaced upstream.
    let untrusted = client_from("127.0.0.1");
    let r = untrusted
        .get(m.url("/echo"))
        .header("x-forwarded-for", "203.0.113.99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-meridian-client-country"], "unknown");
    assert_eq!(r.headers()["x-meridian-region"], "us-east");
    assert_eq!(r.headers()["x-echo-h-x-forwarded-for"], "127.0.0.1");
    // From the trusted peer the chain is kept and the peer appended.
    let r = trusted
        .get(m.url("/echo"))
        .header("x-forwarded-for", "203.0.113.99")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-echo-h-x-forwarded-for"],
        "203.0.113.99, 127.0.0.2"
    );

    // A malformed header from a trusted peer is treated as absent, never a 500.
    let r = get(&trusted, "not an address").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meridian-client-country"], "unknown");

    // Data residency: a German client only ever reaches eu-central...
    let r = get(&trusted, "100.64.1.1").await;
    assert_eq!(r.headers()["x-meridian-region"], "eu-central");
    // ...and with eu-central down it gets 503, not another region.
    de.kill().await;
    blocking({
        let (m_admin, addr) = (m.admin, de.addr());
        move || wait_down(m_admin, addr)
    })
    .await;
    let before = (us.hits(), eu.hits(), ap.hits());
    for _ in 0..5 {
        let r = get(&trusted, "100.64.1.1").await;
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
    }
    assert_eq!((us.hits(), eu.hits(), ap.hits()), before, "residency held");
    // Others are unaffected.
    assert_eq!(get(&trusted, "198.51.100.7").await.status(), 200);

    // Metrics by chosen region and client continent (bounded labels).
    let (eu, asia) = (
        "meridian_client_requests_total{continent=\"EU\",region=\"eu-west\"}",
        "meridian_client_requests_total{continent=\"AS\",region=\"ap-southeast\"}",
    );
    let metrics = m.metrics_when(&[(eu, 3.0), (asia, 1.0)]);
    assert!(metric(&metrics, eu) >= 3.0, "{metrics}");
    assert!(metric(&metrics, asia) >= 1.0, "{metrics}");
    assert!(metric(&metrics, "meridian_client_header_invalid_total") >= 1.0);
    // The status names the database in use.
    let s = m.status();
    assert_eq!(s["geoip"]["database"], db.display().to_string());
    assert_eq!(s["geoip"]["type"], "meridian-test-country");
}

fn wait_down(admin: SocketAddr, addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = blocking_get(admin, "/status").unwrap();
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        let down = s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["backends"].as_array().unwrap())
            .any(|b| b["address"] == addr.to_string() && b["health"] == "down");
        if down {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never went down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_builtin_database_locates_real_addresses() {
    let us = backend("us-1", "us-east").await;
    let eu = backend("eu-1", "eu-west").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("us-east", listen, admin);
    cfg.push_str(
        "\n[client]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[steering]\nexpose_headers = true\n",
    );
    cfg.push_str(&region("us-east", 39.04, -77.49, &[&us], ""));
    cfg.push_str(&region("eu-west", 53.35, -6.26, &[&eu], ""));
    let m = start(cfg, listen, admin).await;
    let c = client();
    // Deutsche Telekom (DE) → nearest region eu-west; Google DNS (US) → us-east.
    for (ip, country, region) in [
        ("80.128.0.1", "DE", "eu-west"),
        ("8.8.8.8", "US", "us-east"),
    ] {
        let r = c
            .get(m.url("/"))
            .header("x-forwarded-for", ip)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-meridian-client-country"], country);
        assert_eq!(r.headers()["x-meridian-region"], region);
    }
}

/// Sends `preamble` + a GET on a fresh connection from `source`; the raw response.
fn raw_exchange(proxy: SocketAddr, source: &str, preamble: &[u8]) -> String {
    use std::io::{Read, Write};
    // std has no bind-before-connect: bind the source with tokio's TcpSocket.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = s.connect(proxy).await.unwrap();
        let mut stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The proxy may close a rejected connection before we finish writing.
        let _ = stream.write_all(preamble);
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: meridian\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_protocol_headers_from_trusted_peers_set_the_client() {
    let us = backend("us-1", "us-east").await;
    let eu = backend("eu-1", "eu-west").await;
    let ap = backend("ap-1", "ap-southeast").await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test-country.mmdb");
    write_db(&db);
    let mut cfg = header("us-east", listen, admin).replace(
        &format!("admin = \"{admin}\"\n"),
        &format!("admin = \"{admin}\"\nproxy_protocol = true\n"),
    );
    cfg.push_str(&format!(
        "\n[geoip]\ndatabase = \"{}\"\n\n[client]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[steering]\nexpose_headers = true\n",
        db.display()
    ));
    cfg.push_str(&region("us-east", 39.04, -77.49, &[&us], ""));
    cfg.push_str(&region("eu-west", 53.35, -6.26, &[&eu], ""));
    cfg.push_str(&region("ap-southeast", 1.29, 103.85, &[&ap], ""));
    let m = start(cfg, listen, admin).await;
    let exchange = |source: &'static str, preamble: Vec<u8>| {
        tokio::task::spawn_blocking(move || raw_exchange(listen, source, &preamble))
    };

    // v1 from the trusted load balancer: the client is in GB.
    let r = exchange(
        "127.0.0.1",
        b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n".to_vec(),
    )
    .await
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.to_lowercase().contains("x-meridian-client-country: gb"),
        "{r}"
    );
    assert!(r.contains("hello from eu-1 in eu-west"), "{r}");

    // v2 (binary): the client is in JP.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 203, 0, 113, 9, 127, 0, 0, 1, 0x9c, 0x40, 0, 80,
    ]);
    let r = exchange("127.0.0.1", v2).await.unwrap();
    assert!(r.contains("hello from ap-1 in ap-southeast"), "{r}");

    // A peer that is not a trusted proxy, and a malformed header: closed, no response.
    let r = exchange(
        "127.0.0.2",
        b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r, "", "untrusted peer must not choose its address");
    let r = exchange(
        "127.0.0.1",
        b"PROXY TCP4 banana 127.0.0.1 1 80\r\n".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r, "");
    assert!(metric(&m.metrics(), "meridian_client_header_invalid_total") >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_geoip_database_replaced_by_rename_moves_clients_without_a_reload_request() {
    let eu = backend("eu-1", "eu-west").await;
    let ap = backend("ap-1", "ap-southeast").await;
    let us = backend("us-1", "us-east").await;
    let (listen, admin) = (free_addr(), free_addr());
    // The database lives outside the config file's directory: watched on its own.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    std::fs::write(&db, country_db(&[("198.51.100.0/24", "GB")])).unwrap();
    let mut cfg = header("us-east", listen, admin);
    cfg.push_str(&format!(
        "\n[geoip]\ndatabase = \"{}\"\n\n[client]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[steering]\nexpose_headers = true\n\n[reload]\ndebounce = \"100ms\"\n",
        db.display()
    ));
    cfg.push_str(&region("us-east", 39.04, -77.49, &[&us], ""));
    cfg.push_str(&region("eu-west", 53.35, -6.26, &[&eu], ""));
    cfg.push_str(&region("ap-southeast", 1.29, 103.85, &[&ap], ""));
    let m = start(cfg, listen, admin).await;
    let c = client();
    let route = || {
        let req = c.get(m.url("/")).header("x-forwarded-for", "198.51.100.7");
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let h = |k: &str| r.headers()[k].to_str().unwrap().to_string();
            (h("x-meridian-client-country"), h("x-meridian-region"))
        }
    };
    assert_eq!(route().await, ("GB".into(), "eu-west".into()));
    let generation = m.status()["generation"].as_u64().unwrap();

    // geoipupdate's way: the new database is written next to the old one and renamed over
    // it. The network now sits in Japan. No SIGHUP, no POST /reload.
    replace_by_rename(&db, country_db(&[("198.51.100.0/24", "JP")]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = route().await;
        if seen == ("JP".to_string(), "ap-southeast".to_string()) {
            break;
        }
        assert_eq!(
            seen,
            ("GB".into(), "eu-west".into()),
            "old or new, nothing else"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new database is not used after 15 s:\n{}",
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_reloaded_by_file_change(&m, generation);
    assert_eq!(m.status()["geoip"]["database"], db.display().to_string());
    // It stays: the next requests go to Japan's region too.
    let before = (eu.hits(), ap.hits());
    for _ in 0..10 {
        assert_eq!(route().await, ("JP".into(), "ap-southeast".into()));
    }
    assert_eq!((eu.hits(), ap.hits()), (before.0, before.1 + 10));
}

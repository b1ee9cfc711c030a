//! End-to-end: requests through a real `meridian` process to real backends on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(15);

fn one_region(
    backends: &[&meridian_demo_backend::Backend],
    extra: &str,
) -> (String, std::net::SocketAddr, std::net::SocketAddr) {
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region("local", 50.0, 8.0, backends, extra));
    (cfg, listen, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_and_responses_pass_intact() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (cfg, listen, admin) = one_region(&[&b1, &b2], "");
    let m = start(cfg, listen, admin).await;
    let c = client();

    // Status, headers, body.
    let r = c.get(m.url("/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let name = r.headers()["x-backend"].to_str().unwrap().to_string();
    assert!(name == "b1" || name == "b2");
    assert_eq!(r.headers()["x-region"], "local");
    assert_eq!(
        r.text().await.unwrap(),
        format!("hello from {name} in local\n")
    );

    // Forwarding headers as the backend saw them.
    let r = c
        .get(m.url("/echo?x=1"))
        .header("x-custom", "kept")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["x-echo-path"], "/echo?x=1");
    assert_eq!(h["x-echo-h-x-custom"], "kept");
    assert_eq!(
        h["x-echo-h-x-forwarded-for"], "127.0.0.1",
        "an untrusted client's XFF is replaced, not appended to"
    );
    assert_eq!(h["x-echo-h-x-forwarded-proto"], "http");
    assert!(h["x-echo-h-via"]
        .to_str()
        .unwrap()
        .contains("1.1 meridian-local"));

    // A 1 MiB response body, byte for byte.
    let r = c.get(m.url("/bytes/1048576")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 1 << 20);
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == b'a' + (i % 26) as u8));

    // A 1 MiB chunked upload, echoed back intact.
    let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = payload
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = c
        .post(m.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-echo-h-transfer-encoding"], "chunked");
    assert_eq!(r.headers()["x-echo-length"], "1048576");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &payload[..]);

    // Upstream statuses pass through.
    let r = c.get(m.url("/status/418")).send().await.unwrap();
    assert_eq!(r.status(), 418);

    // HTTP/2 over cleartext (prior knowledge).
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(m.url("/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("hello from b"));
    let r = h2.get(m.url("/echo")).send().await.unwrap();
    assert_eq!(
        r.headers()["x-echo-h-via"],
        "2 meridian-local",
        "Via names the client's protocol"
    );
}

/// Sends raw request bytes (ending the header with `Connection: close`) and returns the
/// response head, lower-cased header names, as (status, headers).
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>) {
    let text = raw_exchange(addr, request);
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_headers_chain_as_a_proxy_should() {
    let b = backend("b1", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str("[client]\ntrusted_proxies = [\"127.0.0.0/8\"]\n");
    cfg.push_str(&region("local", 50.0, 8.0, &[&b], ""));
    let _m = start(cfg, listen, admin).await;

    blocking(move || {
        // HTTP/1.0, two Via lines from earlier hops, a trusted XFF chain on two lines.
        let (status, h) = raw(
            listen,
            b"GET /echo HTTP/1.0\r\nHost: x\r\nVia: 1.1 edge-a\r\nVia: 1.0 edge-b, 1.1 edge-c\r\n\
              X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200);
        assert_eq!(
            get(&h, "x-echo-h-via"),
            Some("1.1 edge-a, 1.0 edge-b, 1.1 edge-c, 1.0 meridian-local"),
            "every earlier Via entry kept in order, this hop with the received version: {h:?}"
        );
        assert_eq!(
            get(&h, "x-echo-h-x-forwarded-for"),
            Some("203.0.113.7, 10.0.0.1, 127.0.0.1"),
            "a trusted chain is kept and the peer appended: {h:?}"
        );

        // A chain that is not text (obs-text bytes) is no chain: replaced by the peer,
        // never an empty first entry.
        let mut req = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.\xff\r\n".to_vec();
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        let (status, h) = raw(listen, &req);
        assert_eq!(status, 200);
        assert_eq!(get(&h, "x-echo-h-x-forwarded-for"), Some("127.0.0.1"), "{h:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_answers_a_wrong_method_with_405_and_allow() {
    let b = backend("b1", "local").await;
    let (cfg, listen, admin) = one_region(&[&b], "");
    let _m = start(cfg, listen, admin).await;
    blocking(move || {
        let (status, h) = raw(
            admin,
            b"DELETE /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((status, get(&h, "allow")), (405, Some("GET")), "{h:?}");
        let (status, h) = raw(
            admin,
            b"GET /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((status, get(&h, "allow")), (405, Some("POST")), "{h:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_round_robin_follows_weights() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbalance = \"weighted\"\nbackends = [\n  {{ address = \"{}\", weight = 3 }},\n  {{ address = \"{}\", weight = 1 }},\n]\n",
        b1.addr(),
        b2.addr()
    ));
    let m = start(cfg, listen, admin).await;
    let c = client();
    for i in 0..400 {
        let r = c.get(m.url("/")).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "request {i}: {}\n{}",
            r.text().await.unwrap(),
            m.log()
        );
    }
    assert_eq!((b1.hits(), b2.hits()), (300, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_probes_take_a_backend_out_and_good_ones_bring_it_back() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (cfg, listen, admin) = one_region(&[&b1, &b2], "balance = \"round_robin\"");
    let m = start(cfg, listen, admin).await;
    let c = client();
    let series = |b: &meridian_demo_backend::Backend| {
        format!(
            "meridian_backend_up{{backend=\"{}\",region=\"local\"}}",
            b.addr()
        )
    };

    b1.set_healthy(false);
    m.wait_backend_health(b1.addr(), "down", T);
    b1.reset_counts();
    b2.reset_counts();
    for _ in 0..20 {
        let r = c.get(m.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-backend"], "b2");
    }
    assert_eq!(b1.hits(), 0);
    let status = m.status();
    let backends = &status["regions"][0]["backends"];
    let b1_status = backends
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == b1.addr().to_string())
        .unwrap();
    assert_eq!(b1_status["health"], "down");
    assert_eq!(b1_status["last_probe"]["error"], "status 503");
    assert_eq!(status["regions"][0]["health"], "degraded");
    let metrics = m.metrics();
    assert!(
        metric(
            &metrics,
            &format!(
                "meridian_health_checks_total{{backend=\"{}\",region=\"local\",result=\"failure\"}}",
                b1.addr()
            )
        ) >= 2.0
    );
    // The gauge follows within a measurement tick.
    let deadline = Instant::now() + T;
    while metric(&m.metrics(), &series(&b1)) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "backend_up gauge never went to 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    b1.set_healthy(true);
    m.wait_backend_health(b1.addr(), "up", T);
    for _ in 0..20 {
        assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
    }
    assert!(b1.hits() >= 5, "traffic returns to b1: {}", b1.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_backends_down_gives_a_quick_503() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (cfg, listen, admin) = one_region(&[&b1, &b2], "");
    let m = start(cfg, listen, admin).await;
    b1.kill().await;
    b2.kill().await;
    m.wait_backend_health(b1.addr(), "down", T);
    m.wait_backend_health(b2.addr(), "down", T);
    let c = client();
    let started = Instant::now();
    let r = c.get(m.url("/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("no healthy backend"));
    // Generous bound for a loaded CI machine: the point is "no hang until a timeout".
    assert!(took < Duration::from_secs(3), "503 took {took:?}");
    // The access-log/metrics hook runs just after the response is written: poll briefly.
    let text = m.metrics_when(&[("meridian_no_backend_total", 1.0)]);
    assert!(
        metric(&text, "meridian_no_backend_total") >= 1.0,
        "no_backend counter never moved"
    );
    // Recovery: a backend comes back, traffic flows again.
    b2.revive().await.unwrap();
    m.wait_backend_health(b2.addr(), "up", T);
    assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_failure_is_retried_on_another_backend() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    // Slow probes: the dead backend is found by real traffic first.
    let mut cfg =
        header("local", listen, admin).replace("interval = \"400ms\"", "interval = \"1h\"");
    cfg.push_str("\n[outlier]\nconsecutive_failures = 3\nbase_ejection = \"1m\"\n");
    cfg.push_str(&region(
        "local",
        0.0,
        0.0,
        &[&b1, &b2],
        "balance = \"round_robin\"",
    ));
    let m = start(cfg, listen, admin).await;
    b1.kill().await;
    let c = client();
    for i in 0..30 {
        let r = c.get(m.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-backend"], "b2");
    }
    let metrics = m.metrics();
    let retries = metric(&metrics, "meridian_retries_total{region=\"local\"}");
    assert!((3.0..=30.0).contains(&retries), "retries: {retries}");
    assert_eq!(
        metric(
            &metrics,
            &format!(
                "meridian_ejections_total{{backend=\"{}\",region=\"local\"}}",
                b1.addr()
            )
        ),
        1.0,
        "ejected after 3 consecutive connect failures"
    );
    let s = m.status();
    let ejected = s["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["address"] == b1.addr().to_string() && b["ejected"] == true);
    assert!(ejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_status_reflect_traffic() {
    let b1 = backend("b1", "local").await;
    let (cfg, listen, admin) = one_region(&[&b1], "");
    let m = start(cfg, listen, admin).await;
    let c = client();
    for _ in 0..7 {
        c.get(m.url("/")).send().await.unwrap();
    }
    for _ in 0..3 {
        c.get(m.url("/status/502")).send().await.unwrap();
    }
    let base = format!("meridian_requests_total{{backend=\"{}\",class=", b1.addr());
    let (ok, bad) = (
        format!("{base}\"2xx\",region=\"local\"}}"),
        format!("{base}\"5xx\",region=\"local\"}}"),
    );
    let text = m.metrics_when(&[(&ok, 7.0), (&bad, 3.0)]);
    assert_eq!(metric(&text, &ok), 7.0);
    assert_eq!(metric(&text, &bad), 3.0);
    assert_eq!(
        metric(
            &text,
            "meridian_upstream_response_seconds_count{region=\"local\"}"
        ),
        10.0
    );
    assert!(text.contains("meridian_probe_rtt_seconds"));
    let s = m.status();
    assert_eq!(s["ready"], true);
    assert_eq!(s["node"]["region"], "local");
    assert_eq!(s["regions"][0]["name"], "local");
    let b = &s["regions"][0]["backends"][0];
    assert_eq!(b["health"], "up");
    assert!(b["probes"].as_u64().unwrap() >= 1);
    assert!(b["probe_rtt_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(s["geoip"]["database"], "built-in");
    assert!(s["geoip"]["attribution"]
        .as_str()
        .unwrap()
        .contains("DB-IP"));
    // Unknown paths on the admin listener are 404; the proxy is separate.
    assert_eq!(blocking_get(m.admin, "/nope").unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_hanging_up_do_not_eject_a_backend() {
    let b1 = backend("b1", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str("\n[outlier]\nconsecutive_failures = 2\n");
    cfg.push_str(&region("local", 0.0, 0.0, &[&b1], ""));
    let m = start(cfg, listen, admin).await;
    // Each client gives up long before the slow answer: the proxy sees it disconnect.
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..6 {
        assert!(impatient.get(m.url("/delay/600")).send().await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let metrics = m.metrics();
    let series = format!(
        "meridian_ejections_total{{backend=\"{}\",region=\"local\"}}",
        b1.addr()
    );
    assert_eq!(
        metric(&metrics, &series),
        0.0,
        "a client hanging up is not the backend's fault"
    );
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
}

#[test]
fn a_taken_listener_address_stops_the_start_with_a_clear_error() {
    // Something else already listens on the proxy port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = squatter.local_addr().unwrap();
    let admin = free_addr();
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region("local", 50.0, 8.0, &[], ""));
    cfg = cfg.replace(
        "backends = [\n]",
        "backends = [{ address = \"127.0.0.1:9\" }]",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.toml");
    std::fs::write(&path, &cfg).unwrap();
    let mut child = std::process::Command::new(meridian_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--pid-file")
        .arg(dir.path().join("pid"))
        .arg("--upgrade-sock")
        .arg(dir.path().join("sock"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("meridian kept running with its listen address taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("listeners.http[0] = \"{listen}\": cannot listen:")),
        "{err}"
    );
    assert!(
        !blocking_get(admin, "/healthz").is_ok_and(|(code, _)| code == 200),
        "nothing pretends to be ready"
    );
    drop(squatter);
}

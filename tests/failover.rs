//! Cross-region failover end to end: three Meridian instances (us-east, eu-west,
//! ap-southeast, real coordinates), two backends per region, a bounded load through the
//! us-east instance while its region dies and comes back. Also: a slow backend within a
//! region and its recovery (decay), passive outlier ejection on 5xx, a POST never replayed,
//! and latency ranking moving a client off a slowed remote region and back.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use meridian_demo_backend::Backend;

const REGIONS: [(&str, f64, f64); 3] = [
    ("us-east", 39.04, -77.49),
    ("eu-west", 53.35, -6.26),
    ("ap-southeast", 1.29, 103.85),
];

struct World {
    backends: HashMap<&'static str, [Backend; 2]>,
    instances: Vec<Meridian>,
}

async fn world() -> World {
    let mut backends = HashMap::new();
    for (name, _, _) in REGIONS {
        backends.insert(
            name,
            [
                backend(&format!("{name}-1"), name).await,
                backend(&format!("{name}-2"), name).await,
            ],
        );
    }
    let mut instances = Vec::new();
    for (local, _, _) in REGIONS {
        let (listen, admin) = (free_addr(), free_addr());
        let mut cfg = header(local, listen, admin);
        // Load on a small CI machine makes loopback latencies noisy; this test is about
        // failover order, so keep latency ranking out of it (route.rs tests cover it).
        cfg.push_str("\n[latency]\ntolerance = \"1s\"\n");
        for (name, lat, lon) in REGIONS {
            let [a, b] = &backends[name];
            cfg.push_str(&region(name, lat, lon, &[a, b], ""));
        }
        instances.push(start(cfg, listen, admin).await);
    }
    World {
        backends,
        instances,
    }
}

/// One response as the load generator saw it: when, status, serving region.
type Sample = (Duration, u16, String);

/// A bounded load: `workers` loops of GETs until `stop` or `limit`, at most `max` requests.
fn load(
    url: String,
    workers: usize,
    max: usize,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinSet<()>, Arc<Mutex<Vec<Sample>>>, Instant) {
    load_from(url, None, workers, max, limit, stop)
}

/// [`load`] on behalf of the client `xff` (sent as `X-Forwarded-For`, which Meridian
/// believes from a trusted proxy), if given.
fn load_from(
    url: String,
    xff: Option<&'static str>,
    workers: usize,
    max: usize,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinSet<()>, Arc<Mutex<Vec<Sample>>>, Instant) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (url, samples, stop) = (url.clone(), samples.clone(), stop.clone());
        set.spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < limit
                && samples.lock().unwrap().len() < max
            {
                let mut req = c.get(&url);
                if let Some(xff) = xff {
                    req = req.header("x-forwarded-for", xff);
                }
                let (status, region) = match req.send().await {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.headers()
                            .get("x-region")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default(),
                    ),
                    Err(_) => (0, String::new()),
                };
                samples
                    .lock()
                    .unwrap()
                    .push((started.elapsed(), status, region));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    (set, samples, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_outage_is_invisible_to_clients_and_traffic_returns() {
    let w = world().await;
    let us = &w.instances[0];
    let [us1, us2] = &w.backends["us-east"];
    let stop = Arc::new(AtomicBool::new(false));
    let (mut set, samples, started) = load(
        us.url("/"),
        8,
        20_000,
        Duration::from_secs(60),
        stop.clone(),
    );

    let count_region = |from: Duration, region: &str| {
        samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 >= from && s.2 == region)
            .count()
    };
    // Warm: traffic is local.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(count_region(Duration::ZERO, "us-east") > 10);
    assert_eq!(count_region(Duration::ZERO, "eu-west"), 0);

    // Kill the whole local region under load.
    let killed_at = started.elapsed();
    us1.kill().await;
    us2.kill().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = count_region(killed_at, "eu-west");
    assert!(
        during > 20,
        "traffic moved to the next-nearest region: {during}"
    );
    assert_eq!(
        count_region(killed_at, "ap-southeast"),
        0,
        "eu-west is nearer than ap-southeast"
    );
    // us-east is marked down by the probes and the region shows as down.
    us.wait_backend_health(us1.addr(), "down", Duration::from_secs(15));
    us.wait_backend_health(us2.addr(), "down", Duration::from_secs(15));

    // Recovery: traffic comes back once `rise` probes pass.
    us1.revive().await.unwrap();
    us2.revive().await.unwrap();
    let revived_at = started.elapsed();
    us.wait_backend_health(us1.addr(), "up", Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(15);
    while count_region(revived_at + Duration::from_secs(1), "us-east") < 20 {
        assert!(
            Instant::now() < deadline,
            "traffic never returned to us-east"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while set.join_next().await.is_some() {}

    let all = samples.lock().unwrap().clone();
    let failed: Vec<&Sample> = all.iter().filter(|s| s.1 != 200).collect();
    assert!(all.len() > 100, "load ran: {}", all.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(10)]
    );

    // Metrics: failovers from us-east to eu-west were counted, and retries happened.
    let metrics = us.metrics();
    assert!(
        metric(
            &metrics,
            "meridian_failovers_total{from=\"us-east\",to=\"eu-west\"}"
        ) >= 20.0
    );
    let status = us.status();
    let regions = status["regions"].as_array().unwrap();
    assert_eq!(regions[0]["name"], "us-east");
    assert_eq!(
        regions[0]["rank"], 0,
        "back in first place for local clients"
    );

    // Every instance serves its own region to local clients.
    for (i, (name, _, _)) in REGIONS.iter().enumerate() {
        let r = client().get(w.instances[i].url("/")).send().await.unwrap();
        assert_eq!(r.headers()["x-region"], *name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_backend_gets_less_traffic_and_its_share_back_once_fast() {
    let fast = backend("fast", "local").await;
    let slow = backend("slow", "local").await;
    slow.set_delay(Duration::from_millis(40));
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    // A short decay: a slow past stops weighing on a backend within seconds.
    cfg.push_str("\n[latency]\ndecay = \"1s\"\n");
    cfg.push_str(&region(
        "local",
        0.0,
        0.0,
        &[&fast, &slow],
        "balance = \"p2c_ewma\"",
    ));
    let m = start(cfg, listen, admin).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (mut set, samples, _) = load(
        m.url("/"),
        4,
        1_000_000,
        Duration::from_secs(60),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = hits_during(&[&fast, &slow], tokio::time::sleep(Duration::from_secs(2))).await;
    assert!(d[0] >= 100, "load ran: {d:?}");
    assert!(d[0] > 3 * d[1], "the slow backend gets less: {d:?}");

    // Fast again: as its slow responses age out (decay 1 s) it is tried, found fast, and
    // gets its share back (equal backends: about half; a quarter or more counts). That
    // takes a few seconds; with the default 10 s decay it takes over 15 s.
    slow.set_delay(Duration::ZERO);
    let since = Instant::now();
    loop {
        let d = hits_during(&[&fast, &slow], tokio::time::sleep(Duration::from_secs(1))).await;
        if d[0] + d[1] >= 40 && 3 * d[1] >= d[0] {
            eprintln!("share back after {:?}: {d:?}", since.elapsed());
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the recovered backend never got its share back: {d:?}\n{}",
            m.status()
        );
    }
    stop.store(true, Ordering::Relaxed);
    while set.join_next().await.is_some() {}
    let all = samples.lock().unwrap();
    let failed = all.iter().filter(|s| s.1 != 200).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_answering_5xx_is_ejected_by_passive_detection_and_its_sibling_serves() {
    let bad = backend("local-bad", "local").await;
    let good = backend("local-good", "local").await;
    let remote = backend("remote-1", "remote").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str("\n[outlier]\nconsecutive_failures = 3\nbase_ejection = \"10s\"\n");
    // Round robin: the failing backend gets every other request until it is ejected.
    cfg.push_str(&region(
        "local",
        0.0,
        0.0,
        &[&bad, &good],
        "balance = \"round_robin\"",
    ));
    cfg.push_str(&region("remote", 10.0, 10.0, &[&remote], ""));
    let m = start(cfg, listen, admin).await;
    let ejections = format!(
        "meridian_ejections_total{{backend=\"{}\",region=\"local\"}}",
        bad.addr()
    );
    assert_eq!(metric(&m.metrics(), &ejections), 0.0);

    // Real requests get 503 from it; its /healthz still answers 200, so the probes keep it
    // up and only passive detection can take it out. One request at a time: each answer
    // is counted before the next pick.
    bad.set_fail_status(Some(503));
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..30 {
        let r = c.get(m.url("/")).send().await.unwrap();
        let name = r
            .headers()
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_string());
        seen.push((r.status().as_u16(), name.unwrap_or_default()));
    }
    let errors: Vec<usize> = (0..seen.len()).filter(|&i| seen[i].0 >= 500).collect();
    assert_eq!(
        errors.len(),
        3,
        "clients see consecutive_failures 5xx, then none: {seen:?}"
    );
    assert!(errors.iter().all(|&i| seen[i].1 == "local-bad"), "{seen:?}");
    assert!(
        seen.iter()
            .filter(|s| s.0 < 500)
            .all(|s| s.0 == 200 && s.1 == "local-good"),
        "every other answer from the sibling: {seen:?}"
    );
    assert_eq!(bad.hits(), 3, "no request reached it after the ejection");
    assert_eq!(
        remote.hits(),
        0,
        "the region's sibling served, not another region"
    );
    assert_eq!(metric(&m.metrics(), &ejections), 1.0);
    let s = m.status();
    let local = &s["regions"][0];
    assert_eq!(local["health"], "degraded", "{local}");
    assert_eq!(local["usable_backends"], 1, "{local}");
    let b = &local["backends"][0];
    assert_eq!(b["address"], bad.addr().to_string());
    assert_eq!(b["ejected"], true, "{b}");
    assert_eq!(b["usable"], false, "{b}");
    assert_eq!(b["health"], "up", "probes still pass: {b}");
    assert_eq!(local["backends"][1]["ejected"], false);

    // Fixed: a good probe after half the ejection (5 s) re-admits it.
    bad.set_fail_status(None);
    let since = Instant::now();
    loop {
        let s = m.status();
        if s["regions"][0]["backends"][0]["usable"] == true {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "never re-admitted: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = hits_during(&[&bad, &good], async {
        for _ in 0..20 {
            assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
        }
    })
    .await;
    assert_eq!(d, [10, 10], "round robin over both again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_that_reached_a_dying_backend_is_not_replayed_but_a_get_is() {
    let local = backend("local-1", "local").await;
    let remote = backend("remote-1", "remote").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region("local", 0.0, 0.0, &[&local], ""));
    cfg.push_str(&region("remote", 10.0, 10.0, &[&remote], ""));
    let m = start(cfg, listen, admin).await;
    let c = client();

    // The local backend accepts requests but never answers; then it dies.
    local.set_hang(true);
    local.reset_counts();
    remote.reset_counts();
    let post = tokio::spawn({
        let (c, url) = (c.clone(), m.url("/echo"));
        async move { c.post(url).body("pay once").send().await }
    });
    let get = tokio::spawn({
        let (c, url) = (c.clone(), m.url("/"));
        async move { c.get(url).send().await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while local.hits() < 2 {
        assert!(
            Instant::now() < deadline,
            "requests never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    local.kill().await;

    let post = post.await.unwrap().unwrap();
    let (post_status, post_headers) = (post.status(), post.headers().clone());
    let post_body = post.text().await.unwrap_or_default();
    assert_eq!(
        post_status,
        502,
        "the POST fails rather than being sent twice; got {post_headers:?} {post_body:?}\n{}",
        m.log()
    );
    let get = get.await.unwrap().unwrap();
    assert_eq!(get.status(), 200, "the idempotent GET is retried elsewhere");
    assert_eq!(get.headers()["x-backend"], "remote-1");
    assert_eq!(remote.hits(), 1, "only the GET reached the remote region");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_region_slowed_beyond_tolerance_loses_its_clients_until_it_recovers() {
    // This node is in us-east; the client is in GB and steered to eu-west, then
    // eu-central, then us-east.
    let mut backends = HashMap::new();
    for name in ["us-east", "eu-west", "eu-central"] {
        backends.insert(
            name,
            [
                backend(&format!("{name}-1"), name).await,
                backend(&format!("{name}-2"), name).await,
            ],
        );
    }
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("us-east", listen, admin);
    cfg.push_str(
        r#"
[latency]
tolerance = "20ms"
decay = "10s"

[[geoip.overrides]]
cidr = "198.51.100.0/24"
country = "GB"

[client]
trusted_proxies = ["127.0.0.1"]

[steering.countries]
GB = ["eu-west", "eu-central", "us-east"]
"#,
    );
    for (name, lat, lon) in [
        ("us-east", 39.04, -77.49),
        ("eu-west", 53.35, -6.26),
        ("eu-central", 50.11, 8.68),
    ] {
        let [a, b] = &backends[name];
        cfg.push_str(&region(name, lat, lon, &[a, b], ""));
    }
    let m = start(cfg, listen, admin).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (mut set, samples, started) = load_from(
        m.url("/"),
        Some("198.51.100.7"),
        4,
        1_000_000,
        Duration::from_secs(120),
        stop.clone(),
    );
    // Share of each region among the responses of the last `window`.
    let shares = |window: Duration| {
        let now = started.elapsed();
        let all = samples.lock().unwrap();
        let recent: Vec<&Sample> = all
            .iter()
            .filter(|s| s.0 + window >= now && s.1 == 200)
            .collect();
        let share = |r: &str| {
            recent.iter().filter(|s| s.2 == r).count() as f64 / recent.len().max(1) as f64
        };
        (recent.len(), share("eu-west"), share("eu-central"))
    };
    let region_status = |name: &str| {
        let s = m.status();
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let window = Duration::from_millis(1500);
    tokio::time::sleep(window).await;
    let (n, west, _) = shares(window);
    assert!(
        n > 20 && west == 1.0,
        "the client starts on eu-west: {n} {west}"
    );

    // eu-west answers 150 ms late (its /healthz does not): far beyond the 20 ms tolerance.
    // The region measurement is published with a dead band and at most one change a
    // second, so allow several seconds.
    for b in &backends["eu-west"] {
        b.set_delay(Duration::from_millis(150));
    }
    let since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (n, west, central) = shares(window);
        if n >= 20 && central >= 0.8 {
            eprintln!("moved after {:?}: {n} {west} {central}", since.elapsed());
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "traffic never left the slow region: {n} {west} {central}\n{}",
            m.status()
        );
    }
    let west_status = region_status("eu-west");
    assert!(
        west_status["measured_latency_ms"].as_f64().unwrap() > 20.0,
        "{west_status}"
    );
    assert_eq!(
        west_status["rank"], 2,
        "last for local clients too: {west_status}"
    );
    assert!(
        metric(
            &m.metrics(),
            "meridian_failovers_total{from=\"eu-west\",to=\"eu-central\"}"
        ) >= 20.0
    );

    // Fast again: once its slow measurement has decayed below the tolerance, eu-west gets
    // the client back, and keeps it (a still slow region would lose it again at once).
    for b in &backends["eu-west"] {
        b.set_delay(Duration::ZERO);
    }
    let since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (n, west, central) = shares(Duration::from_millis(500));
        if n >= 10 && west >= 0.9 {
            eprintln!("back after {:?}: {n} {west} {central}", since.elapsed());
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "traffic never returned to eu-west: {n} {west} {central}\n{}",
            m.status()
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, west, central) = shares(Duration::from_secs(3));
    assert!(
        n > 50 && west >= 0.9,
        "eu-west keeps it: {n} {west} {central}"
    );

    stop.store(true, Ordering::Relaxed);
    while set.join_next().await.is_some() {}
    let all = samples.lock().unwrap();
    let failed = all.iter().filter(|s| s.1 != 200).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", all.len());
}

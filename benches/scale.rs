//! Scale benchmark (`cargo bench --bench scale`): 50 regions × 200 backends (10,000 real
//! backends on loopback), HTTP health checks every 2 s.
//!
//! 1. Starts Meridian (in this process, from a real config file) with one region of 2
//!    backends and measures request latency (one keep-alive client, sequential GETs).
//! 2. Rewrites the file to 50 × 200 backends and reloads it through `POST /reload` on the
//!    admin API: the time to read, validate, build and swap the snapshot (target ≤ 1 s).
//! 3. Waits until all 10,000 backends are up and reports probe failures.
//! 4. Measures request latency again while the 10,000 backends are probed (target: not
//!    disturbed), over several probe intervals.
//!
//! Loopback only; needs about 12,000 file descriptors (`ulimit -n`). Bounded: every phase
//! has a deadline (latency phases 6 s each, waiting for health 60 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian::Instance;
use meridian_demo_backend::{spawn_on_thread, Backend, BackendSpec};
use meridian_routing::Health;

const REGIONS: usize = 50;
const PER_REGION: usize = 200;
const PHASE: Duration = Duration::from_secs(6);

fn config(listen: SocketAddr, admin: SocketAddr, regions: &[Vec<&Backend>]) -> String {
    let mut t = format!(
        "threads = 2\n[node]\nregion = \"r00\"\n[listeners]\nhttp = [\"{listen}\"]\nadmin = \"{admin}\"\n\
         [logging]\nlevel = \"warn\"\naccess_log = false\n\
         [health_check]\ninterval = \"2s\"\ntimeout = \"1s\"\n[reload]\nwatch = false\n"
    );
    for (i, backends) in regions.iter().enumerate() {
        // A 10 x 5 grid over the inhabited latitudes.
        let lat = -40.0 + (i / 10) as f64 * 20.0;
        let lon = -170.0 + (i % 10) as f64 * 36.0;
        t.push_str(&format!(
            "[regions.r{i:02}]\nlatitude = {lat}\nlongitude = {lon}\nbackends = [\n"
        ));
        for b in backends {
            t.push_str(&format!("  {{ address = \"{}\" }},\n", b.addr()));
        }
        t.push_str("]\n");
    }
    t
}

/// Sequential keep-alive GETs for `PHASE` (at most 200,000): latencies, failures.
async fn latency(url: &str) -> (Vec<Duration>, usize) {
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut lat, mut failed) = (Vec::new(), 0);
    let start = Instant::now();
    while start.elapsed() < PHASE && lat.len() + failed < 200_000 {
        let t0 = Instant::now();
        let ok = match c.get(url).send().await {
            Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            lat.push(t0.elapsed());
        } else {
            failed += 1;
        }
    }
    lat.sort();
    (lat, failed)
}

fn summary(name: &str, (lat, failed): &(Vec<Duration>, usize)) {
    let q = |p: f64| {
        let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
        lat.get(i)
            .map_or("-".into(), |d| format!("{:.0} µs", d.as_secs_f64() * 1e6))
    };
    println!(
        "  {name:<34} {:>7} requests, {failed} failed; p50 {}, p99 {}, p99.9 {}, max {}",
        lat.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
}

/// CPU time (utime + stime, clock ticks) of this process's threads, summed by thread name.
fn cpu_by_thread() -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // After the ")": state is field 0, utime 11, stime 12.
        *by.entry(comm.trim().to_string()).or_default() += ticks(11) + ticks(12);
    }
    by
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("scale: bench");
        return;
    }
    let total = REGIONS * PER_REGION;
    let t = Instant::now();
    let specs = (0..total)
        .map(|i| {
            BackendSpec::new(
                format!("b{i}"),
                format!("r{:02}", i / PER_REGION),
                "127.0.0.1:0".parse().unwrap(),
            )
        })
        .collect();
    let backends = spawn_on_thread(specs).unwrap_or_else(|e| {
        panic!("starting {total} backends: {e} (raise `ulimit -n` to at least 12000)")
    });
    println!(
        "scale benchmark: {REGIONS} regions x {PER_REGION} backends on loopback ({total} listeners started in {:.1} s)",
        t.elapsed().as_secs_f64()
    );

    let (listen, admin) = (common::free_addr(), common::free_addr());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.toml");
    let small = vec![backends[..2].iter().collect::<Vec<_>>()];
    std::fs::write(&path, config(listen, admin, &small)).unwrap();
    let inst = Instance::new(meridian_config::load(&path).expect("small config")).unwrap();
    let served = common::serve(inst.clone());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://{listen}/");
    let before = rt.block_on(latency(&url));

    // The big file: parse + validate alone, then the whole reload through the admin API.
    let big: Vec<Vec<&Backend>> = backends
        .chunks(PER_REGION)
        .map(|c| c.iter().collect())
        .collect();
    let text = config(listen, admin, &big);
    std::fs::write(&path, &text).unwrap();
    let t = Instant::now();
    let parsed = meridian_config::load(&path).expect("big config");
    let load_time = t.elapsed();
    drop(parsed);
    let (reload_status, reload_body, reload_time) = rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let t = Instant::now();
        let r = c
            .post(format!("http://{admin}/reload"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        (status, body, t.elapsed())
    });
    assert_eq!(reload_status, 200, "reload refused: {reload_body}");
    let active = inst.active();
    let snap = &active.routing;
    assert_eq!(snap.backends().count(), total, "the new snapshot is live");

    // Every backend up (rise = 2 probes at 2 s), bounded.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(60);
    let up = loop {
        let up = snap
            .backends()
            .filter(|(_, m)| m.state.health.get() == Health::Up)
            .count();
        if up == total || Instant::now() > deadline {
            break up;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let all_up = t.elapsed();
    let cpu0 = cpu_by_thread();
    let during = rt.block_on(latency(&url));
    let cpu1 = cpu_by_thread();
    let (ok, fail) = snap.backends().fold((0, 0), |(o, f), (_, m)| {
        (
            o + m.state.metrics.probe_ok.get(),
            f + m.state.metrics.probe_fail.get(),
        )
    });

    println!(
        "  config file                        {} KiB, {total} backends",
        text.len() / 1024
    );
    println!(
        "  load + validate (meridian_config)  {:.1} ms",
        load_time.as_secs_f64() * 1e3
    );
    println!(
        "  POST /reload (read, validate, build, swap)  {:.1} ms  -> {}",
        reload_time.as_secs_f64() * 1e3,
        reload_body.trim()
    );
    println!(
        "  all backends up after the swap     {up}/{total} in {:.1} s",
        all_up.as_secs_f64()
    );
    println!("  probes so far                      {ok} ok, {fail} failed");
    println!(
        "  request latency (1 client, sequential, {} s each):",
        PHASE.as_secs()
    );
    summary("1 region x 2 backends", &before);
    summary("50 x 200 backends, being probed", &during);
    println!("  CPU by thread during the second phase (ms per s; clock ticks of 10 ms):");
    for (name, t1) in &cpu1 {
        let d = t1 - cpu0.get(name).copied().unwrap_or(0);
        if d > 0 {
            println!(
                "    {name:<32} {:>5.0}",
                d as f64 * 10.0 / PHASE.as_secs_f64()
            );
        }
    }

    served.stop();
}

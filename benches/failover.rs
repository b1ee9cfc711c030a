//! Failover benchmark (`cargo bench --bench failover`): under a steady load of GETs through a
//! us-east instance, kill both us-east backends and measure what clients see: failed
//! requests, the time from the kill to the last failed request, to the first response
//! from the next region, and the worst latency around the kill. Then revive the region
//! and measure how long until traffic is back.
//!
//! Loopback only; bounded: 3 s warm-up, 4 s after the kill, at most 8 s after the revival.
//! Targets (issue 4): 0 failed GETs; traffic moved within 1 s.
//!
//! A second case kills a whole **instance**, not its backends: a us-east instance relays
//! UK clients to eu-west through the eu-west instance (`reach = "instances"`, the mesh
//! polling every 250 ms, fall 2); the eu-west instance is stopped under load, and the
//! bench reports failed requests and the time until the clients are served from us-east.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian::Instance;
use meridian_demo_backend::{Backend, BackendSpec};

const WORKERS: usize = 16;
const REGIONS: [(&str, f64, f64); 3] = [
    ("us-east", 39.04, -77.49),
    ("eu-west", 53.35, -6.26),
    ("ap-southeast", 1.29, 103.85),
];

/// (start offset, latency, ok, serving region)
type Sample = (Duration, Duration, bool, String);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("failover: bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os(INSTANCE_CASE).is_some() {
        instance_failover(&rt);
        return;
    }
    let backends: Vec<Backend> = rt.block_on(async {
        let mut v = Vec::new();
        for (region, _, _) in REGIONS {
            for n in 1..=2 {
                let spec = BackendSpec::new(
                    format!("{region}-{n}"),
                    region,
                    "127.0.0.1:0".parse().unwrap(),
                );
                v.push(Backend::start(spec).await.unwrap());
            }
        }
        v
    });
    let (listen, admin) = (common::free_addr(), common::free_addr());
    let mut text = format!(
        "threads = 2\n[node]\nregion = \"us-east\"\n[listeners]\nhttp = [\"{listen}\"]\nadmin = \"{admin}\"\n\
         [logging]\nlevel = \"warn\"\naccess_log = false\n\
         [health_check]\ninterval = \"250ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n\
         [reload]\nwatch = false\n"
    );
    for (name, lat, lon) in REGIONS {
        text.push_str(&format!(
            "[regions.{name}]\nlatitude = {lat}\nlongitude = {lon}\nbackends = [\n"
        ));
        for b in backends.iter().filter(|b| b.region() == name) {
            text.push_str(&format!("  {{ address = \"{}\" }},\n", b.addr()));
        }
        text.push_str("]\n");
    }
    let config = meridian_config::parse(&text, "<bench>", None).expect("bench config");
    let inst = Instance::new(config).expect("instance");
    let served = common::serve(inst.clone());
    std::thread::sleep(Duration::from_millis(700)); // every backend up (rise = 2)

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let started = Instant::now();
    let url = format!("http://{listen}/");
    let (kill_at, revive_at, back_at) = rt.block_on(async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..WORKERS {
            let (url, samples, stop) = (url.clone(), samples.clone(), stop.clone());
            set.spawn(async move {
                let c = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(20)
                {
                    let t0 = started.elapsed();
                    let r = c.get(&url).send().await;
                    let lat = started.elapsed() - t0;
                    let (ok, region) = match r {
                        Ok(r) if r.status() == 200 => (
                            true,
                            r.headers()
                                .get("x-region")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string(),
                        ),
                        _ => (false, String::new()),
                    };
                    samples.lock().unwrap().push((t0, lat, ok, region));
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let kill_at = started.elapsed();
        for b in backends.iter().filter(|b| b.region() == "us-east") {
            b.kill().await;
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let revive_at = started.elapsed();
        for b in backends.iter().filter(|b| b.region() == "us-east") {
            b.revive().await.unwrap();
        }
        // Wait (bounded) until responses come from us-east again.
        let mut back_at = None;
        let limit = Instant::now() + Duration::from_secs(8);
        while Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = samples.lock().unwrap();
            if let Some(first) = s
                .iter()
                .filter(|x| x.0 > revive_at && x.3 == "us-east")
                .map(|x| x.0)
                .min()
            {
                back_at = Some(first);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        while set.join_next().await.is_some() {}
        (kill_at, revive_at, back_at)
    });
    served.stop();

    let s = samples.lock().unwrap();
    let total = s.len();
    let failed: Vec<&Sample> = s.iter().filter(|x| !x.2).collect();
    let after_kill: Vec<&Sample> = s
        .iter()
        .filter(|x| x.0 >= kill_at && x.0 < revive_at)
        .collect();
    let last_fail = failed.iter().map(|x| x.0 + x.1).max();
    let first_moved = after_kill
        .iter()
        .filter(|x| x.3 == "eu-west")
        .map(|x| x.0 + x.1)
        .min();
    let last_us = after_kill
        .iter()
        .filter(|x| x.3 == "us-east")
        .map(|x| x.0 + x.1)
        .max();
    let worst = s
        .iter()
        .filter(|x| x.0 + x.1 >= kill_at && x.0 < kill_at + Duration::from_secs(1))
        .map(|x| x.1)
        .max()
        .unwrap_or_default();
    let steady: Vec<Duration> = {
        let mut v: Vec<Duration> = s.iter().filter(|x| x.0 < kill_at).map(|x| x.1).collect();
        v.sort();
        v
    };
    let p50 = steady.get(steady.len() / 2).copied().unwrap_or_default();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let rel = |t: Option<Duration>, base: Duration| {
        t.map_or("-".to_string(), |t| ms(t.saturating_sub(base)))
    };
    println!("failover benchmark: {WORKERS} concurrent clients, loopback, release build");
    println!("  requests                          {total}");
    println!("  failed requests                   {}", failed.len());
    println!(
        "  kill -> last failed response      {}",
        rel(last_fail, kill_at)
    );
    println!(
        "  kill -> first eu-west response    {}",
        rel(first_moved, kill_at)
    );
    println!(
        "  kill -> last us-east response     {}",
        rel(last_us, kill_at)
    );
    println!("  steady p50 latency                {}", ms(p50));
    println!(
        "  worst latency in the second after the kill  {}",
        ms(worst)
    );
    println!(
        "  after kill: eu-west {} / ap-southeast {} responses",
        after_kill.iter().filter(|x| x.3 == "eu-west").count(),
        after_kill.iter().filter(|x| x.3 == "ap-southeast").count()
    );
    println!(
        "  revive -> first us-east response  {}",
        rel(back_at, revive_at)
    );
    // The instance case runs in a process of its own: pingora servers started after one
    // that already ran and stopped in this process do not come up.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(INSTANCE_CASE, "1")
        .status()
        .unwrap();
    assert!(status.success(), "the instance case failed: {status}");
}

/// Set (to anything) to run only the instance case.
const INSTANCE_CASE: &str = "FAILOVER_INSTANCE_CASE";

/// The relay case: kill the eu-west instance under load.
fn instance_failover(rt: &tokio::runtime::Runtime) {
    let (us_b, eu_b) = rt.block_on(async {
        let spec = |n: &str, r: &str| BackendSpec::new(n, r, "127.0.0.1:0".parse().unwrap());
        (
            Backend::start(spec("us-east-1", "us-east")).await.unwrap(),
            Backend::start(spec("eu-west-1", "eu-west")).await.unwrap(),
        )
    });
    let (us, eu) = (
        (
            common::free_addr(),
            common::free_addr(),
            common::free_addr(),
        ),
        (
            common::free_addr(),
            common::free_addr(),
            common::free_addr(),
        ),
    );
    let cfg = |name: &str,
               (listen, admin, _): (
        std::net::SocketAddr,
        std::net::SocketAddr,
        std::net::SocketAddr,
    )| {
        format!(
            "threads = 2\n[node]\nname = \"{name}\"\n[listeners]\nhttp = [\"{listen}\"]\nadmin = \"{admin}\"\n\
             [logging]\nlevel = \"warn\"\naccess_log = false\n[client]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\
             [health_check]\ninterval = \"250ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n[reload]\nwatch = false\n\
             [mesh]\nsecret = \"bench-secret-0123456789\"\ninterval = \"250ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 2\n\
             [steering.countries]\nGB = [\"eu-west\"]\n\
             [regions.us-east]\nlatitude = 39.04\nlongitude = -77.49\nbackends = [{{ address = \"{}\" }}]\n\
             instances = [{{ name = \"us-1\", proxy = \"{}\", mesh = \"{}\" }}]\n\
             [regions.eu-west]\nlatitude = 53.35\nlongitude = -6.26\nreach = \"instances\"\nbackends = [{{ address = \"{}\" }}]\n\
             instances = [{{ name = \"eu-1\", proxy = \"{}\", mesh = \"{}\" }}]\n",
            us_b.addr(), us.0, us.2, eu_b.addr(), eu.0, eu.2
        )
    };
    let instance = |name: &str, addrs| {
        let config =
            meridian_config::parse(&cfg(name, addrs), "<bench>", None).expect("bench config");
        Instance::new(config).expect("instance")
    };
    let (us_inst, eu_inst) = (instance("us-1", us), instance("eu-1", eu));
    let eu_served = common::serve(eu_inst);
    let us_served = common::serve(us_inst.clone());
    // Until the mesh says eu-1 can serve and UK clients are relayed.
    let relayed = Instant::now() + Duration::from_secs(15);
    let url = format!("http://{}/", us.0);
    rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        loop {
            let r = c
                .get(&url)
                .header("x-forwarded-for", "81.2.69.160")
                .send()
                .await;
            let region = r.ok().and_then(|r| {
                r.headers()
                    .get("x-region")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            if region.as_deref() == Some("eu-west") || Instant::now() > relayed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let started = Instant::now();
    let kill_at = rt.block_on(async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..WORKERS {
            let (url, samples, stop) = (url.clone(), samples.clone(), stop.clone());
            set.spawn(async move {
                let c = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(15)
                {
                    let t0 = started.elapsed();
                    let r = c
                        .get(&url)
                        .header("x-forwarded-for", "81.2.69.160")
                        .send()
                        .await;
                    let lat = started.elapsed() - t0;
                    let (ok, region) = match r {
                        Ok(r) if r.status() == 200 => (
                            true,
                            r.headers()
                                .get("x-region")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string(),
                        ),
                        _ => (false, String::new()),
                    };
                    samples.lock().unwrap().push((t0, lat, ok, region));
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let kill_at = started.elapsed();
        tokio::task::spawn_blocking(move || eu_served.stop())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        while set.join_next().await.is_some() {}
        kill_at
    });
    us_served.stop();
    let s = samples.lock().unwrap();
    let failed = s.iter().filter(|x| !x.2).count();
    let before = s
        .iter()
        .filter(|x| x.0 < kill_at && x.3 == "eu-west")
        .count();
    let moved = s
        .iter()
        .filter(|x| x.0 + x.1 >= kill_at && x.3 == "us-east")
        .map(|x| x.0 + x.1)
        .min();
    let last_fail = s.iter().filter(|x| !x.2).map(|x| x.0 + x.1).max();
    let ms = |t: Option<Duration>| {
        t.map_or("-".to_string(), |t| {
            format!("{:.1} ms", t.saturating_sub(kill_at).as_secs_f64() * 1e3)
        })
    };
    println!(
        "instance failover: {WORKERS} concurrent UK clients relayed us-1 -> eu-1, eu-1 stopped"
    );
    println!("  requests                          {}", s.len());
    println!("  relayed to eu-west before the kill {before}");
    println!("  failed requests                   {failed}");
    println!("  kill -> last failed response      {}", ms(last_fail));
    println!("  kill -> first us-east response    {}", ms(moved));
}

//! Mesh scale (`cargo bench --bench mesh`): N lightweight instances (the mesh alone: its
//! signed endpoint and its pollers, no proxy) on loopback in one process, every one polling
//! every other each `MESH_INTERVAL_MS` (default 1000). Reports, per instance: the bytes its
//! mesh traffic costs per second (measured on the endpoints' sockets, both ways, then ×2:
//! every instance is a server and a client of the same amount), CPU per second, and the
//! time until every other instance holds a killed instance down.
//!
//! `MESH_SIZES=10,100` (default) chooses the sizes. Bounded: 8 s of steady state per size
//! plus at most 30 s for the verdict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_mesh::{Key, Mesh, NodeState, Peer, RegionReport, Settings};
use tokio::sync::watch;

/// CPU time of this process (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// A document of realistic size: 32 backends.
fn document(name: &str, view: &meridian_mesh::MeshView) -> NodeState {
    NodeState {
        name: name.into(),
        region: format!("r-{name}"),
        generation: 1,
        config_digest: "0123456789abcdef".into(),
        ready: true,
        draining: false,
        region_health: RegionReport {
            usable: 32,
            total: 32,
            latency_ms: 1.5,
            backends: (0..32)
                .map(|i| meridian_mesh::BackendReport {
                    state: None,
                    id: format!("r-{name}/10.0.{}.{}:8080", i / 250, i % 250),
                    usable: true,
                })
                .collect(),
        },
        unreachable: view.unreachable(),
    }
}

struct Node {
    name: String,
    mesh: Arc<Mesh>,
    stop: watch::Sender<bool>,
}

async fn run(n: usize, interval: Duration) {
    let key = Key::new("bench-secret-0123456789abcdef");
    let mut listeners = Vec::new();
    for _ in 0..n {
        let l = meridian_mesh::server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        listeners.push(l);
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let names: Vec<String> = (0..n).map(|i| format!("i{i:03}")).collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mesh = Mesh::new(&prometheus::Registry::new());
        let settings = Settings {
            me: names[i].clone(),
            peers: (0..n)
                .filter(|&j| j != i)
                .map(|j| Peer {
                    name: names[j].clone(),
                    region: format!("r-{}", names[j]),
                    mesh: addrs[j],
                })
                .collect(),
            interval,
            timeout: interval.mul_f32(0.8),
            rise: 2,
            fall: 3,
            key: Some(key.clone()),
            tls: None,
        };
        let (stop, stop_rx) = watch::channel(false);
        mesh.publish(&document(&names[i], &mesh.view()));
        tokio::spawn(meridian_mesh::server::serve(
            listener,
            None,
            Some(key.clone()),
            mesh.published(),
            mesh.served_bytes.clone(),
            stop_rx.clone(),
        ));
        let (_settings_tx, settings_rx) = watch::channel(settings.clone());
        tokio::spawn(mesh.clone().run(settings_rx, stop_rx.clone()));
        // The refresh loop: the view, and the document it publishes.
        let (m, me) = (mesh.clone(), names[i].clone());
        let mut stopped = stop_rx.clone();
        tokio::spawn(async move {
            let _keep = _settings_tx;
            let mut tick = tokio::time::interval(settings.interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                let v = m.refresh(&settings, "0123456789abcdef");
                m.publish(&document(&me, &v));
            }
        });
        nodes.push(Node {
            name: names[i].clone(),
            mesh,
            stop,
        });
    }
    // Warm up until everyone sees everyone, then measure the steady state.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: usize = nodes
            .iter()
            .map(|nd| {
                let v = nd.mesh.view();
                v.peers
                    .iter()
                    .filter(|p| p.state.is_some() && !p.down)
                    .count()
            })
            .sum();
        if seen == n * (n - 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mesh of {n} did not form: {seen} of {} peer views",
            n * (n - 1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = Duration::from_secs(8);
    let bytes0: u64 = nodes
        .iter()
        .map(|nd| nd.mesh.served_bytes.load(Ordering::Relaxed))
        .sum();
    let (cpu0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(window).await;
    let bytes1: u64 = nodes
        .iter()
        .map(|nd| nd.mesh.served_bytes.load(Ordering::Relaxed))
        .sum();
    let (cpu1, secs) = (cpu_time(), t0.elapsed().as_secs_f64());
    let per_instance_bytes = (bytes1 - bytes0) as f64 * 2.0 / n as f64 / secs;
    let cpu_share = (cpu1 - cpu0).as_secs_f64() / secs / n as f64;
    let doc = nodes[0].mesh.published().load().body.len();
    // Kill one instance: how long until every other one holds it down?
    let victim = nodes.remove(n / 2);
    let killed = Instant::now();
    let _ = victim.stop.send(true);
    let deadline = killed + Duration::from_secs(30);
    let mut first = None;
    loop {
        let down: usize = nodes
            .iter()
            .filter(|nd| nd.mesh.view().peer(&victim.name).is_some_and(|p| p.down))
            .count();
        if down > 0 && first.is_none() {
            first = Some(killed.elapsed());
        }
        if down == nodes.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {down} of {} see the kill",
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = killed.elapsed();
    println!(
        "mesh/{n}: interval {interval:?}, document {doc} B; per instance: {:.1} KB/s of mesh traffic, {:.2} % of a core; killed instance held down by the first after {:.2} s, by all {} after {:.2} s",
        per_instance_bytes / 1e3,
        cpu_share * 100.0,
        first.unwrap_or(all).as_secs_f64(),
        nodes.len(),
        all.as_secs_f64()
    );
    for nd in nodes {
        let _ = nd.stop.send(true);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("mesh: bench");
        return;
    }
    let sizes: Vec<usize> = std::env::var("MESH_SIZES")
        .unwrap_or_else(|_| "10,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let interval = Duration::from_millis(
        std::env::var("MESH_INTERVAL_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for n in sizes {
        rt.block_on(run(n, interval));
    }
}

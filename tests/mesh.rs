//! The mesh, for real: several `meridian` processes on loopback, one config text, each
//! told which instance it is by `MERIDIAN_NODE`. They see each other and agree; a killed
//! instance is marked down by every other one within `interval × fall` and comes back when
//! revived; a region reached through its instance is served by relaying and fails over
//! when its backends or its instance die; requests never loop; a wrong secret is refused;
//! a hung peer delays nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::load::Load;
use common::*;
use meridian_demo_backend::Backend;

const SECRET: &str = "mesh-secret-0123456789abcdef";

/// One instance of the test cluster.
#[derive(Clone)]
struct Node {
    name: &'static str,
    region: &'static str,
    listen: SocketAddr,
    admin: SocketAddr,
    mesh: SocketAddr,
}

impl Node {
    fn new(name: &'static str, region: &'static str) -> Node {
        Node {
            name,
            region,
            listen: free_addr(),
            admin: free_addr(),
            mesh: free_addr(),
        }
    }
}

/// Region coordinates: us-east, eu-west, ap-southeast.
fn coords(region: &str) -> (f64, f64) {
    match region {
        "us-east" => (39.04, -77.49),
        "eu-west" => (53.35, -6.26),
        _ => (1.29, 103.85),
    }
}

/// The config of `me` in a cluster of `nodes` with `backends` per region; `extra` per
/// region (e.g. `reach = "instances"`) and a global `tail`.
fn cluster_config(
    me: &Node,
    nodes: &[Node],
    backends: &[(&str, &[&Backend])],
    region_extra: &[(&str, &str)],
    secret: &str,
) -> String {
    let mut cfg = format!(
        "threads = 2\n\n[node]\nname = \"{}\"\n\n[listeners]\nhttp = [\"{}\"]\nadmin = \"{}\"\n\n\
         [client]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n\
         [health_check]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n\
         [mesh]\nsecret = \"{secret}\"\ninterval = \"250ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 2\n\n\
         [steering.countries]\nGB = [\"eu-west\"]\n",
        me.name, me.listen, me.admin
    );
    for (region, list) in backends {
        let (lat, lon) = coords(region);
        let extra = region_extra
            .iter()
            .find(|(r, _)| r == region)
            .map_or("", |(_, e)| *e);
        cfg.push_str(&format!(
            "\n[regions.{region}]\nlatitude = {lat}\nlongitude = {lon}\n{extra}\nbackends = ["
        ));
        for b in *list {
            cfg.push_str(&format!("{{ address = \"{}\" }}, ", b.addr()));
        }
        cfg.push_str("]\ninstances = [\n");
        for n in nodes.iter().filter(|n| n.region == *region) {
            cfg.push_str(&format!(
                "  {{ name = \"{}\", public = [\"127.0.0.1\"], proxy = \"{}\", mesh = \"{}\" }},\n",
                n.name, n.listen, n.mesh
            ));
        }
        cfg.push_str("]\n");
    }
    cfg
}

/// Starts `node` with `cfg`, without waiting for its backends (some may be dead).
fn start_node(node: &Node, cfg: &str) -> Meridian {
    // The same text could serve every instance: `MERIDIAN_NODE` says which one this is.
    let cfg = cfg.replace(
        &format!("name = \"{}\"\n\n[listeners]", node.name),
        "\n[listeners]",
    );
    let launch = Launch {
        env: vec![("MERIDIAN_NODE".into(), node.name.into())],
        ..Launch::default()
    };
    Meridian::start_with(&cfg, node.listen, node.admin, launch)
}

/// The mesh entry of `peer` in `m`'s `/status`.
fn peer(m: &Meridian, name: &str) -> serde_json::Value {
    let s = m.status();
    s["mesh"]["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no mesh in {s}"))
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no peer {name} in {s}"))
}

/// Waits (bounded) until `check` holds for `m`'s view of `name`; returns how long it took.
fn wait_peer(
    m: &Meridian,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let p = peer(m, name);
        if check(&p) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: {p}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_see_each_other_agree_and_mark_a_dead_one_down() {
    let (bu, be, ba) = (
        backend("us-b", "us-east").await,
        backend("eu-b", "eu-west").await,
        backend("ap-b", "ap-southeast").await,
    );
    let nodes = vec![
        Node::new("us-1", "us-east"),
        Node::new("us-2", "us-east"),
        Node::new("eu-1", "eu-west"),
        Node::new("ap-1", "ap-southeast"),
    ];
    let (lu, le, la) = ([&bu], [&be], [&ba]);
    let regions: Vec<(&str, &[&Backend])> =
        vec![("us-east", &lu), ("eu-west", &le), ("ap-southeast", &la)];
    let cfgs: Vec<String> = nodes
        .iter()
        .map(|n| cluster_config(n, &nodes, &regions, &[], SECRET))
        .collect();
    let mut procs: Vec<Meridian> = blocking({
        let (nodes, cfgs) = (nodes.clone(), cfgs.clone());
        move || {
            nodes
                .iter()
                .zip(&cfgs)
                .map(|(n, c)| start_node(n, c))
                .collect()
        }
    })
    .await;
    // Everyone sees everyone: reachable, not down, same configuration, region health.
    for (m, me) in procs.iter().zip(&nodes) {
        for other in nodes.iter().filter(|n| n.name != me.name) {
            wait_peer(m, other.name, "peer seen", Duration::from_secs(20), |p| {
                p["reachable"] == "up" && p["down"] == false && p["ready"] == true
            });
            let p = peer(m, other.name);
            assert_eq!(p["same_config"], true, "{p}");
            assert_eq!(p["region_backends"], 1, "{p}");
        }
    }
    // A remote region's health comes from its own instance.
    let s = procs[0].status();
    let eu = s["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "eu-west")
        .unwrap();
    assert_eq!(eu["health_source"], "mesh", "{eu}");

    // Kill eu-1: within interval × fall (+ a poll's timeout and slack) every other
    // instance holds it down.
    let killed = procs.remove(2);
    drop(killed);
    let limit = Duration::from_secs(10);
    for (m, me) in procs.iter().zip(nodes.iter().filter(|n| n.name != "eu-1")) {
        let took = wait_peer(m, "eu-1", "dead instance marked down", limit, |p| {
            p["down"] == true
        });
        let p = peer(m, "eu-1");
        assert!(
            p["unseen_by"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == me.name),
            "{p}"
        );
        assert!(took < limit);
    }
    // Its backends are judged by this instance's own probes again.
    let s = procs[0].status();
    let eu = s["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "eu-west")
        .unwrap();
    assert_eq!(eu["health_source"], "probes", "{eu}");

    // Revived: back for everyone.
    let revived = blocking({
        let (n, c) = (nodes[2].clone(), cfgs[2].clone());
        move || start_node(&n, &c)
    })
    .await;
    for m in &procs {
        wait_peer(
            m,
            "eu-1",
            "revived instance back",
            Duration::from_secs(20),
            |p| p["down"] == false && p["reachable"] == "up",
        );
    }
    let metrics = procs[0].metrics();
    assert!(
        metric(
            &metrics,
            "meridian_mesh_polls_total{peer=\"eu-1\",result=\"failed\"}"
        ) >= 1.0
    );
    assert_eq!(
        metric(&metrics, "meridian_mesh_peer_down{peer=\"eu-1\"}"),
        0.0
    );
    drop(revived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_reached_through_its_instance_is_relayed_and_fails_over() {
    let bu = backend("us-b", "us-east").await;
    let be = backend("eu-b", "eu-west").await;
    let us = Node::new("us-1", "us-east");
    let eu = Node::new("eu-1", "eu-west");
    let nodes = vec![us.clone(), eu.clone()];
    let (lu, le) = ([&bu], [&be]);
    let regions: Vec<(&str, &[&Backend])> = vec![("us-east", &lu), ("eu-west", &le)];
    let relay = [("eu-west", "reach = \"instances\"")];
    let cfg_us = cluster_config(&us, &nodes, &regions, &relay, SECRET);
    let cfg_eu = cluster_config(&eu, &nodes, &regions, &relay, SECRET);
    let (m_us, m_eu) = blocking(move || (start_node(&us, &cfg_us), start_node(&eu, &cfg_eu))).await;
    // us-1 relays eu-west's traffic through eu-1, once the mesh says eu-1 can serve.
    wait_peer(&m_us, "eu-1", "relay up", Duration::from_secs(20), |p| {
        p["region_usable"] == 1 && p["down"] == false
    });
    let c = client();
    let uk = || {
        c.get(m_us.url("/"))
            .header("x-forwarded-for", "81.2.69.160")
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = uk().await.unwrap();
        let body = r.text().await.unwrap();
        if body.contains("eu-b") {
            break;
        }
        assert!(Instant::now() < deadline, "not relayed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = be.hits();
    for _ in 0..10 {
        let r = uk().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("eu-b"));
    }
    assert_eq!(
        be.hits() - before,
        10,
        "eu-west's backend served through eu-1"
    );

    // eu-west's backends die: relayed requests fail over to us-east, none fails.
    let load = Load::start_with_header(
        m_us.url("/"),
        4,
        Duration::from_secs(60),
        Some(("x-forwarded-for", "81.2.69.160")),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    be.kill().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let served_by_us = bu.hits();
    while bu.hits() < served_by_us + 50 {
        assert!(Instant::now() < deadline, "no failover to us-east");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back, then the relay instance itself dies: the region is skipped.
    be.revive().await.unwrap();
    wait_peer(
        &m_us,
        "eu-1",
        "eu-west usable again",
        Duration::from_secs(20),
        |p| p["region_usable"] == 1,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.finish().await;
    assert!(ok > 100, "{ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed during the relay's backend failure",
        ok + failed
    );
    let load = Load::start_with_header(
        m_us.url("/"),
        4,
        Duration::from_secs(60),
        Some(("x-forwarded-for", "81.2.69.160")),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(m_eu);
    wait_peer(&m_us, "eu-1", "relay down", Duration::from_secs(10), |p| {
        p["down"] == true
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.finish().await;
    assert!(ok > 100, "{ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed when the relay instance died",
        ok + failed
    );
    let r = uk().await.unwrap();
    assert!(
        r.text().await.unwrap().contains("us-b"),
        "the dead relay's region is skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_never_loop_between_instances() {
    // a-1 forwards region b's traffic to b-1's proxy as if it were a backend, and b-1 does
    // the same back: the second visit to an instance is refused with 508.
    let (a, b) = (Node::new("a-1", "us-east"), Node::new("b-1", "eu-west"));
    let text = |me: &Node, other: &Node, my_region: &str, other_region: &str| {
        let (la, lo) = coords(my_region);
        let (lb, lob) = coords(other_region);
        format!(
            "[node]\nname = \"{}\"\nregion = \"{my_region}\"\n[listeners]\nhttp = [\"{}\"]\nadmin = \"{}\"\n\
             [client]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\
             [health_check]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\n\
             [regions.{my_region}]\nlatitude = {la}\nlongitude = {lo}\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n\
             [regions.{other_region}]\nlatitude = {lb}\nlongitude = {lob}\nbackends = [{{ address = \"{}\" }}]\n",
            me.name, me.listen, me.admin, other.listen
        )
    };
    let cfg_a = text(&a, &b, "us-east", "eu-west");
    let cfg_b = text(&b, &a, "eu-west", "us-east");
    let (ma, _mb) = blocking(move || {
        (
            Meridian::start_ready(&cfg_a, a.listen, a.admin),
            Meridian::start_ready(&cfg_b, b.listen, b.admin),
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client().get(ma.url("/")).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        if status == 508 {
            assert!(body.contains("Loop Detected"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no 508: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_secret_is_refused_and_a_hung_peer_delays_nothing() {
    let bu = backend("us-b", "us-east").await;
    let be = backend("eu-b", "eu-west").await;
    let ba = backend("ap-b", "ap-southeast").await;
    let us = Node::new("us-1", "us-east");
    let eu = Node::new("eu-1", "eu-west");
    // ap-1 is a peer that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ap = Node::new("ap-1", "ap-southeast");
    ap.mesh = hung.local_addr().unwrap();
    let nodes = vec![us.clone(), eu.clone(), ap.clone()];
    let (lu, le, la) = ([&bu], [&be], [&ba]);
    let regions: Vec<(&str, &[&Backend])> =
        vec![("us-east", &lu), ("eu-west", &le), ("ap-southeast", &la)];
    let cfg_us = cluster_config(&us, &nodes, &regions, &[], SECRET);
    let cfg_eu = cluster_config(&eu, &nodes, &regions, &[], "another-secret-0123456789");
    let (m_us, _m_eu) =
        blocking(move || (start_node(&us, &cfg_us), start_node(&eu, &cfg_eu))).await;
    wait_peer(
        &m_us,
        "eu-1",
        "wrong secret refused",
        Duration::from_secs(20),
        |p| {
            p["reachable"] == "down"
                && p["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("refused this instance's mesh secret"))
        },
    );
    wait_peer(
        &m_us,
        "ap-1",
        "hung peer times out",
        Duration::from_secs(20),
        |p| {
            p["reachable"] == "down" && p["error"].as_str().is_some_and(|e| e.contains("timed out"))
        },
    );
    // Without credentials, the mesh endpoint answers nothing but 401.
    let mesh = nodes[0].mesh;
    let (code, body) = blocking(move || blocking_get(mesh, "/mesh/v1/state").unwrap()).await;
    assert_eq!(code, 401, "{body}");
    // Requests go on at full speed meanwhile.
    let c = client();
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.get(m_us.url("/")).send().await.unwrap().status(), 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(hung);
}

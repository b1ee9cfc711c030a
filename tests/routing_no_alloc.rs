//! The routing decision does not allocate: client address → location → service (by host
//! and path) → ordered regions → backend, for every balancing algorithm, with country and
//! continent maps, residency, a degraded region and a region without usable backends,
//! cache hits and misses alike; and with several services routed by exact and wildcard
//! hosts and path prefixes, a sticky pin, slow start and drained backends.
//!
//! `allocation-counter` installs a counting global allocator in this test binary only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use meridian::client;
use meridian::{Active, Instance};
use meridian_routing::admin::AdminState;
use meridian_routing::{Health, Tried};
use pingora::http::RequestHeader;
use tokio::time::Instant;

fn config(balance: &str) -> String {
    format!(
        r#"
[node]
region = "us-east"

[client]
trusted_proxies = ["10.0.0.0/8"]

[steering.countries]
GB = ["eu-west"]
[steering.continents]
OC = ["ap-southeast"]

[residency]
countries = {{ DE = ["eu-west"] }}

[regions.us-east]
latitude = 39.0
longitude = -77.5
balance = {balance}
backends = [{{ address = "127.0.0.1:1001" }}, {{ address = "127.0.0.1:1002", weight = 3 }}]

[regions.eu-west]
latitude = 53.3
longitude = -6.3
balance = {balance}
backends = [{{ address = "127.0.0.1:2001" }}, {{ address = "127.0.0.1:2002" }}]

[regions.ap-southeast]
latitude = 1.3
longitude = 103.8
balance = {balance}
backends = [{{ address = "127.0.0.1:3001" }}]
"#
    )
}

fn snapshot_of(text: &str) -> Arc<Active> {
    let config = meridian_config::parse(text, "test.toml", None).unwrap();
    let active = Instance::new(config).unwrap().active();
    let snap = &active.routing;
    for (_, _, r) in snap.pools() {
        for m in &r.members {
            m.state.health.set(Health::Up);
        }
    }
    // us-east measured slow (degraded for nearby clients), ap-southeast without backends.
    for (_, ri, r) in snap.pools() {
        match ri {
            0 => r.state.publish(90_000, 2),
            1 => r.state.publish(1_000, 2),
            _ => r.state.publish(1_000, 0),
        }
    }
    active
}

fn snapshot(balance: &str) -> Arc<Active> {
    snapshot_of(&config(balance))
}

/// A request to `host` for `path`.
fn request(host: &str, path: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    req.insert_header("host", host).unwrap();
    req
}

/// One routing decision as the proxy makes it: client, location, the request's service,
/// plan, then (for a sticky request's first attempt) its pinned backend or the routing
/// core's `next_backend` (the calls `upstream_peer` makes for every attempt).
fn decide(
    active: &Active,
    peer: IpAddr,
    req: &RequestHeader,
    hash: Option<u64>,
    pin: Option<(u16, u16)>,
) -> bool {
    let snap = &active.routing;
    let c = client::resolve(peer, &req.headers, &active.identity.trusted_proxies);
    let location = snap.locator.lookup(c.ip);
    let Some(service) = meridian::route(req, snap) else {
        return false;
    };
    let plan = snap.plan(service, location.as_ref());
    let mut tried = Tried::default();
    let now = Instant::now();
    if let Some(target) = pin {
        if snap.pinned(&plan, &mut tried, target, true, now).is_some() {
            return true;
        }
    }
    snap.next_backend(&plan, &mut tried, hash, now).is_some()
}

#[test]
fn a_routing_decision_makes_no_heap_allocation() {
    let peers: Vec<IpAddr> = [
        "81.2.69.160",
        "8.8.8.8",
        "1.0.16.1",
        "80.128.0.1",
        "203.0.113.9",
        "2a00:1450:4001::1",
        "::ffff:1.1.1.1",
        "10.1.2.3",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut forwarded = request("example.com", "/");
    forwarded
        .insert_header("x-forwarded-for", "81.2.69.160, 10.9.9.9")
        .unwrap();
    let none = request("example.com", "/");
    for balance in [
        r#""p2c_ewma""#,
        r#""round_robin""#,
        r#""weighted""#,
        r#""least_connections""#,
        "\"consistent_hash\"\nhash_key = \"client_ip\"",
    ] {
        let snap = snapshot(balance);
        let hash = balance.contains("hash").then_some(0x1234_5678_9abc_def0);
        let mut routed = 0;
        // Twice over: the first pass fills the locator's cache, the second hits it.
        let info = allocation_counter::measure(|| {
            for _ in 0..2 {
                for &peer in &peers {
                    for req in [&none, &forwarded] {
                        routed += usize::from(decide(&snap, peer, req, hash, None));
                    }
                }
            }
        });
        assert_eq!(info.count_total, 0, "{balance}: {info:?}");
        assert_eq!(
            routed,
            peers.len() * 4,
            "{balance}: every decision found a backend"
        );
    }
}

const SERVICES: &str = r#"
[node]
region = "us-east"

[regions.us-east]
latitude = 39.0
longitude = -77.5
[regions.eu-west]
latitude = 53.3
longitude = -6.3
[regions.ap-southeast]
latitude = 1.3
longitude = 103.8

[services.api]
hosts = ["api.example.com"]
paths = ["/v1", "/v2/"]
slow_start = "30s"
[services.api.regions.us-east]
backends = [{ address = "127.0.0.1:1001" }, { address = "127.0.0.1:1002" }]
[services.api.regions.eu-west]
balance = "weighted"
backends = [{ address = "127.0.0.1:2001" }, { address = "127.0.0.1:2002", weight = 3 }]

[services.tenants]
hosts = ["*.tenants.example.com", "tenants.example.com"]
balance = "least_connections"
sticky = { cookie = "t" }
[services.tenants.regions.eu-west]
backends = [{ address = "127.0.0.1:2003" }]
[services.tenants.regions.ap-southeast]
backends = [{ address = "127.0.0.1:3001" }]

[services.web]
default = true
balance = "round_robin"
slow_start = "10s"
[services.web.regions.us-east]
backends = [{ address = "127.0.0.1:1003" }, { address = "127.0.0.1:1004" }]
"#;

#[test]
fn routing_among_services_makes_no_heap_allocation() {
    let active = snapshot_of(SERVICES);
    let snap = &active.routing;
    // Slow start under way for two backends, one drained, one pinned session.
    for (_, _, r) in snap.pools() {
        for m in &r.members {
            m.state.observe_usable(false, Instant::now());
            m.state.observe_usable(true, Instant::now());
        }
    }
    let drained = snap.pool(0, 0).unwrap();
    drained.members[0].state.set_admin(AdminState::Drain);
    let tenants = snap.service_index("tenants").unwrap();
    let pin = Some((1u16, 0u16));
    assert!(snap.pool(tenants, 1).is_some());
    let requests = [
        request("api.example.com", "/v1/users"),
        request("API.example.com:443", "/v2/x"),
        request("a.b.tenants.example.com", "/"),
        request("tenants.example.com", "/x"),
        request("unknown.example.org", "/anything"),
        request("api.example.com", "/v3"),
    ];
    let peers: Vec<IpAddr> = ["81.2.69.160", "8.8.8.8", "1.0.16.1", "2a00:1450:4001::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut routed = 0;
    let info = allocation_counter::measure(|| {
        for _ in 0..2 {
            for &peer in &peers {
                for req in &requests {
                    let pinned = meridian::route(req, snap) == Some(tenants);
                    routed += usize::from(decide(&active, peer, req, None, pin.filter(|_| pinned)));
                }
            }
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(
        routed,
        2 * peers.len() * requests.len(),
        "every request was served"
    );
}

//! The routing decision does not allocate: client address → location → ordered regions →
//! backend, for every balancing algorithm, with country and continent maps, residency, a
//! degraded region and a region without usable backends, cache hits and misses alike.
//!
//! `allocation-counter` installs a counting global allocator in this test binary only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use meridian::client;
use meridian::{Active, Instance};
use meridian_routing::{Health, Tried};
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

fn snapshot(balance: &str) -> Arc<Active> {
    let config = meridian_config::parse(&config(balance), "test.toml", None).unwrap();
    let active = Instance::new(config).unwrap().active();
    let snap = &active.routing;
    for r in &snap.regions {
        for m in &r.members {
            m.state.health.set(Health::Up);
        }
    }
    // us-east measured slow (degraded for nearby clients), ap-southeast without backends.
    snap.regions[0].state.publish(90_000, 2);
    snap.regions[1].state.publish(1_000, 2);
    snap.regions[2].state.publish(1_000, 0);
    active
}

/// One routing decision as the proxy makes it: client, location, plan, then the routing
/// core's `next_backend` (the call `upstream_peer` makes for every attempt).
fn decide(active: &Active, peer: IpAddr, headers: &HeaderMap, hash: Option<u64>) -> bool {
    let snap = &active.routing;
    let c = client::resolve(peer, headers, &active.identity.trusted_proxies);
    let location = snap.locator.lookup(c.ip);
    let plan = snap.plan(location.as_ref());
    snap.next_backend(&plan, &mut Tried::default(), hash, Instant::now())
        .is_some()
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
    let mut forwarded = HeaderMap::new();
    forwarded.insert("x-forwarded-for", "81.2.69.160, 10.9.9.9".parse().unwrap());
    let none = HeaderMap::new();
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
                    for headers in [&none, &forwarded] {
                        routed += usize::from(decide(&snap, peer, headers, hash));
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

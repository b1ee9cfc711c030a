//! The routing decision, end to end: client IP → `client::resolve` → `Locator::lookup`
//! (the built-in DB-IP Country Lite database) → `Snapshot::plan` →
//! `Snapshot::next_backend` (the one decision the proxy makes for every attempt) → a
//! backend.
//!
//! Three configs, all parsed with `meridian_config::parse` and built into a real `Instance`:
//! - `3-regions`: us-east / eu-west / ap-southeast, 2 backends each, the default steering
//!   policy with country and continent maps and a residency rule;
//! - `50-regions`: 50 regions spread over the globe × 200 backends each (10,000 backends),
//!   the default policy (proximity ranking over every region);
//! - `50-routes`: the 3 regions with 50 services, each with 2 backends per region: 20
//!   exact host names, 20 path prefixes under one host (`/v0` … `/v19`), 9 wildcard
//!   hosts and a default service; requests cycle over 64 (host, path) pairs that hit
//!   every kind of route (and the default), so each decision also routes the request.
//!
//! Client IPs: 1,000 addresses spread evenly over the IPv4 space (fixed seed) plus 24 IPv6
//! addresses from well-known allocations. One criterion iteration is ONE decision; the
//! addresses are cycled through, so after the first pass the locator answers from its
//! per-network cache (repeat clients, the common case in real traffic). The `-cold` case
//! cycles through 262,144 addresses in distinct /24 networks instead, 16 times the cache's
//! slots, so nearly every decision walks the database's search tree and decodes a record.
//!
//! Before timing, the bench counts heap allocations of every decision over all addresses
//! with `allocation-counter` (which installs a counting global allocator in this binary)
//! and prints allocations per decision. Set `ROUTING_ALLOC_ONLY=1` to print only that, and
//! `ROUTING_CASE=3` (or `50`) to run one case only. Instruction counts per decision:
//!
//! ```sh
//! ROUTING_ALLOC_ONLY=1 ROUTING_CASE=3 valgrind --tool=callgrind --toggle-collect='*routing*decide*' \
//!     target/release/deps/routing-<hash> --bench
//! ```
//!
//! (`decide` runs 2 × 1,024 times in that mode: warm-up, then the counted pass;
//! `ROUTING_CASE=routes` runs the 50-route case.)

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meridian::client;
use meridian::{Active, Instance};
use meridian_routing::{Health, Pick, Tried};
use pingora::http::RequestHeader;
use tokio::time::Instant;

const THREE_REGIONS: &str = r#"
threads = 1

[node]
region = "us-east"

[listeners]
http = ["127.0.0.1:8080"]
admin = "127.0.0.1:9901"

[logging]
access_log = false

[regions.us-east]
latitude = 39.04
longitude = -77.49
backends = [{ address = "10.0.1.10:8080" }, { address = "10.0.1.11:8080" }]

[regions.eu-west]
latitude = 53.35
longitude = -6.26
backends = [{ address = "10.1.1.10:8080" }, { address = "10.1.1.11:8080" }]

[regions.ap-southeast]
latitude = 1.29
longitude = 103.85
backends = [{ address = "10.2.1.10:8080" }, { address = "10.2.1.11:8080" }]

[steering.countries]
US = ["us-east", "eu-west"]
GB = ["eu-west", "us-east"]
JP = ["ap-southeast", "us-east"]

[steering.continents]
NA = ["us-east", "eu-west"]
EU = ["eu-west", "us-east"]
AS = ["ap-southeast", "eu-west"]

[residency]
countries = { DE = ["eu-west"], FR = ["eu-west"] }
"#;

/// 50 regions on a lat/long grid, `backends` backends each.
fn many_regions(regions: usize, backends: usize) -> String {
    let mut s = String::from(
        "threads = 1\n\n[node]\nregion = \"r0\"\n\n[listeners]\nhttp = [\"127.0.0.1:8080\"]\n\
         admin = \"127.0.0.1:9901\"\n\n[logging]\naccess_log = false\n\n",
    );
    for r in 0..regions {
        let lat = -60.0 + 120.0 * ((r * 7) % regions) as f64 / regions as f64;
        let lon = -180.0 + 360.0 * r as f64 / regions as f64;
        s.push_str(&format!(
            "[regions.r{r}]\nlatitude = {lat:.2}\nlongitude = {lon:.2}\nbackends = [\n"
        ));
        for b in 0..backends {
            s.push_str(&format!(
                "  {{ address = \"10.{r}.{}.{}:8080\" }},\n",
                b / 256,
                b % 256
            ));
        }
        s.push_str("]\n\n");
    }
    s
}

/// The 3 regions (without backends) and 50 services with 2 backends in each: 20 exact
/// hosts, 20 path prefixes of one host, 9 wildcards and a default.
fn fifty_routes() -> String {
    let mut s = THREE_REGIONS
        .lines()
        .filter(|l| !l.starts_with("backends"))
        .collect::<Vec<_>>()
        .join("\n");
    let regions = ["us-east", "eu-west", "ap-southeast"];
    for i in 0..50 {
        let routes = match i {
            0..=19 => format!("hosts = [\"svc{i}.example.com\"]"),
            20..=39 => format!("hosts = [\"api.example.com\"]\npaths = [\"/v{}\"]", i - 20),
            40..=48 => format!("hosts = [\"*.tenant{i}.example.net\"]"),
            _ => "hosts = [\"www.example.com\"]\ndefault = true".to_owned(),
        };
        s.push_str(&format!("\n[services.s{i}]\n{routes}\n"));
        for (r, region) in regions.iter().enumerate() {
            s.push_str(&format!(
                "[services.s{i}.regions.{region}]\nbackends = [{{ address = \"10.{r}.{i}.1:8080\" }}, {{ address = \"10.{r}.{i}.2:8080\" }}]\n"
            ));
        }
    }
    s
}

/// 64 requests (host, path) over the 50-route case: exact hosts, path prefixes, wildcards,
/// and some that only the default service takes.
fn route_requests() -> Vec<RequestHeader> {
    (0..64)
        .map(|k| {
            let (host, path) = match k % 4 {
                0 => (
                    format!("svc{}.example.com", k % 20),
                    "/index.html".to_owned(),
                ),
                1 => (
                    "api.example.com".to_owned(),
                    format!("/v{}/users/42", k % 20),
                ),
                2 => (
                    format!("a.b.tenant{}.example.net:443", 40 + k % 9),
                    "/".to_owned(),
                ),
                _ => ("unknown.example.org".to_owned(), "/x".to_owned()),
            };
            let mut req = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
            req.insert_header("host", host).expect("host");
            req
        })
        .collect()
}

/// Builds the instance, marks every backend up and publishes pool measurements, as the
/// prober would after its first rounds.
fn snapshot(text: &str) -> Arc<Active> {
    let config = meridian_config::parse(text, "bench.toml", None).expect("valid config");
    let inst = Instance::new(config).expect("locator");
    let active = inst.active();
    for (_, i, r) in active.routing.pools() {
        for m in &r.members {
            m.state.health.set(Health::Up);
        }
        r.state
            .publish(500 + (i as u32 * 997) % 20_000, r.members.len() as u32);
    }
    active
}

/// 1,000 IPv4 addresses spread evenly over the address space (with a fixed jitter) and
/// 24 IPv6 addresses from real allocations.
fn client_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::with_capacity(1024);
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..1000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let base = (u64::from(i) * (1u64 << 32) / 1000) as u32;
        ips.push(IpAddr::V4(Ipv4Addr::from(base.wrapping_add(x % 4_294_967))));
    }
    for prefix in [
        0x2001_4860u32, // Google
        0x2a00_1450,    // Google EU
        0x2606_4700,    // Cloudflare
        0x2a03_2880,    // Meta
        0x2400_cb00,    // Cloudflare APAC
        0x2c0f_f248,    // Africa
        0x2804_0010,    // LACNIC
        0x2001_0db8,    // documentation (miss)
    ] {
        for host in 1..=3u16 {
            let hi = u128::from(prefix) << 96;
            ips.push(IpAddr::V6(Ipv6Addr::from(hi | u128::from(host) << 16)));
        }
    }
    ips
}

/// One routing decision, as the proxy makes it: who is the client (a direct peer, no
/// forwarding headers), locate, route the request to its service (`meridian::route`, the
/// proxy's own call), plan, then the routing core's `next_backend` (the same call
/// `upstream_peer` makes).
#[inline(never)]
fn decide(active: &Active, peer: IpAddr, req: &RequestHeader, now: Instant) -> Option<Pick> {
    let snap = &active.routing;
    let client = client::resolve(peer, &req.headers, &active.identity.trusted_proxies);
    let location = snap.locator.lookup(client.ip);
    let service = meridian::route(req, snap)?;
    let plan = snap.plan(service, location.as_ref());
    snap.next_backend(&plan, &mut Tried::default(), None, now)
}

/// The request of decision `k`: the 50-route case cycles through its 64 requests, the
/// others send one request (with no routes to look up).
fn request_for(reqs: &[RequestHeader], k: usize) -> &RequestHeader {
    &reqs[k % reqs.len()]
}

/// Allocations per decision over every address, printed for the report.
fn count_allocations(name: &str, snap: &Active, ips: &[IpAddr], reqs: &[RequestHeader]) {
    let now = Instant::now();
    // Warm up lazily initialised state (thread-local RNG, …) outside the measurement.
    for (k, &ip) in ips.iter().enumerate() {
        black_box(decide(snap, ip, request_for(reqs, k), now));
    }
    let mut routed = 0usize;
    let info = allocation_counter::measure(|| {
        for (k, &ip) in ips.iter().enumerate() {
            let req = request_for(reqs, k);
            routed += usize::from(decide(snap, black_box(ip), req, now).is_some());
        }
    });
    println!(
        "routing/{name}: {} decisions ({routed} routed): {} allocations ({:.2} per decision), {} bytes ({:.1} per decision)",
        ips.len(),
        info.count_total,
        info.count_total as f64 / ips.len() as f64,
        info.bytes_total,
        info.bytes_total as f64 / ips.len() as f64,
    );
}

fn routing(c: &mut Criterion) {
    let ips = client_ips();
    let plain = vec![RequestHeader::build("GET", b"/", None).expect("request")];
    let routed = route_requests();
    // ROUTING_CASE=3, 50 or routes runs one case only (e.g. under callgrind).
    let only = std::env::var("ROUTING_CASE").ok();
    let mut cases = Vec::new();
    if only.as_deref().is_none_or(|c| c == "3") {
        cases.push(("3-regions", snapshot(THREE_REGIONS), &plain));
    }
    if only.as_deref().is_none_or(|c| c == "50") {
        cases.push(("50-regions-x200", snapshot(&many_regions(50, 200)), &plain));
    }
    if only.as_deref().is_none_or(|c| c == "routes") {
        cases.push(("50-routes", snapshot(&fifty_routes()), &routed));
    }
    for (name, snap, reqs) in &cases {
        count_allocations(name, snap, &ips, reqs);
    }
    // Distinct /24 networks, far more than the locator's cache holds.
    let cold_ips: Vec<IpAddr> = (0..1u32 << 18)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::from(
                ((i.wrapping_mul(0x9e37_79b1) & 0xff_ffff) << 8) | 1,
            ))
        })
        .collect();
    if std::env::var_os("ROUTING_ALLOC_ONLY").is_some() {
        return;
    }
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, snap, reqs) in &cases {
        let now = Instant::now();
        let mut k = 0usize;
        group.bench_function(*name, |b| {
            b.iter(|| {
                k = (k + 1) % ips.len();
                decide(snap, black_box(ips[k]), request_for(reqs, k), now)
            })
        });
        let mut k = 0usize;
        group.bench_function(format!("{name}-cold"), |b| {
            b.iter(|| {
                k = (k + 1) % cold_ips.len();
                decide(snap, black_box(cold_ips[k]), request_for(reqs, k), now)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);

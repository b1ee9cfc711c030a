//! The GeoDNS answer path without sockets: one criterion iteration is one query packet in,
//! one response packet out (`Answerer::respond`: header checks, decode, client subnet →
//! GeoIP → `plan_anywhere` → healthy addresses → encode), the work an instance does per
//! UDP query besides `recvfrom`/`sendto`.
//!
//! Config: three regions with one instance each, continent maps as in `benches/geodns.sh`,
//! the built-in DB-IP database. Queries: `www.example.test A` with EDNS and a client
//! subnet, from 4,096 /24 networks spread evenly over the IPv4 space (fixed), cycled; and
//! the same without a subnet (the resolver's address decides). Instructions per query:
//!
//! ```sh
//! GEODNS_CALLGRIND=1 valgrind --tool=callgrind --toggle-collect='*geodns_answer*answer_all*' \
//!     target/release/deps/geodns_answer-<hash> --bench
//! ```
//! (`answer_all` answers the 4,096 queries once, after a warm-up pass.)

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian_dns::{Answerer, DnsMetrics, InstanceState, Transport};
use meridian_geoip::Locator;
use meridian_routing::answers::Answers;
use meridian_routing::metrics::RoutingMetrics;
use meridian_routing::Snapshot;

const CONFIG: &str = r#"
[node]
name = "i0"
[listeners]
http = ["127.0.0.1:1"]
admin = "127.0.0.1:2"
[mesh]
secret = "0123456789abcdef-secret"
[steering]
policy = "geo"
[steering.continents]
EU = ["eu-west"]
AF = ["eu-west"]
AS = ["ap-southeast"]
OC = ["ap-southeast"]
NA = ["us-east"]
SA = ["us-east"]
[geodns]
listen = ["127.0.0.1:53"]
[[geodns.zones]]
name = "example.test"
nameservers = ["ns1.example.test"]
names = ["www"]
records = [{ name = "ns1", type = "A", value = "127.0.0.1" }]
[regions.us-east]
latitude = 39.04
longitude = -77.49
backends = [{ address = "127.0.0.1:1001" }]
instances = [{ name = "i0", public = ["192.0.2.1", "192.0.2.2"], proxy = "127.0.0.1:3001", mesh = "127.0.0.1:4001" }]
[regions.eu-west]
latitude = 53.35
longitude = -6.26
backends = [{ address = "127.0.0.1:1002" }]
instances = [{ name = "i1", public = ["198.51.100.1", "198.51.100.2"], proxy = "127.0.0.1:3002", mesh = "127.0.0.1:4002" }]
[regions.ap-southeast]
latitude = 1.29
longitude = 103.85
backends = [{ address = "127.0.0.1:1003" }]
instances = [{ name = "i2", public = ["203.0.113.1", "203.0.113.2"], proxy = "127.0.0.1:3003", mesh = "127.0.0.1:4003" }]
"#;

fn answerer() -> Answerer {
    let config = meridian_config::parse(CONFIG, "bench.toml", None).unwrap();
    let snap = Arc::new(Snapshot::build(
        Arc::new(config),
        Arc::new(Locator::builtin(Vec::new()).unwrap()),
        None,
        &RoutingMetrics::detached(),
        &Answers::new(),
        &meridian_routing::admin::RuntimeSettings::default(),
    ));
    let a = Answerer::new(
        DnsMetrics::register(&prometheus::Registry::new()),
        snap.clone(),
        || true,
    )
    .unwrap();
    a.update(snap, |_| InstanceState {
        up: true,
        usable_backends: 1,
    })
    .unwrap();
    a
}

/// `www.example.test A` with EDNS and, if given, a /24 client subnet.
fn query(id: u16, subnet: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("www.example.test.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(net) = subnet {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            IpAddr::V4(net),
            24,
            0,
        )));
    }
    m.set_edns(e);
    m.to_vec().unwrap()
}

/// 4,096 /24 networks spread evenly over the IPv4 space.
fn subnets() -> Vec<Ipv4Addr> {
    (0..4096u32)
        .map(|i| Ipv4Addr::from(i.wrapping_mul(0x000f_ffff / 4 * 4 + 256) & 0xffff_ff00))
        .collect()
}

#[inline(never)]
fn answer_all(a: &Answerer, packets: &[Vec<u8>], out: &mut Vec<u8>) -> usize {
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    packets
        .iter()
        .filter(|p| a.respond(p, peer, Transport::Udp, out))
        .count()
}

fn bench(c: &mut Criterion) {
    let a = answerer();
    let with: Vec<Vec<u8>> = subnets()
        .into_iter()
        .enumerate()
        .map(|(i, n)| query(i as u16, Some(n)))
        .collect();
    let without: Vec<Vec<u8>> = (0..4096).map(|i| query(i as u16, None)).collect();
    let mut out = Vec::with_capacity(512);
    if std::env::var_os("GEODNS_CALLGRIND").is_some() {
        answer_all(&a, &with, &mut out);
        let n = answer_all(&a, &with, &mut out);
        println!("answered {n} queries");
        return;
    }
    let mut g = c.benchmark_group("geodns");
    g.throughput(Throughput::Elements(1));
    for (name, packets) in [("ecs", &with), ("no-ecs", &without)] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % packets.len();
                black_box(a.respond(
                    &packets[i],
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    Transport::Udp,
                    &mut out,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

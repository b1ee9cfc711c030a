//! A GeoDNS answerer over a three-region config, and a client that speaks to it through
//! hickory-proto messages (encoded and decoded as on the wire).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use meridian_config::Instance;
use meridian_dns::{Answerer, DnsMetrics, InstanceState, Transport};
use meridian_geoip::Locator;
use meridian_routing::answers::Answers;
use meridian_routing::metrics::RoutingMetrics;
use meridian_routing::Snapshot;

/// Three regions with one instance each (us-1 has an IPv6 address too), GB mapped to
/// eu-west, JP to ap-southeast, Germany resident in eu-west.
pub const CONFIG: &str = r#"
[listeners]
http = ["127.0.0.1:1"]
admin = "127.0.0.1:2"

[mesh]
secret = "0123456789abcdef-secret"

[regions.us-east]
latitude = 39.04
longitude = -77.49
backends = [{ address = "127.0.0.1:1001" }]
instances = [{ name = "us-1", public = ["192.0.2.1", "2001:db8::1"], proxy = "127.0.0.1:3001", mesh = "127.0.0.1:4001" }]

[regions.eu-west]
latitude = 53.35
longitude = -6.26
backends = [{ address = "127.0.0.1:1002" }]
instances = [
  { name = "eu-1", public = ["198.51.100.1"], proxy = "127.0.0.1:3002", mesh = "127.0.0.1:4002" },
  { name = "eu-2", public = ["198.51.100.2"], proxy = "127.0.0.1:3003", mesh = "127.0.0.1:4003" },
]

[regions.ap-southeast]
latitude = 1.29
longitude = 103.85
backends = [{ address = "127.0.0.1:1003" }]
instances = [{ name = "ap-1", public = ["203.0.113.1"], proxy = "127.0.0.1:3004", mesh = "127.0.0.1:4004" }]

[steering.countries]
GB = ["eu-west"]
JP = ["ap-southeast"]

[residency]
countries = { DE = ["eu-west"] }

[geodns]
listen = ["127.0.0.1:5353"]
ttl = "20s"

[[geodns.zones]]
name = "example.test"
nameservers = ["ns1.example.test", "ns.elsewhere.example"]
names = ["www", "@"]
negative_ttl = "45s"
records = [
  { name = "ns1", type = "A", value = "192.0.2.53" },
  { name = "alias", type = "CNAME", value = "www.example.test" },
  { name = "mail", type = "MX", value = "10 mx.example.test" },
  { name = "a.b.deep", type = "TXT", value = "deep" },
  { name = "big", type = "TXT", value = "BIG" },
]
"#;

/// The config text for instance `node`, with `big`'s TXT value `size` bytes long.
pub fn config_text(node: &str, extra: &str) -> String {
    let big = "x".repeat(2000);
    format!(
        "[node]\nname = \"{node}\"\n{extra}\n{}",
        CONFIG.replace("\"BIG\"", &format!("\"{big}\""))
    )
}

/// A snapshot of `text` with the built-in GeoIP database.
pub fn snapshot(text: &str) -> Arc<Snapshot> {
    let config = meridian_config::parse(text, "test.toml", None).expect("valid config");
    let locator = Arc::new(Locator::builtin(Vec::new()).unwrap());
    Arc::new(Snapshot::build(
        Arc::new(config),
        locator,
        None,
        &RoutingMetrics::detached(),
        &Answers::new(),
        &meridian_routing::admin::RuntimeSettings::default(),
    ))
}

/// Every instance up, with a usable backend.
pub fn all_up(_: &Instance) -> InstanceState {
    InstanceState {
        up: true,
        usable_backends: 1,
    }
}

/// An answerer as instance `node`, ready, with `state` deciding each instance's health.
pub fn answerer(
    node: &str,
    state: impl Fn(&Instance) -> InstanceState,
) -> (Answerer, Arc<Snapshot>) {
    let snap = snapshot(&config_text(node, ""));
    (answerer_of(&snap, state), snap)
}

/// A ready answerer of `snap`, with `state` deciding each instance's health.
pub fn answerer_of(snap: &Arc<Snapshot>, state: impl Fn(&Instance) -> InstanceState) -> Answerer {
    let a = Answerer::new(
        DnsMetrics::register(&prometheus::Registry::new()),
        snap.clone(),
        || true,
    )
    .unwrap();
    a.update(snap.clone(), state).unwrap();
    a
}

/// A query message for `name`/`qtype`: with EDNS (payload `payload`) when `payload` is
/// set, and a client subnet when `subnet` is.
pub fn query(
    name: &str,
    qtype: RecordType,
    payload: Option<u16>,
    subnet: Option<(&str, u8)>,
) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x4d45)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(p) = payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        if let Some((addr, source)) = subnet {
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                addr.parse().unwrap(),
                source,
                0,
            )));
        }
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Sends `packet` from `peer` and decodes the answer (`None`: no answer).
pub fn send(a: &Answerer, packet: &[u8], peer: &str, transport: Transport) -> Option<Message> {
    let mut out = Vec::new();
    if !a.respond(packet, peer.parse::<IpAddr>().unwrap(), transport, &mut out) {
        return None;
    }
    Some(Message::from_vec(&out).expect("the answer decodes"))
}

/// Asks `name`/`qtype` over UDP with EDNS and, if given, a client subnet.
pub fn ask(
    a: &Answerer,
    name: &str,
    qtype: RecordType,
    subnet: Option<(&str, u8)>,
    peer: &str,
) -> Message {
    send(
        a,
        &query(name, qtype, Some(1232), subnet),
        peer,
        Transport::Udp,
    )
    .expect("an answer")
}

/// The addresses in an answer, sorted.
pub fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The echoed client subnet's scope, if the answer has one.
pub fn scope(m: &Message) -> Option<u8> {
    match m
        .extensions()
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(cs) => Some(cs.scope_prefix()),
        _ => None,
    }
}

//! GeoDNS, for real: three `meridian` processes (one per region) with the mesh and GeoDNS
//! on loopback, asked by `dig` (dnsutils) and by hickory's client. Client subnets get
//! their region's instances with the database network as scope; every instance answers
//! alike; a killed instance leaves every instance's answers within `interval × fall` and
//! returns when revived; a region without backends leaves them; nothing healthy fails
//! open (residency fails closed); NXDOMAIN/NODATA/REFUSED/TC→TCP; malformed packets over
//! the socket are survived and counted.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use meridian_demo_backend::Backend;

const SECRET: &str = "geodns-mesh-secret-0123456789";

/// One instance: its name, region, public address and sockets.
#[derive(Clone)]
struct Node {
    name: &'static str,
    public: &'static str,
    listen: SocketAddr,
    admin: SocketAddr,
    mesh: SocketAddr,
    dns: SocketAddr,
}

const NODES: [(&str, &str, &str, f64, f64); 3] = [
    ("us-1", "us-east", "192.0.2.1", 39.04, -77.49),
    ("eu-1", "eu-west", "198.51.100.1", 53.35, -6.26),
    ("ap-1", "ap-southeast", "203.0.113.1", 1.29, 103.85),
];

/// A UDP port whose TCP twin is free too (GeoDNS serves both on one address).
fn dns_addr() -> SocketAddr {
    loop {
        let a = free_addr();
        if std::net::UdpSocket::bind(a).is_ok() {
            return a;
        }
    }
}

fn nodes() -> Vec<Node> {
    NODES
        .iter()
        .map(|&(name, _, public, _, _)| Node {
            name,
            public,
            listen: free_addr(),
            admin: free_addr(),
            mesh: free_addr(),
            dns: dns_addr(),
        })
        .collect()
}

fn config(me: &Node, nodes: &[Node], backends: &[&Backend; 3]) -> String {
    let big = "x".repeat(1800);
    let mut cfg = format!(
        "threads = 2\n\n[node]\nname = \"{}\"\n\n[listeners]\nhttp = [\"{}\"]\nadmin = \"{}\"\n\n\
         [health_check]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n\
         [mesh]\nsecret = \"{SECRET}\"\ninterval = \"250ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 2\n\n\
         [steering.countries]\nGB = [\"eu-west\"]\nJP = [\"ap-southeast\"]\n\n\
         [residency]\ncountries = {{ DE = [\"eu-west\"] }}\n\n\
         [geodns]\nlisten = [\"{}\"]\nttl = \"5s\"\nthreads = 1\n\n\
         [[geodns.zones]]\nname = \"example.test\"\nnameservers = [\"ns1.example.test\"]\nnames = [\"www\"]\n\
         records = [{{ name = \"ns1\", type = \"A\", value = \"192.0.2.53\" }}, {{ name = \"big\", type = \"TXT\", value = \"{big}\" }}]\n",
        me.name, me.listen, me.admin, me.dns
    );
    for (i, &(_, region, _, lat, lon)) in NODES.iter().enumerate() {
        let n = &nodes[i];
        cfg.push_str(&format!(
            "\n[regions.{region}]\nlatitude = {lat}\nlongitude = {lon}\nbackends = [{{ address = \"{}\" }}]\n\
             instances = [{{ name = \"{}\", public = [\"{}\"], proxy = \"{}\", mesh = \"{}\" }}]\n",
            backends[i].addr(),
            n.name,
            n.public,
            n.listen,
            n.mesh
        ));
    }
    cfg
}

fn start(node: &Node, cfg: &str) -> Meridian {
    Meridian::start_with(cfg, node.listen, node.admin, Launch::default())
}

/// What `dig` shows of an answer.
#[derive(Debug, Default)]
struct Dig {
    status: String,
    flags: Vec<String>,
    addresses: Vec<String>,
    records: usize,
    scope: Option<u8>,
}

/// Runs dig against `server` (bounded: 2 s per try, 2 tries).
fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+norec",
            "+time=2",
            "+tries=2",
        ])
        .args(args)
        .output()
        .expect("dig (apt-get install dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut d = Dig::default();
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if let Some(rest) = line.strip_prefix("; CLIENT-SUBNET: ") {
            d.scope = rest.trim().rsplit('/').next().and_then(|s| s.parse().ok());
        }
        if !line.starts_with(';') && !line.trim().is_empty() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 && f[2] == "IN" {
                d.records += 1;
                if f[3] == "A" || f[3] == "AAAA" {
                    d.addresses.push(f[4].to_string());
                }
            }
        }
    }
    d.addresses.sort();
    assert!(
        !d.status.is_empty(),
        "dig {args:?} @{server}: no answer:\n{text}"
    );
    d
}

fn www(server: SocketAddr, subnet: &str) -> Dig {
    dig(
        server,
        &["www.example.test", "A", &format!("+subnet={subnet}")],
    )
}

/// Waits (bounded) until every server answers `subnet` with `want`; returns the time taken.
fn wait_answer(servers: &[SocketAddr], subnet: &str, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got: Vec<Vec<String>> = servers.iter().map(|&s| www(s, subnet).addresses).collect();
        if got.iter().all(|g| g == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{subnet}: wanted {want:?} from every instance, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn db_scope(addr: &str) -> u8 {
    meridian_geoip::Locator::builtin(Vec::new())
        .unwrap()
        .locate(addr.parse().unwrap())
        .prefix_len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_instance_steers_dns_clients_like_http_and_follows_the_mesh() {
    let bs = [
        backend("us-b", "us-east").await,
        backend("eu-b", "eu-west").await,
        backend("ap-b", "ap-southeast").await,
    ];
    let nodes = nodes();
    let cfgs: Vec<String> = nodes
        .iter()
        .map(|n| config(n, &nodes, &[&bs[0], &bs[1], &bs[2]]))
        .collect();
    let mut procs: Vec<Option<Meridian>> = blocking({
        let (nodes, cfgs) = (nodes.clone(), cfgs.clone());
        move || {
            nodes
                .iter()
                .zip(&cfgs)
                .map(|(n, c)| Some(start(n, c)))
                .collect()
        }
    })
    .await;
    let servers: Vec<SocketAddr> = nodes.iter().map(|n| n.dns).collect();
    const US: [&str; 1] = ["192.0.2.1"];
    const EU: [&str; 1] = ["198.51.100.1"];
    const AP: [&str; 1] = ["203.0.113.1"];
    let (us, eu) = (US, EU);
    // Every instance up everywhere: each client subnet gets its region, from every
    // instance, with the database network as the scope.
    let subnets: [(&str, &[&str]); 4] = [
        ("81.2.69.0/24", &EU),
        ("1.0.16.0/24", &AP),
        ("8.8.8.0/24", &US),
        ("5.9.0.0/16", &EU),
    ];
    blocking({
        let servers = servers.clone();
        move || {
            for (subnet, want) in subnets {
                wait_answer(&servers, subnet, want, Duration::from_secs(15));
                for &s in &servers {
                    let d = www(s, subnet);
                    assert_eq!(d.status, "NOERROR");
                    assert!(d.flags.contains(&"aa".to_string()), "{d:?}");
                    let net = subnet.split('/').next().unwrap();
                    assert_eq!(d.scope, Some(db_scope(net)), "{subnet} {d:?}");
                }
            }
            // No subnet: the resolver's address (loopback, unknown) decides — the
            // config's first region, from every instance.
            for &s in &servers {
                assert_eq!(
                    dig(s, &["www.example.test", "A"]).addresses,
                    vec!["192.0.2.1"]
                );
            }
        }
    })
    .await;

    // Kill eu-1: within interval × fall (+ slack) GB clients leave it, on every other
    // instance; German clients (residency) stay on eu-west (fail closed).
    drop(procs[1].take());
    let alive = vec![servers[0], servers[2]];
    let took = blocking({
        let alive = alive.clone();
        move || {
            let took = wait_answer(&alive, "81.2.69.0/24", &us, Duration::from_secs(15));
            wait_answer(&alive, "5.9.0.0/16", &eu, Duration::from_secs(5));
            took
        }
    })
    .await;
    eprintln!("killed instance left the answers after {took:?}");
    // Its /status says so.
    let s = procs[0].as_ref().unwrap().status();
    assert_eq!(
        s["geodns"]["by_continent"]["EU"], "us-east",
        "{}",
        s["geodns"]
    );

    // Revived: back in every instance's answers.
    procs[1] = Some(
        blocking({
            let (n, c) = (nodes[1].clone(), cfgs[1].clone());
            move || start(&n, &c)
        })
        .await,
    );
    blocking({
        let servers = servers.clone();
        move || wait_answer(&servers, "81.2.69.0/24", &eu, Duration::from_secs(20))
    })
    .await;
    let s = procs[0].as_ref().unwrap().status();
    assert_eq!(
        s["geodns"]["by_continent"]["EU"], "eu-west",
        "{}",
        s["geodns"]
    );

    // ap-southeast's backend dies: its instance stays up but leaves the answers; JP
    // clients go to the next region of their plan.
    bs[2].kill().await;
    blocking({
        let servers = servers.clone();
        // Tokyo is nearer Dublin than Ashburn.
        move || wait_answer(&servers, "1.0.16.0/24", &eu, Duration::from_secs(15))
    })
    .await;

    // Nothing healthy: every address (fail open); residency still fails closed.
    bs[0].kill().await;
    bs[1].kill().await;
    blocking({
        let servers = servers.clone();
        move || {
            wait_answer(
                &servers,
                "1.0.16.0/24",
                &["192.0.2.1", "198.51.100.1", "203.0.113.1"],
                Duration::from_secs(15),
            );
            wait_answer(&servers, "5.9.0.0/16", &eu, Duration::from_secs(5));
        }
    })
    .await;
    let metrics = procs[0].as_ref().unwrap().metrics();
    assert!(
        metric(
            &metrics,
            "meridian_geodns_answers_total{region=\"fail_open\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "meridian_geodns_answers_total{region=\"eu-west\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "meridian_geodns_client_subnet_total{use=\"used\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "meridian_geodns_queries_total{qtype=\"A\",rcode=\"NOERROR\"}"
        ) >= 1.0
    );
}

/// Sends `packet` over UDP to `server`; the answer, if one comes within 2 s.
fn udp_exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(packet, server).unwrap();
    let mut buf = [0u8; 4096];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authoritative_server_over_real_sockets() {
    use futures_util::StreamExt;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RData, RecordType};
    use hickory_proto::runtime::TokioRuntimeProvider;
    use hickory_proto::udp::UdpClientStream;
    use hickory_proto::xfer::{DnsExchange, DnsHandle, DnsRequest, DnsRequestOptions};

    let bs = [
        backend("us-b", "us-east").await,
        backend("eu-b", "eu-west").await,
        backend("ap-b", "ap-southeast").await,
    ];
    let nodes = nodes();
    let us = nodes[0].clone();
    let cfg = config(&us, &nodes, &[&bs[0], &bs[1], &bs[2]]);
    let m = blocking(move || start(&us, &cfg)).await;
    let server = nodes[0].dns;

    // hickory's client: a GB client subnet; only us-east's instance runs, so us-east.
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::new()).build();
    let (exchange, background) =
        DnsExchange::connect::<_, _, hickory_proto::runtime::TokioTime>(stream)
            .await
            .unwrap();
    tokio::spawn(background);
    let mut q = Message::new();
    q.set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    q.add_query(Query::query(
        Name::from_ascii("www.example.test.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        "81.2.69.0".parse().unwrap(),
        24,
        0,
    )));
    q.set_edns(e);
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        exchange
            .send(DnsRequest::new(q, DnsRequestOptions::default()))
            .next(),
    )
    .await
    .expect("an answer within 5 s")
    .unwrap()
    .unwrap();
    assert!(answer.authoritative(), "{answer:?}");
    assert!(matches!(answer.answers()[0].data(), RData::A(a) if a.0.to_string() == "192.0.2.1"));

    blocking(move || {
        // NXDOMAIN and NODATA carry the SOA; outside the zone: REFUSED.
        let d = dig(server, &["nope.example.test", "A"]);
        assert_eq!((d.status.as_str(), d.records), ("NXDOMAIN", 1), "{d:?}");
        let d = dig(server, &["ns1.example.test", "AAAA"]);
        assert_eq!((d.status.as_str(), d.records), ("NOERROR", 1), "{d:?}");
        let d = dig(server, &["www.example.org", "A"]);
        assert_eq!(d.status, "REFUSED");
        assert!(!d.flags.contains(&"aa".to_string()));
        // NS with glue.
        let d = dig(server, &["example.test", "NS"]);
        assert_eq!(
            (d.status.as_str(), d.records, d.addresses.clone()),
            ("NOERROR", 2, vec!["192.0.2.53".to_string()]),
            "{d:?}"
        );
        // Too big for UDP: TC set, nothing in it; dig retries over TCP by itself.
        let d = dig(
            server,
            &["big.example.test", "TXT", "+ignore", "+bufsize=1232"],
        );
        assert!(d.flags.contains(&"tc".to_string()), "{d:?}");
        assert_eq!(d.records, 0);
        let d = dig(server, &["big.example.test", "TXT"]);
        assert_eq!((d.status.as_str(), d.records), ("NOERROR", 1), "{d:?}");
        assert!(!d.flags.contains(&"tc".to_string()));
        let d = dig(server, &["www.example.test", "A", "+tcp"]);
        assert_eq!(d.addresses, vec!["192.0.2.1"]);
        // EDNS version 1: BADVERS.
        let d = dig(server, &["www.example.test", "A", "+edns=1", "+noednsneg"]);
        assert_eq!(d.status, "BADVERS");

        // Malformed packets over the socket: FORMERR or nothing, and the server goes on.
        let mut header = vec![0x12, 0x34, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
        let formerr = udp_exchange(server, &header).expect("FORMERR for 65535 questions");
        let parsed = Message::from_vec(&formerr).unwrap();
        assert_eq!(
            (parsed.id(), parsed.response_code()),
            (0x1234, ResponseCode::FormErr)
        );
        header[4..6].copy_from_slice(&[0, 1]);
        let mut looped = header.clone();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let parsed = Message::from_vec(&udp_exchange(server, &looped).unwrap()).unwrap();
        assert_eq!(parsed.response_code(), ResponseCode::FormErr);
        assert!(
            udp_exchange(server, &[1, 2, 3]).is_none(),
            "too short: no answer"
        );
        let mut response = looped.clone();
        response[2] = 0x80;
        assert!(
            udp_exchange(server, &response).is_none(),
            "a response: no answer"
        );
        assert_eq!(
            dig(server, &["www.example.test", "A"]).addresses,
            vec!["192.0.2.1"]
        );
    })
    .await;
    let metrics = m.metrics();
    assert!(metric(&metrics, "meridian_geodns_dropped_total{reason=\"short\"}") >= 1.0);
    assert!(
        metric(
            &metrics,
            "meridian_geodns_dropped_total{reason=\"response\"}"
        ) >= 1.0
    );
    assert!(metric(&metrics, "meridian_geodns_truncated_total") >= 1.0);
    assert!(
        metric(
            &metrics,
            "meridian_geodns_queries_total{qtype=\"other\",rcode=\"FORMERR\"}"
        ) >= 1.0
    );
}

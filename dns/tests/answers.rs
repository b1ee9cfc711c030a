//! GeoDNS answers, through the wire format: steering by client subnet and resolver
//! address with honest scopes, health (down instances, regions without backends, fail
//! open, residency fail closed), the same answer from every instance, and the
//! authoritative server's duties (AA, NXDOMAIN/NODATA with the SOA, REFUSED, NS with glue,
//! CNAME, EDNS, BADVERS, TC and TCP, SERVFAIL until ready, the SOA serial).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use meridian_config::Instance;
use meridian_dns::{InstanceState, Transport};
use meridian_geoip::Locator;

const GB: (&str, u8) = ("81.2.69.0", 24);
const JP: (&str, u8) = ("1.0.16.0", 24);
const US: (&str, u8) = ("8.8.8.0", 24);
const DE: (&str, u8) = ("5.9.0.0", 16);

fn db_scope(addr: &str) -> u8 {
    Locator::builtin(Vec::new())
        .unwrap()
        .locate(addr.parse().unwrap())
        .prefix_len
}

#[test]
fn client_subnets_steer_like_http_with_the_database_network_as_scope() {
    let (a, _) = answerer("us-1", all_up);
    for (subnet, want) in [
        (GB, vec!["198.51.100.1", "198.51.100.2"]),
        (JP, vec!["203.0.113.1"]),
        (US, vec!["192.0.2.1"]),
        (DE, vec!["198.51.100.1", "198.51.100.2"]),
    ] {
        let m = ask(
            &a,
            "www.example.test.",
            RecordType::A,
            Some(subnet),
            "127.0.0.1",
        );
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative(), "{subnet:?}");
        assert_eq!(addresses(&m), want, "{subnet:?}");
        assert_eq!(scope(&m), Some(db_scope(subnet.0)), "{subnet:?}");
        assert!(m.answers().iter().all(|r| r.ttl() == 20));
    }
    // The apex is geo-steered too; AAAA gives the region's IPv6 addresses (none: NODATA).
    let m = ask(&a, "example.test.", RecordType::AAAA, Some(US), "127.0.0.1");
    assert_eq!(addresses(&m), vec!["2001:db8::1"]);
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::AAAA,
        Some(GB),
        "127.0.0.1",
    );
    assert_eq!(
        (m.response_code(), m.answers().len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
}

#[test]
fn without_a_client_subnet_the_resolver_address_decides() {
    let (a, _) = answerer("us-1", all_up);
    let m = ask(&a, "www.example.test.", RecordType::A, None, "81.2.69.160");
    assert_eq!(addresses(&m), vec!["198.51.100.1", "198.51.100.2"]);
    assert_eq!(scope(&m), None, "no subnet asked, none echoed");
    let m = ask(&a, "www.example.test.", RecordType::A, None, "1.0.16.1");
    assert_eq!(addresses(&m), vec!["203.0.113.1"]);
    // A /0 subnet says nothing: the resolver decides, and the scope is 0.
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(("0.0.0.0", 0)),
        "1.0.16.1",
    );
    assert_eq!(
        (addresses(&m), scope(&m)),
        (vec!["203.0.113.1".to_string()], Some(0))
    );
    // Unknown place (loopback): the config's first region, whichever instance answers.
    let m = ask(&a, "www.example.test.", RecordType::A, None, "127.0.0.1");
    assert_eq!(addresses(&m), vec!["192.0.2.1"]);
    let (ap, _) = answerer("ap-1", all_up);
    let m = ask(&ap, "www.example.test.", RecordType::A, None, "127.0.0.1");
    assert_eq!(addresses(&m), vec!["192.0.2.1"]);
}

fn down(names: &'static [&'static str]) -> impl Fn(&Instance) -> InstanceState {
    move |i| InstanceState {
        up: !names.contains(&i.name.as_str()),
        usable_backends: 1,
    }
}

#[test]
fn down_instances_and_regions_without_backends_leave_the_answers() {
    // One of eu-west's two instances down: the other answers alone.
    let (a, _) = answerer("us-1", down(&["eu-1"]));
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(GB),
        "127.0.0.1",
    );
    assert_eq!(addresses(&m), vec!["198.51.100.2"]);
    // Both down: GB clients go to the next region of their plan.
    let (a, _) = answerer("us-1", down(&["eu-1", "eu-2"]));
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(GB),
        "127.0.0.1",
    );
    assert_eq!(addresses(&m), vec!["192.0.2.1"]);
    // Instances up but their region without a usable backend: the same.
    let (a, _) = answerer("us-1", |i: &Instance| InstanceState {
        up: true,
        usable_backends: u32::from(!i.name.starts_with("eu")),
    });
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(GB),
        "127.0.0.1",
    );
    assert_eq!(addresses(&m), vec!["192.0.2.1"]);
    // Residency: German clients never leave eu-west; with it down, fail closed to it
    // (every eu-west address), never open to another region.
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(DE),
        "127.0.0.1",
    );
    assert_eq!(addresses(&m), vec!["198.51.100.1", "198.51.100.2"]);
    // Nothing healthy: fail open, every address.
    let (a, _) = answerer("us-1", down(&["us-1", "eu-1", "eu-2", "ap-1"]));
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(JP),
        "127.0.0.1",
    );
    assert_eq!(
        addresses(&m),
        vec!["192.0.2.1", "198.51.100.1", "198.51.100.2", "203.0.113.1"]
    );
}

#[test]
fn every_instance_gives_the_same_answer_from_the_same_view() {
    let subnets = [
        GB,
        JP,
        US,
        DE,
        ("41.0.0.0", 16),
        ("200.0.0.0", 16),
        ("1.120.0.0", 16),
    ];
    for health in [down(&[]), down(&["eu-1", "eu-2"]), down(&["ap-1"])] {
        let views: Vec<_> = ["us-1", "eu-1", "ap-1"]
            .iter()
            .map(|n| answerer(n, &health).0)
            .collect();
        for s in subnets {
            let answers: Vec<Vec<String>> = views
                .iter()
                .map(|a| {
                    addresses(&ask(
                        a,
                        "www.example.test.",
                        RecordType::A,
                        Some(s),
                        "127.0.0.1",
                    ))
                })
                .collect();
            assert!(
                answers.windows(2).all(|w| w[0] == w[1]),
                "{s:?}: {answers:?}"
            );
        }
    }
}

#[test]
fn an_authoritative_server_s_plain_duties() {
    let (a, _) = answerer("us-1", all_up);
    let soa_in_authority = |m: &Message, ttl: u32| {
        assert_eq!(m.name_servers().len(), 1, "{m}");
        let soa = &m.name_servers()[0];
        assert_eq!(
            (soa.record_type(), soa.ttl()),
            (RecordType::SOA, ttl),
            "{m}"
        );
    };
    // NXDOMAIN with the SOA, its TTL the negative TTL.
    let m = ask(&a, "nope.example.test.", RecordType::A, None, "127.0.0.1");
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.authoritative());
    soa_in_authority(&m, 45);
    // NODATA: a name with other types, and an empty non-terminal.
    for name in [
        "mail.example.test.",
        "b.deep.example.test.",
        "deep.example.test.",
    ] {
        let m = ask(&a, name, RecordType::A, None, "127.0.0.1");
        assert_eq!(
            (m.response_code(), m.answers().len()),
            (ResponseCode::NoError, 0),
            "{name}"
        );
        soa_in_authority(&m, 45);
    }
    // Outside every zone: REFUSED, not authoritative.
    let m = ask(&a, "www.example.org.", RecordType::A, None, "127.0.0.1");
    assert_eq!(m.response_code(), ResponseCode::Refused);
    assert!(!m.authoritative());
    // SOA and NS at the apex; in-zone name servers' addresses as glue.
    let m = ask(&a, "example.test.", RecordType::SOA, None, "127.0.0.1");
    match m.answers()[0].data() {
        RData::SOA(soa) => {
            assert_eq!(soa.mname().to_string(), "ns1.example.test.");
            assert_eq!(soa.rname().to_string(), "hostmaster.example.test.");
            assert_eq!(soa.minimum(), 45);
        }
        other => panic!("{other:?}"),
    }
    let m = ask(&a, "example.test.", RecordType::NS, None, "127.0.0.1");
    assert_eq!(m.answers().len(), 2);
    assert_eq!(m.additionals().len(), 1);
    assert_eq!(m.additionals()[0].name().to_string(), "ns1.example.test.");
    // A CNAME in the zone is followed to a geo-steered name.
    let m = ask(
        &a,
        "alias.example.test.",
        RecordType::A,
        Some(JP),
        "127.0.0.1",
    );
    assert_eq!(m.answers()[0].record_type(), RecordType::CNAME);
    assert_eq!(addresses(&m), vec!["203.0.113.1"]);
    // Names are matched whatever their case, and the question comes back as asked.
    let m = ask(
        &a,
        "WwW.ExAmPlE.TeSt.",
        RecordType::A,
        Some(US),
        "127.0.0.1",
    );
    assert_eq!(addresses(&m), vec!["192.0.2.1"]);
    assert_eq!(m.queries()[0].name().to_string(), "WwW.ExAmPlE.TeSt.");
    // MX.
    let m = ask(&a, "mail.example.test.", RecordType::MX, None, "127.0.0.1");
    assert!(matches!(m.answers()[0].data(), RData::MX(mx) if mx.preference() == 10));
    // Zone transfers are refused.
    let m = ask(&a, "example.test.", RecordType::AXFR, None, "127.0.0.1");
    assert_eq!(m.response_code(), ResponseCode::Refused);
}

#[test]
fn edns_versions_client_subnet_rules_and_payload_sizes() {
    let (a, _) = answerer("us-1", all_up);
    let m = ask(&a, "www.example.test.", RecordType::A, None, "127.0.0.1");
    assert_eq!(m.extensions().as_ref().unwrap().max_payload(), 1232);
    // EDNS version 1: BADVERS.
    let mut q =
        Message::from_vec(&query("www.example.test.", RecordType::A, Some(1232), None)).unwrap();
    let mut e = Edns::new();
    e.set_version(1);
    q.set_edns(e);
    let m = send(&a, &q.to_vec().unwrap(), "127.0.0.1", Transport::Udp).unwrap();
    // Extended RCODE 16 (BADVERS; hickory decodes 16 by its TSIG name, BADSIG).
    assert_eq!(u16::from(m.response_code()), 16);
    assert!(m.extensions().is_some());
    // A client subnet with bits set beyond its prefix (81.2.69 under a /20; the wire
    // carries whole bytes): FORMERR.
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(("81.2.69.0", 20)),
        "127.0.0.1",
    );
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // No EDNS: no OPT in the answer.
    let m = send(
        &a,
        &query("www.example.test.", RecordType::A, None, None),
        "127.0.0.1",
        Transport::Udp,
    )
    .unwrap();
    assert!(m.extensions().is_none());
    assert_eq!(addresses(&m), vec!["192.0.2.1"]);
}

#[test]
fn answers_too_large_for_udp_are_truncated_and_whole_over_tcp() {
    let (a, _) = answerer("us-1", all_up);
    // 2000 bytes of TXT: over 512 without EDNS, over our 1232 with a 4096 buffer.
    for payload in [None, Some(4096)] {
        let packet = query("big.example.test.", RecordType::TXT, payload, None);
        let m = send(&a, &packet, "127.0.0.1", Transport::Udp).unwrap();
        assert!(m.truncated(), "{payload:?}");
        assert_eq!(m.answers().len(), 0);
        assert_eq!(m.queries().len(), 1);
        assert_eq!(m.extensions().is_some(), payload.is_some());
        let m = send(&a, &packet, "127.0.0.1", Transport::Tcp).unwrap();
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 1);
    }
}

#[test]
fn not_ready_means_servfail() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let snap = snapshot(&config_text("us-1", ""));
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let a = meridian_dns::Answerer::new(
        meridian_dns::DnsMetrics::register(&prometheus::Registry::new()),
        snap.clone(),
        move || flag.load(Ordering::Relaxed),
    )
    .unwrap();
    a.update(snap, all_up).unwrap();
    let m = ask(&a, "www.example.test.", RecordType::A, None, "127.0.0.1");
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    ready.store(true, Ordering::Relaxed);
    let m = ask(&a, "www.example.test.", RecordType::A, None, "127.0.0.1");
    assert_eq!(m.response_code(), ResponseCode::NoError);
}

#[test]
fn the_soa_serial_moves_when_what_is_answered_changes() {
    let serial = |a: &meridian_dns::Answerer| a.state().serial;
    let (a, snap) = answerer("us-1", all_up);
    let first = serial(&a);
    a.update(snap.clone(), all_up).unwrap();
    assert_eq!(serial(&a), first, "nothing changed");
    a.update(snap.clone(), down(&["ap-1"])).unwrap();
    let second = serial(&a);
    assert!(second > first, "{first} → {second}");
    a.update(snap, down(&["ap-1"])).unwrap();
    assert_eq!(serial(&a), second);
    let m = ask(&a, "example.test.", RecordType::SOA, None, "127.0.0.1");
    assert!(matches!(m.answers()[0].data(), RData::SOA(s) if s.serial() == second));
}

#[test]
fn a_configured_serial_starts_there_and_counts_changes() {
    let snap =
        snapshot(&config_text("us-1", "").replace("ttl = \"20s\"", "ttl = \"20s\"\nserial = 7"));
    let a = answerer_of(&snap, all_up);
    assert_eq!(a.state().serial, 7);
    a.update(snap.clone(), down(&["ap-1"])).unwrap();
    assert_eq!(a.state().serial, 8);
    a.update(snap, all_up).unwrap();
    assert_eq!(a.state().serial, 9);
}

/// A geo-steered name follows the service its host name routes to: a service that runs in
/// one region only is answered from that region's instances, wherever the client is; other
/// names keep the default service's steering.
#[test]
fn a_name_follows_the_plan_of_the_service_its_host_routes_to() {
    let extra = "[services.api]\nhosts = [\"api.example.test\"]\n[services.api.regions.ap-southeast]\nbackends = [{ address = \"127.0.0.1:1013\" }]\n";
    let text = config_text("us-1", extra).replace(
        "names = [\"www\", \"@\"]",
        "names = [\"www\", \"@\", \"api\"]",
    );
    let snap = snapshot(&text);
    let a = answerer_of(&snap, all_up);
    for subnet in [GB, US, JP] {
        let m = ask(
            &a,
            "api.example.test.",
            RecordType::A,
            Some(subnet),
            "127.0.0.1",
        );
        assert_eq!(addresses(&m), vec!["203.0.113.1"], "{subnet:?}");
    }
    let m = ask(
        &a,
        "www.example.test.",
        RecordType::A,
        Some(GB),
        "127.0.0.1",
    );
    assert_eq!(addresses(&m), vec!["198.51.100.1", "198.51.100.2"]);
    let state = a.state();
    let names: Vec<(String, u16)> = state
        .zones
        .iter()
        .flat_map(|z| z.geo_names.iter().cloned())
        .collect();
    let api = snap.service_index("api").unwrap() as u16;
    assert!(
        names.contains(&("api.example.test".to_owned(), api)),
        "{names:?}"
    );
    let by = meridian_dns::status::by_continent(&state, usize::from(api));
    assert!(
        by.iter().all(|(_, r)| r.as_deref() == Some("ap-southeast")),
        "{by:?}"
    );
}

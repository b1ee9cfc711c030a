//! Hostile packets: a corpus of malformed queries (truncated headers, compression loops,
//! oversized counts, broken EDNS) and fuzzed bytes never panic the answerer; each gets no
//! answer or a well-formed one with the query's ID.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use meridian_dns::Transport;
use proptest::prelude::*;

/// A 12-byte header: ID 0x4d45, the given flags and counts.
fn header(flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = vec![0x4d, 0x45];
    for v in [flags, qd, an, ns, ar] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

/// `www.example.test` A IN as wire bytes.
fn question() -> Vec<u8> {
    let mut q = Vec::new();
    for label in ["www", "example", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// What every answer must be: a response to the query's ID that decodes.
fn check(packet: &[u8], transport: Transport) -> Option<Message> {
    static ANSWERER: std::sync::OnceLock<meridian_dns::Answerer> = std::sync::OnceLock::new();
    let a = ANSWERER.get_or_init(|| answerer("us-1", all_up).0);
    let mut out = Vec::new();
    if !a.respond(packet, "127.0.0.1".parse().unwrap(), transport, &mut out) {
        return None;
    }
    let m = Message::from_vec(&out).expect("an answer that decodes");
    assert_eq!(m.id(), 0x4d45);
    assert_eq!(m.message_type(), hickory_proto::op::MessageType::Response);
    Some(m)
}

fn rcode(packet: &[u8]) -> Option<ResponseCode> {
    check(packet, Transport::Udp).map(|m| m.response_code())
}

#[test]
fn a_corpus_of_malformed_queries_is_answered_formerr_or_dropped() {
    let q = question();
    let opt = |options: &[u8]| {
        let mut o = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0];
        o.extend_from_slice(&(options.len() as u16).to_be_bytes());
        o.extend_from_slice(options);
        o
    };
    let ecs = |family: u16, source: u8, addr: &[u8]| {
        let mut e = vec![0, 8];
        e.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
        e.extend_from_slice(&family.to_be_bytes());
        e.push(source);
        e.push(0);
        e.extend_from_slice(addr);
        e
    };
    let cases: Vec<(&str, Vec<u8>, Option<ResponseCode>)> = vec![
        ("empty", vec![], None),
        ("11 bytes", header(0, 1, 0, 0, 0)[..11].to_vec(), None),
        ("a response", cat(&[&header(0x8000, 1, 0, 0, 0), &q]), None),
        (
            "no question",
            header(0, 0, 0, 0, 0),
            Some(ResponseCode::FormErr),
        ),
        (
            "two questions",
            cat(&[&header(0, 2, 0, 0, 0), &q, &q]),
            Some(ResponseCode::FormErr),
        ),
        (
            "65535 questions claimed",
            cat(&[&header(0, 0xffff, 0, 0, 0), &q]),
            Some(ResponseCode::FormErr),
        ),
        (
            "65535 answers claimed",
            cat(&[&header(0, 1, 0xffff, 0, 0), &q]),
            Some(ResponseCode::FormErr),
        ),
        (
            "65535 additionals claimed",
            cat(&[&header(0, 1, 0, 0, 0xffff), &q]),
            Some(ResponseCode::FormErr),
        ),
        (
            "header only, one question claimed",
            header(0, 1, 0, 0, 0),
            Some(ResponseCode::FormErr),
        ),
        (
            "question cut short",
            cat(&[&header(0, 1, 0, 0, 0), &q[..q.len() - 3]]),
            Some(ResponseCode::FormErr),
        ),
        (
            "label longer than the packet",
            cat(&[&header(0, 1, 0, 0, 0), &[60, b'a', b'b']]),
            Some(ResponseCode::FormErr),
        ),
        (
            "compression pointer to itself",
            cat(&[&header(0, 1, 0, 0, 0), &[0xc0, 12, 0, 1, 0, 1]]),
            Some(ResponseCode::FormErr),
        ),
        (
            "compression loop of two",
            cat(&[&header(0, 1, 0, 0, 0), &[1, b'a', 0xc0, 12, 0, 1, 0, 1]]),
            Some(ResponseCode::FormErr),
        ),
        (
            "pointer past the end",
            cat(&[&header(0, 1, 0, 0, 0), &[0xc0, 0xff, 0, 1, 0, 1]]),
            Some(ResponseCode::FormErr),
        ),
        (
            "name over 255 bytes",
            {
                let mut name = Vec::new();
                for _ in 0..5 {
                    name.push(63);
                    name.extend_from_slice(&[b'a'; 63]);
                }
                name.push(0);
                cat(&[&header(0, 1, 0, 0, 0), &name, &[0, 1, 0, 1]])
            },
            Some(ResponseCode::FormErr),
        ),
        (
            "reserved label type 0x40",
            cat(&[&header(0, 1, 0, 0, 0), &[0x41, b'a', 0, 0, 1, 0, 1]]),
            Some(ResponseCode::FormErr),
        ),
        (
            "two OPT records",
            cat(&[&header(0, 1, 0, 0, 2), &q, &opt(&[]), &opt(&[])]),
            Some(ResponseCode::FormErr),
        ),
        (
            "OPT cut short",
            cat(&[&header(0, 1, 0, 0, 1), &q, &opt(&[])[..7]]),
            Some(ResponseCode::FormErr),
        ),
        (
            "client subnet family 3",
            cat(&[&header(0, 1, 0, 0, 1), &q, &opt(&ecs(3, 24, &[1, 2, 3]))]),
            Some(ResponseCode::FormErr),
        ),
        (
            "client subnet /40 of IPv4",
            cat(&[
                &header(0, 1, 0, 0, 1),
                &q,
                &opt(&ecs(1, 40, &[1, 2, 3, 4, 5])),
            ]),
            Some(ResponseCode::FormErr),
        ),
        (
            "client subnet host bits",
            cat(&[&header(0, 1, 0, 0, 1), &q, &opt(&ecs(1, 20, &[81, 2, 69]))]),
            Some(ResponseCode::FormErr),
        ),
        (
            "client subnet option cut short",
            cat(&[&header(0, 1, 0, 0, 1), &q, &opt(&[0, 8, 0, 8, 0, 1])]),
            Some(ResponseCode::FormErr),
        ),
        (
            "opcode UPDATE",
            cat(&[&header(5 << 11, 1, 0, 0, 0), &q]),
            Some(ResponseCode::NotImp),
        ),
        (
            "class CHAOS",
            cat(&[&header(0, 1, 0, 0, 0), &q[..q.len() - 2], &[0, 3]]),
            Some(ResponseCode::Refused),
        ),
        (
            "type 0",
            cat(&[&header(0, 1, 0, 0, 0), &q[..q.len() - 4], &[0, 0, 0, 1]]),
            Some(ResponseCode::NoError),
        ),
    ];
    for (name, packet, want) in cases {
        for transport in [Transport::Udp, Transport::Tcp] {
            let got = check(&packet, transport).map(|m| m.response_code());
            assert_eq!(got, want, "{name} over {transport:?}");
        }
    }
    // And a well-formed query still works.
    assert_eq!(
        rcode(&cat(&[&header(0, 1, 0, 0, 0), &q])),
        Some(ResponseCode::NoError)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes: no panic; any answer decodes and carries the ID.
    #[test]
    fn fuzz_geodns_arbitrary_packets(mut bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if bytes.len() >= 2 {
            bytes[0] = 0x4d;
            bytes[1] = 0x45;
        }
        check(&bytes, Transport::Udp);
    }

    /// A valid query (with EDNS and a client subnet) with bytes overwritten: no panic.
    #[test]
    fn fuzz_geodns_mutated_queries(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut packet = query("www.example.test.", RecordType::A, Some(1232), Some(("81.2.69.0", 24)));
        for (at, value) in edits {
            let i = at.index(packet.len());
            if i >= 2 {
                packet[i] = value;
            }
        }
        let keep = 2 + cut.index(packet.len() - 1);
        packet.truncate(keep);
        check(&packet, Transport::Udp);
        check(&packet, Transport::Tcp);
    }
}

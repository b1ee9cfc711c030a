//! Who is the client: the socket peer, unless the peer is a trusted proxy; then the rightmost
//! address of `X-Forwarded-For` (or, without it, `Forwarded`) that is not itself trusted.
//!
//! Headers from untrusted peers are never believed, so a client cannot choose its own
//! country. A malformed header from a trusted peer is treated as absent (and counted by the
//! caller); it never fails the request.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `Forwarded` (RFC 7239).
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The decision about one request's client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The address routing and logging use.
    pub ip: IpAddr,
    /// Whether the socket peer is a trusted proxy (its forwarding headers are kept upstream).
    pub peer_trusted: bool,
    /// Whether a forwarding header from a trusted peer was malformed and ignored.
    pub malformed: bool,
}

/// Whether `ip` is inside one of `trusted`. IPv4-mapped IPv6 peers match IPv4 networks.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses one address as found in forwarding headers: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, optionally in double quotes.
pub fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
}

/// One hop of a forwarding header, as written.
enum Hop<'a> {
    /// An address (to be parsed).
    Addr(&'a str),
    /// A hop that does not disclose its client: `unknown`, an obfuscated identifier
    /// (`_hidden`, RFC 7239 §6.3), or a `Forwarded` element without `for=`.
    Undisclosed,
}

/// Classifies a node value: `unknown` and `_obfuscated` identifiers are not addresses.
fn node(value: &str) -> Hop<'_> {
    let v = value.trim().trim_matches('"');
    if v.eq_ignore_ascii_case("unknown") || v.starts_with('_') {
        Hop::Undisclosed
    } else {
        Hop::Addr(value)
    }
}

/// The `for=` node of one `Forwarded` element.
fn forwarded_for(element: &str) -> Hop<'_> {
    element
        .split(';')
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim().eq_ignore_ascii_case("for").then(|| node(v))
        })
        .unwrap_or(Hop::Undisclosed)
}

/// An `X-Forwarded-For` entry is the address itself (or `unknown`).
fn xff_entry(entry: &str) -> Hop<'_> {
    node(entry)
}

/// The outcome of walking one forwarding header right to left.
enum Walk {
    Absent,
    Malformed,
    /// The nearest untrusted hop did not disclose its address: the client is as good as
    /// unknown, so the header is treated as absent (but it is not malformed).
    Undisclosed,
    Found(IpAddr),
}

/// Walks the comma-separated entries of every line of `name`, rightmost first, skipping
/// trusted hops. If every hop is trusted the leftmost one is the client.
fn walk(
    headers: &HeaderMap,
    name: &HeaderName,
    trusted: &[IpNet],
    extract: for<'a> fn(&'a str) -> Hop<'a>,
) -> Walk {
    let mut last = None;
    let mut any = false;
    for value in headers.get_all(name).iter().rev() {
        let Ok(text) = value.to_str() else {
            return Walk::Malformed;
        };
        for entry in text.rsplit(',') {
            if entry.trim().is_empty() {
                continue;
            }
            any = true;
            let ip = match extract(entry) {
                Hop::Undisclosed => return Walk::Undisclosed,
                Hop::Addr(a) => match parse_addr(a) {
                    Some(ip) => canonical(ip),
                    None => return Walk::Malformed,
                },
            };
            if !is_trusted(trusted, ip) {
                return Walk::Found(ip);
            }
            last = Some(ip);
        }
    }
    match (any, last) {
        (false, _) => Walk::Absent,
        (true, Some(ip)) => Walk::Found(ip),
        (true, None) => Walk::Malformed,
    }
}

/// `trusted_proxies` as the request path compares them: IPv4-mapped IPv6 networks
/// (`::ffff:10.0.0.0/104`) become the IPv4 networks they stand for, since peers and
/// forwarded addresses are compared in their canonical (IPv4) form.
pub fn canonical_nets(nets: &[IpNet]) -> Vec<IpNet> {
    nets.iter()
        .map(|n| match n {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
                .network()
                .to_ipv4_mapped()
                .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
                .map_or(*n, IpNet::V4),
            other => *other,
        })
        .collect()
}

/// Decides the client address of a request from `peer` with `headers`; `trusted` is in
/// canonical form (see [`canonical_nets`]).
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let peer = canonical(peer);
    let mut out = ClientAddr {
        ip: peer,
        peer_trusted: false,
        malformed: false,
    };
    if !is_trusted(trusted, peer) {
        return out;
    }
    out.peer_trusted = true;
    let walked = match walk(headers, &X_FORWARDED_FOR, trusted, xff_entry) {
        Walk::Absent => walk(headers, &FORWARDED, trusted, forwarded_for),
        other => other,
    };
    match walked {
        Walk::Found(ip) => out.ip = ip,
        Walk::Malformed => out.malformed = true,
        Walk::Absent | Walk::Undisclosed => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "81.2.69.160")]);
        let c = resolve(PEER, &h, &[]);
        assert_eq!(c.ip, PEER);
        assert!(!c.peer_trusted);
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 81.2.69.160"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        let c = resolve(PEER, &h, &trusted);
        assert_eq!(c.ip, "81.2.69.160".parse::<IpAddr>().unwrap());
        assert!(c.peer_trusted && !c.malformed);
    }

    #[test]
    fn all_trusted_gives_leftmost() {
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        assert_eq!(
            resolve(PEER, &h, &trusted).ip,
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_header_and_ports() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#,
        )]);
        assert_eq!(
            resolve(PEER, &h, &trusted).ip,
            "2001:db8:cafe::17".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("x-forwarded-for", "203.0.113.7:5555")]);
        assert_eq!(
            resolve(PEER, &h, &trusted).ip,
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn malformed_is_absent_and_flagged() {
        let trusted = nets(&["127.0.0.1/32"]);
        for bad in ["not-an-ip", "1.2.3.4, ,zz", "999.1.1.1", "1.2.3.4, :80"] {
            let h = headers(&[("x-forwarded-for", bad)]);
            let c = resolve(PEER, &h, &trusted);
            assert_eq!(c.ip, PEER, "{bad}");
            assert!(c.malformed, "{bad}");
        }
    }

    #[test]
    fn undisclosed_hops_are_absent_not_malformed() {
        let trusted = nets(&["127.0.0.1/32"]);
        for h in [
            headers(&[("x-forwarded-for", "81.2.69.160, unknown")]),
            headers(&[("forwarded", "for=81.2.69.160, for=unknown")]),
            headers(&[("forwarded", r#"for=81.2.69.160, for="_gazonk""#)]),
            headers(&[("forwarded", "for=81.2.69.160, proto=https;by=10.0.0.1")]),
        ] {
            let c = resolve(PEER, &h, &trusted);
            assert_eq!(c.ip, PEER, "{h:?}");
            assert!(c.peer_trusted && !c.malformed, "{h:?}");
        }
        // An undisclosed hop behind a trusted one still stops the walk there.
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let h = headers(&[("forwarded", "for=81.2.69.160, for=unknown, for=10.1.1.1")]);
        assert_eq!(resolve(PEER, &h, &trusted).ip, PEER);
    }

    #[test]
    fn mapped_ipv6_trusted_networks_match_ipv4_peers() {
        let trusted = canonical_nets(&nets(&["::ffff:127.0.0.0/104", "::ffff:10.1.2.3/128"]));
        assert_eq!(trusted, nets(&["127.0.0.0/8", "10.1.2.3/32"]));
        let h = headers(&[("x-forwarded-for", "81.2.69.160, 10.1.2.3")]);
        let c = resolve(PEER, &h, &trusted);
        assert_eq!(c.ip, "81.2.69.160".parse::<IpAddr>().unwrap());
        // Plain IPv6 networks and short mapped prefixes are left alone.
        assert_eq!(
            canonical_nets(&nets(&["2001:db8::/32", "::ffff:0:0/64"])),
            nets(&["2001:db8::/32", "::ffff:0:0/64"])
        );
    }

    #[test]
    fn mapped_ipv6_peer_matches_ipv4_network() {
        let trusted = nets(&["127.0.0.1/32"]);
        let peer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "81.2.69.160")]);
        assert_eq!(
            resolve(peer, &h, &trusted).ip,
            "81.2.69.160".parse::<IpAddr>().unwrap()
        );
    }

    mod fuzz {
        use super::super::*;
        use super::nets;
        use proptest::prelude::*;

        fn header_value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..80),
                "[ 0-9a-f.:\\[\\],;=\"]{0,80}".prop_map(String::into_bytes),
                (any::<std::net::IpAddr>(), any::<std::net::IpAddr>())
                    .prop_map(|(a, b)| format!("{a}, {b}").into_bytes()),
            ]
        }

        fn headers_of(xff: &[Vec<u8>], fwd: &[Vec<u8>]) -> HeaderMap {
            let mut h = HeaderMap::new();
            for v in xff {
                if let Ok(v) = http::HeaderValue::from_bytes(v) {
                    h.append(&X_FORWARDED_FOR, v);
                }
            }
            for v in fwd {
                if let Ok(v) = http::HeaderValue::from_bytes(v) {
                    h.append(&FORWARDED, v);
                }
            }
            h
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// From an untrusted peer the client is always the peer, whatever it sent.
            #[test]
            fn fuzz_client_untrusted_peer_is_the_client(
                peer in any::<std::net::IpAddr>(),
                xff in proptest::collection::vec(header_value(), 0..4),
                fwd in proptest::collection::vec(header_value(), 0..3),
            ) {
                let h = headers_of(&xff, &fwd);
                let c = resolve(peer, &h, &nets(&["10.0.0.0/8"]));
                if !is_trusted(&nets(&["10.0.0.0/8"]), peer) {
                    prop_assert_eq!(c.ip, canonical(peer));
                    prop_assert!(!c.peer_trusted);
                }
            }

            /// From a trusted peer the client is the peer or an address the headers name.
            #[test]
            fn fuzz_client_trusted_peer_names_a_header_address(
                last in 0u8..=255,
                xff in proptest::collection::vec(header_value(), 0..4),
                fwd in proptest::collection::vec(header_value(), 0..3),
            ) {
                let peer = std::net::IpAddr::from([10, 0, 0, last]);
                let h = headers_of(&xff, &fwd);
                let c = resolve(peer, &h, &nets(&["10.0.0.0/8"]));
                prop_assert!(c.peer_trusted);
                if c.ip != peer {
                    let text: String = h
                        .iter()
                        .filter_map(|(_, v)| v.to_str().ok())
                        .collect::<Vec<_>>()
                        .join(" ");
                    let shown = c.ip.to_string();
                    let v4_in_v6 = format!("::ffff:{shown}");
                    prop_assert!(
                        text.to_ascii_lowercase().contains(&shown) || text.to_ascii_lowercase().contains(&v4_in_v6)
                            || text.contains('['),
                        "{} not in {}", shown, text
                    );
                }
            }
        }
    }
}

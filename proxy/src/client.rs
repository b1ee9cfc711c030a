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

/// The `for=` value of one `Forwarded` element, if present.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })
}

/// An `X-Forwarded-For` entry is the address itself.
fn xff_entry(entry: &str) -> Option<&str> {
    Some(entry)
}

/// The outcome of walking one forwarding header right to left.
enum Walk {
    Absent,
    Malformed,
    Found(IpAddr),
}

/// Walks the comma-separated entries of every line of `name`, rightmost first, skipping
/// trusted hops. If every hop is trusted the leftmost one is the client.
fn walk(
    headers: &HeaderMap,
    name: &HeaderName,
    trusted: &[IpNet],
    extract: for<'a> fn(&'a str) -> Option<&'a str>,
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
            let Some(ip) = extract(entry).and_then(parse_addr) else {
                return Walk::Malformed;
            };
            let ip = canonical(ip);
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

/// Decides the client address of a request from `peer` with `headers`.
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
        Walk::Absent => {}
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
        for bad in ["not-an-ip", "1.2.3.4, ,zz", "999.1.1.1", "unknown"] {
            let h = headers(&[("x-forwarded-for", bad)]);
            let c = resolve(PEER, &h, &trusted);
            assert_eq!(c.ip, PEER, "{bad}");
            assert!(c.malformed, "{bad}");
        }
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
}

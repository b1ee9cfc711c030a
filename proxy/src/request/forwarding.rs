//! The forwarding headers a proxy adds to the upstream request: `X-Forwarded-For`,
//! `X-Forwarded-Proto` and `Via`.
//!
//! - `X-Forwarded-For`: a trusted peer's chain is kept and the peer appended; anything an
//!   untrusted peer sent is replaced by the peer's address (a client cannot plant a
//!   forged chain for the backends to believe). A chain that is not text is no chain.
//! - `X-Forwarded-Proto`: `http` or `https` (the listener's), kept when a trusted proxy set
//!   it; `Forwarded` from an untrusted peer is removed.
//! - `Via`: every earlier entry, in order, then this hop with the protocol version the
//!   request was received with (RFC 9110 §7.6.3); a request whose `Via` already names this
//!   node is a loop ([`loops_through`]: answered `508`).
//! - The other client-address headers backends believe (`X-Real-IP`, `True-Client-IP`,
//!   `X-Client-IP`, `X-Forwarded-Host`, `X-Forwarded-Port`, …) are removed when an untrusted
//!   peer sent them; `X-Real-IP` is then set to the client address Meridian decided on.

use std::io::Write;
use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, VIA};
use pingora::http::RequestHeader;
use pingora::Result;

use ipnet::IpNet;
use meridian_config::Config;

use super::client::{canonical_nets, FORWARDED, X_FORWARDED_FOR};

/// This node as the forwarding headers name it, and whom it believes: built once per
/// snapshot generation.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `Via` entry this node appends, by the client's protocol version (see
    /// [`Identity::via_for`]).
    via: [HeaderValue; 3],
    /// `client.trusted_proxies`, IPv4-mapped networks in IPv4 form
    /// ([`canonical_nets`]), and every other Meridian instance's addresses: a request a
    /// peer relays carries its client's address.
    pub trusted_proxies: Vec<IpNet>,
    /// The other instances' addresses: a request from one of them that says it was relayed
    /// is served from this instance's own region only.
    pub peers: Vec<IpAddr>,
}

/// A `Via` entry; node names are validated visible ASCII, so this cannot fail in practice.
fn via_value(version: &str, name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{version} {name}"))
        .unwrap_or_else(|_| HeaderValue::from_static("1.1 meridian"))
}

impl Identity {
    /// The identity `config` gives this node.
    pub fn of(config: &Config) -> Identity {
        let name = &config.node.name;
        let mut peers: Vec<IpAddr> = config
            .instances()
            .filter(|(_, i)| i.name != *name)
            .flat_map(|(_, i)| i.public.iter().copied().chain([i.proxy.ip(), i.mesh.ip()]))
            .map(super::client::canonical)
            .collect();
        peers.sort();
        peers.dedup();
        let mut trusted = canonical_nets(&config.client.trusted_proxies);
        trusted.extend(peers.iter().map(|ip| IpNet::from(*ip)));
        Identity {
            via: [
                via_value("1.0", name),
                via_value("1.1", name),
                via_value("2", name),
            ],
            trusted_proxies: trusted,
            peers,
        }
    }

    /// Whether `peer` is another Meridian instance.
    pub fn is_peer(&self, peer: IpAddr) -> bool {
        self.peers.contains(&super::client::canonical(peer))
    }

    /// The `Via` entry for a request received as `version` (`1.0 <name>`, `1.1 <name>`,
    /// `2 <name>`; RFC 9110 §7.6.3: the protocol the request was *received* with).
    pub fn via_for(&self, version: http::Version) -> &HeaderValue {
        match version {
            http::Version::HTTP_09 | http::Version::HTTP_10 => &self.via[0],
            http::Version::HTTP_11 => &self.via[1],
            _ => &self.via[2],
        }
    }
}

/// Client-address headers a client could plant for a backend to believe; removed when the
/// peer is not a trusted proxy (`X-Real-IP` is then set by Meridian).
const SPOOFABLE: [&str; 9] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
];

/// Whether a request whose `Via` lines are `via` already passed through the node named
/// `name` (an entry `<protocol> <name>`): forwarding it again would loop.
pub fn loops_through(via: http::header::GetAll<'_, HeaderValue>, name: &str) -> bool {
    via.iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| entry.split_whitespace().nth(1) == Some(name))
}

/// What this hop knows about the request it forwards.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The socket peer (canonical form), if it has an IP address.
    pub peer: Option<IpAddr>,
    /// The client address Meridian decided on (the peer, or from a trusted chain).
    pub client: Option<IpAddr>,
    /// Whether the peer is a trusted proxy.
    pub peer_trusted: bool,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// This hop's `Via` entry for the request's version.
    pub via: &'a HeaderValue,
}

/// Sets the forwarding headers on `upstream`.
pub fn apply(upstream: &mut RequestHeader, hop: &Hop<'_>) -> Result<()> {
    const HTTP: HeaderValue = HeaderValue::from_static("http");
    const HTTPS: HeaderValue = HeaderValue::from_static("https");
    // The peer's address as a value, when made: X-Real-IP usually repeats it.
    let mut peer_value = None;
    if let Some(peer) = hop.peer {
        let value = if hop.peer_trusted && upstream.headers.contains_key(&X_FORWARDED_FOR) {
            match joined(upstream.headers.get_all(&X_FORWARDED_FOR), true) {
                Some(prior) => HeaderValue::from_str(&format!("{prior}, {peer}")),
                None => HeaderValue::from_str(&peer.to_string()),
            }
        } else {
            address_value(peer).inspect(|v| peer_value = Some((peer, v.clone())))
        };
        if let Ok(value) = value {
            set(upstream, &X_FORWARDED_FOR, "X-Forwarded-For", value)?;
        }
    }
    let proto = if hop.tls { HTTPS } else { HTTP };
    if !hop.peer_trusted {
        // One pass over the (few) request headers finds whether anything is to be removed;
        // removing each name blindly costs a name parse and two map lookups per name.
        if upstream.headers.keys().any(|k| is_planted(k.as_str())) {
            upstream.remove_header(&FORWARDED);
            for name in SPOOFABLE {
                upstream.remove_header(name);
            }
        }
        if let Some(client) = hop.client {
            let value = match peer_value {
                Some((peer, v)) if peer == client => Ok(v),
                _ => address_value(client),
            };
            if let Ok(v) = value {
                set(upstream, &X_REAL_IP, "X-Real-IP", v)?;
            }
        }
        set(upstream, &X_FORWARDED_PROTO, "X-Forwarded-Proto", proto)?;
    } else if upstream.headers.get(&X_FORWARDED_PROTO).is_none() {
        set(upstream, &X_FORWARDED_PROTO, "X-Forwarded-Proto", proto)?;
    }
    let via = match joined(upstream.headers.get_all(VIA), false) {
        Some(prior) => {
            HeaderValue::from_str(&format!("{prior}, {}", hop.via.to_str().unwrap_or("")))
                .unwrap_or_else(|_| hop.via.clone())
        }
        None => hop.via.clone(),
    };
    upstream.insert_header(VIA, via)?;
    Ok(())
}

static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Sets `name` to `value`. A header that keeps its names' case (`listeners.
/// preserve_header_case`) gets the name as `cased`; one that does not takes `name` as it
/// is, with no parsing or copy of the name.
fn set(
    upstream: &mut RequestHeader,
    name: &'static HeaderName,
    cased: &'static str,
    value: HeaderValue,
) -> Result<()> {
    if upstream.has_case() {
        upstream.insert_header(cased, value)
    } else {
        upstream.insert_header(name, value)
    }
}

/// Whether `name` (lower case) is `Forwarded` or one of the [`SPOOFABLE`] headers.
fn is_planted(name: &str) -> bool {
    name == FORWARDED.as_str() || SPOOFABLE.contains(&name)
}

/// `ip` as a header value, formatted on the stack (IPv4 without `core::fmt`, which costs
/// about a thousand instructions per address on the request path).
fn address_value(ip: IpAddr) -> std::result::Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut buf = [0u8; 64];
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            cursor.position() as usize
        }
    };
    HeaderValue::from_bytes(&buf[..len])
}

/// The lines of a list-valued header joined with ", ", or `None` when there are none.
/// With `all_or_nothing`, one line that is not visible ASCII makes the whole list `None`
/// (a forwarding chain with a hole in it is no chain); otherwise such lines are skipped.
fn joined(values: http::header::GetAll<'_, HeaderValue>, all_or_nothing: bool) -> Option<String> {
    let mut out = String::new();
    for v in values {
        match v.to_str() {
            Ok(text) if !text.trim().is_empty() => {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                out.push_str(text.trim());
            }
            Ok(_) => {}
            Err(_) if all_or_nothing => return None,
            Err(_) => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &[u8])]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), HeaderValue::from_bytes(v).unwrap())
                .unwrap();
        }
        r
    }

    fn all(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
            .collect()
    }

    static VIA_11: HeaderValue = HeaderValue::from_static("1.1 edge");

    fn hop(trusted: bool, tls: bool) -> Hop<'static> {
        Hop {
            peer: Some("192.0.2.1".parse().unwrap()),
            client: Some("192.0.2.1".parse().unwrap()),
            peer_trusted: trusted,
            tls,
            via: &VIA_11,
        }
    }

    #[test]
    fn an_untrusted_peer_cannot_plant_a_client_address_header() {
        let mut r = request(&[
            ("x-real-ip", b"6.6.6.6"),
            ("true-client-ip", b"6.6.6.6"),
            ("x-forwarded-host", b"evil.example"),
            ("x-forwarded-port", b"1"),
        ]);
        apply(&mut r, &hop(false, false)).unwrap();
        assert_eq!(all(&r, "x-real-ip"), ["192.0.2.1"], "rewritten to the peer");
        for name in ["true-client-ip", "x-forwarded-host", "x-forwarded-port"] {
            assert!(all(&r, name).is_empty(), "{name} removed");
        }
        // A trusted proxy's headers pass.
        let mut r = request(&[
            ("x-real-ip", b"203.0.113.9"),
            ("x-forwarded-host", b"a.example"),
        ]);
        apply(&mut r, &hop(true, false)).unwrap();
        assert_eq!(all(&r, "x-real-ip"), ["203.0.113.9"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["a.example"]);
    }

    #[test]
    fn a_via_naming_this_node_is_a_loop() {
        let r = request(&[
            ("via", b"1.1 edge-a, 2 edge-b (meridian)"),
            ("via", b"1.0 x"),
        ]);
        assert!(loops_through(r.headers.get_all("via"), "edge-b"));
        assert!(loops_through(r.headers.get_all("via"), "x"));
        assert!(!loops_through(r.headers.get_all("via"), "edge"));
        assert!(!loops_through(request(&[]).headers.get_all("via"), "edge"));
    }

    #[test]
    fn an_untrusted_peer_cannot_plant_a_chain_or_a_scheme() {
        let mut r = request(&[
            ("x-forwarded-for", b"6.6.6.6"),
            ("x-forwarded-proto", b"https"),
            ("forwarded", b"for=6.6.6.6"),
        ]);
        apply(&mut r, &hop(false, false)).unwrap();
        assert_eq!(all(&r, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["http"]);
        assert!(all(&r, "forwarded").is_empty());
        assert_eq!(all(&r, "via"), ["1.1 edge"]);
    }

    #[test]
    fn a_trusted_chain_is_extended_and_its_scheme_kept() {
        let mut r = request(&[
            ("x-forwarded-for", b"203.0.113.7"),
            ("x-forwarded-for", b"10.0.0.1, 10.0.0.2"),
            ("x-forwarded-proto", b"https"),
            ("via", b"1.0 a"),
            ("via", b"2 b"),
        ]);
        apply(&mut r, &hop(true, false)).unwrap();
        assert_eq!(
            all(&r, "x-forwarded-for"),
            ["203.0.113.7, 10.0.0.1, 10.0.0.2, 192.0.2.1"]
        );
        assert_eq!(all(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&r, "via"), ["1.0 a, 2 b, 1.1 edge"]);
    }

    #[test]
    fn a_chain_that_is_not_text_is_replaced_and_tls_says_https() {
        let mut r = request(&[("x-forwarded-for", b"203.0.113.\xff"), ("via", b"\xff")]);
        apply(&mut r, &hop(true, true)).unwrap();
        assert_eq!(all(&r, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&r, "via"), ["1.1 edge"]);
    }

    #[test]
    fn addresses_are_formatted_as_std_does() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "192.0.2.1",
            "255.255.255.255",
            "10.0.100.7",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_value(ip).unwrap(), ip.to_string().as_str());
        }
    }

    #[test]
    fn only_planted_headers_count_as_planted() {
        for name in SPOOFABLE.iter().chain(&["forwarded"]) {
            assert!(is_planted(name), "{name}");
        }
        for name in [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "via",
            "x-real-ipx",
        ] {
            assert!(!is_planted(name), "{name}");
        }
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// IPv4 addresses are formatted exactly as `Display` does.
            #[test]
            fn fuzz_ipv4_formatting(bits in any::<u32>()) {
                let ip = IpAddr::V4(std::net::Ipv4Addr::from(bits));
                let text = ip.to_string();
                prop_assert_eq!(address_value(ip).unwrap(), text.as_str());
            }

            /// Any incoming forwarding headers: no panic, and from an untrusted peer the
            /// backend sees exactly the peer as the chain and as `X-Real-IP`.
            #[test]
            fn fuzz_forwarding_headers(
                values in proptest::collection::vec(
                    (prop_oneof![
                        Just("x-forwarded-for"), Just("forwarded"), Just("via"),
                        Just("x-forwarded-proto"), Just("x-real-ip"), Just("true-client-ip"),
                    ], proptest::collection::vec(any::<u8>(), 0..60)),
                    0..8,
                ),
                trusted in any::<bool>(),
                tls in any::<bool>(),
            ) {
                let mut r = RequestHeader::build("GET", b"/", None).unwrap();
                for (name, v) in &values {
                    if let Ok(v) = HeaderValue::from_bytes(v) {
                        r.append_header(*name, v).unwrap();
                    }
                }
                let via = HeaderValue::from_static("1.1 edge");
                let hop = Hop {
                    peer: Some("192.0.2.1".parse().unwrap()),
                    client: Some("192.0.2.1".parse().unwrap()),
                    peer_trusted: trusted,
                    tls,
                    via: &via,
                };
                prop_assert!(apply(&mut r, &hop).is_ok());
                if !trusted {
                    prop_assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
                    prop_assert_eq!(r.headers.get("x-forwarded-for").unwrap(), "192.0.2.1");
                    prop_assert_eq!(r.headers.get("x-real-ip").unwrap(), "192.0.2.1");
                    prop_assert!(r.headers.get("true-client-ip").is_none());
                }
                let last_via = r.headers.get_all("via").iter().next_back().unwrap().to_str().unwrap().to_string();
                prop_assert!(last_via.ends_with("1.1 edge"), "{}", last_via);
            }
        }
    }
}

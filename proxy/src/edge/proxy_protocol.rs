//! PROXY protocol (v1 text and v2 binary) on the HTTP listeners, as HAProxy and cloud load
//! balancers send it: the header's source address becomes the connection's peer address,
//! which `client.rs` then treats like any socket peer. On an HTTPS listener that enables it
//! the header comes first, in the clear, and the TLS handshake follows: the wrapper reads
//! the header, then does the handshake itself (with the listener's certificate resolver),
//! as pingora's TLS listener would have.
//!
//! The header is honoured only from peers in `client.trusted_proxies`; other peers, and
//! connections whose header is malformed or slow to arrive, are closed and counted in
//! `meridian_client_header_invalid_total`. The wrapper reads exactly the header's bytes,
//! so nothing of the HTTP request is consumed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use prometheus::IntCounter;

use crate::control::instance::Instance;
use crate::request::client::is_trusted;

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// How long a client may take to send the header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take over the TLS handshake that follows the header.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection from `source`.
    Proxied {
        /// The original client.
        source: SocketAddr,
    },
    /// `UNKNOWN` (v1) or `LOCAL` (v2), e.g. the proxy's own health checks: keep the peer.
    Local,
}

/// Why a header was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a PROXY header at all.
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 header that does not parse.
    #[error("malformed PROXY v1 header: {0}")]
    V1(String),
    /// A v2 header that does not parse.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Parses a complete v1 line (`PROXY TCP4 src dst sport dport\r\n`).
pub fn parse_v1(line: &[u8]) -> Result<Header, HeaderError> {
    let bad = |why: &str| HeaderError::V1(why.to_string());
    let text = std::str::from_utf8(line).map_err(|_| bad("not ASCII"))?;
    let text = text.strip_suffix("\r\n").ok_or_else(|| bad("no CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(HeaderError::Missing);
    }
    match parts.next() {
        Some("UNKNOWN") => return Ok(Header::Local),
        Some("TCP4" | "TCP6") => {}
        other => return Err(bad(&format!("protocol {other:?}"))),
    }
    let (Some(src), Some(_dst), Some(sport), Some(_dport), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad("expected 6 fields"));
    };
    let ip: IpAddr = src.parse().map_err(|_| bad(&format!("source {src:?}")))?;
    let port: u16 = sport.parse().map_err(|_| bad(&format!("port {sport:?}")))?;
    Ok(Header::Proxied {
        source: SocketAddr::new(ip, port),
    })
}

/// Parses a v2 header: the 16-byte fixed part and the address block that follows it.
pub fn parse_v2(fixed: &[u8; 16], block: &[u8]) -> Result<Header, HeaderError> {
    if fixed[..12] != V2_SIGNATURE {
        return Err(HeaderError::Missing);
    }
    if fixed[12] >> 4 != 2 {
        return Err(HeaderError::V2("version is not 2"));
    }
    match fixed[12] & 0x0f {
        0 => return Ok(Header::Local),
        1 => {}
        _ => return Err(HeaderError::V2("unknown command")),
    }
    let source = match fixed[13] >> 4 {
        // AF_INET: src 4, dst 4, sport 2, dport 2.
        1 if block.len() >= 12 => SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(block[0], block[1], block[2], block[3])),
            u16::from_be_bytes([block[8], block[9]]),
        ),
        // AF_INET6: src 16, dst 16, sport 2, dport 2.
        2 if block.len() >= 36 => {
            let mut src = [0u8; 16];
            src.copy_from_slice(&block[..16]);
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(src)),
                u16::from_be_bytes([block[32], block[33]]),
            )
        }
        1 | 2 => return Err(HeaderError::V2("address block too short")),
        // AF_UNSPEC / AF_UNIX: no usable address.
        _ => return Ok(Header::Local),
    };
    Ok(Header::Proxied { source })
}

/// Reads exactly one PROXY header (v1 or v2) from the stream.
async fn read_header(stream: &mut Stream) -> Result<Header, HeaderError> {
    let io = |e: std::io::Error| HeaderError::V1(format!("read: {e}"));
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await.map_err(io)?;
    match first[0] {
        b'P' => {
            let mut line = Vec::with_capacity(V1_MAX);
            line.push(b'P');
            while !line.ends_with(b"\r\n") {
                if line.len() >= V1_MAX {
                    return Err(HeaderError::V1("longer than 107 bytes".into()));
                }
                stream.read_exact(&mut first).await.map_err(io)?;
                line.push(first[0]);
            }
            parse_v1(&line)
        }
        b'\r' => {
            let mut fixed = [0u8; 16];
            fixed[0] = b'\r';
            stream.read_exact(&mut fixed[1..]).await.map_err(io)?;
            if fixed[..12] != V2_SIGNATURE {
                return Err(HeaderError::Missing);
            }
            let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
            let mut block = vec![0u8; len];
            stream.read_exact(&mut block).await.map_err(io)?;
            parse_v2(&fixed, &block)
        }
        _ => Err(HeaderError::Missing),
    }
}

/// Wraps a server app (the HTTP proxy) with PROXY protocol handling.
pub struct ProxyProtocol<A> {
    inner: Arc<A>,
    inst: Arc<Instance>,
    /// Counts headers refused (untrusted peer, malformed, too slow).
    refused: IntCounter,
    /// For an HTTPS listener: the TLS acceptor the handshake after the header uses.
    tls: Option<Acceptor>,
}

impl<A> ProxyProtocol<A> {
    /// Wraps `inner` for plain HTTP listeners; headers refused count in `refused`.
    pub fn new(inner: A, inst: Arc<Instance>, refused: IntCounter) -> Self {
        ProxyProtocol {
            inner: Arc::new(inner),
            inst,
            refused,
            tls: None,
        }
    }

    /// Wraps `inner` for an HTTPS listener: after the header, a TLS handshake by `tls`.
    pub fn with_tls(inner: A, inst: Arc<Instance>, refused: IntCounter, tls: Acceptor) -> Self {
        ProxyProtocol {
            tls: Some(tls),
            ..ProxyProtocol::new(inner, inst, refused)
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ProxyProtocol<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let active = self.inst.active();
        let trusted = peer.is_some_and(|ip| is_trusted(&active.identity.trusted_proxies, ip));
        if !trusted {
            self.refused.inc();
            tracing::debug!(?peer, "PROXY protocol from an untrusted peer: closing");
            return None;
        }
        let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.refused.inc();
                tracing::debug!(?peer, error = %e, "bad PROXY header: closing");
                return None;
            }
            Err(_) => {
                self.refused.inc();
                return None;
            }
        };
        if let Header::Proxied { source } = header {
            let fd = stream
                .as_any()
                .downcast_ref::<L4Stream>()
                .map(|s| s.as_raw_fd());
            if let Some(fd) = fd {
                let digest = SocketDigest::from_raw_fd(fd);
                let _ = digest.peer_addr.set(Some(PeerAddr::Inet(source)));
                stream.set_socket_digest(digest);
            }
        }
        let stream = match &self.tls {
            None => stream,
            Some(acceptor) => {
                // The listener accepts plain TCP connections: the stream is an L4 one.
                let Ok(l4) = stream.into_any().downcast::<L4Stream>() else {
                    tracing::error!("PROXY protocol over TLS: not a TCP stream");
                    return None;
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.tls_handshake(*l4)).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(e)) => {
                        tracing::debug!(?peer, error = %e, "TLS handshake after the PROXY header failed");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 80\r\n"),
            Ok(Header::Proxied {
                source: "192.0.2.1:51234".parse().unwrap()
            })
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n"),
            Ok(Header::Proxied {
                source: "[2001:db8::1]:4000".parse().unwrap()
            })
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(Header::Local));
        assert!(matches!(
            parse_v1(b"PROXY TCP4 nope 1.1.1.1 1 2\r\n"),
            Err(HeaderError::V1(_))
        ));
        assert!(matches!(
            parse_v1(b"PROXY TCP4 1.1.1.1 1.1.1.1 1\r\n"),
            Err(HeaderError::V1(_))
        ));
        assert!(matches!(
            parse_v1(b"PROXY TCP4 1.1.1.1 1.1.1.1 99999 2\r\n"),
            Err(HeaderError::V1(_))
        ));
        assert_eq!(parse_v1(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
    }

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> ([u8; 16], Vec<u8>) {
        let mut fixed = [0u8; 16];
        fixed[..12].copy_from_slice(&V2_SIGNATURE);
        fixed[12] = 0x20 | cmd;
        fixed[13] = fam;
        fixed[14..].copy_from_slice(&(block.len() as u16).to_be_bytes());
        (fixed, block.to_vec())
    }

    #[test]
    fn v2_headers() {
        let block = [203, 0, 113, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80];
        let (f, b) = v2(1, 0x11, &block);
        assert_eq!(
            parse_v2(&f, &b),
            Ok(Header::Proxied {
                source: "203.0.113.7:8080".parse().unwrap()
            })
        );
        let mut block6 = vec![0u8; 36];
        block6[0] = 0x20;
        block6[1] = 0x01;
        block6[15] = 9;
        block6[32..34].copy_from_slice(&443u16.to_be_bytes());
        let (f, b) = v2(1, 0x21, &block6);
        assert_eq!(
            parse_v2(&f, &b),
            Ok(Header::Proxied {
                source: "[2001::9]:443".parse().unwrap()
            })
        );
        let (f, b) = v2(0, 0x00, &[]);
        assert_eq!(parse_v2(&f, &b), Ok(Header::Local));
        let (f, b) = v2(1, 0x11, &block[..5]);
        assert!(matches!(parse_v2(&f, &b), Err(HeaderError::V2(_))));
        let (mut f, b) = v2(1, 0x11, &block);
        f[12] = 0x31;
        assert!(matches!(parse_v2(&f, &b), Err(HeaderError::V2(_))));
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any line is parsed or refused; never a panic.
            #[test]
            fn fuzz_proxy_v1_arbitrary_lines(line in proptest::collection::vec(any::<u8>(), 0..120)) {
                let _ = parse_v1(&line);
            }

            /// Any v2 header and block is parsed or refused; never a panic.
            #[test]
            fn fuzz_proxy_v2_arbitrary_blocks(
                fixed in proptest::array::uniform16(any::<u8>()),
                block in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                let _ = parse_v2(&fixed, &block);
            }

            /// A well-formed v1 line names exactly the source it was written with.
            #[test]
            fn fuzz_proxy_v1_round_trip(src in any::<std::net::SocketAddrV4>(), dst in any::<std::net::SocketAddrV4>()) {
                let line = format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port());
                prop_assert_eq!(parse_v1(line.as_bytes()), Ok(Header::Proxied { source: src.into() }));
            }
        }
    }
}

//! TLS helpers of the end-to-end tests: a test CA (rcgen), rustls clients on loopback, one
//! GET over an established TLS stream (HTTP/1.1 or h2 by ALPN).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (DNS names or IPs), with `cn` as its common name.
    pub fn leaf(&self, names: &[&str], cn: &str) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A TLS connection to `addr` trusting `ca`; without `sni` the IP is the server name
/// (rustls then sends no SNI).
pub async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    ca: &Ca,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_after(addr, b"", sni, ca, alpn).await
}

/// [`connect`], sending `preamble` in the clear first (a PROXY protocol header).
pub async fn connect_after(
    addr: SocketAddr,
    preamble: &[u8],
    sni: Option<&str>,
    ca: &Ca,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(preamble).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

pub fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// The certificate the listener serves for `sni`.
pub async fn served_for(addr: SocketAddr, sni: Option<&str>, ca: &Ca) -> CertificateDer<'static> {
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        connect(addr, sni, ca, &[b"http/1.1"]),
    )
    .await
    .unwrap()
    .unwrap();
    served(&s)
}

/// A response: status, headers, body.
pub type Reply = (u16, http::HeaderMap, String);

/// One HTTP/1.1 or h2 GET over an established TLS stream.
pub async fn get(stream: TlsStream<TcpStream>, authority: &str, path: &str) -> Reply {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let req = http::Request::get(format!("https://{authority}{path}"))
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut().remove(http::header::HOST);
        tx.send_request(req).await.unwrap()
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = path.parse().unwrap();
        tx.send_request(http::Request::from_parts(parts, body))
            .await
            .unwrap()
    };
    assert_eq!(resp.version() == http::Version::HTTP_2, h2);
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).to_string(),
    )
}

//! Polling one peer: a kept-alive HTTP/1.1 connection to its mesh endpoint (TLS with
//! `[mesh.tls]`), `If-None-Match` with the last `ETag`, and the answer's signature checked
//! before its document is believed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::auth::{Key, ANSWER_HEADER, REQUEST_HEADER};
use crate::server::STATE_PATH;
use crate::state::NodeState;

/// The largest document accepted.
const MAX_DOCUMENT: usize = 8 << 20;

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// No connection.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed.
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// HTTP failed (reset, malformed answer).
    #[error("http: {0}")]
    Http(String),
    /// The peer refused our credentials.
    #[error("the peer refused this instance's mesh secret")]
    Unauthorized,
    /// An answer that is not signed with the shared secret.
    #[error("the answer's signature does not match the mesh secret")]
    BadSignature,
    /// Another status.
    #[error("status {0}")]
    Status(u16),
    /// A document that does not parse.
    #[error("bad document: {0}")]
    Document(String),
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// What a poll brought.
#[derive(Debug)]
pub enum Polled {
    /// A new document.
    New(Arc<NodeState>),
    /// The document did not change since the last poll.
    Unchanged,
}

/// The TLS side of a peer connection.
#[derive(Clone)]
pub struct ClientTls {
    /// The connector (mesh CA as roots, this instance's certificate).
    pub connector: TlsConnector,
}

/// One peer's poller.
pub struct PeerClient {
    addr: SocketAddr,
    name: String,
    tls: Option<ClientTls>,
    key: Option<Key>,
    conn: Option<SendRequest<Empty<Bytes>>>,
    etag: Option<String>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PeerClient {
    /// A poller of the peer `name` whose mesh endpoint is `addr`.
    pub fn new(name: &str, addr: SocketAddr, tls: Option<ClientTls>, key: Option<Key>) -> Self {
        PeerClient {
            addr,
            name: name.to_string(),
            tls,
            key,
            conn: None,
            etag: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, PollError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(PollError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let handshake = |e: hyper::Error| PollError::Http(e.to_string());
        match &self.tls {
            None => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(handshake)?;
                tokio::spawn(conn);
                Ok(send)
            }
            Some(tls) => {
                let name = ServerName::try_from(self.name.clone())
                    .map_err(|e| PollError::Tls(std::io::Error::other(e.to_string())))?;
                let stream = tls
                    .connector
                    .connect(name, tcp)
                    .await
                    .map_err(PollError::Tls)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake)?;
                tokio::spawn(conn);
                Ok(send)
            }
        }
    }

    /// Polls the peer once, as `from`, within `timeout`.
    pub async fn poll(&mut self, from: &str, timeout: Duration) -> Result<Polled, PollError> {
        match tokio::time::timeout(timeout, self.poll_once(from)).await {
            Ok(r) => {
                if r.is_err() {
                    self.conn = None;
                }
                r
            }
            Err(_) => {
                self.conn = None;
                Err(PollError::Timeout(timeout))
            }
        }
    }

    async fn poll_once(&mut self, from: &str) -> Result<Polled, PollError> {
        let mut send = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        send.ready()
            .await
            .map_err(|e| PollError::Http(e.to_string()))?;
        let unix = now_unix();
        let mut req = Request::get(STATE_PATH).header(http::header::HOST, self.addr.to_string());
        if let Some(key) = &self.key {
            req = req.header(REQUEST_HEADER, key.request(from, STATE_PATH, unix));
        }
        if let Some(etag) = &self.etag {
            req = req.header(http::header::IF_NONE_MATCH, etag.as_str());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| PollError::Http(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| PollError::Http(e.to_string()))?;
        let status = resp.status();
        let signature = resp
            .headers()
            .get(ANSWER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let etag = resp
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| PollError::Http(e.to_string()))?
            .to_bytes();
        // The connection served: keep it for the next poll.
        self.conn = Some(send);
        if status == StatusCode::UNAUTHORIZED {
            return Err(PollError::Unauthorized);
        }
        if let Some(key) = &self.key {
            let ok = signature.is_some_and(|s| key.verify_answer(&s, unix, status.as_u16(), &body));
            if !ok {
                return Err(PollError::BadSignature);
            }
        }
        match status {
            StatusCode::NOT_MODIFIED => Ok(Polled::Unchanged),
            StatusCode::OK => {
                let doc: NodeState = serde_json::from_slice(&body)
                    .map_err(|e| PollError::Document(e.to_string()))?;
                self.etag = etag;
                Ok(Polled::New(Arc::new(doc)))
            }
            other => Err(PollError::Status(other.as_u16())),
        }
    }
}

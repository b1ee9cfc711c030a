//! The mesh endpoint: `GET /mesh/v1/state` on a listener of its own, answering with this
//! instance's document (`ETag`/`If-None-Match`: `304` when nothing changed), to callers
//! that prove the shared secret (and, with `[mesh.tls]`, a certificate from the mesh CA).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::{Key, ANSWER_HEADER, REQUEST_HEADER};

/// The path of the state document.
pub const STATE_PATH: &str = "/mesh/v1/state";
/// Connections served at once; more wait for a place.
const MAX_CONNECTIONS: usize = 1024;
/// How long a request header may take.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The document currently served.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The JSON body.
    pub body: Bytes,
    /// Its entity tag (a digest of the body).
    pub etag: String,
}

impl Published {
    /// The document of `body`.
    pub fn new(body: Vec<u8>) -> Self {
        let etag = format!("\"{:016x}\"", fnv1a(&body));
        Published {
            body: Bytes::from(body),
            etag,
        }
    }
}

/// FNV-1a, 64 bit.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Binds the mesh listener with `SO_REUSEPORT`, so that a new process started by a
/// graceful upgrade can listen beside the old one.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn answer(status: StatusCode, body: Bytes, key: Option<&Key>, unix: u64) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.clone()));
    *resp.status_mut() = status;
    if let Some(key) = key {
        if let Ok(v) = key.answer(unix, status.as_u16(), &body).parse() {
            resp.headers_mut().insert(ANSWER_HEADER, v);
        }
    }
    resp
}

/// Answers one request.
fn handle(
    req: &Request<Incoming>,
    published: &Published,
    key: Option<&Key>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != STATE_PATH || req.method() != http::Method::GET {
        return answer(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"not found\n"),
            None,
            0,
        );
    }
    let mut unix = 0;
    if let Some(key) = key {
        let given = req
            .headers()
            .get(REQUEST_HEADER)
            .and_then(|v| v.to_str().ok());
        match given.and_then(|h| key.verify_request(h, STATE_PATH, now_unix())) {
            Some((_, at)) => unix = at,
            None => {
                return answer(
                    StatusCode::UNAUTHORIZED,
                    Bytes::from_static(b"unauthorized\n"),
                    None,
                    0,
                )
            }
        }
    }
    let unchanged = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == published.etag.as_bytes());
    let mut resp = if unchanged {
        answer(StatusCode::NOT_MODIFIED, Bytes::new(), key, unix)
    } else {
        answer(StatusCode::OK, published.body.clone(), key, unix)
    };
    if let Ok(v) = published.etag.parse() {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

/// A stream that counts the bytes that cross it.
struct Counting<S> {
    inner: S,
    bytes: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves the mesh endpoint on `listener` until `shutdown` turns true; the bytes its
/// connections carry (both ways, TLS included) are added to `bytes`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    key: Option<Key>,
    published: Arc<ArcSwap<Published>>,
    bytes: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "mesh listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let (tls, key, published) = (tls.clone(), key.clone(), published.clone());
        let mut stop = shutdown.clone();
        let stream = Counting {
            inner: stream,
            bytes: bytes.clone(),
        };
        tokio::spawn(async move {
            let _place = place;
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = handle(&req, &published.load(), key.as_ref());
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let serving = async {
                match tls {
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => http.serve_connection(TokioIo::new(tls), service).await,
                            _ => {
                                tracing::debug!(%peer, "mesh listener: TLS handshake failed");
                                Ok(())
                            }
                        }
                    }
                }
            };
            // A stopping instance leaves the mesh at once: its kept-alive connections
            // close with it, so peers stop hearing from it (and, after an upgrade, reach
            // the new process).
            let served = tokio::select! {
                s = serving => s,
                _ = stop.changed() => Ok(()),
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "mesh connection ended");
            }
        });
    }
}

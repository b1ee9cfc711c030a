//! A real gRPC backend and client for the end-to-end tests, with tonic and prost (messages
//! declared with prost's derive, no code generation): the service `test.Echo` with a unary
//! and a server-streaming method, and `grpc.health.v1.Health` from tonic-health, served by
//! hyper over h2c or TLS (ALPN `h2`). The backend counts calls and the connections that
//! carried them, can answer `UNAVAILABLE`, and can be killed (listener and connections).

#![allow(dead_code)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::{Grpc, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_health::server::HealthReporter;
use tonic_prost::ProstCodec;
use tower_service::Service as _;

/// `test.EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// Echoed back; `"fail:N"` answers gRPC status N.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Messages a stream sends.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Milliseconds before answering (and between streamed messages).
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
}

/// `test.EchoReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
    /// The backend's name.
    #[prost(string, tag = "2")]
    pub server: String,
    /// The `grpc-timeout` the backend received ("" if none).
    #[prost(string, tag = "3")]
    pub grpc_timeout: String,
}

pub const UNARY: &str = "/test.Echo/Unary";
pub const STREAM: &str = "/test.Echo/Stream";

/// State shared by the serving tasks and the handle.
struct Shared {
    name: String,
    calls: AtomicU64,
    unavailable: AtomicBool,
    /// Connections (by accept order) that carried a `test.Echo` call.
    echo_conns: Mutex<HashSet<u64>>,
}

/// A running gRPC backend.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub health: HealthReporter,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl GrpcBackend {
    /// `test.Echo` calls received.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Connections that carried at least one `test.Echo` call.
    pub fn echo_connections(&self) -> usize {
        self.shared.echo_conns.lock().unwrap().len()
    }

    /// While set, every `test.Echo` call is answered `UNAVAILABLE` (trailers-only).
    pub fn set_unavailable(&self, on: bool) {
        self.shared.unavailable.store(on, Ordering::SeqCst);
    }

    /// Stops accepting and drops every connection at once.
    pub fn kill(&self) {
        self.stop.send_replace(true);
    }
}

/// Serves on loopback; with `tls` (certificate chain and key, PEM) over TLS with ALPN `h2`.
pub async fn start(name: &str, tls: Option<(&str, &str)>) -> GrpcBackend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health
        .set_service_status("test.Echo", tonic_health::ServingStatus::Serving)
        .await;
    let shared = Arc::new(Shared {
        name: name.to_string(),
        calls: AtomicU64::new(0),
        unavailable: AtomicBool::new(false),
        echo_conns: Mutex::new(HashSet::new()),
    });
    let acceptor = tls.map(|(cert, key)| tls_acceptor(cert, key));
    let (stop, stopped) = watch::channel(false);
    let s = shared.clone();
    tokio::spawn(async move {
        let mut conn_id = 0u64;
        let mut stop_accept = stopped.clone();
        loop {
            let (tcp, _) = tokio::select! {
                r = l.accept() => match r { Ok(a) => a, Err(_) => continue },
                _ = stop_accept.wait_for(|s| *s) => return,
            };
            conn_id += 1;
            let id = conn_id;
            let (s, health_svc, acceptor) = (s.clone(), health_svc.clone(), acceptor.clone());
            let mut stop_conn = stopped.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (s, mut health_svc) = (s.clone(), health_svc.clone());
                    async move {
                        let req = req.map(tonic::body::Body::new);
                        let path = req.uri().path().to_string();
                        let resp = if path.starts_with("/grpc.health.v1.Health/") {
                            health_svc.call(req).await.unwrap_or_else(|e| match e {})
                        } else {
                            s.echo_conns.lock().unwrap().insert(id);
                            s.calls.fetch_add(1, Ordering::SeqCst);
                            echo(s, req).await
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                        tokio::select! {
                            _ = conn => {}
                            _ = stop_conn.wait_for(|s| *s) => {}
                        }
                    }
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), svc);
                        tokio::select! {
                            _ = conn => {}
                            _ = stop_conn.wait_for(|s| *s) => {}
                        }
                    }
                }
            });
        }
    });
    GrpcBackend {
        addr,
        health,
        shared,
        stop,
    }
}

fn tls_acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

async fn echo(
    s: Arc<Shared>,
    req: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let mut grpc = Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
    match req.uri().path() {
        UNARY => grpc.unary(Echo(s), req).await,
        STREAM => grpc.server_streaming(Echo(s), req).await,
        _ => Status::unimplemented("no such method").into_http(),
    }
}

#[derive(Clone)]
struct Echo(Arc<Shared>);

impl Echo {
    /// The answer to `req`, or the status it asks for.
    fn check(&self, req: &Request<EchoRequest>) -> Result<(EchoRequest, String), Status> {
        if self.0.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable(format!("{} is draining", self.0.name)));
        }
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let msg = req.get_ref().clone();
        if let Some(code) = msg.text.strip_prefix("fail:") {
            let code = tonic::Code::from(code.parse::<i32>().unwrap_or(2));
            return Err(Status::new(
                code,
                format!("asked to fail by {}", self.0.name),
            ));
        }
        Ok((msg, timeout))
    }
}

impl UnaryService<EchoRequest> for Echo {
    type Response = EchoReply;
    type Future = BoxFut<Result<Response<EchoReply>, Status>>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (msg, grpc_timeout) = this.check(&req)?;
            tokio::time::sleep(Duration::from_millis(msg.delay_ms)).await;
            Ok(Response::new(EchoReply {
                text: msg.text,
                server: this.0.name.clone(),
                grpc_timeout,
            }))
        })
    }
}

impl ServerStreamingService<EchoRequest> for Echo {
    type Response = EchoReply;
    type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;
    type Future = BoxFut<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (msg, grpc_timeout) = this.check(&req)?;
            let server = this.0.name.clone();
            let stream = futures_util::stream::unfold(0u32, move |i| {
                let (msg, server, grpc_timeout) =
                    (msg.clone(), server.clone(), grpc_timeout.clone());
                async move {
                    if i >= msg.count {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(msg.delay_ms)).await;
                    }
                    let reply = EchoReply {
                        text: format!("{} {i}", msg.text),
                        server,
                        grpc_timeout,
                    };
                    Some((Ok(reply), i + 1))
                }
            });
            Ok(Response::new(Box::pin(stream) as Self::ResponseStream))
        })
    }
}

/// A gRPC client over `channel`.
pub struct Client {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl Client {
    /// An h2c client for `http://addr`.
    pub async fn h2c(addr: SocketAddr) -> Client {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Client::new(channel)
    }

    pub fn new(channel: tonic::transport::Channel) -> Client {
        Client {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// `test.Echo/Unary`, with `grpc-timeout: timeout` sent as plain metadata (the client
    /// itself enforces no deadline).
    pub async fn unary(
        &mut self,
        text: &str,
        delay_ms: u64,
        timeout: Option<&str>,
    ) -> Result<EchoReply, Status> {
        let mut req = Request::new(EchoRequest {
            text: text.to_string(),
            count: 1,
            delay_ms,
        });
        if let Some(t) = timeout {
            req.metadata_mut()
                .insert("grpc-timeout", t.parse().unwrap());
        }
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = ProstCodec::<EchoRequest, EchoReply>::default();
        self.grpc
            .unary(req, PathAndQuery::from_static(UNARY), codec)
            .await
            .map(Response::into_inner)
    }

    /// `test.Echo/Stream`: every message, then the trailers.
    pub async fn stream(
        &mut self,
        text: &str,
        count: u32,
        delay_ms: u64,
    ) -> Result<(Vec<EchoReply>, tonic::metadata::MetadataMap), Status> {
        let req = Request::new(EchoRequest {
            text: text.to_string(),
            count,
            delay_ms,
        });
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = ProstCodec::<EchoRequest, EchoReply>::default();
        let mut stream = self
            .grpc
            .server_streaming(req, PathAndQuery::from_static(STREAM), codec)
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.message().await? {
            out.push(m);
        }
        let trailers = stream.trailers().await?.unwrap_or_default();
        Ok((out, trailers))
    }
}

/// What a raw HTTP/2 call got: the header block and the trailers (if any).
pub struct RawAnswer {
    pub headers: http::HeaderMap,
    pub trailers: Option<http::HeaderMap>,
}

impl RawAnswer {
    /// `grpc-status` from the trailers, or from a trailers-only header block.
    pub fn grpc_status(&self) -> Option<String> {
        let of = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string())
        };
        self.trailers
            .as_ref()
            .and_then(of)
            .or_else(|| of(&self.headers))
    }

    pub fn grpc_message(&self) -> String {
        let of = |h: &http::HeaderMap| {
            h.get("grpc-message")
                .map(|v| v.to_str().unwrap().to_string())
        };
        self.trailers
            .as_ref()
            .and_then(of)
            .or_else(|| of(&self.headers))
            .unwrap_or_default()
    }
}

/// `test.Echo/Unary` with a bare HTTP/2 (h2c) client that enforces no deadline of its own:
/// `grpc-timeout` is only a header here.
pub async fn raw_unary(addr: SocketAddr, text: &str, delay_ms: u64, timeout: &str) -> RawAnswer {
    use http_body_util::BodyExt;
    use prost::Message as _;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let msg = EchoRequest {
        text: text.to_string(),
        count: 1,
        delay_ms,
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = http::Request::post(format!("http://{addr}{UNARY}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the answer ends within 20 s")
        .unwrap();
    RawAnswer {
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
    }
}

// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The abstraction and implementation interface for service application logic

pub mod http_app;

use crate::server::ShutdownWatch;
use async_trait::async_trait;
use bytes::BytesMut;
use log::{debug, error};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::protocols::http::v2::server;
use crate::protocols::http::{ReusableHttpStream, ServerSession};
use crate::protocols::Digest;
use crate::protocols::Stream;
use crate::protocols::ALPN;

// https://datatracker.ietf.org/doc/html/rfc9113#section-3.4
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
/// This trait defines the interface of a transport layer (TCP or TLS) application.
pub trait ServerApp {
    /// Whenever a new connection is established, this function will be called with the established
    /// [`Stream`] object provided.
    ///
    /// The application can do whatever it wants with the `session`.
    ///
    /// After processing the `session`, if the `session`'s connection is reusable, This function
    /// can return it to the service by returning `Some(session)`. The returned `session` will be
    /// fed to another [`Self::process_new()`] for another round of processing.
    /// If not reusable, `None` should be returned.
    ///
    /// The `shutdown` argument will change from `false` to `true` when the server receives a
    /// signal to shutdown. This argument allows the application to react accordingly.
    async fn process_new(
        self: &Arc<Self>,
        mut session: Stream,
        // TODO: make this ShutdownWatch so that all task can await on this event
        shutdown: &ShutdownWatch,
    ) -> Option<Stream>;

    /// This callback will be called once after the service stops listening to its endpoints.
    async fn cleanup(&self) {}
}
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
/// HTTP Server options that control how the server handles some transport types.
pub struct HttpServerOptions {
    /// Allow HTTP/2 for plaintext.
    pub h2c: bool,

    /// Allow proxying CONNECT requests when handling HTTP traffic.
    ///
    /// When disabled, CONNECT requests are rejected with 405 by proxy services.
    pub allow_connect_method_proxying: bool,

    #[doc(hidden)]
    pub force_custom: bool,

    /// Maximum number of requests that this connection will handle. This is
    /// equivalent to [Nginx's keepalive requests](https://nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive_requests)
    /// which says:
    ///
    /// > Closing connections periodically is necessary to free per-connection
    /// > memory allocations. Therefore, using too high maximum number of
    /// > requests could result in excessive memory usage and not recommended.
    ///
    /// Unlike nginx, the default behavior here is _no limit_.
    pub keepalive_request_limit: Option<u32>,

    /// If set, close a downstream HTTP/2 connection that has been idle
    /// for this duration.
    ///
    /// Default: `None`
    pub h2_idle_timeout: Option<Duration>,

    /// How long a new connection may stay silent before its first request begins: the
    /// wait for the first request byte on HTTP/1, the h2c preface detection on plaintext
    /// listeners with `h2c`, and the HTTP/2 handshake. A connection that sends nothing
    /// within it is closed.
    ///
    /// Default: `None` (60 seconds for the first HTTP/1 request, as before; no limit for
    /// the h2c detection and the HTTP/2 handshake).
    pub first_byte_timeout: Option<Duration>,

    /// The longest an HTTP/1 request header may take to arrive once its first byte has
    /// been received, however slowly it trickles in (nginx's `client_header_timeout`,
    /// HAProxy's `timeout http-request`). Past it the request is answered `408` and the
    /// connection closed.
    ///
    /// Default: `None` (only the per-read timeout applies).
    pub header_timeout: Option<Duration>,

    /// The largest HTTP/1 request header accepted; a larger one is answered `431` and the
    /// connection closed.
    ///
    /// Default: `None` (1 MiB).
    pub max_header_size: Option<usize>,

    /// Parse HTTP/1 request headers without keeping the case of their names: one header
    /// map per request instead of two, and the upstream response to such a request is
    /// parsed the same way. The names are then written in lower case to HTTP/1 peers in
    /// both directions (the well-known ones, such as `Host` and `Content-Length`, in their
    /// usual spelling), as HAProxy and Envoy do by default and as HTTP/2 requires.
    ///
    /// Default: `false` (names keep their case).
    pub lower_case_headers: bool,
}

impl HttpServerOptions {
    /// Applies the request-header limits and header-name case to a new HTTP/1 session.
    fn apply_header_limits(&self, session: &mut ServerSession) {
        session.set_request_header_limits(self.header_timeout, self.max_header_size);
        if self.lower_case_headers {
            session.set_keep_header_case(false);
        }
    }
}

/// Tells an HTTP/2 prior-knowledge preface from HTTP/1 on a plaintext connection by reading
/// only up to the first byte that differs from the preface, so an HTTP/1 request shorter
/// than the 24-byte preface is served, not waited on forever. Returns `Some(true)` for h2c
/// (or when the stream cannot peek), `Some(false)` for HTTP/1, and `None` when the
/// connection closed or failed, stayed silent past `deadline`, or the server is shutting
/// down.
async fn sniff_h2c(
    stream: &mut Stream,
    deadline: Option<Duration>,
    shutdown: &ShutdownWatch,
) -> Option<bool> {
    let sniff = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        for n in 1..=H2_PREFACE.len() {
            match stream.try_peek(&mut buf[..n]).await {
                // Not all streams support peeking: keep h2c, as configured.
                Ok(false) => return Some(true),
                Ok(true) if buf[..n] != H2_PREFACE[..n] => return Some(false),
                Ok(true) => {}
                Err(e) => {
                    // this error is normal when h1 reuse and close the connection
                    debug!("Read error while peeking h2c preface {e}");
                    return None;
                }
            }
        }
        Some(true)
    };
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        return None;
    }
    tokio::select! {
        r = async {
            match deadline {
                Some(d) => pingora_timeout::timeout(d, sniff).await.unwrap_or_else(|_| {
                    debug!("no request within {d:?} on a new connection: closing");
                    None
                }),
                None => sniff.await,
            }
        } => r,
        _ = shutdown.changed() => None,
    }
}

/// What [`wait_for_next_request`] saw on an idle keep-alive connection.
enum NextRequest {
    /// The first bytes of the next request.
    Bytes(BytesMut),
    /// The stream cannot be waited on this way: let the session read it.
    ReadAsUsual,
    /// The client closed, an error, the keep-alive timeout, or the server is shutting down.
    Closed,
}

/// Waits for the next request on a kept-alive HTTP/1 connection without a session, request
/// future or header buffer: an idle connection holds only its stream (without its L4 buffers,
/// given back when the wait ends) and this small state. The bytes that arrive are read into a buffer of their size, which the next session
/// parses first (as a pipelined prefix). The keep-alive timeout and shutdown close the
/// connection as the session's own header read would.
async fn wait_for_next_request(
    stream: &mut Stream,
    settings: &Option<HttpPersistentSettings>,
    shutdown: &ShutdownWatch,
) -> NextRequest {
    let Some(settings) = settings else {
        return NextRequest::ReadAsUsual;
    };
    let Some(keepalive) = settings.keepalive_timeout else {
        return NextRequest::ReadAsUsual;
    };
    if settings
        .pipelined_prefix
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return NextRequest::ReadAsUsual;
    }
    let Some(l4) = stream
        .as_any_mut()
        .downcast_mut::<crate::protocols::l4::stream::Stream>()
    else {
        return NextRequest::ReadAsUsual;
    };
    // The stream's L4 buffers are freed while it waits, and given back for the session.
    let buffers = l4.release_idle_buffers();
    let next = if keepalive == 0 {
        wait_idle(l4, shutdown).await
    } else {
        match pingora_timeout::timeout(Duration::from_secs(keepalive), wait_idle(l4, shutdown))
            .await
        {
            Ok(next) => next,
            Err(_) => {
                debug!("keepalive timeout {keepalive}s reached");
                NextRequest::Closed
            }
        }
    };
    if let Some(buffers) = buffers {
        l4.restore_buffers(buffers);
    }
    next
}

/// Waits for the first bytes of the next request or a shutdown, whichever comes first. The
/// two waits are futures of their own, built in place by `select!`: named futures moved
/// into an async block would keep their room in it (and in its caller) while it waits.
async fn wait_idle(
    l4: &mut crate::protocols::l4::stream::Stream,
    shutdown: &ShutdownWatch,
) -> NextRequest {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        biased;
        next = read_next_request(l4) => next,
        _ = shut_down(&mut shutdown) => NextRequest::Closed,
    }
}

/// Reads the first bytes that arrive, without holding a buffer while waiting for them.
async fn read_next_request(l4: &mut crate::protocols::l4::stream::Stream) -> NextRequest {
    loop {
        match l4.wait_readable().await {
            None => return NextRequest::ReadAsUsual,
            Some(Err(_)) => return NextRequest::Closed,
            Some(Ok(())) => {}
        }
        // On the stack of this poll only, not in the future: nothing is held while idle.
        let mut buf = [0u8; 2048];
        match l4.try_read_ready(&mut buf) {
            Ok(0) => return NextRequest::Closed,
            Ok(n) => return NextRequest::Bytes(BytesMut::from(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return NextRequest::Closed,
        }
    }
}

/// Resolves when the server starts shutting down.
async fn shut_down(shutdown: &mut ShutdownWatch) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            // the server is gone: nothing will tell us about a shutdown any more
            std::future::pending::<()>().await;
        }
    }
}

/// Settings persisted across HTTP/1.x keepalive requests on the same downstream connection.
///
/// In addition to framework-managed keepalive parameters, this struct can carry an optional
/// user-defined context via [`set_user_context`](Self::set_user_context). The proxy layer
/// populates this through `ProxyHttp::persist_connection_context`
/// and delivers it to the next request through `ProxyHttp::on_connection_reuse`.
///
/// Also carries pipelined-prefix bytes when the caller has opted into HTTP/1.1
/// pipelining on the previous session. See
/// [`Self::set_pipelined_prefix`] and the
/// [`HttpSession::set_pipelining_enabled`](crate::protocols::http::v1::server::HttpSession::set_pipelining_enabled)
/// docs for the RFC 9112 §9.3.2 semantics.
#[derive(Debug)]
pub struct HttpPersistentSettings {
    keepalive_timeout: Option<u64>,
    keepalive_reuses_remaining: Option<u32>,
    /// User-defined context to carry to the next request on this connection.
    user_context: Option<Box<dyn Any + Send + Sync>>,
    /// Bytes read past the end of the previous request's body, to be parsed
    /// as the next pipelined request on the reused connection.
    pipelined_prefix: Option<BytesMut>,
    /// Whether HTTP/1.1 pipelining was enabled on the previous session;
    /// propagates to the next session so the proxy-level opt-in sticks
    /// across keepalive reuses without the adopter having to re-enable
    /// it on every request.
    pipelining_enabled: bool,
}

impl HttpPersistentSettings {
    pub fn for_session(session: &ServerSession) -> Self {
        HttpPersistentSettings {
            keepalive_timeout: session.get_keepalive(),
            keepalive_reuses_remaining: session.get_keepalive_reuses_remaining(),
            user_context: None,
            pipelined_prefix: None,
            pipelining_enabled: session.pipelining_enabled(),
        }
    }

    /// Set a user-defined context to be carried to the next request on this connection.
    pub fn set_user_context(&mut self, ctx: Box<dyn Any + Send + Sync>) {
        self.user_context = Some(ctx);
    }

    /// Take the user-defined context, if any.
    pub fn take_user_context(&mut self) -> Option<Box<dyn Any + Send + Sync>> {
        self.user_context.take()
    }

    /// Set pipelined-prefix bytes to be fed to the next session on this
    /// connection. Called by the proxy layer when HTTP/1.1 pipelining is
    /// enabled on the current session and overread bytes were present at
    /// reuse time.
    pub fn set_pipelined_prefix(&mut self, prefix: BytesMut) {
        self.pipelined_prefix = Some(prefix);
    }

    pub fn apply_to_session(self, session: &mut ServerSession) {
        let Self {
            keepalive_timeout,
            mut keepalive_reuses_remaining,
            user_context,
            pipelined_prefix,
            pipelining_enabled,
        } = self;

        // Reduce the number of times the connection for this session can be
        // reused by one. A session with reuse count of zero won't be reused
        if let Some(reuses) = keepalive_reuses_remaining.as_mut() {
            *reuses = reuses.saturating_sub(1);
        }

        session.set_keepalive(keepalive_timeout);
        session.set_keepalive_reuses_remaining(keepalive_reuses_remaining);

        // Carry user context into the session for the proxy layer to consume
        session.set_connection_user_context(user_context);

        // Replay pipelining opt-in so it stays on across keepalive reuses.
        session.set_pipelining_enabled(pipelining_enabled);

        // Feed any pipelined prefix bytes to the new session's request parser
        // so they are treated as the start of the next request.
        if let Some(prefix) = pipelined_prefix {
            session.set_pipelined_prefix(prefix);
        }
    }
}

#[derive(Debug)]
pub struct ReusedHttpStream {
    stream: Stream,
    persistent_settings: Option<HttpPersistentSettings>,
}

impl ReusedHttpStream {
    pub fn new(stream: Stream, persistent_settings: Option<HttpPersistentSettings>) -> Self {
        ReusedHttpStream {
            stream,
            persistent_settings,
        }
    }

    /// Build a reusable HTTP stream from a finished session, preserving any
    /// pipelined prefix bytes in the persistent settings for the next request.
    pub fn from_reusable_stream(
        reusable: ReusableHttpStream,
        mut persistent_settings: HttpPersistentSettings,
    ) -> Self {
        let (stream, pipelined_prefix) = reusable.into_parts();
        if let Some(prefix) = pipelined_prefix {
            persistent_settings.set_pipelined_prefix(prefix);
        }
        Self::new(stream, Some(persistent_settings))
    }

    pub fn consume(self) -> (Stream, Option<HttpPersistentSettings>) {
        (self.stream, self.persistent_settings)
    }
}

/// This trait defines the interface of an HTTP application.
#[async_trait]
pub trait HttpServerApp {
    /// Similar to the [`ServerApp`], this function is called whenever a new HTTP session is established.
    ///
    /// After successful processing, [`ServerSession::finish()`] can be
    /// called to return an optionally reusable connection back to the service.
    /// The caller needs to make sure that the connection is in a reusable state
    /// i.e., no error or incomplete read or write headers or bodies. Otherwise
    /// a `None` should be returned.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        // TODO: make this ShutdownWatch so that all task can await on this event
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream>;

    /// Provide options on how HTTP/2 connection should be established. This function will be called
    /// every time a new HTTP/2 **connection** needs to be established.
    ///
    /// A `None` means to use the built-in default options. See [`server::H2Options`] for more details.
    fn h2_options(&self) -> Option<server::H2Options> {
        None
    }

    /// Provide HTTP server options used to override default behavior. This function will be called
    /// every time a new connection is processed.
    ///
    /// A `None` means no server options will be applied.
    fn server_options(&self) -> Option<&HttpServerOptions> {
        None
    }

    async fn http_cleanup(&self) {}

    #[doc(hidden)]
    async fn process_custom_session(
        self: Arc<Self>,
        _stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        None
    }
}

/// Serves an HTTP/2 connection. Its own (boxed) future, so that the state of an HTTP/1
/// connection (held for as long as the connection is open, idle ones included) does not
/// carry the HTTP/2 handshake and accept loop.
async fn serve_h2<T>(app: &Arc<T>, stream: Stream, shutdown: &ShutdownWatch)
where
    T: HttpServerApp + Send + Sync + 'static,
{
    // create a shared connection digest
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        // TODO: log h2 handshake time
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });

    let h2_options = app.h2_options();
    let handshake = server::handshake(stream, h2_options);
    let handshake = match app.server_options().and_then(|o| o.first_byte_timeout) {
        Some(d) => match pingora_timeout::timeout(d, handshake).await {
            Ok(r) => r,
            Err(_) => {
                debug!("H2 handshake not done within {d:?}: closing");
                return;
            }
        },
        None => handshake.await,
    };
    let h2_conn = match handshake {
        Err(e) => {
            error!("H2 handshake error {e}");
            return;
        }
        Ok(c) => c,
    };

    // The accept-loop body — including the graceful-shutdown state
    // machine — lives in `server::accept_downstream_sessions` so that
    // the same code path is exercised by tests in `protocols::http::v2`.
    let app = app.clone();
    let shutdown_for_session = shutdown.clone();
    let h2_idle_timeout = app.server_options().and_then(|o| o.h2_idle_timeout);
    server::accept_downstream_sessions(
        h2_conn,
        digest,
        shutdown.clone(),
        h2_idle_timeout,
        |h2_stream, guard| {
            let app = app.clone();
            let shutdown = shutdown_for_session.clone();
            pingora_runtime::current_handle().spawn(async move {
                // hold `guard` for the session's lifetime so the accept
                // loop's idle timeout sees this connection as busy.
                let _guard = guard;
                // Note, `PersistentSettings` not currently relevant for h2
                app.process_new_http(ServerSession::new_http2(h2_stream), &shutdown)
                    .await;
            });
        },
    )
    .await;
}

#[async_trait]
impl<T> ServerApp for T
where
    T: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut h2c = self.server_options().as_ref().map_or(false, |o| o.h2c);
        let custom = self
            .server_options()
            .as_ref()
            .map_or(false, |o| o.force_custom);

        // h2c is for cleartext connections; on TLS, ALPN handles protocol negotiation.
        // Otherwise, h2c stays true on TLS streams, forcing HTTP/1.1 clients into HTTP/2
        if stream.get_ssl_digest().is_some() {
            h2c = false;
        }
        // tell the h2 preface from HTTP/1 by the first differing byte
        else if h2c && !custom {
            let first_byte = self.server_options().and_then(|o| o.first_byte_timeout);
            h2c = sniff_h2c(&mut stream, first_byte, shutdown).await?;
        }
        if h2c || matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            Box::pin(serve_h2(self, stream, shutdown)).await;
        } else if custom || matches!(stream.selected_alpn_proto(), Some(ALPN::Custom(_))) {
            return self.clone().process_custom_session(stream, shutdown).await;
        } else {
            // No ALPN or ALPN::H1 and h2c was not configured, fallback to HTTP/1.1
            // The session is built in a block that ends before the request future is awaited,
            // so that this (per connection, long-lived) future does not keep room for it.
            let first = {
                let mut session = ServerSession::new_http1(stream);
                let options = self.server_options();
                if *shutdown.borrow() {
                    // stop downstream from reusing if this service is shutting down soon
                    session.set_keepalive(None);
                } else {
                    // default 60s
                    let first_byte = options
                        .and_then(|o| o.first_byte_timeout)
                        .map_or(60, |d| d.as_secs().max(1));
                    session.set_keepalive(Some(first_byte));
                }
                session.set_keepalive_reuses_remaining(
                    options.and_then(|opts| opts.keepalive_request_limit),
                );
                if let Some(o) = options {
                    o.apply_header_limits(&mut session);
                }
                self.process_new_http(session, shutdown)
            };
            let mut result = first.await;
            while let Some((mut stream, persistent_settings)) = result.map(|r| r.consume()) {
                // Wait for the next request here, in this small state, rather than inside a
                // new session's (much larger) request future with its header buffer; the
                // stream's own L4 buffers are freed meanwhile.
                let next = wait_for_next_request(&mut stream, &persistent_settings, shutdown).await;
                let first_bytes = match next {
                    NextRequest::Bytes(bytes) => Some(bytes),
                    NextRequest::ReadAsUsual => None,
                    NextRequest::Closed => return None,
                };
                let next = {
                    let mut session = ServerSession::new_http1(stream);
                    if let Some(persistent_settings) = persistent_settings {
                        persistent_settings.apply_to_session(&mut session);
                    }
                    if let Some(bytes) = first_bytes {
                        session.set_pipelined_prefix(bytes);
                    }
                    if let Some(o) = self.server_options() {
                        o.apply_header_limits(&mut session);
                    }
                    self.process_new_http(session, shutdown)
                };
                result = next.await;
            }
        }
        None
    }

    async fn cleanup(&self) {
        self.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::io::Builder;

    /// A connected pair: the server side as a pingora stream, and the client socket.
    async fn tcp_pair() -> (Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let server: crate::protocols::l4::stream::Stream = server.into();
        (Box::new(server), client)
    }

    fn kept_alive(seconds: u64) -> Option<HttpPersistentSettings> {
        let mut session = ServerSession::new_http1(Box::new(Builder::new().build()));
        session.set_keepalive(Some(seconds));
        Some(HttpPersistentSettings::for_session(&session))
    }

    #[tokio::test]
    async fn idle_keepalive_wait_is_small_and_reads_the_next_request() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = tcp_pair().await;
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let settings = kept_alive(60);
        let wait = wait_for_next_request(&mut server, &settings, &shutdown);
        // What an idle keep-alive connection holds while it waits (besides its stream): no
        // request future, no header buffer.
        assert!(
            std::mem::size_of_val(&wait) < 1024,
            "{}",
            std::mem::size_of_val(&wait)
        );
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        match wait.await {
            NextRequest::Bytes(b) => assert_eq!(&b[..], b"GET / HTTP/1.1\r\n"),
            _ => panic!("expected the request's first bytes"),
        }
    }

    /// An HTTP application that serves nothing: only its connection future's size matters.
    struct NoApp;

    #[async_trait]
    impl HttpServerApp for NoApp {
        async fn process_new_http(
            self: &Arc<Self>,
            _session: ServerSession,
            _shutdown: &ShutdownWatch,
        ) -> Option<ReusedHttpStream> {
            None
        }
    }

    #[tokio::test]
    async fn connection_future_is_small() {
        let (server, _client) = tcp_pair().await;
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let app = Arc::new(NoApp);
        let fut = app.process_new(server, &shutdown);
        // What every idle keep-alive connection holds besides its stream and its task: the
        // sessions and request futures are built only when a request arrives.
        let size = std::mem::size_of_val(&*fut);
        assert!(size <= 900, "{size}");
    }

    #[tokio::test]
    async fn idle_keepalive_wait_ends_on_close_timeout_and_shutdown() {
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        // the client closes
        let (mut server, client) = tcp_pair().await;
        drop(client);
        let next = wait_for_next_request(&mut server, &kept_alive(60), &shutdown).await;
        assert!(matches!(next, NextRequest::Closed));
        // the keep-alive timeout
        let (mut server, _client) = tcp_pair().await;
        let started = std::time::Instant::now();
        let next = wait_for_next_request(&mut server, &kept_alive(1), &shutdown).await;
        assert!(matches!(next, NextRequest::Closed));
        assert!(started.elapsed() >= Duration::from_millis(900));
        // shutdown
        let (mut server, _client) = tcp_pair().await;
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        let settings = kept_alive(60);
        let wait = wait_for_next_request(&mut server, &settings, &shutdown);
        tx.send(true).unwrap();
        assert!(matches!(wait.await, NextRequest::Closed));
        // no keep-alive settings (a first request): the session reads as usual
        let (mut server, _client) = tcp_pair().await;
        let next = wait_for_next_request(&mut server, &None, &shutdown).await;
        assert!(matches!(next, NextRequest::ReadAsUsual));
    }

    #[test]
    fn test_persistent_settings_user_context_roundtrip() {
        // Create a mock H1 session
        let mock_io = Builder::new().build();
        let mut session = ServerSession::new_http1(Box::new(mock_io));
        session.set_keepalive(Some(60));

        // Snapshot settings (no user context yet)
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(settings.take_user_context().is_none());

        // Set user context
        settings.set_user_context(Box::new(123u64));

        // Apply to a fresh session -- user context should transfer
        let mock_io2 = Builder::new().build();
        let mut session2 = ServerSession::new_http1(Box::new(mock_io2));
        settings.apply_to_session(&mut session2);

        // The user context should now be on the session
        let ctx = session2.take_connection_user_context();
        assert!(ctx.is_some());
        let val = ctx.unwrap().downcast::<u64>().unwrap();
        assert_eq!(*val, 123u64);

        // Keepalive should also have been applied
        assert_eq!(session2.get_keepalive(), Some(60));
    }

    #[test]
    fn test_persistent_settings_no_user_context_by_default() {
        let mock_io = Builder::new().build();
        let mut session = ServerSession::new_http1(Box::new(mock_io));
        session.set_keepalive(Some(30));

        let settings = HttpPersistentSettings::for_session(&session);

        let mock_io2 = Builder::new().build();
        let mut session2 = ServerSession::new_http1(Box::new(mock_io2));
        settings.apply_to_session(&mut session2);

        // No user context should be present
        assert!(session2.take_connection_user_context().is_none());
        // Keepalive should still work
        assert_eq!(session2.get_keepalive(), Some(30));
    }
}

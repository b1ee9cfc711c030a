//! Loopback HTTP backends for `meridian demo` and the end-to-end tests.
//!
//! Each [`Backend`] is a small hyper 1.x server that speaks HTTP/1.1 (with
//! keep-alive) and h2c with prior knowledge on one port. Its behaviour can be
//! changed at run time through the handle: artificial delay, forced failure
//! status, health state, hanging, and killing / reviving the listener.
//!
//! Endpoints (every response carries `x-backend` and `x-region` headers):
//!
//! | path          | answer                                                         |
//! |---------------|----------------------------------------------------------------|
//! | `/healthz`    | `200 ok` or `503 unhealthy` (see [`Backend::set_healthy`])      |
//! | `/echo`       | the request body, plus `x-echo-*` headers describing the request (its method, path, length, HTTP version and headers) |
//! | `/bytes/N`    | `N` bytes of `abc…xyzabc…` (N ≤ 64 MiB)                         |
//! | `/status/NNN` | status `NNN` with body `status NNN\n`                           |
//! | `/delay/MS`   | sleeps `MS` ms (≤ 60000), then answers like `/`                 |
//! | `/drip/N/MS`  | `N` server-sent events `data: i`, one every `MS` ms, no length  |
//! | anything else | `200 hello from <name> in <region>\n`                          |

mod body;
mod service;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Mutex};

/// How long [`Backend::revive`] keeps retrying a bind that fails with `AddrInUse`.
const REBIND_FOR: Duration = Duration::from_secs(3);
/// Pause between two bind attempts.
const REBIND_EVERY: Duration = Duration::from_millis(25);
/// Sentinel stored in `fail_status` meaning "no forced failure".
const NO_FAIL: u32 = u32::MAX;

/// What to start: a backend's identity and the address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Name reported in `x-backend` and in the hello body.
    pub name: String,
    /// Region reported in `x-region` and in the hello body.
    pub region: String,
    /// Address to bind; port 0 picks a free port (see [`Backend::addr`]).
    pub addr: SocketAddr,
}

impl BackendSpec {
    /// Convenience constructor.
    pub fn new(name: impl Into<String>, region: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            region: region.into(),
            addr,
        }
    }
}

/// State shared between the handle and the serving tasks.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) name_hv: HeaderValue,
    pub(crate) region_hv: HeaderValue,
    delay_nanos: AtomicU64,
    fail_status: AtomicU32,
    healthy: AtomicBool,
    hang: watch::Sender<bool>,
    pub(crate) hits: AtomicU64,
    pub(crate) health_hits: AtomicU64,
    connections: AtomicU64,
}

impl Shared {
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn fail_status(&self) -> Option<u16> {
        u16::try_from(self.fail_status.load(Ordering::Relaxed)).ok()
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Resolves once the backend is not hanging.
    pub(crate) async fn wait_unhung(&self) {
        let mut rx = self.hang.subscribe();
        let _ = rx.wait_for(|hang| !*hang).await;
    }
}

/// Lifecycle state owned by the handles (never by the serving tasks, so that
/// dropping every handle drops the stop sender and stops the server).
struct Control {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: Handle,
    /// `Some(stop sender)` while serving. Every serving task holds a receiver.
    serving: Mutex<Option<watch::Sender<bool>>>,
}

/// Keeps the runtime thread of [`spawn_on_thread`] alive; dropping it ends it.
struct ThreadGuard {
    _stop: oneshot::Sender<()>,
}

/// A running backend. Cheap to clone; all clones control the same server.
///
/// The server runs until [`Backend::kill`] or until every handle (and clone)
/// is dropped: keep a handle alive for as long as the backend should serve.
#[derive(Clone)]
pub struct Backend {
    ctl: Arc<Control>,
    _thread: Option<Arc<ThreadGuard>>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.ctl.shared.name)
            .field("region", &self.ctl.shared.region)
            .field("addr", &self.ctl.addr)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Binds and serves on the current tokio runtime (spawns tasks).
    /// Returns once listening.
    ///
    /// Fails if binding fails or if the name or region is not a valid header value.
    /// Panics if called outside a tokio runtime.
    pub async fn start(spec: BackendSpec) -> io::Result<Backend> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        let name_hv = HeaderValue::from_str(&spec.name)
            .map_err(|_| invalid("backend name is not a valid header value"))?;
        let region_hv = HeaderValue::from_str(&spec.region)
            .map_err(|_| invalid("backend region is not a valid header value"))?;
        let listener = bind_listener(spec.addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: spec.name,
            region: spec.region,
            name_hv,
            region_hv,
            delay_nanos: AtomicU64::new(0),
            fail_status: AtomicU32::new(NO_FAIL),
            healthy: AtomicBool::new(true),
            hang: watch::Sender::new(false),
            hits: AtomicU64::new(0),
            health_hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(Backend {
            ctl: Arc::new(Control {
                shared,
                addr,
                runtime: Handle::current(),
                serving: Mutex::new(Some(stop_tx)),
            }),
            _thread: None,
        })
    }

    /// The bound address (the real port when the spec asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.ctl.addr
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.ctl.shared.name
    }

    /// The backend's region.
    pub fn region(&self) -> &str {
        &self.ctl.shared.region
    }

    /// Sleeps `d` before every response except `/healthz`. Zero disables.
    pub fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.ctl.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// `Some(s)`: every request other than `/healthz` answers status `s`
    /// (a value that is not a valid non-1xx status answers 500). `None` clears.
    pub fn set_fail_status(&self, s: Option<u16>) {
        let v = s.map_or(NO_FAIL, u32::from);
        self.ctl.shared.fail_status.store(v, Ordering::Relaxed);
    }

    /// Whether `/healthz` answers `200 ok` (true) or `503 unhealthy` (false).
    pub fn set_healthy(&self, up: bool) {
        self.ctl.shared.healthy.store(up, Ordering::Relaxed);
    }

    /// While set, connections are accepted and requests read, but nothing
    /// (not even `/healthz`) is answered; pending requests proceed once cleared.
    pub fn set_hang(&self, hang: bool) {
        self.ctl.shared.hang.send_replace(hang);
    }

    /// Stops accepting and closes every open connection immediately, so the
    /// port refuses connections once this returns. Idempotent; works from any
    /// tokio runtime.
    pub async fn kill(&self) {
        let mut serving = self.ctl.serving.lock().await;
        if let Some(stop) = serving.take() {
            stop.send_replace(true);
            // Every serving task holds a receiver: wait until all are gone,
            // i.e. the listener and every connection have been dropped.
            stop.closed().await;
        }
    }

    /// Rebinds the same address and serves again on the runtime the backend
    /// was started on. Retries briefly while the port is still in use.
    /// A no-op if the backend is already serving.
    pub async fn revive(&self) -> io::Result<()> {
        let mut serving = self.ctl.serving.lock().await;
        if serving.is_some() {
            return Ok(());
        }
        let addr = self.ctl.addr;
        let shared = self.ctl.shared.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Bind and spawn on the backend's own runtime, whichever runtime we are on.
        self.ctl
            .runtime
            .spawn(async move {
                let listener = bind_with_retry(addr).await?;
                tokio::spawn(accept_loop(listener, shared, stop_rx));
                Ok::<(), io::Error>(())
            })
            .await
            .map_err(io::Error::other)??;
        *serving = Some(stop_tx);
        Ok(())
    }

    /// Requests received other than `/healthz` (counted on arrival).
    pub fn hits(&self) -> u64 {
        self.ctl.shared.hits.load(Ordering::Relaxed)
    }

    /// `/healthz` requests received.
    pub fn health_hits(&self) -> u64 {
        self.ctl.shared.health_hits.load(Ordering::Relaxed)
    }

    /// TCP connections accepted (HTTP/1.1 and h2c alike).
    pub fn connections(&self) -> u64 {
        self.ctl.shared.connections.load(Ordering::Relaxed)
    }

    /// Resets [`hits`](Self::hits), [`health_hits`](Self::health_hits) and
    /// [`connections`](Self::connections) to zero.
    pub fn reset_counts(&self) {
        let s = &self.ctl.shared;
        s.hits.store(0, Ordering::Relaxed);
        s.health_hits.store(0, Ordering::Relaxed);
        s.connections.store(0, Ordering::Relaxed);
    }
}

/// Runs `specs` on a dedicated thread with its own multi-thread tokio runtime
/// (2 workers), for callers that are not inside tokio. Returns the handles once
/// every backend is listening.
///
/// The thread and its runtime live until every returned handle (and clone) is
/// dropped; binding `let _ = spawn_on_thread(..)` would stop them at once.
pub fn spawn_on_thread(specs: Vec<BackendSpec>) -> io::Result<Vec<Backend>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("meridian-demo-backend-worker")
        .build()?;
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("meridian-demo-backends".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let mut started = Vec::with_capacity(specs.len());
                for spec in specs {
                    match Backend::start(spec).await {
                        Ok(b) => started.push(b),
                        Err(e) => {
                            let _ = result_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = result_tx.send(Ok(started));
                // Resolves (with an error) once the ThreadGuard is dropped.
                let _ = stop_rx.await;
            });
            // The runtime is dropped here, outside any async context.
        })?;
    let mut backends = result_rx
        .recv()
        .map_err(|_| io::Error::other("backend thread exited before starting"))??;
    let guard = Arc::new(ThreadGuard { _stop: stop_tx });
    for b in &mut backends {
        b._thread = Some(guard.clone());
    }
    Ok(backends)
}

/// Creates a listening socket with `SO_REUSEADDR` (on the current runtime).
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// [`bind_listener`], retrying for a while on `AddrInUse`.
async fn bind_with_retry(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + REBIND_FOR;
    loop {
        match bind_listener(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(REBIND_EVERY).await;
            }
            other => return other,
        }
    }
}

/// Accepts until told to stop (or the stop sender is dropped), then drops the
/// listener before its stop receiver so that `kill` returns only once the port
/// is closed.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut stop_wait = stop.clone();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop_wait) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(
                        builder.clone(),
                        stream,
                        shared.clone(),
                        stop.clone(),
                    ));
                }
                // E.g. EMFILE or a connection reset while queued: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
    drop(listener);
    drop(stop_wait);
    drop(stop);
}

/// Serves one connection (HTTP/1.1 or h2c) until it ends or the backend stops;
/// on stop the connection is dropped, which closes the socket immediately.
async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let svc_stop = stop.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let stop = svc_stop.clone();
        async move { Ok::<_, std::convert::Infallible>(service::handle(shared, req, stop).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    // Stop first: once stopped, the connection is never polled again, so no
    // further bytes (e.g. a handler's "shutting down" reply) reach the client.
    tokio::select! {
        biased;
        () = stopped(&mut stop) => {}
        _ = conn => {}
    }
}

/// Resolves once the backend is told to stop or its stop sender is dropped.
/// (Never returns the `watch::Ref`, which must not be held across an await.)
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

//! Assembles one instance's pingora `Server`: the proxy listeners (`edge`), the admin and
//! redirect listeners, and the background services (prober, DNS discovery, reload
//! triggers, readiness, watchdog), all sharing one [`Instance`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::control::discovery::{Discovery, DnsState, Rebuilds};
use crate::control::instance::Instance;
use crate::control::overload::Sampler;
use crate::control::readiness::ReadinessService;
use crate::control::reload::{ReloadTriggers, Reloader};
use crate::control::systemd;
use crate::edge::listeners::{add_proxy, socket_options};
use crate::edge::redirect::Redirect;
use crate::edge::tls::{cert_sets, CertError, CertResolver};
use crate::health::prober::Prober;
use crate::observe::admin::Admin;
use crate::request::metrics::RequestMetrics;

/// Process-level options (not part of the hot-reloadable config).
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Take over the listening sockets of a running instance (graceful upgrade).
    pub upgrade: bool,
    /// The Unix socket listening sockets are handed over on during an upgrade.
    pub upgrade_sock: String,
    /// PID file.
    pub pid_file: String,
    /// How long in-flight requests get to finish after SIGTERM / SIGQUIT / SIGUSR2; `None`:
    /// `timeouts.shutdown_grace` of the config in use at that moment.
    pub grace_period: Option<Duration>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            upgrade: false,
            upgrade_sock: "/tmp/meridian-upgrade.sock".into(),
            pid_file: "/tmp/meridian.pid".into(),
            grace_period: None,
        }
    }
}

/// The longest grace the config allows (`timeouts.shutdown_grace`).
const MAX_GRACE: Duration = Duration::from_secs(3600);

/// Ends the grace period of a graceful stop or upgrade as soon as no request is in flight,
/// or when the grace (`override_grace`, else the config's `timeouts.shutdown_grace`) is
/// over, saying in the log what it cut.
fn grace_period_done(
    inst: Arc<Instance>,
    override_grace: Option<Duration>,
) -> impl Fn() -> bool + Send + Sync + 'static {
    let started = OnceLock::new();
    move || {
        let start = *started.get_or_init(Instant::now);
        let inflight = inst.overload.inflight();
        if inflight == 0 {
            tracing::info!(
                waited_ms = start.elapsed().as_millis() as u64,
                "graceful stop: every in-flight request finished"
            );
            return true;
        }
        let grace =
            override_grace.unwrap_or_else(|| inst.active().routing.config.timeouts.shutdown_grace);
        if start.elapsed() >= grace {
            tracing::warn!(
                inflight,
                grace_s = grace.as_secs_f64(),
                "graceful stop: grace period over; cutting the requests still in flight"
            );
            return true;
        }
        false
    }
}

struct Watchdog;

#[async_trait::async_trait]
impl BackgroundService for Watchdog {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        systemd::watchdog_loop().await;
    }
}

/// pingora's server for `threads` worker threads and the process options.
fn pingora_server(threads: usize, opts: &ProcessOptions) -> Server {
    let conf = ServerConf {
        threads,
        pid_file: opts.pid_file.clone(),
        upgrade_sock: opts.upgrade_sock.clone(),
        // The ceiling: the grace really ends when the last request is done or the
        // configured grace is over (see `grace_period_done`).
        grace_period_seconds: Some(opts.grace_period.unwrap_or(MAX_GRACE).as_secs().max(1)),
        // Only bounds blocking threads once the grace is over; requests are done by then.
        graceful_shutdown_timeout_seconds: Some(1),
        // Our own retry budget (`retry.attempts`) decides; this is only pingora's ceiling.
        max_retries: 16,
        upstream_keepalive_pool_size: 1024,
        // One current-thread runtime per worker thread instead of one multi-thread runtime:
        // no cross-thread task queues, wake-ups or stealing on the request path, and the
        // upstream connection pool stays warm per thread (see docs/performance.md).
        work_stealing: false,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    server
}

/// A single-threaded listening service for `app` on `addrs`.
fn small_service<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    name: &str,
    app: A,
    addrs: &[std::net::SocketAddr],
) -> Service<A> {
    let mut service = Service::new(name.to_string(), app);
    service.threads = Some(1);
    for addr in addrs {
        service.add_tcp_with_settings(&addr.to_string(), socket_options(addr));
    }
    service
}

/// Why the server cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A listener's certificate cannot be loaded.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The GeoDNS sockets cannot be bound (`geodns.listen`).
    #[error("geodns.listen: {0}")]
    GeoDnsListen(#[from] meridian_dns::ServeError),
    /// The GeoDNS zones cannot be compiled.
    #[error("geodns.zones: {0}")]
    GeoDnsZones(#[from] meridian_dns::DnsError),
}

/// Builds the server; call `run` on it. Fails when a listener's certificate cannot be
/// loaded or the GeoDNS sockets cannot be bound.
pub fn build(inst: Arc<Instance>, opts: &ProcessOptions) -> Result<Server, BuildError> {
    let active = inst.active();
    let cfg = &active.routing.config;
    let certs: Vec<Arc<CertResolver>> = cert_sets(&cfg.listeners.https)?
        .into_iter()
        .map(|set| Arc::new(CertResolver::new(set)))
        .collect();
    let dns = Arc::new(DnsState::default());
    let (rebuilds, rebuild_requests) = Rebuilds::channel();
    let reloader = Arc::new(Reloader::new(
        inst.clone(),
        cfg.source.clone(),
        dns.clone(),
        certs.clone(),
    ));
    if !cfg.listeners.admin.ip().is_loopback() {
        tracing::warn!(
            admin = %cfg.listeners.admin,
            "the admin API listens beyond loopback: reads are open to anyone who can reach it; changes need admin.token"
        );
    }
    let mut server = pingora_server(cfg.threads, opts);
    let conf = server.configuration.clone();
    let metrics = RequestMetrics::register(&inst.registry);
    add_proxy(&mut server, &conf, &inst, cfg, &certs, &metrics);
    let admin =
        pingora::apps::http_app::HttpServer::new_app(Admin::new(reloader.clone(), dns.clone()));
    let mut admin = Service::new("meridian admin".to_string(), admin);
    admin.threads = Some(1);
    admin.add_tcp(&cfg.listeners.admin.to_string());
    server.add_service(admin);
    if !cfg.listeners.redirect_http.is_empty() {
        let redirect = pingora::apps::http_app::HttpServer::new_app(Redirect::new(inst.clone()));
        server.add_service(small_service(
            "meridian https redirect",
            redirect,
            &cfg.listeners.redirect_http,
        ));
    }
    server.add_service(background_service("prober", Prober::new(inst.clone())));
    server.add_service(background_service(
        "dns discovery",
        Discovery::new(inst.clone(), dns, rebuilds),
    ));
    server.add_service(background_service(
        "reload",
        ReloadTriggers::new(reloader, rebuild_requests),
    ));
    server.add_service(background_service("watchdog", Watchdog));
    server.add_service(background_service(
        "mesh",
        crate::control::mesh::MeshService::new(inst.clone(), inst.mesh.clone()),
    ));
    if !cfg.geodns.enabled() {
        inst.readiness
            .mark(crate::control::readiness::Condition::GeoDnsViewed);
    } else {
        let listeners = meridian_dns::Listeners::bind(&cfg.geodns.listen, cfg.geodns.threads)?;
        let ready = inst.readiness.clone();
        let answerer = Arc::new(meridian_dns::Answerer::new(
            meridian_dns::DnsMetrics::register(&inst.registry),
            active.clone(),
            move || ready.is_ready(),
        )?);
        let _ = inst.geodns.set(answerer.clone());
        let mut service = background_service(
            "geodns",
            crate::control::geodns::GeoDnsService::new(inst.clone(), answerer, listeners),
        );
        service.threads = Some(cfg.geodns.threads);
        server.add_service(service);
    }
    server.add_service(background_service(
        "overload sampler",
        Sampler(inst.overload.clone()),
    ));
    server.set_grace_period_done(grace_period_done(inst.clone(), opts.grace_period));
    server.add_service(background_service(
        "readiness",
        ReadinessService::new(inst.readiness.clone(), cfg),
    ));
    watch_drain(&server, inst);
    Ok(server)
}

/// Marks the instance as draining as soon as pingora starts a graceful upgrade or
/// termination (see [`Instance::start_draining`]).
fn watch_drain(server: &Server, inst: Arc<Instance>) {
    use pingora::server::ExecutionPhase;
    let mut phases = server.watch_execution_phase();
    let spawned = std::thread::Builder::new()
        .name("meridian-drain".into())
        .spawn(move || {
            while let Ok(phase) = phases.blocking_recv() {
                if matches!(
                    phase,
                    ExecutionPhase::GracefulUpgradeTransferringFds
                        | ExecutionPhase::GracefulTerminate
                        | ExecutionPhase::ShutdownStarted
                ) {
                    tracing::info!(
                        ?phase,
                        "draining: closing client connections after their current request"
                    );
                    inst.start_draining();
                    systemd::notify_stopping();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the server phase; no connection draining");
    }
}

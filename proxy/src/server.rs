//! Builds the pingora `Server` of one instance: the proxy service on every HTTP and HTTPS
//! listener, the admin service, the HTTP→HTTPS redirect service, and the background services (prober, reload triggers, watchdog).

use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{
    L4BufferSettings, ListenerConfig, TcpSocketOptions, DEFAULT_L4_WRITE_BUFFER_SIZE,
};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::instance::Instance;
use crate::probe::Prober;
use crate::proxy_protocol::ProxyProtocol;
use crate::reload::ReloadTriggers;
use crate::service::MeridianProxy;

/// Process-level options (not part of the hot-reloadable config).
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Take over the listening sockets of a running instance (graceful upgrade).
    pub upgrade: bool,
    /// The Unix socket listening sockets are handed over on during an upgrade.
    pub upgrade_sock: String,
    /// PID file.
    pub pid_file: String,
    /// Seconds to keep serving in-flight requests after SIGTERM / SIGQUIT.
    pub grace_period_secs: u64,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            upgrade: false,
            upgrade_sock: "/tmp/meridian-upgrade.sock".into(),
            pid_file: "/tmp/meridian.pid".into(),
            grace_period_secs: 5,
        }
    }
}

struct Watchdog;

#[async_trait::async_trait]
impl BackgroundService for Watchdog {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        crate::systemd::watchdog_loop().await;
    }
}

/// Builds the server; call `run_forever` on it.
pub fn build(inst: Arc<Instance>, opts: &ProcessOptions) -> Server {
    let snap = inst.snapshot();
    let cfg = &snap.config;
    let conf = ServerConf {
        threads: cfg.threads,
        pid_file: opts.pid_file.clone(),
        upgrade_sock: opts.upgrade_sock.clone(),
        grace_period_seconds: Some(opts.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(opts.grace_period_secs),
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

    let conf = server.configuration.clone();
    let new_app = || {
        let mut app = pingora::proxy::http_proxy(&conf, MeridianProxy::new(inst.clone()));
        let mut http = HttpServerOptions::default();
        http.h2c = true;
        app.server_options = Some(http);
        app
    };
    let sock = |addr: &std::net::SocketAddr| {
        let mut sock = TcpSocketOptions::default();
        sock.ipv6_only = addr.is_ipv6().then_some(true);
        sock
    };
    // No 64 KiB user-space read buffer per plain client connection (pingora's default,
    // sized for TLS records): plain HTTP reads go straight into the HTTP session's own
    // buffer, which saves a copy per read and 64 KiB of resident memory per connection.
    let plain = |addr: &std::net::SocketAddr| {
        ListenerConfig::tcp(addr.to_string())
            .tcp_socket_options(sock(addr))
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
    };
    let mut proxy = Service::new("meridian proxy".to_string(), new_app());
    if cfg.listeners.proxy_protocol {
        // PROXY headers precede HTTP on the plain listeners: a wrapped app reads them first.
        let mut pp = Service::new(
            "meridian proxy (PROXY protocol)".to_string(),
            ProxyProtocol::new(new_app(), inst.clone()),
        );
        for addr in &cfg.listeners.http {
            pp.add_listener(plain(addr));
        }
        server.add_service(pp);
    } else {
        for addr in &cfg.listeners.http {
            proxy.add_listener(plain(addr));
        }
    }
    let mut plain_https = false;
    for (listener, resolver) in cfg.listeners.https.iter().zip(&inst.certs) {
        // The resolver owns certificate selection; reloads swap its set in place.
        let mut tls = match TlsSettings::intermediate("", "") {
            Ok(tls) => tls,
            Err(e) => {
                // Not expected with rustls; readiness reports the listener as never up.
                tracing::error!(listener = %listener.address, error = %e, "cannot set up TLS");
                continue;
            }
        };
        tls.set_cert_resolver(resolver.clone());
        tls.enable_h2();
        let addr = &listener.address;
        if listener.proxy_protocol {
            // The PROXY header precedes the TLS handshake: a plain TCP listener whose
            // wrapped app reads the header, then does the handshake with these settings.
            let mut pp = Service::new(
                format!("meridian proxy (PROXY protocol, TLS {addr})"),
                ProxyProtocol::with_tls(new_app(), inst.clone(), tls.build()),
            );
            pp.add_listener(ListenerConfig::tcp(addr.to_string()).tcp_socket_options(sock(addr)));
            server.add_service(pp);
        } else {
            plain_https = true;
            proxy.add_tls_with_settings(&addr.to_string(), Some(sock(addr)), tls);
        }
    }
    if (!cfg.listeners.proxy_protocol && !cfg.listeners.http.is_empty()) || plain_https {
        server.add_service(proxy);
    }

    let mut admin = Service::new(
        "meridian admin".to_string(),
        pingora::apps::http_app::HttpServer::new_app(Admin::new(inst.clone())),
    );
    admin.threads = Some(1);
    admin.add_tcp(&cfg.listeners.admin.to_string());

    server.add_service(admin);
    if !cfg.listeners.redirect_http.is_empty() {
        let mut redirect = Service::new(
            "meridian https redirect".to_string(),
            pingora::apps::http_app::HttpServer::new_app(crate::redirect::Redirect::new(
                inst.clone(),
            )),
        );
        redirect.threads = Some(1);
        for addr in &cfg.listeners.redirect_http {
            redirect.add_tcp_with_settings(&addr.to_string(), sock(addr));
        }
        server.add_service(redirect);
    }
    server.add_service(background_service("prober", Prober::new(inst.clone())));
    server.add_service(background_service(
        "dns discovery",
        crate::discovery::Discovery::new(inst.clone()),
    ));
    let inst_for_drain = inst.clone();
    server.add_service(background_service("reload", ReloadTriggers::new(inst)));
    server.add_service(background_service("watchdog", Watchdog));
    server.add_service(background_service(
        "readiness",
        crate::readiness::Readiness::new(inst_for_drain.clone()),
    ));
    watch_drain(&server, inst_for_drain);
    server
}

/// Marks the instance as draining as soon as pingora starts a graceful upgrade or
/// termination (see [`Instance::draining`]).
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
                    inst.draining
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    crate::systemd::notify_stopping();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the server phase; no connection draining");
    }
}

//! Builds the pingora `Server` of one instance: the proxy service on every HTTP listener,
//! the admin service, and the background services (prober, reload triggers, watchdog).

use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{
    L4BufferSettings, ListenerConfig, TcpSocketOptions, DEFAULT_L4_WRITE_BUFFER_SIZE,
};
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::instance::Instance;
use crate::probe::Prober;
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

    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        MeridianProxy::new(inst.clone()),
        "meridian proxy",
    );
    if let Some(app) = proxy.app_logic_mut() {
        let mut http = HttpServerOptions::default();
        http.h2c = true;
        app.server_options = Some(http);
    }
    for addr in &cfg.listeners.http {
        let mut sock = TcpSocketOptions::default();
        sock.ipv6_only = addr.is_ipv6().then_some(true);
        // No 64 KiB user-space read buffer per client connection (pingora's default, sized
        // for TLS records): plain HTTP reads go straight into the HTTP session's own buffer,
        // which saves a copy per read and 64 KiB of resident memory per connection.
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .tcp_socket_options(sock)
                .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
        );
    }

    let mut admin = Service::new(
        "meridian admin".to_string(),
        pingora::apps::http_app::HttpServer::new_app(Admin::new(inst.clone())),
    );
    admin.threads = Some(1);
    admin.add_tcp(&cfg.listeners.admin.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service("prober", Prober::new(inst.clone())));
    server.add_service(background_service("reload", ReloadTriggers::new(inst)));
    server.add_service(background_service("watchdog", Watchdog));
    server
}

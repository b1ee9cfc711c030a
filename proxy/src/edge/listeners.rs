//! The proxy's listeners: plain HTTP (HTTP/1.1 and h2c) and HTTPS (certificates by SNI,
//! ALPN h2 and http/1.1), each optionally behind the PROXY protocol, all serving the one
//! request path ([`MeridianProxy`]).

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_config::Config;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{
    L4BufferSettings, ListenerConfig, TcpSocketOptions, DEFAULT_L4_WRITE_BUFFER_SIZE,
};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;

use super::limits::{ConnLimits, ConnTable};
use super::proxy_protocol::ProxyProtocol;
use super::tls::CertResolver;
use crate::control::instance::Instance;
use crate::request::metrics::RequestMetrics;
use crate::request::service::MeridianProxy;

/// Socket options of a listener on `addr` (IPv6 listeners are IPv6-only).
pub fn socket_options(addr: &SocketAddr) -> TcpSocketOptions {
    let mut sock = TcpSocketOptions::default();
    sock.ipv6_only = addr.is_ipv6().then_some(true);
    sock
}

/// A plain listener. No 64 KiB user-space read buffer per client connection (pingora's
/// default, sized for TLS records): plain HTTP reads go straight into the HTTP session's
/// own buffer, which saves a copy per read and 64 KiB of resident memory per connection.
fn plain(addr: &SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string())
        .tcp_socket_options(socket_options(addr))
        .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
}

/// The HTTP server options of the proxy's listeners (limits that need a restart to change).
fn server_options(config: &Config) -> HttpServerOptions {
    let (t, l) = (&config.timeouts, &config.limits);
    let mut http = HttpServerOptions::default();
    http.h2c = true;
    http.first_byte_timeout = Some(t.first_byte);
    http.header_timeout = Some(t.request_header);
    http.max_header_size = Some(l.max_header_size);
    http.h2_idle_timeout = Some(t.h2_idle);
    // pingora counts reuses: a limit of n - 1 reuses serves n requests.
    http.keepalive_request_limit = Some(l.max_requests_per_connection.saturating_sub(1));
    http.lower_case_headers = !config.listeners.preserve_header_case;
    http
}

/// HTTP/2 settings of the proxy's listeners: pingora's defaults with Meridian's limits.
fn h2_options(config: &Config) -> pingora::protocols::http::v2::server::H2Options {
    let l = &config.limits;
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(l.max_concurrent_streams)
        .max_header_list_size(u32::try_from(l.max_header_size).unwrap_or(u32::MAX));
    h2
}

/// What every proxy app is built from.
struct Apps<'a> {
    conf: &'a Arc<ServerConf>,
    inst: &'a Arc<Instance>,
    config: &'a Config,
    metrics: &'a RequestMetrics,
    conns: Arc<ConnTable>,
}

/// The proxy app with its connection caps.
type Capped = ConnLimits<HttpProxy<MeridianProxy>>;

impl Apps<'_> {
    /// A fresh proxy app (pingora wants one per service), behind the connection caps.
    fn proxy(&self) -> Capped {
        let service = MeridianProxy::new(self.inst.clone(), self.metrics.clone());
        let mut app = pingora::proxy::http_proxy(self.conf, service);
        app.server_options = Some(server_options(self.config));
        app.h2_options = Some(h2_options(self.config));
        ConnLimits::new(app, self.inst.clone(), self.conns.clone())
    }

    /// A proxy app behind the PROXY protocol (then TLS, with `tls`).
    fn behind_proxy_protocol(
        &self,
        tls: Option<pingora::listeners::tls::Acceptor>,
    ) -> ProxyProtocol<Capped> {
        let refused = self.metrics.bad_client_header.clone();
        match tls {
            None => ProxyProtocol::new(self.proxy(), self.inst.clone(), refused),
            Some(tls) => ProxyProtocol::with_tls(self.proxy(), self.inst.clone(), refused, tls),
        }
    }
}

/// TLS settings serving `resolver`'s certificates, with h2 by ALPN.
fn tls_settings(addr: &SocketAddr, resolver: &Arc<CertResolver>) -> Option<TlsSettings> {
    // The resolver owns certificate selection; reloads swap its set in place.
    let mut tls = match TlsSettings::intermediate("", "") {
        Ok(tls) => tls,
        Err(e) => {
            // Not expected with rustls; readiness reports the listener as never up.
            tracing::error!(listener = %addr, error = %e, "cannot set up TLS");
            return None;
        }
    };
    tls.set_cert_resolver(resolver.clone());
    tls.enable_h2();
    Some(tls)
}

/// Adds the proxy's HTTP and HTTPS listeners to `server`.
pub fn add_proxy(
    server: &mut Server,
    conf: &Arc<ServerConf>,
    inst: &Arc<Instance>,
    config: &Config,
    certs: &[Arc<CertResolver>],
    metrics: &RequestMetrics,
) {
    let apps = Apps {
        conf,
        inst,
        config,
        metrics,
        conns: ConnTable::new(&inst.registry),
    };
    let mut proxy = Service::new("meridian proxy".to_string(), apps.proxy());
    let mut proxy_used = false;
    if config.listeners.proxy_protocol {
        // PROXY headers precede HTTP on the plain listeners: a wrapped app reads them first.
        let mut pp = Service::new(
            "meridian proxy (PROXY protocol)".to_string(),
            apps.behind_proxy_protocol(None),
        );
        for addr in &config.listeners.http {
            pp.add_listener(plain(addr));
        }
        server.add_service(pp);
    } else {
        for addr in &config.listeners.http {
            proxy.add_listener(plain(addr));
            proxy_used = true;
        }
    }
    for (listener, resolver) in config.listeners.https.iter().zip(certs) {
        let addr = &listener.address;
        let Some(tls) = tls_settings(addr, resolver) else {
            continue;
        };
        if listener.proxy_protocol {
            // The PROXY header precedes the TLS handshake: a plain TCP listener whose
            // wrapped app reads the header, then does the handshake with these settings.
            let mut pp = Service::new(
                format!("meridian proxy (PROXY protocol, TLS {addr})"),
                apps.behind_proxy_protocol(Some(tls.build())),
            );
            pp.add_listener(
                ListenerConfig::tcp(addr.to_string()).tcp_socket_options(socket_options(addr)),
            );
            server.add_service(pp);
        } else {
            proxy.add_tls_with_settings(&addr.to_string(), Some(socket_options(addr)), tls);
            proxy_used = true;
        }
    }
    if proxy_used {
        server.add_service(proxy);
    }
}

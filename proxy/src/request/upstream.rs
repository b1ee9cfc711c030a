//! The upstream peer: a pool's protocol (HTTP/1.1, h2 over TLS, h2c, or ALPN's choice),
//! TLS and timeouts in the form pingora's `HttpPeer` wants. The per-pool table (by service
//! and region) is built once per snapshot beside the pingora-free routing snapshot; TLS
//! state is reused across snapshots while its settings do not change (`upstream_tls.rs`).

use std::sync::Arc;
use std::time::Duration;

use meridian_config::{Config, Timeouts, Upstream, UpstreamProtocol};
use meridian_routing::BackendState;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use rustls::ClientConfig;

pub use super::upstream_tls::{TlsError, UpstreamPeerTls};

/// Per-pool upstream settings and TLS of one snapshot generation, by service and region
/// index (TLS `None`: plain).
#[derive(Debug, Default)]
pub struct Upstreams {
    tls: Vec<Vec<Option<Arc<UpstreamPeerTls>>>>,
    settings: Vec<Vec<Upstream>>,
}

/// What about one request changes how its upstream connection is chosen and timed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerNeeds {
    /// An HTTP/1 upgrade (WebSocket): spoken in HTTP/1.1 whatever the pool's protocol
    /// (pingora does not tunnel over HTTP/2 streams).
    pub upgrade: bool,
    /// A gRPC call: HTTP/2 also to a relay (another instance's listener takes h2c).
    pub grpc: bool,
    /// Reads once the response header is in (a tunnel, a long-lived stream) wait this long
    /// instead of `timeouts.read`.
    pub stream_read_timeout: Option<Duration>,
    /// The time left before the request's deadline (gRPC `grpc-timeout`): no read waits
    /// longer.
    pub deadline: Option<Duration>,
}

impl Upstreams {
    /// Builds the table for `config`, reusing `previous`' state for TLS settings that did
    /// not change.
    pub fn build(config: &Config, previous: Option<&Upstreams>) -> Result<Upstreams, TlsError> {
        let mut tls = Vec::with_capacity(config.services.len());
        let mut settings = Vec::with_capacity(config.services.len());
        for s in &config.services {
            let mut by_region = vec![None; config.regions.len()];
            let mut upstream_by_region = vec![Upstream::default(); config.regions.len()];
            for p in &s.pools {
                if let Some(slot) = upstream_by_region.get_mut(p.region) {
                    *slot = p.upstream;
                }
                let Some(want) = &p.tls else { continue };
                let at = match (s.implicit, config.regions.get(p.region)) {
                    (true, Some(r)) => format!("regions.{}", r.name),
                    (false, Some(r)) => format!("services.{}.regions.{}", s.name, r.name),
                    (_, None) => continue,
                };
                let old = previous.and_then(|p| {
                    p.tls
                        .iter()
                        .flatten()
                        .flatten()
                        .find(|t| t.settings == *want)
                });
                let built = match old {
                    Some(old) => old.clone(),
                    None => Arc::new(UpstreamPeerTls::build(&at, want)?),
                };
                if let Some(slot) = by_region.get_mut(p.region) {
                    *slot = Some(built);
                }
            }
            tls.push(by_region);
            settings.push(upstream_by_region);
        }
        Ok(Upstreams { tls, settings })
    }

    /// The TLS of service `service`'s pool in region `region` (`None`: plain HTTP).
    pub fn tls(&self, service: usize, region: usize) -> Option<&Arc<UpstreamPeerTls>> {
        self.tls.get(service)?.get(region).and_then(Option::as_ref)
    }

    /// The upstream settings of service `service`'s pool in region `region` (the defaults
    /// where it has none).
    pub fn settings(&self, service: usize, region: usize) -> Upstream {
        self.settings
            .get(service)
            .and_then(|s| s.get(region))
            .copied()
            .unwrap_or_default()
    }

    /// The probe client config for service `service`'s pool in region `region`: its TLS
    /// trust, offering the ALPN its protocol wants (`grpc`: `h2` only).
    pub fn probe_tls(
        &self,
        (service, region): (usize, usize),
        grpc: bool,
    ) -> Option<(Arc<UpstreamPeerTls>, Arc<ClientConfig>)> {
        let tls = self.tls(service, region)?;
        let config = match (self.settings(service, region).protocol, grpc) {
            (_, true) | (UpstreamProtocol::H2, _) => &tls.probe_config_h2,
            (UpstreamProtocol::Auto, _) => &tls.probe_config_auto,
            _ => &tls.probe_config,
        };
        Some((tls.clone(), config.clone()))
    }

    /// The pingora peer for backend `backend` of service `service`'s pool in region
    /// `region`: the pool's protocol, plain or TLS as the pool says (SNI, verification, CA,
    /// client certificate, pool key), with the timeouts. A relay (another instance's proxy
    /// listener) is spoken to in plain HTTP/1.1, or h2c for gRPC.
    #[inline(never)]
    pub fn peer(
        &self,
        (service, region): (usize, usize),
        backend: &BackendState,
        t: &Timeouts,
        relay: bool,
        needs: PeerNeeds,
    ) -> HttpPeer {
        let tls = if relay {
            None
        } else {
            self.tls(service, region)
        };
        let mut peer = match tls {
            None => HttpPeer::new(backend.addr, false, String::new()),
            Some(tls) => {
                let sni = tls.server_name(&backend.host);
                let mut peer = HttpPeer::new(backend.addr, true, sni);
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                peer.options.ca = tls.ca.clone();
                peer.client_cert_key = tls.client_cert.clone();
                peer.group_key = tls.pool_key;
                peer
            }
        };
        let settings = self.settings(service, region);
        peer.options.alpn = alpn(settings.protocol, relay, needs);
        if peer.options.alpn != ALPN::H1 {
            peer.options.max_h2_streams = settings.h2_max_streams as usize;
            peer.options.h2_ping_interval = settings.h2_ping_interval;
        }
        let bounded = |d: Duration| needs.deadline.map_or(d, |left| d.min(left));
        peer.options.connection_timeout = Some(bounded(t.connect));
        peer.options.read_timeout = Some(bounded(t.read));
        peer.options.stream_read_timeout = needs.stream_read_timeout.map(bounded);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }
}

/// The ALPN (for plain peers: the HTTP version) a request is sent with.
fn alpn(protocol: UpstreamProtocol, relay: bool, needs: PeerNeeds) -> ALPN {
    if needs.upgrade {
        return ALPN::H1;
    }
    if relay {
        return if needs.grpc { ALPN::H2 } else { ALPN::H1 };
    }
    match protocol {
        UpstreamProtocol::Http1 => ALPN::H1,
        // On a plain peer, h2 as the only version is h2c with prior knowledge.
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => ALPN::H2,
        UpstreamProtocol::Auto => ALPN::H2H1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_follows_protocol_upgrades_and_relays() {
        let plain = PeerNeeds::default();
        let ws = PeerNeeds {
            upgrade: true,
            ..plain
        };
        let grpc = PeerNeeds {
            grpc: true,
            ..plain
        };
        assert_eq!(alpn(UpstreamProtocol::Http1, false, plain), ALPN::H1);
        assert_eq!(alpn(UpstreamProtocol::H2, false, plain), ALPN::H2);
        assert_eq!(alpn(UpstreamProtocol::H2c, false, plain), ALPN::H2);
        assert_eq!(alpn(UpstreamProtocol::Auto, false, plain), ALPN::H2H1);
        assert_eq!(alpn(UpstreamProtocol::H2c, false, ws), ALPN::H1);
        assert_eq!(alpn(UpstreamProtocol::H2, true, plain), ALPN::H1);
        assert_eq!(alpn(UpstreamProtocol::Http1, true, grpc), ALPN::H2);
    }
}

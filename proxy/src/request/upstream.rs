//! The upstream peer: a region's protocol (HTTP/1.1, h2 over TLS, h2c, or ALPN's choice),
//! TLS and timeouts in the form pingora's `HttpPeer` wants. The per-region table is built
//! once per snapshot beside the pingora-free routing snapshot; TLS state is reused across
//! snapshots while a region's settings do not change (`upstream_tls.rs`).

use std::sync::Arc;
use std::time::Duration;

use meridian_config::{Config, Timeouts, Upstream, UpstreamProtocol};
use meridian_routing::BackendState;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use rustls::ClientConfig;

pub use super::upstream_tls::{TlsError, UpstreamPeerTls};

/// Per-region upstream settings and TLS of one snapshot generation, by region index.
#[derive(Debug, Default)]
pub struct Upstreams {
    tls: Vec<Option<Arc<UpstreamPeerTls>>>,
    settings: Vec<Upstream>,
}

/// What about one request changes how its upstream connection is chosen and timed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerNeeds {
    /// An HTTP/1 upgrade (WebSocket): spoken in HTTP/1.1 whatever the region's protocol
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
    /// Builds the table for `config`, reusing `previous`' TLS state of a region whose TLS
    /// settings did not change.
    pub fn build(config: &Config, previous: Option<&Upstreams>) -> Result<Upstreams, TlsError> {
        let mut tls = Vec::with_capacity(config.regions.len());
        for r in &config.regions {
            let old = previous.and_then(|p| p.tls.iter().flatten().find(|t| t.region == r.name));
            tls.push(match (&r.tls, old) {
                (None, _) => None,
                (Some(want), Some(old)) if old.settings == *want => Some(old.clone()),
                (Some(want), _) => Some(Arc::new(UpstreamPeerTls::build(&r.name, want)?)),
            });
        }
        let settings = config.regions.iter().map(|r| r.upstream).collect();
        Ok(Upstreams { tls, settings })
    }

    /// Region `i`'s TLS (`None`: plain HTTP).
    pub fn tls(&self, i: usize) -> Option<&Arc<UpstreamPeerTls>> {
        self.tls.get(i).and_then(Option::as_ref)
    }

    /// Region `i`'s upstream settings.
    pub fn settings(&self, i: usize) -> Upstream {
        self.settings.get(i).copied().unwrap_or_default()
    }

    /// The probe client config for region `i`: its TLS trust, offering the ALPN its
    /// protocol wants (`grpc`: `h2` only).
    pub fn probe_tls(
        &self,
        i: usize,
        grpc: bool,
    ) -> Option<(Arc<UpstreamPeerTls>, Arc<ClientConfig>)> {
        let tls = self.tls(i)?;
        let config = match (self.settings(i).protocol, grpc) {
            (_, true) | (UpstreamProtocol::H2, _) => &tls.probe_config_h2,
            (UpstreamProtocol::Auto, _) => &tls.probe_config_auto,
            _ => &tls.probe_config,
        };
        Some((tls.clone(), config.clone()))
    }

    /// The pingora peer for backend `backend` of region `region`: the region's protocol,
    /// plain or TLS as the region says (SNI, verification, CA, client certificate, pool
    /// key), with the timeouts. A relay (another instance's proxy listener) is spoken to
    /// in plain HTTP/1.1, or h2c for gRPC.
    pub fn peer(
        &self,
        region: usize,
        backend: &BackendState,
        t: &Timeouts,
        relay: bool,
        needs: PeerNeeds,
    ) -> HttpPeer {
        let tls = if relay { None } else { self.tls(region) };
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
        let settings = self.settings(region);
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

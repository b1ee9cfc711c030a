//! Wires the mesh (`meridian-mesh`) to the instance: its settings from the config, the
//! document this instance serves (its own region's backends), and the view it learns
//! applied to routing — a remote region's own instances speak for its backends while their
//! report is fresh (this instance's probes are the fallback), and relay members are usable
//! while their instance is up and its region can serve.

use std::sync::Arc;

use async_trait::async_trait;
use meridian_config::{Config, MeshTls};
use meridian_mesh::{
    BackendReport, ClientTls, Key, Mesh, MeshView, NodeState, Peer, RegionReport, Settings,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::instance::{Active, Instance};
use super::readiness::Condition;
use meridian_routing::RegionPool;

/// Why the mesh's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("mesh.tls: {0}")]
pub struct MeshTlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(tls: &MeshTls) -> Result<Arc<RootCertStore>, MeshTlsError> {
    let mut roots = RootCertStore::empty();
    for c in &tls.ca {
        roots
            .add(c.clone())
            .map_err(|e| MeshTlsError(format!("ca: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The TLS client side: the mesh CA as roots, this instance's certificate.
fn client_tls(tls: &MeshTls) -> Result<ClientTls, MeshTlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| MeshTlsError(e.to_string()))?
        .with_root_certificates(roots(tls)?)
        .with_client_auth_cert(tls.chain.clone(), tls.key.der().clone_key())
        .map_err(|e| MeshTlsError(format!("cert: {e}")))?;
    Ok(ClientTls {
        connector: TlsConnector::from(Arc::new(config)),
    })
}

/// The TLS server side: peers must present a certificate from the mesh CA.
fn server_tls(tls: &MeshTls) -> Result<TlsAcceptor, MeshTlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(tls)?, provider())
        .build()
        .map_err(|e| MeshTlsError(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| MeshTlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.der().clone_key())
        .map_err(|e| MeshTlsError(format!("cert: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The mesh settings of `config`, or `None` when this instance has no entry in the
/// instance lists (no mesh).
pub fn settings(config: &Config) -> Result<Option<Settings>, MeshTlsError> {
    let Some(me) = config.own_instance() else {
        return Ok(None);
    };
    let peers = config
        .instances()
        .filter(|(_, i)| i.name != me.name)
        .map(|(r, i)| Peer {
            name: i.name.clone(),
            region: config.regions[r].name.clone(),
            mesh: i.mesh,
        })
        .collect();
    let m = &config.mesh;
    Ok(Some(Settings {
        me: me.name.clone(),
        peers,
        interval: m.interval,
        timeout: m.timeout,
        rise: m.rise,
        fall: m.fall,
        key: m.secret.as_ref().map(|s| Key::new(s.expose())),
        tls: m.tls.as_ref().map(client_tls).transpose()?,
    }))
}

/// This instance's document: identity, readiness and its own region's backends (every
/// service's), with what the operator set them to.
pub fn document(inst: &Instance, active: &Active, digest: &str, view: &MeshView) -> NodeState {
    let snap = &active.routing;
    let now = Instant::now();
    let local: Vec<&RegionPool> = snap
        .pools()
        .filter(|(_, ri, _)| *ri == snap.local)
        .map(|(_, _, p)| p)
        .collect();
    let mut backends: Vec<BackendReport> = local
        .iter()
        .flat_map(|r| &r.members)
        .map(|m| BackendReport {
            id: m.state.id.to_string(),
            usable: m.state.usable(now),
            state: Some(m.state.admin().as_str().to_owned()),
        })
        .collect();
    backends.sort_by(|a, b| a.id.cmp(&b.id));
    backends.dedup_by(|a, b| a.id == b.id);
    let measured: Vec<u32> = local
        .iter()
        .map(|r| r.state.measured_us())
        .filter(|us| *us > 0)
        .collect();
    let latency_ms = if measured.is_empty() {
        0.0
    } else {
        measured.iter().map(|us| f64::from(*us)).sum::<f64>() / measured.len() as f64 / 1e3
    };
    NodeState {
        name: snap.config.node.name.clone(),
        region: snap.config.node.region.clone(),
        generation: snap.generation,
        config_digest: digest.to_string(),
        ready: inst.is_ready(),
        draining: inst.is_draining(),
        region_health: RegionReport {
            usable: backends.iter().filter(|b| b.usable).count() as u32,
            total: backends.len() as u32,
            latency_ms,
            backends,
        },
        unreachable: view.unreachable(),
    }
}

/// Whether a peer in `view` can take relayed requests: the mesh does not hold it down,
/// its document is fresh, and its region has a usable backend.
pub fn can_serve(view: &MeshView, name: &str) -> Option<bool> {
    let p = view.peer(name)?;
    if p.down {
        return Some(false);
    }
    let doc = p.state.as_ref()?;
    Some(doc.ready && !doc.draining && doc.region_health.usable > 0)
}

/// Applies `view` to `active`'s remote regions.
pub fn apply(view: &MeshView, active: &Active) {
    let snap = &active.routing;
    for (_, ri, region) in snap.pools() {
        if ri == snap.local {
            continue;
        }
        // The freshest report of an instance of the region that the mesh holds up.
        let report = view
            .peers
            .iter()
            .filter(|p| *p.region == *region.name && !p.down)
            .filter_map(|p| Some((p.state.as_ref()?, p.age?, p.rtt)))
            .min_by_key(|(_, age, _)| *age);
        if region.relay {
            for m in &region.members {
                m.state.set_remote(can_serve(view, &m.state.host));
            }
            let own = report.map(|(doc, _, _)| doc.region_health.latency_ms * 1e3);
            region
                .state
                .set_reported_latency(own.map(|us| us.clamp(1.0, f64::from(u32::MAX)) as u32));
            continue;
        }
        match report {
            Some((doc, _, rtt)) => {
                for m in &region.members {
                    let verdict = doc
                        .region_health
                        .backends
                        .iter()
                        .find(|b| *b.id == *m.state.id)
                        .map(|b| b.usable);
                    m.state.set_remote(verdict);
                }
                let rtt_us = rtt.map_or(0.0, |r| r.as_secs_f64() * 1e6);
                let us = doc.region_health.latency_ms * 1e3 + rtt_us;
                region
                    .state
                    .set_remote_latency(Some(us.clamp(1.0, f64::from(u32::MAX)) as u32));
                let own = doc.region_health.latency_ms * 1e3;
                region
                    .state
                    .set_reported_latency(Some(own.clamp(1.0, f64::from(u32::MAX)) as u32));
            }
            None => {
                for m in &region.members {
                    m.state.set_remote(None);
                }
                region.state.set_remote_latency(None);
                region.state.set_reported_latency(None);
            }
        }
    }
}

/// The background service that runs the mesh of an instance.
pub struct MeshService {
    inst: Arc<Instance>,
    mesh: Arc<Mesh>,
}

impl MeshService {
    /// The mesh service of `inst`, publishing into `mesh`.
    pub fn new(inst: Arc<Instance>, mesh: Arc<Mesh>) -> Self {
        MeshService { inst, mesh }
    }
}

#[async_trait]
impl BackgroundService for MeshService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let active = self.inst.active();
        let config = &active.routing.config;
        let polled = || self.inst.readiness.mark(Condition::MeshPolled);
        let Some(me) = config.own_instance() else {
            polled();
            return;
        };
        let initial = match settings(config) {
            Ok(Some(s)) => s,
            Ok(None) => {
                polled();
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "mesh disabled");
                polled();
                return;
            }
        };
        let acceptor = match config.mesh.tls.as_ref().map(server_tls).transpose() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "mesh disabled");
                polled();
                return;
            }
        };
        let listener = match meridian_mesh::server::bind(me.mesh) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(address = %me.mesh, error = %e, "cannot listen for the mesh");
                return;
            }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let key = initial.key.clone();
        tokio::spawn(meridian_mesh::server::serve(
            listener,
            acceptor,
            key,
            self.mesh.published(),
            self.mesh.served_bytes.clone(),
            stop_rx.clone(),
        ));
        let (settings_tx, settings_rx) = watch::channel(initial.clone());
        tokio::spawn(self.mesh.clone().run(settings_rx, stop_rx));
        let mut changes = self.inst.subscribe();
        let mut digest = (active.routing.generation, config.digest());
        let mut current = initial;
        let mut tick = tokio::time::interval(current.interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = changes.changed() => {
                    if r.is_err() { break; }
                    let active = self.inst.active();
                    if let Ok(Some(s)) = settings(&active.routing.config) {
                        if s.interval != current.interval {
                            tick = tokio::time::interval(s.interval);
                        }
                        current = s.clone();
                        settings_tx.send_replace(s);
                    }
                    continue;
                }
                _ = shutdown.changed() => break,
            }
            let active = self.inst.active();
            if digest.0 != active.routing.generation {
                digest = (active.routing.generation, active.routing.config.digest());
            }
            let view = self.mesh.refresh(&current, &digest.1);
            apply(&view, &active);
            if view
                .peers
                .iter()
                .all(|p| p.age.is_some() || p.error.is_some())
            {
                polled();
            }
            self.mesh
                .publish(&document(&self.inst, &active, &digest.1, &view));
        }
        let _ = stop_tx.send(true);
    }
}

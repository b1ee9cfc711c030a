//! The GeoDNS service: serves the sockets bound at start, and keeps the answerer's view
//! current — the active snapshot, and every instance's state from the mesh (this instance
//! from itself) — refreshing it every [`REFRESH`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use meridian_dns::{Answerer, InstanceState, Listeners};
use meridian_mesh::MeshView;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;
use tokio::time::Instant;

use super::instance::{Active, Instance};
use super::readiness::Condition;

/// How often the health view handed to GeoDNS is refreshed (the mesh itself polls every
/// `mesh.interval`; local probe results count at once).
pub const REFRESH: Duration = Duration::from_millis(200);

/// The state of `inst` (an instance of the config) as GeoDNS should see it.
pub fn instance_state(
    me: &Instance,
    active: &Active,
    view: &MeshView,
    inst: &meridian_config::Instance,
) -> InstanceState {
    let snap = &active.routing;
    if inst.name == snap.config.node.name {
        // Readiness is asked per query by the answerer itself.
        return InstanceState {
            up: !me.is_draining(),
            usable_backends: snap
                .pools()
                .filter(|(_, ri, _)| *ri == snap.local)
                .map(|(_, _, p)| usable_now(p))
                .sum(),
        };
    }
    match view.peer(&inst.name) {
        Some(p) => match p.state.as_ref() {
            Some(doc) => InstanceState {
                up: !p.down && doc.ready && !doc.draining,
                usable_backends: doc.region_health.usable,
            },
            None => InstanceState {
                up: false,
                usable_backends: 0,
            },
        },
        None => InstanceState {
            up: false,
            usable_backends: 0,
        },
    }
}

/// Usable backends of a local pool right now (not as of the last measurement tick,
/// so a region going down leaves the answers at once).
fn usable_now(region: &meridian_routing::RegionPool) -> u32 {
    let now = Instant::now();
    region
        .members
        .iter()
        .filter(|m| m.state.usable(now))
        .count() as u32
}

/// The background service running GeoDNS for an instance.
pub struct GeoDnsService {
    inst: Arc<Instance>,
    answerer: Arc<Answerer>,
    listeners: Mutex<Option<Listeners>>,
}

impl GeoDnsService {
    /// Serves `listeners` (bound by [`crate::server::build`]) with `answerer`.
    pub fn new(inst: Arc<Instance>, answerer: Arc<Answerer>, listeners: Listeners) -> Self {
        GeoDnsService {
            inst,
            answerer,
            listeners: Mutex::new(Some(listeners)),
        }
    }

    fn refresh(&self) {
        let active = self.inst.active();
        let view = self.inst.mesh.view();
        let inst = &self.inst;
        let result = self
            .answerer
            .update(active.clone(), |i| instance_state(inst, &active, &view, i));
        if let Err(e) = result {
            tracing::error!(error = %e, "GeoDNS keeps the previous zones");
        }
    }
}

#[async_trait]
impl BackgroundService for GeoDnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listeners) = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        self.refresh();
        let (stop_tx, stop_rx) = watch::channel(false);
        let served = tokio::spawn(listeners.serve(self.answerer.clone(), stop_rx));
        let mut changes = self.inst.subscribe();
        let readiness = self.inst.readiness.clone();
        loop {
            // Until the rest of readiness is met, look often: the instance becomes ready
            // only once GeoDNS has seen it so (probed backends, polled peers).
            let wait = if readiness.is_met(Condition::GeoDnsViewed) {
                REFRESH
            } else {
                Duration::from_millis(10)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = changes.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
            let others = readiness.met_except(Condition::GeoDnsViewed);
            self.refresh();
            if others {
                readiness.mark(Condition::GeoDnsViewed);
            }
        }
        // Stopping (or upgrading: the new process has bound the same addresses).
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
    }
}

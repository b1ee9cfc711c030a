//! The background service that turns SIGHUP, file changes and DNS discovery's rebuild
//! requests into work for the [`Reloader`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, oneshot};

use super::reloader::{Reloader, Trigger};
use super::watch::{start_watching, WatchSetup};
use crate::control::readiness::Condition;
use crate::control::systemd;

/// The reload triggers of one instance.
pub struct ReloadTriggers {
    reloader: Arc<Reloader>,
    rebuilds: Mutex<Option<mpsc::UnboundedReceiver<oneshot::Sender<()>>>>,
}

impl ReloadTriggers {
    /// Triggers for `reloader`, also serving DNS discovery's `rebuilds` requests.
    pub fn new(
        reloader: Arc<Reloader>,
        rebuilds: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) -> Self {
        ReloadTriggers {
            reloader,
            rebuilds: Mutex::new(Some(rebuilds)),
        }
    }

    fn watch_setup(&self) -> WatchSetup {
        let active = self.reloader.instance().active();
        WatchSetup::of(&active.routing.config, self.reloader.config_path())
    }
}

/// Runs a reload on the blocking pool, telling systemd.
async fn run_reload(reloader: &Arc<Reloader>, trigger: Trigger) {
    systemd::notify_reloading();
    let r = reloader.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || r.reload(trigger)).await {
        tracing::error!(error = %e, "reload task failed");
    }
    // Reloading is over. Before the instance first became ready, readiness says READY=1.
    if reloader.instance().is_ready() {
        systemd::notify_ready();
    }
}

/// Rebuilds the snapshot for new DNS answers on the blocking pool.
async fn run_rebuild(reloader: &Arc<Reloader>) {
    let r = reloader.clone();
    let done = tokio::task::spawn_blocking(move || r.rebuild_current()).await;
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "snapshot rebuild after DNS change failed"),
        Err(e) => tracing::error!(error = %e, "snapshot rebuild task failed"),
    }
}

#[async_trait]
impl BackgroundService for ReloadTriggers {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload by file change or POST /reload");
                None
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inst = self.reloader.instance().clone();
        let mut changes = inst.subscribe();
        let mut setup = self.watch_setup();
        let mut _watcher = start_watching(&setup, &tx);
        let mut rebuilds = self.rebuilds.lock().ok().and_then(|mut r| r.take());
        inst.readiness.mark(Condition::TriggersArmed);
        loop {
            tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP received: reloading");
                    run_reload(&self.reloader, Trigger::Sighup).await;
                }
                Some(()) = rx.recv() => {
                    // Debounce: editors write in several steps; wait for quiet.
                    let quiet = setup.debounce.max(Duration::from_millis(10));
                    while let Ok(Some(())) = tokio::time::timeout(quiet, rx.recv()).await {}
                    tracing::info!("config file changed: reloading");
                    run_reload(&self.reloader, Trigger::FileChange).await;
                }
                Some(done) = async { match rebuilds.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    run_rebuild(&self.reloader).await;
                    let _ = done.send(());
                }
                Ok(()) = changes.changed() => {
                    // A reload may have changed what to watch (`[reload]`, the GeoIP
                    // database, certificate files): follow it.
                    let next = self.watch_setup();
                    if next != setup {
                        _watcher = start_watching(&next, &tx);
                        setup = next;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

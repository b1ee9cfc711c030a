//! Hot reload: SIGHUP, a change of the config file, or `POST /reload` →
//! parse → validate → build a new snapshot → one atomic swap.
//!
//! A file that fails validation never replaces the running config: the errors are logged,
//! counted (`meridian_reloads_total{result="invalid"}`) and shown in `/status`. Changes a
//! swap cannot apply (listeners, threads, logging setup) are refused as a whole and reported
//! as needing a restart or graceful upgrade; nothing is half-applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use meridian_config::Config;
use notify::{EventKind, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use crate::instance::{build_locator, Instance, ReloadRecord};
use crate::snapshot::Snapshot;

/// The outcome of a reload that did not fail validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new snapshot is in use.
    Applied {
        /// Its generation.
        generation: u64,
    },
    /// The file changes settings that need a restart or graceful upgrade; nothing applied.
    NeedsUpgrade(String),
}

/// What differs between `old` and `new` that a snapshot swap cannot apply.
pub fn unswappable(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.listeners.http != new.listeners.http {
        out.push("listeners.http".to_string());
    }
    if old.listeners.proxy_protocol != new.listeners.proxy_protocol {
        out.push("listeners.proxy_protocol".to_string());
    }
    let https = |c: &Config| -> Vec<(std::net::SocketAddr, bool)> {
        c.listeners
            .https
            .iter()
            .map(|l| (l.address, l.proxy_protocol))
            .collect()
    };
    if https(old) != https(new) {
        out.push("listeners.https addresses or proxy_protocol".to_string());
    }
    if old.listeners.redirect_http != new.listeners.redirect_http {
        out.push("listeners.redirect_http".to_string());
    }
    if old.listeners.admin != new.listeners.admin {
        out.push("listeners.admin".to_string());
    }
    if old.threads != new.threads {
        out.push("threads".to_string());
    }
    if old.logging.level != new.logging.level || old.logging.format != new.logging.format {
        out.push("logging.level/format".to_string());
    }
    if old.node.region != new.node.region {
        out.push("node.region".to_string());
    }
    out
}

/// Records a reload attempt; `generation` is the snapshot generation in use after it.
fn record(
    inst: &Instance,
    trigger: &str,
    result: &'static str,
    message: Option<String>,
    generation: u64,
) {
    inst.metrics.reload(result);
    if let Ok(mut last) = inst.last_reload.lock() {
        *last = Some(ReloadRecord {
            at: SystemTime::now(),
            trigger: trigger.to_string(),
            result,
            message,
            generation,
        });
    }
}

/// Re-reads the instance's config file and swaps it in if it is valid.
///
/// Blocking (file I/O, GeoIP open): call from a blocking context.
pub fn reload(inst: &Instance, trigger: &str) -> Result<ReloadOutcome, String> {
    let _serial = inst
        .reload_lock
        .lock()
        .map_err(|_| "reload lock poisoned")?;
    let Some(path) = inst.config_path.clone() else {
        let msg = "this instance was not started from a config file; nothing to reload".to_string();
        record(
            inst,
            trigger,
            "invalid",
            Some(msg.clone()),
            inst.snapshot().generation,
        );
        return Err(msg);
    };
    let config = match meridian_config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            let msg = errors.to_string();
            tracing::error!(trigger, file = %path.display(), "reload rejected; the running config stays:\n{msg}");
            record(
                inst,
                trigger,
                "invalid",
                Some(msg.clone()),
                inst.snapshot().generation,
            );
            return Err(msg);
        }
    };
    apply(inst, config, trigger)
}

/// Swaps in an already validated config.
pub fn apply(inst: &Instance, config: Config, trigger: &str) -> Result<ReloadOutcome, String> {
    let current = inst.snapshot();
    let blocked = unswappable(&current.config, &config);
    if !blocked.is_empty() {
        let msg = format!(
            "changed settings need a restart or graceful upgrade: {}; nothing was applied",
            blocked.join(", ")
        );
        tracing::warn!(trigger, "{msg}");
        record(
            inst,
            trigger,
            "needs_upgrade",
            Some(msg.clone()),
            current.generation,
        );
        return Ok(ReloadOutcome::NeedsUpgrade(msg));
    }
    let origin = config
        .source
        .as_deref()
        .unwrap_or(Path::new("<config>"))
        .display()
        .to_string();
    let reject = |e: &dyn std::fmt::Display| {
        let msg = format!("{origin}: {e}");
        tracing::error!(trigger, "reload rejected; the running config stays: {msg}");
        record(
            inst,
            trigger,
            "invalid",
            Some(msg.clone()),
            inst.snapshot().generation,
        );
        Err(msg)
    };
    let locator = match build_locator(&config) {
        Ok(l) => Arc::new(l),
        Err(e) => return reject(&e),
    };
    // Certificates are re-read by validation; build them all before anything is swapped.
    let certs = match crate::tls::cert_sets(&config.listeners.https) {
        Ok(c) => c,
        Err(e) => return reject(&e),
    };
    let swapped = match rebuild(inst, Arc::new(config), locator, &current, trigger, true) {
        Ok(s) => s,
        Err(e) => return reject(&e),
    };
    // Same listeners as before (`unswappable` checked), so the resolvers line up.
    for (resolver, set) in inst.certs.iter().zip(certs) {
        resolver.store(set);
    }
    let generation = swapped.generation;
    tracing::info!(
        trigger,
        generation,
        backends = swapped.backends,
        removed = swapped.removed,
        "config reloaded"
    );
    Ok(ReloadOutcome::Applied { generation })
}

/// What a [`rebuild`] swapped in.
#[derive(Debug, Clone, Copy)]
pub struct Swapped {
    /// The new snapshot's generation.
    pub generation: u64,
    /// Backends in it.
    pub backends: usize,
    /// Backends of the previous snapshot it no longer has.
    pub removed: usize,
}

/// Builds a snapshot of `config` over `current` (carrying live state by ID, with the
/// latest DNS answers) and swaps it in. Shared by reloads and DNS discovery; callers hold
/// `reload_lock`, so `current` is the snapshot in use. With `as_reload`, the swap is
/// recorded as a successful reload (`/status`, `meridian_reloads_total`); DNS-driven
/// rebuilds are not reloads and leave that record alone (a rejected reload stays visible).
pub fn rebuild(
    inst: &Instance,
    config: Arc<Config>,
    locator: Arc<meridian_geoip::Locator>,
    current: &Snapshot,
    trigger: &str,
    as_reload: bool,
) -> Result<Swapped, crate::tls::TlsError> {
    let answers = inst.dns.answers();
    let next = Snapshot::build(config, locator, Some(current), &inst.metrics, &answers)?;
    let generation = next.generation;
    let removed: Vec<(Arc<str>, Arc<str>)> = current
        .removed_in(&next)
        .into_iter()
        .map(|b| (b.region.clone(), b.addr_label.clone()))
        .collect();
    let backends = next.backends().count();
    // Recorded before the swap, so whoever sees the new generation also sees the record.
    if as_reload {
        record(inst, trigger, "ok", None, generation);
    }
    inst.swap(next);
    for (region, addr) in &removed {
        tracing::info!(trigger, region = %region, backend = %addr, "backend removed; requests in flight finish on it (draining)");
        inst.metrics.forget_backend(region, addr);
    }
    Ok(Swapped {
        generation,
        backends,
        removed: removed.len(),
    })
}

/// Rebuilds the current config's snapshot (after a DNS change), under the reload lock.
pub fn rebuild_current(inst: &Instance, trigger: &str) -> Result<(), String> {
    let _serial = inst
        .reload_lock
        .lock()
        .map_err(|_| "reload lock poisoned")?;
    let current = inst.snapshot();
    let swapped = rebuild(
        inst,
        current.config.clone(),
        current.locator.clone(),
        &current,
        trigger,
        false,
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(
        trigger,
        generation = swapped.generation,
        backends = swapped.backends,
        removed = swapped.removed,
        "backend addresses changed"
    );
    Ok(())
}

/// The background service that turns SIGHUP and file changes into reloads.
pub struct ReloadTriggers {
    inst: Arc<Instance>,
}

impl ReloadTriggers {
    /// Triggers for `inst`.
    pub fn new(inst: Arc<Instance>) -> Self {
        ReloadTriggers { inst }
    }
}

async fn run_reload(inst: &Arc<Instance>, trigger: &'static str) {
    crate::systemd::notify_reloading();
    let i = inst.clone();
    let result = tokio::task::spawn_blocking(move || reload(&i, trigger)).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "reload task failed");
    }
    // Reloading is over. Before the instance first became ready, readiness says READY=1.
    if inst.is_ready() {
        crate::systemd::notify_ready();
    }
}

/// What the file watcher is set up from: whether to watch, how long to wait for quiet,
/// and which files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchSetup {
    watch: bool,
    debounce: Duration,
    files: Vec<PathBuf>,
}

impl WatchSetup {
    fn of(inst: &Instance) -> Self {
        let snap = inst.snapshot();
        let config = &snap.config;
        WatchSetup {
            watch: config.reload.watch && inst.config_path.is_some(),
            debounce: config.reload.debounce,
            files: inst
                .config_path
                .iter()
                .cloned()
                .chain(watched_files(config))
                .map(|p| std::path::absolute(&p).unwrap_or(p))
                .collect(),
        }
    }
}

/// The files besides the config itself whose change triggers a reload: the GeoIP
/// database (replaced by geoipupdate) and every certificate, key and CA file (renewed by
/// an ACME client), so that a renewal is served without a SIGHUP.
pub fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config.geoip.database.iter().cloned().collect();
    for l in &config.listeners.https {
        for c in &l.certificates {
            files.push(c.cert_file.clone());
            files.push(c.key_file.clone());
        }
    }
    for r in &config.regions {
        if let Some(tls) = &r.tls {
            files.extend(tls.ca_file.iter().cloned());
            if let Some(c) = &tls.client_cert {
                files.push(c.cert_file.clone());
                files.push(c.key_file.clone());
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

/// Watches the directories of `files` (so that replace-by-rename, as editors, config
/// managers, geoipupdate and ACME clients do it, is seen) and sends a unit on every event
/// that touches one of them.
fn watch_files(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let wanted: std::collections::HashSet<PathBuf> = files.iter().cloned().collect();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| wanted.contains(p)) {
            let _ = tx.send(());
        }
    })?;
    let mut dirs: Vec<&Path> = files
        .iter()
        .map(|f| {
            f.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Starts watching as `setup` says (`None` when watching is off or impossible).
fn start_watching(
    setup: &WatchSetup,
    tx: &mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    if !setup.watch {
        return None;
    }
    match watch_files(&setup.files, tx.clone()) {
        Ok(w) => {
            tracing::debug!(files = ?setup.files, "watching for changes");
            Some(w)
        }
        Err(e) => {
            tracing::error!(files = ?setup.files, error = %e, "cannot watch the config files; reload with SIGHUP or POST /reload");
            None
        }
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
        let mut changes = self.inst.subscribe();
        let mut setup = WatchSetup::of(&self.inst);
        let mut _watcher = start_watching(&setup, &tx);
        self.inst
            .triggers_armed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        loop {
            tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP received: reloading");
                    run_reload(&self.inst, "SIGHUP").await;
                }
                Some(()) = rx.recv() => {
                    // Debounce: editors write in several steps; wait for quiet.
                    let quiet = setup.debounce.max(Duration::from_millis(10));
                    while let Ok(Some(())) = tokio::time::timeout(quiet, rx.recv()).await {}
                    tracing::info!("config file changed: reloading");
                    run_reload(&self.inst, "file change").await;
                }
                Ok(()) = changes.changed() => {
                    // A reload may have changed what to watch (`[reload]`, the GeoIP
                    // database, certificate files): follow it.
                    let next = WatchSetup::of(&self.inst);
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

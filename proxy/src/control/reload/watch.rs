//! Watching the config file and every file it names (GeoIP database, certificates, keys,
//! CAs) for changes, rename-safe, so that a renewal or an edit is applied without a SIGHUP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_config::Config;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// What the file watcher is set up from: whether to watch, how long to wait for quiet,
/// and which files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSetup {
    watch: bool,
    /// How long to wait for quiet after a change.
    pub debounce: Duration,
    files: Vec<PathBuf>,
}

impl WatchSetup {
    /// What to watch for the running `config`, started from `config_path`.
    pub fn of(config: &Config, config_path: Option<&Path>) -> Self {
        WatchSetup {
            watch: config.reload.watch && config_path.is_some(),
            debounce: config.reload.debounce,
            files: config_path
                .map(Path::to_path_buf)
                .into_iter()
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
    let pools = config.services.iter().flat_map(|s| &s.pools);
    let regions = config.regions.iter().map(|r| &r.tls);
    for tls in regions.chain(pools.map(|p| &p.tls)).flatten() {
        files.extend(tls.ca_file.iter().cloned());
        if let Some(c) = &tls.client_cert {
            files.push(c.cert_file.clone());
            files.push(c.key_file.clone());
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
pub fn start_watching(
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

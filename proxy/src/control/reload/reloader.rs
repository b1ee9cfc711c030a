//! The [`Reloader`]: the one place that builds and swaps active snapshots — reloads of the
//! config file (SIGHUP, file change, `POST /reload`) and rebuilds for new DNS answers —
//! one at a time, recording each reload's outcome (the last [`HISTORY`]) for `/status` and
//! the metrics.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use meridian_config::Config;
use meridian_geoip::Locator;
use prometheus::{IntCounterVec, IntGauge};

use super::diff::unswappable;
use crate::control::discovery::DnsState;
use crate::control::instance::{build_locator, Active, Instance, LocatorError};
use crate::edge::tls::{cert_sets, CertError, CertResolver};
use crate::observe::metrics::{counter_vec, gauge};
use crate::request::upstream::TlsError;

/// What started a reload or rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `SIGHUP`.
    Sighup,
    /// A watched file changed.
    FileChange,
    /// `POST /reload` on the admin API.
    Admin,
    /// A backend DNS name's addresses changed (a rebuild, not a reload).
    Dns,
}

impl Trigger {
    /// The name shown in logs and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Sighup => "SIGHUP",
            Trigger::FileChange => "file change",
            Trigger::Admin => "admin",
            Trigger::Dns => "dns",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a reload that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new snapshot is in use.
    Applied {
        /// Its generation.
        generation: u64,
    },
    /// The file changes settings that need a restart or graceful upgrade; nothing applied.
    NeedsUpgrade {
        /// The settings, by config key.
        settings: Vec<&'static str>,
    },
}

/// Why a reload was rejected; the running snapshot stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The instance was not started from a config file.
    #[error("this instance was not started from a config file; nothing to reload")]
    NotFromFile,
    /// The file failed validation (every error, as `meridian check` prints them).
    #[error("{0}")]
    Invalid(String),
    /// The GeoIP database could not be opened.
    #[error("{origin}: {source}")]
    Locator {
        /// The config file.
        origin: String,
        /// What failed.
        source: LocatorError,
    },
    /// A listener certificate could not be loaded.
    #[error("{origin}: {source}")]
    Certificate {
        /// The config file.
        origin: String,
        /// What failed.
        source: CertError,
    },
    /// A region's upstream TLS could not be set up.
    #[error("{origin}: {source}")]
    Upstream {
        /// The config file.
        origin: String,
        /// What failed.
        source: TlsError,
    },
    /// Another reload is running (the admin API does not queue reloads).
    #[error("a reload is already running; try again when it is done")]
    Busy,
    /// The reload panicked (a bug); the running snapshot stays and reloads go on working.
    #[error("reload failed unexpectedly: {0}")]
    Panicked(String),
}

/// How a reload ended, as `/status` and `meridian_reloads_total{result}` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Applied.
    Ok,
    /// Rejected: the file (or a file it names) is invalid.
    Invalid,
    /// Refused: the changes need a restart or graceful upgrade.
    NeedsUpgrade,
    /// Not possible: the instance has no config file.
    Unavailable,
    /// Not started: another reload was running.
    Busy,
    /// Failed unexpectedly.
    Failed,
}

impl ReloadResult {
    /// The spelling in `/status`, the admin API and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Invalid => "invalid",
            ReloadResult::NeedsUpgrade => "needs_upgrade",
            ReloadResult::Unavailable => "unavailable",
            ReloadResult::Busy => "busy",
            ReloadResult::Failed => "failed",
        }
    }
}

impl ReloadError {
    /// How this error is reported.
    pub fn result(&self) -> ReloadResult {
        match self {
            ReloadError::NotFromFile => ReloadResult::Unavailable,
            ReloadError::Busy => ReloadResult::Busy,
            ReloadError::Panicked(_) => ReloadResult::Failed,
            _ => ReloadResult::Invalid,
        }
    }
}

/// How many reload outcomes `/status` lists (`reloads`, newest first).
pub const HISTORY: usize = 10;

/// The outcome of a reload attempt, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// When it happened.
    pub at: SystemTime,
    /// What triggered it.
    pub trigger: Trigger,
    /// How it ended.
    pub result: ReloadResult,
    /// The errors, for a reload that was not applied.
    pub message: Option<String>,
    /// The snapshot generation in use afterwards.
    pub generation: u64,
}

/// What a rebuild swapped in.
#[derive(Debug, Clone, Copy)]
pub struct Swapped {
    /// The new snapshot's generation.
    pub generation: u64,
    /// Backends in it.
    pub backends: usize,
    /// Backends of the previous snapshot it no longer has.
    pub removed: usize,
}

/// Builds and swaps snapshots, one at a time.
pub struct Reloader {
    inst: Arc<Instance>,
    config_path: Option<PathBuf>,
    /// Reloads keep the identity the process started with (`--node`, `MERIDIAN_NODE`).
    overrides: meridian_config::Overrides,
    dns: Arc<DnsState>,
    certs: Vec<Arc<CertResolver>>,
    /// Serializes reloads and rebuilds (SIGHUP, file watch, the admin API and DNS race).
    lock: Mutex<()>,
    /// The latest reload outcomes, oldest first (at most [`HISTORY`]).
    history: Mutex<VecDeque<ReloadRecord>>,
    reloads: IntCounterVec,
    /// 0 while the config file is not what runs: the latest reload was rejected.
    last_ok: IntGauge,
}

/// Locks `m`, recovering from a panic while it was held (the guarded data is still
/// consistent: every writer replaces it whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reloader {
    /// A reloader for `inst`, started from `config_path` (if any), with the DNS answers
    /// of `dns` and the HTTPS listeners' certificate resolvers `certs`.
    pub fn new(
        inst: Arc<Instance>,
        config_path: Option<PathBuf>,
        dns: Arc<DnsState>,
        certs: Vec<Arc<CertResolver>>,
    ) -> Reloader {
        let reloads = counter_vec(
            &inst.registry,
            "meridian_reloads_total",
            "Configuration reloads by result",
            &["result"],
        );
        let overrides = meridian_config::Overrides {
            node_name: Some(inst.active().routing.config.node.name.clone()),
        };
        // Every result's series exists from the start (at 0), so rates and alerts on
        // failed reloads have data before the first failure.
        for result in [
            ReloadResult::Ok,
            ReloadResult::Invalid,
            ReloadResult::NeedsUpgrade,
            ReloadResult::Unavailable,
            ReloadResult::Busy,
            ReloadResult::Failed,
        ] {
            reloads.with_label_values(&[result.as_str()]);
        }
        let last_ok = gauge(
            &inst.registry,
            "meridian_config_last_reload_successful",
            "1 unless the latest reload of the config file was rejected (the file on disk is not what runs)",
        );
        last_ok.set(1);
        Reloader {
            inst,
            config_path,
            overrides,
            dns,
            certs,
            lock: Mutex::new(()),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            reloads,
            last_ok,
        }
    }

    /// The instance.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.inst
    }

    /// The config file reloads re-read.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The last reload attempt.
    pub fn last(&self) -> Option<ReloadRecord> {
        lock(&self.history).back().cloned()
    }

    /// The latest reload attempts (at most [`HISTORY`]), newest first.
    pub fn history(&self) -> Vec<ReloadRecord> {
        lock(&self.history).iter().rev().cloned().collect()
    }

    fn record(&self, trigger: Trigger, result: ReloadResult, message: Option<String>) {
        self.record_at(
            trigger,
            result,
            message,
            self.inst.active().routing.generation,
        );
    }

    fn record_at(
        &self,
        trigger: Trigger,
        result: ReloadResult,
        message: Option<String>,
        generation: u64,
    ) {
        self.reloads.with_label_values(&[result.as_str()]).inc();
        match result {
            ReloadResult::Ok => self.last_ok.set(1),
            ReloadResult::Invalid | ReloadResult::NeedsUpgrade | ReloadResult::Failed => {
                self.last_ok.set(0)
            }
            // No config file (`meridian demo`), or another reload ran: this attempt says
            // nothing about whether the file on disk is what runs.
            ReloadResult::Unavailable | ReloadResult::Busy => {}
        }
        let mut history = lock(&self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(ReloadRecord {
            at: SystemTime::now(),
            trigger,
            result,
            message,
            generation,
        });
    }

    /// Re-reads the config file and swaps it in if it is valid. A panic inside is caught
    /// and reported as [`ReloadError::Panicked`]; the next reload works as usual.
    ///
    /// Blocking (file I/O, GeoIP open): call from a blocking context.
    pub fn reload(&self, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let serial = lock(&self.lock);
        self.reload_serialized(serial, trigger)
    }

    /// Like [`Reloader::reload`], but refuses at once with [`ReloadError::Busy`] (counted,
    /// not recorded as the last reload) when another reload or rebuild is running, so that
    /// a flood of requests cannot pile up blocked threads.
    pub fn try_reload(&self, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let serial = match self.lock.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.reloads
                    .with_label_values(&[ReloadResult::Busy.as_str()])
                    .inc();
                return Err(ReloadError::Busy);
            }
        };
        self.reload_serialized(serial, trigger)
    }

    fn reload_serialized(
        &self,
        _serial: MutexGuard<'_, ()>,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, ReloadError> {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.reload_locked(trigger)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(ReloadError::Panicked(what))
            });
        match &result {
            Ok(ReloadOutcome::Applied { .. }) => {}
            Ok(ReloadOutcome::NeedsUpgrade { settings }) => {
                let msg = needs_upgrade_message(settings);
                tracing::warn!(%trigger, "{msg}");
                self.record(trigger, ReloadResult::NeedsUpgrade, Some(msg));
            }
            Err(e) => {
                tracing::error!(%trigger, "reload rejected; the running config stays:\n{e}");
                self.record(trigger, e.result(), Some(e.to_string()));
            }
        }
        result
    }

    fn reload_locked(&self, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NotFromFile)?;
        let config = meridian_config::load_with(path, &self.overrides)
            .map_err(|errors| ReloadError::Invalid(errors.to_string()))?;
        self.apply_locked(config, trigger)
    }

    /// Swaps in an already validated config (the reload lock is held).
    fn apply_locked(&self, config: Config, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let current = self.inst.active();
        let settings = unswappable(&current.routing.config, &config);
        if !settings.is_empty() {
            return Ok(ReloadOutcome::NeedsUpgrade { settings });
        }
        let origin = config
            .source
            .as_deref()
            .unwrap_or(Path::new("<config>"))
            .display()
            .to_string();
        let locator = build_locator(&config).map_err(|source| ReloadError::Locator {
            origin: origin.clone(),
            source,
        })?;
        // Certificates are re-read by validation; build them all before anything is swapped.
        let certs =
            cert_sets(&config.listeners.https).map_err(|source| ReloadError::Certificate {
                origin: origin.clone(),
                source,
            })?;
        let swapped = self
            .rebuild(Arc::new(config), Arc::new(locator), &current, Some(trigger))
            .map_err(|source| ReloadError::Upstream { origin, source })?;
        // Same listeners as before (`unswappable` checked), so the resolvers line up.
        for (resolver, set) in self.certs.iter().zip(certs) {
            resolver.store(set);
        }
        tracing::info!(
            %trigger,
            generation = swapped.generation,
            backends = swapped.backends,
            removed = swapped.removed,
            "config reloaded"
        );
        Ok(ReloadOutcome::Applied {
            generation: swapped.generation,
        })
    }

    /// Builds the active state of `config` over `current` (carrying live state by ID, with
    /// the latest DNS answers) and swaps it in; the reload lock is held, so `current` is
    /// the state in use. With `reload`, the swap is recorded as a successful reload
    /// (`/status`, `meridian_reloads_total`); DNS-driven rebuilds are not reloads and leave
    /// that record alone (a rejected reload stays visible).
    fn rebuild(
        &self,
        config: Arc<Config>,
        locator: Arc<Locator>,
        current: &Active,
        reload: Option<Trigger>,
    ) -> Result<Swapped, TlsError> {
        let answers = self.dns.answers();
        let metrics = &self.inst.routing_metrics;
        let runtime = self.inst.runtime.get();
        let next = Active::build(config, locator, Some(current), metrics, &answers, &runtime)?;
        let generation = next.routing.generation;
        let removed: Vec<(Arc<str>, Arc<str>)> = current
            .routing
            .removed_in(&next.routing)
            .into_iter()
            .map(|b| (b.region.clone(), b.addr_label.clone()))
            .collect();
        let backends = next.routing.backends().count();
        // Recorded before the swap, so whoever sees the new generation also sees the record.
        if let Some(trigger) = reload {
            self.record_at(trigger, ReloadResult::Ok, None, generation);
        }
        self.inst.swap(next);
        let trigger = reload.unwrap_or(Trigger::Dns);
        for (region, addr) in &removed {
            tracing::info!(%trigger, region = %region, backend = %addr, "backend removed; requests in flight finish on it (draining)");
            metrics.forget_backend(region, addr);
        }
        Ok(Swapped {
            generation,
            backends,
            removed: removed.len(),
        })
    }

    /// Runs `f` with reloads and rebuilds held off (a runtime change and a snapshot build
    /// must not interleave: the build would apply the settings from before the change);
    /// when it succeeds and `rebuild` says so of its result, rebuilds the current config's
    /// snapshot before letting them go.
    pub fn exclusive<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
        rebuild: impl FnOnce(&T) -> bool,
    ) -> Result<T, E> {
        let _serial = lock(&self.lock);
        let out = f()?;
        if rebuild(&out) {
            let current = self.inst.active();
            let routing = &current.routing;
            let config = routing.config.clone();
            if let Err(e) = self.rebuild(config, routing.locator.clone(), &current, None) {
                tracing::error!(error = %e, "rebuild after a runtime change failed; weights apply at the next reload");
            }
        }
        Ok(out)
    }

    /// Rebuilds the current config's snapshot with the latest DNS answers.
    pub fn rebuild_current(&self) -> Result<Swapped, TlsError> {
        let _serial = lock(&self.lock);
        let current = self.inst.active();
        let routing = &current.routing;
        let swapped = self.rebuild(
            routing.config.clone(),
            routing.locator.clone(),
            &current,
            None,
        )?;
        tracing::info!(
            generation = swapped.generation,
            backends = swapped.backends,
            removed = swapped.removed,
            "backend addresses changed"
        );
        Ok(swapped)
    }
}

/// The message of a reload refused for `settings`.
pub fn needs_upgrade_message(settings: &[&str]) -> String {
    format!(
        "changed settings need a restart or graceful upgrade: {}; nothing was applied",
        settings.join(", ")
    )
}

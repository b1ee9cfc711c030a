//! A running Meridian instance: the current routing snapshot behind one `ArcSwap`, the
//! metrics, readiness, and the last reload's outcome. Shared by the proxy service, the
//! prober, the admin API and the reload triggers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use meridian_config::Config;
use meridian_geoip::{CountryCode, Locator, Override};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::tls::CertResolver;

/// The outcome of the latest reload attempt, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// When it happened.
    pub at: SystemTime,
    /// What triggered it (`SIGHUP`, `file change`, `admin`).
    pub trigger: String,
    /// `ok`, `invalid` or `needs_upgrade`.
    pub result: &'static str,
    /// The errors, for a rejected reload.
    pub message: Option<String>,
    /// The snapshot generation in use afterwards.
    pub generation: u64,
}

/// One running instance.
pub struct Instance {
    snapshot: ArcSwap<Snapshot>,
    /// Metric families.
    pub metrics: Metrics,
    /// The config file, if the instance was started from one (reloads re-read it).
    pub config_path: Option<PathBuf>,
    /// Set once every backend has been probed at least once.
    pub probed: AtomicBool,
    /// Set once the reload triggers are armed: the SIGHUP handler installed and the config,
    /// certificate and GeoIP files watched (when watching is on). A change made after
    /// readiness is then never missed.
    pub triggers_armed: AtomicBool,
    /// Set once the instance is ready: listeners up, first probe round and first DNS
    /// resolutions done, reload triggers armed (see [`crate::readiness`]).
    pub ready: AtomicBool,
    /// Set when the process starts handing over to a new one or shutting down: responses
    /// then carry `Connection: close`, so clients move to fresh connections (served by
    /// the new process) instead of reusing ones about to be closed.
    pub draining: AtomicBool,
    /// When the instance started.
    pub started_at: SystemTime,
    changed: watch::Sender<u64>,
    /// The last reload attempt.
    pub last_reload: Mutex<Option<ReloadRecord>>,
    /// Serializes reloads (SIGHUP, file watch and the admin API may race).
    pub(crate) reload_lock: Mutex<()>,
    /// The SNI certificate resolvers of the HTTPS listeners, in `listeners.https` order.
    pub certs: Vec<Arc<CertResolver>>,
    /// Resolved backend DNS names.
    pub dns: crate::discovery::DnsState,
    /// Retries left across all requests (survives reloads).
    pub retry_budget: crate::budget::RetryBudget,
}

/// Errors building the GeoIP locator or the TLS state of a config.
#[derive(Debug, thiserror::Error)]
pub enum LocatorError {
    /// The database could not be opened.
    #[error("geoip.database: {0}")]
    Database(#[from] meridian_geoip::GeoIpError),
    /// An override's country code is not a two-letter code.
    #[error("geoip.overrides: country {0:?} is not a two-letter code")]
    Country(String),
    /// TLS state (certificates, upstream trust) could not be built.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Builds the GeoIP locator a config asks for (reads the database file afresh).
pub fn build_locator(config: &Config) -> Result<Locator, LocatorError> {
    let overrides = config
        .geoip
        .overrides
        .iter()
        .map(|o| {
            Ok(Override {
                network: o.network,
                country: CountryCode::parse(&o.country)
                    .ok_or_else(|| LocatorError::Country(o.country.clone()))?,
                coordinates: o.coordinates.map(|(latitude, longitude)| {
                    meridian_geoip::Coordinates {
                        latitude,
                        longitude,
                    }
                }),
            })
        })
        .collect::<Result<Vec<_>, LocatorError>>()?;
    Ok(match &config.geoip.database {
        None => Locator::builtin(overrides)?,
        Some(path) => Locator::open(path, overrides)?,
    })
}

impl Instance {
    /// Builds the first snapshot from `config`.
    pub fn new(config: Config) -> Result<Arc<Instance>, LocatorError> {
        let locator = Arc::new(build_locator(&config)?);
        let metrics = Metrics::new();
        let config_path = config.source.clone();
        let certs = crate::tls::cert_sets(&config.listeners.https)?
            .into_iter()
            .map(|set| Arc::new(CertResolver::new(set)))
            .collect();
        let snap = Snapshot::build(
            Arc::new(config),
            locator,
            None,
            &metrics,
            &crate::discovery::Answers::new(),
        )?;
        metrics.config_generation.set(snap.generation as i64);
        let (changed, _) = watch::channel(snap.generation);
        Ok(Arc::new(Instance {
            snapshot: ArcSwap::from_pointee(snap),
            metrics,
            config_path,
            probed: AtomicBool::new(false),
            triggers_armed: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            started_at: SystemTime::now(),
            changed,
            last_reload: Mutex::new(None),
            reload_lock: Mutex::new(()),
            certs,
            dns: crate::discovery::DnsState::default(),
            retry_budget: crate::budget::RetryBudget::default(),
        }))
    }

    /// The current snapshot (one atomic load; hold it for the whole request).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Notified with the new generation after every swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Swaps in a new snapshot and tells the background services.
    pub(crate) fn swap(&self, snap: Snapshot) {
        let generation = snap.generation;
        self.metrics.config_generation.set(generation as i64);
        let snap = Arc::new(snap);
        self.snapshot.store(snap.clone());
        // Usable counts right away: a reload that replaced a region's backends must not
        // route by the old count until the next measurement tick.
        snap.measure(tokio::time::Instant::now());
        self.changed.send_replace(generation);
    }

    /// Whether the instance is ready (listeners up, first probe round done).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }
}

//! A running instance's shared state: the [`Active`] routing snapshot behind one `ArcSwap`,
//! the metric registry, readiness, the draining flag and the retry budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use meridian_config::Config;
use meridian_geoip::{CountryCode, Locator, Override};
use meridian_routing::admin::{Runtime, RuntimeSettings};
use meridian_routing::answers::Answers;
use meridian_routing::budget::RetryBudget;
use meridian_routing::{RoutingMetrics, Snapshot};
use prometheus::{IntGauge, Registry};
use tokio::sync::watch;

use super::overload::Overload;
use super::readiness::Readiness;
use crate::observe::metrics::gauge;
use crate::request::forwarding::Identity;
use crate::request::upstream::{TlsError, Upstreams};

/// What one request reads, loaded once: the routing snapshot (pingora-free) and, beside
/// it, what pingora needs for the same generation.
#[derive(Debug)]
pub struct Active {
    /// The routing core's snapshot.
    pub routing: Snapshot,
    /// Per-region upstream TLS (pingora's `HttpPeer` parts and the prober's client config).
    pub upstreams: Upstreams,
    /// This node's `Via` entries and the trusted proxies.
    pub identity: Identity,
}

impl AsRef<meridian_routing::Snapshot> for Active {
    fn as_ref(&self) -> &meridian_routing::Snapshot {
        &self.routing
    }
}

impl Active {
    /// Builds the next active state of `config` over `previous` (carrying live state by ID
    /// and reusing upstream TLS state whose settings did not change).
    pub fn build(
        config: Arc<Config>,
        locator: Arc<Locator>,
        previous: Option<&Active>,
        metrics: &RoutingMetrics,
        answers: &Answers,
        runtime: &RuntimeSettings,
    ) -> Result<Active, TlsError> {
        let upstreams = Upstreams::build(&config, previous.map(|p| &p.upstreams))?;
        let identity = Identity::of(&config);
        let routing = Snapshot::build(
            config,
            locator,
            previous.map(|p| &p.routing),
            metrics,
            answers,
            runtime,
        );
        Ok(Active {
            routing,
            upstreams,
            identity,
        })
    }
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
    Tls(#[from] TlsError),
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

/// The build time of the GeoIP database `active` routes with, for its gauge.
fn geoip_epoch(active: &Active) -> i64 {
    i64::try_from(active.routing.locator.info().build_epoch).unwrap_or(i64::MAX)
}

/// One running instance.
pub struct Instance {
    active: ArcSwap<Active>,
    changed: watch::Sender<u64>,
    /// The registry `/metrics` encodes; every component registers its families in it.
    pub registry: Registry,
    /// The routing core's families (per backend, per region).
    pub routing_metrics: RoutingMetrics,
    generation: IntGauge,
    geoip_built: IntGauge,
    /// Whether the instance is ready, and what it waits for.
    pub readiness: Arc<Readiness>,
    draining: AtomicBool,
    /// When the instance started.
    pub started_at: SystemTime,
    /// Retries left across all requests (survives reloads).
    pub retry_budget: RetryBudget,
    /// Requests in flight and memory: when to shed, when a graceful stop is done.
    pub overload: Arc<Overload>,
    /// The mesh of instances: what this instance knows of its peers.
    pub mesh: Arc<meridian_mesh::Mesh>,
    /// The GeoDNS answerer, when `[geodns]` is on (set once by `server::build`).
    pub geodns: std::sync::OnceLock<Arc<meridian_dns::Answerer>>,
    /// What the operator set at run time (drain, maintenance, weights), by stable ID.
    pub runtime: Runtime,
}

impl Instance {
    /// Builds the first snapshot from `config`, with the runtime settings of its state
    /// file (`admin.state_file`), if it has one.
    pub fn new(config: Config) -> Result<Arc<Instance>, LocatorError> {
        let locator = Arc::new(build_locator(&config)?);
        let registry = Registry::new();
        let routing_metrics = RoutingMetrics::register(&registry);
        let settings = match &config.admin.state_file {
            Some(path) => super::state_file::read_state(path),
            None => RuntimeSettings::default(),
        };
        let active = Active::build(
            Arc::new(config),
            locator,
            None,
            &routing_metrics,
            &Answers::new(),
            &settings,
        )?;
        let generation = gauge(
            &registry,
            "meridian_config_generation",
            "Generation of the routing snapshot in use",
        );
        generation.set(active.routing.generation as i64);
        let geoip_built = gauge(
            &registry,
            "meridian_geoip_database_build_timestamp_seconds",
            "Build time of the GeoIP database in use (Unix seconds, from its metadata)",
        );
        geoip_built.set(geoip_epoch(&active));
        let (changed, _) = watch::channel(active.routing.generation);
        let overload = Arc::new(Overload::new(&registry));
        let mesh = meridian_mesh::Mesh::new(&registry);
        Ok(Arc::new(Instance {
            active: ArcSwap::from_pointee(active),
            changed,
            routing_metrics,
            generation,
            geoip_built,
            readiness: Arc::new(Readiness::default()),
            draining: AtomicBool::new(false),
            started_at: SystemTime::now(),
            retry_budget: RetryBudget::default(),
            overload,
            mesh,
            geodns: std::sync::OnceLock::new(),
            registry,
            runtime: Runtime::new(settings),
        }))
    }

    /// The active state (one atomic load; hold it for the whole request).
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Notified with the new generation after every swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Swaps in a new active state and tells the background services.
    pub fn swap(&self, next: Active) {
        let generation = next.routing.generation;
        self.generation.set(generation as i64);
        self.geoip_built.set(geoip_epoch(&next));
        let next = Arc::new(next);
        self.active.store(next.clone());
        // Usable counts right away: a reload that replaced a region's backends must not
        // route by the old count until the next measurement tick.
        next.routing.measure(tokio::time::Instant::now());
        self.changed.send_replace(generation);
    }

    /// Whether the instance is ready (listeners up, first probe round done).
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// From now on responses carry `Connection: close`: the process is handing over to a
    /// new one or shutting down, so clients move to fresh connections (served by the new
    /// process) instead of reusing ones about to be closed.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the instance is draining (see [`Instance::start_draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

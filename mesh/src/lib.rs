//! Meridian's mesh: every instance serves a signed document about itself on a listener of
//! its own ([`server`]), polls every peer's on an interval ([`client`]), and from what it
//! sees and what the peers say it cannot see, reaches a majority verdict on who is down
//! ([`view`]). The [`Mesh`] publishes that view behind an `ArcSwap`; nothing here blocks a
//! request. HTTP polling was chosen over gossip with figures (docs/performance.md, "Mesh").

#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod server;
pub mod state;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use auth::Key;
pub use client::{ClientTls, PeerClient, Polled};
pub use server::Published;
pub use state::{BackendReport, NodeState, RegionReport};
pub use view::{MeshView, PeerStatus};

/// A peer to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its mesh endpoint.
    pub mesh: SocketAddr,
}

/// How this instance polls.
#[derive(Clone)]
pub struct Settings {
    /// This instance's name.
    pub me: String,
    /// The peers.
    pub peers: Vec<Peer>,
    /// Poll interval.
    pub interval: Duration,
    /// Poll timeout.
    pub timeout: Duration,
    /// Good polls that make a peer reachable again.
    pub rise: u32,
    /// Failed polls that make it unreachable.
    pub fall: u32,
    /// The shared secret.
    pub key: Option<Key>,
    /// TLS to peers.
    pub tls: Option<ClientTls>,
}

impl Settings {
    /// How old a peer's document may be and still count: a poll or two late.
    pub fn fresh(&self) -> Duration {
        self.interval * (self.fall + 1) + self.timeout
    }
}

/// The mesh metric families.
#[derive(Clone)]
struct Metrics {
    polls: IntCounterVec,
    age: GaugeVec,
    down: IntGaugeVec,
    reachable: IntGaugeVec,
    mismatch: IntGauge,
    rtt: GaugeVec,
}

fn metric<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    m: prometheus::Result<T>,
) -> Option<T> {
    let m = m.ok()?;
    if let Err(e) = r.register(Box::new(m.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    Some(m)
}

impl Metrics {
    #[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
    fn register(r: &Registry) -> Self {
        let cv = |name: &str, help: &str, labels: &[&str]| {
            metric(r, IntCounterVec::new(Opts::new(name, help), labels))
                .expect("valid metric definition")
        };
        let gv = |name: &str, help: &str, labels: &[&str]| {
            metric(r, IntGaugeVec::new(Opts::new(name, help), labels))
                .expect("valid metric definition")
        };
        let fv = |name: &str, help: &str| {
            metric(r, GaugeVec::new(Opts::new(name, help), &["peer"]))
                .expect("valid metric definition")
        };
        Metrics {
            polls: cv(
                "meridian_mesh_polls_total",
                "Polls of peer instances by result (ok, unchanged, failed)",
                &["peer", "result"],
            ),
            age: fv(
                "meridian_mesh_state_age_seconds",
                "Age of the last good document from each peer instance",
            ),
            down: gv(
                "meridian_mesh_peer_down",
                "1 when a majority of the instances reporting on a peer cannot reach it",
                &["peer"],
            ),
            reachable: gv(
                "meridian_mesh_peer_reachable",
                "1 when this instance's own polls reach the peer (rise/fall)",
                &["peer"],
            ),
            mismatch: metric(
                r,
                IntGauge::new(
                    "meridian_mesh_config_mismatch",
                    "Peer instances whose configuration digest differs from this instance's",
                ),
            )
            .expect("valid metric definition"),
            rtt: fv(
                "meridian_mesh_poll_rtt_seconds",
                "Round-trip time of the last poll of each peer instance",
            ),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The mesh of one instance.
pub struct Mesh {
    /// Bytes the mesh endpoint's connections carried, both ways.
    pub served_bytes: Arc<std::sync::atomic::AtomicU64>,
    view: ArcSwap<MeshView>,
    published: Arc<ArcSwap<Published>>,
    tracks: Mutex<HashMap<String, view::PeerTrack>>,
    metrics: Metrics,
}

/// A running poller task.
struct Poller {
    handle: JoinHandle<()>,
}

impl Mesh {
    /// A mesh whose metrics live in `registry`.
    pub fn new(registry: &Registry) -> Arc<Mesh> {
        Arc::new(Mesh {
            served_bytes: Arc::default(),
            view: ArcSwap::from_pointee(MeshView::default()),
            published: Arc::new(ArcSwap::from_pointee(Published::default())),
            tracks: Mutex::new(HashMap::new()),
            metrics: Metrics::register(registry),
        })
    }

    /// The latest view (one atomic load).
    pub fn view(&self) -> Arc<MeshView> {
        self.view.load_full()
    }

    /// The document the mesh endpoint serves.
    pub fn published(&self) -> Arc<ArcSwap<Published>> {
        self.published.clone()
    }

    /// Publishes this instance's document.
    pub fn publish(&self, doc: &NodeState) {
        match serde_json::to_vec(doc) {
            Ok(body) => self.published.store(Arc::new(Published::new(body))),
            Err(e) => tracing::error!(error = %e, "cannot encode the mesh document"),
        }
    }

    /// Records one poll of `peer`.
    fn record(
        &self,
        s: &Settings,
        peer: &Peer,
        result: Result<Polled, client::PollError>,
        rtt: Duration,
    ) {
        let mut tracks = lock(&self.tracks);
        let t = tracks
            .entry(peer.name.clone())
            .or_insert_with(|| view::PeerTrack::new(&peer.name, &peer.region));
        let label = match result {
            Ok(Polled::New(doc)) => {
                t.ok(Some(doc), rtt, Instant::now().into_std(), s.rise, s.fall);
                "ok"
            }
            Ok(Polled::Unchanged) => {
                t.ok(None, rtt, Instant::now().into_std(), s.rise, s.fall);
                "unchanged"
            }
            Err(e) => {
                tracing::debug!(peer = %peer.name, error = %e, "mesh poll failed");
                t.failed(e.to_string(), s.rise, s.fall);
                "failed"
            }
        };
        self.metrics
            .polls
            .with_label_values(&[&peer.name, label])
            .inc();
        if label != "failed" {
            self.metrics
                .rtt
                .with_label_values(&[&peer.name])
                .set(rtt.as_secs_f64());
        }
    }

    /// Recomputes the view from the polls so far, publishes it and updates the metrics;
    /// `digest` is this instance's configuration digest.
    pub fn refresh(&self, s: &Settings, digest: &str) -> Arc<MeshView> {
        let tracks: Vec<view::PeerTrack> = {
            let mut all = lock(&self.tracks);
            all.retain(|name, _| s.peers.iter().any(|p| p.name == *name));
            s.peers
                .iter()
                .map(|p| {
                    all.entry(p.name.clone())
                        .or_insert_with(|| view::PeerTrack::new(&p.name, &p.region))
                        .clone()
                })
                .collect()
        };
        let v = Arc::new(view::view(
            &s.me,
            &tracks,
            Instant::now().into_std(),
            s.fresh(),
        ));
        let mut mismatch = 0;
        for p in &v.peers {
            let age = p.age.map_or(-1.0, |a| a.as_secs_f64());
            self.metrics.age.with_label_values(&[&p.name]).set(age);
            self.metrics
                .down
                .with_label_values(&[&p.name])
                .set(i64::from(p.down));
            let reach = p.reachable == meridian_routing::Health::Up;
            self.metrics
                .reachable
                .with_label_values(&[&p.name])
                .set(i64::from(reach));
            if p.state.as_ref().is_some_and(|d| d.config_digest != digest) {
                mismatch += 1;
            }
        }
        self.metrics.mismatch.set(mismatch);
        self.view.store(v.clone());
        v
    }

    /// Polls every peer of `settings` on its interval until `shutdown` turns true, following
    /// changes of the settings (a reload that adds or removes instances).
    pub async fn run(
        self: Arc<Self>,
        mut settings: watch::Receiver<Settings>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pollers: HashMap<String, Poller> = HashMap::new();
        loop {
            let s = settings.borrow_and_update().clone();
            // New settings (a reload) start every poller afresh, with the secret and TLS
            // they name; what was learnt of each peer stays.
            for (_, p) in pollers.drain() {
                p.handle.abort();
            }
            for peer in &s.peers {
                let handle = tokio::spawn(self.clone().poll_loop(peer.clone(), settings.clone()));
                pollers.insert(peer.name.clone(), Poller { handle });
            }
            tokio::select! {
                r = settings.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        for (_, p) in pollers {
            p.handle.abort();
        }
    }

    async fn poll_loop(self: Arc<Self>, peer: Peer, settings: watch::Receiver<Settings>) {
        let first = settings.borrow().clone();
        let mut client =
            PeerClient::new(&peer.name, peer.mesh, first.tls.clone(), first.key.clone());
        let mut tick = tokio::time::interval(first.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut interval = first.interval;
        loop {
            tick.tick().await;
            let s = settings.borrow().clone();
            if s.interval != interval {
                interval = s.interval;
                tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            let started = Instant::now();
            let result = client.poll(&s.me, s.timeout).await;
            self.record(&s, &peer, result, started.elapsed());
        }
    }
}

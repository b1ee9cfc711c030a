//! A request's state across pingora's hooks: the active snapshot it loaded once, who and
//! where the client is, its plan, what it tried, and the current upstream [`Attempt`].

use std::net::IpAddr;
use std::sync::Arc;

use meridian_config::HashKey;
use meridian_geoip::Location;
use meridian_routing::latency::InflightGuard;
use meridian_routing::outlier::Outcome;
use meridian_routing::selection::{fnv1a, Member};
use meridian_routing::{Pick, Plan, RegionPool, Snapshot, Tried};
use pingora::http::RequestHeader;
use tokio::time::Instant;

use super::client::ClientAddr;
use super::grpc::GrpcCall;
use super::tunnel::Tunnel;
use super::upstream::PeerNeeds;
use crate::control::instance::Active;
use crate::control::overload::{InflightRequest, Shed};

/// Why Meridian itself answered a request with an error instead of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The instance is overloaded (`503`).
    Shed(Shed),
    /// The request body is over `limits.max_body_size` (`413`).
    BodyTooLarge,
    /// The request already passed through this node (`508`).
    Loop,
    /// The client stopped sending its request body (`408`).
    ClientStalled,
    /// The proxy ran out of its own resources (file descriptors, ports) connecting upstream
    /// (`503`).
    LocalResources,
    /// The gRPC call's deadline (`grpc-timeout`) passed before a backend answered (`504`,
    /// gRPC `DEADLINE_EXCEEDED`).
    DeadlineExceeded,
    /// No route matches the request's host and path, and there is no default service
    /// (`404`).
    NoRoute,
}

/// One upstream attempt: the backend it went to and what became of it.
#[derive(Debug)]
pub struct Attempt {
    /// The backend.
    pub pick: Pick,
    /// When it was picked.
    pub started: Instant,
    /// Counts the request in the backend's in-flight total while the attempt runs.
    inflight: Option<InflightGuard>,
    /// Whether its outcome was fed to outlier detection already.
    outcome_recorded: bool,
    /// Whether request body bytes passed on to it (as far as the proxy can tell: a chunk
    /// handed to `request_body_filter` may have been sent).
    pub body_sent: bool,
}

/// Per-request state.
pub struct Ctx {
    /// The active state, loaded once: the whole request, retries included, uses it even if
    /// a reload swaps in a new one meanwhile.
    pub active: Arc<Active>,
    /// When the request arrived.
    pub start: Instant,
    /// Who the client is.
    pub client: Option<ClientAddr>,
    /// Where the client is.
    pub location: Option<Location>,
    /// Candidate regions, best first.
    pub plan: Plan,
    /// What was tried so far.
    pub tried: Tried,
    /// The current (or last) attempt.
    pub attempt: Option<Attempt>,
    /// The consistent-hash key, when a region of the plan hashes.
    pub hash: Option<u64>,
    /// No allowed region could serve (503 with `Retry-After`).
    pub no_backend: bool,
    /// Whether the client connection is TLS (an HTTPS listener).
    pub tls: bool,
    /// Counts the request in the instance's in-flight total.
    pub inflight: Option<InflightRequest>,
    /// Request body bytes received so far.
    pub body_bytes: u64,
    /// When the last request body bytes arrived.
    pub last_body_at: Option<Instant>,
    /// Why Meridian answered the request itself, if it did.
    pub refusal: Option<Refusal>,
    /// Another instance relayed the request here: it is served from this region only.
    pub relayed: bool,
    /// A gRPC call: its deadline and status.
    pub grpc: Option<GrpcCall>,
    /// An HTTP/1 upgrade request (WebSocket).
    pub upgrade: bool,
    /// The client asked for server-sent events (`Accept: text/event-stream`).
    pub event_stream: bool,
    /// Safe to send again after it may have reached a backend: an idempotent method, or a
    /// gRPC method listed in `retry.grpc_idempotent`.
    pub idempotent: bool,
    /// The tunnel, once the backend answered an upgrade with `101`.
    pub tunnel: Option<Tunnel>,
    /// The backend (region, member of the plan's service) its sticky cookie names, if
    /// the cookie names one of this snapshot's.
    pub sticky: Option<(u16, u16)>,
}

impl Ctx {
    /// A fresh context on `active`.
    pub fn new(active: Arc<Active>, start: Instant) -> Ctx {
        Ctx {
            active,
            start,
            client: None,
            location: None,
            plan: Plan::default(),
            tried: Tried::default(),
            attempt: None,
            hash: None,
            no_backend: false,
            tls: false,
            inflight: None,
            body_bytes: 0,
            last_body_at: None,
            refusal: None,
            relayed: false,
            sticky: None,
            grpc: None,
            upgrade: false,
            event_stream: false,
            idempotent: false,
            tunnel: None,
        }
    }

    /// Records what kind of request this is: a gRPC call (and its deadline), an upgrade,
    /// an event stream, and whether it may be sent again once a backend may have seen it.
    pub fn classify(&mut self, req: &RequestHeader, upgrade: bool) {
        self.grpc = super::grpc::call(req, self.start);
        self.upgrade = upgrade;
        self.event_stream = req
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")));
        let listed = || {
            let path = req.uri.path();
            self.snap()
                .config
                .retry
                .grpc_idempotent
                .iter()
                .any(|m| m.matches(path))
        };
        self.idempotent = req.method.is_idempotent() || (self.grpc.is_some() && listed());
    }

    /// How this request's upstream connection is chosen and timed at `now`: upgrades
    /// in HTTP/1.1; tunnels and long-lived streams (gRPC, server-sent events) read with
    /// `timeouts.tunnel` once the response header is in; a gRPC deadline bounds every
    /// wait.
    pub fn peer_needs(&self, now: Instant) -> PeerNeeds {
        let long_lived = self.upgrade || self.event_stream || self.grpc.is_some();
        PeerNeeds {
            upgrade: self.upgrade,
            grpc: self.grpc.is_some(),
            stream_read_timeout: long_lived.then_some(self.snap().config.timeouts.tunnel),
            deadline: self.grpc.as_ref().and_then(|g| g.left(now)),
        }
    }

    /// The routing snapshot.
    pub fn snap(&self) -> &Snapshot {
        &self.active.routing
    }

    /// Starts an attempt on `pick` (the previous one, if any, is over).
    pub fn begin(&mut self, pick: Pick, now: Instant) {
        let inflight = self
            .snap()
            .picked(pick)
            .map(|(_, m)| m.state.latency.start());
        self.attempt = Some(Attempt {
            pick,
            started: now,
            inflight,
            outcome_recorded: false,
            body_sent: false,
        });
    }

    /// The region and backend of the current attempt.
    pub fn backend(&self) -> Option<(&RegionPool, &Member)> {
        self.snap().picked(self.attempt.as_ref()?.pick)
    }

    /// The current attempt no longer counts as in flight.
    pub fn end_inflight(&mut self) {
        if let Some(a) = &mut self.attempt {
            a.inflight = None;
        }
    }

    /// Feeds the current attempt's outcome to outlier detection, once.
    pub fn record_outcome(&mut self, outcome: Outcome) {
        let Some(a) = &mut self.attempt else { return };
        if std::mem::replace(&mut a.outcome_recorded, true) {
            return;
        }
        let pick = a.pick;
        let Some((region, m)) = self.snap().picked(pick) else {
            return;
        };
        let o = &self.snap().config.outlier;
        let now = Instant::now();
        // `max_ejection_percent` of the region (one backend may always be ejected).
        let may_eject = || {
            let members = region.members.len();
            let ejected = region
                .members
                .iter()
                .filter(|m| m.state.outlier.is_ejected(now))
                .count();
            ejected == 0 || (ejected + 1) * 100 <= usize::from(o.max_ejection_percent) * members
        };
        if let Some(ejected) = m.state.outlier.record(
            outcome,
            now,
            o.consecutive_failures,
            o.base_ejection,
            o.max_ejection,
            may_eject,
        ) {
            m.state.metrics.ejections.inc();
            tracing::warn!(backend = %m.state.id, ejection_ms = ejected.as_millis() as u64, "backend ejected after consecutive failures");
        }
    }

    /// The current attempt's failure is not the backend's (the client went away): it is
    /// not fed to outlier detection.
    pub fn excuse_backend(&mut self) {
        if let Some(a) = &mut self.attempt {
            a.outcome_recorded = true;
        }
    }

    /// Whether another attempt is within `retry.attempts` for this request.
    pub fn attempts_left(&self) -> bool {
        (self.tried.count() as u32) <= self.snap().config.retry.attempts
    }

    /// Whether the current attempt goes to another region's instance (a relay).
    pub fn relaying(&self) -> bool {
        self.backend().is_some_and(|(r, _)| r.relay)
    }

    /// Counts a retry away from the current attempt's region.
    pub fn count_retry(&self) {
        if let Some((region, _)) = self.backend() {
            region.state.metrics.retries.inc();
        }
    }
}

/// The raw value of the first cookie `name` in a request's `Cookie` headers.
pub(super) fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The consistent-hash key of a request (`None` when its key is absent).
pub fn hash_key(req: &RequestHeader, key: &HashKey, client: Option<IpAddr>) -> Option<u64> {
    match key {
        HashKey::Header(name) => req.headers.get(name.as_str()).map(|v| fnv1a(v.as_bytes())),
        HashKey::Cookie(name) => cookie_value(req, name).map(|v| fnv1a(v.as_bytes())),
        HashKey::ClientIp => client.map(|ip| match ip {
            IpAddr::V4(v4) => fnv1a(&v4.octets()),
            IpAddr::V6(v6) => fnv1a(&v6.octets()),
        }),
    }
}

//! The proxy service: a request's life, hook by hook (pingora `ProxyHttp`).
//!
//! - `new_ctx`: load the routing snapshot once; the whole request uses it.
//! - `request_filter`: who is the client (`client`), where is it (GeoIP), which regions
//!   may serve it and in what order (`route`).
//! - `upstream_peer`: pick a usable backend in the first region that has one (`pick`).
//! - `fail_to_connect` / `error_while_proxy`: record the failure (outlier detection) and
//!   decide whether a retry is safe; pingora then calls `upstream_peer` again.
//! - `upstream_request_filter`: forwarding headers (`forwarding`).
//! - `request_body_filter`: notes that body bytes went out (retry safety).
//! - `upstream_response_filter`: latency sample, outlier outcome.
//! - `logging`: metrics and the access log line.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use meridian_config::HashKey;
use meridian_geoip::Location;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use smallvec::SmallVec;
use tokio::time::Instant;

use crate::client::{self, ClientAddr};
use crate::forwarding;
use crate::health::Outcome;
use crate::instance::Instance;
use crate::latency::InflightGuard;
use crate::metrics::CONTINENT_LABELS;
use crate::pick::{self, fnv1a, PickInput};
use crate::route::{self, Plan};
use crate::snapshot::Snapshot;

/// The Meridian proxy service.
pub struct MeridianProxy {
    inst: Arc<Instance>,
}

impl MeridianProxy {
    /// A proxy serving `inst`'s snapshots.
    pub fn new(inst: Arc<Instance>) -> Self {
        MeridianProxy { inst }
    }
}

/// The backend an attempt went to.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    region: u16,
    member: u16,
    started: Instant,
}

/// Per-request state.
pub struct Ctx {
    snap: Arc<Snapshot>,
    start: Instant,
    client: Option<ClientAddr>,
    location: Option<Location>,
    plan: Plan,
    /// Position in `plan.regions` of the region being tried.
    region_pos: usize,
    /// (region, member) pairs tried so far.
    tried: SmallVec<[(u16, u16); 4]>,
    current: Option<Attempt>,
    inflight: Option<InflightGuard>,
    hash: Option<u64>,
    /// Whether the current attempt's outcome was already fed to outlier detection.
    outcome_recorded: bool,
    no_backend: bool,
    /// Whether the client connection is TLS (an HTTPS listener).
    tls: bool,
    /// Whether request body bytes passed on to the current attempt (as far as the proxy
    /// can tell: a chunk handed to `request_body_filter` may have been sent).
    body_sent: bool,
}

const NO_BACKEND_BODY: &str = "503 Service Unavailable: no healthy backend is available\n";

impl Ctx {
    fn backend(&self) -> Option<&crate::pick::Member> {
        let a = self.current?;
        self.snap
            .regions
            .get(usize::from(a.region))?
            .members
            .get(usize::from(a.member))
    }

    fn record_outcome(&mut self, outcome: Outcome) {
        if self.outcome_recorded {
            return;
        }
        self.outcome_recorded = true;
        let Some(m) = self.backend() else { return };
        let o = &self.snap.config.outlier;
        if let Some(ejected) = m.state.outlier.record(
            outcome,
            Instant::now(),
            o.consecutive_failures,
            o.base_ejection,
            o.max_ejection,
        ) {
            m.state.metrics.ejections.inc();
            tracing::warn!(backend = %m.state.id, ejection_ms = ejected.as_millis() as u64, "backend ejected after consecutive failures");
        }
    }

    /// Whether another attempt is within `retry.attempts` for this request.
    fn attempts_left(&self) -> bool {
        (self.tried.len() as u32) <= self.snap.config.retry.attempts
    }
}

impl MeridianProxy {
    /// Whether the request may be retried: attempts left for it, and a retry left in the
    /// instance's budget (see [`crate::budget`]); a refusal by the budget is counted.
    fn may_retry(&self, ctx: &Ctx) -> bool {
        if !ctx.attempts_left() {
            return false;
        }
        let retry = &ctx.snap.config.retry;
        if self
            .inst
            .retry_budget
            .withdraw(Instant::now(), retry.min_per_second)
        {
            return true;
        }
        self.inst.metrics.retries_refused.inc();
        false
    }
}

fn hash_key(session: &Session, key: &HashKey, client: Option<IpAddr>) -> Option<u64> {
    let h = session.req_header();
    match key {
        HashKey::Header(name) => h.headers.get(name.as_str()).map(|v| fnv1a(v.as_bytes())),
        HashKey::Cookie(name) => h
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| fnv1a(v.as_bytes()))
            }),
        HashKey::ClientIp => client.map(|ip| match ip {
            IpAddr::V4(v4) => fnv1a(&v4.octets()),
            IpAddr::V6(v6) => fnv1a(&v6.octets()),
        }),
    }
}

#[async_trait]
impl ProxyHttp for MeridianProxy {
    type CTX = Ctx;

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // No modules. Pingora's default adds a response-compression module (disabled, level
        // 0) that still costs an allocation and a filter call per request; Meridian passes
        // bodies through as the backends encoded them.
    }

    fn new_ctx(&self) -> Ctx {
        let snap = self.inst.snapshot();
        let start = Instant::now();
        let retry = &snap.config.retry;
        self.inst
            .retry_budget
            .deposit(start, retry.budget_percent, retry.min_per_second);
        Ctx {
            snap,
            start,
            client: None,
            location: None,
            plan: Plan::default(),
            region_pos: 0,
            tried: SmallVec::new(),
            current: None,
            inflight: None,
            hash: None,
            outcome_recorded: true,
            no_backend: false,
            tls: false,
            body_sent: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let snap = &ctx.snap;
        session.set_keepalive(Some(snap.config.timeouts.downstream_idle.as_secs().max(1)));
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(peer) = peer {
            let c = client::resolve(peer, &session.req_header().headers, &snap.trusted_proxies);
            if c.malformed {
                self.inst.metrics.bad_client_header.inc();
            }
            ctx.location = snap.locator.lookup(c.ip);
            ctx.client = Some(c);
        }
        ctx.plan = route::plan(snap, ctx.location.as_ref());
        // The first consistent-hash region in the plan decides the key (regions normally
        // share one key); computed once, borrowed from the snapshot, no allocation.
        let key = ctx.plan.regions.iter().find_map(|&r| {
            match &snap.config.regions[usize::from(r)].balance {
                meridian_config::Balance::ConsistentHash(k) => Some(k),
                _ => None,
            }
        });
        let hash = key.and_then(|key| hash_key(session, key, ctx.client.map(|c| c.ip)));
        ctx.hash = hash;
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // A new attempt: the previous one (if any) is over.
        ctx.inflight = None;
        ctx.body_sent = false;
        let now = Instant::now();
        let snap = ctx.snap.clone();
        let panic_threshold = snap.config.outlier.panic_threshold;
        while let Some(&ri) = ctx.plan.regions.get(ctx.region_pos) {
            let region = &snap.regions[usize::from(ri)];
            let tried: SmallVec<[u16; 4]> = ctx
                .tried
                .iter()
                .filter(|(r, _)| *r == ri)
                .map(|(_, m)| *m)
                .collect();
            let usable = region.state.usable() as usize;
            let (tier_usable, tier_members) = region.state.tier_counts();
            let panic =
                pick::panic_mode(panic_threshold, tier_usable as usize, tier_members as usize);
            let input = PickInput {
                now,
                tau: snap.config.latency.decay,
                hash: ctx.hash,
                tried: &tried,
                panic,
                allow_unknown: usable == 0,
                max_tier: region.state.active_tier(),
            };
            if let Some(mi) = pick::pick(
                &region.balancer,
                &region.members,
                &region.state.cursor,
                &input,
            ) {
                let member = &region.members[mi];
                let mi = mi as u16;
                ctx.tried.push((ri, mi));
                ctx.current = Some(Attempt {
                    region: ri,
                    member: mi,
                    started: now,
                });
                ctx.outcome_recorded = false;
                ctx.inflight = Some(member.state.latency.start());
                let t = &snap.config.timeouts;
                let mut peer = match &region.tls {
                    None => HttpPeer::new(member.state.addr, false, String::new()),
                    Some(tls) => {
                        let sni = tls.server_name(&member.state.host);
                        let mut peer = HttpPeer::new(member.state.addr, true, sni);
                        peer.options.verify_cert = tls.verify;
                        peer.options.verify_hostname = tls.verify;
                        peer.options.ca = tls.ca.clone();
                        peer.client_cert_key = tls.client_cert.clone();
                        peer.group_key = tls.pool_key;
                        peer
                    }
                };
                peer.options.connection_timeout = Some(t.connect);
                peer.options.read_timeout = Some(t.read);
                peer.options.write_timeout = Some(t.write);
                peer.options.idle_timeout = Some(t.idle);
                return Ok(Box::new(peer));
            }
            ctx.region_pos += 1;
        }
        ctx.current = None;
        ctx.no_backend = true;
        Err(Error::explain(
            ErrorType::HTTPStatus(503),
            "no usable backend in any allowed region",
        ))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.record_outcome(Outcome::Failure);
        ctx.inflight = None;
        // Nothing was sent: a retry elsewhere is safe for any method.
        if self.may_retry(ctx) {
            if let Some(a) = ctx.current {
                ctx.snap.regions[usize::from(a.region)]
                    .state
                    .metrics
                    .retries
                    .inc();
            }
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        ctx.inflight = None;
        if e.esource() == &ErrorSource::Downstream {
            // The client went away (e.g. closed its connection mid-request): not the
            // backend's fault, so no outlier failure, and nobody is left to retry for.
            ctx.outcome_recorded = true;
            e.set_retry(false);
            return e;
        }
        ctx.record_outcome(Outcome::Failure);
        // Safe to send again elsewhere: an idempotent request, or any request the backend
        // cannot have acted on — writing its header failed and no body byte went out (an
        // incomplete request). Once the request may have been received whole (the error
        // came while waiting for the answer), a POST is never replayed. Never once the
        // response has started.
        let unsent =
            matches!(e.etype(), ErrorType::WriteError | ErrorType::WriteTimedout) && !ctx.body_sent;
        let safe = (session.req_header().method.is_idempotent() || unsent)
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        let retry = safe && self.may_retry(ctx);
        if retry {
            if let Some(a) = ctx.current {
                ctx.snap.regions[usize::from(a.region)]
                    .state
                    .metrics
                    .retries
                    .inc();
            }
        }
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| client::canonical(a.ip()));
        let hop = forwarding::Hop {
            peer,
            peer_trusted: ctx.client.is_some_and(|c| c.peer_trusted),
            tls: ctx.tls,
            via: ctx.snap.via_for(session.req_header().version),
        };
        forwarding::apply(upstream, &hop)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.body_sent = true;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(a) = ctx.current {
            let elapsed = now.saturating_duration_since(a.started);
            let snap = &ctx.snap;
            let region = &snap.regions[usize::from(a.region)];
            region
                .state
                .metrics
                .upstream_latency
                .observe(elapsed.as_secs_f64());
            if let Some(m) = region.members.get(usize::from(a.member)) {
                m.state
                    .latency
                    .observe_response(elapsed, now, snap.config.latency.decay);
            }
        }
        let outcome = if resp.status.is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        ctx.record_outcome(outcome);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if self
            .inst
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            session.set_keepalive(None);
        }
        if ctx.tls {
            if let Some(hsts) = &ctx.snap.config.listeners.hsts {
                resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
            }
        }
        if ctx.snap.config.steering.expose_headers {
            if let Some(a) = ctx.current {
                let name = &ctx.snap.regions[usize::from(a.region)].name;
                resp.insert_header("x-meridian-region", name.as_ref())?;
            }
            let country = ctx
                .location
                .as_ref()
                .map_or("unknown", |l| l.country.as_str());
            resp.insert_header("x-meridian-client-country", country)?;
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        // A client that went away is routine, not an error worth a log line each time.
        error.esource() == &ErrorSource::Downstream
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let (body, retry_after) = match code {
                503 if ctx.no_backend => (
                    NO_BACKEND_BODY.to_string(),
                    Some(ctx.snap.config.retry.retry_after),
                ),
                502 => ("502 Bad Gateway: the upstream failed\n".to_string(), None),
                504 => (
                    "504 Gateway Timeout: the upstream did not answer in time\n".to_string(),
                    None,
                ),
                c => (format!("{c}\n"), None),
            };
            let mut resp = ResponseHeader::build(code, Some(4))
                .unwrap_or_else(|_| pingora::protocols::http::ServerSession::generate_error(code));
            let _ = resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
            let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
            let _ = resp.insert_header(http::header::CACHE_CONTROL, "no-store");
            if let Some(after) = retry_after {
                let secs = after.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    let _ = resp.insert_header(RETRY_AFTER, v);
                }
            }
            if let Err(err) = session.write_error_response(resp, Bytes::from(body)).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.inflight = None;
        let status = session.response_written().map(|r| r.status.as_u16());
        let snap = &ctx.snap;
        let served = ctx.current.map(|a| usize::from(a.region));
        match (ctx.backend(), served) {
            (Some(m), Some(ri)) => {
                m.state.metrics.count_status(status);
                let region = &snap.regions[ri];
                let continent = ctx
                    .location
                    .and_then(|l| l.continent)
                    .and_then(|c| CONTINENT_LABELS.iter().position(|l| *l == c.code()))
                    .unwrap_or(CONTINENT_LABELS.len() - 1);
                if let Some(counter) = region.state.metrics.by_continent.get(continent) {
                    counter.inc();
                }
                if let Some(first) = ctx.plan.preferred {
                    if usize::from(first) != ri {
                        snap.count_failover(&self.inst.metrics, usize::from(first), ri);
                    }
                }
            }
            _ => {
                if ctx.no_backend {
                    self.inst.metrics.no_backend.inc();
                }
            }
        }
        if snap.config.logging.access_log {
            let req = session.req_header();
            let backend = ctx.backend().map(|m| &*m.state.addr_label).unwrap_or("-");
            let region = served.map(|ri| &*snap.regions[ri].name).unwrap_or("-");
            tracing::info!(
                target: "access",
                client = %ctx.client.map_or_else(|| "-".to_string(), |c| c.ip.to_string()),
                country = ctx.location.as_ref().map_or("-", |l| l.country.as_str()),
                method = %req.method,
                path = %req.uri,
                status = status.unwrap_or(0),
                backend,
                region,
                attempts = ctx.tried.len(),
                duration_us = ctx.start.elapsed().as_micros() as u64,
                error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
            );
        }
    }
}

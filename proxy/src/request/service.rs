//! The proxy service: a request's life, hook by hook (pingora `ProxyHttp`).
//!
//! `new_ctx` loads the active snapshot once; `request_filter` decides who and where the
//! client is, routes the request to a service (404 when nothing matches) and plans its
//! regions; `upstream_peer` takes the sticky session's backend or asks the routing core
//! for the next one; the failure hooks decide on retries; the response hooks feed latency and
//! outlier detection; `logging` counts and writes the access log line.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use meridian_routing::outlier::Outcome;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use tokio::time::Instant;

use super::admission;
use super::client;
use super::ctx::{hash_key, Ctx, Refusal};
use super::failure;
use super::forwarding;
use super::grpc;
use super::metrics::RequestMetrics;
use super::relay;
use super::sticky;
use super::tunnel::Close;
use crate::control::instance::Instance;
use meridian_routing::Snapshot;

/// The response header naming the region that served the request.
static X_MERIDIAN_REGION: http::HeaderName = http::HeaderName::from_static("x-meridian-region");
/// The response header with the client's country as Meridian located it.
static X_MERIDIAN_CLIENT_COUNTRY: http::HeaderName =
    http::HeaderName::from_static("x-meridian-client-country");
/// The gRPC deadline passed on to the backend.
static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The Meridian proxy service.
pub struct MeridianProxy {
    inst: Arc<Instance>,
    metrics: RequestMetrics,
}

impl MeridianProxy {
    /// A proxy serving `inst`'s snapshots, counting in `metrics`.
    pub fn new(inst: Arc<Instance>, metrics: RequestMetrics) -> Self {
        MeridianProxy { inst, metrics }
    }

    fn may_retry(&self, ctx: &Ctx) -> bool {
        failure::may_retry(ctx, &self.inst.retry_budget, &self.metrics)
    }
}

/// The service a request goes to (`None`: no route matches and there is no default):
/// its URI's host (absolute form, HTTP/2 `:authority`) or else its `Host` header, and its
/// path (the routing bench and the no-allocation test call it too).
pub fn route(req: &RequestHeader, snap: &Snapshot) -> Option<usize> {
    if let Some(one) = snap.routes.single() {
        return Some(usize::from(one));
    }
    let host = req.uri.host().or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    snap.route(host, req.uri.path())
}

/// Who and where the client is, the service it asks for, its plan, its consistent-hash
/// key and its sticky session. `false` when no route matches.
fn locate_and_plan(session: &Session, ctx: &mut Ctx, metrics: &RequestMetrics) -> bool {
    let active = ctx.active.clone();
    let snap = &active.routing;
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    if let Some(peer) = peer {
        let req = session.req_header();
        let c = client::resolve(peer, &req.headers, &active.identity.trusted_proxies);
        if c.malformed {
            metrics.bad_client_header.inc();
        }
        ctx.location = snap.locator.lookup(c.ip);
        ctx.client = Some(c);
    }
    ctx.relayed = relay::relayed(session, &active);
    let Some(service) = route(session.req_header(), snap) else {
        return false;
    };
    ctx.plan = if ctx.relayed {
        relay::local_only(snap, service)
    } else {
        snap.plan(service, ctx.location.as_ref())
    };
    let Some(config) = snap.config.services.get(service) else {
        return false;
    };
    // The first consistent-hash pool in the plan decides the key (pools normally share
    // one key); computed once, borrowed from the snapshot, no allocation.
    let key = ctx
        .plan
        .regions
        .iter()
        .find_map(|&r| match &config.pool(usize::from(r))?.balance {
            meridian_config::Balance::ConsistentHash(k) => Some(k),
            _ => None,
        });
    ctx.hash = key.and_then(|key| hash_key(session.req_header(), key, ctx.client.map(|c| c.ip)));
    ctx.sticky = sticky::pinned_to(session.req_header(), &snap.services[service].sticky);
    true
}

impl MeridianProxy {
    /// Feeds the time to the response header to the backend's latency and its region's
    /// histogram.
    fn observe_latency(&self, ctx: &Ctx) {
        let now = Instant::now();
        if let (Some(a), Some((region, member))) = (&ctx.attempt, ctx.backend()) {
            let elapsed = now.saturating_duration_since(a.started);
            region
                .state
                .metrics
                .upstream_latency
                .observe(elapsed.as_secs_f64());
            let decay = ctx.snap().config.latency.decay;
            member.state.latency.observe_response(elapsed, now, decay);
        }
    }
}

/// A gRPC call's response header: a trailers-only answer carries the status (and one of
/// `retry.grpc_on` is held back for a retry while attempts are left); otherwise the status
/// comes with the trailers. A non-gRPC answer (an HTTP error) counts by its HTTP status.
fn grpc_response(ctx: &mut Ctx, resp: &ResponseHeader) -> Result<()> {
    let retry_on = &ctx.snap().config.retry.grpc_on;
    if resp.status != http::StatusCode::OK {
        // Not a gRPC answer at all (a proxy's or server's HTTP error page).
        let outcome = if resp.status.is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        ctx.record_outcome(outcome);
        return Ok(());
    }
    let Some(status) = grpc::status_of(&resp.headers) else {
        // The status comes with the trailers.
        return Ok(());
    };
    let held = retry_on.contains(&status) && ctx.attempts_left();
    if let Some(call) = &mut ctx.grpc {
        call.status = Some(status);
        if held {
            let message = resp
                .headers
                .get("grpc-message")
                .map(|m| grpc::decode_message(m.as_bytes()))
                .unwrap_or_default();
            call.message = Some(message);
            return Err(Error::explain(
                grpc::RETRYABLE,
                "the backend answered a retryable gRPC status",
            ));
        }
    }
    ctx.record_outcome(grpc::outcome(status));
    Ok(())
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
        let active = self.inst.active();
        let start = Instant::now();
        let retry = &active.routing.config.retry;
        self.inst
            .retry_budget
            .deposit(start, retry.budget_percent, retry.min_per_second);
        let mut ctx = Ctx::new(active, start);
        ctx.inflight = Some(self.inst.overload.start());
        ctx
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let config = &ctx.active.routing.config;
        let t = &config.timeouts;
        session.set_keepalive(Some(t.downstream_idle.as_secs().max(1)));
        session.set_write_timeout(Some(t.client_write));
        let upgrade = session.is_upgrade_req();
        ctx.classify(session.req_header(), upgrade);
        let routed = locate_and_plan(session, ctx, &self.metrics);
        let refusal = admission::check(session, ctx, &self.inst.overload)
            .or((!routed).then_some(Refusal::NoRoute));
        if let Some(refusal) = refusal {
            ctx.refusal = Some(refusal);
            return Err(Error::explain(
                ErrorType::HTTPStatus(refusal.status()),
                "request refused by the proxy",
            ));
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let now = Instant::now();
        if ctx.grpc.as_ref().is_some_and(|g| g.expired(now)) {
            ctx.refusal = Some(Refusal::DeadlineExceeded);
            return Err(Error::explain(
                ErrorType::HTTPStatus(504),
                "the gRPC call's deadline passed",
            ));
        }
        let needs = ctx.peer_needs(now);
        let active = ctx.active.clone();
        let snap = &active.routing;
        let pinned = ctx
            .sticky
            .and_then(|target| sticky::first_attempt(snap, ctx, target, now));
        let pick = pinned.or_else(|| snap.next_backend(&ctx.plan, &mut ctx.tried, ctx.hash, now));
        match pick {
            Some(pick) => {
                ctx.begin(pick, now);
                let (region, member) = ctx.backend().ok_or_else(|| {
                    Error::explain(ErrorType::InternalError, "picked backend not in snapshot")
                })?;
                // The box first: `peer` (not inlined) then builds the peer in it, instead
                // of on the stack to be copied.
                let slot = Box::new_uninit();
                Ok(Box::write(
                    slot,
                    active.upstreams.peer(
                        (usize::from(pick.service), usize::from(pick.region)),
                        &member.state,
                        &snap.config.timeouts,
                        region.relay,
                        needs,
                    ),
                ))
            }
            None => {
                ctx.attempt = None;
                ctx.no_backend = true;
                Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "no usable backend in any allowed region",
                ))
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.end_inflight();
        if failure::is_local(&e) {
            // Our own file descriptors or ports ran out: not the backend's fault, and another
            // backend would fail the same way.
            ctx.excuse_backend();
            self.metrics.local_errors.inc();
            ctx.refusal = Some(Refusal::LocalResources);
            let mut e = Error::because(
                ErrorType::HTTPStatus(503),
                "out of local resources connecting upstream",
                e,
            );
            e.set_retry(false);
            return e;
        }
        ctx.record_outcome(Outcome::Failure);
        // Nothing was sent: a retry elsewhere is safe for any method.
        e.set_retry(self.may_retry(ctx));
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
        ctx.end_inflight();
        if let Some(tunnel) = &mut ctx.tunnel {
            // The end of an upgraded connection: idle past `timeouts.tunnel` (either side's
            // read timed out), or a reset. It served; it is not the backend's failure.
            tunnel.closing(match e.etype() {
                ErrorType::ReadTimedout => Close::Idle,
                _ => Close::Error,
            });
            ctx.excuse_backend();
            e.set_retry(false);
            return e;
        }
        if e.esource() == &ErrorSource::Downstream || matches!(e.etype(), ErrorType::HTTPStatus(_))
        {
            // The client went away (e.g. closed its connection mid-request), or Meridian
            // refused the request itself (a body over the limit): not the backend's fault,
            // so no outlier failure, and nothing to retry.
            ctx.excuse_backend();
            e.set_retry(false);
            return e;
        }
        if ctx.grpc.as_ref().is_some_and(|g| g.expired(Instant::now())) {
            // The client's deadline ran out (every wait was bounded by it): the call ends
            // with DEADLINE_EXCEEDED; the deadline was the client's choice, not a backend
            // failure, and there is no time left to retry.
            ctx.excuse_backend();
            ctx.refusal = Some(Refusal::DeadlineExceeded);
            e.set_retry(false);
            return e;
        }
        if *e.etype() == grpc::RETRYABLE {
            // A trailers-only answer with a status of `retry.grpc_on`, held back.
            let status = ctx.grpc.as_ref().and_then(|g| g.status);
            ctx.record_outcome(status.map_or(Outcome::Failure, grpc::outcome));
            let retry = session.response_written().is_none()
                && !session.as_ref().retry_buffer_truncated()
                && self.may_retry(ctx);
            if retry {
                if let Some(call) = &mut ctx.grpc {
                    call.message = None;
                    call.status = None;
                }
            }
            e.set_retry(retry);
            return e;
        }
        if *e.etype() == relay::RELAY_UNAVAILABLE {
            // The relay cannot serve now: a failure of that hop (outlier detection takes it
            // out until the mesh catches up), and safe to send elsewhere for any method.
            ctx.record_outcome(Outcome::Failure);
            let retry = session.response_written().is_none() && self.may_retry(ctx);
            e.set_retry(retry);
            return e;
        }
        if failure::client_stalled(session, &e, ctx) {
            // The backend waited for a request body the client stopped sending.
            ctx.excuse_backend();
            self.metrics.client_stalls.inc();
            ctx.refusal = Some(Refusal::ClientStalled);
            let mut e = Error::because(
                ErrorType::HTTPStatus(408),
                "the client stopped sending its request body",
                e,
            );
            e.set_retry(false);
            return e;
        }
        ctx.record_outcome(Outcome::Failure);
        let body_sent = ctx.attempt.as_ref().is_some_and(|a| a.body_sent);
        let retry =
            failure::safe_to_resend(session, &e, body_sent, ctx.idempotent) && self.may_retry(ctx);
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
            client: ctx.client.map(|c| c.ip),
            peer_trusted: ctx.client.is_some_and(|c| c.peer_trusted),
            tls: ctx.tls,
            via: ctx.active.identity.via_for(session.req_header().version),
        };
        forwarding::apply(upstream, &hop)?;
        if let Some(left) = ctx.grpc.as_ref().and_then(|g| g.left(Instant::now())) {
            // The backend gets the time that is left, not the client's whole budget.
            upstream.insert_header(&GRPC_TIMEOUT, grpc::format_timeout(left))?;
        }
        relay::mark(upstream, ctx.relaying(), &ctx.snap().config.node.name)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(chunk) = body.as_ref().filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        if let Some(tunnel) = &ctx.tunnel {
            // Bytes of an upgraded connection: counted, not a request body.
            tunnel.to_backend(chunk.len());
            return Ok(());
        }
        if let Some(a) = &mut ctx.attempt {
            a.body_sent = true;
        }
        ctx.body_bytes += chunk.len() as u64;
        ctx.last_body_at = Some(Instant::now());
        if let Some(max) = ctx.snap().config.limits.max_body_size {
            if ctx.body_bytes > max {
                ctx.refusal = Some(Refusal::BodyTooLarge);
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over limits.max_body_size",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && ctx.upgrade {
            // The backend took the upgrade: from here on a tunnel, idle for at most
            // `timeouts.tunnel` (the upstream side's reads already wait that long).
            self.observe_latency(ctx);
            ctx.record_outcome(Outcome::Success);
            ctx.tunnel = Some(self.metrics.tunnels.open());
            session.set_read_timeout(Some(ctx.snap().config.timeouts.tunnel));
            return Ok(());
        }
        if resp.status.is_informational() {
            return Ok(());
        }
        if ctx.relaying() && relay::refused(resp) {
            // The relay's region has nothing to serve with; it acted on nothing.
            return Err(Error::explain(
                relay::RELAY_UNAVAILABLE,
                "the relay's region has no usable backend",
            ));
        }
        self.observe_latency(ctx);
        if ctx.grpc.is_some() {
            return grpc_response(ctx, resp);
        }
        let outcome = if resp.status.is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        ctx.record_outcome(outcome);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(tunnel), Some(chunk)) = (&ctx.tunnel, body.as_ref()) {
            tunnel.to_client(chunk.len());
        }
        if ctx.grpc.as_ref().is_some_and(|g| g.expired(Instant::now())) {
            // A stream past the client's deadline ends here.
            return Err(Error::explain(
                ErrorType::ReadTimedout,
                "the gRPC call's deadline passed while streaming",
            ));
        }
        Ok(None)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(status) = grpc::status_of(trailers) {
            if let Some(call) = &mut ctx.grpc {
                call.status = Some(status);
                ctx.record_outcome(grpc::outcome(status));
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if self.inst.is_draining() {
            session.set_keepalive(None);
        }
        sticky::set_cookie(resp, ctx)?;
        let config = &ctx.snap().config;
        if ctx.tls {
            if let Some(hsts) = &config.listeners.hsts {
                resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
            }
        }
        if config.steering.expose_headers {
            if let Some((region, _)) = ctx.backend() {
                resp.insert_header(&X_MERIDIAN_REGION, region.name.as_ref())?;
            }
            let country = ctx
                .location
                .as_ref()
                .map_or("unknown", |l| l.country.as_str());
            resp.insert_header(&X_MERIDIAN_CLIENT_COUNTRY, country)?;
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, error: &Error) -> bool {
        // A client that went away is routine, not an error worth a log line each time; a
        // request Meridian refused itself is counted and in the access log, and so is a
        // tunnel's end.
        error.esource() == &ErrorSource::Downstream || ctx.refusal.is_some() || ctx.tunnel.is_some()
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = failure::status_for(e);
        failure::respond(session, code, ctx).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.end_inflight();
        if let Some(call) = &ctx.grpc {
            let status = call.status;
            if e.is_none() {
                // A stream that ended cleanly: its trailers said how it went (a response
                // without a status is the backend's protocol error).
                ctx.record_outcome(status.map_or(Outcome::Failure, grpc::outcome));
            }
            self.metrics.grpc.count(status);
        }
        if let Some(tunnel) = &mut ctx.tunnel {
            tunnel.end();
        }
        let status = session.response_written().map(|r| r.status.as_u16());
        super::log::count(ctx, status, &self.metrics);
        if ctx.snap().config.logging.access_log {
            super::log::access_line(session.req_header(), ctx, status, e);
        }
    }
}

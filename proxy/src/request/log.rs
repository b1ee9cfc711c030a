//! The end of a request: counters by backend and status class, by client continent and
//! served region, failovers, and one access log line (target `access`).

use pingora::http::RequestHeader;
use pingora::Error;

use super::ctx::Ctx;
use super::metrics::RequestMetrics;

/// Counts a finished request.
pub fn count(ctx: &Ctx, status: Option<u16>, metrics: &RequestMetrics) {
    if ctx.refusal == Some(super::ctx::Refusal::NoRoute) {
        metrics.unrouted.inc();
        return;
    }
    if let Some(service) = ctx.snap().services.get(usize::from(ctx.plan.service)) {
        service.metrics.count_status(status);
    }
    let Some((region, member)) = ctx.backend() else {
        if ctx.no_backend {
            metrics.no_backend.inc();
        }
        return;
    };
    member.state.metrics.count_status(status);
    let continent = ctx.location.and_then(|l| l.continent).map(|c| c.code());
    region.state.metrics.count_client(continent);
    let served = ctx.attempt.as_ref().map(|a| usize::from(a.pick.region));
    if let (Some(first), Some(served)) = (ctx.plan.preferred, served) {
        if usize::from(first) != served {
            ctx.snap().count_failover(usize::from(first), served);
        }
    }
}

/// Writes the access log line of a finished request.
pub fn access_line(req: &RequestHeader, ctx: &Ctx, status: Option<u16>, e: Option<&Error>) {
    let backend = ctx.backend();
    tracing::info!(
        target: "access",
        client = %ctx.client.map_or_else(|| "-".to_string(), |c| c.ip.to_string()),
        country = ctx.location.as_ref().map_or("-", |l| l.country.as_str()),
        method = %req.method,
        path = %req.uri,
        status = status.unwrap_or(0),
        backend = backend.map_or("-", |(_, m)| &*m.state.addr_label),
        region = backend.map_or("-", |(r, _)| &*r.name),
        service = ctx.snap().services.get(usize::from(ctx.plan.service)).filter(|_| ctx.refusal != Some(super::ctx::Refusal::NoRoute)).map_or("-", |s| &*s.name),
        attempts = ctx.tried.count(),
        duration_us = ctx.start.elapsed().as_micros() as u64,
        error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
        grpc_status = ctx.grpc.as_ref().and_then(|g| g.status).map_or(-1, i32::from),
    );
}

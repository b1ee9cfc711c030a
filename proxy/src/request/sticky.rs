//! Sticky sessions by an inserted cookie (HAProxy's `cookie … insert`, Cloudflare's
//! `__cflb`): the request's cookie names a backend by an opaque token; the first attempt
//! goes to it while it can take the request (a draining one keeps its sessions unless
//! `sticky.draining = "move"`); otherwise, and on every retry, the balancer picks, and the
//! response sets the cookie to the backend that answered.

use meridian_config::DrainingSessions;
use meridian_routing::{Pick, Snapshot, StickyTable};
use pingora::http::{RequestHeader, ResponseHeader};
use tokio::time::Instant;

use super::ctx::Ctx;

/// The value of cookie `name` in a request's `Cookie` headers, unquoted.
fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    super::ctx::cookie_value(req, name).map(|v| v.trim().trim_matches('"'))
}

/// The backend (region, member) a request's sticky cookie names in `table`'s service, if
/// it has sticky sessions and the cookie names a backend of this snapshot. A malformed or
/// unknown value is no pin (the response sets a good one).
pub fn pinned_to(req: &RequestHeader, table: &StickyTable) -> Option<(u16, u16)> {
    let settings = table.settings.as_ref()?;
    let token = StickyTable::parse(cookie(req, &settings.cookie)?)?;
    table.lookup(token)
}

/// The first attempt of a pinned request: its backend, if it can take it.
pub fn first_attempt(
    snap: &Snapshot,
    ctx: &mut Ctx,
    target: (u16, u16),
    now: Instant,
) -> Option<Pick> {
    let service = snap.services.get(usize::from(ctx.plan.service))?;
    let keep = service
        .sticky
        .settings
        .as_ref()
        .is_some_and(|s| s.draining == DrainingSessions::Keep);
    snap.pinned(&ctx.plan, &mut ctx.tried, target, keep, now)
}

/// Sets the sticky cookie on a response when the backend that answered is not the one the
/// request's cookie named (or it named none). A relayed attempt sets none: the relaying
/// instance's region pins the session to its own backend.
pub fn set_cookie(resp: &mut ResponseHeader, ctx: &Ctx) -> pingora::Result<()> {
    let Some(attempt) = &ctx.attempt else {
        return Ok(());
    };
    let pick = attempt.pick;
    let snap = ctx.snap();
    let Some(service) = snap.services.get(usize::from(pick.service)) else {
        return Ok(());
    };
    let Some(settings) = &service.sticky.settings else {
        return Ok(());
    };
    if ctx.sticky == Some((pick.region, pick.member)) || ctx.relaying() {
        return Ok(());
    }
    let Some((_, member)) = snap.picked(pick) else {
        return Ok(());
    };
    let token = service.sticky.token(&service.name, &member.state.id);
    let mut value = format!(
        "{}={}; Path={}",
        settings.cookie,
        StickyTable::format(token),
        settings.path
    );
    if let Some(age) = settings.max_age {
        value.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if settings.secure.unwrap_or(ctx.tls) {
        value.push_str("; Secure");
    }
    if settings.http_only {
        value.push_str("; HttpOnly");
    }
    if let Some(same_site) = settings.same_site {
        value.push_str("; SameSite=");
        value.push_str(same_site.as_str());
    }
    resp.append_header(http::header::SET_COOKIE, value)?;
    Ok(())
}

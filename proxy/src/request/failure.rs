//! When an attempt fails: whether a retry is safe and allowed, and what the client gets
//! when no attempt succeeds (the status for the error, the body, `Retry-After`).

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use meridian_routing::budget::RetryBudget;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::time::Duration;
use tokio::time::Instant;

use super::ctx::{Ctx, Refusal};
use super::grpc;
use super::metrics::RequestMetrics;
use crate::control::overload::local_exhaustion;

const NO_BACKEND_BODY: &str = "503 Service Unavailable: no healthy backend is available\n";

/// Whether the request may be retried: attempts left for it, and a retry left in the
/// instance's budget (see [`RetryBudget`]); a refusal by the budget is counted. A retry
/// granted is counted against the failed attempt's region.
pub fn may_retry(ctx: &Ctx, budget: &RetryBudget, metrics: &RequestMetrics) -> bool {
    if !ctx.attempts_left() {
        return false;
    }
    let retry = &ctx.snap().config.retry;
    if budget.withdraw(Instant::now(), retry.min_per_second) {
        ctx.count_retry();
        return true;
    }
    metrics.retries_refused.inc();
    false
}

/// Whether an attempt that failed while proxying may be sent again elsewhere: an idempotent
/// request (`idempotent`: the method, or a gRPC method listed in `retry.grpc_idempotent`),
/// or any request the backend cannot have acted on — writing its header failed and no body
/// byte went out (an incomplete request). Once the request may have been received whole
/// (the error came while waiting for the answer), a POST is never replayed. Never once the
/// response has started, nor with a truncated retry buffer.
pub fn safe_to_resend(session: &Session, e: &Error, body_sent: bool, idempotent: bool) -> bool {
    let unsent =
        matches!(e.etype(), ErrorType::WriteError | ErrorType::WriteTimedout) && !body_sent;
    (idempotent || unsent)
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// The I/O error at the bottom of a pingora error, if there is one.
fn io_cause(e: &Error) -> Option<&std::io::Error> {
    let mut cur: &(dyn std::error::Error + 'static) = e.root_cause();
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = cur.source()?;
    }
}

/// Whether a connect failure was this host's own (pingora wraps a failure to create or bind
/// the socket as `InternalError`, `SocketError` or `BindError`; the errno tells the rest).
pub fn is_local(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::InternalError | ErrorType::SocketError | ErrorType::BindError
    ) || io_cause(e)
        .and_then(std::io::Error::raw_os_error)
        .is_some_and(local_exhaustion)
}

/// Whether an upstream read timeout is really the client's: the request body was not
/// complete, and no body byte arrived from the client for as long as the backend was given
/// to answer (`timeouts.read`). The backend was waiting for the rest of the request.
pub fn client_stalled(session: &mut Session, e: &Error, ctx: &Ctx) -> bool {
    if e.esource() != &ErrorSource::Upstream || *e.etype() != ErrorType::ReadTimedout {
        return false;
    }
    if session.as_mut().is_body_done() || session.response_written().is_some() {
        return false;
    }
    let quiet_since = ctx.last_body_at.unwrap_or(ctx.start);
    quiet_since.elapsed() >= ctx.snap().config.timeouts.read
}

/// The status a failed request is answered with (0: nobody to answer).
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        t if *t == super::relay::RELAY_UNAVAILABLE || *t == super::grpc::RETRYABLE => 503,
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
    }
}

/// Sends the error response for `code`, unless a response has started: to a gRPC call a
/// trailers-only answer with the matching `grpc-status` (or the backend's own status, held
/// back for a retry that could not be made).
pub async fn respond(session: &mut Session, code: u16, ctx: &mut Ctx) {
    if code == 0 || session.response_written().is_some() {
        return;
    }
    if let Some(call) = &mut ctx.grpc {
        let passed = call.expired(Instant::now());
        let (status, message) = match call.message.take() {
            Some(held) => (call.status.unwrap_or(grpc::UNAVAILABLE), held),
            None => {
                let (body, _) = body_for(
                    code,
                    ctx.refusal,
                    ctx.no_backend,
                    Duration::ZERO,
                    session.req_header(),
                );
                let text = body.split_once(": ").map_or(body.as_str(), |(_, m)| m);
                (grpc::refusal(code, passed), text.trim().to_string())
            }
        };
        if let Some(call) = &mut ctx.grpc {
            call.status = Some(status);
        }
        if let Err(err) = grpc::respond(session, status, &message).await {
            tracing::debug!(error = %err, "could not send the gRPC error");
        }
        return;
    }
    let (body, retry_after) = body_for(
        code,
        ctx.refusal,
        ctx.no_backend,
        ctx.snap().config.retry.retry_after,
        session.req_header(),
    );
    let mut resp = ResponseHeader::build(code, Some(4))
        .unwrap_or_else(|_| pingora::protocols::http::ServerSession::generate_error(code));
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header(http::header::CACHE_CONTROL, "no-store");
    if code == 503 && ctx.relayed && ctx.no_backend {
        let _ = resp.insert_header(&super::relay::RELAY_FAILED, "no-backend");
    }
    if let Some(after) = retry_after {
        let secs = after.as_secs().max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            let _ = resp.insert_header(RETRY_AFTER, v);
        }
    }
    if let Err(err) = session.write_error_response(resp, Bytes::from(body)).await {
        tracing::debug!(error = %err, "could not send the error response");
        return;
    }
    // A lingering close (as nginx does it): read, for a moment, what is left of a request
    // body the client is still sending, so that closing the connection does not reset it
    // before the client has read the answer.
    if !session.as_mut().is_body_done() {
        let _ = tokio::time::timeout(LINGER, session.as_mut().drain_request_body()).await;
    }
}

/// The body of the error answer for `code` to `req` and, for a 503, its `Retry-After`.
fn body_for(
    code: u16,
    refusal: Option<Refusal>,
    no_backend: bool,
    retry: Duration,
    req: &pingora::http::RequestHeader,
) -> (String, Option<Duration>) {
    match (code, refusal) {
        (_, Some(Refusal::Shed(_))) => (
            "503 Service Unavailable: the proxy is overloaded; try again shortly\n".to_string(),
            Some(std::time::Duration::from_secs(1)),
        ),
        (_, Some(Refusal::LocalResources)) => (
            "503 Service Unavailable: the proxy is out of connections; try again shortly\n"
                .to_string(),
            Some(std::time::Duration::from_secs(1)),
        ),
        (_, Some(Refusal::BodyTooLarge)) => (
            "413 Content Too Large: the request body is over the proxy's limit\n".to_string(),
            None,
        ),
        (_, Some(Refusal::Loop)) => (
            "508 Loop Detected: this request already passed through this proxy\n".to_string(),
            None,
        ),
        (_, Some(Refusal::ClientStalled)) => (
            "408 Request Timeout: the request body stopped arriving\n".to_string(),
            None,
        ),
        (_, Some(Refusal::DeadlineExceeded)) => (
            "504 Gateway Timeout: the call's deadline passed before a backend answered\n"
                .to_string(),
            None,
        ),
        (_, Some(Refusal::NoRoute)) => (no_route_body(req), None),
        (503, None) if no_backend => (NO_BACKEND_BODY.to_string(), Some(retry)),
        (502, None) => ("502 Bad Gateway: the upstream failed\n".to_string(), None),
        (504, None) => (
            "504 Gateway Timeout: the upstream did not answer in time\n".to_string(),
            None,
        ),
        (c, None) => (format!("{c}\n"), None),
    }
}

/// The body of a `404` for a request no route matches: its host and path, as far as they
/// are printable (and not too long).
fn no_route_body(req: &pingora::http::RequestHeader) -> String {
    let shown = |s: &str| -> String {
        let clean: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(200)
            .collect();
        if clean.is_empty() {
            "(none)".to_string()
        } else {
            clean
        }
    };
    let host = req.uri.host().map(str::to_string).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    format!(
        "404 Not Found: no service is routed for host {} and path {}\n",
        shown(host.as_deref().unwrap_or("")),
        shown(req.uri.path())
    )
}

/// How long an error answer waits for the rest of a request body before closing.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

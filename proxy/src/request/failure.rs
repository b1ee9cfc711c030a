//! When an attempt fails: whether a retry is safe and allowed, and what the client gets
//! when no attempt succeeds (the status for the error, the body, `Retry-After`).

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use meridian_routing::budget::RetryBudget;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use tokio::time::Instant;

use super::ctx::Ctx;
use super::metrics::RequestMetrics;

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
/// request, or any request the backend cannot have acted on — writing its header failed and
/// no body byte went out (an incomplete request). Once the request may have been received
/// whole (the error came while waiting for the answer), a POST is never replayed. Never once
/// the response has started, nor with a truncated retry buffer.
pub fn safe_to_resend(session: &Session, e: &Error, body_sent: bool) -> bool {
    let unsent =
        matches!(e.etype(), ErrorType::WriteError | ErrorType::WriteTimedout) && !body_sent;
    (session.req_header().method.is_idempotent() || unsent)
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// The status a failed request is answered with (0: nobody to answer).
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
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
    }
}

/// Sends the error response for `code`, unless a response has started.
pub async fn respond(session: &mut Session, code: u16, ctx: &Ctx) {
    if code == 0 || session.response_written().is_some() {
        return;
    }
    let (body, retry_after) = match code {
        503 if ctx.no_backend => (
            NO_BACKEND_BODY.to_string(),
            Some(ctx.snap().config.retry.retry_after),
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

//! Request routing and the endpoint handlers.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;

use crate::body::{DripBody, PatternBody};
use crate::Shared;

/// Response body type of every endpoint.
pub(crate) type RespBody = BoxBody<Bytes, Infallible>;

/// Largest `/bytes/N`.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `/delay/MS`.
const MAX_DELAY_MS: u64 = 60_000;
/// Largest request body `/echo` collects.
const MAX_ECHO: usize = 64 * 1024 * 1024;

/// Answers one request; a stopped backend's connections are dropped unanswered.
/// Adds `x-backend` / `x-region` to whatever is answered.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    mut stop: watch::Receiver<bool>,
) -> Response<RespBody> {
    let mut resp = tokio::select! {
        resp = respond(&shared, req) => resp,
        () = crate::stopped(&mut stop) => {
            // A killed backend answers nothing: its connection task drops the connection
            // as soon as it sees the stop. On a multi-thread runtime this handler can see
            // the stop first, within the same poll, and an immediate answer would still go
            // out; waiting makes sure the connection is gone by then (an HTTP/2 stream,
            // spawned on its own, ends after the wait instead of hanging forever).
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        }
    };
    let headers = resp.headers_mut();
    headers.insert("x-backend", shared.name_hv.clone());
    headers.insert("x-region", shared.region_hv.clone());
    resp
}

async fn respond(shared: &Shared, req: Request<Incoming>) -> Response<RespBody> {
    let is_health = req.uri().path() == "/healthz";
    if is_health {
        shared.health_hits.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.hits.fetch_add(1, Ordering::Relaxed);
    }
    shared.wait_unhung().await;
    if is_health {
        return if shared.healthy() {
            text(StatusCode::OK, "ok\n")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
        };
    }
    let delay = shared.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = shared.fail_status() {
        let status = valid_status(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return text(
            status,
            format!("injected failure {code} from {}\n", shared.name),
        );
    }
    route(shared, req).await
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<RespBody> {
    let path = req.uri().path();
    if path == "/echo" {
        return echo(req).await;
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => bytes_response(n),
            _ => bad_request("/bytes/N needs 0 <= N <= 67108864"),
        };
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse::<u16>().ok().and_then(valid_status) {
            Some(status) => text(status, format!("status {}\n", status.as_u16())),
            None => bad_request("/status/NNN needs 200 <= NNN <= 599"),
        };
    }
    if let Some(rest) = path.strip_prefix("/drip/") {
        let parsed = rest
            .split_once('/')
            .and_then(|(n, ms)| Some((n.parse::<u32>().ok()?, ms.parse::<u64>().ok()?)));
        return match parsed {
            Some((n, ms)) if n <= 100_000 && ms <= MAX_DELAY_MS => {
                let body = DripBody::new(n, Duration::from_millis(ms));
                let mut resp = Response::new(body.boxed());
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                resp
            }
            _ => bad_request("/drip/COUNT/MS needs COUNT <= 100000 and MS <= 60000"),
        };
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        return match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_DELAY_MS => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                hello(shared)
            }
            _ => bad_request("/delay/MS needs 0 <= MS <= 60000"),
        };
    }
    hello(shared)
}

/// A status that may be answered as a final response (non-1xx, 200..=599).
fn valid_status(code: u16) -> Option<StatusCode> {
    if (200..=599).contains(&code) {
        StatusCode::from_u16(code).ok()
    } else {
        None
    }
}

fn hello(shared: &Shared) -> Response<RespBody> {
    text(
        StatusCode::OK,
        format!("hello from {} in {}\n", shared.name, shared.region),
    )
}

fn bad_request(why: &str) -> Response<RespBody> {
    text(StatusCode::BAD_REQUEST, format!("bad request: {why}\n"))
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn bytes_response(n: u64) -> Response<RespBody> {
    let mut resp = Response::new(PatternBody::new(n).boxed());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

async fn echo(req: Request<Incoming>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_ECHO).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "echo body too large\n");
        }
        Err(_) => return bad_request("could not read the request body"),
    };
    let mut resp = Response::new(Full::new(body.clone()).boxed());
    let headers = resp.headers_mut();
    headers.insert(
        "x-echo-method",
        HeaderValue::from_str(parts.method.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("?")),
    );
    let path = parts.uri.path_and_query().map_or("/echo", |pq| pq.as_str());
    if let Ok(v) = HeaderValue::from_str(path) {
        headers.insert("x-echo-path", v);
    }
    headers.insert("x-echo-length", HeaderValue::from(body.len()));
    let version = match parts.version {
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    headers.insert("x-echo-version", HeaderValue::from_static(version));
    for name in parts.headers.keys() {
        let mut joined = BytesMut::new();
        for (i, value) in parts.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
        }
        let echoed = HeaderName::from_bytes(format!("x-echo-h-{}", name.as_str()).as_bytes());
        if let (Ok(n), Ok(v)) = (echoed, HeaderValue::from_maybe_shared(joined.freeze())) {
            headers.insert(n, v);
        }
    }
    resp
}

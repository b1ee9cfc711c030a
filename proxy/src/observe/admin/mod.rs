//! The admin listener: the status page (`/`), `/metrics`, `/healthz`, `/status`,
//! `POST /reload` and the runtime API (`GET /runtime`, `POST /runtime/backend`,
//! `POST /runtime/region`). Bound to 127.0.0.1 by default; it is never on the request path.
//! Outcomes of the control plane (reload results and errors) become HTTP statuses here,
//! in one place.

pub mod guard;
mod page;
pub mod runtime_api;
pub mod status;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::control::discovery::DnsState;
use crate::control::reload::{
    reloader::needs_upgrade_message, ReloadError, ReloadOutcome, ReloadResult, Reloader, Trigger,
};
use crate::observe::metrics::encode;

/// The admin HTTP application.
pub struct Admin {
    reloader: Arc<Reloader>,
    dns: Arc<DnsState>,
}

impl Admin {
    /// The admin API of the instance `reloader` reloads, with its DNS state.
    pub fn new(reloader: Arc<Reloader>, dns: Arc<DnsState>) -> Self {
        Admin { reloader, dns }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Reads a request body of at most `max` bytes.
async fn read_body(session: &mut ServerSession, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > max {
                    return Err(format!("body over {max} bytes"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("cannot read the body: {e}")),
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// The HTTP status of a reload's result.
fn reload_status(result: ReloadResult) -> StatusCode {
    match result {
        ReloadResult::Ok => StatusCode::OK,
        ReloadResult::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ReloadResult::NeedsUpgrade | ReloadResult::Unavailable => StatusCode::CONFLICT,
        ReloadResult::Busy => StatusCode::TOO_MANY_REQUESTS,
        ReloadResult::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The response to `POST /reload`.
fn reload_response(result: Result<ReloadOutcome, ReloadError>) -> Response<Vec<u8>> {
    let (kind, body) = match result {
        Ok(ReloadOutcome::Applied { generation }) => (
            ReloadResult::Ok,
            json!({ "result": "ok", "generation": generation }),
        ),
        Ok(ReloadOutcome::NeedsUpgrade { settings }) => (
            ReloadResult::NeedsUpgrade,
            json!({
                "result": ReloadResult::NeedsUpgrade.as_str(),
                "error": needs_upgrade_message(&settings),
                "settings": settings,
            }),
        ),
        Err(e) => (
            e.result(),
            json!({ "result": e.result().as_str(), "error": e.to_string() }),
        ),
    };
    json_response(reload_status(kind), &body)
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let inst = self.reloader.instance();
        let admin = &inst.active().routing.config.admin;
        if let Err(denied) = guard::check(&method, &session.req_header().headers, admin) {
            let (status, text) = denied.answer();
            let mut resp = respond(status, "text/plain", text.as_bytes().to_vec());
            if denied == guard::Denied::Token {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            return resp;
        }
        match (method, path.as_str()) {
            (Method::GET, "/") => page::response(),
            (Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                encode(&inst.registry),
            ),
            (Method::GET, "/healthz") => {
                if inst.is_ready() {
                    respond(StatusCode::OK, "text/plain", b"ok\n".to_vec())
                } else {
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"starting: listeners or first probe round not ready\n".to_vec(),
                    )
                }
            }
            (Method::GET, "/status") => {
                json_response(StatusCode::OK, &status::status(&self.reloader, &self.dns))
            }
            (Method::POST, "/reload") => {
                let _ = session.drain_request_body().await;
                let reloader = self.reloader.clone();
                let result =
                    tokio::task::spawn_blocking(move || reloader.try_reload(Trigger::Admin))
                        .await
                        .unwrap_or_else(|e| Err(ReloadError::Panicked(e.to_string())));
                reload_response(result)
            }
            (Method::GET, "/runtime") => {
                json_response(StatusCode::OK, &runtime_api::settings(&self.reloader))
            }
            (Method::POST, "/runtime/backend" | "/runtime/region") => {
                let body = match read_body(session, runtime_api::MAX_BODY).await {
                    Ok(b) => b,
                    Err(e) => {
                        let v = json!({ "result": "invalid", "error": e });
                        return json_response(StatusCode::BAD_REQUEST, &v);
                    }
                };
                let change = match runtime_api::parse(&path, &body) {
                    Ok(c) => c,
                    Err((status, v)) => return json_response(status, &v),
                };
                let reloader = self.reloader.clone();
                let (status, v) = tokio::task::spawn_blocking(move || {
                    runtime_api::apply(&reloader, &change)
                })
                .await
                .unwrap_or_else(|e| {
                    let v = json!({ "result": "failed", "error": e.to_string() });
                    (StatusCode::INTERNAL_SERVER_ERROR, v)
                });
                json_response(status, &v)
            }
            (
                _,
                "/metrics" | "/healthz" | "/status" | "/reload" | "/runtime" | "/runtime/backend"
                | "/runtime/region",
            ) => {
                let mut resp = respond(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    b"method not allowed\n".to_vec(),
                );
                let allow = match path.as_str() {
                    "/reload" | "/runtime/backend" | "/runtime/region" => "POST",
                    _ => "GET",
                };
                resp.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                resp
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /status, /metrics, /healthz, /runtime, POST /reload, POST /runtime/backend or POST /runtime/region\n".to_vec(),
            ),
        }
    }
}

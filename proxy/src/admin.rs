//! The admin listener: `/metrics`, `/healthz`, `/status` and `POST /reload`.
//! Bound to 127.0.0.1 by default; it is never on the request path.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::instance::Instance;
use crate::reload::{self, ReloadOutcome};
use crate::route;

/// The admin HTTP application.
pub struct Admin {
    inst: Arc<Instance>,
}

impl Admin {
    /// The admin API of `inst`.
    pub fn new(inst: Arc<Instance>) -> Self {
        Admin { inst }
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

fn json_response(status: StatusCode, v: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// The `/status` document.
pub fn status(inst: &Instance) -> Value {
    let snap = inst.snapshot();
    let cfg = &snap.config;
    let now = Instant::now();
    let tau = cfg.latency.decay;
    let ranking = route::plan(&snap, None);
    let info = snap.locator.info();
    let regions: Vec<Value> = snap
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let backends: Vec<Value> = r
                .members
                .iter()
                .map(|m| {
                    let s = &m.state;
                    let last = s.last_probe();
                    json!({
                        "id": &*s.id,
                        "address": s.addr.to_string(),
                        "host": &*s.host,
                        "weight": m.weight,
                        "tier": m.tier,
                        "health": s.health.get().as_str(),
                        "usable": s.usable(now),
                        "ejected": s.outlier.is_ejected(now),
                        "ejection_streak": s.outlier.streak(),
                        "inflight": s.latency.inflight(),
                        "probes": s.probes(),
                        "probe_rtt_ms": s.latency.probe.value().map(|d| d.as_secs_f64() * 1e3),
                        "latency_estimate_ms": f64::from(s.latency.estimate_us(now, tau)) / 1e3,
                        "last_probe": last.map(|p| json!({
                            "at": unix(p.at),
                            "rtt_ms": p.rtt.as_secs_f64() * 1e3,
                            "ok": p.error.is_none(),
                            "error": p.error,
                        })),
                    })
                })
                .collect();
            let usable = r.members.iter().filter(|m| m.state.usable(now)).count();
            json!({
                "name": &*r.name,
                "local": i == snap.local,
                "latitude": r.coords.latitude,
                "longitude": r.coords.longitude,
                "balance": format!("{:?}", cfg.regions[i].balance),
                "health": if usable == 0 { "down" } else if usable < r.members.len() { "degraded" } else { "up" },
                "usable_backends": usable,
                "active_tier": match r.state.active_tier() { u8::MAX => None, t => Some(t) },
                "measured_latency_ms": f64::from(r.state.measured_us()) / 1e3,
                "rank": ranking.regions.iter().position(|&x| usize::from(x) == i),
                "backends": backends,
            })
        })
        .collect();
    let last_reload = inst.last_reload.lock().ok().and_then(|r| r.clone());
    json!({
        "node": { "name": cfg.node.name, "region": cfg.node.region },
        "version": env!("CARGO_PKG_VERSION"),
        "ready": inst.is_ready(),
        "generation": snap.generation,
        "config_file": inst.config_path.as_ref().map(|p| p.display().to_string()),
        "started_at": unix(inst.started_at),
        "snapshot_built_at": unix(snap.built_at),
        "geoip": {
            "database": info.path.as_ref().map_or_else(|| "built-in".to_string(), |p| p.display().to_string()),
            "type": info.database_type,
            "build_epoch": info.build_epoch,
            "attribution": info.attribution,
        },
        "last_reload": last_reload.map(|r| json!({
            "at": unix(r.at),
            "trigger": r.trigger,
            "result": r.result,
            "error": r.message,
            "generation": r.generation,
        })),
        "regions": regions,
        "dns": dns(inst),
    })
}

/// The `dns` part of `/status`: every backend DNS name, its last good answer and the
/// latest attempt's outcome.
fn dns(inst: &Instance) -> Value {
    let names: Vec<Value> = inst
        .dns
        .report()
        .into_iter()
        .map(|(name, s)| {
            json!({
                "name": name.to_string(),
                "resolved": s.resolved,
                "addresses": s.addrs.iter().map(|a| a.addr.to_string()).collect::<Vec<_>>(),
                "last_ok": s.last_ok.map(unix),
                "last_attempt": s.last_attempt.map(unix),
                "error": s.last_error,
                "target_errors": s.target_errors,
                "consecutive_failures": s.failures,
                "refresh_s": s.refresh.as_secs_f64(),
            })
        })
        .collect();
    json!({ "names": names })
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.inst.metrics.encode(),
            ),
            (Method::GET, "/healthz") => {
                if self.inst.is_ready() {
                    respond(StatusCode::OK, "text/plain", b"ok\n".to_vec())
                } else {
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"starting: listeners or first probe round not ready\n".to_vec(),
                    )
                }
            }
            (Method::GET, "/status") => json_response(StatusCode::OK, &status(&self.inst)),
            (Method::POST, "/reload") => {
                let _ = session.drain_request_body().await;
                let inst = self.inst.clone();
                let result = tokio::task::spawn_blocking(move || reload::reload(&inst, "admin"))
                    .await
                    .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
                match result {
                    Ok(ReloadOutcome::Applied { generation }) => json_response(
                        StatusCode::OK,
                        &json!({ "result": "ok", "generation": generation }),
                    ),
                    Ok(ReloadOutcome::NeedsUpgrade(why)) => json_response(
                        StatusCode::CONFLICT,
                        &json!({ "result": "needs_upgrade", "error": why }),
                    ),
                    Err(e) => json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({ "result": "invalid", "error": e }),
                    ),
                }
            }
            (_, "/metrics" | "/healthz" | "/status" | "/reload") => {
                let mut resp = respond(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    b"method not allowed\n".to_vec(),
                );
                let allow = if path == "/reload" { "POST" } else { "GET" };
                resp.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                resp
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /status, /metrics, /healthz or POST /reload\n".to_vec(),
            ),
        }
    }
}

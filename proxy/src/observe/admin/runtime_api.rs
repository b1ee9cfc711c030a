//! The runtime API's requests and answers: `POST /runtime/backend`
//! (`{"backend": "10.0.0.1:8080", "state": "drain", "weight": 5}`), `POST /runtime/region`
//! (`{"service": "api", "region": "us-east", "state": "maintenance"}`) and `GET /runtime`.
//! A body that is not such an object is refused with `400` and a message naming the field
//! and the value; an unknown backend, service or region with `404`.

use http::StatusCode;
use meridian_routing::admin::AdminState;
use serde_json::{json, Map, Value};

use crate::control::reload::Reloader;
use crate::control::runtime::{self, Change, RuntimeError, Target};

/// The largest body the runtime API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// What the admin API answers: a status and a JSON document.
pub type Answer = (StatusCode, Value);

fn bad(message: String) -> Answer {
    (
        StatusCode::BAD_REQUEST,
        json!({ "result": "invalid", "error": message }),
    )
}

/// The JSON object of a body, or why it is not one.
fn object(body: &[u8]) -> Result<Map<String, Value>, Answer> {
    if body.len() > MAX_BODY {
        return Err(bad(format!("body over {MAX_BODY} bytes")));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(bad(format!(
            "the body must be a JSON object, not {}",
            kind(&other)
        ))),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks that `map` has only `allowed` keys.
fn only(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), Answer> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "unknown field \"{k}\" (fields: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A string field.
fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Answer> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Some(v) => Err(bad(format!(
            "field \"{key}\" must be a non-empty string, not {v}"
        ))),
    }
}

/// The `state` field.
fn state(map: &Map<String, Value>) -> Result<Option<AdminState>, Answer> {
    let Some(s) = text(map, "state")? else {
        return Ok(None);
    };
    AdminState::parse(&s).map(Some).ok_or_else(|| {
        bad(format!(
            "field \"state\" = \"{s}\": must be \"ready\", \"drain\" or \"maintenance\""
        ))
    })
}

/// The `weight` field: a number 1..=1000, or `null` for the configured weight again.
fn weight(map: &Map<String, Value>) -> Result<Option<Option<u32>>, Answer> {
    match map.get("weight") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match v.as_u64() {
            Some(w @ 1..=1000) => Ok(Some(Some(w as u32))),
            _ => Err(bad(format!(
                "field \"weight\" = {v}: must be an integer from 1 to 1000, or null for the configured weight"
            ))),
        },
    }
}

/// The change a `POST /runtime/backend` or `/runtime/region` body asks for.
pub fn parse(path: &str, body: &[u8]) -> Result<Change, Answer> {
    let map = object(body)?;
    let target = if path == "/runtime/backend" {
        only(&map, &["backend", "state", "weight"])?;
        let backend = text(&map, "backend")?
            .ok_or_else(|| bad("field \"backend\" is required: an address or ID".into()))?;
        Target::Backend(backend)
    } else {
        only(&map, &["service", "region", "state"])?;
        let region =
            text(&map, "region")?.ok_or_else(|| bad("field \"region\" is required".into()))?;
        Target::Pool {
            service: text(&map, "service")?,
            region,
        }
    };
    Ok(Change {
        target,
        state: state(&map)?,
        weight: weight(&map)?,
    })
}

/// Makes a change and answers for it.
pub fn apply(reloader: &Reloader, change: &Change) -> Answer {
    match runtime::change(reloader, change) {
        Ok(applied) => (
            StatusCode::OK,
            json!({
                "result": "ok",
                "backends": applied.backends,
                "saved": applied.saved,
                "save_error": applied.save_error,
            }),
        ),
        Err(e) => {
            let status = match e {
                RuntimeError::UnknownBackend(_)
                | RuntimeError::UnknownService(..)
                | RuntimeError::UnknownPool(..) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            let result = if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "invalid"
            };
            (status, json!({ "result": result, "error": e.to_string() }))
        }
    }
}

/// `GET /runtime`: the runtime settings in force and where they are saved.
pub fn settings(reloader: &Reloader) -> Value {
    let inst = reloader.instance();
    let s = inst.runtime.get();
    let backends: Map<String, Value> = s
        .backends
        .iter()
        .map(|(id, b)| {
            (
                id.clone(),
                json!({ "state": b.state.as_str(), "weight": b.weight }),
            )
        })
        .collect();
    let pools: Map<String, Value> = s
        .pools
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let active = inst.active();
    let file = active.routing.config.admin.state_file.as_ref();
    json!({
        "state_file": file.map(|p| p.display().to_string()),
        "backends": backends,
        "pools": pools,
    })
}

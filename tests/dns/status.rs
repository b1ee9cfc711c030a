//! `/status` and traffic helpers of `tests/dns.rs`.

#![allow(dead_code)] // shared by several test crates, each using a part

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// The longest wait for a state to be reached.
pub const T: Duration = Duration::from_secs(20);

/// The local region's backends as `"address"="health"`.
pub fn backend_ids(m: &Meridian) -> Vec<String> {
    m.status()["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}={}", b["address"], b["health"]))
        .collect()
}

/// Waits until `cond` holds on the `/status` of the admin listener `admin` (bounded).
pub fn wait_status_at(
    admin: SocketAddr,
    limit: Duration,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let s = blocking_get(admin, "/status")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok());
        if let Some(s) = &s {
            if cond(s) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached after {limit:?}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `cond` holds on `/status` (bounded).
pub fn wait_status(m: &Meridian, what: &str, cond: impl Fn(&Value) -> bool) {
    wait_status_at(m.admin, T, what, cond);
}

/// Whether the local region has the backend `addr` in state `health`.
pub fn has_backend(s: &Value, addr: &str, health: &str) -> bool {
    s["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["address"] == addr && b["health"] == health)
}

/// How many backends the local region has.
pub fn backend_count(s: &Value) -> usize {
    s["regions"][0]["backends"].as_array().unwrap().len()
}

/// The local region's backends as `address → field` (an integer field), sorted by address.
fn by_address(s: &Value, field: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = s["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b[field].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The local region's backends as `address → tier`, sorted by address.
pub fn tiers(s: &Value) -> Vec<(String, u64)> {
    by_address(s, "tier")
}

/// The local region's backends as `address → weight`, sorted by address.
pub fn weights(s: &Value) -> Vec<(String, u64)> {
    by_address(s, "weight")
}

/// The `/status` entry of one DNS name (`Null` if it has none yet).
pub fn dns_name(s: &Value, name: &str) -> Value {
    s["dns"]["names"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// [`wait_status`] off the runtime; hands `m` back.
pub async fn wait(
    m: Meridian,
    what: &'static str,
    cond: impl Fn(&Value) -> bool + Send + 'static,
) -> Meridian {
    blocking(move || {
        wait_status(&m, what, cond);
        m
    })
    .await
}

/// Sends `n` requests through `m`; all must succeed.
pub async fn send(m: &Meridian, n: usize) {
    let c = client();
    for _ in 0..n {
        assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
    }
}

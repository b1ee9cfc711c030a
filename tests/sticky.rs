//! Sticky sessions by an inserted cookie end to end: the first response sets an opaque
//! cookie; 100 requests carrying it all go to one backend; draining that backend sends new
//! clients elsewhere while the old cookie stays (or moves, with `draining = "move"`, and is
//! re-issued); killing it re-pins the session elsewhere with no failed request.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use meridian_demo_backend::Backend;

/// One response: status, the backend that answered and the sticky cookie it set (if any).
struct Answer {
    status: u16,
    backend: String,
    cookie: Option<String>,
}

/// GET `/` with `cookie` (a `name=value` pair), no cookie jar.
async fn get(m: &Meridian, cookie: Option<&str>) -> Answer {
    let mut req = client().get(m.url("/"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("other=1; {c}"));
    }
    let r = req.send().await.unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("sid="));
    Answer {
        status: r.status().as_u16(),
        backend: r.headers()["x-backend"].to_str().unwrap().to_string(),
        cookie,
    }
}

/// The `name=value` part of a `Set-Cookie` header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

fn config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    bs: &[&Backend],
    draining: &str,
) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[sticky]\ncookie = \"sid\"\nmax_age = \"1h\"\ndraining = \"{draining}\"\n"
    ));
    cfg.push_str(&region("local", 50.0, 8.0, bs, "balance = \"round_robin\""));
    cfg
}

fn set_state(m: &Meridian, b: &Backend, state: &str) {
    let body = format!(r#"{{"backend": "{}", "state": "{state}"}}"#, b.addr());
    let (code, text) =
        blocking_request(m.admin, "POST", "/runtime/backend", &[], body.as_bytes()).unwrap();
    assert_eq!(code, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_sticks_survives_a_drain_and_is_repinned_when_its_backend_dies() {
    let bs = [
        backend("b1", "local").await,
        backend("b2", "local").await,
        backend("b3", "local").await,
    ];
    let refs: Vec<&Backend> = bs.iter().collect();
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(listen, admin, &refs, "keep");
    let m = start(cfg.clone(), listen, admin).await;

    // The first response pins the client, with an opaque cookie (not the address).
    let first = get(&m, None).await;
    assert_eq!(first.status, 200);
    let set = first.cookie.expect("the first response sets the cookie");
    assert!(
        set.contains("Max-Age=3600") && set.contains("HttpOnly") && set.contains("Path=/"),
        "{set}"
    );
    let cookie = pair(&set);
    let value = cookie.trim_start_matches("sid=");
    assert_eq!(value.len(), 16, "{cookie}");
    assert!(
        value.chars().all(|c| c.is_ascii_hexdigit()) && !value.contains("127"),
        "opaque: {cookie}"
    );
    let pinned = first.backend.clone();

    // 100 requests with it: all on one backend, and no new cookie.
    for _ in 0..100 {
        let a = get(&m, Some(&cookie)).await;
        assert_eq!((a.status, a.backend.as_str()), (200, pinned.as_str()));
        assert_eq!(a.cookie, None, "a good cookie is not re-issued");
    }
    // Without it, round robin spreads new clients.
    let mut fresh = BTreeMap::new();
    for _ in 0..30 {
        *fresh.entry(get(&m, None).await.backend).or_insert(0) += 1;
    }
    assert_eq!(fresh.len(), 3, "{fresh:?}");

    // Drain the pinned backend: new clients go elsewhere, the session stays.
    let b = bs.iter().find(|b| b.name() == pinned).unwrap();
    set_state(&m, b, "drain");
    for _ in 0..30 {
        let a = get(&m, None).await;
        assert_ne!(a.backend, pinned, "no new client on a draining backend");
    }
    for _ in 0..20 {
        let a = get(&m, Some(&cookie)).await;
        assert_eq!(a.backend, pinned, "its sessions stay (draining = \"keep\")");
    }

    // With draining = "move", the session moves at its next request and gets a new cookie.
    m.write_config(&config(listen, admin, &refs, "move"));
    let (code, body) = m.reload();
    assert_eq!(code, 200, "{body}");
    let moved = get(&m, Some(&cookie)).await;
    assert_ne!(moved.backend, pinned, "moved off the draining backend");
    let cookie = pair(&moved.cookie.expect("re-issued for the new backend"));
    let repinned = moved.backend.clone();
    for _ in 0..20 {
        assert_eq!(get(&m, Some(&cookie)).await.backend, repinned);
    }

    // Kill the backend the session is on: the next request goes elsewhere without a failure
    // (even before probes notice) and the cookie follows.
    set_state(&m, b, "ready");
    let dead = bs.iter().find(|b| b.name() == repinned).unwrap();
    dead.kill().await;
    let after = get(&m, Some(&cookie)).await;
    assert_eq!(after.status, 200);
    assert_ne!(after.backend, repinned);
    let cookie = pair(&after.cookie.expect("re-issued after the death"));
    let third = after.backend.clone();
    for _ in 0..30 {
        let a = get(&m, Some(&cookie)).await;
        assert_eq!((a.status, a.backend.as_str()), (200, third.as_str()));
    }
    m.wait_backend_health(dead.addr(), "down", Duration::from_secs(20));
    for _ in 0..10 {
        let a = get(&m, Some(&cookie)).await;
        assert_eq!((a.status, a.backend.as_str()), (200, third.as_str()));
    }

    // A malformed or unknown cookie is no pin: served, and given a good one.
    for bad in ["sid=zz", "sid=0123456789abcdef", "sid="] {
        let a = get(&m, Some(bad)).await;
        assert_eq!(a.status, 200, "{bad}");
        assert!(a.cookie.is_some(), "{bad}: a good cookie is set");
    }
}

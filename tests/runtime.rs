//! The runtime API end to end: draining a backend under load (no failed request, no new
//! request to it, in-flight falling to 0, kept across a SIGHUP reload), maintenance of a
//! whole region failing over to the next one without a failed request, the guard (token
//! from a non-loopback admin address, cross-site and form posts refused, bad bodies named),
//! the state file across a restart, weights, `meridian ctl`, and slow start.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::load::Load;
use common::*;
use meridian_demo_backend::Backend;

/// `POST path` with a JSON body and extra headers: status and body.
fn post(admin: SocketAddr, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    blocking_request(admin, "POST", path, headers, body.as_bytes()).expect("admin request")
}

/// Sets backend `b`'s state through the API (no token).
fn set_state(m: &Meridian, b: &Backend, state: &str) {
    let body = format!(r#"{{"backend": "{}", "state": "{state}"}}"#, b.addr());
    let (code, text) = post(m.admin, "/runtime/backend", &body, &[]);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains(&format!("\"state\": \"{state}\"")), "{text}");
}

/// The `/status` entry of backend `b`.
fn entry(m: &Meridian, b: &Backend) -> serde_json::Value {
    let s = m.status();
    s["regions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["backends"].as_array().unwrap())
        .find(|e| e["address"] == b.addr().to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{} not in {s}", b.addr()))
}

/// Waits until `cond` holds (bounded by `limit`), describing it as `what`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_under_load_fails_nothing_sends_nothing_new_and_survives_a_reload() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region("local", 50.0, 8.0, &[&b1, &b2], ""));
    let m = start(cfg, listen, admin).await;
    // Slow requests, so that some are in flight on b1 when it is drained.
    let load = Load::start(m.url("/delay/150"), 6, Duration::from_secs(90));
    let d = hits_during(&[&b1, &b2], tokio::time::sleep(Duration::from_secs(1))).await;
    assert!(d[0] > 0 && d[1] > 0, "both serve: {d:?}");

    blocking({
        let (admin, addr) = (m.admin, b1.addr());
        move || {
            let body = format!(r#"{{"backend": "{addr}", "state": "drain"}}"#);
            let (code, text) = post(admin, "/runtime/backend", &body, &[]);
            assert_eq!(code, 200, "{text}");
            assert!(text.contains("\"state\": \"drain\""), "{text}");
        }
    })
    .await;
    // Requests already on their way to b1 when the call returned arrive within a moment;
    // after that, nothing new.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let d = hits_during(&[&b1, &b2], tokio::time::sleep(Duration::from_secs(2))).await;
    assert_eq!(d[0], 0, "a drained backend gets no new request: {d:?}");
    assert!(d[1] >= 10, "the other one serves: {d:?}");
    wait_for("b1 at 0 in flight", Duration::from_secs(10), || {
        entry(&m, &b1)["inflight"] == 0
    });
    let e = entry(&m, &b1);
    assert_eq!(
        (&e["state"], &e["usable"], &e["health"]),
        (
            &serde_json::json!("drain"),
            &serde_json::json!(false),
            &serde_json::json!("up")
        ),
        "{e}"
    );
    let text = m.metrics();
    let series = |state: &str| {
        format!(
            "meridian_backend_admin_state{{backend=\"{}\",region=\"local\",state=\"{state}\"}}",
            b1.addr()
        )
    };
    assert_eq!(metric(&text, &series("drain")), 1.0);
    assert_eq!(metric(&text, &series("ready")), 0.0);

    // A reload keeps it (by the backend's stable ID).
    let generation = m.status()["generation"].as_u64().unwrap();
    m.signal("HUP");
    wait_for("reloaded", Duration::from_secs(20), || {
        m.status()["generation"].as_u64().unwrap() > generation
    });
    assert_eq!(entry(&m, &b1)["state"], "drain");
    let d = hits_during(&[&b1, &b2], tokio::time::sleep(Duration::from_secs(1))).await;
    assert_eq!(d[0], 0, "still drained after the reload: {d:?}");

    // Ready again: it takes requests again.
    set_state(&m, &b1, "ready");
    let d = hits_during(&[&b1, &b2], tokio::time::sleep(Duration::from_secs(2))).await;
    assert!(d[0] > 0, "back in: {d:?}");

    let (ok, failed) = load.finish().await;
    assert!(ok > 50, "{ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_of_a_whole_region_fails_over_to_the_next_without_a_failed_request() {
    let l1 = backend("l1", "local").await;
    let l2 = backend("l2", "local").await;
    let r1 = backend("r1", "remote").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region("local", 50.0, 8.0, &[&l1, &l2], ""));
    cfg.push_str(&region("remote", 40.0, -74.0, &[&r1], ""));
    let m = start(cfg, listen, admin).await;
    let load = Load::start(m.url("/delay/20"), 4, Duration::from_secs(60));
    let d = hits_during(&[&l1, &l2, &r1], tokio::time::sleep(Duration::from_secs(1))).await;
    assert!(
        d[0] + d[1] > 0 && d[2] == 0,
        "the local region serves: {d:?}"
    );

    let body = r#"{"region": "local", "state": "maintenance"}"#;
    let (code, text) = blocking({
        let admin = m.admin;
        move || post(admin, "/runtime/region", body, &[])
    })
    .await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("maintenance"), "{text}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let d = hits_during(&[&l1, &l2, &r1], tokio::time::sleep(Duration::from_secs(2))).await;
    assert_eq!(
        d[0] + d[1],
        0,
        "the region in maintenance takes nothing: {d:?}"
    );
    assert!(d[2] >= 10, "the next region serves: {d:?}");
    let s = m.status();
    assert_eq!(s["services"][0]["pools"][0]["state"], "maintenance", "{s}");
    assert_eq!(s["regions"][0]["usable_backends"], 0, "{s}");
    let text = m.metrics();
    assert!(
        metric(
            &text,
            "meridian_failovers_total{from=\"local\",to=\"remote\"}"
        ) >= 10.0
    );

    let body = r#"{"region": "local", "state": "ready"}"#;
    let (code, text) = post(m.admin, "/runtime/region", body, &[]);
    assert_eq!(code, 200, "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = hits_during(&[&l1, &l2, &r1], tokio::time::sleep(Duration::from_secs(1))).await;
    assert!(d[0] + d[1] > 0, "back home: {d:?}");

    let (ok, failed) = load.finish().await;
    assert!(ok > 50, "{ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_api_needs_the_token_and_refuses_cross_site_and_bad_requests() {
    let b1 = backend("b1", "local").await;
    let listen = free_addr();
    let admin = SocketAddr::from(([0, 0, 0, 0], free_port()));
    let token = "0123456789abcdef-secret";
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!("\n[admin]\ntoken = \"{token}\"\n"));
    cfg.push_str(&region("local", 50.0, 8.0, &[&b1], ""));
    let m = start(cfg, listen, admin).await;
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());
    let drain = format!(r#"{{"backend": "{}", "state": "drain"}}"#, b1.addr());
    let path = "/runtime/backend";

    let refused = [
        (vec![], 401, "no token"),
        (
            vec![("authorization", "Bearer wrong-token-0123456789")],
            401,
            "a wrong token",
        ),
        (
            vec![auth, ("origin", "http://evil.example")],
            403,
            "another origin",
        ),
        (
            vec![auth, ("sec-fetch-site", "cross-site")],
            403,
            "a cross-site fetch",
        ),
        (
            vec![auth, ("content-type", "application/x-www-form-urlencoded")],
            415,
            "a form post",
        ),
        (
            vec![auth, ("content-type", "text/plain")],
            415,
            "a text/plain post",
        ),
    ];
    for (headers, want, what) in refused {
        let (code, text) = post(m.admin, path, &drain, &headers);
        assert_eq!(code, want, "{what}: {text}");
    }
    assert_eq!(entry(&m, &b1)["state"], "ready", "nothing changed");

    // Bad bodies are named; unknown targets are 404.
    let bad = [
        ("not json", 400, "not JSON"),
        ("[1, 2]", 400, "JSON object"),
        (r#"{"backend": "x", "state": "off"}"#, 400, "\\\"off\\\""),
        (
            r#"{"backend": "x", "stat": "drain"}"#,
            400,
            "unknown field \\\"stat\\\"",
        ),
        (r#"{"state": "drain"}"#, 400, "\\\"backend\\\" is required"),
        (
            r#"{"backend": "10.9.9.9:1", "state": "drain"}"#,
            404,
            "no backend",
        ),
    ];
    for (body, want, says) in bad {
        let (code, text) = post(m.admin, path, body, &[auth]);
        assert_eq!(code, want, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    let weight = format!(r#"{{"backend": "{}", "weight": 0}}"#, b1.addr());
    let (code, text) = post(m.admin, path, &weight, &[auth]);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("from 1 to 1000"), "{text}");
    let region = r#"{"region": "nowhere", "state": "drain"}"#;
    let (code, text) = post(m.admin, "/runtime/region", region, &[auth]);
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("nowhere") && text.contains("local"), "{text}");

    // With the token, from the same site, as JSON: applied.
    let json = ("content-type", "application/json");
    let (code, text) = post(m.admin, path, &drain, &[auth, json]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(entry(&m, &b1)["state"], "drain");
    let (code, text) = blocking_get(m.admin, "/runtime").unwrap();
    assert_eq!(code, 200);
    assert!(text.contains(&format!("local/{}", b1.addr())), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_keeps_states_and_weights_across_a_restart_and_ctl_drives_them() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.json");
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[admin]\nstate_file = \"{}\"\n",
        state.display()
    ));
    cfg.push_str(&region(
        "local",
        50.0,
        8.0,
        &[&b1, &b2],
        "balance = \"weighted\"",
    ));
    let mut m = start(cfg, listen, admin).await;
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(meridian_bin())
            .arg("ctl")
            .arg("--admin")
            .arg(admin.to_string())
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    let (ok, text) = ctl(&["drain", &b1.addr().to_string()]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("local/{} (service default): drain", b1.addr())),
        "{text}"
    );
    assert!(text.contains("saved to the state file"), "{text}");
    let (ok, text) = ctl(&["weight", &b2.addr().to_string(), "7"]);
    assert!(ok, "{text}");
    assert!(text.contains("weight 7"), "{text}");
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .contains("\"drain\""));
    assert_eq!(entry(&m, &b2)["weight"], 7);

    // A new process on the same config reads them back.
    m.spawn(false);
    m.wait_ready(Duration::from_secs(30));
    m.wait_all_up(Duration::from_secs(30));
    let (e1, e2) = (entry(&m, &b1), entry(&m, &b2));
    assert_eq!(
        (&e1["state"], &e2["weight"]),
        (&serde_json::json!("drain"), &serde_json::json!(7))
    );
    let d = hits_during(&[&b1, &b2], async {
        for _ in 0..20 {
            let r = client().get(m.url("/")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    })
    .await;
    assert_eq!(d, [0, 20], "b1 stays drained after the restart");

    let (ok, text) = ctl(&["status"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&b1.addr().to_string()) && text.contains("drain"),
        "{text}"
    );
    let (ok, text) = ctl(&["ready", &b1.addr().to_string()]);
    assert!(ok && text.contains(": ready"), "{text}");
    let (ok, text) = ctl(&["weight", &b2.addr().to_string(), "default"]);
    assert!(ok && text.contains("weight 1"), "{text}");
    let (ok, text) = ctl(&["maintenance", "--region", "local"]);
    assert!(ok && text.matches(": maintenance").count() == 2, "{text}");
    let (ok, text) = ctl(&["ready", "--region", "local"]);
    assert!(ok, "{text}");
    let (ok, text) = ctl(&["drain", "10.9.9.9:1"]);
    assert!(
        !ok && text.contains("404") && text.contains("no backend"),
        "{text}"
    );
    let (ok, text) = ctl(&["reload"]);
    assert!(ok && text.contains("\"ok\""), "{text}");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        !saved.contains("drain") && !saved.contains("maintenance"),
        "{saved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_start_ramps_a_revived_backends_share_over_the_window() {
    let b1 = backend("b1", "local").await;
    let b2 = backend("b2", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region(
        "local",
        50.0,
        8.0,
        &[&b1, &b2],
        "balance = \"weighted\"\nslow_start = \"8s\"",
    ));
    let m = start(cfg, listen, admin).await;
    // Down (no traffic meanwhile, so nothing is ejected), then back.
    b2.set_healthy(false);
    m.wait_backend_health(b2.addr(), "down", Duration::from_secs(20));
    b2.set_healthy(true);
    m.wait_backend(b2.addr(), "usable", Duration::from_secs(20), |b| {
        b["usable"] == true
    });
    // b2's share, second by second, over the window and a little after.
    let load = Load::start(m.url("/"), 4, Duration::from_secs(60));
    let mut shares = Vec::new();
    for _ in 0..10 {
        let d = hits_during(&[&b1, &b2], tokio::time::sleep(Duration::from_secs(1))).await;
        let total = (d[0] + d[1]).max(1);
        shares.push(d[1] as f64 / total as f64);
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0);
    assert!(ok > 100, "{ok}");
    let first = shares[0];
    let early = (shares[0] + shares[1]) / 2.0;
    let late = (shares[8] + shares[9]) / 2.0;
    assert!(first < 0.25, "a revived backend starts small: {shares:?}");
    assert!(late > 0.38, "and reaches its full share: {shares:?}");
    assert!(late > early + 0.15, "rising over the window: {shares:?}");
    let text = m.metrics();
    let weight = metric(
        &text,
        &format!(
            "meridian_backend_weight{{backend=\"{}\",region=\"local\"}}",
            b2.addr()
        ),
    );
    assert_eq!(weight, 1.0, "full weight once the window is over");
}

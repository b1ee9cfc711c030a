//! Hot reload and graceful upgrade end to end: reloads under load by every trigger (POST
//! /reload, SIGHUP, replacing the file), SIGHUP alone with watching off, backends added
//! (take traffic) and removed (get none), broken files rejected while traffic flows, health
//! state kept across reloads, and a new process taking over the listening sockets.
//! Certificate and GeoIP database files replaced by rename: `tls.rs` and `geo.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::load::Load;
use common::*;
use meridian_demo_backend::Backend;

/// A config with one weighted region of `(backend, weight)`.
fn weighted(
    listen: SocketAddr,
    admin: SocketAddr,
    members: &[(&Backend, u32)],
    extra: &str,
) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(extra);
    cfg.push_str("\n[reload]\ndebounce = \"100ms\"\n");
    cfg.push_str("\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbalance = \"weighted\"\nbackends = [\n");
    for (b, w) in members {
        cfg.push_str(&format!(
            "  {{ address = \"{}\", weight = {w} }},\n",
            b.addr()
        ));
    }
    cfg.push_str("]\n");
    cfg
}

fn generation(m: &Meridian) -> u64 {
    m.status()["generation"].as_u64().unwrap()
}

fn wait_generation(m: &Meridian, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let g = generation(m);
        if g > above {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "no reload past generation {above}:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until `/status` has a `last_reload` that satisfies `done`; returns it.
fn wait_last_reload(m: &Meridian, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = m.status()["last_reload"].clone();
        if done(&last) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "no such reload recorded; last: {last}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Clone, Copy)]
enum Trigger {
    Admin,
    Sighup,
    File,
}

/// Writes `text` and reloads it by `how`; returns the new generation.
fn reload(m: &Meridian, text: &str, how: Trigger) -> u64 {
    let before = generation(m);
    match how {
        Trigger::Admin => {
            std::fs::write(&m.config, text).unwrap();
            let (code, body) = blocking_request(m.admin, "POST", "/reload", &[], b"").unwrap();
            assert_eq!(code, 200, "{body}");
        }
        Trigger::Sighup => {
            // Written in place; the watcher may also fire: either way one valid reload.
            std::fs::write(&m.config, text).unwrap();
            m.signal("HUP");
        }
        Trigger::File => m.write_config(text),
    }
    wait_generation(m, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_reloads_under_load_drop_nothing_and_apply_at_once() {
    let a = backend("a", "local").await;
    let b = backend("b", "local").await;
    let c = backend("c", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let m = start(
        weighted(listen, admin, &[(&a, 1), (&b, 1)], ""),
        listen,
        admin,
    )
    .await;
    let load = Load::start(m.url("/"), 4, Duration::from_secs(120));
    let triggers = [Trigger::Admin, Trigger::Sighup, Trigger::File];
    let heavy = |i: usize| {
        if i.is_multiple_of(2) {
            (&a, &b)
        } else {
            (&b, &a)
        }
    };
    for i in 0..24 {
        let how = triggers[i % 3];
        let (h, l) = heavy(i);
        // Every fourth reload also adds backend c, the next one removes it again.
        let mut members = vec![(h, 9), (l, 1)];
        if i % 4 == 1 {
            members.push((&c, 1));
        }
        let text = weighted(listen, admin, &members, "");
        let m_ref = &m;
        tokio::task::block_in_place(|| reload(m_ref, &text, how));
        // The new weights govern what comes next: measure a short window.
        let (h0, l0) = (h.hits(), l.hits());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (dh, dl) = (h.hits() - h0, l.hits() - l0);
        assert!(
            dh > 3 * dl,
            "reload {i}: weights 9:1 not in effect ({dh} vs {dl})"
        );
        if i % 4 == 2 {
            // c was removed by this reload: no new requests reach it.
            let c0 = c.hits();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(c.hits(), c0, "removed backend still receives requests");
        }
    }
    let (ok, failed) = load.finish().await;
    assert!(ok > 200, "load ran: {ok}");
    assert_eq!(failed, 0, "{failed} failed requests during reloads");
    assert!(generation(&m) >= 25);
    assert!(metric(&m.metrics(), "meridian_reloads_total{result=\"ok\"}") >= 24.0);
}

/// Sends `n` sequential GETs through the proxy; the hits each of `backends` got meanwhile.
async fn hits_of(m: &Meridian, n: usize, backends: &[&Backend]) -> Vec<u64> {
    let c = client();
    hits_during(backends, async {
        for _ in 0..n {
            let r = c.get(m.url("/")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_watching_off_only_sighup_applies_a_change() {
    let a = backend("a", "local").await;
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = |wa: u32, watch: bool| {
        weighted(listen, admin, &[(&a, wa), (&b, 1)], "")
            .replace("[reload]\n", &format!("[reload]\nwatch = {watch}\n"))
    };
    let m = start(cfg(1, false), listen, admin).await;
    let gen = generation(&m);
    assert_eq!(hits_of(&m, 40, &[&a, &b]).await, [20, 20], "1:1 to start");

    // Changed by rename and then in place: with `watch = false` neither is picked up, for
    // far longer than the 100 ms debounce.
    m.write_config(&cfg(9, false));
    std::fs::write(&m.config, cfg(9, false)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let s = m.status();
        assert_eq!(
            s["generation"].as_u64().unwrap(),
            gen,
            "reloaded without SIGHUP"
        );
        assert!(s["last_reload"].is_null(), "{}", s["last_reload"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(m.status()["regions"][0]["backends"][0]["weight"], 1);
    assert_eq!(hits_of(&m, 40, &[&a, &b]).await, [20, 20], "still 1:1");

    // SIGHUP alone applies it.
    m.signal("HUP");
    let g = tokio::task::block_in_place(|| wait_generation(&m, gen));
    assert_eq!(g, gen + 1);
    let s = m.status();
    assert_eq!(
        s["last_reload"]["trigger"], "SIGHUP",
        "{}",
        s["last_reload"]
    );
    assert_eq!(s["last_reload"]["result"], "ok", "{}", s["last_reload"]);
    assert_eq!(s["regions"][0]["backends"][0]["weight"], 9);
    assert_eq!(
        hits_of(&m, 40, &[&a, &b]).await,
        [36, 4],
        "9:1 after SIGHUP"
    );

    // A SIGHUP that turns watching on: from then on a file change alone applies.
    std::fs::write(&m.config, cfg(9, true)).unwrap();
    m.signal("HUP");
    let g = tokio::task::block_in_place(|| wait_generation(&m, g));
    // The watcher is set up just after the swap: rewrite until it is seen (bounded).
    for attempt in 0.. {
        m.write_config(&cfg(1, true));
        tokio::time::sleep(Duration::from_millis(500)).await;
        if generation(&m) > g {
            break;
        }
        assert!(attempt < 10, "file changes not followed:\n{}", m.log());
    }
    assert_eq!(m.status()["last_reload"]["trigger"], "file change");
    assert_eq!(hits_of(&m, 40, &[&a, &b]).await, [20, 20], "1:1 again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_added_backend_takes_traffic_and_a_removed_one_gets_no_new_requests() {
    let a = backend("a", "local").await;
    let b = backend("b", "local").await;
    let c = backend("c", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let m = start(
        weighted(listen, admin, &[(&a, 1), (&b, 1)], ""),
        listen,
        admin,
    )
    .await;
    let load = Load::start(m.url("/"), 4, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.hits(), 0, "c is not configured yet");

    // Added: c is probed (first probe within min(interval, 1 s)) and then takes its share.
    let added = weighted(listen, admin, &[(&a, 1), (&b, 1), (&c, 1)], "");
    tokio::task::block_in_place(|| reload(&m, &added, Trigger::Admin));
    let since = Instant::now();
    while c.hits() < 20 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the added backend got {} requests in 10 s:\n{}",
            c.hits(),
            m.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("added backend took traffic after {:?}", since.elapsed());
    let before = [a.hits(), b.hits(), c.hits()];
    tokio::time::sleep(Duration::from_millis(600)).await;
    let d: Vec<u64> = [&a, &b, &c]
        .iter()
        .zip(before)
        .map(|(x, h)| x.hits() - h)
        .collect();
    let total: u64 = d.iter().sum();
    assert!(total > 30, "load ran: {d:?}");
    assert!(d[2] * 5 > total, "c has its third (1:1:1): {d:?}");
    assert_eq!(m.status()["regions"][0]["backends"][2]["health"], "up");

    // Removed: once the swap is done, a gets no new request while load goes on. Requests
    // that had picked a from the previous snapshot get half a second to arrive.
    let removed = weighted(listen, admin, &[(&b, 1), (&c, 1)], "");
    tokio::task::block_in_place(|| reload(&m, &removed, Trigger::Admin));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a0, b0, c0) = (a.hits(), b.hits(), c.hits());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(a.hits(), a0, "the removed backend still receives requests");
    let (db, dc) = (b.hits() - b0, c.hits() - c0);
    assert!(db > 10 && dc > 10, "the others carry the load: {db} / {dc}");
    let s = m.status();
    let listed: Vec<&str> = s["regions"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["address"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [b.addr().to_string(), c.addr().to_string()]);

    let (ok, failed) = load.finish().await;
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0, "{failed} requests failed around the reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_file_is_rejected_while_traffic_flows_and_a_fixed_one_applies() {
    let a = backend("a", "local").await;
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let good = weighted(listen, admin, &[(&a, 1), (&b, 1)], "");
    let m = start(good.clone(), listen, admin).await;
    let load = Load::start(m.url("/"), 4, Duration::from_secs(60));
    let broken = [
        (
            good.replace("[regions.local]", "[regions.local"),
            "expected",
        ),
        (
            good.replace("node]\nregion = \"local\"", "node]\nregion = \"locl\""),
            "did you mean `local`",
        ),
        (
            good.replace("interval = \"400ms\"", "interval = \"400 parsecs\""),
            "health_check.interval",
        ),
    ];
    for (i, (text, needle)) in broken.iter().enumerate() {
        let gen = generation(&m);
        std::fs::write(&m.config, text).unwrap();
        let (code, body) = blocking_request(m.admin, "POST", "/reload", &[], b"").unwrap();
        assert_eq!(code, 422, "{body}");
        assert!(body.contains(needle), "{needle:?} not in {body}");
        let s = m.status();
        assert_eq!(s["generation"].as_u64().unwrap(), gen, "nothing applied");
        assert_eq!(s["last_reload"]["result"], "invalid");
        let err = s["last_reload"]["error"].as_str().unwrap();
        assert!(
            err.contains("meridian.toml:"),
            "the error names the file: {err}"
        );
        assert!(
            metric(&m.metrics(), "meridian_reloads_total{result=\"invalid\"}") >= (i + 1) as f64
        );
    }
    // The file watcher sees a broken file too, and rejects it the same way. The in-place
    // writes above also fired the watcher, so this file has a problem of its own (a zero
    // weight) and the wait is for the record of exactly that problem.
    let gen = generation(&m);
    let invalid_before = metric(&m.metrics(), "meridian_reloads_total{result=\"invalid\"}");
    let zero_weight = weighted(listen, admin, &[(&a, 0), (&b, 1)], "");
    m.write_config(&zero_weight);
    let last = tokio::task::block_in_place(|| {
        wait_last_reload(&m, |r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("weight must be at least 1"))
        })
    });
    assert_eq!(last["trigger"], "file change", "{last}");
    assert_eq!(last["result"], "invalid", "{last}");
    let err = last["error"].as_str().unwrap();
    assert!(
        err.contains("meridian.toml:") && err.contains("regions.local.backends[0].weight = 0"),
        "the error names the file, the line and the key: {err}"
    );
    assert!(
        metric(&m.metrics(), "meridian_reloads_total{result=\"invalid\"}") > invalid_before,
        "counted as invalid"
    );
    assert_eq!(generation(&m), gen, "nothing applied");
    // Traffic still follows the running config (1:1), not the rejected file.
    let (a0, b0) = (a.hits(), b.hits());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (da, db) = (a.hits() - a0, b.hits() - b0);
    assert!(da > 10 && db > 10, "both backends still serve: {da} / {db}");
    assert!(da < 3 * db && db < 3 * da, "weights still 1:1: {da} / {db}");
    // Fixed: weights 9:1 apply.
    tokio::task::block_in_place(|| {
        reload(
            &m,
            &weighted(listen, admin, &[(&a, 9), (&b, 1)], ""),
            Trigger::File,
        )
    });
    assert_eq!(m.status()["last_reload"]["result"], "ok", "{}", m.log());
    let (a0, b0) = (a.hits(), b.hits());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.hits() - a0 > 3 * (b.hits() - b0));
    let (ok, failed) = load.finish().await;
    assert!(ok > 100);
    assert_eq!(failed, 0, "traffic was affected by broken reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_state_survives_a_reload() {
    let a = backend("a", "local").await;
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    // rise = 6 probes of 400 ms: a reset state would take over 2 s to come back up.
    let extra = "";
    let cfg = |wa: u32| {
        weighted(listen, admin, &[(&a, wa), (&b, 1)], extra).replace("rise = 2", "rise = 6")
    };
    let m = start(cfg(1), listen, admin).await;
    a.set_healthy(false);
    m.wait_backend_health(a.addr(), "down", Duration::from_secs(15));
    let c = client();
    tokio::task::block_in_place(|| reload(&m, &cfg(5), Trigger::Admin));
    // The up backend keeps taking traffic at once; the down one stays down.
    for _ in 0..20 {
        let r = c.get(m.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-backend"], "b");
    }
    let s = m.status();
    let backends = s["regions"][0]["backends"].as_array().unwrap();
    assert_eq!(backends[0]["health"], "down");
    assert_eq!(backends[1]["health"], "up");
    assert!(
        backends[1]["probes"].as_u64().unwrap() > 1,
        "probe history kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_changes_are_refused_as_needing_an_upgrade() {
    let a = backend("a", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let m = start(weighted(listen, admin, &[(&a, 1)], ""), listen, admin).await;
    let gen = generation(&m);
    let moved = weighted(free_addr(), admin, &[(&a, 7)], "");
    std::fs::write(&m.config, moved).unwrap();
    let (code, body) = blocking_request(m.admin, "POST", "/reload", &[], b"").unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("listeners.http"), "{body}");
    let s = m.status();
    assert_eq!(
        s["generation"].as_u64().unwrap(),
        gen,
        "nothing half-applied"
    );
    assert_eq!(s["last_reload"]["result"], "needs_upgrade");
    assert_eq!(s["regions"][0]["backends"][0]["weight"], 1);
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
}

//! Backup backends end to end: `backup = true` backends of a region take no traffic while a
//! primary is usable, stand in — without a failed request — when every primary dies, and
//! go idle again once a primary is back (the SRV form of the same tiers is in `dns.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::load::Load;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_serve_only_while_no_primary_is_usable_and_no_request_fails_in_between() {
    let p1 = backend("p1", "local").await;
    let p2 = backend("p2", "local").await;
    let spare = backend("spare", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[regions.local]\nlatitude = 50.0\nlongitude = 8.0\nbackends = [\n  {{ address = \"{}\" }},\n  {{ address = \"{}\" }},\n  {{ address = \"{}\", backup = true }},\n]\n",
        p1.addr(),
        p2.addr(),
        spare.addr()
    ));
    let m = start(cfg, listen, admin).await;
    let s = m.status();
    let region = &s["regions"][0];
    assert_eq!(region["active_tier"], 0, "{s}");
    let tiers: Vec<u64> = region["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tier"].as_u64().unwrap())
        .collect();
    assert_eq!(tiers, [0, 0, 1], "{s}");

    // A bounded load for the whole test: GETs, 4 at a time, failures counted.
    let load = Load::start(m.url("/"), 4, Duration::from_secs(60));

    // Primaries up: the backup idles.
    let d = hits_during(
        &[&p1, &p2, &spare],
        tokio::time::sleep(Duration::from_secs(1)),
    )
    .await;
    assert!(d[0] + d[1] >= 50, "load ran: {d:?}");
    assert_eq!(
        d[2], 0,
        "the backup takes nothing while primaries are up: {d:?}"
    );

    // Every primary dies: the backup serves, in the same region, and nobody sees an error
    // (a request that found a dead primary before its probes did is retried on the backup).
    p1.kill().await;
    p2.kill().await;
    m.wait_backend_health(p1.addr(), "down", Duration::from_secs(20));
    m.wait_backend_health(p2.addr(), "down", Duration::from_secs(20));
    let d = hits_during(
        &[&p1, &p2, &spare],
        tokio::time::sleep(Duration::from_secs(1)),
    )
    .await;
    assert!(d[2] >= 50, "the backup serves: {d:?}");
    let s = m.status();
    assert_eq!(s["regions"][0]["active_tier"], 1, "{s}");

    // A primary is back: once it is usable again (up, and re-admitted if the failed
    // requests of its death ejected it), traffic returns to it and the backup idles again.
    p1.revive().await.unwrap();
    m.wait_backend(p1.addr(), "usable", Duration::from_secs(30), |b| {
        b["usable"] == true
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // a measurement tick or more
    let d = hits_during(
        &[&p1, &p2, &spare],
        tokio::time::sleep(Duration::from_secs(1)),
    )
    .await;
    assert!(d[0] >= 50, "the primary serves again: {d:?}");
    assert_eq!(d[2], 0, "the backup is idle again: {d:?}");

    let (ok, failed) = load.finish().await;
    assert!(ok > 200, "{ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

//! Corrupt GeoIP database files end to end: `meridian check` rejects a corrupt and a
//! truncated database, naming it; a running instance whose database is replaced by a
//! corrupt one rejects every reload of it (file watch, POST /reload, SIGHUP), keeps
//! serving with the old database, and takes the next good file.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A database whose first search tree node points far past the data section (its first
/// 8 bytes set: the left record for any record size).
fn corrupt(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes[..8].fill(0xff);
    bytes
}

/// A database cut in half: the metadata at the end is gone.
fn truncated(bytes: Vec<u8>) -> Vec<u8> {
    bytes[..bytes.len() / 2].to_vec()
}

/// `meridian check` on a one-region config using `db`: exit code and stderr.
fn check(dir: &Path, db: &Path) -> (Option<i32>, String) {
    let config = dir.join("meridian.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nregion = \"local\"\n\n[geoip]\ndatabase = \"{}\"\n\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n",
            db.display()
        ),
    )
    .unwrap();
    let out = Command::new(meridian_bin())
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_rejects_corrupt_and_truncated_databases_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = country_db(&[("198.51.100.0/24", "GB")]);
    for (name, bytes, problem) in [
        (
            "corrupt.mmdb",
            corrupt(good.clone()),
            "search tree node 0 points past the data section",
        ),
        (
            "truncated.mmdb",
            truncated(good.clone()),
            "no metadata section",
        ),
    ] {
        let db = dir.path().join(name);
        std::fs::write(&db, bytes).unwrap();
        let (code, stderr) = check(dir.path(), &db);
        assert_eq!(code, Some(1), "{name} accepted: {stderr}");
        let expected = format!(
            "geoip.database: GeoIP database {} is corrupt: {problem}",
            db.display()
        );
        assert!(stderr.contains(&expected), "{expected:?} not in {stderr}");
    }
    // The intact file passes: what failed above is the damage.
    let db = dir.path().join("good.mmdb");
    std::fs::write(&db, good).unwrap();
    let (code, stderr) = check(dir.path(), &db);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Waits (bounded) until `/status` records a reload that satisfies `done`; returns it.
fn wait_last_reload(m: &Meridian, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
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

/// The number of reloads counted as invalid.
fn invalid_reloads(m: &Meridian) -> f64 {
    metric(&m.metrics(), "meridian_reloads_total{result=\"invalid\"}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_replacement_is_rejected_and_the_old_database_kept() {
    let eu = backend("eu-1", "eu-west").await;
    let ap = backend("ap-1", "ap-southeast").await;
    let us = backend("us-1", "us-east").await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    std::fs::write(&db, country_db(&[("198.51.100.0/24", "GB")])).unwrap();
    let mut cfg = header("us-east", listen, admin);
    cfg.push_str(&format!(
        "\n[geoip]\ndatabase = \"{}\"\n\n[client]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[steering]\nexpose_headers = true\n\n[reload]\ndebounce = \"100ms\"\n",
        db.display()
    ));
    cfg.push_str(&region("us-east", 39.04, -77.49, &[&us], ""));
    cfg.push_str(&region("eu-west", 53.35, -6.26, &[&eu], ""));
    cfg.push_str(&region("ap-southeast", 1.29, 103.85, &[&ap], ""));
    let m = start(cfg, listen, admin).await;
    let c = client();
    let route = || {
        let req = c.get(m.url("/")).header("x-forwarded-for", "198.51.100.7");
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let h = |k: &str| r.headers()[k].to_str().unwrap().to_string();
            (h("x-meridian-client-country"), h("x-meridian-region"))
        }
    };
    let gb = ("GB".to_string(), "eu-west".to_string());
    assert_eq!(route().await, gb);
    let generation = m.status()["generation"].as_u64().unwrap();
    let corrupt_error = format!("GeoIP database {} is corrupt", db.display());

    // Replaced by rename with a corrupt file (the network moved to Japan, then damaged):
    // the watcher reloads and rejects it.
    replace_by_rename(&db, corrupt(country_db(&[("198.51.100.0/24", "JP")])));
    let last = tokio::task::block_in_place(|| wait_last_reload(&m, |r| r["result"] == "invalid"));
    assert_eq!(last["trigger"], "file change", "{last}");
    let error = last["error"].as_str().unwrap();
    assert!(error.contains(&corrupt_error), "{error}");
    assert!(
        error.contains("search tree node 0 points past the data section"),
        "{error}"
    );

    tokio::task::block_in_place(|| {
        // POST /reload: rejected the same way, with the reason.
        let (code, body) = m.reload();
        assert_eq!(code, 422, "{body}");
        assert!(body.contains(&corrupt_error), "{body}");
        // SIGHUP: rejected too (counted; the record may be the watcher's, also invalid).
        let before = invalid_reloads(&m);
        m.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(15);
        while invalid_reloads(&m) <= before {
            assert!(
                Instant::now() < deadline,
                "SIGHUP reload not counted:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });

    // Nothing applied: the old database still answers, and says so in /status.
    let s = m.status();
    assert_eq!(s["generation"].as_u64().unwrap(), generation, "{s}");
    assert_eq!(s["last_reload"]["result"], "invalid", "{s}");
    assert_eq!(s["geoip"]["database"], db.display().to_string());
    assert_eq!(s["geoip"]["type"], "meridian-test-country");
    for _ in 0..5 {
        assert_eq!(route().await, gb);
    }

    // A good file next: taken at once, so the corrupt one was rejected, not missed.
    replace_by_rename(&db, country_db(&[("198.51.100.0/24", "JP")]));
    let jp = ("JP".to_string(), "ap-southeast".to_string());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = route().await;
        if seen == jp {
            break;
        }
        assert_eq!(seen, gb, "old or new, nothing else");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good database is not used after 15 s:\n{}",
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.status()["last_reload"]["result"], "ok");
}

//! The admin API's guard, for real: a tokenless or wrong-token mutation is refused when a
//! token is configured, a cross-site form POST is refused, a foreign `Host` cannot read
//! `/status` (DNS rebinding), and the right token reloads.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;

const TOKEN: &str = "test-token-0123456789abcdef";

fn config(listen: SocketAddr, admin: SocketAddr, b: &meridian_demo_backend::Backend) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!("\n[admin]\ntoken = \"{TOKEN}\"\n"));
    cfg.push_str(&region("local", 0.0, 0.0, &[b], ""));
    cfg
}

/// `GET /status` naming another site in `Host`, as a page rebound to 127.0.0.1 would.
fn foreign_host(admin: SocketAddr) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: evil.example:9901\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutations_need_the_token_and_the_same_site() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let m = start(config(listen, admin, &b), listen, admin).await;
    let gen = m.status()["generation"].as_u64().unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let results = blocking(move || {
        let post = |headers: &[(&str, &str)]| {
            blocking_request(admin, "POST", "/reload", headers, b"").unwrap()
        };
        vec![
            post(&[]),
            post(&[("Authorization", "Bearer wrong-token-0123456789")]),
            // A form a page on another site could post, even with the token.
            post(&[
                ("Authorization", bearer.as_str()),
                ("Origin", "https://evil.example"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ]),
            post(&[
                ("Authorization", bearer.as_str()),
                ("Content-Type", "text/plain"),
            ]),
            foreign_host(admin),
            post(&[("Authorization", bearer.as_str())]),
        ]
    })
    .await;
    assert_eq!(results[0].0, 401, "no token: {}", results[0].1);
    assert_eq!(results[1].0, 401, "wrong token: {}", results[1].1);
    assert_eq!(results[2].0, 403, "cross-site: {}", results[2].1);
    assert_eq!(results[3].0, 415, "a simple form body: {}", results[3].1);
    assert_eq!(
        results[4].0, 403,
        "a foreign Host cannot read: {}",
        results[4].1
    );
    assert_eq!(results[5].0, 200, "the token reloads: {}", results[5].1);
    // Only the last one reloaded; reads need no token.
    let s = m.status();
    assert_eq!(s["generation"].as_u64().unwrap(), gen + 1, "{s}");
    assert_eq!(s["last_reload"]["trigger"], "admin");
}

#[test]
fn a_public_admin_listener_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        "[node]\nregion = \"a\"\n[listeners]\nadmin = \"0.0.0.0:9901\"\n[regions.a]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{ address = \"127.0.0.1:9\" }]\n",
    )
    .unwrap();
    let out = std::process::Command::new(meridian_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}

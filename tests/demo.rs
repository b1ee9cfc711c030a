//! `meridian demo`, the README's first command: it starts with no files, serves from three
//! regions, and routes pretend clients by their X-Forwarded-For country.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_serves_three_regions_out_of_the_box() {
    let (listen, admin) = (free_addr(), free_addr());
    let mut demo = Demo(
        Command::new(meridian_bin())
            .args([
                "demo",
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = blocking_get(admin, "/healthz") {
            break;
        }
        assert!(demo.0.try_wait().unwrap().is_none(), "demo exited early");
        assert!(Instant::now() < deadline, "demo not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Wait for every demo backend to be up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = blocking_get(admin, "/status").unwrap();
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        let regions = s["regions"].as_array().unwrap();
        assert_eq!(regions.len(), 3);
        if regions.iter().all(|r| r["health"] == "up") {
            break;
        }
        assert!(Instant::now() < deadline, "demo backends not up: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (xff, region) in [
        (None, "us-east"),
        (Some("81.2.69.160"), "eu-west"),
        (Some("1.0.16.1"), "ap-southeast"),
    ] {
        let headers: Vec<(&str, &str)> = xff.map(|x| ("X-Forwarded-For", x)).into_iter().collect();
        let (code, body) = blocking_request(listen, "GET", "/", &headers, b"").unwrap();
        assert_eq!(code, 200);
        assert!(body.contains(&format!("in {region}")), "{xff:?}: {body}");
    }
    // The printed instructions name the real addresses.
    let _ = demo.0.kill();
    let _ = demo.0.wait();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut demo.0.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains(&format!("curl -i http://{listen}/")), "{out}");
}

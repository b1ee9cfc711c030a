//! `meridian demo`, the README's first command: it starts with no files, runs three
//! instances (one per region) in one mesh, routes pretend clients by their
//! X-Forwarded-For country, answers GeoDNS by client subnet alike from every instance,
//! and moves a region's clients when its instance is killed.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dig +short` for a client subnet at `server`.
fn dig(server: SocketAddr, subnet: &str) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+short",
            "+time=2",
            "+tries=2",
        ])
        .args(["www.demo.test", &format!("+subnet={subnet}")])
        .output()
        .expect("dig (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_dig(servers: &[SocketAddr], subnet: &str, want: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let got: Vec<String> = servers.iter().map(|&s| dig(s, subnet)).collect();
        if got.iter().all(|g| g == want) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{subnet}: wanted {want} from every instance, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_demo_serves_three_regions_out_of_the_box() {
    let (listen, admin, dns) = (free_addr(), free_addr(), free_addr());
    let mut demo = Demo(
        Command::new(meridian_bin())
            .args([
                "demo",
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .args(["--dns", &dns.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read what it prints as it goes.
    let out = Arc::new(Mutex::new(String::new()));
    let reader = std::io::BufReader::new(demo.0.stdout.take().unwrap());
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let mut o = sink.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.lock().unwrap().contains("Stop with Ctrl-C.") {
        assert!(
            demo.0.try_wait().unwrap().is_none(),
            "demo exited early: {}",
            out.lock().unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "demo not ready: {}",
            out.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every demo backend up, seen from us-1.
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
    // GeoDNS: the same answer from every instance, each the region's instance.
    let at = |last: u8| SocketAddr::new([127, 0, 0, last].into(), dns.port());
    let servers = [at(1), at(2), at(3)];
    let long = Duration::from_secs(20);
    wait_dig(&servers, "81.2.69.0/24", "127.0.0.2", long);
    wait_dig(&servers, "1.0.16.0/24", "127.0.0.3", long);
    wait_dig(&servers, "8.8.8.0/24", "127.0.0.1", long);
    // The answer is an instance to use: it serves the client's region.
    let eu = SocketAddr::new([127, 0, 0, 2].into(), listen.port());
    let (code, body) = blocking_get(eu, "/").unwrap();
    assert!(code == 200 && body.contains("in eu-west"), "{body}");

    // Kill eu-west's instance (the PID it printed): UK clients move, Germans stay (residency).
    let text = out.lock().unwrap().clone();
    let pid = text
        .lines()
        .find(|l| l.trim_start().starts_with("eu-1 "))
        .and_then(|l| l.rsplit("pid ").next())
        .and_then(|p| p.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no eu-1 pid in:\n{text}"));
    assert!(Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
    let alive = [at(1), at(3)];
    wait_dig(&alive, "81.2.69.0/24", "127.0.0.1", long);
    wait_dig(&alive, "5.9.0.0/16", "127.0.0.2", long);

    // The printed instructions name the real addresses.
    let text = out.lock().unwrap().clone();
    assert!(
        text.contains(&format!("curl -i http://{listen}/")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "dig @127.0.0.1 -p {} +short www.demo.test +subnet=81.2.69.0/24",
            dns.port()
        )),
        "{text}"
    );
}

//! What the proxy blames on a backend, for real: a client that stalls its upload gets 408
//! and does not get a healthy backend ejected; a client that hangs up while the backend is
//! still working gets the backend connection closed at once, with no blame; running out of
//! the proxy's own file descriptors answers 503 and marks no backend down.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    b: &meridian_demo_backend::Backend,
    extra: &str,
) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(extra);
    cfg.push_str(&region("local", 0.0, 0.0, &[b], ""));
    cfg
}

/// A POST that declares 1,000 body bytes, sends 10 and then nothing for `pause`; returns
/// the status it got.
fn stalled_upload(listen: SocketAddr, pause: Duration) -> String {
    let mut s = TcpStream::connect(listen).unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789",
    )
    .unwrap();
    s.set_read_timeout(Some(pause)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stalls_its_upload_does_not_get_the_backend_ejected() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    // The backend is given 1 s to answer; two failures in a row would eject it.
    let extra = "\n[timeouts]\nread = \"1s\"\n[outlier]\nconsecutive_failures = 2\n";
    let m = start(config(listen, admin, &b, extra), listen, admin).await;
    for _ in 0..3 {
        let status = blocking(move || stalled_upload(listen, Duration::from_secs(8))).await;
        assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    }
    let s = m.status();
    let backend = &s["regions"][0]["backends"][0];
    assert_eq!(backend["ejected"], false, "{s}");
    assert_eq!(backend["usable"], true, "{s}");
    let text = m.metrics();
    assert!(metric(&text, "meridian_client_stalls_total") >= 3.0);
    assert_eq!(
        metric(
            &text,
            &format!(
                "meridian_ejections_total{{backend=\"{}\",region=\"local\"}}",
                b.addr()
            )
        ),
        0.0
    );
    // The backend serves as before.
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
}

/// A backend that answers every request at once with 200, except `GET /hang`, which it
/// never answers: when the proxy closes such a connection, the backend sends `()` on the
/// returned channel. Each connection's thread ends within 60 s.
fn hanging_backend() -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let closed_tx = closed_tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let end = Instant::now() + Duration::from_secs(60);
                let (mut buf, mut hanging) = (Vec::new(), false);
                let mut chunk = [0u8; 4096];
                while Instant::now() < end {
                    match s.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                        Err(_) => break,
                    }
                    while let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..at + 4).collect();
                        if head.starts_with(b"GET /hang ") {
                            hanging = true;
                        } else if s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                if hanging {
                    let _ = closed_tx.send(());
                }
            });
        }
    });
    (addr, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_hangs_up_gets_the_backend_request_abandoned_without_blame() {
    let (b, closed) = hanging_backend();
    let (listen, admin) = (free_addr(), free_addr());
    // Without watching the client, the proxy would hold the backend connection for the
    // whole 30 s read timeout.
    let mut cfg = header("local", listen, admin);
    cfg.push_str("\n[timeouts]\nread = \"30s\"\n[outlier]\nconsecutive_failures = 1\n");
    cfg.push_str(&format!(
        "\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{{ address = \"{b}\" }}]\n"
    ));
    let m = start(cfg, listen, admin).await;
    let waits = blocking(move || {
        let mut waits = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(listen).unwrap();
            c.write_all(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let left = Instant::now();
            drop(c);
            if closed.recv_timeout(Duration::from_secs(10)).is_err() {
                return Err(waits);
            }
            waits.push(left.elapsed());
        }
        Ok(waits)
    })
    .await;
    assert!(
        waits.is_ok(),
        "a backend connection was still open 10 s after its client left: {waits:?}"
    );
    // Not the backend's fault: it is neither ejected nor marked down, and serves.
    let s = m.status();
    let backend = &s["regions"][0]["backends"][0];
    assert_eq!(backend["ejected"], false, "{s}");
    assert_eq!(backend["usable"], true, "{s}");
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
}

/// File descriptors a process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_out_of_file_descriptors_marks_no_backend_down() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let extra = "\n[timeouts]\nfirst_byte = \"60s\"\n";
    let limit = 256;
    let launch = Launch {
        prefix: vec![
            "prlimit".into(),
            format!("--nofile={limit}:{limit}"),
            "--".into(),
        ],
        ..Launch::default()
    };
    let cfg = config(listen, admin, &b, extra);
    let m = blocking(move || {
        let m = Meridian::start_with(&cfg, listen, admin, launch);
        m.wait_all_up(Duration::from_secs(30));
        m
    })
    .await;
    let probe_failures = |text: &str| {
        metric(
            text,
            &format!(
                "meridian_health_checks_total{{backend=\"{}\",region=\"local\",result=\"failure\"}}",
                b.addr()
            ),
        )
    };
    let failures_before = probe_failures(&m.metrics());
    let pid = m.pid();
    // One client connection first, then as many idle ones as it takes to use up the
    // process's descriptors (plus a margin: the accept loop backs off on EMFILE).
    let mut user = TcpStream::connect(listen).unwrap();
    let mut hogs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) < limit {
        assert!(
            Instant::now() < deadline,
            "could not use up the descriptors"
        );
        if let Ok(s) = TcpStream::connect_timeout(&listen, Duration::from_millis(500)) {
            hogs.push(s);
        }
    }
    for _ in 0..16 {
        if let Ok(s) = TcpStream::connect_timeout(&listen, Duration::from_millis(200)) {
            hogs.push(s);
        }
    }
    // The proxy cannot open an upstream connection: 503, and the backend is not blamed.
    user.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    user.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = user.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Probes fail locally for longer than `fall` rounds (3 × 400 ms) meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(hogs);
    drop(user);
    // Back to normal: the backend was never marked down or ejected.
    let text = m.metrics_when(&[("meridian_upstream_local_errors_total", 1.0)]);
    assert_eq!(
        probe_failures(&text),
        failures_before,
        "no probe failure counted"
    );
    let s = m.status();
    let backend = &s["regions"][0]["backends"][0];
    assert_eq!(backend["health"], "up", "{s}");
    assert_eq!(backend["ejected"], false, "{s}");
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
}

//! End-to-end: the case of HTTP/1 header names on the way through a real `meridian` process,
//! with `listeners.preserve_header_case` off (the default) and on, seen by a raw backend and
//! a raw client.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

/// A backend that records each request head as received and answers with header names in
/// mixed case; it serves keep-alive connections until `stop` is set.
fn raw_case_backend(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut chunk) {
                        Ok(0) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(_) => continue, // read timeout: look at `stop` again
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend-Case: Mixed\r\n\r\nok";
                        if s.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// One request with a mixed-case header name and `Connection: close`; the response head.
fn raw_head(addr: std::net::SocketAddr) -> String {
    let text = raw_exchange(
        addr,
        b"GET /case HTTP/1.1\r\nHost: x\r\nX-Custom-Name: v\r\nConnection: close\r\n\r\n",
    );
    text.split("\r\n\r\n").next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_names_go_lower_case_unless_preserve_header_case_is_set() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for preserve in [false, true] {
        let (backend, heads) = raw_case_backend(stop.clone());
        let (listen, admin) = (free_addr(), free_addr());
        let mut cfg = header("local", listen, admin);
        if preserve {
            cfg = cfg.replace(
                "[listeners]\n",
                "[listeners]\npreserve_header_case = true\n",
            );
        }
        cfg.push_str(&format!(
            "\n[regions.local]\nlatitude = 50.0\nlongitude = 8.0\n\
             health_check = {{ kind = \"tcp\" }}\nbackends = [{{ address = \"{backend}\" }}]\n"
        ));
        let _m = start(cfg, listen, admin).await;
        let response = blocking(move || raw_head(listen)).await;
        let request = heads
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.starts_with("GET /case"))
            .cloned()
            .unwrap();
        if preserve {
            assert!(request.contains("\r\nX-Custom-Name: v\r\n"), "{request}");
            assert!(request.contains("\r\nX-Forwarded-For: "), "{request}");
            assert!(response.contains("\r\nX-Backend-Case: Mixed"), "{response}");
            assert!(response.contains("\r\nContent-Length: 2"), "{response}");
        } else {
            assert!(request.contains("\r\nx-custom-name: v\r\n"), "{request}");
            assert!(request.contains("\r\nx-forwarded-for: "), "{request}");
            assert!(!request.contains("X-"), "{request}");
            assert!(response.contains("\r\nx-backend-case: Mixed"), "{response}");
            // the common names in their usual form (pingora's canonical spelling)
            assert!(response.contains("\r\nContent-Length: 2"), "{response}");
            assert!(request.contains("\r\nHost: x\r\n"), "{request}");
        }
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

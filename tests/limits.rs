//! Listener limits against real sockets: a silent connection and a partial header are closed
//! within their deadlines, a complete request shorter than the HTTP/2 preface is answered at
//! once, oversized headers and bodies get 431 and 413, the connection caps hold while other
//! clients are served, and an overloaded instance sheds with 503.

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

/// Reads until the peer closes (or `limit` passes): what arrived and when it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into(), Some(start.elapsed())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&out).into(), Some(start.elapsed())),
        }
    }
    (String::from_utf8_lossy(&out).into(), None)
}

fn status_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_slow_clients_are_cut_and_short_requests_answered() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let extra = "\n[timeouts]\nfirst_byte = \"1s\"\nrequest_header = \"1s\"\n";
    let m = start(config(listen, admin, &b, extra), listen, admin).await;
    blocking(move || {
        // A connection that sends nothing is closed at the first-byte deadline (plain
        // listeners accept h2c, whose preface detection used to wait forever).
        let mut silent = TcpStream::connect(listen).unwrap();
        let (got, closed) = read_until_closed(&mut silent, Duration::from_secs(10));
        let closed = closed.expect("a silent connection is closed");
        assert!(got.is_empty(), "{got}");
        assert!(
            closed >= Duration::from_millis(500),
            "not before the deadline: {closed:?}"
        );

        // A header that trickles in and never ends gets 408 at the header deadline.
        let mut partial = TcpStream::connect(listen).unwrap();
        partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let (got, closed) = read_until_closed(&mut partial, Duration::from_secs(10));
        assert!(closed.is_some(), "a partial header is closed");
        assert!(status_line(&got).starts_with("HTTP/1.1 408"), "{got}");

        // A complete request shorter than the 24-byte HTTP/2 preface is answered at once,
        // without the client closing its side.
        let mut short = TcpStream::connect(listen).unwrap();
        short.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let (got, _) = read_until_closed(&mut short, Duration::from_secs(5));
        assert!(status_line(&got).starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.contains("hello from b"), "{got}");
    })
    .await;
    // h2c with prior knowledge still works after the shorter detection.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(m.url("/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_headers_and_bodies_are_refused() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let extra = "\n[limits]\nmax_header_size = \"2KiB\"\nmax_body_size = \"1KiB\"\n";
    let m = start(config(listen, admin, &b, extra), listen, admin).await;
    let big = "x".repeat(4096);
    let (code, _) =
        blocking(move || blocking_request(listen, "GET", "/", &[("x-big", big.as_str())], b""))
            .await
            .unwrap();
    assert_eq!(code, 431, "a header over limits.max_header_size");
    // A declared body over the limit is refused before anything reaches the backend.
    let before = b.hits();
    let (code, body) =
        blocking(move || blocking_request(listen, "POST", "/echo", &[], &[b'a'; 4096]))
            .await
            .unwrap();
    assert_eq!(code, 413, "{body}");
    assert_eq!(b.hits(), before, "the backend saw nothing");
    // A chunked body is counted as it streams.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; 512]))),
    );
    let r = client()
        .post(m.url("/echo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Within the limits all is well.
    let (code, _) = blocking(move || blocking_request(listen, "POST", "/echo", &[], &[b'a'; 512]))
        .await
        .unwrap();
    assert_eq!(code, 200);
    // Nothing of this counts against the backend.
    assert_eq!(m.status()["regions"][0]["backends"][0]["ejected"], false);
}

/// A connection from `source` to `to` (loopback source addresses stand for clients).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends one keep-alive request on `s` and reads the status line of the answer.
async fn request_on(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_caps_hold_while_other_clients_are_served() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let extra = "\n[limits]\nmax_connections = 5\nmax_connections_per_ip = 2\n";
    let m = start(config(listen, admin, &b, extra), listen, admin).await;
    // Two keep-alive connections from one client: both served.
    let mut a1 = connect_from([127, 0, 0, 2], listen).await;
    let mut a2 = connect_from([127, 0, 0, 2], listen).await;
    assert!(request_on(&mut a1).await.starts_with("HTTP/1.1 200"));
    assert!(request_on(&mut a2).await.starts_with("HTTP/1.1 200"));
    // A third from the same client is over its cap: 503.
    let mut a3 = connect_from([127, 0, 0, 2], listen).await;
    assert!(request_on(&mut a3).await.starts_with("HTTP/1.1 503"));
    // Other clients are served up to the listener's cap.
    let mut others = Vec::new();
    for src in [3, 4, 5] {
        let mut c = connect_from([127, 0, 0, src], listen).await;
        assert!(
            request_on(&mut c).await.starts_with("HTTP/1.1 200"),
            "client {src}"
        );
        others.push(c);
    }
    let mut over = connect_from([127, 0, 0, 6], listen).await;
    assert!(
        request_on(&mut over).await.starts_with("HTTP/1.1 503"),
        "listener full"
    );
    // A place freed is a place taken: the first client gets its second connection back.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect_from([127, 0, 0, 2], listen).await;
        if request_on(&mut again).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "a freed place is not reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = m.metrics();
    assert!(
        metric(
            &text,
            "meridian_connections_refused_total{reason=\"client_ip\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "meridian_connections_refused_total{reason=\"listener\"}"
        ) >= 1.0
    );
    drop((a2, others));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overloaded_instance_sheds_with_503_and_recovers() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let extra = "\n[limits]\nmax_inflight = 2\n";
    let m = start(config(listen, admin, &b, extra), listen, admin).await;
    let c = client();
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            let url = m.url("/delay/1500");
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut codes = Vec::new();
    for s in slow {
        codes.push(s.await.unwrap().unwrap());
    }
    assert!(codes.contains(&200), "{codes:?}");
    assert!(codes.contains(&503), "{codes:?}");
    let text = m.metrics();
    assert!(metric(&text, "meridian_requests_shed_total{reason=\"inflight\"}") >= 1.0);
    // Load gone: served again.
    assert_eq!(c.get(m.url("/")).send().await.unwrap().status(), 200);
}

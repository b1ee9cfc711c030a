//! End-to-end tests of the demo backend over real loopback sockets.

mod support;

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_demo_backend::{spawn_on_thread, Backend};
use support::{bounded, get, spec, RawConn};
use tokio::net::TcpStream;

async fn start(name: &str, region: &str) -> Backend {
    Backend::start(spec(name, region))
        .await
        .expect("start backend")
}

fn assert_identity(resp: &support::Resp, name: &str, region: &str) {
    assert_eq!(resp.header("x-backend"), Some(name));
    assert_eq!(resp.header("x-region"), Some(region));
}

#[tokio::test]
async fn hello_body_and_headers() {
    bounded(async {
        let b = start("b1", "eu-west").await;
        assert_eq!(b.name(), "b1");
        assert_eq!(b.region(), "eu-west");
        assert_ne!(b.addr().port(), 0);
        let r = get(b.addr(), "/anything?q=1").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello from b1 in eu-west\n");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_identity(&r, "b1", "eu-west");
    })
    .await;
}

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    bounded(async {
        let b = start("ka", "us").await;
        let mut conn = RawConn::connect(b.addr()).await.expect("connect");
        let first = conn.get("/").await.expect("first");
        let second = conn.get("/status/201").await.expect("second");
        assert_eq!(first.status, 200);
        assert_eq!(second.status, 201);
        assert_eq!(second.text(), "status 201\n");
        assert_eq!(b.connections(), 1);
        assert_eq!(b.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn echo_returns_a_chunked_1mib_upload() {
    bounded(async {
        let b = start("echo", "ap").await;
        let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut req = b"POST /echo?x=1 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\
X-Multi: a\r\nX-Multi: b\r\n\r\n"
            .to_vec();
        for chunk in data.chunks(50_000) {
            req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend_from_slice(chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let mut conn = RawConn::connect(b.addr()).await.expect("connect");
        conn.send(&req).await.expect("send");
        let r = conn.read_response().await.expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), data.len());
        assert!(r.body == data, "echoed body differs");
        assert_eq!(r.header("x-echo-method"), Some("POST"));
        assert_eq!(r.header("x-echo-path"), Some("/echo?x=1"));
        assert_eq!(r.header("x-echo-length"), Some("1048576"));
        assert_eq!(r.header("x-echo-h-transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("x-echo-h-x-multi"), Some("a, b"));
        assert_eq!(r.header("x-echo-h-host"), Some("test"));
        assert_identity(&r, "echo", "ap");
        // The connection is still usable afterwards.
        let again = conn.get("/echo").await.expect("second echo");
        assert_eq!(again.header("x-echo-length"), Some("0"));
        assert_eq!(again.header("x-echo-method"), Some("GET"));
    })
    .await;
}

#[tokio::test]
async fn bytes_has_the_right_length_and_pattern() {
    bounded(async {
        let b = start("bytes", "eu").await;
        for n in [0usize, 1, 26, 100_000, 1_000_003] {
            let r = get(b.addr(), &format!("/bytes/{n}")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
            assert_eq!(r.body.len(), n);
            assert!(r
                .body
                .iter()
                .enumerate()
                .all(|(i, &c)| c == b'a' + (i % 26) as u8));
        }
        for bad in ["/bytes/67108865", "/bytes/-1", "/bytes/x"] {
            let r = get(b.addr(), bad).await;
            assert_eq!(r.status, 400, "{bad}");
            assert_identity(&r, "bytes", "eu");
        }
    })
    .await;
}

#[tokio::test]
async fn status_endpoint() {
    bounded(async {
        let b = start("st", "eu").await;
        let r = get(b.addr(), "/status/503").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "status 503\n");
        assert_identity(&r, "st", "eu");
        assert_eq!(get(b.addr(), "/status/404").await.status, 404);
        assert_eq!(get(b.addr(), "/status/599").await.status, 599);
        assert_eq!(get(b.addr(), "/status/204").await.status, 204);
        for bad in ["/status/101", "/status/99", "/status/600", "/status/abc"] {
            assert_eq!(get(b.addr(), bad).await.status, 400, "{bad}");
        }
    })
    .await;
}

#[tokio::test]
async fn healthz_follows_set_healthy() {
    bounded(async {
        let b = start("h", "eu").await;
        let r = get(b.addr(), "/healthz").await;
        assert_eq!((r.status, r.text()), (200, "ok\n"));
        assert_identity(&r, "h", "eu");
        b.set_healthy(false);
        let r = get(b.addr(), "/healthz").await;
        assert_eq!((r.status, r.text()), (503, "unhealthy\n"));
        assert_eq!(get(b.addr(), "/").await.status, 200);
        b.set_healthy(true);
        assert_eq!(get(b.addr(), "/healthz").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn fail_status_applies_to_everything_but_healthz() {
    bounded(async {
        let b = start("f", "eu").await;
        b.set_fail_status(Some(503));
        for path in ["/", "/echo", "/bytes/10", "/status/200", "/delay/1"] {
            let r = get(b.addr(), path).await;
            assert_eq!(r.status, 503, "{path}");
            assert_identity(&r, "f", "eu");
        }
        assert_eq!(get(b.addr(), "/healthz").await.status, 200);
        b.set_fail_status(None);
        assert_eq!(get(b.addr(), "/").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn delays_are_applied() {
    bounded(async {
        let b = start("d", "eu").await;
        let mut conn = RawConn::connect(b.addr()).await.expect("connect");
        let t = Instant::now();
        assert_eq!(conn.get("/delay/150").await.expect("delay").status, 200);
        assert!(t.elapsed() >= Duration::from_millis(150));

        b.set_delay(Duration::from_millis(200));
        let t = Instant::now();
        let r = conn.get("/").await.expect("delayed hello");
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert_eq!(r.text(), "hello from d in eu\n");

        b.set_delay(Duration::ZERO);
        let t = Instant::now();
        conn.get("/").await.expect("hello");
        assert!(t.elapsed() < Duration::from_millis(200));
    })
    .await;
}

#[tokio::test]
async fn hang_holds_requests_until_cleared() {
    bounded(async {
        let b = start("hang", "eu").await;
        b.set_hang(true);
        let mut conn = RawConn::connect(b.addr()).await.expect("connect");
        conn.send_get("/").await.expect("send");
        let pending = tokio::time::timeout(Duration::from_millis(300), conn.read_response()).await;
        assert!(pending.is_err(), "answered while hanging");
        let mut health = RawConn::connect(b.addr()).await.expect("connect");
        health.send_get("/healthz").await.expect("send");
        let pending =
            tokio::time::timeout(Duration::from_millis(100), health.read_response()).await;
        assert!(pending.is_err(), "healthz answered while hanging");

        b.set_hang(false);
        assert_eq!(conn.read_response().await.expect("released").status, 200);
        assert_eq!(health.read_response().await.expect("released").status, 200);
        assert_eq!(conn.get("/").await.expect("after").status, 200);
    })
    .await;
}

#[tokio::test]
async fn kill_refuses_connections_and_closes_open_ones() {
    bounded(async {
        let b = start("k", "eu").await;
        let addr = b.addr();
        let mut idle = RawConn::connect(addr).await.expect("connect");
        assert_eq!(idle.get("/").await.expect("get").status, 200);
        let mut hung = RawConn::connect(addr).await.expect("connect");
        b.set_hang(true);
        hung.send_get("/").await.expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;

        b.kill().await;
        let err = TcpStream::connect(addr).await.expect_err("port still open");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(idle.closed_within(Duration::from_secs(2)).await);
        assert!(hung.closed_within(Duration::from_secs(2)).await);
        b.kill().await; // idempotent
    })
    .await;
}

#[tokio::test]
async fn revive_serves_again_on_the_same_port() {
    bounded(async {
        let b = start("r", "eu").await;
        let addr = b.addr();
        // Leave a server-closed connection behind so the port has TIME_WAIT state.
        let mut conn = RawConn::connect(addr).await.expect("connect");
        conn.get("/").await.expect("get");
        b.kill().await;
        assert!(TcpStream::connect(addr).await.is_err());
        b.revive().await.expect("revive");
        b.revive().await.expect("second revive is a no-op");
        assert_eq!(b.addr(), addr);
        let r = get(addr, "/").await;
        assert_eq!(r.text(), "hello from r in eu\n");
        // Kill and revive once more.
        b.kill().await;
        b.revive().await.expect("revive again");
        assert_eq!(get(addr, "/healthz").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn counters_count_and_reset() {
    bounded(async {
        let b = start("c", "eu").await;
        let mut conn = RawConn::connect(b.addr()).await.expect("connect");
        for path in ["/", "/echo", "/status/500", "/healthz", "/healthz"] {
            conn.get(path).await.expect("get");
        }
        assert_eq!(b.hits(), 3);
        assert_eq!(b.health_hits(), 2);
        b.reset_counts();
        assert_eq!((b.hits(), b.health_hits(), b.connections()), (0, 0, 0));
        conn.get("/").await.expect("get");
        assert_eq!((b.hits(), b.health_hits()), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    bounded(async {
        let b = start("h2", "eu").await;
        let stream = TcpStream::connect(b.addr()).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let base = format!("http://{}", b.addr());

        let req = hyper::Request::get(format!("{base}/"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 response");
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-backend"], "h2");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"hello from h2 in eu\n");

        let req = hyper::Request::post(format!("{base}/echo"))
            .header("x-test", "yes")
            .body(Full::new(Bytes::from_static(b"over h2")))
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 echo");
        assert_eq!(resp.headers()["x-echo-h-x-test"], "yes");
        assert_eq!(resp.headers()["x-echo-length"], "7");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"over h2");

        // A hung h2 stream must not keep kill() from returning.
        b.set_hang(true);
        let req = hyper::Request::get(format!("{base}/"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let hung = tokio::spawn(send.send_request(req));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(Duration::from_secs(2), b.kill())
            .await
            .expect("kill returned");
        let outcome = tokio::time::timeout(Duration::from_secs(2), hung)
            .await
            .expect("hung request ended");
        assert!(!matches!(outcome, Ok(Ok(ref r)) if r.status() == 200));
    })
    .await;
}

/// The demo's path: servers on their own thread, controlled from elsewhere.
#[test]
fn spawn_on_thread_is_controllable_from_another_runtime() {
    let backends =
        spawn_on_thread(vec![spec("t1", "eu"), spec("t2", "us")]).expect("spawn on thread");
    assert_eq!(backends.len(), 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bounded(async {
        let r = get(backends[1].addr(), "/").await;
        assert_eq!(r.text(), "hello from t2 in us\n");
        let addr = backends[0].addr();
        let mut open = RawConn::connect(addr).await.expect("connect");
        open.get("/").await.expect("get");
        backends[0].kill().await;
        assert!(TcpStream::connect(addr).await.is_err());
        assert!(open.closed_within(Duration::from_secs(2)).await);
        backends[0].revive().await.expect("revive");
        assert_eq!(get(addr, "/").await.text(), "hello from t1 in eu\n");
        assert_eq!(backends[0].hits(), 2);
    }));
    // Dropping every handle shuts the thread's runtime down and closes the ports.
    let addr = backends[1].addr();
    drop(backends);
    rt.block_on(bounded(async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));
}

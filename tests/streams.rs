//! Long-lived connections through a real Meridian: a WebSocket (tokio-tungstenite client and
//! server) upgrades, echoes, stays open while idle for longer than `timeouts.read` and
//! across a reload, is counted, and is closed after `timeouts.tunnel` without the backend
//! being blamed; a graceful stop waits for an open one (the grace period); server-sent
//! events reach the client as they are sent, with gaps longer than `timeouts.read`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket echo server; counts the connections it upgraded and those that ended.
struct WsBackend {
    addr: SocketAddr,
    opened: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

async fn ws_backend() -> WsBackend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (opened, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, e) = (opened.clone(), ended.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (o, e) = (o.clone(), e.clone());
            tokio::spawn(async move {
                // Health probes (TCP connects) never upgrade.
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                o.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
                e.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    WsBackend {
        addr,
        opened,
        ended,
    }
}

fn ws_config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr, read: &str) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&format!(
        "\n[timeouts]\nread = \"{read}\"\ntunnel = \"4s\"\n\n[outlier]\nconsecutive_failures = 1\n\n[regions.local]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{{ address = \"{backend}\" }}]\n[regions.local.health_check]\nkind = \"tcp\"\n"
    ));
    cfg
}

async fn connect(listen: SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(listen).await.unwrap();
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(format!("ws://{listen}/chat"), tcp),
    )
    .await
    .expect("upgrade within 10 s")
    .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

async fn echo(ws: &mut WebSocketStream<TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo within 10 s")
        .expect("the socket is open")
        .expect("a message");
    assert_eq!(got, Message::text(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_outlives_the_read_timeout_and_a_reload_then_closes_when_idle() {
    let b = ws_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let m = start(ws_config(listen, admin, b.addr, "1s"), listen, admin).await;

    let mut ws = connect(listen).await;
    echo(&mut ws, "hello").await;
    // Idle for well over timeouts.read (1 s): still open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    echo(&mut ws, "still here").await;
    let text = m.metrics_when(&[("meridian_tunnels_active", 1.0)]);
    assert_eq!(metric(&text, "meridian_tunnels_active"), 1.0);
    assert_eq!(metric(&text, "meridian_tunnels_total"), 1.0);
    assert!(
        metric(
            &text,
            "meridian_tunnel_bytes_total{direction=\"to_backend\"}"
        ) >= 15.0
    );
    assert!(
        metric(
            &text,
            "meridian_tunnel_bytes_total{direction=\"to_client\"}"
        ) >= 15.0
    );

    // A reload (a changed file) does not touch it.
    let generation = m.status()["generation"].as_u64().unwrap();
    m.write_config(&ws_config(listen, admin, b.addr, "1100ms"));
    let (code, body) = blocking({
        let admin = m.admin;
        move || blocking_request(admin, "POST", "/reload", &[], b"").unwrap()
    })
    .await;
    assert!(code == 200 || code == 409, "{code} {body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.status()["generation"].as_u64().unwrap() <= generation {
        assert!(Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    echo(&mut ws, "after the reload").await;

    // Now idle past timeouts.tunnel (4 s): closed, neither sooner nor much later.
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("closed within 20 s");
    let idle = quiet.elapsed();
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    assert!(idle >= Duration::from_millis(3500), "closed after {idle:?}");
    let text = m.metrics_when(&[("meridian_tunnels_closed_total{reason=\"idle\"}", 1.0)]);
    assert_eq!(
        metric(&text, "meridian_tunnels_closed_total{reason=\"idle\"}"),
        1.0
    );
    assert_eq!(metric(&text, "meridian_tunnels_active"), 0.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.ended.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the backend side stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The idle close was not blamed on the backend (one failure would eject it).
    let s = m.status();
    assert_eq!(s["regions"][0]["backends"][0]["ejected"], false, "{s}");
    let mut again = connect(listen).await;
    echo(&mut again, "again").await;
    assert_eq!(b.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_sent_events_arrive_as_sent_with_gaps_longer_than_the_read_timeout() {
    let b = backend("b", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut cfg = header("local", listen, admin);
    cfg.push_str("\n[timeouts]\nread = \"1s\"\n");
    cfg.push_str(&region("local", 0.0, 0.0, &[&b], ""));
    let m = start(cfg, listen, admin).await;

    // Four events 1.5 s apart: the backend keeps the stream open for 4.5 s.
    let started = Instant::now();
    let mut resp = client()
        .get(m.url("/drip/4/1500"))
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("a first event");
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"data: 1\n\n");
    // The first event came before the backend finished (it finishes after 4.5 s).
    assert!(
        first_at < Duration::from_secs(3),
        "first event after {first_at:?}"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "data: 2\n\ndata: 3\n\ndata: 4\n\n"
    );
    assert!(
        started.elapsed() - first_at >= Duration::from_secs(4),
        "the stream was buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_gives_an_open_websocket_the_grace_period() {
    let b = ws_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = ws_config(listen, admin, b.addr, "1s");
    let launch = Launch {
        grace_period: Some(60),
        ..Launch::default()
    };
    let mut m = blocking(move || {
        let m = Meridian::start_with(&cfg, listen, admin, launch);
        m.wait_all_up(Duration::from_secs(30));
        m
    })
    .await;
    let mut ws = connect(listen).await;
    echo(&mut ws, "before").await;
    m.signal("TERM");
    // Stopping, but the tunnel is an in-flight request: it keeps working.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!m.exited(), "the process left with a tunnel open");
    echo(&mut ws, "during the grace period").await;
    // The client ends it; the process leaves at once, long before the 60 s grace.
    ws.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m.exited() {
        assert!(
            Instant::now() < deadline,
            "still running 20 s after the tunnel closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

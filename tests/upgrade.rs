//! Graceful upgrades under load: a new process takes over the listening sockets and the
//! old one drains, with no request failing — started by hand with `--upgrade` plus
//! `SIGQUIT`, or by the running process itself on `SIGUSR2` (nginx's binary upgrade), which
//! also tells systemd (`NOTIFY_SOCKET`) that the new process is the unit's main process.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::load::Load;
use common::*;

fn config(listen: SocketAddr, admin: SocketAddr, b: &meridian_demo_backend::Backend) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&region("local", 0.0, 0.0, &[b], ""));
    cfg
}

/// Whether a process is running (exists and is not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Stops a process that is not our child when dropped (a failing test leaves none behind).
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

fn kill(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_hands_over_the_sockets_without_refusing_a_connection() {
    let a = backend("a", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut m = start(config(listen, admin, &a), listen, admin).await;
    let old_pid = m.pid();
    let load = Load::start(m.url("/"), 4, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new process waits for the sockets; SIGQUIT makes the old one send them.
    let mut old = tokio::task::block_in_place(|| m.spawn(true)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill("QUIT", old_pid);
    // The old process exits after draining.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(old.try_wait(), Ok(Some(_))) {
        assert!(
            Instant::now() < deadline,
            "old process did not exit:\n{}",
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.finish().await;
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} requests failed during the upgrade:\n{}",
        m.log()
    );
    // The new process answers on the same addresses.
    tokio::task::block_in_place(|| m.wait_ready(Duration::from_secs(10)));
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
    assert_ne!(m.pid(), old_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_upgrades_in_place_and_hands_systemd_the_new_main_pid() {
    let a = backend("a", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    // A stand-in for systemd's notification socket.
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let env = vec![(
        "NOTIFY_SOCKET".to_string(),
        notify_path.display().to_string(),
    )];
    let cfg = config(listen, admin, &a);
    let mut m = tokio::task::block_in_place(|| {
        let m = Meridian::start_with_env(&cfg, listen, admin, env);
        m.wait_all_up(Duration::from_secs(30));
        m
    });
    let old_pid = m.pid();
    let pid_file = m.dir.path().join("meridian.pid");
    let load = Load::start(m.url("/"), 4, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(300)).await;

    kill("USR2", old_pid);

    // The pid file names a new process, the old one exits after draining.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_pid = loop {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = pid.filter(|p| *p != old_pid) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no new process:\n{}", m.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _reap = Reap(new_pid);
    while !m.exited() {
        assert!(
            Instant::now() < deadline,
            "old process did not exit:\n{}",
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.finish().await;
    let log = m.log();
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(
        failed, 0,
        "{failed} requests failed during the upgrade:\n{log}"
    );
    assert!(alive(new_pid), "the new process serves:\n{log}");
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);

    // What systemd was told: READY=1 from the first process, then MAINPID=<new> and
    // READY=1 again from the new one (STOPPING=1 from the old one in between).
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    let text = messages.join("\n---\n");
    let main_pid = messages
        .iter()
        .position(|m| m.contains(&format!("MAINPID={new_pid}")))
        .unwrap_or_else(|| panic!("no MAINPID={new_pid} in:\n{text}"));
    assert!(
        messages[..main_pid].iter().any(|m| m.contains("READY=1")),
        "{text}"
    );
    assert!(
        messages[main_pid..].iter().any(|m| m.contains("READY=1")),
        "the new process says it is ready after taking over:\n{text}"
    );

    kill("TERM", new_pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(new_pid) {
        assert!(Instant::now() < deadline, "new process did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_lets_a_long_streaming_response_finish() {
    let a = backend("a", "local").await;
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(listen, admin, &a);
    // The grace comes from the config (timeouts.shutdown_grace, 60 s by default).
    let launch = Launch {
        grace_period: Some(60),
        ..Launch::default()
    };
    let mut m = tokio::task::block_in_place(|| {
        let m = Meridian::start_with(&cfg, listen, admin, launch);
        m.wait_all_up(Duration::from_secs(30));
        m
    });
    let old_pid = m.pid();
    let pid_file = m.dir.path().join("meridian.pid");
    // 10 events, one a second: a 10 s response.
    let mut stream = client()
        .get(m.url("/drip/10/1000"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: 1\n\n");
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill("USR2", old_pid);
    let started = Instant::now();
    // The whole stream arrives, across the upgrade.
    let mut events = 1;
    while let Some(chunk) = stream.chunk().await.unwrap() {
        events += chunk.windows(6).filter(|w| w == b"data: ").count();
    }
    assert_eq!(events, 10, "every event arrived:\n{}", m.log());
    // Then the old process leaves (it does not wait out the 60 s grace).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !m.exited() {
        assert!(
            Instant::now() < deadline,
            "old process did not exit:\n{}",
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the old process waited for the stream, not the whole grace"
    );
    let new_pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, old_pid);
    let _reap = Reap(new_pid);
    assert!(
        m.log().contains("every in-flight request finished"),
        "{}",
        m.log()
    );
    assert_eq!(client().get(m.url("/")).send().await.unwrap().status(), 200);
    kill("TERM", new_pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(new_pid) {
        assert!(
            Instant::now() < deadline,
            "an idle process stops at once on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

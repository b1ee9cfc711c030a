//! Shared by the end-to-end benches: Meridian served from this process, and free ports.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use meridian::{Instance, ProcessOptions};
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::oneshot;

/// A free loopback port (bound and released at once).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address")
}

struct Stop(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for Stop {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().ok().and_then(|mut r| r.take());
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// Meridian's pingora server running on a thread of this process until [`Served::stop`].
pub struct Served {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Builds the server for `inst` (pid file and upgrade socket in a temp dir), runs it and
/// waits (at most 30 s) until the first probe round is done.
pub fn serve(inst: Arc<Instance>) -> Served {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = ProcessOptions {
        pid_file: dir.path().join("pid").display().to_string(),
        upgrade_sock: dir.path().join("sock").display().to_string(),
        ..ProcessOptions::default()
    };
    let srv = meridian::build(inst.clone(), &opts).expect("server");
    let (stop, rx) = oneshot::channel();
    let thread = std::thread::spawn(move || {
        srv.run(RunArgs {
            shutdown_signal: Box::new(Stop(Mutex::new(Some(rx)))),
        })
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inst.is_ready() {
        assert!(Instant::now() < deadline, "meridian not ready within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Served {
        stop,
        thread,
        _dir: dir,
    }
}

impl Served {
    /// Fast shutdown; returns once the server thread has ended.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

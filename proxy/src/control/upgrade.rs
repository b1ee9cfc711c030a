//! Process signals and the graceful binary upgrade.
//!
//! | Signal | Effect |
//! | --- | --- |
//! | `SIGQUIT` | hand the listening sockets to a process started with `--upgrade`, drain, exit |
//! | `SIGUSR2` | start the binary on disk again with `--upgrade` (a child of this process, so in the same systemd unit), hand it the sockets, drain, exit — nginx's binary upgrade |
//! | `SIGTERM` | stop accepting, let in-flight requests finish, exit |
//! | `SIGINT` | fast stop |
//!
//! Under systemd (`Type=notify`, `NotifyAccess=all`) the new process announces itself with
//! `MAINPID=` as soon as it holds the sockets and `READY=1` once ready, so the unit follows
//! it and the old process's exit does not end the service (see `systemd/meridian.service`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// How the running process was started: what `SIGUSR2` runs again.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// The executable's path as resolved at start (the file an upgrade replaced).
    pub program: PathBuf,
    /// The arguments after the program name.
    pub args: Vec<OsString>,
    /// The Unix socket the listening sockets are handed over on.
    pub upgrade_sock: PathBuf,
}

impl Relaunch {
    /// The current process's program and arguments; `None` if the executable's path is
    /// unknown.
    pub fn current(upgrade_sock: &str) -> Option<Relaunch> {
        let program = std::env::current_exe().ok()?;
        let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
        if !args.iter().any(|a| a == "--upgrade") {
            args.push("--upgrade".into());
        }
        Some(Relaunch {
            program,
            args,
            upgrade_sock: upgrade_sock.into(),
        })
    }

    /// Starts the new process. It inherits stdout/stderr (the journal) and the systemd
    /// notification socket; `WATCHDOG_PID` (this process's PID) is dropped so that the new
    /// process sends the watchdog pings once it is the unit's main process.
    fn spawn(&self) -> std::io::Result<Child> {
        Command::new(&self.program)
            .args(&self.args)
            .env_remove("WATCHDOG_PID")
            .env("MERIDIAN_UPGRADED_FROM", std::process::id().to_string())
            .spawn()
    }
}

/// Waits (at most `limit`) until the child has created the upgrade socket after `since`;
/// `Err` with the reason if the child exits first or the socket never appears.
async fn wait_for_socket(
    child: &mut Child,
    sock: &std::path::Path,
    since: SystemTime,
    limit: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the new process exited: {status}"));
        }
        let fresh = std::fs::metadata(sock)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if fresh {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the new process did not open {} within {limit:?}",
                sock.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Meridian's signal handling for pingora's main loop (replaces pingora's default watch,
/// adding `SIGUSR2`).
pub struct Signals {
    relaunch: Option<Relaunch>,
}

impl Signals {
    /// Signal handling; without `relaunch`, `SIGUSR2` is refused with a log line.
    pub fn new(relaunch: Option<Relaunch>) -> Self {
        Signals { relaunch }
    }

    /// Starts the new process for `SIGUSR2`; `true` once it is waiting for the sockets.
    async fn relaunch(&self) -> bool {
        let Some(r) = &self.relaunch else {
            tracing::error!("SIGUSR2: the executable's path is unknown; cannot upgrade");
            return false;
        };
        // Sub-second mtimes: the socket must be newer than this moment.
        let since = SystemTime::now() - Duration::from_millis(10);
        let mut child = match r.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(program = %r.program.display(), error = %e, "SIGUSR2: cannot start the new binary; still serving");
                return false;
            }
        };
        tracing::info!(program = %r.program.display(), pid = child.id(), "SIGUSR2: new process started, handing the listening sockets over");
        match wait_for_socket(&mut child, &r.upgrade_sock, since, Duration::from_secs(30)).await {
            Ok(()) => {
                // The child runs on (dropping the handle neither kills nor waits for it);
                // once this process exits it is reaped by init or systemd.
                drop(child);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR2: upgrade abandoned; still serving");
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined2()),
        );
        let (Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut usr2)) = streams else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = usr2.recv() => {
                    if self.relaunch().await {
                        return ShutdownSignal::GracefulUpgrade;
                    }
                }
            }
        }
    }
}

/// The PID file (`--pid-file`): written once the process holds the listening sockets,
/// removed on exit unless a newer process (an upgrade) has written its own PID since.
#[derive(Debug)]
pub struct PidFile(Option<PathBuf>);

impl PidFile {
    /// Writes this process's PID to `path` (a failure is logged, not fatal).
    pub fn write(path: &str) -> PidFile {
        let path = PathBuf::from(path);
        match std::fs::write(&path, format!("{}\n", std::process::id())) {
            Ok(()) => PidFile(Some(path)),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the PID file");
                PidFile(None)
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let Some(path) = &self.0 else { return };
        let ours =
            std::fs::read_to_string(path).is_ok_and(|p| p.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// In a process started by an upgrade under systemd: tells systemd this process is now
/// the unit's main process (it holds the listening sockets from here on).
pub fn announce_main_pid() {
    if std::env::var_os("MERIDIAN_UPGRADED_FROM").is_some() {
        super::systemd::notify_main_pid(std::process::id());
    }
}

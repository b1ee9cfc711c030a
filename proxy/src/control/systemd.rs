//! systemd integration: readiness, reload and stop notifications (`sd_notify`), and the
//! watchdog. Every call is a no-op when not started by systemd (`NOTIFY_SOCKET` unset).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd the service is ready (listeners up, first probe round done) or done reloading.
pub fn notify_ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells systemd that `pid` is now the service's main process (a graceful upgrade;
/// needs `NotifyAccess=all`, as the new process is not the main one yet when it says so).
pub fn notify_main_pid(pid: u32) {
    send(&[NotifyState::MainPid(pid)]);
}

/// Tells systemd the service is stopping (graceful upgrade or termination).
pub fn notify_stopping() {
    send(&[NotifyState::Stopping]);
}

/// Tells systemd a reload started (`Type=notify-reload` wants the monotonic timestamp).
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The watchdog interval systemd asks for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half the interval systemd asked for, for as long as the runtime
/// that runs it is alive (a wedged runtime stops the pings and systemd restarts us).
pub async fn watchdog_loop() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

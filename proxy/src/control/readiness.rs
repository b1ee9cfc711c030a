//! Readiness: an instance is ready — `/healthz` answers 200 and systemd gets `READY=1` —
//! once every listener accepts connections, every backend has had its first probe, every
//! backend DNS name its first resolution, and the reload triggers are armed (SIGHUP handled,
//! files watched), so that no config change made after `READY=1` goes unseen.
//!
//! Listeners are checked for real, not assumed: pingora binds them on its own service
//! threads (retrying for a while if an address is taken), so a probe round can finish
//! before the proxy can take a single connection. A listener that is still not up after
//! [`LISTENER_DEADLINE`] ends the process with an error (systemd then restarts it or
//! reports the failure) instead of leaving a process that looks alive and serves nothing.
//! [`preflight`] catches the common case, an address already in use, before starting.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use meridian_config::Config;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long listeners get to come up before the process gives up (pingora itself retries
/// a taken address for about 30 s).
pub const LISTENER_DEADLINE: Duration = Duration::from_secs(45);

/// How often readiness is re-checked until reached.
const POLL: Duration = Duration::from_millis(50);

/// How a listener's readiness is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Plain TCP (HTTP, admin, redirect): a connection is accepted.
    Connect,
    /// TLS or PROXY protocol: the address is bound (a bare connection would log a
    /// handshake error, or count as a malformed PROXY header).
    Bound,
}

/// Every listener of `config`, named by its config key, with how to check it.
fn listeners(config: &Config) -> Vec<(String, SocketAddr, Check)> {
    let l = &config.listeners;
    let mut out = Vec::new();
    let http = if l.proxy_protocol {
        Check::Bound
    } else {
        Check::Connect
    };
    for (i, a) in l.http.iter().enumerate() {
        out.push((format!("listeners.http[{i}]"), *a, http));
    }
    for (i, h) in l.https.iter().enumerate() {
        out.push((
            format!("listeners.https[{i}].address"),
            h.address,
            Check::Bound,
        ));
    }
    for (i, a) in l.redirect_http.iter().enumerate() {
        out.push((format!("listeners.redirect_http[{i}]"), *a, Check::Connect));
    }
    out.push(("listeners.admin".to_string(), l.admin, Check::Connect));
    if let Some(me) = config.own_instance() {
        out.push((
            format!("the mesh endpoint of {}", me.name),
            me.mesh,
            Check::Connect,
        ));
    }
    for (i, a) in config.geodns.listen.iter().enumerate() {
        out.push((format!("geodns.listen[{i}]"), *a, Check::Connect));
    }
    out
}

/// A listener address that cannot be bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The config key, e.g. `listeners.admin`.
    pub key: String,
    /// The address.
    pub addr: SocketAddr,
    /// Why it cannot be bound.
    pub reason: String,
}

/// Listeners that cannot be bound, found before starting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|u| format!("{} = \"{}\": cannot listen: {}", u.key, u.addr, u.reason)).collect::<Vec<_>>().join("\n"))]
pub struct PreflightError(pub Vec<Unavailable>);

/// Checks, before starting, that every listener address can be bound (not in use, not
/// privileged without the capability, assigned to this host). Not for graceful upgrades,
/// where the running process holds the addresses and hands them over.
pub fn preflight(config: &Config) -> Result<(), PreflightError> {
    let mut unavailable = Vec::new();
    for (key, addr, _) in listeners(config) {
        // std binds with SO_REUSEADDR, as pingora does, so a port with connections in
        // TIME_WAIT is not mistaken for one in use.
        if let Err(e) = TcpListener::bind(addr) {
            unavailable.push(Unavailable {
                key,
                addr,
                reason: e.to_string(),
            });
        }
    }
    // GeoDNS serves UDP too.
    for (i, &addr) in config.geodns.listen.iter().enumerate() {
        if let Err(e) = std::net::UdpSocket::bind(addr) {
            unavailable.push(Unavailable {
                key: format!("geodns.listen[{i}] (UDP)"),
                addr,
                reason: e.to_string(),
            });
        }
    }
    if unavailable.is_empty() {
        Ok(())
    } else {
        Err(PreflightError(unavailable))
    }
}

/// Where to connect to reach a listener bound to `addr` (a wildcard address → loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Whether a listener is up.
async fn is_up(addr: SocketAddr, check: Check) -> bool {
    match check {
        Check::Connect => matches!(
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(reachable(addr))).await,
            Ok(Ok(_))
        ),
        // Someone listens there; `preflight` made sure it was free before we started.
        Check::Bound => {
            matches!(TcpListener::bind(addr), Err(e) if e.kind() == ErrorKind::AddrInUse)
        }
    }
}

/// A condition of readiness besides the listeners, set once by the component it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Every backend has been probed at least once (the prober).
    Probed,
    /// Every backend DNS name has had its first resolution (discovery).
    Resolved,
    /// The reload triggers are armed: SIGHUP handled, files watched (reload).
    TriggersArmed,
    /// Every peer instance has been polled once (the mesh), so relaying and GeoDNS
    /// start from the shared health view, not from "no peer known".
    MeshPolled,
    /// GeoDNS has taken in the health view as of all the other conditions (or is off):
    /// its first answers already count this instance and its probed backends.
    GeoDnsViewed,
}

/// Whether the instance is ready, and what it still waits for. Shared by the components
/// that set the conditions, the readiness service and the admin API.
#[derive(Debug, Default)]
pub struct Readiness {
    met: [AtomicBool; 5],
    ready: AtomicBool,
}

impl Readiness {
    /// Records that `condition` holds (it stays so).
    pub fn mark(&self, condition: Condition) {
        self.met[condition as usize].store(true, Ordering::Relaxed);
    }

    /// Whether `condition` holds.
    pub fn is_met(&self, condition: Condition) -> bool {
        self.met[condition as usize].load(Ordering::Relaxed)
    }

    /// Whether the instance is ready (listeners up and every condition met).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn all_met(&self) -> bool {
        self.met.iter().all(|m| m.load(Ordering::Relaxed))
    }

    /// Whether every condition but `but` holds.
    pub fn met_except(&self, but: Condition) -> bool {
        self.met
            .iter()
            .enumerate()
            .all(|(i, m)| i == but as usize || m.load(Ordering::Relaxed))
    }
}

/// The background service that declares the instance ready.
pub struct ReadinessService {
    readiness: Arc<Readiness>,
    listeners: Vec<(String, SocketAddr, Check)>,
}

impl ReadinessService {
    /// Readiness of an instance with `config`'s listeners.
    pub fn new(readiness: Arc<Readiness>, config: &Config) -> Self {
        ReadinessService {
            readiness,
            listeners: listeners(config),
        }
    }
}

#[async_trait]
impl BackgroundService for ReadinessService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Services start once the listening sockets are held (inherited in an upgrade).
        super::upgrade::announce_main_pid();
        let started = Instant::now();
        let mut pending = self.listeners.clone();
        loop {
            let mut still = Vec::new();
            for l in pending {
                if !is_up(l.1, l.2).await {
                    still.push(l);
                }
            }
            pending = still;
            if pending.is_empty() && self.readiness.all_met() {
                if !self.readiness.ready.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "listeners up, first probe round done: ready"
                    );
                    super::systemd::notify_ready();
                }
                return;
            }
            if !pending.is_empty() && started.elapsed() > LISTENER_DEADLINE {
                for (key, addr, _) in &pending {
                    tracing::error!(listener = %key, %addr, "listener did not come up");
                }
                eprintln!(
                    "meridian: listeners not up after {}s: {}; exiting",
                    LISTENER_DEADLINE.as_secs(),
                    pending
                        .iter()
                        .map(|(k, a, _)| format!("{k} = \"{a}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                std::process::exit(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: SocketAddr, admin: SocketAddr) -> Config {
        let text = format!(
            "[node]\nregion = \"a\"\n[listeners]\nhttp = [\"{listen}\"]\nadmin = \"{admin}\"\n\
             [regions.a]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n"
        );
        meridian_config::parse(&text, "test.toml", None).unwrap()
    }

    #[test]
    fn preflight_names_the_listener_whose_address_is_taken() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = preflight(&config(free, busy)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("listeners.admin = \"{busy}\": cannot listen: ")),
            "{err}"
        );
        assert!(!err.contains("listeners.http"), "{err}");
        drop(taken);
        assert_eq!(preflight(&config(free, busy)), Ok(()));
    }

    #[tokio::test]
    async fn a_listener_is_up_only_while_something_listens() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(is_up(addr, Check::Connect).await);
        assert!(is_up(addr, Check::Bound).await);
        drop(l);
        assert!(!is_up(addr, Check::Connect).await);
        assert!(!is_up(addr, Check::Bound).await);
        assert_eq!(
            reachable("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
    }
}

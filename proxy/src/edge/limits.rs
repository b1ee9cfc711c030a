//! Connection caps: at most `limits.max_connections` client connections per listener and
//! `limits.max_connections_per_ip` per client address at once. A connection over a cap is
//! answered `503` (plain HTTP/1) or closed, and counted; the others are served as usual.
//! Placed behind the PROXY protocol, so the client address is the real one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounterVec, IntGaugeVec, Registry};
use tokio::io::AsyncWriteExt;

use crate::control::instance::Instance;
use crate::observe::metrics::{counter_vec, gauge_vec};

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 42\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable: too many clients\n";

/// Open connections by listener and by client address, shared by every wrapped app.
pub struct ConnTable {
    by_listener: Mutex<HashMap<SocketAddr, u32>>,
    by_ip: Mutex<HashMap<IpAddr, u32>>,
    open: IntGaugeVec,
    refused: IntCounterVec,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener is at `limits.max_connections`.
    Listener,
    /// The client address is at `limits.max_connections_per_ip`.
    ClientIp,
}

/// Holds one connection's place in the table until dropped.
pub struct ConnGuard {
    table: Arc<ConnTable>,
    listener: SocketAddr,
    ip: Option<IpAddr>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.table.release(self.listener, self.ip);
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl ConnTable {
    /// An empty table whose gauges and counters live in `registry`.
    pub fn new(registry: &Registry) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            by_listener: Mutex::new(HashMap::new()),
            by_ip: Mutex::new(HashMap::new()),
            open: gauge_vec(
                registry,
                "meridian_client_connections",
                "Open client connections by listener",
                &["listener"],
            ),
            refused: counter_vec(
                registry,
                "meridian_connections_refused_total",
                "Client connections refused by a connection cap, by reason (listener, client_ip)",
                &["reason"],
            ),
        })
    }

    /// Takes a place for a connection to `listener` from `ip`, within the caps.
    pub fn admit(
        self: &Arc<Self>,
        listener: SocketAddr,
        ip: Option<IpAddr>,
        max_total: u32,
        max_per_ip: u32,
    ) -> Result<ConnGuard, Refusal> {
        let mut by_listener = lock(&self.by_listener);
        let total = by_listener.entry(listener).or_insert(0);
        if *total >= max_total {
            self.refused.with_label_values(&["listener"]).inc();
            return Err(Refusal::Listener);
        }
        if let Some(ip) = ip {
            let mut by_ip = lock(&self.by_ip);
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= max_per_ip {
                self.refused.with_label_values(&["client_ip"]).inc();
                return Err(Refusal::ClientIp);
            }
            *n += 1;
        }
        *total += 1;
        self.open
            .with_label_values(&[&listener.to_string()])
            .set(i64::from(*total));
        Ok(ConnGuard {
            table: self.clone(),
            listener,
            ip,
        })
    }

    fn release(&self, listener: SocketAddr, ip: Option<IpAddr>) {
        let mut by_listener = lock(&self.by_listener);
        decrement(&mut by_listener, &listener);
        let left = by_listener.get(&listener).copied().unwrap_or(0);
        self.open
            .with_label_values(&[&listener.to_string()])
            .set(i64::from(left));
        if let Some(ip) = ip {
            decrement(&mut lock(&self.by_ip), &ip);
        }
    }
}

/// Wraps a server app with the connection caps.
pub struct ConnLimits<A> {
    inner: Arc<A>,
    inst: Arc<Instance>,
    table: Arc<ConnTable>,
}

impl<A> ConnLimits<A> {
    /// Caps `inner`'s connections with the limits of `inst`'s active config.
    pub fn new(inner: A, inst: Arc<Instance>, table: Arc<ConnTable>) -> Self {
        ConnLimits {
            inner: Arc::new(inner),
            inst,
            table,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnLimits<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let digest = stream.get_socket_digest();
        let peer = digest
            .as_ref()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let local = digest
            .as_ref()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let limits = self.inst.active().routing.config.limits;
        match self.table.admit(
            local,
            peer.map(crate::request::client::canonical),
            limits.max_connections,
            limits.max_connections_per_ip,
        ) {
            Ok(_guard) => self.inner.process_new(stream, shutdown).await,
            Err(why) => {
                tracing::debug!(?peer, %local, ?why, "connection refused by a connection cap");
                // Boxed: the refusal's write and timer are not to take room in the state every
                // admitted connection holds for as long as it lives.
                Box::pin(refuse(stream)).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Tells a refused client why, within a second: an HTTP/1 client gets a `503` with a reason;
/// an HTTP/2 one (ALPN h2) is just closed.
async fn refuse(mut stream: Stream) {
    if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            stream.write_all(REFUSED).await?;
            stream.flush().await
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_listener_and_per_client_hold_and_release() {
        let t = ConnTable::new(&Registry::new());
        let l: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let g1 = t.admit(l, Some(a), 3, 2).unwrap();
        let _g2 = t.admit(l, Some(a), 3, 2).unwrap();
        assert_eq!(t.admit(l, Some(a), 3, 2).err(), Some(Refusal::ClientIp));
        let _g3 = t.admit(l, Some(b), 3, 2).unwrap();
        assert_eq!(t.admit(l, Some(b), 3, 2).err(), Some(Refusal::Listener));
        drop(g1);
        assert!(t.admit(l, Some(a), 3, 2).is_ok(), "a place is free again");
        assert_eq!(
            REFUSED.len() - REFUSED.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4,
            42
        );
    }
}

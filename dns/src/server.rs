//! The GeoDNS sockets: UDP (one socket per worker thread and address, `SO_REUSEPORT`, so
//! the kernel spreads queries) and TCP (length-prefixed messages, a bounded number of
//! connections, each closed after `tcp_idle` without a complete query). Each packet is
//! answered inline by the [`Answerer`]: no task per query.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use crate::answer::{Answerer, Transport};
use crate::metrics::Drop;

/// The largest UDP query read (larger datagrams are cut and then refused as malformed).
const UDP_BUFFER: usize = 4096;

/// Receive buffer asked of the kernel for each UDP socket (bursts wait there).
const UDP_RCVBUF: usize = 1 << 20;

/// Errors opening the GeoDNS sockets.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An address could not be bound.
    #[error("cannot listen for GeoDNS on {proto} {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Bound GeoDNS sockets, not yet served.
#[derive(Debug)]
pub struct Listeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    // Several sockets per address (one per thread), and an upgraded process binding the
    // same addresses while the old one still answers.
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl Listeners {
    /// Binds `threads` UDP sockets and one TCP listener on every address.
    ///
    /// # Errors
    ///
    /// [`ServeError::Bind`] naming the address that failed.
    pub fn bind(addrs: &[SocketAddr], threads: usize) -> Result<Listeners, ServeError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in addrs {
            let err = |proto| {
                move |source| ServeError::Bind {
                    proto,
                    addr,
                    source,
                }
            };
            for _ in 0..threads.max(1) {
                let s = socket(addr, Type::DGRAM, Protocol::UDP).map_err(err("udp"))?;
                // Best effort: the kernel caps it at net.core.rmem_max.
                let _ = s.set_recv_buffer_size(UDP_RCVBUF);
                s.bind(&addr.into()).map_err(err("udp"))?;
                udp.push(s.into());
            }
            let s = socket(addr, Type::STREAM, Protocol::TCP).map_err(err("tcp"))?;
            s.bind(&addr.into()).map_err(err("tcp"))?;
            s.listen(1024).map_err(err("tcp"))?;
            tcp.push(s.into());
        }
        Ok(Listeners { udp, tcp })
    }

    /// The addresses bound (UDP first), e.g. with port 0 resolved.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .chain(self.tcp.iter().filter_map(|s| s.local_addr().ok()))
            .collect()
    }

    /// Serves until `stop` turns true. Runs on the caller's tokio runtime.
    pub async fn serve(self, answerer: Arc<Answerer>, stop: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for s in self.udp {
            match UdpSocket::from_std(s) {
                Ok(s) => {
                    tasks.spawn(udp_loop(s, answerer.clone(), stop.clone()));
                }
                Err(e) => tracing::error!(error = %e, "GeoDNS UDP socket unusable"),
            }
        }
        let open = Arc::new(AtomicUsize::new(0));
        for l in self.tcp {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    tasks.spawn(tcp_loop(l, answerer.clone(), open.clone(), stop.clone()));
                }
                Err(e) => tracing::error!(error = %e, "GeoDNS TCP listener unusable"),
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn udp_loop(socket: UdpSocket, answerer: Arc<Answerer>, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; UDP_BUFFER];
    let mut out = Vec::with_capacity(1500);
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends and the like: keep serving.
                Err(_) => continue,
            },
            _ = stop.changed() => break,
        };
        let packet = buf.get(..n).unwrap_or_default();
        if answerer.respond(packet, peer.ip(), Transport::Udp, &mut out) {
            // A full socket buffer or an unreachable client loses this answer only.
            let _ = socket.send_to(&out, peer).await;
        }
    }
}

async fn tcp_loop(
    listener: TcpListener,
    answerer: Arc<Answerer>,
    open: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "GeoDNS TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let max = answerer
            .state()
            .snapshot()
            .config
            .geodns
            .max_tcp_connections;
        if open.fetch_add(1, Ordering::AcqRel) >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            answerer.metrics().dropped(Drop::TcpLimit);
            drop(stream);
            continue;
        }
        answerer.metrics().tcp_connections.inc();
        let (answerer, open, stop) = (answerer.clone(), open.clone(), stop.clone());
        tokio::spawn(async move {
            tcp_conn(stream, peer, &answerer, stop).await;
            answerer.metrics().tcp_connections.dec();
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Answers length-prefixed queries on one connection until the client closes it, stays
/// idle (or slow) for `tcp_idle`, sends a malformed frame, or the server stops.
async fn tcp_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    answerer: &Answerer,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut out = Vec::with_capacity(1500);
    let mut framed = Vec::with_capacity(1502);
    loop {
        let idle = answerer.state().snapshot().config.geodns.tcp_idle;
        let read = async {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let query = tokio::select! {
            r = tokio::time::timeout(idle, read) => match r {
                Ok(Ok(q)) => q,
                _ => return,
            },
            _ = stop.changed() => return,
        };
        if !answerer.respond(&query, peer.ip(), Transport::Tcp, &mut out) {
            return;
        }
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        framed.clear();
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        match tokio::time::timeout(idle, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

//! One active health probe: an HTTP(S) `GET` whose status must fall in the expected
//! range (HTTP/1.1, or HTTP/2 as the pool's upstream protocol says: `probe_h2.rs`), a
//! gRPC health check, or a TCP connect; [`ProbeError`] says why a probe failed.

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_config::{ProbeKind, UpstreamProtocol};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use super::error::ProbeError;

/// One probe: `Ok` when healthy, else a short reason. With `tls` (a client config and the
/// server name), an `http` or `grpc` probe speaks TLS and fails on a bad certificate, and
/// HTTP/2 when ALPN picks `h2`; without, it speaks h2c with `protocol = "h2c"` (a `grpc`
/// probe always does). A `tcp` probe only connects.
pub async fn probe_once(
    addr: SocketAddr,
    kind: &ProbeKind,
    tls: Option<(&Arc<ClientConfig>, String)>,
    protocol: UpstreamProtocol,
) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let _ = stream.set_nodelay(true);
    if matches!(kind, ProbeKind::Tcp) {
        return Ok(());
    }
    match tls {
        None => {
            let h2 = protocol == UpstreamProtocol::H2c || matches!(kind, ProbeKind::Grpc { .. });
            dispatch(stream, addr, kind, h2).await
        }
        Some((config, name)) => {
            let server_name =
                ServerName::try_from(name.clone()).map_err(|e| ProbeError::ServerName {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(server_name, stream)
                .await
                .map_err(ProbeError::Tls)?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if matches!(kind, ProbeKind::Grpc { .. }) && !h2 {
                return Err(ProbeError::NotH2);
            }
            dispatch(stream, addr, kind, h2).await
        }
    }
}

/// Runs the probe of `kind` on a connected `stream`, in HTTP/2 if `h2`.
async fn dispatch<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    addr: SocketAddr,
    kind: &ProbeKind,
    h2: bool,
) -> Result<(), ProbeError> {
    match kind {
        ProbeKind::Tcp => Ok(()),
        ProbeKind::Http { path, host, expect } if h2 => {
            super::probe_h2::http(stream, addr, path, host.as_deref(), expect).await
        }
        ProbeKind::Http { .. } => probe_http(stream, addr, kind).await,
        ProbeKind::Grpc { service, authority } => {
            super::probe_h2::grpc(stream, addr, service, authority.as_deref()).await
        }
    }
}

async fn probe_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    kind: &ProbeKind,
) -> Result<(), ProbeError> {
    let ProbeKind::Http { path, host, expect } = kind else {
        return Ok(());
    };
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meridian-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Write)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(ProbeError::Read)?;
        if n == 0 {
            return Err(ProbeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(_) | Err(httparse::Error::TooManyHeaders) if resp.code.is_some() => {
                let code = resp.code.unwrap_or(0);
                return if expect.contains(&code) {
                    Ok(())
                } else {
                    Err(ProbeError::Status(code))
                };
            }
            Ok(_) if buf.len() < 16 * 1024 => continue,
            Ok(_) => return Err(ProbeError::HeaderTooLarge),
            Err(e) => return Err(ProbeError::BadResponse(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn http(path: &str, expect: std::ops::RangeInclusive<u16>) -> ProbeKind {
        ProbeKind::Http {
            path: path.into(),
            host: Some("health.internal".into()),
            expect,
        }
    }

    /// A one-shot server answering every connection with `status`; returns the request seen.
    async fn server(status: u16) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        (addr, h)
    }

    #[tokio::test]
    async fn http_probe_checks_the_status_range_and_sends_host() {
        let (addr, seen) = server(204).await;
        assert_eq!(
            probe_once(
                addr,
                &http("/ready", 200..=299),
                None,
                UpstreamProtocol::Http1
            )
            .await
            .map_err(|e| e.to_string()),
            Ok(())
        );
        let req = seen.await.unwrap();
        assert!(req.starts_with("GET /ready HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Host: health.internal\r\n"), "{req}");
        let (addr, _) = server(503).await;
        assert_eq!(
            probe_once(addr, &http("/", 200..=399), None, UpstreamProtocol::Http1)
                .await
                .map_err(|e| e.to_string()),
            Err("status 503".to_string())
        );
    }

    #[tokio::test]
    async fn tcp_probe_is_a_connect() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(
            probe_once(addr, &ProbeKind::Tcp, None, UpstreamProtocol::Http1)
                .await
                .is_ok()
        );
        drop(l);
        let err = probe_once(addr, &ProbeKind::Tcp, None, UpstreamProtocol::Http1)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("connect:"), "{err}");
    }

    #[tokio::test]
    async fn garbage_is_a_failure_not_a_panic() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        });
        let err = probe_once(addr, &http("/", 200..=399), None, UpstreamProtocol::Http1)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad response"), "{err}");
    }
}

//! Probes over HTTP/2 (h2 after ALPN, or h2c with prior knowledge): an HTTP `GET` whose
//! status must fall in the expected range, and the gRPC health check
//! `grpc.health.v1.Health/Check`, healthy when it answers `SERVING`.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Body;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::ProbeError;

/// The largest probe response body read.
const MAX_BODY: usize = 64 * 1024;

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Opens an HTTP/2 connection on `stream` and sends `req`; the response's status, body and
/// trailers.
async fn send<S, B>(stream: S, req: http::Request<B>) -> Result<Answer, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let h2 = |e: hyper::Error| ProbeError::Http2(e.to_string());
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(h2)?;
    // The connection task ends when the sender is dropped (the probe is over).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(h2)?;
    let (parts, body) = resp.into_parts();
    let collected = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| ProbeError::Http2(format!("reading the body: {e}")))?;
    let trailers = collected.trailers().cloned();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// What a probe got back.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

fn request<B>(
    method: http::Method,
    authority: &str,
    path: &str,
    body: B,
) -> Result<http::Request<B>, ProbeError> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{authority}{path}"))
        .header(http::header::USER_AGENT, "meridian-health-check")
        .body(body)
        .map_err(|e| ProbeError::Http2(format!("request: {e}")))
}

/// `GET path` over HTTP/2; healthy when the status is in `expect`.
pub async fn http<S>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
    expect: &RangeInclusive<u16>,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authority = host.map_or_else(|| addr.to_string(), str::to_owned);
    let req = request(http::Method::GET, &authority, path, Empty::<Bytes>::new())?;
    let answer = send(stream, req).await?;
    if expect.contains(&answer.status) {
        Ok(())
    } else {
        Err(ProbeError::Status(answer.status))
    }
}

/// `grpc.health.v1.Health/Check` for `service` (`""`: the whole server).
pub async fn grpc<S>(
    stream: S,
    addr: SocketAddr,
    service: &str,
    authority: Option<&str>,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authority = authority.map_or_else(|| addr.to_string(), str::to_owned);
    let mut req = request(
        http::Method::POST,
        &authority,
        "/grpc.health.v1.Health/Check",
        Full::new(check_request(service)),
    )?;
    let h = req.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    let answer = send(stream, req).await?;
    if answer.status != 200 {
        return Err(ProbeError::Status(answer.status));
    }
    // The status is in the trailers, or in the header of a trailers-only answer.
    let status_in = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
    };
    let status = answer
        .trailers
        .as_ref()
        .and_then(status_in)
        .or_else(|| status_in(&answer.headers))
        .ok_or_else(|| ProbeError::Grpc("the answer has no grpc-status".into()))?;
    if status != "0" {
        let message = answer
            .trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| answer.headers.get("grpc-message"))
            .map(|m| crate::request::grpc::decode_message(m.as_bytes()))
            .unwrap_or_default();
        return Err(ProbeError::Grpc(format!("grpc-status {status} {message}")));
    }
    match serving_status(answer.body)? {
        SERVING => Ok(()),
        other => Err(ProbeError::Grpc(format!(
            "status {} (not SERVING)",
            match other {
                0 => "UNKNOWN".to_string(),
                2 => "NOT_SERVING".to_string(),
                3 => "SERVICE_UNKNOWN".to_string(),
                n => n.to_string(),
            }
        ))),
    }
}

/// The framed `HealthCheckRequest { service }` (field 1, a string).
fn check_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + msg.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    framed.put_slice(&msg);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of a framed `HealthCheckResponse`; 0 (`UNKNOWN`) when absent.
fn serving_status(mut body: Bytes) -> Result<u64, ProbeError> {
    let bad = |what: &str| ProbeError::Grpc(format!("bad HealthCheckResponse: {what}"));
    if body.len() < 5 {
        return Err(bad("no message"));
    }
    if body.get_u8() != 0 {
        return Err(bad("compressed message"));
    }
    let len = body.get_u32() as usize;
    if body.len() < len {
        return Err(bad("truncated message"));
    }
    let mut msg = body.split_to(len);
    let mut status = 0;
    while msg.has_remaining() {
        let key = get_varint(&mut msg).ok_or_else(|| bad("truncated field"))?;
        match key & 7 {
            0 => {
                let v = get_varint(&mut msg).ok_or_else(|| bad("truncated varint"))?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let n = get_varint(&mut msg).ok_or_else(|| bad("truncated length"))? as usize;
                if msg.remaining() < n {
                    return Err(bad("truncated field"));
                }
                msg.advance(n);
            }
            5 if msg.remaining() >= 4 => msg.advance(4),
            1 if msg.remaining() >= 8 => msg.advance(8),
            _ => return Err(bad("unknown wire type")),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_encode_and_decode() {
        assert_eq!(&check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(serving_status(serving).ok(), Some(1));
        let empty = Bytes::from_static(&[0, 0, 0, 0, 0]);
        assert_eq!(serving_status(empty).ok(), Some(0));
        for bad in [
            &[0u8, 0, 0][..],
            &[1, 0, 0, 0, 0],
            &[0, 0, 0, 0, 9, 8],
            &[0, 0, 0, 0, 1, 0x08],
        ] {
            assert!(
                serving_status(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}

//! gRPC on the request path: recognising a call (`content-type: application/grpc…`), its
//! deadline (`grpc-timeout`, forwarded as the time left), its status (`grpc-status` in the
//! trailers, or in the header of a trailers-only answer), what a status says about the
//! backend, and the trailers-only answer Meridian sends when it refuses or fails a call
//! itself; the `meridian_grpc_requests_total{code}` counters.

use std::time::Duration;

use http::HeaderMap;
use meridian_config::GRPC_CODE_NAMES;
use meridian_routing::outlier::Outcome;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::HttpTask;
use pingora::proxy::Session;
use prometheus::{IntCounter, Registry};
use tokio::time::Instant;

use crate::observe::metrics::counter_vec;

/// `DEADLINE_EXCEEDED`.
pub const DEADLINE_EXCEEDED: u8 = 4;
/// `RESOURCE_EXHAUSTED`.
pub const RESOURCE_EXHAUSTED: u8 = 8;
/// `UNIMPLEMENTED`.
pub const UNIMPLEMENTED: u8 = 12;
/// `INTERNAL`.
pub const INTERNAL: u8 = 13;
/// `UNAVAILABLE`.
pub const UNAVAILABLE: u8 = 14;
/// `UNKNOWN`.
pub const UNKNOWN: u8 = 2;

/// A status past the last defined code (or unparseable), as one value.
pub const INVALID: u8 = u8::MAX;

/// The error a backend's trailers-only answer with a status of `retry.grpc_on` becomes, so
/// that the call is retried on another backend (nothing of it reached the client).
pub const RETRYABLE: pingora::ErrorType = pingora::ErrorType::Custom("GrpcRetryable");

/// One gRPC call's state.
#[derive(Debug, Clone, Default)]
pub struct GrpcCall {
    /// When the client's deadline (`grpc-timeout`) passes.
    pub deadline: Option<Instant>,
    /// The call's final status, once known.
    pub status: Option<u8>,
    /// The `grpc-message` of a trailers-only answer held back for a retry.
    pub message: Option<String>,
}

impl GrpcCall {
    /// Whether the deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// The time left at `now` (`None`: no deadline).
    pub fn left(&self, now: Instant) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(now))
    }
}

/// The call's state if `req` is a gRPC call (not gRPC-Web, which is HTTP/1-framed).
pub fn call(req: &RequestHeader, now: Instant) -> Option<GrpcCall> {
    let ct = req.headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    let grpc = ct.len() >= 16
        && ct[..16].eq_ignore_ascii_case(b"application/grpc")
        && !ct[16..].starts_with(b"-web");
    if !grpc {
        return None;
    }
    let deadline = req
        .headers
        .get("grpc-timeout")
        .and_then(|v| parse_timeout(v.as_bytes()))
        .map(|d| {
            now.checked_add(d)
                .unwrap_or(now + Duration::from_secs(86400 * 365))
        });
    Some(GrpcCall {
        deadline,
        status: None,
        message: None,
    })
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (`H M S m u n`).
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` as a `grpc-timeout` value (milliseconds, rounded up, in the finest unit that fits
/// 8 digits).
pub fn format_timeout(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms < 100_000_000 {
        return format!("{ms}m");
    }
    let s = d.as_secs();
    if s < 100_000_000 {
        format!("{s}S")
    } else {
        format!("{}M", (s / 60).min(99_999_999))
    }
}

/// The `grpc-status` in `headers`, if there is one ([`INVALID`] if it is not a defined code).
pub fn status_of(headers: &HeaderMap) -> Option<u8> {
    let v = headers.get("grpc-status")?;
    let code = std::str::from_utf8(v.as_bytes())
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|c| usize::from(*c) < GRPC_CODE_NAMES.len());
    Some(code.unwrap_or(INVALID))
}

/// What a backend's status says about the backend: the codes gRPC's HTTP mapping (and
/// Envoy's outlier detection) treat as server errors count as failures — `UNKNOWN`,
/// `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`; anything else (including application errors
/// and `DEADLINE_EXCEEDED`, which is the client's choice of deadline) is a success.
pub fn outcome(code: u8) -> Outcome {
    match code {
        UNKNOWN | INTERNAL | UNAVAILABLE | 15 | INVALID => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// The status and message of a call Meridian answers itself with HTTP status `http`
/// (gRPC's HTTP-to-gRPC mapping, with a deadline that passed and a body over the limit
/// told apart).
pub fn refusal(http: u16, deadline_passed: bool) -> u8 {
    match http {
        _ if deadline_passed => DEADLINE_EXCEEDED,
        413 => RESOURCE_EXHAUSTED,
        400 | 500 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// `text` percent-encoded for `grpc-message`.
fn encode_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.trim_end().bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `grpc-message` as text (percent-decoded; invalid UTF-8 replaced).
pub fn decode_message(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a trailers-only answer: `200`, `content-type: application/grpc`, `grpc-status`
/// and `grpc-message` in the header block, which ends the stream.
pub async fn respond(session: &mut Session, code: u8, message: &str) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", code.to_string())?;
    resp.insert_header("grpc-message", encode_message(message))?;
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    // One header block that ends the stream (HTTP/2 `HEADERS` with `END_STREAM`).
    session
        .write_response_tasks(vec![HttpTask::Header(Box::new(resp), true)])
        .await?;
    Ok(())
}

/// gRPC calls by final status.
#[derive(Clone)]
pub struct GrpcMetrics {
    by_code: Vec<IntCounter>,
    none: IntCounter,
    invalid: IntCounter,
}

impl GrpcMetrics {
    /// Registers `meridian_grpc_requests_total{code}` (the 17 codes by name, `invalid`,
    /// and `none` for calls that ended without a status).
    pub fn register(registry: &Registry) -> Self {
        let family = counter_vec(
            registry,
            "meridian_grpc_requests_total",
            "gRPC calls by final grpc-status (from the backend or Meridian); none: the call ended without one (reset, client gone)",
            &["code"],
        );
        GrpcMetrics {
            by_code: GRPC_CODE_NAMES
                .iter()
                .map(|n| family.with_label_values(&[n]))
                .collect(),
            none: family.with_label_values(&["none"]),
            invalid: family.with_label_values(&["invalid"]),
        }
    }

    /// Counts a finished call.
    pub fn count(&self, status: Option<u8>) {
        match status {
            None => self.none.inc(),
            Some(c) => match self.by_code.get(usize::from(c)) {
                Some(counter) => counter.inc(),
                None => self.invalid.inc(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_format() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(format_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(format_timeout(Duration::from_secs(200_000)), "200000S");
        let long = format_timeout(Duration::from_secs(u64::MAX / 2));
        assert!(long.ends_with('M') && long.len() <= 9, "{long}");
    }

    #[test]
    fn statuses_and_messages() {
        let mut h = HeaderMap::new();
        assert_eq!(status_of(&h), None);
        h.insert(
            "grpc-status",
            "14".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(status_of(&h), Some(UNAVAILABLE));
        h.insert(
            "grpc-status",
            "99".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(status_of(&h), Some(INVALID));
        assert_eq!(encode_message("no backend: 100%\n"), "no backend: 100%25");
        assert_eq!(encode_message("é"), "%C3%A9");
        assert_eq!(
            decode_message(b"down: 100%25 %C3%A9 %zz"),
            "down: 100% é %zz"
        );
        assert_eq!(refusal(503, false), UNAVAILABLE);
        assert_eq!(refusal(504, true), DEADLINE_EXCEEDED);
        assert_eq!(refusal(413, false), RESOURCE_EXHAUSTED);
        assert!(matches!(outcome(UNAVAILABLE), Outcome::Failure));
        assert!(matches!(outcome(5), Outcome::Success));
    }
}

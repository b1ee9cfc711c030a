//! Validation of `[timeouts]`, `[limits]` and `[admin]`: how long and how much clients and
//! backends may take, and who may use the admin API's mutating endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::{Cx, Min};
use crate::file::{self, Size, S};
use crate::model::{Admin, Limits, Secret, Timeouts};

/// The largest request header the proxy can accept (the HTTP/1 parser's buffer bound).
pub(crate) const MAX_HEADER_SIZE: u64 = 1 << 20;

/// The longest shutdown grace: systemd's default stop timeout is 90 s; an hour covers long
/// downloads without letting an upgrade hang forever.
pub(crate) const MAX_GRACE: Duration = Duration::from_secs(3600);

pub(crate) fn timeouts(cx: &mut Cx<'_>, file: &file::TimeoutsFile) -> Timeouts {
    let mut d = |value: &Option<S<String>>, field: &str, default: u64| {
        let default = Duration::from_secs(default);
        cx.duration(value.as_ref(), field, default, Min::Positive)
            .unwrap_or(default)
    };
    let read = d(&file.read, "timeouts.read", 30);
    let mut t = Timeouts {
        connect: d(&file.connect, "timeouts.connect", 2),
        read,
        write: d(&file.write, "timeouts.write", 30),
        idle: d(&file.idle, "timeouts.idle", 60),
        downstream_idle: d(&file.downstream_idle, "timeouts.downstream_idle", 60),
        first_byte: d(&file.first_byte, "timeouts.first_byte", 10),
        request_header: d(&file.request_header, "timeouts.request_header", 10),
        client_write: d(&file.client_write, "timeouts.client_write", 60),
        h2_idle: d(&file.h2_idle, "timeouts.h2_idle", 60),
        tunnel: d(&file.tunnel, "timeouts.tunnel", 3600),
        shutdown_grace: Duration::ZERO,
    };
    // In-flight requests get at least as long as one upstream read to finish.
    let grace_default = read.max(Duration::from_secs(30)) * 2;
    t.shutdown_grace = cx
        .duration_within(
            file.shutdown_grace.as_ref(),
            "timeouts.shutdown_grace",
            grace_default,
            Min::AtLeast(Duration::ZERO),
            MAX_GRACE,
        )
        .unwrap_or(grace_default);
    t
}

/// A size field within `min..=max`; `None` if it was invalid (the error is recorded).
fn size(
    cx: &mut Cx<'_>,
    value: Option<&S<Size>>,
    field: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Option<u64> {
    let Some(value) = value else {
        return Some(default);
    };
    let name = crate::context::last_segment(field);
    cx.check(value, field, |v| {
        let bytes = match v {
            Size::Bytes(n) => u64::try_from(*n)
                .map_err(|_| Problem::from(format!("{name} must not be negative")))?,
            Size::Text(t) => checks::size(t)?,
        };
        if bytes < min {
            Err(format!("{name} must be at least {}", checks::show_size(min)).into())
        } else if bytes > max {
            Err(format!("{name} must be at most {}", checks::show_size(max)).into())
        } else {
            Ok(bytes)
        }
    })
}

fn count(cx: &mut Cx<'_>, value: &Option<S<i64>>, field: &str, default: u32, max: u32) -> u32 {
    let v = cx
        .int(
            value.as_ref(),
            field,
            i64::from(default),
            1..=i64::from(max),
        )
        .unwrap_or(i64::from(default));
    u32::try_from(v).unwrap_or(default)
}

pub(crate) fn limits(cx: &mut Cx<'_>, file: &file::LimitsFile) -> Limits {
    let header = size(
        cx,
        file.max_header_size.as_ref(),
        "limits.max_header_size",
        32 * 1024,
        1024,
        MAX_HEADER_SIZE,
    );
    // 0 (or "0") turns the body and memory limits off.
    let body = size(
        cx,
        file.max_body_size.as_ref(),
        "limits.max_body_size",
        1 << 30,
        0,
        u64::MAX,
    );
    let memory = size(
        cx,
        file.max_memory.as_ref(),
        "limits.max_memory",
        0,
        0,
        u64::MAX,
    );
    Limits {
        max_header_size: usize::try_from(header.unwrap_or(32 * 1024)).unwrap_or(32 * 1024),
        max_body_size: body.filter(|b| *b > 0),
        max_connections: count(
            cx,
            &file.max_connections,
            "limits.max_connections",
            10_000,
            1_000_000,
        ),
        max_connections_per_ip: count(
            cx,
            &file.max_connections_per_ip,
            "limits.max_connections_per_ip",
            1_000,
            1_000_000,
        ),
        max_requests_per_connection: count(
            cx,
            &file.max_requests_per_connection,
            "limits.max_requests_per_connection",
            1_000,
            u32::MAX,
        ),
        max_concurrent_streams: count(
            cx,
            &file.max_concurrent_streams,
            "limits.max_concurrent_streams",
            128,
            10_000,
        ),
        max_inflight: count(
            cx,
            &file.max_inflight,
            "limits.max_inflight",
            10_000,
            10_000_000,
        ),
        max_memory: memory.filter(|m| *m > 0),
    }
}

/// Validates `[admin]`: the token (inline or from a file) is required when the admin
/// listener is bound beyond loopback.
pub(crate) fn admin(
    cx: &mut Cx<'_>,
    file: &file::AdminFile,
    written: Option<&S<String>>,
    listener: Option<SocketAddr>,
) -> Admin {
    let mut token = None;
    if let (Some(inline), Some(path)) = (&file.token, &file.token_file) {
        cx.bad(
            path,
            "admin.token_file",
            Problem::hinted(
                "admin.token and admin.token_file are both set",
                "keep one: the token inline, or the file that holds it",
            ),
        );
        let _ = inline;
    } else if let Some(inline) = &file.token {
        token = cx.check(inline, "admin.token", |t| checks::admin_token(t));
    } else if let Some(path) = &file.token_file {
        let base = cx.base_dir.clone();
        token = cx.check(path, "admin.token_file", |p| {
            let resolved = crate::tls::resolve(base.as_deref(), p);
            let text = std::fs::read_to_string(&resolved)
                .map_err(|e| Problem::from(format!("cannot read {}: {e}", resolved.display())))?;
            checks::admin_token(text.trim())
        });
    }
    let loopback = listener.is_none_or(|a| a.ip().is_loopback());
    if !loopback && file.token.is_none() && file.token_file.is_none() {
        let problem = Problem::hinted(
            "the admin API would listen beyond loopback without a token",
            "set admin.token or admin.token_file, or bind listeners.admin to 127.0.0.1",
        );
        match written {
            Some(value) => cx.bad(value, "listeners.admin", problem),
            None => {
                let span = cx.top_key("listeners");
                cx.missing(span, "admin.token", problem.hint);
            }
        }
    }
    let mut hosts = Vec::new();
    if let Some(list) = &file.hosts {
        for (i, entry) in list.get_ref().iter().enumerate() {
            let field = format!("admin.hosts[{i}]");
            if let Some(h) = cx.check(entry, &field, |h| checks::server_name(h)) {
                hosts.push(h);
            }
        }
    }
    let base = cx.base_dir.clone();
    let state_file = file.state_file.as_ref().and_then(|p| {
        cx.check(p, "admin.state_file", |written| {
            if written.trim().is_empty() {
                return Err("state_file must name a file".into());
            }
            let path = crate::tls::resolve(base.as_deref(), written);
            if path.is_dir() {
                return Err(format!("{} is a directory", path.display()).into());
            }
            match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(dir) if !dir.is_dir() => Err(Problem::hinted(
                    format!("directory {} does not exist", dir.display()),
                    "create it (writable by meridian), or point state_file elsewhere",
                )),
                _ => Ok(path),
            }
        })
    });
    Admin {
        token: token.map(Secret::new),
        hosts,
        state_file,
    }
}

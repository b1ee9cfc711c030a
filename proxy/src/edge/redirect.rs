//! The HTTP→HTTPS redirect listeners (`listeners.redirect_http`): every request gets a
//! `308 Permanent Redirect` to the same host and path over HTTPS, on the first HTTPS
//! listener's port (left out when it is 443). Only to a host the HTTPS listeners have a
//! certificate name for (or an IP literal): any other `Host` gets `400`, so the listener
//! never redirects a client to a host an attacker chose. The request body is never read;
//! the connection closes after the answer.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::control::instance::Instance;

/// The redirect application.
pub struct Redirect {
    inst: Arc<Instance>,
}

impl Redirect {
    /// Redirects to `inst`'s HTTPS listeners.
    pub fn new(inst: Arc<Instance>) -> Self {
        Redirect { inst }
    }
}

/// The host part of a `Host` header or authority (without the port; IPv6 keeps brackets).
pub fn host_only(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether `host` (no port) is an IP literal or matches a certificate name of `config`'s
/// HTTPS listeners (exactly, or `*.parent` one label deep).
pub fn served(config: &meridian_config::Config, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let parent = host.split_once('.').map(|(_, p)| p);
    config
        .listeners
        .https
        .iter()
        .flat_map(|l| &l.certificates)
        .flat_map(|c| &c.names)
        .any(|name| match name.strip_prefix("*.") {
            Some(p) => parent == Some(p),
            None => *name == host,
        })
}

/// The `Location` for a request to `host` with `path_and_query`, to HTTPS port `port`.
pub fn location(host: &str, port: u16, path_and_query: &str) -> String {
    let host = host_only(host);
    if port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{port}{path_and_query}")
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let mut resp = Response::new(body.as_bytes().to_vec());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    resp
}

#[async_trait]
impl ServeHttp for Redirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let active = self.inst.active();
        let Some(port) = active
            .routing
            .config
            .listeners
            .https
            .first()
            .map(|l| l.address.port())
        else {
            return plain(StatusCode::NOT_FOUND, "no HTTPS listener\n");
        };
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri.authority().map(|a| a.to_string()));
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return plain(StatusCode::BAD_REQUEST, "a Host header is required\n");
        };
        let path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        // No body is read, so the connection cannot be reused.
        session.set_keepalive(None);
        if !served(&active.routing.config, host_only(&host)) {
            return plain(StatusCode::BAD_REQUEST, "no HTTPS site for this host\n");
        }
        let target = location(&host, port, &path);
        let mut resp = plain(StatusCode::PERMANENT_REDIRECT, "redirecting to HTTPS\n");
        if let Ok(v) = http::HeaderValue::from_str(&target) {
            resp.headers_mut().insert(http::header::LOCATION, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            location("example.com", 443, "/a?b=1"),
            "https://example.com/a?b=1"
        );
        assert_eq!(
            location("example.com:80", 8443, "/"),
            "https://example.com:8443/"
        );
        assert_eq!(location("[::1]:8080", 443, "/x"), "https://[::1]/x");
    }
}

//! Who may use the admin API. Every request must name the admin API by an IP literal,
//! `localhost` or one of `admin.hosts` (a page on another site cannot read `/status`
//! through DNS rebinding). Mutating requests must not come from another site (`Origin`,
//! `Sec-Fetch-Site`), must not be a form a browser can post cross-site without asking
//! (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`), and must
//! carry `Authorization: Bearer <admin.token>` when a token is configured.

use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, Method, StatusCode};
use meridian_config::Admin;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The `Host` is not one the admin API answers to.
    Host,
    /// A mutating request from another site.
    CrossSite,
    /// A mutating request with a simple-form content type.
    FormPost,
    /// A mutating request without the right bearer token.
    Token,
}

impl Denied {
    /// The status and message the client gets.
    pub fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Denied::Host => (
                StatusCode::FORBIDDEN,
                "forbidden: use the admin API by its IP address, localhost or a name in admin.hosts\n",
            ),
            Denied::CrossSite => (
                StatusCode::FORBIDDEN,
                "forbidden: cross-site requests cannot change this instance\n",
            ),
            Denied::FormPost => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported media type: send no body or application/json\n",
            ),
            Denied::Token => (
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <admin.token>\n",
            ),
        }
    }
}

/// Whether `method` changes anything.
pub fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The host of a `Host` header or origin's authority, lower-case, without the port.
fn host_of(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    a.split(':').next().unwrap_or("").to_string()
}

/// Compares two byte strings in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a request to the admin API.
pub fn check(method: &Method, headers: &HeaderMap, admin: &Admin) -> Result<(), Denied> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(host) = text(HOST.as_str()) {
        let h = host_of(host);
        let allowed =
            h.parse::<std::net::IpAddr>().is_ok() || h == "localhost" || admin.hosts.contains(&h);
        if !allowed {
            return Err(Denied::Host);
        }
    }
    if !mutating(method) {
        return Ok(());
    }
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(Denied::CrossSite);
        }
    }
    if let Some(origin) = text(ORIGIN.as_str()) {
        let origin_authority = origin.split_once("://").map_or(origin, |(_, a)| a);
        if text(HOST.as_str()).map(str::trim) != Some(origin_authority.trim_end_matches('/')) {
            return Err(Denied::CrossSite);
        }
    }
    if let Some(ct) = text(CONTENT_TYPE.as_str()) {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            essence.as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        ) {
            return Err(Denied::FormPost);
        }
    }
    if let Some(token) = &admin.token {
        let given = text(AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !same_secret(given.as_bytes(), token.expose().as_bytes()) {
            return Err(Denied::Token);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_config::Secret;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn admin(token: Option<&str>) -> Admin {
        Admin {
            token: token.map(|t| Secret::new(t.to_string())),
            hosts: vec!["meridian.internal".into()],
            state_file: None,
        }
    }

    #[test]
    fn hosts_an_attacker_can_point_at_the_admin_api_are_refused() {
        let get = |host: &str| check(&Method::GET, &headers(&[("host", host)]), &admin(None));
        assert_eq!(get("127.0.0.1:9901"), Ok(()));
        assert_eq!(get("[::1]:9901"), Ok(()));
        assert_eq!(get("localhost:9901"), Ok(()));
        assert_eq!(get("Meridian.Internal"), Ok(()));
        assert_eq!(get("attacker.example:9901"), Err(Denied::Host));
    }

    #[test]
    fn mutations_need_same_site_a_non_form_body_and_the_token() {
        let a = admin(Some("0123456789abcdef0123"));
        let post = |h: &[(&'static str, &str)]| check(&Method::POST, &headers(h), &a);
        let ok = [
            ("host", "127.0.0.1:9901"),
            ("authorization", "Bearer 0123456789abcdef0123"),
        ];
        assert_eq!(post(&ok), Ok(()));
        assert_eq!(post(&ok[..1]), Err(Denied::Token));
        assert_eq!(
            post(&[ok[0], ("authorization", "Bearer 0123456789abcdef0124")]),
            Err(Denied::Token)
        );
        assert_eq!(
            post(&[ok[0], ok[1], ("origin", "https://evil.example")]),
            Err(Denied::CrossSite)
        );
        assert_eq!(
            post(&[ok[0], ok[1], ("origin", "http://127.0.0.1:9901")]),
            Ok(()),
            "the admin page itself"
        );
        assert_eq!(
            post(&[ok[0], ok[1], ("sec-fetch-site", "cross-site")]),
            Err(Denied::CrossSite)
        );
        assert_eq!(
            post(&[
                ok[0],
                ok[1],
                ("content-type", "application/x-www-form-urlencoded")
            ]),
            Err(Denied::FormPost)
        );
        // Reads need no token.
        assert_eq!(check(&Method::GET, &headers(&ok[..1]), &a), Ok(()));
    }
}

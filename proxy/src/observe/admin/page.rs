//! The live status page at `/`: one self-contained HTML file (`proxy/assets/status.html`:
//! vanilla JS, no external resources) with the world outline (`world-110m.txt`: Natural
//! Earth 1:110m land, public domain, via the `world-atlas` package) put in; it polls
//! `/status` every second.

use std::sync::LazyLock;

use http::{HeaderValue, Response, StatusCode};

const TEMPLATE: &str = include_str!("../../../assets/status.html");
const WORLD: &str = include_str!("../../../assets/world-110m.txt");
/// Where the world outline goes in the template (an SVG path's `d`).
const WORLD_MARK: &str = "@WORLD_PATH@";

static PAGE: LazyLock<Vec<u8>> =
    LazyLock::new(|| TEMPLATE.replacen(WORLD_MARK, WORLD.trim(), 1).into_bytes());

/// Nothing but the page's own inline script and style, and fetches to the admin API.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The page.
pub fn response() -> Response<Vec<u8>> {
    let mut resp = super::respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.clone());
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_page_holds_the_map_and_nothing_external() {
        assert_eq!(TEMPLATE.matches(WORLD_MARK).count(), 1);
        let page = String::from_utf8(PAGE.clone()).unwrap();
        assert!(!page.contains(WORLD_MARK));
        assert!(page.contains(&WORLD[..200]));
        // Self-contained: no resource from elsewhere (absolute or protocol-relative).
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "url(",
            "@import",
            "fetch('http",
        ] {
            assert!(
                !page.contains(external),
                "the page loads something: {external}"
            );
        }
        assert!(page.len() < 150 * 1024, "{} bytes", page.len());
        let resp = response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
}

//! Validation of `[sticky]` (every service's defaults) and `[services.NAME.sticky]` (one
//! service's, key by key over them): the cookie's name and attributes, and what becomes
//! of sessions on a draining backend.

use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::file::StickyFile;
use crate::model::{DrainingSessions, SameSite, Sticky};

/// The longest cookie `max_age`: 400 days, what browsers cap it at (RFC 6265bis).
const MAX_AGE: Duration = Duration::from_secs(400 * 24 * 3600);

/// The keys one sticky table sets (each `None` when not written or invalid).
#[derive(Debug, Clone, Default)]
pub(crate) struct StickyLayer {
    /// Whether the table is there at all.
    present: bool,
    enabled: Option<bool>,
    cookie: Option<String>,
    max_age: Option<Option<Duration>>,
    path: Option<String>,
    secure: Option<bool>,
    http_only: Option<bool>,
    same_site: Option<SameSite>,
    draining: Option<DrainingSessions>,
}

/// Whether `c` may appear in a cookie name (an HTTP token).
fn tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks the keys of one sticky table at `prefix`.
pub(crate) fn layer(cx: &mut Cx<'_>, file: Option<&StickyFile>, prefix: &str) -> StickyLayer {
    let Some(file) = file else {
        return StickyLayer::default();
    };
    let at = |key: &str| format!("{prefix}.{key}");
    let cookie = file.cookie.as_ref().and_then(|c| {
        cx.check(c, &at("cookie"), |name| {
            if name.is_empty() || name.len() > 64 || !name.chars().all(tchar) {
                Err(Problem::hinted(
                    format!("invalid cookie name \"{name}\""),
                    "1 to 64 letters, digits and !#$%&'*+-.^_`|~",
                ))
            } else {
                Ok(name.clone())
            }
        })
    });
    let max_age = file.max_age.as_ref().and_then(|m| {
        cx.check(m, &at("max_age"), |text| {
            let d = checks::duration(text)?;
            if d.is_zero() {
                Err("max_age must be greater than 0 (leave it out for a session cookie)".into())
            } else if d > MAX_AGE {
                Err("max_age must be at most 400 days (browsers cap it there)".into())
            } else {
                Ok(Some(d))
            }
        })
    });
    let path = file.path.as_ref().and_then(|p| {
        cx.check(p, &at("path"), |p| {
            if !p.starts_with('/') || p.contains(|c: char| c == ';' || c.is_control() || c == ' ') {
                Err(Problem::hinted(
                    format!("invalid cookie path \"{p}\""),
                    "a path starting with /, without ; or spaces",
                ))
            } else {
                Ok(p.clone())
            }
        })
    });
    let same_site = file.same_site.as_ref().and_then(|s| {
        cx.check(s, &at("same_site"), |v| {
            let lower = v.to_ascii_lowercase();
            checks::choice(&lower, &["lax", "strict", "none"], "same_site value").map(|c| match c {
                "strict" => SameSite::Strict,
                "none" => SameSite::None,
                _ => SameSite::Lax,
            })
        })
    });
    let draining = file.draining.as_ref().and_then(|d| {
        cx.check(d, &at("draining"), |v| {
            checks::choice(v, &["keep", "move"], "draining policy").map(|c| match c {
                "move" => DrainingSessions::Move,
                _ => DrainingSessions::Keep,
            })
        })
    });
    StickyLayer {
        present: true,
        enabled: file.enabled.as_ref().map(|e| *e.get_ref()),
        cookie,
        max_age,
        path,
        secure: file.secure.as_ref().map(|s| *s.get_ref()),
        http_only: file.http_only.as_ref().map(|h| *h.get_ref()),
        same_site,
        draining,
    }
}

/// The sticky settings of service `service`: its own table over the global one. On when
/// either table is there and neither says `enabled = false` (the service's word first).
pub(crate) fn build(
    global: &StickyLayer,
    local: Option<&StickyLayer>,
    service: &str,
) -> Option<Sticky> {
    let empty = StickyLayer::default();
    let local = local.unwrap_or(&empty);
    let enabled = local
        .enabled
        .or(global.enabled)
        .unwrap_or(local.present || global.present);
    if !enabled {
        return None;
    }
    Some(Sticky {
        cookie: local
            .cookie
            .clone()
            .or_else(|| global.cookie.clone())
            .unwrap_or_else(|| format!("meridian_{service}")),
        max_age: local.max_age.or(global.max_age).flatten(),
        path: local
            .path
            .clone()
            .or_else(|| global.path.clone())
            .unwrap_or_else(|| "/".to_owned()),
        secure: local.secure.or(global.secure),
        http_only: local.http_only.or(global.http_only).unwrap_or(true),
        same_site: Some(
            local
                .same_site
                .or(global.same_site)
                .unwrap_or(SameSite::Lax),
        ),
        draining: local
            .draining
            .or(global.draining)
            .unwrap_or(DrainingSessions::Keep),
    })
}

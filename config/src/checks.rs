//! Pure value checks: each takes the text as written and returns the parsed value or a
//! [`Problem`] describing what is wrong.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;

use crate::error::suggest;
use crate::model::{BackendAddress, HashKey};

/// What is wrong with a value, and possibly how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The error message.
    pub message: String,
    /// An optional hint.
    pub hint: Option<String>,
}

impl Problem {
    /// A problem with a hint.
    pub(crate) fn hinted(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Self {
            message,
            hint: None,
        }
    }
}

impl From<&str> for Problem {
    fn from(message: &str) -> Self {
        Self::from(message.to_owned())
    }
}

/// A humantime duration such as `2s` or `500ms`.
pub(crate) fn duration(text: &str) -> Result<Duration, Problem> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        let message = format!(
            "invalid duration \"{text}\": expected a number and a unit like \"2s\" or \"500ms\""
        );
        let trimmed = text.trim();
        if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
            Problem::hinted(message, format!("add a unit, e.g. \"{trimmed}s\""))
        } else {
            Problem::from(message)
        }
    })
}

/// A duration of at most `max`; `name` is used in the message.
pub(crate) fn at_most(d: Duration, max: Duration, name: &str) -> Result<Duration, Problem> {
    if d > max {
        Err(format!("{name} must be at most {}", show(max)).into())
    } else {
        Ok(d)
    }
}

/// Formats a duration for messages, e.g. `1m 30s`.
pub(crate) fn show(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// An integer within `range`; `name` is used in the message.
pub(crate) fn int_in(value: i64, range: &RangeInclusive<i64>, name: &str) -> Result<i64, Problem> {
    if value < *range.start() {
        Err(format!("{name} must be at least {}", range.start()).into())
    } else if value > *range.end() {
        Err(format!("{name} must be at most {}", range.end()).into())
    } else {
        Ok(value)
    }
}

/// A finite number within `range` (latitude / longitude).
pub(crate) fn degrees(value: f64, range: RangeInclusive<f64>, name: &str) -> Result<f64, Problem> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{name} must be between {} and {}",
            range.start(),
            range.end()
        )
        .into())
    }
}

/// A socket address `IP:port` (`[v6]:port` for IPv6) with a non-zero port.
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, Problem> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err("port must not be 0".into()),
        Ok(addr) => Ok(addr),
        Err(_) => {
            let message = format!("invalid address \"{text}\": expected IP:port");
            if text.parse::<IpAddr>().is_ok() {
                Err(Problem::hinted(
                    message,
                    "add a port, e.g. \"10.0.0.1:8080\"",
                ))
            } else if text.contains(':') && text.matches(':').count() > 1 && !text.starts_with('[')
            {
                Err(Problem::hinted(
                    message,
                    "write IPv6 addresses in brackets, e.g. \"[2001:db8::1]:8080\"",
                ))
            } else {
                Err(Problem::hinted(
                    message,
                    "use a literal IP address; host names are not resolved",
                ))
            }
        }
    }
}

/// A backend address: `IP:port` (`[v6]:port`), or `host:port` with a DNS host name.
pub(crate) fn backend_address(text: &str) -> Result<BackendAddress, Problem> {
    if let Ok(addr) = socket_addr(text) {
        return Ok(BackendAddress::Static(addr));
    }
    let host_port = text
        .rsplit_once(':')
        .filter(|(host, _)| !host.contains(':') && !host.starts_with('['));
    if let Some((host, port)) = host_port {
        let is_ip = host.parse::<IpAddr>().is_ok();
        if !is_ip && host.chars().any(|c| c.is_ascii_alphabetic()) {
            let name = server_name(host.trim_end_matches('.')).map_err(|_| {
                Problem::hinted(
                    format!("invalid host name \"{host}\""),
                    "use IP:port or a DNS name and port, e.g. \"api.example.internal:8080\"",
                )
            })?;
            if name.starts_with("*.") {
                return Err("a backend host name cannot be a wildcard".into());
            }
            return match port.parse::<u16>() {
                Ok(0) => Err("port must not be 0".into()),
                Ok(port) => Ok(BackendAddress::Host { name, port }),
                Err(_) => Err(format!("invalid port \"{port}\" in \"{text}\"").into()),
            };
        }
    }
    let message = format!("invalid address \"{text}\": expected IP:port or host:port");
    if text.parse::<IpAddr>().is_ok() || !text.contains(':') {
        Err(Problem::hinted(
            message,
            "add a port, e.g. \"10.0.0.1:8080\" or \"api.example.internal:8080\"",
        ))
    } else if text.matches(':').count() > 1 && !text.starts_with('[') {
        Err(Problem::hinted(
            message,
            "write IPv6 addresses in brackets, e.g. \"[2001:db8::1]:8080\"",
        ))
    } else {
        Err(message.into())
    }
}

/// A DNS SRV name such as `_http._tcp.api.example.internal`, returned lower-case.
pub(crate) fn srv_name(text: &str) -> Result<String, Problem> {
    let name = text.trim_end_matches('.');
    let bad = || {
        Problem::hinted(
            format!("invalid SRV name \"{text}\""),
            "use _service._proto.name, e.g. \"_http._tcp.api.example.internal\"",
        )
    };
    let lower = server_name(name).map_err(|_| bad())?;
    let labels: Vec<&str> = lower.split('.').collect();
    if labels.len() < 3 || !labels[0].starts_with('_') || !labels[1].starts_with('_') {
        return Err(bad());
    }
    Ok(lower)
}

/// An IP network `addr/len`, or a single address (a /32 or /128).
pub(crate) fn network(text: &str) -> Result<IpNet, Problem> {
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| {
            Problem::from(format!(
                "invalid network \"{text}\": expected an IP address or CIDR like \"10.0.0.0/8\""
            ))
        })?;
        if net.trunc() != net {
            return Err(Problem::hinted(
                format!("network \"{text}\" has host bits set"),
                format!("did you mean `{}`?", net.trunc()),
            ));
        }
        Ok(net)
    } else {
        let addr: IpAddr = text.parse().map_err(|_| {
            Problem::from(format!(
                "invalid network \"{text}\": expected an IP address or CIDR like \"10.0.0.0/8\""
            ))
        })?;
        Ok(IpNet::from(addr))
    }
}

/// An ISO 3166-1 alpha-2 country code, returned upper-case.
pub(crate) fn country(text: &str) -> Result<String, Problem> {
    if text.len() == 2 && text.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(text.to_ascii_uppercase())
    } else {
        Err(Problem::hinted(
            format!("invalid country code \"{text}\": expected two letters (ISO 3166-1 alpha-2)"),
            "e.g. `DE`, `US`, `JP`",
        ))
    }
}

/// The continent codes used by GeoIP databases.
pub(crate) const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// A continent code (`AF AN AS EU NA OC SA`), returned upper-case.
pub(crate) fn continent(text: &str) -> Result<String, Problem> {
    let upper = text.to_ascii_uppercase();
    if CONTINENTS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(Problem {
            message: format!("invalid continent code \"{text}\""),
            hint: suggest(&upper, CONTINENTS, "expected one of"),
        })
    }
}

/// Whether `c` may appear in an HTTP token (RFC 9110 `tchar`).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A region or service name (`what`): `[a-z0-9][a-z0-9_-]*`, at most 63 characters.
pub(crate) fn name(name: &str, what: &str) -> Result<(), Problem> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() > 63 {
        return Err(format!("{what} names are at most 63 characters").into());
    }
    if valid_chars && first_ok {
        return Ok(());
    }
    let message = format!(
        "invalid {what} name \"{name}\": use lower-case letters, digits, '-' and '_', starting with a letter or digit"
    );
    let fixed = name.to_ascii_lowercase().replace([' ', '.'], "-");
    if fixed != name && self::name(&fixed, what).is_ok() {
        Err(Problem::hinted(message, format!("did you mean `{fixed}`?")))
    } else {
        Err(message.into())
    }
}

/// A consistent-hash key: `header:NAME`, `cookie:NAME` or `client_ip`.
pub(crate) fn hash_key(text: &str) -> Result<HashKey, Problem> {
    let hint = "use \"header:NAME\", \"cookie:NAME\" or \"client_ip\"";
    if text == "client_ip" {
        return Ok(HashKey::ClientIp);
    }
    let (kind, name) = text
        .split_once(':')
        .ok_or_else(|| Problem::hinted(format!("invalid hash key \"{text}\""), hint.to_owned()))?;
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err(Problem::hinted(
            format!("invalid {kind} name \"{name}\" in hash key"),
            "names are HTTP tokens: letters, digits and !#$%&'*+-.^_`|~",
        ));
    }
    match kind {
        "header" => Ok(HashKey::Header(name.to_ascii_lowercase())),
        "cookie" => Ok(HashKey::Cookie(name.to_owned())),
        _ => Err(Problem::hinted(
            format!("invalid hash key kind \"{kind}\""),
            hint.to_owned(),
        )),
    }
}

/// An accepted status range: `NNN` or `NNN-NNN`, each 100..=599, low <= high.
pub(crate) fn status_range(text: &str) -> Result<RangeInclusive<u16>, Problem> {
    let bad = || {
        Problem::hinted(
            format!("invalid status range \"{text}\""),
            "use a code like \"200\" or a range like \"200-399\"; codes are 100 to 599",
        )
    };
    let code = |s: &str| -> Result<u16, Problem> {
        let s = s.trim();
        if s.len() != 3 || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        match s.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            _ => Err(bad()),
        }
    };
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (code(low)?, code(high)?),
        None => {
            let c = code(text)?;
            (c, c)
        }
    };
    if low > high {
        return Err(Problem::hinted(
            format!("invalid status range \"{text}\": {low} is greater than {high}"),
            format!("did you mean `{high}-{low}`?"),
        ));
    }
    Ok(low..=high)
}

/// A health-check request path: starts with `/`, no whitespace or control characters.
pub(crate) fn probe_path(text: &str) -> Result<String, Problem> {
    if !text.starts_with('/') {
        return Err(Problem::hinted(
            "path must start with '/'",
            format!("did you mean `/{text}`?"),
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("path must not contain spaces or control characters".into());
    }
    Ok(text.to_owned())
}

/// A `Host` header value or node name: non-empty visible ASCII, no spaces.
pub(crate) fn visible_token(text: &str, what: &str) -> Result<String, Problem> {
    if text.is_empty() {
        return Err(format!("{what} must not be empty").into());
    }
    if !text.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("{what} must be visible ASCII without spaces").into());
    }
    Ok(text.to_owned())
}

/// A `tracing` filter directive: non-empty, only `[A-Za-z0-9_:=,.-]`.
pub(crate) fn log_level(text: &str) -> Result<String, Problem> {
    if text.trim().is_empty() {
        return Err(Problem::hinted(
            "log level must not be empty",
            "e.g. \"info\" or \"meridian=debug,info\"",
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_:=,.-".contains(*c)))
    {
        return Err(Problem::hinted(
            format!("invalid character {c:?} in log filter"),
            "use directives like \"info\" or \"meridian=debug,info\"",
        ));
    }
    Ok(text.to_owned())
}

/// One of `choices`, with a did-you-mean hint otherwise.
pub(crate) fn choice<'a>(text: &str, choices: &[&'a str], what: &str) -> Result<&'a str, Problem> {
    match choices.iter().find(|c| **c == text) {
        Some(c) => Ok(c),
        None => Err(Problem {
            message: format!("unknown {what} \"{text}\""),
            hint: suggest(text, choices.iter().copied(), "expected one of"),
        }),
    }
}

/// An admin API token: at least 16 visible ASCII characters (it goes in an HTTP header).
pub(crate) fn admin_token(text: &str) -> Result<String, Problem> {
    if text.len() < 16 {
        return Err(Problem::hinted(
            "the admin token is too short (at least 16 characters)",
            "generate one with `openssl rand -hex 32`",
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the admin token must be visible ASCII without spaces".into());
    }
    Ok(text.to_owned())
}

/// A size in bytes: `"32KiB"`, `"1 MiB"`, `"2GB"`, `"512"` (SI and binary units, `B`
/// optional; case-insensitive).
pub(crate) fn size(text: &str) -> Result<u64, Problem> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let bad = || {
        Problem::hinted(
            format!("invalid size \"{text}\""),
            "use a number of bytes or a number and a unit such as \"32KiB\", \"10MiB\" or \"1GB\"",
        )
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes > 1e18 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// A size in bytes, shown with the largest binary unit that divides it.
pub(crate) fn show_size(bytes: u64) -> String {
    for (unit, f) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= f && bytes.is_multiple_of(f) {
            return format!("{}{unit}", bytes / f);
        }
    }
    format!("{bytes}B")
}

/// The hint for wildcards that are too broad.
const BROAD_WILDCARD_HINT: &str =
    "a wildcard needs at least two labels after \"*.\", e.g. \"*.example.com\"";

/// A server name for SNI selection: a DNS name, optionally `*.` + a DNS name of at least
/// two labels (`*.com` and `*` would claim a whole top-level domain, or everything).
pub(crate) fn server_name(text: &str) -> Result<String, Problem> {
    let lower = text.to_ascii_lowercase();
    if lower == "*" {
        return Err(Problem::hinted(
            "wildcard \"*\" would match every name",
            BROAD_WILDCARD_HINT,
        ));
    }
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if rest.is_empty() || rest.len() > 253 || !rest.split('.').all(label_ok) {
        return Err(Problem::hinted(
            format!("invalid server name \"{text}\""),
            "use a DNS name such as \"api.example.com\" or a wildcard such as \"*.example.com\"",
        ));
    }
    if rest.len() < lower.len() && !rest.contains('.') {
        return Err(Problem::hinted(
            format!(
                "wildcard \"{text}\" is directly under the top-level domain \"{rest}\" and would match every name in it"
            ),
            BROAD_WILDCARD_HINT,
        ));
    }
    Ok(lower)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        let p = duration("10").unwrap_err();
        assert!(p.message.contains("invalid duration \"10\""));
        assert_eq!(p.hint.as_deref(), Some("add a unit, e.g. \"10s\""));
        assert!(duration("fast").is_err());
        assert_eq!(show(Duration::from_secs(90)), "1m 30s");
        let hour = Duration::from_secs(3600);
        assert_eq!(at_most(hour, hour, "x"), Ok(hour));
        assert_eq!(
            at_most(hour + Duration::from_millis(1), hour, "decay")
                .unwrap_err()
                .message,
            "decay must be at most 1h"
        );
    }

    #[test]
    fn networks() {
        assert_eq!(network("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(network("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(network("::1").unwrap().to_string(), "::1/128");
        let p = network("10.1.2.3/8").unwrap_err();
        assert_eq!(p.hint.as_deref(), Some("did you mean `10.0.0.0/8`?"));
        assert!(network("10.0.0.0/33").is_err());
        assert!(network("example.com").is_err());
    }

    #[test]
    fn addresses() {
        assert!(socket_addr("10.0.0.1:80").is_ok());
        assert!(socket_addr("[::1]:80").is_ok());
        assert!(socket_addr("10.0.0.1:0").is_err());
        assert!(socket_addr("10.0.0.1").unwrap_err().hint.is_some());
        assert!(socket_addr("backend.local:80").is_err());
        assert_eq!(
            backend_address("API.example.internal:8080"),
            Ok(BackendAddress::Host {
                name: "api.example.internal".to_owned(),
                port: 8080
            })
        );
        assert!(backend_address("10.0.0.1:80").is_ok());
        assert!(backend_address("backend.local").unwrap_err().hint.is_some());
        assert!(backend_address("backend.local:0").is_err());
        assert!(backend_address("bad_host!:80").is_err());
        assert!(backend_address("*.example.com:80").is_err());
        assert_eq!(
            srv_name("_http._tcp.api.example.internal."),
            Ok("_http._tcp.api.example.internal".to_owned())
        );
        assert!(srv_name("api.example.internal").is_err());
    }

    #[test]
    fn codes_and_names() {
        assert_eq!(country("de"), Ok("DE".to_owned()));
        assert!(country("DEU").is_err());
        assert_eq!(continent("eu"), Ok("EU".to_owned()));
        assert!(continent("EA").is_err());
        assert!(name("us-east", "region").is_ok());
        assert!(name("0_a", "region").is_ok());
        assert!(name("US-East", "region").unwrap_err().hint.is_some());
        assert!(name("-a", "region").is_err());
        assert!(name(&"a".repeat(64), "region").is_err());
    }

    #[test]
    fn hash_keys() {
        assert_eq!(
            hash_key("header:X-User-Id"),
            Ok(HashKey::Header("x-user-id".to_owned()))
        );
        assert_eq!(
            hash_key("cookie:sid"),
            Ok(HashKey::Cookie("sid".to_owned()))
        );
        assert_eq!(hash_key("client_ip"), Ok(HashKey::ClientIp));
        assert!(hash_key("header:").is_err());
        assert!(hash_key("header:a b").is_err());
        assert!(hash_key("query:x").is_err());
        assert!(hash_key("ip").is_err());
    }

    #[test]
    fn statuses_paths_levels() {
        assert_eq!(status_range("200-399"), Ok(200..=399));
        assert_eq!(status_range("204"), Ok(204..=204));
        assert!(status_range("399-200").is_err());
        assert!(status_range("200-600").is_err());
        assert!(status_range("2xx").is_err());
        assert!(probe_path("/healthz").is_ok());
        assert!(probe_path("healthz").is_err());
        assert!(probe_path("/a b").is_err());
        assert!(log_level("meridian=debug,info").is_ok());
        assert!(log_level("").is_err());
        assert!(log_level("info;rm").is_err());
        assert_eq!(
            int_in(0, &(1..=10), "rise").unwrap_err().message,
            "rise must be at least 1"
        );
        assert_eq!(
            choice("jsn", &["text", "json"], "log format")
                .unwrap_err()
                .hint
                .as_deref(),
            Some("did you mean `json`?")
        );
    }
}

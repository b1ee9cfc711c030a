//! Validation of `[upstream]`, `[regions.NAME.upstream]`, `[services.NAME.upstream]` and
//! `[services.NAME.regions.REGION.upstream]` (the protocol spoken to a pool's backends,
//! merged key by key like the health checks), of how it must agree with the pool's TLS
//! and health check, and of the gRPC parts of `[retry]`.

use std::ops::Range;
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::file::{RetryFile, UpstreamFile};
use crate::layer::{setting, Setting};
use crate::model::{GrpcMethod, Upstream, UpstreamProtocol, GRPC_CODE_NAMES};

/// The `protocol` values, in the order they are documented.
const PROTOCOLS: [&str; 4] = ["http1", "h2", "h2c", "auto"];

/// The gRPC codes `retry.grpc_on` may name: the ones a backend answers before acting on a
/// call (or that say it can be tried again), as Envoy's `retry_on` offers them.
const RETRYABLE_CODES: [&str; 5] = [
    "cancelled",
    "deadline_exceeded",
    "internal",
    "resource_exhausted",
    "unavailable",
];

/// The most concurrent streams per upstream HTTP/2 connection.
const MAX_H2_STREAMS: i64 = 10_000;

/// The upstream settings written in one table.
#[derive(Debug, Clone)]
pub(crate) struct UpLayer {
    protocol: Setting<UpstreamProtocol>,
    h2_max_streams: Setting<u32>,
    h2_ping_interval: Setting<Duration>,
}

impl UpLayer {
    /// Nothing set.
    pub(crate) fn unset() -> Self {
        UpLayer {
            protocol: Setting::Unset,
            h2_max_streams: Setting::Unset,
            h2_ping_interval: Setting::Unset,
        }
    }

    /// Parses one table (`prefix` is its path, e.g. `regions.eu.upstream`).
    pub(crate) fn parse(cx: &mut Cx<'_>, file: Option<&UpstreamFile>, prefix: &str) -> Self {
        let Some(file) = file else {
            return UpLayer::unset();
        };
        UpLayer {
            protocol: setting(cx, &file.protocol, format!("{prefix}.protocol"), |p| {
                let p = checks::choice(p, &PROTOCOLS, "upstream protocol")?;
                Ok(match p {
                    "h2" => UpstreamProtocol::H2,
                    "h2c" => UpstreamProtocol::H2c,
                    "auto" => UpstreamProtocol::Auto,
                    _ => UpstreamProtocol::Http1,
                })
            }),
            h2_max_streams: setting(
                cx,
                &file.h2_max_streams,
                format!("{prefix}.h2_max_streams"),
                |v| {
                    let v = checks::int_in(*v, &(1..=MAX_H2_STREAMS), "h2_max_streams")?;
                    Ok(u32::try_from(v).unwrap_or(100))
                },
            ),
            h2_ping_interval: setting(
                cx,
                &file.h2_ping_interval,
                format!("{prefix}.h2_ping_interval"),
                |d| {
                    let d = checks::duration(d)?;
                    if d < Duration::from_secs(1) {
                        return Err("h2_ping_interval must be at least 1s".into());
                    }
                    checks::at_most(d, Duration::from_secs(3600), "h2_ping_interval")
                },
            ),
        }
    }

    /// This layer merged field by field over `under`.
    pub(crate) fn over(&self, under: &UpLayer) -> UpLayer {
        UpLayer {
            protocol: self.protocol.over(&under.protocol),
            h2_max_streams: self.h2_max_streams.over(&under.h2_max_streams),
            h2_ping_interval: self.h2_ping_interval.over(&under.h2_ping_interval),
        }
    }

    /// The settings, defaults where unset.
    pub(crate) fn build(&self) -> Upstream {
        let d = Upstream::default();
        Upstream {
            protocol: self.protocol.or(d.protocol),
            h2_max_streams: self.h2_max_streams.or(d.h2_max_streams),
            h2_ping_interval: match &self.h2_ping_interval {
                Setting::Set(v, _, _) => Some(*v),
                _ => d.h2_ping_interval,
            },
        }
    }

    /// Where the protocol in effect was written: its span and field path.
    fn protocol_at(&self) -> Option<(Range<usize>, String)> {
        match &self.protocol {
            Setting::Set(_, span, field) => Some((span.clone(), field.clone())),
            _ => None,
        }
    }

    /// Checks that the merged protocol fits `pool`: `h2` and `auto` need TLS (ALPN), `h2c`
    /// is cleartext; a gRPC health check needs HTTP/2 (`grpc_probe_at`: where its `kind`
    /// was written).
    pub(crate) fn check_pool(
        &self,
        cx: &mut Cx<'_>,
        pool: &PoolName<'_>,
        tls: bool,
        grpc_probe_at: Option<(Range<usize>, String)>,
    ) {
        let protocol = self.protocol.or(UpstreamProtocol::Http1);
        let problem = match (protocol, tls) {
            (UpstreamProtocol::H2 | UpstreamProtocol::Auto, false) => Some(Problem::hinted(
                format!(
                    "protocol \"{protocol}\" negotiates HTTP/2 by TLS ALPN, but {pool} has no {}",
                    pool.table("tls")
                ),
                format!(
                    "add {}, or use protocol = \"h2c\" for cleartext HTTP/2",
                    pool.table("tls")
                ),
            )),
            (UpstreamProtocol::H2c, true) => Some(Problem::hinted(
                format!(
                    "protocol \"h2c\" is cleartext HTTP/2, but {pool} speaks TLS to its backends"
                ),
                "use protocol = \"h2\" for HTTP/2 over TLS",
            )),
            _ => None,
        };
        if let (Some(problem), Some((span, field))) = (problem, self.protocol_at()) {
            let written = cx.written(&span);
            cx.report(Some(&span), &field, written, problem);
        }
        if protocol == UpstreamProtocol::Http1 {
            if let Some((span, field)) = grpc_probe_at {
                let written = cx.written(&span);
                cx.report(
                    Some(&span),
                    &field,
                    written,
                    Problem::hinted(
                        format!("a grpc health check needs HTTP/2, but {pool} speaks HTTP/1.1 to its backends"),
                        format!(
                            "set protocol = \"h2c\" (or \"h2\" with TLS) in {}",
                            pool.upstream_tables()
                        ),
                    ),
                );
            }
        }
    }
}

/// The pool a check is about, as messages name it: a region's own (`service` is `None`)
/// or a service's pool in a region.
pub(crate) struct PoolName<'a> {
    pub service: Option<&'a str>,
    pub region: &'a str,
}

impl PoolName<'_> {
    /// The pool's own table `name` (`[regions.R.tls]`, `[services.S.regions.R.tls]`).
    fn table(&self, name: &str) -> String {
        match self.service {
            None => format!("[regions.{}.{name}]", self.region),
            Some(s) => format!("[services.{s}.regions.{}.{name}]", self.region),
        }
    }

    /// The `upstream` tables this pool inherits from, most specific first.
    fn upstream_tables(&self) -> String {
        match self.service {
            None => format!("{} or [upstream]", self.table("upstream")),
            Some(s) => format!(
                "{}, [services.{s}.upstream], [regions.{}.upstream] or [upstream]",
                self.table("upstream"),
                self.region
            ),
        }
    }
}

impl std::fmt::Display for PoolName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.service {
            None => write!(f, "region {}", self.region),
            Some(s) => write!(f, "service {s}'s pool in region {}", self.region),
        }
    }
}

/// `retry.grpc_on`: status names → codes.
pub(crate) fn grpc_on(cx: &mut Cx<'_>, file: &RetryFile) -> Vec<u8> {
    let Some(list) = &file.grpc_on else {
        return vec![14];
    };
    let mut codes = Vec::new();
    for (i, name) in list.get_ref().iter().enumerate() {
        let field = format!("retry.grpc_on[{i}]");
        let Some(name) = cx.check(name, &field, |n| {
            checks::choice(
                &n.to_ascii_lowercase(),
                &RETRYABLE_CODES,
                "retryable gRPC status",
            )
        }) else {
            continue;
        };
        if let Some(code) = GRPC_CODE_NAMES.iter().position(|n| *n == name) {
            let code = u8::try_from(code).unwrap_or(14);
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
    }
    codes
}

/// `retry.grpc_idempotent`: method patterns.
pub(crate) fn grpc_idempotent(cx: &mut Cx<'_>, file: &RetryFile) -> Vec<GrpcMethod> {
    let Some(list) = &file.grpc_idempotent else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, pattern) in list.get_ref().iter().enumerate() {
        let field = format!("retry.grpc_idempotent[{i}]");
        if let Some(m) = cx.check(pattern, &field, |p| grpc_method(p)) {
            out.push(m);
        }
    }
    out
}

/// `/package.Service/Method` or `/package.Service/*`.
fn grpc_method(text: &str) -> Result<GrpcMethod, Problem> {
    let bad = || {
        Problem::hinted(
            format!("invalid gRPC method \"{text}\""),
            "write \"/package.Service/Method\", or \"/package.Service/*\" for all its methods",
        )
    };
    let rest = text.strip_prefix('/').ok_or_else(bad)?;
    let (service, method) = rest.split_once('/').ok_or_else(bad)?;
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if !name_ok(service) || !(method == "*" || name_ok(method)) {
        return Err(bad());
    }
    Ok(GrpcMethod {
        service: format!("/{service}/"),
        method: (method != "*").then(|| method.to_owned()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::grpc_method;
    use crate::model::{ProbeKind, UpstreamProtocol};

    const BASE: &str = "[node]\nregion = \"a\"\n\n[regions.a]\nlatitude = 0.0\nlongitude = 0.0\nbackends = [{ address = \"127.0.0.1:8080\" }]\n";

    fn errors(text: &str) -> String {
        crate::parse(text, "m.toml", None)
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn region_settings_merge_over_the_global_table() {
        let text = format!(
            "[upstream]\nprotocol = \"h2c\"\nh2_max_streams = 50\n{BASE}\n[regions.a.upstream]\nh2_ping_interval = \"30s\"\n\n[regions.b]\nlatitude = 1.0\nlongitude = 1.0\nbackends = [{{ address = \"127.0.0.1:8081\" }}]\n[regions.b.upstream]\nprotocol = \"http1\"\n"
        );
        let c = crate::parse(&text, "m.toml", None).unwrap();
        let a = &c.regions[0].upstream;
        assert_eq!(a.protocol, UpstreamProtocol::H2c);
        assert_eq!(a.h2_max_streams, 50);
        assert_eq!(a.h2_ping_interval, Some(std::time::Duration::from_secs(30)));
        let b = &c.regions[1].upstream;
        assert_eq!(b.protocol, UpstreamProtocol::Http1);
        assert_eq!(b.h2_max_streams, 50);
        assert_eq!(b.h2_ping_interval, None);
        let plain = crate::parse(BASE, "m.toml", None).unwrap();
        assert_eq!(plain.regions[0].upstream.protocol, UpstreamProtocol::Http1);
        assert_eq!(plain.regions[0].upstream.h2_max_streams, 100);
        assert_eq!(plain.retry.grpc_on, vec![14]);
    }

    #[test]
    fn protocol_must_fit_the_regions_tls() {
        let text = format!("{BASE}[regions.a.upstream]\nprotocol = \"h2\"\n");
        assert_eq!(
            errors(&text),
            "m.toml:9:12: regions.a.upstream.protocol = \"h2\": protocol \"h2\" negotiates HTTP/2 by TLS ALPN, but region a has no [regions.a.tls] (hint: add [regions.a.tls], or use protocol = \"h2c\" for cleartext HTTP/2)"
        );
        let text = format!(
            "[upstream]\nprotocol = \"h2c\"\n{BASE}[regions.a.tls]\ninsecure_skip_verify = true\n"
        );
        let e = errors(&text);
        assert!(e.starts_with("m.toml:2:12: upstream.protocol = \"h2c\": protocol \"h2c\" is cleartext HTTP/2, but region a speaks TLS"), "{e}");
        let text = format!("[upstream]\nprotocol = \"http2\"\n{BASE}");
        let e = errors(&text);
        assert!(e.contains("unknown upstream protocol \"http2\""), "{e}");
    }

    #[test]
    fn grpc_probe_needs_http2() {
        let text = format!("[health_check]\nkind = \"grpc\"\n{BASE}");
        let e = errors(&text);
        assert!(
            e.starts_with("m.toml:2:8: health_check.kind = \"grpc\": a grpc health check needs HTTP/2, but region a speaks HTTP/1.1"),
            "{e}"
        );
        let text = format!(
            "[health_check]\nkind = \"grpc\"\ngrpc_service = \"shop.Catalog\"\n[upstream]\nprotocol = \"h2c\"\n{BASE}"
        );
        let c = crate::parse(&text, "m.toml", None).unwrap();
        assert_eq!(
            c.regions[0].health.kind,
            ProbeKind::Grpc {
                service: "shop.Catalog".into(),
                authority: None
            }
        );
    }

    const SERVICES: &str = "[node]\nregion = \"a\"\n\n[upstream]\nprotocol = \"h2c\"\n\n[regions.a]\nlatitude = 0.0\nlongitude = 0.0\n[regions.a.upstream]\nh2_max_streams = 7\n\n[regions.b]\nlatitude = 1.0\nlongitude = 1.0\n";

    #[test]
    fn pools_inherit_upstream_from_region_then_service_then_their_own() {
        let text = format!(
            "{SERVICES}\n[services.api]\n[services.api.upstream]\nh2_ping_interval = \"20s\"\n[services.api.regions.a]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n[services.api.regions.b]\nbackends = [{{ address = \"127.0.0.1:2\" }}]\n[services.api.regions.b.upstream]\nprotocol = \"http1\"\n\n[services.web]\nhosts = [\"web.example.com\"]\n[services.web.upstream]\nprotocol = \"h2\"\n[services.web.tls]\ninsecure_skip_verify = true\n[services.web.regions.b]\nbackends = [{{ address = \"127.0.0.1:3\" }}]\n"
        );
        let c = crate::parse(&text, "m.toml", None).unwrap();
        let api = &c.services[0];
        let a = api.pool(0).unwrap().upstream;
        assert_eq!(a.protocol, UpstreamProtocol::H2c);
        assert_eq!(a.h2_max_streams, 7, "from [regions.a.upstream]");
        assert_eq!(a.h2_ping_interval, Some(std::time::Duration::from_secs(20)));
        let b = api.pool(1).unwrap().upstream;
        assert_eq!(b.protocol, UpstreamProtocol::Http1, "the pool's own");
        assert_eq!(b.h2_max_streams, 100, "region b sets none");
        assert_eq!(b.h2_ping_interval, Some(std::time::Duration::from_secs(20)));
        let web = c.services[1].pool(1).unwrap().upstream;
        assert_eq!(web.protocol, UpstreamProtocol::H2);
        assert_eq!(web.h2_ping_interval, None);
    }

    #[test]
    fn a_pools_protocol_must_fit_its_tls_and_health_check() {
        let text = format!(
            "{SERVICES}\n[services.api]\nhealth_check = {{ kind = \"grpc\" }}\n[services.api.upstream]\nprotocol = \"h2\"\n[services.api.regions.a]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n[services.api.regions.b]\nbackends = [{{ address = \"127.0.0.1:2\" }}]\nupstream = {{ protocol = \"http1\" }}\n"
        );
        let e = errors(&text);
        assert!(
            e.contains("services.api.upstream.protocol = \"h2\": protocol \"h2\" negotiates HTTP/2 by TLS ALPN, but service api's pool in region a has no [services.api.regions.a.tls] (hint: add [services.api.regions.a.tls], or use protocol = \"h2c\" for cleartext HTTP/2)"),
            "{e}"
        );
        assert!(
            e.contains("services.api.health_check.kind = \"grpc\": a grpc health check needs HTTP/2, but service api's pool in region b speaks HTTP/1.1 to its backends (hint: set protocol = \"h2c\" (or \"h2\" with TLS) in [services.api.regions.b.upstream], [services.api.upstream], [regions.b.upstream] or [upstream])"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 2, "{e}");
        // The regions' own settings are only defaults here (no region lists backends):
        // the global h2c is not checked against a region, only against the pools.
        let text = format!(
            "{SERVICES}\n[services.api]\n[services.api.tls]\ninsecure_skip_verify = true\n[services.api.upstream]\nprotocol = \"h2\"\n[services.api.regions.a]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n"
        );
        crate::parse(&text, "m.toml", None).unwrap();
    }

    #[test]
    fn grpc_retry_settings() {
        let text = format!(
            "[retry]\ngrpc_on = [\"unavailable\", \"RESOURCE_EXHAUSTED\"]\ngrpc_idempotent = [\"/shop.Catalog/*\"]\n{BASE}"
        );
        let c = crate::parse(&text, "m.toml", None).unwrap();
        assert_eq!(c.retry.grpc_on, vec![14, 8]);
        assert!(c.retry.grpc_idempotent[0].matches("/shop.Catalog/Get"));
        let text = format!("[retry]\ngrpc_on = [\"ok\"]\ngrpc_idempotent = [\"shop\"]\n{BASE}");
        let e = errors(&text);
        assert!(
            e.contains("retry.grpc_on[0] = \"ok\": unknown retryable gRPC status \"ok\""),
            "{e}"
        );
        assert!(
            e.contains("retry.grpc_idempotent[0] = \"shop\": invalid gRPC method"),
            "{e}"
        );
    }

    #[test]
    fn grpc_method_patterns_match_paths() {
        let one = grpc_method("/shop.Catalog/Get").unwrap();
        assert!(one.matches("/shop.Catalog/Get"));
        assert!(!one.matches("/shop.Catalog/GetAll"));
        assert!(!one.matches("/shop.Catalog/Get/x"));
        let all = grpc_method("/shop.Catalog/*").unwrap();
        assert!(all.matches("/shop.Catalog/Put"));
        assert!(!all.matches("/shop.Catalog/"));
        assert!(!all.matches("/shop.Catalogue/Put"));
        for bad in [
            "shop.Catalog/Get",
            "/shop.Catalog",
            "//Get",
            "/a/b c",
            "/a/",
        ] {
            assert!(grpc_method(bad).is_err(), "{bad}");
        }
    }
}

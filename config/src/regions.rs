//! Validation of `[regions.*]`, their backends and the merged health checks.

use std::collections::HashMap;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::file::{FileConfig, HealthCheckFile, RegionFile, S};
use crate::layer::{setting, Setting};
use crate::model::{Backend, BackendAddress, Balance, HealthCheck, ProbeKind, Region};
use crate::upstream::UpLayer;

/// The most regions a file may define: the proxy keeps region indices in `u16` lists,
/// and routing scores every region per request.
pub(crate) const MAX_REGIONS: usize = 1024;

/// The most backends (entries of `backends`) one region may list: the proxy keeps member
/// indices in `u16`.
pub(crate) const MAX_BACKENDS: usize = 10_000;

/// The longest health-check `interval` and `timeout`: probe times are computed as
/// `start + n × interval` on `Instant`s, which overflow (a panic) for absurd intervals, and
/// a backend probed less than hourly is not health-checked in any useful sense.
pub(crate) const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);

/// The `balance` values, in the order they are documented.
const BALANCES: [&str; 5] = [
    "p2c_ewma",
    "round_robin",
    "weighted",
    "least_connections",
    "consistent_hash",
];

/// The health-check probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Tcp,
    Grpc,
}

/// The health-check settings written in one table.
#[derive(Debug, Clone)]
struct Layer {
    kind: Setting<Kind>,
    grpc_service: Setting<String>,
    path: Setting<String>,
    host: Setting<String>,
    expect: Setting<RangeInclusive<u16>>,
    interval: Setting<Duration>,
    timeout: Setting<Duration>,
    rise: Setting<u32>,
    fall: Setting<u32>,
}

impl Layer {
    fn parse(cx: &mut Cx<'_>, file: &HealthCheckFile, prefix: &str) -> Self {
        let duration = |text: &String, name: &str| -> Result<Duration, Problem> {
            let d = checks::duration(text)?;
            if d.is_zero() {
                Err(format!("{name} must be greater than 0").into())
            } else {
                checks::at_most(d, MAX_PROBE_INTERVAL, name)
            }
        };
        let count = |v: &i64, name: &str| -> Result<u32, Problem> {
            let v = checks::int_in(*v, &(1..=100), name)?;
            Ok(u32::try_from(v).unwrap_or(1))
        };
        Layer {
            kind: setting(cx, &file.kind, format!("{prefix}.kind"), |k| {
                Ok(
                    match checks::choice(k, &["http", "tcp", "grpc"], "health check kind")? {
                        "tcp" => Kind::Tcp,
                        "grpc" => Kind::Grpc,
                        _ => Kind::Http,
                    },
                )
            }),
            grpc_service: setting(
                cx,
                &file.grpc_service,
                format!("{prefix}.grpc_service"),
                |s| {
                    if s.is_empty() {
                        Ok(String::new())
                    } else {
                        checks::visible_token(s, "grpc_service")
                    }
                },
            ),
            path: setting(cx, &file.path, format!("{prefix}.path"), |p| {
                checks::probe_path(p)
            }),
            host: setting(cx, &file.host, format!("{prefix}.host"), |h| {
                checks::visible_token(h, "host")
            }),
            expect: setting(
                cx,
                &file.expect_status,
                format!("{prefix}.expect_status"),
                |s| checks::status_range(&s.0),
            ),
            interval: setting(cx, &file.interval, format!("{prefix}.interval"), |d| {
                duration(d, "interval")
            }),
            timeout: setting(cx, &file.timeout, format!("{prefix}.timeout"), |d| {
                duration(d, "timeout")
            }),
            rise: setting(cx, &file.rise, format!("{prefix}.rise"), |v| {
                count(v, "rise")
            }),
            fall: setting(cx, &file.fall, format!("{prefix}.fall"), |v| {
                count(v, "fall")
            }),
        }
    }

    fn unset() -> Self {
        Layer {
            kind: Setting::Unset,
            grpc_service: Setting::Unset,
            path: Setting::Unset,
            host: Setting::Unset,
            expect: Setting::Unset,
            interval: Setting::Unset,
            timeout: Setting::Unset,
            rise: Setting::Unset,
            fall: Setting::Unset,
        }
    }

    /// This layer merged field by field over `under`.
    fn over(&self, under: &Layer) -> Layer {
        Layer {
            kind: self.kind.over(&under.kind),
            grpc_service: self.grpc_service.over(&under.grpc_service),
            path: self.path.over(&under.path),
            host: self.host.over(&under.host),
            expect: self.expect.over(&under.expect),
            interval: self.interval.over(&under.interval),
            timeout: self.timeout.over(&under.timeout),
            rise: self.rise.over(&under.rise),
            fall: self.fall.over(&under.fall),
        }
    }

    /// Checks `timeout <= interval` of the merged layer `self`; reports only if `own`
    /// (the layer being validated) sets one of the two, so each problem shows once.
    fn check_timeout(&self, cx: &mut Cx<'_>, own: &Layer) {
        if matches!(self.timeout, Setting::Bad) || matches!(self.interval, Setting::Bad) {
            return;
        }
        let timeout = self.timeout.or(Duration::from_secs(1));
        let interval = self.interval.or(Duration::from_secs(2));
        if timeout <= interval {
            return;
        }
        let message = format!(
            "timeout ({}) must not be longer than interval ({})",
            checks::show(timeout),
            checks::show(interval)
        );
        let at = match (&own.timeout, &own.interval) {
            (Setting::Set(_, span, field), _) | (_, Setting::Set(_, span, field)) => {
                Some((span.clone(), field.clone()))
            }
            _ => None,
        };
        if let Some((span, field)) = at {
            let written = cx.written(&span);
            cx.report(Some(&span), &field, written, message);
        }
    }

    /// Where a `kind = "grpc"` in effect was written.
    fn grpc_at(&self) -> Option<(Range<usize>, String)> {
        match &self.kind {
            Setting::Set(Kind::Grpc, span, field) => Some((span.clone(), field.clone())),
            _ => None,
        }
    }

    fn build(&self) -> HealthCheck {
        let host = match &self.host {
            Setting::Set(h, _, _) => Some(h.clone()),
            _ => None,
        };
        let kind = match self.kind.or(Kind::Http) {
            Kind::Tcp => ProbeKind::Tcp,
            Kind::Grpc => ProbeKind::Grpc {
                service: self.grpc_service.or(String::new()),
                authority: host,
            },
            Kind::Http => ProbeKind::Http {
                path: self.path.or("/healthz".to_owned()),
                host,
                expect: self.expect.or(200..=399),
            },
        };
        HealthCheck {
            kind,
            interval: self.interval.or(Duration::from_secs(2)),
            timeout: self.timeout.or(Duration::from_secs(1)),
            rise: self.rise.or(2),
            fall: self.fall.or(3),
        }
    }
}

/// Validates every region (and the global `[health_check]` merged into each).
pub(crate) fn regions(cx: &mut Cx<'_>, file: &FileConfig) -> Vec<Region> {
    let global = Layer::parse(cx, &file.health_check, "health_check");
    global.over(&Layer::unset()).check_timeout(cx, &global);
    let upstream = UpLayer::parse(cx, Some(&file.upstream), "upstream");

    let entries = match &file.regions {
        Some(entries) if !entries.0.is_empty() => &entries.0,
        _ => {
            let span = cx.top_key("regions");
            cx.report(
                span.as_ref(),
                "regions",
                None,
                Problem::hinted(
                    "at least one region is required",
                    "add a [regions.NAME] table with latitude, longitude and backends",
                ),
            );
            return Vec::new();
        }
    };
    if let Some((name, _)) = entries.get(MAX_REGIONS) {
        let key = cx.keys.regions.get(MAX_REGIONS).cloned();
        let message = format!(
            "too many regions: {} are defined, at most {MAX_REGIONS} are supported",
            entries.len()
        );
        cx.report(key.as_ref(), &format!("regions.{name}"), None, message);
    }
    let mut seen: HashMap<BackendAddress, String> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, (name, region)) in entries.iter().enumerate() {
        let key = cx.keys.regions.get(i).cloned();
        let layers = Layers {
            health: &global,
            upstream: &upstream,
        };
        out.push(one_region(cx, name, region, key, layers, &mut seen));
    }
    out
}

/// The global layers a region's own tables are merged over.
#[derive(Clone, Copy)]
struct Layers<'a> {
    health: &'a Layer,
    upstream: &'a UpLayer,
}

fn one_region(
    cx: &mut Cx<'_>,
    name: &str,
    file: &RegionFile,
    key: Option<Range<usize>>,
    global: Layers<'_>,
    seen: &mut HashMap<BackendAddress, String>,
) -> Region {
    let prefix = format!("regions.{name}");
    if let Err(problem) = checks::region_name(name) {
        cx.report(key.as_ref(), &prefix, None, problem);
    }
    let latitude = coordinate(cx, &file.latitude, &key, &prefix, "latitude", 90.0);
    let longitude = coordinate(cx, &file.longitude, &key, &prefix, "longitude", 180.0);
    let balance = balance(cx, file, &prefix);
    let backends = backends(cx, file, &key, &prefix, seen);
    let own = match &file.health_check {
        Some(hc) => Layer::parse(cx, hc, &format!("{prefix}.health_check")),
        None => Layer::unset(),
    };
    let merged = own.over(global.health);
    merged.check_timeout(cx, &own);
    let tls = crate::tls::upstream_tls(cx, file.tls.as_ref(), key.clone(), &prefix);
    let upstream = UpLayer::parse(cx, file.upstream.as_ref(), &format!("{prefix}.upstream"))
        .over(global.upstream);
    let tls_on = tls.is_some() || file.tls.as_ref().is_some_and(|t| t.enabled != Some(false));
    upstream.check_region(cx, name, tls_on, merged.grpc_at());
    let (instances, reach) = crate::mesh::instances(cx, file, &prefix);
    Region {
        name: name.to_owned(),
        latitude,
        longitude,
        backends,
        balance,
        health: merged.build(),
        tls,
        upstream: upstream.build(),
        instances,
        reach,
    }
}

fn coordinate(
    cx: &mut Cx<'_>,
    value: &Option<S<f64>>,
    key: &Option<Range<usize>>,
    prefix: &str,
    name: &str,
    limit: f64,
) -> f64 {
    let field = format!("{prefix}.{name}");
    match value {
        Some(v) => cx
            .check(v, &field, |d| checks::degrees(*d, -limit..=limit, name))
            .unwrap_or(0.0),
        None => {
            cx.missing(key.clone(), &field, None);
            0.0
        }
    }
}

fn balance(cx: &mut Cx<'_>, file: &RegionFile, prefix: &str) -> Balance {
    let balance_field = format!("{prefix}.balance");
    let hash_field = format!("{prefix}.hash_key");
    let chosen = match &file.balance {
        Some(b) => cx.check(b, &balance_field, |b| {
            checks::choice(b, &BALANCES, "balance algorithm")
        }),
        None => Some("p2c_ewma"),
    };
    let hash_key = file
        .hash_key
        .as_ref()
        .map(|h| (h, cx.check(h, &hash_field, |h| checks::hash_key(h))));
    match (chosen, hash_key) {
        (Some("consistent_hash"), Some((_, Some(key)))) => Balance::ConsistentHash(key),
        (Some("consistent_hash"), Some((_, None))) => Balance::P2cPeakEwma,
        (Some("consistent_hash"), None) => {
            if let Some(b) = &file.balance {
                cx.bad(
                    b,
                    &balance_field,
                    Problem::hinted(
                        "consistent_hash needs a hash_key",
                        "add hash_key = \"header:NAME\", \"cookie:NAME\" or \"client_ip\"",
                    ),
                );
            }
            Balance::P2cPeakEwma
        }
        (Some(other), Some((h, _))) => {
            cx.bad(
                h,
                &hash_field,
                Problem::hinted(
                    format!(
                        "hash_key is only used with balance = \"consistent_hash\", not \"{other}\""
                    ),
                    "remove hash_key or set balance = \"consistent_hash\"",
                ),
            );
            Balance::P2cPeakEwma
        }
        (Some("round_robin"), None) => Balance::RoundRobin,
        (Some("weighted"), None) => Balance::Weighted,
        (Some("least_connections"), None) => Balance::LeastConnections,
        _ => Balance::P2cPeakEwma,
    }
}

fn backends(
    cx: &mut Cx<'_>,
    file: &RegionFile,
    key: &Option<Range<usize>>,
    prefix: &str,
    seen: &mut HashMap<BackendAddress, String>,
) -> Vec<Backend> {
    let field = format!("{prefix}.backends");
    let relayed = file
        .instances
        .as_ref()
        .is_some_and(|i| !i.get_ref().is_empty())
        && file
            .reach
            .as_ref()
            .is_some_and(|r| r.get_ref() == "instances");
    let list = match &file.backends {
        // A region reached through its instances may list no backends: its own instances
        // get theirs from their own configuration.
        None if relayed => return Vec::new(),
        None => {
            cx.missing(
                key.clone(),
                &field,
                Some("add backends = [{ address = \"10.0.0.1:8080\" }]".to_owned()),
            );
            return Vec::new();
        }
        Some(list) if list.get_ref().is_empty() => {
            cx.bad(list, &field, "at least one backend is required");
            return Vec::new();
        }
        Some(list) => list.get_ref(),
    };
    if let Some(extra) = list.get(MAX_BACKENDS) {
        let message = format!(
            "too many backends: the region lists {}, at most {MAX_BACKENDS} are supported",
            list.len()
        );
        let at = format!("{field}[{MAX_BACKENDS}]");
        cx.report(Some(&extra.span()), &at, None, message);
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, backend) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let weight = cx.int(
            backend.get_ref().weight.as_ref(),
            &format!("{at}.weight"),
            1,
            1..=1000,
        );
        let address_field = format!("{at}.address");
        let srv_field = format!("{at}.srv");
        let file = backend.get_ref();
        let (address, written, field) = match (&file.address, &file.srv) {
            (None, None) => {
                cx.missing(
                    Some(backend.span()),
                    &address_field,
                    Some("give address = \"IP:port\" or \"host:port\", or srv = \"_service._proto.name\"".to_owned()),
                );
                continue;
            }
            (Some(_), Some(srv)) => {
                cx.bad(
                    srv,
                    &srv_field,
                    Problem::hinted(
                        "a backend has either address or srv, not both",
                        "split it into two backends",
                    ),
                );
                continue;
            }
            (Some(written), None) => {
                let Some(address) =
                    cx.check(written, &address_field, |a| checks::backend_address(a))
                else {
                    continue;
                };
                (address, written, &address_field)
            }
            (None, Some(written)) => {
                let Some(name) = cx.check(written, &srv_field, |s| checks::srv_name(s)) else {
                    continue;
                };
                (BackendAddress::Srv(name), written, &srv_field)
            }
        };
        if let Some(first) = seen.get(&address) {
            let message = format!("duplicate backend {address}, already listed at {first}");
            cx.bad(written, field, message);
            continue;
        }
        seen.insert(address.clone(), at);
        if let Some(weight) = weight {
            out.push(Backend {
                address,
                weight: u32::try_from(weight).unwrap_or(1),
                backup: file.backup.unwrap_or(false),
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::context::last_segment;

    #[test]
    fn last_segment_strips_index() {
        assert_eq!(last_segment("regions.a.backends[1]"), "backends");
        assert_eq!(last_segment("threads"), "threads");
    }
}

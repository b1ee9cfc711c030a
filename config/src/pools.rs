//! The settings every pool has, in `[regions.NAME]` and in `[services.NAME]` /
//! `[services.NAME.regions.REGION]`: the balancer, the backends, the health check merged
//! key by key over the layers below it, TLS to the backends, the upstream protocol
//! (`upstream`, merged key by key like the health check) and slow start. Each layer
//! inherits what it does not set from the one below (global → region → service → pool).

use std::collections::HashMap;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::file::{BackendFile, HealthCheckFile, UpstreamFile, UpstreamTlsFile, S};
use crate::layer::{setting, Setting};
use crate::model::{Backend, BackendAddress, Balance, HealthCheck, ProbeKind, UpstreamTls};
use crate::upstream::UpLayer;

/// The most backends (entries of `backends`) one pool may list: the proxy keeps member
/// indices in `u16`.
pub(crate) const MAX_BACKENDS: usize = 10_000;

/// The longest health-check `interval` and `timeout`: probe times are computed as
/// `start + n × interval` on `Instant`s, which overflow (a panic) for absurd intervals, and
/// a backend probed less than hourly is not health-checked in any useful sense.
pub(crate) const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);

/// The longest `slow_start` window.
pub(crate) const MAX_SLOW_START: Duration = Duration::from_secs(3600);

/// The `balance` values, in the order they are documented.
const BALANCES: [&str; 5] = [
    "p2c_ewma",
    "round_robin",
    "weighted",
    "least_connections",
    "consistent_hash",
];

/// The pool keys one table writes.
#[derive(Clone, Copy, Default)]
pub(crate) struct PoolKeys<'a> {
    pub balance: Option<&'a S<String>>,
    pub hash_key: Option<&'a S<String>>,
    pub health_check: Option<&'a HealthCheckFile>,
    pub tls: Option<&'a UpstreamTlsFile>,
    pub upstream: Option<&'a UpstreamFile>,
    pub slow_start: Option<&'a S<String>>,
}

/// What a layer hands down to the layers above it.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    pub balance: Balance,
    pub health: Layer,
    pub tls: Option<UpstreamTls>,
    /// Whether TLS to the backends is on (also when its table was invalid, so that the
    /// protocol is not reported against it a second time).
    pub tls_on: bool,
    pub upstream: UpLayer,
    pub slow_start: Option<Duration>,
}

impl PoolSettings {
    /// The defaults under `global`, the `[health_check]` table, and `upstream`, the
    /// `[upstream]` table.
    pub(crate) fn base(global: &Layer, upstream: &UpLayer) -> Self {
        PoolSettings {
            balance: Balance::P2cPeakEwma,
            health: global.clone(),
            tls: None,
            tls_on: false,
            upstream: upstream.clone(),
            slow_start: None,
        }
    }

    /// The settings of a table writing `keys` at `prefix`, over `self`.
    pub(crate) fn layer(
        &self,
        cx: &mut Cx<'_>,
        keys: PoolKeys<'_>,
        key: Option<Range<usize>>,
        prefix: &str,
    ) -> PoolSettings {
        let balance = balance(cx, keys.balance, keys.hash_key, prefix, &self.balance);
        let own = match keys.health_check {
            Some(hc) => Layer::parse(cx, hc, &format!("{prefix}.health_check")),
            None => Layer::unset(),
        };
        let health = own.over(&self.health);
        health.check_timeout(cx, &own);
        let (tls, tls_on) = match keys.tls {
            Some(file) => {
                let tls = crate::tls::upstream_tls(cx, Some(file), key, prefix);
                let on = tls.is_some() || file.enabled != Some(false);
                (tls, on)
            }
            None => (self.tls.clone(), self.tls_on),
        };
        let upstream =
            UpLayer::parse(cx, keys.upstream, &format!("{prefix}.upstream")).over(&self.upstream);
        let slow_start = match keys.slow_start {
            None => self.slow_start,
            Some(v) => cx
                .check(v, &format!("{prefix}.slow_start"), |text| {
                    let d = checks::at_most(checks::duration(text)?, MAX_SLOW_START, "slow_start")?;
                    Ok((!d.is_zero()).then_some(d))
                })
                .unwrap_or(None),
        };
        PoolSettings {
            balance,
            health,
            tls,
            tls_on,
            upstream,
            slow_start,
        }
    }

    /// Checks that the merged protocol fits the merged TLS and health check of `pool`.
    pub(crate) fn check_protocol(&self, cx: &mut Cx<'_>, pool: &crate::upstream::PoolName<'_>) {
        self.upstream
            .check_pool(cx, pool, self.tls_on, self.health.grpc_at());
    }
}

/// The health-check probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Tcp,
    Grpc,
}

/// The health-check settings written in one table.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
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
    pub(crate) fn parse(cx: &mut Cx<'_>, file: &HealthCheckFile, prefix: &str) -> Self {
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

    pub(crate) fn unset() -> Self {
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
    pub(crate) fn over(&self, under: &Layer) -> Layer {
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
    pub(crate) fn check_timeout(&self, cx: &mut Cx<'_>, own: &Layer) {
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

    pub(crate) fn build(&self) -> HealthCheck {
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

/// `balance` and `hash_key` of one layer over the balance it inherits (`under`): a layer
/// that sets neither inherits; one that sets only `hash_key` changes the key of an
/// inherited `consistent_hash`.
pub(crate) fn balance(
    cx: &mut Cx<'_>,
    balance: Option<&S<String>>,
    hash_key: Option<&S<String>>,
    prefix: &str,
    under: &Balance,
) -> Balance {
    let balance_field = format!("{prefix}.balance");
    let hash_field = format!("{prefix}.hash_key");
    if balance.is_none() && hash_key.is_none() {
        return under.clone();
    }
    let chosen = match balance {
        Some(b) => cx.check(b, &balance_field, |b| {
            checks::choice(b, &BALANCES, "balance algorithm")
        }),
        None => Some(under.as_str()),
    };
    let hash_key = hash_key.map(|h| (h, cx.check(h, &hash_field, |h| checks::hash_key(h))));
    match (chosen, hash_key) {
        (Some("consistent_hash"), Some((_, Some(key)))) => Balance::ConsistentHash(key),
        (Some("consistent_hash"), Some((_, None))) => Balance::P2cPeakEwma,
        (Some("consistent_hash"), None) => {
            if let Some(b) = balance {
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

/// A pool's `backends`. `optional`: the key may be left out (a region reached through its
/// instances, whose own instances get their backends from their own configuration; or a
/// region whose pools are all in `[services.*]`).
pub(crate) fn backends(
    cx: &mut Cx<'_>,
    list: Option<&S<Vec<S<BackendFile>>>>,
    key: &Option<Range<usize>>,
    prefix: &str,
    seen: &mut HashMap<BackendAddress, String>,
    optional: bool,
) -> Vec<Backend> {
    let field = format!("{prefix}.backends");
    let list = match list {
        None if optional => return Vec::new(),
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

//! Validation of `[services.*]`: names, routes (`hosts`, `paths`, `default`), each
//! service's pools by region (settings inherited region → service → pool), and the
//! implicit service `default` made of the regions' own backends. Routes must not collide:
//! one (host, path prefix) belongs to one service.

use std::collections::HashMap;
use std::ops::Range;

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::error::suggest;
use crate::file::{FileConfig, PoolFile, ServiceFile};
use crate::model::{HostPattern, HttpsListener, Pool, Service, IMPLICIT_SERVICE};
use crate::pools::{PoolKeys, PoolSettings};
use crate::regions::{relayed, Regions};
use crate::sticky;
use crate::upstream::{PoolName, UpLayer};

/// The most services a file may define (service indices are 16-bit on the request path).
pub(crate) const MAX_SERVICES: usize = 1024;

/// Validates the services; the regions' own backends become the implicit service when
/// there are no `[services.*]` or some region lists backends.
pub(crate) fn services(cx: &mut Cx<'_>, file: &FileConfig, regions: &mut Regions) -> Vec<Service> {
    let entries: &[(String, ServiceFile)] = file.services.as_ref().map_or(&[], |s| &s.0);
    let region_files: Vec<&crate::file::RegionFile> = file
        .regions
        .iter()
        .flat_map(|r| &r.0)
        .map(|(_, r)| r)
        .collect();
    let global_sticky = sticky::layer(cx, file.sticky.as_ref(), "sticky");
    let mut out = Vec::new();
    let wrote_backends = region_files.iter().any(|r| r.backends.is_some());
    if entries.is_empty() || wrote_backends {
        let pools = regions
            .regions
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                entries.is_empty()
                    || region_files
                        .get(*i)
                        .is_some_and(|r| r.backends.is_some() || relayed(r))
            })
            .map(|(i, r)| Pool {
                region: i,
                backends: r.backends.clone(),
                balance: r.balance.clone(),
                health: r.health.clone(),
                tls: r.tls.clone(),
                upstream: r.upstream,
                slow_start: r.slow_start,
            })
            .collect();
        out.push(Service {
            name: IMPLICIT_SERVICE.to_owned(),
            hosts: Vec::new(),
            paths: vec!["/".to_owned()],
            default: false,
            implicit: true,
            pools,
            sticky: sticky::build(&global_sticky, None, IMPLICIT_SERVICE),
        });
    }
    if let Some((name, _)) = entries.get(MAX_SERVICES) {
        let key = cx.keys.services.get(MAX_SERVICES).map(|k| k.name.clone());
        let message = format!(
            "too many services: {} are defined, at most {MAX_SERVICES} are supported",
            entries.len()
        );
        cx.report(key.as_ref(), &format!("services.{name}"), None, message);
    }
    let names: Vec<String> = regions.regions.iter().map(|r| r.name.clone()).collect();
    for (i, (name, service)) in entries.iter().enumerate() {
        let spans = cx.keys.services.get(i).cloned().unwrap_or_default();
        let key = (!spans.name.is_empty()).then_some(spans.name.clone());
        let prefix = format!("services.{name}");
        if let Err(problem) = checks::name(name, "service") {
            cx.report(key.as_ref(), &prefix, None, problem);
        }
        if name == IMPLICIT_SERVICE && wrote_backends {
            cx.report(
                key.as_ref(),
                &prefix,
                None,
                Problem::hinted(
                    "the service `default` is the regions' own backends (the regions list backends)",
                    "give this service another name, or move the regions' backends into it",
                ),
            );
        }
        let local_sticky = sticky::layer(cx, service.sticky.as_ref(), &format!("{prefix}.sticky"));
        let ctx = ServiceCx {
            service: name,
            names: &names,
            region_files: &region_files,
            region_spans: &spans.regions,
        };
        let pools = pools(cx, &ctx, service, key.clone(), &prefix, regions);
        let hosts = hosts(cx, service, &prefix);
        let paths = paths(cx, service, &prefix);
        out.push(Service {
            name: name.clone(),
            hosts,
            paths,
            default: service.default.as_ref().is_some_and(|d| *d.get_ref()),
            implicit: false,
            pools,
            sticky: sticky::build(&global_sticky, Some(&local_sticky), name),
        });
    }
    check_routes(cx, file, &out);
    out
}

/// What a service's pools are checked against.
struct ServiceCx<'a> {
    service: &'a str,
    names: &'a [String],
    region_files: &'a [&'a crate::file::RegionFile],
    region_spans: &'a [Range<usize>],
}

fn keys_of_service(s: &ServiceFile) -> PoolKeys<'_> {
    PoolKeys {
        balance: s.balance.as_ref(),
        hash_key: s.hash_key.as_ref(),
        health_check: s.health_check.as_ref(),
        tls: s.tls.as_ref(),
        upstream: s.upstream.as_ref(),
        slow_start: s.slow_start.as_ref(),
    }
}

fn keys_of_pool(p: &PoolFile) -> PoolKeys<'_> {
    PoolKeys {
        balance: p.balance.as_ref(),
        hash_key: p.hash_key.as_ref(),
        health_check: p.health_check.as_ref(),
        tls: p.tls.as_ref(),
        upstream: p.upstream.as_ref(),
        slow_start: p.slow_start.as_ref(),
    }
}

/// A service's pools: its own keys over each region's, the pool's own over both.
fn pools(
    cx: &mut Cx<'_>,
    scx: &ServiceCx<'_>,
    service: &ServiceFile,
    key: Option<Range<usize>>,
    prefix: &str,
    regions: &mut Regions,
) -> Vec<Pool> {
    // The service's own keys are checked once, over the defaults (errors reported here);
    // over each region's settings below they are merged quietly.
    let base =
        regions.settings.first().cloned().unwrap_or_else(|| {
            PoolSettings::base(&crate::pools::Layer::unset(), &UpLayer::unset())
        });
    let _ = base.layer(cx, keys_of_service(service), key.clone(), prefix);
    let field = format!("{prefix}.regions");
    let entries = match &service.regions {
        Some(e) if !e.0.is_empty() => &e.0,
        _ => {
            cx.report(
                key.as_ref(),
                &field,
                None,
                Problem::hinted(
                    "a service needs a pool in at least one region",
                    format!(
                        "add [{prefix}.regions.{}] with backends",
                        scx.names.first().map_or("REGION", String::as_str)
                    ),
                ),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<Pool> = Vec::new();
    for (j, (region, pool)) in entries.iter().enumerate() {
        let span = scx.region_spans.get(j).cloned();
        let at = format!("{field}.{region}");
        let Some(ri) = scx.names.iter().position(|n| n == region) else {
            let problem = Problem {
                message: format!("unknown region \"{region}\""),
                hint: suggest(
                    region,
                    scx.names.iter().map(String::as_str),
                    "defined regions",
                ),
            };
            cx.report(span.as_ref(), &at, None, problem);
            continue;
        };
        let quiet = cx.errors.len();
        let over = regions.settings[ri].layer(cx, keys_of_service(service), key.clone(), prefix);
        cx.errors.truncate(quiet);
        let settings = over.layer(cx, keys_of_pool(pool), span.clone(), &at);
        settings.check_protocol(
            cx,
            &PoolName {
                service: Some(scx.service),
                region,
            },
        );
        let optional = scx.region_files.get(ri).is_some_and(|r| relayed(r));
        let backends = crate::pools::backends(
            cx,
            pool.backends.as_ref(),
            &span,
            &at,
            &mut regions.seen,
            optional,
        );
        out.push(Pool {
            region: ri,
            backends,
            balance: settings.balance,
            health: settings.health.build(),
            upstream: settings.upstream.build(),
            tls: settings.tls,
            slow_start: settings.slow_start,
        });
    }
    out.sort_by_key(|p| p.region);
    out
}

/// `hosts`: exact names and `*.` wildcards, lower-case, no duplicates.
fn hosts(cx: &mut Cx<'_>, service: &ServiceFile, prefix: &str) -> Vec<HostPattern> {
    let Some(list) = &service.hosts else {
        return Vec::new();
    };
    let field = format!("{prefix}.hosts");
    if list.get_ref().is_empty() {
        cx.bad(
            list,
            &field,
            Problem::hinted(
                "hosts is empty: the service would match no request",
                "leave hosts out to match any host name",
            ),
        );
    }
    let mut out: Vec<HostPattern> = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(name) = cx.check(entry, &at, |h| {
            let h = h.strip_suffix('.').unwrap_or(h);
            checks::server_name(h)
        }) else {
            continue;
        };
        let pattern = match name.strip_prefix("*.") {
            Some(suffix) => HostPattern::Wildcard(suffix.to_owned()),
            None => HostPattern::Exact(name),
        };
        if out.contains(&pattern) {
            cx.bad(entry, &at, format!("duplicate host {pattern}"));
            continue;
        }
        out.push(pattern);
    }
    out
}

/// `paths`: prefixes starting with `/`; `["/"]` when left out.
fn paths(cx: &mut Cx<'_>, service: &ServiceFile, prefix: &str) -> Vec<String> {
    let Some(list) = &service.paths else {
        return vec!["/".to_owned()];
    };
    let field = format!("{prefix}.paths");
    if list.get_ref().is_empty() {
        cx.bad(
            list,
            &field,
            Problem::hinted(
                "paths is empty: the service would match no request",
                "leave paths out to match every path",
            ),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(path) = cx.check(entry, &at, |p| route_path(p)) else {
            continue;
        };
        if out.contains(&path) {
            cx.bad(entry, &at, format!("duplicate path {path}"));
            continue;
        }
        out.push(path);
    }
    out
}

/// A route's path prefix: `/`, then no spaces, control characters, `?` or `#`.
fn route_path(text: &str) -> Result<String, Problem> {
    let hint = "a path prefix such as \"/api\" (it matches /api, /api/… and not /apix)";
    if !text.starts_with('/') {
        return Err(Problem::hinted(
            format!("path \"{text}\" does not start with /"),
            hint,
        ));
    }
    if text.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Err(Problem::hinted(
            format!("path \"{text}\" has spaces, control characters, ? or #"),
            hint,
        ));
    }
    if text.len() > 1024 {
        return Err("path prefixes are at most 1024 characters".into());
    }
    Ok(text.to_owned())
}

/// Every service's `certificates`, added to every HTTPS listener after the listener's own
/// (which win for a name both claim); never the default. An error without an HTTPS
/// listener.
pub(crate) fn certificates(cx: &mut Cx<'_>, file: &FileConfig, https: &mut [HttpsListener]) {
    for (name, service) in file.services.iter().flat_map(|s| &s.0) {
        let Some(list) = &service.certificates else {
            continue;
        };
        let field = format!("services.{name}.certificates");
        if https.is_empty() {
            cx.bad(
                list,
                &field,
                Problem::hinted(
                    "a service's certificates are served by the HTTPS listeners, and there is none",
                    "add a [[listeners.https]] table, or remove these certificates",
                ),
            );
            continue;
        }
        for (i, entry) in list.get_ref().iter().enumerate() {
            let at = format!("{field}[{i}]");
            if let Some(d) = entry.get_ref().default.as_ref().filter(|d| *d.get_ref()) {
                cx.bad(
                    d,
                    &format!("{at}.default"),
                    Problem::hinted(
                        "a service's certificate is never a listener's default",
                        "mark a certificate of [[listeners.https]] as the default",
                    ),
                );
                continue;
            }
            let Some(mut cert) = crate::tls::server_certificate(cx, entry, &at) else {
                continue;
            };
            cert.default = false;
            for listener in https.iter_mut() {
                listener.certificates.push(cert.clone());
            }
        }
    }
}

/// One (host, path) belongs to one service; at most one service is the default, and only
/// if no route already takes every request.
fn check_routes(cx: &mut Cx<'_>, file: &FileConfig, services: &[Service]) {
    let files: HashMap<&str, &ServiceFile> = file
        .services
        .iter()
        .flat_map(|s| &s.0)
        .map(|(n, s)| (n.as_str(), s))
        .collect();
    let mut owner: HashMap<(Option<&HostPattern>, &str), &str> = HashMap::new();
    for s in services {
        let hosts: Vec<Option<&HostPattern>> = if s.hosts.is_empty() {
            vec![None]
        } else {
            s.hosts.iter().map(Some).collect()
        };
        for host in hosts {
            for path in &s.paths {
                let Some(first) = owner.insert((host, path), &s.name) else {
                    continue;
                };
                let shown = host.map_or_else(|| "any host".to_owned(), |h| h.to_string());
                let message = format!(
                    "route {shown} {path} is already service `{first}`'s; a route belongs to one service"
                );
                let at = files.get(s.name.as_str()).and_then(|f| {
                    match host {
                        Some(_) => f.hosts.as_ref().map(|h| (h.span(), "hosts")),
                        None => f.paths.as_ref().map(|p| (p.span(), "paths")),
                    }
                    .or_else(|| f.paths.as_ref().map(|p| (p.span(), "paths")))
                });
                report_at(cx, at, &s.name, message);
            }
        }
    }
    let catch_all = owner.get(&(None, "/")).copied();
    let mut default: Option<&str> = None;
    for s in services.iter().filter(|s| s.default) {
        let Some(flag) = files.get(s.name.as_str()).and_then(|f| f.default.as_ref()) else {
            continue;
        };
        let field = format!("services.{}.default", s.name);
        if let Some(first) = default {
            cx.bad(
                flag,
                &field,
                format!("service `{first}` is the default already; there can be one"),
            );
        } else if let Some(all) = catch_all.filter(|a| *a != s.name) {
            cx.bad(
                flag,
                &field,
                Problem::hinted(
                    format!("service `{all}` routes every request (any host, path /): this default would never be used"),
                    format!("give service `{all}` hosts or paths, or drop default = true"),
                ),
            );
        }
        default.get_or_insert(&s.name);
    }
}

fn report_at(cx: &mut Cx<'_>, at: Option<(Range<usize>, &str)>, service: &str, message: String) {
    match at {
        Some((span, key)) => {
            let written = cx.written(&span);
            cx.report(
                Some(&span),
                &format!("services.{service}.{key}"),
                written,
                message,
            );
        }
        None => {
            let field = format!("services.{service}");
            cx.report(None, &field, None, message);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

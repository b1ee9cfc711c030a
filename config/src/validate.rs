//! File structures → [`Config`], collecting every semantic error.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::{Cx, Min};
use crate::file::{self, FileConfig, S};
use crate::model::{
    Config, Dns, Latency, Listeners, LogFormat, Logging, Node, Outlier, Reload, Retry,
};
use crate::{limits, regions, routing, services, tls};

/// The longest ejection (`outlier.base_ejection`, `outlier.max_ejection`). The proxy keeps
/// ejection deadlines as 32-bit millisecond stamps and reads their differences as signed,
/// so an ejection past about 24 days would silently end at once; an hour is well inside
/// that and longer than any useful ejection.
pub(crate) const MAX_EJECTION: Duration = Duration::from_secs(3600);

/// The longest DNS TTL bounds (`dns.min_ttl`, `dns.max_ttl`): the next resolution of a name
/// is scheduled at `now + ttl`, and a far-future instant overflows (a panic).
pub(crate) const MAX_DNS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest `dns.timeout`: a query that takes longer holds up its name's refresh (and,
/// on the first round, readiness).
pub(crate) const MAX_DNS_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `latency.decay`: sample ages are 32-bit millisecond stamps (they wrap after
/// about 49 days), and with a longer window one slow response would weigh on a backend's
/// estimate for hours.
pub(crate) const MAX_DECAY: Duration = Duration::from_secs(3600);

/// Validates the deserialized file; `None` if any error was recorded in `cx`.
pub(crate) fn validate(
    file: &FileConfig,
    cx: &mut Cx<'_>,
    base_dir: Option<&Path>,
) -> Option<Config> {
    let has_services = file.services.as_ref().is_some_and(|s| !s.0.is_empty());
    let mut validated = regions::regions(cx, file, has_services);
    let services = services::services(cx, file, &mut validated);
    let regions = validated.regions;
    let names: Vec<String> = match &file.regions {
        Some(entries) => entries.0.iter().map(|(name, _)| name.clone()).collect(),
        None => Vec::new(),
    };
    let by_name = crate::mesh::unique_names(cx, file, &regions);
    let node = node(cx, &file.node, &names, &by_name, &regions);
    let mut listeners = listeners(cx, &file.listeners);
    services::certificates(cx, file, &mut listeners.https);
    let threads = threads(cx, file.threads.as_ref());
    let timeouts = limits::timeouts(cx, &file.timeouts);
    let logging = logging(cx, &file.logging);
    let geoip = routing::geoip(cx, &file.geoip, base_dir);
    let client = routing::client(cx, &file.client);
    proxy_protocol_needs_trust(cx, file);
    let steering = routing::steering(cx, &file.steering, &file.residency, &names);
    let latency = latency(cx, &file.latency);
    let outlier = outlier(cx, &file.outlier);
    let retry = retry(cx, &file.retry);
    let reload = reload(cx, &file.reload);
    let dns = dns(cx, &file.dns);
    let limits = limits::limits(cx, &file.limits);
    let mesh = crate::mesh::mesh(cx, &file.mesh, by_name.len());
    let public_addresses = regions
        .iter()
        .flat_map(|r| &r.instances)
        .map(|i| i.public.len())
        .sum();
    let geodns = crate::geodns::geodns(cx, &file.geodns, public_addresses);
    let admin = limits::admin(
        cx,
        &file.admin,
        file.listeners.admin.as_ref(),
        Some(listeners.admin),
    );
    if !cx.errors.is_empty() {
        return None;
    }
    Some(Config {
        source: None,
        node,
        listeners,
        threads,
        timeouts,
        logging,
        regions,
        geoip,
        client,
        steering,
        latency,
        outlier,
        retry,
        reload,
        dns,
        limits,
        admin,
        mesh,
        geodns,
        services,
    })
}

fn dns(cx: &mut Cx<'_>, file: &file::DnsFile) -> Dns {
    let mut nameservers = Vec::new();
    if let Some(list) = &file.nameservers {
        for (i, entry) in list.get_ref().iter().enumerate() {
            let field = format!("dns.nameservers[{i}]");
            let parsed = cx.check(entry, &field, |text| {
                // A bare IP means port 53.
                match text.parse::<std::net::IpAddr>() {
                    Ok(ip) => Ok(SocketAddr::new(ip, 53)),
                    Err(_) => checks::socket_addr(text),
                }
            });
            if let Some(addr) = parsed {
                if nameservers.contains(&addr) {
                    cx.bad(entry, &field, format!("duplicate name server {addr}"));
                } else {
                    nameservers.push(addr);
                }
            }
        }
    }
    let min_default = Duration::from_secs(5);
    let max_default = Duration::from_secs(300);
    let min = cx.duration_within(
        file.min_ttl.as_ref(),
        "dns.min_ttl",
        min_default,
        Min::AtLeast(Duration::from_millis(100)),
        MAX_DNS_TTL,
    );
    let max = cx.duration_within(
        file.max_ttl.as_ref(),
        "dns.max_ttl",
        max_default,
        Min::Positive,
        MAX_DNS_TTL,
    );
    if let (Some(min), Some(max)) = (min, max) {
        if max < min {
            let message = format!(
                "max_ttl ({}) must not be shorter than min_ttl ({})",
                checks::show(max),
                checks::show(min)
            );
            if let Some(value) = file.max_ttl.as_ref().or(file.min_ttl.as_ref()) {
                let field = if file.max_ttl.is_some() {
                    "dns.max_ttl"
                } else {
                    "dns.min_ttl"
                };
                cx.bad(value, field, message);
            }
        }
    }
    let timeout_default = Duration::from_secs(2);
    let timeout = cx
        .duration_within(
            file.timeout.as_ref(),
            "dns.timeout",
            timeout_default,
            Min::Positive,
            MAX_DNS_TIMEOUT,
        )
        .unwrap_or(timeout_default);
    Dns {
        nameservers,
        min_ttl: min.unwrap_or(min_default),
        max_ttl: max.unwrap_or(max_default),
        timeout,
        allow_loopback: file.allow_loopback.unwrap_or(false),
    }
}

fn node(
    cx: &mut Cx<'_>,
    node: &file::NodeFile,
    names: &[String],
    instances: &std::collections::HashMap<String, usize>,
    regions: &[crate::model::Region],
) -> Node {
    let name = node
        .name
        .as_ref()
        .and_then(|name| cx.check(name, "node.name", |n| checks::visible_token(n, "node name")));
    // With instances listed, node.name says which one this process is, and its region
    // follows (node.region may then be left out).
    let own_region = name
        .as_ref()
        .and_then(|n| instances.get(n))
        .and_then(|&i| regions.get(i))
        .map(|r| r.name.clone());
    if !instances.is_empty() && own_region.is_none() {
        let mut list: Vec<&String> = instances.keys().collect();
        list.sort();
        let hint =
            format!(
            "set node.name (or run with --node NAME, or MERIDIAN_NODE) to one of the instances: {}",
            list.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        );
        match &node.name {
            Some(n) => cx.bad(
                n,
                "node.name",
                Problem::hinted(
                    format!("\"{}\" is not one of the instances", n.get_ref()),
                    hint,
                ),
            ),
            None => {
                let span = cx.top_key("node");
                cx.missing(span, "node.name", Some(hint));
            }
        }
    }
    let region = match (&node.region, own_region) {
        (Some(region), own) => {
            cx.region_ref(names, region, "node.region");
            if let Some(own) = own.filter(|o| o != region.get_ref()) {
                cx.bad(
                    region,
                    "node.region",
                    format!(
                        "node.region is \"{}\" but instance \"{}\" is listed in region \"{own}\"",
                        region.get_ref(),
                        name.as_deref().unwrap_or("")
                    ),
                );
            }
            region.get_ref().clone()
        }
        (None, Some(own)) => own,
        (None, None) => {
            let hint = if names.is_empty() {
                "set it to the region this instance runs in".to_owned()
            } else {
                let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                format!("set it to one of the regions: {}", list.join(", "))
            };
            let span = cx.top_key("node");
            cx.missing(span, "node.region", Some(hint));
            String::new()
        }
    };
    let name = name.unwrap_or_else(|| format!("meridian-{region}"));
    Node { region, name }
}

/// A listener with the PROXY protocol honours the header from `client.trusted_proxies`
/// only and closes every other connection: with none trusted, it would close them all.
fn proxy_protocol_needs_trust(cx: &mut Cx<'_>, file: &FileConfig) {
    if !file.client.trusted_proxies.is_empty() {
        return;
    }
    let problem = || {
        Problem::hinted(
            "the PROXY protocol is honoured only from client.trusted_proxies, which is empty: every connection would be closed",
            "add the load balancer's addresses to client.trusted_proxies",
        )
    };
    let listeners = &file.listeners;
    if let Some(pp) = listeners.proxy_protocol.as_ref().filter(|p| *p.get_ref()) {
        cx.bad(pp, "listeners.proxy_protocol", problem());
    }
    let https = listeners.https.as_ref().map(|l| l.get_ref().as_slice());
    for (i, entry) in https.unwrap_or_default().iter().enumerate() {
        if let Some(pp) = entry
            .get_ref()
            .proxy_protocol
            .as_ref()
            .filter(|p| *p.get_ref())
        {
            cx.bad(
                pp,
                &format!("listeners.https[{i}].proxy_protocol"),
                problem(),
            );
        }
    }
}

fn listeners(cx: &mut Cx<'_>, file: &file::ListenersFile) -> Listeners {
    let mut http: Vec<SocketAddr> = Vec::new();
    let https_given = file
        .https
        .as_ref()
        .is_some_and(|list| !list.get_ref().is_empty());
    match &file.http {
        None => http.push(SocketAddr::from(([0, 0, 0, 0], 8080))),
        Some(list) if list.get_ref().is_empty() && https_given => {}
        Some(list) if list.get_ref().is_empty() => {
            cx.bad(
                list,
                "listeners.http",
                Problem::hinted(
                    "at least one HTTP or HTTPS listener is required",
                    "add an address, or a [[listeners.https]] table",
                ),
            );
        }
        Some(list) => {
            for (i, entry) in list.get_ref().iter().enumerate() {
                let field = format!("listeners.http[{i}]");
                let Some(addr) = cx.check(entry, &field, |a| checks::socket_addr(a)) else {
                    continue;
                };
                if http.contains(&addr) {
                    cx.bad(entry, &field, format!("duplicate listener {addr}"));
                } else {
                    http.push(addr);
                }
            }
        }
    }
    let admin = match &file.admin {
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        Some(admin) => {
            let addr = cx.check(admin, "listeners.admin", |a| checks::socket_addr(a));
            match addr {
                Some(addr) if http.contains(&addr) => {
                    cx.bad(
                        admin,
                        "listeners.admin",
                        format!("admin listener {addr} is also an HTTP listener"),
                    );
                    addr
                }
                Some(addr) => addr,
                None => SocketAddr::from(([127, 0, 0, 1], 9901)),
            }
        }
    };
    let mut taken = http.clone();
    let https = tls::https_listeners(cx, file.https.as_ref(), &mut taken);
    let redirect_http = tls::redirect_listeners(
        cx,
        file.redirect_http.as_ref(),
        !https.is_empty(),
        &mut taken,
    );
    let hsts = tls::hsts(cx, file.hsts.as_ref(), !https.is_empty());
    if taken.contains(&admin) && !http.contains(&admin) {
        if let Some(a) = &file.admin {
            cx.bad(
                a,
                "listeners.admin",
                format!("admin listener {admin} is also a proxy listener"),
            );
        }
    }
    Listeners {
        http,
        admin,
        proxy_protocol: file.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()),
        https,
        redirect_http,
        hsts,
        preserve_header_case: file
            .preserve_header_case
            .as_ref()
            .is_some_and(|p| *p.get_ref()),
    }
}

fn threads(cx: &mut Cx<'_>, value: Option<&S<i64>>) -> usize {
    let default = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(1024);
    let default = i64::try_from(default).unwrap_or(1);
    let threads = cx.int(value, "threads", default, 1..=1024).unwrap_or(1);
    usize::try_from(threads).unwrap_or(1)
}

fn logging(cx: &mut Cx<'_>, file: &file::LoggingFile) -> Logging {
    let level = match &file.level {
        Some(level) => cx
            .check(level, "logging.level", |l| checks::log_level(l))
            .unwrap_or_default(),
        None => "info".to_owned(),
    };
    let format = match &file.format {
        Some(format) => {
            match cx.check(format, "logging.format", |f| {
                checks::choice(f, &["text", "json"], "log format")
            }) {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Text,
            }
        }
        None => LogFormat::Text,
    };
    Logging {
        level,
        format,
        access_log: file.access_log.unwrap_or(true),
    }
}

fn latency(cx: &mut Cx<'_>, file: &file::LatencyFile) -> Latency {
    let decay_default = Duration::from_secs(10);
    let decay = cx
        .duration_within(
            file.decay.as_ref(),
            "latency.decay",
            decay_default,
            Min::Positive,
            MAX_DECAY,
        )
        .unwrap_or(decay_default);
    let mut d = |value: &Option<S<String>>, field: &str, default: Duration, min: Min| {
        cx.duration(value.as_ref(), field, default, min)
            .unwrap_or(default)
    };
    Latency {
        decay,
        tolerance: d(
            &file.tolerance,
            "latency.tolerance",
            Duration::from_millis(20),
            Min::Positive,
        ),
        rtt_per_100km: d(
            &file.rtt_per_100km,
            "latency.rtt_per_100km",
            Duration::from_millis(1),
            Min::Positive,
        ),
        rtt_base: d(
            &file.rtt_base,
            "latency.rtt_base",
            Duration::from_millis(2),
            Min::Zero,
        ),
    }
}

fn outlier(cx: &mut Cx<'_>, file: &file::OutlierFile) -> Outlier {
    let consecutive_failures = cx
        .int(
            file.consecutive_failures.as_ref(),
            "outlier.consecutive_failures",
            5,
            1..=1000,
        )
        .unwrap_or(5);
    let base_default = Duration::from_secs(10);
    let max_default = Duration::from_secs(300);
    let base = cx.duration_within(
        file.base_ejection.as_ref(),
        "outlier.base_ejection",
        base_default,
        Min::Positive,
        MAX_EJECTION,
    );
    let max = cx.duration_within(
        file.max_ejection.as_ref(),
        "outlier.max_ejection",
        max_default,
        Min::Positive,
        MAX_EJECTION,
    );
    if let (Some(base), Some(max)) = (base, max) {
        if max < base {
            let message = format!(
                "max_ejection ({}) must not be shorter than base_ejection ({})",
                checks::show(max),
                checks::show(base)
            );
            if let Some(value) = &file.max_ejection {
                cx.bad(value, "outlier.max_ejection", message);
            } else if let Some(value) = &file.base_ejection {
                cx.bad(value, "outlier.base_ejection", message);
            }
        }
    }
    let panic_threshold = file.panic_threshold.as_ref().and_then(|value| {
        let v = cx.int(Some(value), "outlier.panic_threshold", 0, 1..=100)?;
        u8::try_from(v).ok()
    });
    Outlier {
        consecutive_failures: u32::try_from(consecutive_failures).unwrap_or(5),
        base_ejection: base.unwrap_or(base_default),
        max_ejection: max.unwrap_or(max_default),
        panic_threshold,
        max_ejection_percent: cx
            .int(
                file.max_ejection_percent.as_ref(),
                "outlier.max_ejection_percent",
                100,
                0..=100,
            )
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or(100),
    }
}

fn retry(cx: &mut Cx<'_>, file: &file::RetryFile) -> Retry {
    let attempts = cx
        .int(file.attempts.as_ref(), "retry.attempts", 2, 0..=10)
        .unwrap_or(2);
    let default = Duration::from_secs(5);
    let retry_after = cx
        .duration(
            file.retry_after.as_ref(),
            "retry.retry_after",
            default,
            Min::AtLeast(Duration::from_secs(1)),
        )
        .unwrap_or(default);
    let budget_percent = cx
        .int(
            file.budget_percent.as_ref(),
            "retry.budget_percent",
            20,
            0..=100,
        )
        .unwrap_or(20);
    let min_per_second = cx
        .int(
            file.min_per_second.as_ref(),
            "retry.min_per_second",
            10,
            0..=100_000,
        )
        .unwrap_or(10);
    Retry {
        attempts: u32::try_from(attempts).unwrap_or(2),
        retry_after,
        budget_percent: u32::try_from(budget_percent).unwrap_or(20),
        min_per_second: u32::try_from(min_per_second).unwrap_or(10),
        grpc_on: crate::upstream::grpc_on(cx, file),
        grpc_idempotent: crate::upstream::grpc_idempotent(cx, file),
    }
}

fn reload(cx: &mut Cx<'_>, file: &file::ReloadFile) -> Reload {
    let default = Duration::from_millis(500);
    let debounce = cx
        .duration(
            file.debounce.as_ref(),
            "reload.debounce",
            default,
            Min::Positive,
        )
        .unwrap_or(default);
    Reload {
        watch: file.watch.unwrap_or(true),
        debounce,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

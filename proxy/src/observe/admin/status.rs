//! The `/status` document: the node, the snapshot in use, the GeoIP database, the latest
//! reloads, every region with its backends' live state (every service's, with the
//! operator's state) and its requests by client continent, every service with its routes,
//! requests and pools, the runtime settings, and the backend DNS names.

use std::time::{SystemTime, UNIX_EPOCH};

use meridian_routing::admin::RuntimeSettings;
use meridian_routing::metrics::{CONTINENT_LABELS, STATUS_CLASSES};
use meridian_routing::selection::Member;
use meridian_routing::{RegionPool, ServicePools, Snapshot};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::control::discovery::DnsState;
use crate::control::reload::reloader::ReloadRecord;
use crate::control::reload::Reloader;

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `/status` document.
pub fn status(reloader: &Reloader, dns: &DnsState) -> Value {
    let inst = reloader.instance();
    let active = inst.active();
    let snap = &active.routing;
    let cfg = &snap.config;
    let now = Instant::now();
    let tau = cfg.latency.decay;
    let ranking = snap.plan(0, None);
    let info = snap.locator.info();
    let runtime = inst.runtime.get();
    let backend = |r: &RegionPool, m: &Member| {
        let s = &m.state;
        let last = s.last_probe();
        json!({
            "id": &*s.id,
            "service": &*r.service,
            "address": s.addr.to_string(),
            "host": &*s.host,
            "weight": m.weight,
            "tier": m.tier,
            "health": s.health.get().as_str(),
            "usable": s.usable(now),
            "state": s.admin().as_str(),
            "slow_start_share": s.slow_start_share(now, r.slow_start_ms),
            "mesh_verdict": s.remote(),
            "ejected": s.outlier.is_ejected(now),
            "ejection_streak": s.outlier.streak(),
            "inflight": s.latency.inflight(),
            "probes": s.probes(),
            "probe_rtt_ms": s.latency.probe.value().map(|d| d.as_secs_f64() * 1e3),
            "latency_estimate_ms": f64::from(s.latency.estimate_us(now, tau)) / 1e3,
            "last_probe": last.map(|p| json!({
                "at": unix(p.at),
                "rtt_ms": p.rtt.as_secs_f64() * 1e3,
                "ok": p.error.is_none(),
                "error": p.error,
            })),
        })
    };
    let regions: Vec<Value> = cfg
        .regions
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let pools: Vec<&RegionPool> = snap
                .pools()
                .filter(|(_, ri, _)| *ri == i)
                .map(|(_, _, p)| p)
                .collect();
            let backends: Vec<Value> = pools
                .iter()
                .flat_map(|r| r.members.iter().map(|m| backend(r, m)))
                .collect();
            let total: usize = pools.iter().map(|r| r.members.len()).sum();
            let usable: usize = pools
                .iter()
                .flat_map(|r| &r.members)
                .filter(|m| m.state.usable(now))
                .count();
            let first = pools.first();
            let by_continent: Map<String, Value> = match first {
                Some(r) => CONTINENT_LABELS
                    .iter()
                    .zip(&r.state.metrics.by_continent)
                    .map(|(c, n)| (c.to_string(), Value::from(n.get())))
                    .collect(),
                None => Map::new(),
            };
            let first_pool = first.and_then(|r| cfg.service(&r.service)?.pool(i));
            let relay = first.is_some_and(|r| r.relay);
            let remote = first.is_some_and(|r| r.state.remote_latency().is_some());
            json!({
                "name": &region.name,
                "local": i == snap.local,
                "latitude": region.latitude,
                "longitude": region.longitude,
                "services": pools.iter().map(|r| &*r.service).collect::<Vec<_>>(),
                "balance": first_pool.map_or(region.balance.as_str(), |p| p.balance.as_str()),
                "reach": region.reach.as_str(),
                "protocol": first_pool.map_or(region.upstream.protocol, |p| p.upstream.protocol).as_str(),
                "health_source": if i == snap.local {
                    "probes"
                } else if relay {
                    "mesh (relay)"
                } else if remote {
                    "mesh"
                } else {
                    "probes"
                },
                "health": if usable == 0 { "down" } else if usable < total { "degraded" } else { "up" },
                "usable_backends": usable,
                "active_tier": first.and_then(|r| match r.state.active_tier() { u8::MAX => None, t => Some(t) }),
                "measured_latency_ms": first.map_or(0.0, |r| f64::from(r.state.measured_us()) / 1e3),
                "rank": ranking.regions.iter().position(|&x| usize::from(x) == i),
                "by_continent": by_continent,
                "backends": backends,
            })
        })
        .collect();
    let services: Vec<Value> = snap
        .services
        .iter()
        .enumerate()
        .map(|(si, sp)| without_nulls(service(snap, si, sp, &runtime, now)))
        .collect();
    let last_reload = reloader.last();
    json!({
        "node": { "name": cfg.node.name, "region": cfg.node.region },
        "version": env!("CARGO_PKG_VERSION"),
        "ready": inst.is_ready(),
        "generation": snap.generation,
        "config_file": reloader.config_path().map(|p| p.display().to_string()),
        "started_at": unix(inst.started_at),
        "snapshot_built_at": unix(snap.built_at),
        "geoip": {
            "database": info.path.as_ref().map_or_else(|| "built-in".to_string(), |p| p.display().to_string()),
            "type": info.database_type,
            "build_epoch": info.build_epoch,
            "attribution": info.attribution,
        },
        "last_reload": last_reload.as_ref().map(reload),
        "reloads": reloader.history().iter().map(reload).collect::<Vec<_>>(),
        "regions": regions,
        "services": services,
        "runtime": without_nulls(json!({
            "state_file": cfg.admin.state_file.as_ref().map(|p| p.display().to_string()),
            "pools": runtime.pools.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<Map<String, Value>>(),
        })),
        "dns": dns_names(dns),
        "mesh": mesh(inst, &snap.config),
        "geodns": geodns(inst),
    })
}

/// The `geodns` part of `/status` (`null` when off): the serial, the geo-steered names,
/// where each continent's clients are answered from now, and each region's addresses.
fn geodns(inst: &crate::control::instance::Instance) -> Value {
    let Some(answerer) = inst.geodns.get() else {
        return Value::Null;
    };
    let state = answerer.state();
    let cfg = &state.snapshot().config.geodns;
    let by_continent = |service: usize| -> serde_json::Map<String, Value> {
        meridian_dns::status::by_continent(&state, service)
            .into_iter()
            .map(|(c, r)| (c.to_string(), r.map_or(Value::Null, Value::from)))
            .collect()
    };
    let regions: Vec<Value> = state
        .health
        .regions
        .iter()
        .map(|r| {
            let show = |v: &[std::net::Ipv4Addr], w: &[std::net::Ipv6Addr]| {
                v.iter()
                    .map(ToString::to_string)
                    .chain(w.iter().map(ToString::to_string))
                    .collect::<Vec<_>>()
            };
            json!({
                "name": &*r.name,
                "answerable": r.answerable(),
                "answered": show(&r.v4.up, &r.v6.up),
                "addresses": show(&r.v4.all, &r.v6.all),
            })
        })
        .collect();
    json!({
        "listen": cfg.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ready": answerer.is_ready(),
        "serial": state.serial,
        "ttl_s": cfg.ttl.as_secs(),
        "zones": cfg.zones.iter().map(|z| json!({
            "name": z.name,
            "names": z.names,
        })).collect::<Vec<_>>(),
        // Per name: the service it follows and where each continent is answered from.
        "names": state.zones.iter().flat_map(|z| &z.geo_names).map(|(n, s)| json!({
            "name": n,
            "service": state.snapshot().services.get(usize::from(*s)).map(|s| &*s.name),
            "by_continent": by_continent(usize::from(*s)),
        })).collect::<Vec<_>>(),
        "by_continent": by_continent(0),
        "regions": regions,
    })
}

/// `v` without its `null` fields, at any depth (the status page shows what is there).
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// One service in `/status`: its routes, sticky cookie, requests by status class and its
/// pools by region.
fn service(
    snap: &Snapshot,
    si: usize,
    sp: &ServicePools,
    runtime: &RuntimeSettings,
    now: Instant,
) -> Value {
    let cfg = &snap.config;
    let Some(s) = cfg.services.get(si) else {
        return Value::Null;
    };
    let requests: Map<String, Value> = STATUS_CLASSES
        .iter()
        .zip(&sp.metrics.requests)
        .map(|(c, n)| (c.to_string(), Value::from(n.get())))
        .collect();
    let ranking = snap.plan(si, None);
    let pools: Vec<Value> = sp
        .regions
        .iter()
        .enumerate()
        .filter_map(|(ri, p)| Some((ri, p.as_ref()?)))
        .map(|(ri, p)| {
            let usable = p.members.iter().filter(|m| m.state.usable(now)).count();
            let total = p.members.len();
            json!({
                "region": &*p.name,
                "balance": s.pool(ri).map(|c| c.balance.as_str()),
                "slow_start_s": s.pool(ri).and_then(|c| c.slow_start).map(|d| d.as_secs_f64()),
                "state": runtime.pools.get(&*p.key).copied().unwrap_or_default().as_str(),
                "health": if usable == 0 { "down" } else if usable < total { "degraded" } else { "up" },
                "usable_backends": usable,
                "backends": total,
                "inflight": p.members.iter().map(|m| u64::from(m.state.latency.inflight())).sum::<u64>(),
                "measured_latency_ms": f64::from(p.state.measured_us()) / 1e3,
                "rank": ranking.regions.iter().position(|&x| usize::from(x) == ri),
            })
        })
        .collect();
    json!({
        "name": &s.name,
        "hosts": s.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "paths": &s.paths,
        "default": s.default,
        "implicit": s.implicit,
        "sticky_cookie": s.sticky.as_ref().map(|c| c.cookie.clone()),
        "requests": requests,
        "pools": pools,
    })
}

/// The `mesh` part of `/status`: every peer instance as this instance sees it, and the
/// mesh's verdict (`null` without instance lists).
fn mesh(inst: &crate::control::instance::Instance, cfg: &meridian_config::Config) -> Value {
    let Some(me) = cfg.own_instance() else {
        return Value::Null;
    };
    let view = inst.mesh.view();
    let digest = cfg.digest();
    let peers: Vec<Value> = view
        .peers
        .iter()
        .map(|p| {
            let doc = p.state.as_ref();
            json!({
                "name": p.name,
                "region": p.region,
                "reachable": p.reachable.as_str(),
                "down": p.down,
                "seen_by": p.seen_by,
                "unseen_by": p.unseen_by,
                "age_s": p.age.map(|a| a.as_secs_f64()),
                "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1e3),
                "error": p.error,
                "ready": doc.map(|d| d.ready),
                "draining": doc.map(|d| d.draining),
                "generation": doc.map(|d| d.generation),
                "config_digest": doc.map(|d| d.config_digest.clone()),
                "same_config": doc.map(|d| d.config_digest == digest),
                "region_usable": doc.map(|d| d.region_health.usable),
                "region_backends": doc.map(|d| d.region_health.total),
            })
        })
        .collect();
    json!({
        "me": me.name,
        "mesh_address": me.mesh.to_string(),
        "config_digest": digest,
        "peers": peers,
    })
}

/// One reload attempt in `/status`.
fn reload(r: &ReloadRecord) -> Value {
    json!({
        "at": unix(r.at),
        "trigger": r.trigger.as_str(),
        "result": r.result.as_str(),
        "error": r.message,
        "generation": r.generation,
    })
}

/// The `dns` part of `/status`: every backend DNS name, its last good answer and the
/// latest attempt's outcome.
fn dns_names(dns: &DnsState) -> Value {
    let names: Vec<Value> = dns
        .report()
        .into_iter()
        .map(|(name, s)| {
            json!({
                "name": name.to_string(),
                "resolved": s.resolved,
                "addresses": s.addrs.iter().map(|a| a.addr.to_string()).collect::<Vec<_>>(),
                "last_ok": s.last_ok.map(unix),
                "last_attempt": s.last_attempt.map(unix),
                "error": s.last_error,
                "target_errors": s.target_errors,
                "consecutive_failures": s.failures,
                "refresh_s": s.refresh.as_secs_f64(),
            })
        })
        .collect();
    json!({ "names": names })
}

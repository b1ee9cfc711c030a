//! The `/status` document: the node, the snapshot in use, the GeoIP database, the latest
//! reloads, every region with its backends' live state and its requests by client
//! continent, and the backend DNS names.

use std::time::{SystemTime, UNIX_EPOCH};

use meridian_routing::metrics::CONTINENT_LABELS;
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
    let ranking = snap.plan(None);
    let info = snap.locator.info();
    let regions: Vec<Value> = snap
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let backends: Vec<Value> = r
                .members
                .iter()
                .map(|m| {
                    let s = &m.state;
                    let last = s.last_probe();
                    json!({
                        "id": &*s.id,
                        "address": s.addr.to_string(),
                        "host": &*s.host,
                        "weight": m.weight,
                        "tier": m.tier,
                        "health": s.health.get().as_str(),
                        "usable": s.usable(now),
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
                })
                .collect();
            let usable = r.members.iter().filter(|m| m.state.usable(now)).count();
            let by_continent: Map<String, Value> = CONTINENT_LABELS
                .iter()
                .zip(&r.state.metrics.by_continent)
                .map(|(c, n)| (c.to_string(), Value::from(n.get())))
                .collect();
            json!({
                "name": &*r.name,
                "local": i == snap.local,
                "latitude": r.coords.latitude,
                "longitude": r.coords.longitude,
                "balance": cfg.regions[i].balance.as_str(),
                "reach": cfg.regions[i].reach.as_str(),
                "protocol": cfg.regions[i].upstream.protocol.as_str(),
                "health_source": if i == snap.local {
                    "probes"
                } else if r.relay {
                    "mesh (relay)"
                } else if r.state.remote_latency().is_some() {
                    "mesh"
                } else {
                    "probes"
                },
                "health": if usable == 0 { "down" } else if usable < r.members.len() { "degraded" } else { "up" },
                "usable_backends": usable,
                "active_tier": match r.state.active_tier() { u8::MAX => None, t => Some(t) },
                "measured_latency_ms": f64::from(r.state.measured_us()) / 1e3,
                "rank": ranking.regions.iter().position(|&x| usize::from(x) == i),
                "by_continent": by_continent,
                "backends": backends,
            })
        })
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
        "dns": dns_names(dns),
        "mesh": mesh(inst, &snap.config),
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

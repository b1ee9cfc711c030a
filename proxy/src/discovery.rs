//! Backend discovery: backends written as a host name (`api.example.internal:8080`) or a
//! DNS SRV name are resolved with hickory-resolver (A and AAAA; SRV targets too) and
//! re-resolved when their records expire (`dns.min_ttl` ≤ TTL ≤ `dns.max_ttl`).
//!
//! [`DnsState`] keeps, per name, the last good answer and the outcome of the latest
//! attempt. When an answer changes, the [`Discovery`] service rebuilds the routing snapshot
//! from the same config plus the new addresses ([`crate::reload::rebuild`], as a reload
//! does): every address is a backend with the stable ID `region/address`, so health and
//! latency survive re-resolution; new addresses are probed at once (the prober reconciles on
//! every swap); addresses that disappeared leave the snapshot, so they get no new requests
//! while requests already on them finish (drained). A failed resolution keeps the last good
//! answer and is reported in `/status` and the metrics; a name that never resolved has no
//! backends (its region fails over or answers 503 as usual). Configs with only static
//! addresses never start a resolver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use meridian_config::{BackendAddress, Config, Dns};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use crate::instance::Instance;

/// One address a name resolved to, with the host name it came from (the TLS server name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolved {
    /// The address (the record's port for SRV, the configured port otherwise).
    pub addr: SocketAddr,
    /// The host name: the configured one, or the SRV target.
    pub host: Arc<str>,
}

/// What is known about one backend DNS name.
#[derive(Debug, Clone, Default)]
pub struct NameState {
    /// The last good answer (sorted); empty until the name first resolves.
    pub addrs: Vec<Resolved>,
    /// Whether the name ever resolved.
    pub resolved: bool,
    /// When it last resolved.
    pub last_ok: Option<SystemTime>,
    /// When the latest attempt was made.
    pub last_attempt: Option<SystemTime>,
    /// The latest attempt's error, if it failed.
    pub last_error: Option<String>,
    /// Consecutive failed attempts.
    pub failures: u64,
    /// The time until the next resolution, as last computed.
    pub refresh: Duration,
}

/// The resolved backend names of an instance, shared by the discovery service, snapshot
/// builds and `/status`.
#[derive(Debug, Default)]
pub struct DnsState {
    names: Mutex<BTreeMap<BackendAddress, NameState>>,
    first_round: AtomicBool,
}

/// Name → last good addresses, as snapshot builds consume it.
pub type Answers = HashMap<BackendAddress, Vec<Resolved>>;

impl DnsState {
    /// The last good answer of every name.
    pub fn answers(&self) -> Answers {
        self.names
            .lock()
            .map(|n| {
                n.iter()
                    .map(|(k, v)| (k.clone(), v.addrs.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every name and its state (for `/status`).
    pub fn report(&self) -> Vec<(BackendAddress, NameState)> {
        self.names
            .lock()
            .map(|n| n.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Whether every configured name has been tried at least once.
    pub fn first_round_done(&self) -> bool {
        self.first_round.load(Ordering::Relaxed)
    }

    /// Records an attempt; returns whether the last good answer changed.
    fn record(&self, name: &BackendAddress, result: &Result<Vec<Resolved>, String>) -> bool {
        let Ok(mut names) = self.names.lock() else {
            return false;
        };
        let state = names.entry(name.clone()).or_default();
        let now = SystemTime::now();
        state.last_attempt = Some(now);
        match result {
            Ok(addrs) => {
                let changed = !state.resolved || state.addrs != *addrs;
                state.addrs = addrs.clone();
                state.resolved = true;
                state.last_ok = Some(now);
                state.last_error = None;
                state.failures = 0;
                changed
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                state.failures += 1;
                false
            }
        }
    }

    fn set_refresh(&self, name: &BackendAddress, refresh: Duration) {
        if let Ok(mut names) = self.names.lock() {
            if let Some(s) = names.get_mut(name) {
                s.refresh = refresh;
            }
        }
    }

    /// Forgets names no longer configured; returns them.
    fn retain(&self, wanted: &BTreeSet<BackendAddress>) -> Vec<BackendAddress> {
        let Ok(mut names) = self.names.lock() else {
            return Vec::new();
        };
        let gone: Vec<BackendAddress> = names
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            names.remove(k);
        }
        gone
    }
}

/// The DNS names a config's backends use.
pub fn names(config: &Config) -> BTreeSet<BackendAddress> {
    config
        .regions
        .iter()
        .flat_map(|r| &r.backends)
        .filter(|b| b.address.as_static().is_none())
        .map(|b| b.address.clone())
        .collect()
}

/// Builds a resolver for `dns` (the system configuration when no name servers are given).
pub fn resolver(dns: &Dns) -> Result<TokioResolver, String> {
    let mut builder = if dns.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("system resolver configuration: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for ns in &dns.nameservers {
            config.add_name_server(NameServerConfig::new(*ns, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*ns, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let opts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = dns.timeout;
    opts.attempts = 2;
    // The cache must not outlive our own refresh ceiling, nor hide a recovery for long.
    opts.positive_max_ttl = Some(dns.max_ttl);
    opts.negative_max_ttl = Some(dns.min_ttl);
    Ok(builder.build())
}

/// The absolute form of a name (no search-list expansion).
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Resolves one name: its addresses (sorted, deduplicated) and how long they are valid.
pub async fn resolve(
    resolver: &TokioResolver,
    name: &BackendAddress,
) -> Result<(Vec<Resolved>, Duration), String> {
    let now = std::time::Instant::now();
    let mut out = Vec::new();
    let valid_until = match name {
        BackendAddress::Static(addr) => {
            return Ok((
                vec![Resolved {
                    addr: *addr,
                    host: addr.ip().to_string().into(),
                }],
                Duration::MAX,
            ))
        }
        BackendAddress::Host { name, port } => {
            let lookup = resolver
                .lookup_ip(fqdn(name))
                .await
                .map_err(|e| e.to_string())?;
            let host: Arc<str> = name.as_str().into();
            out.extend(lookup.iter().map(|ip| Resolved {
                addr: SocketAddr::new(ip, *port),
                host: host.clone(),
            }));
            lookup.valid_until()
        }
        BackendAddress::Srv(srv) => {
            let lookup = resolver
                .srv_lookup(fqdn(srv))
                .await
                .map_err(|e| e.to_string())?;
            let mut until = lookup.as_lookup().valid_until();
            for record in lookup.iter() {
                let target = record.target().to_ascii();
                let target = target.trim_end_matches('.');
                let ips = resolver
                    .lookup_ip(fqdn(target))
                    .await
                    .map_err(|e| format!("SRV target {target}: {e}"))?;
                until = until.min(ips.valid_until());
                let host: Arc<str> = target.into();
                out.extend(ips.iter().map(|ip| Resolved {
                    addr: SocketAddr::new(ip, record.port()),
                    host: host.clone(),
                }));
            }
            until
        }
    };
    if out.is_empty() {
        return Err("no addresses".to_string());
    }
    out.sort();
    out.dedup_by(|a, b| a.addr == b.addr);
    Ok((out, valid_until.saturating_duration_since(now)))
}

/// The background service that resolves backend names and swaps snapshots on change.
pub struct Discovery {
    inst: Arc<Instance>,
}

impl Discovery {
    /// Discovery for `inst`.
    pub fn new(inst: Arc<Instance>) -> Self {
        Discovery { inst }
    }
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let inst = &self.inst;
        let mut changes = inst.subscribe();
        let mut current: Option<(Dns, TokioResolver)> = None;
        let mut due: HashMap<BackendAddress, Instant> = HashMap::new();
        loop {
            let snap = inst.snapshot();
            let wanted = names(&snap.config);
            for gone in inst.dns.retain(&wanted) {
                inst.metrics.forget_dns_name(&gone.to_string());
            }
            due.retain(|k, _| wanted.contains(k));
            let dns = &snap.config.dns;
            let mut wake = Instant::now() + Duration::from_secs(3600);
            if !wanted.is_empty() {
                if current.as_ref().is_none_or(|(d, _)| d != dns) {
                    current = match resolver(dns) {
                        Ok(r) => Some((dns.clone(), r)),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot build the DNS resolver");
                            None
                        }
                    };
                    due.clear();
                }
                let mut changed = false;
                let now = Instant::now();
                for name in &wanted {
                    if due.get(name).is_some_and(|t| *t > now) {
                        continue;
                    }
                    let result = match &current {
                        Some((_, r)) => resolve(r, name).await,
                        None => Err("no resolver".to_string()),
                    };
                    let label = name.to_string();
                    let refresh = match &result {
                        Ok((_, ttl)) => (*ttl).clamp(dns.min_ttl, dns.max_ttl),
                        Err(_) => dns.min_ttl,
                    };
                    let result = result.map(|(addrs, _)| addrs);
                    changed |= inst.dns.record(name, &result);
                    inst.dns.set_refresh(name, refresh);
                    match &result {
                        Ok(addrs) => inst.metrics.dns_resolution(&label, true, addrs.len()),
                        Err(e) => {
                            let kept = inst.dns.answers().get(name).map_or(0, Vec::len);
                            inst.metrics.dns_resolution(&label, false, kept);
                            tracing::warn!(name = %label, error = %e, kept, "DNS resolution failed; keeping the last good addresses");
                        }
                    }
                    due.insert(name.clone(), Instant::now() + refresh);
                }
                if changed {
                    let i = inst.clone();
                    let done = tokio::task::spawn_blocking(move || {
                        crate::reload::rebuild_current(&i, "dns")
                    })
                    .await;
                    if let Ok(Err(e)) | Err(e) = done.map_err(|e| e.to_string()) {
                        tracing::error!(error = %e, "snapshot rebuild after DNS change failed");
                    }
                }
                if let Some(next) = due.values().min() {
                    wake = *next;
                }
            }
            inst.dns.first_round.store(true, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                r = changes.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
    }
}

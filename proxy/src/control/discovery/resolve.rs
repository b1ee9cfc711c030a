//! Resolving one backend name: A and AAAA for a host name; for an SRV name, the SRV
//! records, grouped by priority (RFC 2782), and the addresses of every group's targets with
//! their SRV weights and their group's rank as a *tier*: the region uses a tier only while
//! no backend of a lower one is usable, so the backups of an SRV name stand in when its
//! preferred targets fail their health checks, not only when they stop resolving. A target
//! that does not resolve is skipped and reported; the name fails only when no target of any
//! priority resolves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use meridian_config::{BackendAddress, Dns};
pub use meridian_routing::answers::{Resolved, MAX_WEIGHT};

/// The most addresses one name contributes (region member indices are `u16`); the rest of
/// a larger answer is dropped with a warning.
pub const MAX_ADDRESSES: usize = 10_000;
/// SRV targets of one name resolved at the same time.
const PARALLEL_TARGETS: usize = 8;

/// A successful resolution of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The addresses, sorted and deduplicated (at most [`MAX_ADDRESSES`]).
    pub addrs: Vec<Resolved>,
    /// How long the answer is valid (the smallest TTL involved).
    pub ttl: Duration,
    /// SRV targets that were tried and did not resolve (`target: error`); the name
    /// resolved through the others.
    pub target_errors: Vec<String>,
}

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The system's resolver configuration could not be read.
    #[error("system resolver configuration: {0}")]
    SystemConfig(ResolveError),
    /// The query for the name failed (timeout, SERVFAIL, NXDOMAIN, no records).
    #[error("{0}")]
    Lookup(ResolveError),
    /// The answer held no address (e.g. an SRV record whose target is `.`).
    #[error("no addresses")]
    NoAddresses,
    /// No SRV target of any priority resolved.
    #[error("no SRV target resolved: {}", .0.join("; "))]
    NoTargetResolved(Vec<String>),
    /// Every address in the answer was one a backend must not have ([`forbidden`]).
    #[error("every address is refused: {}", .0.join(", "))]
    Forbidden(Vec<String>),
    /// There is no resolver (it could not be built).
    #[error("no resolver: {0}")]
    NoResolver(String),
    /// The resolution task ended abnormally.
    #[error("resolution task failed: {0}")]
    Task(String),
}

/// Builds a resolver for `dns` (the system configuration when no name servers are given).
pub fn resolver(dns: &Dns) -> Result<TokioResolver, DiscoveryError> {
    let mut builder = if dns.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(DiscoveryError::SystemConfig)?
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

/// How long to wait before re-resolving an answer valid for `ttl`: the TTL, but at least
/// `min` and at most `max` (a `max` below `min` counts as `min`).
pub fn refresh_after(ttl: Duration, min: Duration, max: Duration) -> Duration {
    ttl.min(max).max(min)
}

/// The absolute form of a name (no search-list expansion).
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// One SRV record, as used: the target without its trailing dot, the weight in
/// `1..=MAX_WEIGHT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SrvTarget {
    priority: u16,
    weight: u32,
    port: u16,
    host: String,
}

/// Groups SRV records (priority, weight, port, target) by priority, the lowest value (the
/// most preferred) first. Targets `.` (RFC 2782: the service is not available there) are
/// dropped. Weight 0 counts as 1; in a group whose largest weight exceeds [`MAX_WEIGHT`],
/// weights are scaled down proportionally so that the largest is `MAX_WEIGHT`.
fn srv_groups(records: impl IntoIterator<Item = (u16, u16, u16, String)>) -> Vec<Vec<SrvTarget>> {
    let mut records: Vec<(u16, u16, u16, String)> = records
        .into_iter()
        .map(|(p, w, port, t)| (p, w, port, t.trim_end_matches('.').to_string()))
        .filter(|r| !r.3.is_empty())
        .collect();
    records.sort_by_key(|r| r.0);
    records
        .chunk_by(|a, b| a.0 == b.0)
        .map(|group| {
            let top = group.iter().map(|r| u64::from(r.1)).max().unwrap_or(0);
            let limit = u64::from(MAX_WEIGHT);
            group
                .iter()
                .map(|(priority, w, port, host)| {
                    let w = u64::from(*w);
                    let scaled = if top > limit {
                        (w * limit + top / 2) / top
                    } else {
                        w
                    };
                    SrvTarget {
                        priority: *priority,
                        weight: u32::try_from(scaled.clamp(1, limit)).unwrap_or(MAX_WEIGHT),
                        port: *port,
                        host: host.clone(),
                    }
                })
                .collect()
        })
        .collect()
}

/// Sorts (most preferred tier first) and deduplicates `addrs` (an address listed twice in
/// one tier, by two SRV records, gets the sum of their weights, at most [`MAX_WEIGHT`]; in
/// two tiers, it belongs to the more preferred one) and keeps at most `max` of them, so
/// the least preferred are dropped first; returns how many were dropped.
fn normalize(addrs: &mut Vec<Resolved>, max: usize) -> usize {
    addrs.sort_by_key(|a| (a.addr, a.tier));
    addrs.dedup_by(|later, kept| {
        let same = later.addr == kept.addr;
        if same && later.tier == kept.tier {
            kept.weight = kept.weight.saturating_add(later.weight).min(MAX_WEIGHT);
        }
        same
    });
    addrs.sort();
    let dropped = addrs.len().saturating_sub(max);
    addrs.truncate(max);
    dropped
}

/// Resolves the targets of one SRV name, every priority group, each address tagged with its
/// group's rank. Returns the addresses, the earliest expiry and the targets that failed.
async fn resolve_srv(
    resolver: &TokioResolver,
    srv: &str,
) -> Result<(Vec<Resolved>, std::time::Instant, Vec<String>), DiscoveryError> {
    let lookup = resolver
        .srv_lookup(fqdn(srv))
        .await
        .map_err(DiscoveryError::Lookup)?;
    let mut until = lookup.as_lookup().valid_until();
    let groups = srv_groups(lookup.iter().map(|r| {
        let target = r.target().to_ascii();
        (r.priority(), r.weight(), r.port(), target)
    }));
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (rank, group) in groups.into_iter().enumerate() {
        let tier = u8::try_from(rank).unwrap_or(u8::MAX);
        let answers: Vec<_> = stream::iter(group)
            .map(|t| async move {
                let ips = resolver.lookup_ip(fqdn(&t.host)).await;
                (t, ips)
            })
            .buffered(PARALLEL_TARGETS)
            .collect()
            .await;
        for (t, ips) in answers {
            match ips {
                Ok(ips) if ips.iter().next().is_some() => {
                    until = until.min(ips.valid_until());
                    let host: Arc<str> = t.host.as_str().into();
                    out.extend(ips.iter().map(|ip| Resolved {
                        tier,
                        addr: SocketAddr::new(ip, t.port),
                        host: host.clone(),
                        weight: t.weight,
                    }));
                }
                Ok(_) => errors.push(format!(
                    "{} (priority {}): no addresses",
                    t.host, t.priority
                )),
                Err(e) => errors.push(format!("{} (priority {}): {e}", t.host, t.priority)),
            }
        }
    }
    if out.is_empty() && !errors.is_empty() {
        return Err(DiscoveryError::NoTargetResolved(errors));
    }
    Ok((out, until, errors))
}

/// Why an address from DNS must not become a backend, if it must not: one that points back
/// at this host (unless `allow_loopback`), a link-local or cloud metadata address (a name
/// that resolves there would let whoever controls the DNS reach the instance's metadata
/// service), or one no backend can have (unspecified, multicast, broadcast).
pub fn forbidden(ip: std::net::IpAddr, allow_loopback: bool) -> Option<&'static str> {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                (!allow_loopback).then_some("loopback")
            } else if v4.is_link_local() {
                Some("link-local / metadata")
            } else if o == [100, 100, 100, 200] {
                Some("metadata")
            } else if v4.is_unspecified() || o[0] == 0 || v4.is_multicast() || v4.is_broadcast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                (!allow_loopback).then_some("loopback")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("metadata")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
    }
}

/// Resolves one name: its addresses (sorted, deduplicated, at most [`MAX_ADDRESSES`],
/// [`forbidden`] ones left out and reported), how long they are valid and the SRV targets
/// that did not resolve.
pub async fn resolve(
    resolver: &TokioResolver,
    name: &BackendAddress,
    allow_loopback: bool,
) -> Result<Answer, DiscoveryError> {
    let now = std::time::Instant::now();
    let (mut addrs, valid_until, target_errors) = match name {
        BackendAddress::Static(addr) => {
            return Ok(Answer {
                addrs: vec![Resolved {
                    tier: 0,
                    addr: *addr,
                    host: addr.ip().to_string().into(),
                    weight: 1,
                }],
                ttl: Duration::MAX,
                target_errors: Vec::new(),
            })
        }
        BackendAddress::Host { name, port } => {
            let lookup = resolver
                .lookup_ip(fqdn(name))
                .await
                .map_err(DiscoveryError::Lookup)?;
            let host: Arc<str> = name.as_str().into();
            let addrs = lookup
                .iter()
                .map(|ip| Resolved {
                    tier: 0,
                    addr: SocketAddr::new(ip, *port),
                    host: host.clone(),
                    weight: 1,
                })
                .collect();
            (addrs, lookup.valid_until(), Vec::new())
        }
        BackendAddress::Srv(srv) => resolve_srv(resolver, srv).await?,
    };
    if addrs.is_empty() {
        return Err(DiscoveryError::NoAddresses);
    }
    let mut refused = Vec::new();
    addrs.retain(|a| match forbidden(a.addr.ip(), allow_loopback) {
        Some(why) => {
            refused.push(format!("{} ({why})", a.addr.ip()));
            false
        }
        None => true,
    });
    if !refused.is_empty() {
        tracing::warn!(name = %name, refused = %refused.join(", "), "DNS answer names addresses that cannot be backends; left out");
        if addrs.is_empty() {
            return Err(DiscoveryError::Forbidden(refused));
        }
    }
    let dropped = normalize(&mut addrs, MAX_ADDRESSES);
    if dropped > 0 {
        tracing::warn!(name = %name, kept = MAX_ADDRESSES, dropped, "DNS answer has too many addresses; using the first ones");
    }
    Ok(Answer {
        addrs,
        ttl: valid_until.saturating_duration_since(now),
        target_errors,
    })
}

#[cfg(test)]
pub(super) mod tests {
    #[test]
    fn answers_that_point_at_this_host_or_metadata_are_refused() {
        let f = |ip: &str, lo| forbidden(ip.parse().unwrap(), lo);
        assert_eq!(f("127.0.0.1", false), Some("loopback"));
        assert_eq!(f("127.0.0.1", true), None);
        assert_eq!(f("::1", false), Some("loopback"));
        assert_eq!(f("::ffff:127.0.0.1", false), Some("loopback"));
        assert_eq!(f("169.254.169.254", true), Some("link-local / metadata"));
        assert_eq!(f("fd00:ec2::254", true), Some("metadata"));
        assert_eq!(f("fe80::1", true), Some("link-local"));
        assert_eq!(f("100.100.100.200", true), Some("metadata"));
        assert_eq!(f("0.0.0.0", true), Some("not a unicast address"));
        assert_eq!(f("224.0.0.1", true), Some("not a unicast address"));
        for ok in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "2001:db8::1",
            "fd00::1",
        ] {
            assert_eq!(f(ok, false), None, "{ok}");
        }
    }

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn rec(priority: u16, weight: u16, port: u16, target: &str) -> (u16, u16, u16, String) {
        (priority, weight, port, target.to_string())
    }

    #[test]
    fn refresh_is_the_ttl_clamped_to_min_and_max() {
        let (min, max) = (Duration::from_millis(200), S(300));
        assert_eq!(refresh_after(Duration::ZERO, min, max), min);
        assert_eq!(refresh_after(Duration::from_millis(50), min, max), min);
        assert_eq!(refresh_after(S(30), min, max), S(30));
        assert_eq!(refresh_after(S(86_400), min, max), max);
        assert_eq!(refresh_after(Duration::MAX, min, max), max);
        // A ceiling below the floor does not panic: the floor wins.
        assert_eq!(refresh_after(S(10), S(5), S(1)), S(5));
    }

    #[test]
    fn srv_records_group_by_priority_lowest_first() {
        let groups = srv_groups([
            rec(20, 1, 80, "backup.example."),
            rec(10, 5, 81, "a.example."),
            rec(10, 0, 82, "b.example."),
            rec(30, 1, 83, "."),
        ]);
        assert_eq!(groups.len(), 2, "{groups:?}");
        let hosts: Vec<(&str, u32, u16)> = groups[0]
            .iter()
            .map(|t| (t.host.as_str(), t.weight, t.port))
            .collect();
        assert_eq!(hosts, vec![("a.example", 5, 81), ("b.example", 1, 82)]);
        assert_eq!(groups[1][0].host, "backup.example");
        assert_eq!(groups[1][0].priority, 20);
        assert!(srv_groups([rec(0, 1, 80, ".")]).is_empty());
    }

    #[test]
    fn large_srv_weights_scale_down_within_their_group() {
        let groups = srv_groups([
            rec(0, 65_535, 80, "a."),
            rec(0, 32_768, 80, "b."),
            rec(0, 1, 80, "c."),
            rec(1, 700, 80, "d."),
        ]);
        let w: Vec<u32> = groups[0].iter().map(|t| t.weight).collect();
        assert_eq!(w, vec![1000, 500, 1]);
        // Another priority's weights are not affected.
        assert_eq!(groups[1][0].weight, 700);
    }

    /// A tier-0 address `127.0.0.LAST:PORT` of host `h` (also used by `discovery.rs`).
    pub(in crate::control::discovery) fn resolved(last: u8, port: u16, weight: u32) -> Resolved {
        Resolved {
            tier: 0,
            addr: SocketAddr::from(([127, 0, 0, last], port)),
            host: "h".into(),
            weight,
        }
    }

    #[test]
    fn normalize_sorts_merges_duplicates_and_caps() {
        let mut a = vec![resolved(2, 80, 1), resolved(1, 80, 3), resolved(1, 80, 4)];
        assert_eq!(normalize(&mut a, 10), 0);
        assert_eq!(a, vec![resolved(1, 80, 7), resolved(2, 80, 1)]);

        let mut many: Vec<Resolved> = (0..=255u8)
            .flat_map(|i| (1..=50u16).map(move |p| resolved(i, p, 1)))
            .collect();
        let total = many.len();
        assert_eq!(normalize(&mut many, 1000), total - 1000);
        assert_eq!(many.len(), 1000);
        assert!(many.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(normalize(&mut many, MAX_ADDRESSES), 0);
    }

    #[test]
    fn normalize_keeps_an_address_in_its_most_preferred_tier_and_drops_backups_first() {
        let tiered = |tier: u8, last: u8, weight: u32| Resolved {
            tier,
            ..resolved(last, 80, weight)
        };
        let mut a = vec![
            tiered(1, 1, 5),
            tiered(0, 9, 1),
            tiered(0, 1, 2),
            tiered(1, 2, 1),
            tiered(0, 1, 3),
        ];
        assert_eq!(normalize(&mut a, 10), 0);
        assert_eq!(a, vec![tiered(0, 1, 5), tiered(0, 9, 1), tiered(1, 2, 1)]);
        assert_eq!(normalize(&mut a, 2), 1);
        assert_eq!(a, vec![tiered(0, 1, 5), tiered(0, 9, 1)]);
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        fn answer() -> impl Strategy<Value = Vec<Resolved>> {
            proptest::collection::vec(
                (0u8..4, 0u8..8, 1u16..4, 0u32..2000).prop_map(|(tier, last, port, weight)| {
                    Resolved {
                        tier,
                        addr: SocketAddr::from(([10, 0, 0, last], port)),
                        host: "h".into(),
                        weight: weight.clamp(1, MAX_WEIGHT),
                    }
                }),
                0..40,
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Normalised answers are sorted by preference, hold each address once (in its
            /// most preferred tier), keep weights in range and respect the cap.
            #[test]
            fn fuzz_dns_answer_normalisation(mut addrs in answer(), max in 0usize..50) {
                let before = addrs.clone();
                let dropped = normalize(&mut addrs, max);
                prop_assert!(addrs.len() <= max);
                prop_assert!(addrs.windows(2).all(|w| w[0] <= w[1]), "sorted");
                let mut seen = std::collections::HashSet::new();
                for a in &addrs {
                    prop_assert!(seen.insert(a.addr), "{} twice", a.addr);
                    prop_assert!((1..=MAX_WEIGHT).contains(&a.weight));
                    let best = before.iter().filter(|b| b.addr == a.addr).map(|b| b.tier).min();
                    prop_assert_eq!(Some(a.tier), best);
                }
                let distinct: std::collections::HashSet<_> = before.iter().map(|b| b.addr).collect();
                prop_assert_eq!(addrs.len() + dropped, distinct.len());
            }

            /// Any address gets a verdict; loopback only passes when allowed.
            #[test]
            fn fuzz_dns_forbidden_addresses(ip in any::<std::net::IpAddr>(), lo in any::<bool>()) {
                let verdict = forbidden(ip, lo);
                if ip.is_loopback() && !lo {
                    prop_assert_eq!(verdict, Some("loopback"));
                }
            }
        }
    }
}

//! Validation of `[geodns]`: listeners, answer settings and zones (names relative to the
//! zone unless they end in a dot; static records; in-zone name servers with addresses).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::{Cx, Min};
use crate::file::{self, RecordFile, ZoneFile, S};
use crate::model::{GeoDns, RecordData, StaticRecord, Zone};

/// The longest TTL or SOA timer accepted: a week.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest TXT value accepted (bytes): sixteen 255-byte strings.
const MAX_TXT: usize = 16 * 255;

/// A DNS name written in full (`ns1.example.com`, trailing dot optional), returned
/// lower-case without the trailing dot.
pub(crate) fn dns_name(text: &str) -> Result<String, Problem> {
    let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if lower.is_empty() || lower.len() > 253 || !lower.split('.').all(label_ok) {
        return Err(Problem::hinted(
            format!("invalid DNS name \"{text}\""),
            "use a name such as \"ns1.example.com\": labels of letters, digits, '-' and '_', at most 63 characters each",
        ));
    }
    Ok(lower)
}

/// Whether `name` is `zone` or below it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.'))
}

/// An owner name as written in a zone: `@` is the apex, a name ending in `.` is absolute
/// (and must be in the zone), anything else is relative to the zone.
fn owner(text: &str, zone: &str) -> Result<String, Problem> {
    let t = text.trim();
    let name = if t == "@" {
        zone.to_owned()
    } else if t.ends_with('.') {
        dns_name(t)?
    } else {
        dns_name(&format!("{t}.{zone}"))?
    };
    if !in_zone(&name, zone) {
        return Err(Problem::hinted(
            format!("\"{text}\" is not in zone {zone}"),
            format!("write names relative to the zone (\"www\", \"@\" for {zone}), or absolute with a trailing dot (\"www.{zone}.\")"),
        ));
    }
    Ok(name)
}

/// Validates `[geodns]`. `public_addresses`: how many public addresses the instances list
/// in all (geo-steered names need some).
pub(crate) fn geodns(cx: &mut Cx<'_>, file: &file::GeoDnsFile, public_addresses: usize) -> GeoDns {
    let d = GeoDns::default();
    let mut listen = Vec::new();
    for (i, entry) in file.listen.iter().flat_map(|l| l.get_ref()).enumerate() {
        let field = format!("geodns.listen[{i}]");
        if let Some(addr) = cx.check(entry, &field, |t| checks::socket_addr(t)) {
            if listen.contains(&addr) {
                cx.bad(entry, &field, format!("{addr} is listed twice"));
            } else {
                listen.push(addr);
            }
        }
    }
    let ttl = cx
        .duration_within(
            file.ttl.as_ref(),
            "geodns.ttl",
            d.ttl,
            Min::AtLeast(Duration::from_secs(1)),
            MAX_TTL,
        )
        .unwrap_or(d.ttl);
    let max_addresses = cx
        .int(
            file.max_addresses.as_ref(),
            "geodns.max_addresses",
            4,
            1..=64,
        )
        .map_or(d.max_addresses, |n| n as usize);
    let udp_payload = cx
        .int(
            file.udp_payload.as_ref(),
            "geodns.udp_payload",
            1232,
            512..=4096,
        )
        .map_or(d.udp_payload, |n| n as u16);
    let tcp_idle = cx
        .duration_within(
            file.tcp_idle.as_ref(),
            "geodns.tcp_idle",
            d.tcp_idle,
            Min::AtLeast(Duration::from_millis(100)),
            Duration::from_secs(300),
        )
        .unwrap_or(d.tcp_idle);
    let max_tcp_connections = cx
        .int(
            file.max_tcp_connections.as_ref(),
            "geodns.max_tcp_connections",
            1000,
            1..=100_000,
        )
        .map_or(d.max_tcp_connections, |n| n as usize);
    let threads = cx
        .int(file.threads.as_ref(), "geodns.threads", 2, 1..=64)
        .map_or(d.threads, |n| n as usize);
    let serial = file.serial.as_ref().and_then(|v| {
        cx.int(Some(v), "geodns.serial", 1, 1..=i64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok())
    });
    let mut zones: Vec<Zone> = Vec::new();
    for (i, entry) in file.zones.iter().flat_map(|z| z.get_ref()).enumerate() {
        let prefix = format!("geodns.zones[{i}]");
        if let Some(zone) = zone(cx, entry, &prefix, public_addresses) {
            if let Some(other) = zones
                .iter()
                .find(|z| in_zone(&zone.name, &z.name) || in_zone(&z.name, &zone.name))
            {
                let message = if other.name == zone.name {
                    format!("zone {} is listed twice", zone.name)
                } else {
                    format!(
                        "zones {} and {} overlap (one is inside the other); delegating part of a zone is not supported",
                        other.name, zone.name
                    )
                };
                match &entry.get_ref().name {
                    Some(n) => cx.bad(n, &format!("{prefix}.name"), message),
                    None => cx.bad(entry, &prefix, message),
                }
            } else {
                zones.push(zone);
            }
        }
    }
    let zones_written = file.zones.as_ref().is_some_and(|z| !z.get_ref().is_empty());
    if zones_written
        && listen.is_empty()
        && file.listen.as_ref().is_none_or(|l| l.get_ref().is_empty())
    {
        let span = cx.top_key("geodns");
        cx.missing(
            span,
            "geodns.listen",
            Some(
                "zones are configured: say where to serve them, e.g. listen = [\"0.0.0.0:53\"]"
                    .to_owned(),
            ),
        );
    }
    if let Some(l) = &file.listen {
        if !l.get_ref().is_empty() && !zones_written {
            cx.bad(
                l,
                "geodns.listen",
                Problem::hinted(
                    "GeoDNS has addresses to listen on but no zones to answer for",
                    "add a zone: [[geodns.zones]] name = \"example.com\", nameservers = [...], names = [\"www\"]",
                ),
            );
        }
    }
    GeoDns {
        listen,
        ttl,
        max_addresses,
        udp_payload,
        tcp_idle,
        max_tcp_connections,
        threads,
        serial,
        zones,
    }
}

fn zone(
    cx: &mut Cx<'_>,
    entry: &S<ZoneFile>,
    prefix: &str,
    public_addresses: usize,
) -> Option<Zone> {
    let z = entry.get_ref();
    let Some(name_v) = &z.name else {
        cx.bad(
            entry,
            &format!("{prefix}.name"),
            "missing required key `name`",
        );
        return None;
    };
    let name = cx.check(name_v, &format!("{prefix}.name"), |t| dns_name(t))?;
    let mut nameservers = Vec::new();
    for (i, ns) in z.nameservers.iter().flat_map(|l| l.get_ref()).enumerate() {
        let field = format!("{prefix}.nameservers[{i}]");
        if let Some(n) = cx.check(ns, &field, |t| dns_name(t)) {
            if nameservers.contains(&n) {
                cx.bad(ns, &field, format!("name server {n} is listed twice"));
            } else {
                nameservers.push(n);
            }
        }
    }
    if z.nameservers
        .as_ref()
        .is_none_or(|l| l.get_ref().is_empty())
    {
        cx.bad(
            entry,
            &format!("{prefix}.nameservers"),
            Problem::hinted(
                "a zone needs at least one name server",
                format!("nameservers = [\"ns1.{name}\", \"ns2.{name}\"] (the hosts running Meridian's GeoDNS)"),
            ),
        );
    }
    let hostmaster = match &z.hostmaster {
        None => format!("hostmaster.{name}"),
        Some(h) => cx
            .check(h, &format!("{prefix}.hostmaster"), |t| {
                dns_name(&t.replacen('@', ".", 1))
            })
            .unwrap_or_default(),
    };
    let soa_ttl = cx
        .duration_within(
            z.soa_ttl.as_ref(),
            &format!("{prefix}.soa_ttl"),
            Duration::from_secs(3600),
            Min::AtLeast(Duration::from_secs(1)),
            MAX_TTL,
        )
        .unwrap_or(Duration::from_secs(3600));
    let negative_ttl = cx
        .duration_within(
            z.negative_ttl.as_ref(),
            &format!("{prefix}.negative_ttl"),
            Duration::from_secs(60),
            Min::AtLeast(Duration::from_secs(1)),
            MAX_TTL,
        )
        .unwrap_or(Duration::from_secs(60));
    let mut names: Vec<String> = Vec::new();
    for (i, n) in z.names.iter().flat_map(|l| l.get_ref()).enumerate() {
        let field = format!("{prefix}.names[{i}]");
        if let Some(owner) = cx.check(n, &field, |t| owner(t, &name)) {
            if names.contains(&owner) {
                cx.bad(n, &field, format!("{owner} is listed twice"));
            } else {
                names.push(owner);
            }
        }
    }
    if let Some(list) = &z.names {
        if !list.get_ref().is_empty() && public_addresses == 0 {
            cx.bad(
                list,
                &format!("{prefix}.names"),
                Problem::hinted(
                    "geo-steered names are answered with the public addresses of the regions' instances, and no instance lists any",
                    "list each region's instances with their addresses: instances = [{ name = \"us-1\", public = [\"203.0.113.10\"], proxy = \"…\", mesh = \"…\" }]",
                ),
            );
        }
    }
    let mut records = Vec::new();
    let mut by_owner: HashMap<String, Vec<&'static str>> = HashMap::new();
    for (i, r) in z.records.iter().flat_map(|l| l.get_ref()).enumerate() {
        let field = format!("{prefix}.records[{i}]");
        let Some(rec) = record(cx, r, &field, &name, soa_ttl) else {
            continue;
        };
        let kind = rec.data.type_name();
        let others = by_owner.entry(rec.name.clone()).or_default();
        let clash = if names.contains(&rec.name) && matches!(kind, "A" | "AAAA" | "CNAME") {
            Some(format!(
                "{} is a geo-steered name: its {kind} records come from the instances",
                rec.name
            ))
        } else if kind == "CNAME" && rec.name == name {
            Some(format!("a CNAME cannot be at the zone apex {name}"))
        } else if kind == "CNAME" && !others.is_empty() || others.contains(&"CNAME") {
            Some(format!(
                "{} has a CNAME and other records; a CNAME must be alone",
                rec.name
            ))
        } else {
            None
        };
        if let Some(message) = clash {
            cx.bad(r, &field, message);
            continue;
        }
        others.push(kind);
        records.push(rec);
    }
    let geo: HashSet<&String> = names.iter().collect();
    for (i, ns) in nameservers.iter().enumerate() {
        let has_address = records
            .iter()
            .any(|r| &r.name == ns && matches!(r.data, RecordData::A(_) | RecordData::Aaaa(_)));
        if in_zone(ns, &name) && !has_address && !geo.contains(ns) {
            let field = format!("{prefix}.nameservers[{i}]");
            let relative = ns.strip_suffix(&format!(".{name}")).unwrap_or(ns);
            let problem = Problem::hinted(
                format!("name server {ns} is inside the zone but has no address in it (resolvers need its A/AAAA record, the glue)"),
                format!("add records = [{{ name = \"{relative}\", type = \"A\", value = \"…\" }}]"),
            );
            match z.nameservers.as_ref().and_then(|l| l.get_ref().get(i)) {
                Some(v) => cx.bad(v, &field, problem),
                None => cx.bad(entry, &field, problem),
            }
        }
    }
    Some(Zone {
        name,
        nameservers,
        hostmaster,
        soa_ttl,
        negative_ttl,
        names,
        records,
    })
}

fn record(
    cx: &mut Cx<'_>,
    entry: &S<RecordFile>,
    field: &str,
    zone: &str,
    default_ttl: Duration,
) -> Option<StaticRecord> {
    let r = entry.get_ref();
    let required = |cx: &mut Cx<'_>, v: &Option<S<String>>, key: &str| {
        if v.is_none() {
            cx.bad(
                entry,
                &format!("{field}.{key}"),
                format!("missing required key `{key}`"),
            );
        }
    };
    required(cx, &r.name, "name");
    required(cx, &r.kind, "type");
    required(cx, &r.value, "value");
    let name = cx.check(r.name.as_ref()?, &format!("{field}.name"), |t| {
        owner(t, zone)
    });
    let kind = cx.check(r.kind.as_ref()?, &format!("{field}.type"), |t| {
        let upper = t.trim().to_ascii_uppercase();
        checks::choice(&upper, &["A", "AAAA", "CNAME", "TXT", "MX"], "record type")
    });
    let value = r.value.as_ref()?;
    let vfield = format!("{field}.value");
    let data = match kind? {
        "A" => cx.check(value, &vfield, |t| {
            t.trim()
                .parse::<Ipv4Addr>()
                .map(RecordData::A)
                .map_err(|_| Problem::from(format!("\"{t}\" is not an IPv4 address")))
        }),
        "AAAA" => cx.check(value, &vfield, |t| {
            t.trim()
                .parse::<Ipv6Addr>()
                .map(RecordData::Aaaa)
                .map_err(|_| Problem::from(format!("\"{t}\" is not an IPv6 address")))
        }),
        "CNAME" => cx.check(value, &vfield, |t| dns_name(t).map(RecordData::Cname)),
        "TXT" => cx.check(value, &vfield, |t| {
            if t.len() > MAX_TXT {
                Err(format!("TXT value is {} bytes; at most {MAX_TXT}", t.len()).into())
            } else {
                Ok(RecordData::Txt(t.clone()))
            }
        }),
        _ => cx.check(value, &vfield, |t| {
            let bad = || {
                Problem::hinted(
                    format!("invalid MX value \"{t}\""),
                    "write the preference and the host: \"10 mail.example.com\"",
                )
            };
            let (pref, host) = t.trim().split_once(char::is_whitespace).ok_or_else(bad)?;
            let pref: u16 = pref.parse().map_err(|_| bad())?;
            Ok(RecordData::Mx(pref, dns_name(host.trim())?))
        }),
    };
    let ttl = cx
        .duration_within(
            r.ttl.as_ref(),
            &format!("{field}.ttl"),
            default_ttl,
            Min::AtLeast(Duration::from_secs(1)),
            MAX_TTL,
        )
        .unwrap_or(default_ttl);
    Some(StaticRecord {
        name: name?,
        ttl,
        data: data?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_owners() {
        assert_eq!(dns_name("NS1.Example.com.").unwrap(), "ns1.example.com");
        assert!(dns_name("a..b").is_err());
        assert!(dns_name("-a.b").is_err());
        assert!(dns_name(&"a".repeat(64)).is_err());
        assert_eq!(owner("@", "example.com").unwrap(), "example.com");
        assert_eq!(owner("www", "example.com").unwrap(), "www.example.com");
        assert_eq!(
            owner("www.example.com.", "example.com").unwrap(),
            "www.example.com"
        );
        assert!(owner("www.example.org.", "example.com").is_err());
        assert!(in_zone("a.example.com", "example.com"));
        assert!(!in_zone("aexample.com", "example.com"));
    }
}

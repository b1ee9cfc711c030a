//! The configured zones, compiled once per config into hickory records: for each name,
//! whether it is geo-steered and its static records; the SOA and NS of each apex.

use std::collections::{HashMap, HashSet};

use smallvec::SmallVec;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use meridian_config::{GeoDns, RecordData, Zone};

use crate::DnsError;

/// SOA timers: how often secondaries would refresh and retry, and when they expire
/// (Meridian has no secondaries; these are the RFC 1912 suggestions).
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 1_209_600;

/// A fully qualified name from a validated config name.
pub(crate) fn fqdn(name: &str) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{name}.")).map_err(|e| DnsError::Name {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

/// A name as a lookup key: its labels lower-cased, last label first, each preceded by its
/// length (`www.Example.test.` → `\x04test\x07example\x03www`). A name is in a zone
/// exactly when its key starts with the zone's key; matching a query needs no allocation
/// and no case-insensitive comparison of labels.
pub type Key = SmallVec<[u8; 64]>;

/// The key of `name` (see [`Key`]).
pub fn key(name: &Name) -> Key {
    let mut k = Key::new();
    for label in name.iter().rev() {
        k.push(label.len() as u8);
        k.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    k
}

/// What a zone holds at one name.
#[derive(Debug, Default)]
pub struct Owner {
    /// Answered with instances' addresses (A/AAAA).
    pub geo: bool,
    /// For a geo-steered name: the service whose plan steers it (the one its host name
    /// routes to; an index into the snapshot's services).
    pub service: u16,
    /// The zone's apex (SOA and NS live here).
    pub apex: bool,
    /// Static records.
    pub records: Vec<Record>,
}

impl Owner {
    /// The static CNAME at this name, if any.
    pub fn cname(&self) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME)
    }
}

/// One compiled zone.
#[derive(Debug)]
pub struct ZoneData {
    /// The apex.
    pub apex: Name,
    /// SOA parts (the serial is filled in per answer).
    mname: Name,
    rname: Name,
    soa_ttl: u32,
    /// The SOA MINIMUM: how long negative answers are cached.
    pub negative_ttl: u32,
    /// NS records at the apex.
    pub ns: Vec<Record>,
    /// Addresses of in-zone name servers (the additional section of NS answers).
    pub glue: Vec<Record>,
    /// The apex's key.
    pub key: Key,
    /// Names holding records, by key.
    pub owners: HashMap<Key, Owner>,
    /// The geo-steered names as configured, with the service each follows.
    pub geo_names: Vec<(String, u16)>,
    /// Names with nothing of their own but names below them (empty non-terminals: NODATA,
    /// not NXDOMAIN; RFC 8020), by key.
    pub empty_non_terminals: HashSet<Key>,
}

impl ZoneData {
    fn compile(z: &Zone, service_of: &dyn Fn(&str) -> u16) -> Result<ZoneData, DnsError> {
        let apex = fqdn(&z.name)?;
        let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let mut owners: HashMap<Key, Owner> = HashMap::new();
        let mut geo_names = Vec::with_capacity(z.names.len());
        for n in &z.names {
            let name = fqdn(n)?;
            let host = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
            let service = service_of(&host);
            let owner = owners.entry(key(&name)).or_default();
            owner.geo = true;
            owner.service = service;
            geo_names.push((n.clone(), service));
        }
        for r in &z.records {
            let name = fqdn(&r.name)?;
            let data = match &r.data {
                RecordData::A(ip) => RData::A(A(*ip)),
                RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
                RecordData::Cname(target) => RData::CNAME(CNAME(fqdn(target)?)),
                RecordData::Txt(text) => RData::TXT(TXT::new(txt_strings(text))),
                RecordData::Mx(pref, host) => RData::MX(MX::new(*pref, fqdn(host)?)),
            };
            owners
                .entry(key(&name))
                .or_default()
                .records
                .push(Record::from_rdata(name, secs(r.ttl), data));
        }
        let soa_ttl = secs(z.soa_ttl);
        let ns: Vec<Record> = z
            .nameservers
            .iter()
            .map(|n| {
                Ok(Record::from_rdata(
                    apex.clone(),
                    soa_ttl,
                    RData::NS(NS(fqdn(n)?)),
                ))
            })
            .collect::<Result<_, DnsError>>()?;
        let mut glue = Vec::new();
        for n in &z.nameservers {
            if let Some(owner) = owners.get(&key(&fqdn(n)?)) {
                glue.extend(
                    owner
                        .records
                        .iter()
                        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                        .cloned(),
                );
            }
        }
        let apex_key = key(&apex);
        let mut empty_non_terminals = HashSet::new();
        for k in owners.keys() {
            // Every ancestor between the apex and the name: a prefix of its key that ends
            // at a label boundary.
            let mut at = apex_key.len();
            while at < k.len() {
                let end = at + 1 + usize::from(k[at]);
                if end < k.len() && !owners.contains_key(&k[..end]) {
                    empty_non_terminals.insert(Key::from_slice(&k[..end]));
                }
                at = end;
            }
        }
        owners.entry(apex_key.clone()).or_default().apex = true;
        Ok(ZoneData {
            mname: ns
                .first()
                .and_then(|r| match r.data() {
                    RData::NS(NS(n)) => Some(n.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| apex.clone()),
            rname: fqdn(&z.hostmaster)?,
            soa_ttl,
            negative_ttl: secs(z.negative_ttl),
            apex,
            key: apex_key,
            ns,
            glue,
            owners,
            geo_names,
            empty_non_terminals,
        })
    }

    /// The zone's SOA record with `serial`; with `negative`, for the authority section of
    /// a negative answer (TTL capped at the SOA MINIMUM, RFC 2308).
    pub fn soa(&self, serial: u32, negative: bool) -> Record {
        let soa = SOA::new(
            self.mname.clone(),
            self.rname.clone(),
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.negative_ttl,
        );
        let ttl = if negative {
            self.soa_ttl.min(self.negative_ttl)
        } else {
            self.soa_ttl
        };
        Record::from_rdata(self.apex.clone(), ttl, RData::SOA(soa))
    }
}

/// A TXT value as strings of at most 255 bytes (split on character boundaries).
fn txt_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > 255 {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    out.push(current);
    out
}

/// Every configured zone.
#[derive(Debug, Default)]
pub struct Zones {
    zones: Vec<ZoneData>,
}

impl Zones {
    /// Compiles the zones of `[geodns]`; `service_of` says which service a geo-steered
    /// host name (lower case, no trailing dot) follows.
    ///
    /// # Errors
    ///
    /// [`DnsError::Name`] if a name the config validated is not a DNS name to hickory.
    pub fn compile(config: &GeoDns, service_of: &dyn Fn(&str) -> u16) -> Result<Zones, DnsError> {
        Ok(Zones {
            zones: config
                .zones
                .iter()
                .map(|z| ZoneData::compile(z, service_of))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The zone a name with key `k` is in, if any (zones never nest).
    pub fn find(&self, k: &[u8]) -> Option<&ZoneData> {
        self.zones.iter().find(|z| k.starts_with(&z.key))
    }

    /// Every zone.
    pub fn iter(&self) -> impl Iterator<Item = &ZoneData> {
        self.zones.iter()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lower_case_and_reversed() {
        let k = key(&Name::from_ascii("WwW.Example.test.").unwrap());
        assert_eq!(&k[..], b"\x04test\x07example\x03www");
        let apex = key(&Name::from_ascii("example.test.").unwrap());
        assert!(k.starts_with(&apex));
        let other = key(&Name::from_ascii("www.xexample.test.").unwrap());
        assert!(!other.starts_with(&apex));
    }

    #[test]
    fn long_txt_values_are_split_into_255_byte_strings() {
        let parts = txt_strings(&"é".repeat(200));
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts.concat(), "é".repeat(200));
        assert_eq!(txt_strings(""), vec![String::new()]);
    }
}

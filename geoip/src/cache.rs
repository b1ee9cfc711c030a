//! A small lock-free cache of database answers by client network: the /24 of an IPv4
//! address, the /48 of an IPv6 one.
//!
//! A database lookup walks the search tree (up to 32 or 128 nodes) and decodes the record
//! (a map of maps with strings); traffic comes from the same networks again and again. An
//! answer is cached only when it holds for the whole network: the database's prefix for the
//! address is that network or shorter, and the location is country-level (its coordinates
//! are the country's centroid, as with every Country database), so it packs into one
//! `AtomicU64` together with its key. City-level answers (own coordinates) and answers from
//! networks smaller than the key are looked up every time.
//!
//! Slots are direct-mapped and self-validating (the key is in the entry), so concurrent
//! readers and writers need no lock: a race can only cost a miss. A [`crate::Locator`] owns
//! its cache, so a reload (a new locator) starts cold and never serves a stale answer.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::centroids::country_info;
use crate::types::{Continent, CountryCode, Location, LocationSource};

/// Number of slots (8 bytes each: 128 KiB).
const SLOTS: usize = 1 << 14;

const OCCUPIED: u64 = 1 << 63;
const V6: u64 = 1 << 62;
const KEY_SHIFT: u32 = 14;
const KEY_MASK: u64 = (1 << 48) - 1;
const COUNTRY_SHIFT: u32 = 4;
const COUNTRY_MASK: u64 = 0x3ff;
/// "No location" (the address is in no record, or the record has no usable country).
const NO_COUNTRY: u64 = COUNTRY_MASK;
const CONTINENT_SHIFT: u32 = 1;
const CONTINENT_MASK: u64 = 0x7;
const NO_CONTINENT: u64 = CONTINENT_MASK;

/// Prefix length of the cached network, by family.
const V4_BITS: usize = 24;
const V6_BITS: usize = 48;

/// The cache of one locator.
pub(crate) struct NetCache {
    slots: Box<[AtomicU64]>,
}

/// An address's cache key: (network bits, family flag).
fn key(ip: IpAddr) -> (u64, u64) {
    match ip {
        IpAddr::V4(v4) => (u64::from(u32::from(v4) >> (32 - V4_BITS)), 0),
        IpAddr::V6(v6) => ((u128::from(v6) >> (128 - V6_BITS)) as u64 & KEY_MASK, V6),
    }
}

fn slot_of(key: u64, family: u64) -> usize {
    // Fibonacci hashing: neighbouring networks land far apart.
    let h = (key ^ family).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - SLOTS.trailing_zeros())) as usize
}

fn country_index(c: CountryCode) -> u64 {
    let [a, b] = c.to_bytes();
    u64::from(a - b'A') * 26 + u64::from(b - b'A')
}

fn country_from_index(i: u64) -> Option<CountryCode> {
    if i >= 26 * 26 {
        return None;
    }
    let bytes = [b'A' + (i / 26) as u8, b'A' + (i % 26) as u8];
    CountryCode::parse(std::str::from_utf8(&bytes).ok()?)
}

/// Packs a country-level answer; `None` when it does not fit (own coordinates).
fn pack(answer: Option<&Location>) -> Option<u64> {
    let Some(loc) = answer else {
        return Some(NO_COUNTRY << COUNTRY_SHIFT);
    };
    if loc.coordinates != country_info(loc.country).map(|t| t.1) {
        return None;
    }
    let continent = match loc.continent {
        Some(c) => Continent::ALL.iter().position(|x| *x == c)? as u64,
        None => NO_CONTINENT,
    };
    Some(country_index(loc.country) << COUNTRY_SHIFT | continent << CONTINENT_SHIFT)
}

fn unpack(entry: u64) -> Option<Location> {
    let country = country_from_index((entry >> COUNTRY_SHIFT) & COUNTRY_MASK)?;
    let continent = match (entry >> CONTINENT_SHIFT) & CONTINENT_MASK {
        NO_CONTINENT => None,
        i => Continent::ALL.get(i as usize).copied(),
    };
    Some(Location {
        country,
        continent,
        coordinates: country_info(country).map(|t| t.1),
        source: LocationSource::Database,
    })
}

impl NetCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        NetCache {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The cached answer for `ip`'s network: `Some(answer)` on a hit (the answer itself may
    /// be "no location"), `None` on a miss. `ip` must be canonical (no IPv4-mapped form).
    pub(crate) fn get(&self, ip: IpAddr) -> Option<Option<Location>> {
        let (key, family) = key(ip);
        let entry = self.slots[slot_of(key, family)].load(Ordering::Relaxed);
        let expected = OCCUPIED | family | key << KEY_SHIFT;
        let tag_mask = OCCUPIED | V6 | KEY_MASK << KEY_SHIFT;
        (entry & tag_mask == expected).then(|| unpack(entry))
    }

    /// Remembers `answer` for `ip`'s network, if the database's `prefix_len` for the
    /// address covers the whole network and the answer is country-level.
    pub(crate) fn put(&self, ip: IpAddr, prefix_len: usize, answer: Option<&Location>) {
        let bits = if ip.is_ipv4() { V4_BITS } else { V6_BITS };
        if prefix_len > bits {
            return;
        }
        let Some(value) = pack(answer) else { return };
        let (key, family) = key(ip);
        self.slots[slot_of(key, family)].store(
            OCCUPIED | family | key << KEY_SHIFT | value,
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(country: &str) -> Location {
        crate::at_centroid(CountryCode::parse(country).unwrap()).unwrap()
    }

    #[test]
    fn every_country_level_answer_round_trips() {
        let mut n = 0;
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                let code = String::from_utf8(vec![a, b]).unwrap();
                let cc = CountryCode::parse(&code).unwrap();
                let loc = match country_info(cc) {
                    Some(_) => at(&code),
                    None => Location {
                        country: cc,
                        continent: None,
                        coordinates: None,
                        source: LocationSource::Database,
                    },
                };
                assert_eq!(unpack(pack(Some(&loc)).unwrap()), Some(loc), "{code}");
                n += 1;
            }
        }
        assert_eq!(n, 676);
        assert_eq!(unpack(pack(None).unwrap()), None);
    }

    #[test]
    fn hits_only_for_the_same_network_and_family() {
        let c = NetCache::new();
        let de = at("DE");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.get(ip("80.128.0.1")), None);
        c.put(ip("80.128.0.1"), 16, Some(&de));
        assert_eq!(c.get(ip("80.128.0.254")), Some(Some(de)), "same /24");
        assert_eq!(c.get(ip("80.128.1.1")), None, "next /24");
        // The IPv6 network with the same low bits is another key.
        assert_eq!(c.get(ip("::50:8000:1")), None);
        c.put(ip("2001:db8:1::1"), 32, None);
        assert_eq!(
            c.get(ip("2001:db8:1:ffff::9")),
            Some(None),
            "negative answers too"
        );
        assert_eq!(c.get(ip("2001:db8:2::1")), None, "next /48");
    }

    #[test]
    fn narrower_networks_and_own_coordinates_are_not_cached() {
        let c = NetCache::new();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        c.put(ip("192.0.2.1"), 25, Some(&at("FR")));
        assert_eq!(
            c.get(ip("192.0.2.1")),
            None,
            "a /25 does not speak for the /24"
        );
        let mut city = at("US");
        city.coordinates = crate::Coordinates::new(47.6, -122.3);
        c.put(ip("198.51.100.1"), 24, Some(&city));
        assert_eq!(
            c.get(ip("198.51.100.1")),
            None,
            "city-level answers are not packed"
        );
        c.put(ip("2001:db8::1"), 49, Some(&at("FR")));
        assert_eq!(c.get(ip("2001:db8::1")), None);
    }
}

//! Steering and distance RTTs precomputed per client country when the snapshot is built:
//! a country-level client then costs one table lookup.

use meridian_geoip::{great_circle_km, Coordinates, Location};

use super::steer::steer;
use super::view::{distance_rtt_us, micros, Plan, View};

/// Steering results and distance RTTs precomputed for clients at a country's centroid (and
/// for clients of unknown location), indexed by country code.
#[derive(Debug, Default)]
pub struct CountryTable {
    /// Slot `(a - 'A') * 26 + (b - 'A')` for country `ab`.
    countries: Vec<Option<Precomputed>>,
    /// For clients whose location is unknown.
    unknown: Precomputed,
}

/// One precomputed decision input.
#[derive(Debug, Default)]
pub(crate) struct Precomputed {
    /// Where the client is assumed to be (for the continent check).
    pub(crate) continent: Option<meridian_geoip::Continent>,
    /// The country's centroid.
    pub(crate) at: Option<Coordinates>,
    /// The steering result.
    pub(crate) plan: Plan,
    /// Distance-based RTT (µs) from the client to each region, by region index.
    pub(crate) rtt_us: Vec<u32>,
}

fn slot(c: meridian_geoip::CountryCode) -> usize {
    let [a, b] = c.to_bytes();
    usize::from(a.wrapping_sub(b'A')) * 26 + usize::from(b.wrapping_sub(b'A'))
}

impl CountryTable {
    /// Precomputes every country of the built-in centroid table for the regions in `snap`.
    pub fn build(snap: View<'_>) -> CountryTable {
        let rtts = |from: Coordinates| -> Vec<u32> {
            snap.coords
                .iter()
                .map(|c| micros(distance_rtt_us(snap, great_circle_km(from, *c))))
                .collect()
        };
        let mut countries: Vec<Option<Precomputed>> = (0..26 * 26).map(|_| None).collect();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                let code = [a as char, b as char].iter().collect::<String>();
                let Some(cc) = meridian_geoip::CountryCode::parse(&code) else {
                    continue;
                };
                let Some(loc) = meridian_geoip::at_centroid(cc) else {
                    continue;
                };
                let Some(at) = loc.coordinates else {
                    continue;
                };
                countries[slot(cc)] = Some(Precomputed {
                    continent: loc.continent,
                    at: Some(at),
                    plan: steer(snap, Some(&loc)),
                    rtt_us: rtts(at),
                });
            }
        }
        CountryTable {
            countries,
            unknown: Precomputed {
                continent: None,
                at: None,
                plan: steer(snap, None),
                rtt_us: rtts(snap.node_coords),
            },
        }
    }

    /// The table for plans made from no instance's point of view
    /// ([`super::plan_anywhere`]): `snap`'s `local_order` is the neutral order, and a client
    /// of unknown place has no distance term.
    pub fn build_anywhere(snap: View<'_>) -> CountryTable {
        let mut table = CountryTable::build(snap);
        table.unknown.rtt_us.iter_mut().for_each(|r| *r = 0);
        table
    }

    /// The precomputed entry for `loc`, if the client sits at its country's centroid.
    pub(crate) fn get(&self, loc: Option<&Location>) -> Option<&Precomputed> {
        let Some(loc) = loc else {
            return Some(&self.unknown);
        };
        let p = self.countries.get(slot(loc.country))?.as_ref()?;
        let same_place = match (loc.coordinates, p.at) {
            (Some(a), Some(b)) => a.latitude == b.latitude && a.longitude == b.longitude,
            (None, _) => true,
            _ => false,
        };
        (same_place && loc.continent == p.continent).then_some(p)
    }
}

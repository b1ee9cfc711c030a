//! What GeoDNS answers right now, for `/status`: per continent, the region its clients are
//! sent to; per region, the addresses that may be answered.

use meridian_geoip::{Continent, Coordinates, CountryCode, Location, LocationSource};

use crate::answer::{Answerer, Choice, State};

/// A rough middle of each continent, standing for "a client somewhere on it" where
/// steering falls back to proximity.
fn middle(c: Continent) -> Coordinates {
    let (latitude, longitude) = match c {
        Continent::Africa => (2.0, 21.0),
        Continent::Antarctica => (-80.0, 0.0),
        Continent::Asia => (34.0, 100.0),
        Continent::Europe => (50.0, 15.0),
        Continent::NorthAmerica => (45.0, -100.0),
        Continent::Oceania => (-25.0, 135.0),
        Continent::SouthAmerica => (-15.0, -60.0),
    };
    Coordinates {
        latitude,
        longitude,
    }
}

/// A client on `c` whose country no steering map names.
fn somewhere_on(c: Continent) -> Option<Location> {
    Some(Location {
        country: CountryCode::parse("ZZ")?,
        continent: Some(c),
        coordinates: Some(middle(c)),
        source: LocationSource::Override,
    })
}

/// Where each continent's clients asking for a name of service `service` are answered
/// from: the region's name, or `None` for a fail-open answer (no region in their plan has
/// an instance up).
pub fn by_continent(state: &State, service: usize) -> Vec<(&'static str, Option<String>)> {
    Continent::ALL
        .iter()
        .map(|&c| {
            let choice = Answerer::choose(state, service, somewhere_on(c).as_ref());
            let region = match choice {
                Choice::Region(i) => state.health.regions.get(i).map(|r| r.name.to_string()),
                Choice::FailOpen => None,
            };
            (c.code(), region)
        })
        .collect()
}

//! Value types: country codes, continents, coordinates and the result of a lookup.

use std::fmt;

/// An ISO 3166-1 alpha-2 country code: exactly two upper-case ASCII letters.
///
/// Only shape is checked, not membership: `XK` (Kosovo) and `ZZ` are accepted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses a code: exactly two ASCII letters, either case (`"de"` → `DE`).
    #[must_use]
    pub fn parse(code: &str) -> Option<CountryCode> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => None,
        }
    }

    /// The code as a string slice, e.g. `"DE"`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Always two ASCII letters (checked in `parse`), so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The two upper-case ASCII bytes.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 2] {
        self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

/// A continent, as coded by GeoNames and MaxMind (`continent.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Continent {
    /// `AF`.
    Africa,
    /// `AN`.
    Antarctica,
    /// `AS`.
    Asia,
    /// `EU`.
    Europe,
    /// `NA`: North and Central America and the Caribbean.
    NorthAmerica,
    /// `OC`.
    Oceania,
    /// `SA`.
    SouthAmerica,
}

impl Continent {
    /// Every continent, in code order.
    pub const ALL: &'static [Continent] = &[
        Continent::Africa,
        Continent::Antarctica,
        Continent::Asia,
        Continent::Europe,
        Continent::NorthAmerica,
        Continent::Oceania,
        Continent::SouthAmerica,
    ];

    /// The two-letter code: `"AF"`, `"AN"`, `"AS"`, `"EU"`, `"NA"`, `"OC"` or `"SA"`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Continent::Africa => "AF",
            Continent::Antarctica => "AN",
            Continent::Asia => "AS",
            Continent::Europe => "EU",
            Continent::NorthAmerica => "NA",
            Continent::Oceania => "OC",
            Continent::SouthAmerica => "SA",
        }
    }

    /// Parses a two-letter code, either case; `None` for anything else.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Continent> {
        Continent::ALL
            .iter()
            .copied()
            .find(|c| c.code().eq_ignore_ascii_case(code))
    }
}

impl fmt::Display for Continent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A point on Earth in decimal degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    /// Latitude, −90 to 90, north positive.
    pub latitude: f64,
    /// Longitude, −180 to 180, east positive.
    pub longitude: f64,
}

impl Coordinates {
    /// Checked constructor: `None` unless both values are finite and in range.
    #[must_use]
    pub fn new(latitude: f64, longitude: f64) -> Option<Coordinates> {
        let c = Coordinates {
            latitude,
            longitude,
        };
        c.is_valid().then_some(c)
    }

    /// Whether the latitude is within ±90 and the longitude within ±180 (NaN is not).
    #[must_use]
    pub fn is_valid(&self) -> bool {
        (-90.0..=90.0).contains(&self.latitude) && (-180.0..=180.0).contains(&self.longitude)
    }
}

/// Where a [`Location`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocationSource {
    /// A configured CIDR override.
    Override,
    /// The MaxMind DB database.
    Database,
}

/// The result of locating a client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// The country.
    pub country: CountryCode,
    /// The continent: from the record if it has one, else from the built-in country table.
    pub continent: Option<Continent>,
    /// From the record (or override) if it has them, else the country's centroid.
    pub coordinates: Option<Coordinates>,
    /// Override or database.
    pub source: LocationSource,
}

/// Mean Earth radius (IUGG), in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in kilometres between two points (haversine formula, mean Earth
/// radius 6371.0088 km).
#[must_use]
pub fn great_circle_km(a: Coordinates, b: Coordinates) -> f64 {
    let (lat1, lat2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let d_lat = lat2 - lat1;
    let d_lon = (b.longitude - a.longitude).to_radians();
    let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64, longitude: f64) -> Coordinates {
        Coordinates::new(latitude, longitude).expect("valid coordinates")
    }

    #[test]
    fn country_code_parsing() {
        let de = CountryCode::parse("de").expect("de");
        assert_eq!(de.as_str(), "DE");
        assert_eq!(Some(de), CountryCode::parse("DE"));
        assert_eq!(de.to_string(), "DE");
        assert_eq!(format!("{de:?}"), "CountryCode(DE)");
        for bad in ["", "D", "DEU", "D1", "1D", "Ü", "ÜX", " D", "--"] {
            assert_eq!(CountryCode::parse(bad), None, "{bad:?}");
        }
        assert!(CountryCode::parse("AT") < CountryCode::parse("DE"));
    }

    #[test]
    fn continent_codes() {
        assert_eq!(Continent::ALL.len(), 7);
        for c in Continent::ALL {
            assert_eq!(Continent::from_code(c.code()), Some(*c));
            assert_eq!(Continent::from_code(&c.code().to_lowercase()), Some(*c));
        }
        assert_eq!(Continent::from_code("XX"), None);
        assert_eq!(Continent::from_code("EUR"), None);
        assert_eq!(Continent::NorthAmerica.to_string(), "NA");
    }

    #[test]
    fn coordinates_validation() {
        assert!(Coordinates::new(90.0, -180.0).is_some());
        assert!(Coordinates::new(90.1, 0.0).is_none());
        assert!(Coordinates::new(0.0, 180.5).is_none());
        assert!(Coordinates::new(f64::NAN, 0.0).is_none());
        assert!(Coordinates::new(0.0, f64::INFINITY).is_none());
    }

    #[test]
    fn haversine() {
        let london = at(51.5074, -0.1278);
        let new_york = at(40.7128, -74.0060);
        let d = great_circle_km(london, new_york);
        assert!((d - 5570.0).abs() < 20.0, "{d}");
        assert_eq!(great_circle_km(london, london), 0.0);
        assert!((great_circle_km(new_york, london) - d).abs() < 1e-9);
        // Antipodes: half the circumference, no NaN from rounding.
        let half = great_circle_km(at(0.0, 0.0), at(0.0, 180.0));
        assert!(
            (half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6,
            "{half}"
        );
    }
}

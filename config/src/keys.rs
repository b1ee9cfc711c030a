//! Positions of table keys (region and service names, steering map keys), read in a
//! second, lenient pass over a file that already deserialized: errors about a table point
//! at its name.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::file::S;

/// Positions of table keys, from a second pass over a file that already deserialized.
///
/// `serde_path_to_error` cannot record a path segment for a `Spanned` key, so the main
/// pass uses plain string keys and this pass collects their spans.
#[derive(Debug, Default)]
pub(crate) struct KeySpans {
    /// Top-level keys (`node`, `regions`, ...) → span of their first mention.
    pub top: HashMap<String, Range<usize>>,
    /// Spans of the region names, in file order.
    pub regions: Vec<Range<usize>>,
    /// Spans of the keys of `[steering.countries]`, `[steering.continents]`.
    pub steering: MapKeySpans,
    /// Spans of the keys of `[residency.countries]`, `[residency.continents]`.
    pub residency: MapKeySpans,
    /// Spans of the service names and of their pools' region names, in file order.
    pub services: Vec<ServiceKeySpans>,
}

/// Key spans of one `[services.NAME]` table.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceKeySpans {
    /// The service's name.
    pub name: Range<usize>,
    /// The region names of `[services.NAME.regions.*]`.
    pub regions: Vec<Range<usize>>,
}

/// The `services` table's key spans.
struct ServiceKeyList(Vec<ServiceKeySpans>);

/// The keys of one service table, of which only `regions` matters.
#[derive(Default)]
struct ServiceInner(Vec<Range<usize>>);

impl<'de> Deserialize<'de> for ServiceInner {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InnerVisitor;
        impl<'de> Visitor<'de> for InnerVisitor {
            type Value = ServiceInner;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServiceInner, A::Error> {
                let mut regions = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "regions" {
                        regions = map.next_value::<KeyList>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ServiceInner(regions))
            }
        }
        deserializer.deserialize_map(InnerVisitor)
    }
}

impl<'de> Deserialize<'de> for ServiceKeyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ServiceKeyList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServiceKeyList, A::Error> {
                let mut out = Vec::new();
                while let Some((key, inner)) = map.next_entry::<S<String>, ServiceInner>()? {
                    out.push(ServiceKeySpans {
                        name: key.span(),
                        regions: inner.0,
                    });
                }
                Ok(ServiceKeyList(out))
            }
        }
        deserializer.deserialize_map(ListVisitor)
    }
}

/// Key spans of a `countries` / `continents` pair of tables.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MapKeySpans {
    pub countries: KeyList,
    pub continents: KeyList,
}

/// The spans of a table's keys, in file order.
#[derive(Debug, Default)]
pub(crate) struct KeyList(pub Vec<Range<usize>>);

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyListVisitor;
        impl<'de> Visitor<'de> for KeyListVisitor {
            type Value = KeyList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyList, A::Error> {
                let mut spans = Vec::new();
                while let Some((key, IgnoredAny)) = map.next_entry::<S<String>, IgnoredAny>()? {
                    spans.push(key.span());
                }
                Ok(KeyList(spans))
            }
        }
        deserializer.deserialize_map(KeyListVisitor)
    }
}

impl<'de> Deserialize<'de> for KeySpans {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeySpansVisitor;
        impl<'de> Visitor<'de> for KeySpansVisitor {
            type Value = KeySpans;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeySpans, A::Error> {
                let mut spans = KeySpans::default();
                while let Some(key) = map.next_key::<S<String>>()? {
                    match key.get_ref().as_str() {
                        "regions" => spans.regions = map.next_value::<KeyList>()?.0,
                        "steering" => spans.steering = map.next_value()?,
                        "residency" => spans.residency = map.next_value()?,
                        "services" => spans.services = map.next_value::<ServiceKeyList>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    let span = key.span();
                    spans.top.entry(key.into_inner()).or_insert(span);
                }
                Ok(spans)
            }
        }
        deserializer.deserialize_map(KeySpansVisitor)
    }
}

impl KeySpans {
    /// Collects key spans from `text`; empty if that fails (positions are a nicety).
    pub(crate) fn collect(text: &str) -> Self {
        KeySpans::deserialize(toml::Deserializer::new(text)).unwrap_or_default()
    }
}

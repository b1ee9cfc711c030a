//! Reading the file structures: a table and nothing else for every struct, values with
//! their spans.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use toml::Spanned;

/// A value together with its byte span in the file.
pub(crate) type S<T> = Spanned<T>;

/// Implements `Deserialize` for file structures (declared with `#[serde(remote = "Self")]`,
/// which makes the derived code an inherent `deserialize`) through [`TableOnly`].
macro_rules! table_only {
    ($($name:ident),* $(,)?) => {
        $(
            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                    $name::deserialize(TableOnly(deserializer))
                }
            }
        )*
    };
}
pub(crate) use table_only;

/// A deserializer that lets a struct be read from a table only.
///
/// serde's derived structs also accept an array, taking its elements as the fields in
/// order: `logging = ["debug"]` would set `logging.level`, and `[[timeouts]]` would be
/// read as a list of fields. Through this wrapper an array is a type error
/// ("expected a table") like any other.
pub(crate) struct TableOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for TableOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_struct(name, fields, TableVisitor(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// Passes a table on to a derived struct visitor; anything else is a type error.
struct TableVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for TableVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(map)
    }
}

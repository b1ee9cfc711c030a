//! One setting of a layered table (a global table and a region's own, merged key by key):
//! unset, written but invalid (already reported), or a value with where it was written.

use std::ops::Range;

use crate::checks::Problem;
use crate::context::Cx;
use crate::file::S;

/// One setting from one layer (global or region).
#[derive(Debug, Clone)]
pub(crate) enum Setting<T> {
    /// Not written in this layer.
    Unset,
    /// Written but invalid (already reported).
    Bad,
    /// Written and valid: the value, its span and its field path.
    Set(T, Range<usize>, String),
}

impl<T: Clone> Setting<T> {
    /// This layer's setting, or `under`'s if this layer does not set it.
    pub(crate) fn over(&self, under: &Self) -> Self {
        match self {
            Setting::Unset => under.clone(),
            other => other.clone(),
        }
    }

    /// The value, or `default` when unset or invalid.
    pub(crate) fn or(&self, default: T) -> T {
        match self {
            Setting::Set(v, _, _) => v.clone(),
            _ => default,
        }
    }
}

pub(crate) fn setting<T, U>(
    cx: &mut Cx<'_>,
    value: &Option<S<T>>,
    field: String,
    check: impl FnOnce(&T) -> Result<U, Problem>,
) -> Setting<U> {
    match value {
        None => Setting::Unset,
        Some(v) => match cx.check(v, &field, check) {
            Some(parsed) => Setting::Set(parsed, v.span(), field),
            None => Setting::Bad,
        },
    }
}

//! Serde helpers for types with a text form that human-readable formats
//! (JSON) should see, and a compact form for binary formats (bincode).

use std::borrow::Cow;
use std::fmt::Display;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Serializes `value` as its `Display` text when `s` is human-readable, else
/// through `binary`.
pub(crate) fn serialize<S, T>(
    value: &T,
    s: S,
    binary: impl FnOnce(S) -> Result<S::Ok, S::Error>,
) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Display,
{
    if s.is_human_readable() { s.collect_str(value) } else { binary(s) }
}

/// The inverse of [`serialize`]: `FromStr` when `d` is human-readable, else
/// `binary`.
pub(crate) fn deserialize<'de, D, T>(
    d: D,
    binary: impl FnOnce(D) -> Result<T, D::Error>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    if d.is_human_readable() {
        let s = Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    } else {
        binary(d)
    }
}

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

/// A fixed-size byte array as serde bytes (one length and a block copy in
/// binary formats, instead of one element per byte).
pub(crate) fn serialize_array<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// The inverse of [`serialize_array`]: exactly `N` bytes.
pub(crate) fn deserialize_array<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    struct Array<const N: usize>;
    impl<'de, const N: usize> serde::de::Visitor<'de> for Array<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{N} bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(Array::<N>)
}

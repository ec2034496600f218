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
    if !s.is_human_readable() {
        return binary(s);
    }
    // Written into a buffer on the stack and given as one string: through
    // `collect_str` a serializer such as JSON escapes each piece the
    // formatter writes apart.
    let mut text = StackText { buf: [0; STACK_TEXT], len: 0 };
    match std::fmt::write(&mut text, format_args!("{value}")) {
        Ok(()) => s.serialize_str(text.as_str()),
        Err(_) => s.collect_str(value),
    }
}

/// The longest text [`serialize`] writes on the stack (a pseudonym is 44
/// bytes, a digest 64; longer texts go through `collect_str`).
const STACK_TEXT: usize = 96;

/// A text of at most [`STACK_TEXT`] bytes.
struct StackText {
    buf: [u8; STACK_TEXT],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        // Whole `&str`s were copied in: always UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let into = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        into.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
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

//! Keyed pseudonyms: [`Pseudonym`] and the [`KeyId`] of the key that made
//! it. The token is computed by `privtel-filter`; the model only carries it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::serde_text;

/// Identifies a pseudonymisation key of a customer. Pseudonyms carry it, so
/// after a key rotation old and new tokens are told apart, and destroying a
/// key tells which tokens became unlinkable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(u32);

impl KeyId {
    /// Wraps a key number.
    pub const fn new(n: u32) -> Self {
        Self(n)
    }

    /// The key number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for KeyId {
    fn from(n: u32) -> Self {
        Self(n)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// Length of a pseudonym token in bytes (128 bits: no accidental collision
/// among the values one customer can have, half the size of a full hash).
pub const TOKEN_LEN: usize = 16;

/// A keyed pseudonym: a token computed from a personal value under a
/// customer's secret key, and the id of that key.
///
/// Equal values give equal tokens under one key, so records can still be
/// linked; without the key, the token says nothing about the value. The token
/// is computed by `privtel-filter`; this type only carries it.
///
/// Text form: `k<key id>:<32 hex digits>` (`k7:00ff…`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Pseudonym {
    key_id: KeyId,
    token: [u8; TOKEN_LEN],
}

impl Pseudonym {
    /// Wraps a token and the key it was made with.
    pub const fn new(key_id: KeyId, token: [u8; TOKEN_LEN]) -> Self {
        Self { key_id, token }
    }

    /// The key the token was made with.
    pub const fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The token bytes.
    pub const fn token(&self) -> &[u8; TOKEN_LEN] {
        &self.token
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.key_id)?;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0; 2 * TOKEN_LEN];
        for (pair, b) in hex.chunks_exact_mut(2).zip(self.token) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl Pseudonym {
    /// The pseudonym `s` is the text form of, if it is one; no error is
    /// made (asking whether a user id is a pseudonym is on every record's
    /// path, and most are not).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (key, hex) = s.split_once(':')?;
        let key = key.strip_prefix('k')?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let key_id = KeyId(key.parse().ok()?);
        if hex.len() != 2 * TOKEN_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut token = [0; TOKEN_LEN];
        for (i, byte) in token.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self { key_id, token })
    }
}

impl FromStr for Pseudonym {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s).ok_or_else(|| Error::rejected("pseudonym", s, "'k<key id>:<32 hex digits>'"))
    }
}

impl Serialize for Pseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_text::serialize(self, s, |s| {
            use serde::ser::SerializeTuple as _;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.key_id.0)?;
            t.serialize_element(&Token(&self.token))?;
            t.end()
        })
    }
}

impl<'de> Deserialize<'de> for Pseudonym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_text::deserialize(d, |d| {
            let (key, token) = <(u32, TokenOwned)>::deserialize(d)?;
            Ok(Self::new(KeyId(key), token.0))
        })
    }
}

/// A pseudonym token as serde bytes.
struct Token<'a>(&'a [u8; TOKEN_LEN]);

impl Serialize for Token<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_text::serialize_array(self.0, s)
    }
}

struct TokenOwned([u8; TOKEN_LEN]);

impl<'de> Deserialize<'de> for TokenOwned {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_text::deserialize_array(d).map(TokenOwned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_text_is_the_key_and_every_byte_in_lowercase_hex() {
        let token: [u8; TOKEN_LEN] = std::array::from_fn(|i| (i * 17) as u8 ^ 0xa5);
        let p = Pseudonym::new(KeyId::new(4_000_000_000), token);
        let expected: String = token.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(p.to_string(), format!("k4000000000:{expected}"));
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"k4000000000:{expected}\""));
        assert_eq!(Pseudonym::parse(&p.to_string()), Some(p));
    }

    #[test]
    fn pseudonym_text_form() {
        let p = Pseudonym::new(KeyId::new(7), [0xab; TOKEN_LEN]);
        let s = p.to_string();
        assert_eq!(s, format!("k7:{}", "ab".repeat(TOKEN_LEN)));
        assert_eq!(s.parse::<Pseudonym>().unwrap(), p);
        for bad in ["", "k7", "7:abab", "k:ab", "k-1:ab", &format!("k7:{}", "zz".repeat(16))] {
            assert!(bad.parse::<Pseudonym>().is_err(), "{bad}");
        }
    }
}

//! Identifiers: opaque text ids chosen by the vendor or customer (customer,
//! device, user) and 128-bit ids minted by software (event, batch, binary,
//! domain).
//!
//! None of these is personal data by construction: a [`UserId`] is an opaque
//! key that the agent assigns to a person, never their login or email (the
//! character set forbids `@`, spaces and `\`, so an email address or a
//! `DOMAIN\user` login cannot be used as one by mistake). What links an id to a
//! person lives in the [`crate::User`] record, whose fields are personal.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::serde_text;

/// Longest text id, in bytes. Long enough for a UUID with a prefix, short enough
/// to index cheaply and to print in one log line.
pub const MAX_TEXT_ID_LEN: usize = 64;

/// Where a rejected id went wrong, without repeating it: a rejected id may
/// be an email address or a login typed where an opaque key belongs.
fn describe(id: &str) -> String {
    match id.char_indices().find(|(_, c)| !c.is_ascii() || !is_id_byte(*c as u8)) {
        _ if id.is_empty() => "empty".to_owned(),
        Some((at, c)) => format!("{} bytes, {c:?} at byte {at}", id.len()),
        None => format!("{} bytes", id.len()),
    }
}

/// The reserved text of [`UserId::withheld`]: in the id alphabet (so the
/// serialized shape of a user record does not change), and not a
/// pseudonym's text form (`k<key id>:<32 hex digits>`).
const WITHHELD_USER_ID: &str = "withheld:";

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// The text form is 1 to 64 ASCII letters, digits, `.`, `_`, `-` or `:`;
        /// anything else is rejected by [`FromStr`] and by deserialization.
        ///
        /// The text is shared: a clone is a reference count, and the
        /// records of a batch that name the same id, decoded one after the
        /// other on a thread, share one copy of it (see the
        /// `Deserialize` implementation).
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        /// Validated as [`FromStr`] does (as `try_from = "String"` did),
        /// from a borrowed text where the format lends one: checked before
        /// it is copied, and a binary format's text is not first copied
        /// into a zeroed buffer. The last id of this kind decoded on the
        /// thread is kept, and an id equal to it is a clone of it: a batch's
        /// records mostly name one device and one person, and each copy
        /// was an allocation and a free a record.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<$name, E> {
                        thread_local! {
                            static LAST: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
                        }
                        $name::check(v).map_err(E::custom)?;
                        Ok($name(LAST.with_borrow_mut(|last| match last {
                            Some(id) if **id == *v => Arc::clone(id),
                            _ => Arc::clone(last.insert(Arc::from(v))),
                        })))
                    }
                    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<$name, E> {
                        $name::new(v).map_err(E::custom)
                    }
                    /// UTF-8 bytes, as a `String` takes them.
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<$name, E> {
                        let text = std::str::from_utf8(v)
                            .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(&[]), &self))?;
                        self.visit_str(text)
                    }
                }
                d.deserialize_str(Text)
            }
        }

        /// The text itself (as `into = "String"` wrote it, without the copy).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Validates `id` and wraps it.
            ///
            /// # Errors
            ///
            /// [`Error::Rejected`] if `id` is empty, longer than 64 bytes or holds a
            /// character outside the id alphabet.
            pub fn new(id: impl Into<String>) -> Result<Self> {
                let id = id.into();
                Self::check(&id)?;
                Ok(Self(Arc::from(id)))
            }

            /// Whether `id` is one ([`Self::new`]'s checks).
            fn check(id: &str) -> Result<()> {
                if id.is_empty() || id.len() > MAX_TEXT_ID_LEN || !id.bytes().all(is_id_byte) {
                    return Err(Error::Rejected {
                        what: $what,
                        description: describe(id),
                        expected: "1 to 64 ascii letters, digits, '.', '_', '-' or ':'",
                    });
                }
                Ok(())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned `String` (a copy of the shared text).
            pub fn into_string(self) -> String {
                self.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.into_string()
            }
        }
    };
}

text_id!(
    /// A customer (tenant) of the vendor: the owner of a policy and of a
    /// pseudonymisation key.
    CustomerId,
    "customer id"
);
text_id!(
    /// A device (endpoint) of a customer, unique within that customer.
    DeviceId,
    "device id"
);
text_id!(
    /// An opaque key for one person, unique within a customer. Never a login,
    /// name or email: those are personal fields of [`crate::User`].
    UserId,
    "user id"
);

impl UserId {
    /// The user id an event carries when the policy pseudonymises
    /// `event.username`: the pseudonym's text form (`k<key id>:<32 hex
    /// digits>`), so the store files the person's events under the
    /// pseudonym and never sees the id.
    ///
    /// ```
    /// use privtel_model::{KeyId, Pseudonym, UserId};
    ///
    /// let p = Pseudonym::new(KeyId::new(3), [0xab; 16]);
    /// let id = UserId::from_pseudonym(&p);
    /// assert_eq!(id.as_str(), format!("k3:{}", "ab".repeat(16)));
    /// assert_eq!(id.pseudonym(), Some(p));
    /// assert_eq!(UserId::new("u-1042")?.pseudonym(), None);
    /// # Ok::<(), privtel_model::Error>(())
    /// ```
    pub fn from_pseudonym(p: &crate::Pseudonym) -> Self {
        // `k`, up to ten digits, `:` and 32 hex digits: at most 44 bytes of
        // the id alphabet.
        Self(Arc::from(p.to_string()))
    }

    /// The pseudonym this id is the text form of, if it is one. The text
    /// form of a pseudonym is reserved: an id of that shape reads as
    /// pseudonymised.
    pub fn pseudonym(&self) -> Option<crate::Pseudonym> {
        crate::pseudonym::Pseudonym::parse(&self.0)
    }

    /// What a [`crate::User`] record's id is left as once withheld (its
    /// personal field `event.username` dropped): the reserved text
    /// `withheld:`, which no clear id or pseudonym is. A user record
    /// cannot exist without its id: the filter drops such a record, the
    /// service refuses it, and [`crate::RecordBody::user`] names no one
    /// for it.
    ///
    /// ```
    /// use privtel_model::UserId;
    ///
    /// assert!(UserId::withheld().is_withheld());
    /// assert!(!UserId::new("u-1042")?.is_withheld());
    /// assert_eq!(UserId::withheld().pseudonym(), None);
    /// # Ok::<(), privtel_model::Error>(())
    /// ```
    pub fn withheld() -> Self {
        Self(Arc::from(WITHHELD_USER_ID))
    }

    /// Whether this is [`UserId::withheld`]'s reserved text.
    pub fn is_withheld(&self) -> bool {
        *self.0 == *WITHHELD_USER_ID
    }
}

macro_rules! wide_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// The text form is 32 lowercase hex digits ([`FromStr`] also accepts
        /// uppercase). Human-readable serializers (JSON) see that text; binary
        /// ones see 16 big-endian bytes.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u128);

        impl $name {
            /// Wraps a 128-bit value.
            pub const fn from_u128(v: u128) -> Self {
                Self(v)
            }

            /// Wraps 16 big-endian bytes.
            pub const fn from_bytes(b: [u8; 16]) -> Self {
                Self(u128::from_be_bytes(b))
            }

            /// The id as a number.
            pub const fn as_u128(self) -> u128 {
                self.0
            }

            /// The id as 16 big-endian bytes.
            pub const fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // As `write!(f, "{:032x}")` did: a width or precision asked
                // of the id is not applied (no id is ever cut short).
                f.write_str(hex_u128(self.0, &mut [0; 32]))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:032x})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                parse_hex_u128(s).map(Self).ok_or_else(|| Error::rejected($what, s, "32 hex digits"))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                // As `serde_text::serialize`, without the formatter.
                if s.is_human_readable() {
                    s.serialize_str(hex_u128(self.0, &mut [0; 32]))
                } else {
                    serde_text::serialize_array(&self.0.to_be_bytes(), s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                serde_text::deserialize(d, |d| serde_text::deserialize_array(d).map(Self::from_bytes))
            }
        }
    };
}

/// `v` as 32 lowercase hex digits, written into `buf` (what `{:032x}`
/// gives, without the formatting machinery: ids are written for every
/// record stored).
fn hex_u128(v: u128, buf: &mut [u8; 32]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (4 * (31 - i))) & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Parses exactly 32 hex digits; `u128::from_str_radix` alone would also take
/// a sign and shorter forms.
fn parse_hex_u128(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

wide_id!(
    /// One event, minted by the agent that observed it.
    EventId,
    "event id"
);
wide_id!(
    /// One upload batch. A retried batch keeps its id, so the service can tell
    /// a retry from new data.
    BatchId,
    "batch id"
);
wide_id!(
    /// A binary as the service knows it (its own key for a SHA-256 digest).
    BinaryId,
    "binary id"
);
wide_id!(
    /// A registrable domain as the service knows it.
    DomainId,
    "domain id"
);

/// 128 bits that are unique with overwhelming probability, from the
/// standard library alone (the model takes no dependency for randomness).
///
/// The standard library seeds each thread's hash keys from the operating
/// system's randomness once and steps them for every new
/// [`RandomState`](std::collections::hash_map::RandomState); SipHash under
/// such keys, over a process-wide counter and the clock, gives two 64-bit
/// halves that no other call, thread or process repeats. They are not a
/// secret: never use them as a key.
fn random_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let clock =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let half = |which: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(which);
        h.write_u64(call);
        h.write_u128(clock);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

impl EventId {
    /// A new event id that no other call gives, for an event that has no
    /// natural identity at its source. An event that does (a log line at a
    /// position, a file seen at a time) should get a derived id instead,
    /// so that sending it twice is recognised as a replay: the agent's
    /// `privtel_agent::derive_event_id` (which `privtel-hash` provides as
    /// `privtel_hash::derive_event_id`).
    ///
    /// Unique with overwhelming probability, not secret: the id is not a
    /// key and must not be used as one.
    ///
    /// ```
    /// use privtel_model::EventId;
    /// assert_ne!(EventId::random(), EventId::random());
    /// ```
    pub fn random() -> Self {
        Self(random_u128())
    }
}

impl BatchId {
    /// A new batch id that no other call gives (see [`EventId::random`]).
    /// A retried batch keeps the id it was given once.
    pub fn random() -> Self {
        Self(random_u128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ids_decoded_one_after_another_share_their_text_and_bad_ones_are_still_refused() {
        let ids: Vec<DeviceId> = serde_json::from_str(r#"["dev-1", "dev-1", "dev-2", "dev-1"]"#).unwrap();
        assert!(Arc::ptr_eq(&ids[0].0, &ids[1].0), "the same id twice in a row: one copy");
        assert!(!Arc::ptr_eq(&ids[1].0, &ids[3].0), "only the last id is kept");
        assert_eq!(
            ids.iter().map(DeviceId::as_str).collect::<Vec<_>>(),
            ["dev-1", "dev-1", "dev-2", "dev-1"]
        );
        // A refused text is not kept: the next good one is checked and
        // decoded as always.
        let err = serde_json::from_str::<DeviceId>(r#""bob@corp.example""#).unwrap_err();
        assert!(err.to_string().contains("device id"), "{err}");
        assert!(!err.to_string().contains("bob"), "the refused text is not repeated: {err}");
        let again: DeviceId = serde_json::from_str(r#""dev-1""#).unwrap();
        assert!(Arc::ptr_eq(&again.0, &ids[3].0));
        // Each kind keeps its own: a user id equal to a device id's text is
        // a user id.
        let user: UserId = serde_json::from_str(r#""dev-1""#).unwrap();
        assert_eq!(user.as_str(), "dev-1");
        // Through the wire's binary format too, and a clone shares the text.
        let bytes = bincode::serde::encode_to_vec(&ids, bincode::config::standard()).unwrap();
        let (back, _): (Vec<DeviceId>, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard().with_limit::<1024>())
                .unwrap();
        assert_eq!(back, ids);
        assert!(Arc::ptr_eq(&back[0].0, &back[1].0));
        let clone = back[2].clone();
        assert!(Arc::ptr_eq(&clone.0, &back[2].0));
        assert_eq!(clone.into_string(), "dev-2");
    }

    #[test]
    fn ids_print_as_the_formatter_would() {
        let mut v: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        let mut values = vec![0, 1, 0xf, 0x10, u128::MAX, u128::MAX >> 4, 1 << 127];
        for _ in 0..200 {
            // xorshift: values of every length and digit.
            v ^= v << 13;
            v ^= v >> 7;
            v ^= v << 17;
            values.push(v >> (v % 128));
        }
        for v in values {
            assert_eq!(EventId::from_u128(v).to_string(), format!("{v:032x}"));
            assert_eq!(format!("{:.8}", BatchId::from_u128(v)), format!("{v:032x}"), "never cut short");
        }
    }

    const BAD_TEXT_IDS: &[&str] = &[
        "",
        "alice@example.com",
        "CORP\\alice",
        "has space",
        "tab\t",
        "é",
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    ];

    #[test]
    fn text_ids_reject_what_could_be_personal_or_garbage() {
        for bad in BAD_TEXT_IDS {
            let err = UserId::new(*bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid user id ("), "{err}");
            assert!(bad.len() < 3 || !err.contains(bad), "the rejected id is not repeated: {err}");
        }
        assert_eq!(
            UserId::new("alice@corp.example").unwrap_err().to_string(),
            "invalid user id (18 bytes, '@' at byte 5): expected 1 to 64 ascii letters, digits, '.', '_', '-' or ':'"
        );
        assert_eq!(DeviceId::new("dev-01:a.b_c").unwrap().as_str(), "dev-01:a.b_c");
        let max = "a".repeat(MAX_TEXT_ID_LEN);
        assert!(CustomerId::new(max).is_ok());
    }

    #[test]
    fn random_ids_do_not_repeat_across_calls_and_threads() {
        use std::collections::HashSet;
        let mine: Vec<_> = (0..2_000).map(|_| EventId::random()).collect();
        let theirs =
            std::thread::spawn(|| (0..2_000).map(|_| EventId::random()).collect::<Vec<_>>()).join().unwrap();
        let all: HashSet<_> = mine.iter().chain(&theirs).collect();
        assert_eq!(all.len(), 4_000);
        // Both halves vary: neither is a counter or the clock in clear.
        let highs: HashSet<_> = mine.iter().map(|id| id.as_u128() >> 64).collect();
        let lows: HashSet<_> = mine.iter().map(|id| id.as_u128() as u64).collect();
        assert_eq!((highs.len(), lows.len()), (2_000, 2_000));
        assert_ne!(BatchId::random(), BatchId::random());
    }

    #[test]
    fn wide_ids_print_and_parse_32_hex_digits() {
        let id = EventId::from_u128(0xabc);
        assert_eq!(id.to_string(), "00000000000000000000000000000abc");
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        assert_eq!(
            "0000000000000000000000000000ABCD".parse::<EventId>().unwrap(),
            EventId::from_u128(0xabcd)
        );
        for bad in ["", "abc", "+0000000000000000000000000000abc", "g0000000000000000000000000000abc"] {
            assert!(bad.parse::<BatchId>().is_err(), "{bad}");
        }
        assert_eq!(BinaryId::from_bytes(id.to_bytes()).as_u128(), 0xabc);
    }
}

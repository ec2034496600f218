//! [`Timestamp`]: an instant in UTC.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::error::{Error, Result};
use crate::serde_text;

/// An instant, always held in UTC.
///
/// Wraps [`time::OffsetDateTime`] so that every timestamp in the model has the
/// same offset: two equal instants compare and serialize equal, and no local
/// offset (which would tell where a person is) is carried along.
///
/// Human-readable serializers (JSON) see RFC 3339 text
/// (`2026-11-27T04:51:56.5Z`); binary ones see whole seconds since the Unix
/// epoch (`i64`) and the nanoseconds of that second (`u32`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self(OffsetDateTime::UNIX_EPOCH);

    /// Converts any `OffsetDateTime` to the same instant in UTC.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(at.to_offset(UtcOffset::UTC))
    }

    /// The instant `secs` seconds after the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the years -9999 to 9999.
    pub fn from_unix_seconds(secs: i64) -> Result<Self> {
        OffsetDateTime::from_unix_timestamp(secs)
            .map(Self)
            .map_err(|_| out_of_range(i128::from(secs), "unix seconds"))
    }

    /// The instant `nanos` nanoseconds after the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the years -9999 to 9999.
    pub fn from_unix_nanos(nanos: i128) -> Result<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map(Self)
            .map_err(|_| out_of_range(nanos, "unix nanoseconds"))
    }

    /// Whole seconds since the Unix epoch (rounded towards negative infinity).
    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    /// The instant as an `OffsetDateTime` in UTC.
    pub fn as_offset_date_time(self) -> OffsetDateTime {
        self.0
    }

    /// `self + d`, or `None` if that leaves the supported range.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        self.0.checked_add(d).map(Self)
    }

    /// `self - d`, or `None` if that leaves the supported range.
    pub fn checked_sub(self, d: Duration) -> Option<Self> {
        self.0.checked_sub(d).map(Self)
    }
}

fn out_of_range(value: i128, what: &'static str) -> Error {
    Error::OutOfRange { what, value, expected: "an instant in the years -9999 to 9999" }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(at: OffsetDateTime) -> Self {
        Self::new(at)
    }
}

impl From<Timestamp> for OffsetDateTime {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl std::ops::Sub for Timestamp {
    type Output = Duration;
    fn sub(self, rhs: Self) -> Duration {
        self.0 - rhs.0
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC; years outside 0000–9999 (which RFC 3339 cannot
    /// express) print as Unix nanoseconds with a `@` prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "@{}", self.unix_nanos()),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = Error;
    /// Reads what [`Display`](fmt::Display) writes: RFC 3339 with any offset
    /// (converted to UTC), or `@` and Unix nanoseconds.
    fn from_str(s: &str) -> Result<Self> {
        if let Some(n) = s.strip_prefix('@') {
            let n: i128 = n.parse().map_err(|_| Error::parse("timestamp", s, "'@' and unix nanoseconds"))?;
            return Self::from_unix_nanos(n);
        }
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Self::new)
            .map_err(|_| Error::parse("timestamp", s, "an rfc 3339 date and time"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Seconds and nanoseconds: two small varints encode and decode much
        // faster than one 128-bit one.
        serde_text::serialize(self, s, |s| (self.0.unix_timestamp(), self.0.nanosecond()).serialize(s))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_text::deserialize(d, |d| {
            let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
            if nanos >= 1_000_000_000 {
                return Err(D::Error::custom(out_of_range(i128::from(nanos), "nanoseconds of a second")));
            }
            Self::from_unix_nanos(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
                .map_err(D::Error::custom)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn offsets_are_normalised_to_utc() {
        let local = datetime!(2026-11-27 06:00 +02:00);
        let t = Timestamp::new(local);
        assert_eq!(t.as_offset_date_time().offset(), UtcOffset::UTC);
        assert_eq!(t, Timestamp::new(datetime!(2026-11-27 04:00 UTC)));
        assert_eq!(t.to_string(), "2026-11-27T04:00:00Z");
        assert_eq!("2026-11-27T06:00:00+02:00".parse::<Timestamp>().unwrap(), t);
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        assert!(Timestamp::from_unix_seconds(i64::MAX).is_err());
        assert!(Timestamp::from_unix_nanos(i128::MIN).is_err());
        let far = Timestamp::new(datetime!(-0500-01-01 0:00 UTC));
        assert!(far.to_string().starts_with('@'));
        assert_eq!(far.to_string().parse::<Timestamp>().unwrap(), far);
        assert!("yesterday".parse::<Timestamp>().is_err());
    }
}

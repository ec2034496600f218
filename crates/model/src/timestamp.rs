//! [`Timestamp`]: an instant in UTC.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::serde_text;

/// Nanoseconds since the epoch of -9999-01-01T00:00:00Z and of
/// 9999-12-31T23:59:59.999999999Z: the range `time` supports without its
/// `large-dates` feature.
const MIN_NANOS: i128 = -377_705_116_800_000_000_000;
const MAX_NANOS: i128 = 253_402_300_799_999_999_999;

/// An instant, always held in UTC.
///
/// Held as nanoseconds since the Unix epoch (so comparing, hashing and
/// encoding need no calendar arithmetic), and converted to a
/// [`time::OffsetDateTime`] in UTC on demand. Every timestamp in the model
/// has the same offset: equal instants compare and serialize equal, and no
/// local offset (which would tell where a person is) is carried along.
///
/// Human-readable serializers (JSON) see RFC 3339 text
/// (`2026-11-27T04:51:56.5Z`); binary ones see whole seconds since the Unix
/// epoch (`i64`) and the nanoseconds of that second (`u32`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i128);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self(0);

    /// Converts any `OffsetDateTime` to the same instant.
    pub fn new(at: OffsetDateTime) -> Self {
        // Every OffsetDateTime of the supported range is within the bounds.
        Self(at.unix_timestamp_nanos())
    }

    /// The instant `secs` seconds after the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the years -9999 to 9999.
    pub fn from_unix_seconds(secs: i64) -> Result<Self> {
        Self::from_unix_nanos(i128::from(secs) * 1_000_000_000)
            .map_err(|_| out_of_range(i128::from(secs), "unix seconds"))
    }

    /// The instant `nanos` nanoseconds after the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the years -9999 to 9999.
    pub fn from_unix_nanos(nanos: i128) -> Result<Self> {
        if (MIN_NANOS..=MAX_NANOS).contains(&nanos) {
            Ok(Self(nanos))
        } else {
            Err(out_of_range(nanos, "unix nanoseconds"))
        }
    }

    /// Whole seconds since the Unix epoch (rounded towards negative infinity).
    pub fn unix_seconds(self) -> i64 {
        // 64-bit division where the value allows (the years 1678 to 2261,
        // where data lives): 128-bit division is several times slower.
        match i64::try_from(self.0) {
            Ok(n) => n.div_euclid(1_000_000_000),
            // In range: |seconds| < 2^39.
            Err(_) => i64::try_from(self.0.div_euclid(1_000_000_000)).unwrap_or(0),
        }
    }

    /// The nanoseconds of the second (0 to 999,999,999).
    pub fn subsec_nanos(self) -> u32 {
        let nanos = match i64::try_from(self.0) {
            Ok(n) => i128::from(n.rem_euclid(1_000_000_000)),
            Err(_) => self.0.rem_euclid(1_000_000_000),
        };
        u32::try_from(nanos).unwrap_or(0)
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i128 {
        self.0
    }

    /// The instant as an `OffsetDateTime` in UTC.
    pub fn as_offset_date_time(self) -> OffsetDateTime {
        // The constructors keep the value inside `time`'s range.
        OffsetDateTime::from_unix_timestamp_nanos(self.0).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// `self + d`, or `None` if that leaves the supported range.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        self.0.checked_add(d.whole_nanoseconds()).and_then(|n| Self::from_unix_nanos(n).ok())
    }

    /// `self - d`, or `None` if that leaves the supported range.
    pub fn checked_sub(self, d: Duration) -> Option<Self> {
        self.0.checked_sub(d.whole_nanoseconds()).and_then(|n| Self::from_unix_nanos(n).ok())
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
        t.as_offset_date_time()
    }
}

impl std::ops::Sub for Timestamp {
    type Output = Duration;
    fn sub(self, rhs: Self) -> Duration {
        // The difference of two in-range instants fits a Duration.
        let diff = self.0 - rhs.0;
        Duration::new(
            i64::try_from(diff.div_euclid(1_000_000_000)).unwrap_or(i64::MAX),
            i32::try_from(diff.rem_euclid(1_000_000_000)).unwrap_or(0),
        )
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC; years outside 0000–9999 (which RFC 3339 cannot
    /// express) print as Unix nanoseconds with a `@` prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_offset_date_time().format(&Rfc3339) {
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
        serde_text::serialize(self, s, |s| (self.unix_seconds(), self.subsec_nanos()).serialize(s))
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
    use time::UtcOffset;
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

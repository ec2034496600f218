//! [`Timestamp`]: an instant in UTC.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::serde_text;

/// Seconds since the epoch of -9999-01-01T00:00:00Z and of
/// 9999-12-31T23:59:59Z: the range `time` supports without its
/// `large-dates` feature.
const MIN_SECS: i64 = -377_705_116_800;
const MAX_SECS: i64 = 253_402_300_799;
const NANOS_PER_SEC: u32 = 1_000_000_000;

/// An instant, always held in UTC.
///
/// Held as whole seconds since the Unix epoch and the nanoseconds of that
/// second (so comparing, hashing and encoding need no calendar arithmetic,
/// and the value is 16 bytes aligned to 8: records that carry several
/// timestamps stay small), and converted to a
/// [`time::OffsetDateTime`] in UTC on demand. Every timestamp in the model
/// has the same offset: equal instants compare and serialize equal, and no
/// local offset (which would tell where a person is) is carried along.
///
/// Human-readable serializers (JSON) see RFC 3339 text
/// (`2026-11-27T04:51:56.5Z`); binary ones see whole seconds since the Unix
/// epoch (`i64`) and the nanoseconds of that second (`u32`).
// Field order matters: the derived `Ord` compares seconds, then nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since the epoch, `MIN_SECS..=MAX_SECS`.
    secs: i64,
    /// Nanoseconds of the second, below `NANOS_PER_SEC`.
    nanos: u32,
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self { secs: 0, nanos: 0 };

    /// The current instant, from the system clock ([`SystemClock`]).
    ///
    /// A clock set outside the years -9999 to 9999 reads as the nearest end
    /// of that range rather than failing: every caller needs an instant, and
    /// such a clock is broken beyond what an error could help with. Code that
    /// tests need to run at a chosen instant takes a [`Clock`] instead.
    ///
    /// ```
    /// use privtel_model::Timestamp;
    /// assert!(Timestamp::now() > Timestamp::UNIX_EPOCH);
    /// ```
    pub fn now() -> Self {
        let now = SystemTime::now();
        Self::try_from(now).unwrap_or(if now < UNIX_EPOCH { Self::MIN } else { Self::MAX })
    }

    /// The earliest instant a timestamp can hold, -9999-01-01T00:00:00Z.
    pub const MIN: Self = Self { secs: MIN_SECS, nanos: 0 };

    /// The latest instant a timestamp can hold,
    /// 9999-12-31T23:59:59.999999999Z.
    pub const MAX: Self = Self { secs: MAX_SECS, nanos: NANOS_PER_SEC - 1 };

    /// Converts any `OffsetDateTime` to the same instant.
    pub fn new(at: OffsetDateTime) -> Self {
        // Every OffsetDateTime of the supported range is within the bounds.
        Self { secs: at.unix_timestamp(), nanos: at.nanosecond() }
    }

    /// The instant `secs` seconds after the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the years -9999 to 9999.
    pub fn from_unix_seconds(secs: i64) -> Result<Self> {
        Self::from_parts(secs, 0)
    }

    /// The instant `secs` seconds and `nanos` nanoseconds after the Unix
    /// epoch.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `nanos` is a second or more, or outside the
    /// years -9999 to 9999.
    pub fn from_parts(secs: i64, nanos: u32) -> Result<Self> {
        if nanos >= NANOS_PER_SEC {
            return Err(Error::OutOfRange {
                what: "nanoseconds of a second",
                value: i128::from(nanos),
                expected: "less than 1,000,000,000",
            });
        }
        if !(MIN_SECS..=MAX_SECS).contains(&secs) {
            return Err(out_of_range(i128::from(secs), "unix seconds"));
        }
        Ok(Self { secs, nanos })
    }

    /// The instant `nanos` nanoseconds after the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the years -9999 to 9999.
    pub fn from_unix_nanos(nanos: i128) -> Result<Self> {
        let secs = i64::try_from(nanos.div_euclid(i128::from(NANOS_PER_SEC)))
            .ok()
            .filter(|s| (MIN_SECS..=MAX_SECS).contains(s))
            .ok_or_else(|| out_of_range(nanos, "unix nanoseconds"))?;
        // rem_euclid of a positive divisor is in 0..NANOS_PER_SEC.
        let nanos = u32::try_from(nanos.rem_euclid(i128::from(NANOS_PER_SEC))).unwrap_or(0);
        Ok(Self { secs, nanos })
    }

    /// Whole seconds since the Unix epoch (rounded towards negative infinity).
    pub fn unix_seconds(self) -> i64 {
        self.secs
    }

    /// The nanoseconds of the second (0 to 999,999,999).
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i128 {
        i128::from(self.secs) * i128::from(NANOS_PER_SEC) + i128::from(self.nanos)
    }

    /// The instant as an `OffsetDateTime` in UTC.
    pub fn as_offset_date_time(self) -> OffsetDateTime {
        // The constructors keep the value inside `time`'s range.
        OffsetDateTime::from_unix_timestamp(self.secs)
            .and_then(|t| t.replace_nanosecond(self.nanos))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// `self + d`, or `None` if that leaves the supported range.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        self.unix_nanos().checked_add(d.whole_nanoseconds()).and_then(|n| Self::from_unix_nanos(n).ok())
    }

    /// `self - d`, or `None` if that leaves the supported range.
    pub fn checked_sub(self, d: Duration) -> Option<Self> {
        self.unix_nanos().checked_sub(d.whole_nanoseconds()).and_then(|n| Self::from_unix_nanos(n).ok())
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

impl TryFrom<SystemTime> for Timestamp {
    type Error = Error;

    /// The same instant, to the nanosecond.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the years -9999 to 9999 (a
    /// `SystemTime` can hold instants a timestamp cannot).
    fn try_from(at: SystemTime) -> Result<Self> {
        let nanos = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
            Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
        };
        Self::from_unix_nanos(nanos)
    }
}

/// Where "now" comes from: code that reads the time takes a `Clock`, so a
/// test can run it at an instant of its choosing.
///
/// [`SystemClock`] reads the system clock; any `Fn() -> Timestamp` is a
/// clock too, so a test passes a closure:
///
/// ```
/// use privtel_model::{Clock, SystemClock, Timestamp};
///
/// fn stamp(clock: &impl Clock) -> String {
///     clock.now().to_string()
/// }
///
/// let fixed = || Timestamp::from_unix_seconds(1_800_000_000).unwrap();
/// assert_eq!(stamp(&fixed), "2027-01-15T08:00:00Z");
/// assert!(SystemClock.now() > Timestamp::UNIX_EPOCH);
/// # let _ = stamp(&SystemClock);
/// ```
pub trait Clock {
    /// The current instant, as this clock tells it.
    fn now(&self) -> Timestamp;
}

/// The system clock ([`Timestamp::now`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

impl<F: Fn() -> Timestamp> Clock for F {
    fn now(&self) -> Timestamp {
        self()
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
        let diff = self.unix_nanos() - rhs.unix_nanos();
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
        match self.rfc3339(&mut [0; RFC3339_MAX]) {
            Some(s) => f.write_str(s),
            None => write!(f, "@{}", self.unix_nanos()),
        }
    }
}

/// The longest RFC 3339 text [`Timestamp::rfc3339`] writes:
/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const RFC3339_MAX: usize = 30;

impl Timestamp {
    /// The instant as RFC 3339 in UTC, written into `buf`, exactly as
    /// `time`'s `Rfc3339` format writes it (`Z`; a fraction only when the
    /// nanoseconds are not zero, without trailing zeros); `None` for years
    /// outside 0000–9999. Written by hand: a timestamp is written for every
    /// record stored, and the formatter allocated each time.
    fn rfc3339(self, buf: &mut [u8; RFC3339_MAX]) -> Option<&str> {
        let days = self.secs.div_euclid(86_400);
        let of_day = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        // `value` (not negative) as `width` decimal digits at `at`.
        fn put(buf: &mut [u8], at: usize, value: i64, width: usize) {
            let mut v = value;
            for i in (0..width).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        put(buf, 0, year, 4);
        put(buf, 5, month, 2);
        put(buf, 8, day, 2);
        put(buf, 11, of_day / 3600, 2);
        put(buf, 14, of_day / 60 % 60, 2);
        put(buf, 17, of_day % 60, 2);
        buf[4] = b'-';
        buf[7] = b'-';
        buf[10] = b'T';
        buf[13] = b':';
        buf[16] = b':';
        let mut len = 19;
        if self.nanos != 0 {
            let mut nanos = self.nanos;
            let mut digits = 9;
            while nanos.is_multiple_of(10) {
                nanos /= 10;
                digits -= 1;
            }
            buf[19] = b'.';
            put(buf, 20, i64::from(nanos), digits);
            len = 20 + digits;
        }
        buf[len] = b'Z';
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..=len]).ok()
    }
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
            let n: i128 =
                n.parse().map_err(|_| Error::rejected("timestamp", s, "'@' and unix nanoseconds"))?;
            return Self::from_unix_nanos(n);
        }
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Self::new)
            .map_err(|_| Error::rejected("timestamp", s, "an rfc 3339 date and time"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Seconds and nanoseconds: two small varints encode and decode much
        // faster than one 128-bit one.
        let binary = |s: S| (self.unix_seconds(), self.subsec_nanos()).serialize(s);
        if !s.is_human_readable() {
            return binary(s);
        }
        match self.rfc3339(&mut [0; RFC3339_MAX]) {
            Some(text) => s.serialize_str(text),
            None => serde_text::serialize(self, s, binary),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_text::deserialize(d, |d| {
            let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
            Self::from_parts(secs, nanos).map_err(D::Error::custom)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `Display` wrote before it was written by hand.
    fn by_time(t: Timestamp) -> String {
        match t.as_offset_date_time().format(&Rfc3339) {
            Ok(s) => s,
            Err(_) => format!("@{}", t.unix_nanos()),
        }
    }

    proptest! {
        #[test]
        fn display_writes_what_time_writes(secs in MIN_SECS..=MAX_SECS, nanos in 0..NANOS_PER_SEC, trim in 0u32..10) {
            // Fractions with every number of trailing zeros.
            let nanos = nanos / 10u32.pow(trim) * 10u32.pow(trim);
            let t = Timestamp::from_parts(secs, nanos).unwrap();
            prop_assert_eq!(t.to_string(), by_time(t));
        }
    }

    #[test]
    fn display_writes_what_time_writes_at_the_edges() {
        let year = |y: i32| {
            time::Date::from_calendar_date(y, time::Month::January, 1)
                .unwrap()
                .midnight()
                .assume_utc()
                .unix_timestamp()
        };
        for secs in [
            MIN_SECS,
            MAX_SECS,
            0,
            -1,
            year(0) - 1,
            year(0),
            year(1900),
            year(2000) - 1,
            year(2000),
            year(2024) + 59 * 86_400,
            year(2100) + 59 * 86_400,
            year(9999),
        ] {
            for nanos in [0, 1, 10, 500_000_000, 999_999_999, 120_000] {
                let t = Timestamp::from_parts(secs, nanos).unwrap();
                assert_eq!(t.to_string(), by_time(t), "{secs} {nanos}");
            }
        }
        assert_eq!(Timestamp::UNIX_EPOCH.to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp::from_parts(0, 500_000_000).unwrap().to_string(), "1970-01-01T00:00:00.5Z");
        assert!(Timestamp::MIN.to_string().starts_with('@'));
    }
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

    proptest::proptest! {
        /// Seconds-and-nanoseconds keep every instant of the range exactly,
        /// and order as the nanosecond count does (negative instants too).
        #[test]
        fn parts_keep_nanos_and_order(
            a in -377_705_116_800_000_000_000i128..=253_402_300_799_999_999_999,
            b in -377_705_116_800_000_000_000i128..=253_402_300_799_999_999_999,
        ) {
            let (ta, tb) = (Timestamp::from_unix_nanos(a).unwrap(), Timestamp::from_unix_nanos(b).unwrap());
            proptest::prop_assert_eq!(ta.unix_nanos(), a);
            proptest::prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
            proptest::prop_assert_eq!(ta - tb, Duration::nanoseconds_i128(a - b));
            proptest::prop_assert_eq!(ta.as_offset_date_time().unix_timestamp_nanos(), a);
            proptest::prop_assert_eq!(Timestamp::new(ta.as_offset_date_time()), ta);
        }
    }

    #[test]
    fn from_parts_checks_both_parts() {
        let half_before = Timestamp::from_unix_nanos(-500_000_000).unwrap();
        assert_eq!((half_before.unix_seconds(), half_before.subsec_nanos()), (-1, 500_000_000));
        assert_eq!(Timestamp::from_parts(-1, 500_000_000).unwrap(), half_before);
        assert!(half_before < Timestamp::UNIX_EPOCH);
        let err = Timestamp::from_parts(0, 1_000_000_000).unwrap_err().to_string();
        assert!(err.contains("1000000000") && err.contains("nanoseconds"), "{err}");
        assert!(Timestamp::from_parts(253_402_300_800, 0).is_err());
        assert!(Timestamp::from_parts(-377_705_116_801, 999_999_999).is_err());
        assert!(Timestamp::from_parts(-377_705_116_800, 0).is_ok());
    }

    #[test]
    fn system_time_converts_to_the_nanosecond() {
        use std::time::Duration as StdDuration;
        let after = UNIX_EPOCH + StdDuration::new(1_800_000_000, 123_456_789);
        let t = Timestamp::try_from(after).unwrap();
        assert_eq!((t.unix_seconds(), t.subsec_nanos()), (1_800_000_000, 123_456_789));
        let before = UNIX_EPOCH - StdDuration::new(1, 250_000_000);
        let t = Timestamp::try_from(before).unwrap();
        assert_eq!(t.unix_nanos(), -1_250_000_000);
        // Past 9999 (when the platform can hold it): an error naming the range.
        if let Some(far) = UNIX_EPOCH.checked_add(StdDuration::from_secs(300_000_000_000)) {
            let err = Timestamp::try_from(far).unwrap_err().to_string();
            assert!(err.contains("years -9999 to 9999"), "{err}");
        }
        assert_eq!(Timestamp::MAX.checked_add(Duration::nanoseconds(1)), None);
        assert_eq!(Timestamp::MIN.checked_sub(Duration::nanoseconds(1)), None);
        assert!(Timestamp::from_unix_nanos(Timestamp::MAX.unix_nanos()).is_ok());
    }

    #[test]
    fn now_reads_the_system_clock() {
        let before = Timestamp::try_from(SystemTime::now()).unwrap();
        let now = Timestamp::now();
        let after = Timestamp::try_from(SystemTime::now()).unwrap();
        assert!(before <= now && now <= after);
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

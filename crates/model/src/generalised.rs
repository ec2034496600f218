//! Generalised values: the coarser value of the same kind that stands in
//! for a personal value ([`Generalised`]): an IP prefix, a time or duration
//! bucket, a domain, a shorter geohash, scrubbed text.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::Duration;

use crate::error::{Error, Result};
use crate::timestamp::Timestamp;
use crate::values::{Domain, Geohash};

/// An IP network: an address with every bit after `len` set to zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "IpPrefixRepr", into = "IpPrefixRepr")]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

#[derive(Serialize, Deserialize)]
struct IpPrefixRepr {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The prefix of length `len` that contains `addr` (host bits cleared).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `len` exceeds 32 for IPv4 or 128 for IPv6.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(Error::OutOfRange {
                what: "ip prefix length",
                value: i128::from(len),
                expected: "at most 32 for ipv4 and 128 for ipv6",
            });
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        };
        Ok(Self { addr, len })
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix has length zero (covers every address of its
    /// family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::new(ip, self.len).is_ok_and(|p| p == *self)
    }
}

impl TryFrom<IpPrefixRepr> for IpPrefix {
    type Error = Error;
    fn try_from(r: IpPrefixRepr) -> Result<Self> {
        let p = Self::new(r.addr, r.len)?;
        if p.addr != r.addr {
            // Not the address: it is personal.
            return Err(Error::Rejected {
                what: "ip prefix",
                description: format!("host bits set under a /{}", r.len),
                expected: "an address whose host bits are zero",
            });
        }
        Ok(p)
    }
}

impl From<IpPrefix> for IpPrefixRepr {
    fn from(p: IpPrefix) -> Self {
        Self { addr: p.addr, len: p.len }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The unit a generalised timestamp is truncated to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeUnit {
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds (UTC days).
    Day,
}

impl fmt::Display for TimeUnit {
    /// The lowercase name (`minute`, `hour`, `day`), as policy files write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        })
    }
}

impl TimeUnit {
    /// The unit's length in seconds.
    pub const fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }
}

/// A timestamp truncated to a [`TimeUnit`]: "some time during this hour".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "TimeBucketRepr", into = "TimeBucketRepr")]
pub struct TimeBucket {
    start: Timestamp,
    unit: TimeUnit,
}

#[derive(Serialize, Deserialize)]
struct TimeBucketRepr {
    start: Timestamp,
    unit: TimeUnit,
}

impl TimeBucket {
    /// The bucket of `unit` that contains `at`.
    pub fn containing(at: Timestamp, unit: TimeUnit) -> Self {
        let secs = at.unix_seconds();
        let start = secs - secs.rem_euclid(unit.seconds());
        // `start` is at most `at` and in the same unit, so it is in range; fall
        // back to `at` itself rather than panic if that reasoning were wrong.
        let start = Timestamp::from_unix_seconds(start).unwrap_or(at);
        Self { start, unit }
    }

    /// The first instant of the bucket.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// The bucket's unit.
    pub fn unit(&self) -> TimeUnit {
        self.unit
    }
}

impl TryFrom<TimeBucketRepr> for TimeBucket {
    type Error = Error;
    fn try_from(r: TimeBucketRepr) -> Result<Self> {
        let b = Self::containing(r.start, r.unit);
        if b.start != r.start {
            // Not the instant: it is personal.
            return Err(Error::Rejected {
                what: "time bucket",
                description: format!("not at the start of its {}", r.unit),
                expected: "a start on a whole unit",
            });
        }
        Ok(b)
    }
}

impl From<TimeBucket> for TimeBucketRepr {
    fn from(b: TimeBucket) -> Self {
        Self { start: b.start, unit: b.unit }
    }
}

/// A duration generalised to a range `[lo, hi)`; `hi` is `None` for an
/// open-ended last bucket ("more than an hour").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "DurationBucketRepr", into = "DurationBucketRepr")]
pub struct DurationBucket {
    lo: Duration,
    hi: Option<Duration>,
}

#[derive(Serialize, Deserialize)]
struct DurationBucketRepr {
    #[serde(with = "crate::iso8601::serde_duration")]
    lo: Duration,
    #[serde(with = "crate::iso8601::serde_option_duration")]
    hi: Option<Duration>,
}

impl DurationBucket {
    /// The range `[lo, hi)`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `lo` is negative or `hi` is not above `lo`.
    pub fn new(lo: Duration, hi: Option<Duration>) -> Result<Self> {
        if lo.is_negative() || hi.is_some_and(|hi| hi <= lo) {
            return Err(Error::OutOfRange {
                what: "duration bucket start (ms)",
                value: lo.whole_milliseconds(),
                expected: "a start of zero or more below the end",
            });
        }
        Ok(Self { lo, hi })
    }

    /// The lower bound (inclusive).
    pub fn lo(&self) -> Duration {
        self.lo
    }

    /// The upper bound (exclusive), if any.
    pub fn hi(&self) -> Option<Duration> {
        self.hi
    }
}

impl TryFrom<DurationBucketRepr> for DurationBucket {
    type Error = Error;
    fn try_from(r: DurationBucketRepr) -> Result<Self> {
        Self::new(r.lo, r.hi)
    }
}

impl From<DurationBucket> for DurationBucketRepr {
    fn from(b: DurationBucket) -> Self {
        Self { lo: b.lo, hi: b.hi }
    }
}

/// A coarser value standing in for a personal value.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Generalised {
    /// An IP address reduced to its network.
    IpPrefix(IpPrefix),
    /// An instant reduced to a minute, hour or day.
    Time(TimeBucket),
    /// A duration reduced to a range.
    Duration(DurationBucket),
    /// A URL, host or email address reduced to a (registrable) domain.
    Domain(Domain),
    /// A geohash reduced to fewer characters.
    Geohash(Geohash),
    /// Free text with identifiers replaced by placeholders (`[email]`).
    Text(String),
}

impl fmt::Debug for Generalised {
    /// Names the variant only: a generalised value is coarser, but still
    /// about a person (and scrubbed text may hold what a detector missed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::IpPrefix(_) => "IpPrefix",
            Self::Time(_) => "Time",
            Self::Duration(_) => "Duration",
            Self::Domain(_) => "Domain",
            Self::Geohash(_) => "Geohash",
            Self::Text(_) => "Text",
        };
        write!(f, "{kind}(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_prefix_masks_host_bits() {
        let p = IpPrefix::new("192.168.17.42".parse().unwrap(), 24).unwrap();
        assert_eq!(p.to_string(), "192.168.17.0/24");
        assert!(p.contains("192.168.17.1".parse().unwrap()));
        assert!(!p.contains("192.168.18.1".parse().unwrap()));
        let v6 = IpPrefix::new("2001:db8:aa:bb::1".parse().unwrap(), 48).unwrap();
        assert_eq!(v6.to_string(), "2001:db8:aa::/48");
        assert_eq!(IpPrefix::new("1.2.3.4".parse().unwrap(), 0).unwrap().to_string(), "0.0.0.0/0");
        assert!(IpPrefix::new("1.2.3.4".parse().unwrap(), 33).is_err());
        assert!(IpPrefix::try_from(IpPrefixRepr { addr: "1.2.3.4".parse().unwrap(), len: 24 }).is_err());
    }

    #[test]
    fn time_buckets_truncate_including_before_1970() {
        let t = Timestamp::from_unix_seconds(3_600 * 5 + 59).unwrap();
        assert_eq!(TimeBucket::containing(t, TimeUnit::Hour).start().unix_seconds(), 18_000);
        let before = Timestamp::from_unix_seconds(-1).unwrap();
        assert_eq!(TimeBucket::containing(before, TimeUnit::Day).start().unix_seconds(), -86_400);
    }

    #[test]
    fn duration_buckets_are_ordered() {
        assert!(DurationBucket::new(Duration::seconds(1), Some(Duration::seconds(10))).is_ok());
        assert!(DurationBucket::new(Duration::seconds(1), None).is_ok());
        assert!(DurationBucket::new(Duration::seconds(10), Some(Duration::seconds(10))).is_err());
        assert!(DurationBucket::new(Duration::seconds(-1), None).is_err());
    }
}

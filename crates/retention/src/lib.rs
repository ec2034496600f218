//! Pure retention policy: when records expire (time to live of 7, 14 or 30
//! days), when an inactive device is purged (45 days by default), and when an
//! erasure request is overdue (24 hours).
//!
//! Every decision is a function of a record's times and a `now` passed in by
//! the caller; this crate never reads a clock, a file or the environment, so
//! the same decision can be made on the device (spool) and in the service
//! (engine store), and tested with any clock.
//!
//! # Example
//!
//! ```
//! use privtel_retention::{RecordClass, RetentionPolicy, Ttl};
//! use privtel_model::Timestamp;
//! use time::Duration;
//!
//! let policy = RetentionPolicy { events: Ttl::DAYS_7, ..RetentionPolicy::default() };
//! let recorded = Timestamp::from_unix_seconds(1_795_752_000)?;
//! let exactly_7_days = recorded.checked_add(Duration::days(7)).unwrap();
//! assert!(!policy.is_expired(RecordClass::Event, recorded, exactly_7_days));
//! let one_second_more = exactly_7_days.checked_add(Duration::seconds(1)).unwrap();
//! assert!(policy.is_expired(RecordClass::Event, recorded, one_second_more));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The boundary
//!
//! A record is expired exactly when its age is *past* its time to live:
//! `now - recorded_at > ttl`. A record whose age equals its TTL is kept; one
//! nanosecond later it is not. [`Cutoffs`] express the same rule for a
//! sweep: delete what was recorded strictly before the cut-off.
//!
//! # Crate features
//!
//! None.

// The model and `time` types this crate's API takes, so a caller needs no
// dependency of a matching version on either.
pub use privtel_model::{Duration, RecordBody, Timestamp};

/// A time to live: how long data is kept after it was recorded.
///
/// The design offers 7, 14 and 30 days as named presets; other durations are
/// allowed where a caller insists (a contract, a test), through
/// [`Ttl::custom`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Ttl(Duration);

impl Ttl {
    /// Seven days: the shortest preset, for the most sensitive data.
    pub const DAYS_7: Self = Self(Duration::days(7));
    /// Fourteen days.
    pub const DAYS_14: Self = Self(Duration::days(14));
    /// Thirty days: the design's default, long enough for monthly reports.
    pub const DAYS_30: Self = Self(Duration::days(30));

    /// Any non-negative duration. A negative one is taken as zero (expire at
    /// once), the more private reading.
    pub fn custom(d: Duration) -> Self {
        Self(if d.is_negative() { Duration::ZERO } else { d })
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// Whole days, rounded down.
    pub fn days(self) -> i64 {
        self.0.whole_days()
    }
}

impl Default for Ttl {
    fn default() -> Self {
        Self::DAYS_30
    }
}

/// Whether a record is an event (something that happened) or an object (a
/// description: device, user, binary, …). Each class has its own TTL.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[non_exhaustive]
pub enum RecordClass {
    /// Events.
    Event,
    /// Objects.
    Object,
}

impl RecordClass {
    /// The class of a record body.
    pub fn of(body: &RecordBody) -> Self {
        match body {
            RecordBody::Event(_) => Self::Event,
            _ => Self::Object,
        }
    }
}

/// How long data is kept. Plain data: set the fields you need and keep the
/// defaults for the rest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RetentionPolicy {
    /// TTL of events. Default 30 days: a month of history for reports, and no
    /// more.
    pub events: Ttl,
    /// TTL of objects (devices, users, binaries, verdicts). Default 30 days,
    /// refreshed each time the object is reported again.
    pub objects: Ttl,
    /// A device that has not reported for longer than this is removed with
    /// everything about it. Default 45 days: longer than a holiday, shorter
    /// than a quarter.
    pub device_inactivity: Duration,
    /// An erasure request must be done within this. Default 24 hours, as the
    /// design promises customers.
    pub erasure_deadline: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            events: Ttl::DAYS_30,
            objects: Ttl::DAYS_30,
            device_inactivity: Duration::days(45),
            erasure_deadline: Duration::hours(24),
        }
    }
}

/// The instants a sweep at `now` deletes before: anything recorded (or last
/// seen) strictly before its cut-off is expired.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Cutoffs {
    /// Events recorded before this are expired.
    pub events_before: Timestamp,
    /// Objects recorded before this are expired.
    pub objects_before: Timestamp,
    /// Devices last seen before this are inactive.
    pub devices_seen_before: Timestamp,
}

/// `t - d`, saturating at the earliest representable instant (so a huge TTL
/// means "nothing expires", never a panic).
fn minus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(d).unwrap_or_else(|| {
        Timestamp::new(time::OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT))
    })
}

impl RetentionPolicy {
    /// The TTL of a class.
    pub fn ttl(&self, class: RecordClass) -> Ttl {
        match class {
            RecordClass::Event => self.events,
            RecordClass::Object => self.objects,
        }
    }

    /// When a record of `class` recorded at `recorded_at` expires: the last
    /// instant at which it is still kept. `None` if that is beyond the
    /// representable range (it never expires within it).
    pub fn expires_at(&self, class: RecordClass, recorded_at: Timestamp) -> Option<Timestamp> {
        recorded_at.checked_add(self.ttl(class).duration())
    }

    /// Whether the record is expired at `now` (its age is past its TTL).
    pub fn is_expired(&self, class: RecordClass, recorded_at: Timestamp, now: Timestamp) -> bool {
        recorded_at < self.cutoff(class, now)
    }

    /// The cut-off of one class at `now`.
    pub fn cutoff(&self, class: RecordClass, now: Timestamp) -> Timestamp {
        minus(now, self.ttl(class).duration())
    }

    /// The cut-offs of a sweep at `now`.
    pub fn cutoffs(&self, now: Timestamp) -> Cutoffs {
        Cutoffs {
            events_before: self.cutoff(RecordClass::Event, now),
            objects_before: self.cutoff(RecordClass::Object, now),
            devices_seen_before: minus(now, self.device_inactivity),
        }
    }

    /// Whether a device last seen at `last_seen` is inactive at `now`.
    pub fn device_inactive(&self, last_seen: Timestamp, now: Timestamp) -> bool {
        last_seen < minus(now, self.device_inactivity)
    }

    /// When an erasure requested at `requested_at` must be done.
    pub fn erasure_due(&self, requested_at: Timestamp) -> Option<Timestamp> {
        requested_at.checked_add(self.erasure_deadline)
    }

    /// Whether an erasure requested at `requested_at` and not done is overdue
    /// at `now`.
    pub fn erasure_overdue(&self, requested_at: Timestamp, now: Timestamp) -> bool {
        requested_at < minus(now, self.erasure_deadline)
    }
}

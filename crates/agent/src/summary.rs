//! The device's benchmarking summary: what leaves the device for
//! benchmarking is counts, durations and a score for a period, computed here
//! from the device's own events; never the events, never a user.

use privtel_model::{
    DeviceSummary, Event, EventBody, PerformanceSample, Personal, Program, Record, RecordBody, Timestamp,
};
use time::Duration;

/// A performance sample in milliseconds above this is slow (a product's
/// startup, an action's response).
pub const SLOW_SAMPLE_MS: f64 = 2_000.0;

/// A login that took longer than this is slow.
pub const SLOW_LOGIN: Duration = Duration::seconds(30);

/// The benchmarking record of the device's `events` recorded in the `days`
/// days from `day` (midnight UTC): crash reports, performance samples
/// (those in `ms`; slow above [`SLOW_SAMPLE_MS`]), logins (each a sample,
/// slow above [`SLOW_LOGIN`]; durations summed where the policy left them
/// clear), ratings and executions, with the Digital Experience Score they
/// give ([`privtel_model::dex`]). Collect it with [`crate::Agent::collect`]:
/// the filter passes it under [`Program::Benchmarking`].
///
/// ```
/// use privtel_agent::device_summary;
/// use privtel_agent::model::{
///     CrashReport, Event, EventBody, EventId, Feedback, Finite, PerformanceSample, Personal, RecordBody, Score,
/// };
/// use privtel_agent::{DeviceId, Timestamp};
///
/// let day: Timestamp = "2026-11-27T00:00:00Z".parse()?;
/// let at: Timestamp = "2026-11-27T09:30:00Z".parse()?;
/// let sample = |ms: f64| -> Result<EventBody, privtel_agent::model::Error> {
///     Ok(EventBody::Performance(PerformanceSample {
///         product: "editor".into(),
///         metric: "startup_time".into(),
///         value: Finite::new(ms)?,
///         unit: "ms".into(),
///     }))
/// };
/// let bodies = [
///     EventBody::CrashReport(CrashReport {
///         product: "editor".into(),
///         version: "1.2.0".into(),
///         message: Personal::Withheld,
///     }),
///     sample(182.5)?,
///     sample(640.0)?,
///     EventBody::Feedback(Feedback { product: "editor".into(), score: Score::new(80)?, text: Personal::Withheld }),
/// ];
/// let events: Vec<Event> = bodies
///     .into_iter()
///     .enumerate()
///     .map(|(n, body)| Event {
///         id: EventId::from_bytes([n as u8; 16]),
///         device: DeviceId::new("dev-0001").expect("a valid id"),
///         user: None,
///         recorded_at: at,
///         body,
///     })
///     .collect();
/// let record = device_summary(&events, day, 1)?;
/// let RecordBody::DeviceSummary(s) = &record.body else { unreachable!() };
/// // One crash in a day (C = 0), two fast samples (P = 10), one rating of 80:
/// // (0.35·10 + 0.25·8) / 1 = 5.5.
/// assert_eq!((s.crashes, s.performance_samples, s.slow_samples, s.ratings), (1, 2, 0, 1));
/// assert_eq!(s.score.get(), 55);
/// assert!(!format!("{record:?}").contains("dev-0001"), "no device id");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`privtel_model::Error::OutOfRange`] if `day` is not midnight UTC or
/// `days` is not 1 to 31.
pub fn device_summary(events: &[Event], day: Timestamp, days: u8) -> Result<Record, privtel_model::Error> {
    let mut s = DeviceSummary::new(day, days);
    s.check_counts()?;
    let end = day.checked_add(Duration::days(i64::from(days))).unwrap_or(day);
    for e in events.iter().filter(|e| e.recorded_at >= day && e.recorded_at < end) {
        match &e.body {
            EventBody::CrashReport(_) => s.crashes = s.crashes.saturating_add(1),
            EventBody::Performance(PerformanceSample { unit, value, .. }) if unit == "ms" => {
                s.performance_samples = s.performance_samples.saturating_add(1);
                if value.get() > SLOW_SAMPLE_MS {
                    s.slow_samples = s.slow_samples.saturating_add(1);
                }
            }
            EventBody::Login(login) => {
                s.logins = s.logins.saturating_add(1);
                if let Personal::Clear(d) = login.duration {
                    s.login_time = s.login_time.saturating_add(d.max(Duration::ZERO));
                    s.performance_samples = s.performance_samples.saturating_add(1);
                    if d > SLOW_LOGIN {
                        s.slow_samples = s.slow_samples.saturating_add(1);
                    }
                }
            }
            EventBody::Feedback(f) => {
                s.ratings = s.ratings.saturating_add(1);
                s.rating_sum = s.rating_sum.saturating_add(u64::from(f.score.get()));
            }
            EventBody::Execution(_) => s.executions = s.executions.saturating_add(1),
            _ => {}
        }
    }
    Ok(Record { program: Program::Benchmarking, body: RecordBody::DeviceSummary(s.scored()?) })
}

#[cfg(test)]
mod tests {
    use privtel_filter::{FilterBuilder, Policy};
    use privtel_model::{CustomerId, RecordBody, Timestamp};

    use super::*;

    fn day() -> Timestamp {
        Timestamp::from_unix_seconds(1_795_737_600).unwrap()
    }

    #[test]
    fn the_summary_passes_the_default_filter_unchanged_and_off_it_is_dropped() {
        let events: Vec<Event> = privtel_testkit::fixtures::records("t")
            .into_iter()
            .filter_map(|r| match r.body {
                RecordBody::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        let record = device_summary(&events, day(), 1).unwrap();
        let filter = FilterBuilder::new().customer(CustomerId::new("acme").unwrap()).build();
        let out =
            filter.apply(record.clone(), &mut Default::default()).expect("benchmarking is on by default");
        assert_eq!(out.into_record(), record, "nothing in it to treat");
        let off = Policy::from_toml("[programs]\nbenchmarking = false\n").unwrap();
        let filter = FilterBuilder::new().policy(off).customer(CustomerId::new("acme").unwrap()).build();
        assert!(filter.apply(record, &mut Default::default()).is_none());
    }

    #[test]
    fn only_the_period_counts_and_a_slow_login_is_a_slow_sample() {
        let mut events: Vec<Event> = privtel_testkit::fixtures::records("t")
            .into_iter()
            .filter_map(|r| match r.body {
                RecordBody::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        for e in &mut events {
            if let EventBody::Login(l) = &mut e.body {
                l.duration = Personal::Clear(Duration::seconds(31));
            }
        }
        // The day before the fixtures' day: nothing in it.
        let before = day().checked_sub(Duration::days(1)).unwrap();
        let RecordBody::DeviceSummary(empty) = device_summary(&events, before, 1).unwrap().body else {
            unreachable!()
        };
        assert_eq!((empty.crashes, empty.performance_samples, empty.score.get()), (0, 0, 100));
        let RecordBody::DeviceSummary(s) = device_summary(&events, day(), 7).unwrap().body else {
            unreachable!()
        };
        // The performance sample (182.5 ms) and the 31 s login (slow).
        assert_eq!((s.performance_samples, s.slow_samples, s.logins), (2, 1, 1));
        assert_eq!(s.login_time, Duration::seconds(31));
        // C = 10 - 2 = 8, P = 5, F = 8: 3.2 + 1.75 + 2 = 6.95 -> 7.0.
        assert_eq!(s.score.get(), 70);
        assert!(device_summary(&events, day().checked_add(Duration::hours(1)).unwrap(), 1).is_err());
    }
}

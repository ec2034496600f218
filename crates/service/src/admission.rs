//! What the service takes from a batch: each record checked against the
//! customer's settings before anything is stored.

use privtel_model::{Consent, DeviceId, Program, Record, RecordBody, Timestamp, Treatment, User, fields};
use privtel_wire::{RejectCode, Rejection};

use crate::settings::CustomerSettings;

/// Counts of records refused, by reason (service-wide, readable while it
/// runs).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// The program was off (in the customer's settings or the device's hello).
    pub program_off: std::sync::atomic::AtomicU64,
    /// A kind the program does not carry.
    pub kind: std::sync::atomic::AtomicU64,
    /// A personal field in a form the customer's policy does not allow.
    pub field_form: std::sync::atomic::AtomicU64,
    /// Dated too far in the future.
    pub future: std::sync::atomic::AtomicU64,
    /// A record whose program is not its batch's.
    pub wrong_program: std::sync::atomic::AtomicU64,
    /// An interaction event with a web application or action the
    /// customer's policy does not define.
    pub interaction: std::sync::atomic::AtomicU64,
}

/// The instant a record says it is from, where it says one.
fn dated(record: &Record) -> Option<Timestamp> {
    match &record.body {
        RecordBody::Event(e) => Some(e.recorded_at),
        RecordBody::Device(d) => Some(d.last_seen),
        RecordBody::DeviceSummary(s) => Some(s.day),
        RecordBody::Consent(c) => Some(c.at),
        _ => None,
    }
}

/// Why a user record cannot be kept although its fields are in the policy's
/// forms. Its id is the personal field `event.username`, as an event's user
/// is: a clear id where the policy pseudonymises is refused with the other
/// fields ([`privtel_filter::Inadmissible::FieldForm`]), and where the policy
/// drops it no user record can exist.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub(crate) enum UserRecordProblem {
    /// The customer's policy drops `event.username`.
    #[error("user record: the policy drops event.username, so no user record is kept")]
    UsernameDropped,
    /// The id arrived withheld ([`privtel_model::UserId::withheld`]).
    #[error(
        "user record: its id (event.username) arrived withheld, and a user record cannot exist without it"
    )]
    IdWithheld,
}

/// Why a user record cannot be kept, if it cannot.
fn user_problem(u: &User, settings: &CustomerSettings) -> Option<UserRecordProblem> {
    if settings.policy().treatment(&fields::EVENT_USERNAME) == Treatment::Withhold {
        Some(UserRecordProblem::UsernameDropped)
    } else if u.id.is_withheld() {
        Some(UserRecordProblem::IdWithheld)
    } else {
        None
    }
}

/// Why a consent record cannot be kept, if it cannot.
fn consent_problem(
    c: &Consent,
    program: Program,
    device: &DeviceId,
    settings: &CustomerSettings,
    now: Timestamp,
) -> Option<String> {
    if &c.device != device {
        return Some("names another device than the connection's certificate".to_owned());
    }
    if c.program != program || program != Program::PersonalisedUsage {
        return Some(format!("about {} under {program}: expected personalised_usage under it", c.program));
    }
    if c.at < settings.retention().cutoffs(now).events_before {
        return Some("dated before the customer's event time to live".to_owned());
    }
    None
}

/// What a batch is checked against.
#[derive(Clone, Copy)]
pub(crate) struct Admission<'a> {
    /// The customer's settings.
    pub(crate) settings: &'a CustomerSettings,
    /// The device the connection's certificate names.
    pub(crate) device: &'a DeviceId,
    /// Consent per program, as the device's hello declared it.
    pub(crate) hello_consent: &'a [(Program, bool)],
    /// The batch's program.
    pub(crate) program: Program,
    /// The service's clock.
    pub(crate) now: Timestamp,
    /// How far ahead of `now` a record may be dated.
    pub(crate) max_future_skew: time::Duration,
}

/// The batch's records, each either admitted (`Some`) or refused for good
/// (`None`, with a rejection naming its sequence number and why).
///
/// A record is admitted only if its program is the batch's, the program is
/// on both in the customer's settings and in the device's hello, its kind
/// is one the program carries, an interaction event's web application and
/// action are defined by the customer's policy, every personal field is in
/// the form the customer's policy gives it (or withheld; a user record's id,
/// `event.username`, neither withheld nor dropped by the policy), and it is dated no further
/// ahead of `now` than `max_future_skew`. An admitted event or device
/// record names the certificate's device, whatever device it named.
pub(crate) fn admit(
    ctx: &Admission<'_>,
    first_seq: u64,
    records: Vec<Record>,
    counts: &RefusalCounts,
) -> (Vec<Option<Record>>, Vec<Rejection>) {
    let Admission { settings, device, hello_consent, program: batch_program, now, max_future_skew } = *ctx;
    use std::sync::atomic::Ordering::Relaxed;
    let latest = now.checked_add(max_future_skew).unwrap_or(now);
    let device_consents = |p: Program| hello_consent.iter().any(|(q, on)| *q == p && *on);
    let mut rejections = Vec::new();
    let admitted = records
        .into_iter()
        .enumerate()
        .map(|(i, mut record)| {
            let seq = first_seq.saturating_add(i as u64);
            let refusal = if record.program != batch_program {
                counts.wrong_program.fetch_add(1, Relaxed);
                Some((
                    RejectCode::WRONG_PROGRAM,
                    format!("record of {} in a batch of {batch_program}", record.program),
                ))
            } else if !device_consents(record.program) {
                counts.program_off.fetch_add(1, Relaxed);
                Some((
                    RejectCode::PROGRAM_OFF,
                    format!("program {} is off in the device's hello", record.program),
                ))
            } else if let Err(why) = settings.policy().admits(&mut record) {
                let code = match why {
                    privtel_filter::Inadmissible::ProgramOff { .. } => {
                        counts.program_off.fetch_add(1, Relaxed);
                        RejectCode::PROGRAM_OFF
                    }
                    privtel_filter::Inadmissible::Kind { .. } => {
                        counts.kind.fetch_add(1, Relaxed);
                        RejectCode::KIND
                    }
                    privtel_filter::Inadmissible::Interaction { .. } => {
                        counts.interaction.fetch_add(1, Relaxed);
                        RejectCode::INTERACTION
                    }
                    _ => {
                        counts.field_form.fetch_add(1, Relaxed);
                        RejectCode::FIELD_FORM
                    }
                };
                Some((code, why.to_string()))
            } else if let RecordBody::User(u) = &record.body
                && let Some(why) = user_problem(u, settings)
            {
                // Its id in the policy's form (a clear or pseudonymised id
                // where the policy drops it is refused above), yet no user
                // record may exist without it or where it is dropped.
                counts.field_form.fetch_add(1, Relaxed);
                Some((RejectCode::FIELD_FORM, why.to_string()))
            } else if let RecordBody::DeviceSummary(s) = &record.body
                && let Err(why) = s.check()
            {
                // Counts that cannot be, or a score they do not give: the
                // customer's benchmarks would carry it.
                counts.field_form.fetch_add(1, Relaxed);
                Some((RejectCode::FIELD_FORM, format!("device summary: {why}")))
            } else if let RecordBody::Consent(c) = &record.body
                && let Some(why) = consent_problem(c, record.program, device, settings, now)
            {
                // A person's consent is the basis of their records: only
                // the device that recorded it may send it, about the
                // program it travels under, and not from before anything
                // of that device could still be kept.
                counts.field_form.fetch_add(1, Relaxed);
                Some((RejectCode::FIELD_FORM, format!("consent record: {why}")))
            } else if dated(&record).is_some_and(|t| t > latest) {
                counts.future.fetch_add(1, Relaxed);
                Some((
                    RejectCode::FUTURE,
                    format!(
                        "dated more than {} s ahead of the service's clock",
                        max_future_skew.whole_seconds()
                    ),
                ))
            } else {
                None
            };
            match refusal {
                None => {
                    // The device a record names is the certificate's, as
                    // the hello's must be: a device files nothing as about
                    // another (a consent naming another is refused above).
                    match &mut record.body {
                        RecordBody::Event(e) if e.device != *device => e.device = device.clone(),
                        RecordBody::Device(d) if d.id != *device => d.id = device.clone(),
                        _ => {}
                    }
                    Some(record)
                }
                Some((code, reason)) => {
                    rejections.push(Rejection { seq, code, reason, retryable: false });
                    None
                }
            }
        })
        .collect();
    (admitted, rejections)
}

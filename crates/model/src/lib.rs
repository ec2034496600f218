//! The data model of privtel: ids, devices, users, binaries, domains, events,
//! programs, verdicts, and personal data typed as personal.
//!
//! # Overview
//!
//! * [`Record`] is the unit that flows through privtel: a [`Program`] and a
//!   [`RecordBody`] (a [`Device`], [`User`], [`Binary`], [`Application`],
//!   [`Package`], verdict, or [`Event`] with one of twelve [`EventBody`]
//!   kinds).
//! * Ids are newtypes: text ids for things people name ([`CustomerId`],
//!   [`DeviceId`], [`UserId`]) and 128-bit ids for things software mints
//!   ([`EventId`], [`BatchId`], [`BinaryId`], [`DomainId`]).
//! * Every personal field has the type [`Personal<T>`]: the value in clear, a
//!   keyed [`Pseudonym`], a [`Generalised`] coarser value, or
//!   [`Personal::Withheld`]. Its `Debug` never prints the value.
//! * [`VisitPersonal`] reaches every personal field of any record, with its
//!   [`FieldSpec`] (path, [`DataCategory`], [`ValueKind`], default
//!   [`Treatment`]). [`fields::ALL`] lists every personal field of the model;
//!   [`fields::DERIVED`] says which are taken from which (a file name from
//!   its path, a host from its URL), and [`fields::time_fields`] which time
//!   fields decide how coarse an event keeps its own instant.
//! * An event's user ([`Event::user`]) is the personal field
//!   `event.username`: clear, pseudonymised (the pseudonym's text form,
//!   [`UserId::from_pseudonym`]) or dropped.
//! * Verdicts: [`ThreatLevel`] and [`Reputation`] print and parse unknown as
//!   `-`; [`Category`] and [`CountryCode`] are validated text.
//! * Instants are [`Timestamp`] (a `time::OffsetDateTime` held in UTC);
//!   [`Timestamp::now`] reads the system clock, and code that tests must
//!   run at a chosen instant takes a [`Clock`]. Durations are
//!   `time::Duration`, re-exported as [`Duration`] (with
//!   [`OffsetDateTime`]), so no `time` dependency is needed.
//! * [`EventId::random`] mints an id for an event with no identity of its
//!   own; an event that has one gets an id derived from it
//!   (`privtel_hash::derive_event_id`), so a replay keeps its id.
//!
//! # Example
//!
//! ```
//! use privtel_model::{Personal, Treatment, User, UserId, VisitPersonal};
//!
//! let mut user = User {
//!     id: UserId::new("u-1042")?,
//!     username: Personal::Clear("alice".into()),
//!     upn: Personal::Withheld,
//!     first_name: Personal::Clear("Alice".into()),
//!     last_name: Personal::Clear("Martin".into()),
//!     job_title: Personal::Withheld,
//!     email: Personal::Clear("alice@corp.example".into()),
//!     phone: Personal::Withheld,
//! };
//!
//! // Debug output never shows a personal value.
//! assert!(!format!("{user:?}").contains("alice"));
//!
//! // Drop every identifier whose default treatment is `drop`.
//! user.visit_personal(&mut |mut field| {
//!     if field.spec.default_treatment == Treatment::Withhold {
//!         field.value.withhold();
//!     }
//! });
//! assert!(user.email.is_withheld());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Serialization
//!
//! Every type implements serde's traits. Human-readable formats (JSON) see
//! text forms (RFC 3339 instants, hex digests and ids, `-` for unknown);
//! binary formats (bincode) see compact forms. Deserialization validates
//! exactly as the constructors do, so a decoded value is as valid as a
//! constructed one. Decoders of outside input must still bound the input size
//! (`privtel-wire` does).
//!
//! A field that was plain text and became personal keeps its old form for
//! clear values, so earlier rows and frames still read: a clear
//! [`Binary::file_name`] is its text (JSON and bincode); a withheld one is
//! `null` in JSON, and any non-clear form is, in bincode, the length
//! `u64::MAX` (which no text has; an earlier decoder refuses it) followed by
//! the tagged [`Personal`] value. An event's user keeps its type
//! (`Option<UserId>`): a pseudonymised user is the pseudonym's text form.
//!
//! # Design
//!
//! This crate is layer 0: no I/O, no policy, no cryptography, and no
//! dependencies beyond serde, time and thiserror. Two conveniences read the
//! machine, through the standard library only: [`Timestamp::now`] the
//! system clock (code that must be testable takes a [`Clock`] instead), and
//! [`EventId::random`] the per-thread random keys std seeds from the
//! operating system (unique ids, not secrets; deterministic ids, which need
//! a keyed hash, are `privtel-hash`'s). Making personal data a type
//! (rather than a naming convention) means the filter cannot forget a field:
//! it visits them all, and the register in [`fields`] is checked against the
//! visitors by the tests.
//!
//! # Crate features
//!
//! None.

mod binary;
mod compat;
mod consent;
mod device;
mod error;
mod event;
pub mod fields;
mod generalised;
mod id;
pub mod iso8601;
mod personal;
mod program;
mod pseudonym;
mod record;
mod serde_text;
mod summary;
mod timestamp;
mod values;
mod verdict;
mod visit;
mod vocabulary;

pub use binary::{
    Application, Arch, Binary, BinarySighting, DIGEST_LEN, Digest, DomainSighting, ExecutableFormat, HashAlg,
    Package, PackageManager,
};
pub use consent::{Consent, ConsentSource};
pub use device::{Device, DeviceType, OsFamily, OsInfo, User};
pub use error::{Error, Result};
#[allow(deprecated)]
pub use event::BinaryExecution;
pub use event::{
    ConfigSample, CrashReport, Event, EventBody, Execution, ExperienceScore, FeatureUsage, Feedback,
    Interaction, LicenceSession, Login, PerformanceSample, VersionCheck, WebRequest,
};
pub use generalised::{DurationBucket, Generalised, IpPrefix, TimeBucket, TimeUnit};
pub use id::{BatchId, BinaryId, CustomerId, DeviceId, DomainId, EventId, MAX_TEXT_ID_LEN, UserId};
pub use personal::Personal;
pub use program::Program;
pub use pseudonym::{KeyId, Pseudonym, TOKEN_LEN};
pub use record::{Record, RecordBody};
pub use summary::{
    DEX_CRASH_WEIGHT, DEX_FEEDBACK_WEIGHT, DEX_PERFORMANCE_WEIGHT, DeviceSummary, DexInputs,
    MAX_SUMMARY_DAYS, dex,
};
// `time`'s types that this crate's API takes and returns (durations of
// events and buckets, `Timestamp::new`), so that a user of the model needs
// no `time` dependency of a matching version.
pub use time::{Duration, OffsetDateTime};
pub use timestamp::{Clock, SystemClock, Timestamp};
pub use values::{
    Category, CountryCode, Domain, Finite, Geohash, MAX_CATEGORY_LEN, MAX_DOMAIN_LEN, MAX_GEOHASH_LEN,
    MAX_LABEL_LEN, Privileges, Score, display_or_dash,
};
pub use verdict::{BinaryVerdict, DomainVerdict, Reputation, ThreatLevel};
pub use visit::{PersonalField, PersonalMut, VisitPersonal};
pub use vocabulary::{DataCategory, FieldSpec, Form, Treatment, ValueKind};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

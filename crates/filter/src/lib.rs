//! Decides what may leave a device and in what form: consent per program, a
//! treatment per personal field (clear, keyed pseudonym, generalised, or
//! never recorded), free-text scrubbing, a redaction report, a privacy
//! manifest, and k-anonymous benchmark aggregates.
//!
//! # Overview
//!
//! * [`Policy`] — the customer's choices, loaded from TOML with
//!   [`Policy::from_toml`] (an unknown field, program or treatment is an
//!   error naming it and its line). Unset fields get the model's most
//!   private default ([`privtel_model::FieldSpec::default_treatment`]).
//! * [`FilterBuilder`] → [`Filter`]: `apply` drops records of switched-off
//!   programs (and of kinds a program does not carry), then puts every
//!   personal field in its form, and hands the record out as a
//!   [`Filtered`], a type only the filter constructs. Pseudonyms are BLAKE3 keyed hashes under a
//!   sub-key derived from the customer's [`PseudonymKey`], the customer id
//!   and the field (or its link group), stamped with the key id.
//! * [`RedactionReport`] — counts per program, field and [`Rule`]; never a
//!   value.
//! * [`Scrubber`] — detectors for emails, IPs, Luhn-valid cards, home
//!   folders, URL credentials, tokens and phone numbers in free text; each
//!   can be switched off, and [`Scrubber::find`] is a dry run.
//! * [`Interactions`] — the web applications and actions whose interaction
//!   events are recorded (the policy's `[interactions]`); any other
//!   interaction event is dropped and counted
//!   ([`RedactionReport::interaction_not_defined`]).
//! * [`LicenceTerms`] and [`Policy::check_licence`] — the programs a
//!   customer's licence requires to stay on.
//! * [`Manifest`] — what each program sends, in what form, where and for how
//!   long, as JSON and Markdown.
//! * [`Aggregator`] — per-industry cells across customers, suppressed below
//!   k customers, with optional Laplace noise (see [`aggregate`](crate::Aggregator)
//!   for what that guarantees).
//!
//! # Example
//!
//! ```
//! use privtel_filter::{FilterBuilder, Policy, PseudonymKey, RedactionReport};
//! use privtel_model::{CustomerId, KeyId, Personal, Program, Record, RecordBody, User, UserId};
//!
//! let policy = Policy::from_toml(r#"
//!     [programs]
//!     personalised_usage = true
//!     [fields]
//!     "user.email" = "pseudonymise"
//!     "user.first_name" = "clear"
//! "#)?;
//! let filter = FilterBuilder::new()
//!     .policy(policy)
//!     .customer(CustomerId::new("acme")?)
//!     .key(PseudonymKey::new(KeyId::new(1), [7; 32]))
//!     .build();
//! let record = Record {
//!     program: Program::PersonalisedUsage,
//!     body: RecordBody::User(User {
//!         id: UserId::new("u-1")?,
//!         username: Personal::Clear("alice".into()),
//!         upn: Personal::Withheld,
//!         first_name: Personal::Clear("Alice".into()),
//!         last_name: Personal::Clear("Martin".into()),
//!         job_title: Personal::Withheld,
//!         email: Personal::Clear("alice@corp.example".into()),
//!         phone: Personal::Withheld,
//!     }),
//! };
//! let mut report = RedactionReport::default();
//! let out = filter.apply(record, &mut report).expect("personalised usage is on");
//! let RecordBody::User(user) = out.into_record().body else { unreachable!() };
//! assert!(matches!(user.email, Personal::Pseudonym(_)));
//! assert_eq!(user.first_name, Personal::Clear("Alice".into()));
//! assert!(user.username.is_withheld() && user.last_name.is_withheld());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! The filter reaches personal data only through the model's visitor, so a
//! field cannot be forgotten; every form it cannot produce (no key, no
//! registrable domain) falls back to withholding the value, the more private
//! outcome. Policy decisions are pure functions of the policy, the key and
//! the record: no clock, no I/O.
//!
//! # Crate features
//!
//! None.

mod admit;
mod aggregate;
mod error;
mod filter;
mod filtered;
mod interactions;
mod keyring;
mod licence;
mod manifest;
mod policy;
mod scrub;

pub use admit::Inadmissible;
pub use aggregate::{Aggregator, Cell, Metric};
pub use error::{Error, Result};
pub use filter::{Filter, FilterBuilder, PseudonymKey, RedactionReport, Rule, allowed_kinds};
pub use filtered::Filtered;
pub use interactions::{
    InteractionError, Interactions, MAX_ACTION_LEN, MAX_INTERACTION_ACTIONS, MAX_INTERACTION_APPLICATIONS,
    is_action_name,
};
pub use keyring::{KEY_RING_HEADER, KeyRing, KeyRingError, KeyState, Maintenance};
pub use licence::{LicenceError, LicenceTerms, Offering};
pub use manifest::{Manifest, ManifestField, ManifestProgram};
pub use policy::{Deprecation, Generalisation, Policy, RetentionDays, ScrubSettings};
pub use scrub::{Detector, Finding, Scrubbed, Scrubber};

// The model types this crate's API takes and returns, so that a program
// using this crate needs no `privtel-model` (or `time`) dependency of a
// matching version: the model as a whole (to build records), and the types
// of its signatures by name.
pub use privtel_model as model;
pub use privtel_model::{
    CustomerId, DataCategory, Duration, EventBody, FieldSpec, Geohash, KeyId, Program, Record, RecordBody,
    TimeUnit, Timestamp, Treatment, User, UserId, fields,
};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

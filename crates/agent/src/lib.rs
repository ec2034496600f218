//! The device side of privtel: collectors turn what a device sees into
//! records, the filter puts every personal field in the customer's form,
//! a durable outbox keeps what passed, and an uploader sends it with
//! retries; enrichment asks about binaries and domains by hash prefix.
//!
//! # Overview
//!
//! * [`Agent`] — [`Agent::collect`] (the application SDK's way in: raw
//!   records, filtered on the spot), [`Agent::collect_web_log`] (a
//!   [`WebLog`] followed exactly once across crashes, rotation and
//!   truncation), [`Agent::maintain`] (on-device TTL), [`Agent::upload`] /
//!   [`Agent::deliver`] (batches, acknowledgements, `retry_after`,
//!   backoff with jitter within a [`RetryBudget`]), [`Agent::enrich`]
//!   (private lookups, none when enrichment is off or nothing is new),
//!   [`Agent::enhance`] (the anonymous enrichment upload: sightings of
//!   binaries and sites on a session that names no device),
//!   [`Agent::check_version`] (is a newer version out? on the same kind of
//!   anonymous session).
//! * [`verify_installer`] — a downloaded installer becomes a
//!   [`VerifiedInstaller`] only once its SHA-256 and size match the offer.
//! * [`sdk`] — the application SDK: [`sdk::TelemetryBuilder`] →
//!   [`sdk::Telemetry`], a cheap handle whose calls (feature usage,
//!   configuration, performance, feedback, crash reports, licence sessions,
//!   personalised usage under per-person consent) never wait on a disk or
//!   the network; each endpoint has its own spool and background worker.
//! * [`Outbox`] — the spool, which accepts only [`Filtered`] records: the
//!   filter is the only way from a raw record to the spool and the wire.
//! * [`sightings_from_scan`] (what Enhance sends of a scan: digests, size,
//!   format, day first seen), [`records_from_scan`] (its executions),
//!   [`check_scan_roots`] — the scan collector.
//! * [`AuditLog`] — what left the device, 0600, rotated by size, expired by
//!   TTL. [`load_or_create_key`] — key files created 0600 and refused when
//!   others may read them.
//! * [`collect`] — endpoint collectors (Linux): [`Agent::collect_processes`]
//!   (executions from `/proc`, digests through the hash cache, each
//!   process once across restarts), [`Agent::collect_logins`] (`wtmp`
//!   followed exactly once), [`Agent::collect_device`] and
//!   [`Agent::collect_performance`]; elsewhere a typed "not supported".
//! * [`Schedule`] — the enrichment schedule as pure functions of `now`;
//!   what it decides from (when each binary last ran and was last
//!   evaluated, when each domain was looked up) is kept in the spool, so
//!   it holds across restarts (docs/COLLECTORS.md).
//! * [`device_summary`] — what leaves the device for benchmarking: a
//!   period's counts and its Digital Experience Score, no user, no device id.
//!
//! # Example
//!
//! ```
//! use privtel_agent::{Agent, WebLog};
//! use privtel_filter::{FilterBuilder, Policy};
//! use privtel_model::{CustomerId, DeviceId, Timestamp};
//! use privtel_store::SpoolOptions;
//!
//! let dir = tempfile::tempdir()?;
//! let log = dir.path().join("web.log");
//! std::fs::write(&log, "2026-11-27T09:00:00Z\tu-1\thttps://www.example.com/a?q=1\t203.0.113.7\t120\nnot a line\n")?;
//!
//! let policy = Policy::from_toml("[programs]\nenrichment = true\npersonalised_usage = true\n")?;
//! let filter = FilterBuilder::new().policy(policy).customer(CustomerId::new("acme")?).build();
//! let mut agent = Agent::open(
//!     CustomerId::new("acme")?,
//!     DeviceId::new("dev-1")?,
//!     filter,
//!     dir.path().join("spool.db"),
//!     SpoolOptions::default(),
//! )?;
//! let now = Timestamp::UNIX_EPOCH;
//! let (report, collected) = agent.collect_web_log(&WebLog::new(&log), now)?;
//! assert_eq!((report.records, report.skipped, collected.records), (1, 1, 1));
//! assert_eq!(report.problem_lines().next().unwrap(), format!("{}:2: line does not have 5 tab-separated columns (time, user, url, ip, page load ms)", log.display()));
//! // Read again: nothing new, nothing repeated.
//! let (again, _) = agent.collect_web_log(&WebLog::new(&log), now)?;
//! assert_eq!(again.lines, 0);
//! assert_eq!(agent.outbox().len(None)?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! The agent crate holds the device's guarantees; the crates below it stay
//! generic (the store spools any record, the wire sends any record). Raw
//! records exist only inside the agent: nothing reaches the [`Outbox`]
//! without being [`Filtered`], and [`Agent::upload`] sends only the outbox.
//! Every read position is committed in the same transaction as the records
//! it produced; every event id is derived from (device, source, position),
//! so the service recognises a replay.
//!
//! # Crate features
//!
//! * `tls` — [`enroll`]: the device's key pair (made here, never sent), its
//!   certificate request with the administrator's enrollment token, and the
//!   credentials (client certificate and key, 0600) for mutual TLS; with
//!   [`client_config`] and [`enrollment_client_config`].

mod agent;
mod audit;
pub mod collect;
#[cfg(feature = "tls")]
mod enroll;
mod error;
mod event_id;
mod keys;
mod marks;
mod outbox;
mod retry;
mod scan;
mod schedule;
pub mod sdk;
mod summary;
mod update;
mod weblog;

pub use agent::{
    Agent, Collected, Delivery, MAX_BATCH_RECORDS, UploadReport, key_path, policy_retention, spool_options,
};
pub use audit::{AuditEntry, AuditLineError, AuditLog, AuditOptions, read_audit_log};
#[cfg(feature = "tls")]
pub use enroll::enroll;
pub use error::{AgentError, KeyError, LineProblem};
pub use keys::{
    current_pseudonym_key, destroy_key, load_key_ring, load_or_create_key, maintain_key_ring,
    rotate_key_ring, save_key_ring,
};
pub use outbox::Outbox;
#[cfg(feature = "tls")]
pub use privtel_authority::{Credentials, client_config, enrollment_client_config};
pub use privtel_filter::Filtered;
pub use retry::RetryBudget;
pub use scan::{check_scan_roots, login_of_uid, records_from_scan, sightings_from_scan};
pub use schedule::Schedule;
pub use summary::{SLOW_LOGIN, SLOW_SAMPLE_MS, device_summary};
pub use update::{VerifiedInstaller, VersionOffer, verify_installer};
pub use weblog::{
    CHUNK_LINES, MAX_LINE_BYTES, MAX_PROBLEMS_KEPT, SourceReport, WebLog, parse_web_line, parse_web_log,
};

/// The event id for `parts` under `context`: the same parts always give the
/// same id, as the agent's own collectors derive theirs (see
/// [`privtel_hash::derive_event_id`], which this is). The agent spools an
/// event under this id keyed with the device's secret (`PATH.ids.key`,
/// docs/COLLECTORS.md "Event ids"), so an id derived from a path or a login
/// gives neither back.
pub use privtel_hash::derive_event_id;

// The model types this crate's API takes and returns, so that a program
// using this crate needs no `privtel-model` (or `time`) dependency of a
// matching version: the model as a whole (to build records), and the types
// of its signatures by name.
pub use privtel_model as model;
pub use privtel_model::{
    BinarySighting, BinaryVerdict, CustomerId, DeviceId, Digest, Domain, DomainSighting, DomainVerdict,
    Duration, Event, EventId, KeyId, Program, Record, Timestamp, UserId,
};

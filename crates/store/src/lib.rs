//! Durable storage on real SQLite: the **spool**, a device's outbox that
//! loses nothing, and the **engine store**, the service's events and objects.
//!
//! # Overview
//!
//! * [`Spool`] — `append` gives each record a per-device sequence number and
//!   returns once it is durable (WAL, `synchronous = FULL`; `append_batch`
//!   is the group commit); `next_batch` / `ack` send and remove; `expire`
//!   applies the same TTL as the service; `purge_program` empties a program
//!   whose consent was withdrawn; a size cap evicts oldest first. Every way
//!   out is counted ([`SpoolCounters`]).
//! * [`EngineStore`] (implemented by [`SqliteEngine`]) — idempotent
//!   `ingest` (a high-water mark per device), `sweep` (TTL per class and the
//!   inactivity purge), `export_person` (JSON Lines), `erase_person` (by id
//!   and by pseudonym, with a [`DeletionReceipt`] and a suppression of later
//!   ingest).
//! * [`AtRestKey`] — AES-256-GCM for payloads at rest; the key id is stored
//!   beside each row, and the wrong key is [`Error::WrongKey`] or
//!   [`Error::MissingKey`], never garbage.
//! * Schemas are versioned with `PRAGMA user_version` and migrated on open.
//!
//! # Example
//!
//! ```
//! use privtel_store::{EngineStore, ErasureRequest, SqliteEngine};
//! use privtel_retention::RetentionPolicy;
//! use privtel_model::{DeviceId, UserId};
//!
//! let dir = tempfile::tempdir()?;
//! let mut engine = SqliteEngine::open(&dir.path().join("engine.db"), RetentionPolicy::default(), None)?;
//! let now = privtel_testkit::fixtures::base_time();
//! let records = privtel_testkit::fixtures::records("doc");
//! let device = DeviceId::new("dev-0001")?;
//! let first = engine.ingest(&device, 1, records.clone(), now)?;
//! let retry = engine.ingest(&device, 1, records, now)?;
//! assert_eq!((first.stored, retry.stored, retry.duplicates), (18, 0, 18));
//!
//! let user = UserId::new("u-1042")?;
//! let mut export = Vec::new();
//! assert!(engine.export_person(&user, &mut export)? > 0);
//! let receipt = engine.erase_person(&ErasureRequest::new("req-1", user.clone(), now), now)?;
//! assert!(receipt.records_removed > 0);
//! assert_eq!(engine.export_person(&user, &mut Vec::new())?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! None. SQLite is compiled in (`rusqlite`'s `bundled`).

mod codec;
mod engine;
mod error;
mod schema;
mod spool;

pub use codec::{AtRestKey, MAX_RECORD_BYTES};
pub use engine::{DeletionReceipt, EngineStore, ErasureRequest, IngestOutcome, SqliteEngine, SweepReport};
pub use error::{Error, Result};
pub use spool::{SourcePosition, Spool, SpoolCounters, SpoolOptions, Spooled};

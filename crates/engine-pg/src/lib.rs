//! The privtel engine store on PostgreSQL: [`PgEngine`] implements
//! [`privtel_store::EngineStore`] with the same contract as the SQLite
//! engine (the same test suite runs against both), for installations that
//! outgrow one SQLite file.
//!
//! # Overview
//!
//! * **Every key scoped by customer**; records and their mention digests
//!   partitioned by (customer, class, day), so a retention sweep drops whole
//!   partitions; partitions made ahead of time ([`PgEngine::maintain`]) or
//!   on demand within a window; a DEFAULT partition for any other day,
//!   monitored ([`PgEngine::check_default`], [`PgError::DefaultPartitionHolds`]).
//! * **Idempotent ingest**: high-water marks per (customer, device, stream)
//!   and event ids per (customer, device, day) checked and moved in the
//!   transaction that stores the rows; a group of batches is one
//!   transaction with one binary `COPY` per table.
//! * **Erasure that leaves nothing readable**: payloads are sealed
//!   (AES-256-GCM, the store's codec) under keys derived from per-person
//!   keys; erasure deletes the person's keys and rewrites the key table, so
//!   the bytes deleted rows leave in the pages cannot be opened.
//!
//! docs/STORAGE.md ("The engine store on PostgreSQL") describes the tables,
//! what survives where (the log, backups) and for how long.
//!
//! # Example
//!
//! ```no_run
//! use privtel_engine_pg::{PgEngine, PgOptions};
//! use privtel_store::{CustomerId, DeviceId, EngineStore};
//!
//! let mut engine = PgEngine::connect("postgres://postgres@127.0.0.1:5432/privtel", PgOptions::default())?;
//! let now = privtel_store::Timestamp::from_unix_seconds(1_795_752_000)?;
//! let (acme, device) = (CustomerId::new("acme")?, DeviceId::new("dev-1")?);
//! let first = engine.ingest(&acme, &device, 7, 1, Vec::new(), now)?;
//! assert_eq!(first.stored, 0);
//! engine.maintain(now, 7)?;
//! engine.check_default()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod copy;
mod engine;
mod error;
mod keys;
mod partition;
mod pg;
mod rewrite;
mod schema;

pub use engine::{PartitionReport, PgEngine, PgOptions};
pub use error::{DecodeError, PgError};

/// Decoders of bytes read back from the database, for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::keys::{MAX_SUBJECTS, SUBJECT_LEN, WRAPPED_LEN, decode_subjects, fuzz_load_key};
    pub use crate::partition::parse_name;
}

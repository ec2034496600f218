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
//! * [`EngineStore`] (implemented by [`SqliteEngine`]) — every key scoped
//!   by customer: idempotent `ingest` (a high-water mark per customer,
//!   device and sending stream; a batch out of range or past a gap is
//!   refused whole), `sweep` (one customer's TTL per class and inactivity
//!   purge), `export_person` (JSON Lines), `erase_person` (by id, and by
//!   any pseudonym or clear identifier their records share, with a
//!   [`DeletionReceipt`] and a suppression of later ingest kept as keyed
//!   digests, never ids in clear), enrichment verdicts per customer.
//!   [`Encoder::encode_folding`] folds benchmarking records into per-customer
//!   aggregates instead of storing them; [`SqliteEngine::aggregates`] reads
//!   them ([`CustomerAggregate`]: no device, no person).
//! * [`KeyStore`] and [`MasterKey`] — per-customer data keys (envelope
//!   encryption): each customer's rows sealed under its own key, wrapped by
//!   a master key in a file beside the engine with rotated backups; master
//!   and data-key rotation, [`SqliteEngine::reseal`] in bounded batches.
//!   [`EngineStore::delete_customer`] (contract end: keys destroyed first,
//!   then every row, a [`CustomerDeletion`] receipt) and
//!   [`EngineStore::export_customer`] (the customer copy, JSON Lines).
//!   docs/CUSTOMER-KEYS.md describes them.
//! * [`AtRestKey`] — AES-256-GCM for payloads at rest; the key id is stored
//!   beside each row, and the wrong key is [`Error::WrongKey`] or
//!   [`Error::MissingKey`], never garbage.
//! * Schemas are versioned with `PRAGMA user_version` and migrated on open;
//!   payload rows carry a format code (1: bincode, read only; 2: JSON,
//!   written), and programs are stored by their explicit
//!   [`privtel_model::Program::code`]. docs/STORAGE.md describes it all.
//!
//! # Example
//!
//! ```
//! use privtel_store::model::{Event, EventBody, EventId, FeatureUsage};
//! use privtel_store::{
//!     CustomerId, DeviceId, EngineOptions, EngineStore, ErasureRequest, Program, Record, RecordBody,
//!     SqliteEngine, Timestamp, UserId,
//! };
//!
//! let dir = tempfile::tempdir()?;
//! let mut engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default())?;
//! let now: Timestamp = "2026-11-27T10:00:00Z".parse()?;
//! let (device, person) = (DeviceId::new("dev-0001")?, UserId::new("u-1042")?);
//! // Three uses of a feature by one person, as an agent sends them.
//! let records: Vec<Record> = (1..=3u8)
//!     .map(|n| Record {
//!         program: Program::PersonalisedUsage,
//!         body: RecordBody::Event(Event {
//!             id: EventId::from_bytes([n; 16]),
//!             device: device.clone(),
//!             user: Some(person.clone()),
//!             recorded_at: now,
//!             body: EventBody::FeatureUsage(FeatureUsage {
//!                 product: "editor".into(),
//!                 feature: "export".into(),
//!                 count: 1,
//!             }),
//!         }),
//!     })
//!     .collect();
//! let (acme, stream) = (CustomerId::new("acme")?, 0x5eed);
//! let first = engine.ingest(&acme, &device, stream, 1, records.clone(), now)?;
//! let retry = engine.ingest(&acme, &device, stream, 1, records.clone(), now)?;
//! assert_eq!((first.stored, retry.stored, retry.duplicates), (3, 0, 3));
//! // A batch past the high-water mark plus one is refused, and stores nothing.
//! assert!(engine.ingest(&acme, &device, stream, 100, records, now).is_err());
//!
//! let user = person;
//! let mut export = Vec::new();
//! assert_eq!(engine.export_person(&acme, &user, &mut export)?, 3);
//! // Another customer's person of the same id is someone else.
//! assert_eq!(engine.export_person(&CustomerId::new("globex")?, &user, &mut Vec::new())?, 0);
//! let receipt = engine.erase_person(&acme, &ErasureRequest::new("req-1", user.clone(), now), now)?;
//! assert!(receipt.records_removed > 0);
//! assert_eq!(engine.export_person(&acme, &user, &mut Vec::new())?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! None. SQLite is compiled in (`rusqlite`'s `bundled`).

mod aggregate;
mod codec;
mod engine;
mod error;
mod json;
mod keys;
mod lifecycle;
mod mention;
mod schema;
mod spool;

pub use aggregate::{AGGREGATE_TTL_DAYS, CustomerAggregate};
pub use codec::{AtRestKey, MAX_RECORD_BYTES};
pub use engine::{
    AdmittedBatch, Checkpointer, DeletionReceipt, EncodedBatch, Encoder, EngineOptions, EngineReader,
    EngineStore, ErasureRequest, IngestOutcome, JsonBatch, LogSync, MAX_STREAMS_PER_DEVICE, Sequence,
    SqliteEngine, StoredVerdict, SweepReport,
};
pub use error::{Error, Result};
pub use keys::{
    FIRST_DATA_KEY_ID, KeyInfo, KeyState, KeyStore, KeyStoreOptions, MAX_BACKUP_RETENTION,
    MAX_KEY_STORE_BYTES, MasterKey,
};
pub use lifecycle::{COPY_FORMAT, COPY_FORMAT_VERSION, CopyStats, CustomerDeletion, ResealProgress};
/// Decoders of outside bytes, for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::keys::fuzz_parse as key_store_parse;
}

/// The pieces of the engine's row format, for a second engine (such as
/// `privtel-engine-pg`) that must store the same payloads and compute the
/// same keyed digests: the payload codec ([`parts::seal`], [`parts::unseal`],
/// [`parts::Format`]), the column forms ([`parts::nanos`],
/// [`parts::record_time`], [`parts::program_code`]), the keyed digests of
/// what names a person ([`parts::Secret`], [`parts::mentions`],
/// [`parts::MentionKind`]) and the batch range check
/// ([`parts::check_range`]). docs/STORAGE.md describes each.
///
/// ```
/// use privtel_store::parts::{Format, MentionKind, Secret, seal, unseal};
/// use privtel_store::AtRestKey;
///
/// let record = privtel_testkit::fixtures::records("doc").remove(0);
/// let key = AtRestKey::new(3, [7; 32]);
/// let (key_id, payload) = seal(&record, Some(&key))?;
/// assert_eq!(unseal(1, Format::CURRENT.code(), key_id, &payload, Some(&key))?, record);
/// let secret = Secret([9; 32]);
/// let user = privtel_store::UserId::new("u-1")?;
/// assert_eq!(secret.user("acme", &user), secret.digest("acme", MentionKind::User, b"u-1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod parts {
    pub use crate::codec::{
        Format, RECORDS_DICTIONARY_1, encode, encode_as, encode_json_as, nanos, program_code, random_nonce,
        received_by, record_time, seal, seal_encoded, unseal, unseal_bytes,
    };
    pub use crate::engine::{check_range, tombstone};
    pub use crate::lifecycle::{
        LineWriter, RecordLine, TimeText, elapsed_since, manifest, program_name, time_text,
    };
    pub use crate::mention::{
        CLEAR_LINKS, DIGEST_LEN, Digest, MentionKind, PSEUDONYM_LINKS, Secret, linking, mentions,
        system_account,
    };
}
pub use spool::{
    ConsentChange, ConsentState, Mark, MarkChange, Run, SourcePosition, Spool, SpoolCounters, SpoolOptions,
    Spooled, Subject,
};

// The model types this crate's API takes and returns, so that a program
// using this crate needs no `privtel-model` (or `time`) dependency of a
// matching version: the model as a whole (to build records), and the types
// of its signatures by name.
pub use privtel_model as model;
pub use privtel_model::{
    BinaryVerdict, ConsentSource, CustomerId, Device, DeviceId, Digest, Domain, DomainVerdict, Duration,
    KeyId, Program, Record, RecordBody, Timestamp, UserId,
};
// The retention policy the spool and the engine apply.
pub use privtel_retention::{RecordClass, RetentionPolicy, Ttl};

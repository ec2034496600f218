//! The error type of `privtel-store`.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite refused an operation (the message is SQLite's, flattened so
    /// the public API does not expose rusqlite's types).
    #[error("database error while {op}: {message}")]
    Database {
        /// What the store was doing.
        op: &'static str,
        /// SQLite's message.
        message: String,
    },
    /// The file's schema is newer than this version understands.
    #[error("database schema version {found} is newer than the {supported} this version understands")]
    Schema {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest this version writes.
        supported: i64,
    },
    /// A stored payload does not decode as a record.
    #[error("record {id} does not decode: {reason}")]
    Decode {
        /// The row.
        id: i64,
        /// What is wrong.
        reason: String,
    },
    /// A payload was sealed under a key the store was not given.
    #[error("record {id} is sealed under key {key_id}, but the store has {have}")]
    MissingKey {
        /// The row.
        id: i64,
        /// The key it was sealed under.
        key_id: u32,
        /// The key the store has, in words.
        have: String,
    },
    /// The key has the right id but does not open the payload: the wrong
    /// secret, or a corrupted row. Never garbage.
    #[error("record {id} does not open under key {key_id}: wrong key or corrupted data")]
    WrongKey {
        /// The row.
        id: i64,
        /// The key id.
        key_id: u32,
    },
    /// A stored row holds a value this version cannot read (a code it does
    /// not know, a time out of range).
    #[error("stored {what} is not valid: {reason}")]
    Corrupt {
        /// What was being read (`consent`).
        what: &'static str,
        /// What was wrong, naming what was expected.
        reason: String,
    },
    /// A record could not be encoded (too large for the limit).
    #[error("record could not be encoded: {0}")]
    Encode(String),
    /// A batch's sequence numbers are outside what a stream can hold: the
    /// first is 0, or the last overflows or exceeds `i64::MAX` (the largest
    /// a SQLite integer stores exactly). Nothing of the batch is stored.
    #[error(
        "batch of {records} records from sequence number {first_seq} is out of range: expected sequence numbers from 1 to 9223372036854775807"
    )]
    SequenceRange {
        /// The batch's first sequence number.
        first_seq: u64,
        /// How many records the batch holds.
        records: u64,
    },
    /// A batch starts past the stream's high-water mark plus one: records in
    /// between were never received. Refused, so that a forged or confused
    /// sender cannot raise the mark over records still to come. Nothing of
    /// the batch is stored.
    #[error("batch starts at sequence number {first_seq} but the stream's high-water mark is {high_water}: expected at most {}", high_water.saturating_add(1))]
    SequenceGap {
        /// The batch's first sequence number.
        first_seq: u64,
        /// The stream's high-water mark.
        high_water: u64,
    },
    /// A store written before tenants (wave 1 or 2) holds data, and the
    /// options name no customer to file it under.
    #[error(
        "a pre-tenant store holding {rows} rows needs a legacy customer to migrate: expected EngineOptions::legacy_customer"
    )]
    LegacyCustomerRequired {
        /// Rows of data in the old store (records, users, suppressions, receipts, devices).
        rows: u64,
    },
    /// The keyed-hash secret given is not the one the store's digests were
    /// made with (or the store was made with a secret and none was given).
    #[error("the keyed-hash secret {given} does not match the store's: expected {expected}")]
    SecretMismatch {
        /// What the options gave, in words ("none", "a secret").
        given: &'static str,
        /// What the store needs, in words.
        expected: &'static str,
    },
    /// A master key could not be read or made: a file open to its group or
    /// others, not 64 hex digits, an unset variable (never the key's text
    /// nor the file's path).
    #[error("master key: {reason}")]
    MasterKey {
        /// What is wrong.
        reason: String,
    },
    /// The key store was written under another master key than the one
    /// given.
    #[error("the key store is wrapped under master key {expected}, but master key {given} was given")]
    MasterKeyMismatch {
        /// The master key id the store needs.
        expected: privtel_model::KeyId,
        /// The id of the key given.
        given: privtel_model::KeyId,
    },
    /// The key-store file is not one this version reads, or a key in it
    /// does not open (the reason names no value of it).
    #[error("key store: {reason}")]
    KeyStore {
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the key-store file (or its backups) failed.
    #[error("key store file: {0}")]
    KeyStoreIo(#[source] std::io::Error),
    /// A row is sealed under a data key that was destroyed (its customer's
    /// contract ended, or a retired key after re-sealing): it cannot be
    /// read, ever.
    #[error("record {id} is sealed under data key {key_id}, which was destroyed")]
    KeyDestroyed {
        /// The row.
        id: i64,
        /// The destroyed key.
        key_id: u32,
    },
    /// The customer was deleted at contract end: nothing of it is stored
    /// again until it is re-onboarded.
    #[error("the customer was deleted at contract end: expected a re-onboarded customer")]
    CustomerDeleted,
    /// Writing an export failed.
    #[error("writing the export failed: {0}")]
    Export(#[source] std::io::Error),
    /// The log could not be emptied into the file (another connection held
    /// an older snapshot for too long): what was removed may still be in
    /// the write-ahead log. Run the operation's checkpoint again.
    #[error(
        "{op}: the write-ahead log could not be checkpointed, expected no reader holding an old snapshot"
    )]
    CheckpointBusy {
        /// What was being done.
        op: &'static str,
    },
}

pub(crate) trait Context<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::Database { op, message: e.to_string() })
    }
}

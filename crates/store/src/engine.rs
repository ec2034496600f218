//! The engine store: the service's events and objects of every customer,
//! with idempotent ingest per sending stream, retention sweeps per
//! customer, export and erasure of one person, and enrichment verdicts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore as _;
use privtel_model::{
    BinaryVerdict, CustomerId, DeviceId, Digest as Sha256, Domain, DomainVerdict, Program, Record, Timestamp,
    UserId,
};
use privtel_retention::{RecordClass, RetentionPolicy};
use rusqlite::{
    Connection, OptionalExtension as _, Transaction, TransactionBehavior, params, params_from_iter,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::{self, Fold};
use crate::codec::{AtRestKey, Format, nanos, program_code, record_time, seal_into, unseal};
use crate::error::{Context as _, Error, Result};
use crate::keys::KeyStore;
use crate::lifecycle::{CopyStats, CustomerDeletion};
use crate::mention::{Digest, MentionKind, Secret, mentions};
use crate::schema::{self, Step};

/// Wave 1: the first schema, no tenant.
const V1: &str = "
    CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        device INTEGER NOT NULL,
        user INTEGER,
        class INTEGER NOT NULL,
        kind TEXT NOT NULL,
        program INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        stored_at INTEGER NOT NULL,
        key_id INTEGER,
        payload BLOB NOT NULL
    );
    CREATE INDEX records_time ON records(class, recorded_at);
    CREATE INDEX records_device ON records(device);
    CREATE INDEX records_user ON records(user);
    CREATE TABLE tokens (token BLOB NOT NULL, record_id INTEGER NOT NULL, PRIMARY KEY (token, record_id)) WITHOUT ROWID;
    CREATE INDEX tokens_record ON tokens(record_id);
    CREATE TABLE devices (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL UNIQUE,
        last_seen INTEGER NOT NULL,
        high_water INTEGER NOT NULL
    );
    CREATE TABLE users (id INTEGER PRIMARY KEY, user TEXT NOT NULL UNIQUE);
    CREATE TABLE suppressed_users (user TEXT PRIMARY KEY);
    CREATE TABLE suppressed_tokens (token BLOB PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE receipts (
        request_id TEXT PRIMARY KEY,
        requested_at INTEGER NOT NULL,
        completed_at INTEGER NOT NULL,
        records INTEGER NOT NULL,
        pseudonyms INTEGER NOT NULL
    );
";

/// Wave 2: event ids, unique per device.
const V2: &str = "
    ALTER TABLE records ADD COLUMN event_id INTEGER;
    CREATE UNIQUE INDEX records_event ON records(device, event_id) WHERE event_id IS NOT NULL;
";

/// Version 3, the tenant schema (docs/STORAGE.md describes every table).
/// The old tables are renamed aside, the new ones created, and
/// [`migrate_v3`] moves the rows across.
const V3: &str = "
    DROP INDEX records_time;
    DROP INDEX records_device;
    DROP INDEX records_user;
    DROP INDEX records_event;
    DROP INDEX tokens_record;
    ALTER TABLE records RENAME TO old_records;
    ALTER TABLE tokens RENAME TO old_tokens;
    ALTER TABLE devices RENAME TO old_devices;
    ALTER TABLE users RENAME TO old_users;
    ALTER TABLE receipts RENAME TO old_receipts;

    -- Settings of the store: the keyed-hash secret (or only its check
    -- value when the operator supplies the secret).
    CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    -- AUTOINCREMENT everywhere a row id is referenced from elsewhere or
    -- cached: an id is never given to a second row, even after deletes.
    CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL UNIQUE);
    CREATE TABLE devices (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer INTEGER NOT NULL,          -- customers.id
        device TEXT NOT NULL,
        last_seen INTEGER NOT NULL,         -- unix ns
        UNIQUE (customer, device)
    );
    -- One high-water mark per sending spool of a device.
    CREATE TABLE streams (
        device INTEGER NOT NULL,            -- devices.id
        stream INTEGER NOT NULL,            -- the spool's u64 id, bit for bit; 0: a pre-stream mark
        high_water INTEGER NOT NULL,
        PRIMARY KEY (device, stream)
    ) WITHOUT ROWID;
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer INTEGER NOT NULL,
        user TEXT NOT NULL,
        UNIQUE (customer, user)
    );
    CREATE TABLE records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer INTEGER NOT NULL,          -- customers.id
        device INTEGER NOT NULL,            -- devices.id of the sender
        user INTEGER,                       -- users.id
        class INTEGER NOT NULL,             -- 0 event, 1 object
        kind TEXT NOT NULL,                 -- the model's snake_case kind name
        program INTEGER NOT NULL,           -- Program::code
        recorded_at INTEGER NOT NULL,       -- unix ns, when retention starts
        stored_at INTEGER NOT NULL,         -- unix ns
        event_id INTEGER,                   -- an event id's low 64 bits
        format INTEGER NOT NULL,            -- 1 bincode (old rows), 2 json
        key_id INTEGER,                     -- at-rest key, if sealed
        payload BLOB NOT NULL
    );
    CREATE INDEX records_time ON records(customer, class, recorded_at);
    CREATE INDEX records_device ON records(device);
    CREATE INDEX records_user ON records(user);
    CREATE UNIQUE INDEX records_event ON records(device, event_id) WHERE event_id IS NOT NULL;
    -- Keyed digests of what names a person in each record (mention.rs).
    CREATE TABLE mentions (
        digest BLOB NOT NULL,
        record_id INTEGER NOT NULL,
        kind INTEGER NOT NULL,              -- MentionKind::code
        PRIMARY KEY (digest, record_id)
    ) WITHOUT ROWID;
    CREATE INDEX mentions_record ON mentions(record_id);
    -- Digests of erased people: user ids and everything their records named.
    CREATE TABLE suppressed (
        customer INTEGER NOT NULL,
        digest BLOB NOT NULL,
        kind INTEGER NOT NULL,
        PRIMARY KEY (customer, digest)
    ) WITHOUT ROWID;
    CREATE TABLE receipts (
        customer INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        completed_at INTEGER NOT NULL,
        records INTEGER NOT NULL,
        pseudonyms INTEGER NOT NULL,
        PRIMARY KEY (customer, request_id)
    );
    CREATE TABLE binary_verdicts (
        customer INTEGER NOT NULL,
        sha256 BLOB NOT NULL,
        verdict TEXT NOT NULL,              -- the model's JSON
        evaluated_at INTEGER NOT NULL,
        PRIMARY KEY (customer, sha256)
    ) WITHOUT ROWID;
    CREATE TABLE domain_verdicts (
        customer INTEGER NOT NULL,
        domain TEXT NOT NULL,
        verdict TEXT NOT NULL,
        evaluated_at INTEGER NOT NULL,
        PRIMARY KEY (customer, domain)
    ) WITHOUT ROWID;
";

/// Version 4: one index fewer per stored record. The unique index on
/// (device, event id) covers every record (objects have no event id, and
/// NULLs never collide), so it also serves lookups by device (the
/// inactivity purge) and the separate device index goes.
const V4: &str = "
    DROP INDEX records_device;
    DROP INDEX records_event;
    CREATE UNIQUE INDEX records_event ON records(device, event_id);
";

/// Version 5 is the benchmarking aggregates' table (`aggregate::V5`).
///
/// Version 6: customers deleted at contract end, as keyed digests of their
/// ids (never the ids): their later batches are refused until they are
/// re-onboarded.
const V6: &str = "
    CREATE TABLE deleted_customers (
        digest BLOB PRIMARY KEY,            -- keyed digest of the customer id (tombstone)
        deleted_at INTEGER NOT NULL         -- unix ns
    ) WITHOUT ROWID;
";

/// Version 7: when each stream was last used (unix ns), so that marks
/// expire (`SqliteEngine::sweep`) and a device holds at most
/// [`MAX_STREAMS_PER_DEVICE`]. Existing marks are dated at the migration
/// ([`migrate_v7`]): each is kept for a whole TTL after the upgrade, then
/// expires unless its stream is used again.
const V7: &str = "
    ALTER TABLE streams ADD COLUMN used_at INTEGER NOT NULL DEFAULT 0;  -- unix ns of the last batch
";

/// The most stream marks one device holds. A new stream beyond them drops
/// the mark of the device's stream used least recently (never the new
/// one): a reinstalled agent is never refused, and a device that names a
/// new random stream in every hello holds this many rows, not one more per
/// connection. 64 is far above what an honest device uses (one spool at a
/// time; a new stream per reinstall or restored spool).
pub const MAX_STREAMS_PER_DEVICE: u64 = 64;

/// The newest schema version.
const NEWEST: i64 = 7;

/// The engine's schema version (`PRAGMA user_version` of a store this
/// version writes), as a customer copy's manifest names it.
pub(crate) const fn schema_version() -> i64 {
    NEWEST
}

/// How to open an engine store. `Default` is a store with the default
/// retention, no at-rest key, a secret kept in the store, and no legacy
/// customer.
///
/// ```
/// use privtel_store::{AtRestKey, EngineOptions};
/// use privtel_model::CustomerId;
///
/// let options = EngineOptions::default()
///     .key(AtRestKey::new(1, [7; 32]))
///     .secret([9; 32])
///     .legacy_customer(CustomerId::new("acme")?);
/// assert!(format!("{options:?}").contains("<secret>"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EngineOptions {
    retention: RetentionPolicy,
    key: Option<AtRestKey>,
    secret: Option<Secret>,
    legacy_customer: Option<CustomerId>,
    keys: Option<Arc<KeyStore>>,
}

impl EngineOptions {
    /// The default retention policy: its erasure deadline decides whether a
    /// receipt is overdue, and [`SqliteEngine::retention`] hands it to
    /// callers that sweep a customer with no policy of its own.
    #[must_use]
    pub fn retention(mut self, r: RetentionPolicy) -> Self {
        self.retention = r;
        self
    }

    /// Seals new payloads with `k` (AES-256-GCM) and opens sealed ones.
    #[must_use]
    pub fn key(mut self, k: AtRestKey) -> Self {
        self.key = Some(k);
        self
    }

    /// The secret of the keyed digests (suppression list, mention index).
    /// Given here, it never touches the disk: someone holding only the
    /// database file cannot test a guessed user id or login against the
    /// suppression list. Without it, a random secret is made when the store
    /// is created and kept in the store, which protects against nothing
    /// more than a reader of the file could compute (the weaker guarantee:
    /// no id in clear, but guesses can be checked). A store made with a
    /// secret must always be opened with the same one.
    #[must_use]
    pub fn secret(mut self, s: [u8; 32]) -> Self {
        self.secret = Some(Secret(s));
        self
    }

    /// Per-customer data keys (envelope encryption): every new row of a
    /// customer is sealed under the customer's current key in `keys`
    /// (made with its first row), and rows name their key. Rows sealed
    /// under [`EngineOptions::key`] (the single key of earlier versions)
    /// or not sealed still read. docs/CUSTOMER-KEYS.md describes it.
    #[must_use]
    pub fn key_store(mut self, keys: Arc<KeyStore>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The customer that owns the rows of a store written before tenants
    /// (wave 1 or 2), when it is migrated. Opening such a store with rows
    /// and without it is [`Error::LegacyCustomerRequired`]; ignored for any
    /// other store.
    #[must_use]
    pub fn legacy_customer(mut self, c: CustomerId) -> Self {
        self.legacy_customer = Some(c);
        self
    }
}

/// What one ingest did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct IngestOutcome {
    /// Records stored.
    pub stored: u64,
    /// Records at or below the stream's high-water mark (a retry), or
    /// events whose id the customer's device already stored (a replay):
    /// ignored.
    pub duplicates: u64,
    /// Records of an erased person, dropped.
    pub suppressed: u64,
    /// Records the service refused for good (counted, not stored).
    pub refused: u64,
    /// Sequence numbers the device declared skipped.
    pub skipped: u64,
    /// Benchmarking records folded into their customer's aggregates (see
    /// [`Encoder::encode_folding`]): counted there, stored nowhere else.
    pub folded: u64,
    /// The stream's high-water mark after the ingest.
    pub high_water: u64,
}

/// Where a batch sits in its stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sequence {
    /// The sending spool's id.
    pub stream: u64,
    /// The first record's sequence number.
    pub first_seq: u64,
    /// Sequence numbers just below `first_seq` the device will never send.
    pub skipped: u64,
}

/// One checked batch of a device's stream, for [`EngineStore::ingest_group`].
#[derive(Clone, Debug)]
pub struct AdmittedBatch {
    /// The customer (from the device's certificate).
    pub customer: CustomerId,
    /// The sending device.
    pub device: DeviceId,
    /// Where the batch sits in its stream.
    pub seq: Sequence,
    /// The records; `None` is one refused for good (its number counts).
    pub records: Vec<Option<Record>>,
}

/// What one sweep removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct SweepReport {
    /// Events past their TTL.
    pub events: u64,
    /// Objects past their TTL.
    pub objects: u64,
    /// Records of devices inactive past the purge delay.
    pub inactive_device_records: u64,
    /// Devices purged.
    pub devices: u64,
    /// Enrichment verdicts evaluated longer ago than the objects' TTL.
    pub verdicts: u64,
    /// People none of whose records remain, forgotten.
    pub users: u64,
    /// Benchmarking aggregate rows older than
    /// [`AGGREGATE_TTL_DAYS`](crate::AGGREGATE_TTL_DAYS).
    pub aggregates: u64,
    /// Stream marks unused for longer than the customer's longest TTL
    /// (events or objects), of devices still active.
    pub streams: u64,
}

impl SweepReport {
    fn removed_anything(&self) -> bool {
        self.events
            + self.objects
            + self.inactive_device_records
            + self.devices
            + self.verdicts
            + self.users
            + self.aggregates
            + self.streams
            > 0
    }
}

/// A request to erase one person's data. `Debug` redacts the person's id,
/// as [`Event`](privtel_model::Event) and [`User`](privtel_model::User) do.
#[derive(Clone)]
#[non_exhaustive]
pub struct ErasureRequest {
    /// The administrator's reference for the request (not personal).
    pub request_id: String,
    /// The person.
    pub user: UserId,
    /// When it was asked for.
    pub requested_at: Timestamp,
}

impl std::fmt::Debug for ErasureRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut user = Some(self.user.clone());
        f.debug_struct("ErasureRequest")
            .field("request_id", &self.request_id)
            .field("user", &privtel_model::PersonalMut::UserId(&mut user))
            .field("requested_at", &self.requested_at)
            .finish()
    }
}

impl ErasureRequest {
    /// A request.
    pub fn new(request_id: impl Into<String>, user: UserId, requested_at: Timestamp) -> Self {
        Self { request_id: request_id.into(), user, requested_at }
    }
}

/// Proof that an erasure was done. Holds no personal data: not the person's
/// id, no value, only counts and times.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct DeletionReceipt {
    /// The request's reference.
    pub request_id: String,
    /// When it was asked for.
    pub requested_at: Timestamp,
    /// When it was done.
    pub completed_at: Timestamp,
    /// Records removed.
    pub records_removed: u64,
    /// Pseudonyms now suppressed (later records carrying them are dropped).
    pub pseudonyms_suppressed: u64,
    /// Clear identifiers (logins, home-folder names, emails, full names) now
    /// suppressed, as keyed digests.
    pub identifiers_suppressed: u64,
    /// Whether it was done after the erasure deadline.
    pub overdue: bool,
}

impl DeletionReceipt {
    /// The receipt of `request`, done at `completed_at` (for engines
    /// outside this crate): counts only, `overdue` as `retention` judges
    /// the delay.
    pub fn new(
        request: &ErasureRequest,
        completed_at: Timestamp,
        (records_removed, pseudonyms_suppressed, identifiers_suppressed): (u64, u64, u64),
        retention: &RetentionPolicy,
    ) -> Self {
        Self {
            request_id: request.request_id.clone(),
            requested_at: request.requested_at,
            completed_at,
            records_removed,
            pseudonyms_suppressed,
            identifiers_suppressed,
            overdue: retention.erasure_overdue(request.requested_at, completed_at),
        }
    }
}

/// An enrichment verdict as the engine keeps it for a customer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct StoredVerdict<V> {
    /// The verdict.
    pub verdict: V,
    /// When the enrichment service gave it.
    pub evaluated_at: Timestamp,
}

impl<V> StoredVerdict<V> {
    /// A verdict read back by an engine (for engines outside this crate).
    pub fn new(verdict: V, evaluated_at: Timestamp) -> Self {
        Self { verdict, evaluated_at }
    }
}

/// The operations of an engine store, behind one trait so that a backend on
/// a distributed database can be added without touching callers. Every
/// operation is scoped by a customer: nothing of one customer is seen,
/// linked or removed through another.
pub trait EngineStore {
    /// Stores a batch of one sending stream of a customer's device, whose
    /// first record has sequence number `first_seq`.
    ///
    /// `stream`: the sending spool's random 64-bit id (a reinstalled agent
    /// with a new spool is a new stream of the same device; high-water
    /// marks are per (customer, device, stream)). Records at or below the
    /// mark are duplicates; an event whose id the same (customer, device)
    /// already holds is a duplicate (a replay under a new stream); records
    /// naming an erased person are dropped (and still raise the mark).
    ///
    /// # Errors
    ///
    /// Refuses BEFORE storing anything: [`Error::SequenceRange`] if
    /// `first_seq` is 0 or the batch's last sequence number overflows or
    /// exceeds `i64::MAX`; [`Error::SequenceGap`] if `first_seq` is above
    /// the high-water mark plus one. A storage error; nothing of the batch
    /// is stored then.
    fn ingest(
        &mut self,
        customer: &CustomerId,
        device: &DeviceId,
        stream: u64,
        first_seq: u64,
        records: Vec<Record>,
        now: Timestamp,
    ) -> Result<IngestOutcome> {
        let seq = Sequence { stream, first_seq, skipped: 0 };
        self.ingest_admitted(customer, device, seq, records.into_iter().map(Some).collect(), now)
    }

    /// [`EngineStore::ingest`] of a batch the service checked: `None` is a
    /// record refused for good (its sequence number counts, nothing of it
    /// is stored), and `seq.skipped` sequence numbers just below the first
    /// are ones the device declared it will never send: the batch may start
    /// up to that many above the mark plus one, and the mark moves over
    /// them.
    ///
    /// # Errors
    ///
    /// As [`EngineStore::ingest`]; [`Error::SequenceRange`] also when more
    /// are skipped than lie below the first.
    fn ingest_admitted(
        &mut self,
        customer: &CustomerId,
        device: &DeviceId,
        seq: Sequence,
        records: Vec<Option<Record>>,
        now: Timestamp,
    ) -> Result<IngestOutcome>;

    /// Stores several batches (of any customers and devices) as one
    /// durable write: one transaction, one sync to disk, each batch's
    /// outcome as [`EngineStore::ingest_admitted`] would give it, in order.
    /// A batch refused (a gap, a bad range) leaves no trace and does not
    /// hold back the others; a failure to commit fails every batch (nothing
    /// of the group is stored then). Services call it with the batches that
    /// arrived while the previous group was being written (group commit).
    ///
    /// The provided version stores them one by one.
    fn ingest_group(&mut self, batches: Vec<AdmittedBatch>, now: Timestamp) -> Vec<Result<IngestOutcome>> {
        batches
            .into_iter()
            .map(|b| self.ingest_admitted(&b.customer, &b.device, b.seq, b.records, now))
            .collect()
    }

    /// As [`EngineStore::ingest_group`], for batches whose records arrived
    /// as JSON: `json[j]` is record `j`'s JSON as
    /// [`parts::encode`](crate::parts::encode) gives it (the form
    /// [`parts::Format::Json`](crate::parts::Format) names), or `None`
    /// where the engine is to encode the record itself. A caller passes
    /// the bytes it decoded the record from, and only bytes that hold
    /// nothing the record does not (no member the model ignores): an
    /// engine may store them instead of encoding the record again (the
    /// PostgreSQL engine does, and refuses a batch whose list does not have
    /// one entry per record; the JetStream writer is the caller).
    ///
    /// A batch's [`JsonBatch::received`] dates its records that have no
    /// time of their own (their retention runs from it); `now` dates the
    /// others' storing.
    ///
    /// The provided version ignores the JSON, and stores a batch with a
    /// time of reception of its own at that time.
    fn ingest_group_json(&mut self, batches: Vec<JsonBatch>, now: Timestamp) -> Vec<Result<IngestOutcome>> {
        if batches.iter().all(|b| b.received.is_none()) {
            return self.ingest_group(batches.into_iter().map(|b| b.batch).collect(), now);
        }
        batches
            .into_iter()
            .flat_map(|b| {
                let received = crate::codec::received_by(b.received, now);
                self.ingest_group(vec![b.batch], received)
            })
            .collect()
    }

    /// A stream's high-water mark (0 when unknown).
    ///
    /// # Errors
    ///
    /// A storage error.
    fn high_water(&self, customer: &CustomerId, device: &DeviceId, stream: u64) -> Result<u64>;

    /// Removes what `retention` expires at `now` of one customer's data
    /// (TTL per class, the inactivity purge, old verdicts); ends with a WAL
    /// checkpoint (TRUNCATE) when anything was removed, so no removed value
    /// remains in the file or its log.
    ///
    /// # Errors
    ///
    /// A storage error; nothing is removed then.
    fn sweep(
        &mut self,
        customer: &CustomerId,
        retention: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<SweepReport>;

    /// Every customer the store knows, in order.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn customers(&self) -> Result<Vec<CustomerId>>;

    /// Writes everything a customer holds about `user` as JSON Lines (the
    /// right of access); returns the number of lines: the records filed
    /// under the user, and every record sharing a pseudonym or clear
    /// identifier digest with them (what erasure would remove). Format: one
    /// object per record, `{"id", "stored_at", "program", "kind", "record"}`,
    /// with `record` in the model's JSON form.
    ///
    /// # Errors
    ///
    /// A storage error or a write error.
    fn export_person(&self, customer: &CustomerId, user: &UserId, out: &mut dyn Write) -> Result<u64>;

    /// Removes every record of the customer that references the person: by
    /// user id, and every record sharing any pseudonym or clear identifier
    /// digest with theirs (one hop); suppresses later ingest of the user id
    /// and of those digests; checkpoints the log; returns a receipt.
    ///
    /// # Errors
    ///
    /// A storage error; nothing is removed then.
    fn erase_person(
        &mut self,
        customer: &CustomerId,
        request: &ErasureRequest,
        now: Timestamp,
    ) -> Result<DeletionReceipt>;

    /// Writes enrichment answers onto the customer's binary and domain
    /// objects (threat, category, reputation, hosting country, evaluated
    /// at `now`), replacing older ones; returns rows written.
    ///
    /// # Errors
    ///
    /// A storage error; nothing is written then.
    fn record_verdicts(
        &mut self,
        customer: &CustomerId,
        binaries: &[BinaryVerdict],
        domains: &[DomainVerdict],
        now: Timestamp,
    ) -> Result<u64>;

    /// The customer's verdict on a binary, if any.
    ///
    /// # Errors
    ///
    /// A storage error, or a stored verdict that does not decode.
    fn binary_verdict(
        &self,
        customer: &CustomerId,
        sha256: &Sha256,
    ) -> Result<Option<StoredVerdict<BinaryVerdict>>>;

    /// The customer's verdict on a domain, if any.
    ///
    /// # Errors
    ///
    /// A storage error, or a stored verdict that does not decode.
    fn domain_verdict(
        &self,
        customer: &CustomerId,
        domain: &Domain,
    ) -> Result<Option<StoredVerdict<DomainVerdict>>>;

    /// Contract end: FIRST destroys the customer's data keys (from then on
    /// nothing of it can be read), THEN removes every row of the customer
    /// in every table, remembers the customer as a tombstone digest (its
    /// later batches are refused with [`Error::CustomerDeleted`] until it is
    /// re-onboarded) and checkpoints the log. Returns the receipt: times,
    /// counts per table, the keys destroyed and the stores covered.
    ///
    /// # Errors
    ///
    /// A key-store or storage error. A failure after the keys are gone
    /// leaves rows that no longer open; calling it again removes them.
    fn delete_customer(&mut self, customer: &CustomerId, now: Timestamp) -> Result<CustomerDeletion>;

    /// The customer copy: everything the store holds of a customer as JSON
    /// Lines, streamed (never all rows in memory). The first line is
    /// `{"manifest": {...}}`: `manifest`'s fields (policy version and hash,
    /// say) with `format` ("privtel-customer-copy"), `format_version` (1),
    /// `schema_version`, `customer` and `engine` set by the store; then one
    /// line per record (the shape of [`EngineStore::export_person`]'s lines),
    /// then `{"device": ...}`, `{"user": ...}`, `{"binary_verdict": ...}`,
    /// `{"domain_verdict": ...}`, `{"aggregate": ...}` and `{"receipt":
    /// ...}` lines, and last `{"counts": {"lines", "tables"}}`.
    ///
    /// # Errors
    ///
    /// A storage error, a record that does not open, or a write error.
    fn export_customer(
        &self,
        customer: &CustomerId,
        manifest: &serde_json::Map<String, serde_json::Value>,
        out: &mut dyn Write,
    ) -> Result<CopyStats>;

    /// Records held, in all.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn record_count(&self) -> Result<u64>;

    /// Records held for one customer.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn record_count_of(&self, customer: &CustomerId) -> Result<u64>;

    /// How many stream marks the store holds for one device of a customer
    /// (at most [`MAX_STREAMS_PER_DEVICE`]).
    ///
    /// # Errors
    ///
    /// A storage error.
    fn stream_count(&self, customer: &CustomerId, device: &DeviceId) -> Result<u64>;
}

/// The tables ingest consults on every record, mirrored in memory. Another
/// connection (another process: the `dsar` tool) may change them, so they
/// are reloaded whenever `PRAGMA data_version` says another connection
/// committed, and after this connection's own erasures.
#[derive(Debug, Default)]
struct Mirror {
    /// `PRAGMA data_version` when last loaded.
    data_version: i64,
    /// Set when this connection changed a mirrored table itself.
    stale: bool,
    customers: HashMap<String, i64>,
    /// (customers.id, user id) -> users.id, committed rows only.
    users: HashMap<(i64, String), i64>,
    /// Every suppressed digest (digests include the customer).
    suppressed: HashSet<Digest>,
    /// Tombstones of customers deleted at contract end.
    deleted: HashSet<Digest>,
}

impl Mirror {
    fn load(conn: &Connection) -> Result<Self> {
        Ok(Self {
            data_version: data_version(conn)?,
            stale: false,
            customers: load(conn, "SELECT customer, id FROM customers", |r| Ok((r.get(0)?, r.get(1)?)))?,
            users: load(conn, "SELECT customer, user, id FROM users", |r| {
                Ok(((r.get(0)?, r.get(1)?), r.get(2)?))
            })?,
            suppressed: load::<Vec<u8>, Vec<_>>(conn, "SELECT digest FROM suppressed", |r| r.get(0))?
                .into_iter()
                .map(|d| digest_of(d, "suppressed digest"))
                .collect::<Result<_>>()?,
            deleted: load::<Vec<u8>, Vec<_>>(conn, "SELECT digest FROM deleted_customers", |r| r.get(0))?
                .into_iter()
                .map(|d| digest_of(d, "customer tombstone"))
                .collect::<Result<_>>()?,
        })
    }
}

fn data_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).op("reading the data version")
}

/// The engine store on one SQLite file.
#[derive(Debug)]
pub struct SqliteEngine {
    pub(crate) conn: Connection,
    retention: RetentionPolicy,
    pub(crate) key: Option<AtRestKey>,
    pub(crate) keys: Option<Arc<KeyStore>>,
    pub(crate) secret: Secret,
    mirror: Mirror,
    /// A checkpoint after a removal found the log busy: removed values may
    /// still be in the write-ahead log until a later one goes through.
    pub(crate) log_pending: bool,
    /// Held by whoever checkpoints the log: this engine after a removal
    /// and its [`Checkpointer`]s (a checkpoint that finds another running
    /// fails at once, whatever the busy timeout).
    checkpointing: Arc<std::sync::Mutex<()>>,
}

impl SqliteEngine {
    /// Whether a removal's checkpoint is still to be done (another
    /// connection held an old snapshot): until it is, removed values may be
    /// in the write-ahead log. Every later sweep, erasure and contract end
    /// retries it.
    pub fn log_pending(&self) -> bool {
        self.log_pending
    }

    /// Checkpoints the log after a removal; remembers a busy one for later.
    pub(crate) fn settle_log(&mut self, op: &'static str) -> Result<bool> {
        let checkpointing = Arc::clone(&self.checkpointing);
        let _alone = checkpointing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let done = schema::try_checkpoint(&self.conn, op)?;
        self.log_pending = !done;
        Ok(done)
    }

    /// Opens or creates the store at `path`, migrating an older schema
    /// (a pre-tenant store is filed under `options`' legacy customer).
    ///
    /// ```
    /// use privtel_store::{EngineOptions, EngineStore, SqliteEngine};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let engine = SqliteEngine::open(&dir.path().join("engine.db"), EngineOptions::default())?;
    /// assert_eq!(engine.record_count()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::KeyStore`] for an [`EngineOptions::key`] whose id is not
    /// below [`FIRST_DATA_KEY_ID`](crate::FIRST_DATA_KEY_ID) together with
    /// a key store (the ids would be ambiguous);
    /// a database or schema error; [`Error::LegacyCustomerRequired`] for a
    /// pre-tenant store with rows and no legacy customer;
    /// [`Error::SecretMismatch`] for a secret other than the store's;
    /// [`Error::MissingKey`] / [`Error::WrongKey`] if a pre-tenant store's
    /// sealed rows cannot be opened to index them.
    pub fn open(path: impl AsRef<Path>, options: EngineOptions) -> Result<Self> {
        if let (Some(k), Some(_)) = (&options.key, &options.keys)
            && k.id().get() >= crate::keys::FIRST_DATA_KEY_ID
        {
            return Err(Error::KeyStore {
                reason: format!(
                    "the at-rest key's id {} is in the data keys' range, expected one below {}",
                    k.id(),
                    crate::keys::FIRST_DATA_KEY_ID
                ),
            });
        }
        let migrate = |tx: &Transaction<'_>| migrate_v3(tx, &options);
        let conn = schema::open(
            path.as_ref(),
            &[
                Step::Sql(V1),
                Step::Sql(V2),
                Step::Code(&migrate),
                Step::Sql(V4),
                Step::Sql(aggregate::V5),
                Step::Sql(V6),
                Step::Code(&migrate_v7),
            ],
        )?;
        debug_assert_eq!(NEWEST, 7);
        let secret = resolve_secret(&conn, options.secret.as_ref())?;
        let mirror = Mirror::load(&conn)?;
        Ok(Self {
            conn,
            retention: options.retention,
            key: options.key,
            keys: options.keys,
            secret,
            mirror,
            log_pending: false,
            checkpointing: Arc::default(),
        })
    }

    /// Another engine on the same file, with the same keys, secret and
    /// retention, on a connection of its own: long reads (an export, the
    /// customer copy) run on it without holding up the writer of the first
    /// (the file is in WAL mode: a reader sees one snapshot while the
    /// writer goes on).
    ///
    /// # Errors
    ///
    /// A storage error; an engine on a temporary (nameless) database has no
    /// file to share.
    pub fn another(&self) -> Result<Self> {
        let (path, options) = self.path_and_options()?;
        Self::open(path, options)
    }

    /// The file and options [`SqliteEngine::another`] opens with: taken
    /// under a lock, so the opening (which reads the mirrored tables) can be
    /// done outside it.
    ///
    /// # Errors
    ///
    /// As [`SqliteEngine::another`].
    pub fn path_and_options(&self) -> Result<(std::path::PathBuf, EngineOptions)> {
        let path = self.file_path("opening another connection")?;
        // A store that keeps its own secret is opened without one.
        let kept: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM meta WHERE name = 'secret'", [], |r| r.get(0))
            .optional()
            .op("reading the store's settings")?;
        let options = EngineOptions {
            retention: self.retention,
            key: self.key.clone(),
            secret: if kept.is_some() { None } else { Some(self.secret.clone()) },
            legacy_customer: None,
            keys: self.keys.clone(),
        };
        Ok((std::path::PathBuf::from(path), options))
    }

    /// Opens a read-only connection to the same file (see [`EngineReader`]).
    ///
    /// # Errors
    ///
    /// A storage error; an engine on a temporary (nameless) database has no
    /// file to share.
    pub fn reader(&self) -> Result<EngineReader> {
        let path = self.file_path("opening a reader")?;
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .op("opening a reader")?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).op("configuring a reader")?;
        Ok(EngineReader { conn })
    }

    /// The store's connection (for the modules of this crate).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// An encoder for this engine's batches (see [`Encoder`]).
    pub fn encoder(&self) -> Encoder {
        Encoder { key: self.key.clone(), keys: self.keys.clone(), secret: self.secret.clone() }
    }

    /// [`EngineStore::ingest_group`] of batches encoded by this engine's
    /// [`Encoder`] (a batch encoded for another store is refused).
    pub fn ingest_encoded(
        &mut self,
        batches: Vec<EncodedBatch>,
        now: Timestamp,
    ) -> Vec<Result<IngestOutcome>> {
        self.store_encoded(&batches, now)
    }

    /// [`SqliteEngine::ingest_encoded`] of borrowed batches: the caller
    /// keeps them and frees them where it likes (a service's writer hands
    /// each back to the connection that encoded it, so freeing a group's
    /// payloads is not on the one writer thread).
    pub fn store_encoded(&mut self, batches: &[EncodedBatch], now: Timestamp) -> Vec<Result<IngestOutcome>> {
        // Checked before the transaction: a batch refused here costs nothing.
        let mut results: Vec<Option<Result<IngestOutcome>>> = batches
            .iter()
            .map(|b| {
                check_range(b.seq.first_seq, b.records.len()).err().or_else(|| {
                    (b.seq.skipped >= b.seq.first_seq).then_some(Error::SequenceRange {
                        first_seq: b.seq.first_seq,
                        records: b.records.len() as u64,
                    })
                })
            })
            .map(|e| e.map(Err))
            .collect();
        if results.iter().all(Option::is_some) {
            return results.into_iter().flatten().collect();
        }
        let check = self.secret.check();
        for (b, r) in batches.iter().zip(results.iter_mut()) {
            if r.is_none() && b.check != check {
                *r = Some(Err(Error::SecretMismatch {
                    given: "a batch encoded for another store",
                    expected: "a batch from this store's encoder",
                }));
            }
        }
        if results.iter().all(Option::is_some) {
            return results.into_iter().flatten().collect();
        }
        let Self { conn, mirror, .. } = self;
        let all_failed = |results: Vec<Option<Result<IngestOutcome>>>, op: &'static str, e: &Error| {
            results
                .into_iter()
                .map(|r| match r {
                    Some(Err(e)) => Err(e),
                    _ => Err(Error::Database { op, message: e.to_string() }),
                })
                .collect::<Vec<_>>()
        };
        // `results` holds the final outcomes known so far (checks above,
        // batches that failed while writing); each attempt writes the rest.
        // A batch that fails while writing rolls its attempt back and is
        // left out of the next one, so one failing batch cannot hold back
        // the others (at most one attempt a batch).
        loop {
            // IMMEDIATE: the write lock is taken first, so no other
            // connection commits between the data-version check and this
            // commit.
            let tx =
                match conn.transaction_with_behavior(TransactionBehavior::Immediate).op("starting an ingest")
                {
                    Ok(tx) => tx,
                    Err(e) => return all_failed(results, "starting an ingest", &e),
                };
            let refreshed = data_version(&tx).and_then(|version| {
                if mirror.stale || version != mirror.data_version {
                    *mirror = Mirror::load(&tx)?;
                }
                Ok(())
            });
            if let Err(e) = refreshed {
                return all_failed(results, "starting an ingest", &e);
            }
            // What the attempt added to the mirrored tables: visible to its
            // later batches, mirrored only once the commit succeeds.
            let mut group = Added::default();
            let mut attempt: Vec<Option<Result<IngestOutcome>>> = (0..batches.len()).map(|_| None).collect();
            let mut failed = None;
            for (i, batch) in batches.iter().enumerate() {
                if results[i].is_some() {
                    continue;
                }
                // No savepoint (it would copy every page the batch
                // touches): a batch is checked before its first write, so a
                // refused one leaves no trace and the others go on.
                let mut added = Added::default();
                let ctx = IngestCtx { mirror: &*mirror, group: &group, now };
                match ingest_batch(&tx, &ctx, &mut added, batch) {
                    Ok(outcome) => {
                        group.customers.extend(added.customers);
                        group.users.extend(added.users);
                        attempt[i] = Some(Ok(outcome));
                    }
                    Err(BatchError::Refused(e)) => attempt[i] = Some(Err(e)),
                    Err(BatchError::Failed(e)) => {
                        failed = Some((i, e));
                        break;
                    }
                }
            }
            if let Some((i, e)) = failed {
                // Rolled back; the others are tried again without it (their
                // refusals too: one may have rested on the failed batch).
                drop(tx);
                results[i] = Some(Err(e));
                if results.iter().all(Option::is_some) {
                    return results.into_iter().flatten().collect();
                }
                continue;
            }
            if let Err(e) = tx.commit().op("committing an ingest") {
                return all_failed(results, "committing an ingest", &e);
            }
            mirror.customers.extend(group.customers);
            mirror.users.extend(group.users);
            return results
                .into_iter()
                .zip(attempt)
                .map(|(r, a)| {
                    r.or(a).unwrap_or_else(|| {
                        Err(Error::Database {
                            op: "storing a batch",
                            message: "no outcome for the batch".into(),
                        })
                    })
                })
                .collect();
        }
    }

    /// [`SqliteEngine::store_encoded`] without the sync to disk at commit
    /// (`synchronous = NORMAL` for this one transaction, `FULL` again
    /// after): the group is committed and visible to readers, but durable
    /// only once [`LogSync::sync`] of this engine's [`SqliteEngine::log_sync`]
    /// has returned after this call. A caller acknowledges nothing before
    /// that; meanwhile it may write the next group (the sync of one group
    /// overlaps the writing of the next). Every other write of the engine
    /// keeps syncing at its commit.
    ///
    /// Why this is as durable as a synced commit once the log is synced:
    /// in WAL mode a commit only appends frames to the log (the database
    /// file changes in checkpoints, which sync both files under `NORMAL`
    /// too), and SQLite still syncs a restarted log's header before its
    /// first frames; so a sync of the log file after the commit puts the
    /// commit on disk exactly as `FULL` would have at its end.
    pub fn store_encoded_unsynced(
        &mut self,
        batches: &[EncodedBatch],
        now: Timestamp,
    ) -> Vec<Result<IngestOutcome>> {
        let all_failed = |op: &'static str, e: &Error| {
            let message = e.to_string();
            batches.iter().map(|_| Err(Error::Database { op, message: message.clone() })).collect()
        };
        if let Err(e) = self.conn.execute_batch("PRAGMA synchronous = NORMAL").op("deferring the sync") {
            return all_failed("deferring the sync", &e);
        }
        // `FULL` is put back however the group ends, a panic included (it
        // goes on once the setting is back), so no other write of the
        // engine goes unsynced.
        let outcomes =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.store_encoded(batches, now)));
        let restored = self.conn.execute_batch("PRAGMA synchronous = FULL");
        let outcomes = outcomes.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Err(e) = restored.op("restoring the sync") {
            return all_failed("restoring the sync", &e);
        }
        outcomes
    }

    /// What syncs this engine's write-ahead log (see
    /// [`SqliteEngine::store_encoded_unsynced`]); usable from another
    /// thread while the engine writes.
    ///
    /// # Errors
    ///
    /// An engine on a temporary (nameless) database has no log file.
    pub fn log_sync(&self) -> Result<LogSync> {
        let path = self.file_path("finding the log")?;
        LogSync::open(std::path::PathBuf::from(format!("{path}-wal")))
    }

    /// The engine's database file (`op` names what needed it in the error).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] for an engine on a temporary (nameless) database.
    fn file_path(&self, op: &'static str) -> Result<&str> {
        self.conn
            .path()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Database { op, message: "the engine has no file".into() })
    }

    /// A checkpointer of this engine's log on a connection of its own, for
    /// a thread other than the writer's (see [`Checkpointer`]).
    ///
    /// # Errors
    ///
    /// An engine on a temporary (nameless) database has no log; a storage
    /// error opening the connection.
    pub fn checkpointer(&self) -> Result<Checkpointer> {
        let path = self.file_path("opening a checkpointer")?;
        let conn = Connection::open(path).op("opening a checkpointer")?;
        // Like the engine's: a checkpoint syncs the log before it copies
        // pages into the database file (under NORMAL as under FULL), and
        // the database file once it has copied the whole log.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
            .op("opening a checkpointer")?;
        let database = std::fs::File::open(path)
            .map_err(|e| Error::Database { op: "opening a checkpointer", message: e.to_string() })?;
        Ok(Checkpointer { conn, database, checkpointing: Arc::clone(&self.checkpointing) })
    }

    /// The default retention policy the store was opened with.
    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    /// The key that opens a row sealed under `key_id` (row `row`, for
    /// errors): a data key of the key store, else the single key.
    ///
    /// # Errors
    ///
    /// [`Error::KeyDestroyed`] for a destroyed data key.
    pub(crate) fn key_for(&self, row: i64, key_id: Option<u32>) -> Result<Option<AtRestKey>> {
        if let (Some(id), Some(keys)) = (key_id, &self.keys)
            && let Some(k) = keys.key(id, row)?
        {
            return Ok(Some(k));
        }
        Ok(self.key.clone())
    }

    /// Marks the mirrored tables stale (this connection changed them).
    pub(crate) fn mirror_changed(&mut self) {
        self.mirror.stale = true;
    }

    /// The customer's row id, if the customer is known.
    pub(crate) fn customer_id(&self, customer: &CustomerId) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT id FROM customers WHERE customer = ?1", [customer.as_str()], |r| r.get(0))
            .optional()
            .op("finding a customer")
    }

    /// The records about `user` of a customer: those filed under the user,
    /// and every record sharing a digest that names a person with them;
    /// and the digests (with their kinds) that linked them.
    fn person(&self, customer: i64, name: &CustomerId, user: &UserId) -> Result<Person> {
        person(
            &self.conn,
            Opener { key: self.key.as_ref(), keys: self.keys.as_deref() },
            customer,
            name,
            &self.secret,
            user,
        )
    }
}

/// What opens a stored payload (the engine's keys, borrowed apart from its
/// connection).
#[derive(Clone, Copy)]
struct Opener<'a> {
    key: Option<&'a AtRestKey>,
    keys: Option<&'a KeyStore>,
}

impl Opener<'_> {
    /// The record of row `id`, or `None` when it does not open (its key is
    /// gone, or the row is damaged).
    fn try_open(&self, id: i64, format: i64, key_id: Option<u32>, payload: &[u8]) -> Option<Record> {
        let key = match (key_id, self.keys) {
            (Some(kid), Some(keys)) => match keys.key(kid, id) {
                Ok(Some(k)) => Some(k),
                Ok(None) => self.key.cloned(),
                Err(_) => return None,
            },
            _ => self.key.cloned(),
        };
        unseal(id, format, key_id, payload, key.as_ref()).ok()
    }
}

/// What names a person: the ids of the records, and the digests (with
/// their kind codes) that linked them.
type Person = (Vec<i64>, Vec<(Digest, i64)>);

fn person(
    conn: &Connection,
    opener: Opener<'_>,
    customer: i64,
    name: &CustomerId,
    secret: &Secret,
    user: &UserId,
) -> Result<Person> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, format, key_id, payload FROM records
             WHERE user = (SELECT id FROM users WHERE customer = ?1 AND user = ?2)",
        )
        .op("finding a person")?;
    let mut direct: Vec<i64> = Vec::new();
    let mut digests = BTreeSet::new();
    let mut of_record = conn
        .prepare_cached("SELECT kind, digest FROM mentions WHERE record_id = ?1")
        .op("reading mentions")?;
    let mut rows = stmt.query(params![customer, user.as_str()]).op("finding a person")?;
    while let Some(row) = rows.next().op("finding a person")? {
        let id: i64 = row.get(0).op("finding a person")?;
        direct.push(id);
        let stored = of_record
            .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .op("reading mentions")?
            .map(|m| {
                let (kind, d) = m.op("reading mentions")?;
                Ok((kind, digest_of(d, "mention digest")?))
            })
            .collect::<Result<Vec<(i64, Digest)>>>()?;
        if stored.is_empty() {
            continue;
        }
        // Rows written before only person-naming fields were indexed may
        // hold a shared value's digest: the record decides what links.
        let (format, key_id, payload): (i64, Option<u32>, Vec<u8>) = (
            row.get(1).op("finding a person")?,
            row.get(2).op("finding a person")?,
            row.get(3).op("finding a person")?,
        );
        let mut record = opener.try_open(id, format, key_id, &payload);
        digests.extend(crate::mention::linking(&stored, record.as_mut(), name.as_str(), secret)?);
    }
    let mut ids: BTreeSet<i64> = direct.into_iter().collect();
    // Digests include the customer, so this finds the customer's records only.
    let mut by_digest =
        conn.prepare_cached("SELECT record_id FROM mentions WHERE digest = ?1").op("finding mentions")?;
    for (d, _) in &digests {
        for id in by_digest.query_map([&d[..]], |r| r.get::<_, i64>(0)).op("finding mentions")? {
            ids.insert(id.op("finding mentions")?);
        }
    }
    Ok((ids.into_iter().collect(), digests.into_iter().collect()))
}

/// A stored digest, or [`Error::Corrupt`] naming `what` when it is not
/// [`DIGEST_LEN`](crate::mention::DIGEST_LEN) bytes (never its bytes).
fn digest_of(bytes: Vec<u8>, what: &'static str) -> Result<Digest> {
    let len = bytes.len();
    Digest::try_from(bytes).map_err(|_| Error::Corrupt {
        what,
        reason: format!("{len} bytes, expected {}", crate::mention::DIGEST_LEN),
    })
}

/// Every row of a query, collected (for the small tables mirrored in memory).
fn load<T, C: FromIterator<T>>(
    conn: &Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<C> {
    let mut stmt = conn.prepare(sql).op("reading a table into memory")?;
    let rows = stmt.query_map([], row).op("reading a table into memory")?;
    rows.collect::<rusqlite::Result<C>>().op("reading a table into memory")
}

/// The store's secret: the one given (checked against the stored check
/// value), else the one kept in the store; made on first use.
fn resolve_secret(conn: &Connection, given: Option<&Secret>) -> Result<Secret> {
    let get = |name: &str| -> Result<Option<Vec<u8>>> {
        conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .op("reading the store's settings")
    };
    let put = |name: &str, value: &[u8]| -> Result<()> {
        conn.execute("INSERT INTO meta (name, value) VALUES (?1, ?2)", params![name, value])
            .map(drop)
            .op("writing the store's settings")
    };
    match (get("secret")?, get("secret_check")?, given) {
        (Some(stored), _, None) => {
            let s: [u8; 32] = stored.try_into().map_err(|_| Error::Database {
                op: "reading the store's settings",
                message: "the stored secret is not 32 bytes".into(),
            })?;
            Ok(Secret(s))
        }
        (Some(_), _, Some(_)) => {
            Err(Error::SecretMismatch { given: "a secret", expected: "none (the store keeps its own)" })
        }
        (None, Some(check), Some(s)) if check == s.check() => Ok(s.clone()),
        (None, Some(_), Some(_)) => {
            Err(Error::SecretMismatch { given: "a secret", expected: "the secret the store was made with" })
        }
        (None, Some(_), None) => {
            Err(Error::SecretMismatch { given: "none", expected: "the secret the store was made with" })
        }
        (None, None, Some(s)) => {
            put("secret_check", &s.check())?;
            Ok(s.clone())
        }
        (None, None, None) => {
            let mut s = [0; 32];
            OsRng.fill_bytes(&mut s);
            put("secret", &s)?;
            Ok(Secret(s))
        }
    }
}

/// Version 7: the streams' last use, every existing mark dated now (the
/// migration's time), so none expires before a whole TTL has passed
/// without its stream being used after the upgrade.
fn migrate_v7(tx: &Transaction<'_>) -> Result<()> {
    tx.execute_batch(V7).op("migrating the schema")?;
    tx.execute("UPDATE streams SET used_at = ?1", [nanos(Timestamp::now())])
        .op("dating the streams' marks")?;
    Ok(())
}

/// Version 2 -> 3: the tenant schema. Every old row goes to the legacy
/// customer; old records keep their bincode payloads (format 1) and get
/// their mention digests (decoding each payload); the clear suppression
/// lists become digests.
fn migrate_v3(tx: &Transaction<'_>, options: &EngineOptions) -> Result<()> {
    let rows: i64 = tx
        .query_row(
            "SELECT (SELECT count(*) FROM records) + (SELECT count(*) FROM users)
                  + (SELECT count(*) FROM suppressed_users) + (SELECT count(*) FROM suppressed_tokens)
                  + (SELECT count(*) FROM receipts) + (SELECT count(*) FROM devices)",
            [],
            |r| r.get(0),
        )
        .op("counting pre-tenant rows")?;
    let legacy = match (&options.legacy_customer, rows) {
        (_, 0) => None,
        (Some(c), _) => Some(c),
        (None, rows) => return Err(Error::LegacyCustomerRequired { rows: rows as u64 }),
    };
    tx.execute_batch(V3).op("creating the tenant schema")?;
    let secret = resolve_secret(tx, options.secret.as_ref())?;
    if let Some(customer) = legacy {
        tx.execute("INSERT INTO customers (customer) VALUES (?1)", [customer.as_str()])
            .op("registering the legacy customer")?;
        let c = tx.last_insert_rowid();
        tx.execute_batch(&format!(
            "INSERT INTO devices (id, customer, device, last_seen) SELECT id, {c}, device, last_seen FROM old_devices;
             INSERT INTO streams (device, stream, high_water) SELECT id, 0, high_water FROM old_devices;
             INSERT INTO users (id, customer, user) SELECT id, {c}, user FROM old_users;
             INSERT INTO records (id, customer, device, user, class, kind, program, recorded_at, stored_at, event_id, format, key_id, payload)
                 SELECT id, {c}, device, user, class, kind, program, recorded_at, stored_at, event_id, {}, key_id, payload FROM old_records;
             INSERT INTO receipts (customer, request_id, requested_at, completed_at, records, pseudonyms)
                 SELECT {c}, request_id, requested_at, completed_at, records, pseudonyms FROM old_receipts;",
            Format::Bincode.code()
        ))
        .op("moving rows under the legacy customer")?;
        {
            let mut read = tx
                .prepare("SELECT id, format, key_id, payload FROM records ORDER BY id")
                .op("indexing migrated records")?;
            let mut insert = tx.prepare(INSERT_MENTION).op("indexing migrated records")?;
            let mut rows = read.query([]).op("indexing migrated records")?;
            while let Some(row) = rows.next().op("indexing migrated records")? {
                let id: i64 = row.get(0).op("indexing migrated records")?;
                let payload: Vec<u8> = row.get(3).op("indexing migrated records")?;
                let mut record = unseal(
                    id,
                    row.get(1).op("indexing migrated records")?,
                    row.get(2).op("indexing migrated records")?,
                    &payload,
                    options.key.as_ref(),
                )?;
                for (kind, d) in mentions(&mut record, customer.as_str(), &secret) {
                    insert.execute(params![&d[..], id, kind.code()]).op("indexing migrated records")?;
                }
            }
            let mut suppress = tx
                .prepare("INSERT OR IGNORE INTO suppressed (customer, digest, kind) VALUES (?1, ?2, ?3)")
                .op("converting the suppression lists")?;
            let users: Vec<String> = load(tx, "SELECT user FROM suppressed_users", |r| r.get(0))?;
            for u in users {
                let d = secret.digest(customer.as_str(), MentionKind::User, u.as_bytes());
                suppress
                    .execute(params![c, &d[..], MentionKind::User.code()])
                    .op("converting the suppression lists")?;
            }
            let tokens: Vec<Vec<u8>> = load(tx, "SELECT token FROM suppressed_tokens", |r| r.get(0))?;
            for t in tokens {
                // Wave-1 tokens are key id (little-endian) + token bytes,
                // the same bytes a pseudonym digest is made from.
                let d = secret.digest(customer.as_str(), MentionKind::Pseudonym, &t);
                suppress
                    .execute(params![c, &d[..], MentionKind::Pseudonym.code()])
                    .op("converting the suppression lists")?;
            }
        }
    }
    tx.execute_batch(
        "DROP TABLE old_records; DROP TABLE old_tokens; DROP TABLE old_devices; DROP TABLE old_users;
         DROP TABLE old_receipts; DROP TABLE suppressed_users; DROP TABLE suppressed_tokens;",
    )
    .op("dropping the pre-tenant tables")?;
    Ok(())
}

/// Checks a batch's sequence numbers: 1 ..= i64::MAX.
///
/// # Errors
///
/// [`Error::SequenceRange`] when `first_seq` is 0 or the last of `n`
/// numbers from it overflows or exceeds `i64::MAX`.
pub fn check_range(first_seq: u64, n: usize) -> Result<()> {
    let records = n as u64;
    let last = first_seq.checked_add(records.saturating_sub(1));
    let max = i64::MAX as u64;
    if first_seq == 0 || first_seq > max || last.is_none_or(|l| l > max) {
        return Err(Error::SequenceRange { first_seq, records });
    }
    Ok(())
}

/// A stream's mark by customer and device name. Nested lookups, not a
/// join: the bundled SQLite (built with STAT4) compiled the join again at
/// every run, as binding its parameters expired its plan (two thirds of
/// the read's cost).
const READ_HIGH_WATER: &str = "SELECT high_water FROM streams
     WHERE device = (SELECT id FROM devices
                     WHERE customer = (SELECT id FROM customers WHERE customer = ?1) AND device = ?2)
       AND stream = ?3";

fn read_high_water(conn: &Connection, customer: &CustomerId, device: &DeviceId, stream: u64) -> Result<u64> {
    let hw: Option<i64> = conn
        .prepare_cached(READ_HIGH_WATER)
        .and_then(|mut s| {
            s.query_row(params![customer.as_str(), device.as_str(), stream as i64], |r| r.get(0)).optional()
        })
        .op("reading the high-water mark")?;
    Ok(hw.unwrap_or(0).max(0) as u64)
}

/// A read-only second connection to an engine's file, for reads that must
/// not wait behind the writer (WAL: a reader sees the last commit and never
/// blocks, nor is blocked by, a write in progress). See
/// [`SqliteEngine::reader`].
#[derive(Debug)]
pub struct EngineReader {
    conn: Connection,
}

impl EngineReader {
    /// A stream's high-water mark as of the last commit (0 when unknown).
    /// It can only be behind the writer's, never ahead: a device told a
    /// lower mark resends records the engine then counts as duplicates.
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn high_water(&self, customer: &CustomerId, device: &DeviceId, stream: u64) -> Result<u64> {
        read_high_water(&self.conn, customer, device, stream)
    }
}

/// Syncs an engine's write-ahead log file to disk (see
/// [`SqliteEngine::store_encoded_unsynced`]). It holds the log open from
/// [`SqliteEngine::log_sync`] on, so that a write-back error the kernel met
/// on the log is reported to its sync even if another handle (a
/// checkpoint's) saw it first; and it checks at every sync that the path
/// still names that file.
#[derive(Clone, Debug)]
pub struct LogSync {
    path: std::path::PathBuf,
    file: Arc<std::fs::File>,
}

impl LogSync {
    fn open(path: std::path::PathBuf) -> Result<Self> {
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::Database { op: "opening the log to sync it", message: e.to_string() })?;
        Ok(Self { path, file: Arc::new(file) })
    }

    /// Syncs the log's data to disk: every commit made before this call is
    /// durable when it returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the log cannot be synced, or its path no
    /// longer names the file held (removed or replaced: the engine was
    /// closed, or something else touched its files): the commits since the
    /// last good sync may not be durable.
    pub fn sync(&self) -> Result<()> {
        let failed = |message: String| Error::Database { op: "syncing the log", message };
        self.file.sync_data().map_err(|e| failed(e.to_string()))?;
        let now = std::fs::metadata(&self.path).map_err(|e| failed(e.to_string()))?;
        let held = self.file.metadata().map_err(|e| failed(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            if (now.dev(), now.ino()) != (held.dev(), held.ino()) {
                return Err(failed(
                    "the log was replaced: expected the file held since the engine opened".into(),
                ));
            }
        }
        #[cfg(not(unix))]
        let _ = (now, held);
        Ok(())
    }
}

/// Checkpoints an engine's write-ahead log from a thread other than the
/// writer's ([`SqliteEngine::checkpointer`]).
///
/// The engine's own connection checkpoints when its log passes 256 MiB,
/// in the commit that passed it: copying that much into the database file
/// and syncing it held every write (and every acknowledgement) for as long
/// as the disk took. A checkpointer's passive checkpoints copy what the
/// log holds while the writer goes on; once one has copied everything
/// before the writer's next transaction, that transaction starts the log
/// over, and the engine's own checkpoint is never reached.
pub struct Checkpointer {
    conn: Connection,
    /// The database file, to sync what the copies wrote into it.
    database: std::fs::File,
    checkpointing: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// One passive checkpoint: copies every frame of the log that no
    /// reader still needs into the database file, without waiting for
    /// readers or writers. Returns the frames in the log and the frames
    /// copied by now (equal: the log is all in the database file).
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn passive(&self) -> Result<(i64, i64)> {
        let _alone = self.checkpointing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
            .op("checkpointing the log")
    }

    /// Syncs the database file: what copies that stopped short of the end
    /// of the log wrote into it (SQLite syncs the file only at a copy that
    /// reaches the end). The service's checkpointer calls it every few MiB
    /// copied, so the disk takes them a little at a time beside the log's
    /// syncs, and before it has the log start over, so that the copy made
    /// while the writer waits has little left to sync. Safe at any time:
    /// the pages copied are already durable in the log.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the file cannot be synced.
    pub fn sync_database(&self) -> Result<()> {
        self.database
            .sync_data()
            .map_err(|e| Error::Database { op: "syncing the database file", message: e.to_string() })
    }
}

/// Indexes one keyed digest of a record.
const INSERT_MENTION: &str = "INSERT OR IGNORE INTO mentions (digest, record_id, kind) VALUES (?1, ?2, ?3)";

/// Rows a batch (or a group of batches) added to the mirrored tables.
#[derive(Default)]
struct Added {
    customers: HashMap<String, i64>,
    users: HashMap<(i64, String), i64>,
}

/// What every batch of a group shares.
struct IngestCtx<'a> {
    mirror: &'a Mirror,
    /// Added by the group's earlier batches.
    group: &'a Added,
    now: Timestamp,
}

/// A batch's records encoded for the engine (see [`Encoder`]): everything
/// that needs no table (payload, sealing, keyed digests) is done before the
/// engine's lock, so the group's writer only inserts rows. `Debug` shows
/// where it sits and its size, nothing of its records.
pub struct EncodedBatch {
    customer: CustomerId,
    device: DeviceId,
    seq: Sequence,
    /// `None`: refused by the service. An encoding error is kept and raised
    /// only if the record is stored (a duplicate is never encoded twice).
    records: Vec<Option<Result<Encoded>>>,
    /// The rows' payloads, one after the other ([`EncodedRecord::payload`]
    /// says where each is): one buffer a batch, not one a record.
    payloads: Vec<u8>,
    /// The encoder's [`Secret::check`]: a batch encoded for another store
    /// is refused, not mixed in.
    check: Digest,
    /// The customer's tombstone digest (see [`tombstone`]).
    tombstone: Digest,
}

impl std::fmt::Debug for EncodedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedBatch")
            .field("customer", &self.customer)
            .field("device", &self.device)
            .field("seq", &self.seq)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl EncodedBatch {
    /// Records in the batch (refused ones included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// One record ready for the engine: rows to insert, or a fold into its
/// customer's benchmarking aggregates.
enum Encoded {
    Row(EncodedRecord),
    Fold(Fold),
}

/// One record ready for its rows. `Debug` shows no payload nor user id.
struct EncodedRecord {
    /// Shared by the batch's records that name the same person.
    user: Option<Arc<str>>,
    /// Keyed digest of `user` (suppression check).
    user_digest: Option<Digest>,
    found: Vec<(MentionKind, Digest)>,
    class: i64,
    kind: &'static str,
    program: i64,
    recorded_at: i64,
    event_id: Option<i64>,
    key_id: Option<u32>,
    /// Where its payload is in its batch's [`EncodedBatch::payloads`].
    payload: std::ops::Range<usize>,
}

impl std::fmt::Debug for EncodedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedRecord")
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Encodes batches for one [`SqliteEngine`] without its lock: payloads
/// (sealed under the engine's key when it has one) and the keyed digests
/// of what names a person. Cheap to clone; a service's connection threads
/// each encode their own batch, then the group's writer stores them with
/// [`SqliteEngine::ingest_encoded`]. `Debug` prints no key.
#[derive(Clone)]
pub struct Encoder {
    key: Option<AtRestKey>,
    keys: Option<Arc<KeyStore>>,
    secret: Secret,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("sealed", &self.key.is_some())
            .field("customer_keys", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Encodes `batch`; `received` dates the records that carry no time of
    /// their own (as the store's `stored_at`).
    pub fn encode(&self, batch: AdmittedBatch, received: Timestamp) -> EncodedBatch {
        self.encode_folding_opt(batch, received, None)
    }

    /// As [`Encoder::encode`], except that every record of the
    /// [`Benchmarking`](privtel_model::Program::Benchmarking) program is
    /// folded into the customer's aggregates of its day, tagged with
    /// `industry` ('' for none), instead of stored: no row names its
    /// device or person. A device summary adds its counts and score; a
    /// benchmarking record of an older kind only counts as one. Folding
    /// happens where storing would, so a record at or below its stream's
    /// high-water mark (a retry) is not folded again.
    ///
    /// ```
    /// use privtel_store::{AdmittedBatch, EngineOptions, Sequence, SqliteEngine};
    /// use privtel_model::{CustomerId, DeviceId, DeviceSummary, Program, Record, RecordBody};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut engine = SqliteEngine::open(&dir.path().join("engine.db"), EngineOptions::default())?;
    /// let now: privtel_model::Timestamp = "2026-11-27T10:00:00Z".parse()?;
    /// let day = privtel_model::Timestamp::from_unix_seconds(1_795_737_600)?;
    /// let summary = Record {
    ///     program: Program::Benchmarking,
    ///     body: RecordBody::DeviceSummary(DeviceSummary::new(day, 1).scored()?),
    /// };
    /// let batch = AdmittedBatch {
    ///     customer: CustomerId::new("acme")?,
    ///     device: DeviceId::new("dev-1")?,
    ///     seq: Sequence { stream: 7, first_seq: 1, skipped: 0 },
    ///     records: vec![Some(summary)],
    /// };
    /// let encoded = engine.encoder().encode_folding(batch.clone(), now, "retail");
    /// let outcome = engine.ingest_encoded(vec![encoded], now).remove(0)?;
    /// assert_eq!((outcome.stored, outcome.folded), (0, 1));
    /// // The same batch again (a retry) is a duplicate, not folded twice.
    /// let again = engine.encoder().encode_folding(batch, now, "retail");
    /// assert_eq!(engine.ingest_encoded(vec![again], now).remove(0)?.duplicates, 1);
    /// let next = day.checked_add(time::Duration::days(1)).unwrap();
    /// let aggregates = engine.aggregates(day, next)?;
    /// assert_eq!((aggregates[0].summaries, aggregates[0].score_tenths()), (1, Some(100)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_folding(&self, batch: AdmittedBatch, received: Timestamp, industry: &str) -> EncodedBatch {
        self.encode_folding_opt(batch, received, Some(industry))
    }

    fn encode_folding_opt(
        &self,
        batch: AdmittedBatch,
        received: Timestamp,
        industry: Option<&str>,
    ) -> EncodedBatch {
        let AdmittedBatch { customer, device, seq, records } = batch;
        let c = customer.as_str();
        // The customer's data key, once a batch (made with its first row).
        let key = match &self.keys {
            Some(keys) if records.iter().any(Option::is_some) => keys.current(&customer).map(Some),
            _ => Ok(self.key.clone()),
        };
        // The batch's last user, its digest and its name as the rows hold
        // it: a device's records mostly name one person, hashed and copied
        // once.
        let mut last_user: Option<(UserId, Digest, Arc<str>)> = None;
        // Most records' JSON is a few hundred bytes.
        let mut payloads = Vec::with_capacity(records.len() * 384);
        let records = records
            .into_iter()
            .map(|r| {
                r.map(|mut record| {
                    if let Some(industry) = industry
                        && record.program == Program::Benchmarking
                    {
                        return Ok(Encoded::Fold(Fold::of(&record, industry, received)));
                    }
                    let key = key.as_ref().map_err(copy_error)?;
                    self.encode_record(&mut record, c, received, key.as_ref(), &mut last_user, &mut payloads)
                        .map(Encoded::Row)
                })
            })
            .collect();
        let tombstone = tombstone(&self.secret, c);
        EncodedBatch { customer, device, seq, records, payloads, check: self.secret.check(), tombstone }
    }

    fn encode_record(
        &self,
        record: &mut Record,
        customer: &str,
        received: Timestamp,
        key: Option<&AtRestKey>,
        last_user: &mut Option<(UserId, Digest, Arc<str>)>,
        payloads: &mut Vec<u8>,
    ) -> Result<EncodedRecord> {
        let found = mentions(record, customer, &self.secret);
        let (user_digest, user) = match record.body.user() {
            None => (None, None),
            Some(u) => match last_user {
                Some((last, digest, name)) if last == u => (Some(*digest), Some(Arc::clone(name))),
                _ => {
                    let (digest, name) = (self.secret.user(customer, u), Arc::<str>::from(u.as_str()));
                    *last_user = Some((u.clone(), digest, Arc::clone(&name)));
                    (Some(digest), Some(name))
                }
            },
        };
        let start = payloads.len();
        let key_id = seal_into(record, key, payloads).inspect_err(|_| payloads.truncate(start))?;
        let payload = start..payloads.len();
        Ok(EncodedRecord {
            user,
            user_digest,
            found,
            class: i64::from(RecordClass::of(&record.body) == RecordClass::Object),
            kind: record.body.kind_name(),
            program: program_code(record.program),
            recorded_at: nanos(record_time(record, received)),
            event_id: match &record.body {
                privtel_model::RecordBody::Event(e) => Some(e.id.as_u128() as u64 as i64),
                _ => None,
            },
            key_id,
            payload,
        })
    }
}

/// A batch with the JSON its records were decoded from
/// ([`EngineStore::ingest_group_json`]). `Debug` shows neither.
#[derive(Clone)]
pub struct JsonBatch {
    /// The batch.
    pub batch: AdmittedBatch,
    /// One entry per record of the batch (`None`: none given); a record
    /// without an entry is encoded by the engine.
    pub json: Vec<Option<Vec<u8>>>,
    /// When the batch was received (a front-end's clock): records without
    /// a time of their own are dated then, so a queue's lag does not
    /// lengthen their retention. `None`: the `now` of the call.
    pub received: Option<Timestamp>,
}

impl std::fmt::Debug for JsonBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonBatch")
            .field("customer", &self.batch.customer)
            .field("device", &self.batch.device)
            .field("seq", &self.batch.seq)
            .field("records", &self.batch.records.len())
            .finish_non_exhaustive()
    }
}

/// Why a batch of a group was not stored.
enum BatchError {
    /// Refused before anything of it was written: the group goes on.
    Refused(Error),
    /// Failed while writing: the group's transaction must be rolled back.
    Failed(Error),
}

/// Stores one batch inside the group's transaction; its range was checked.
/// Everything that can refuse it (a gap, a record that cannot be encoded)
/// is checked by reading only, before its first write.
fn ingest_batch(
    conn: &Connection,
    ctx: &IngestCtx<'_>,
    added: &mut Added,
    batch: &EncodedBatch,
) -> std::result::Result<IngestOutcome, BatchError> {
    let EncodedBatch { customer, device, seq, records, payloads, tombstone, .. } = batch;
    if ctx.mirror.deleted.contains(tombstone) {
        return Err(BatchError::Refused(Error::CustomerDeleted));
    }
    let seq = *seq;
    let Sequence { stream, first_seq, skipped } = seq;
    let c = customer.as_str();
    let stream_key = stream as i64; // bit for bit: u64 ids above i64::MAX are negative in the column
    let known = ctx.mirror.customers.get(c).or_else(|| ctx.group.customers.get(c)).copied();
    let device_id: Option<i64> = match known {
        None => None,
        Some(customer_id) => conn
            .prepare_cached("SELECT id FROM devices WHERE customer = ?1 AND device = ?2")
            .and_then(|mut s| s.query_row(params![customer_id, device.as_str()], |r| r.get(0)).optional())
            .op("reading the device")
            .map_err(BatchError::Refused)?,
    };
    let mark: Option<i64> = match device_id {
        None => None,
        Some(device_id) => conn
            .prepare_cached("SELECT high_water FROM streams WHERE device = ?1 AND stream = ?2")
            .and_then(|mut s| s.query_row(params![device_id, stream_key], |r| r.get(0)).optional())
            .op("reading the high-water mark")
            .map_err(BatchError::Refused)?,
    };
    let new_stream = mark.is_none();
    let high_water = mark.unwrap_or(0).max(0) as u64;
    if first_seq - skipped > high_water.saturating_add(1) {
        return Err(BatchError::Refused(Error::SequenceGap { first_seq, high_water }));
    }
    // A record to store that could not be encoded refuses the batch
    // (duplicates below the mark are not looked at).
    let first_new = usize::try_from(high_water.saturating_sub(first_seq - 1)).unwrap_or(usize::MAX);
    if let Some(Some(Err(e))) = records.iter().skip(first_new).find(|r| matches!(r, Some(Err(_)))) {
        if matches!(e, Error::CustomerDeleted) {
            return Err(BatchError::Refused(Error::CustomerDeleted));
        }
        let reason = match e {
            Error::Encode(reason) => reason.clone(),
            other => other.to_string(),
        };
        return Err(BatchError::Refused(Error::Encode(reason)));
    }
    write_batch(
        conn,
        ctx,
        added,
        (c, known),
        (device, device_id),
        seq,
        (high_water, new_stream),
        (records, payloads),
    )
    .map_err(BatchError::Failed)
}

/// The writes of a checked batch.
#[allow(clippy::too_many_arguments)]
fn write_batch(
    conn: &Connection,
    ctx: &IngestCtx<'_>,
    added: &mut Added,
    (c, known): (&str, Option<i64>),
    (device, known_device): (&DeviceId, Option<i64>),
    seq: Sequence,
    (high_water, new_stream): (u64, bool),
    (records, payloads): (&[Option<Result<Encoded>>], &[u8]),
) -> Result<IngestOutcome> {
    let Sequence { stream, first_seq, skipped } = seq;
    let now = ctx.now;
    let stream_key = stream as i64;
    let customer_id = match known {
        Some(id) => id,
        None => {
            conn.prepare_cached("INSERT INTO customers (customer) VALUES (?1)")
                .and_then(|mut s| s.execute([c]))
                .op("registering the customer")?;
            let id = conn.last_insert_rowid();
            added.customers.insert(c.to_owned(), id);
            id
        }
    };
    // The device's row, read by the batch's checks in this transaction:
    // its last activity moved by its row id, or the row made. Not one
    // upsert with `RETURNING`: SQLite runs that as a statement that may
    // write several rows and abort, and copies each page it changes into
    // a statement journal first (28 allocations a batch).
    let device_id = match known_device {
        Some(id) => {
            conn.prepare_cached("UPDATE devices SET last_seen = max(last_seen, ?2) WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, nanos(now)]))
                .op("registering the device")?;
            id
        }
        None => {
            conn.prepare_cached("INSERT INTO devices (customer, device, last_seen) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![customer_id, device.as_str(), nanos(now)]))
                .op("registering the device")?;
            conn.last_insert_rowid()
        }
    };
    // Declared skipped: the mark moves over them (they are never sent).
    let declared = (first_seq - 1).saturating_sub(high_water).min(skipped);
    let mut outcome =
        IngestOutcome { high_water: high_water + declared, skipped: declared, ..IngestOutcome::default() };
    let mut insert_user = conn
        .prepare_cached("INSERT INTO users (customer, user) VALUES (?1, ?2)")
        .op("preparing an ingest")?;
    // The user of the batch's previous record and its row: a device's
    // records mostly name one person, looked up once.
    let mut last_user: Option<(&str, i64)> = None;
    // Rows waiting for their insert: written up to [`ROWS_AT_ONCE`] to a
    // statement, each event id once among them.
    let mut rows = Rows { customer_id, device_id, stored_at: nanos(now), payloads, pending: Vec::new() };
    for (i, record) in records.iter().enumerate() {
        // In range: check_range bounded the last one by i64::MAX.
        let seq = first_seq + i as u64;
        if seq <= high_water {
            outcome.duplicates += 1;
            continue;
        }
        outcome.high_water = outcome.high_water.max(seq);
        let Some(record) = record else {
            outcome.refused += 1;
            continue;
        };
        let record = match record {
            // Checked before the first write (ingest_batch).
            Err(_) => continue,
            Ok(Encoded::Row(record)) => record,
            Ok(Encoded::Fold(fold)) => {
                aggregate::fold(conn, customer_id, fold)?;
                outcome.folded += 1;
                continue;
            }
        };
        let suppressed = &ctx.mirror.suppressed;
        let erased = record.user_digest.is_some_and(|d| suppressed.contains(&d))
            || record.found.iter().any(|(_, d)| suppressed.contains(d));
        if erased {
            outcome.suppressed += 1;
            continue;
        }
        let user_id = match &record.user {
            None => None,
            Some(u) if last_user.is_some_and(|(last, _)| last == &**u) => last_user.map(|(_, id)| id),
            Some(u) => {
                let key = (customer_id, u.to_string());
                let id = match ctx
                    .mirror
                    .users
                    .get(&key)
                    .or_else(|| ctx.group.users.get(&key))
                    .or_else(|| added.users.get(&key))
                {
                    Some(id) => *id,
                    None => {
                        insert_user.execute(params![customer_id, &**u]).op("registering a user")?;
                        let id = conn.last_insert_rowid();
                        added.users.insert(key, id);
                        id
                    }
                };
                last_user = Some((&**u, id));
                Some(id)
            }
        };
        rows.push(conn, record, user_id, &mut outcome)?;
    }
    rows.flush(conn, &mut outcome)?;
    conn.prepare_cached(
        "INSERT INTO streams (device, stream, high_water, used_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(device, stream) DO UPDATE SET high_water = max(high_water, ?3), used_at = max(used_at, ?4)",
    )
    .and_then(|mut s| s.execute(params![device_id, stream_key, outcome.high_water as i64, nanos(now)]))
    .op("updating the high-water mark")?;
    if new_stream {
        // At most MAX_STREAMS_PER_DEVICE marks a device: this one and the
        // others used most recently are kept, the rest dropped.
        conn.prepare_cached(
            "DELETE FROM streams WHERE device = ?1 AND stream IN
                 (SELECT stream FROM streams WHERE device = ?1 AND stream <> ?2
                  ORDER BY used_at DESC, stream DESC LIMIT -1 OFFSET ?3)",
        )
        .and_then(|mut s| s.execute(params![device_id, stream_key, (MAX_STREAMS_PER_DEVICE - 1) as i64]))
        .op("dropping the device's streams used least recently")?;
    }
    Ok(outcome)
}

/// Records stored by one statement execution at most: each execution
/// costs its own bookkeeping (the `AUTOINCREMENT` counter read and
/// written, the statement's start and end), which one record at a time
/// was a third of the writer's work. A run of rows is written in
/// statements of powers of two rows (64, 32, ..., 2; a last single row by
/// itself): one statement for each 64 rows and at most six for the rest.
/// A batch of 100 takes three (64, 32, 4), where statements of 16 and
/// single rows for the rest took ten, and a batch of 15 four, where it
/// took fifteen.
const ROWS_AT_ONCE: usize = 64;

/// How many statement sizes there are (2, 4, ..., [`ROWS_AT_ONCE`]).
const STATEMENT_SIZES: usize = ROWS_AT_ONCE.ilog2() as usize;

/// The insert of `n` records: the batch's customer, device, storage time
/// and format bound once (?1 to ?4), eight values a record after them.
/// Rows already held (the same device's event: the one unique index) are
/// skipped. `OR IGNORE` rather than `ON CONFLICT (device, event_id) DO
/// NOTHING`, the same for that index: then no other constraint can abort
/// the statement halfway (nothing bound to a `NOT NULL` column can be
/// null), and SQLite keeps no statement journal of the pages it changes,
/// which cost a fifth of the statement.
fn insert_rows_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO records (customer, device, user, class, kind, program, recorded_at, stored_at, event_id, format, key_id, payload) VALUES ",
    );
    for i in 0..n {
        let p = 5 + i * 8;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(?1, ?2, ?{}, ?{}, ?{}, ?{}, ?{}, ?3, ?{}, ?4, ?{}, ?{})",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7
        ));
    }
    sql
}

/// The rows of one batch waiting for their insert.
struct Rows<'a> {
    customer_id: i64,
    device_id: i64,
    stored_at: i64,
    /// The batch's payloads ([`EncodedBatch::payloads`]).
    payloads: &'a [u8],
    pending: Vec<(&'a EncodedRecord, Option<i64>)>,
}

impl<'a> Rows<'a> {
    /// Adds a record (with its user's row id), writing the rows held so far
    /// when they fill a statement. A record that cannot share a statement
    /// is written by itself, after the rows held: one without an event id
    /// or naming a person (its row id is needed for its mentions, and a
    /// shared statement tells only how many rows it added), and one whose
    /// event id is already among the rows held (the first must stay the
    /// one kept).
    fn push(
        &mut self,
        conn: &Connection,
        record: &'a EncodedRecord,
        user_id: Option<i64>,
        outcome: &mut IngestOutcome,
    ) -> Result<()> {
        if record.event_id.is_none()
            || !record.found.is_empty()
            || self.pending.iter().any(|(r, _)| r.event_id == record.event_id)
        {
            self.flush(conn, outcome)?;
            return self.insert_one(conn, record, user_id, outcome);
        }
        self.pending.push((record, user_id));
        if self.pending.len() == ROWS_AT_ONCE {
            self.flush(conn, outcome)?;
        }
        Ok(())
    }

    /// Writes the rows held: the largest power of two of them (up to
    /// [`ROWS_AT_ONCE`]) to a statement, then the same with the rest.
    fn flush(&mut self, conn: &Connection, outcome: &mut IngestOutcome) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let mut rest = pending.as_slice();
        while !rest.is_empty() {
            let n = 1 << rest.len().min(ROWS_AT_ONCE).ilog2();
            let (now, later) = rest.split_at(n);
            match now {
                [(record, user_id)] => self.insert_one(conn, record, *user_id, outcome)?,
                rows => self.insert_rows(conn, rows, outcome)?,
            }
            rest = later;
        }
        Ok(())
    }

    /// Writes `rows` (2 to [`ROWS_AT_ONCE`] of them, a power of two) with
    /// one statement.
    fn insert_rows(
        &self,
        conn: &Connection,
        rows: &[(&EncodedRecord, Option<i64>)],
        outcome: &mut IngestOutcome,
    ) -> Result<()> {
        debug_assert!(rows.len() >= 2 && rows.len() <= ROWS_AT_ONCE && rows.len().is_power_of_two());
        // Built once a size: only the cache's lookup on every use.
        static SQL: [std::sync::OnceLock<String>; STATEMENT_SIZES] =
            [const { std::sync::OnceLock::new() }; STATEMENT_SIZES];
        let size = rows.len().ilog2() as usize - 1;
        let sql = SQL[size].get_or_init(|| insert_rows_sql(rows.len()));
        let mut insert = conn.prepare_cached(sql).op("preparing an ingest")?;
        let format = Format::CURRENT.code();
        let payloads: Vec<&[u8]> =
            rows.iter().map(|(record, _)| &self.payloads[record.payload.clone()]).collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(4 + 8 * rows.len());
        values.extend([&self.customer_id as &dyn rusqlite::ToSql, &self.device_id, &self.stored_at, &format]);
        for ((record, user_id), payload) in rows.iter().zip(&payloads) {
            values.extend([
                user_id as &dyn rusqlite::ToSql,
                &record.class,
                &record.kind,
                &record.program,
                &record.recorded_at,
                &record.event_id,
                &record.key_id,
                payload,
            ]);
        }
        let stored = insert.execute(params_from_iter(values)).op("storing records")?;
        // The others are held already: the customer's device has these
        // events.
        outcome.duplicates += (rows.len() - stored) as u64;
        outcome.stored += stored as u64;
        Ok(())
    }

    /// Writes one record by itself.
    fn insert_one(
        &self,
        conn: &Connection,
        record: &EncodedRecord,
        user_id: Option<i64>,
        outcome: &mut IngestOutcome,
    ) -> Result<()> {
        let inserted = conn
            .prepare_cached(
                "INSERT INTO records (customer, device, user, class, kind, program, recorded_at, stored_at, event_id, format, key_id, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(device, event_id) DO NOTHING",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    self.customer_id,
                    // Filed under the device that sent it: the inactivity
                    // purge removes everything a device sent.
                    self.device_id,
                    user_id,
                    record.class,
                    record.kind,
                    record.program,
                    record.recorded_at,
                    self.stored_at,
                    record.event_id,
                    Format::CURRENT.code(),
                    record.key_id,
                    &self.payloads[record.payload.clone()]
                ])
            })
            .op("storing a record")?;
        if inserted == 0 {
            // The customer's device already holds this event.
            outcome.duplicates += 1;
            return Ok(());
        }
        let id = conn.last_insert_rowid();
        if !record.found.is_empty() {
            let mut insert_mention = conn.prepare_cached(INSERT_MENTION).op("preparing an ingest")?;
            for (kind, d) in &record.found {
                insert_mention.execute(params![&d[..], id, kind.code()]).op("storing mentions")?;
            }
        }
        outcome.stored += 1;
        Ok(())
    }
}

impl EngineStore for SqliteEngine {
    fn ingest_admitted(
        &mut self,
        customer: &CustomerId,
        device: &DeviceId,
        seq: Sequence,
        records: Vec<Option<Record>>,
        now: Timestamp,
    ) -> Result<IngestOutcome> {
        let batch = AdmittedBatch { customer: customer.clone(), device: device.clone(), seq, records };
        self.ingest_group(vec![batch], now).pop().unwrap_or_else(|| {
            Err(Error::Database { op: "storing a batch", message: "no outcome for the batch".into() })
        })
    }

    fn ingest_group(&mut self, batches: Vec<AdmittedBatch>, now: Timestamp) -> Vec<Result<IngestOutcome>> {
        let encoder = self.encoder();
        let batches = batches.into_iter().map(|b| encoder.encode(b, now)).collect();
        self.ingest_encoded(batches, now)
    }

    /// One transaction for the group; each batch's records without a time
    /// of their own dated when it was received. The JSON is not used (this
    /// engine encodes rows of its own form).
    fn ingest_group_json(&mut self, batches: Vec<JsonBatch>, now: Timestamp) -> Vec<Result<IngestOutcome>> {
        let encoder = self.encoder();
        let batches = batches
            .into_iter()
            .map(|b| encoder.encode(b.batch, crate::codec::received_by(b.received, now)))
            .collect();
        self.ingest_encoded(batches, now)
    }

    fn high_water(&self, customer: &CustomerId, device: &DeviceId, stream: u64) -> Result<u64> {
        read_high_water(&self.conn, customer, device, stream)
    }

    fn sweep(
        &mut self,
        customer: &CustomerId,
        retention: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<SweepReport> {
        let Some(c) = self.customer_id(customer)? else { return Ok(SweepReport::default()) };
        let cut = retention.cutoffs(now);
        let tx = self.conn.transaction().op("starting a sweep")?;
        let mut report = SweepReport::default();
        for (class, before, count) in
            [(0, cut.events_before, &mut report.events), (1, cut.objects_before, &mut report.objects)]
        {
            tx.execute(
                "DELETE FROM mentions WHERE record_id IN
                     (SELECT id FROM records WHERE customer = ?1 AND class = ?2 AND recorded_at < ?3)",
                params![c, class, nanos(before)],
            )
            .op("sweeping mentions")?;
            *count = tx
                .execute(
                    "DELETE FROM records WHERE customer = ?1 AND class = ?2 AND recorded_at < ?3",
                    params![c, class, nanos(before)],
                )
                .op("sweeping records")? as u64;
        }
        let inactive: Vec<i64> = {
            let mut stmt = tx
                .prepare("SELECT id FROM devices WHERE customer = ?1 AND last_seen < ?2")
                .op("finding inactive devices")?;
            stmt.query_map(params![c, nanos(cut.devices_seen_before)], |r| r.get(0))
                .op("finding inactive devices")?
                .collect::<rusqlite::Result<_>>()
                .op("finding inactive devices")?
        };
        for device in &inactive {
            tx.execute(
                "DELETE FROM mentions WHERE record_id IN (SELECT id FROM records WHERE device = ?1)",
                [device],
            )
            .op("purging a device")?;
            report.inactive_device_records +=
                tx.execute("DELETE FROM records WHERE device = ?1", [device]).op("purging a device")? as u64;
            tx.execute("DELETE FROM streams WHERE device = ?1", [device]).op("purging a device")?;
            tx.execute("DELETE FROM devices WHERE id = ?1", [device]).op("purging a device")?;
            report.devices += 1;
        }
        // Marks of streams unused for longer than the longest TTL: what
        // they numbered is gone by now (docs/STORAGE.md, "Sweeps").
        report.streams = tx
            .execute(
                "DELETE FROM streams WHERE device IN (SELECT id FROM devices WHERE customer = ?1)
                 AND used_at < ?2",
                params![c, nanos(cut.events_before.min(cut.objects_before))],
            )
            .op("sweeping unused streams")? as u64;
        for table in ["binary_verdicts", "domain_verdicts"] {
            report.verdicts += tx
                .execute(
                    &format!("DELETE FROM {table} WHERE customer = ?1 AND evaluated_at < ?2"),
                    params![c, nanos(cut.objects_before)],
                )
                .op("sweeping verdicts")? as u64;
        }
        report.aggregates = aggregate::sweep(&tx, c, now)?;
        // A person none of whose records remain is forgotten too: their id
        // was only an index of those records.
        report.users = tx
            .execute(
                "DELETE FROM users WHERE customer = ?1
                 AND NOT EXISTS (SELECT 1 FROM records WHERE records.user = users.id)",
                params![c],
            )
            .op("sweeping users without records")? as u64;
        tx.commit().op("committing a sweep")?;
        if report.users > 0 {
            // The mirrored user ids name rows that are gone.
            self.mirror.stale = true;
        }
        if report.removed_anything() || self.log_pending {
            self.settle_log("checkpointing after a sweep")?;
        }
        Ok(report)
    }

    fn customers(&self) -> Result<Vec<CustomerId>> {
        let names: Vec<String> =
            load(&self.conn, "SELECT customer FROM customers ORDER BY customer", |r| r.get(0))?;
        names
            .into_iter()
            .map(|n| {
                CustomerId::new(n).map_err(|e| Error::Database {
                    op: "listing customers",
                    message: format!("a stored customer id is not valid: {e}"),
                })
            })
            .collect()
    }

    fn export_person(&self, customer: &CustomerId, user: &UserId, out: &mut dyn Write) -> Result<u64> {
        // One snapshot for the whole export: a sweep or an erasure on another
        // connection meanwhile changes nothing of what it reads.
        let _snapshot = self.conn.unchecked_transaction().op("starting an export")?;
        let Some(c) = self.customer_id(customer)? else { return Ok(0) };
        let (ids, _) = self.person(c, customer, user)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT stored_at, program, kind, format, key_id, payload FROM records WHERE id = ?1",
            )
            .op("preparing an export")?;
        let mut lines = 0;
        for id in ids {
            let (stored_at, program, kind, format, key_id, payload): (
                i64,
                i64,
                String,
                i64,
                Option<u32>,
                Vec<u8>,
            ) = stmt
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .op("reading a record")?;
            let record = unseal(id, format, key_id, &payload, self.key_for(id, key_id)?.as_ref())?;
            let program = u8::try_from(program)
                .ok()
                .and_then(Program::from_code)
                .map_or_else(|| record.program.to_string(), |p| p.to_string());
            let stored_at =
                Timestamp::from_unix_nanos(i128::from(stored_at)).map(|t| t.to_string()).unwrap_or_default();
            let line = serde_json::json!({ "id": id, "stored_at": stored_at, "program": program, "kind": kind, "record": record });
            writeln!(out, "{line}").map_err(Error::Export)?;
            lines += 1;
        }
        Ok(lines)
    }

    fn erase_person(
        &mut self,
        customer: &CustomerId,
        request: &ErasureRequest,
        now: Timestamp,
    ) -> Result<DeletionReceipt> {
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).op("starting an erasure")?;
        refuse_deleted(&tx, &self.secret, customer)?;
        tx.execute("INSERT OR IGNORE INTO customers (customer) VALUES (?1)", [customer.as_str()])
            .op("registering the customer")?;
        let c: i64 = tx
            .query_row("SELECT id FROM customers WHERE customer = ?1", [customer.as_str()], |r| r.get(0))
            .op("finding a customer")?;
        let opener = Opener { key: self.key.as_ref(), keys: self.keys.as_deref() };
        let (ids, digests) = person(&tx, opener, c, customer, &self.secret, &request.user)?;
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            tx.execute(
                &format!("DELETE FROM mentions WHERE record_id IN ({marks})"),
                params_from_iter(chunk),
            )
            .op("erasing mentions")?;
            tx.execute(&format!("DELETE FROM records WHERE id IN ({marks})"), params_from_iter(chunk))
                .op("erasing records")?;
        }
        tx.execute("DELETE FROM users WHERE customer = ?1 AND user = ?2", params![c, request.user.as_str()])
            .op("erasing a person")?;
        let user_digest = self.secret.user(customer.as_str(), &request.user);
        let mut suppress = vec![(user_digest, i64::from(MentionKind::User.code()))];
        suppress.extend(digests.iter().copied());
        for (d, kind) in &suppress {
            tx.execute(
                "INSERT OR IGNORE INTO suppressed (customer, digest, kind) VALUES (?1, ?2, ?3)",
                params![c, &d[..], kind],
            )
            .op("suppressing a person")?;
        }
        let pseudonym = i64::from(MentionKind::Pseudonym.code());
        let pseudonyms = digests.iter().filter(|(_, k)| *k == pseudonym).count() as u64;
        let mut receipt = DeletionReceipt {
            request_id: request.request_id.clone(),
            requested_at: request.requested_at,
            completed_at: now,
            records_removed: ids.len() as u64,
            pseudonyms_suppressed: pseudonyms,
            identifiers_suppressed: digests.len() as u64 - pseudonyms,
            overdue: self.retention.erasure_overdue(request.requested_at, now),
        };
        // The same request again (a re-run after a failure elsewhere): its
        // receipt counts what every run removed, not only the last.
        let (records, pseudonyms): (i64, i64) = tx
            .query_row(
                "INSERT INTO receipts (customer, request_id, requested_at, completed_at, records, pseudonyms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (customer, request_id) DO UPDATE SET
                     requested_at = min(requested_at, excluded.requested_at),
                     completed_at = excluded.completed_at,
                     records = records + excluded.records,
                     pseudonyms = max(pseudonyms, excluded.pseudonyms)
                 RETURNING records, pseudonyms",
                params![
                    c,
                    receipt.request_id,
                    nanos(receipt.requested_at),
                    nanos(now),
                    receipt.records_removed as i64,
                    receipt.pseudonyms_suppressed as i64
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .op("writing the receipt")?;
        receipt.records_removed = records.max(0) as u64;
        receipt.pseudonyms_suppressed = pseudonyms.max(0) as u64;
        tx.commit().op("committing an erasure")?;
        // This connection's own commit does not move its data version.
        self.mirror.stale = true;
        // secure_delete zeroed the freed pages; the checkpoint moves that
        // into the main file and truncates the log, where the old pages were.
        // A busy log does not undo the erasure (it is committed): the
        // checkpoint is retried by every later sweep, erasure and contract
        // end until it goes through (`SqliteEngine::log_pending`).
        self.settle_log("checkpointing after an erasure")?;
        Ok(receipt)
    }

    fn record_verdicts(
        &mut self,
        customer: &CustomerId,
        binaries: &[BinaryVerdict],
        domains: &[DomainVerdict],
        now: Timestamp,
    ) -> Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .op("starting a verdict write")?;
        refuse_deleted(&tx, &self.secret, customer)?;
        tx.execute("INSERT OR IGNORE INTO customers (customer) VALUES (?1)", [customer.as_str()])
            .op("registering the customer")?;
        let c: i64 = tx
            .query_row("SELECT id FROM customers WHERE customer = ?1", [customer.as_str()], |r| r.get(0))
            .op("finding a customer")?;
        let mut n = 0;
        {
            let mut bin = tx
                .prepare_cached(
                    "INSERT INTO binary_verdicts (customer, sha256, verdict, evaluated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(customer, sha256) DO UPDATE SET verdict = ?3, evaluated_at = ?4",
                )
                .op("writing verdicts")?;
            for v in binaries {
                n += bin
                    .execute(params![c, &v.sha256.as_bytes()[..], to_json(v)?, nanos(now)])
                    .op("writing verdicts")? as u64;
            }
            let mut dom = tx
                .prepare_cached(
                    "INSERT INTO domain_verdicts (customer, domain, verdict, evaluated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(customer, domain) DO UPDATE SET verdict = ?3, evaluated_at = ?4",
                )
                .op("writing verdicts")?;
            for v in domains {
                n += dom
                    .execute(params![c, v.domain.as_str(), to_json(v)?, nanos(now)])
                    .op("writing verdicts")? as u64;
            }
        }
        tx.commit().op("committing verdicts")?;
        // A changed customers table is mirrored: reload before the next ingest.
        self.mirror.stale = true;
        Ok(n)
    }

    fn binary_verdict(
        &self,
        customer: &CustomerId,
        sha256: &Sha256,
    ) -> Result<Option<StoredVerdict<BinaryVerdict>>> {
        verdict(
            &self.conn,
            "SELECT v.verdict, v.evaluated_at FROM binary_verdicts v JOIN customers c ON c.id = v.customer
             WHERE c.customer = ?1 AND v.sha256 = ?2",
            params![customer.as_str(), &sha256.as_bytes()[..]],
        )
    }

    fn domain_verdict(
        &self,
        customer: &CustomerId,
        domain: &Domain,
    ) -> Result<Option<StoredVerdict<DomainVerdict>>> {
        verdict(
            &self.conn,
            "SELECT v.verdict, v.evaluated_at FROM domain_verdicts v JOIN customers c ON c.id = v.customer
             WHERE c.customer = ?1 AND v.domain = ?2",
            params![customer.as_str(), domain.as_str()],
        )
    }

    fn delete_customer(&mut self, customer: &CustomerId, now: Timestamp) -> Result<CustomerDeletion> {
        self.delete_customer_impl(customer, now)
    }

    fn export_customer(
        &self,
        customer: &CustomerId,
        manifest: &serde_json::Map<String, serde_json::Value>,
        out: &mut dyn Write,
    ) -> Result<CopyStats> {
        self.export_customer_impl(customer, manifest, out)
    }

    fn record_count(&self) -> Result<u64> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0)).op("counting records")?;
        Ok(n as u64)
    }

    fn stream_count(&self, customer: &CustomerId, device: &DeviceId) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM streams WHERE device = (SELECT id FROM devices
                     WHERE customer = (SELECT id FROM customers WHERE customer = ?1) AND device = ?2)",
                params![customer.as_str(), device.as_str()],
                |r| r.get(0),
            )
            .op("counting streams")?;
        Ok(n.max(0) as u64)
    }

    fn record_count_of(&self, customer: &CustomerId) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM records WHERE customer = (SELECT id FROM customers WHERE customer = ?1)",
                [customer.as_str()],
                |r| r.get(0),
            )
            .op("counting records")?;
        Ok(n as u64)
    }
}

/// The tombstone of a customer deleted at contract end: a keyed digest of
/// its id under the store's secret (tag 0xC0, apart from every
/// [`MentionKind`] code), kept instead of the id.
pub fn tombstone(secret: &Secret, customer: &str) -> Digest {
    let mut h = blake3::Hasher::new_keyed(&secret.0);
    h.update(&[0xC0, customer.len() as u8]);
    h.update(customer.as_bytes());
    let mut out = [0; crate::mention::DIGEST_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..crate::mention::DIGEST_LEN]);
    out
}

/// An error kept for every record of a batch (errors are not `Clone`):
/// the variants a batch's refusal reports, the rest as their text.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::CustomerDeleted => Error::CustomerDeleted,
        other => Error::Encode(other.to_string()),
    }
}

/// Refuses writes for a customer deleted at contract end.
pub(crate) fn refuse_deleted(conn: &Connection, secret: &Secret, customer: &CustomerId) -> Result<()> {
    let d = tombstone(secret, customer.as_str());
    let deleted: Option<i64> = conn
        .query_row("SELECT 1 FROM deleted_customers WHERE digest = ?1", [&d[..]], |r| r.get(0))
        .optional()
        .op("reading the deleted customers")?;
    if deleted.is_some() { Err(Error::CustomerDeleted) } else { Ok(()) }
}

/// Verdicts are stored as the model's JSON: named fields and text forms,
/// independent of declaration order.
fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Encode(e.to_string()))
}

fn verdict<V: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<StoredVerdict<V>>> {
    let row: Option<(String, i64)> =
        conn.query_row(sql, params, |r| Ok((r.get(0)?, r.get(1)?))).optional().op("reading a verdict")?;
    let Some((json, at)) = row else { return Ok(None) };
    let verdict = serde_json::from_str(&json).map_err(|e| Error::Decode {
        id: 0,
        reason: format!("stored verdict: {:?} json error at column {}", e.classify(), e.column())
            .to_lowercase(),
    })?;
    let evaluated_at = Timestamp::from_unix_nanos(i128::from(at)).map_err(|_| Error::Decode {
        id: 0,
        reason: "stored verdict: evaluation time out of range".into(),
    })?;
    Ok(Some(StoredVerdict { verdict, evaluated_at }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group stored without the sync leaves the connection syncing
    /// every other commit, as before it.
    #[test]
    fn the_sync_is_back_after_a_group_stored_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = SqliteEngine::open(dir.path().join("e.db"), EngineOptions::default()).unwrap();
        let level =
            |e: &SqliteEngine| -> i64 { e.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap() };
        assert_eq!(level(&engine), 2, "FULL");
        let batch = AdmittedBatch {
            customer: CustomerId::new("acme").unwrap(),
            device: DeviceId::new("dev-1").unwrap(),
            seq: Sequence { stream: 1, first_seq: 1, skipped: 0 },
            records: vec![None],
        };
        let encoded = engine.encoder().encode(batch, Timestamp::UNIX_EPOCH);
        let outcomes = engine.store_encoded_unsynced(&[encoded], Timestamp::UNIX_EPOCH);
        assert_eq!(outcomes[0].as_ref().unwrap().high_water, 1);
        assert_eq!(level(&engine), 2, "FULL again");
    }

    /// The high-water read runs on every welcome: it must stay compiled.
    /// (Written as a join it was compiled again at every run: with the
    /// bundled SQLite's STAT4, binding its parameters expired the plan.)
    #[test]
    fn the_high_water_read_is_compiled_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = SqliteEngine::open(dir.path().join("e.db"), EngineOptions::default()).unwrap();
        let (c, d) = (CustomerId::new("acme").unwrap(), DeviceId::new("dev-1").unwrap());
        let seq = Sequence { stream: 1, first_seq: 1, skipped: 0 };
        engine.ingest_admitted(&c, &d, seq, vec![None], Timestamp::UNIX_EPOCH).unwrap();
        let reader = engine.reader().unwrap();
        for _ in 0..5 {
            assert_eq!(reader.high_water(&c, &d, 1).unwrap(), 1);
            assert_eq!(reader.high_water(&c, &DeviceId::new("dev-2").unwrap(), 1).unwrap(), 0);
            assert_eq!(engine.high_water(&c, &d, 1).unwrap(), 1);
        }
        for (conn, runs) in [(&reader.conn, 10), (&engine.conn, 5)] {
            let s = conn.prepare_cached(READ_HIGH_WATER).unwrap();
            assert_eq!(s.get_status(rusqlite::StatementStatus::Run), runs);
            assert_eq!(s.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
    }
}

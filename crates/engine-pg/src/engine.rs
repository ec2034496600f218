//! [`PgEngine`]: the engine store on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement, Transaction};
use privtel_model::{
    BinaryVerdict, CustomerId, DeviceId, Digest as Sha256, Domain, DomainVerdict, Record, RecordBody,
    Timestamp, UserId,
};
use privtel_retention::{RecordClass, RetentionPolicy};
use privtel_store::parts::{
    Digest, Format, LineWriter, MentionKind, RecordLine, Secret, TimeText, check_range, elapsed_since,
    encode_as, encode_json_as, linking, manifest, mentions, nanos, received_by, record_time, seal_encoded,
    time_text, tombstone, unseal,
};
use privtel_store::{
    AdmittedBatch, AtRestKey, CopyStats, CustomerDeletion, DeletionReceipt, EngineStore, ErasureRequest,
    Error, IngestOutcome, JsonBatch, MAX_STREAMS_PER_DEVICE, Result, Sequence, StoredVerdict, SweepReport,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::copy::CopyBuf;
use crate::error::PgError;
use crate::keys::{self, BASE, RECORD_KEY_ID, Subject, Wrap};
use crate::partition::{self, DAY_NS, Key, Table, day_of};
use crate::pg::Op as _;
use crate::{rewrite, schema};

/// The default row format of new records: the model's JSON compressed with
/// the `records-1` dictionary (a quarter of the JSON's bytes for a small
/// record), then sealed. Rows of format 2 (JSON) still read.
const ROW_FORMAT: Format = Format::JsonZstd;

/// How to open a [`PgEngine`]. `Default`: the default retention, subject
/// keys stored unwrapped, a secret kept in the database, partitions made
/// on demand for days from 400 before to 7 after the ingest's `now`.
///
/// ```
/// use privtel_engine_pg::PgOptions;
///
/// let options = PgOptions::default().wrap_key(2, [7; 32]).secret([9; 32]).window(60, 3);
/// assert!(!format!("{options:?}").contains("7, 7"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgOptions {
    retention: RetentionPolicy,
    wrap: Option<Wrap>,
    secret: Option<Secret>,
    past_days: u32,
    ahead_days: u32,
    format: Format,
    key_rewrite_wait: Duration,
    key_rewrite_retry: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            retention: RetentionPolicy::default(),
            wrap: None,
            secret: None,
            past_days: 400,
            ahead_days: 7,
            format: ROW_FORMAT,
            key_rewrite_wait: Duration::from_secs(30),
            key_rewrite_retry: Duration::from_secs(60),
        }
    }
}

impl PgOptions {
    /// The default retention policy (its erasure deadline decides whether
    /// a receipt is overdue).
    #[must_use]
    pub fn retention(mut self, r: RetentionPolicy) -> Self {
        self.retention = r;
        self
    }

    /// Wraps (AES-256-GCM) the per-person keys kept in `subject_keys`, so
    /// the table, the write-ahead log and backups hold only ciphertexts of
    /// them. A database made with a wrapping key must be opened with it.
    #[must_use]
    pub fn wrap_key(mut self, id: u32, secret: [u8; 32]) -> Self {
        self.wrap = Some(Wrap::new(id, secret));
        self
    }

    /// The secret of the keyed digests, as
    /// [`EngineOptions::secret`](privtel_store::EngineOptions::secret):
    /// given here, only a check value is stored.
    #[must_use]
    pub fn secret(mut self, s: [u8; 32]) -> Self {
        self.secret = Some(Secret(s));
        self
    }

    /// The days partitions are made for on demand, relative to an ingest's
    /// `now`: from `past` days before to `ahead` after. A record outside
    /// goes to the DEFAULT partition (counted, reported, swept by rows).
    #[must_use]
    pub fn window(mut self, past: u32, ahead: u32) -> Self {
        self.past_days = past;
        self.ahead_days = ahead;
        self
    }

    /// The row format new records are written in: [`Format::JsonZstd`]
    /// (the default) or [`Format::Json`], as versions before schema 3
    /// wrote (for writers of both versions side by side during an
    /// upgrade). Rows of either format read, whatever this says; any other
    /// format writes the default.
    #[must_use]
    pub fn row_format(mut self, format: Format) -> Self {
        self.format = if format == Format::Json { Format::Json } else { ROW_FORMAT };
        self
    }

    /// How long an erasure or a contract end keeps trying to rewrite the
    /// key table once it has deleted keys (default 30 s; each attempt
    /// waits at most 200 ms for the table's lock, during which ingest
    /// that reads keys waits too, and the pauses between attempts double
    /// from 100 ms to 2 s). A transaction that holds the table longer
    /// leaves the rewrite due for a later sweep or [`PgEngine::maintain`]:
    /// [`PartitionReport::key_rewrite_due`] tells.
    #[must_use]
    pub fn key_rewrite_wait(mut self, wait: Duration) -> Self {
        self.key_rewrite_wait = wait;
        self
    }

    /// How often sweeps try a rewrite of the key table that stays due
    /// (default once a minute: a service sweeps customer after customer,
    /// and each try may hold ingest back for up to 200 ms).
    #[must_use]
    pub fn key_rewrite_retry(mut self, every: Duration) -> Self {
        self.key_rewrite_retry = every;
        self
    }
}

/// What [`PgEngine::partition_report`] and [`PgEngine::maintain`] tell.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct PartitionReport {
    /// Partitions of `records` (each has its twin in `mentions`).
    pub partitions: u64,
    /// Partitions created by this call.
    pub created: u64,
    /// Records in the DEFAULT partition (expected: none).
    pub default_records: u64,
    /// Keys deleted by an erasure or a contract end may still be in the
    /// key table's file: its rewrite waits for a transaction that holds
    /// the table (the next sweep or `maintain` tries again).
    pub key_rewrite_due: bool,
}

/// The keys and suppression lists ingest consults, cached. Valid while
/// `key_generation` (raised by every erasure) is unchanged.
#[derive(Default)]
struct Cache {
    generation: i64,
    keys: HashMap<(i32, Digest), [u8; 32]>,
    suppressed: HashMap<i32, HashSet<Digest>>,
    /// Tombstones of customers deleted at contract end (loaded with the
    /// generation, which a contract end raises).
    deleted: Option<HashSet<Digest>>,
    /// Partitions of `records` known to exist (a sweep that drops one
    /// raises the generation too).
    partitions: HashSet<Key>,
    /// Partitions of `mentions` known to exist (made only for a day whose
    /// records name someone other than by user id).
    mentions: HashSet<Key>,
}

/// The engine store on a PostgreSQL database: records partitioned by
/// (customer, class, day), sweeps that drop partitions, payloads sealed
/// under per-person keys that erasure destroys (docs/STORAGE.md).
pub struct PgEngine {
    client: Mutex<Client>,
    statements: Statements,
    retention: RetentionPolicy,
    wrap: Option<Wrap>,
    secret: Secret,
    window: (u32, u32),
    /// The row format of new records.
    format: Format,
    /// How long an erasure tries to rewrite the key table.
    key_rewrite_wait: Duration,
    /// How often sweeps try a rewrite that stays due.
    key_rewrite_retry: Duration,
    /// When this engine last tried a rewrite.
    rewrite_tried: Option<Instant>,
    /// Customer row ids (forgotten when the key generation moves: a
    /// contract end deletes a customer's row).
    customers: HashMap<String, i32>,
    cache: Cache,
    /// Records this engine routed to the default partition.
    default_routed: u64,
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine").field("wrapped", &self.wrap.is_some()).finish_non_exhaustive()
    }
}

/// A record ready to be stored: encoded, not yet sealed (its key needs
/// the subjects' keys, read in the transaction).
struct Prepared {
    /// The payload in the current format, or why it cannot be encoded
    /// (raised only if the record is new).
    plain: Result<Vec<u8>>,
    user_digest: Option<Digest>,
    /// The user id's digest first (kind 1), then every mention digest.
    subjects: Vec<Subject>,
    class: i16,
    day: i32,
    recorded_at: i64,
    event_id: Option<i64>,
}

struct PreparedBatch {
    customer: String,
    device: String,
    seq: Sequence,
    records: Vec<Option<Prepared>>,
    customer_lock: i64,
    device_lock: i64,
}

/// A row to COPY: sealed as it is written, so the server stores rows
/// while the next ones are sealed.
struct Row<'a> {
    key: Key,
    device: i64,
    stored_at: i64,
    record: &'a Prepared,
    plain: &'a [u8],
    record_key: [u8; 32],
}

/// Why an attempt at a group failed.
enum Failure {
    /// A record's event id is already stored for its (customer, device,
    /// day): the attempt that skipped the replay check is redone with it.
    Replay,
    Store(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Store(e)
    }
}

/// The statements every ingest runs, prepared once per connection (no
/// parsing or planning per batch; partitions are pruned when they run).
struct Statements {
    generation: Statement,
    marks: Statement,
    replays: Statement,
    devices: Statement,
    streams: Statement,
    trim_streams: Statement,
    keys: Statement,
    new_keys: Statement,
    ids: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Self> {
        let mut p = |sql: &str| client.prepare(sql).op("preparing statements");
        Ok(Self {
            generation: p("SELECT n FROM key_generation")?,
            marks: p("SELECT d.customer, d.device, d.id, s.stream, s.high_water FROM devices d
                 LEFT JOIN streams s ON s.device = d.id
                 WHERE (d.customer, d.device) IN (SELECT * FROM unnest($1::integer[], $2::text[]))")?,
            replays: p("SELECT device, event_id FROM records WHERE customer = $1 AND class = 0 AND day = $2
                 AND (device, event_id) IN (SELECT * FROM unnest($3::bigint[], $4::bigint[]))")?,
            devices: p("INSERT INTO devices (customer, device, last_seen)
                 SELECT * FROM unnest($1::integer[], $2::text[], $3::bigint[])
                 ON CONFLICT (customer, device) DO UPDATE SET last_seen = greatest(devices.last_seen, EXCLUDED.last_seen)
                 RETURNING customer, device, id")?,
            streams: p("INSERT INTO streams (device, stream, high_water, used_at)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                 ON CONFLICT (device, stream) DO UPDATE SET high_water = greatest(streams.high_water, EXCLUDED.high_water),
                     used_at = greatest(streams.used_at, EXCLUDED.used_at)")?,
            // The devices given keep the streams given and, of the others,
            // those used most recently: MAX_STREAMS_PER_DEVICE in all.
            trim_streams: p("DELETE FROM streams s USING (
                     SELECT t.device, t.stream, row_number() OVER (PARTITION BY t.device
                         ORDER BY (g.stream IS NOT NULL) DESC, t.used_at DESC, t.stream DESC) AS n
                     FROM streams t LEFT JOIN unnest($2::bigint[], $3::bigint[]) AS g(device, stream)
                         ON g.device = t.device AND g.stream = t.stream
                     WHERE t.device = ANY($1::bigint[])) o
                 WHERE s.device = o.device AND s.stream = o.stream AND o.n > $4::bigint")?,
            keys: p(KEYS_OF)?,
            new_keys: p("INSERT INTO subject_keys (customer, digest, kind, key)
                 SELECT * FROM unnest($1::integer[], $2::bytea[], $3::smallint[], $4::bytea[])
                 ON CONFLICT DO NOTHING RETURNING customer, digest")?,
            ids: p("SELECT nextval('record_id_blocks') FROM generate_series(1, $1::bigint)")?,
        })
    }
}

fn lock_key(parts: &[&str]) -> i64 {
    let mut h = blake3::Hasher::new_derive_key("privtel-engine-pg 2026-12 advisory lock");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let b = h.finalize();
    i64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

fn customer_lock(customer: &str) -> i64 {
    lock_key(&["customer", customer])
}

impl PgEngine {
    /// Connects to `url` (`postgres://user@host:port/db`), creates or
    /// checks the schema, resolves the keyed-hash secret.
    ///
    /// ```no_run
    /// use privtel_engine_pg::{PgEngine, PgOptions};
    /// use privtel_store::EngineStore;
    ///
    /// let engine = PgEngine::connect("postgres://postgres@127.0.0.1:5432/privtel", PgOptions::default())?;
    /// println!("{} records", engine.record_count()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PgError::Connect`]; [`PgError::Store`] with a database error, a
    /// newer schema ([`Error::Schema`]) or another secret
    /// ([`Error::SecretMismatch`]).
    pub fn connect(url: &str, options: PgOptions) -> std::result::Result<Self, PgError> {
        let mut client = Client::connect(url, NoTls).map_err(|e| PgError::Connect {
            message: e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned()).to_lowercase(),
        })?;
        // The rewrite of the key table truncates it: a transaction whose
        // snapshot predates a rewrite would read it empty. Every
        // transaction of the engine takes its snapshot per statement,
        // whatever the server's or the role's default says.
        client
            .batch_execute("SET default_transaction_isolation = 'read committed'")
            .op("choosing the isolation level")?;
        schema::migrate(&mut client)?;
        let secret = schema::resolve_secret(&mut client, options.secret.as_ref())?;
        let statements = Statements::prepare(&mut client)?;
        // A rewrite an erasure left due (the engine stopped, a transaction
        // held the table): tried once.
        let rewrite_tried = Some(Instant::now());
        rewrite::settle(&mut client, Duration::ZERO);
        Ok(Self {
            client: Mutex::new(client),
            statements,
            retention: options.retention,
            wrap: options.wrap,
            secret,
            window: (options.past_days, options.ahead_days),
            format: options.format,
            key_rewrite_wait: options.key_rewrite_wait,
            key_rewrite_retry: options.key_rewrite_retry,
            rewrite_tried,
            customers: HashMap::new(),
            cache: Cache { generation: -1, ..Cache::default() },
            default_routed: 0,
        })
    }

    /// The default retention policy the engine was opened with.
    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    /// Records this engine sent to the DEFAULT partition since it was
    /// opened (a metric: expected 0).
    pub fn default_routed(&self) -> u64 {
        self.default_routed
    }

    fn client(&self) -> MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Partitions and the DEFAULT partition's rows.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn partition_report(&self) -> std::result::Result<PartitionReport, PgError> {
        let mut client = self.client();
        let mut tx = client.transaction().op("reading partitions")?;
        let partitions = partition::list(&mut tx, None)?.len() as u64;
        let default_records: i64 =
            tx.query_one("SELECT count(*) FROM records_default", &[]).op("counting default rows")?.get(0);
        tx.commit().op("reading partitions")?;
        let key_rewrite_due = rewrite::due(&mut client)?;
        Ok(PartitionReport {
            partitions,
            created: 0,
            default_records: default_records as u64,
            key_rewrite_due,
        })
    }

    /// Rewrites the key table now if an erasure or a contract end left its
    /// rewrite due ([`PartitionReport::key_rewrite_due`]), trying for
    /// [`PgOptions::key_rewrite_wait`]. `Ok(true)`: no deleted key's bytes
    /// remain in its live file; `Ok(false)`: a transaction held the table
    /// all along. Engines also try by themselves (on connecting, after an
    /// erasure or contract end, in `maintain` and, at most once every
    /// [`PgOptions::key_rewrite_retry`], in sweeps); this says why one
    /// failed.
    ///
    /// # Errors
    ///
    /// The database's error (the rewrite stays due).
    pub fn rewrite_keys(&mut self) -> std::result::Result<bool, PgError> {
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.rewrite_tried = Some(Instant::now());
        Ok(rewrite::rewrite_if_due(client, self.key_rewrite_wait)?)
    }

    /// [`PgError::DefaultPartitionHolds`] when the DEFAULT partition holds
    /// rows: for a health check or an alert.
    ///
    /// # Errors
    ///
    /// That, or a database error.
    pub fn check_default(&self) -> std::result::Result<PartitionReport, PgError> {
        let report = self.partition_report()?;
        if report.default_records > 0 {
            return Err(PgError::DefaultPartitionHolds { records: report.default_records });
        }
        Ok(report)
    }

    /// Creates the partitions of every customer for the days from `now`'s
    /// to `ahead` days after, so ingest rarely creates one; run it daily.
    /// Event partitions are made for every customer; object partitions only
    /// for a customer that has one for `now`'s day or the day before (it
    /// sends objects): objects are filed under the day they are stored, so
    /// a customer that sends none would only hold empty tables, which a
    /// sweep would still have to drop. Likewise `mentions` partitions only
    /// for a customer and class that has one for either day (its records
    /// name people other than by user id). Ingest makes a missing partition
    /// itself. Returns the report after.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn maintain(&mut self, now: Timestamp, ahead: u32) -> std::result::Result<PartitionReport, PgError> {
        let today = day_of(nanos(now));
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tx = client.transaction().op("maintaining partitions")?;
        let ids: Vec<i32> = tx
            .query("SELECT id FROM customers", &[])
            .op("listing customers")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let recent: Vec<Key> = ids.iter().flat_map(|&c| [(c, 1, today - 1), (c, 1, today)]).collect();
        let sends_objects: HashSet<i32> =
            partition::existing(&mut tx, Table::Records, &recent)?.into_iter().map(|k| k.0).collect();
        let recent: Vec<Key> = ids
            .iter()
            .flat_map(|&c| [0, 1].into_iter().flat_map(move |cl| [(c, cl, today - 1), (c, cl, today)]))
            .collect();
        let mentions_sent: HashSet<(i32, i16)> =
            partition::existing(&mut tx, Table::Mentions, &recent)?.into_iter().map(|k| (k.0, k.1)).collect();
        let mut wanted = Vec::new();
        for c in ids {
            for class in [0i16, 1] {
                if class == 1 && !sends_objects.contains(&c) {
                    continue;
                }
                for d in 0..=ahead as i32 {
                    wanted.push((c, class, today + d));
                }
            }
        }
        let have: HashSet<Key> = partition::existing(&mut tx, Table::Records, &wanted)?.into_iter().collect();
        let mut created = 0;
        for key in &wanted {
            if !have.contains(key) {
                partition::create(&mut tx, Table::Records, *key)?;
                created += 1;
            }
        }
        let wanted: Vec<Key> = wanted.into_iter().filter(|k| mentions_sent.contains(&(k.0, k.1))).collect();
        let have: HashSet<Key> =
            partition::existing(&mut tx, Table::Mentions, &wanted)?.into_iter().collect();
        for key in wanted {
            if !have.contains(&key) {
                partition::create(&mut tx, Table::Mentions, key)?;
            }
        }
        tx.commit().op("committing partitions")?;
        // A rewrite of the key table an erasure could not finish.
        self.rewrite_tried = Some(Instant::now());
        rewrite::settle(client, Duration::ZERO);
        let mut report = self.partition_report()?;
        report.created = created;
        Ok(report)
    }

    /// Prepares a group's batches (JSON, keyed digests), on two threads
    /// when it is large: the server is idle meanwhile.
    fn prepare_all(&self, mut batches: Vec<JsonBatch>, now: Timestamp) -> Vec<PreparedBatch> {
        let records: usize = batches.iter().map(|b| b.batch.records.len()).sum();
        if batches.len() < 2 || records < 2_000 {
            return batches.into_iter().map(|b| self.prepare(b, now)).collect();
        }
        let second = batches.split_off(batches.len() / 2);
        std::thread::scope(|s| {
            let other = s.spawn(|| second.into_iter().map(|b| self.prepare(b, now)).collect::<Vec<_>>());
            let mut out: Vec<PreparedBatch> = batches.into_iter().map(|b| self.prepare(b, now)).collect();
            match other.join() {
                Ok(rest) => out.extend(rest),
                Err(panic) => std::panic::resume_unwind(panic),
            }
            out
        })
    }

    /// Prepares one batch; a record's JSON, when given, is stored as it is
    /// (compressed for format 3) rather than encoded again.
    fn prepare(&self, batch: JsonBatch, now: Timestamp) -> PreparedBatch {
        let JsonBatch { batch: AdmittedBatch { customer, device, seq, records }, mut json, received } = batch;
        let received = received_by(received, now);
        // None given (or a batch refused for a list of another length,
        // whose rows are never written).
        if json.len() != records.len() {
            json = vec![None; records.len()];
        }
        let c = customer.as_str();
        let records = records
            .into_iter()
            .zip(json)
            .map(|(r, json)| {
                r.map(|mut record| {
                    // Every test checks that the bytes given are the record.
                    #[cfg(debug_assertions)]
                    if let Some(json) = &json {
                        let back: Option<Record> = serde_json::from_slice(json).ok();
                        debug_assert!(back.as_ref() == Some(&record), "a record given with another's JSON");
                    }
                    let found = mentions(&mut record, c, &self.secret);
                    let user_digest = record.body.user().map(|u| self.secret.user(c, u));
                    let mut subjects: Vec<Subject> = Vec::with_capacity(found.len() + 1);
                    if let Some(u) = user_digest {
                        subjects.push((MentionKind::User.code(), u));
                    }
                    subjects.extend(found.iter().map(|(k, d)| (k.code(), *d)));
                    let recorded_at = nanos(record_time(&record, received));
                    Prepared {
                        plain: match json {
                            Some(json) => encode_json_as(json, self.format),
                            None => encode_as(&record, self.format),
                        },
                        class: i16::from(RecordClass::of(&record.body) == RecordClass::Object),
                        day: day_of(recorded_at),
                        recorded_at,
                        event_id: match &record.body {
                            RecordBody::Event(e) => Some(e.id.as_u128() as u64 as i64),
                            _ => None,
                        },
                        user_digest,
                        subjects,
                    }
                })
            })
            .collect();
        PreparedBatch {
            customer_lock: customer_lock(c),
            device_lock: lock_key(&["device", c, device.as_str()]),
            customer: customer.as_str().to_owned(),
            device: device.as_str().to_owned(),
            seq,
            records,
        }
    }

    /// One transaction storing every batch of `live`: each batch's outcome
    /// (a refusal found by reading only leaves no trace), or an error for
    /// the whole attempt (rolled back).
    ///
    /// `replays`: whether to look up the committed event ids first. Without
    /// it, a replay makes the unique index refuse the COPY
    /// ([`Failure::Replay`]) and the caller asks again with it: retries are
    /// caught by the marks, so replays are rare and the common attempt
    /// saves a lookup per record.
    fn attempt(
        &mut self,
        batches: &[PreparedBatch],
        live: &[usize],
        now: Timestamp,
        replays: bool,
    ) -> std::result::Result<Vec<(usize, Result<IngestOutcome>)>, Failure> {
        let Self {
            client,
            statements: st,
            cache,
            customers,
            wrap,
            window,
            default_routed,
            secret,
            format,
            ..
        } = self;
        let format = *format;
        let client = client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let wrap = wrap.as_ref();
        let now_ns = nanos(now);
        let mut tx = client.transaction().op("starting an ingest")?;

        // Locks: the customers shared (an erasure or a sweep of one takes
        // it alone), the devices exclusive (marks and replays of a device
        // are read and moved by one writer at a time); in order.
        let mut clocks: Vec<i64> = live.iter().map(|i| batches[*i].customer_lock).collect();
        let mut dlocks: Vec<i64> = live.iter().map(|i| batches[*i].device_lock).collect();
        clocks.sort_unstable();
        clocks.dedup();
        dlocks.sort_unstable();
        dlocks.dedup();
        tx.execute(
            "SELECT count(pg_advisory_xact_lock_shared(k)) FROM (SELECT unnest($1::bigint[]) AS k ORDER BY 1) s",
            &[&clocks],
        )
        .op("locking customers")?;
        tx.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest($1::bigint[]) AS k ORDER BY 1) s",
            &[&dlocks],
        )
        .op("locking devices")?;
        let generation: i64 = tx.query_one(&st.generation, &[]).op("reading the key generation")?.get(0);
        if generation != cache.generation {
            *cache = Cache { generation, ..Cache::default() };
            customers.clear();
        }
        if cache.deleted.is_none() {
            cache.deleted = Some(
                tx.query("SELECT digest FROM deleted_customers", &[])
                    .op("reading deleted customers")?
                    .iter()
                    .filter_map(|r| Digest::try_from(r.get::<_, Vec<u8>>(0)).ok())
                    .collect(),
            );
        }
        let deleted = cache.deleted.clone().unwrap_or_default();
        let unknown: Vec<&str> = live
            .iter()
            .map(|i| batches[*i].customer.as_str())
            .filter(|c| !customers.contains_key(*c))
            .collect();
        if !unknown.is_empty() {
            for row in tx
                .query("SELECT customer, id FROM customers WHERE customer = ANY($1)", &[&unknown])
                .op("reading customers")?
            {
                customers.insert(row.get(0), row.get(1));
            }
        }

        // Devices and marks as committed.
        let mut pairs: BTreeSet<(i32, &str)> = BTreeSet::new();
        for &i in live {
            if let Some(c) = customers.get(&batches[i].customer) {
                pairs.insert((*c, batches[i].device.as_str()));
            }
        }
        let mut device_ids: HashMap<(i32, String), i64> = HashMap::new();
        let mut marks: HashMap<(i64, i64), u64> = HashMap::new();
        if !pairs.is_empty() {
            let cs: Vec<i32> = pairs.iter().map(|p| p.0).collect();
            let ds: Vec<&str> = pairs.iter().map(|p| p.1).collect();
            for row in tx.query(&st.marks, &[&cs, &ds]).op("reading the high-water marks")? {
                let id: i64 = row.get(2);
                device_ids.insert((row.get(0), row.get(1)), id);
                if let (Some(stream), Some(hw)) = (row.get::<_, Option<i64>>(3), row.get::<_, Option<i64>>(4))
                {
                    marks.insert((id, stream), hw.max(0) as u64);
                }
            }
        }
        for c in pairs.iter().map(|p| p.0).collect::<BTreeSet<_>>() {
            if let std::collections::hash_map::Entry::Vacant(v) = cache.suppressed.entry(c) {
                let set = tx
                    .query("SELECT digest FROM suppressed WHERE customer = $1", &[&c])
                    .op("reading suppressed digests")?
                    .iter()
                    .map(|r| {
                        let d: Vec<u8> = r.get(0);
                        let len = d.len();
                        Digest::try_from(d).map_err(|_| Error::Corrupt {
                            what: "suppressed digest",
                            reason: format!("{len} bytes, expected {}", privtel_store::parts::DIGEST_LEN),
                        })
                    })
                    .collect::<Result<_>>()?;
                v.insert(set);
            }
        }

        // Each batch in order, in memory: its range against the mark (as
        // the group's earlier batches left it), what is a retry, refused,
        // suppressed; a record to store that cannot be encoded refuses it.
        let mut group_marks: HashMap<(&str, &str, u64), u64> = HashMap::new();
        let mut out: Vec<(usize, Result<IngestOutcome>)> = Vec::with_capacity(live.len());
        let mut accepted: Vec<(usize, IngestOutcome, Vec<usize>)> = Vec::new();
        for &i in live {
            let b = &batches[i];
            if deleted.contains(&tombstone(secret, &b.customer)) {
                out.push((i, Err(Error::CustomerDeleted)));
                continue;
            }
            let Sequence { stream, first_seq, skipped } = b.seq;
            let cid = customers.get(&b.customer).copied();
            let dev = cid.and_then(|c| device_ids.get(&(c, b.device.clone())).copied());
            let key = (b.customer.as_str(), b.device.as_str(), stream);
            let high_water = group_marks
                .get(&key)
                .copied()
                .or_else(|| dev.and_then(|d| marks.get(&(d, stream as i64)).copied()))
                .unwrap_or(0);
            if first_seq - skipped > high_water.saturating_add(1) {
                out.push((i, Err(Error::SequenceGap { first_seq, high_water })));
                continue;
            }
            let first_new = usize::try_from(high_water.saturating_sub(first_seq - 1)).unwrap_or(usize::MAX);
            if let Some(Some(Err(e))) = b
                .records
                .iter()
                .skip(first_new)
                .map(|r| r.as_ref().map(|p| &p.plain))
                .find(|r| matches!(r, Some(Err(_))))
            {
                let reason = match e {
                    Error::Encode(reason) => reason.clone(),
                    other => other.to_string(),
                };
                out.push((i, Err(Error::Encode(reason))));
                continue;
            }
            let declared = (first_seq - 1).saturating_sub(high_water).min(skipped);
            let mut outcome = IngestOutcome::default();
            outcome.high_water = high_water + declared;
            outcome.skipped = declared;
            let suppressed = cid.and_then(|c| cache.suppressed.get(&c));
            let mut candidates = Vec::new();
            for (n, r) in b.records.iter().enumerate() {
                // In range: check_range bounded the last by i64::MAX.
                let seq = first_seq + n as u64;
                if seq <= high_water {
                    outcome.duplicates += 1;
                    continue;
                }
                outcome.high_water = outcome.high_water.max(seq);
                let Some(r) = r else {
                    outcome.refused += 1;
                    continue;
                };
                if suppressed.is_some_and(|s| r.subjects.iter().any(|(_, d)| s.contains(d))) {
                    outcome.suppressed += 1;
                    continue;
                }
                candidates.push(n);
            }
            group_marks.insert(key, outcome.high_water);
            accepted.push((i, outcome, candidates));
        }

        // Replays: event ids the (customer, device) holds for that day, as
        // committed, and as stored by the group's earlier batches.
        let mut asked: BTreeMap<(i32, i32), (Vec<i64>, Vec<i64>)> = BTreeMap::new();
        for (i, _, candidates) in &accepted {
            let b = &batches[*i];
            let Some(c) = customers.get(&b.customer).copied() else { continue };
            let Some(d) = device_ids.get(&(c, b.device.clone())).copied() else { continue };
            for n in candidates {
                if let Some(Prepared { class: 0, event_id: Some(e), day, .. }) = &b.records[*n] {
                    let q = asked.entry((c, *day)).or_default();
                    q.0.push(d);
                    q.1.push(*e);
                }
            }
        }
        let mut held: HashSet<(i64, i64, i32)> = HashSet::new();
        for ((c, day), (ds, es)) in asked.iter().filter(|_| replays) {
            for row in tx.query(&st.replays, &[c, day, ds, es]).op("reading event ids")? {
                held.insert((row.get(0), row.get(1), *day));
            }
        }
        let mut in_group: HashSet<(&str, &str, i64, i32)> = HashSet::new();
        let mut fresh: Vec<(usize, Vec<usize>)> = Vec::with_capacity(accepted.len());
        for (i, outcome, candidates) in &mut accepted {
            let b = &batches[*i];
            let dev =
                customers.get(&b.customer).and_then(|c| device_ids.get(&(*c, b.device.clone())).copied());
            let mut keep = Vec::with_capacity(candidates.len());
            for &n in candidates.iter() {
                let Some(r) = &b.records[n] else { continue };
                if let (0, Some(e)) = (r.class, r.event_id) {
                    let replay = dev.is_some_and(|d| held.contains(&(d, e, r.day)));
                    if replay || !in_group.insert((b.customer.as_str(), b.device.as_str(), e, r.day)) {
                        outcome.duplicates += 1;
                        continue;
                    }
                }
                keep.push(n);
            }
            outcome.stored = keep.len() as u64;
            fresh.push((*i, keep));
        }

        // Writes. Customers new to the store first (their ids key the
        // rest); cached only once committed, like partitions made here.
        let mut new_customers: HashMap<String, i32> = HashMap::new();
        for (i, _, _) in &accepted {
            let name = &batches[*i].customer;
            if !customers.contains_key(name) && !new_customers.contains_key(name) {
                let c: i32 = register_customer(&mut tx, name.as_str())?;
                new_customers.insert(name.clone(), c);
            }
        }
        let cid = |name: &String| {
            customers.get(name).or_else(|| new_customers.get(name)).copied().unwrap_or_default()
        };
        // Every accepted batch's device is seen now.
        let seen: BTreeSet<(i32, &str)> = accepted
            .iter()
            .map(|(i, _, _)| (cid(&batches[*i].customer), batches[*i].device.as_str()))
            .collect();
        if !seen.is_empty() {
            let cs: Vec<i32> = seen.iter().map(|p| p.0).collect();
            let ds: Vec<&str> = seen.iter().map(|p| p.1).collect();
            let at: Vec<i64> = vec![now_ns; seen.len()];
            for row in tx.query(&st.devices, &[&cs, &ds, &at]).op("registering devices")? {
                device_ids.insert((row.get(0), row.get(1)), row.get(2));
            }
        }
        // Subject keys: the base key and every subject's, per customer.
        let mut wanted: BTreeMap<i32, BTreeMap<Digest, u8>> = BTreeMap::new();
        for (i, keep) in &fresh {
            let b = &batches[*i];
            let w = wanted.entry(cid(&b.customer)).or_default();
            w.insert(BASE, 0);
            for n in keep {
                if let Some(r) = &b.records[*n] {
                    w.extend(r.subjects.iter().map(|(k, d)| (*d, *k)));
                }
            }
        }
        let mut made: Vec<(i32, Digest, u8, [u8; 32])> = Vec::new();
        for (c, digests) in &wanted {
            let missing: Vec<&[u8]> =
                digests.keys().filter(|d| !cache.keys.contains_key(&(*c, **d))).map(|d| &d[..]).collect();
            if !missing.is_empty() {
                let found = read_keys(&mut tx, &st.keys, wrap, *c, &missing)?;
                cache.keys.extend(found.into_iter().map(|(d, key)| ((*c, d), key)));
            }
            for (d, kind) in digests {
                if !cache.keys.contains_key(&(*c, *d)) {
                    made.push((*c, *d, *kind, keys::new_key()));
                }
            }
        }
        if !made.is_empty() {
            let cs: Vec<i32> = made.iter().map(|m| m.0).collect();
            let ds: Vec<&[u8]> = made.iter().map(|m| &m.1[..]).collect();
            let ks: Vec<i16> = made.iter().map(|m| i16::from(m.2)).collect();
            let vs: Vec<Vec<u8>> = made.iter().map(|m| keys::store_key(wrap, m.0, &m.1, &m.3)).collect();
            // In (customer, digest) order: two writers making keys for the
            // same subjects wait for each other in one order, never in a
            // cycle. A key another writer made meanwhile is not inserted
            // (the insert waits for that writer's commit); it is read back,
            // and used instead of the one made here.
            let inserted: HashSet<(i32, Vec<u8>)> = tx
                .query(&st.new_keys, &[&cs, &ds, &ks, &vs])
                .op("storing subject keys")?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if inserted.len() != made.len() {
                let mut theirs: BTreeMap<i32, Vec<Digest>> = BTreeMap::new();
                for m in made.iter().filter(|m| !inserted.contains(&(m.0, m.1.to_vec()))) {
                    theirs.entry(m.0).or_default().push(m.1);
                }
                for (c, digests) in &theirs {
                    let digests: Vec<&[u8]> = digests.iter().map(|d| &d[..]).collect();
                    let found = read_keys(&mut tx, &st.keys, wrap, *c, &digests)?;
                    cache.keys.extend(found.into_iter().map(|(d, key)| ((*c, d), key)));
                }
                made.retain(|m| inserted.contains(&(m.0, m.1.to_vec())));
                let found =
                    theirs.iter().all(|(c, ds)| ds.iter().all(|d| cache.keys.contains_key(&(*c, *d))));
                if !found {
                    return Err(Error::Database {
                        op: "storing subject keys",
                        message: "a subject key neither stored nor found, expected one or the other".into(),
                    }
                    .into());
                }
            }
        }
        // Rows and their record keys; partitions for their days.
        let mut rows: Vec<Row<'_>> = Vec::new();
        let mut routed = 0;
        let (lo, hi) = (
            i64::from(day_of(now_ns)) - i64::from(window.0),
            i64::from(day_of(now_ns)) + i64::from(window.1),
        );
        let made_index: HashMap<(i32, Digest), [u8; 32]> = made.iter().map(|m| ((m.0, m.1), m.3)).collect();
        let key_of = |c: i32, d: &Digest| cache.keys.get(&(c, *d)).or_else(|| made_index.get(&(c, *d)));
        let mut needed: BTreeSet<Key> = BTreeSet::new();
        let mut needed_mentions: BTreeSet<Key> = BTreeSet::new();
        let mut new_partitions: HashSet<Key> = HashSet::new();
        let mut new_mentions: HashSet<Key> = HashSet::new();
        for (i, keep) in &fresh {
            let b = &batches[*i];
            let c = cid(&b.customer);
            let dev = device_ids.get(&(c, b.device.clone())).copied().unwrap_or_default();
            let base = key_of(c, &BASE).copied().unwrap_or_default();
            for n in keep {
                let Some(r) = &b.records[*n] else { continue };
                let Ok(plain) = &r.plain else { continue };
                let record_key = keys::record_key(&base, r.subjects.iter().filter_map(|(_, d)| key_of(c, d)));
                let key = (c, r.class, r.day);
                if !cache.partitions.contains(&key) {
                    needed.insert(key);
                }
                if !cache.mentions.contains(&key)
                    && r.subjects.iter().any(|(k, _)| *k != MentionKind::User.code())
                {
                    needed_mentions.insert(key);
                }

                rows.push(Row { key, device: dev, stored_at: now_ns, record: r, plain, record_key });
            }
        }
        if !needed.is_empty() {
            let have: HashSet<Key> =
                partition::existing(&mut tx, Table::Records, &needed.iter().copied().collect::<Vec<_>>())?
                    .into_iter()
                    .collect();
            for key in needed {
                if have.contains(&key) {
                    new_partitions.insert(key);
                } else if (lo..=hi).contains(&i64::from(key.2)) {
                    partition::create(&mut tx, Table::Records, key)?;
                    new_partitions.insert(key);
                }
            }
            routed = rows
                .iter()
                .filter(|r| !cache.partitions.contains(&r.key) && !new_partitions.contains(&r.key))
                .count() as u64;
        }
        // A day's mentions partition, once one of its records names
        // someone other than by user id (outside the window, with no
        // records partition: the default).
        if !needed_mentions.is_empty() {
            let keys: Vec<Key> = needed_mentions.iter().copied().collect();
            let have: HashSet<Key> =
                partition::existing(&mut tx, Table::Mentions, &keys)?.into_iter().collect();
            for key in keys {
                // Made whenever the day's records partition exists (made
                // ahead beyond this window, say): a mention goes to the
                // default only with its record.
                let records_there = cache.partitions.contains(&key) || new_partitions.contains(&key);
                if have.contains(&key) {
                    new_mentions.insert(key);
                } else if records_there || (lo..=hi).contains(&i64::from(key.2)) {
                    partition::create(&mut tx, Table::Mentions, key)?;
                    new_mentions.insert(key);
                }
            }
        }
        // Marks.
        let mut final_marks: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for (i, outcome, _) in &accepted {
            let b = &batches[*i];
            let dev = device_ids.get(&(cid(&b.customer), b.device.clone())).copied().unwrap_or_default();
            let m = final_marks.entry((dev, b.seq.stream as i64)).or_default();
            *m = (*m).max(outcome.high_water as i64);
        }
        if !final_marks.is_empty() {
            let ds: Vec<i64> = final_marks.keys().map(|k| k.0).collect();
            let ss: Vec<i64> = final_marks.keys().map(|k| k.1).collect();
            let hs: Vec<i64> = final_marks.values().copied().collect();
            let us: Vec<i64> = vec![now_ns; final_marks.len()];
            tx.execute(&st.streams, &[&ds, &ss, &hs, &us]).op("updating the high-water marks")?;
            // A device given a stream it had no mark of keeps at most
            // MAX_STREAMS_PER_DEVICE: the group's and those used last.
            let grown: Vec<i64> = final_marks
                .keys()
                .filter(|k| !marks.contains_key(k))
                .map(|k| k.0)
                .collect::<BTreeSet<i64>>()
                .into_iter()
                .collect();
            if !grown.is_empty() {
                let cap = MAX_STREAMS_PER_DEVICE as i64;
                tx.execute(&st.trim_streams, &[&grown, &ds, &ss, &cap])
                    .op("dropping the devices' streams used least recently")?;
            }
        }
        copy_rows(&mut tx, &st.ids, &rows, format)?;
        drop(rows);
        tx.commit().op("committing an ingest")?;
        cache.keys.extend(made.into_iter().map(|m| ((m.0, m.1), m.3)));
        cache.partitions.extend(new_partitions);
        cache.mentions.extend(new_mentions);
        customers.extend(new_customers);
        *default_routed += routed;
        out.extend(accepted.into_iter().map(|(i, o, _)| (i, Ok(o))));
        Ok(out)
    }

    /// [`PgEngine::attempt_replays`], again after a deadlock.
    fn attempt_checked(
        &mut self,
        batches: &[PreparedBatch],
        live: &[usize],
        now: Timestamp,
    ) -> Result<Vec<(usize, Result<IngestOutcome>)>> {
        // A deadlock the server broke (two writers' locks met in a cycle,
        // e.g. one waiting for the other's new subject key while that one
        // waits to create a partition) rolled this attempt back whole:
        // it is tried again, a few times.
        let mut tries = 0;
        loop {
            match self.attempt_replays(batches, live, now) {
                Err(e) if tries < 4 && transient(&e) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20 << tries));
                }
                other => return other,
            }
        }
    }

    /// [`PgEngine::attempt`] without the replay lookup, then with it if a
    /// replay was met.
    fn attempt_replays(
        &mut self,
        batches: &[PreparedBatch],
        live: &[usize],
        now: Timestamp,
    ) -> Result<Vec<(usize, Result<IngestOutcome>)>> {
        match self.attempt(batches, live, now, false) {
            Ok(out) => Ok(out),
            Err(Failure::Store(e)) => Err(e),
            Err(Failure::Replay) => match self.attempt(batches, live, now, true) {
                Ok(out) => Ok(out),
                Err(Failure::Store(e)) => Err(e),
                Err(Failure::Replay) => Err(Error::Database {
                    op: "storing a batch",
                    message: "an event id stored twice despite the replay check, expected none".into(),
                }),
            },
        }
    }

    fn customer_id(client: &mut Client, customer: &CustomerId) -> Result<Option<i32>> {
        Ok(client
            .query_opt("SELECT id FROM customers WHERE customer = $1", &[&customer.as_str()])
            .op("finding a customer")?
            .map(|r| r.get(0)))
    }
}

/// The stored keys of customer `c` among `digests`, opened (a digest row
/// that does not decode is skipped; a key that does not open is an error).
fn read_keys<T: ?Sized + postgres::ToStatement>(
    tx: &mut Transaction<'_>,
    query: &T,
    wrap: Option<&Wrap>,
    c: i32,
    digests: &[&[u8]],
) -> Result<Vec<(Digest, [u8; 32])>> {
    let mut out = Vec::with_capacity(digests.len());
    for row in tx.query(query, &[&c, &digests]).op("reading subject keys")? {
        let Ok(d) = Digest::try_from(row.get::<_, Vec<u8>>(0)) else { continue };
        let key = keys::load_key(wrap, c, &d, row.get(1))
            .map_err(|e| Error::Decode { id: 0, reason: e.to_string() })?;
        out.push((d, key));
    }
    Ok(out)
}

/// Whether `e` is the server breaking a deadlock (40P01) or a
/// serialization failure (40001): the transaction was rolled back whole and
/// can be tried again as it was.
fn transient(e: &Error) -> bool {
    matches!(e, Error::Database { message, .. } if message.ends_with("(40p01)") || message.ends_with("(40001)"))
}

/// A customer's stored keys among some digests ([`read_keys`]).
const KEYS_OF: &str =
    "SELECT digest, key FROM subject_keys WHERE customer = $1 AND digest = ANY($2::bytea[])";

/// Record ids a block of the `record_id_blocks` sequence holds.
const ID_BLOCK: usize = 1 << 20;

/// COPYs the group's rows (binary) into `records` and `mentions`, sealing
/// each payload as it goes, and adds them to the counts.
fn copy_rows(
    tx: &mut Transaction<'_>,
    ids: &Statement,
    rows: &[Row<'_>],
    format: Format,
) -> std::result::Result<(), Failure> {
    if rows.is_empty() {
        return Ok(());
    }
    let blocks = rows.len().div_ceil(ID_BLOCK) as i64;
    let ids: Vec<i64> = tx
        .query(ids, &[&blocks])
        .op("numbering records")?
        .iter()
        .flat_map(|r| {
            let block: i64 = r.get(0);
            (0..ID_BLOCK as i64).map(move |i| block.saturating_mul(ID_BLOCK as i64).saturating_add(i))
        })
        .take(rows.len())
        .collect();
    let io = |e: std::io::Error| Error::Database { op: "copying rows", message: e.to_string() };
    let copied = |r: std::result::Result<u64, postgres::Error>| -> std::result::Result<u64, Failure> {
        r.map_err(|e| match e.code() {
            Some(c) if *c == postgres::error::SqlState::UNIQUE_VIOLATION => Failure::Replay,
            _ => Failure::Store(crate::pg::db_error("copying rows", &e)),
        })
    };
    let mut ments = CopyBuf::new();
    let mut counts: BTreeMap<Key, i64> = BTreeMap::new();
    {
        let mut w = tx
            .copy_in(
                "COPY records (customer, class, day, id, device, user_digest, recorded_at, stored_at, event_id, format, subjects, payload) FROM STDIN (FORMAT binary)",
            )
            .op("copying rows")?;
        let mut recs = CopyBuf::new();
        for (row, &id) in rows.iter().zip(&ids) {
            let (c, cl, d) = row.key;
            let r = row.record;
            let (_, payload) =
                seal_encoded(row.plain.to_vec(), Some(&AtRestKey::new(RECORD_KEY_ID, row.record_key)))?;
            recs.tuple(12);
            recs.i32(c);
            recs.i16(cl);
            recs.i32(d);
            recs.i64(id);
            recs.i64(row.device);
            recs.opt_bytes(r.user_digest.as_ref().map(|u| &u[..]));
            recs.i64(r.recorded_at);
            recs.i64(row.stored_at);
            recs.opt_i64(r.event_id);
            recs.i16(format.code() as i16);
            recs.bytes(&keys::encode_subjects(&r.subjects));
            recs.bytes(&payload);
            for (kind, digest) in &r.subjects {
                if *kind == MentionKind::User.code() {
                    continue;
                }
                ments.tuple(6);
                ments.i32(c);
                ments.i16(cl);
                ments.i32(d);
                ments.bytes(digest);
                ments.i16(i16::from(*kind));
                ments.i64(id);
            }
            *counts.entry(row.key).or_default() += 1;
            // Sent as it fills: the server inserts while the rest is sealed.
            if recs.len() >= 1 << 18 {
                w.write_all(&recs.take()).map_err(io)?;
            }
        }
        w.write_all(&recs.finish()).map_err(io)?;
        copied(w.finish())?;
    }
    let mut w = tx
        .copy_in("COPY mentions (customer, class, day, digest, kind, record_id) FROM STDIN (FORMAT binary)")
        .op("copying mentions")?;
    w.write_all(&ments.finish()).map_err(io)?;
    copied(w.finish())?;
    Ok(add_counts(tx, &counts)?)
}

/// The row id of a customer, registered if new.
fn register_customer(tx: &mut Transaction<'_>, customer: &str) -> Result<i32> {
    // Looked up first: an INSERT that meets the existing row still takes a
    // number from the identity's sequence, and verdict writes and
    // erasures come often (2^31 of them would exhaust it).
    let find = |tx: &mut Transaction<'_>| -> Result<Option<i32>> {
        Ok(tx
            .query_opt("SELECT id FROM customers WHERE customer = $1", &[&customer])
            .op("finding a customer")?
            .map(|r| r.get(0)))
    };
    if let Some(id) = find(tx)? {
        return Ok(id);
    }
    let made = tx
        .query_opt(
            "INSERT INTO customers (customer) VALUES ($1) ON CONFLICT (customer) DO NOTHING RETURNING id",
            &[&customer],
        )
        .op("registering the customer")?
        .map(|r| r.get(0));
    match made {
        Some(id) => Ok(id),
        // Registered by another engine meanwhile.
        None => find(tx)?.ok_or_else(|| Error::Database {
            op: "registering the customer",
            message: "the customer's row is neither new nor found".into(),
        }),
    }
}

/// [`Error::CustomerDeleted`] for a customer deleted at contract end.
fn refuse_deleted(tx: &mut Transaction<'_>, secret: &Secret, customer: &CustomerId) -> Result<()> {
    let d = tombstone(secret, customer.as_str());
    let row = tx
        .query_opt("SELECT 1 FROM deleted_customers WHERE digest = $1", &[&&d[..]])
        .op("reading deleted customers")?;
    if row.is_some() { Err(Error::CustomerDeleted) } else { Ok(()) }
}

/// The tables a customer's rows live in besides records, mentions and
/// subject keys, in the order a contract end empties them.
const CUSTOMER_TABLES: &[(&str, &str)] = &[
    ("record_counts", "DELETE FROM record_counts WHERE customer = $1"),
    ("streams", "DELETE FROM streams WHERE device IN (SELECT id FROM devices WHERE customer = $1)"),
    ("devices", "DELETE FROM devices WHERE customer = $1"),
    ("suppressed", "DELETE FROM suppressed WHERE customer = $1"),
    ("receipts", "DELETE FROM receipts WHERE customer = $1"),
    ("binary_verdicts", "DELETE FROM binary_verdicts WHERE customer = $1"),
    ("domain_verdicts", "DELETE FROM domain_verdicts WHERE customer = $1"),
    ("customers", "DELETE FROM customers WHERE id = $1"),
];

impl PgEngine {
    /// Lets a customer deleted at contract end be stored again: forgets
    /// its tombstone. Its old data is not back: it was destroyed.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn reonboard_customer(&mut self, customer: &CustomerId) -> Result<()> {
        let d = tombstone(&self.secret, customer.as_str());
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tx = client.transaction().op("re-onboarding a customer")?;
        tx.execute("DELETE FROM deleted_customers WHERE digest = $1", &[&&d[..]])
            .op("re-onboarding a customer")?;
        tx.execute("UPDATE key_generation SET n = n + 1", &[]).op("raising the key generation")?;
        tx.commit().op("committing a re-onboarding")?;
        self.cache = Cache { generation: -1, ..Cache::default() };
        Ok(())
    }

    fn delete_customer_pg(&mut self, customer: &CustomerId, now: Timestamp) -> Result<CustomerDeletion> {
        let clock = Instant::now();
        let mut receipt = CustomerDeletion::new(customer.clone(), now);
        let digest = tombstone(&self.secret, customer.as_str());
        let lock = customer_lock(customer.as_str());
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        // 1. The keys (base key and every subject key) and the tombstone,
        // committed first: from then on nothing of the customer opens, and
        // no engine stores anything of it (the generation moves, so every
        // engine reloads the tombstones before its next ingest).
        let mut tx = client.transaction().op("starting a contract end")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock]).op("locking the customer")?;
        let c: Option<i32> = tx
            .query_opt("SELECT id FROM customers WHERE customer = $1", &[&customer.as_str()])
            .op("finding a customer")?
            .map(|r| r.get(0));
        let keys = match c {
            Some(c) => tx
                .execute("DELETE FROM subject_keys WHERE customer = $1", &[&c])
                .op("destroying the customer's keys")?,
            None => 0,
        };
        tx.execute(
            "INSERT INTO deleted_customers (digest, deleted_at) VALUES ($1, $2)
             ON CONFLICT (digest) DO UPDATE SET deleted_at = $2",
            &[&&digest[..], &nanos(now)],
        )
        .op("remembering a deleted customer")?;
        tx.execute("UPDATE key_generation SET n = n + 1", &[]).op("raising the key generation")?;
        rewrite::mark_due(&mut tx)?;
        tx.commit().op("committing the key destruction")?;
        // From here nothing of the customer opens through the database.
        receipt.keys_destroyed_at = Some(elapsed_since(now, clock));
        // The deleted keys' bytes leave the table's file. A transaction
        // holding the table longer than the wait (or an error) leaves that
        // to a later rewrite, and the receipt says so.
        self.rewrite_tried = Some(Instant::now());
        receipt.keys_pending_rewrite = !rewrite::settle(client, self.key_rewrite_wait);
        receipt.removed.insert("subject_keys".into(), keys);
        // 2. The rows: the customer's partitions dropped whole, the rest
        // deleted.
        let mut tx = client.transaction().op("starting a contract end")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock]).op("locking the customer")?;
        let (mut records, mut mentions) = (0u64, 0u64);
        if let Some(c) = c {
            for key in partition::list(&mut tx, Some(c))? {
                let name = partition::name("records", key);
                let n: i64 = tx
                    .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                    .op("counting a partition")?
                    .get(0);
                // Through the parent: a day may have no mentions partition.
                let m: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM mentions WHERE customer = $1 AND class = $2 AND day = $3",
                        &[&key.0, &key.1, &key.2],
                    )
                    .op("counting a partition")?
                    .get(0);
                records += n as u64;
                mentions += m as u64;
                partition::drop(&mut tx, key)?;
                // Counted above (through the parent): not again below.
                tx.execute(
                    "DELETE FROM mentions_default WHERE customer = $1 AND class = $2 AND day = $3",
                    &[&key.0, &key.1, &key.2],
                )
                .op("removing the customer's mentions")?;
            }
            records += tx
                .execute("DELETE FROM records_default WHERE customer = $1", &[&c])
                .op("removing the customer's records")?;
            mentions += tx
                .execute("DELETE FROM mentions_default WHERE customer = $1", &[&c])
                .op("removing the customer's mentions")?;
            for (table, sql) in CUSTOMER_TABLES {
                let n = tx.execute(*sql, &[&c]).op("removing the customer's rows")?;
                receipt.removed.insert((*table).to_owned(), n);
            }
        }
        receipt.removed.insert("records".into(), records);
        receipt.removed.insert("mentions".into(), mentions);
        tx.execute("UPDATE key_generation SET n = n + 1", &[]).op("raising the key generation")?;
        tx.commit().op("committing a contract end")?;
        self.cache = Cache { generation: -1, ..Cache::default() };
        self.customers.remove(customer.as_str());
        receipt.stores = vec![
            "engine (PostgreSQL: subject keys, records, mentions and every table of the customer)".into(),
        ];
        receipt.completed_at = elapsed_since(now, clock);
        Ok(receipt)
    }

    fn export_customer_pg(
        &self,
        customer: &CustomerId,
        fields: &serde_json::Map<String, serde_json::Value>,
        out: &mut dyn Write,
    ) -> Result<CopyStats> {
        let mut w = LineWriter::new(out);
        w.line(&manifest(fields, customer, schema::NEWEST, "postgresql"))?;
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        let mut client = self.client();
        let c: Option<i32> = client
            .query_opt("SELECT id FROM customers WHERE customer = $1", &[&customer.as_str()])
            .op("finding a customer")?
            .map(|r| r.get(0));
        if let Some(c) = c {
            // The records, partition by partition, 64 blocks at a time, each
            // page read in a transaction of its own that ends before its
            // lines are written: a slow reader of the copy holds no lock
            // that a partition's creation or drop (and every writer behind
            // it) would wait for. Not one snapshot: what is stored or swept
            // while the copy runs may or may not be in it.
            let mut have: HashMap<Digest, [u8; 32]> = HashMap::new();
            let mut stored_at = TimeText::default();
            let mut tables: Vec<(String, bool)> = {
                let mut tx = client.transaction().op("listing a customer's partitions")?;
                let parts = partition::list(&mut tx, Some(c))?;
                tx.commit().op("listing a customer's partitions")?;
                parts.into_iter().map(|k| (partition::name("records", k), false)).collect()
            };
            tables.push(("records_default".to_owned(), true));
            for (table, shared) in &tables {
                let mut block: i64 = 0;
                loop {
                    const BLOCKS: i64 = 64;
                    let mut tx = consistent_read(&mut client, "reading a customer's records")?;
                    let filter = if *shared { " AND customer = $1" } else { " AND $1::integer IS NOT NULL" };
                    let sql = format!(
                        "SELECT id, stored_at, format, subjects, payload, (SELECT pg_relation_size('{table}') / 8192)
                         FROM {table} WHERE ctid >= '({block},0)'::tid AND ctid < '({},0)'::tid{filter}",
                        block + BLOCKS
                    );
                    let page = match tx.query(&sql, &[&c]) {
                        Ok(page) => page,
                        // Dropped by a sweep meanwhile: its records are gone.
                        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => break,
                        Err(e) => return Err(crate::pg::db_error("reading a customer's records", &e)),
                    };
                    let blocks: i64 = match page.first() {
                        Some(row) => row.get(5),
                        None => tx
                            .query_one(&format!("SELECT pg_relation_size('{table}') / 8192"), &[])
                            .op("reading a partition's size")?
                            .get(0),
                    };
                    let mut decoded = Vec::with_capacity(page.len());
                    let mut missing: BTreeSet<Digest> = BTreeSet::new();
                    for row in &page {
                        let id: i64 = row.get(0);
                        let subjects = keys::decode_subjects(row.get(3))
                            .map_err(|e| Error::Decode { id, reason: e.to_string() })?;
                        missing.extend(subjects.iter().map(|(_, d)| *d).filter(|d| !have.contains_key(d)));
                        decoded.push(subjects);
                    }
                    if !page.is_empty() && !have.contains_key(&BASE) {
                        missing.insert(BASE);
                    }
                    if !missing.is_empty() {
                        let ds: Vec<&[u8]> = missing.iter().map(|d| &d[..]).collect();
                        have.extend(read_keys(&mut tx, KEYS_OF, self.wrap.as_ref(), c, &ds)?);
                    }
                    tx.commit().op("reading a customer's records")?;
                    let base = have.get(&BASE).copied().unwrap_or_default();
                    for (row, subjects) in page.iter().zip(decoded) {
                        let id: i64 = row.get(0);
                        let record = open_record(id, row.get(2), &subjects, row.get(4), &base, &have)?;
                        w.line(&RecordLine {
                            id,
                            stored_at: stored_at.text(row.get(1)),
                            program: record.program.as_str(),
                            kind: record.body.kind_name(),
                            record: &record,
                        })?;
                        *counts.entry("records").or_default() += 1;
                    }
                    block += BLOCKS;
                    if block >= blocks {
                        break;
                    }
                }
            }
            // The small tables, in one short read ended before they are
            // written.
            let mut small: Vec<serde_json::Value> = Vec::new();
            let mut tx = client.build_transaction().read_only(true).start().op("starting a customer copy")?;
            let mut n = 0;
            for row in tx
                .query("SELECT device, last_seen FROM devices WHERE customer = $1 ORDER BY id", &[&c])
                .op("reading devices")?
            {
                small.push(serde_json::json!({"device": {"device": row.get::<_, String>(0), "last_seen": time_text(row.get(1))}}));
                n += 1;
            }
            counts.insert("devices", n);
            // Users are not stored in clear here (only their keyed digests).
            counts.insert("users", 0);
            for (table, name, sql) in [
                (
                    "binary_verdicts",
                    "binary_verdict",
                    "SELECT verdict, evaluated_at FROM binary_verdicts WHERE customer = $1 ORDER BY sha256",
                ),
                (
                    "domain_verdicts",
                    "domain_verdict",
                    "SELECT verdict, evaluated_at FROM domain_verdicts WHERE customer = $1 ORDER BY domain",
                ),
            ] {
                let mut n = 0;
                for row in tx.query(sql, &[&c]).op("reading verdicts")? {
                    let json: String = row.get(0);
                    let verdict = serde_json::from_str::<serde_json::Value>(&json)
                        .unwrap_or(serde_json::Value::String(json));
                    small.push(serde_json::json!({ name: { "verdict": verdict, "evaluated_at": time_text(row.get(1)) } }));
                    n += 1;
                }
                counts.insert(table, n);
            }
            counts.insert("benchmark_aggregates", 0);
            let mut n = 0;
            for row in tx
                .query(
                    "SELECT request_id, requested_at, completed_at, records, pseudonyms FROM receipts
                     WHERE customer = $1 ORDER BY request_id",
                    &[&c],
                )
                .op("reading receipts")?
            {
                small.push(serde_json::json!({"receipt": {
                    "request_id": row.get::<_, String>(0),
                    "requested_at": time_text(row.get(1)),
                    "completed_at": time_text(row.get(2)),
                    "records_removed": row.get::<_, i64>(3),
                    "pseudonyms_suppressed": row.get::<_, i64>(4),
                }}));
                n += 1;
            }
            counts.insert("receipts", n);
            tx.commit().op("ending a customer copy")?;
            for line in &small {
                w.line(line)?;
            }
        }
        let records = counts.get("records").copied().unwrap_or(0);
        let lines = w.stats.lines + 1;
        w.line(&serde_json::json!({ "counts": { "lines": lines, "tables": counts } }))?;
        let mut stats = w.stats;
        stats.records = records;
        Ok(stats)
    }
}

/// Adds `delta` to the record counts (negative after deletes).
fn add_counts(tx: &mut Transaction<'_>, delta: &BTreeMap<Key, i64>) -> Result<()> {
    if delta.is_empty() {
        return Ok(());
    }
    let cs: Vec<i32> = delta.keys().map(|k| k.0).collect();
    let cls: Vec<i16> = delta.keys().map(|k| k.1).collect();
    let ds: Vec<i32> = delta.keys().map(|k| k.2).collect();
    let ns: Vec<i64> = delta.values().copied().collect();
    tx.execute(
        "INSERT INTO record_counts (customer, class, day, records)
         SELECT * FROM unnest($1::integer[], $2::smallint[], $3::integer[], $4::bigint[])
         ON CONFLICT (customer, class, day) DO UPDATE SET records = record_counts.records + EXCLUDED.records",
        &[&cs, &cls, &ds, &ns],
    )
    .op("counting records")?;
    Ok(())
}

/// A stored record's place: class, day, id.
type Place = (i16, i32, i64);

/// The records about a person, and the digests (with their kind codes)
/// that linked them.
type Person = (BTreeSet<Place>, BTreeSet<(Digest, u8)>);

/// Deletes the mention rows of removed records and takes them off the
/// counts.
fn forget_rows(tx: &mut Transaction<'_>, c: i32, removed: &[Place]) -> Result<()> {
    forget_mentions(tx, c, removed)?;
    count_removed(tx, c, removed)
}

/// Deletes the mention rows of `places`' records.
fn forget_mentions(tx: &mut Transaction<'_>, c: i32, places: &[Place]) -> Result<()> {
    let mut by_part: BTreeMap<(i16, i32), Vec<i64>> = BTreeMap::new();
    for (cl, d, id) in places {
        by_part.entry((*cl, *d)).or_default().push(*id);
    }
    for ((cl, d), ids) in by_part {
        tx.execute(
            "DELETE FROM mentions WHERE customer = $1 AND class = $2 AND day = $3 AND record_id = ANY($4)",
            &[&c, &cl, &d, &ids],
        )
        .op("removing mentions")?;
    }
    Ok(())
}

/// Takes records that were removed off the counts.
fn count_removed(tx: &mut Transaction<'_>, c: i32, removed: &[Place]) -> Result<()> {
    let mut delta: BTreeMap<Key, i64> = BTreeMap::new();
    for (cl, d, _) in removed {
        *delta.entry((c, *cl, *d)).or_default() -= 1;
    }
    add_counts(tx, &delta)
}

/// Deletes records by place (grouped by partition).
fn delete_places(tx: &mut Transaction<'_>, c: i32, found: &[Place]) -> Result<u64> {
    let mut by_part: BTreeMap<(i16, i32), Vec<i64>> = BTreeMap::new();
    for (cl, d, id) in found {
        by_part.entry((*cl, *d)).or_default().push(*id);
    }
    let mut removed: Vec<Place> = Vec::new();
    for ((cl, d), ids) in by_part {
        removed.extend(places(
            &tx.query(
                "DELETE FROM records WHERE customer = $1 AND class = $2 AND day = $3 AND id = ANY($4)
                 RETURNING class, day, id",
                &[&c, &cl, &d, &ids],
            )
            .op("removing records")?,
        ));
    }
    // Every mention found goes (a mention whose record is gone already
    // included); the counts move by the records removed only.
    forget_mentions(tx, c, found)?;
    count_removed(tx, c, &removed)?;
    Ok(removed.len() as u64)
}

fn places(rows: &[postgres::Row]) -> Vec<Place> {
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

/// The records about a person: filed under their user id, and every record
/// sharing with those a digest that names a person (one hop,
/// `privtel_store::parts::linking`: a device fingerprint, a path, a host
/// or `root` link no one); and the digests (with their kind codes) that
/// linked them.
fn person(
    tx: &mut Transaction<'_>,
    c: i32,
    customer: &str,
    secret: &Secret,
    wrap: Option<&Wrap>,
    user_digest: &Digest,
) -> Result<Person> {
    let direct = tx
        .query(
            "SELECT class, day, id, subjects, format, payload FROM records WHERE customer = $1 AND user_digest = $2",
            &[&c, &&user_digest[..]],
        )
        .op("finding a person")?;
    let mut named = Vec::with_capacity(direct.len());
    let mut wanted: BTreeSet<Digest> = BTreeSet::from([BASE]);
    for row in &direct {
        let id: i64 = row.get(2);
        let subjects =
            keys::decode_subjects(row.get(3)).map_err(|e| Error::Decode { id, reason: e.to_string() })?;
        if subjects.iter().any(|(k, _)| *k != MentionKind::User.code()) {
            wanted.extend(subjects.iter().map(|(_, d)| *d));
            named.push((row, subjects));
        }
    }
    let mut digests = BTreeSet::new();
    if !named.is_empty() {
        let ds: Vec<&[u8]> = wanted.iter().map(|d| &d[..]).collect();
        let have: HashMap<Digest, [u8; 32]> = read_keys(tx, KEYS_OF, wrap, c, &ds)?.into_iter().collect();
        let base = have.get(&BASE).copied().unwrap_or_default();
        for (row, subjects) in named {
            let id: i64 = row.get(2);
            let stored: Vec<(i64, Digest)> = subjects
                .iter()
                .filter(|(k, _)| *k != MentionKind::User.code())
                .map(|(k, d)| (i64::from(*k), *d))
                .collect();
            // Rows written before only person-naming fields were indexed
            // may hold a shared value's digest: the record decides.
            let mut record = open_record(id, row.get(4), &subjects, row.get(5), &base, &have).ok();
            for (d, k) in linking(&stored, record.as_mut(), customer, secret)? {
                let k = u8::try_from(k).map_err(|_| Error::Decode {
                    id,
                    reason: "a mention kind out of range, expected 1 to 6".into(),
                })?;
                digests.insert((d, k));
            }
        }
    }
    let mut all: BTreeSet<Place> = places(&direct).into_iter().collect();
    if !digests.is_empty() {
        let ds: Vec<&[u8]> = digests.iter().map(|(d, _)| &d[..]).collect();
        let linked = tx
            .query(
                "SELECT class, day, record_id FROM mentions WHERE customer = $1 AND digest = ANY($2)",
                &[&c, &ds],
            )
            .op("finding mentions")?;
        all.extend(places(&linked));
    }
    Ok((all, digests))
}

/// Verdicts are stored as the model's JSON, as in the SQLite engine.
fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Encode(e.to_string()))
}

impl PgEngine {
    /// A customer's verdict of `table` whose `column` equals `key`.
    fn verdict<V: DeserializeOwned>(
        &self,
        table: &str,
        column: &str,
        customer: &CustomerId,
        key: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<Option<StoredVerdict<V>>> {
        let row = self
            .client()
            .query_opt(
                &format!(
                    "SELECT v.verdict, v.evaluated_at FROM {table} v JOIN customers c ON c.id = v.customer
                     WHERE c.customer = $1 AND v.{column} = $2"
                ),
                &[&customer.as_str(), key],
            )
            .op("reading a verdict")?;
        let Some(row) = row else { return Ok(None) };
        let (json, at): (String, i64) = (row.get(0), row.get(1));
        let verdict = serde_json::from_str(&json).map_err(|e| Error::Decode {
            id: 0,
            reason: format!("stored verdict: {:?} json error at column {}", e.classify(), e.column())
                .to_lowercase(),
        })?;
        let evaluated_at = Timestamp::from_unix_nanos(i128::from(at)).map_err(|_| Error::Decode {
            id: 0,
            reason: "stored verdict: evaluation time out of range".into(),
        })?;
        Ok(Some(StoredVerdict::new(verdict, evaluated_at)))
    }
}

impl EngineStore for PgEngine {
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
        self.ingest_group_json(
            batches.into_iter().map(|batch| JsonBatch { batch, json: Vec::new(), received: None }).collect(),
            now,
        )
    }

    fn ingest_group_json(&mut self, batches: Vec<JsonBatch>, now: Timestamp) -> Vec<Result<IngestOutcome>> {
        let mut results: Vec<Option<Result<IngestOutcome>>> = batches
            .iter()
            .map(|JsonBatch { batch: b, json, .. }| {
                check_range(b.seq.first_seq, b.records.len())
                    .err()
                    .or_else(|| {
                        // One entry per record, or none: bytes must never
                        // be stored as another record's.
                        (!json.is_empty() && json.len() != b.records.len()).then(|| {
                            Error::Encode(format!(
                                "{} json entries for {} records, expected one per record",
                                json.len(),
                                b.records.len()
                            ))
                        })
                    })
                    .or_else(|| {
                        (b.seq.skipped >= b.seq.first_seq).then_some(Error::SequenceRange {
                            first_seq: b.seq.first_seq,
                            records: b.records.len() as u64,
                        })
                    })
                    .map(Err)
            })
            .collect();
        let prepared = self.prepare_all(batches, now);
        let live: Vec<usize> = (0..prepared.len()).filter(|i| results[*i].is_none()).collect();
        if live.is_empty() {
            return results.into_iter().flatten().collect();
        }
        // One transaction for the group. If it fails, each batch is tried
        // alone, so one batch that cannot be written does not hold back
        // the others (their marks make the retry safe).
        let attempts: Vec<Vec<usize>> = match self.attempt_checked(&prepared, &live, now) {
            Ok(outcomes) => {
                for (i, o) in outcomes {
                    results[i] = Some(o);
                }
                Vec::new()
            }
            Err(e) if live.len() == 1 => {
                results[live[0]] = Some(Err(e));
                Vec::new()
            }
            Err(_) => live.iter().map(|i| vec![*i]).collect(),
        };
        for alone in attempts {
            match self.attempt_checked(&prepared, &alone, now) {
                Ok(outcomes) => {
                    for (i, o) in outcomes {
                        results[i] = Some(o);
                    }
                }
                Err(e) => results[alone[0]] = Some(Err(e)),
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Database { op: "storing a batch", message: "no outcome for the batch".into() })
                })
            })
            .collect()
    }

    fn high_water(&self, customer: &CustomerId, device: &DeviceId, stream: u64) -> Result<u64> {
        let hw: Option<i64> = self
            .client()
            .query_opt(
                "SELECT s.high_water FROM streams s JOIN devices d ON d.id = s.device
                 JOIN customers c ON c.id = d.customer
                 WHERE c.customer = $1 AND d.device = $2 AND s.stream = $3",
                &[&customer.as_str(), &device.as_str(), &(stream as i64)],
            )
            .op("reading the high-water mark")?
            .map(|r| r.get(0));
        Ok(hw.unwrap_or(0).max(0) as u64)
    }

    fn sweep(
        &mut self,
        customer: &CustomerId,
        retention: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<SweepReport> {
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A rewrite of the key table an erasure could not finish: tried
        // now and then (a service sweeps customer after customer, and
        // each try may hold ingest back for a moment).
        if self.rewrite_tried.is_none_or(|t| t.elapsed() >= self.key_rewrite_retry) {
            self.rewrite_tried = Some(Instant::now());
            rewrite::settle(client, Duration::ZERO);
        }
        let Some(c) = Self::customer_id(client, customer)? else { return Ok(SweepReport::default()) };
        let cut = retention.cutoffs(now);
        let cuts = [nanos(cut.events_before), nanos(cut.objects_before)];
        let mut tx = client.transaction().op("starting a sweep")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&customer_lock(customer.as_str())])
            .op("locking the customer")?;
        let mut report = SweepReport::default();
        let counts: HashMap<(i16, i32), i64> = tx
            .query("SELECT class, day, records FROM record_counts WHERE customer = $1", &[&c])
            .op("reading record counts")?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        let tally = |class: i16, n: u64, report: &mut SweepReport| {
            if class == 0 {
                report.events += n;
            } else {
                report.objects += n;
            }
        };
        // Whole partitions past their class's cut-off: dropped.
        let mut dropped = Vec::new();
        for key in partition::list(&mut tx, Some(c))? {
            let cut = cuts[usize::from(key.1 == 1)];
            if (i64::from(key.2) + 1).saturating_mul(DAY_NS) <= cut {
                tally(key.1, counts.get(&(key.1, key.2)).copied().unwrap_or(0).max(0) as u64, &mut report);
                dropped.push(key);
            }
        }
        partition::drop_all(&mut tx, &dropped)?;
        if !dropped.is_empty() {
            // Engines that cached these partitions as existing look again.
            tx.execute("UPDATE key_generation SET n = n + 1", &[]).op("raising the key generation")?;
            let cls: Vec<i16> = dropped.iter().map(|k| k.1).collect();
            let ds: Vec<i32> = dropped.iter().map(|k| k.2).collect();
            tx.execute(
                "DELETE FROM record_counts WHERE customer = $1
                 AND (class, day) IN (SELECT * FROM unnest($2::smallint[], $3::integer[]))",
                &[&c, &cls, &ds],
            )
            .op("sweeping record counts")?;
            // Mentions of those days left in the default partition (by a
            // writer of an earlier version, which made no partition for
            // them): they go with their days.
            tx.execute(
                "DELETE FROM mentions_default WHERE customer = $1
                 AND (class, day) IN (SELECT * FROM unnest($2::smallint[], $3::integer[]))",
                &[&c, &cls, &ds],
            )
            .op("sweeping the default partition")?;
        }
        // The partition the cut-off falls in, and the default partition:
        // the expired rows only.
        for (class, cut) in [(0i16, cuts[0]), (1, cuts[1])] {
            let mut removed = places(
                &tx.query(
                    "DELETE FROM records WHERE customer = $1 AND class = $2 AND day = $3 AND recorded_at < $4
                     RETURNING class, day, id",
                    &[&c, &class, &day_of(cut), &cut],
                )
                .op("sweeping records")?,
            );
            removed.extend(places(
                &tx.query(
                    "DELETE FROM records_default WHERE customer = $1 AND class = $2 AND recorded_at < $3
                     RETURNING class, day, id",
                    &[&c, &class, &cut],
                )
                .op("sweeping the default partition")?,
            ));
            tally(class, removed.len() as u64, &mut report);
            forget_rows(&mut tx, c, &removed)?;
        }
        // Devices not seen for the inactivity delay: everything they sent.
        let inactive: Vec<i64> = tx
            .query(
                "SELECT id FROM devices WHERE customer = $1 AND last_seen < $2",
                &[&c, &nanos(cut.devices_seen_before)],
            )
            .op("finding inactive devices")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !inactive.is_empty() {
            let removed = places(
                &tx.query(
                    "DELETE FROM records WHERE customer = $1 AND device = ANY($2) RETURNING class, day, id",
                    &[&c, &inactive],
                )
                .op("purging devices")?,
            );
            report.inactive_device_records = removed.len() as u64;
            forget_rows(&mut tx, c, &removed)?;
            tx.execute("DELETE FROM streams WHERE device = ANY($1)", &[&inactive]).op("purging devices")?;
            report.devices =
                tx.execute("DELETE FROM devices WHERE id = ANY($1)", &[&inactive]).op("purging devices")?;
        }
        // Marks of streams unused for longer than the longest TTL: what
        // they numbered is gone by now (docs/STORAGE.md, "Sweeps").
        report.streams = tx
            .execute(
                "DELETE FROM streams WHERE device IN (SELECT id FROM devices WHERE customer = $1)
                 AND used_at < $2",
                &[&c, &nanos(cut.events_before.min(cut.objects_before))],
            )
            .op("sweeping unused streams")?;
        for table in ["binary_verdicts", "domain_verdicts"] {
            report.verdicts += tx
                .execute(
                    &format!("DELETE FROM {table} WHERE customer = $1 AND evaluated_at < $2"),
                    &[&c, &nanos(cut.objects_before)],
                )
                .op("sweeping verdicts")?;
        }
        tx.commit().op("committing a sweep")?;
        if !dropped.is_empty() {
            self.cache = Cache { generation: -1, ..Cache::default() };
        }
        Ok(report)
    }

    fn customers(&self) -> Result<Vec<CustomerId>> {
        self.client()
            .query("SELECT customer FROM customers ORDER BY customer", &[])
            .op("listing customers")?
            .iter()
            .map(|r| {
                CustomerId::new(r.get::<_, String>(0)).map_err(|e| Error::Database {
                    op: "listing customers",
                    message: format!("a stored customer id is not valid: {e}"),
                })
            })
            .collect()
    }

    fn export_person(&self, customer: &CustomerId, user: &UserId, out: &mut dyn Write) -> Result<u64> {
        let mut client = self.client();
        let Some(c) = Self::customer_id(&mut client, customer)? else { return Ok(0) };
        let mut tx = consistent_read(&mut client, "starting an export")?;
        let (all, _) = person(
            &mut tx,
            c,
            customer.as_str(),
            &self.secret,
            self.wrap.as_ref(),
            &self.secret.user(customer.as_str(), user),
        )?;
        let mut by_part: BTreeMap<(i16, i32), Vec<i64>> = BTreeMap::new();
        for (cl, d, id) in &all {
            by_part.entry((*cl, *d)).or_default().push(*id);
        }
        let mut rows = Vec::with_capacity(all.len());
        for ((cl, d), ids) in by_part {
            rows.extend(
                tx.query(
                    "SELECT id, stored_at, format, subjects, payload FROM records
                     WHERE customer = $1 AND class = $2 AND day = $3 AND id = ANY($4)",
                    &[&c, &cl, &d, &ids],
                )
                .op("reading records")?,
            );
        }
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        let mut subjects = Vec::with_capacity(rows.len());
        let mut wanted: BTreeSet<Digest> = BTreeSet::from([BASE]);
        for row in &rows {
            let id: i64 = row.get(0);
            let s =
                keys::decode_subjects(row.get(3)).map_err(|e| Error::Decode { id, reason: e.to_string() })?;
            wanted.extend(s.iter().map(|(_, d)| *d));
            subjects.push(s);
        }
        let ds: Vec<&[u8]> = wanted.iter().map(|d| &d[..]).collect();
        let have: HashMap<Digest, [u8; 32]> =
            read_keys(&mut tx, KEYS_OF, self.wrap.as_ref(), c, &ds)?.into_iter().collect();
        // Ended before a line is written: a slow reader of the export holds
        // no lock (a partition's creation or drop would wait for it, and
        // every writer behind that).
        tx.commit().op("ending an export")?;
        drop(client);
        let base = have.get(&BASE).copied().unwrap_or_default();
        let mut lines = 0;
        for (row, subjects) in rows.iter().zip(subjects) {
            let id: i64 = row.get(0);
            let record = open_record(id, row.get(2), &subjects, row.get(4), &base, &have)?;
            let stored_at = Timestamp::from_unix_nanos(i128::from(row.get::<_, i64>(1)))
                .map(|t| t.to_string())
                .unwrap_or_default();
            let line = serde_json::json!({
                "id": id,
                "stored_at": stored_at,
                "program": record.program.to_string(),
                "kind": record.body.kind_name(),
                "record": record,
            });
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
        let user_digest = self.secret.user(customer.as_str(), &request.user);
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tx = client.transaction().op("starting an erasure")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&customer_lock(customer.as_str())])
            .op("locking the customer")?;
        refuse_deleted(&mut tx, &self.secret, customer)?;
        let c: i32 = register_customer(&mut tx, customer.as_str())?;
        let (all, digests) =
            person(&mut tx, c, customer.as_str(), &self.secret, self.wrap.as_ref(), &user_digest)?;
        let all: Vec<Place> = all.into_iter().collect();
        let removed = delete_places(&mut tx, c, &all)?;
        // The keys their payloads were sealed under: gone, so the bytes the
        // deleted rows leave in the pages can no longer be opened.
        let mut gone: Vec<(Digest, u8)> = vec![(user_digest, MentionKind::User.code())];
        gone.extend(digests.iter().copied());
        let ds: Vec<&[u8]> = gone.iter().map(|(d, _)| &d[..]).collect();
        let ks: Vec<i16> = gone.iter().map(|(_, k)| i16::from(*k)).collect();
        tx.execute("DELETE FROM subject_keys WHERE customer = $1 AND digest = ANY($2)", &[&c, &ds])
            .op("destroying subject keys")?;
        tx.execute(
            "INSERT INTO suppressed (customer, digest, kind)
             SELECT $1, d, k FROM unnest($2::bytea[], $3::smallint[]) AS u(d, k) ON CONFLICT DO NOTHING",
            &[&c, &ds, &ks],
        )
        .op("suppressing a person")?;
        let pseudonyms = digests.iter().filter(|(_, k)| *k == MentionKind::Pseudonym.code()).count() as u64;
        let mut receipt = DeletionReceipt::new(
            request,
            now,
            (removed, pseudonyms, digests.len() as u64 - pseudonyms),
            &self.retention,
        );
        // The same request again (a re-run after a failure elsewhere): its
        // receipt counts what every run removed, not only the last.
        let row = tx
            .query_one(
                "INSERT INTO receipts (customer, request_id, requested_at, completed_at, records, pseudonyms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (customer, request_id) DO UPDATE SET
                     requested_at = least(receipts.requested_at, EXCLUDED.requested_at),
                     completed_at = EXCLUDED.completed_at,
                     records = receipts.records + EXCLUDED.records,
                     pseudonyms = greatest(receipts.pseudonyms, EXCLUDED.pseudonyms)
                 RETURNING records, pseudonyms",
                &[
                    &c,
                    &receipt.request_id,
                    &nanos(receipt.requested_at),
                    &nanos(now),
                    &(removed as i64),
                    &(pseudonyms as i64),
                ],
            )
            .op("writing the receipt")?;
        receipt.records_removed = row.get::<_, i64>(0).max(0) as u64;
        receipt.pseudonyms_suppressed = row.get::<_, i64>(1).max(0) as u64;
        tx.execute("UPDATE key_generation SET n = n + 1", &[]).op("raising the key generation")?;
        rewrite::mark_due(&mut tx)?;
        tx.commit().op("committing an erasure")?;
        self.cache = Cache { generation: -1, ..Cache::default() };
        // The deleted keys' bytes stay in the table's pages until they are
        // rewritten (the old file is emptied at the rewrite's commit and
        // removed at the next checkpoint). The person's records are gone
        // and suppressed already: a transaction that holds the table
        // longer than the wait (or an error) leaves the rewrite due.
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.rewrite_tried = Some(Instant::now());
        rewrite::settle(client, self.key_rewrite_wait);
        Ok(receipt)
    }

    fn record_verdicts(
        &mut self,
        customer: &CustomerId,
        binaries: &[BinaryVerdict],
        domains: &[DomainVerdict],
        now: Timestamp,
    ) -> Result<u64> {
        let client = self.client.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tx = client.transaction().op("starting a verdict write")?;
        // As ingest: a contract end (which takes the lock exclusively)
        // cannot run between the tombstone check and the commit, so no
        // verdict outlives its customer.
        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&customer_lock(customer.as_str())])
            .op("locking the customer")?;
        refuse_deleted(&mut tx, &self.secret, customer)?;
        let c: i32 = register_customer(&mut tx, customer.as_str())?;
        let mut n = 0;
        for v in binaries {
            n += tx
                .execute(
                    "INSERT INTO binary_verdicts (customer, sha256, verdict, evaluated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (customer, sha256) DO UPDATE SET verdict = $3, evaluated_at = $4",
                    &[&c, &&v.sha256.as_bytes()[..], &to_json(v)?, &nanos(now)],
                )
                .op("writing verdicts")?;
        }
        for v in domains {
            n += tx
                .execute(
                    "INSERT INTO domain_verdicts (customer, domain, verdict, evaluated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (customer, domain) DO UPDATE SET verdict = $3, evaluated_at = $4",
                    &[&c, &v.domain.as_str(), &to_json(v)?, &nanos(now)],
                )
                .op("writing verdicts")?;
        }
        tx.commit().op("committing verdicts")?;
        Ok(n)
    }

    fn binary_verdict(
        &self,
        customer: &CustomerId,
        sha256: &Sha256,
    ) -> Result<Option<StoredVerdict<BinaryVerdict>>> {
        self.verdict("binary_verdicts", "sha256", customer, &&sha256.as_bytes()[..])
    }

    fn domain_verdict(
        &self,
        customer: &CustomerId,
        domain: &Domain,
    ) -> Result<Option<StoredVerdict<DomainVerdict>>> {
        self.verdict("domain_verdicts", "domain", customer, &domain.as_str())
    }

    fn delete_customer(&mut self, customer: &CustomerId, now: Timestamp) -> Result<CustomerDeletion> {
        self.delete_customer_pg(customer, now)
    }

    fn export_customer(
        &self,
        customer: &CustomerId,
        manifest: &serde_json::Map<String, serde_json::Value>,
        out: &mut dyn Write,
    ) -> Result<CopyStats> {
        self.export_customer_pg(customer, manifest, out)
    }

    fn record_count(&self) -> Result<u64> {
        let n: i64 = self
            .client()
            .query_one("SELECT coalesce(sum(records), 0)::bigint FROM record_counts", &[])
            .op("counting records")?
            .get(0);
        Ok(n.max(0) as u64)
    }

    fn stream_count(&self, customer: &CustomerId, device: &DeviceId) -> Result<u64> {
        let n: i64 = self
            .client()
            .query_one(
                "SELECT count(*) FROM streams s JOIN devices d ON d.id = s.device
                 JOIN customers c ON c.id = d.customer WHERE c.customer = $1 AND d.device = $2",
                &[&customer.as_str(), &device.as_str()],
            )
            .op("counting streams")?
            .get(0);
        Ok(n.max(0) as u64)
    }

    fn record_count_of(&self, customer: &CustomerId) -> Result<u64> {
        let n: i64 = self
            .client()
            .query_one(
                "SELECT coalesce(sum(n.records), 0)::bigint FROM record_counts n
                 JOIN customers c ON c.id = n.customer WHERE c.customer = $1",
                &[&customer.as_str()],
            )
            .op("counting records")?
            .get(0);
        Ok(n.max(0) as u64)
    }
}

/// A read-only transaction that reads records and their keys as of one
/// instant: an erasure committing between the two reads would otherwise
/// leave a record read without its keys. The key table is locked (shared)
/// before the snapshot is taken, so a rewrite of it (`rewrite.rs`, whose
/// truncation a snapshot taken before it would see as an empty table)
/// waits for the read instead.
fn consistent_read<'a>(client: &'a mut Client, op: &'static str) -> Result<Transaction<'a>> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .op(op)?;
    tx.batch_execute("LOCK TABLE subject_keys IN ACCESS SHARE MODE").op(op)?;
    Ok(tx)
}

/// Opens a stored record: its payload is sealed under the key derived from
/// the customer's base key and the keys of all its subjects (`have`), so a
/// destroyed subject key leaves it unreadable.
fn open_record(
    id: i64,
    format: i16,
    subjects: &[(u8, Digest)],
    payload: &[u8],
    base: &[u8; 32],
    have: &HashMap<Digest, [u8; 32]>,
) -> Result<Record> {
    let mut ks = Vec::with_capacity(subjects.len());
    for (_, d) in subjects {
        ks.push(have.get(d).ok_or_else(|| Error::Decode {
            id,
            reason: "a subject key of the record is gone, expected every key of a stored record".into(),
        })?);
    }
    let key = keys::record_key(base, ks);
    unseal(id, i64::from(format), Some(RECORD_KEY_ID), payload, Some(&AtRestKey::new(RECORD_KEY_ID, key)))
}

//! The spool: a device's outbox of filtered records waiting to be sent.

use std::borrow::Borrow;
use std::path::Path;

use privtel_model::{ConsentSource, Program, Record, Timestamp};
use privtel_retention::{RecordClass, RetentionPolicy};
use rusqlite::{Connection, OptionalExtension as _, params};

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore as _;

use crate::codec::{AtRestKey, Format, nanos, program_code, record_time, seal, unseal};
use crate::error::{Context as _, Result};
use crate::schema::{self, Step};

/// Schema migrations of the spool, oldest first (wave 1, wave 2, then
/// [`V3`] and [`make_stream_id`]).
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE spool (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after deletes
        program INTEGER NOT NULL,
        class INTEGER NOT NULL,                 -- 0 event, 1 object
        recorded_at INTEGER NOT NULL,           -- unix ns, when retention starts
        size INTEGER NOT NULL,
        key_id INTEGER,
        payload BLOB NOT NULL
    );
    CREATE INDEX spool_program ON spool(program, seq);
    CREATE INDEX spool_time ON spool(class, recorded_at);
    CREATE TABLE spool_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
",
    "
    -- Where each source (a log file, …) was read up to, committed in the
    -- same transaction as the records read from it.
    CREATE TABLE sources (
        source TEXT PRIMARY KEY,
        identity BLOB NOT NULL,     -- what the source is (a file's device and inode)
        generation INTEGER NOT NULL, -- bumped on every rotation or truncation
        offset INTEGER NOT NULL,    -- bytes consumed
        line INTEGER NOT NULL       -- lines consumed
    );
",
];

/// Version 3: each row says how its payload is encoded (1: bincode, every
/// row written before; 2: JSON, every new row), and the spool has settings.
const V3: &str = "
    ALTER TABLE spool ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE spool_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Version 5: whom a record names and each person's consent. `subject` is
/// a keyed digest the caller computes from the person's id (the spool never
/// sees the id), so a withdrawn consent purges that person's waiting records
/// of the program; `consent` holds each person's choice per optional
/// program, with its source (1 installer, 2 settings, 3 administrator: the
/// codes of [`consent_source_code`]) and time.
const V5: &str = "
    ALTER TABLE spool ADD COLUMN subject BLOB;
    CREATE INDEX spool_subject ON spool(subject, program) WHERE subject IS NOT NULL;
    CREATE TABLE consent (
        subject BLOB NOT NULL,
        program INTEGER NOT NULL,
        granted INTEGER NOT NULL,
        source INTEGER NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (subject, program)
    ) WITHOUT ROWID;
";

/// The stored code of a consent source: written out, never a declaration
/// position.
fn consent_source_code(source: ConsentSource) -> Option<i64> {
    match source {
        ConsentSource::Installer => Some(1),
        ConsentSource::Settings => Some(2),
        ConsentSource::Administrator => Some(3),
        // `ConsentSource` may grow: a source this version does not know
        // cannot be stored by it.
        _ => None,
    }
}

fn consent_source_from(code: i64) -> Option<ConsentSource> {
    Some(match code {
        1 => ConsentSource::Installer,
        2 => ConsentSource::Settings,
        3 => ConsentSource::Administrator,
        _ => return None,
    })
}

/// Whom a spooled record names: a keyed digest of the person's id, made by
/// the caller under a key of its own, so the spool file names nobody in
/// clear and a withdrawn consent can still find the person's waiting
/// records ([`Spool::record_consent`], [`Spool::purge_subject`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subject([u8; 32]);

impl Subject {
    /// A subject from its 32 bytes (a keyed digest).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A digest of a person: short enough to tell two apart in a log,
        // too short to look one up.
        write!(f, "Subject({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A person's standing choice about one optional program.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct ConsentState {
    /// Given or withdrawn.
    pub granted: bool,
    /// Where it was made.
    pub source: ConsentSource,
    /// When.
    pub at: Timestamp,
}

impl ConsentState {
    /// A choice.
    pub fn new(granted: bool, source: ConsentSource, at: Timestamp) -> Self {
        Self { granted, source, at }
    }
}

/// What [`Spool::record_consent`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct ConsentChange {
    /// The consent record's sequence number, if one was appended.
    pub seq: Option<u64>,
    /// Waiting records of the person and program removed (a withdrawal).
    pub purged: u64,
}

/// Version 6: what the agent remembers between runs besides read
/// positions — processes already reported, when each binary was last
/// active and last evaluated, when each domain was last looked up — as
/// [`Mark`]s under opaque keys the agent derives (docs/COLLECTORS.md).
const V6: &str = "
    CREATE TABLE marks (
        scope TEXT NOT NULL,        -- what is marked ('process', 'binary', 'domain', ...)
        key BLOB NOT NULL,          -- opaque to the spool: the agent's keyed hash
        last_active INTEGER,        -- unix seconds; NULL when unknown
        last_evaluated INTEGER,     -- unix seconds; NULL when never
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
";

/// Version 4: the spool's stream id, random, nonzero, made once: the
/// service keeps a high-water mark per (customer, device, stream), so a new
/// spool (a reinstalled agent) starts a mark of its own rather than seeing
/// its records taken for duplicates of the old spool's.
fn make_stream_id(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let id = loop {
        let id = OsRng.next_u64();
        if id != 0 {
            break id;
        }
    };
    tx.execute("INSERT INTO spool_meta (name, value) VALUES ('stream_id', ?1)", [id as i64])
        .op("making the stream id")?;
    Ok(())
}

/// How far a source has been read: saved with the records read from it, in
/// one transaction, so a crash at any instant neither loses nor repeats what
/// it produced. The spool does not interpret it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct SourcePosition {
    /// The source's name (a path, as the collector names it).
    pub source: String,
    /// What the source is, opaque to the spool (a file's device and inode),
    /// so a reader can tell a replaced file from a grown one.
    pub identity: Vec<u8>,
    /// How many times the source was replaced or truncated: positions of
    /// different generations name different bytes.
    pub generation: u64,
    /// Bytes consumed.
    pub offset: u64,
    /// Lines consumed.
    pub line: u64,
}

impl SourcePosition {
    /// A position.
    pub fn new(
        source: impl Into<String>,
        identity: Vec<u8>,
        generation: u64,
        offset: u64,
        line: u64,
    ) -> Self {
        Self { source: source.into(), identity, generation, offset, line }
    }
}

/// What the spool remembers of one marked thing (a process, a binary, a
/// domain), saved with [`MarkChange`]s in the same transaction as the
/// records they concern ([`Spool::append_marked`]). Times are whole
/// seconds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct Mark {
    /// When it was last active (ran, was visited), if known.
    pub last_active: Option<Timestamp>,
    /// When it was last evaluated (looked up), if ever.
    pub last_evaluated: Option<Timestamp>,
}

/// A change to the spool's marks. A scope names a kind of mark
/// (`"process"`, `"binary"`); a key is opaque to the spool.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MarkChange {
    /// `key` was active at `at`; an earlier time already marked is
    /// replaced, a later one kept.
    Active {
        /// The kind of mark.
        scope: &'static str,
        /// The opaque key.
        key: Vec<u8>,
        /// When.
        at: Timestamp,
    },
    /// `key` was evaluated at `at`.
    Evaluated {
        /// The kind of mark.
        scope: &'static str,
        /// The opaque key.
        key: Vec<u8>,
        /// When.
        at: Timestamp,
    },
    /// Every mark of `scope` whose key is not in `keep` is forgotten (the
    /// processes no longer running).
    Retain {
        /// The kind of mark.
        scope: &'static str,
        /// The keys kept.
        keep: Vec<Vec<u8>>,
    },
    /// Every mark of `scope` neither active nor evaluated since `before`
    /// is forgotten.
    ForgetBefore {
        /// The kind of mark.
        scope: &'static str,
        /// The cut-off.
        before: Timestamp,
    },
}

/// Limits and retention of a spool.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SpoolOptions {
    /// Most records kept; beyond it the oldest are evicted (counted). Default
    /// 1,000,000: days of a busy device's telemetry, a few hundred MB.
    pub max_records: u64,
    /// Time to live of waiting records: the same as the service's, so data
    /// never outlives on the device what it would in the cloud.
    pub retention: RetentionPolicy,
    /// Seal payloads with this key (default none).
    pub key: Option<AtRestKey>,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self { max_records: 1_000_000, retention: RetentionPolicy::default(), key: None }
    }
}

/// Counts of records that left the spool without being sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct SpoolCounters {
    /// Expired under the TTL.
    pub expired: u64,
    /// Evicted by the size cap, oldest first.
    pub evicted: u64,
    /// Purged because their program's consent was withdrawn.
    pub purged: u64,
    /// Acknowledged by the service and removed.
    pub acknowledged: u64,
    /// Removed unsent because their program is switched off by the policy
    /// now in force ([`Spool::purge_switched_off`]).
    pub switched_off: u64,
    /// Removed unsent because one alone is larger than a batch the wire
    /// can ever carry ([`Spool::skip_too_large`]).
    pub too_large: u64,
    /// Times the spool moved to a new stream because the service held
    /// more of its stream than it ever sent ([`Spool::new_stream`]).
    pub new_streams: u64,
}

/// What [`Spool::next_run_within`] found at the head of the spool.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Run {
    /// Records of one program with consecutive sequence numbers, within
    /// the count and byte bounds asked (at least one record).
    Batch(Program, Vec<Spooled>),
    /// The oldest record alone is larger than the byte bound: it can never
    /// be sent in a batch of that bound. Nothing else was read.
    TooLarge {
        /// Its sequence number.
        seq: u64,
        /// Its program.
        program: Program,
        /// Its size as measured.
        size: u64,
    },
}

/// A record waiting in the spool, with its sequence number.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Spooled {
    /// The per-device sequence number `append` returned.
    pub seq: u64,
    /// The record.
    pub record: Record,
}

/// A device's durable outbox (SQLite, WAL, `synchronous = FULL`).
///
/// Every record gets a per-device sequence number, never reused; `append`
/// returns only once the record is on disk. Records leave only when the
/// service acknowledges them, when they expire, when the size cap evicts
/// them, or when their program's consent is withdrawn — and each of those is
/// counted.
///
/// ```
/// use privtel_store::{Domain, DomainVerdict, Program, Record, RecordBody, Spool, SpoolOptions, Timestamp};
///
/// let dir = tempfile::tempdir()?;
/// let mut spool = Spool::open(dir.path().join("spool.db"), SpoolOptions::default())?;
/// let now: Timestamp = "2026-11-27T10:00:00Z".parse()?;
/// let records: Vec<Record> = ["example.com", "example.org"]
///     .into_iter()
///     .map(|d| -> Result<Record, privtel_store::model::Error> {
///         let verdict = DomainVerdict::unknown(Domain::new(d)?);
///         Ok(Record { program: Program::Enrichment, body: RecordBody::DomainVerdict(verdict) })
///     })
///     .collect::<Result<_, _>>()?;
/// let seqs = spool.append_batch(&records, now)?;
/// let batch = spool.next_batch(Program::Enrichment, 100)?;
/// assert!(!batch.is_empty());
/// spool.ack(Program::Enrichment, batch.last().unwrap().seq)?;
/// assert!(spool.next_batch(Program::Enrichment, 100)?.is_empty());
/// assert_eq!(seqs.len(), records.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    options: SpoolOptions,
    stream_id: u64,
    /// Records were removed (acknowledged, evicted, skipped) since the log
    /// was last checkpointed and truncated: their payloads may still be in
    /// the log's frames and the file's pages until [`Spool::expire`]
    /// checkpoints. True on open: a process that stopped before its next
    /// maintenance may have left some.
    unsettled: bool,
}

impl Spool {
    /// Opens or creates the spool at `path`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Database`] if SQLite cannot open it;
    /// [`crate::Error::Schema`] if a newer version wrote it.
    pub fn open(path: impl AsRef<Path>, options: SpoolOptions) -> Result<Self> {
        let conn = schema::open(
            path.as_ref(),
            &[
                Step::Sql(MIGRATIONS[0]),
                Step::Sql(MIGRATIONS[1]),
                Step::Sql(V3),
                Step::Code(&make_stream_id),
                Step::Sql(V5),
                Step::Sql(V6),
            ],
        )?;
        // A device's spool is a queue, not an index to search: a small page
        // cache and no read mapping keep the agent's memory low (a mapped
        // page counts in its resident size). Measured with
        // `scripts/measure-agent.sh` (200,000 web-log lines and /usr/bin):
        // peak RSS 62.5 MiB with the engine's 64 MiB cache and 256 MiB
        // mapping, 25.0-25.4 MiB with these (docs/PERFORMANCE.md).
        conn.execute_batch("PRAGMA cache_size = -4096; PRAGMA mmap_size = 0;").op("configuring the spool")?;
        let stream_id: i64 = conn
            .query_row("SELECT value FROM spool_meta WHERE name = 'stream_id'", [], |r| r.get(0))
            .op("reading the stream id")?;
        Ok(Self { conn, options, stream_id: stream_id as u64, unsettled: true })
    }

    /// The key the spool seals its payloads with, if any.
    pub fn sealing_key(&self) -> Option<&AtRestKey> {
        self.options.key.as_ref()
    }

    /// The spool's stream id: random, nonzero, made once when the spool is
    /// created (or first opened by this version) and kept in it. Batches
    /// are sent with it; the service keeps one high-water mark per stream.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Appends one record; returns its sequence number once it is durable.
    ///
    /// # Errors
    ///
    /// A database or encoding error; nothing is appended then.
    pub fn append(&mut self, record: &Record, now: Timestamp) -> Result<u64> {
        Ok(self.append_batch(std::slice::from_ref(record), now)?[0])
    }

    /// Where `source` was read up to, if it was ever read.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn source_position(&self, source: &str) -> Result<Option<SourcePosition>> {
        self.conn
            .query_row(
                "SELECT identity, generation, offset, line FROM sources WHERE source = ?1",
                [source],
                |r| {
                    Ok(SourcePosition {
                        source: source.to_owned(),
                        identity: r.get(0)?,
                        generation: r.get::<_, i64>(1)? as u64,
                        offset: r.get::<_, i64>(2)? as u64,
                        line: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()
            .op("reading a source position")
    }

    /// The mark of `key` in `scope`, if any.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn mark(&self, scope: &str, key: &[u8]) -> Result<Option<Mark>> {
        self.conn
            .query_row(
                "SELECT last_active, last_evaluated FROM marks WHERE scope = ?1 AND key = ?2",
                params![scope, key],
                |r| Ok(Mark { last_active: seconds(r.get(0)?), last_evaluated: seconds(r.get(1)?) }),
            )
            .optional()
            .op("reading a mark")
    }

    /// Every mark of `scope`, by key.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn marks(&self, scope: &str) -> Result<Vec<(Vec<u8>, Mark)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, last_active, last_evaluated FROM marks WHERE scope = ?1")
            .op("reading marks")?;
        let rows = stmt
            .query_map([scope], |r| {
                Ok((r.get(0)?, Mark { last_active: seconds(r.get(1)?), last_evaluated: seconds(r.get(2)?) }))
            })
            .op("reading marks")?;
        rows.map(|r| r.op("reading marks")).collect()
    }

    /// Appends records in one transaction (one disk sync for all: the group
    /// commit that makes many small appends cheap); returns their sequence
    /// numbers, in order, once all are durable.
    ///
    /// # Errors
    ///
    /// A database or encoding error; nothing of the batch is appended then.
    pub fn append_batch<R: Borrow<Record>>(&mut self, records: &[R], now: Timestamp) -> Result<Vec<u64>> {
        self.append_at(records, None, now)
    }

    /// Appends records and, in the same transaction, saves how far their
    /// source was read: after a crash either both are on disk or neither
    /// is. Returns the records' sequence numbers once durable.
    ///
    /// # Errors
    ///
    /// A database or encoding error; nothing is appended and the position
    /// is unchanged then.
    pub fn append_at<R: Borrow<Record>>(
        &mut self,
        records: &[R],
        position: Option<&SourcePosition>,
        now: Timestamp,
    ) -> Result<Vec<u64>> {
        self.append_marked(records, position, &[], now)
    }

    /// Appends records, each with the person it names (if any), in one
    /// transaction; returns their sequence numbers once durable. A record
    /// filed under a [`Subject`] is removed when that person withdraws
    /// consent to its program ([`Spool::record_consent`]).
    ///
    /// # Errors
    ///
    /// A database or encoding error; nothing is appended then.
    pub fn append_for<R: Borrow<Record>>(
        &mut self,
        records: &[(R, Option<Subject>)],
        now: Timestamp,
    ) -> Result<Vec<u64>> {
        self.append_with(records.iter().map(|(r, s)| (r.borrow(), *s)), None, &[], now)
    }

    /// [`Spool::append_at`], also applying `changes` to the marks in the
    /// same transaction: a collector's state (the processes it reported,
    /// the binaries it saw run) is on disk exactly when the records it
    /// produced are.
    ///
    /// ```
    /// use privtel_store::{MarkChange, Spool, SpoolOptions, Timestamp};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut spool = Spool::open(dir.path().join("spool.db"), SpoolOptions::default())?;
    /// let now: Timestamp = "2026-11-27T10:00:00Z".parse()?;
    /// let seen = MarkChange::Active { scope: "binary", key: vec![1; 16], at: now };
    /// spool.append_marked::<privtel_store::Record>(&[], None, &[seen], now)?;
    /// assert_eq!(spool.mark("binary", &[1; 16])?.unwrap().last_active, Some(now));
    /// assert_eq!(spool.mark("binary", &[2; 16])?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A database or encoding error; nothing is appended, and neither the
    /// position nor any mark changes, then.
    pub fn append_marked<R: Borrow<Record>>(
        &mut self,
        records: &[R],
        position: Option<&SourcePosition>,
        changes: &[MarkChange],
        now: Timestamp,
    ) -> Result<Vec<u64>> {
        self.append_with(records.iter().map(|r| (r.borrow(), None)), position, changes, now)
    }

    fn append_with<'r>(
        &mut self,
        records: impl ExactSizeIterator<Item = (&'r Record, Option<Subject>)>,
        position: Option<&SourcePosition>,
        changes: &[MarkChange],
        now: Timestamp,
    ) -> Result<Vec<u64>> {
        let tx = self.conn.transaction().op("starting an append")?;
        let mut evicted = false;
        apply_marks(&tx, changes)?;
        let seqs = insert_records(&tx, self.options.key.as_ref(), records, now)?;
        if let Some(p) = position {
            tx.execute(
                "INSERT INTO sources (source, identity, generation, offset, line) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(source) DO UPDATE SET identity = ?2, generation = ?3, offset = ?4, line = ?5",
                params![
                    p.source,
                    p.identity,
                    i64::try_from(p.generation).unwrap_or(i64::MAX),
                    i64::try_from(p.offset).unwrap_or(i64::MAX),
                    i64::try_from(p.line).unwrap_or(i64::MAX)
                ],
            )
            .op("saving a source position")?;
        }
        // The size cap: evict oldest first, counted.
        let count: i64 =
            tx.query_row("SELECT count(*) FROM spool", [], |r| r.get(0)).op("counting the spool")?;
        let over = count - i64::try_from(self.options.max_records).unwrap_or(i64::MAX);
        if over > 0 {
            let n = tx
                .execute(
                    "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?1)",
                    [over],
                )
                .op("evicting the oldest records")?;
            bump(&tx, "evicted", n as u64)?;
            evicted = n > 0;
        }
        tx.commit().op("committing an append")?;
        self.unsettled |= evicted;
        Ok(seqs)
    }

    /// Up to `max` waiting records of `program`, oldest first.
    ///
    /// # Errors
    ///
    /// A database error, or a payload that does not decode or open.
    pub fn next_batch(&self, program: Program, max: usize) -> Result<Vec<Spooled>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, format, key_id, payload FROM spool WHERE program = ?1 ORDER BY seq LIMIT ?2",
            )
            .op("preparing a batch read")?;
        let rows = stmt
            .query_map(params![program_code(program), max as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<u32>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .op("reading a batch")?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, format, key_id, payload) = row.op("reading a batch")?;
            out.push(Spooled {
                seq: seq as u64,
                record: unseal(seq, format, key_id, &payload, self.options.key.as_ref())?,
            });
        }
        Ok(out)
    }

    /// The oldest waiting records that form one batch: in sequence order,
    /// all of the first record's program, with consecutive sequence numbers
    /// (so the batch can be sent as a first sequence number and records, and
    /// the service's high-water mark stays exact), at most `max`.
    ///
    /// # Errors
    ///
    /// A database error, or a payload that does not decode or open.
    pub fn next_run(&self, max: usize) -> Result<Option<(Program, Vec<Spooled>)>> {
        Ok(match self.next_run_within(max, u64::MAX, |_| 0)? {
            Some(Run::Batch(program, records)) => Some((program, records)),
            _ => None,
        })
    }

    /// [`Spool::next_run`], also bounded in bytes: the records' sizes, as
    /// `size` measures each (its encoded size on the wire), add up to at
    /// most `budget`. Records are decoded one at a time and reading stops
    /// at the first that does not fit, so at most one record beyond the
    /// budget is ever held, whatever `max`. When the oldest record alone
    /// is larger than `budget`, [`Run::TooLarge`] names it.
    ///
    /// # Errors
    ///
    /// A database error, or a payload that does not decode or open.
    pub fn next_run_within(
        &self,
        max: usize,
        budget: u64,
        size: impl Fn(&Record) -> u64,
    ) -> Result<Option<Run>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, program, format, key_id, payload FROM spool ORDER BY seq LIMIT ?1")
            .op("preparing a batch read")?;
        let mut rows = stmt.query([i64::try_from(max).unwrap_or(i64::MAX)]).op("reading a batch")?;
        let mut out: Vec<Spooled> = Vec::new();
        let mut program = None;
        let mut total = 0u64;
        while let Some(row) = rows.next().op("reading a batch")? {
            let seq: i64 = row.get(0).op("reading a batch")?;
            let code: i64 = row.get(1).op("reading a batch")?;
            if program.is_some_and(|p| p != code) || out.last().is_some_and(|last| last.seq + 1 != seq as u64)
            {
                break;
            }
            let format: i64 = row.get(2).op("reading a batch")?;
            let key_id: Option<u32> = row.get(3).op("reading a batch")?;
            let payload: Vec<u8> = row.get(4).op("reading a batch")?;
            let record = unseal(seq, format, key_id, &payload, self.options.key.as_ref())?;
            drop(payload);
            let len = size(&record);
            if total.saturating_add(len) > budget {
                if out.is_empty() {
                    return Ok(Some(Run::TooLarge { seq: seq as u64, program: record.program, size: len }));
                }
                break;
            }
            total = total.saturating_add(len);
            program = Some(code);
            out.push(Spooled { seq: seq as u64, record });
        }
        Ok(out.first().map(|first| first.record.program).map(|p| Run::Batch(p, out)))
    }

    /// Removes the record `seq`, unsent, because alone it is larger than
    /// any batch can be ([`Run::TooLarge`]); counted as `too_large`.
    /// Returns whether it was there.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn skip_too_large(&mut self, seq: u64) -> Result<bool> {
        let tx = self.conn.transaction().op("starting a removal")?;
        let n = tx
            .execute("DELETE FROM spool WHERE seq = ?1", [i64::try_from(seq).unwrap_or(i64::MAX)])
            .op("removing a record too large to send")? as u64;
        bump(&tx, "too_large", n)?;
        tx.commit().op("committing a removal")?;
        self.unsettled |= n > 0;
        Ok(n > 0)
    }

    /// Removes every waiting record of the programs in `off` (switched off
    /// by the policy now in force: nothing of them may leave), counted as
    /// `switched_off`; checkpoints when any went, so their payloads leave
    /// the file and its log. Returns how many went.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn purge_switched_off(&mut self, off: &[Program]) -> Result<u64> {
        if off.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction().op("starting a purge")?;
        let mut n = 0;
        for program in off {
            n += tx
                .execute("DELETE FROM spool WHERE program = ?1", [program_code(*program)])
                .op("purging a program switched off")? as u64;
        }
        bump(&tx, "switched_off", n)?;
        tx.commit().op("committing a purge")?;
        if n > 0 {
            schema::checkpoint(&self.conn, "checkpointing after a purge")?;
        }
        Ok(n)
    }

    /// Moves the spool to a new stream: a new random stream id, and the
    /// waiting records renumbered 1, 2, 3, ... in their order, in one
    /// transaction. For a spool whose numbering is behind what the service
    /// holds of its stream (restored from an older copy: a snapshot
    /// reverted, a backup put back), whose new records would otherwise get
    /// sequence numbers the service already has. Nothing is removed; what
    /// was sent is forgotten ([`Spool::sent_up_to`] is 0 again); counted
    /// as `new_streams`. Returns the new stream id.
    ///
    /// # Errors
    ///
    /// A database error; nothing changes then.
    pub fn new_stream(&mut self) -> Result<u64> {
        let old = self.stream_id;
        let tx = self.conn.transaction().op("starting a new stream")?;
        let id = loop {
            let id = OsRng.next_u64();
            if id != 0 && id != old {
                break id;
            }
        };
        tx.execute("UPDATE spool_meta SET value = ?1 WHERE name = 'stream_id'", [id as i64])
            .op("saving the new stream id")?;
        let seqs: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT seq FROM spool ORDER BY seq").op("listing the spool")?;
            let rows = stmt.query_map([], |r| r.get(0)).op("listing the spool")?;
            rows.collect::<std::result::Result<_, _>>().op("listing the spool")?
        };
        {
            // In ascending order each new number is at most the old one
            // and every smaller number is already moved: no collision.
            let mut renumber =
                tx.prepare("UPDATE spool SET seq = ?1 WHERE seq = ?2").op("renumbering the spool")?;
            for (new, old) in (1i64..).zip(&seqs) {
                if new != *old {
                    renumber.execute([new, *old]).op("renumbering the spool")?;
                }
            }
        }
        tx.execute("UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'spool'", [seqs.len() as i64])
            .op("renumbering the spool")?;
        tx.execute("DELETE FROM spool_counters WHERE name = 'sent_up_to'", [])
            .op("forgetting what was sent")?;
        bump(&tx, "new_streams", 1)?;
        tx.commit().op("committing a new stream")?;
        self.stream_id = id;
        Ok(id)
    }

    /// Removes the records of `program` up to and including `up_to` (what the
    /// service acknowledged). Returns how many were removed.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn ack(&mut self, program: Program, up_to: u64) -> Result<u64> {
        let tx = self.conn.transaction().op("starting an acknowledgement")?;
        let n = tx
            .execute(
                "DELETE FROM spool WHERE program = ?1 AND seq <= ?2",
                params![program_code(program), up_to as i64],
            )
            .op("removing acknowledged records")? as u64;
        bump(&tx, "acknowledged", n)?;
        tx.commit().op("committing an acknowledgement")?;
        // Not checkpointed here (an upload acknowledges batch after batch);
        // the next `expire`, every cycle of the agent, does it.
        self.unsettled |= n > 0;
        Ok(n)
    }

    /// Removes every record past its time to live at `now`; returns how
    /// many. When anything expired, or records were removed otherwise since
    /// the last checkpoint (acknowledged, evicted, skipped as too large; or
    /// the spool was just opened), the write-ahead log is checkpointed and
    /// truncated, so the removed payloads are gone from the spool file and
    /// its log (deleted pages are zeroed: `secure_delete`). The agent calls
    /// this every cycle (`Agent::maintain`): an acknowledged record leaves
    /// the files by the next cycle, not once 256 MiB of log were written.
    ///
    /// # Errors
    ///
    /// A database error; [`crate::Error::CheckpointBusy`] when records
    /// expired and another connection's read kept the log from being
    /// truncated. A checkpoint owed only for earlier removals that finds the
    /// log busy is tried again at the next call.
    pub fn expire(&mut self, now: Timestamp) -> Result<u64> {
        let cut = self.options.retention.cutoffs(now);
        let tx = self.conn.transaction().op("starting an expiry")?;
        let n = tx
            .execute(
                "DELETE FROM spool WHERE (class = 0 AND recorded_at < ?1) OR (class = 1 AND recorded_at < ?2)",
                params![nanos(cut.events_before), nanos(cut.objects_before)],
            )
            .op("expiring records")? as u64;
        bump(&tx, "expired", n)?;
        tx.commit().op("committing an expiry")?;
        if n > 0 {
            schema::checkpoint(&self.conn, "checkpointing after an expiry")?;
            self.unsettled = false;
        } else if self.unsettled {
            self.unsettled = !schema::try_checkpoint(&self.conn, "checkpointing after removals")?;
        }
        Ok(n)
    }

    /// Withdrawn consent: removes every waiting record of `program` at once;
    /// returns how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn purge_program(&mut self, program: Program) -> Result<u64> {
        let tx = self.conn.transaction().op("starting a purge")?;
        let n = tx
            .execute("DELETE FROM spool WHERE program = ?1", [program_code(program)])
            .op("purging a program")? as u64;
        bump(&tx, "purged", n)?;
        tx.commit().op("committing a purge")?;
        // Purged data must not linger in the write-ahead log either.
        schema::checkpoint(&self.conn, "checkpointing after a purge")?;
        Ok(n)
    }

    /// The person's standing choice about `program`, if one was recorded.
    ///
    /// # Errors
    ///
    /// A database error, or a stored source this version does not know.
    pub fn consent(&self, subject: &Subject, program: Program) -> Result<Option<ConsentState>> {
        let row: Option<(i64, i64, i64)> = self
            .conn
            .query_row(
                "SELECT granted, source, at FROM consent WHERE subject = ?1 AND program = ?2",
                params![&subject.0[..], program_code(program)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .op("reading a consent")?;
        let Some((granted, source, at)) = row else { return Ok(None) };
        let source = consent_source_from(source).ok_or_else(|| crate::Error::Corrupt {
            what: "consent",
            reason: format!(
                "source code {source} is not one of 1 (installer), 2 (settings), 3 (administrator)"
            ),
        })?;
        let at = Timestamp::from_unix_nanos(i128::from(at))
            .map_err(|_| crate::Error::Corrupt { what: "consent", reason: "time out of range".to_owned() })?;
        Ok(Some(ConsentState { granted: granted != 0, source, at }))
    }

    /// Records a person's choice about `program` and, in the same
    /// transaction, appends `record` (the consent record that travels with
    /// the data, filed under the person) if given; a withdrawal also
    /// removes every waiting record of the person and program (counted as
    /// purged) in that transaction, then checkpoints, so the removed
    /// payloads leave the file and its log. Either all of it is on disk or
    /// none.
    ///
    /// # Errors
    ///
    /// A database or encoding error; nothing changes then.
    pub fn record_consent(
        &mut self,
        subject: &Subject,
        program: Program,
        state: ConsentState,
        record: Option<&Record>,
        now: Timestamp,
    ) -> Result<ConsentChange> {
        let source = consent_source_code(state.source).ok_or_else(|| crate::Error::Corrupt {
            what: "consent",
            reason: "a source this version has no stored code for".to_owned(),
        })?;
        let tx = self.conn.transaction().op("starting a consent change")?;
        tx.execute(
            "INSERT INTO consent (subject, program, granted, source, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(subject, program) DO UPDATE SET granted = ?3, source = ?4, at = ?5",
            params![&subject.0[..], program_code(program), i64::from(state.granted), source, nanos(state.at)],
        )
        .op("saving a consent")?;
        let purged = if state.granted { 0 } else { delete_subject(&tx, subject, program)? };
        let seq = match record {
            Some(r) => {
                insert_records(&tx, self.options.key.as_ref(), std::iter::once((r, Some(*subject))), now)?
                    .first()
                    .copied()
            }
            None => None,
        };
        tx.commit().op("committing a consent change")?;
        if purged > 0 {
            schema::checkpoint(&self.conn, "checkpointing after a withdrawal")?;
        }
        Ok(ConsentChange { seq, purged })
    }

    /// Removes every waiting record of `program` filed under `subject`
    /// (a withdrawal recorded in another spool); returns how many, and
    /// checkpoints when any went.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn purge_subject(&mut self, subject: &Subject, program: Program) -> Result<u64> {
        let tx = self.conn.transaction().op("starting a purge")?;
        let n = delete_subject(&tx, subject, program)?;
        tx.commit().op("committing a purge")?;
        if n > 0 {
            schema::checkpoint(&self.conn, "checkpointing after a purge")?;
        }
        Ok(n)
    }

    /// Records waiting, per program or in all.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn len(&self, program: Option<Program>) -> Result<u64> {
        let n: i64 = match program {
            Some(p) => {
                self.conn.query_row("SELECT count(*) FROM spool WHERE program = ?1", [program_code(p)], |r| {
                    r.get(0)
                })
            }
            None => self.conn.query_row("SELECT count(*) FROM spool", [], |r| r.get(0)),
        }
        .op("counting the spool")?;
        Ok(n as u64)
    }

    /// Records that the highest sequence number ever handed to the wire is
    /// at least `seq` (durable). An acknowledgement can then be bounded by
    /// what was really sent: a service's high-water mark above it (a spool
    /// made anew, a service that lies) removes nothing that never left.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn mark_sent(&mut self, seq: u64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO spool_counters (name, value) VALUES ('sent_up_to', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = max(value, ?1)",
                [i64::try_from(seq).unwrap_or(i64::MAX)],
            )
            .op("recording what was sent")?;
        Ok(())
    }

    /// The highest sequence number ever handed to the wire (0 if none).
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn sent_up_to(&self) -> Result<u64> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM spool_counters WHERE name = 'sent_up_to'", [], |r| r.get(0))
            .optional()
            .op("reading what was sent")?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// What left the spool without being sent, and what was acknowledged,
    /// since the spool was created.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn counters(&self) -> Result<SpoolCounters> {
        let get = |name: &str| -> Result<u64> {
            let v: Option<i64> = self
                .conn
                .query_row("SELECT value FROM spool_counters WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .op("reading counters")?;
            Ok(v.unwrap_or(0) as u64)
        };
        Ok(SpoolCounters {
            expired: get("expired")?,
            evicted: get("evicted")?,
            purged: get("purged")?,
            acknowledged: get("acknowledged")?,
            switched_off: get("switched_off")?,
            too_large: get("too_large")?,
            new_streams: get("new_streams")?,
        })
    }

    /// Every sequence number in the spool, ascending (for recovery checks).
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn all_seqs(&self) -> Result<Vec<u64>> {
        let mut stmt = self.conn.prepare("SELECT seq FROM spool ORDER BY seq").op("listing the spool")?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).op("listing the spool")?;
        rows.map(|r| r.map(|s| s as u64).op("listing the spool")).collect()
    }

    /// `PRAGMA integrity_check`: `"ok"` when the file is sound.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn integrity_check(&self) -> Result<String> {
        self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).op("checking integrity")
    }
}

/// Inserts records, each with the person it names, in `tx`; returns their
/// sequence numbers.
fn insert_records<'r>(
    tx: &rusqlite::Transaction<'_>,
    key: Option<&AtRestKey>,
    records: impl ExactSizeIterator<Item = (&'r Record, Option<Subject>)>,
    now: Timestamp,
) -> Result<Vec<u64>> {
    let mut seqs = Vec::with_capacity(records.len());
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO spool (program, class, recorded_at, size, format, key_id, payload, subject) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .op("preparing an append")?;
    for (record, subject) in records {
        let (key_id, payload) = seal(record, key)?;
        let class = i64::from(RecordClass::of(&record.body) == RecordClass::Object);
        insert
            .execute(params![
                program_code(record.program),
                class,
                nanos(record_time(record, now)),
                payload.len() as i64,
                Format::CURRENT.code(),
                key_id,
                payload,
                subject.as_ref().map(|s| &s.0[..])
            ])
            .op("appending a record")?;
        seqs.push(tx.last_insert_rowid() as u64);
    }
    Ok(seqs)
}

/// Deletes the waiting records of `program` filed under `subject`, counted
/// as purged.
fn delete_subject(tx: &rusqlite::Transaction<'_>, subject: &Subject, program: Program) -> Result<u64> {
    let n = tx
        .execute(
            "DELETE FROM spool WHERE subject = ?1 AND program = ?2",
            params![&subject.0[..], program_code(program)],
        )
        .op("purging a person's records")? as u64;
    bump(tx, "purged", n)?;
    Ok(n)
}

fn bump(tx: &rusqlite::Transaction<'_>, name: &str, n: u64) -> Result<()> {
    if n > 0 {
        tx.execute(
            "INSERT INTO spool_counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
            params![name, n as i64],
        )
        .op("updating counters")?;
    }
    Ok(())
}

/// A time read back from a mark (whole seconds).
fn seconds(v: Option<i64>) -> Option<Timestamp> {
    v.and_then(|s| Timestamp::from_unix_seconds(s).ok())
}

/// Applies mark changes inside an append's transaction.
fn apply_marks(tx: &rusqlite::Transaction<'_>, changes: &[MarkChange]) -> Result<()> {
    for change in changes {
        match change {
            MarkChange::Active { scope, key, at } => {
                tx.execute(
                    "INSERT INTO marks (scope, key, last_active) VALUES (?1, ?2, ?3)
                     ON CONFLICT(scope, key) DO UPDATE SET last_active = max(coalesce(last_active, ?3), ?3)",
                    params![scope, key, at.unix_seconds()],
                )
                .op("marking an activity")?;
            }
            MarkChange::Evaluated { scope, key, at } => {
                tx.execute(
                    "INSERT INTO marks (scope, key, last_evaluated) VALUES (?1, ?2, ?3)
                     ON CONFLICT(scope, key) DO UPDATE SET last_evaluated = ?3",
                    params![scope, key, at.unix_seconds()],
                )
                .op("marking an evaluation")?;
            }
            MarkChange::Retain { scope, keep } => {
                let keep: std::collections::HashSet<&[u8]> = keep.iter().map(Vec::as_slice).collect();
                let keys: Vec<Vec<u8>> = {
                    let mut stmt =
                        tx.prepare_cached("SELECT key FROM marks WHERE scope = ?1").op("reading marks")?;
                    let rows = stmt.query_map([scope], |r| r.get(0)).op("reading marks")?;
                    rows.collect::<std::result::Result<_, _>>().op("reading marks")?
                };
                let mut delete = tx
                    .prepare_cached("DELETE FROM marks WHERE scope = ?1 AND key = ?2")
                    .op("forgetting a mark")?;
                for key in keys.iter().filter(|k| !keep.contains(k.as_slice())) {
                    delete.execute(params![scope, key]).op("forgetting a mark")?;
                }
            }
            MarkChange::ForgetBefore { scope, before } => {
                tx.execute(
                    "DELETE FROM marks WHERE scope = ?1 AND max(coalesce(last_active, 0), coalesce(last_evaluated, 0)) < ?2",
                    params![scope, before.unix_seconds()],
                )
                .op("forgetting old marks")?;
            }
        }
    }
    Ok(())
}

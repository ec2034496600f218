//! The engine store: the service's events and objects, with idempotent
//! ingest, retention sweeps, and export and erasure of one person.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use privtel_model::{DeviceId, Record, Timestamp, UserId, VisitPersonal};
use privtel_retention::{RecordClass, RetentionPolicy};
use rusqlite::{Connection, OptionalExtension as _, params, params_from_iter};
use serde::Serialize;

use crate::codec::{AtRestKey, nanos, open, program_code, record_time, seal};
use crate::error::{Context as _, Error, Result};
use crate::schema;

/// Schema migrations of the engine store, oldest first.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        device INTEGER NOT NULL,         -- devices.id: integer keys keep the
        user INTEGER,                    -- indexes small and compares cheap
        class INTEGER NOT NULL,          -- 0 event, 1 object
        kind TEXT NOT NULL,
        program INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,    -- unix ns, when retention starts
        stored_at INTEGER NOT NULL,      -- unix ns
        key_id INTEGER,
        payload BLOB NOT NULL
    );
    CREATE INDEX records_time ON records(class, recorded_at);
    CREATE INDEX records_device ON records(device);
    CREATE INDEX records_user ON records(user);
    -- Pseudonyms carried by each record (key id + token), so erasure finds
    -- records that name a person only by pseudonym.
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
", "
    -- An event's id (its low 64 bits), unique per device: a replay of
    -- events already held (an old spool, a source read again) is stored
    -- once. An integer key, not the 16-byte id: with the blob, ingest of
    -- 2 M rows ran 19 % slower and a sweep of 1 M rows 55 % slower than
    -- without the index; with the integer, 6 % and none (store bench).
    -- Two different events of one device share 64 bits with a chance of
    -- about n^2 / 2^65 for n events held (3e-8 for a million).
    ALTER TABLE records ADD COLUMN event_id INTEGER;
    CREATE UNIQUE INDEX records_event ON records(device, event_id) WHERE event_id IS NOT NULL;
"];

/// What one ingest did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct IngestOutcome {
    /// Records stored.
    pub stored: u64,
    /// Records at or below the device's high-water mark (a retry), or
    /// events whose id the device already stored (a replay): ignored.
    pub duplicates: u64,
    /// Records of an erased person, dropped.
    pub suppressed: u64,
    /// The device's high-water mark after the ingest.
    pub high_water: u64,
}

/// What one sweep removed, by class.
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
}

/// A request to erase one person's data.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ErasureRequest {
    /// The administrator's reference for the request (not personal).
    pub request_id: String,
    /// The person.
    pub user: UserId,
    /// When it was asked for.
    pub requested_at: Timestamp,
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
    /// Whether it was done after the erasure deadline.
    pub overdue: bool,
}

/// The operations of an engine store, behind one trait so that a backend on
/// a distributed database can be added without touching callers.
pub trait EngineStore {
    /// Stores a device's batch whose first record has sequence number
    /// `first_seq`: records at or below the device's high-water mark are
    /// ignored (a retried batch is stored once), and so is an event whose
    /// id the device already stored (a replay under new sequence numbers);
    /// records of erased people are dropped.
    ///
    /// # Errors
    ///
    /// A storage error; nothing of the batch is stored then.
    fn ingest(
        &mut self,
        device: &DeviceId,
        first_seq: u64,
        records: Vec<Record>,
        now: Timestamp,
    ) -> Result<IngestOutcome>;

    /// Removes what the retention policy expires at `now`.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn sweep(&mut self, now: Timestamp) -> Result<SweepReport>;

    /// Writes everything held about `user` as JSON Lines (the right of
    /// access); returns the number of lines. Format: one object per record,
    /// `{"id", "stored_at", "program", "kind", "record"}`, with `record` in
    /// the model's JSON form.
    ///
    /// # Errors
    ///
    /// A storage error or a write error.
    fn export_person(&self, user: &UserId, out: &mut dyn Write) -> Result<u64>;

    /// Removes every record that references the person, by id or by any
    /// pseudonym their records carry, suppresses later ingest of them, and
    /// returns a receipt.
    ///
    /// # Errors
    ///
    /// A storage error; nothing is removed then.
    fn erase_person(&mut self, request: &ErasureRequest, now: Timestamp) -> Result<DeletionReceipt>;

    /// A device's high-water mark (0 when unknown).
    ///
    /// # Errors
    ///
    /// A storage error.
    fn high_water(&self, device: &DeviceId) -> Result<u64>;

    /// Records held, in all.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn record_count(&self) -> Result<u64>;
}

/// The engine store on one SQLite file.
#[derive(Debug)]
pub struct SqliteEngine {
    conn: Connection,
    retention: RetentionPolicy,
    key: Option<AtRestKey>,
    /// The suppression lists, mirrored in memory: erasures are rare and the
    /// lists small, and ingest checks every record against them.
    suppressed_users: HashSet<String>,
    /// `users` rows, mirrored in memory (committed ones only), so ingest
    /// does not look every user up.
    user_ids: HashMap<String, i64>,
    suppressed_tokens: HashSet<Vec<u8>>,
}

/// The pseudonyms a record carries, as key id + token bytes.
fn tokens_of(record: &mut Record) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    record.visit_personal(&mut |f| {
        if let Some(p) = f.value.pseudonym() {
            let mut t = p.key_id().get().to_le_bytes().to_vec();
            t.extend_from_slice(p.token());
            out.push(t);
        }
    });
    out
}

impl SqliteEngine {
    /// Opens or creates the store at `path`, sealing new payloads with `key`
    /// if given.
    ///
    /// # Errors
    ///
    /// A database or schema error.
    pub fn open(path: &Path, retention: RetentionPolicy, key: Option<AtRestKey>) -> Result<Self> {
        let conn = schema::open(path, MIGRATIONS)?;
        let suppressed_users = load(&conn, "SELECT user FROM suppressed_users", |r| r.get(0))?;
        let suppressed_tokens = load(&conn, "SELECT token FROM suppressed_tokens", |r| r.get(0))?;
        let user_ids = load(&conn, "SELECT user, id FROM users", |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(Self { conn, retention, key, suppressed_users, suppressed_tokens, user_ids })
    }

    /// Ids of the records about `user`, directly or through a pseudonym
    /// their records carry; and those pseudonyms.
    fn person(&self, user: &UserId) -> Result<(Vec<i64>, Vec<Vec<u8>>)> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM records WHERE user = (SELECT id FROM users WHERE user = ?1)")
            .op("finding a person")?;
        let direct: Vec<i64> = stmt
            .query_map([user.as_str()], |r| r.get(0))
            .op("finding a person")?
            .collect::<rusqlite::Result<_>>()
            .op("finding a person")?;
        let mut tokens = BTreeSet::new();
        let mut tok = self
            .conn
            .prepare_cached("SELECT token FROM tokens WHERE record_id = ?1")
            .op("reading pseudonyms")?;
        for id in &direct {
            for t in tok.query_map([id], |r| r.get::<_, Vec<u8>>(0)).op("reading pseudonyms")? {
                tokens.insert(t.op("reading pseudonyms")?);
            }
        }
        let mut ids: BTreeSet<i64> = direct.into_iter().collect();
        let mut by_token = self
            .conn
            .prepare_cached("SELECT record_id FROM tokens WHERE token = ?1")
            .op("finding pseudonyms")?;
        for t in &tokens {
            for id in by_token.query_map([t], |r| r.get::<_, i64>(0)).op("finding pseudonyms")? {
                ids.insert(id.op("finding pseudonyms")?);
            }
        }
        Ok((ids.into_iter().collect(), tokens.into_iter().collect()))
    }
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

impl EngineStore for SqliteEngine {
    fn ingest(
        &mut self,
        device: &DeviceId,
        first_seq: u64,
        records: Vec<Record>,
        now: Timestamp,
    ) -> Result<IngestOutcome> {
        let tx = self.conn.transaction().op("starting an ingest")?;
        tx.execute(
            "INSERT INTO devices (device, last_seen, high_water) VALUES (?1, ?2, 0) ON CONFLICT(device) DO NOTHING",
            params![device.as_str(), nanos(now)],
        )
        .op("registering the device")?;
        let (device_id, high_water): (i64, i64) = tx
            .query_row("SELECT id, high_water FROM devices WHERE device = ?1", [device.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .op("reading the high-water mark")?;
        let high_water = high_water as u64;
        // Users first seen in this batch: merged into the cache only once
        // the transaction commits.
        let mut new_users: HashMap<String, i64> = HashMap::new();
        let mut outcome = IngestOutcome { high_water, ..IngestOutcome::default() };
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO records (device, user, class, kind, program, recorded_at, stored_at, key_id, payload, event_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT(device, event_id) WHERE event_id IS NOT NULL DO NOTHING",
                )
                .op("preparing an ingest")?;
            let mut insert_token = tx
                .prepare_cached("INSERT OR IGNORE INTO tokens (token, record_id) VALUES (?1, ?2)")
                .op("preparing an ingest")?;
            let mut insert_user =
                tx.prepare_cached("INSERT INTO users (user) VALUES (?1)").op("preparing an ingest")?;
            for (i, mut record) in records.into_iter().enumerate() {
                let seq = first_seq.saturating_add(i as u64);
                if seq <= high_water {
                    outcome.duplicates += 1;
                    continue;
                }
                outcome.high_water = outcome.high_water.max(seq);
                // Visiting needs `&mut` but changes nothing: the record is
                // owned here, so no copy is made for it.
                let tokens = tokens_of(&mut record);
                let user = record.body.user().map(UserId::as_str);
                let erased = user.is_some_and(|u| self.suppressed_users.contains(u))
                    || tokens.iter().any(|t| self.suppressed_tokens.contains(t));
                if erased {
                    outcome.suppressed += 1;
                    continue;
                }
                let user_id = match user {
                    None => None,
                    Some(u) => match self.user_ids.get(u).or_else(|| new_users.get(u)) {
                        Some(id) => Some(*id),
                        None => {
                            insert_user.execute([u]).op("registering a user")?;
                            let id = tx.last_insert_rowid();
                            new_users.insert(u.to_owned(), id);
                            Some(id)
                        }
                    },
                };
                let (key_id, payload) = seal(&record, self.key.as_ref())?;
                let class = i64::from(RecordClass::of(&record.body) == RecordClass::Object);
                let event_id = match &record.body {
                    privtel_model::RecordBody::Event(e) => Some(e.id.as_u128() as u64 as i64),
                    _ => None,
                };
                let inserted = insert
                    .execute(params![
                        // Filed under the device that sent it: the inactivity
                        // purge removes everything a device sent.
                        device_id,
                        user_id,
                        class,
                        record.body.kind_name(),
                        program_code(record.program),
                        nanos(record_time(&record, now)),
                        nanos(now),
                        key_id,
                        payload,
                        event_id
                    ])
                    .op("storing a record")?;
                if inserted == 0 {
                    // The device already holds this event.
                    outcome.duplicates += 1;
                    continue;
                }
                let id = tx.last_insert_rowid();
                for t in &tokens {
                    insert_token.execute(params![t, id]).op("storing pseudonyms")?;
                }
                outcome.stored += 1;
            }
        }
        tx.execute(
            "UPDATE devices SET last_seen = max(last_seen, ?2), high_water = max(high_water, ?3) WHERE id = ?1",
            params![device_id, nanos(now), outcome.high_water as i64],
        )
        .op("updating the device")?;
        tx.commit().op("committing an ingest")?;
        self.user_ids.extend(new_users);
        Ok(outcome)
    }

    fn sweep(&mut self, now: Timestamp) -> Result<SweepReport> {
        let cut = self.retention.cutoffs(now);
        let tx = self.conn.transaction().op("starting a sweep")?;
        let mut report = SweepReport::default();
        for (class, before, count) in
            [(0, cut.events_before, &mut report.events), (1, cut.objects_before, &mut report.objects)]
        {
            tx.execute(
                "DELETE FROM tokens WHERE record_id IN (SELECT id FROM records WHERE class = ?1 AND recorded_at < ?2)",
                params![class, nanos(before)],
            )
            .op("sweeping pseudonyms")?;
            *count = tx
                .execute(
                    "DELETE FROM records WHERE class = ?1 AND recorded_at < ?2",
                    params![class, nanos(before)],
                )
                .op("sweeping records")? as u64;
        }
        let inactive: Vec<i64> = {
            let mut stmt =
                tx.prepare("SELECT id FROM devices WHERE last_seen < ?1").op("finding inactive devices")?;
            stmt.query_map([nanos(cut.devices_seen_before)], |r| r.get(0))
                .op("finding inactive devices")?
                .collect::<rusqlite::Result<_>>()
                .op("finding inactive devices")?
        };
        for device in &inactive {
            tx.execute(
                "DELETE FROM tokens WHERE record_id IN (SELECT id FROM records WHERE device = ?1)",
                [device],
            )
            .op("purging a device")?;
            report.inactive_device_records +=
                tx.execute("DELETE FROM records WHERE device = ?1", [device]).op("purging a device")? as u64;
            tx.execute("DELETE FROM devices WHERE id = ?1", [device]).op("purging a device")?;
            report.devices += 1;
        }
        tx.commit().op("committing a sweep")?;
        Ok(report)
    }

    fn export_person(&self, user: &UserId, out: &mut dyn Write) -> Result<u64> {
        let (ids, _) = self.person(user)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT stored_at, program, kind, key_id, payload FROM records WHERE id = ?1")
            .op("preparing an export")?;
        let mut lines = 0;
        for id in ids {
            let (stored_at, program, kind, key_id, payload): (i64, i64, String, Option<u32>, Vec<u8>) = stmt
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .op("reading a record")?;
            let record = open(id, key_id, &payload, self.key.as_ref())?;
            let program = privtel_model::Program::ALL
                .get(program as usize)
                .map(ToString::to_string)
                .unwrap_or_default();
            let stored_at =
                Timestamp::from_unix_nanos(i128::from(stored_at)).map(|t| t.to_string()).unwrap_or_default();
            let line = serde_json::json!({ "id": id, "stored_at": stored_at, "program": program, "kind": kind, "record": record });
            writeln!(out, "{line}").map_err(Error::Export)?;
            lines += 1;
        }
        Ok(lines)
    }

    fn erase_person(&mut self, request: &ErasureRequest, now: Timestamp) -> Result<DeletionReceipt> {
        let (ids, tokens) = self.person(&request.user)?;
        let tx = self.conn.transaction().op("starting an erasure")?;
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            tx.execute(&format!("DELETE FROM tokens WHERE record_id IN ({marks})"), params_from_iter(chunk))
                .op("erasing pseudonyms")?;
            tx.execute(&format!("DELETE FROM records WHERE id IN ({marks})"), params_from_iter(chunk))
                .op("erasing records")?;
        }
        tx.execute("DELETE FROM users WHERE user = ?1", [request.user.as_str()]).op("erasing a person")?;
        tx.execute("INSERT OR IGNORE INTO suppressed_users (user) VALUES (?1)", [request.user.as_str()])
            .op("suppressing a person")?;
        for t in &tokens {
            tx.execute("INSERT OR IGNORE INTO suppressed_tokens (token) VALUES (?1)", [t])
                .op("suppressing a pseudonym")?;
        }
        let receipt = DeletionReceipt {
            request_id: request.request_id.clone(),
            requested_at: request.requested_at,
            completed_at: now,
            records_removed: ids.len() as u64,
            pseudonyms_suppressed: tokens.len() as u64,
            overdue: self.retention.erasure_overdue(request.requested_at, now),
        };
        tx.execute(
            "INSERT OR REPLACE INTO receipts (request_id, requested_at, completed_at, records, pseudonyms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![receipt.request_id, nanos(receipt.requested_at), nanos(now), receipt.records_removed as i64, receipt.pseudonyms_suppressed as i64],
        )
        .op("writing the receipt")?;
        tx.commit().op("committing an erasure")?;
        self.suppressed_users.insert(request.user.as_str().to_owned());
        self.user_ids.remove(request.user.as_str());
        self.suppressed_tokens.extend(tokens.iter().cloned());
        // secure_delete zeroed the freed pages; the checkpoint moves that
        // into the main file and truncates the log, where the old pages were.
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").op("checkpointing after an erasure")?;
        Ok(receipt)
    }

    fn high_water(&self, device: &DeviceId) -> Result<u64> {
        let hw: Option<i64> = self
            .conn
            .query_row("SELECT high_water FROM devices WHERE device = ?1", [device.as_str()], |r| r.get(0))
            .optional()
            .op("reading the high-water mark")?;
        Ok(hw.unwrap_or(0) as u64)
    }

    fn record_count(&self) -> Result<u64> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0)).op("counting records")?;
        Ok(n as u64)
    }
}

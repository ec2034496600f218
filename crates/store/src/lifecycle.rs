//! A customer's lifecycle in the SQLite engine: the customer copy (every
//! row of a customer as JSON Lines), contract end (data keys destroyed
//! first, then every row), and data-key rotation with re-sealing in
//! bounded batches. docs/CUSTOMER-KEYS.md describes the order of
//! operations and what a [`CustomerDeletion`] covers.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Instant;

use privtel_model::{CustomerId, KeyId, Program, Record, Timestamp};
use rusqlite::{TransactionBehavior, params};
use serde::Serialize;

use crate::codec::{AtRestKey, seal_encoded, unseal, unseal_bytes};
use crate::engine::{SqliteEngine, tombstone};
use crate::error::{Context as _, Error, Result};
use crate::keys::KeyState;

/// The `format` of a customer copy's manifest.
pub const COPY_FORMAT: &str = "privtel-customer-copy";

/// The version of the customer copy's line format.
pub const COPY_FORMAT_VERSION: u32 = 1;

/// What a contract end did: the receipt the service signs. Counts, times
/// and key ids only: no person, no device, no value.
///
/// `keys_destroyed_at` is the instant nothing of the customer was readable
/// any more (its data keys gone); `completed_at` the instant its rows were
/// gone too. Both are measured from `started_at` (the `now` the caller
/// gave) with a monotonic clock.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct CustomerDeletion {
    /// The customer (a tenant, not a person).
    pub customer: CustomerId,
    /// When the deletion started (the caller's `now`).
    pub started_at: Timestamp,
    /// When the customer's keys were destroyed; `None` when the engine
    /// keeps no key of the customer (no key store: its rows were readable
    /// until `completed_at`).
    pub keys_destroyed_at: Option<Timestamp>,
    /// The keys are destroyed for every reader of the engine, but their
    /// bytes may remain in its files until a later rewrite (PostgreSQL,
    /// while another transaction holds the key table; the engine's next
    /// sweep or `maintain` rewrites it).
    pub keys_pending_rewrite: bool,
    /// When every row was removed and the log checkpointed.
    pub completed_at: Timestamp,
    /// Rows removed, per table.
    pub removed: BTreeMap<String, u64>,
    /// The data keys destroyed.
    pub keys_destroyed: Vec<KeyId>,
    /// What the deletion covered, in words ("engine", "key store",
    /// "key store backups", ...).
    pub stores: Vec<String>,
}

impl CustomerDeletion {
    /// A receipt (for engines outside this crate).
    pub fn new(customer: CustomerId, started_at: Timestamp) -> Self {
        Self {
            customer,
            started_at,
            keys_destroyed_at: None,
            keys_pending_rewrite: false,
            completed_at: started_at,
            removed: BTreeMap::new(),
            keys_destroyed: Vec::new(),
            stores: Vec::new(),
        }
    }
}

/// `start` plus the time elapsed since `clock` (saturating).
pub fn elapsed_since(start: Timestamp, clock: Instant) -> Timestamp {
    let d = time::Duration::try_from(clock.elapsed()).unwrap_or(time::Duration::ZERO);
    start.checked_add(d).unwrap_or(start)
}

/// What a customer copy wrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct CopyStats {
    /// Lines written (manifest and counts included).
    pub lines: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Record lines.
    pub records: u64,
}

/// What one [`SqliteEngine::reseal`] call did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct ResealProgress {
    /// Rows moved to the current key by this call.
    pub moved: u64,
    /// The customer's rows still under another key (or none).
    pub remaining: u64,
}

/// Writes JSON lines to the caller's writer, counting.
pub struct LineWriter<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    /// What was written so far.
    pub stats: CopyStats,
}

impl<'a> LineWriter<'a> {
    /// A writer of lines to `out`.
    pub fn new(out: &'a mut dyn Write) -> Self {
        Self { out, buf: Vec::with_capacity(4096), stats: CopyStats::default() }
    }

    /// Writes `value` as one line.
    ///
    /// # Errors
    ///
    /// [`Error::Export`] when writing fails; [`Error::Encode`] when the
    /// value does not serialize.
    pub fn line<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, value).map_err(|e| Error::Encode(e.to_string()))?;
        self.buf.push(b'\n');
        self.out.write_all(&self.buf).map_err(Error::Export)?;
        self.stats.lines += 1;
        self.stats.bytes += self.buf.len() as u64;
        Ok(())
    }
}

/// The first line of a customer copy: the caller's fields, then ours
/// (which win: `format`, `format_version`, `schema_version`, `customer`).
pub fn manifest(
    fields: &serde_json::Map<String, serde_json::Value>,
    customer: &CustomerId,
    schema_version: i64,
    engine: &str,
) -> serde_json::Value {
    let mut m = fields.clone();
    m.insert("format".into(), COPY_FORMAT.into());
    m.insert("format_version".into(), COPY_FORMAT_VERSION.into());
    m.insert("schema_version".into(), schema_version.into());
    m.insert("customer".into(), customer.as_str().into());
    m.insert("engine".into(), engine.into());
    serde_json::json!({ "manifest": m })
}

/// One record's line, the shape of an `export_person` line.
#[derive(Serialize)]
pub struct RecordLine<'a> {
    /// The row id.
    pub id: i64,
    /// When the store received it (RFC 3339).
    pub stored_at: &'a str,
    /// Its program.
    pub program: &'a str,
    /// Its kind name.
    pub kind: &'a str,
    /// The record, in the model's JSON form.
    pub record: &'a Record,
}

/// A program code as exported (the record's own program if unknown).
pub fn program_name(code: i64, record: &Record) -> &'static str {
    u8::try_from(code).ok().and_then(Program::from_code).unwrap_or(record.program).as_str()
}

/// [`time_text`] of the last instant asked for, kept: the rows of one batch
/// share their `stored_at`, so a copy formats each instant about once.
#[derive(Default)]
pub struct TimeText {
    last: Option<(i64, String)>,
}

impl TimeText {
    /// `ns` as RFC 3339.
    pub fn text(&mut self, ns: i64) -> &str {
        if self.last.as_ref().is_none_or(|(at, _)| *at != ns) {
            self.last = Some((ns, time_text(ns)));
        }
        self.last.as_ref().map_or("", |(_, t)| t.as_str())
    }
}

/// Unix nanoseconds as RFC 3339 ('' out of range).
pub fn time_text(ns: i64) -> String {
    Timestamp::from_unix_nanos(i128::from(ns)).map(|t| t.to_string()).unwrap_or_default()
}

/// The tables a customer's rows live in, in the order contract end
/// removes them: (name in the receipt, DELETE statement with the
/// customer's row id as ?1).
const CUSTOMER_TABLES: &[(&str, &str)] = &[
    ("mentions", "DELETE FROM mentions WHERE record_id IN (SELECT id FROM records WHERE customer = ?1)"),
    ("records", "DELETE FROM records WHERE customer = ?1"),
    ("streams", "DELETE FROM streams WHERE device IN (SELECT id FROM devices WHERE customer = ?1)"),
    ("devices", "DELETE FROM devices WHERE customer = ?1"),
    ("users", "DELETE FROM users WHERE customer = ?1"),
    ("suppressed", "DELETE FROM suppressed WHERE customer = ?1"),
    ("receipts", "DELETE FROM receipts WHERE customer = ?1"),
    ("binary_verdicts", "DELETE FROM binary_verdicts WHERE customer = ?1"),
    ("domain_verdicts", "DELETE FROM domain_verdicts WHERE customer = ?1"),
    ("benchmark_aggregates", "DELETE FROM benchmark_aggregates WHERE customer = ?1"),
    ("customers", "DELETE FROM customers WHERE id = ?1"),
];

impl SqliteEngine {
    /// Contract end on this engine (see
    /// [`EngineStore::delete_customer`](crate::EngineStore::delete_customer)).
    pub(crate) fn delete_customer_impl(
        &mut self,
        customer: &CustomerId,
        now: Timestamp,
    ) -> Result<CustomerDeletion> {
        let clock = Instant::now();
        let mut receipt = CustomerDeletion::new(customer.clone(), now);
        // 1. The keys: from here on nothing of the customer opens.
        if let Some(keys) = &self.keys {
            receipt.keys_destroyed = keys.destroy_customer(customer, now)?;
            receipt.keys_destroyed_at = Some(elapsed_since(now, clock));
            receipt.stores.extend(["key store".to_owned(), "key store backups".to_owned()]);
        }
        // 2. Every row, and the tombstone, in one transaction.
        let c = self.customer_id(customer)?;
        let digest = tombstone(&self.secret, customer.as_str());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .op("starting a contract end")?;
        for (table, sql) in CUSTOMER_TABLES {
            let n = match c {
                Some(c) => tx.execute(sql, [c]).op("removing a customer's rows")? as u64,
                None => 0,
            };
            receipt.removed.insert((*table).to_owned(), n);
        }
        tx.execute(
            "INSERT OR REPLACE INTO deleted_customers (digest, deleted_at) VALUES (?1, ?2)",
            params![&digest[..], crate::codec::nanos(now)],
        )
        .op("remembering a deleted customer")?;
        tx.commit().op("committing a contract end")?;
        self.mirror_changed();
        // 3. The log: secure_delete zeroed the freed pages; the checkpoint
        // moves that into the file and truncates the log.
        let clean = self.settle_log("checkpointing after a contract end")?;
        receipt.stores.insert(0, "engine".to_owned());
        receipt.stores.push(if clean {
            "engine write-ahead log".to_owned()
        } else {
            "engine write-ahead log: checkpoint pending (another connection held an old snapshot; retried by the next sweep)".to_owned()
        });
        receipt.completed_at = elapsed_since(now, clock);
        Ok(receipt)
    }

    /// The key store the engine seals with, if any (for key rotation by
    /// whoever holds the engine: `KeyStore::rotate_master`,
    /// `KeyStore::rotate_customer_key`).
    pub fn keys(&self) -> Option<&std::sync::Arc<crate::keys::KeyStore>> {
        self.keys.as_ref()
    }

    /// Lets a customer deleted at contract end be stored again (a new
    /// contract): forgets its tombstone here and in the key store. Its old
    /// data is not back: it was destroyed.
    ///
    /// # Errors
    ///
    /// A storage or key-store error.
    pub fn reonboard_customer(&mut self, customer: &CustomerId) -> Result<()> {
        if let Some(keys) = &self.keys {
            keys.reonboard(customer)?;
        }
        let d = tombstone(&self.secret, customer.as_str());
        self.conn
            .execute("DELETE FROM deleted_customers WHERE digest = ?1", [&d[..]])
            .op("re-onboarding a customer")?;
        self.mirror_changed();
        Ok(())
    }

    /// Moves at most `max_rows` of the customer's rows not under its
    /// current data key (retired keys, the single key of earlier versions,
    /// unsealed rows) to the current key, in one transaction; returns how
    /// many moved and how many remain. Run it in bounded batches on a live
    /// service until `remaining` is 0, then
    /// [`SqliteEngine::destroy_retired_keys`]. The log is checkpointed when
    /// nothing remains (unsealed rows' old pages leave it).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use privtel_store::{EngineOptions, EngineStore, KeyStore, KeyStoreOptions, MasterKey, SqliteEngine};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let keys = Arc::new(KeyStore::open(dir.path().join("keys.json"), MasterKey::new([1; 32]), KeyStoreOptions::default())?);
    /// let mut engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default().key_store(keys.clone()))?;
    /// let (acme, dev) = (privtel_store::CustomerId::new("acme")?, privtel_store::DeviceId::new("d")?);
    /// let now: privtel_store::Timestamp = "2026-11-27T10:00:00Z".parse()?;
    /// engine.ingest(&acme, &dev, 1, 1, privtel_testkit::fixtures::records("doc"), now)?;
    /// let old = keys.current(&acme)?.id();
    /// keys.rotate_customer_key(&acme)?;
    /// let first = engine.reseal(&acme, 2)?;
    /// assert_eq!(first.moved, 2);
    /// while engine.reseal(&acme, 2)?.remaining > 0 {}
    /// assert_eq!(engine.destroy_retired_keys(&acme)?, [old]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::KeyStore`] without a key store; a row that does not open
    /// ([`Error::KeyDestroyed`], [`Error::WrongKey`], ...); a storage error
    /// (nothing moves then).
    pub fn reseal(&mut self, customer: &CustomerId, max_rows: usize) -> Result<ResealProgress> {
        let keys = self.keys.clone().ok_or_else(|| Error::KeyStore {
            reason: "re-sealing needs a key store, expected EngineOptions::key_store".into(),
        })?;
        let Some(c) = self.customer_id(customer)? else { return Ok(ResealProgress::default()) };
        let current = keys.current(customer)?;
        let cur = current.id().get();
        let legacy = self.key.clone();
        let key_for = |row: i64, k: u32| -> Result<Option<AtRestKey>> {
            Ok(keys.key(k, row)?.or_else(|| legacy.clone()))
        };
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).op("starting a reseal")?;
        let rows: Vec<(i64, Option<u32>, Vec<u8>)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, key_id, payload FROM records
                     WHERE customer = ?1 AND (key_id IS NULL OR key_id != ?2) ORDER BY id LIMIT ?3",
                )
                .op("finding rows to re-seal")?;
            stmt.query_map(params![c, cur, i64::try_from(max_rows).unwrap_or(i64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .op("finding rows to re-seal")?
            .collect::<rusqlite::Result<_>>()
            .op("finding rows to re-seal")?
        };
        let mut opened: HashMap<u32, Option<AtRestKey>> = HashMap::new();
        {
            let mut update = tx
                .prepare_cached("UPDATE records SET key_id = ?1, payload = ?2 WHERE id = ?3")
                .op("re-sealing")?;
            for (id, key_id, payload) in &rows {
                let key = match key_id {
                    None => None,
                    Some(k) => match opened.get(k) {
                        Some(key) => key.clone(),
                        None => {
                            let key = key_for(*id, *k)?;
                            opened.insert(*k, key.clone());
                            key
                        }
                    },
                };
                let plain = unseal_bytes(*id, *key_id, payload, key.as_ref())?;
                let (new_id, sealed) = seal_encoded(plain, Some(&current))?;
                update.execute(params![new_id, sealed, id]).op("re-sealing")?;
            }
        }
        let remaining: i64 = tx
            .query_row(
                "SELECT count(*) FROM records WHERE customer = ?1 AND (key_id IS NULL OR key_id != ?2)",
                params![c, cur],
                |r| r.get(0),
            )
            .op("counting rows to re-seal")?;
        tx.commit().op("committing a reseal")?;
        if remaining == 0 && !rows.is_empty() {
            self.settle_log("checkpointing after a reseal")?;
        }
        Ok(ResealProgress { moved: rows.len() as u64, remaining: remaining as u64 })
    }

    /// Destroys every retired data key of the customer under which no row
    /// is sealed any more (see [`SqliteEngine::reseal`]); returns their ids.
    ///
    /// # Errors
    ///
    /// [`Error::KeyStore`] without a key store; a storage or key-store error.
    pub fn destroy_retired_keys(&mut self, customer: &CustomerId) -> Result<Vec<KeyId>> {
        let keys = self.keys.clone().ok_or_else(|| Error::KeyStore {
            reason: "destroying keys needs a key store, expected EngineOptions::key_store".into(),
        })?;
        let mut destroyed = Vec::new();
        for info in keys.keys_of(customer)? {
            if info.state != KeyState::Retired {
                continue;
            }
            let rows: i64 = self
                .conn
                .query_row("SELECT count(*) FROM records WHERE key_id = ?1", [info.id.get()], |r| r.get(0))
                .op("counting rows under a key")?;
            if rows == 0 {
                keys.destroy_retired(info.id)?;
                destroyed.push(info.id);
            }
        }
        Ok(destroyed)
    }

    /// The customer copy on this engine (see
    /// [`EngineStore::export_customer`](crate::EngineStore::export_customer)):
    /// one read transaction, rows streamed from cursors.
    pub(crate) fn export_customer_impl(
        &self,
        customer: &CustomerId,
        fields: &serde_json::Map<String, serde_json::Value>,
        out: &mut dyn Write,
    ) -> Result<CopyStats> {
        let mut w = LineWriter::new(out);
        w.line(&manifest(fields, customer, crate::engine::schema_version(), "sqlite"))?;
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        // One snapshot for the whole copy (WAL: the writer is not blocked).
        let tx = self.conn.unchecked_transaction().op("starting a customer copy")?;
        if let Some(c) = self.customer_id(customer)? {
            let mut opened: HashMap<u32, Option<AtRestKey>> = HashMap::new();
            let mut stored_at = TimeText::default();
            let mut stmt = tx
                .prepare(
                    "SELECT id, stored_at, program, kind, format, key_id, payload FROM records
                     WHERE customer = ?1 ORDER BY id",
                )
                .op("reading a customer's records")?;
            let mut rows = stmt.query([c]).op("reading a customer's records")?;
            while let Some(r) = rows.next().op("reading a customer's records")? {
                self.record_line(r, &mut opened, &mut stored_at, &mut w)?;
                *counts.entry("records").or_default() += 1;
            }
            drop(rows);
            drop(stmt);
            self.copy_rows(&tx, &mut w, &mut counts, c)?;
        }
        tx.finish().op("ending a customer copy")?;
        let records = counts.get("records").copied().unwrap_or(0);
        let lines = w.stats.lines + 1;
        w.line(&serde_json::json!({ "counts": { "lines": lines, "tables": counts } }))?;
        w.stats.records = records;
        Ok(w.stats)
    }

    /// A page of the customer's records for a support read: at most `limit`
    /// records with row ids above `after`, in id order, one JSON line each
    /// (the shape of the customer copy's record lines), from one snapshot.
    /// Returns the lines written and the last id (to ask for the next page
    /// with), `None` when there was none.
    ///
    /// # Errors
    ///
    /// A storage error, a record that does not open, or a write error.
    pub fn read_records(
        &self,
        customer: &CustomerId,
        after: i64,
        limit: usize,
        out: &mut dyn Write,
    ) -> Result<(u64, Option<i64>)> {
        let mut w = LineWriter::new(out);
        let tx = self.conn.unchecked_transaction().op("starting a read")?;
        let Some(c) = self.customer_id(customer)? else { return Ok((0, None)) };
        let mut stmt = tx
            .prepare(
                "SELECT id, stored_at, program, kind, format, key_id, payload FROM records
                 WHERE customer = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .op("reading a customer's records")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![c, after, limit]).op("reading a customer's records")?;
        let (mut last, mut opened, mut stored_at) = (None, HashMap::new(), TimeText::default());
        while let Some(r) = rows.next().op("reading a customer's records")? {
            last = Some(self.record_line(r, &mut opened, &mut stored_at, &mut w)?);
        }
        Ok((w.stats.lines, last))
    }

    /// Writes one row of `SELECT id, stored_at, program, kind, format,
    /// key_id, payload FROM records` as a record line, opening its key once
    /// per key id (`opened`); returns the row's id.
    fn record_line(
        &self,
        r: &rusqlite::Row<'_>,
        opened: &mut HashMap<u32, Option<AtRestKey>>,
        stored_at: &mut TimeText,
        w: &mut LineWriter<'_>,
    ) -> Result<i64> {
        let get = |e: rusqlite::Error| Error::Database { op: "reading a record", message: e.to_string() };
        let id: i64 = r.get(0).map_err(get)?;
        let key_id: Option<u32> = r.get(5).map_err(get)?;
        let key = match key_id {
            None => None,
            Some(k) => match opened.get(&k) {
                Some(key) => key.clone(),
                None => {
                    let key = self.key_for(id, Some(k))?;
                    opened.insert(k, key.clone());
                    key
                }
            },
        };
        let payload = r.get_ref(6).map_err(get)?.as_blob().map_err(|e| get(e.into()))?;
        let record = unseal(id, r.get(4).map_err(get)?, key_id, payload, key.as_ref())?;
        let kind = r.get_ref(3).map_err(get)?.as_str().map_err(|e| get(e.into()))?;
        w.line(&RecordLine {
            id,
            stored_at: stored_at.text(r.get(1).map_err(get)?),
            program: program_name(r.get(2).map_err(get)?, &record),
            kind,
            record: &record,
        })?;
        Ok(id)
    }

    /// The customer's devices, users, verdicts, aggregates and receipts,
    /// one line each.
    fn copy_rows(
        &self,
        tx: &rusqlite::Transaction<'_>,
        w: &mut LineWriter<'_>,
        counts: &mut BTreeMap<&'static str, u64>,
        c: i64,
    ) -> Result<()> {
        type Shape = fn(&rusqlite::Row<'_>) -> rusqlite::Result<serde_json::Value>;
        let tables: [(&'static str, &str, Shape); 6] = [
            ("devices", "SELECT device, last_seen FROM devices WHERE customer = ?1 ORDER BY id", |r| {
                Ok(
                    serde_json::json!({"device": {"device": r.get::<_, String>(0)?, "last_seen": time_text(r.get(1)?)}}),
                )
            }),
            ("users", "SELECT user FROM users WHERE customer = ?1 ORDER BY id", |r| {
                Ok(serde_json::json!({"user": r.get::<_, String>(0)?}))
            }),
            (
                "binary_verdicts",
                "SELECT verdict, evaluated_at FROM binary_verdicts WHERE customer = ?1 ORDER BY sha256",
                |r| verdict_line("binary_verdict", r),
            ),
            (
                "domain_verdicts",
                "SELECT verdict, evaluated_at FROM domain_verdicts WHERE customer = ?1 ORDER BY domain",
                |r| verdict_line("domain_verdict", r),
            ),
            (
                "benchmark_aggregates",
                "SELECT industry, day, summaries, device_days, score_sum, score_min, score_max, crashes,
                        performance_samples, slow_samples, ratings, rating_sum, logins, login_ms, executions,
                        other_records
                 FROM benchmark_aggregates WHERE customer = ?1 ORDER BY day, industry",
                |r| {
                    let mut m = serde_json::Map::new();
                    m.insert("industry".into(), r.get::<_, String>(0)?.into());
                    m.insert("day".into(), r.get::<_, i64>(1)?.into());
                    for (i, name) in [
                        "summaries",
                        "device_days",
                        "score_sum",
                        "score_min",
                        "score_max",
                        "crashes",
                        "performance_samples",
                        "slow_samples",
                        "ratings",
                        "rating_sum",
                        "logins",
                        "login_ms",
                        "executions",
                        "other_records",
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        m.insert(name.into(), r.get::<_, Option<i64>>(i + 2)?.into());
                    }
                    Ok(serde_json::json!({ "aggregate": m }))
                },
            ),
            (
                "receipts",
                "SELECT request_id, requested_at, completed_at, records, pseudonyms FROM receipts
                 WHERE customer = ?1 ORDER BY request_id",
                |r| {
                    Ok(serde_json::json!({"receipt": {
                        "request_id": r.get::<_, String>(0)?,
                        "requested_at": time_text(r.get(1)?),
                        "completed_at": time_text(r.get(2)?),
                        "records_removed": r.get::<_, i64>(3)?,
                        "pseudonyms_suppressed": r.get::<_, i64>(4)?,
                    }}))
                },
            ),
        ];
        for (table, sql, shape) in tables {
            let mut stmt = tx.prepare(sql).op("reading a customer's rows")?;
            let mut rows = stmt.query([c]).op("reading a customer's rows")?;
            let mut n = 0;
            while let Some(r) = rows.next().op("reading a customer's rows")? {
                w.line(&shape(r).op("reading a customer's rows")?)?;
                n += 1;
            }
            counts.insert(table, n);
        }
        Ok(())
    }
}

fn verdict_line(name: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<serde_json::Value> {
    let json: String = r.get(0)?;
    // Stored as the model's JSON; a row that does not parse is copied as text.
    let verdict = serde_json::from_str::<serde_json::Value>(&json).unwrap_or(serde_json::Value::String(json));
    Ok(serde_json::json!({ name: { "verdict": verdict, "evaluated_at": time_text(r.get(1)?) } }))
}

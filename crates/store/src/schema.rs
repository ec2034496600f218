//! Schema versions (`PRAGMA user_version`) and migrations.

use rusqlite::{Connection, Transaction};

use crate::error::{Context as _, Error, Result};

/// One migration: plain SQL, or code for a step that must read and rewrite
/// rows (computing digests, moving data under a tenant).
pub(crate) enum Step<'a> {
    /// SQL run as one batch.
    Sql(&'static str),
    /// Code run inside the migration's transaction.
    Code(&'a dyn Fn(&Transaction<'_>) -> Result<()>),
}

/// Opens (or creates) a database with the settings every store uses, and
/// brings its schema to the newest version through `steps` (index 0 takes
/// version 0 to 1, and so on), all in one transaction: a migration that
/// fails leaves the file as it was.
pub(crate) fn open(path: &std::path::Path, steps: &[Step<'_>]) -> Result<Connection> {
    let conn = Connection::open(path).op("opening the database")?;
    // Room for every statement a writer repeats (the default holds 16, and
    // one pushed out is compiled again on its next use).
    conn.set_prepared_statement_cache_capacity(64);
    // WAL: readers do not block the writer; FULL: a commit is on disk when it
    // returns (the spool promises durability, the engine acknowledges only
    // durable data); secure_delete: deleted rows are overwritten, so erased
    // data does not linger in free pages. Measured with `cargo bench --bench
    // store` on 2 M rows: a 64 MiB page cache and a 256 MiB read mapping keep
    // the indexes in memory (the default 2 MiB cache re-read index pages from
    // the OS on every insert, halving ingest), and checkpointing every 256 MiB
    // of log rather than every 1,000 pages writes each hot index page once
    // per checkpoint instead of once per batch (ingest 129k -> 206k
    // records/s), at the price of a write-ahead log that grows that large
    // between checkpoints. 8 KiB pages (new databases only; an existing one
    // keeps its page size) make the indexes shallower: ingest 205-218k
    // against 170-193k records/s with 4 KiB pages, alternating runs of the
    // same bench; 16 KiB pages were slower again.
    conn.execute_batch(
        "PRAGMA page_size = 8192;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA secure_delete = ON;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -65536;
         PRAGMA mmap_size = 268435456;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 32768;",
    )
    .op("configuring the database")?;
    let version: i64 =
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).op("reading the schema version")?;
    let newest = steps.len() as i64;
    if version > newest {
        return Err(Error::Schema { found: version, supported: newest });
    }
    if version < newest {
        let tx = conn.unchecked_transaction().op("starting a migration")?;
        for step in steps.iter().skip(usize::try_from(version).unwrap_or(0)) {
            match step {
                Step::Sql(sql) => tx.execute_batch(sql).op("migrating the schema")?,
                Step::Code(f) => f(&tx)?,
            }
        }
        tx.execute_batch(&format!("PRAGMA user_version = {newest}")).op("recording the schema version")?;
        tx.commit().op("committing a migration")?;
        if version > 0 {
            // Rows the migration rewrote or dropped (clear suppression
            // lists) must not survive in the log.
            checkpoint(&conn, "checkpointing after a migration")?;
        }
    }
    Ok(conn)
}

/// Moves everything the write-ahead log holds into the database file and
/// truncates the log to zero bytes, so that pages a deletion overwrote
/// (`secure_delete`) leave no older copy in the log. `Ok(false)` when it
/// could not: a reader holding an older snapshot (another connection's long
/// read) keeps the log from being truncated, and SQLite reports the
/// checkpoint busy; it is retried for up to 2 seconds first.
pub(crate) fn try_checkpoint(conn: &Connection, op: &'static str) -> Result<bool> {
    // Each attempt waits for readers at most briefly (the connection's own
    // busy timeout is 5 s), so the whole try is bounded by the deadline.
    conn.busy_timeout(std::time::Duration::from_millis(50)).op(op)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let done = loop {
        let busy: i64 = match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).op(op) {
            Ok(b) => b,
            Err(e) => {
                let _ = conn.busy_timeout(BUSY_TIMEOUT);
                return Err(e);
            }
        };
        if busy == 0 {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    conn.busy_timeout(BUSY_TIMEOUT).op(op)?;
    Ok(done)
}

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// [`try_checkpoint`], refused with [`Error::CheckpointBusy`] when the log
/// stays busy (nobody is told the log is clean when it is not).
pub(crate) fn checkpoint(conn: &Connection, op: &'static str) -> Result<()> {
    if try_checkpoint(conn, op)? { Ok(()) } else { Err(Error::CheckpointBusy { op }) }
}

//! Schema versions (`PRAGMA user_version`) and migrations.

use rusqlite::Connection;

use crate::error::{Context as _, Error, Result};

/// Opens (or creates) a database with the settings every store uses, and
/// brings its schema to the newest version through `migrations` (index 0
/// takes version 0 to 1, and so on).
pub(crate) fn open(path: &std::path::Path, migrations: &[&str]) -> Result<Connection> {
    let conn = Connection::open(path).op("opening the database")?;
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
    let newest = migrations.len() as i64;
    if version > newest {
        return Err(Error::Schema { found: version, supported: newest });
    }
    for (i, sql) in migrations.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.unchecked_transaction().op("starting a migration")?;
        tx.execute_batch(sql).op("migrating the schema")?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).op("recording the schema version")?;
        tx.commit().op("committing a migration")?;
    }
    Ok(conn)
}

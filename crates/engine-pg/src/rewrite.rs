//! Destroying the bytes of deleted keys. PostgreSQL leaves a deleted row in
//! its page until VACUUM and a later insert reuse the space; `VACUUM FULL`
//! writes a new file, but it copies every row some transaction might still
//! see, so a key deleted while any older snapshot exists in the database
//! (an autovacuum `ANALYZE`, a report, a `pg_dump`) is copied into the new
//! file. The rewrite here copies only the rows its own transaction sees,
//! which follows the deletion's commit: under an exclusive lock, the live
//! keys go to a temporary table, the table is truncated (its old file is
//! emptied when the rewrite commits and unlinked at the next checkpoint)
//! and they come back.
//!
//! Every transaction that deletes keys also marks the rewrite as due in
//! `privtel_meta`, so a rewrite that cannot have its lock (a transaction
//! holds the key table, the engine or the server stops) is done by the
//! next sweep or `maintain`; the mark goes in the rewrite's transaction.

use std::time::{Duration, Instant};

use postgres::{Client, Transaction};
use privtel_store::Error;

use crate::pg::Op as _;

/// The name of the mark in `privtel_meta`.
const DUE: &str = "key_rewrite_due";

/// The longest one attempt waits for the lock: while it waits, every
/// ingest that reads keys queues behind it.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Marks the rewrite as due, in the transaction that deletes keys.
pub(crate) fn mark_due(tx: &mut Transaction<'_>) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO privtel_meta (name, value) VALUES ($1, '\\x01'::bytea) ON CONFLICT (name) DO NOTHING",
        &[&DUE],
    )
    .op("marking the key table for a rewrite")?;
    Ok(())
}

/// Whether deleted keys may still be in the key table's file.
pub(crate) fn due(client: &mut Client) -> Result<bool, Error> {
    Ok(client
        .query_opt("SELECT 1 FROM privtel_meta WHERE name = $1", &[&DUE])
        .op("reading the key table's rewrite mark")?
        .is_some())
}

/// Rewrites the key table when a rewrite is due, trying for `wait` (at
/// least once, each attempt waiting at most a second for the lock).
/// `Ok(true)`: no deleted key's bytes remain in the table's live file
/// (nothing was due, or the rewrite committed). `Ok(false)`: another
/// transaction held the table all along; the rewrite stays due.
pub(crate) fn rewrite_if_due(client: &mut Client, wait: Duration) -> Result<bool, Error> {
    if !due(client)? {
        return Ok(true);
    }
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match attempt(client, left.clamp(Duration::from_millis(50), ATTEMPT)) {
            Ok(()) => return Ok(true),
            Err(e) if lock_unavailable(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100).min(deadline - Instant::now()));
            }
            Err(e) if lock_unavailable(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

fn attempt(client: &mut Client, lock_wait: Duration) -> Result<(), Error> {
    let mut tx = client.transaction().op("starting the key table's rewrite")?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", lock_wait.as_millis().max(1)))
        .op("bounding the wait for the key table")?;
    tx.batch_execute("LOCK TABLE subject_keys IN ACCESS EXCLUSIVE MODE").op("locking the key table")?;
    // Another engine may have done it meanwhile.
    if tx
        .query_opt("SELECT 1 FROM privtel_meta WHERE name = $1", &[&DUE])
        .op("reading the key table's rewrite mark")?
        .is_none()
    {
        return tx.commit().op("committing the key table's rewrite");
    }
    tx.batch_execute(
        "CREATE TEMPORARY TABLE privtel_live_keys ON COMMIT DROP AS SELECT * FROM subject_keys;
         TRUNCATE subject_keys;
         INSERT INTO subject_keys SELECT * FROM privtel_live_keys;",
    )
    .op("rewriting the key table")?;
    tx.execute("DELETE FROM privtel_meta WHERE name = $1", &[&DUE])
        .op("clearing the key table's rewrite mark")?;
    tx.commit().op("committing the key table's rewrite")
}

/// The lock was not had within `lock_timeout` (55P03).
fn lock_unavailable(e: &Error) -> bool {
    matches!(e, Error::Database { message, .. } if message.ends_with("(55p03)"))
}

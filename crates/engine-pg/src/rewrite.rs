//! Destroying the bytes of deleted keys. PostgreSQL leaves a deleted row in
//! its page until VACUUM and a later insert reuse the space; `VACUUM FULL`
//! writes a new file, but it copies every row some transaction might still
//! see, so a key deleted while any older snapshot exists in the database
//! (an autovacuum `ANALYZE`, a report, a `pg_dump`) is copied into the new
//! file. The rewrite here copies only the rows its own transaction sees,
//! which follows the deletion's commit: under an exclusive lock, the live
//! keys go to a scratch table, the table is truncated (its old file is
//! emptied when the rewrite commits and unlinked at the next checkpoint),
//! they come back and the scratch table is dropped (its file, holding only
//! live keys, goes the same way). The key column keeps no statistics
//! (schema version 4), so `ANALYZE` never copies keys into `pg_statistic`.
//!
//! Every transaction that deletes keys also marks the rewrite as due in
//! `privtel_meta`, so a rewrite that cannot be done (a transaction holds
//! the key table, an error, the engine or the server stops) is done later:
//! by the engine's next connect, erasure, contract end or sweep, or
//! [`PgEngine::rewrite_keys`](crate::PgEngine::rewrite_keys); the mark
//! goes in the rewrite's transaction.

use std::time::{Duration, Instant};

use postgres::{Client, Transaction};
use privtel_store::Error;

use crate::pg::Op as _;

/// The name of the mark in `privtel_meta`.
const DUE: &str = "key_rewrite_due";

/// The longest one attempt waits for the lock: while it waits, every
/// ingest that reads keys queues behind it.
const ATTEMPT: Duration = Duration::from_millis(200);

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
/// least once; each attempt waits at most 200 ms for the lock, and the
/// pauses between attempts double from 100 ms to 2 s, so ingest waits for
/// a small share of the time). `Ok(true)`: no deleted key's bytes remain
/// in the table's live file (nothing was due, or the rewrite committed).
/// `Ok(false)`: another transaction held the table all along; the rewrite
/// stays due.
///
/// # Errors
///
/// Any other database error (the rewrite stays due).
pub(crate) fn rewrite_if_due(client: &mut Client, wait: Duration) -> Result<bool, Error> {
    if !due(client)? {
        return Ok(true);
    }
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt(client) {
            Ok(()) => return Ok(true),
            Err(e) if lock_unavailable(&e) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`rewrite_if_due`] where a failure must not fail the caller (an
/// erasure or contract end already committed, a sweep of other data):
/// whether it is done; what is not stays due.
pub(crate) fn settle(client: &mut Client, wait: Duration) -> bool {
    rewrite_if_due(client, wait).unwrap_or(false)
}

fn attempt(client: &mut Client) -> Result<(), Error> {
    let mut tx = client.transaction().op("starting the key table's rewrite")?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", ATTEMPT.as_millis()))
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
    // A table of the engine's own schema (which the engine may create
    // tables in: it makes partitions), not a temporary one (the TEMP
    // privilege may be withheld); unlogged, so the live keys it holds for
    // the instant are not written to the log again. Under the lock above,
    // no other engine's rewrite can be making it.
    tx.batch_execute(
        "CREATE UNLOGGED TABLE privtel_live_keys AS SELECT * FROM subject_keys;
         TRUNCATE subject_keys;
         INSERT INTO subject_keys SELECT * FROM privtel_live_keys ORDER BY customer, digest;
         DROP TABLE privtel_live_keys;",
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

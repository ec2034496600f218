//! Partitions of `records` and `mentions`: one per (customer, class, day),
//! named `records_p{customer}_{class}_{day}` / `mentions_p…`.

use postgres::Transaction;
use privtel_store::Error;

use crate::pg::Op as _;

/// Nanoseconds in a day.
pub(crate) const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// A partition's key: customer row id, class (0 event, 1 object), day.
pub(crate) type Key = (i32, i16, i32);

/// The day (since 1970-01-01 UTC) of an instant in unix nanoseconds.
pub(crate) fn day_of(nanos: i64) -> i32 {
    // i64::MAX ns is about 106,751 days: always fits.
    nanos.div_euclid(DAY_NS) as i32
}

pub(crate) fn name(table: &str, (c, cl, d): Key) -> String {
    format!("{table}_p{c}_{cl}_{d}")
}

/// The key of a partition of `records` from its name (as the catalog lists
/// it); `None` for any other table (the default partition).
pub fn parse_name(relname: &str) -> Option<(i32, i16, i32)> {
    let rest = relname.strip_prefix("records_p")?;
    let mut parts = rest.splitn(3, '_');
    let c = parts.next()?.parse().ok()?;
    let cl = parts.next()?.parse().ok()?;
    let d = parts.next()?.parse().ok()?;
    Some((c, cl, d))
}

/// The partitions of `records` that exist, of one customer or all.
pub(crate) fn list(tx: &mut Transaction<'_>, customer: Option<i32>) -> Result<Vec<Key>, Error> {
    let rows = tx
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'records'::regclass",
            &[],
        )
        .op("listing partitions")?;
    Ok(rows
        .iter()
        .filter_map(|r| parse_name(r.get::<_, &str>(0)))
        .filter(|k| customer.is_none_or(|c| k.0 == c))
        .collect())
}

/// Which of `keys` have a partition.
pub(crate) fn existing(tx: &mut Transaction<'_>, keys: &[Key]) -> Result<Vec<Key>, Error> {
    let names: Vec<String> = keys.iter().map(|k| name("records", *k)).collect();
    let rows = tx
        .query(
            "SELECT relname::text FROM pg_class WHERE relname = ANY($1)
             AND relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'records'::regclass)",
            &[&names],
        )
        .op("checking partitions")?;
    Ok(rows.iter().filter_map(|r| parse_name(r.get::<_, &str>(0))).collect())
}

/// Creates the partitions of `key` in `records` and `mentions`. Rows of
/// that key in the default partitions (a day that had no partition) are
/// moved into them, since a partition cannot be made while the default
/// holds rows of its range.
pub(crate) fn create(tx: &mut Transaction<'_>, key: Key) -> Result<(), Error> {
    let (c, cl, d) = key;
    let stray: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM records_default WHERE customer = $1 AND class = $2 AND day = $3)
                 OR EXISTS (SELECT 1 FROM mentions_default WHERE customer = $1 AND class = $2 AND day = $3)",
            &[&c, &cl, &d],
        )
        .op("checking the default partition")?
        .get(0);
    let (r, m) = (name("records", key), name("mentions", key));
    if stray {
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE privtel_moving_r ON COMMIT DROP AS
                 WITH m AS (DELETE FROM records_default WHERE customer = {c} AND class = {cl} AND day = {d} RETURNING *)
                 SELECT * FROM m;
             CREATE TEMP TABLE privtel_moving_m ON COMMIT DROP AS
                 WITH m AS (DELETE FROM mentions_default WHERE customer = {c} AND class = {cl} AND day = {d} RETURNING *)
                 SELECT * FROM m;"
        ))
        .op("moving rows out of the default partition")?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {r} PARTITION OF records FOR VALUES FROM ({c}, {cl}, {d}) TO ({c}, {cl}, {});
         CREATE UNIQUE INDEX IF NOT EXISTS {r}_event ON {r} (device, event_id);
         CREATE INDEX IF NOT EXISTS {r}_user ON {r} (user_digest) WHERE user_digest IS NOT NULL;
         CREATE TABLE IF NOT EXISTS {m} PARTITION OF mentions FOR VALUES FROM ({c}, {cl}, {d}) TO ({c}, {cl}, {});",
        d + 1,
        d + 1
    ))
    .op("creating a partition")?;
    if stray {
        tx.batch_execute(
            "INSERT INTO records SELECT * FROM privtel_moving_r; INSERT INTO mentions SELECT * FROM privtel_moving_m;
             DROP TABLE privtel_moving_r; DROP TABLE privtel_moving_m;",
        )
        .op("moving rows out of the default partition")?;
    }
    Ok(())
}

/// Drops the partitions of `key` (a sweep: every row in them expired).
pub(crate) fn drop(tx: &mut Transaction<'_>, key: Key) -> Result<(), Error> {
    drop_all(tx, &[key])
}

/// Drops the partitions of every key in `keys` in one statement: the
/// parents' locks taken and their partition lists rebuilt once, not once
/// a partition.
pub(crate) fn drop_all(tx: &mut Transaction<'_>, keys: &[Key]) -> Result<(), Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let tables: Vec<String> = keys.iter().flat_map(|k| [name("records", *k), name("mentions", *k)]).collect();
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", tables.join(", "))).op("dropping partitions")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_not_partitions() {
        for key in [(1, 0, 20_000), (42, 1, -3), (i32::MAX, 1, i32::MIN)] {
            assert_eq!(parse_name(&name("records", key)), Some(key));
        }
        for other in ["records_default", "records_p", "records_p1_2", "records_px_1_2", "mentions_p1_0_2"] {
            assert_eq!(parse_name(other), None, "{other}");
        }
        assert_eq!(day_of(DAY_NS - 1), 0);
        assert_eq!(day_of(-1), -1);
    }
}

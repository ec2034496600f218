//! Partitions of `records` and `mentions`: one per (customer, class, day),
//! named `records_p{customer}_{class}_{day}` / `mentions_p…`. A day's
//! `mentions` partition is made only once a record of that day names
//! someone other than by its user id: a customer whose records name people
//! only by user id (anonymous usage) has none, so its sweeps unlink fewer
//! files.

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

/// The two partitioned tables.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Table {
    Records,
    Mentions,
}

impl Table {
    const fn name(self) -> &'static str {
        match self {
            Self::Records => "records",
            Self::Mentions => "mentions",
        }
    }
}

/// Which of `keys` have a partition of `table`.
pub(crate) fn existing(tx: &mut Transaction<'_>, table: Table, keys: &[Key]) -> Result<Vec<Key>, Error> {
    let names: Vec<String> = keys.iter().map(|k| name(table.name(), *k)).collect();
    let rows = tx
        .query(
            "SELECT relname::text FROM pg_class WHERE relname = ANY($1)
             AND relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'records'::regclass)",
            &[&names],
        )
        .op("checking partitions")?;
    let strip = |n: &str| -> Option<Key> {
        match table {
            Table::Records => parse_name(n),
            Table::Mentions => parse_name(&format!("records_p{}", n.strip_prefix("mentions_p")?)),
        }
    };
    Ok(rows.iter().filter_map(|r| strip(r.get::<_, &str>(0))).collect())
}

/// Creates the partition of `key` in `table` (with its indexes). Rows of
/// that key in the table's default partition (a day that had no
/// partition) are moved into it, since a partition cannot be made while
/// the default holds rows of its range.
pub(crate) fn create(tx: &mut Transaction<'_>, table: Table, key: Key) -> Result<(), Error> {
    let (c, cl, d) = key;
    let t = table.name();
    let stray: bool = tx
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {t}_default WHERE customer = $1 AND class = $2 AND day = $3)"
            ),
            &[&c, &cl, &d],
        )
        .op("checking the default partition")?
        .get(0);
    let p = name(t, key);
    if stray {
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE privtel_moving ON COMMIT DROP AS
                 WITH m AS (DELETE FROM {t}_default WHERE customer = {c} AND class = {cl} AND day = {d} RETURNING *)
                 SELECT * FROM m;"
        ))
        .op("moving rows out of the default partition")?;
    }
    let indexes = match table {
        Table::Records => format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {p}_event ON {p} (device, event_id);
             CREATE INDEX IF NOT EXISTS {p}_user ON {p} (user_digest) WHERE user_digest IS NOT NULL;"
        ),
        // `mentions_digest` on the parent makes this partition's.
        Table::Mentions => String::new(),
    };
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {p} PARTITION OF {t} FOR VALUES FROM ({c}, {cl}, {d}) TO ({c}, {cl}, {});
         {indexes}",
        d + 1,
    ))
    .op("creating a partition")?;
    if stray {
        tx.batch_execute(&format!(
            "INSERT INTO {t} SELECT * FROM privtel_moving; DROP TABLE privtel_moving;"
        ))
        .op("moving rows out of the default partition")?;
    }
    if table == Table::Records {
        // Mentions of the records just moved leave the default too: a
        // sweep drops a day's two partitions, never default rows.
        let stray: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM mentions_default WHERE customer = $1 AND class = $2 AND day = $3)",
                &[&c, &cl, &d],
            )
            .op("checking the default partition")?
            .get(0);
        if stray {
            create(tx, Table::Mentions, key)?;
        }
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

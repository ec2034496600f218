//! The tables (docs/STORAGE.md, "The engine store on PostgreSQL"), their
//! version, and the keyed-hash secret.

use postgres::Client;
use privtel_store::Error;
use privtel_store::parts::Secret;

use crate::keys::new_key;
use crate::pg::Op as _;

/// The newest schema version this code writes.
pub(crate) const NEWEST: i64 = 5;

/// Version 1. Records and their mention digests are partitioned by
/// (customer, class, day) ranges of one day: a sweep drops whole
/// partitions. A DEFAULT partition takes a row whose day has none (it is
/// monitored, see `PgEngine::partition_report`).
const V1: &str = "
    CREATE TABLE customers (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        customer text NOT NULL UNIQUE
    );
    CREATE TABLE devices (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        customer integer NOT NULL,
        device text NOT NULL,
        last_seen bigint NOT NULL,          -- unix ns, for the inactivity purge
        UNIQUE (customer, device)
    );
    CREATE TABLE streams (
        device bigint NOT NULL,             -- devices.id
        stream bigint NOT NULL,             -- the spool's u64 id, bit for bit
        high_water bigint NOT NULL,
        PRIMARY KEY (device, stream)
    );
    -- One random key per person-naming digest of a customer (kind 0, digest
    -- of zeros: the customer's base key). Erasure deletes rows here, then
    -- rewrites the table (rewrite.rs).
    CREATE TABLE subject_keys (
        customer integer NOT NULL,
        digest bytea NOT NULL,
        kind smallint NOT NULL,
        key bytea NOT NULL,                 -- 32 bytes, or wrapped (64)
        PRIMARY KEY (customer, digest)
    );
    CREATE TABLE suppressed (
        customer integer NOT NULL,
        digest bytea NOT NULL,
        kind smallint NOT NULL,
        PRIMARY KEY (customer, digest)
    );
    CREATE TABLE receipts (
        customer integer NOT NULL,
        request_id text NOT NULL,
        requested_at bigint NOT NULL,
        completed_at bigint NOT NULL,
        records bigint NOT NULL,
        pseudonyms bigint NOT NULL,
        PRIMARY KEY (customer, request_id)
    );
    CREATE TABLE binary_verdicts (
        customer integer NOT NULL,
        sha256 bytea NOT NULL,
        verdict text NOT NULL,
        evaluated_at bigint NOT NULL,
        PRIMARY KEY (customer, sha256)
    );
    CREATE TABLE domain_verdicts (
        customer integer NOT NULL,
        domain text NOT NULL,
        verdict text NOT NULL,
        evaluated_at bigint NOT NULL,
        PRIMARY KEY (customer, domain)
    );
    -- Exact record counts per (customer, class, day), kept in the same
    -- transaction as the rows: counts, sweep reports without a scan.
    CREATE TABLE record_counts (
        customer integer NOT NULL,
        class smallint NOT NULL,
        day integer NOT NULL,
        records bigint NOT NULL,
        PRIMARY KEY (customer, class, day)
    );
    -- Raised by every erasure, in its transaction: an engine whose cached
    -- keys and suppression lists are older reloads them.
    CREATE TABLE key_generation (n bigint NOT NULL);
    INSERT INTO key_generation VALUES (0);
    -- Record ids come in blocks of 2^20, one block per group (or more for a
    -- larger group): id = block * 2^20 + position. Never reused.
    CREATE SEQUENCE record_id_blocks;
    CREATE TABLE records (
        customer integer NOT NULL,          -- customers.id
        class smallint NOT NULL,            -- 0 event, 1 object
        day integer NOT NULL,               -- recorded_at in days since 1970-01-01 UTC
        id bigint NOT NULL,                 -- from record_id_blocks, never reused
        device bigint NOT NULL,             -- devices.id of the sender
        user_digest bytea,                  -- keyed digest of the user id
        recorded_at bigint NOT NULL,        -- unix ns, when retention starts
        stored_at bigint NOT NULL,          -- unix ns
        event_id bigint,                    -- an event id's low 64 bits
        format smallint NOT NULL,           -- 2: the model's JSON; 3: compressed (privtel_store::parts::Format); sealed
        subjects bytea NOT NULL,            -- (kind, digest) of each subject
        payload bytea NOT NULL              -- sealed under the record key
    ) PARTITION BY RANGE (customer, class, day);
    -- Each partition has its own indexes (partition.rs): a unique
    -- (device, event_id), which catches replays per (customer, device, day)
    -- (objects have no event id, NULLs never collide) and serves the
    -- inactivity purge, and (user_digest). An index declared here would
    -- have to carry the partition key in every entry.
    CREATE INDEX records_id ON records USING brin (id);
    CREATE TABLE records_default PARTITION OF records DEFAULT;
    CREATE INDEX records_default_key ON records_default (customer, class, day);
    CREATE UNIQUE INDEX records_default_event ON records_default (device, event_id, customer, class, day);
    CREATE INDEX records_default_user ON records_default (user_digest) WHERE user_digest IS NOT NULL;
    CREATE TABLE mentions (
        customer integer NOT NULL,
        class smallint NOT NULL,
        day integer NOT NULL,
        digest bytea NOT NULL,
        kind smallint NOT NULL,
        record_id bigint NOT NULL
    ) PARTITION BY RANGE (customer, class, day);
    CREATE INDEX mentions_digest ON mentions (digest);
    CREATE TABLE mentions_default PARTITION OF mentions DEFAULT;
    CREATE INDEX mentions_default_key ON mentions_default (customer, class, day);
";

/// Version 2: customers deleted at contract end, as keyed digests of their
/// ids (`privtel_store::parts::tombstone`): their later batches are refused
/// until they are re-onboarded.
const V2: &str = "
    CREATE TABLE deleted_customers (
        digest bytea PRIMARY KEY,
        deleted_at bigint NOT NULL          -- unix ns
    );
";

/// Version 3: fewer files a partition, since a sweep's time is mostly
/// the unlinking of files. A mention's digest (16 bytes) is kept inline
/// (`STORAGE PLAIN`, inherited by every partition made from now on), so a
/// partition of `mentions` has no TOAST table and index of its own: two
/// relations fewer a day.
const V3: &str = "
    ALTER TABLE mentions ALTER COLUMN digest SET STORAGE PLAIN;
";

/// Version 4: the key column keeps no statistics. `ANALYZE` (autovacuum's
/// too) would copy up to a hundred keys into `pg_statistic` as histogram
/// bounds, where an erasure's rewrite of `subject_keys` does not reach.
/// Changing the column's type to itself removes what is there already
/// (the dead row it leaves in `pg_statistic` goes when that catalog is
/// vacuumed; docs/STORAGE.md says how to hasten it).
const V4: &str = "
    ALTER TABLE subject_keys ALTER COLUMN key SET STATISTICS 0;
    ALTER TABLE subject_keys ALTER COLUMN key TYPE bytea;
";

/// Version 5: when each stream was last used (unix ns), so that marks
/// expire with the customer's longest TTL (the sweep) and a device holds at
/// most `privtel_store::MAX_STREAMS_PER_DEVICE` (ingest). Existing marks are
/// dated at the migration: each is kept a whole TTL after the upgrade, then
/// expires unless its stream is used again.
const V5: &str = "
    ALTER TABLE streams ADD COLUMN used_at bigint NOT NULL DEFAULT 0;
    UPDATE streams SET used_at = (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint;
";

/// Creates or checks the schema (in one transaction, under an advisory
/// lock so two engines opening a new database at once do not race).
pub(crate) fn migrate(client: &mut Client) -> Result<(), Error> {
    let mut tx = client.transaction().op("starting a migration")?;
    tx.execute("SELECT pg_advisory_xact_lock(7339401117052350001)", &[]).op("locking the schema")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS privtel_meta (name text PRIMARY KEY, value bytea NOT NULL)")
        .op("creating the settings table")?;
    let version: i64 = match tx
        .query_opt("SELECT value FROM privtel_meta WHERE name = 'schema'", &[])
        .op("reading the schema version")?
    {
        None => 0,
        Some(row) => {
            let v: Vec<u8> = row.get(0);
            let v: [u8; 8] = v.try_into().map_err(|_| Error::Database {
                op: "reading the schema version",
                message: "the stored version is not 8 bytes".into(),
            })?;
            i64::from_le_bytes(v)
        }
    };
    if version > NEWEST {
        return Err(Error::Schema { found: version, supported: NEWEST });
    }
    if version < 1 {
        tx.batch_execute(V1).op("creating the schema")?;
    }
    if version < 2 {
        tx.batch_execute(V2).op("migrating the schema to version 2")?;
    }
    if version < 3 {
        tx.batch_execute(V3).op("migrating the schema to version 3")?;
    }
    if version < 4 {
        tx.batch_execute(V4).op("migrating the schema to version 4")?;
    }
    if version < 5 {
        tx.batch_execute(V5).op("migrating the schema to version 5")?;
    }
    tx.execute(
        "INSERT INTO privtel_meta (name, value) VALUES ('schema', $1)
         ON CONFLICT (name) DO UPDATE SET value = $1",
        &[&NEWEST.to_le_bytes().as_slice()],
    )
    .op("writing the schema version")?;
    tx.commit().op("committing a migration")
}

/// The store's secret: the one given (checked against the stored check
/// value), else the one kept in the store; made on first use (the same
/// rules as the SQLite engine's).
pub(crate) fn resolve_secret(client: &mut Client, given: Option<&Secret>) -> Result<Secret, Error> {
    let mut tx = client.transaction().op("reading the store's settings")?;
    tx.execute("SELECT pg_advisory_xact_lock(7339401117052350001)", &[]).op("locking the settings")?;
    let get = |tx: &mut postgres::Transaction<'_>, name: &str| -> Result<Option<Vec<u8>>, Error> {
        Ok(tx
            .query_opt("SELECT value FROM privtel_meta WHERE name = $1", &[&name])
            .op("reading the store's settings")?
            .map(|r| r.get(0)))
    };
    let stored = get(&mut tx, "secret")?;
    let check = get(&mut tx, "secret_check")?;
    let put = |tx: &mut postgres::Transaction<'_>, name: &str, value: &[u8]| -> Result<(), Error> {
        tx.execute("INSERT INTO privtel_meta (name, value) VALUES ($1, $2)", &[&name, &value])
            .op("writing the store's settings")
            .map(drop)
    };
    let secret = match (stored, check, given) {
        (Some(stored), _, None) => {
            let s: [u8; 32] = stored.try_into().map_err(|_| Error::Database {
                op: "reading the store's settings",
                message: "the stored secret is not 32 bytes".into(),
            })?;
            Secret(s)
        }
        (Some(_), _, Some(_)) => {
            return Err(Error::SecretMismatch {
                given: "a secret",
                expected: "none (the store keeps its own)",
            });
        }
        (None, Some(check), Some(s)) if check == s.check() => s.clone(),
        (None, Some(_), Some(_)) => {
            return Err(Error::SecretMismatch {
                given: "a secret",
                expected: "the secret the store was made with",
            });
        }
        (None, Some(_), None) => {
            return Err(Error::SecretMismatch {
                given: "none",
                expected: "the secret the store was made with",
            });
        }
        (None, None, Some(s)) => {
            put(&mut tx, "secret_check", &s.check())?;
            s.clone()
        }
        (None, None, None) => {
            let s = Secret(new_key());
            put(&mut tx, "secret", &s.0)?;
            s
        }
    };
    tx.commit().op("committing the store's settings")?;
    Ok(secret)
}

//! Erasure on PostgreSQL leaves nothing readable: the person's keys are
//! gone from every file of the database after an erasure and a checkpoint,
//! so the bytes their deleted rows leave in the pages cannot be opened.
//! The scan reads the raw files (as root: the data directory must be
//! readable) and must see the keys before the erasure.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::TestDb;
use privtel_engine_pg::fuzzing::decode_subjects;
use privtel_engine_pg::{PgEngine, PgOptions};
use privtel_store::parts::Secret;
use privtel_store::{CustomerId, DeviceId, EngineStore, ErasureRequest, Record, Timestamp, UserId};
use privtel_testkit::engine_contract::records_of;
use privtel_testkit::fixtures;

const SECRET: [u8; 32] = [0x42; 32];

/// Every file of the test database's folder, read raw, after a checkpoint.
fn database_bytes(db: &TestDb) -> Vec<u8> {
    let mut client = db.client();
    client.batch_execute("CHECKPOINT").unwrap();
    let dir: String = client.query_one("SHOW data_directory", &[]).unwrap().get(0);
    // The relation files named by pg_relation_filepath live here; reading
    // the whole folder also covers files of relations rewritten since.
    let some: String = client.query_one("SELECT pg_relation_filepath('subject_keys')", &[]).unwrap().get(0);
    let folder = PathBuf::from(&dir).join(some.rsplit_once('/').unwrap().0);
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    assert!(all.len() > 100_000, "the scan read the database's files ({} bytes)", all.len());
    all
}

/// Stores `records` as stream 7 of `device`, from sequence number 1.
fn put(
    engine: &mut PgEngine,
    customer: &CustomerId,
    device: impl Into<String>,
    records: Vec<Record>,
    now: Timestamp,
) {
    let device = DeviceId::new(device.into()).unwrap();
    engine.ingest(customer, &device, 7, 1, records, now).unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The keys (as stored) of the subjects of the records filed under `user`.
fn stored_keys(db: &TestDb, customer: &str, user: &str) -> BTreeSet<Vec<u8>> {
    let mut client = db.client();
    let digest = Secret(SECRET).user(customer, &UserId::new(user).unwrap());
    let mut digests: BTreeSet<Vec<u8>> = BTreeSet::from([digest.to_vec()]);
    for row in client.query("SELECT subjects FROM records WHERE user_digest = $1", &[&&digest[..]]).unwrap() {
        for (_, d) in decode_subjects(row.get(0)).unwrap() {
            digests.insert(d.to_vec());
        }
    }
    let digests: Vec<Vec<u8>> = digests.into_iter().collect();
    client
        .query("SELECT key FROM subject_keys WHERE digest = ANY($1)", &[&digests])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn erased_keys_are_in_no_file_of_the_database() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default().secret(SECRET));
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    let canary = "u-IDCANARY77";
    put(&mut engine, &acme, "dev-plainmark", records_of(canary, "ERASECANARY", 0), now);
    put(&mut engine, &acme, "dev-2", records_of("u-other", "KEEPCANARY", 500), now);
    let alice = stored_keys(&db, "acme", canary);
    let other = stored_keys(&db, "acme", "u-other");
    assert!(alice.len() >= 5 && other.len() >= 5, "{} {}", alice.len(), other.len());
    // As autovacuum would: statistics of every column (histogram bounds
    // would hold key values, out of the rewrite's reach).
    db.client().batch_execute("ANALYZE").unwrap();
    assert!(alice.iter().chain(&other).all(|k| k.len() == 32));

    let before = database_bytes(&db);
    // The scan sees clear values where there are some (device ids are
    // stored in clear) and the person's keys: it can fail.
    assert!(contains(&before, b"dev-plainmark"));
    for k in &alice {
        assert!(contains(&before, k), "a key of the person is not in the files before the erasure");
    }
    // Payloads are sealed and user ids kept as keyed digests: never in clear.
    for plain in [canary, "ERASECANARY", "KEEPCANARY"] {
        assert!(!contains(&before, plain.as_bytes()), "{plain} is in clear in the files");
    }

    let theirs = engine.export_person(&acme, &UserId::new(canary).unwrap(), &mut Vec::new()).unwrap();
    assert!(theirs >= 13, "the person's records and the binary under their home folder: {theirs}");
    let receipt = engine
        .erase_person(&acme, &ErasureRequest::new("r1", UserId::new(canary).unwrap(), now), now)
        .unwrap();
    assert_eq!(receipt.records_removed, theirs);
    let after = database_bytes(&db);
    for k in &alice {
        assert!(!contains(&after, k), "a destroyed key remains in a file of the database");
    }
    for k in &other {
        assert!(contains(&after, k), "another person's key is gone");
    }
    assert!(engine.export_person(&acme, &UserId::new("u-other").unwrap(), &mut Vec::new()).unwrap() > 0);
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn wrapped_keys_are_never_in_clear_and_need_their_wrapping_key() {
    let db = TestDb::new();
    let options = PgOptions::default().secret(SECRET).wrap_key(3, [0x17; 32]);
    let mut engine = db.engine(options);
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    put(&mut engine, &acme, "dev-1", records_of("u-1", "WRAPPED", 0), now);
    let stored = stored_keys(&db, "acme", "u-1");
    assert!(!stored.is_empty() && stored.iter().all(|k| k.len() == 64), "stored wrapped");
    let user = UserId::new("u-1").unwrap();
    let mut out = Vec::new();
    assert!(engine.export_person(&acme, &user, &mut out).unwrap() >= 13);
    assert!(String::from_utf8(out).unwrap().contains("WRAPPED"));
    // Without the wrapping key, or with another, nothing opens.
    let err = db
        .engine(PgOptions::default().secret(SECRET))
        .export_person(&acme, &user, &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("expected a wrapping key"), "{err}");
    let err = db
        .engine(PgOptions::default().secret(SECRET).wrap_key(3, [0x18; 32]))
        .export_person(&acme, &user, &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("wrong key or corrupted row"), "{err}");
}

/// Contract end on PostgreSQL: every key of the customer (its base key and
/// every subject key) is in no file of the database after the deletion and
/// a checkpoint, though the scan finds them before; the other customer reads.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_deleted_customers_keys_are_in_no_file_of_the_database() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default().secret(SECRET));
    let now = fixtures::base_time();
    let (acme, globex) = (CustomerId::new("acme").unwrap(), CustomerId::new("globex").unwrap());
    for c in [&acme, &globex] {
        put(&mut engine, c, "dev-1", records_of("u-ends", "ENDCANARY", 0), now);
    }
    let keys: Vec<Vec<u8>> = db
        .client()
        .query(
            "SELECT key FROM subject_keys WHERE customer = (SELECT id FROM customers WHERE customer = 'acme')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(keys.len() > 2, "a base key and subject keys");
    let before = database_bytes(&db);
    assert!(keys.iter().all(|k| contains(&before, k)), "the scan sees the keys before");
    let receipt = engine.delete_customer(&acme, now).unwrap();
    assert_eq!(receipt.removed["subject_keys"], keys.len() as u64);
    assert!(receipt.keys_destroyed_at.is_some() && !receipt.keys_pending_rewrite);
    let after = database_bytes(&db);
    for k in &keys {
        assert!(!contains(&after, k), "a key of the deleted customer survives in a file");
    }
    let mut out = Vec::new();
    assert!(engine.export_person(&globex, &UserId::new("u-ends").unwrap(), &mut out).unwrap() > 0);
}

/// A transaction of another session that began before the erasure (here
/// a report reading the devices; in the field also an autovacuum `ANALYZE`
/// or a `pg_dump`) could still see the deleted key rows: `VACUUM FULL`
/// would copy them into the new file. The rewrite copies only the rows the
/// erasure's own view holds.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn an_older_snapshot_elsewhere_keeps_no_erased_key() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default().secret(SECRET));
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    let canary = "u-SNAPCANARY";
    put(&mut engine, &acme, "dev-1", records_of(canary, "SNAP", 0), now);
    let keys = stored_keys(&db, "acme", canary);
    assert!(keys.len() >= 5);
    let mut report = db.client();
    report.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM devices;").unwrap();
    engine.erase_person(&acme, &ErasureRequest::new("r1", UserId::new(canary).unwrap(), now), now).unwrap();
    assert!(!engine.partition_report().unwrap().key_rewrite_due);
    let after = database_bytes(&db);
    for k in &keys {
        assert!(!contains(&after, k), "an erased key was copied into the key table's new file");
    }
    report.batch_execute("COMMIT").unwrap();
}

/// A transaction that holds the key table itself keeps its file from being
/// rewritten: the erasure is done (records gone, person suppressed) after
/// its wait, the report says the rewrite is due, and the next sweep does
/// it once that transaction ends. The scan shows each step.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_transaction_holding_the_key_table_delays_the_rewrite_to_the_next_sweep() {
    let db = TestDb::new();
    let options = PgOptions::default()
        .secret(SECRET)
        .key_rewrite_wait(std::time::Duration::from_millis(300))
        .key_rewrite_retry(std::time::Duration::ZERO);
    let mut engine = db.engine(options);
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    let canary = "u-HELDCANARY";
    put(&mut engine, &acme, "dev-1", records_of(canary, "HELD", 0), now);
    put(&mut engine, &acme, "dev-2", records_of("u-stays", "STAYS", 500), now);
    let keys = stored_keys(&db, "acme", canary);
    let other = stored_keys(&db, "acme", "u-stays");
    let mut reader = db.client();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM subject_keys;")
        .unwrap();
    let started = std::time::Instant::now();
    let receipt = engine
        .erase_person(&acme, &ErasureRequest::new("r1", UserId::new(canary).unwrap(), now), now)
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the wait is bounded: {:?}",
        started.elapsed()
    );
    assert!(receipt.records_removed >= 13);
    assert!(engine.partition_report().unwrap().key_rewrite_due, "the report tells the rewrite is due");
    assert_eq!(engine.export_person(&acme, &UserId::new(canary).unwrap(), &mut Vec::new()).unwrap(), 0);
    let held = database_bytes(&db);
    assert!(keys.iter().any(|k| contains(&held, k)), "the deleted rows are still in the pages, as reported");
    // A sweep while the reader holds on: still due, the sweep itself done.
    engine.sweep(&acme, &privtel_retention::RetentionPolicy::default(), now).unwrap();
    assert!(engine.partition_report().unwrap().key_rewrite_due);
    reader.batch_execute("COMMIT").unwrap();
    engine.sweep(&acme, &privtel_retention::RetentionPolicy::default(), now).unwrap();
    assert!(!engine.partition_report().unwrap().key_rewrite_due);
    let after = database_bytes(&db);
    for k in &keys {
        assert!(!contains(&after, k), "a destroyed key remains after the sweep's rewrite");
    }
    for k in &other {
        assert!(contains(&after, k), "another person's key is gone");
    }
    assert!(engine.export_person(&acme, &UserId::new("u-stays").unwrap(), &mut Vec::new()).unwrap() >= 13);
}

/// At contract end, a rewrite that could not be done is on the receipt;
/// `maintain` does it later.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_contract_end_held_off_the_key_table_says_so_and_maintain_rewrites_it() {
    let db = TestDb::new();
    let options = PgOptions::default().secret(SECRET).key_rewrite_wait(std::time::Duration::from_millis(200));
    let mut engine = db.engine(options);
    let now = fixtures::base_time();
    let (acme, globex) = (CustomerId::new("acme").unwrap(), CustomerId::new("globex").unwrap());
    for c in [&acme, &globex] {
        put(&mut engine, c, "dev-1", records_of("u-ends", "ENDCANARY", 0), now);
    }
    let keys = stored_keys(&db, "acme", "u-ends");
    let mut reader = db.client();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM subject_keys;")
        .unwrap();
    let receipt = engine.delete_customer(&acme, now).unwrap();
    assert!(receipt.keys_destroyed_at.is_some(), "nothing of the customer opens through the database");
    assert!(receipt.keys_pending_rewrite, "the keys' bytes are still in the table's file");
    assert!(engine.partition_report().unwrap().key_rewrite_due);
    assert!(receipt.removed["records"] > 0);
    reader.batch_execute("COMMIT").unwrap();
    let report = engine.maintain(now, 1).unwrap();
    assert!(!report.key_rewrite_due);
    let after = database_bytes(&db);
    assert!(keys.iter().all(|k| !contains(&after, k)), "a key of the deleted customer survives in a file");
    assert!(engine.export_person(&globex, &UserId::new("u-ends").unwrap(), &mut Vec::new()).unwrap() > 0);
}

/// A rewrite that fails for another reason than a lock (here: its scratch
/// table's name taken) fails neither the erasure, which committed, nor a
/// sweep; it stays due and reported, `rewrite_keys` says why, and once
/// the cause is gone the next try removes the keys from the files.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_failing_rewrite_stays_due_and_fails_no_erasure_or_sweep() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default().secret(SECRET));
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    let canary = "u-FAILCANARY";
    put(&mut engine, &acme, "dev-1", records_of(canary, "FAIL", 0), now);
    let keys = stored_keys(&db, "acme", canary);
    db.client().batch_execute("CREATE TABLE privtel_live_keys (x int)").unwrap();
    let receipt = engine
        .erase_person(&acme, &ErasureRequest::new("r1", UserId::new(canary).unwrap(), now), now)
        .unwrap();
    assert!(receipt.records_removed >= 13);
    assert!(engine.partition_report().unwrap().key_rewrite_due);
    engine.sweep(&acme, &privtel_retention::RetentionPolicy::default(), now).unwrap();
    let e = engine.rewrite_keys().unwrap_err().to_string();
    assert!(e.contains("rewriting the key table") && e.contains("already exists"), "{e}");
    assert!(!e.contains("FAILCANARY"), "{e}");
    let held = database_bytes(&db);
    assert!(keys.iter().any(|k| contains(&held, k)), "not rewritten, as reported");
    db.client().batch_execute("DROP TABLE privtel_live_keys").unwrap();
    assert!(engine.rewrite_keys().unwrap());
    assert!(!engine.partition_report().unwrap().key_rewrite_due);
    let after = database_bytes(&db);
    assert!(keys.iter().all(|k| !contains(&after, k)), "a destroyed key remains after the rewrite");
}

/// A database of schema version 3 (its key column analysed, so key
/// values sit in `pg_statistic`): opening it migrates to version 4, which
/// keeps no statistics of the key column and drops those there.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn version_4_keeps_no_key_statistics() {
    let db = TestDb::new();
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    {
        let mut engine = db.engine(PgOptions::default().secret(SECRET));
        put(&mut engine, &acme, "dev-1", records_of("u-stats", "STATS", 0), now);
    }
    let mut client = db.client();
    let key_stats = |client: &mut postgres::Client| -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'subject_keys' AND attname = 'key'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    // Version 3 as it was: statistics kept, and taken.
    client
        .batch_execute(
            "ALTER TABLE subject_keys ALTER COLUMN key SET STATISTICS -1;
             ALTER TABLE streams DROP COLUMN used_at;
             ANALYZE subject_keys;
             UPDATE privtel_meta SET value = '\\x0300000000000000'::bytea WHERE name = 'schema';",
        )
        .unwrap();
    assert_eq!(key_stats(&mut client), 1, "version 3 analysed its keys");
    let keys = stored_keys(&db, "acme", "u-stats");
    let before = database_bytes(&db);
    assert!(keys.iter().any(|k| contains(&before, k)));

    let engine = db.engine(PgOptions::default().secret(SECRET));
    assert_eq!(key_stats(&mut client), 0, "the migration dropped them");
    client.batch_execute("ANALYZE subject_keys").unwrap();
    assert_eq!(key_stats(&mut client), 0, "and none are taken again");
    let version: Vec<u8> =
        client.query_one("SELECT value FROM privtel_meta WHERE name = 'schema'", &[]).unwrap().get(0);
    assert_eq!(version, 5i64.to_le_bytes());
    assert!(engine.export_person(&acme, &UserId::new("u-stats").unwrap(), &mut Vec::new()).unwrap() >= 13);
}

/// A database of schema version 4 (streams not dated) migrates to version
/// 5: every mark is kept and dated at the migration, so a sweep takes it
/// only once its stream has gone unused a whole TTL after the upgrade.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn version_5_keeps_the_marks_dated_at_the_migration() {
    let db = TestDb::new();
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    let device = DeviceId::new("dev-1").unwrap();
    {
        let mut engine = db.engine(PgOptions::default().secret(SECRET));
        put(&mut engine, &acme, "dev-1", records_of("u-marks", "MARKS", 0), now);
    }
    let mut client = db.client();
    // Version 4 as it was.
    client
        .batch_execute(
            "ALTER TABLE streams DROP COLUMN used_at;
             UPDATE privtel_meta SET value = '\\x0400000000000000'::bytea WHERE name = 'schema';",
        )
        .unwrap();
    let before = privtel_store::parts::nanos(Timestamp::now());
    let mut engine = db.engine(PgOptions::default().secret(SECRET));
    let after = Timestamp::now();
    let version: Vec<u8> =
        client.query_one("SELECT value FROM privtel_meta WHERE name = 'schema'", &[]).unwrap().get(0);
    assert_eq!(version, 5i64.to_le_bytes());
    let mark = engine.high_water(&acme, &device, 7).unwrap();
    assert!(mark > 0, "the mark was kept");
    let dated: Vec<i64> =
        client.query("SELECT used_at FROM streams", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    let upto = privtel_store::parts::nanos(after);
    assert!(!dated.is_empty() && dated.iter().all(|t| (before..=upto).contains(t)), "{dated:?}");
    let retention = privtel_store::RetentionPolicy {
        device_inactivity: time::Duration::days(36_500),
        ..privtel_store::RetentionPolicy::default()
    };
    let day = after.checked_add(time::Duration::days(1)).unwrap();
    assert_eq!(engine.sweep(&acme, &retention, day).unwrap().streams, 0);
    assert_eq!(engine.high_water(&acme, &device, 7).unwrap(), mark);
    let month = after.checked_add(time::Duration::days(31)).unwrap();
    assert_eq!(engine.sweep(&acme, &retention, month).unwrap().streams, 1);
    assert_eq!(engine.high_water(&acme, &device, 7).unwrap(), 0);
}

/// Erasures (each followed by its rewrite of the key table) while another
/// engine ingests new people and a third exports the customer and one
/// person over and over: no export fails for a key erased or rewritten
/// under it, every person ingested meanwhile reads back whole, and no
/// erased key is left in the files.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn erasures_while_others_ingest_and_export() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = TestDb::new();
    let acme = CustomerId::new("acme").unwrap();
    let now = fixtures::base_time();
    let mut eraser = db.engine(PgOptions::default().secret(SECRET));
    // Each person's own personal text (tags), so no erasure reaches
    // another's records.
    for i in 0..20u128 {
        let (user, tag) = (format!("u-gone-{i}"), format!("GONE{i}"));
        put(&mut eraser, &acme, format!("dev-{i}"), records_of(&user, &tag, 1000 * i), now);
    }
    put(&mut eraser, &acme, "dev-stays", records_of("u-stays", "STAYS", 99_000), now);
    // What one person's export holds (the same for everyone here).
    let n = eraser.export_person(&acme, &UserId::new("u-stays").unwrap(), &mut Vec::new()).unwrap();
    assert!(n >= 13);
    let gone: Vec<Vec<u8>> = (0..20).flat_map(|i| stored_keys(&db, "acme", &format!("u-gone-{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (db.url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut e = PgEngine::connect(&url, PgOptions::default().secret(SECRET)).unwrap();
            let acme = CustomerId::new("acme").unwrap();
            let mut users = Vec::new();
            while !stop.load(Ordering::Relaxed) || users.len() < 3 {
                let i = users.len() as u128;
                let (user, tag) = (format!("u-new-{i}"), format!("NEW{i}"));
                put(&mut e, &acme, format!("dev-new-{i}"), records_of(&user, &tag, 200_000 + 1000 * i), now);
                users.push(user);
            }
            users
        })
    };
    let exporter = {
        let (url, stop) = (db.url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let e = PgEngine::connect(&url, PgOptions::default().secret(SECRET)).unwrap();
            let acme = CustomerId::new("acme").unwrap();
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) || rounds < 3 {
                let stays = e.export_person(&acme, &UserId::new("u-stays").unwrap(), &mut Vec::new());
                assert_eq!(stays.unwrap(), n, "the person who stays exports whole");
                // People being erased meanwhile: all of them, or nothing.
                for i in 0..20 {
                    let user = UserId::new(format!("u-gone-{i}")).unwrap();
                    let got = e.export_person(&acme, &user, &mut Vec::new()).unwrap();
                    assert!(got == n || got == 0, "u-gone-{i}: {got} of {n}");
                }
                e.export_customer(&acme, &serde_json::Map::new(), &mut Vec::new()).unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    for i in 0..20u128 {
        let request = ErasureRequest::new(format!("r{i}"), UserId::new(format!("u-gone-{i}")).unwrap(), now);
        assert_eq!(eraser.erase_person(&acme, &request, now).unwrap().records_removed, n);
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = exporter.join().expect("no export failed");
    let users = writer.join().expect("no ingest failed");
    assert!(rounds >= 3 && users.len() >= 3, "{rounds} exports, {} people ingested", users.len());
    for user in &users {
        let got = eraser.export_person(&acme, &UserId::new(user.as_str()).unwrap(), &mut Vec::new()).unwrap();
        assert_eq!(got, n, "{user} reads back whole");
    }
    assert!(!eraser.partition_report().unwrap().key_rewrite_due);
    let after = database_bytes(&db);
    assert!(gone.iter().all(|k| !contains(&after, k)), "an erased key remains in a file");
}

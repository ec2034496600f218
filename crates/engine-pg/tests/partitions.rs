//! Partitions on PostgreSQL: a sweep drops whole partitions (and deletes
//! rows only in the one its cut-off falls in); partitions are made ahead
//! of time; a record whose day has no partition lands in the DEFAULT
//! partition, which is reported, never silent, and emptied into the right
//! partition once that exists.

mod common;

use common::TestDb;
use privtel_engine_pg::{PgError, PgOptions};
use privtel_model::RecordBody;
use privtel_store::{CustomerId, DeviceId, Duration, EngineStore, Record, RetentionPolicy, Ttl};
use privtel_testkit::engine_contract::event_at;
use privtel_testkit::fixtures;

/// The partitions of `parent` (`records` or `mentions`) but its default.
fn partitions_of(db: &TestDb, parent: &str) -> Vec<String> {
    let mut client = db.client();
    let mut names: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass AND c.relname::text <> $1 || '_default'",
            &[&parent],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

fn partitions(db: &TestDb) -> Vec<String> {
    partitions_of(db, "records")
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_sweep_drops_whole_partitions() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default());
    let acme = CustomerId::new("acme").unwrap();
    // 2026-11-27T04:00Z plus half a day: the 7-day cut-off falls at noon.
    let now = fixtures::base_time().checked_add(Duration::hours(8)).unwrap();
    let days = 12;
    let records: Vec<Record> = (0..days * 10)
        .map(|i| event_at(i, now.checked_sub(Duration::hours(i as i64 * 24 / 10)).unwrap()))
        .collect();
    engine.ingest(&acme, &DeviceId::new("d").unwrap(), 7, 1, records, now).unwrap();
    let before = partitions(&db);
    assert_eq!(before.len(), days as usize + 1, "{before:?}");
    let retention = RetentionPolicy { events: Ttl::DAYS_7, ..RetentionPolicy::default() };
    let report = engine.sweep(&acme, &retention, now).unwrap();
    let after = partitions(&db);
    // Ages 7.0–12 days are expired: every older day is a dropped partition,
    // the day of the cut-off keeps its partition and loses its older rows.
    let expired = (0..days * 10).filter(|i| i * 24 / 10 > 7 * 24).count() as u64;
    assert_eq!(report.events, expired, "{report:?}");
    assert_eq!(engine.record_count().unwrap(), days * 10 - expired);
    assert!(after.len() < before.len() - 3, "{before:?} -> {after:?}");
    assert!(after.iter().all(|p| before.contains(p)));
    engine.check_default().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn partitions_are_made_ahead_and_the_default_partition_is_reported() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default().window(30, 2));
    let acme = CustomerId::new("acme").unwrap();
    let now = fixtures::base_time();
    let d = DeviceId::new("d").unwrap();
    engine.ingest(&acme, &d, 7, 1, vec![event_at(1, now)], now).unwrap();
    let report = engine.maintain(now, 7).unwrap();
    // 8 days of events, one of which (today's) existed; no objects: acme
    // sends none, so no empty object tables are made for a sweep to drop.
    assert_eq!((report.created, report.partitions, report.default_records), (7, 8, 0));
    assert_eq!(engine.maintain(now, 7).unwrap().created, 0, "made once");
    // Once acme sends an object (filed under today), its object days are
    // made ahead too; another customer's are not.
    let globex = CustomerId::new("globex").unwrap();
    engine.ingest(&globex, &d, 7, 1, vec![event_at(1, now)], now).unwrap();
    let object =
        fixtures::records("obj").into_iter().find(|r| matches!(r.body, RecordBody::Binary(_))).unwrap();
    assert_eq!(engine.ingest(&acme, &d, 7, 2, vec![object], now).unwrap().stored, 1);
    let report = engine.maintain(now, 7).unwrap();
    // acme: 7 more object days; globex: 7 more event days.
    assert_eq!((report.created, report.partitions), (14, 8 + 8 + 8));
    assert_eq!(engine.maintain(now, 7).unwrap().created, 0, "made once");

    // A record 20 days ahead (a device's clock): no partition is made for it.
    let ahead = now.checked_add(Duration::days(20)).unwrap();
    let out = engine.ingest(&acme, &d, 7, 3, vec![event_at(2, ahead)], now).unwrap();
    assert_eq!(out.stored, 1);
    assert_eq!(engine.default_routed(), 1);
    let err = engine.check_default().unwrap_err();
    assert!(matches!(err, PgError::DefaultPartitionHolds { records: 1 }), "{err}");
    assert_eq!(err.to_string(), err.to_string().to_lowercase());
    assert_eq!(engine.record_count().unwrap(), 4);
    // Once its day is within the window the partition is made and the row
    // moves out of the default partition.
    let later = now.checked_add(Duration::days(19)).unwrap();
    engine.ingest(&acme, &d, 7, 4, vec![event_at(3, ahead)], later).unwrap();
    assert_eq!(engine.check_default().unwrap().default_records, 0);
    assert_eq!(engine.record_count().unwrap(), 5);
    // Both are replays-checked in their partition now.
    let again = engine.ingest(&acme, &d, 7, 5, vec![event_at(2, ahead), event_at(3, ahead)], later).unwrap();
    assert_eq!(again.duplicates, 2);
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_mentions_partition_has_no_toast_table() {
    // A sweep's time goes mostly to unlinking files: a partition of
    // `mentions` (16-byte digests, kept inline) has none of its own for
    // TOAST. `records` keeps one: a record's payload can be large.
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default());
    let acme = CustomerId::new("acme").unwrap();
    let now = fixtures::base_time();
    let records = fixtures::records_of("u-canary", "toast", 1);
    let out = engine.ingest(&acme, &DeviceId::new("d").unwrap(), 7, 1, records, now).unwrap();
    assert!(out.stored > 0);
    let mut client = db.client();
    let rows = client
        .query(
            "SELECT relname::text, reltoastrelid <> 0 FROM pg_class
             WHERE relname ~ '^(records|mentions)_p' AND relkind = 'r' ORDER BY relname",
            &[],
        )
        .unwrap();
    let mentions_rows: i64 = client.query_one("SELECT count(*) FROM mentions", &[]).unwrap().get(0);
    assert!(mentions_rows > 0, "the records name people");
    let checked = rows.iter().filter(|r| r.get::<_, String>(0).starts_with("mentions_p")).count();
    assert!(checked > 0, "a mentions partition was made and looked at");
    for row in rows {
        let (name, toast): (String, bool) = (row.get(0), row.get(1));
        assert_eq!(toast, name.starts_with("records"), "{name}");
    }
}

fn mention_partitions(db: &TestDb) -> Vec<String> {
    partitions_of(db, "mentions")
}

/// An execution event of `user` at `at`: its user name and home folder are
/// mentions (keyed digests in `mentions`), beyond its user id.
fn naming_event(user: &str, at: privtel_store::Timestamp, id: u128) -> Record {
    let mut r = privtel_testkit::engine_contract::records_of(user, &format!("m{id}"), id << 20)
        .into_iter()
        .find(|r| r.body.kind_name() == "execution")
        .unwrap();
    if let RecordBody::Event(e) = &mut r.body {
        e.recorded_at = at;
    }
    r
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_day_gets_a_mentions_partition_only_when_its_records_name_someone() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default().window(30, 2));
    let acme = CustomerId::new("acme").unwrap();
    let d = DeviceId::new("d").unwrap();
    let now = fixtures::base_time();
    // Named by user id only: a records partition, no mentions partition.
    engine.ingest(&acme, &d, 7, 1, vec![event_at(1, now)], now).unwrap();
    assert_eq!(partitions(&db).len(), 1);
    assert!(mention_partitions(&db).is_empty(), "{:?}", mention_partitions(&db));
    assert_eq!(engine.maintain(now, 3).unwrap().created, 3);
    assert!(mention_partitions(&db).is_empty(), "made ahead only for a customer whose records name people");
    // A record naming someone by login: the day's mentions partition.
    assert_eq!(engine.ingest(&acme, &d, 7, 2, vec![naming_event("u-1", now, 1)], now).unwrap().stored, 1);
    assert_eq!(mention_partitions(&db).len(), 1);
    engine.maintain(now, 3).unwrap();
    assert_eq!(mention_partitions(&db).len(), 4, "now made ahead too: {:?}", mention_partitions(&db));

    // A day made ahead by `maintain` beyond this engine's window: its
    // records partition exists, so its mentions get theirs too, never the
    // default.
    let in_default = |db: &TestDb| -> i64 {
        db.client().query_one("SELECT count(*) FROM mentions_default", &[]).unwrap().get(0)
    };
    let day3 = now.checked_add(Duration::days(3)).unwrap();
    let out = engine.ingest(&acme, &d, 7, 3, vec![naming_event("u-3", day3, 3)], now).unwrap();
    assert_eq!((out.stored, engine.default_routed()), (1, 0));
    assert_eq!(in_default(&db), 0, "mentions of a day with a records partition are in theirs");

    // Outside the window, a naming record and its mentions go to the
    // defaults; once its day is in the window its records partition is
    // made, and its mentions move out with it.
    let ahead = now.checked_add(Duration::days(20)).unwrap();
    engine.ingest(&acme, &d, 7, 4, vec![naming_event("u-2", ahead, 2)], now).unwrap();
    assert!(in_default(&db) > 0);
    let later = now.checked_add(Duration::days(19)).unwrap();
    engine.ingest(&acme, &d, 7, 5, vec![event_at(4, ahead)], later).unwrap();
    assert_eq!(engine.check_default().unwrap().default_records, 0);
    assert_eq!(in_default(&db), 0, "the mentions left the default with their records");
    // A mention an earlier version's writer left in the default for a day
    // that has a records partition (it made none for mentions) goes with
    // its day at the sweep.
    let (c, day): (i32, i32) = {
        let row = db
            .client()
            .query_one("SELECT customer, day FROM records ORDER BY day DESC LIMIT 1", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    db.client().batch_execute(&format!("DROP TABLE IF EXISTS mentions_p{c}_0_{day}")).unwrap();
    db.client()
        .execute(
            "INSERT INTO mentions (customer, class, day, digest, kind, record_id) VALUES ($1, 0, $2, $3, 3, 1)",
            &[&c, &day, &vec![9u8; 16]],
        )
        .unwrap();
    assert_eq!(in_default(&db), 1);
    // The person is still found (export), then swept with their day.
    let n =
        engine.export_person(&acme, &privtel_store::UserId::new("u-2").unwrap(), &mut Vec::new()).unwrap();
    assert_eq!(n, 1);
    let far = ahead.checked_add(Duration::days(31)).unwrap();
    engine.sweep(&acme, &RetentionPolicy::default(), far).unwrap();
    let left: i64 = db.client().query_one("SELECT count(*) FROM mentions", &[]).unwrap().get(0);
    assert_eq!(left, 0, "no mention outlives its record");
    engine.check_default().unwrap();
}

/// Verdict writes and erasures of a known customer take no number from the
/// customers' id sequence (an insert meeting the existing row would: at
/// 2^31 of them no customer could be erased or registered any more).
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn verdict_writes_and_erasures_use_up_no_customer_ids() {
    use privtel_model::{BinaryVerdict, Digest, ThreatLevel};
    use privtel_store::{ErasureRequest, UserId};
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default());
    let now = fixtures::base_time();
    let acme = CustomerId::new("acme").unwrap();
    let sha: Digest = fixtures::EMPTY_SHA256.parse().unwrap();
    let verdict = BinaryVerdict { sha256: sha, threat: ThreatLevel::High, category: None };
    for _ in 0..50 {
        engine.record_verdicts(&acme, std::slice::from_ref(&verdict), &[], now).unwrap();
    }
    for i in 0..5 {
        let request = ErasureRequest::new(format!("r{i}"), UserId::new("u-1").unwrap(), now);
        engine.erase_person(&acme, &request, now).unwrap();
    }
    let globex = CustomerId::new("globex").unwrap();
    engine.record_verdicts(&globex, &[verdict], &[], now).unwrap();
    let ids: Vec<(String, i32)> = db
        .client()
        .query("SELECT customer, id FROM customers ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(ids, vec![("acme".to_owned(), 1), ("globex".to_owned(), 2)]);
}

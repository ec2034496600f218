//! The engine store on real SQLite: retention, idempotent ingest, export,
//! erasure with a raw scan of the file, keys, schema versions.

use privtel_model::{CustomerId, DeviceId, Event, EventBody, EventId, Record, RecordBody, Timestamp, UserId};
use privtel_retention::{RecordClass, RetentionPolicy, Ttl};
use privtel_store::{AtRestKey, EngineOptions, EngineStore, ErasureRequest, Error, SqliteEngine};
use privtel_testkit::fixtures;
use proptest::prelude::*;
use time::Duration;

pub(crate) fn engine(
    dir: &tempfile::TempDir,
    retention: RetentionPolicy,
    key: Option<AtRestKey>,
) -> SqliteEngine {
    let mut options = EngineOptions::default().retention(retention);
    if let Some(key) = key {
        options = options.key(key);
    }
    SqliteEngine::open(dir.path().join("engine.db"), options).unwrap()
}

pub(crate) fn acme() -> CustomerId {
    CustomerId::new("acme").unwrap()
}

/// The stream every single-stream test sends on.
pub(crate) const S: u64 = 7;

pub(crate) fn event_at(i: u64, at: Timestamp) -> Record {
    let mut r = fixtures::records("t").into_iter().find(|r| r.body.kind_name() == "feature_usage").unwrap();
    if let RecordBody::Event(e) = &mut r.body {
        e.recorded_at = at;
        e.id = EventId::from_u128(u128::from(i));
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against the real store: after a sweep, nothing past its TTL
    /// survives and nothing younger is gone.
    #[test]
    fn sweeps_remove_exactly_the_expired(
        ages in prop::collection::vec(-5i64..(20 * 86_400), 1..60),
        ttl in prop::sample::select(vec![Ttl::DAYS_7, Ttl::DAYS_14, Ttl::custom(Duration::seconds(3_600))]),
        edge in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let retention = RetentionPolicy { events: ttl, ..RetentionPolicy::default() };
        let mut store = engine(&dir, retention, None);
        let now = fixtures::base_time();
        let ttl_s = ttl.duration().whole_seconds();
        // Put some records exactly on the boundary and one second past it.
        let mut ages = ages;
        if edge {
            ages.extend([ttl_s, ttl_s + 1, ttl_s - 1]);
        }
        let records: Vec<Record> = ages.iter().enumerate().map(|(i, a)| event_at(i as u64, now.checked_sub(Duration::seconds(*a)).unwrap())).collect();
        store.ingest(&acme(), &DeviceId::new("d").unwrap(), S, 1, records, now).unwrap();
        let report = store.sweep(&acme(), &retention, now).unwrap();
        let expected_gone = ages.iter().filter(|a| retention.is_expired(RecordClass::Event, now.checked_sub(Duration::seconds(**a)).unwrap(), now)).count();
        prop_assert_eq!(report.events as usize, expected_gone);
        prop_assert_eq!(store.record_count().unwrap() as usize, ages.len() - expected_gone);
        prop_assert_eq!(expected_gone, ages.iter().filter(|a| **a > ttl_s).count());
    }
}

#[test]
fn a_retried_batch_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let device = DeviceId::new("dev-0001").unwrap();
    let now = fixtures::base_time();
    let records = fixtures::records("x");
    let first = store.ingest(&acme(), &device, S, 1, records[..10].to_vec(), now).unwrap();
    assert_eq!((first.stored, first.high_water), (10, 10));
    // The retry overlaps: 5..18, of which 5..10 were stored.
    let retry = store.ingest(&acme(), &device, S, 5, records[4..].to_vec(), now).unwrap();
    assert_eq!((retry.stored, retry.duplicates, retry.high_water), (8, 6, 18));
    assert_eq!(store.record_count().unwrap(), 18);
    assert_eq!(store.high_water(&acme(), &device, S).unwrap(), 18);
    assert_eq!(store.high_water(&acme(), &DeviceId::new("other").unwrap(), S).unwrap(), 0);
}

#[test]
fn a_replay_under_new_sequence_numbers_is_stored_once_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let (a, b) = (DeviceId::new("dev-a").unwrap(), DeviceId::new("dev-b").unwrap());
    let events: Vec<Record> = (0..50).map(|i| event_at(i, now)).collect();
    assert_eq!(store.ingest(&acme(), &a, S, 1, events.clone(), now).unwrap().stored, 50);
    // The same events again above the high-water mark (an old spool, a
    // source read twice): recognised by their ids.
    let replay = store.ingest(&acme(), &a, S, 51, events.clone(), now).unwrap();
    assert_eq!((replay.stored, replay.duplicates, replay.high_water), (0, 50, 100));
    // Half new, half replayed, in one batch.
    let mixed: Vec<Record> = (25..75).map(|i| event_at(i, now)).collect();
    let out = store.ingest(&acme(), &a, S, 101, mixed, now).unwrap();
    assert_eq!((out.stored, out.duplicates), (25, 25));
    // Another device's events with the same ids are its own.
    assert_eq!(store.ingest(&acme(), &b, S, 1, events, now).unwrap().stored, 50);
    assert_eq!(store.record_count().unwrap(), 125);
}

#[test]
fn inactive_devices_are_purged_whole() {
    let dir = tempfile::tempdir().unwrap();
    let retention = RetentionPolicy {
        events: Ttl::custom(Duration::days(3650)),
        objects: Ttl::custom(Duration::days(3650)),
        ..RetentionPolicy::default()
    };
    let mut store = engine(&dir, retention, None);
    let now = fixtures::base_time();
    store.ingest(&acme(), &DeviceId::new("quiet").unwrap(), S, 1, fixtures::records("q"), now).unwrap();
    store.ingest(&acme(), &DeviceId::new("busy").unwrap(), S, 1, vec![event_at(1, now)], now).unwrap();
    let later = now.checked_add(Duration::days(40)).unwrap();
    store.ingest(&acme(), &DeviceId::new("busy").unwrap(), S, 2, vec![event_at(2, later)], later).unwrap();
    assert_eq!(
        store.sweep(&acme(), &retention, now.checked_add(Duration::days(45)).unwrap()).unwrap().devices,
        0
    );
    let report = store
        .sweep(&acme(), &retention, now.checked_add(Duration::days(45) + Duration::SECOND).unwrap())
        .unwrap();
    assert_eq!(report.devices, 1);
    // Everything the quiet device sent goes, whatever device id the
    // records themselves name.
    assert_eq!(report.inactive_device_records, 18, "{report:?}");
    assert_eq!(store.record_count().unwrap(), 2);
}

pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

pub(crate) fn file_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        all.extend(std::fs::read(dir.path().join(format!("engine.db{suffix}"))).unwrap_or_default());
    }
    all
}

#[test]
fn erasure_leaves_no_trace_and_suppresses_later_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let alice = UserId::new("u-1042").unwrap();
    // The canary person's records (user u-1042) and someone else's.
    let mut bob_records = fixtures::records("BOBCANARY");
    for r in &mut bob_records {
        if let RecordBody::Event(e) = &mut r.body {
            e.user = Some(UserId::new("u-2000").unwrap());
        }
        if let RecordBody::User(u) = &mut r.body {
            u.id = UserId::new("u-2000").unwrap();
        }
    }
    let mut alice_records = fixtures::records("ALICECANARY");
    alice_records.retain(|r| r.body.user().is_some());
    store.ingest(&acme(), &DeviceId::new("d1").unwrap(), S, 1, alice_records.clone(), now).unwrap();
    store.ingest(&acme(), &DeviceId::new("d2").unwrap(), S, 1, bob_records, now).unwrap();

    let mut export = Vec::new();
    let lines = store.export_person(&acme(), &alice, &mut export).unwrap();
    assert_eq!(lines as usize, alice_records.len());
    let text = String::from_utf8(export).unwrap();
    assert!(text.contains("ALICECANARY") && !text.contains("BOBCANARY"));
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["id"].is_i64()
                && v["stored_at"].is_string()
                && v["program"].is_string()
                && v["record"].is_object()
        );
    }
    assert!(contains(&file_bytes(&dir), "ALICECANARY"), "the raw scan sees clear values");

    let receipt = store
        .erase_person(
            &acme(),
            &ErasureRequest::new("req-7", alice.clone(), now),
            now.checked_add(Duration::hours(2)).unwrap(),
        )
        .unwrap();
    assert_eq!(receipt.records_removed as usize, alice_records.len());
    assert!(!receipt.overdue);
    let receipt_json = serde_json::to_string(&receipt).unwrap();
    assert!(!receipt_json.contains("u-1042") && !receipt_json.contains("ALICECANARY"), "{receipt_json}");

    assert_eq!(store.export_person(&acme(), &alice, &mut Vec::new()).unwrap(), 0);
    drop(store);
    let raw = file_bytes(&dir);
    assert!(!contains(&raw, "ALICECANARY"), "erased values linger in the database file");
    assert!(contains(&raw, "BOBCANARY"), "the other person is untouched");

    // Later batches about the erased person are dropped.
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let d1 = DeviceId::new("d1").unwrap();
    let next = store.high_water(&acme(), &d1, S).unwrap() + 1;
    let again = store.ingest(&acme(), &d1, S, next, alice_records.clone(), now).unwrap();
    assert_eq!((again.stored, again.suppressed), (0, alice_records.len() as u64));
}

#[test]
fn erasure_follows_pseudonyms() {
    use privtel_model::{KeyId, Personal, Pseudonym};
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let token = Pseudonym::new(KeyId::new(1), [5; 16]);
    let mut records = fixtures::records("p");
    // The user record carries the person's email pseudonym; a licence
    // session of no known user carries the same pseudonym.
    let mut linked = 0;
    for r in &mut records {
        match &mut r.body {
            RecordBody::User(u) => u.email = Personal::Pseudonym(token),
            RecordBody::Event(Event { body: EventBody::LicenceSession(l), user, .. }) => {
                l.email = Personal::Pseudonym(token);
                *user = None;
                linked += 1;
            }
            RecordBody::Event(Event { user, .. }) => *user = None,
            _ => {}
        }
    }
    store.ingest(&acme(), &DeviceId::new("d").unwrap(), S, 1, records, now).unwrap();
    let receipt = store
        .erase_person(&acme(), &ErasureRequest::new("r", UserId::new("u-1042").unwrap(), now), now)
        .unwrap();
    // The user record, the licence session by its pseudonym, and the binary
    // and the execution whose clear paths are under /home/alice-p/, the
    // user record's login.
    assert_eq!(linked, 1);
    assert_eq!(receipt.records_removed, 1 + linked + 2);
    assert_eq!(receipt.pseudonyms_suppressed, 1);
    // login exact and folded, upn, full name
    assert_eq!(receipt.identifiers_suppressed, 4);
}

#[test]
fn sealed_engine_and_schema_versions() {
    let dir = tempfile::tempdir().unwrap();
    let now = fixtures::base_time();
    let mut store = engine(&dir, RetentionPolicy::default(), Some(AtRestKey::new(4, [1; 32])));
    store.ingest(&acme(), &DeviceId::new("d").unwrap(), S, 1, fixtures::records("SEALED"), now).unwrap();
    let user = UserId::new("u-1042").unwrap();
    assert!(store.export_person(&acme(), &user, &mut Vec::new()).unwrap() > 0);
    drop(store);
    assert!(!contains(&file_bytes(&dir), "SEALED"));
    let err = engine(&dir, RetentionPolicy::default(), Some(AtRestKey::new(4, [2; 32])))
        .export_person(&acme(), &user, &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, Error::WrongKey { key_id: 4, .. }));
    assert!(err.to_string().ends_with("does not open under key 4: wrong key or corrupted data"));
    let err = engine(&dir, RetentionPolicy::default(), Some(AtRestKey::new(5, [1; 32])))
        .export_person(&acme(), &user, &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().ends_with("is sealed under key 4, but the store has key 5"), "{err}");

    // A file from a newer version is refused, not damaged.
    set_user_version(&dir.path().join("engine.db"), 99);
    let err = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "database schema version 99 is newer than the 7 this version understands");
}

/// Sets `PRAGMA user_version` of a closed database by writing its header
/// field (the big-endian u32 at offset 60), so the test needs no SQLite
/// dependency of its own.
pub(crate) fn set_user_version(path: &std::path::Path, v: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[60..64].copy_from_slice(&v.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A checkpointer on its own thread copies the log while the engine
/// writes; the next write after a complete copy starts the log over; and
/// an erasure's checkpoint is never refused as busy because of it, nor does
/// anything erased survive in the files.
#[test]
fn a_checkpointer_copies_the_log_beside_the_writer_and_erasure_still_settles() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let device = DeviceId::new("d1").unwrap();
    let batch = |i: u64| (0..50).map(|j| event_at(i * 1_000 + j, now)).collect::<Vec<_>>();
    store.ingest(&acme(), &device, S, 1, batch(0), now).unwrap();
    let checkpointer = store.checkpointer().unwrap();
    let (log, copied) = checkpointer.passive().unwrap();
    assert!(log > 0 && copied == log, "({log}, {copied})");
    // All of it copied, no reader: the next transaction starts the log over.
    store.ingest(&acme(), &device, S, 51, batch(1), now).unwrap();
    let (again, _) = checkpointer.passive().unwrap();
    assert!(again < log, "the log went on from frame {log} to {again}");

    // Erasures while the checkpointer copies without a pause.
    let stop = &std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                checkpointer.passive().unwrap();
                // The lock is not fair: room for the erasure to take it.
                std::thread::yield_now();
            }
        });
        for round in 0..20u64 {
            let user = UserId::new(format!("u-canary{round}")).unwrap();
            let mut records = fixtures::records(&format!("ERASEDCANARY{round}"));
            records.retain(|r| r.body.user().is_some());
            for r in &mut records {
                if let RecordBody::Event(e) = &mut r.body {
                    e.user = Some(user.clone());
                    e.id = EventId::from_u128(u128::from(round) << 64 | e.id.as_u128());
                }
                if let RecordBody::User(u) = &mut r.body {
                    u.id = user.clone();
                }
            }
            let d = DeviceId::new(format!("d-{round}")).unwrap();
            store.ingest(&acme(), &d, S, 1, records, now).unwrap();
            let request = ErasureRequest::new(format!("req-{round}"), user, now);
            store.erase_person(&acme(), &request, now).unwrap();
            assert!(!store.log_pending(), "round {round}: the erasure's checkpoint was refused");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    drop(store);
    let raw = file_bytes(&dir);
    assert!(!contains(&raw, "ERASEDCANARY"), "erased values linger in the files");
}

#[test]
fn an_erasure_request_s_debug_never_shows_the_person() {
    let request = ErasureRequest::new("req-1", UserId::new("u-DEBUGCANARY").unwrap(), fixtures::base_time());
    let text = format!("{request:?} {request:#?}");
    assert!(!text.contains("DEBUGCANARY"), "{text}");
    assert!(text.contains("req-1") && text.contains("redacted"), "{text}");
}

/// A stored digest of the wrong length is a typed error naming what was
/// expected, never read as zeros or skipped.
#[test]
fn a_damaged_digest_is_an_error_not_a_guess() {
    let now = fixtures::base_time();
    let alice = UserId::new("u-1042").unwrap();
    let raw = |dir: &tempfile::TempDir, sql: &str| {
        let conn = rusqlite::Connection::open(dir.path().join("engine.db")).unwrap();
        assert!(conn.execute(sql, []).unwrap() > 0, "{sql}");
    };
    let check = |e: Error, what: &str| {
        let text = e.to_string();
        assert!(matches!(&e, Error::Corrupt { .. }), "{e:?}");
        assert!(text.contains(what) && text.contains("expected 16"), "{text}");
        assert!(!text.contains("fefe") && !text.contains("254"), "{text}");
    };
    // A suppressed digest and a tombstone: refused when the store opens.
    for (table, what) in [("suppressed", "suppressed digest"), ("deleted_customers", "customer tombstone")] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = engine(&dir, RetentionPolicy::default(), None);
        store.ingest(&acme(), &DeviceId::new("d").unwrap(), S, 1, fixtures::records("x"), now).unwrap();
        store.erase_person(&acme(), &ErasureRequest::new("r", alice.clone(), now), now).unwrap();
        drop(store);
        if table == "suppressed" {
            raw(&dir, "UPDATE suppressed SET digest = X'FEFEFE' WHERE kind = 1");
        } else {
            raw(&dir, "INSERT INTO deleted_customers (digest, deleted_at) VALUES (X'FEFEFE', 0)");
        }
        let e = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap_err();
        check(e, what);
    }
    // A mention digest of the person's record: export and erasure refuse.
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    store.ingest(&acme(), &DeviceId::new("d").unwrap(), S, 1, fixtures::records("x"), now).unwrap();
    raw(
        &dir,
        "UPDATE mentions SET digest = X'FEFEFE' WHERE record_id = (SELECT min(id) FROM records WHERE user IS NOT NULL)
           AND digest = (SELECT min(digest) FROM mentions WHERE record_id = (SELECT min(id) FROM records WHERE user IS NOT NULL))",
    );
    check(store.export_person(&acme(), &alice, &mut Vec::new()).unwrap_err(), "mention digest");
    check(
        store.erase_person(&acme(), &ErasureRequest::new("r", alice, now), now).unwrap_err(),
        "mention digest",
    );
}

/// The workspace builds the bundled SQLite with a larger lookaside
/// (`.cargo/config.toml`): the multi-row inserts bind 64 payloads at once,
/// and with SQLite's default most of their copies were allocated and freed
/// with malloc (`docs/PERFORMANCE.md`). A build that lost the setting shows
/// here rather than only as a slower benchmark.
#[test]
fn the_bundled_sqlite_has_the_workspace_lookaside() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
    let options: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert!(options.iter().any(|o| o == "DEFAULT_LOOKASIDE=1200,512"), "{options:?}");
}

//! The engine store with tenants: every key scoped by customer, streams
//! and sequence refusals, caches kept fresh across connections, keyed
//! suppression, erasure by clear identifiers, ids never reused, nothing
//! left in the file or its log after a sweep or an erasure, verdicts.

use std::collections::{BTreeMap, BTreeSet};

use privtel_model::{
    BinaryVerdict, CustomerId, DeviceId, Domain, DomainVerdict, Personal, Program, Record, RecordBody,
    Reputation, ThreatLevel, User, UserId,
};
use privtel_retention::RetentionPolicy;
use privtel_store::{EngineOptions, EngineStore, ErasureRequest, Error, SqliteEngine};
use privtel_testkit::fixtures;
use proptest::prelude::*;
use time::Duration;

use crate::engine::{S, acme, contains, engine, event_at, file_bytes};

fn globex() -> CustomerId {
    CustomerId::new("globex").unwrap()
}

fn dev(name: &str) -> DeviceId {
    DeviceId::new(name).unwrap()
}

use privtel_testkit::fixtures::records_of;

/// The ids an export lists.
fn exported_ids(store: &SqliteEngine, customer: &CustomerId, user: &str) -> Vec<i64> {
    let mut out = Vec::new();
    store.export_person(customer, &UserId::new(user).unwrap(), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn the_same_device_and_user_in_two_customers_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    let a = store.ingest(&acme(), &d, S, 1, fixtures::records("ACMEONE"), now).unwrap();
    // The same device id, stream and event ids under another customer:
    // neither duplicates nor a shared high-water mark.
    let g = store.ingest(&globex(), &d, S, 1, fixtures::records("GLOBEXONE"), now).unwrap();
    assert_eq!((a.stored, g.stored, g.duplicates), (18, 18, 0));
    store.ingest(&acme(), &d, S, 19, vec![event_at(100, now)], now).unwrap();
    assert_eq!(store.high_water(&acme(), &d, S).unwrap(), 19);
    assert_eq!(store.high_water(&globex(), &d, S).unwrap(), 18);
    assert_eq!(store.customers().unwrap(), vec![acme(), globex()]);
    assert_eq!(
        (store.record_count_of(&acme()).unwrap(), store.record_count_of(&globex()).unwrap()),
        (19, 18)
    );

    // Export by user id: the customer's person only.
    let mut out = Vec::new();
    let n = store.export_person(&acme(), &UserId::new("u-1042").unwrap(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(n > 0 && text.contains("ACMEONE") && !text.contains("GLOBEXONE"));

    // Erasure in one customer leaves the other's person whole, and does
    // not suppress them.
    let r = store
        .erase_person(&acme(), &ErasureRequest::new("req-1", UserId::new("u-1042").unwrap(), now), now)
        .unwrap();
    assert!(r.records_removed >= 12, "{r:?}");
    assert_eq!(store.record_count_of(&globex()).unwrap(), 18);
    let later = store.ingest(&globex(), &d, S, 19, records_of("u-1042", "GLOBEXTWO", 1000), now).unwrap();
    assert_eq!((later.stored, later.suppressed), (18, 0));
    let again = store.ingest(&acme(), &d, S, 20, records_of("u-1042", "ACMETWO", 1000), now).unwrap();
    assert_eq!(again.suppressed, 12, "{again:?}");

    // A sweep of one customer leaves the other's data.
    let far = now.checked_add(Duration::days(400)).unwrap();
    let report = store.sweep(&acme(), &RetentionPolicy::default(), far).unwrap();
    assert!(report.objects > 0 && report.devices == 1, "{report:?}");
    assert_eq!(store.record_count_of(&acme()).unwrap(), 0);
    assert_eq!(store.record_count_of(&globex()).unwrap(), 36);
}

#[test]
fn a_new_stream_of_a_device_has_its_own_mark_but_replays_are_still_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    let events: Vec<Record> = (0..10).map(|i| event_at(i, now)).collect();
    store.ingest(&acme(), &d, 1, 1, events.clone(), now).unwrap();
    // A reinstalled agent: a new spool, sequence numbers from 1 again.
    let fresh: Vec<Record> = (10..20).map(|i| event_at(i, now)).collect();
    let out = store.ingest(&acme(), &d, u64::MAX, 1, fresh, now).unwrap();
    assert_eq!((out.stored, out.high_water), (10, 10), "a new spool loses nothing");
    // The old spool's events sent again under the new stream: replays.
    let out = store.ingest(&acme(), &d, u64::MAX, 11, events, now).unwrap();
    assert_eq!((out.stored, out.duplicates), (0, 10));
    assert_eq!(store.high_water(&acme(), &d, 1).unwrap(), 10);
    assert_eq!(store.high_water(&acme(), &d, u64::MAX).unwrap(), 20);
    assert_eq!(store.record_count().unwrap(), 20);
}

#[test]
fn out_of_range_and_gapped_batches_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    store.ingest(&acme(), &d, S, 1, vec![event_at(1, now)], now).unwrap();
    let two = || vec![event_at(2, now), event_at(3, now)];
    let max = i64::MAX as u64;
    for (first, n) in [(0, 2), (u64::MAX, 2), (max, 2), (max + 1, 1), (u64::MAX - 1, 2)] {
        let records: Vec<Record> = two().into_iter().take(n).collect();
        let err = store.ingest(&acme(), &d, S, first, records, now).unwrap_err();
        assert!(
            matches!(err, Error::SequenceRange { first_seq, records } if first_seq == first && records == n as u64),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&first.to_string()) && text.contains("9223372036854775807"), "{text}");
        assert_eq!(text, text.to_lowercase());
    }
    // A huge first sequence number within range is a gap: the mark stays.
    let err = store.ingest(&acme(), &d, S, max - 1, two(), now).unwrap_err();
    assert!(matches!(err, Error::SequenceGap { first_seq, high_water: 1 } if first_seq == max - 1), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "batch starts at sequence number {} but the stream's high-water mark is 1: expected at most 2",
            max - 1
        )
    );
    // Refusals under a new customer leave no trace of it either.
    let err = store.ingest(&globex(), &d, S, 3, two(), now).unwrap_err();
    assert!(matches!(err, Error::SequenceGap { first_seq: 3, high_water: 0 }));
    assert_eq!(store.customers().unwrap(), vec![acme()]);
    assert_eq!(store.record_count().unwrap(), 1);
    assert_eq!(store.high_water(&acme(), &d, S).unwrap(), 1);
    // The batch that follows the mark is taken, and the last in range too.
    assert_eq!(store.ingest(&acme(), &d, S, 2, two(), now).unwrap().high_water, 3);
}

#[test]
fn row_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    store.ingest(&acme(), &d, S, 1, records_of("u-1", "one", 0), now).unwrap();
    let first = exported_ids(&store, &acme(), "u-1");
    let users_before = user_rows(&dir);
    store.erase_person(&acme(), &ErasureRequest::new("r1", UserId::new("u-1").unwrap(), now), now).unwrap();
    assert_eq!(store.record_count().unwrap(), 18 - 12 - 1, "the person's 12 records and the linked binary");
    store.ingest(&acme(), &d, S, 19, records_of("u-2", "two", 100), now).unwrap();
    let second = exported_ids(&store, &acme(), "u-2");
    assert!(second.iter().min() > first.iter().max(), "{first:?} {second:?}");
    let users_after = user_rows(&dir);
    assert!(users_after.iter().min() > users_before.iter().max(), "{users_before:?} {users_after:?}");
}

fn user_rows(dir: &tempfile::TempDir) -> Vec<i64> {
    let conn = rusqlite::Connection::open(dir.path().join("engine.db")).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM users").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn an_erasure_by_another_connection_is_seen_by_the_next_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    // The service's engine, and the dsar tool's (another process).
    let mut service = engine(&dir, RetentionPolicy::default(), None);
    let mut dsar = engine(&dir, RetentionPolicy::default(), None);
    service.ingest(&acme(), &d, S, 1, records_of("u-1", "first", 0), now).unwrap();
    dsar.erase_person(&acme(), &ErasureRequest::new("r1", UserId::new("u-1").unwrap(), now), now).unwrap();
    // The tool also files a new person (it could be any writer): a reused
    // row id would let the service's stale cache file u-1 under u-2.
    let d2 = dev("dev-0002");
    dsar.ingest(&acme(), &d2, S, 1, records_of("u-2", "second", 1000), now).unwrap();
    let u2 = exported_ids(&service, &acme(), "u-2");
    assert_eq!(u2.len(), 12 + 1, "the person's records and the binary their login names");

    let hw = service.high_water(&acme(), &d, S).unwrap();
    let out = service.ingest(&acme(), &d, S, hw + 1, records_of("u-1", "third", 2000), now).unwrap();
    assert_eq!(out.suppressed, 12, "every record of the erased person is dropped: {out:?}");
    assert_eq!(exported_ids(&service, &acme(), "u-2"), u2, "nothing filed under someone else");
    assert!(exported_ids(&service, &acme(), "u-1").is_empty());
}

#[test]
fn suppression_keeps_digests_not_ids_and_nothing_erased_or_swept_remains_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let canary = "u-IDCANARY77";
    // The device record names its device, not the person: left out, so
    // every canary left is one erasure should have removed.
    let mut theirs = records_of(canary, "ERASECANARY", 0);
    theirs.retain(|r| !matches!(r.body, RecordBody::Device(_)));
    let m = theirs.len() as u64;
    store.ingest(&acme(), &d, S, 1, theirs, now).unwrap();
    // Old events of someone else, past the 30-day TTL by the sweep below.
    let old = now.checked_sub(Duration::days(40)).unwrap();
    let mut stale = records_of("u-other", "SWEEPCANARY", 500);
    stale.retain(|r| matches!(r.body, RecordBody::Event(_)));
    for r in &mut stale {
        if let RecordBody::Event(e) = &mut r.body {
            e.recorded_at = old;
        }
    }
    let n = stale.len() as u64;
    store.ingest(&acme(), &d, S, m + 1, stale, now).unwrap();
    let raw = file_bytes(&dir);
    assert!(contains(&raw, canary) && contains(&raw, "ERASECANARY") && contains(&raw, "SWEEPCANARY"));

    let report = store.sweep(&acme(), &RetentionPolicy::default(), now).unwrap();
    assert_eq!(report.events, n);
    let raw = file_bytes(&dir);
    assert!(!contains(&raw, "SWEEPCANARY"), "a swept value remains in the file or its log");
    assert!(contains(&raw, "ERASECANARY"));

    store.erase_person(&acme(), &ErasureRequest::new("r1", UserId::new(canary).unwrap(), now), now).unwrap();
    let raw = file_bytes(&dir);
    assert!(!contains(&raw, canary), "the erased user id remains (in clear) in the file or its log");
    assert!(!contains(&raw, "ERASECANARY"), "an erased value remains in the file or its log");
    let hw = store.high_water(&acme(), &d, S).unwrap();
    let out = store.ingest(&acme(), &d, S, hw + 1, records_of(canary, "LATER", 900), now).unwrap();
    assert_eq!(out.suppressed, 12, "{out:?}");
    drop(store);
    assert!(!contains(&file_bytes(&dir), canary));
}

fn user(id: &str, login: &str, first: &str, last: &str) -> Record {
    Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::User(User {
            id: UserId::new(id).unwrap(),
            username: Personal::Clear(login.into()),
            upn: Personal::Withheld,
            first_name: Personal::Clear(first.into()),
            last_name: Personal::Clear(last.into()),
            job_title: Personal::Withheld,
            email: Personal::Withheld,
            phone: Personal::Withheld,
        }),
    }
}

fn binary_at(path: &str) -> Record {
    let mut b = fixtures::records("x")
        .into_iter()
        .find_map(|r| match r.body {
            RecordBody::Binary(b) => Some(b),
            _ => None,
        })
        .unwrap();
    b.path = Personal::Clear(path.into());
    Record { program: Program::Enrichment, body: RecordBody::Binary(b) }
}

#[test]
fn erasure_removes_records_that_name_the_person_only_in_a_home_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let batch = vec![
        user("u-1", "alice", "Alice", "Martin"),
        // Another person with the same first name: not linked.
        user("u-2", "amartin2", "Alice", "Dupont"),
        binary_at("/home/alice/bin/tool"),
        binary_at("C:\\Users\\ALICE\\AppData\\tool.exe"),
        binary_at("/Users/alice/Applications/tool"),
        binary_at("/home/alicex/bin/tool"),
        binary_at("/home/Alice/bin/tool"),
        binary_at("/opt/alice/tool"),
    ];
    store.ingest(&acme(), &dev("d"), S, 1, batch, now).unwrap();
    let exported = exported_ids(&store, &acme(), "u-1");
    let receipt = store
        .erase_person(&acme(), &ErasureRequest::new("r", UserId::new("u-1").unwrap(), now), now)
        .unwrap();
    // The user record and the three home folders of `alice`.
    assert_eq!(receipt.records_removed, 4);
    assert_eq!(exported.len(), 4, "the export shows what erasure removes");
    assert_eq!(store.record_count().unwrap(), 4);
    assert_eq!(exported_ids(&store, &acme(), "u-2").len(), 1);
    // Later records under the erased login's home folder are dropped.
    let out = store.ingest(&acme(), &dev("d"), S, 9, vec![binary_at("/home/alice/other")], now).unwrap();
    assert_eq!(out.suppressed, 1);
}

#[test]
fn verdicts_are_kept_per_customer_and_swept_with_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let sha: privtel_model::Digest = fixtures::EMPTY_SHA256.parse().unwrap();
    let domain = Domain::new("example.com").unwrap();
    let b = BinaryVerdict { sha256: sha, threat: ThreatLevel::High, category: None };
    let dv = DomainVerdict {
        domain: domain.clone(),
        reputation: Reputation::HighRisk,
        category: None,
        hosting_country: Some("FR".parse().unwrap()),
    };
    assert_eq!(
        store.record_verdicts(&acme(), std::slice::from_ref(&b), std::slice::from_ref(&dv), now).unwrap(),
        2
    );
    let got = store.binary_verdict(&acme(), &sha).unwrap().unwrap();
    assert_eq!((got.verdict, got.evaluated_at), (b.clone(), now));
    assert_eq!(store.domain_verdict(&acme(), &domain).unwrap().unwrap().verdict, dv);
    assert!(store.binary_verdict(&globex(), &sha).unwrap().is_none());
    assert!(store.domain_verdict(&globex(), &domain).unwrap().is_none());
    // A newer answer replaces the older.
    let later = now.checked_add(Duration::days(20)).unwrap();
    let low = BinaryVerdict { threat: ThreatLevel::Low, ..b };
    store.record_verdicts(&acme(), std::slice::from_ref(&low), &[], later).unwrap();
    assert_eq!(store.binary_verdict(&acme(), &sha).unwrap().unwrap().verdict.threat, ThreatLevel::Low);
    // 35 days after `now`: the domain verdict (30-day objects) goes, the
    // binary's (refreshed at day 20) stays.
    let report = store
        .sweep(&acme(), &RetentionPolicy::default(), now.checked_add(Duration::days(35)).unwrap())
        .unwrap();
    assert_eq!(report.verdicts, 1);
    assert!(store.domain_verdict(&acme(), &domain).unwrap().is_none());
    assert!(store.binary_verdict(&acme(), &sha).unwrap().is_some());
}

#[test]
fn a_secret_given_never_touches_the_disk_and_must_be_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.db");
    let secret = [0x5a; 32];
    drop(SqliteEngine::open(&path, EngineOptions::default().secret(secret)).unwrap());
    assert!(!file_bytes(&dir).windows(32).any(|w| w == secret), "the secret is on disk");
    SqliteEngine::open(&path, EngineOptions::default().secret(secret)).unwrap();
    let err = SqliteEngine::open(&path, EngineOptions::default().secret([1; 32])).unwrap_err();
    assert!(matches!(err, Error::SecretMismatch { .. }), "{err}");
    let err = SqliteEngine::open(&path, EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::SecretMismatch { given: "none", .. }), "{err}");
    // A store that keeps its own secret refuses one given later.
    let other = dir.path().join("own.db");
    drop(SqliteEngine::open(&other, EngineOptions::default()).unwrap());
    assert!(SqliteEngine::open(&other, EngineOptions::default().secret(secret)).is_err());
    SqliteEngine::open(&other, EngineOptions::default()).unwrap();
}

/// How a generated batch picks its first sequence number: relative to the
/// model's mark, or absolute (huge, zero, past i64::MAX).
#[derive(Clone, Debug)]
enum Seq {
    Rel(i8),
    Abs(u64),
}

#[derive(Clone, Debug)]
struct Batch {
    customer: bool,
    device: bool,
    stream: bool,
    seq: Seq,
    events: Vec<u8>,
}

fn batch() -> impl Strategy<Value = Batch> {
    let seq = prop_oneof![
        6 => (-3i8..3).prop_map(Seq::Rel),
        1 => prop_oneof![
            Just(0u64),
            Just(i64::MAX as u64),
            Just(i64::MAX as u64 - 1),
            Just(i64::MAX as u64 + 1),
            Just(u64::MAX),
            any::<u64>()
        ]
        .prop_map(Seq::Abs),
    ];
    (any::<bool>(), any::<bool>(), any::<bool>(), seq, prop::collection::vec(0u8..24, 0..5))
        .prop_map(|(customer, device, stream, seq, events)| Batch { customer, device, stream, seq, events })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random batches (retries, gaps, huge numbers, two streams, two
    /// customers, replayed event ids) against a model of a few lines.
    #[test]
    fn ingest_matches_a_simple_model(batches in prop::collection::vec(batch(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = engine(&dir, RetentionPolicy::default(), None);
        let now = fixtures::base_time();
        let mut marks: BTreeMap<(bool, bool, bool), u64> = BTreeMap::new();
        let mut held: BTreeSet<(bool, bool, u8)> = BTreeSet::new();
        for b in batches {
            let key = (b.customer, b.device, b.stream);
            let hw = marks.get(&key).copied().unwrap_or(0);
            let first = match b.seq {
                Seq::Rel(k) => (hw + 1).saturating_add_signed(i64::from(k)),
                Seq::Abs(v) => v,
            };
            let customer = if b.customer { acme() } else { globex() };
            let device = dev(if b.device { "d1" } else { "d2" });
            let stream = if b.stream { 1 } else { u64::MAX - 5 };
            let records: Vec<Record> = b.events.iter().map(|e| event_at(u64::from(*e), now)).collect();
            let got = store.ingest(&customer, &device, stream, first, records, now);
            // The model.
            let n = b.events.len() as u64;
            let max = i64::MAX as u64;
            let last = first.checked_add(n.saturating_sub(1));
            if first == 0 || first > max || last.is_none_or(|l| l > max) {
                prop_assert!(matches!(got, Err(Error::SequenceRange { .. })), "{got:?}");
                continue;
            }
            if first > hw + 1 {
                prop_assert!(matches!(got, Err(Error::SequenceGap { high_water, .. }) if high_water == hw), "{got:?}");
                continue;
            }
            let (mut stored, mut duplicates, mut mark) = (0, 0, hw);
            for (i, e) in b.events.iter().enumerate() {
                let seq = first + i as u64;
                if seq <= hw {
                    duplicates += 1;
                    continue;
                }
                mark = mark.max(seq);
                if held.insert((b.customer, b.device, *e)) {
                    stored += 1;
                } else {
                    duplicates += 1;
                }
            }
            marks.insert(key, mark);
            let got = got.unwrap();
            prop_assert_eq!((got.stored, got.duplicates, got.suppressed, got.high_water), (stored, duplicates, 0, mark));
        }
        for ((c, d, s), mark) in &marks {
            let customer = if *c { acme() } else { globex() };
            let stream = if *s { 1 } else { u64::MAX - 5 };
            prop_assert_eq!(store.high_water(&customer, &dev(if *d { "d1" } else { "d2" }), stream).unwrap(), *mark);
        }
        let of = |c: bool| held.iter().filter(|h| h.0 == c).count() as u64;
        prop_assert_eq!(store.record_count_of(&acme()).unwrap(), of(true));
        prop_assert_eq!(store.record_count_of(&globex()).unwrap(), of(false));
    }
}

#[test]
fn an_erasure_while_another_connection_reads_is_done_and_its_log_cleaned_by_the_next_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let now = fixtures::base_time();
    let mut service = engine(&dir, RetentionPolicy::default(), None);
    service.ingest(&acme(), &dev("dev-0001"), S, 1, records_of("u-CANARYPEND5", "first", 0), now).unwrap();
    service.ingest(&acme(), &dev("dev-0002"), S, 1, records_of("u-other", "second", 1000), now).unwrap();
    // An export on another connection holds a snapshot (a slow reader).
    let reader = rusqlite::Connection::open(dir.path().join("engine.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader.query_row("SELECT count(*) FROM records", [], |r| r.get(0)).unwrap();
    let started = std::time::Instant::now();
    let receipt = service
        .erase_person(&acme(), &ErasureRequest::new("r1", UserId::new("u-CANARYPEND5").unwrap(), now), now)
        .unwrap();
    // Done (committed) and reported, with the log still to be cleaned.
    assert_eq!(receipt.records_removed, 12 + 1, "the person's records and the binary their login names");
    assert!(service.log_pending(), "the busy checkpoint is remembered");
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "bounded: {:?}", started.elapsed());
    assert!(exported_ids(&service, &acme(), "u-CANARYPEND5").is_empty());
    // Once the reader is gone, the next sweep cleans the log.
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    service.sweep(&acme(), &RetentionPolicy::default(), now).unwrap();
    assert!(!service.log_pending());
    assert!(!contains(&file_bytes(&dir), "u-CANARYPEND5"), "nothing of the person in the file or its log");
}

//! Group commit: several batches of any customers and devices in one
//! transaction, each with the outcome it would have had alone; a refused
//! batch leaves no trace and holds back no other; batches encoded for
//! another store are refused; a reader sees every commit.

use privtel_model::{CustomerId, DeviceId, EventId, Record, RecordBody, UserId};
use privtel_retention::RetentionPolicy;
use privtel_store::{AdmittedBatch, EngineOptions, EngineStore, Error, Sequence, SqliteEngine};
use privtel_testkit::fixtures;

use crate::engine::{S, acme, engine, event_at};

fn globex() -> CustomerId {
    CustomerId::new("globex").unwrap()
}

fn dev(name: &str) -> DeviceId {
    DeviceId::new(name).unwrap()
}

/// The fixtures (a person new to the store, records of every kind) with
/// event ids offset by `base`.
fn fixtures_at(base: u128) -> Vec<Record> {
    let mut out = fixtures::records("grp");
    for r in &mut out {
        if let RecordBody::Event(e) = &mut r.body {
            e.id = EventId::from_u128(e.id.as_u128() + base);
        }
    }
    out
}

fn batch(customer: CustomerId, device: &str, first_seq: u64, records: Vec<Record>) -> AdmittedBatch {
    AdmittedBatch {
        customer,
        device: dev(device),
        seq: Sequence { stream: S, first_seq, skipped: 0 },
        records: records.into_iter().map(Some).collect(),
    }
}

fn exported(store: &SqliteEngine, customer: &CustomerId, user: &str) -> usize {
    let mut out = Vec::new();
    store.export_person(customer, &UserId::new(user).unwrap(), &mut out).unwrap();
    String::from_utf8(out).unwrap().lines().count()
}

#[test]
fn a_group_stores_every_batch_but_the_refused_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let n = fixtures_at(0).len() as u64;
    let outcomes = store.ingest_group(
        vec![
            // A person, a customer and devices the store has never seen,
            // in two batches of one group: one user row, shared.
            batch(acme(), "dev-a", 1, fixtures_at(0)),
            batch(acme(), "dev-b", 1, fixtures_at(1_000)),
            // A gap on a device of the group: refused alone.
            batch(acme(), "dev-a", 1_000, fixtures_at(2_000)),
            // Out of range: refused before the transaction.
            batch(acme(), "dev-c", 0, fixtures_at(3_000)),
            // A customer new to the store, refused: no trace of it.
            batch(CustomerId::new("initech").unwrap(), "dev-a", 5, fixtures_at(4_000)),
            // Another customer, same device name and person: independent.
            batch(globex(), "dev-a", 1, fixtures_at(0)),
            // The same stream again, following on in the same group.
            batch(acme(), "dev-a", n + 1, vec![event_at(900_001, now), event_at(900_002, now)]),
            // And a replay of the group's first batch: duplicates.
            batch(acme(), "dev-a", 1, fixtures_at(0)),
        ],
        now,
    );
    assert_eq!(outcomes.len(), 8);
    let stored: Vec<Option<u64>> = outcomes.iter().map(|o| o.as_ref().ok().map(|o| o.stored)).collect();
    assert_eq!(stored, vec![Some(n), Some(n), None, None, None, Some(n), Some(2), Some(0)]);
    assert!(matches!(outcomes[2], Err(Error::SequenceGap { first_seq: 1_000, high_water: h }) if h == n));
    assert!(matches!(outcomes[3], Err(Error::SequenceRange { first_seq: 0, .. })));
    assert!(matches!(outcomes[4], Err(Error::SequenceGap { first_seq: 5, high_water: 0 })));
    let replay = outcomes[7].as_ref().unwrap();
    assert_eq!((replay.duplicates, replay.high_water), (n, n + 2));
    assert_eq!(store.customers().unwrap(), vec![acme(), globex()]);
    assert_eq!(store.record_count().unwrap(), 3 * n + 2);
    assert_eq!(store.high_water(&acme(), &dev("dev-a"), S).unwrap(), n + 2);
    assert_eq!(store.high_water(&acme(), &dev("dev-b"), S).unwrap(), n);
    assert_eq!(store.high_water(&acme(), &dev("dev-c"), S).unwrap(), 0);
    // The person's records of both devices are one person's; the other
    // customer's are its own.
    let (acme_rows, globex_rows) =
        (exported(&store, &acme(), "u-1042"), exported(&store, &globex(), "u-1042"));
    // (acme's also has the two events that followed on dev-a.)
    assert!(globex_rows > 0 && acme_rows == 2 * globex_rows + 2, "{acme_rows} {globex_rows}");
    // The mirrored rows of the group are the committed ones: the next
    // group reuses them (a second row for the person would be refused by
    // the users table's unique key).
    let next = store.ingest_group(vec![batch(acme(), "dev-d", 1, fixtures_at(5_000))], now);
    assert_eq!(next[0].as_ref().unwrap().stored, n);
    assert_eq!(exported(&store, &acme(), "u-1042"), acme_rows + globex_rows);
}

#[test]
fn batches_encoded_for_another_store_are_refused() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = engine(&dir_a, RetentionPolicy::default(), None);
    let b = engine(&dir_b, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let foreign = b.encoder().encode(batch(acme(), "dev-a", 1, fixtures_at(0)), now);
    let own = a.encoder().encode(batch(acme(), "dev-b", 1, fixtures_at(0)), now);
    let outcomes = a.ingest_encoded(vec![foreign, own], now);
    let err = outcomes[0].as_ref().unwrap_err();
    assert!(matches!(err, Error::SecretMismatch { .. }), "{err}");
    assert_eq!(err.to_string(), err.to_string().to_lowercase());
    assert!(outcomes[1].as_ref().unwrap().stored > 0);
    assert_eq!(a.high_water(&acme(), &dev("dev-a"), S).unwrap(), 0);
    // The encoder's Debug shows no key, the batch's no record.
    let sealed = SqliteEngine::open(
        dir_b.path().join("sealed.db"),
        EngineOptions::default().key(privtel_store::AtRestKey::new(3, [0x5a; 32])),
    )
    .unwrap();
    let text = format!(
        "{:?} {:?}",
        sealed.encoder(),
        sealed.encoder().encode(batch(acme(), "dev-a", 1, fixtures_at(0)), now)
    );
    assert!(
        !text.contains("alice")
            && !text.contains("90, 90")
            && !text.contains("5a5a")
            && !text.contains("u-1042"),
        "{text}"
    );
}

#[test]
fn a_reader_sees_each_commit_and_never_a_refused_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let reader = store.reader().unwrap();
    let now = fixtures::base_time();
    assert_eq!(reader.high_water(&acme(), &dev("dev-a"), S).unwrap(), 0);
    store.ingest(&acme(), &dev("dev-a"), S, 1, vec![event_at(1, now), event_at(2, now)], now).unwrap();
    assert_eq!(reader.high_water(&acme(), &dev("dev-a"), S).unwrap(), 2);
    store.ingest(&acme(), &dev("dev-a"), S, 9, vec![event_at(3, now)], now).unwrap_err();
    assert_eq!(reader.high_water(&acme(), &dev("dev-a"), S).unwrap(), 2);
    // Scoped like the engine's: another customer's device of that name.
    assert_eq!(reader.high_water(&globex(), &dev("dev-a"), S).unwrap(), 0);
}

#[test]
fn a_record_that_cannot_be_encoded_refuses_its_batch_alone_and_only_if_it_is_new() {
    use privtel_model::EventBody;
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let huge = |i: u64| {
        let mut r = event_at(i, now);
        if let RecordBody::Event(e) = &mut r.body
            && let EventBody::FeatureUsage(f) = &mut e.body
        {
            f.feature = "x".repeat(privtel_store::MAX_RECORD_BYTES);
        }
        r
    };
    store.ingest(&acme(), &dev("dev-a"), S, 1, vec![event_at(1, now), event_at(2, now)], now).unwrap();
    let outcomes = store.ingest_group(
        vec![
            // New and too large: the batch is refused, nothing of it stays.
            batch(acme(), "dev-a", 3, vec![event_at(3, now), huge(4)]),
            // The same too-large record below the mark is a duplicate: not
            // encoded into a row, not an error.
            batch(acme(), "dev-a", 2, vec![huge(2), event_at(5, now)]),
            batch(globex(), "dev-b", 1, vec![event_at(6, now)]),
        ],
        now,
    );
    let err = outcomes[0].as_ref().unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err}");
    let second = outcomes[1].as_ref().unwrap();
    assert_eq!((second.duplicates, second.stored, second.high_water), (1, 1, 3));
    assert_eq!(outcomes[2].as_ref().unwrap().stored, 1);
    assert_eq!(store.record_count().unwrap(), 4);
    assert_eq!(store.high_water(&acme(), &dev("dev-a"), S).unwrap(), 3);
}

#[test]
fn a_batch_that_fails_while_writing_is_left_out_and_the_rest_of_its_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    // A write that fails for one device only, after the batch's checks.
    rusqlite::Connection::open(dir.path().join("engine.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER fail_bad AFTER INSERT ON records
             WHEN (SELECT device FROM devices WHERE id = NEW.device) = 'dev-bad'
             BEGIN SELECT RAISE(ABORT, 'the disk said no'); END;",
        )
        .unwrap();
    let n = fixtures_at(0).len() as u64;
    let outcomes = store.ingest_group(
        vec![
            batch(acme(), "dev-a", 1, fixtures_at(0)),
            // The person is new in this batch too; its failure must not
            // leave a cached user row behind.
            batch(globex(), "dev-bad", 1, fixtures_at(1_000)),
            batch(acme(), "dev-c", 1, fixtures_at(2_000)),
            // Follows dev-a's batch of the same group: still taken in the
            // attempt that leaves the failed batch out.
            batch(acme(), "dev-a", n + 1, vec![event_at(900_001, now)]),
        ],
        now,
    );
    let stored: Vec<Option<u64>> = outcomes.iter().map(|o| o.as_ref().ok().map(|o| o.stored)).collect();
    assert_eq!(stored, vec![Some(n), None, Some(n), Some(1)]);
    let err = outcomes[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err}");
    assert_eq!(store.record_count().unwrap(), 2 * n + 1);
    assert_eq!(store.customers().unwrap(), vec![acme()], "nothing of the failed batch stays");
    assert_eq!(store.high_water(&globex(), &dev("dev-bad"), S).unwrap(), 0);
    // The failed attempt's rows were never mirrored: globex's person is
    // registered afresh by the next batch, on another device.
    let next = store.ingest_group(vec![batch(globex(), "dev-ok", 1, fixtures_at(3_000))], now);
    assert_eq!(next[0].as_ref().unwrap().stored, n);
    assert!(exported(&store, &globex(), "u-1042") > 0);
}

/// `event_at(i, now)` about `user`.
fn event_of(i: u64, user: &str, now: privtel_model::Timestamp) -> Record {
    let mut r = event_at(i, now);
    if let RecordBody::Event(e) = &mut r.body {
        e.user = Some(UserId::new(user).unwrap());
    }
    r
}

#[test]
fn records_of_several_people_in_one_batch_are_each_filed_under_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    // The batch's user changes from record to record, and comes back.
    let people = ["u-ann", "u-ann", "u-bob", "u-ann", "u-cid", "u-cid", "u-bob"];
    let records = people.iter().enumerate().map(|(i, u)| event_of(i as u64 + 1, u, now)).collect();
    let encoded = store.encoder().encode(batch(acme(), "dev-a", 1, records), now);
    let outcome = store.ingest_encoded(vec![encoded], now).remove(0).unwrap();
    assert_eq!(outcome.stored, people.len() as u64);
    for (user, n) in [("u-ann", 3), ("u-bob", 2), ("u-cid", 2)] {
        assert_eq!(exported(&store, &acme(), user), n, "{user}");
    }
    // Erasing one leaves the others whole.
    store
        .erase_person(
            &acme(),
            &privtel_store::ErasureRequest::new("r-1", UserId::new("u-bob").unwrap(), now),
            now,
        )
        .unwrap();
    assert_eq!(exported(&store, &acme(), "u-bob"), 0);
    assert_eq!((exported(&store, &acme(), "u-ann"), exported(&store, &acme(), "u-cid")), (3, 2));
}

#[test]
fn a_group_committed_without_the_sync_is_stored_and_its_log_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let now = fixtures::base_time();
    let log = store.log_sync().unwrap();
    let encoded = store.encoder().encode(batch(acme(), "dev-a", 1, fixtures_at(0)), now);
    let n = encoded.len() as u64;
    let outcomes = store.store_encoded_unsynced(std::slice::from_ref(&encoded), now);
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].as_ref().unwrap().stored, n);
    assert!(dir.path().join("engine.db-wal").exists(), "the group is in the log");
    log.sync().unwrap();
    // Visible to another connection, and the store goes on syncing its
    // ordinary commits (a second group, synced at its commit).
    let other = store.another().unwrap();
    assert_eq!(other.record_count().unwrap(), n);
    assert_eq!(other.high_water(&acme(), &dev("dev-a"), S).unwrap(), n);
    let again = store.encoder().encode(batch(acme(), "dev-a", n + 1, vec![event_at(900_001, now)]), now);
    assert_eq!(store.store_encoded(&[again], now)[0].as_ref().unwrap().stored, 1);
    // A replay through the unsynced path is still a duplicate.
    let replay = store.encoder().encode(batch(acme(), "dev-a", 1, fixtures_at(0)), now);
    assert_eq!(store.store_encoded_unsynced(&[replay], now)[0].as_ref().unwrap().duplicates, n);
    // Once every connection is closed the log is gone (checkpointed into
    // the database file): a sync then says so rather than pass.
    drop((store, other));
    assert!(!dir.path().join("engine.db-wal").exists());
    let err = log.sync().unwrap_err();
    assert!(err.to_string().contains("syncing the log"), "{err}");
    // An engine without a file has no log.
    let memory = SqliteEngine::open(":memory:", EngineOptions::default()).unwrap();
    assert!(memory.log_sync().is_err());
}

/// Records are written several to a statement; what is stored must be what
/// storing them one by one stores: each event once per device (held
/// already, or twice in the batch), objects and records naming a person
/// (written by themselves) in their place, each filed under its person.
#[test]
fn records_written_several_at_once_are_stored_as_one_by_one() {
    let now = fixtures::base_time();
    let people = ["u-ann", "u-bob", "u-cid"];
    let first: Vec<Record> = (1..=40).map(|i| event_of(i, people[i as usize % 3], now)).collect();
    // Half held already, half new, one new event three times, and the
    // fixtures (objects, people named in clear, folded summaries) among
    // them.
    let mut second: Vec<Record> = (21..=60).map(|i| event_of(i, people[i as usize % 3], now)).collect();
    second.insert(30, event_of(45, "u-bob", now));
    second.insert(5, event_of(45, "u-bob", now));
    let fixtures = fixtures_at(10_000);
    second.insert(36, fixtures[0].clone());
    second.extend(fixtures);

    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir, RetentionPolicy::default(), None);
    let mut totals = (0, 0, 0);
    for (first_seq, records) in [(1, first.clone()), (41, second.clone())] {
        let n = records.len();
        let encoded = store.encoder().encode(batch(acme(), "dev-a", first_seq, records), now);
        let o = store.ingest_encoded(vec![encoded], now).remove(0).unwrap();
        assert_eq!(o.high_water, first_seq + n as u64 - 1);
        totals = (totals.0 + o.stored, totals.1 + o.duplicates, totals.2 + o.folded);
    }

    let one_dir = tempfile::tempdir().unwrap();
    let mut one = engine(&one_dir, RetentionPolicy::default(), None);
    let mut one_totals = (0, 0, 0);
    for (seq, r) in first.into_iter().chain(second).enumerate() {
        let encoded = one.encoder().encode(batch(acme(), "dev-a", seq as u64 + 1, vec![r]), now);
        let o = one.ingest_encoded(vec![encoded], now).remove(0).unwrap();
        one_totals = (one_totals.0 + o.stored, one_totals.1 + o.duplicates, one_totals.2 + o.folded);
    }

    // 40, then 20 new events once each and the fixtures.
    assert_eq!(totals, one_totals);
    assert_eq!(totals.1, 20 + 2, "held already, and the repeats of one event");
    assert_eq!(store.record_count().unwrap(), one.record_count().unwrap());
    for user in people.iter().chain(&["u-1042"]) {
        let export = |s: &SqliteEngine| {
            let mut out = Vec::new();
            s.export_person(&acme(), &UserId::new(*user).unwrap(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(export(&store), export(&one), "{user}");
    }
    assert!(exported(&store, &acme(), "u-1042") > 0, "the fixtures' person");
    // Erasure finds the records naming the fixtures' person in both.
    for s in [&mut store, &mut one] {
        s.erase_person(
            &acme(),
            &privtel_store::ErasureRequest::new("r-1", UserId::new("u-1042").unwrap(), now),
            now,
        )
        .unwrap();
    }
    assert_eq!(store.record_count().unwrap(), one.record_count().unwrap());
}

/// A run of rows is written in statements of 64, 32, ..., 2 rows and a
/// last one by itself: a batch of every length from 1 to 129, events
/// stored by earlier batches among them, stores each of its events once,
/// under its person, as storing the same records one by one does.
#[test]
fn batches_of_every_length_are_stored_as_one_by_one() {
    let now = fixtures::base_time();
    let people = ["u-ann", "u-bob", "u-cid", "u-dee", "u-eve"];
    let (dir, one_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut store, mut one) =
        (engine(&dir, RetentionPolicy::default(), None), engine(&one_dir, RetentionPolicy::default(), None));
    let (mut next_id, mut seq, mut repeats) = (1u64, 1u64, 0u64);
    let (mut totals, mut one_totals) = ((0, 0), (0, 0));
    for n in 1..=129u64 {
        // Every third record repeats an event stored by an earlier batch
        // (none in the first): a duplicate in whatever statement it falls.
        // Repeats differ within a batch but for the smallest ones, so most
        // batches are one run of rows.
        let stored_before = next_id - 1;
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let id = if stored_before > 0 && i % 3 == 1 {
                    repeats += 1;
                    1 + (i * 7) % stored_before
                } else {
                    next_id += 1;
                    next_id - 1
                };
                event_of(id, people[(id % 5) as usize], now)
            })
            .collect();
        let encoded = store.encoder().encode(batch(acme(), "dev-a", seq, records.clone()), now);
        let o = store.ingest_encoded(vec![encoded], now).remove(0).unwrap();
        assert_eq!(o.high_water, seq + n - 1, "length {n}");
        assert_eq!(o.stored + o.duplicates, n, "length {n}");
        totals = (totals.0 + o.stored, totals.1 + o.duplicates);
        // The same records, a batch each, in one group (one commit).
        let singles: Vec<_> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| one.encoder().encode(batch(acme(), "dev-a", seq + i as u64, vec![r]), now))
            .collect();
        for o in one.ingest_encoded(singles, now) {
            let o = o.unwrap();
            one_totals = (one_totals.0 + o.stored, one_totals.1 + o.duplicates);
        }
        seq += n;
        assert_eq!(totals, one_totals, "after the batch of {n}");
    }
    assert_eq!(totals, (next_id - 1, repeats), "each event once, each repeat a duplicate");
    assert_eq!(store.record_count().unwrap(), one.record_count().unwrap());
    for user in people {
        let export = |s: &SqliteEngine| {
            let mut out = Vec::new();
            s.export_person(&acme(), &UserId::new(user).unwrap(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let ours = export(&store);
        assert!(!ours.is_empty(), "{user}");
        assert_eq!(ours, export(&one), "{user}");
    }
}

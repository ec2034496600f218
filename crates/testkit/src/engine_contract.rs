//! The engine contract: one set of tests every [`EngineStore`] must pass
//! (the SQLite engine and the PostgreSQL engine run the same ones).
//!
//! An engine's test file implements [`Harness`] (how to make an empty store,
//! and a second engine on it) and expands [`engine_contract_tests!`], which
//! writes one `#[test]` per contract test:
//!
//! ```ignore
//! struct Sqlite(Option<tempfile::TempDir>);
//! impl privtel_testkit::engine_contract::Harness for Sqlite { … }
//! privtel_testkit::engine_contract_tests!(Sqlite(None));
//! // or, for tests that need a server:
//! privtel_testkit::engine_contract_tests!(Pg::default(); #[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]);
//! ```
//!
//! Every test asserts outcomes, counts, exports and high-water marks the
//! trait documents; nothing here knows which engine it runs on.

use std::collections::{BTreeMap, BTreeSet};

use privtel_model::{
    BinaryVerdict, CustomerId, DeviceId, Domain, DomainVerdict, Event, EventBody, EventId, KeyId, Personal,
    Program, Pseudonym, Record, RecordBody, Reputation, ThreatLevel, Timestamp, User, UserId,
};
use privtel_store::{
    AdmittedBatch, EngineStore, ErasureRequest, Error, JsonBatch, MAX_STREAMS_PER_DEVICE, RecordClass,
    RetentionPolicy, Sequence, Ttl,
};
use time::Duration;

use crate::fixtures;

/// How the contract suite makes stores of one engine.
pub trait Harness {
    /// The engine under test.
    type Engine: EngineStore;

    /// A new, empty store with `retention` as its default policy (the
    /// policy decides whether an erasure receipt is overdue).
    fn fresh(&mut self, retention: RetentionPolicy) -> Self::Engine;

    /// A second engine on the store [`Harness::fresh`] made last, as
    /// another process would open it.
    fn again(&mut self) -> Self::Engine;
}

/// Writes one `#[test]` per contract test for a harness expression; any
/// attributes given after a `;` (`#[ignore = "…"]`) are put on every test.
#[macro_export]
macro_rules! engine_contract_tests {
    ($harness:expr $(; $(#[$attr:meta])*)?) => {
        $crate::engine_contract_tests!(@each [$($(#[$attr])*)?] $harness;
            a_retried_batch_is_stored_once,
            a_replay_under_new_sequence_numbers_is_stored_once_per_device,
            a_new_stream_has_its_own_mark_but_replays_are_duplicates,
            an_event_id_seen_again_with_a_later_time_is_a_duplicate,
            out_of_range_and_gapped_batches_are_refused_and_store_nothing,
            skipped_and_refused_records_move_the_mark,
            customers_are_independent,
            export_and_erasure_with_suppression,
            erasure_follows_pseudonyms,
            erasure_follows_home_folders,
            shared_pseudonyms_link_no_one,
            a_system_login_links_no_one,
            an_erasure_by_another_engine_is_seen_by_the_next_ingest,
            sweeps_remove_exactly_the_expired,
            inactive_devices_are_purged_whole,
            verdicts_are_kept_per_customer_and_swept_with_objects,
            a_group_stores_every_batch_but_the_refused_ones,
            a_record_that_cannot_be_encoded_refuses_its_batch_alone,
            ingest_matches_a_simple_model,
            contract_end_removes_every_row_and_refuses_later_batches,
            the_customer_copy_holds_every_record_of_the_customer_only,
            an_interaction_is_stored_under_its_kind_exported_and_erased,
            an_erasure_request_run_again_keeps_what_it_removed,
            timeless_records_are_dated_when_received_never_later_than_now,
            a_device_cycling_stream_ids_holds_a_bounded_number_of_marks,
            streams_unused_past_the_longest_ttl_are_swept,
        );
    };
    (@each $attrs:tt $harness:expr; $($name:ident,)*) => {
        $($crate::engine_contract_tests!(@one $attrs $harness; $name);)*
    };
    (@one [$(#[$attr:meta])*] $harness:expr; $name:ident) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            $crate::engine_contract::$name(&mut $harness);
        }
    };
}

/// The stream every single-stream test sends on.
pub const S: u64 = 7;

fn acme() -> CustomerId {
    CustomerId::new("acme").expect("valid")
}

fn globex() -> CustomerId {
    CustomerId::new("globex").expect("valid")
}

fn dev(name: &str) -> DeviceId {
    DeviceId::new(name).expect("valid")
}

fn uid(id: &str) -> UserId {
    UserId::new(id).expect("valid")
}

/// A feature-usage event of the fixtures with id `i`, recorded at `at`.
pub fn event_at(i: u64, at: Timestamp) -> Record {
    let mut r = fixtures::records("t")
        .into_iter()
        .find(|r| r.body.kind_name() == "feature_usage")
        .expect("the fixtures hold a feature-usage event");
    if let RecordBody::Event(e) = &mut r.body {
        e.recorded_at = at;
        e.id = EventId::from_u128(u128::from(i));
    }
    r
}

pub use crate::fixtures::records_of;

/// The lines of an export, parsed, after checking each line's shape.
fn export<E: EngineStore>(store: &E, customer: &CustomerId, user: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let n = store.export_person(customer, &uid(user), &mut out).expect("export");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len() as u64, n, "the count returned is the lines written");
    for v in &lines {
        assert!(
            v["id"].is_i64()
                && v["stored_at"].is_string()
                && v["program"].is_string()
                && v["record"].is_object(),
            "{v}"
        );
        assert!(v["kind"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    }
    lines
}

fn exported_text<E: EngineStore>(store: &E, customer: &CustomerId, user: &str) -> String {
    export(store, customer, user).iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn exported_ids<E: EngineStore>(store: &E, customer: &CustomerId, user: &str) -> Vec<i64> {
    export(store, customer, user).iter().map(|v| v["id"].as_i64().expect("an id")).collect()
}

/// A batch of `records` on stream 7 of a customer's device.
pub fn batch(customer: CustomerId, device: &str, first_seq: u64, records: Vec<Record>) -> AdmittedBatch {
    AdmittedBatch {
        customer,
        device: dev(device),
        seq: Sequence { stream: S, first_seq, skipped: 0 },
        records: records.into_iter().map(Some).collect(),
    }
}

/// A retry overlapping stored records stores only the new ones.
pub fn a_retried_batch_is_stored_once<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let device = dev("dev-0001");
    let now = fixtures::base_time();
    let records = fixtures::records("x");
    let first = store.ingest(&acme(), &device, S, 1, records[..10].to_vec(), now).expect("ingest");
    assert_eq!((first.stored, first.high_water), (10, 10));
    let retry = store.ingest(&acme(), &device, S, 5, records[4..].to_vec(), now).expect("ingest");
    assert_eq!((retry.stored, retry.duplicates, retry.high_water), (8, 6, 18));
    assert_eq!(store.record_count().expect("count"), 18);
    assert_eq!(store.high_water(&acme(), &device, S).expect("mark"), 18);
    assert_eq!(store.high_water(&acme(), &dev("other"), S).expect("mark"), 0);
}

/// Events already held by the (customer, device) are duplicates, whatever
/// their sequence numbers; another device's are its own.
pub fn a_replay_under_new_sequence_numbers_is_stored_once_per_device<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let (a, b) = (dev("dev-a"), dev("dev-b"));
    let events: Vec<Record> = (0..50).map(|i| event_at(i, now)).collect();
    assert_eq!(store.ingest(&acme(), &a, S, 1, events.clone(), now).expect("ingest").stored, 50);
    let replay = store.ingest(&acme(), &a, S, 51, events.clone(), now).expect("ingest");
    assert_eq!((replay.stored, replay.duplicates, replay.high_water), (0, 50, 100));
    let mixed: Vec<Record> = (25..75).map(|i| event_at(i, now)).collect();
    let out = store.ingest(&acme(), &a, S, 101, mixed, now).expect("ingest");
    assert_eq!((out.stored, out.duplicates), (25, 25));
    assert_eq!(store.ingest(&acme(), &b, S, 1, events, now).expect("ingest").stored, 50);
    assert_eq!(store.record_count().expect("count"), 125);
}

/// A reinstalled agent (a new stream of the device) starts at 1 again.
pub fn a_new_stream_has_its_own_mark_but_replays_are_duplicates<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    let events: Vec<Record> = (0..10).map(|i| event_at(i, now)).collect();
    store.ingest(&acme(), &d, 1, 1, events.clone(), now).expect("ingest");
    let fresh: Vec<Record> = (10..20).map(|i| event_at(i, now)).collect();
    let out = store.ingest(&acme(), &d, u64::MAX, 1, fresh, now).expect("ingest");
    assert_eq!((out.stored, out.high_water), (10, 10), "a new spool loses nothing");
    let out = store.ingest(&acme(), &d, u64::MAX, 11, events, now).expect("ingest");
    assert_eq!((out.stored, out.duplicates), (0, 10));
    assert_eq!(store.high_water(&acme(), &d, 1).expect("mark"), 10);
    assert_eq!(store.high_water(&acme(), &d, u64::MAX).expect("mark"), 20);
    assert_eq!(store.record_count().expect("count"), 20);
}

/// An event id names the event whatever time it arrives with: the agent's
/// collectors derive ids from the source (a scanned file's path and digest,
/// a login's place in `wtmp`, a process's boot, pid and start) and stamp
/// the time of the reading, so a rescan an hour later brings the same ids
/// with a later time, and those are duplicates, not new events (a replay
/// key holding the time as well would store every rescan again).
pub fn an_event_id_seen_again_with_a_later_time_is_a_duplicate<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    // The same day: PostgreSQL looks for replays within a record's day
    // (its partition), SQLite across all of a device's events.
    let later = now.checked_add(Duration::hours(1)).expect("in range");
    let d = dev("dev-a");
    let scan: Vec<Record> = (0..40).map(|i| event_at(i, now)).collect();
    assert_eq!(store.ingest(&acme(), &d, S, 1, scan, now).expect("ingest").stored, 40);
    // The rescan: the same ids at the later time, and one new event.
    let rescan: Vec<Record> = (0..41).map(|i| event_at(i, later)).collect();
    let out = store.ingest(&acme(), &d, S, 41, rescan, later).expect("ingest");
    assert_eq!((out.stored, out.duplicates), (1, 40));
    assert_eq!(store.record_count().expect("count"), 41);
}

/// Out-of-range numbers and gaps are refused whole and leave no trace,
/// not even of a customer new to the store.
pub fn out_of_range_and_gapped_batches_are_refused_and_store_nothing<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    store.ingest(&acme(), &d, S, 1, vec![event_at(1, now)], now).expect("ingest");
    let two = || vec![event_at(2, now), event_at(3, now)];
    let max = i64::MAX as u64;
    for (first, n) in [(0, 2), (u64::MAX, 2), (max, 2), (max + 1, 1), (u64::MAX - 1, 2)] {
        let records: Vec<Record> = two().into_iter().take(n).collect();
        let err = store.ingest(&acme(), &d, S, first, records, now).expect_err("refused");
        assert!(
            matches!(err, Error::SequenceRange { first_seq, records } if first_seq == first && records == n as u64),
            "{err}"
        );
    }
    let err = store.ingest(&acme(), &d, S, max - 1, two(), now).expect_err("refused");
    assert!(matches!(err, Error::SequenceGap { first_seq, high_water: 1 } if first_seq == max - 1), "{err}");
    let err = store.ingest(&globex(), &d, S, 3, two(), now).expect_err("refused");
    assert!(matches!(err, Error::SequenceGap { first_seq: 3, high_water: 0 }), "{err}");
    assert_eq!(store.customers().expect("customers"), vec![acme()]);
    assert_eq!(store.record_count().expect("count"), 1);
    assert_eq!(store.high_water(&acme(), &d, S).expect("mark"), 1);
    assert_eq!(store.ingest(&acme(), &d, S, 2, two(), now).expect("ingest").high_water, 3);
}

/// Declared skipped numbers let a batch start above the mark plus one; a
/// record refused by the service counts, and nothing of it is stored.
pub fn skipped_and_refused_records_move_the_mark<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    let seq = |first_seq, skipped| Sequence { stream: S, first_seq, skipped };
    let out = store
        .ingest_admitted(
            &acme(),
            &d,
            seq(5, 4),
            vec![Some(event_at(1, now)), None, Some(event_at(2, now))],
            now,
        )
        .expect("ingest");
    assert_eq!((out.stored, out.refused, out.skipped, out.high_water), (2, 1, 4, 7));
    // Skipping more than lie below the first is out of range; a gap past
    // what is declared is a gap.
    assert!(matches!(
        store.ingest_admitted(&acme(), &d, seq(9, 9), vec![Some(event_at(3, now))], now),
        Err(Error::SequenceRange { .. })
    ));
    assert!(matches!(
        store.ingest_admitted(&acme(), &d, seq(20, 3), vec![Some(event_at(3, now))], now),
        Err(Error::SequenceGap { first_seq: 20, high_water: 7 })
    ));
    assert_eq!(store.record_count().expect("count"), 2);
    assert_eq!(store.high_water(&acme(), &d, S).expect("mark"), 7);
}

/// The same device, user and event ids in two customers are independent:
/// marks, replays, counts, export, erasure, suppression and sweeps.
pub fn customers_are_independent<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    let a = store.ingest(&acme(), &d, S, 1, fixtures::records("ACMEONE"), now).expect("ingest");
    let g = store.ingest(&globex(), &d, S, 1, fixtures::records("GLOBEXONE"), now).expect("ingest");
    assert_eq!((a.stored, g.stored, g.duplicates), (18, 18, 0));
    store.ingest(&acme(), &d, S, 19, vec![event_at(100, now)], now).expect("ingest");
    assert_eq!(store.high_water(&acme(), &d, S).expect("mark"), 19);
    assert_eq!(store.high_water(&globex(), &d, S).expect("mark"), 18);
    assert_eq!(store.customers().expect("customers"), vec![acme(), globex()]);
    assert_eq!(
        (store.record_count_of(&acme()).expect("count"), store.record_count_of(&globex()).expect("count")),
        (19, 18)
    );
    let text = exported_text(&store, &acme(), "u-1042");
    assert!(text.contains("ACMEONE") && !text.contains("GLOBEXONE"));
    let r =
        store.erase_person(&acme(), &ErasureRequest::new("req-1", uid("u-1042"), now), now).expect("erase");
    assert!(r.records_removed >= 12, "{r:?}");
    assert_eq!(store.record_count_of(&globex()).expect("count"), 18);
    let later =
        store.ingest(&globex(), &d, S, 19, records_of("u-1042", "GLOBEXTWO", 1000), now).expect("ingest");
    assert_eq!((later.stored, later.suppressed), (18, 0));
    let again = store.ingest(&acme(), &d, S, 20, records_of("u-1042", "ACMETWO", 1000), now).expect("ingest");
    assert_eq!(again.suppressed, 12, "{again:?}");
    let far = now.checked_add(Duration::days(400)).expect("in range");
    let report = store.sweep(&acme(), &RetentionPolicy::default(), far).expect("sweep");
    assert!(report.objects > 0 && report.devices == 1, "{report:?}");
    assert_eq!(store.record_count_of(&acme()).expect("count"), 0);
    assert_eq!(store.record_count_of(&globex()).expect("count"), 36);
    assert!(exported_text(&store, &globex(), "u-1042").contains("GLOBEXTWO"));
}

/// Export lists exactly what erasure removes; after erasure nothing of the
/// person is exported, the receipt names nothing personal, and later
/// records about them are dropped.
pub fn export_and_erasure_with_suppression<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let mut alice = fixtures::records("ALICECANARY");
    alice.retain(|r| r.body.user().is_some());
    let bob = records_of("u-2000", "BOBCANARY", 500);
    store.ingest(&acme(), &dev("d1"), S, 1, alice.clone(), now).expect("ingest");
    store.ingest(&acme(), &dev("d2"), S, 1, bob, now).expect("ingest");
    let lines = export(&store, &acme(), "u-1042");
    assert_eq!(lines.len(), alice.len());
    let text = exported_text(&store, &acme(), "u-1042");
    assert!(text.contains("ALICECANARY") && !text.contains("BOBCANARY"));
    let receipt = store
        .erase_person(
            &acme(),
            &ErasureRequest::new("req-7", uid("u-1042"), now),
            now.checked_add(Duration::hours(2)).expect("in range"),
        )
        .expect("erase");
    assert_eq!(receipt.records_removed as usize, alice.len());
    assert!(!receipt.overdue);
    let json = serde_json::to_string(&receipt).expect("json");
    assert!(!json.contains("u-1042") && !json.contains("ALICECANARY"), "{json}");
    assert!(export(&store, &acme(), "u-1042").is_empty());
    assert!(exported_text(&store, &acme(), "u-2000").contains("BOBCANARY"), "the other person is untouched");
    let late = store
        .erase_person(
            &acme(),
            &ErasureRequest::new("req-8", uid("u-3000"), now),
            now.checked_add(Duration::days(3)).expect("in range"),
        )
        .expect("erase");
    assert!(late.overdue && late.records_removed == 0, "{late:?}");
    let d1 = dev("d1");
    let next = store.high_water(&acme(), &d1, S).expect("mark") + 1;
    let again = store.ingest(&acme(), &d1, S, next, alice.clone(), now).expect("ingest");
    assert_eq!((again.stored, again.suppressed), (0, alice.len() as u64));
}

/// Erasure follows a pseudonym to records of no known user, and a login to
/// binaries under the person's home folder.
pub fn erasure_follows_pseudonyms<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let token = Pseudonym::new(KeyId::new(1), [5; 16]);
    let mut records = fixtures::records("p");
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
    store.ingest(&acme(), &dev("d"), S, 1, records, now).expect("ingest");
    assert_eq!(export(&store, &acme(), "u-1042").len(), 1 + linked + 2);
    let receipt =
        store.erase_person(&acme(), &ErasureRequest::new("r", uid("u-1042"), now), now).expect("erase");
    assert_eq!(linked, 1);
    assert_eq!(receipt.records_removed as usize, 1 + linked + 2);
    assert_eq!(receipt.pseudonyms_suppressed, 1);
    assert_eq!(receipt.identifiers_suppressed, 4);
    assert_eq!(store.record_count().expect("count"), 18 - 4);
}

fn user(id: &str, login: &str, first: &str, last: &str) -> Record {
    Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::User(User {
            id: uid(id),
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
        .expect("the fixtures hold a binary");
    b.path = Personal::Clear(path.into());
    Record { program: Program::Enrichment, body: RecordBody::Binary(b) }
}

/// A record naming the person only by a home folder is theirs; a shared
/// first name links nobody.
pub fn erasure_follows_home_folders<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let batch = vec![
        user("u-1", "alice", "Alice", "Martin"),
        user("u-2", "amartin2", "Alice", "Dupont"),
        binary_at("/home/alice/bin/tool"),
        binary_at("C:\\Users\\ALICE\\AppData\\tool.exe"),
        binary_at("/Users/alice/Applications/tool"),
        binary_at("/home/alicex/bin/tool"),
        binary_at("/home/Alice/bin/tool"),
        binary_at("/opt/alice/tool"),
    ];
    store.ingest(&acme(), &dev("d"), S, 1, batch, now).expect("ingest");
    let exported = exported_ids(&store, &acme(), "u-1");
    let receipt =
        store.erase_person(&acme(), &ErasureRequest::new("r", uid("u-1"), now), now).expect("erase");
    assert_eq!(receipt.records_removed, 4);
    assert_eq!(exported.len(), 4, "the export shows what erasure removes");
    assert_eq!(store.record_count().expect("count"), 4);
    assert_eq!(exported_ids(&store, &acme(), "u-2").len(), 1);
    let out =
        store.ingest(&acme(), &dev("d"), S, 9, vec![binary_at("/home/alice/other")], now).expect("ingest");
    assert_eq!(out.suppressed, 1);
}

/// One person's records on the shared workstation `ws`: `records_of`,
/// with the user record's login `login`, `shape` applied to every event.
fn on_workstation(
    user: &str,
    login: &str,
    tag: &str,
    base: u128,
    shape: &dyn Fn(&mut EventBody),
) -> Vec<Record> {
    let mut out = records_of(user, tag, base);
    for r in &mut out {
        match &mut r.body {
            RecordBody::User(u) => u.username = Personal::Clear(login.into()),
            RecordBody::Event(e) => shape(&mut e.body),
            _ => {}
        }
    }
    out
}

/// Alice and Bob on one workstation, sharing values that describe it (its
/// fingerprint, a program's path, a site's host, `root`): each person's
/// export holds nothing of the other's, erasing Alice leaves Bob's records
/// and Bob's later records are stored; Alice's records are all erased
/// (a binary under `/home/alice/` by her login) and her later ones are
/// suppressed.
fn shared_values_link_no_one<H: Harness>(h: &mut H, shape: &dyn Fn(&mut EventBody), alices: usize) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let mut alice = on_workstation("u-alice", "alice", "ALICECANARY", 0, shape);
    alice.push(binary_at("/home/alice/bin/ALICECANARY-tool"));
    let bob = on_workstation("u-bob", "bob", "BOBCANARY", 100, shape);
    let ws = dev("ws");
    store.ingest(&acme(), &ws, S, 1, alice.clone(), now).expect("ingest");
    store.ingest(&acme(), &ws, S, 1 + alice.len() as u64, bob, now).expect("ingest");
    let bob_before = exported_ids(&store, &acme(), "u-bob");
    let text = exported_text(&store, &acme(), "u-alice");
    assert!(text.contains("ALICECANARY"), "{text}");
    assert!(
        !text.contains("BOBCANARY") && !text.contains("u-bob"),
        "Alice's export holds Bob's records: {text}"
    );
    // The user record, 11 events, the binary under /home/alice and, where
    // her execution's login is hers, the fixture's binary under
    // /home/alice-ALICECANARY.
    let exported = exported_ids(&store, &acme(), "u-alice");
    assert_eq!(exported.len(), alices, "{text}");
    let text = exported_text(&store, &acme(), "u-bob");
    assert!(
        !text.contains("ALICECANARY") && !text.contains("u-alice"),
        "Bob's export holds Alice's records: {text}"
    );

    let receipt =
        store.erase_person(&acme(), &ErasureRequest::new("r", uid("u-alice"), now), now).expect("erase");
    assert_eq!(receipt.records_removed as usize, alices);
    assert!(export(&store, &acme(), "u-alice").is_empty());
    assert_eq!(exported_ids(&store, &acme(), "u-bob"), bob_before, "Bob's records are untouched");

    let mut next = store.high_water(&acme(), &ws, S).expect("mark") + 1;
    let bob_later = on_workstation("u-bob", "bob", "BOBLATER", 200, shape);
    let out = store.ingest(&acme(), &ws, S, next, bob_later.clone(), now).expect("ingest");
    assert_eq!((out.stored, out.suppressed), (bob_later.len() as u64, 0), "Bob's later records: {out:?}");
    next += bob_later.len() as u64;
    let carol = on_workstation("u-carol", "carol", "CAROL", 300, shape);
    let out = store.ingest(&acme(), &ws, S, next, carol.clone(), now).expect("ingest");
    assert_eq!(out.suppressed, 0, "someone new on the workstation: {out:?}");
    next += carol.len() as u64;
    let mut alice_later = on_workstation("u-alice", "alice", "ALICELATER", 400, shape);
    alice_later.push(binary_at("/home/alice/bin/later"));
    let out = store.ingest(&acme(), &ws, S, next, alice_later, now).expect("ingest");
    // Her user record and events by her id, the binary by her home folder.
    assert_eq!(out.suppressed, 12 + 1, "Alice's later records: {out:?}");
}

/// A device fingerprint, a program's path and a site's host pseudonymised
/// give everyone on the workstation the same tokens: they link no one.
pub fn shared_pseudonyms_link_no_one<H: Harness>(h: &mut H) {
    let token = |b: u8| Personal::Pseudonym(Pseudonym::new(KeyId::new(1), [b; 16]));
    shared_values_link_no_one(
        h,
        &|body| match body {
            EventBody::LicenceSession(l) => l.device_fingerprint = token(0xF1),
            EventBody::Execution(x) => x.path = token(0xF2),
            EventBody::WebRequest(w) => {
                w.host = token(0xF3);
                w.url = Personal::Withheld;
            }
            _ => {}
        },
        14,
    );
}

/// Executions of root-owned programs carry the clear login `root` for
/// everyone: it links no one.
pub fn a_system_login_links_no_one<H: Harness>(h: &mut H) {
    shared_values_link_no_one(
        h,
        &|body| {
            if let EventBody::Execution(x) = body {
                x.username = Personal::Clear("root".into());
                x.path = Personal::Clear("/usr/bin/ls".into());
            }
        },
        13,
    );
}

/// An erasure by another engine on the same store (the `dsar` tool) is
/// seen by the next ingest, and row ids are never given twice.
pub fn an_erasure_by_another_engine_is_seen_by_the_next_ingest<H: Harness>(h: &mut H) {
    let now = fixtures::base_time();
    let d = dev("dev-0001");
    let mut service = h.fresh(RetentionPolicy::default());
    let mut dsar = h.again();
    service.ingest(&acme(), &d, S, 1, records_of("u-1", "first", 0), now).expect("ingest");
    let first = exported_ids(&service, &acme(), "u-1");
    dsar.erase_person(&acme(), &ErasureRequest::new("r1", uid("u-1"), now), now).expect("erase");
    let d2 = dev("dev-0002");
    dsar.ingest(&acme(), &d2, S, 1, records_of("u-2", "second", 1000), now).expect("ingest");
    let u2 = exported_ids(&service, &acme(), "u-2");
    assert_eq!(u2.len(), 12 + 1, "the person's records and the binary their login names");
    assert!(u2.iter().min() > first.iter().max(), "{first:?} {u2:?}");
    let hw = service.high_water(&acme(), &d, S).expect("mark");
    let out = service.ingest(&acme(), &d, S, hw + 1, records_of("u-1", "third", 2000), now).expect("ingest");
    assert_eq!(out.suppressed, 12, "every record of the erased person is dropped: {out:?}");
    assert_eq!(exported_ids(&service, &acme(), "u-2"), u2, "nothing filed under someone else");
    assert!(exported_ids(&service, &acme(), "u-1").is_empty());
}

/// After a sweep nothing past its TTL survives and nothing younger is
/// gone, at the edge to the second, for several TTLs and ages spread over
/// days (each case under its own customer of one store).
pub fn sweeps_remove_exactly_the_expired<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now =
        fixtures::base_time().checked_add(Duration::hours(7) + Duration::seconds(13)).expect("in range");
    let ttls = [Ttl::DAYS_7, Ttl::DAYS_14, Ttl::custom(Duration::seconds(3_600))];
    for (case, ttl) in ttls.into_iter().enumerate() {
        let customer = CustomerId::new(format!("sweep-{case}")).expect("valid");
        let retention = RetentionPolicy { events: ttl, ..RetentionPolicy::default() };
        let ttl_s = ttl.duration().whole_seconds();
        let mut ages: Vec<i64> = (0..40).map(|i| i * 43_201 - 5).collect();
        ages.extend([ttl_s, ttl_s + 1, ttl_s - 1, 0, 86_400, 86_399]);
        let records: Vec<Record> = ages
            .iter()
            .enumerate()
            .map(|(i, a)| event_at(i as u64, now.checked_sub(Duration::seconds(*a)).expect("in range")))
            .collect();
        store.ingest(&customer, &dev("d"), S, 1, records, now).expect("ingest");
        let report = store.sweep(&customer, &retention, now).expect("sweep");
        let gone = ages
            .iter()
            .filter(|a| {
                retention.is_expired(
                    RecordClass::Event,
                    now.checked_sub(Duration::seconds(**a)).expect("in range"),
                    now,
                )
            })
            .count();
        assert_eq!(gone, ages.iter().filter(|a| **a > ttl_s).count());
        assert_eq!(report.events as usize, gone, "{ttl:?}");
        assert_eq!(store.record_count_of(&customer).expect("count") as usize, ages.len() - gone, "{ttl:?}");
        // A second sweep at the same instant removes nothing more.
        assert_eq!(store.sweep(&customer, &retention, now).expect("sweep").events, 0);
    }
}

/// Records without a time of their own (objects) are dated when their
/// batch was received ([`JsonBatch::received`]), never later than the
/// engine's `now`: a queue's lag does not lengthen their retention, and a
/// time ahead (a skewed clock, a forged message) does not put it off.
pub fn timeless_records_are_dated_when_received_never_later_than_now<H: Harness>(h: &mut H) {
    let retention = RetentionPolicy {
        events: Ttl::custom(Duration::days(3650)),
        objects: Ttl::DAYS_7,
        ..RetentionPolicy::default()
    };
    let mut store = h.fresh(retention);
    let received = fixtures::base_time();
    let at = |d: Duration| received.checked_add(d).expect("in range");
    // The writer stores the batches three days after the front-end took them.
    let now = at(Duration::days(3));
    let timeless: Vec<Record> = fixtures::records("obj")
        .into_iter()
        .filter(|r| privtel_store::parts::record_time(r, Timestamp::UNIX_EPOCH) == Timestamp::UNIX_EPOCH)
        .collect();
    assert!(!timeless.is_empty(), "the fixtures hold records without a time of their own");
    let n = timeless.len() as u64;
    let sent = |device: &str, received: Timestamp| JsonBatch {
        batch: batch(acme(), device, 1, timeless.clone()),
        json: Vec::new(),
        received: Some(received),
    };
    let outcomes = store.ingest_group_json(
        vec![
            sent("late", received),
            sent("ahead", at(Duration::days(400))),
            JsonBatch {
                batch: batch(acme(), "unknown", 1, timeless.clone()),
                json: Vec::new(),
                received: None,
            },
        ],
        now,
    );
    for o in outcomes {
        assert_eq!(o.expect("stored").stored, n);
    }
    // Seven days after reception: the late batch's objects are gone, the
    // others (dated `now`) are not.
    let report = store.sweep(&acme(), &retention, at(Duration::days(7) + Duration::SECOND)).expect("sweep");
    assert_eq!(report.objects, n, "{report:?}");
    assert_eq!(store.record_count_of(&acme()).expect("count"), 2 * n);
    // Seven days after `now`: the rest.
    let report = store.sweep(&acme(), &retention, at(Duration::days(10) + Duration::SECOND)).expect("sweep");
    assert_eq!(report.objects, 2 * n, "{report:?}");
    assert_eq!(store.record_count_of(&acme()).expect("count"), 0);
}

/// A device not seen for the inactivity delay goes with everything it sent.
pub fn inactive_devices_are_purged_whole<H: Harness>(h: &mut H) {
    let retention = RetentionPolicy {
        events: Ttl::custom(Duration::days(3650)),
        objects: Ttl::custom(Duration::days(3650)),
        ..RetentionPolicy::default()
    };
    let mut store = h.fresh(retention);
    let now = fixtures::base_time();
    store.ingest(&acme(), &dev("quiet"), S, 1, fixtures::records("q"), now).expect("ingest");
    store.ingest(&acme(), &dev("busy"), S, 1, vec![event_at(1, now)], now).expect("ingest");
    let later = now.checked_add(Duration::days(40)).expect("in range");
    store.ingest(&acme(), &dev("busy"), S, 2, vec![event_at(2, later)], later).expect("ingest");
    let at = |d: Duration| now.checked_add(d).expect("in range");
    assert_eq!(store.sweep(&acme(), &retention, at(Duration::days(45))).expect("sweep").devices, 0);
    let report = store.sweep(&acme(), &retention, at(Duration::days(45) + Duration::SECOND)).expect("sweep");
    assert_eq!(report.devices, 1);
    assert_eq!(report.inactive_device_records, 18, "{report:?}");
    assert_eq!(store.record_count().expect("count"), 2);
    assert_eq!(store.high_water(&acme(), &dev("quiet"), S).expect("mark"), 0);
}

/// Verdicts per customer: replaced by newer ones, swept with the objects.
pub fn verdicts_are_kept_per_customer_and_swept_with_objects<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let sha: privtel_model::Digest = fixtures::EMPTY_SHA256.parse().expect("digest");
    let domain = Domain::new("example.com").expect("domain");
    let b = BinaryVerdict { sha256: sha, threat: ThreatLevel::High, category: None };
    let dv = DomainVerdict {
        domain: domain.clone(),
        reputation: Reputation::HighRisk,
        category: None,
        hosting_country: Some("FR".parse().expect("country")),
    };
    assert_eq!(
        store
            .record_verdicts(&acme(), std::slice::from_ref(&b), std::slice::from_ref(&dv), now)
            .expect("verdicts"),
        2
    );
    let got = store.binary_verdict(&acme(), &sha).expect("read").expect("present");
    assert_eq!((got.verdict, got.evaluated_at), (b.clone(), now));
    assert_eq!(store.domain_verdict(&acme(), &domain).expect("read").expect("present").verdict, dv);
    assert!(store.binary_verdict(&globex(), &sha).expect("read").is_none());
    assert!(store.domain_verdict(&globex(), &domain).expect("read").is_none());
    let later = now.checked_add(Duration::days(20)).expect("in range");
    let low = BinaryVerdict { threat: ThreatLevel::Low, ..b };
    store.record_verdicts(&acme(), std::slice::from_ref(&low), &[], later).expect("verdicts");
    assert_eq!(
        store.binary_verdict(&acme(), &sha).expect("read").expect("present").verdict.threat,
        ThreatLevel::Low
    );
    let report = store
        .sweep(&acme(), &RetentionPolicy::default(), now.checked_add(Duration::days(35)).expect("in range"))
        .expect("sweep");
    assert_eq!(report.verdicts, 1);
    assert!(store.domain_verdict(&acme(), &domain).expect("read").is_none());
    assert!(store.binary_verdict(&acme(), &sha).expect("read").is_some());
}

/// The fixtures (a person new to the store) with event ids offset by `base`.
pub fn fixtures_at(base: u128) -> Vec<Record> {
    let mut out = fixtures::records("grp");
    for r in &mut out {
        if let RecordBody::Event(e) = &mut r.body {
            e.id = EventId::from_u128(e.id.as_u128() + base);
        }
    }
    out
}

/// A group: each batch gets the outcome it would have had alone; refused
/// ones leave no trace and hold back no other.
pub fn a_group_stores_every_batch_but_the_refused_ones<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let n = fixtures_at(0).len() as u64;
    let outcomes = store.ingest_group(
        vec![
            batch(acme(), "dev-a", 1, fixtures_at(0)),
            batch(acme(), "dev-b", 1, fixtures_at(1_000)),
            batch(acme(), "dev-a", 1_000, fixtures_at(2_000)),
            batch(acme(), "dev-c", 0, fixtures_at(3_000)),
            batch(CustomerId::new("initech").expect("valid"), "dev-a", 5, fixtures_at(4_000)),
            batch(globex(), "dev-a", 1, fixtures_at(0)),
            batch(acme(), "dev-a", n + 1, vec![event_at(900_001, now), event_at(900_002, now)]),
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
    let replay = outcomes[7].as_ref().expect("stored");
    assert_eq!((replay.duplicates, replay.high_water), (n, n + 2));
    assert_eq!(store.customers().expect("customers"), vec![acme(), globex()]);
    assert_eq!(store.record_count().expect("count"), 3 * n + 2);
    assert_eq!(store.high_water(&acme(), &dev("dev-a"), S).expect("mark"), n + 2);
    assert_eq!(store.high_water(&acme(), &dev("dev-b"), S).expect("mark"), n);
    assert_eq!(store.high_water(&acme(), &dev("dev-c"), S).expect("mark"), 0);
    let (acme_rows, globex_rows) =
        (export(&store, &acme(), "u-1042").len(), export(&store, &globex(), "u-1042").len());
    assert!(globex_rows > 0 && acme_rows == 2 * globex_rows + 2, "{acme_rows} {globex_rows}");
    let next = store.ingest_group(vec![batch(acme(), "dev-d", 1, fixtures_at(5_000))], now);
    assert_eq!(next[0].as_ref().expect("stored").stored, n);
    assert_eq!(export(&store, &acme(), "u-1042").len(), acme_rows + globex_rows);
}

/// A new record too large to encode refuses its batch alone; below the
/// mark it is a duplicate, never encoded.
pub fn a_record_that_cannot_be_encoded_refuses_its_batch_alone<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
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
    store
        .ingest(&acme(), &dev("dev-a"), S, 1, vec![event_at(1, now), event_at(2, now)], now)
        .expect("ingest");
    let outcomes = store.ingest_group(
        vec![
            batch(acme(), "dev-a", 3, vec![event_at(3, now), huge(4)]),
            batch(acme(), "dev-a", 2, vec![huge(2), event_at(5, now)]),
            batch(globex(), "dev-b", 1, vec![event_at(6, now)]),
        ],
        now,
    );
    let err = outcomes[0].as_ref().expect_err("refused");
    assert!(matches!(err, Error::Encode(_)), "{err}");
    let second = outcomes[1].as_ref().expect("stored");
    assert_eq!((second.duplicates, second.stored, second.high_water), (1, 1, 3));
    assert_eq!(outcomes[2].as_ref().expect("stored").stored, 1);
    assert_eq!(store.record_count().expect("count"), 4);
    assert_eq!(store.high_water(&acme(), &dev("dev-a"), S).expect("mark"), 3);
}

/// A small deterministic generator (xorshift), so the model test needs no
/// proptest runner and runs the same sequences on every engine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random batches (retries, gaps, huge numbers, two streams, two customers,
/// replayed event ids) against a model of a few lines.
pub fn ingest_matches_a_simple_model<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut marks: BTreeMap<(bool, bool, bool), u64> = BTreeMap::new();
    let mut held: BTreeSet<(bool, bool, u64)> = BTreeSet::new();
    for _ in 0..120 {
        let (c, d, s) = (rng.below(2) == 0, rng.below(2) == 0, rng.below(2) == 0);
        let hw = marks.get(&(c, d, s)).copied().unwrap_or(0);
        let first = match rng.below(8) {
            0 => [0, i64::MAX as u64, i64::MAX as u64 - 1, i64::MAX as u64 + 1, u64::MAX]
                [rng.below(5) as usize],
            _ => (hw + 1).saturating_add_signed(rng.below(6) as i64 - 3),
        };
        let events: Vec<u64> = (0..rng.below(5)).map(|_| rng.below(24)).collect();
        let customer = if c { acme() } else { globex() };
        let device = dev(if d { "d1" } else { "d2" });
        let stream = if s { 1 } else { u64::MAX - 5 };
        let records: Vec<Record> = events.iter().map(|e| event_at(*e, now)).collect();
        let got = store.ingest(&customer, &device, stream, first, records, now);
        let n = events.len() as u64;
        let max = i64::MAX as u64;
        let last = first.checked_add(n.saturating_sub(1));
        if first == 0 || first > max || last.is_none_or(|l| l > max) {
            assert!(matches!(got, Err(Error::SequenceRange { .. })), "{got:?}");
            continue;
        }
        if first > hw + 1 {
            assert!(matches!(got, Err(Error::SequenceGap { high_water, .. }) if high_water == hw), "{got:?}");
            continue;
        }
        let (mut stored, mut duplicates, mut mark) = (0, 0, hw);
        for (i, e) in events.iter().enumerate() {
            let seq = first + i as u64;
            if seq <= hw {
                duplicates += 1;
                continue;
            }
            mark = mark.max(seq);
            if held.insert((c, d, *e)) {
                stored += 1;
            } else {
                duplicates += 1;
            }
        }
        marks.insert((c, d, s), mark);
        let got = got.expect("ingest");
        assert_eq!(
            (got.stored, got.duplicates, got.suppressed, got.high_water),
            (stored, duplicates, 0, mark)
        );
    }
    for ((c, d, s), mark) in &marks {
        let customer = if *c { acme() } else { globex() };
        let stream = if *s { 1 } else { u64::MAX - 5 };
        assert_eq!(
            store.high_water(&customer, &dev(if *d { "d1" } else { "d2" }), stream).expect("mark"),
            *mark
        );
    }
    let of = |c: bool| held.iter().filter(|h| h.0 == c).count() as u64;
    assert_eq!(store.record_count_of(&acme()).expect("count"), of(true));
    assert_eq!(store.record_count_of(&globex()).expect("count"), of(false));
}

/// The lines of a customer copy, parsed.
fn copy_of<E: EngineStore>(
    store: &E,
    customer: &CustomerId,
) -> (privtel_store::CopyStats, Vec<serde_json::Value>) {
    let mut fields = serde_json::Map::new();
    fields.insert("policy_version".into(), "7".into());
    let mut out = Vec::new();
    let stats = store.export_customer(customer, &fields, &mut out).expect("copy");
    assert_eq!(stats.bytes, out.len() as u64);
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(stats.lines, lines.len() as u64);
    let m = &lines[0]["manifest"];
    assert_eq!(m["format"], "privtel-customer-copy", "{m}");
    assert_eq!((m["format_version"].as_u64(), m["policy_version"].as_str()), (Some(1), Some("7")), "{m}");
    assert_eq!(m["customer"], customer.as_str());
    assert!(m["schema_version"].is_i64(), "{m}");
    let last = &lines[lines.len() - 1]["counts"];
    assert_eq!(last["lines"].as_u64(), Some(stats.lines), "{last}");
    (stats, lines)
}

/// Contract end: every row of the customer goes, later batches of it are
/// refused (here and on another engine) until it is re-onboarded, the
/// other customer is untouched, the receipt holds no personal data.
pub fn contract_end_removes_every_row_and_refuses_later_batches<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let sha: privtel_model::Digest = fixtures::EMPTY_SHA256.parse().expect("digest");
    let verdict = BinaryVerdict { sha256: sha, threat: ThreatLevel::High, category: None };
    for c in [acme(), globex()] {
        store.ingest(&c, &dev("d1"), S, 1, records_of("u-ends", "ends", 0), now).expect("ingest");
        store.ingest(&c, &dev("d2"), S, 1, records_of("u-other", "other", 100), now).expect("ingest");
        store.record_verdicts(&c, std::slice::from_ref(&verdict), &[], now).expect("verdicts");
    }
    store.erase_person(&acme(), &ErasureRequest::new("r-1", uid("u-other"), now), now).expect("erase");
    let held = store.record_count_of(&acme()).expect("count");
    let globex_before = exported_text(&store, &globex(), "u-ends");
    assert!(held > 0);

    let receipt = store.delete_customer(&acme(), now).expect("contract end");
    assert_eq!(receipt.customer, acme());
    assert_eq!(receipt.removed.get("records").copied(), Some(held), "{:?}", receipt.removed);
    assert_eq!(receipt.removed.get("customers").copied(), Some(1), "{:?}", receipt.removed);
    assert!(receipt.removed.get("devices").copied() == Some(2), "{:?}", receipt.removed);
    assert!(receipt.removed.get("binary_verdicts").copied() == Some(1), "{:?}", receipt.removed);
    assert!(receipt.started_at <= receipt.completed_at);
    if let Some(at) = receipt.keys_destroyed_at {
        assert!(receipt.started_at <= at && at <= receipt.completed_at, "keys first, rows after");
    }
    assert!(!receipt.stores.is_empty());
    let json = serde_json::to_string(&receipt).expect("serializes");
    assert!(!json.contains("u-ends") && !json.contains("d1"), "{json}");

    assert_eq!(store.record_count_of(&acme()).expect("count"), 0);
    assert!(!store.customers().expect("customers").contains(&acme()));
    assert!(store.binary_verdict(&acme(), &sha).expect("read").is_none());
    assert_eq!(store.high_water(&acme(), &dev("d1"), S).expect("mark"), 0);
    assert_eq!(copy_of(&store, &acme()).0.records, 0);
    let late = store.ingest(&acme(), &dev("d1"), S, 1, records_of("u-ends", "late", 200), now);
    assert!(matches!(late, Err(Error::CustomerDeleted)), "{late:?}");
    let mut other = h.again();
    let late = other.ingest(&acme(), &dev("d3"), S, 1, records_of("u-ends", "late", 300), now);
    assert!(matches!(late, Err(Error::CustomerDeleted)), "another engine refuses too: {late:?}");
    assert_eq!(store.record_count_of(&acme()).expect("count"), 0);
    assert_eq!(exported_text(&store, &globex(), "u-ends"), globex_before, "the other customer is untouched");
    assert!(store.binary_verdict(&globex(), &sha).expect("read").is_some());
}

/// The customer copy: a manifest, every record of the customer (the lines
/// of export_person among them), its devices and verdicts, counts; nothing
/// of another customer.
pub fn the_customer_copy_holds_every_record_of_the_customer_only<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    store.ingest(&acme(), &dev("d1"), S, 1, records_of("u-1", "acme-one", 0), now).expect("ingest");
    store.ingest(&acme(), &dev("d2"), S, 1, records_of("u-2", "acme-two", 100), now).expect("ingest");
    store.ingest(&globex(), &dev("d1"), S, 1, records_of("u-1", "globex-only", 0), now).expect("ingest");
    let (stats, lines) = copy_of(&store, &acme());
    let records: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("record").is_some()).collect();
    assert_eq!(stats.records, store.record_count_of(&acme()).expect("count"));
    assert_eq!(records.len() as u64, stats.records);
    let ids: BTreeSet<i64> = records.iter().map(|r| r["id"].as_i64().expect("an id")).collect();
    assert_eq!(ids.len(), records.len(), "each record once");
    for user in ["u-1", "u-2"] {
        let person = export(&store, &acme(), user);
        assert!(!person.is_empty());
        for p in &person {
            assert!(records.contains(&p), "an export_person line is in the copy as it is: {p}");
        }
    }
    assert_eq!(lines.iter().filter(|l| l.get("device").is_some()).count(), 2);
    let text = lines.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(text.contains("acme-two") && !text.contains("globex-only"), "only the customer's rows");
}

/// An interaction event (issue #16 point 6), the event kind added last:
/// stored under its kind name, read back as it was ingested by another
/// engine on the same store, and erased with its person.
pub fn an_interaction_is_stored_under_its_kind_exported_and_erased<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let record = fixtures::interaction();
    let out = store.ingest(&acme(), &dev("d1"), S, 1, vec![record.clone()], now).expect("ingest");
    assert_eq!(out.stored, 1);
    drop(store);
    let mut store = h.again();
    let lines = export(&store, &acme(), "u-1042");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["kind"], "interaction");
    assert_eq!(lines[0]["program"], "personalised_usage");
    let back: Record = serde_json::from_value(lines[0]["record"].clone()).expect("a record");
    assert_eq!(back, record);
    let receipt =
        store.erase_person(&acme(), &ErasureRequest::new("req-i", uid("u-1042"), now), now).expect("erase");
    assert_eq!(receipt.records_removed, 1);
    assert_eq!(store.record_count_of(&acme()).expect("count"), 0);
}

/// The same erasure request run again (an operator re-running it after a
/// failure elsewhere): the second run removes nothing more, and its
/// receipt still counts what the first removed.
pub fn an_erasure_request_run_again_keeps_what_it_removed<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let now = fixtures::base_time();
    let mut alice = fixtures::records("t");
    alice.retain(|r| r.body.user().is_some());
    store.ingest(&acme(), &dev("d1"), S, 1, alice.clone(), now).expect("ingest");
    let request = ErasureRequest::new("req-again", uid("u-1042"), now);
    let first = store.erase_person(&acme(), &request, now).expect("erase");
    assert_eq!(first.records_removed as usize, alice.len());
    let later = now.checked_add(Duration::hours(1)).expect("in range");
    let again = store.erase_person(&acme(), &request, later).expect("erase again");
    assert_eq!(again.records_removed, first.records_removed, "{again:?}");
    assert_eq!(again.pseudonyms_suppressed, first.pseudonyms_suppressed);
    assert_eq!(again.completed_at, later);
    // Another request for the same person counts its own (nothing left).
    let other = ErasureRequest::new("req-other", uid("u-1042"), later);
    assert_eq!(store.erase_person(&acme(), &other, later).expect("erase").records_removed, 0);
}

/// A device naming a fresh random stream in every hello (one batch each,
/// empty or of one record) holds at most [`MAX_STREAMS_PER_DEVICE`] marks,
/// the streams used least recently dropped; the stream it keeps using
/// keeps its mark: a batch continuing it is taken, one with a gap refused.
pub fn a_device_cycling_stream_ids_holds_a_bounded_number_of_marks<H: Harness>(h: &mut H) {
    let mut store = h.fresh(RetentionPolicy::default());
    let start = fixtures::base_time();
    let at = |i: u64| start.checked_add(Duration::seconds(i as i64)).expect("in range");
    let d = dev("cycler");
    // The device's own spool, used now and then throughout.
    let current = 0x8000_0000_0000_0001_u64;
    let mut mark = 0;
    let fresh = |i: u64| 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i + 1);
    for i in 0..1_000u64 {
        let now = at(i);
        if i % 50 == 0 {
            let out = store
                .ingest(&acme(), &d, current, mark + 1, vec![event_at(100_000 + i, now)], now)
                .expect("ingest");
            mark = out.high_water;
        }
        // Every other batch is empty (it acknowledges nothing), the others
        // hold one record.
        let records = if i % 2 == 0 { Vec::new() } else { vec![event_at(i, now)] };
        store.ingest(&acme(), &d, fresh(i), 1, records, now).expect("a new stream is never refused");
        assert!(
            store.stream_count(&acme(), &d).expect("count") <= MAX_STREAMS_PER_DEVICE,
            "more marks than the cap after {} streams",
            i + 1
        );
    }
    // A group: ten more fresh streams and the device's own, at once.
    let now = at(1_000);
    let mut group: Vec<AdmittedBatch> = (1_000..1_010u64)
        .map(|i| AdmittedBatch {
            customer: acme(),
            device: d.clone(),
            seq: Sequence { stream: fresh(i), first_seq: 1, skipped: 0 },
            records: vec![Some(event_at(i, now))],
        })
        .collect();
    group.insert(
        0,
        AdmittedBatch {
            customer: acme(),
            device: d.clone(),
            seq: Sequence { stream: current, first_seq: mark + 1, skipped: 0 },
            records: vec![Some(event_at(200_000, now))],
        },
    );
    for o in store.ingest_group(group, now) {
        o.expect("stored");
    }
    mark += 1;
    assert_eq!(store.stream_count(&acme(), &d).expect("count"), MAX_STREAMS_PER_DEVICE);
    assert_eq!(
        store.high_water(&acme(), &d, current).expect("mark"),
        mark,
        "the stream in use keeps its mark"
    );
    assert_eq!(store.high_water(&acme(), &d, fresh(1_009)).expect("mark"), 1, "the newest is kept");
    assert_eq!(store.high_water(&acme(), &d, fresh(1)).expect("mark"), 0, "the oldest was dropped");
    let later = at(1_001);
    let err = store
        .ingest(&acme(), &d, current, mark + 2, vec![event_at(300_001, later)], later)
        .expect_err("a gap");
    assert!(matches!(err, Error::SequenceGap { high_water, .. } if high_water == mark), "{err}");
    let out =
        store.ingest(&acme(), &d, current, mark + 1, vec![event_at(300_000, later)], later).expect("ingest");
    assert_eq!((out.stored, out.high_water), (1, mark + 1));
    // Other devices are not touched by this one's streams.
    store.ingest(&acme(), &dev("quiet"), S, 1, vec![event_at(1, later)], later).expect("ingest");
    assert_eq!(store.stream_count(&acme(), &dev("quiet")).expect("count"), 1);
    assert_eq!(store.stream_count(&acme(), &d).expect("count"), MAX_STREAMS_PER_DEVICE);
}

/// A stream not used for longer than the customer's longest TTL (events
/// or objects) loses its mark in the sweep; one used within it keeps it.
/// Continuing a stream that lost its mark is declaring what lies below
/// (as an agent told mark 0 does); a replay of its records, dated beyond
/// the TTL, is swept again.
pub fn streams_unused_past_the_longest_ttl_are_swept<H: Harness>(h: &mut H) {
    let retention =
        RetentionPolicy { events: Ttl::DAYS_7, objects: Ttl::DAYS_14, ..RetentionPolicy::default() };
    let mut store = h.fresh(retention);
    let t0 = fixtures::base_time();
    let at = |d: Duration| t0.checked_add(d).expect("in range");
    let sweep_at = at(Duration::days(14) + Duration::SECOND);
    let d = dev("d");
    let (old, edge, recent, empty) = (1_u64, 2_u64, 3_u64, u64::MAX);
    let first = event_at(1, t0);
    store.ingest(&acme(), &d, old, 1, vec![first.clone()], t0).expect("ingest");
    // Used exactly the longest TTL before the sweep: kept.
    let edge_at = at(Duration::SECOND);
    store.ingest(&acme(), &d, edge, 1, vec![event_at(2, edge_at)], edge_at).expect("ingest");
    let recent_at = at(Duration::days(10));
    store.ingest(&acme(), &d, recent, 1, vec![event_at(3, recent_at)], recent_at).expect("ingest");
    // An empty batch leaves a mark of 0, swept the same.
    store.ingest(&acme(), &d, empty, 1, Vec::new(), t0).expect("ingest");
    assert_eq!(store.stream_count(&acme(), &d).expect("count"), 4);
    // Past the events' TTL, within the objects': every mark stays.
    let report = store.sweep(&acme(), &retention, at(Duration::days(8))).expect("sweep");
    assert_eq!((report.streams, report.events), (0, 2), "{report:?}");
    assert_eq!(store.stream_count(&acme(), &d).expect("count"), 4);
    let report = store.sweep(&acme(), &retention, sweep_at).expect("sweep");
    assert_eq!((report.streams, report.devices), (2, 0), "{report:?}");
    assert_eq!(store.stream_count(&acme(), &d).expect("count"), 2);
    assert_eq!(store.high_water(&acme(), &d, old).expect("mark"), 0);
    assert_eq!(store.high_water(&acme(), &d, edge).expect("mark"), 1);
    assert_eq!(store.high_water(&acme(), &d, recent).expect("mark"), 1);
    // The agent told mark 0 declares what it no longer holds.
    let next = event_at(4, sweep_at);
    assert!(matches!(
        store.ingest(&acme(), &d, old, 2, vec![next.clone()], sweep_at),
        Err(Error::SequenceGap { first_seq: 2, high_water: 0 })
    ));
    let out = store
        .ingest_admitted(
            &acme(),
            &d,
            Sequence { stream: old, first_seq: 2, skipped: 1 },
            vec![Some(next)],
            sweep_at,
        )
        .expect("ingest");
    assert_eq!((out.stored, out.skipped, out.high_water), (1, 1, 2));
    // A replay of the old stream's record from number 1: stored again (the
    // event was swept), dated beyond the TTL, and swept by the next sweep.
    let replay = store
        .ingest_admitted(
            &acme(),
            &d,
            Sequence { stream: 0x5eed, first_seq: 1, skipped: 0 },
            vec![Some(first)],
            sweep_at,
        )
        .expect("ingest");
    assert_eq!(replay.stored, 1);
    let report = store.sweep(&acme(), &retention, sweep_at).expect("sweep");
    assert_eq!((report.events, report.streams), (1, 0), "{report:?}");
    assert_eq!(store.record_count_of(&acme()).expect("count"), 2);
}

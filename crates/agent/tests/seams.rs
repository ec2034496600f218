//! Privacy at the seams, from the filter to the engine: who an event
//! concerns follows the policy's `event.username`, and export and erasure
//! still find the person through the id the filter files them under.

use privtel_filter::{FilterBuilder, Policy, PseudonymKey};
use privtel_model::{CustomerId, DeviceId, KeyId, RecordBody, Timestamp, UserId};
use privtel_store::{EngineOptions, EngineStore as _, ErasureRequest, SqliteEngine};
use privtel_testkit::fixtures;

fn acme() -> CustomerId {
    CustomerId::new("acme").unwrap()
}

/// The fixtures' events (all kinds), about `user`, through a filter of
/// `policy` with every program on.
fn filtered(policy: &str, user: &str, tag: &str) -> (privtel_filter::Filter, Vec<privtel_model::Record>) {
    let text = format!(
        "[programs]\nbenchmarking = true\nenrichment = true\npersonalised_usage = true\nlicence_authentication = true\nsupport_telemetry = true\nanonymous_usage = true\n{policy}"
    );
    let filter = FilterBuilder::new()
        .policy(Policy::from_toml(&text).unwrap())
        .customer(acme())
        .key(PseudonymKey::new(KeyId::new(3), [11; 32]))
        .build();
    let mut records = fixtures::records(tag);
    records.retain(|r| matches!(r.body, RecordBody::Event(_)));
    for r in &mut records {
        if let RecordBody::Event(e) = &mut r.body {
            e.user = Some(UserId::new(user).unwrap());
        }
    }
    let (out, _) = filter.apply_batch(records);
    (filter, out.into_iter().map(privtel_filter::Filtered::into_record).collect())
}

fn engine(dir: &tempfile::TempDir) -> SqliteEngine {
    SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap()
}

fn export(store: &SqliteEngine, user: &UserId) -> (u64, String) {
    let mut out = Vec::new();
    let n = store.export_person(&acme(), user, &mut out).unwrap();
    (n, String::from_utf8(out).unwrap())
}

#[test]
fn a_pseudonymised_person_is_filed_exported_and_erased_under_the_pseudonym() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir);
    let now = fixtures::base_time();
    let policy = "[fields]\n\"event.username\" = \"pseudonymise\"\n";
    let (filter, alice) = filtered(policy, "u-1042", "ALICECANARY");
    let (_, bob) = filtered(policy, "u-2000", "BOBCANARY");
    assert!(alice.len() >= 10, "every event kind passes");
    let alice_id = UserId::new("u-1042").unwrap();
    let filed = filter.user_key(&alice_id).unwrap();
    assert!(filed.pseudonym().is_some());
    for r in &alice {
        assert_eq!(r.body.user(), Some(&filed), "{}", r.body.kind_name());
    }
    store.ingest(&acme(), &DeviceId::new("d1").unwrap(), 1, 1, alice.clone(), now).unwrap();
    store.ingest(&acme(), &DeviceId::new("d2").unwrap(), 1, 1, bob, now).unwrap();

    // The store never saw the id: asked by it, it finds nothing; asked by
    // the id the customer's filter gives, it finds exactly her events.
    assert_eq!(export(&store, &alice_id).0, 0);
    let (n, text) = export(&store, &filed);
    assert_eq!(n as usize, alice.len());
    assert!(text.contains("ALICECANARY") && !text.contains("BOBCANARY") && !text.contains("u-1042"));

    let later = Timestamp::from_unix_seconds(now.unix_seconds() + 3_600).unwrap();
    let receipt =
        store.erase_person(&acme(), &ErasureRequest::new("req-1", filed.clone(), now), later).unwrap();
    assert_eq!(receipt.records_removed as usize, alice.len());
    assert_eq!(export(&store, &filed).0, 0);
    assert_eq!(store.record_count().unwrap() as usize, alice.len(), "bob's events stay");
}

#[test]
fn a_dropped_person_leaves_events_with_no_user_and_a_clear_one_is_found_by_id() {
    let (filter, dropped) = filtered("[fields]\n\"event.username\" = \"withhold\"\n", "u-1042", "x");
    assert!(!dropped.is_empty() && dropped.iter().all(|r| r.body.user().is_none()));
    assert_eq!(filter.user_key(&UserId::new("u-1042").unwrap()), None);
    assert!(!serde_json::to_string(&dropped).unwrap().contains("u-1042"));

    let dir = tempfile::tempdir().unwrap();
    let mut store = engine(&dir);
    let (filter, clear) = filtered("", "u-1042", "x");
    let id = UserId::new("u-1042").unwrap();
    assert_eq!(filter.user_key(&id), Some(id.clone()), "clear by default");
    store.ingest(&acme(), &DeviceId::new("d1").unwrap(), 1, 1, clear.clone(), fixtures::base_time()).unwrap();
    assert_eq!(export(&store, &id).0 as usize, clear.len());
}

#[cfg(unix)]
#[test]
fn a_scanned_execution_names_the_owners_login_never_the_user_id() {
    use std::os::unix::fs::MetadataExt as _;

    use privtel_model::{EventBody, Personal};

    let dir = tempfile::tempdir().unwrap();
    let (name, bytes) = fixtures::sample_executables().remove(0);
    std::fs::write(dir.path().join(name), bytes).unwrap();
    let scan = privtel_hash::ScannerBuilder::new()
        .algorithms(privtel_hash::Algorithms::Both)
        .executables_only(true)
        .build()
        .scan(&[dir.path()]);
    let user = UserId::new("u-1042").unwrap();
    let records = privtel_agent::records_from_scan(
        &scan,
        &DeviceId::new("d1").unwrap(),
        Some(&user),
        fixtures::base_time(),
    );
    let uid = std::fs::metadata(dir.path().join(name)).unwrap().uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let login = privtel_agent::login_of_uid(&passwd, uid).map(str::to_owned);
    let mut executions = 0;
    for r in &records {
        match &r.body {
            RecordBody::Event(e) => {
                let EventBody::Execution(x) = &e.body else { panic!("an execution") };
                assert_eq!(e.user.as_ref(), Some(&user), "the event concerns the person");
                assert_eq!(x.username, login.clone().map_or(Personal::Withheld, Personal::Clear));
                assert_ne!(x.username, Personal::Clear(user.to_string()), "never the user id");
                executions += 1;
            }
            RecordBody::Binary(b) => assert_eq!(b.file_name, Personal::Clear(name.to_owned())),
            _ => panic!("binaries and executions only"),
        }
    }
    assert_eq!(executions, 1);
}

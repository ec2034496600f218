//! Benchmarking records folded into per-customer aggregates: sums that are
//! exact, a retry that does not fold twice, no row naming a device or a
//! person, and rows swept after their time to live.

use privtel_model::{
    CustomerId, DeviceId, DeviceSummary, Event, EventBody, EventId, Login, Personal, Privileges, Program,
    Record, RecordBody, Timestamp, UserId,
};
use privtel_store::{AGGREGATE_TTL_DAYS, AdmittedBatch, EngineOptions, EngineStore, Sequence, SqliteEngine};
use time::Duration;

/// 2026-11-27T00:00:00Z.
fn day() -> Timestamp {
    Timestamp::from_unix_seconds(1_795_737_600).unwrap()
}

fn summary(crashes: u32, samples: u32, slow: u32) -> Record {
    let mut s = DeviceSummary::new(day(), 7);
    s.crashes = crashes;
    (s.performance_samples, s.slow_samples) = (samples, slow);
    s.logins = 3;
    s.login_time = Duration::seconds(30);
    Record { program: Program::Benchmarking, body: RecordBody::DeviceSummary(s.scored().unwrap()) }
}

/// A benchmarking login event as an older agent sends it: a user and a
/// device.
fn old_login(device: &str, user: &str) -> Record {
    Record {
        program: Program::Benchmarking,
        body: RecordBody::Event(Event {
            id: EventId::from_u128(9),
            device: DeviceId::new(device).unwrap(),
            user: Some(UserId::new(user).unwrap()),
            recorded_at: day(),
            body: EventBody::Login(Login {
                time: Personal::Clear(day()),
                duration: Personal::Clear(Duration::seconds(3)),
                privileges: Personal::Clear(Privileges::Standard),
            }),
        }),
    }
}

fn batch(customer: &str, device: &str, first_seq: u64, records: Vec<Record>) -> AdmittedBatch {
    AdmittedBatch {
        customer: CustomerId::new(customer).unwrap(),
        device: DeviceId::new(device).unwrap(),
        seq: Sequence { stream: 1, first_seq, skipped: 0 },
        records: records.into_iter().map(Some).collect(),
    }
}

fn fold(engine: &mut SqliteEngine, b: AdmittedBatch, industry: &str) -> privtel_store::IngestOutcome {
    let now = day().checked_add(Duration::days(7)).unwrap();
    let encoded = engine.encoder().encode_folding(b, now, industry);
    engine.ingest_encoded(vec![encoded], now).remove(0).unwrap()
}

fn in_file(dir: &std::path::Path, needle: &str) -> bool {
    ["engine.db", "engine.db-wal"].iter().any(|f| {
        std::fs::read(dir.join(f)).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

#[test]
fn summaries_are_summed_per_customer_and_a_retry_is_not_folded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    // Scores: 1 crash in 7 days, 4 samples 1 slow: (3.2 + 2.625) / 0.75 = 7.77 -> 7.8;
    // nothing wrong, 2 samples: 10.0.
    let (a, b) = (summary(1, 4, 1), summary(0, 2, 0));
    let out = fold(&mut engine, batch("acme", "dev-a", 1, vec![a.clone(), b.clone()]), "retail");
    assert_eq!((out.stored, out.folded, out.high_water), (0, 2, 2));
    // A retry of the same numbers: duplicates, nothing folded.
    let retry = fold(&mut engine, batch("acme", "dev-a", 1, vec![a, b]), "retail");
    assert_eq!((retry.folded, retry.duplicates), (0, 2));
    // Another device and an older agent's login event (counted only).
    let out = fold(
        &mut engine,
        batch("acme", "dev-b", 1, vec![summary(0, 0, 0), old_login("dev-b", "u-1")]),
        "retail",
    );
    assert_eq!(out.folded, 2);
    fold(&mut engine, batch("globex", "dev-a", 1, vec![summary(1, 0, 0)]), "finance");
    assert_eq!(engine.record_count().unwrap(), 0, "no record row");
    let all = engine.aggregates(day(), day().checked_add(Duration::days(1)).unwrap()).unwrap();
    assert_eq!(all.len(), 2);
    let acme = &all[0];
    assert_eq!((acme.customer.as_str(), acme.industry.as_str()), ("acme", "retail"));
    assert_eq!((acme.summaries, acme.device_days, acme.crashes), (3, 21, 1));
    assert_eq!((acme.performance_samples, acme.slow_samples, acme.logins, acme.login_ms), (6, 1, 9, 90_000));
    assert_eq!(acme.other_records, 1);
    assert_eq!((acme.score_sum, acme.score_min, acme.score_max), (78 + 100 + 100, Some(78), Some(100)));
    // (78 + 100 + 100) / 3 = 92.67 -> 93 tenths.
    assert_eq!(acme.score_tenths(), Some(93));
    let globex = &all[1];
    // 1 crash in 7 days: C = 10 - 2 = 8, alone.
    assert_eq!((globex.industry.as_str(), globex.score_tenths()), ("finance", Some(80)));
    // Days outside the range are not read.
    let later = day().checked_add(Duration::days(1)).unwrap();
    assert!(engine.aggregates(later, later.checked_add(Duration::days(90)).unwrap()).unwrap().is_empty());
}

#[test]
fn no_aggregate_row_names_a_device_or_a_person_and_rows_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.db");
    let mut engine = SqliteEngine::open(&path, EngineOptions::default()).unwrap();
    for (i, device) in ["dev-canaryzq1", "dev-canaryzq2", "dev-canaryzq3"].iter().enumerate() {
        let user = format!("u-personcanary{i}");
        let out =
            fold(&mut engine, batch("acme", device, 1, vec![summary(0, 1, 0), old_login(device, &user)]), "");
        assert_eq!(out.folded, 2);
    }
    // The people of the older agent's events are in no table and nowhere
    // in the files.
    for i in 0..3 {
        assert!(!in_file(dir.path(), &format!("u-personcanary{i}")), "a user id was written");
    }
    // The devices are known to the stream's bookkeeping only; once purged
    // as inactive, no byte of their ids remains, and the aggregates do.
    let policy = privtel_retention::RetentionPolicy::default();
    let purge = day().checked_add(Duration::days(60)).unwrap();
    let report = engine.sweep(&CustomerId::new("acme").unwrap(), &policy, purge).unwrap();
    assert_eq!((report.devices, report.aggregates), (3, 0));
    for d in ["dev-canaryzq1", "dev-canaryzq2", "dev-canaryzq3"] {
        assert!(!in_file(dir.path(), d), "{d} is still in the files");
    }
    let week = engine.aggregates(day(), day().checked_add(Duration::days(7)).unwrap()).unwrap();
    assert_eq!((week[0].summaries, week[0].other_records), (3, 3), "the aggregates outlive the devices");
    // Past the benchmarking time to live, the rows go too.
    let expired = day().checked_add(Duration::days(AGGREGATE_TTL_DAYS + 1)).unwrap();
    let report = engine.sweep(&CustomerId::new("acme").unwrap(), &policy, expired).unwrap();
    assert_eq!(report.aggregates, 1);
    assert!(engine.aggregates(day(), expired).unwrap().is_empty());
    // Reopened, the schema is the newest and the table is there.
    drop(engine);
    let engine = SqliteEngine::open(&path, EngineOptions::default()).unwrap();
    assert!(engine.aggregates(day(), expired).unwrap().is_empty());
}

#[test]
fn without_folding_a_benchmarking_record_is_stored_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    let out = engine
        .ingest(
            &CustomerId::new("acme").unwrap(),
            &DeviceId::new("dev-1").unwrap(),
            1,
            1,
            vec![summary(0, 0, 0)],
            day(),
        )
        .unwrap();
    assert_eq!((out.stored, out.folded), (1, 0));
    assert!(engine.aggregates(day(), day().checked_add(Duration::days(1)).unwrap()).unwrap().is_empty());
}

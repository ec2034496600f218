//! The spool: durability across SIGKILL, expiry, purge, eviction, keys.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration as StdDuration;

use privtel_model::Program;
use privtel_store::{AtRestKey, Error, Spool, SpoolOptions};
use privtel_testkit::fixtures;
use time::Duration;

const CHILD_ENV: &str = "PRIVTEL_SPOOL_CRASH_CHILD";

/// Not a test on its own: the child process of the crash test. It appends
/// in a loop and prints every sequence number `append_batch` returned, until
/// it is killed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let records = fixtures::records("crash");
    let now = fixtures::base_time();
    let mut out = std::io::stdout().lock();
    let mut x: u64 = std::process::id().into();
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 1 + (x % records.len() as u64) as usize;
        let seqs = spool.append_batch(&records[..n], now).unwrap();
        for s in seqs {
            writeln!(out, "seq {s}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn every_reported_append_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let exe = std::env::current_exe().unwrap();
    let mut reported = BTreeSet::new();
    let mut x: u64 = 0x2026_1127;
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args(["--exact", "spool::crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("seq ").and_then(|s| s.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        });
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(StdDuration::from_millis(30 + x % 170));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let seqs = reader.join().unwrap();
        for s in &seqs {
            assert!(reported.insert(*s), "round {round}: sequence number {s} returned twice");
        }
        let spool = Spool::open(&path, SpoolOptions::default()).unwrap();
        assert_eq!(spool.integrity_check().unwrap(), "ok", "round {round}");
        let present: BTreeSet<u64> = spool.all_seqs().unwrap().into_iter().collect();
        let missing: Vec<_> = reported.difference(&present).take(5).collect();
        assert!(missing.is_empty(), "round {round}: reported but lost: {missing:?}");
        // Every record in the file reads back.
        for p in Program::ALL {
            spool.next_batch(p, 1_000_000).unwrap();
        }
    }
    // Enough appends that the kills landed among them (loose: CI machines are busy).
    assert!(reported.len() > 20, "the child appended only {} records", reported.len());
}

#[test]
fn ack_expire_purge_and_evict_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SpoolOptions::default();
    options.max_records = 30;
    let mut spool = Spool::open(dir.path().join("s.db"), options).unwrap();
    let now = fixtures::base_time();
    let records = fixtures::records("x");
    let seqs = spool.append_batch(&records, now).unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(spool.len(None).unwrap(), 18);

    // Acknowledge part of one program.
    let batch = spool.next_batch(Program::PersonalisedUsage, 2).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(spool.ack(Program::PersonalisedUsage, batch[1].seq).unwrap(), 2);
    assert_eq!(spool.next_batch(Program::PersonalisedUsage, 100).unwrap().len(), 2);

    // Withdrawn consent empties the program at once.
    let benchmarking = spool.len(Some(Program::Benchmarking)).unwrap();
    assert_eq!(spool.purge_program(Program::Benchmarking).unwrap(), benchmarking);
    assert_eq!(spool.len(Some(Program::Benchmarking)).unwrap(), 0);

    // The cap: 16 waiting + 18 more = 34 > 30: the 4 oldest go.
    let before = spool.len(None).unwrap();
    spool.append_batch(&records, now).unwrap();
    assert_eq!(spool.len(None).unwrap(), 30);
    let counters = spool.counters().unwrap();
    assert_eq!(counters.evicted, before + 18 - 30);
    assert_eq!((counters.acknowledged, counters.purged), (2, benchmarking));

    // Expiry: nothing at 30 days, everything a second later (every fixture
    // is recorded at `now`).
    assert_eq!(spool.expire(now.checked_add(Duration::days(30)).unwrap()).unwrap(), 0);
    assert_eq!(spool.expire(now.checked_add(Duration::days(30) + Duration::SECOND).unwrap()).unwrap(), 30);
    assert_eq!(spool.counters().unwrap().expired, 30);
}

#[test]
fn sealed_spool_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut options = SpoolOptions::default();
    options.key = Some(AtRestKey::new(1, [9; 32]));
    let mut spool = Spool::open(&path, options).unwrap();
    spool.append_batch(&fixtures::records("sealedcanary"), fixtures::base_time()).unwrap();
    assert_eq!(spool.next_batch(Program::PersonalisedUsage, 10).unwrap().len(), 4);
    drop(spool);
    let raw = std::fs::read(&path).unwrap();
    let wal = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
    assert!(
        !raw.windows(12).chain(wal.windows(12)).any(|w| w == b"sealedcanary"),
        "sealed payloads are not readable"
    );

    let mut wrong = SpoolOptions::default();
    wrong.key = Some(AtRestKey::new(1, [8; 32]));
    let err = Spool::open(&path, wrong).unwrap().next_batch(Program::Enrichment, 10).unwrap_err();
    assert!(matches!(err, Error::WrongKey { key_id: 1, .. }), "{err}");
    let err =
        Spool::open(&path, SpoolOptions::default()).unwrap().next_batch(Program::Enrichment, 10).unwrap_err();
    assert_eq!(err.to_string().split(" is sealed").nth(1), Some(" under key 1, but the store has no key"));
}

#[test]
fn runs_are_consecutive_and_of_one_program() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path().join("s.db"), SpoolOptions::default()).unwrap();
    let records = fixtures::records("x");
    spool.append_batch(&records, fixtures::base_time()).unwrap();
    // Purging a program leaves gaps; every run stays gap-free and of one
    // program, and the runs together are everything left, in order.
    spool.purge_program(Program::Benchmarking).unwrap();
    let mut seen = Vec::new();
    while let Some((program, run)) = spool.next_run(4).unwrap() {
        assert!(!run.is_empty() && run.len() <= 4);
        assert!(run.iter().all(|s| s.record.program == program));
        assert!(run.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        seen.extend(run.iter().map(|s| s.seq));
        spool.ack(program, run.last().unwrap().seq).unwrap();
    }
    assert_eq!(seen.len() as u64, 18 - 4);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(spool.len(None).unwrap(), 0);
}

#[test]
fn a_new_stream_renumbers_the_waiting_records_from_one_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let records = fixtures::records("x");
    spool.append_batch(&records, fixtures::base_time()).unwrap();
    spool.purge_program(Program::Benchmarking).unwrap();
    spool.mark_sent(18).unwrap();
    let old = spool.stream_id();
    let waiting = spool.len(None).unwrap();
    assert_ne!(spool.all_seqs().unwrap(), (1..=waiting).collect::<Vec<u64>>(), "gaps before");
    let new = spool.new_stream().unwrap();
    assert_ne!(new, old);
    assert_ne!(new, 0);
    assert_eq!(spool.stream_id(), new);
    assert_eq!(spool.all_seqs().unwrap(), (1..=waiting).collect::<Vec<u64>>(), "contiguous from 1");
    assert_eq!(spool.sent_up_to().unwrap(), 0);
    assert_eq!(spool.counters().unwrap().new_streams, 1);
    // Same records, same order, renumbered.
    let mut after = Vec::new();
    for seq in 1..=waiting {
        let run = spool.next_run(1).unwrap().unwrap().1;
        assert_eq!(run[0].seq, seq);
        after.push(run[0].record.clone());
        spool.ack(run[0].record.program, seq).unwrap();
    }
    let kept: Vec<_> = records.iter().filter(|r| r.program != Program::Benchmarking).cloned().collect();
    assert_eq!(after, kept);
    // The next record follows the renumbered ones; the id is kept.
    assert_eq!(spool.append(&records[0], fixtures::base_time()).unwrap(), waiting + 1);
    drop(spool);
    assert_eq!(Spool::open(&path, SpoolOptions::default()).unwrap().stream_id(), new);
}

#[test]
fn a_run_within_a_byte_budget_stops_before_the_record_that_does_not_fit() {
    use privtel_store::Run;
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path().join("s.db"), SpoolOptions::default()).unwrap();
    let records: Vec<_> =
        fixtures::records("x").into_iter().filter(|r| r.program == Program::AnonymousUsage).collect();
    assert!(records.len() >= 3);
    spool.append_batch(&records, fixtures::base_time()).unwrap();
    // Each record measured at 10 bytes: 25 bytes hold two.
    let Some(Run::Batch(_, run)) = spool.next_run_within(100, 25, |_| 10).unwrap() else { panic!() };
    assert_eq!(run.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2]);
    // A first record alone above the budget is named, not returned.
    let too_large = spool.next_run_within(100, 9, |_| 10).unwrap();
    assert_eq!(too_large, Some(Run::TooLarge { seq: 1, program: Program::AnonymousUsage, size: 10 }));
    assert!(spool.skip_too_large(1).unwrap());
    assert!(!spool.skip_too_large(1).unwrap());
    assert_eq!(spool.counters().unwrap().too_large, 1);
    assert_eq!(spool.all_seqs().unwrap()[0], 2);
}

#[test]
fn programs_switched_off_are_purged_and_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path().join("s.db"), SpoolOptions::default()).unwrap();
    spool.append_batch(&fixtures::records("x"), fixtures::base_time()).unwrap();
    let bench = spool.len(Some(Program::Benchmarking)).unwrap();
    assert!(bench > 0);
    assert_eq!(spool.purge_switched_off(&[]).unwrap(), 0);
    assert_eq!(spool.purge_switched_off(&[Program::Benchmarking]).unwrap(), bench);
    assert_eq!(spool.len(Some(Program::Benchmarking)).unwrap(), 0);
    let counters = spool.counters().unwrap();
    assert_eq!((counters.switched_off, counters.purged), (bench, 0));
}

#[test]
fn a_source_position_commits_with_its_records_and_expiry_leaves_nothing_in_the_log() {
    use privtel_store::SourcePosition;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let now = fixtures::base_time();
    assert_eq!(spool.source_position("web-log:a").unwrap(), None);
    let pos = SourcePosition::new("web-log:a", vec![1, 2], 3, 4096, 40);
    let mut records = fixtures::records("cnry-expiring");
    records.retain(|r| matches!(r.body, privtel_model::RecordBody::Event(_)));
    for r in &mut records {
        if let privtel_model::RecordBody::Event(e) = &mut r.body {
            e.recorded_at = now;
        }
    }
    spool.append_at(&records, Some(&pos), now).unwrap();
    drop(spool);
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    assert_eq!(spool.source_position("web-log:a").unwrap(), Some(pos));
    let file_and_log = || {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend(std::fs::read(dir.path().join("spool.db-wal")).unwrap_or_default());
        bytes
    };
    assert!(file_and_log().windows(13).any(|w| w == b"cnry-expiring"), "the canary is planted");
    // Past the TTL: gone from the table, the file and its write-ahead log.
    let later = now.checked_add(Duration::days(31)).unwrap();
    assert_eq!(spool.expire(later).unwrap() as usize, records.len());
    assert!(
        !file_and_log().windows(13).any(|w| w == b"cnry-expiring"),
        "an expired value is still in the file"
    );
}

fn personal_use(feature: String) -> privtel_model::Record {
    use privtel_model::{DeviceId, Event, EventBody, EventId, FeatureUsage, Record, RecordBody};
    Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Event(Event {
            id: EventId::random(),
            device: DeviceId::new("dev-1").unwrap(),
            user: None,
            recorded_at: fixtures::base_time(),
            body: EventBody::FeatureUsage(FeatureUsage { product: "p".into(), feature, count: 1 }),
        }),
    }
}

/// A consent change is one transaction: when its consent record cannot be
/// written (too large to encode), neither the choice nor the purge happens.
#[test]
fn a_consent_change_that_fails_changes_nothing() {
    use privtel_model::ConsentSource;
    use privtel_store::{ConsentState, Subject};
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path().join("s.db"), SpoolOptions::default()).unwrap();
    let now = fixtures::base_time();
    let s = Subject::from_bytes([9; 32]);
    spool.append_for(&[(personal_use("a".into()), Some(s))], now).unwrap();
    let withdrawn = ConsentState::new(false, ConsentSource::Settings, now);
    let huge = personal_use("x".repeat(17 << 20));
    let e = spool.record_consent(&s, Program::PersonalisedUsage, withdrawn, Some(&huge), now).unwrap_err();
    assert!(matches!(e, Error::Encode(_)), "{e}");
    assert_eq!(spool.consent(&s, Program::PersonalisedUsage).unwrap(), None, "no choice stored");
    assert_eq!(spool.len(None).unwrap(), 1, "nothing purged");
    let ok = spool.record_consent(&s, Program::PersonalisedUsage, withdrawn, None, now).unwrap();
    assert_eq!((ok.purged, ok.seq), (1, None));
    assert_eq!(spool.consent(&s, Program::PersonalisedUsage).unwrap(), Some(withdrawn));
    // The purged payload is gone from the file and its log.
    let bytes: Vec<u8> = ["s.db", "s.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(dir.path().join(f)).ok())
        .flatten()
        .collect();
    assert!(!bytes.windows(9).any(|w| w == b"\"feature\""), "a purged payload remains");
}

#[test]
fn marks_commit_with_their_records_and_follow_their_rules() {
    use privtel_model::{Event, EventBody, FeatureUsage, Record, RecordBody, Timestamp};
    use privtel_store::{Mark, MarkChange};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let now = fixtures::base_time();
    let at = |h: i64| now.checked_add(Duration::hours(h)).unwrap();
    let active = |key: u8, h| MarkChange::Active { scope: "binary", key: vec![key], at: at(h) };
    let none: &[Record] = &[];
    spool.append_marked(none, None, &[active(1, 5), active(1, 2), active(2, 0)], now).unwrap();
    spool
        .append_marked(none, None, &[MarkChange::Evaluated { scope: "binary", key: vec![1], at: at(6) }], now)
        .unwrap();
    drop(spool);
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let mark = spool.mark("binary", &[1]).unwrap().unwrap();
    assert_eq!(
        (mark.last_active, mark.last_evaluated),
        (Some(at(5)), Some(at(6))),
        "the later activity is kept"
    );
    assert_eq!(spool.mark("binary", &[2]).unwrap().map(|m: Mark| m.last_evaluated), Some(None));
    assert_eq!(spool.mark("domain", &[1]).unwrap(), None, "scopes are apart");

    // A record that cannot be encoded: nothing of the call is kept.
    let huge = Record {
        program: Program::SupportTelemetry,
        body: RecordBody::Event(Event {
            id: privtel_model::EventId::from_u128(1),
            device: privtel_model::DeviceId::new("d").unwrap(),
            user: None,
            recorded_at: now,
            body: EventBody::FeatureUsage(FeatureUsage {
                product: "x".repeat(privtel_store::MAX_RECORD_BYTES + 1),
                feature: "f".into(),
                count: 1,
            }),
        }),
    };
    let forget_all = MarkChange::Retain { scope: "binary", keep: vec![] };
    assert!(spool.append_marked(&[huge], None, std::slice::from_ref(&forget_all), now).is_err());
    assert_eq!(spool.marks("binary").unwrap().len(), 2, "the marks are as they were");

    // Retain keeps the keys named; ForgetBefore drops what is neither
    // active nor evaluated since.
    let keep = MarkChange::Retain { scope: "binary", keep: vec![vec![1]] };
    spool.append_marked(none, None, &[active(3, 100), keep], now).unwrap();
    let keys: BTreeSet<Vec<u8>> = spool.marks("binary").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, BTreeSet::from([vec![1]]));
    spool.append_marked(none, None, &[active(4, 0)], now).unwrap();
    let before: Timestamp = at(6);
    spool.append_marked(none, None, &[MarkChange::ForgetBefore { scope: "binary", before }], now).unwrap();
    let keys: BTreeSet<Vec<u8>> = spool.marks("binary").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, BTreeSet::from([vec![1]]), "evaluated at 6 h is kept, active at 0 h is not");
    spool.append_marked(none, None, &[forget_all], now).unwrap();
    assert!(spool.marks("binary").unwrap().is_empty());
}

/// The interaction event (issue #16 point 6), sealed in the spool, reads
/// back as it was appended, under its program.
#[test]
fn an_interaction_is_spooled_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SpoolOptions::default();
    options.key = Some(AtRestKey::new(1, [9; 32]));
    let mut spool = Spool::open(dir.path().join("s.db"), options).unwrap();
    let record = fixtures::interaction();
    spool.append_batch(std::slice::from_ref(&record), fixtures::base_time()).unwrap();
    let batch = spool.next_batch(Program::PersonalisedUsage, 10).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].record, record);
    assert_eq!(batch[0].record.body.kind_name(), "interaction");
}

/// Every byte of the spool's database file and its write-ahead log.
fn file_and_log(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

#[test]
fn acknowledged_records_leave_the_file_and_its_log_by_the_next_maintenance() {
    const CANARY: &[u8] = b"ACKCANARY";
    let ttl = privtel_store::RetentionPolicy {
        events: privtel_store::Ttl::DAYS_7,
        objects: privtel_store::Ttl::DAYS_7,
        ..Default::default()
    };
    for key in [None, Some(AtRestKey::new(1, [9; 32]))] {
        let sealed = key.is_some();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let mut options = SpoolOptions::default();
        options.retention = ttl;
        options.key = key;
        let mut spool = Spool::open(&path, options).unwrap();
        let t0 = fixtures::base_time();
        let mut records = fixtures::records("ACKCANARY");
        // Unsealed, the canary is in the payloads' JSON (sealed, the test
        // still checks no removed page is left behind).
        records.retain(|r| serde_json::to_string(r).unwrap().contains("ACKCANARY"));
        assert!(!records.is_empty());
        spool.append_batch(&records, t0).unwrap();
        if !sealed {
            assert!(file_and_log(&path).windows(CANARY.len()).any(|w| w == CANARY), "the canary is planted");
        }
        let programs: BTreeSet<Program> = records.iter().map(|r| r.program).collect();
        for program in programs {
            let batch = spool.next_batch(program, usize::MAX).unwrap();
            spool.ack(program, batch.last().unwrap().seq).unwrap();
        }
        assert_eq!(spool.len(None).unwrap(), 0);
        // The agent's maintenance a cycle later (past the TTL): nothing of
        // the acknowledged records is left, with the spool still open.
        let later = t0.checked_add(Duration::days(8)).unwrap();
        assert_eq!(spool.expire(later).unwrap(), 0, "nothing was waiting");
        assert!(
            !file_and_log(&path).windows(CANARY.len()).any(|w| w == CANARY),
            "an acknowledged value is still in the file or its log (sealed: {sealed})"
        );
        assert_eq!(std::fs::metadata(dir.path().join("spool.db-wal")).map(|m| m.len()).unwrap_or(0), 0);
        drop(spool);
    }
}

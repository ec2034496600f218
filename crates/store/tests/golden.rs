//! Golden files: a spool and an engine store written by the wave-1 code
//! (commit a11dada, schema 1, bincode rows, no tenant) and by this version
//! (`wave3-*`). Every later version must open a copy, migrate it, and read
//! every row back equal to the fixtures that were written.
//!
//! Both stores hold `fixtures::golden_records("golden")` (device `dev-0001`,
//! sequence numbers 1 to 18, at `fixtures::base_time()`); the engines also
//! held the records of `u-2000` (tag `erased`, device `dev-0002`), erased
//! with request `req-1`. The wave-3 engine files everything under customer
//! `acme`, stream `0xfedcba9876543210`, and holds two verdicts.
//!
//! `keys1-engine.db` and `keys1-keys.json` hold the same as the wave-3
//! engine, written with a key store (format 1) under the master key of 32
//! bytes 0x11: every row sealed under `acme`'s data key.
//!
//! `consent1-spool.db` is a spool of schema 5: two personalised-usage
//! records filed under the subject of 32 bytes 0x5a (a consent record of
//! `u-consent`, given at the installer, and one feature use), the person's
//! consent row, and one anonymous feature use filed under nobody.
//!
//! `streams7-engine.db` is an engine of schema 7 (streams dated): the
//! wave-3 engine's content, and a second stream of `dev-0001`
//! ([`STREAMS7_LATER`]) used once, one day after the others, by an empty
//! batch.
//!
//! `PRIVTEL_WRITE_GOLDEN=<folder> cargo test -p privtel-store golden::write`
//! writes the wave-3, keys-1 and streams-7 files again (only when the format
//! changes on purpose; then keep the old ones and add the new).

use std::path::{Path, PathBuf};

use privtel_model::{
    BinaryVerdict, Consent, ConsentSource, CustomerId, DeviceId, Domain, DomainVerdict, Program, Record,
    RecordBody, Reputation, ThreatLevel, UserId,
};
use std::sync::Arc;

use privtel_store::{
    ConsentState, EngineOptions, EngineStore, ErasureRequest, Error, KeyStore, KeyStoreOptions, MasterKey,
    Spool, SpoolOptions, SqliteEngine, Subject,
};
use privtel_testkit::fixtures;

use crate::engine::{acme, contains};

const WAVE3_STREAM: u64 = 0xfedc_ba98_7654_3210;

/// The stream of `streams7-engine.db` used a day after the others.
const STREAMS7_LATER: u64 = 0x0123_4567_89ab_cdef;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// A copy of a golden file in a fresh folder (the original is never opened:
/// opening migrates).
fn copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(data(name), &path).unwrap();
    (dir, path)
}

fn erased_records() -> Vec<Record> {
    let mut erased = fixtures::golden_records("erased");
    for r in &mut erased {
        match &mut r.body {
            RecordBody::Event(e) => e.user = Some(UserId::new("u-2000").unwrap()),
            RecordBody::User(u) => u.id = UserId::new("u-2000").unwrap(),
            _ => {}
        }
    }
    erased.retain(|r| r.body.user().is_some());
    erased
}

fn raw(dir: &tempfile::TempDir, name: &str) -> Vec<u8> {
    let mut all = std::fs::read(dir.path().join(name)).unwrap();
    all.extend(std::fs::read(dir.path().join(format!("{name}-wal"))).unwrap_or_default());
    all
}

/// Every record of the spool, in sequence order, equals the fixtures.
fn check_spool(path: &Path) {
    let spool = Spool::open(path, SpoolOptions::default()).unwrap();
    let stream = spool.stream_id();
    assert_ne!(stream, 0);
    let mut rows = Vec::new();
    for p in Program::ALL {
        rows.extend(spool.next_batch(p, 1000).unwrap());
    }
    rows.sort_by_key(|s| s.seq);
    assert_eq!(rows.iter().map(|s| s.seq).collect::<Vec<_>>(), (1..=18).collect::<Vec<u64>>());
    assert_eq!(rows.into_iter().map(|s| s.record).collect::<Vec<_>>(), fixtures::golden_records("golden"));
    drop(spool);
    assert_eq!(Spool::open(path, SpoolOptions::default()).unwrap().stream_id(), stream, "made once, kept");
}

/// The engine's rows about u-1042 equal the fixtures, the erased person
/// stays erased (and suppressed), the mark and ids survive.
fn check_engine(dir: &tempfile::TempDir, path: &Path, options: EngineOptions, stream: u64) {
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let mut engine = SqliteEngine::open(path, options).unwrap();
    assert_eq!(engine.customers().unwrap(), vec![acme()]);
    assert_eq!(engine.record_count_of(&acme()).unwrap(), 18);
    let device = DeviceId::new("dev-0001").unwrap();
    assert_eq!(engine.high_water(&acme(), &device, stream).unwrap(), 18);
    let mut out = Vec::new();
    let user = UserId::new("u-1042").unwrap();
    engine.export_person(&acme(), &user, &mut out).unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The person's records, and the binary under their home folder; by row
    // id, which is the order they were written in.
    let golden = fixtures::golden_records("golden");
    let expected: Vec<(i64, Record)> = golden
        .iter()
        .enumerate()
        .filter(|(_, r)| r.body.user().is_some() || matches!(r.body, RecordBody::Binary(_)))
        .map(|(i, r)| (i as i64 + 1, r.clone()))
        .collect();
    let got: Vec<(i64, Record)> = lines
        .iter()
        .map(|v| (v["id"].as_i64().unwrap(), serde_json::from_value(v["record"].clone()).unwrap()))
        .collect();
    assert_eq!(got, expected);
    for (v, (_, r)) in lines.iter().zip(&expected) {
        assert_eq!(v["program"], r.program.as_str());
        assert_eq!(v["kind"], r.body.kind_name());
    }
    // The customer copy holds every row (format 1 rows decoded, format 2
    // rows copied), the person's lines as export_person gives them.
    let mut copy = Vec::new();
    let stats = engine.export_customer(&acme(), &serde_json::Map::new(), &mut copy).unwrap();
    assert_eq!(stats.records, 18);
    let copied: Vec<serde_json::Value> =
        String::from_utf8(copy).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| copied.contains(l)), "export_person's lines are in the copy as they are");
    // The erased person: no trace in clear, and still suppressed.
    assert!(!contains(&raw(dir, &name), "u-2000"), "an erased id in clear survived the migration");
    let d2 = DeviceId::new("dev-0002").unwrap();
    let hw = engine.high_water(&acme(), &d2, stream).unwrap();
    assert_eq!(hw, 12);
    let out = engine.ingest(&acme(), &d2, stream, hw + 1, erased_records(), fixtures::base_time()).unwrap();
    assert_eq!((out.stored, out.suppressed), (0, 12));
    // Old rows are indexed: erasing u-1042 takes the binary named by path.
    let receipt = engine
        .erase_person(
            &acme(),
            &ErasureRequest::new("req-2", user, fixtures::base_time()),
            fixtures::base_time(),
        )
        .unwrap();
    assert_eq!(receipt.records_removed, 13);
    assert_eq!(engine.record_count().unwrap(), 5);
}

#[test]
fn wave1_spool_opens_and_reads_back() {
    let (_dir, path) = copy("wave1-spool.db");
    check_spool(&path);
}

#[test]
fn wave3_spool_opens_and_reads_back() {
    let (_dir, path) = copy("wave3-spool.db");
    check_spool(&path);
}

/// A spool written by the wave-1 code (bincode rows) moves to a new stream
/// like a new one: its rows renumbered from 1, read back equal.
#[test]
fn wave1_spool_moves_to_a_new_stream_and_reads_back() {
    let (_dir, path) = copy("wave1-spool.db");
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let old = spool.stream_id();
    let mut rows = Vec::new();
    for p in Program::ALL {
        rows.extend(spool.next_batch(p, 1000).unwrap());
    }
    rows.sort_by_key(|s| s.seq);
    let (first, rest) = rows.split_at(3);
    for s in first {
        spool.ack(s.record.program, s.seq).unwrap();
    }
    assert_ne!(spool.new_stream().unwrap(), old);
    drop(spool);
    let spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let mut after = Vec::new();
    for p in Program::ALL {
        after.extend(spool.next_batch(p, 1000).unwrap());
    }
    after.sort_by_key(|s| s.seq);
    assert_eq!(after.iter().map(|s| s.seq).collect::<Vec<_>>(), (1..=15).collect::<Vec<u64>>());
    let expected: Vec<Record> = rest.iter().map(|s| s.record.clone()).collect();
    assert_eq!(after.into_iter().map(|s| s.record).collect::<Vec<_>>(), expected);
}

fn consent_subject() -> Subject {
    Subject::from_bytes([0x5a; 32])
}

fn consent_record(granted: bool, source: ConsentSource) -> Record {
    Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Consent(Consent {
            device: DeviceId::new("dev-0001").unwrap(),
            user: Some(UserId::new("u-consent").unwrap()),
            program: Program::PersonalisedUsage,
            granted,
            source,
            at: fixtures::base_time(),
        }),
    }
}

fn personal_use() -> Record {
    let mut r = privtel_testkit::bench::feature_event(7, fixtures::base_time(), 1);
    r.program = Program::PersonalisedUsage;
    r
}

#[test]
fn consent1_spool_keeps_its_consent_and_purges_by_subject() {
    let (_dir, path) = copy("consent1-spool.db");
    let mut spool = Spool::open(&path, SpoolOptions::default()).unwrap();
    let subject = consent_subject();
    let state = spool.consent(&subject, Program::PersonalisedUsage).unwrap().unwrap();
    assert_eq!(state, ConsentState::new(true, ConsentSource::Installer, fixtures::base_time()));
    assert_eq!(spool.consent(&Subject::from_bytes([0; 32]), Program::PersonalisedUsage).unwrap(), None);
    let waiting = spool.next_batch(Program::PersonalisedUsage, 10).unwrap();
    let records: Vec<Record> = waiting.into_iter().map(|s| s.record).collect();
    assert_eq!(records, vec![consent_record(true, ConsentSource::Installer), personal_use()]);
    assert_eq!(spool.len(Some(Program::AnonymousUsage)).unwrap(), 1);
    let withdrawal = consent_record(false, ConsentSource::Settings);
    let state = ConsentState::new(false, ConsentSource::Settings, fixtures::base_time());
    let change = spool
        .record_consent(&subject, Program::PersonalisedUsage, state, Some(&withdrawal), fixtures::base_time())
        .unwrap();
    assert_eq!(change.purged, 2);
    let left: Vec<Record> =
        spool.next_batch(Program::PersonalisedUsage, 10).unwrap().into_iter().map(|s| s.record).collect();
    assert_eq!(left, vec![withdrawal]);
    assert_eq!(spool.len(Some(Program::AnonymousUsage)).unwrap(), 1, "filed under nobody: kept");
    assert_eq!(spool.counters().unwrap().purged, 2);
}

#[test]
fn wave1_engine_needs_a_legacy_customer_then_migrates() {
    let (dir, path) = copy("wave1-engine.db");
    let before = std::fs::read(&path).unwrap();
    let err = SqliteEngine::open(&path, EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::LegacyCustomerRequired { rows } if rows > 18), "{err}");
    assert!(err.to_string().contains("legacy customer"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "a refused migration leaves the file as it was");
    assert!(contains(&before, "u-2000"), "wave 1 kept suppressed ids in clear");
    check_engine(&dir, &path, EngineOptions::default().legacy_customer(acme()), 0);
}

#[test]
fn wave3_engine_opens_and_reads_back() {
    let (dir, path) = copy("wave3-engine.db");
    // Not pre-tenant: the legacy customer is ignored.
    let options = EngineOptions::default().legacy_customer(CustomerId::new("ignored").unwrap());
    {
        let engine = SqliteEngine::open(&path, options.clone()).unwrap();
        let sha = fixtures::EMPTY_SHA256.parse().unwrap();
        assert_eq!(engine.binary_verdict(&acme(), &sha).unwrap().unwrap().verdict, binary_verdict());
        let domain = Domain::new("example.com").unwrap();
        assert_eq!(engine.domain_verdict(&acme(), &domain).unwrap().unwrap().verdict, domain_verdict());
    }
    check_engine(&dir, &path, options, WAVE3_STREAM);
}

#[test]
fn keys1_engine_opens_with_its_key_store_and_reads_back() {
    let (dir, path) = copy("keys1-engine.db");
    let keys_path = dir.path().join("keys1-keys.json");
    std::fs::copy(data("keys1-keys.json"), &keys_path).unwrap();
    let e = KeyStore::open(&keys_path, MasterKey::new([0x22; 32]), KeyStoreOptions::default()).unwrap_err();
    assert!(matches!(e, Error::MasterKeyMismatch { .. }), "{e}");
    let keys =
        Arc::new(KeyStore::open(&keys_path, MasterKey::new([0x11; 32]), KeyStoreOptions::default()).unwrap());
    let data_key = keys.current(&acme()).unwrap().id().get();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let ids: Vec<Option<u32>> = conn
            .prepare("SELECT key_id FROM records")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !ids.is_empty() && ids.iter().all(|k| *k == Some(data_key)),
            "sealed under acme's key: {ids:?}"
        );
    }
    // Without the key store the rows do not open.
    let bare = SqliteEngine::open(&path, EngineOptions::default()).unwrap();
    let e = bare.export_person(&acme(), &UserId::new("u-1042").unwrap(), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::MissingKey { .. }), "{e}");
    drop(bare);
    check_engine(&dir, &path, EngineOptions::default().key_store(keys), WAVE3_STREAM);
}

/// A store of schema 6 (the version before streams were dated) migrates:
/// every mark is kept and dated at the migration, so a sweep does not
/// take it before a whole TTL has passed without its stream being used.
#[test]
fn a_schema_6_engine_keeps_its_marks_dated_at_the_migration() {
    let (dir, path) = copy("keys1-engine.db");
    let version = |path: &Path| -> i64 {
        rusqlite::Connection::open(path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(version(&path), 6);
    let keys_path = dir.path().join("keys1-keys.json");
    std::fs::copy(data("keys1-keys.json"), &keys_path).unwrap();
    let keys =
        Arc::new(KeyStore::open(&keys_path, MasterKey::new([0x11; 32]), KeyStoreOptions::default()).unwrap());
    let before = privtel_model::Timestamp::now();
    let mut engine = SqliteEngine::open(&path, EngineOptions::default().key_store(keys)).unwrap();
    let after = privtel_model::Timestamp::now();
    assert_eq!(version(&path), 7);
    let (d1, d2) = (DeviceId::new("dev-0001").unwrap(), DeviceId::new("dev-0002").unwrap());
    assert_eq!(engine.high_water(&acme(), &d1, WAVE3_STREAM).unwrap(), 18);
    assert_eq!(engine.high_water(&acme(), &d2, WAVE3_STREAM).unwrap(), 12);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let dated: Vec<i64> = conn
            .prepare("SELECT used_at FROM streams")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let (lo, hi) = (privtel_store::parts::nanos(before), privtel_store::parts::nanos(after));
        assert!(dated.len() == 2 && dated.iter().all(|t| (lo..=hi).contains(t)), "{dated:?}");
    }
    // A day later (devices still active): the marks stay; the records of
    // 2024 go with their TTL.
    let retention = privtel_store::RetentionPolicy {
        device_inactivity: time::Duration::days(36_500),
        ..privtel_store::RetentionPolicy::default()
    };
    let day = after.checked_add(time::Duration::days(1)).unwrap();
    assert_eq!(engine.sweep(&acme(), &retention, day).unwrap().streams, 0);
    assert_eq!(engine.stream_count(&acme(), &d1).unwrap(), 1);
    // Unused a whole TTL (30 days) after the migration: gone.
    let month = after.checked_add(time::Duration::days(31)).unwrap();
    assert_eq!(engine.sweep(&acme(), &retention, month).unwrap().streams, 2);
    assert_eq!(engine.high_water(&acme(), &d1, WAVE3_STREAM).unwrap(), 0);
}

#[test]
fn streams7_engine_opens_reads_back_and_its_streams_expire_by_their_dates() {
    let (dir, path) = copy("streams7-engine.db");
    check_engine(&dir, &path, EngineOptions::default(), WAVE3_STREAM);
    let mut engine = SqliteEngine::open(&path, EngineOptions::default()).unwrap();
    let d1 = DeviceId::new("dev-0001").unwrap();
    assert_eq!(engine.stream_count(&acme(), &d1).unwrap(), 2);
    let retention = privtel_store::RetentionPolicy {
        device_inactivity: time::Duration::days(36_500),
        ..privtel_store::RetentionPolicy::default()
    };
    // 30 days and a second after the first streams' last batch: they go;
    // the one used a day later stays.
    let at = fixtures::base_time().checked_add(time::Duration::days(30) + time::Duration::SECOND).unwrap();
    assert_eq!(engine.sweep(&acme(), &retention, at).unwrap().streams, 2);
    assert_eq!(engine.stream_count(&acme(), &d1).unwrap(), 1);
    assert_eq!(engine.high_water(&acme(), &d1, WAVE3_STREAM).unwrap(), 0);
    let out = engine.ingest(&acme(), &d1, STREAMS7_LATER, 1, Vec::new(), at).unwrap();
    assert_eq!(out.high_water, 0);
}

fn binary_verdict() -> BinaryVerdict {
    BinaryVerdict {
        sha256: fixtures::EMPTY_SHA256.parse().unwrap(),
        threat: ThreatLevel::High,
        category: None,
    }
}

fn domain_verdict() -> DomainVerdict {
    DomainVerdict {
        domain: Domain::new("example.com").unwrap(),
        reputation: Reputation::LowRisk,
        category: Some("reference".parse().unwrap()),
        hosting_country: Some("DE".parse().unwrap()),
    }
}

/// Writes the wave-3 golden files (see the module docs); does nothing
/// without `PRIVTEL_WRITE_GOLDEN`.
#[test]
fn write() {
    let Ok(out) = std::env::var("PRIVTEL_WRITE_GOLDEN") else { return };
    let out = PathBuf::from(out);
    let now = fixtures::base_time();
    let mut spool = Spool::open(out.join("wave3-spool.db"), SpoolOptions::default()).unwrap();
    spool.append_batch(&fixtures::golden_records("golden"), now).unwrap();
    drop(spool);
    let mut spool = Spool::open(out.join("consent1-spool.db"), SpoolOptions::default()).unwrap();
    let given = ConsentState::new(true, ConsentSource::Installer, now);
    let record = consent_record(true, ConsentSource::Installer);
    spool.record_consent(&consent_subject(), Program::PersonalisedUsage, given, Some(&record), now).unwrap();
    spool.append_for(&[(personal_use(), Some(consent_subject()))], now).unwrap();
    spool.append_for(&[(privtel_testkit::bench::feature_event(8, now, 1), None)], now).unwrap();
    drop(spool);
    let mut engine = SqliteEngine::open(out.join("wave3-engine.db"), EngineOptions::default()).unwrap();
    fill_engine(&mut engine, now);
    drop(engine);

    let mut engine = SqliteEngine::open(out.join("streams7-engine.db"), EngineOptions::default()).unwrap();
    fill_engine(&mut engine, now);
    let day = now.checked_add(time::Duration::days(1)).unwrap();
    engine.ingest(&acme(), &DeviceId::new("dev-0001").unwrap(), STREAMS7_LATER, 1, Vec::new(), day).unwrap();
    drop(engine);

    let keys = Arc::new(
        KeyStore::open(out.join("keys1-keys.json"), MasterKey::new([0x11; 32]), KeyStoreOptions::default())
            .unwrap(),
    );
    let mut engine =
        SqliteEngine::open(out.join("keys1-engine.db"), EngineOptions::default().key_store(keys)).unwrap();
    fill_engine(&mut engine, now);
}

/// What every golden engine holds: the golden records of `dev-0001`,
/// `u-2000`'s records of `dev-0002` erased, and one verdict of each kind.
fn fill_engine(engine: &mut SqliteEngine, now: privtel_model::Timestamp) {
    let dev = |d: &str| DeviceId::new(d).unwrap();
    engine
        .ingest(&acme(), &dev("dev-0001"), WAVE3_STREAM, 1, fixtures::golden_records("golden"), now)
        .unwrap();
    engine.ingest(&acme(), &dev("dev-0002"), WAVE3_STREAM, 1, erased_records(), now).unwrap();
    let request = ErasureRequest::new("req-1", UserId::new("u-2000").unwrap(), now);
    engine.erase_person(&acme(), &request, now).unwrap();
    engine.record_verdicts(&acme(), &[binary_verdict()], &[domain_verdict()], now).unwrap();
}

/// `format3-records.bin`: `fixtures::golden_records("golden")`, each
/// encoded in row format 3 (JSON compressed with the `records-1`
/// dictionary), as 4-byte little-endian lengths each followed by its
/// payload (unsealed). Written by `write_format3` below.
const FORMAT3: &str = "format3-records.bin";

fn format3_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let (frame, tail) = tail.split_at(len);
        out.push(frame);
        rest = tail;
    }
    out
}

#[test]
fn format3_payloads_read_back() {
    use privtel_store::parts::{Format, RECORDS_DICTIONARY_1, unseal};
    use sha2::Digest as _;
    // Rows on disk depend on these exact dictionary bytes.
    assert_eq!(
        format!("{:x}", sha2::Sha256::digest(RECORDS_DICTIONARY_1)),
        "31380b6abdda2e662f727b737b8818d77cf8a8f08e1feefb4a9f5da57083fa9c",
        "records-1.zdict changed: rows written with it would no longer read"
    );
    let bytes = std::fs::read(data(FORMAT3)).unwrap();
    let frames = format3_frames(&bytes);
    let expected = fixtures::golden_records("golden");
    assert_eq!(frames.len(), expected.len());
    for (i, (frame, want)) in frames.iter().zip(&expected).enumerate() {
        let got = unseal(i as i64, Format::JsonZstd.code(), None, frame, None).unwrap();
        assert_eq!(&got, want, "record {i}");
    }
}

/// Writes `format3-records.bin` (see `FORMAT3`); does nothing without
/// `PRIVTEL_WRITE_GOLDEN`.
#[test]
fn write_format3() {
    use privtel_store::parts::{Format, encode_as};
    let Ok(out) = std::env::var("PRIVTEL_WRITE_GOLDEN") else { return };
    let mut bytes = Vec::new();
    for r in fixtures::golden_records("golden") {
        let frame = encode_as(&r, Format::JsonZstd).unwrap();
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&frame);
    }
    std::fs::write(PathBuf::from(out).join(FORMAT3), bytes).unwrap();
}

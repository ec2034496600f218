//! Per-customer data keys, contract end and the customer copy on real
//! SQLite, with raw scans of every file for canaries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use privtel_model::{BinaryVerdict, CustomerId, DeviceId, Digest, Timestamp, UserId};
use privtel_store::{
    AdmittedBatch, AtRestKey, EngineOptions, EngineStore, ErasureRequest, Error, KeyId, KeyState, KeyStore,
    KeyStoreOptions, MasterKey, Sequence, SqliteEngine,
};

use privtel_testkit::fixtures::records_of;

fn now() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

fn cid(s: &str) -> CustomerId {
    CustomerId::new(s).unwrap()
}

fn keys_at(dir: &Path, master: MasterKey) -> Arc<KeyStore> {
    Arc::new(KeyStore::open(dir.join("keys.json"), master, KeyStoreOptions::default()).unwrap())
}

fn engine_with(dir: &Path, keys: Arc<KeyStore>) -> SqliteEngine {
    SqliteEngine::open(dir.join("engine.db"), EngineOptions::default().key_store(keys)).unwrap()
}

fn batch(
    customer: &CustomerId,
    device: &str,
    first_seq: u64,
    user: &str,
    tag: &str,
    base: u128,
) -> AdmittedBatch {
    AdmittedBatch {
        customer: customer.clone(),
        device: DeviceId::new(device).unwrap(),
        seq: Sequence { stream: 7, first_seq, skipped: 0 },
        records: records_of(user, tag, base).into_iter().map(Some).collect(),
    }
}

fn ingest(engine: &mut SqliteEngine, b: AdmittedBatch) -> Result<privtel_store::IngestOutcome, Error> {
    let encoded = engine.encoder().encode(b, now());
    engine.ingest_encoded(vec![encoded], now()).remove(0)
}

/// Every file the engine and the key store wrote: the database, its log,
/// the key-store file and its backups (and any temporary file left).
fn written_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { todo.push(p) } else { out.push(p) }
        }
    }
    out
}

/// The files (by name) whose raw bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    written_files(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn raw_key_ids(dir: &Path, customer: &str) -> Vec<Option<u32>> {
    let conn = rusqlite::Connection::open(dir.join("engine.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT key_id FROM records WHERE customer = (SELECT id FROM customers WHERE customer = ?1) ORDER BY id")
        .unwrap();
    stmt.query_map([customer], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn master_keys_come_from_hex_env_and_private_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let made = MasterKey::load_or_create(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterKey::load(&path).unwrap_err();
        assert!(matches!(e, Error::MasterKey { .. }), "{e}");
        assert!(e.to_string().contains("0644") && !e.to_string().contains("master.key"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert_eq!(MasterKey::load_or_create(&path).unwrap(), made, "an existing file is loaded, not replaced");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!format!("{made:?}").contains(text.trim()), "Debug shows no secret");

    env_in_a_child("PRIVTEL_TEST_MASTER_KEY_1", &"ab".repeat(32));
    let e = MasterKey::from_env("PRIVTEL_TEST_MASTER_KEY_UNSET").unwrap_err();
    assert!(e.to_string().contains("is not set"), "{e}");
    let e = MasterKey::from_hex(&"zz".repeat(32)).unwrap_err();
    assert!(!e.to_string().contains("zz"), "the message names no digit: {e}");
    assert_ne!(MasterKey::new([1; 32]).id(), MasterKey::new([2; 32]).id(), "the id is the key's fingerprint");
}

/// `std::env::set_var` is `unsafe` in edition 2024 and the workspace forbids
/// unsafe code: the variable is handed to a child process instead (the test
/// binary re-run with one test), which reads the key from it.
fn env_in_a_child(var: &str, value: &str) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "customer_keys::master_key_from_the_environment_in_a_child", "--include-ignored"])
        .env(var, value)
        .status()
        .unwrap();
    assert!(status.success(), "the child saw the variable and read the key");
}

#[test]
#[ignore = "run by master_keys_come_from_hex_env_and_private_files_only with the variable set"]
fn master_key_from_the_environment_in_a_child() {
    let read = MasterKey::from_env("PRIVTEL_TEST_MASTER_KEY_1");
    if std::env::var_os("PRIVTEL_TEST_MASTER_KEY_1").is_some() {
        assert_eq!(read.unwrap(), MasterKey::new([0xab; 32]));
    } else {
        // Run by itself (--include-ignored), without the variable.
        assert!(read.unwrap_err().to_string().contains("is not set"));
    }
}

#[test]
fn rows_are_sealed_under_their_customers_key_and_master_rotation_touches_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (MasterKey::new([1; 32]), MasterKey::new([2; 32]));
    let keys = keys_at(dir.path(), old.clone());
    let (acme, globex) = (cid("acme"), cid("globex"));
    let mut engine = engine_with(dir.path(), keys.clone());
    ingest(&mut engine, batch(&acme, "d1", 1, "u-a", "a", 0)).unwrap();
    ingest(&mut engine, batch(&globex, "d1", 1, "u-g", "g", 0)).unwrap();
    let (ka, kg) = (keys.current(&acme).unwrap().id(), keys.current(&globex).unwrap().id());
    assert_ne!(ka, kg, "one key per customer");
    assert!(raw_key_ids(dir.path(), "acme").iter().all(|k| *k == Some(ka.get())));
    assert!(raw_key_ids(dir.path(), "globex").iter().all(|k| *k == Some(kg.get())));
    let mut before = Vec::new();
    engine.export_person(&acme, &UserId::new("u-a").unwrap(), &mut before).unwrap();
    let payloads = |dir: &Path| -> Vec<Vec<u8>> {
        let conn = rusqlite::Connection::open(dir.join("engine.db")).unwrap();
        let mut s = conn.prepare("SELECT payload FROM records ORDER BY id").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let rows_before = payloads(dir.path());

    keys.rotate_master(new.clone()).unwrap();
    drop(engine);
    drop(keys);
    assert_eq!(payloads(dir.path()), rows_before, "no row changed");
    let e =
        KeyStore::open(dir.path().join("keys.json"), old.clone(), KeyStoreOptions::default()).unwrap_err();
    match &e {
        Error::MasterKeyMismatch { expected, given } => assert_eq!((*expected, *given), (new.id(), old.id())),
        other => panic!("expected a master key mismatch, got {other}"),
    }
    assert!(e.to_string().contains(&new.id().to_string()), "names the key id expected: {e}");
    let keys = keys_at(dir.path(), new);
    let engine = engine_with(dir.path(), keys);
    let mut after = Vec::new();
    engine.export_person(&acme, &UserId::new("u-a").unwrap(), &mut after).unwrap();
    assert_eq!(after, before, "everything reads under the new master alone");
}

#[test]
fn old_single_key_and_unsealed_rows_still_read_and_reseal_moves_them_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let acme = cid("acme");
    let user = UserId::new("u-a").unwrap();
    {
        let mut plain = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
        ingest(&mut plain, batch(&acme, "d1", 1, "u-a", "plain", 0)).unwrap();
    }
    let legacy = AtRestKey::new(7, [7; 32]);
    {
        let mut sealed =
            SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default().key(legacy.clone()))
                .unwrap();
        ingest(&mut sealed, batch(&acme, "d2", 1, "u-a", "legacy", 1000)).unwrap();
    }
    let keys = keys_at(dir.path(), MasterKey::new([1; 32]));
    let ambiguous = EngineOptions::default().key(AtRestKey::new(1 << 28, [7; 32])).key_store(keys.clone());
    let e = SqliteEngine::open(dir.path().join("engine.db"), ambiguous).unwrap_err();
    assert!(matches!(e, Error::KeyStore { .. }), "an old key id in the data keys' range is refused: {e}");
    let open = |keys: &Arc<KeyStore>| {
        SqliteEngine::open(
            dir.path().join("engine.db"),
            EngineOptions::default().key(legacy.clone()).key_store(keys.clone()),
        )
        .unwrap()
    };
    let mut engine = open(&keys);
    ingest(&mut engine, batch(&acme, "d3", 1, "u-a", "new", 2000)).unwrap();
    let first = keys.current(&acme).unwrap().id();
    let ids = raw_key_ids(dir.path(), "acme");
    let n = ids.len() as u64;
    assert!(ids.contains(&None) && ids.contains(&Some(7)) && ids.contains(&Some(first.get())), "{ids:?}");
    let copy = |engine: &SqliteEngine| {
        let mut out = Vec::new();
        let stats = engine.export_customer(&acme, &serde_json::Map::new(), &mut out).unwrap();
        assert_eq!(stats.records, n, "unsealed, old-key and data-key rows all read");
        out
    };
    let all = copy(&engine);
    assert!(engine.export_person(&acme, &user, &mut Vec::new()).unwrap() > 0);

    // A bounded batch at a time, until nothing remains off the current key.
    let p = engine.reseal(&acme, 3).unwrap();
    assert_eq!((p.moved, p.remaining), (3, n - 3 - (n / 3)));
    let mut moved = p.moved;
    loop {
        let p = engine.reseal(&acme, 3).unwrap();
        assert!(p.moved <= 3);
        moved += p.moved;
        if p.remaining == 0 {
            break;
        }
    }
    assert_eq!(moved, n - n / 3, "the rows not under the data key moved");
    assert!(raw_key_ids(dir.path(), "acme").iter().all(|k| *k == Some(first.get())));

    // Data-key rotation: the retired key stays until nothing is under it.
    let second = keys.rotate_customer_key(&acme).unwrap();
    assert!(engine.destroy_retired_keys(&acme).unwrap().is_empty(), "rows are still under the retired key");
    while engine.reseal(&acme, 4).unwrap().remaining > 0 {}
    assert_eq!(engine.destroy_retired_keys(&acme).unwrap(), [first]);
    let states: Vec<(KeyId, KeyState)> =
        keys.keys_of(&acme).unwrap().into_iter().map(|k| (k.id, k.state)).collect();
    assert_eq!(states, [(first, KeyState::Destroyed), (second, KeyState::Current)]);
    assert_eq!(copy(&engine), all, "the same records, now under the second key");
    // A reopened store (no legacy key needed any more) reads them too.
    drop(engine);
    let engine = engine_with(dir.path(), keys);
    assert_eq!(copy(&engine), all);
}

#[test]
fn key_store_backups_are_kept_within_the_retention_and_a_longer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let e = KeyStore::open(
        &path,
        MasterKey::new([1; 32]),
        KeyStoreOptions::default().backup_retention(std::time::Duration::from_secs(31 * 86_400)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    assert_eq!(KeyStoreOptions::default().retention().as_secs(), 7 * 86_400);
    let keys = KeyStore::open(&path, MasterKey::new([1; 32]), KeyStoreOptions::default()).unwrap();
    keys.current(&cid("acme")).unwrap();
    keys.rotate_customer_key(&cid("acme")).unwrap();
    let backups = keys.backups().unwrap();
    assert_eq!(backups.len(), 3, "one copy per change (creation, a key, a rotation)");
    assert_eq!(std::fs::read(backups.last().unwrap()).unwrap(), std::fs::read(&path).unwrap());
    let at = Timestamp::now();
    assert_eq!(keys.prune_backups(at).unwrap(), 0, "none older than 7 days yet");
    let eight_days = at.checked_add(time::Duration::days(8)).unwrap();
    assert_eq!(keys.prune_backups(eight_days).unwrap(), 3);
    assert!(keys.backups().unwrap().is_empty());
}

#[test]
fn a_key_store_file_that_is_not_one_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    for bad in [&b"not json"[..], b"{\"format\":\"privtel-key-store\"}", b""] {
        std::fs::write(&path, bad).unwrap();
        let e = KeyStore::open(&path, MasterKey::new([1; 32]), KeyStoreOptions::default()).unwrap_err();
        assert!(matches!(e, Error::KeyStore { .. }), "{e}");
    }
    // A wrapped key that was tampered with does not open.
    std::fs::remove_file(&path).unwrap();
    let keys = KeyStore::open(&path, MasterKey::new([1; 32]), KeyStoreOptions::default()).unwrap();
    keys.current(&cid("acme")).unwrap();
    drop(keys);
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let wrapped = v["keys"][0]["wrapped"].as_str().unwrap();
    let flipped = format!("{}{}", if wrapped.starts_with('0') { "1" } else { "0" }, &wrapped[1..]);
    std::fs::write(&path, text.replace(wrapped, &flipped)).unwrap();
    let e = KeyStore::open(&path, MasterKey::new([1; 32]), KeyStoreOptions::default()).unwrap_err();
    assert!(e.to_string().contains("does not open"), "{e}");
}

#[test]
fn right_after_key_destruction_nothing_of_the_customer_reads() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_at(dir.path(), MasterKey::new([1; 32]));
    let mut engine = engine_with(dir.path(), keys.clone());
    let (a, b) = (cid("acme"), cid("globex"));
    ingest(&mut engine, batch(&a, "d1", 1, "u-a", "a", 0)).unwrap();
    ingest(&mut engine, batch(&b, "d1", 1, "u-b", "b", 0)).unwrap();
    assert!(engine.export_person(&a, &UserId::new("u-a").unwrap(), &mut Vec::new()).unwrap() > 0);
    let destroyed = keys.destroy_customer(&a, now()).unwrap();
    assert_eq!(destroyed.len(), 1);
    // The rows are still there, and none opens.
    assert!(engine.record_count_of(&a).unwrap() > 0);
    let e = engine.export_person(&a, &UserId::new("u-a").unwrap(), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::KeyDestroyed { key_id, .. } if key_id == destroyed[0].get()), "{e}");
    let e = engine.export_customer(&a, &serde_json::Map::new(), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::KeyDestroyed { .. }), "{e}");
    // A batch encoded now is refused: no key is made for a deleted customer.
    let e = ingest(&mut engine, batch(&a, "d1", 2, "u-a", "late", 10_000)).unwrap_err();
    assert!(matches!(e, Error::CustomerDeleted), "{e}");
    assert!(
        engine.export_person(&b, &UserId::new("u-b").unwrap(), &mut Vec::new()).unwrap() > 0,
        "globex reads"
    );
    // The contract end then finishes the job.
    let receipt = engine.delete_customer(&a, now()).unwrap();
    assert!(receipt.keys_destroyed.is_empty(), "already destroyed");
    assert_eq!(engine.record_count_of(&a).unwrap(), 0);
}

#[test]
fn contract_end_mid_ingest_leaves_no_canary_in_any_file_and_refuses_later_batches() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_at(dir.path(), MasterKey::new([1; 32]));
    let engine = Arc::new(Mutex::new(engine_with(dir.path(), keys.clone())));
    let (a, b) = (cid("canaryA-corp"), cid("globex"));
    let stop = Arc::new(AtomicBool::new(false));
    // A running ingest loop: a batch of A, then one of B, each under the lock.
    let ingester = {
        let (engine, stop, a, b) = (engine.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut log: Vec<(bool, Result<u64, String>)> = Vec::new();
            let (mut seq_a, mut seq_b) = (1u64, 1u64);
            let mut i = 0u128;
            while !stop.load(Ordering::SeqCst) || i < 40 {
                for (is_a, customer) in [(true, &a), (false, &b)] {
                    let (user, tag, seq) = if is_a {
                        (format!("canaryA-user-{i}"), format!("canaryA-tag-{i}"), &mut seq_a)
                    } else {
                        (format!("u-b-{i}"), format!("globex-{i}"), &mut seq_b)
                    };
                    let device = if is_a { "canaryA-laptop" } else { "globex-laptop" };
                    let records = records_of(&user, &tag, i * 100);
                    let n = records.len() as u64;
                    let admitted = AdmittedBatch {
                        customer: customer.clone(),
                        device: DeviceId::new(device).unwrap(),
                        seq: Sequence { stream: 7, first_seq: *seq, skipped: 0 },
                        records: records.into_iter().map(Some).collect(),
                    };
                    // Encoded outside the lock, as a service's connection threads do.
                    let encoder = engine.lock().unwrap().encoder();
                    let encoded = encoder.encode(admitted, now());
                    let r = engine.lock().unwrap().ingest_encoded(vec![encoded], now()).remove(0);
                    if r.is_ok() {
                        *seq += n;
                    }
                    log.push((is_a, r.map(|o| o.stored).map_err(|e| e.to_string())));
                }
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            log
        })
    };
    // Wait until A has data, and prove the scan sees it while it is there.
    loop {
        if engine.lock().unwrap().record_count_of(&a).unwrap() > 40 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = {
        let _held = engine.lock().unwrap();
        files_containing(dir.path(), "canaryA-")
    };
    assert!(
        !before.is_empty(),
        "the canaries are in the raw files before the deletion (the scan can see them)"
    );
    let receipt = engine.lock().unwrap().delete_customer(&a, now()).unwrap();
    stop.store(true, Ordering::SeqCst);
    let log = ingester.join().unwrap();

    // The receipt: key first, then rows; counts; no personal data.
    assert_eq!(receipt.customer, a);
    let destroyed_at = receipt.keys_destroyed_at.expect("keys destroyed");
    assert!(receipt.started_at <= destroyed_at && destroyed_at <= receipt.completed_at);
    assert_eq!(receipt.keys_destroyed.len(), 1);
    assert!(
        receipt.removed["records"] > 40 && receipt.removed["users"] > 0 && receipt.removed["devices"] == 1
    );
    assert_eq!(receipt.removed["customers"], 1);
    for store in ["engine", "key store", "key store backups"] {
        assert!(receipt.stores.iter().any(|s| s == store), "{:?}", receipt.stores);
    }
    let json = serde_json::to_string(&receipt).unwrap();
    assert!(!json.contains("canaryA-user") && !json.contains("canaryA-laptop"), "{json}");

    // Batches of A after the deletion were refused, typed; B went on.
    let after_delete: Vec<_> = log.iter().skip_while(|(is_a, r)| !(*is_a && r.is_err())).collect();
    assert!(after_delete.iter().filter(|(is_a, _)| *is_a).count() >= 2, "A kept sending after the deletion");
    for (is_a, r) in &after_delete {
        if *is_a {
            assert!(r.as_ref().unwrap_err().contains("deleted at contract end"), "{r:?}");
        } else {
            assert!(r.is_ok(), "B is not affected: {r:?}");
        }
    }
    assert!(log.iter().filter(|(is_a, _)| !*is_a).all(|(_, r)| r.is_ok()));

    let engine = engine.lock().unwrap();
    assert_eq!(engine.record_count_of(&a).unwrap(), 0);
    assert!(!engine.customers().unwrap().contains(&a));
    // Raw files: the database, its log, the key store and its backups.
    let files = written_files(dir.path());
    assert!(
        files.iter().any(|p| p.ends_with("engine.db-wal")) && files.iter().any(|p| p.ends_with("keys.json"))
    );
    assert!(keys.backups().unwrap().len() >= 2);
    for canary in ["canaryA-", "canaryA-corp", "canaryA-laptop", "canaryA-user-1", "canaryA-tag-3"] {
        assert_eq!(files_containing(dir.path(), canary), Vec::<String>::new(), "{canary} survives somewhere");
    }
    // B reads whole.
    let b_batches = log.iter().filter(|(is_a, r)| !*is_a && r.is_ok()).count() as u64;
    let per_batch = records_of("x", "y", 0).len() as u64;
    assert_eq!(engine.record_count_of(&b).unwrap(), b_batches * per_batch);
    let mut copy = Vec::new();
    let stats = engine.export_customer(&b, &serde_json::Map::new(), &mut copy).unwrap();
    assert_eq!(stats.records, b_batches * per_batch);
}

#[test]
fn a_deleted_customer_is_refused_everywhere_until_re_onboarded() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_at(dir.path(), MasterKey::new([1; 32]));
    let mut engine = engine_with(dir.path(), keys.clone());
    let a = cid("acme");
    ingest(&mut engine, batch(&a, "d1", 1, "u-a", "a", 0)).unwrap();
    engine.delete_customer(&a, now()).unwrap();
    let verdict = BinaryVerdict {
        sha256: Digest::from_bytes([1; 32]),
        threat: privtel_model::ThreatLevel::Low,
        category: None,
    };
    assert!(matches!(engine.record_verdicts(&a, &[verdict], &[], now()), Err(Error::CustomerDeleted)));
    let request = ErasureRequest::new("r", UserId::new("u-a").unwrap(), now());
    assert!(matches!(engine.erase_person(&a, &request, now()), Err(Error::CustomerDeleted)));
    assert!(matches!(
        engine.ingest(&a, &DeviceId::new("d1").unwrap(), 7, 1, records_of("u-a", "x", 0), now()),
        Err(Error::CustomerDeleted)
    ));
    assert!(keys.is_deleted(&a).unwrap());
    // Another engine on the same files sees the tombstone too.
    drop(engine);
    let mut engine = engine_with(dir.path(), keys.clone());
    assert!(matches!(ingest(&mut engine, batch(&a, "d1", 1, "u-a", "a", 0)), Err(Error::CustomerDeleted)));
    engine.reonboard_customer(&a).unwrap();
    let o = ingest(&mut engine, batch(&a, "d1", 1, "u-a", "a", 0)).unwrap();
    assert!(o.stored > 0, "a new contract starts from nothing");
    assert!(keys.keys_of(&a).unwrap().iter().all(|k| k.state == KeyState::Current), "a fresh key");
}

#[test]
fn the_customer_copy_streams_every_row_of_the_customer_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_at(dir.path(), MasterKey::new([1; 32]));
    let mut engine = engine_with(dir.path(), keys);
    let (a, b) = (cid("acme"), cid("globex"));
    ingest(&mut engine, batch(&a, "d1", 1, "u-a", "acme-one", 0)).unwrap();
    ingest(&mut engine, batch(&a, "d2", 1, "u-a2", "acme-two", 100)).unwrap();
    ingest(&mut engine, batch(&b, "d1", 1, "u-b", "globex-secret", 0)).unwrap();
    let verdict = BinaryVerdict {
        sha256: Digest::from_bytes([1; 32]),
        threat: privtel_model::ThreatLevel::Low,
        category: None,
    };
    engine.record_verdicts(&a, &[verdict], &[], now()).unwrap();
    let mut fields = serde_json::Map::new();
    fields.insert("policy_version".into(), "2026-11".into());
    fields.insert("format".into(), "caller cannot override".into());

    /// A writer that takes at most 7 bytes a call (the copy must cope).
    struct Trickle(Vec<u8>);
    impl std::io::Write for Trickle {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = b.len().min(7);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Trickle(Vec::new());
    let stats = engine.export_customer(&a, &fields, &mut out).unwrap();
    let text = String::from_utf8(out.0).unwrap();
    assert_eq!(stats.bytes, text.len() as u64);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stats.lines, lines.len() as u64);
    let m = &lines[0]["manifest"];
    assert_eq!(m["policy_version"], "2026-11");
    assert_eq!(
        (m["format"].as_str(), m["format_version"].as_u64()),
        (Some("privtel-customer-copy"), Some(1))
    );
    assert_eq!(m["customer"], "acme");
    assert_eq!(m["schema_version"], 7);
    let records: Vec<_> = lines.iter().filter(|l| l.get("record").is_some()).collect();
    assert_eq!(records.len() as u64, engine.record_count_of(&a).unwrap());
    assert_eq!(stats.records, records.len() as u64);
    // Record lines are export_person's lines.
    let mut person = Vec::new();
    engine.export_person(&a, &UserId::new("u-a").unwrap(), &mut person).unwrap();
    let person: Vec<serde_json::Value> =
        String::from_utf8(person).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(person.iter().all(|p| records.contains(&p)), "every export_person line is in the copy");
    assert_eq!(lines.iter().filter(|l| l.get("device").is_some()).count(), 2);
    assert_eq!(lines.iter().filter(|l| l.get("user").is_some()).count(), 2);
    assert_eq!(lines.iter().filter(|l| l.get("binary_verdict").is_some()).count(), 1);
    let counts = &lines.last().unwrap()["counts"];
    assert_eq!(counts["lines"].as_u64(), Some(stats.lines));
    assert_eq!(counts["tables"]["records"].as_u64(), Some(stats.records));
    assert!(!text.contains("globex"), "nothing of another customer");
    // An unknown customer: a manifest and counts.
    let stats = engine.export_customer(&cid("initech"), &fields, &mut Vec::new()).unwrap();
    assert_eq!((stats.lines, stats.records), (2, 0));
}

#[test]
fn a_copy_of_a_corrupt_row_is_a_typed_error_naming_no_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    let a = cid("acme");
    ingest(&mut engine, batch(&a, "d1", 1, "u-a", "a", 0)).unwrap();
    let mut good = Vec::new();
    assert!(engine.export_customer(&a, &serde_json::Map::new(), &mut good).unwrap().records > 0);
    let conn = rusqlite::Connection::open(dir.path().join("engine.db")).unwrap();
    conn.execute("UPDATE records SET payload = CAST('{\"secret-value\": ' AS BLOB) WHERE id = 2", [])
        .unwrap();
    let e = engine.export_customer(&a, &serde_json::Map::new(), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::Decode { id: 2, .. }), "{e}");
    assert!(!e.to_string().contains("secret-value"), "{e}");
    conn.execute("UPDATE records SET payload = CAST('{} trailing' AS BLOB) WHERE id = 2", []).unwrap();
    assert!(matches!(
        engine.export_customer(&a, &serde_json::Map::new(), &mut Vec::new()),
        Err(Error::Decode { .. })
    ));
}

//! The scale-out ingest path against the real servers: front-ends publish
//! to NATS JetStream, writers apply into PostgreSQL. Each test has its own
//! database and stream, dropped at the end.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use privtel_engine_pg::PgEngine;
use privtel_scale_tests::{
    OwnNats, StreamGuard, TestDb, batch, nats_url, now, stream_options, wait_until, walk,
};
use privtel_service::jetstream::{
    IngestMessage, JetStreamError, JetStreamOptions, Publisher, Rows, StreamWriter,
};
use privtel_store::{CustomerId, DeviceId, EngineStore};

const NEEDS: &str = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL";

fn hw(engine: &PgEngine, device: &str) -> u64 {
    engine.high_water(&CustomerId::new("acme").unwrap(), &DeviceId::new(device).unwrap(), 7).unwrap()
}

/// Steps `writer` until the stream is drained (or 60 s).
fn drain(writer: &mut StreamWriter<Rows<PgEngine>>) {
    assert!(
        wait_until(Duration::from_secs(60), || {
            writer.step(Duration::from_millis(100)).unwrap();
            writer.lag().unwrap() == 0
        }),
        "the writer did not drain the stream"
    );
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn retries_of_one_batch_through_two_front_ends_are_stored_once() {
    let _ = NEEDS;
    let db = TestDb::new();
    let options = stream_options(&nats_url()).duplicate_window(Duration::from_secs(1));
    let _guard = StreamGuard { options: options.clone() };
    let front1 = Publisher::connect(options.clone()).unwrap();
    let front2 = Publisher::connect(options.clone()).unwrap();
    let at = now();
    let b = batch("acme", "dev-a", 0, 100, at);
    // The same batch through both front-ends: JetStream holds it once.
    assert_eq!(front1.publish(b.clone(), at, "").unwrap().duplicates, 0);
    assert_eq!(front2.publish(b.clone(), at, "").unwrap().duplicates, 1);
    // After the duplicate window, a retry is a new message: the database
    // is what keeps it from being stored twice.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(front1.publish(b.clone(), at, "").unwrap().duplicates, 0);
    // A retry cut differently (the first half, then the whole batch and
    // the next one together) gets ids of its own.
    let mut half = b.clone();
    half.records.truncate(50);
    front2.publish(half, at, "").unwrap();
    let mut two = b;
    two.records.extend(batch("acme", "dev-a", 1, 100, at).records);
    front1.publish(two, at, "").unwrap();
    assert_eq!(front1.lag().unwrap(), 4);

    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    drain(&mut writer);
    let m = writer.metrics().snapshot(None);
    assert_eq!((m.applied, m.applied_records, m.duplicates, m.terminated), (4, 200, 250, 0));
    assert_eq!(db.rows(), (200, 200), "every record once");
    assert_eq!(hw(&writer.engine().0, "dev-a"), 200);
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn batches_applied_out_of_order_wait_for_the_ones_before_them() {
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    // Batch 2 reaches the stream before batch 1 (two front-ends, one slow).
    front.publish(batch("acme", "dev-o", 1, 10, at), at, "").unwrap();
    front.publish(batch("acme", "dev-o", 0, 10, at), at, "").unwrap();
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap().with_max_group(1);
    drain(&mut writer);
    let m = writer.metrics().snapshot(None);
    assert!(m.handed_back >= 1, "{m:?}");
    assert_eq!((m.applied_records, m.terminated), (20, 0));
    assert_eq!(db.rows(), (20, 20));
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_device_claiming_a_gap_stores_nothing_and_costs_a_bounded_number_of_deliveries() {
    let db = TestDb::new();
    let mut options = stream_options(&nats_url());
    options.max_gap_deliveries = 3;
    options.gap_delay = Duration::from_millis(20);
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    front.publish(batch("acme", "dev-g", 1_000_000, 10, at), at, "").unwrap();
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    drain(&mut writer);
    let m = writer.metrics().snapshot(None);
    assert_eq!((m.handed_back, m.terminated, m.applied), (2, 1, 0), "{m:?}");
    assert_eq!(db.rows().0, 0);
    assert_eq!(hw(&writer.engine().0, "dev-g"), 0, "the mark did not move");
}

/// With sealing required, a message published plain on a device's
/// subject (by anything that may publish there but holds no key: here a
/// forged next batch of the victim's stream, and one claiming the whole
/// sequence range) is terminated: it stores nothing and moves no mark, and
/// the front-end's sealed batch is applied.
#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_writer_that_requires_sealing_applies_no_plain_message() {
    let db = TestDb::new();
    let plain = stream_options(&nats_url());
    let sealed = plain.clone().key(privtel_store::AtRestKey::new(1, [0x33; 32])).sealed_only(true);
    let _guard = StreamGuard { options: plain.clone() };
    let front = Publisher::connect(sealed.clone()).unwrap();
    let forger = Publisher::connect(plain).unwrap();
    let at = now();
    let forged = IngestMessage::new(batch("acme", "dev-v", 0, 10, at), at, "");
    forger.publish_raw("acme", "dev-v", 7, forged.encode(None).unwrap()).unwrap();
    let mut everything = batch("acme", "dev-v", 0, 1, at);
    everything.seq.first_seq = i64::MAX as u64;
    everything.seq.skipped = i64::MAX as u64 - 1;
    let everything = IngestMessage::new(everything, at, "");
    forger.publish_raw("acme", "dev-v", 7, everything.encode(None).unwrap()).unwrap();
    front.publish(batch("acme", "dev-v", 0, 10, at), at, "").unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&lines);
    let mut writer = StreamWriter::connect(sealed, Rows(db.engine()))
        .unwrap()
        .with_log(move |l| log.lock().unwrap().push(l.to_owned()));
    drain(&mut writer);
    let m = writer.metrics().snapshot(None);
    assert_eq!((m.terminated, m.applied, m.applied_records), (2, 1, 10), "{m:?}");
    assert_eq!(hw(&writer.engine().0, "dev-v"), 10, "the forged range moved no mark");
    assert_eq!(db.rows(), (10, 10));
    let lines = lines.lock().unwrap();
    assert_eq!(lines.iter().filter(|l| l.contains("not sealed")).count(), 2, "{lines:?}");
}

/// A customer deleted at contract end: batches its agents still publish
/// are terminated at once, not handed back until the stream ages them out
/// (which would hold the lag, and the front-ends' back pressure, up).
#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_deleted_customers_batches_are_terminated_not_handed_back() {
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    let mut engine = db.engine();
    engine.ingest_group(vec![batch("acme", "dev-d", 0, 10, at)], at).pop().unwrap().unwrap();
    engine.delete_customer(&CustomerId::new("acme").unwrap(), at).unwrap();
    front.publish(batch("acme", "dev-d", 1, 10, at), at, "").unwrap();
    front.publish(batch("globex", "dev-d", 0, 10, at), at, "").unwrap();
    let mut writer = StreamWriter::connect(options, Rows(engine)).unwrap();
    drain(&mut writer);
    let m = writer.metrics().snapshot(None);
    assert_eq!((m.terminated, m.handed_back, m.applied, m.applied_records), (1, 0, 1, 10), "{m:?}");
    assert_eq!(db.rows().0, 10, "the other customer's batch only");
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn malformed_messages_are_terminated_and_the_rest_applied() {
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    front.publish_raw("acme", "dev-m", 7, b"PTJS\x01\x00garbage".to_vec()).unwrap();
    front.publish(batch("acme", "dev-m", 0, 10, at), at, "").unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&lines);
    let mut writer = StreamWriter::connect(options, Rows(db.engine()))
        .unwrap()
        .with_log(move |l| log.lock().unwrap().push(l.to_owned()));
    drain(&mut writer);
    let m = writer.metrics().snapshot(None);
    assert_eq!((m.terminated, m.applied_records), (1, 10));
    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|l| l.contains("malformed ingest message")), "{lines:?}");
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_front_end_refuses_while_the_writers_lag() {
    let options = stream_options(&nats_url()).max_lag(2);
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options).unwrap();
    let at = now();
    for k in 0..3 {
        front.check_lag().unwrap();
        front.publish(batch("acme", "dev-l", k, 5, at), at, "").unwrap();
        std::thread::sleep(Duration::from_millis(250)); // the lag is read at most every 200 ms
    }
    match front.check_lag() {
        Err(JetStreamError::Lagging { lag: 3, max: 2 }) => {}
        other => panic!("expected a refusal for lag, got {other:?}"),
    }
    assert_eq!(front.snapshot().refused_lagging, 1);
    assert_eq!(front.snapshot().lag, Some(3));
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn the_welcome_counts_batches_still_waiting_in_the_stream() {
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options).unwrap();
    let (acme, dev) = (CustomerId::new("acme").unwrap(), DeviceId::new("dev.w").unwrap());
    assert_eq!(front.pending_high_water(&acme, &dev, 7).unwrap(), 0);
    let at = now();
    front.publish(batch("acme", "dev.w", 0, 30, at), at, "").unwrap();
    front.publish(batch("acme", "dev.w", 1, 30, at), at, "").unwrap();
    assert_eq!(front.pending_high_water(&acme, &dev, 7).unwrap(), 60);
    assert_eq!(front.pending_high_water(&acme, &dev, 8).unwrap(), 0, "another stream of the device");
}

// ---- a writer killed mid-stream -------------------------------------------

/// The child half: a writer process that applies until killed.
#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn child_writer() {
    let Ok(spec) = std::env::var("PRIVTEL_SCALE_CHILD_WRITER") else { return };
    let mut parts = spec.split(' ');
    let (db, stream, prefix) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let options =
        JetStreamOptions::new(nats_url()).names(stream, prefix, "w").ack_wait(Duration::from_secs(2));
    let engine = PgEngine::connect(db, privtel_engine_pg::PgOptions::default()).unwrap();
    let mut writer = StreamWriter::connect(options, Rows(engine)).unwrap().with_max_group(5);
    writer.run(&AtomicBool::new(false)).unwrap();
}

fn spawn_writer(db: &TestDb, options: &JetStreamOptions) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--include-ignored", "--nocapture"])
        .env(
            "PRIVTEL_SCALE_CHILD_WRITER",
            format!("{} {} {}", db.url, options.stream, options.subject_prefix),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_writer_killed_mid_stream_and_restarted_stores_every_record_once() {
    let db = TestDb::new();
    let options = stream_options(&nats_url()).ack_wait(Duration::from_secs(2));
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    let (batches, per) = (300u64, 50u64);
    for k in 0..batches {
        front.publish(batch("acme", &format!("dev-{}", k % 3), k / 3, per, at), at, "").unwrap();
    }
    let total = (batches * per) as i64;
    drop(db.engine()); // the schema, before the writers start
    let mut kills = 0;
    for round in 0..3 {
        let mut child = spawn_writer(&db, &options);
        // Killed once it has stored some and not all (SIGKILL: no goodbye,
        // whatever it holds unacknowledged comes again).
        let target = total * (round + 1) / 5;
        assert!(wait_until(Duration::from_secs(60), || db.rows().0 >= target), "the writer stored nothing");
        if db.rows().0 < total {
            child.kill().unwrap();
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 1, "no writer was killed mid-stream");
    let mut child = spawn_writer(&db, &options);
    let done = wait_until(Duration::from_secs(90), || front.lag().unwrap() == 0 && db.rows().0 >= total);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(done, "the stream was not drained: {:?} rows, lag {:?}", db.rows(), front.lag());
    assert_eq!(db.rows(), (total, total), "every record exactly once after {kills} kills");
    let engine = db.engine();
    for d in 0..3 {
        assert_eq!(hw(&engine, &format!("dev-{d}")), batches / 3 * per);
    }
}

// ---- NATS restarted ---------------------------------------------------------

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn nothing_acknowledged_is_lost_when_nats_is_killed_and_restarted() {
    let _ = nats_url(); // the same requirement as the other tests: a NATS installation
    let db = TestDb::new();
    let mut nats = OwnNats::start();
    let mut options = stream_options(&nats.url());
    options.publish_timeout = Duration::from_millis(700);
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    let (batches, per) = (60u64, 40u64);
    let mut acked = Vec::new();
    let mut failures = 0;
    for k in 0..batches {
        if k == 20 {
            nats.kill();
        }
        // As an agent does: a batch not acknowledged is sent again.
        loop {
            match front.publish(batch("acme", "dev-n", k, per, at), at, "") {
                Ok(_) => {
                    acked.push(k);
                    break;
                }
                Err(JetStreamError::Publish(_)) if failures < 200 => {
                    failures += 1;
                    if failures == 3 {
                        // Down for a while: bring it back, as its supervisor would.
                        nats.restart();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("batch {k}: {e}"),
            }
        }
    }
    assert!(failures > 0, "no publish failed while the server was down");
    assert_eq!(acked.len() as u64, batches);
    // Killed once more with everything acknowledged and nothing applied.
    nats.kill();
    nats.restart();
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    drain(&mut writer);
    assert_eq!(
        db.rows(),
        ((batches * per) as i64, (batches * per) as i64),
        "every acknowledged record, once"
    );
    assert_eq!(hw(&writer.engine().0, "dev-n"), batches * per);
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn benchmarking_records_are_not_kept_as_rows_naming_their_device() {
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    let mut b = batch("acme", "dev-b", 0, 4, at);
    b.records.push(Some(privtel_testkit::fixtures::device_summary()));
    front.publish(b, at, "retail").unwrap();
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    drain(&mut writer);
    assert_eq!(db.rows().0, 4, "the summary is not a row");
    assert_eq!(hw(&writer.engine().0, "dev-b"), 5, "its number counts");
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_database_that_fails_mid_stream_hands_the_batches_back_and_loses_nothing() {
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    for k in 0..4 {
        front.publish(batch("acme", "dev-f", k, 25, at), at, "").unwrap();
    }
    let mut writer = StreamWriter::connect(options.clone(), Rows(db.engine())).unwrap().with_max_group(2);
    assert_eq!(writer.step(Duration::from_millis(500)).unwrap().applied, 2);
    // The writer's database connection dies (a restart, a failover).
    let mut admin = postgres::Client::connect(&privtel_scale_tests::pg_url(), postgres::NoTls).unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name],
        )
        .unwrap();
    let report = writer.step(Duration::from_millis(500)).unwrap();
    assert!(report.failed && report.handed_back == 2 && report.applied == 0, "{report:?}");
    assert_eq!(writer.metrics().snapshot(None).failed_groups, 1);
    // A writer started anew (its supervisor's job) stores the rest, once.
    drop(writer);
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    drain(&mut writer);
    assert_eq!(db.rows(), (100, 100));
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn three_writers_at_once_store_every_record_once_and_in_order() {
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let at = now();
    let (devices, per_device, per) = (4u64, 40u64, 20u64);
    drop(db.engine()); // the schema, before the writers race to make it
    // Two front-ends publish while three writers apply.
    let publishers: Vec<_> = (0..2)
        .map(|f| {
            let options = options.clone();
            std::thread::spawn(move || {
                let front = Publisher::connect(options).unwrap();
                for k in 0..per_device {
                    for d in (f..devices).step_by(2) {
                        front.publish(batch("acme", &format!("dev-{d}"), k, per, at), at, "").unwrap();
                    }
                }
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let (options, url, stop) = (options.clone(), db.url.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let engine = PgEngine::connect(&url, privtel_engine_pg::PgOptions::default()).unwrap();
                let mut writer = StreamWriter::connect(options, Rows(engine)).unwrap().with_max_group(8);
                writer.run(&stop).unwrap();
                writer.metrics().snapshot(None)
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let total = (devices * per_device * per) as i64;
    let front = Publisher::connect(options).unwrap();
    let done = wait_until(Duration::from_secs(90), || front.lag().unwrap() == 0 && db.rows().0 >= total);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let metrics: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(done, "not drained: {:?}", db.rows());
    assert_eq!(db.rows(), (total, total), "every record once");
    assert!(
        metrics.iter().filter(|m| m.applied > 0).count() >= 2,
        "the writers shared the work: {metrics:?}"
    );
    assert_eq!(metrics.iter().map(|m| m.terminated).sum::<u64>(), 0, "{metrics:?}");
    let engine = db.engine();
    for d in 0..devices {
        assert_eq!(hw(&engine, &format!("dev-{d}")), per_device * per);
    }
}

/// An engine that holds its first group until released: a writer that took
/// a batch and is stuck (or dead) with it.
struct Stuck {
    inner: Rows<PgEngine>,
    holding: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
    held: bool,
}

impl privtel_service::jetstream::ApplyGroup for Stuck {
    fn apply_group(
        &mut self,
        messages: Vec<IngestMessage>,
        now: privtel_store::Timestamp,
    ) -> Vec<Result<privtel_store::IngestOutcome, privtel_store::Error>> {
        if !self.held {
            self.held = true;
            let _ = self.holding.send(());
            let _ = self.release.recv();
        }
        self.inner.apply_group(messages, now)
    }
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_batch_whose_predecessor_another_writer_holds_waits_for_it_however_long() {
    let db = TestDb::new();
    let mut options = stream_options(&nats_url());
    options.max_gap_deliveries = 2;
    options.gap_delay = Duration::from_millis(20);
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    drop(db.engine());
    front.publish(batch("acme", "dev-h", 0, 20, at), at, "").unwrap();
    front.publish(batch("acme", "dev-h", 1, 20, at), at, "").unwrap();
    // Writer A takes the first batch and is stuck with it.
    let (release, rx) = std::sync::mpsc::channel();
    let (holding, held) = std::sync::mpsc::channel();
    let a_options = options.clone();
    let url = db.url.clone();
    let a = std::thread::spawn(move || {
        let engine = PgEngine::connect(&url, privtel_engine_pg::PgOptions::default()).unwrap();
        let stuck = Stuck { inner: Rows(engine), holding, release: rx, held: false };
        let mut writer = StreamWriter::connect(a_options, stuck).unwrap().with_max_group(1);
        writer.step(Duration::from_secs(2)).unwrap();
        writer.step(Duration::from_millis(500)).unwrap();
    });
    held.recv_timeout(Duration::from_secs(30)).expect("writer A took the first batch");
    // Writer B meets the second batch's gap again and again: far more
    // deliveries than `max_gap_deliveries`, never terminated.
    let mut b = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        b.step(Duration::from_millis(100)).unwrap();
        b.metrics().snapshot(None).handed_back >= 5
    }));
    assert_eq!(b.metrics().snapshot(None).terminated, 0);
    assert_eq!(db.rows().0, 0);
    release.send(()).unwrap();
    a.join().unwrap();
    drain(&mut b);
    assert_eq!(db.rows(), (40, 40), "both batches, once, in order");
    assert_eq!(b.metrics().snapshot(None).terminated, 0);
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_writer_without_the_key_hands_messages_back_and_one_with_it_stores_them() {
    let db = TestDb::new();
    let options = stream_options(&nats_url()).key(privtel_store::AtRestKey::new(3, [8; 32]));
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    front.publish(batch("acme", "dev-k", 0, 10, at), at, "").unwrap();
    let mut keyless = options.clone();
    keyless.key = None;
    let mut wrong = options.clone();
    wrong.key = Some(privtel_store::AtRestKey::new(3, [9; 32]));
    for o in [keyless, wrong] {
        let mut writer = StreamWriter::connect(o, Rows(db.engine())).unwrap();
        let mut report = writer.step(Duration::from_millis(500)).unwrap();
        for _ in 0..20 {
            if report.messages > 0 {
                break;
            }
            report = writer.step(Duration::from_millis(500)).unwrap(); // the hand-back's delay
        }
        assert!(report.failed && report.handed_back == 1 && report.terminated == 0, "{report:?}");
    }
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    drain(&mut writer);
    assert_eq!(db.rows(), (10, 10));
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_message_on_another_device_s_subject_is_terminated() {
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options.clone()).unwrap();
    let at = now();
    let forged = IngestMessage::new(batch("acme", "dev-victim", 0, 5, at), at, "");
    front.publish_raw("acme", "dev-attacker", 7, forged.encode(None).unwrap()).unwrap();
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    drain(&mut writer);
    assert_eq!(writer.metrics().snapshot(None).terminated, 1);
    assert_eq!(db.rows().0, 0);
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn contract_end_purges_every_message_of_the_customer_and_no_other() {
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let front = Publisher::connect(options).unwrap();
    let at = now();
    for (customer, device) in [("acme", "dev-a"), ("acme", "dev-b"), ("globex", "dev-a"), ("acme", "dev-c")] {
        front.publish(batch(customer, device, 0, 10, at), at, "").unwrap();
    }
    // A customer whose id is not a plain subject token is purged alone too.
    front.publish(batch("acme.eu", "dev-a", 0, 10, at), at, "").unwrap();
    assert_eq!(front.lag().unwrap(), 5);
    // What the stream holds of a device stream: its last batch's last number.
    let held = |c: &str, d: &str| {
        front.pending_high_water(&CustomerId::new(c).unwrap(), &DeviceId::new(d).unwrap(), 7).unwrap()
    };
    assert_eq!((held("acme", "dev-a"), held("globex", "dev-a")), (10, 10));
    assert_eq!(front.purge_customer(&CustomerId::new("acme").unwrap()).unwrap(), 3);
    for d in ["dev-a", "dev-b", "dev-c"] {
        assert_eq!(held("acme", d), 0, "acme's {d} is gone from the stream");
    }
    assert_eq!((held("globex", "dev-a"), held("acme.eu", "dev-a")), (10, 10), "the others stay");
    assert_eq!(front.purge_customer(&CustomerId::new("acme").unwrap()).unwrap(), 0, "idempotent");
    assert_eq!(front.purge_customer(&CustomerId::new("acme.eu").unwrap()).unwrap(), 1);
    assert_eq!(held("globex", "dev-a"), 10);
    // The other customers' batches are still delivered and stored.
    let db = TestDb::new();
    let mut writer = StreamWriter::connect(front.options().clone(), Rows(db.engine())).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            writer.step(Duration::from_millis(100)).unwrap();
            db.rows().0 == 10
        }),
        "globex's batch was stored after the purge: {:?}",
        db.rows()
    );
    let engine = db.engine();
    assert_eq!(engine.record_count_of(&CustomerId::new("globex").unwrap()).unwrap(), 10);
    assert_eq!(engine.record_count_of(&CustomerId::new("acme").unwrap()).unwrap(), 0);
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_customers_messages_removed_at_contract_end_are_erased_from_the_stream_s_files() {
    let _ = nats_url(); // a NATS installation: this test runs a server of its own
    let mut nats = OwnNats::start();
    let front = Publisher::connect(JetStreamOptions::new(nats.url())).unwrap();
    let at = now();
    let with_user = |customer: &str, device: &str, user: &str| {
        let mut b = batch(customer, device, 0, 20, at);
        for r in b.records.iter_mut().flatten() {
            if let privtel_model::RecordBody::Event(e) = &mut r.body {
                e.user = Some(privtel_model::UserId::new(user).unwrap());
            }
        }
        b
    };
    front.publish(with_user("acme", "dev-a", "u-CANARYGONE31"), at, "").unwrap();
    front.publish(with_user("globex", "dev-a", "u-CANARYKEPT32"), at, "").unwrap();
    let dir = nats.dir.path().to_owned();
    let held = |canary: &str| {
        walk(&dir).iter().any(|f| {
            std::fs::read(f).unwrap_or_default().windows(canary.len()).any(|w| w == canary.as_bytes())
        })
    };
    assert!(held("u-CANARYGONE31"), "the scan finds the canary in plain messages");
    assert_eq!(front.purge_customer(&CustomerId::new("acme").unwrap()).unwrap(), 1);
    drop(front);
    nats.kill();
    assert!(!held("u-CANARYGONE31"), "the removed message is erased from the stream's files");
    assert!(held("u-CANARYKEPT32"), "the other customer's message stays");
}

/// Where a NATS server started with `-sd dir` keeps the stream `name`.
fn stream_dir(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    dir.join("jetstream").join("$G").join("streams").join(name)
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_stream_whose_store_cannot_be_made_for_a_moment_is_created_once_it_can() {
    let _ = nats_url(); // a NATS installation: this test runs a server of its own
    let nats = OwnNats::start();
    let options = stream_options(&nats.url());
    // A file where the server would make the stream's folder: it answers
    // 10049 ("error creating store for stream") until the file goes, after
    // the tries at 0, 0.1 and 0.3 s and before the one at 0.6 s.
    let blocker = stream_dir(nats.dir.path(), &options.stream);
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"in the way").unwrap();
    // Taken before the remover starts: the stream cannot exist sooner.
    let started = std::time::Instant::now();
    let remover = {
        let blocker = blocker.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(450));
            std::fs::remove_file(&blocker).unwrap();
        })
    };
    let front = Publisher::connect(options).expect("created once the folder can be made");
    assert!(started.elapsed() >= Duration::from_millis(450), "created before the folder could be made");
    remover.join().unwrap();
    assert!(blocker.is_dir(), "the server made the stream's folder");
    front.publish(batch("acme", "dev-s", 0, 5, now()), now(), "").unwrap();
    assert_eq!(front.lag().unwrap(), 1);

    // A store that never can be made is reported, after a bounded number
    // of tries, with where to look.
    let other = stream_options(&nats.url());
    std::fs::write(stream_dir(nats.dir.path(), &other.stream), b"in the way").unwrap();
    let started = std::time::Instant::now();
    match Publisher::connect(other) {
        Err(JetStreamError::Stream { op, message }) => {
            assert_eq!(op, "creating the stream");
            assert!(message.contains("error creating store for stream"), "{message}");
            assert!(message.contains("the nats server's log names the cause"), "{message}");
            assert!(message.contains("after 5 attempt(s)"), "{message}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a stream was created where its folder cannot be"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "the tries are bounded: {:?}", started.elapsed());
}

//! Group commit: one writer thread owns the engine's writes. Connection
//! threads encode their batch (payloads, sealing, digests: in parallel),
//! queue it and wait; the writer takes the engine, then every batch queued
//! by then, writes them in one transaction and hands the group to the
//! syncer; the syncer syncs the engine's log to disk (once for every group
//! committed by then) and answers each batch. A batch is acknowledged only
//! once its group is durable; the writer writes the next group while the
//! syncer waits for the disk. A checkpointer copies the log into the
//! database file beside them (`checkpoint_loop`), so the writer
//! never copies a whole log in one of its commits.
//!
//! A welcome's high-water mark is read on another connection, which sees
//! a group as soon as it is committed: [`Writer::wait_durable`] holds the
//! welcome while a batch of that stream is committed and not yet synced,
//! so a device is never told a mark the disk does not hold. (A device's
//! own previous batch was synced before its Ack: a welcome waits only
//! after a connection that ended before its Ack.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use std::hash::{Hash, Hasher};

use privtel_model::{CustomerId, DeviceId, Timestamp};
use privtel_store::{EncodedBatch, IngestOutcome, LogSync, SqliteEngine};

type Outcome = Result<IngestOutcome, privtel_store::Error>;

/// A batch waiting for the writer, and where its outcome goes.
struct Pending {
    batch: EncodedBatch,
    /// Its stream (see [`stream_key`]).
    stream: u64,
    /// The service's clock when the batch arrived; a group is stored at
    /// the latest of its batches'.
    now: Timestamp,
    /// The outcome, whether the batch opened its group (so groups are
    /// counted once), and the batch itself, given back so that its
    /// connection frees it (not the one writer thread).
    outcome: mpsc::SyncSender<Answer>,
}

/// What the writer answers a batch: its outcome, whether it opened its
/// group, and the batch back (`None` if the writer stopped holding it).
type Answer = (Outcome, bool, Option<EncodedBatch>);

/// The streams with a batch committed and not yet synced (the writer's
/// and the syncer's progress).
#[derive(Default)]
struct Progress {
    /// Batches of each stream (by [`stream_key`]) whose commit has begun
    /// and that are not synced: added before the commit starts, so a
    /// reader that sees a batch's rows finds its stream here until the
    /// batch is durable.
    unsynced: Mutex<HashMap<u64, usize>>,
    /// Signalled whenever batches become durable.
    moved: Condvar,
}

/// A (customer, device, spool stream) as a number. Two streams that
/// collide only make a welcome wait for the other's sync.
pub(crate) fn stream_key(customer: &CustomerId, device: &DeviceId, stream: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (customer.as_str(), device.as_str(), stream).hash(&mut h);
    h.finish()
}

/// A group committed and not yet synced: its batches' streams and
/// outcomes, where each answer goes, and the batches to hand back.
struct Committed {
    streams: Vec<u64>,
    outcomes: Vec<Outcome>,
    answers: Vec<mpsc::SyncSender<Answer>>,
    batches: Vec<EncodedBatch>,
}

/// The writer thread and its queue.
pub(crate) struct Writer {
    queue: Option<mpsc::Sender<Pending>>,
    queued: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
    /// The checkpointer's thread, and what stops it (dropped).
    checkpoints: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// How often the checkpointer copies the log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Frames of the log from which the checkpointer has the log started
/// over: 128 MiB with the engine's 8 KiB pages (64 MiB for an older file
/// of 4 KiB pages), half of where the engine's own checkpoint would start.
const RESTART_FRAMES: i64 = 16_384;

/// Frames copied into the database file after which the checkpointer syncs
/// it, below the restart size: 8 MiB with the engine's 8 KiB pages (4 MiB
/// for an older file of 4 KiB pages). Without these syncs a whole
/// restart's copies (up to 128 MiB: SQLite syncs the file only after a
/// copy that reached the end of the log, i.e. no commit came during it and
/// no reader held an older snapshot) reached the disk in the one sync
/// before the restart, 114-133 ms, and the log's syncs, which every
/// Ack waits for, queued behind it: the sessions bench's p99 latency was
/// 99-129 ms, and 64-73 ms with them (`docs/PERFORMANCE.md`).
const SYNC_EVERY_FRAMES: i64 = 1_024;

/// When the checkpointer copies and syncs (see [`checkpoint_loop`]).
#[derive(Clone, Copy, Debug)]
struct Checkpointing {
    /// The pause between two copies.
    every: Duration,
    /// The log's size in frames from which the checkpointer has it start
    /// over.
    restart: i64,
    /// Frames copied since the checkpointer last synced the database file
    /// after which it syncs it again.
    sync_every: i64,
}

impl Checkpointing {
    const SERVICE: Self =
        Self { every: CHECKPOINT_EVERY, restart: RESTART_FRAMES, sync_every: SYNC_EVERY_FRAMES };
}

impl Writer {
    /// Starts the writer of `engine` (and its syncer, when the engine has a
    /// log file; without one every commit syncs itself).
    /// The checkpointer counts its failed copies and syncs in
    /// `checkpoint_failures`.
    pub(crate) fn start(engine: Arc<Mutex<SqliteEngine>>, checkpoint_failures: Arc<AtomicU64>) -> Self {
        Self::start_with(engine, Some(Checkpointing::SERVICE), checkpoint_failures)
    }

    /// [`Writer::start`] with the checkpointer's period, restart size and
    /// syncs (`None`: no checkpointer; the engine checkpoints in its
    /// commits).
    fn start_with(
        engine: Arc<Mutex<SqliteEngine>>,
        checkpoints: Option<Checkpointing>,
        checkpoint_failures: Arc<AtomicU64>,
    ) -> Self {
        let (queue, rx) = mpsc::channel::<Pending>();
        let queued = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&queued);
        let progress = Arc::new(Progress::default());
        // The log synced once before anything is served: commits an earlier
        // process made without their sync (it was killed before its
        // syncer ran) are in the log as the page cache holds it, and a
        // welcome must not give a mark the disk does not hold. If it
        // cannot be synced, every commit syncs itself instead.
        let log = engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .log_sync()
            .ok()
            .filter(|log| log.sync().is_ok());
        // Checkpoints off the writer's thread (see `Checkpointer`); without
        // a checkpointer the engine checkpoints in its commits, as before.
        let checkpoints = checkpoints
            .and_then(|settings| {
                Some((settings, engine.lock().unwrap_or_else(PoisonError::into_inner).checkpointer().ok()?))
            })
            .and_then(|(settings, checkpointer)| {
                let (stop, stopped) = mpsc::channel::<()>();
                let engine = Arc::clone(&engine);
                std::thread::Builder::new()
                    .name("privtel-checkpointer".into())
                    .spawn(move || {
                        checkpoint_loop(&checkpointer, &engine, &stopped, settings, &checkpoint_failures);
                    })
                    .ok()
                    .map(|thread| (stop, thread))
            });
        let shared = Arc::clone(&progress);
        let thread = std::thread::Builder::new()
            .name("privtel-writer".into())
            .spawn(move || {
                let Some(log) = log else {
                    return write_loop(&engine, &rx, &count, &shared, None);
                };
                let (to_syncer, committed) = mpsc::channel::<Committed>();
                let syncer = {
                    let shared = Arc::clone(&shared);
                    std::thread::Builder::new()
                        .name("privtel-syncer".into())
                        .spawn(move || sync_loop(&log, &committed, &shared))
                };
                match syncer {
                    Ok(syncer) => {
                        write_loop(&engine, &rx, &count, &shared, Some(&to_syncer));
                        // The syncer answers what it holds, then ends.
                        drop(to_syncer);
                        let _ = syncer.join();
                    }
                    Err(_) => write_loop(&engine, &rx, &count, &shared, None),
                }
            })
            .ok();
        Self { queue: Some(queue), queued, thread, progress, checkpoints }
    }

    /// Batches queued and not yet taken into a group.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Call after reading the mark of `stream` (a [`stream_key`]): waits
    /// until no batch of it is committed and unsynced, at most `limit`;
    /// whether none is.
    pub(crate) fn wait_durable(&self, stream: u64, limit: Duration) -> bool {
        let unsynced = self.progress.unsynced.lock().unwrap_or_else(PoisonError::into_inner);
        let (unsynced, _) = self
            .progress
            .moved
            .wait_timeout_while(unsynced, limit, |unsynced| unsynced.contains_key(&stream))
            .unwrap_or_else(PoisonError::into_inner);
        !unsynced.contains_key(&stream)
    }

    /// Stores `batch` of `stream` (a [`stream_key`]) with the next group;
    /// returns its outcome and whether it opened its group.
    pub(crate) fn store(&self, batch: EncodedBatch, stream: u64, now: Timestamp) -> (Outcome, bool) {
        let (outcome, answer) = mpsc::sync_channel(1);
        let stopped = || {
            Err(privtel_store::Error::Database {
                op: "storing a batch",
                message: "the service's writer has stopped".into(),
            })
        };
        let Some(queue) = &self.queue else { return (stopped(), false) };
        self.queued.fetch_add(1, Ordering::AcqRel);
        if queue.send(Pending { batch, stream, now, outcome }).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return (stopped(), false);
        }
        // The batch comes back to be freed here, on this connection's thread.
        let (outcome, opened, batch) = answer.recv().unwrap_or_else(|_| (stopped(), false, None));
        drop(batch);
        (outcome, opened)
    }
}

impl Drop for Writer {
    /// Lets the writer finish the batches it holds, then joins it, so the
    /// engine is closed when the service is gone.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.checkpoints.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// Every `every` ([`CHECKPOINT_EVERY`]) until `stop`'s sender is
/// dropped: copies the log into the database file while the writer goes
/// on, and syncs the file once `sync_every` frames ([`SYNC_EVERY_FRAMES`])
/// were copied since the loop last synced it (or since the log started
/// over), so that the disk takes the copies a
/// few MiB at a time beside the log's syncs. The log starts over only at a
/// transaction that begins with all of it copied, which a copy made beside
/// a busy writer seldom achieves; so once the log holds `restart` frames
/// ([`RESTART_FRAMES`]), what the writer added during the copy is copied
/// again (less), the database file is synced (SQLite syncs it only at a
/// copy that reaches the end of the log), and the rest is copied once more
/// with the engine held between two groups: the writer waits for that
/// short copy and its sync instead of copying the whole log itself at 256
/// MiB. A failure is counted in `failures` (the service's
/// `checkpoint_failures`) and left to the next turn: the engine's own
/// checkpoint stays the backstop, so a failing checkpointer costs the
/// writer its pauses again, not data.
fn checkpoint_loop(
    checkpointer: &impl Checkpoints,
    engine: &Mutex<SqliteEngine>,
    stop: &mpsc::Receiver<()>,
    settings: Checkpointing,
    failures: &AtomicU64,
) {
    let Checkpointing { every, restart, sync_every } = settings;
    let failed = || {
        failures.fetch_add(1, Ordering::Relaxed);
    };
    // Frames of the log copied when the database file was last synced,
    // and the log's frames at the previous copy.
    let (mut synced, mut last_log) = (0, 0);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let Ok((log, copied)) = checkpointer.passive() else {
            failed();
            continue;
        };
        // A log shrinks, and its copied frames go back, only when it
        // starts over (after a copy of all of it, which SQLite synced).
        // Within one turn a new log cannot outgrow the old one (a turn adds
        // far fewer frames than `restart`), so one of the two shows it; a
        // restart missed all the same would only delay the next sync.
        if log < last_log || copied < synced {
            synced = 0;
        }
        last_log = log;
        if log < restart {
            // SQLite syncs the file itself only after a copy that reached
            // the end of the log (no commit during it, no reader on an
            // older snapshot), which under load is seldom; a sync after one
            // that did finds nothing left to write.
            if copied - synced >= sync_every {
                match checkpointer.sync_database() {
                    Ok(()) => synced = copied,
                    Err(_) => failed(),
                }
            }
            continue;
        }
        if checkpointer.passive().is_err() || checkpointer.sync_database().is_err() {
            failed();
            continue;
        }
        let _between_groups = engine.lock().unwrap_or_else(PoisonError::into_inner);
        if checkpointer.passive().is_err() {
            failed();
        }
    }
}

/// What [`checkpoint_loop`] asks of the engine's checkpointer (a test's
/// stand-in fails on demand).
trait Checkpoints {
    /// One passive copy: the log's frames and those copied.
    fn passive(&self) -> Result<(i64, i64), privtel_store::Error>;
    /// The database file synced.
    fn sync_database(&self) -> Result<(), privtel_store::Error>;
}

impl Checkpoints for privtel_store::Checkpointer {
    fn passive(&self) -> Result<(i64, i64), privtel_store::Error> {
        Self::passive(self)
    }

    fn sync_database(&self) -> Result<(), privtel_store::Error> {
        Self::sync_database(self)
    }
}

fn write_loop(
    engine: &Mutex<SqliteEngine>,
    rx: &mpsc::Receiver<Pending>,
    queued: &AtomicUsize,
    progress: &Progress,
    syncer: Option<&mpsc::Sender<Committed>>,
) {
    // Ends when the service (the only sender) is dropped.
    while let Ok(first) = rx.recv() {
        // The engine first, then whatever queued while waiting for it.
        let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
        let mut group = vec![first];
        group.extend(rx.try_iter());
        queued.fetch_sub(group.len(), Ordering::AcqRel);
        let now = group.iter().map(|p| p.now).max().unwrap_or(group[0].now);
        let streams: Vec<u64> = group.iter().map(|p| p.stream).collect();
        let (batches, answers): (Vec<_>, Vec<_>) = group.into_iter().map(|p| (p.batch, p.outcome)).unzip();
        {
            let mut unsynced = progress.unsynced.lock().unwrap_or_else(PoisonError::into_inner);
            for s in &streams {
                *unsynced.entry(*s).or_default() += 1;
            }
        }
        // A panic in the engine fails this group, not the service: each
        // connection gets an error and its agent retries.
        let outcomes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match syncer {
            Some(_) => engine.store_encoded_unsynced(&batches, now),
            None => engine.store_encoded(&batches, now),
        }))
        .unwrap_or_default();
        drop(engine);
        let failed = || {
            Err(privtel_store::Error::Database {
                op: "storing a batch",
                message: "the engine failed while storing the group".into(),
            })
        };
        let mut outcomes: Vec<Outcome> = outcomes.into_iter().collect();
        outcomes.resize_with(batches.len(), failed);
        let committed = Committed { streams, outcomes, answers, batches };
        match syncer {
            // The syncer answers once the group is on disk.
            Some(syncer) => {
                if let Err(mpsc::SendError(group)) = syncer.send(committed) {
                    answer(group, Some("the service's syncer has stopped"));
                }
            }
            None => {
                mark_synced(progress, &committed.streams);
                answer(committed, None);
            }
        }
    }
}

/// Syncs the log for every group committed by then, and answers them.
fn sync_loop(log: &LogSync, rx: &mpsc::Receiver<Committed>, progress: &Progress) {
    // Once a sync fails, nothing is counted durable again: the kernel may
    // have dropped the pages it could not write, so a later sync that
    // succeeds proves nothing about them (PostgreSQL stops for the same
    // reason). Every later batch is answered with the error (its agent
    // keeps it) and the welcomes of every stream written since wait out
    // their limit and give a mark of 0, until the service is restarted.
    // A restart alone does not make the disk whole: pages whose write-back
    // failed can stay in the page cache, and a new process reads them as
    // if stored. Check the disk (or reboot) first.
    let mut failure: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        if failure.is_none() {
            failure = log.sync().err().map(|e| e.to_string());
        }
        if failure.is_none() {
            for group in &groups {
                mark_synced(progress, &group.streams);
            }
        }
        for group in groups {
            answer(group, failure.as_deref());
        }
    }
}

/// Counts the batches of `streams` durable, and wakes the welcomes waiting.
fn mark_synced(progress: &Progress, streams: &[u64]) {
    let mut unsynced = progress.unsynced.lock().unwrap_or_else(PoisonError::into_inner);
    for s in streams {
        if let Some(n) = unsynced.get_mut(s) {
            *n -= 1;
            if *n == 0 {
                unsynced.remove(s);
            }
        }
    }
    progress.moved.notify_all();
}

/// Answers each batch of a group: its outcome, or `failure` for all.
fn answer(group: Committed, failure: Option<&str>) {
    let Committed { outcomes, answers, batches, .. } = group;
    for (i, ((outcome, answer), batch)) in outcomes.into_iter().zip(answers).zip(batches).enumerate() {
        let outcome = match failure {
            Some(why) => {
                Err(privtel_store::Error::Database { op: "syncing a group", message: why.to_owned() })
            }
            None => outcome,
        };
        // A receiver is gone only if its connection's thread is.
        let _ = answer.send((outcome, i == 0, Some(batch)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privtel_store::{AdmittedBatch, EngineOptions, Sequence};

    fn ids(d: &str) -> (CustomerId, DeviceId) {
        (CustomerId::new("acme").unwrap(), DeviceId::new(d).unwrap())
    }

    /// The log's size (bytes of its file) after `batches` batches of 100
    /// records through a writer with `checkpoints` (see `start_with`).
    fn log_after(batches: u64, checkpoints: Option<Checkpointing>) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
        let encoder = engine.encoder();
        let writer = Writer::start_with(Arc::new(Mutex::new(engine)), checkpoints, Arc::default());
        let (c, d) = ids("dev-a");
        let key = stream_key(&c, &d, 1);
        let now = Timestamp::UNIX_EPOCH;
        let template = privtel_testkit::fixtures::records("log");
        for b in 0..batches {
            let records = (0..100u64)
                .map(|i| {
                    let mut r = template[i as usize % template.len()].clone();
                    if let privtel_model::RecordBody::Event(e) = &mut r.body {
                        e.id = privtel_model::EventId::from_u128(u128::from(b * 100 + i));
                    }
                    Some(r)
                })
                .collect();
            let seq = Sequence { stream: 1, first_seq: b * 100 + 1, skipped: 0 };
            let batch = AdmittedBatch { customer: c.clone(), device: d.clone(), seq, records };
            let (outcome, _) = writer.store(encoder.encode(batch, now), key, now);
            assert_eq!(outcome.unwrap().high_water, (b + 1) * 100);
            if checkpoints.is_some() {
                // Time for the checkpointer's turns, as a service's
                // batches leave between them.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let size = std::fs::metadata(dir.path().join("engine.db-wal")).unwrap().len();
        drop(writer);
        size
    }

    /// With the checkpointer, the log starts over while batches keep
    /// coming (its file stops growing); without it, the log holds every
    /// batch until the engine's own checkpoint at 256 MiB.
    #[test]
    fn the_checkpointer_starts_the_log_over_under_a_steady_ingest() {
        let without = log_after(300, None);
        let with = log_after(
            300,
            Some(Checkpointing { every: Duration::from_millis(5), restart: 64, sync_every: 16 }),
        );
        assert!(with * 4 < without, "log file {with} bytes with the checkpointer, {without} without");
    }

    #[test]
    fn a_welcome_waits_only_for_its_own_stream_and_only_until_it_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
        let encoder = engine.encoder();
        let writer = Writer::start(Arc::new(Mutex::new(engine)), Arc::default());
        let (c, a) = ids("dev-a");
        let (_, b) = ids("dev-b");
        let (key_a, key_b) = (stream_key(&c, &a, 1), stream_key(&c, &b, 1));
        assert_ne!(key_a, key_b);
        assert_ne!(key_a, stream_key(&c, &a, 2));
        // A batch through the writer: once answered, it is synced, and its
        // stream's welcome does not wait.
        let now = Timestamp::UNIX_EPOCH;
        let batch = AdmittedBatch {
            customer: c,
            device: a,
            seq: Sequence { stream: 1, first_seq: 1, skipped: 0 },
            records: vec![None],
        };
        let (outcome, opened) = writer.store(encoder.encode(batch, now), key_a, now);
        assert!(opened);
        assert_eq!(outcome.unwrap().high_water, 1);
        assert!(writer.wait_durable(key_a, Duration::ZERO));
        // A batch of stream A committed and not synced (as the writer
        // marks it before its commit): A's welcome waits for it, B's not.
        writer.progress.unsynced.lock().unwrap().insert(key_a, 1);
        let started = std::time::Instant::now();
        assert!(!writer.wait_durable(key_a, Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(writer.wait_durable(key_b, Duration::ZERO));
        // Synced from another thread while A's welcome waits: it goes on.
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                mark_synced(&writer.progress, &[key_a]);
            });
            assert!(writer.wait_durable(key_a, Duration::from_secs(10)));
        });
        assert!(writer.progress.unsynced.lock().unwrap().is_empty());
    }

    /// A checkpointer whose `k`-th copy answers `answers[k]` (log frames,
    /// frames copied; the last one again past the end), that records each
    /// call ("copy" or "sync"), and fails the calls whose numbers (from 0)
    /// are in `fail`.
    struct Flaky {
        answers: Vec<(i64, i64)>,
        fail: Vec<usize>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Flaky {
        fn new(answers: Vec<(i64, i64)>, fail: Vec<usize>) -> Self {
            Self { answers, fail, calls: Mutex::default() }
        }

        /// A log of `log` frames of which `step` more are copied at each
        /// copy (up to all of them).
        fn steady(log: i64, step: i64, fail: Vec<usize>) -> Self {
            Self::new((1..=64).map(|k| (log, (k * step).min(log))).collect(), fail)
        }
    }

    impl Flaky {
        fn answer(&self, kind: &'static str) -> Result<(), privtel_store::Error> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(kind);
            if self.fail.contains(&(calls.len() - 1)) {
                return Err(privtel_store::Error::Database {
                    op: "a test's checkpoint",
                    message: "failed".into(),
                });
            }
            Ok(())
        }
    }

    impl Checkpoints for Flaky {
        fn passive(&self) -> Result<(i64, i64), privtel_store::Error> {
            self.answer("copy")?;
            let copies = self.calls.lock().unwrap().iter().filter(|c| **c == "copy").count();
            Ok(self.answers[(copies - 1).min(self.answers.len() - 1)])
        }

        fn sync_database(&self) -> Result<(), privtel_store::Error> {
            self.answer("sync")
        }
    }

    /// The loop over a [`Flaky`] (a log past the restart size when `long`)
    /// until it has made `calls` calls: the failures it counted and its
    /// first `calls` calls.
    fn failures_counted(long: bool, fail: Vec<usize>, calls: usize) -> (u64, Vec<&'static str>) {
        let flaky = Flaky::new(vec![(if long { 100 } else { 1 }, 0)], fail);
        let settings = Checkpointing { every: Duration::from_millis(1), restart: 50, sync_every: 10 };
        run_checkpointer(flaky, settings, calls)
    }

    /// The loop over `flaky` with `settings` until it has made `calls`
    /// calls: the failures it counted and its first `calls` calls.
    fn run_checkpointer(flaky: Flaky, settings: Checkpointing, calls: usize) -> (u64, Vec<&'static str>) {
        let dir = tempfile::tempdir().unwrap();
        let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
        let engine = Mutex::new(engine);
        let failures = AtomicU64::new(0);
        let (stop, stopped) = mpsc::channel();
        std::thread::scope(|s| {
            let (flaky, engine, failures) = (&flaky, &engine, &failures);
            s.spawn(move || checkpoint_loop(flaky, engine, &stopped, settings, failures));
            let limit = std::time::Instant::now() + Duration::from_secs(30);
            while flaky.calls.lock().unwrap().len() < calls {
                assert!(std::time::Instant::now() < limit, "the loop stopped calling");
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(stop);
        });
        let mut made = flaky.calls.into_inner().unwrap();
        made.truncate(calls);
        // Failures among the calls after the first `calls` (made before
        // the loop saw the stop) do not happen: `fail` is within them.
        (failures.load(Ordering::SeqCst), made)
    }

    /// Every failed copy or sync is counted once, and the loop goes on to
    /// its next turn; a turn that fails stops there (no sync after a
    /// failed copy, no copy under the engine after a failed sync).
    #[test]
    fn the_checkpointer_counts_each_failure_and_goes_on() {
        assert_eq!(failures_counted(false, vec![], 5), (0, vec!["copy"; 5]));
        let turn = ["copy", "copy", "sync", "copy"];
        assert_eq!(failures_counted(true, vec![], 8), (0, [turn, turn].concat()));
        // A short log: one copy a turn; the 2nd and 4th fail.
        assert_eq!(failures_counted(false, vec![1, 3], 5), (2, vec!["copy"; 5]));
        // A long log: copy, copy, sync, then a copy under the engine, a
        // turn. Turn 1's first copy (call 0) fails and ends it; turn 2's
        // sync (call 3) fails and ends it; turn 3's copy under the engine
        // (call 7) fails; turn 4 is whole.
        assert_eq!(
            failures_counted(true, vec![0, 3, 7], 12),
            (3, [&["copy"][..], &["copy", "copy", "sync"], &turn, &turn].concat())
        );
    }

    /// Below the restart size, the database file is synced once every
    /// `sync_every` frames copied, not at every copy and not only at the
    /// restart; a failed sync is counted and retried at the next copy.
    #[test]
    fn the_checkpointer_syncs_the_database_file_every_few_frames_copied() {
        let settings = Checkpointing { every: Duration::from_millis(1), restart: 1_000, sync_every: 10 };
        // 4 frames a copy: a sync after the 3rd (12 frames), the 6th (24
        // from 12), the 9th.
        let flaky = Flaky::steady(500, 4, vec![]);
        let three = ["copy", "copy", "copy", "sync"];
        assert_eq!(run_checkpointer(flaky, settings, 12), (0, [three, three, three].concat()));
        // The 1st sync (call 3) fails: counted, and the next copy syncs.
        let flaky = Flaky::steady(500, 4, vec![3]);
        assert_eq!(
            run_checkpointer(flaky, settings, 10),
            (1, vec!["copy", "copy", "copy", "sync", "copy", "sync", "copy", "copy", "copy", "sync"])
        );
        // A log copied to its end at the 3rd copy (12 frames): synced then,
        // and not again while nothing more is copied.
        let flaky = Flaky::steady(12, 4, vec![]);
        assert_eq!(run_checkpointer(flaky, settings, 8), (0, [&three[..], &["copy"; 4]].concat()));
        // The log starts over after the sync at 12 frames and its new
        // copies pass 12 at once: counted from 0, so synced at 16 (not at
        // 22, 10 past the old mark).
        let flaky = Flaky::new(vec![(500, 4), (500, 8), (500, 12), (100, 16), (100, 20)], vec![]);
        assert_eq!(
            run_checkpointer(flaky, settings, 7),
            (0, vec!["copy", "copy", "copy", "sync", "copy", "sync", "copy"])
        );
        // Fewer frames copied than at the last sync: started over too.
        let flaky = Flaky::new(vec![(500, 4), (500, 8), (500, 12), (600, 2), (600, 12)], vec![]);
        assert_eq!(
            run_checkpointer(flaky, settings, 7),
            (0, vec!["copy", "copy", "copy", "sync", "copy", "copy", "sync"])
        );
    }
}

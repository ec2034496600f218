//! Group commit: one writer thread owns the engine's writes. Connection
//! threads encode their batch (payloads, sealing, digests: in parallel),
//! queue it and wait; the writer takes the engine, then every batch queued
//! by then, writes them in one transaction (one sync to disk) and answers
//! each. A batch is acknowledged only once its group is durable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use privtel_model::Timestamp;
use privtel_store::{EncodedBatch, IngestOutcome, SqliteEngine};

type Outcome = Result<IngestOutcome, privtel_store::Error>;

/// A batch waiting for the writer, and where its outcome goes.
struct Pending {
    batch: EncodedBatch,
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

/// The writer thread and its queue.
pub(crate) struct Writer {
    queue: Option<mpsc::Sender<Pending>>,
    queued: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer of `engine`.
    pub(crate) fn start(engine: Arc<Mutex<SqliteEngine>>) -> Self {
        let (queue, rx) = mpsc::channel::<Pending>();
        let queued = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&queued);
        let thread = std::thread::Builder::new()
            .name("privtel-writer".into())
            .spawn(move || write_loop(&engine, &rx, &count))
            .ok();
        Self { queue: Some(queue), queued, thread }
    }

    /// Batches queued and not yet taken into a group.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Stores `batch` with the next group; returns its outcome and whether
    /// it opened its group.
    pub(crate) fn store(&self, batch: EncodedBatch, now: Timestamp) -> (Outcome, bool) {
        let (outcome, answer) = mpsc::sync_channel(1);
        let stopped = || {
            Err(privtel_store::Error::Database {
                op: "storing a batch",
                message: "the service's writer has stopped".into(),
            })
        };
        let Some(queue) = &self.queue else { return (stopped(), false) };
        self.queued.fetch_add(1, Ordering::AcqRel);
        if queue.send(Pending { batch, now, outcome }).is_err() {
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
    }
}

fn write_loop(engine: &Mutex<SqliteEngine>, rx: &mpsc::Receiver<Pending>, queued: &AtomicUsize) {
    // Ends when the service (the only sender) is dropped.
    while let Ok(first) = rx.recv() {
        // The engine first, then whatever queued while waiting for it.
        let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
        let mut group = vec![first];
        group.extend(rx.try_iter());
        queued.fetch_sub(group.len(), Ordering::AcqRel);
        let now = group.iter().map(|p| p.now).max().unwrap_or(group[0].now);
        let (batches, answers): (Vec<_>, Vec<_>) = group.into_iter().map(|p| (p.batch, p.outcome)).unzip();
        // A panic in the engine fails this group, not the service: each
        // connection gets an error and its agent retries.
        let outcomes =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.store_encoded(&batches, now)))
                .unwrap_or_default();
        drop(engine);
        let mut outcomes = outcomes.into_iter();
        for (i, (answer, batch)) in answers.into_iter().zip(batches).enumerate() {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(privtel_store::Error::Database {
                    op: "storing a batch",
                    message: "the engine failed while storing the group".into(),
                })
            });
            // A receiver is gone only if its connection's thread is.
            let _ = answer.send((outcome, i == 0, Some(batch)));
        }
    }
}

//! The writer: consumes the ingest stream and applies each batch to the
//! engine exactly once (see the module docs of `jetstream`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use privtel_model::{Program, Timestamp};
use privtel_store::{EngineStore, IngestOutcome, SqliteEngine};

use super::{IngestMessage, JetStreamError, JetStreamOptions, Link, Metrics};

type Outcome = Result<IngestOutcome, privtel_store::Error>;

/// An engine a writer applies groups of batches to: one transaction per
/// group, one outcome per batch in order (as
/// [`EngineStore::ingest_group`]).
pub trait ApplyGroup {
    /// Stores `messages` as one durable write.
    fn apply_group(&mut self, messages: Vec<IngestMessage>, now: Timestamp) -> Vec<Outcome>;
}

/// The embedded engine: benchmarking records are folded into their
/// customer's aggregates (tagged with the message's industry), as the
/// service's own writer does; records without a time of their own are
/// dated when the front-end received them.
impl ApplyGroup for SqliteEngine {
    fn apply_group(&mut self, messages: Vec<IngestMessage>, now: Timestamp) -> Vec<Outcome> {
        let encoder = self.encoder();
        let batches =
            messages.into_iter().map(|m| encoder.encode_folding(m.batch, m.received, &m.industry)).collect();
        self.ingest_encoded(batches, now)
    }
}

/// Any [`EngineStore`] (the PostgreSQL engine): batches go to
/// [`EngineStore::ingest_group`] as they are, except benchmarking records:
/// an engine behind this trait has no aggregates to fold them into, and a
/// row would keep the device's id that the embedded path never keeps, so
/// they are refused for good (counted in `refused`; their numbers count).
#[derive(Debug)]
pub struct Rows<E>(pub E);

impl<E: EngineStore> ApplyGroup for Rows<E> {
    fn apply_group(&mut self, messages: Vec<IngestMessage>, now: Timestamp) -> Vec<Outcome> {
        let batches = messages
            .into_iter()
            .map(|m| {
                let mut batch = m.batch;
                for r in &mut batch.records {
                    if r.as_ref().is_some_and(|r| r.program == Program::Benchmarking) {
                        *r = None;
                    }
                }
                batch
            })
            .collect();
        self.0.ingest_group(batches, now)
    }
}

/// An engine shared with others (a service that also answers welcomes
/// from it): locked for the group.
impl<T: ApplyGroup> ApplyGroup for Arc<Mutex<T>> {
    fn apply_group(&mut self, messages: Vec<IngestMessage>, now: Timestamp) -> Vec<Outcome> {
        self.lock().unwrap_or_else(PoisonError::into_inner).apply_group(messages, now)
    }
}

/// What one [`StreamWriter::step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepReport {
    /// Messages taken from the stream.
    pub messages: u64,
    /// Of them, applied and acknowledged.
    pub applied: u64,
    /// Records stored.
    pub stored: u64,
    /// Records found already stored.
    pub duplicates: u64,
    /// Messages handed back (a gap before them, or a failed transaction).
    pub handed_back: u64,
    /// Messages terminated (malformed, refused for good).
    pub terminated: u64,
    /// Whether storing failed (the database, or this writer's
    /// configuration): what failed was handed back.
    pub failed: bool,
}

/// Consumes the ingest stream into an engine (see the module docs). Run
/// as many as you like on one consumer: JetStream gives each message to
/// one of them at a time.
pub struct StreamWriter<A> {
    link: Link,
    consumer: PullConsumer,
    engine: A,
    metrics: Arc<Metrics>,
    clock: Box<dyn Fn() -> Timestamp + Send>,
    log: Box<dyn Fn(&str) + Send>,
    max_group: usize,
}

impl<A> std::fmt::Debug for StreamWriter<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter").field("consumer", &self.link.options.consumer).finish_non_exhaustive()
    }
}

impl<A: ApplyGroup> StreamWriter<A> {
    /// Connects, creates the stream and the consumer when missing, and
    /// writes into `engine`.
    ///
    /// # Errors
    ///
    /// As [`super::Publisher::connect`].
    pub fn connect(options: JetStreamOptions, engine: A) -> Result<Self, JetStreamError> {
        let link = Link::connect(options)?;
        let consumer = link.consumer()?;
        Ok(Self {
            link,
            consumer,
            engine,
            metrics: Arc::new(Metrics::default()),
            clock: Box::new(Timestamp::now),
            log: Box::new(|_| {}),
            max_group: 512,
        })
    }

    /// Counts into `metrics` (share them with a front-end's).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The clock that dates a group's write.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Where it reports terminated messages (one line each, no value of
    /// any record).
    #[must_use]
    pub fn with_log(mut self, log: impl Fn(&str) + Send + 'static) -> Self {
        self.log = Box::new(log);
        self
    }

    /// The most messages applied in one transaction (default 512).
    #[must_use]
    pub fn with_max_group(mut self, n: usize) -> Self {
        self.max_group = n.max(1);
        self
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Messages published and not yet applied.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Stream`].
    pub fn lag(&self) -> Result<u64, JetStreamError> {
        self.link.lag()
    }

    /// The engine.
    pub fn engine(&mut self) -> &mut A {
        &mut self.engine
    }

    /// Takes what waits (waiting up to `wait` for a first message), applies
    /// it as one group, acknowledges what was applied (double
    /// acknowledgement: confirmed by the server), hands back what must come
    /// again and terminates what never can be applied.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Stream`] when the stream cannot be read; nothing
    /// was taken then.
    pub fn step(&mut self, wait: Duration) -> Result<StepReport, JetStreamError> {
        let max = self.max_group;
        let consumer = &self.consumer;
        let taken: Vec<jetstream::Message> = self
            .link
            .runtime
            .block_on(async {
                let mut out = Vec::new();
                // Whatever is there now; if nothing, wait for one, then
                // take whatever came with it.
                for attempt in 0..2 {
                    if attempt == 1 {
                        if !out.is_empty() {
                            break;
                        }
                        let mut first = consumer.batch().max_messages(1).expires(wait).messages().await?;
                        while let Some(m) = first.next().await {
                            out.push(m?);
                        }
                        if out.is_empty() {
                            break;
                        }
                    }
                    let room = max.saturating_sub(out.len());
                    if room == 0 {
                        break;
                    }
                    let mut now = consumer.fetch().max_messages(room).messages().await?;
                    while let Some(m) = now.next().await {
                        out.push(m?);
                    }
                }
                Ok::<_, async_nats::Error>(out)
            })
            .map_err(|e| JetStreamError::Stream { op: "fetching messages", message: e.to_string() })?;
        let mut report = StepReport { messages: taken.len() as u64, ..StepReport::default() };
        if taken.is_empty() {
            return Ok(report);
        }
        let key = self.link.options.key.clone();
        let mut held = Vec::with_capacity(taken.len());
        let mut group = Vec::with_capacity(taken.len());
        let mut terminate = Vec::new();
        for m in taken {
            match IngestMessage::decode(&m.payload, key.as_ref()) {
                Ok(message) => {
                    group.push(message);
                    held.push(m);
                }
                Err(e) => {
                    (self.log)(&format!("terminated a message of {}: {e}", m.subject));
                    terminate.push(m);
                }
            }
        }
        let now = (self.clock)();
        let engine = &mut self.engine;
        let n = group.len();
        let outcomes =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.apply_group(group, now)))
                .unwrap_or_default();
        let mut ack = Vec::new();
        let mut hand_back = Vec::new();
        if outcomes.len() != n {
            // The engine panicked: every message comes again.
            self.metrics.failed_groups.fetch_add(1, Ordering::Relaxed);
            report.failed = true;
            (self.log)(&format!("a group of {n} batches failed in the engine; handed back"));
            hand_back = held;
        } else {
            let max_gap = self.link.options.max_gap_deliveries;
            for (m, outcome) in held.into_iter().zip(outcomes) {
                match outcome {
                    Ok(o) => {
                        report.applied += 1;
                        report.stored += o.stored;
                        report.duplicates += o.duplicates;
                        self.metrics.applied.fetch_add(1, Ordering::Relaxed);
                        self.metrics.applied_records.fetch_add(o.stored, Ordering::Relaxed);
                        self.metrics.duplicates.fetch_add(o.duplicates, Ordering::Relaxed);
                        self.metrics.suppressed.fetch_add(o.suppressed, Ordering::Relaxed);
                        ack.push(m);
                    }
                    // Batches before it may still be on their way (another
                    // writer holds them): it comes again, a bounded number
                    // of times.
                    Err(privtel_store::Error::SequenceGap { .. })
                        if m.info().map(|i| i.delivered).unwrap_or(i64::MAX) < max_gap =>
                    {
                        hand_back.push(m);
                    }
                    Err(e) if is_permanent(&e) => {
                        (self.log)(&format!("terminated a batch of {}: {e}", m.subject));
                        terminate.push(m);
                    }
                    // The database (or this writer's configuration) failed:
                    // nothing of the batch is stored; it comes again, for as
                    // long as the stream keeps it.
                    Err(e) => {
                        if !report.failed {
                            report.failed = true;
                            self.metrics.failed_groups.fetch_add(1, Ordering::Relaxed);
                            (self.log)(&format!("storing failed, batches handed back: {e}"));
                        }
                        hand_back.push(m);
                    }
                }
            }
        }
        report.handed_back = hand_back.len() as u64;
        report.terminated = terminate.len() as u64;
        self.metrics.handed_back.fetch_add(report.handed_back, Ordering::Relaxed);
        self.metrics.terminated.fetch_add(report.terminated, Ordering::Relaxed);
        let delay = self.link.options.gap_delay;
        let acked = self.link.runtime.block_on(async {
            let acks = futures_util::future::join_all(ack.iter().map(|m| m.double_ack())).await;
            let naks = futures_util::future::join_all(
                hand_back.iter().map(|m| m.ack_with(AckKind::Nak(Some(delay)))),
            );
            let terms = futures_util::future::join_all(terminate.iter().map(|m| m.ack_with(AckKind::Term)));
            let _ = futures_util::join!(naks, terms);
            acks.iter().filter(|a| a.is_err()).count()
        });
        if acked > 0 {
            // Applied but not acknowledged: they come again after the
            // acknowledgement wait and are found duplicates then.
            (self.log)(&format!("{acked} applied messages were not acknowledged; they will come again"));
        }
        Ok(report)
    }

    /// Steps until `stop` is set (checked at least every 200 ms).
    ///
    /// # Errors
    ///
    /// An error of [`StreamWriter::step`], or storing that keeps failing,
    /// for 30 s without a success: the writer gives up so that its
    /// supervisor can start it anew (with a new database connection);
    /// what it held comes again to the next writer.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), JetStreamError> {
        let mut failing_since = None;
        while !stop.load(Ordering::Acquire) {
            let error = match self.step(Duration::from_millis(200)) {
                Ok(r) if !r.failed => {
                    failing_since = None;
                    continue;
                }
                Ok(_) => JetStreamError::Stream {
                    op: "storing batches",
                    message: "the engine keeps failing".into(),
                },
                Err(e) => e,
            };
            let since = *failing_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                return Err(error);
            }
            (self.log)(&format!("writer: {error}; retrying"));
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

/// An error no later delivery can cure: the message is terminated.
fn is_permanent(e: &privtel_store::Error) -> bool {
    use privtel_store::Error;
    matches!(
        e,
        Error::SequenceGap { .. }
            | Error::SequenceRange { .. }
            | Error::Encode(_)
            | Error::Decode { .. }
            | Error::LegacyCustomerRequired { .. }
    )
}

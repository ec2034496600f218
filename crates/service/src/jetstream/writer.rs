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

/// The most records one transaction of a writer holds (about 30 MiB of
/// decoded records at most, and as much again of the JSON they were
/// decoded from).
const GROUP_RECORDS: usize = 50_000;

/// How long past a pull request's expiry (a no-wait request has none: it
/// ends at once) its end is awaited, and how long after each message the
/// next, before the writer stops waiting for the request on its own.
const EXPIRY_GRACE: Duration = Duration::from_secs(2);

/// The messages of one pull request into `out`, until the server ends the
/// request or, should it never do so (it can leave a no-wait request of
/// several concurrent pullers unanswered), until `expires` and
/// [`EXPIRY_GRACE`] have passed with no message for [`EXPIRY_GRACE`]:
/// what came is kept (acknowledged once stored), the request is dropped
/// (its subscription with it; a message the server delivered to it
/// unacknowledged comes again after the acknowledgement wait), and the
/// writer goes on.
async fn take_until_ended<T>(
    mut messages: impl futures_util::Stream<Item = Result<T, impl Into<async_nats::Error>>> + Unpin,
    expires: Duration,
    out: &mut Vec<T>,
) -> Result<(), async_nats::Error> {
    let mut deadline = tokio::time::Instant::now() + expires + EXPIRY_GRACE;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, messages.next()).await {
        out.push(m.map_err(Into::into)?);
        deadline = deadline.max(tokio::time::Instant::now() + EXPIRY_GRACE);
    }
    Ok(())
}

/// One group's messages into `out`, at most `max`: whatever `now(room)`
/// (a no-wait pull request for `room` messages) gives; if nothing, waits up
/// to `wait` for one (`first()`, a pull request for one that expires after
/// `wait`), then takes whatever came meanwhile with one more `now`.
///
/// An error ends the taking and is returned, and what was taken before it
/// stays in `out`: those messages are the writer's until it acknowledges
/// or hands them back, so the caller applies them (dropped, they would
/// only come again after the acknowledgement wait).
async fn take_group<T, S, E>(
    out: &mut Vec<T>,
    max: usize,
    wait: Duration,
    mut first: impl AsyncFnMut() -> Result<S, async_nats::Error>,
    mut now: impl AsyncFnMut(usize) -> Result<S, async_nats::Error>,
) -> Result<(), async_nats::Error>
where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
    E: Into<async_nats::Error>,
{
    // No-wait requests: their end is awaited for a bounded time all the
    // same (a request the server never ended hung a writer for good).
    let room = max.saturating_sub(out.len());
    if room == 0 {
        return Ok(());
    }
    take_until_ended(now(room).await?, Duration::ZERO, out).await?;
    if !out.is_empty() {
        return Ok(());
    }
    take_until_ended(first().await?, wait, out).await?;
    let room = max.saturating_sub(out.len());
    if !out.is_empty() && room > 0 {
        take_until_ended(now(room).await?, Duration::ZERO, out).await?;
    }
    Ok(())
}

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
/// dated when the front-end received them (never later than the writer's
/// clock).
impl ApplyGroup for SqliteEngine {
    fn apply_group(&mut self, messages: Vec<IngestMessage>, now: Timestamp) -> Vec<Outcome> {
        let encoder = self.encoder();
        let batches = messages
            .into_iter()
            .map(|m| {
                let received = privtel_store::parts::received_by(Some(m.received), now);
                encoder.encode_folding(m.batch, received, &m.industry)
            })
            .collect();
        self.ingest_encoded(batches, now)
    }
}

/// Any [`EngineStore`] (the PostgreSQL engine): batches go to
/// [`EngineStore::ingest_group_json`] as they are, with the JSON each
/// record was decoded from (the PostgreSQL engine stores those bytes
/// rather than encoding the record again), except benchmarking records:
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
                let mut batch = m.into_json_batch();
                for (i, r) in batch.batch.records.iter_mut().enumerate() {
                    if r.as_ref().is_some_and(|r| r.program == Program::Benchmarking) {
                        *r = None;
                        // Its bytes go no further either.
                        if let Some(json) = batch.json.get_mut(i) {
                            *json = None;
                        }
                    }
                }
                batch
            })
            .collect();
        // The records' JSON as the front-end encoded them: the engine need
        // not encode them again.
        self.0.ingest_group_json(batches, now)
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
    /// Whether reading the stream failed after part of the group came
    /// (that part was applied; the error is logged): [`StreamWriter::run`]
    /// counts the step as failing, as it does a step that could read
    /// nothing.
    pub fetch_failed: bool,
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
        let (taken, ended): (Vec<jetstream::Message>, _) = self.link.runtime.block_on(async {
            let mut out = Vec::new();
            let ended = take_group(
                &mut out,
                max,
                wait,
                async || Ok(consumer.batch().max_messages(1).expires(wait).messages().await?),
                // No expiry: with one, the server would hold a no-wait
                // request open until it, when nothing is there.
                async |room| Ok(consumer.fetch().max_messages(room).messages().await?),
            )
            .await;
            (out, ended)
        });
        let mut report = StepReport { messages: taken.len() as u64, ..StepReport::default() };
        if let Err(e) = ended {
            if taken.is_empty() {
                return Err(JetStreamError::Stream { op: "fetching messages", message: e.to_string() });
            }
            (self.log)(&format!(
                "fetching messages failed after {} were taken: {e}; applying those",
                taken.len()
            ));
            report.fetch_failed = true;
        }
        if taken.is_empty() {
            return Ok(report);
        }
        // Decoded records take far more memory than their bytes (a refused
        // record's one-byte tag is a whole `Option<Record>`): the group is
        // applied in chunks of at most GROUP_RECORDS records, each decoded
        // only when the previous one is written.
        let mut chunk = Vec::new();
        let mut chunk_records = 0usize;
        let mut taken = taken.into_iter().peekable();
        while let Some(m) = taken.next() {
            match IngestMessage::decode(&m.payload, self.link.options.key.as_ref()) {
                Ok(message) => {
                    let expected = self.link.options.subject(
                        &message.batch.customer,
                        &message.batch.device,
                        message.batch.seq.stream,
                    );
                    if self.link.options.sealed_only && !message.sealed() {
                        // Not written by a holder of the key: whoever
                        // published it, it goes nowhere.
                        (self.log)(&format!(
                            "terminated a message of {}: not sealed, expected a front-end's sealed message",
                            m.subject
                        ));
                        self.finish(&mut report, Vec::new(), Vec::new(), vec![m]);
                    } else if m.subject.as_str() != expected {
                        // Only front-ends publish here, and they publish a
                        // batch on its own device's subject: anything else
                        // was not written by one.
                        (self.log)(&format!(
                            "terminated a message of {}: its body names another subject",
                            m.subject
                        ));
                        self.finish(&mut report, Vec::new(), Vec::new(), vec![m]);
                    } else {
                        chunk_records += message.batch.records.len();
                        chunk.push((m, message));
                    }
                }
                // A key this writer does not have (a writer started without
                // the key, or before a key it must read was given to it): the
                // message is the front-end's and must not be lost.
                Err(e @ JetStreamError::Key(_)) => {
                    if !report.failed {
                        (self.log)(&format!("cannot open a message of {}: {e}; handed back", m.subject));
                    }
                    report.failed = true;
                    self.metrics.failed_groups.fetch_add(1, Ordering::Relaxed);
                    self.finish(&mut report, Vec::new(), vec![m], Vec::new());
                }
                Err(e) => {
                    (self.log)(&format!("terminated a message of {}: {e}", m.subject));
                    self.finish(&mut report, Vec::new(), Vec::new(), vec![m]);
                }
            }
            if !chunk.is_empty() && (chunk_records >= GROUP_RECORDS || taken.peek().is_none()) {
                self.apply_chunk(std::mem::take(&mut chunk), &mut report);
                chunk_records = 0;
            }
        }
        Ok(report)
    }

    /// Applies one chunk as one transaction, then acknowledges, hands back
    /// or terminates each of its messages.
    fn apply_chunk(&mut self, chunk: Vec<(jetstream::Message, IngestMessage)>, report: &mut StepReport) {
        let n = chunk.len();
        let (held, group): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
        // For each message that may be terminated if it meets a gap: whether
        // an earlier message of its device stream is in the stream, looked
        // up *before* the engine reads the marks. Looked up after, the batch
        // before it could have been applied and acknowledged (so gone from
        // the stream) in between by another writer, and a batch whose gap
        // had just closed would be terminated.
        let may_close: Vec<bool> = held.iter().map(|m| self.gap_may_close(m)).collect();
        let now = (self.clock)();
        let engine = &mut self.engine;
        let outcomes =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.apply_group(group, now)))
                .unwrap_or_default();
        let mut ack = Vec::new();
        let mut hand_back = Vec::new();
        let mut terminate = Vec::new();
        if outcomes.len() != n {
            // The engine panicked: every message comes again.
            self.metrics.failed_groups.fetch_add(1, Ordering::Relaxed);
            report.failed = true;
            (self.log)(&format!("a group of {n} batches failed in the engine; handed back"));
            hand_back = held;
        } else {
            for ((m, outcome), may_close) in held.into_iter().zip(outcomes).zip(may_close) {
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
                    Err(privtel_store::Error::SequenceGap { .. }) => {
                        if may_close {
                            hand_back.push(m);
                        } else {
                            (self.log)(&format!(
                                "terminated a batch of {}: a gap no batch in the stream can fill",
                                m.subject
                            ));
                            terminate.push(m);
                        }
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
        self.finish(report, ack, hand_back, terminate);
    }

    /// Whether a batch that starts beyond its stream's mark may still be
    /// applied later: an earlier message of its device stream is still in
    /// the stream (held by another writer, or by one that died and whose
    /// messages come back after the acknowledgement wait), or it has come
    /// fewer than `max_gap_deliveries` times (a front-end may still be
    /// publishing the batch before it: 8 deliveries are about 7 s, more
    /// than a publish may wait). A batch of an agent was
    /// acknowledged to it: it is terminated only when no batch in the
    /// stream can fill its gap.
    fn gap_may_close(&self, m: &jetstream::Message) -> bool {
        let Ok(info) = m.info() else { return false };
        if info.delivered < self.link.options.max_gap_deliveries {
            return true;
        }
        let (sequence, subject) = (info.stream_sequence, m.subject.to_string());
        let stream = &self.link.options.stream;
        let first = self.link.runtime.block_on(async {
            let stream = self.link.js.get_stream(stream).await.map_err(|e| e.to_string())?;
            match stream.raw_message_builder().sequence(1).next_by_subject(subject).send().await {
                Ok(found) => Ok(Some(found.sequence)),
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        });
        match first {
            Ok(Some(first)) => first < sequence,
            Ok(None) => false,
            // Cannot tell: it comes again.
            Err(_) => true,
        }
    }

    /// Acknowledges (double), hands back (after a delay that grows with
    /// each delivery, to at most 2 s) and terminates, and counts.
    fn finish(
        &self,
        report: &mut StepReport,
        ack: Vec<jetstream::Message>,
        hand_back: Vec<jetstream::Message>,
        terminate: Vec<jetstream::Message>,
    ) {
        report.handed_back += hand_back.len() as u64;
        report.terminated += terminate.len() as u64;
        self.metrics.handed_back.fetch_add(hand_back.len() as u64, Ordering::Relaxed);
        self.metrics.terminated.fetch_add(terminate.len() as u64, Ordering::Relaxed);
        // The delay grows with each delivery, but slowly and to at most
        // 2 s: a batch waiting for the one before it (held by another
        // writer) must not fall minutes behind, nor the batches after it.
        let base = self.link.options.gap_delay;
        let delay = |m: &jetstream::Message| {
            let delivered = m.info().map(|i| i.delivered).unwrap_or(1).clamp(1, 10);
            base.saturating_mul(delivered as u32).min(Duration::from_secs(2))
        };
        let not_acked = self.link.runtime.block_on(async {
            let acks = futures_util::future::join_all(ack.iter().map(|m| m.double_ack())).await;
            let naks = futures_util::future::join_all(
                hand_back.iter().map(|m| m.ack_with(AckKind::Nak(Some(delay(m))))),
            );
            let terms = futures_util::future::join_all(terminate.iter().map(|m| m.ack_with(AckKind::Term)));
            let _ = futures_util::join!(naks, terms);
            // Negative and terminating acknowledgements are sent without
            // an answer: flushed here, so a writer stopped right after
            // still hands its messages back at once (else they wait out
            // the acknowledgement wait).
            let _ = self.link.client.flush().await;
            acks.iter().filter(|a| a.is_err()).count()
        });
        if not_acked > 0 {
            // Applied but not acknowledged: they come again after the
            // acknowledgement wait and are found duplicates then.
            (self.log)(&format!("{not_acked} applied messages were not acknowledged; they will come again"));
        }
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
                Ok(r) if !r.failed && !r.fetch_failed => {
                    failing_since = None;
                    continue;
                }
                Ok(r) if !r.failed => JetStreamError::Stream {
                    op: "fetching messages",
                    message: "the stream failed after part of a group came (that part was applied)".into(),
                },
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
            // Deleted at contract end: its batches are refused until it is
            // re-onboarded, and re-onboarding does not bring them back.
            | Error::CustomerDeleted
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use privtel_model::{
        BinaryVerdict, CustomerId, DeviceId, Digest as Sha256, Domain, DomainVerdict, UserId,
    };
    use privtel_retention::RetentionPolicy;
    use privtel_store::{
        AdmittedBatch, CopyStats, CustomerDeletion, DeletionReceipt, EngineOptions, ErasureRequest,
        JsonBatch, Result, Sequence, StoredVerdict, SweepReport,
    };

    use super::*;

    /// A group's taking keeps what came before a failed request: the step
    /// applies it rather than leaving it to come again after the
    /// acknowledgement wait.
    #[test]
    fn what_was_taken_before_a_failed_fetch_is_kept_for_the_step() {
        type Item = Result<u32, async_nats::Error>;
        type Messages = futures_util::stream::Iter<std::vec::IntoIter<Item>>;
        fn stream(items: Vec<Item>) -> Result<Messages, async_nats::Error> {
            Ok(futures_util::stream::iter(items))
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let wait = Duration::from_millis(10);
            // The no-wait request ends in an error status (a consumer
            // deleted, a leader changed) after two messages: both kept.
            let mut out = Vec::new();
            let ended = take_group(
                &mut out,
                10,
                wait,
                async || panic!("messages were there: no wait"),
                async |_| stream(vec![Ok(1), Ok(2), Err("409 consumer deleted".into())]),
            )
            .await;
            assert!(ended.is_err());
            assert_eq!(out, [1, 2]);

            // Nothing there at once; one comes within the wait; the
            // request for what came with it fails: the one is kept.
            let mut out = Vec::new();
            let mut requests = 0;
            let ended = take_group(
                &mut out,
                10,
                wait,
                async || stream(vec![Ok(7)]),
                async |_| {
                    requests += 1;
                    if requests == 1 { stream(vec![]) } else { Err("503 no responders".into()) }
                },
            )
            .await;
            assert!(ended.is_err());
            assert_eq!(out, [7]);

            // A failure before anything was taken: nothing to apply (the
            // step returns the error).
            let mut out: Vec<u32> = Vec::new();
            let ended = take_group(
                &mut out,
                10,
                wait,
                async || panic!("the first request failed: no wait"),
                async |_| Err::<Messages, _>("503 no responders".into()),
            )
            .await;
            assert!(ended.is_err() && out.is_empty());

            // At most `max`, and no waiting once something came.
            let mut out = Vec::new();
            let mut rooms = Vec::new();
            let ended = take_group(
                &mut out,
                3,
                wait,
                async || panic!("messages were there: no wait"),
                async |room| {
                    rooms.push(room);
                    stream((0..room as u32).map(Ok).collect())
                },
            )
            .await;
            assert!(ended.is_ok());
            assert_eq!((out, rooms), (vec![0, 1, 2], vec![3]));
        });
    }

    /// A pull request whose end never comes: what came is kept, and the
    /// wait stops once the expiry and the grace have passed with nothing
    /// more; one that ends is read to its end at once; an error is
    /// returned.
    #[test]
    fn a_pull_request_the_server_never_ends_is_left_after_its_grace() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        type Item = Result<u32, async_nats::Error>;
        runtime.block_on(async {
            let started = tokio::time::Instant::now();
            let mut out = Vec::new();
            let open =
                futures_util::stream::iter([Ok(1), Ok(2)]).chain(futures_util::stream::pending::<Item>());
            take_until_ended(open, Duration::from_millis(100), &mut out).await.unwrap();
            assert_eq!(out, [1, 2]);
            let waited = started.elapsed();
            assert!(waited >= EXPIRY_GRACE + Duration::from_millis(100), "{waited:?}");
            assert!(waited < EXPIRY_GRACE * 3, "{waited:?}");

            let started = tokio::time::Instant::now();
            let ended = futures_util::stream::iter([Ok::<u32, async_nats::Error>(3)]);
            take_until_ended(ended, Duration::from_secs(60), &mut out).await.unwrap();
            assert_eq!(out, [1, 2, 3]);
            assert!(started.elapsed() < Duration::from_secs(1));

            let failing = futures_util::stream::iter([Ok(4), Err::<u32, async_nats::Error>("gone".into())]);
            assert!(take_until_ended(failing, Duration::ZERO, &mut out).await.is_err());

            // A delivery that goes on past the expiry and the grace, a
            // message every 0.8 s: each message gives the next its grace.
            let slow = futures_util::stream::unfold(0u32, |n| async move {
                if n == 4 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(800)).await;
                Some((Ok::<u32, async_nats::Error>(10 + n), n + 1))
            });
            let mut slow_out = Vec::new();
            take_until_ended(Box::pin(slow), Duration::ZERO, &mut slow_out).await.unwrap();
            assert_eq!(slow_out, [10, 11, 12, 13]);
        });
    }

    /// What one batch handed to the engine held: each record's program
    /// (None: refused), each record's JSON, and when it was received.
    type Given = (Vec<Option<Program>>, Vec<Option<Vec<u8>>>, Option<Timestamp>);

    /// An engine that keeps what `ingest_group_json` was given, then
    /// stores it in a real SQLite engine.
    struct Recorder {
        inner: SqliteEngine,
        given: Vec<Given>,
    }

    impl EngineStore for Recorder {
        fn ingest_admitted(
            &mut self,
            customer: &CustomerId,
            device: &DeviceId,
            seq: Sequence,
            records: Vec<Option<privtel_model::Record>>,
            now: Timestamp,
        ) -> Result<IngestOutcome> {
            self.inner.ingest_admitted(customer, device, seq, records, now)
        }
        fn ingest_group_json(
            &mut self,
            batches: Vec<JsonBatch>,
            now: Timestamp,
        ) -> Vec<Result<IngestOutcome>> {
            for b in &batches {
                let programs = b.batch.records.iter().map(|r| r.as_ref().map(|r| r.program)).collect();
                self.given.push((programs, b.json.clone(), b.received));
            }
            self.inner.ingest_group_json(batches, now)
        }
        fn high_water(&self, customer: &CustomerId, device: &DeviceId, stream: u64) -> Result<u64> {
            self.inner.high_water(customer, device, stream)
        }
        fn sweep(&mut self, c: &CustomerId, r: &RetentionPolicy, now: Timestamp) -> Result<SweepReport> {
            self.inner.sweep(c, r, now)
        }
        fn customers(&self) -> Result<Vec<CustomerId>> {
            self.inner.customers()
        }
        fn export_person(&self, c: &CustomerId, u: &UserId, out: &mut dyn Write) -> Result<u64> {
            self.inner.export_person(c, u, out)
        }
        fn erase_person(
            &mut self,
            c: &CustomerId,
            r: &ErasureRequest,
            now: Timestamp,
        ) -> Result<DeletionReceipt> {
            self.inner.erase_person(c, r, now)
        }
        fn record_verdicts(
            &mut self,
            c: &CustomerId,
            b: &[BinaryVerdict],
            d: &[DomainVerdict],
            now: Timestamp,
        ) -> Result<u64> {
            self.inner.record_verdicts(c, b, d, now)
        }
        fn binary_verdict(&self, c: &CustomerId, s: &Sha256) -> Result<Option<StoredVerdict<BinaryVerdict>>> {
            self.inner.binary_verdict(c, s)
        }
        fn domain_verdict(&self, c: &CustomerId, d: &Domain) -> Result<Option<StoredVerdict<DomainVerdict>>> {
            self.inner.domain_verdict(c, d)
        }
        fn delete_customer(&mut self, c: &CustomerId, now: Timestamp) -> Result<CustomerDeletion> {
            self.inner.delete_customer(c, now)
        }
        fn export_customer(
            &self,
            c: &CustomerId,
            m: &serde_json::Map<String, serde_json::Value>,
            out: &mut dyn Write,
        ) -> Result<CopyStats> {
            self.inner.export_customer(c, m, out)
        }
        fn record_count(&self) -> Result<u64> {
            self.inner.record_count()
        }
        fn record_count_of(&self, c: &CustomerId) -> Result<u64> {
            self.inner.record_count_of(c)
        }
        fn stream_count(&self, c: &CustomerId, d: &DeviceId) -> Result<u64> {
            self.inner.stream_count(c, d)
        }
    }

    /// What a writer hands an engine through `Rows`: each record with the
    /// JSON the front-end encoded it as (byte for byte the record's
    /// encoding), one entry per record, benchmarking records refused
    /// (no row, no JSON). The batch is stored and counted.
    #[test]
    fn rows_hand_the_engine_each_records_json_as_it_came() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
        let mut rows = Rows(Recorder { inner, given: Vec::new() });
        let records = privtel_testkit::fixtures::records("rows");
        let n = records.len();
        let batch = AdmittedBatch {
            customer: CustomerId::new("acme").unwrap(),
            device: DeviceId::new("dev-0001").unwrap(),
            seq: Sequence { stream: 3, first_seq: 1, skipped: 0 },
            records: records.iter().cloned().map(Some).collect(),
        };
        let received = privtel_testkit::fixtures::base_time();
        let sent = IngestMessage::new(batch, received, "retail").encode(None).unwrap();
        let message = IngestMessage::decode(&sent, None).unwrap();
        // Applied an hour after the front-end took it.
        let now = received.checked_add(time::Duration::hours(1)).unwrap();
        let outcomes = rows.apply_group(vec![message], now);
        let outcome = outcomes.into_iter().next().unwrap().unwrap();

        let (programs, json, when) = rows.0.given.pop().unwrap();
        assert_eq!(when, Some(received), "dated when the front-end received it, not when applied");
        assert_eq!((programs.len(), json.len()), (n, n), "one entry per record");
        let benchmarking = records.iter().filter(|r| r.program == Program::Benchmarking).count();
        assert!(benchmarking > 0 && benchmarking < n, "the fixtures hold both kinds");
        for (i, record) in records.iter().enumerate() {
            let expected = privtel_store::parts::encode(record).unwrap();
            if record.program == Program::Benchmarking {
                assert_eq!(programs[i], None, "record {i}: a benchmarking record is refused");
                assert_eq!(json[i], None, "record {i}: its bytes go no further");
            } else {
                assert_eq!(programs[i], Some(record.program), "record {i}");
                assert_eq!(json[i].as_deref(), Some(&expected[..]), "record {i}: its bytes as they came");
            }
        }
        assert_eq!(outcome.refused, benchmarking as u64);
        assert_eq!(outcome.high_water, n as u64);
        assert_eq!(rows.0.record_count().unwrap(), outcome.stored);
        assert!(outcome.stored > 0);
    }
}

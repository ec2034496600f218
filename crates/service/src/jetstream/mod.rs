//! Ingest through NATS JetStream (feature `jetstream`): stateless
//! front-ends publish each accepted batch to a stream and acknowledge the
//! agent only after JetStream's publish acknowledgement; writers
//! ([`StreamWriter`]) consume the stream, apply each batch to the engine
//! exactly once (the high-water mark moves in the transaction that stores
//! the rows) and acknowledge the message (a double acknowledgement) only
//! after that transaction commits.
//!
//! # Exactly once, in layers
//!
//! * **JetStream's duplicate window** (minutes) drops a batch published
//!   twice with the same message id: (customer, device, stream, first and
//!   last sequence number). Two front-ends receiving retries of the same
//!   batch publish it once.
//! * **The engine** is the final de-duplication: an agent may retry hours
//!   later, or the writer may be killed after its commit and before its
//!   acknowledgement; records at or below the stream's high-water mark are
//!   duplicates, whatever the stream delivers again.
//! * **Order**: messages of one device's stream share a subject and are
//!   stored in order; several writers may still apply them out of order. A
//!   batch that starts beyond the mark is not refused then: it is handed
//!   back (a negative acknowledgement, its delay growing to 2 s) until the
//!   batches before it are applied: however long it takes while an earlier
//!   message of its device stream is in the stream, else
//!   [`JetStreamOptions::max_gap_deliveries`] times, then terminated and
//!   counted (a device that claims a gap stores nothing, as with the
//!   embedded engine).
//! * **The welcome's high-water mark** is the larger of the engine's and
//!   the last batch still waiting in the stream for that device's stream
//!   (its subject's last message), so an agent never declares as skipped a
//!   range that is published and not yet applied; when a mark cannot be
//!   read, batches declaring a skip are deferred.
//!
//! # Operations
//!
//! The stream and the writers' durable consumer are created at start when
//! missing (idempotent: several front-ends and writers start at once). The
//! stream is a work queue (a message is removed when a writer acknowledges
//! it), bounded in bytes (a full stream refuses publishes: the agent is
//! told to retry later) and in age. A front-end refuses batches with a
//! `retry_after` while the writers' lag (messages not yet applied) is above
//! [`JetStreamOptions::max_lag`], instead of growing any queue.
//! [`Metrics`] counts what was accepted, published, applied and refused.
//!
//! # Privacy
//!
//! Messages carry admitted records only (what the customer's policy let
//! leave the device); with an at-rest key they are sealed (AES-256-GCM), so
//! the stream's files hold nothing readable. An erased person's records
//! still waiting in the stream are dropped by the engine's suppression
//! when applied. Subjects carry the customer and device ids (never a
//! person's).

mod message;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use privtel_model::{CustomerId, DeviceId, Timestamp};
use privtel_store::{AdmittedBatch, AtRestKey, Sequence};
use serde::Serialize;

pub use message::{IngestMessage, MAGIC, MAX_MESSAGE_BYTES, MAX_RECORDS, VERSION};
pub use writer::{ApplyGroup, Rows, StepReport, StreamWriter};

/// The header holding a message's last sequence number (read by a welcome
/// without decoding the message).
const LAST_SEQ_HEADER: &str = "Privtel-Last-Seq";

/// What went wrong talking to JetStream, or with a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JetStreamError {
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to nats at {address}: {message}")]
    Connect {
        /// The address given, without any user or password it held.
        address: String,
        /// The client's reason.
        message: String,
    },
    /// Creating or reading the stream or the consumer failed.
    #[error("jetstream {op} failed: {message}")]
    Stream {
        /// What was being done.
        op: &'static str,
        /// The server's or client's reason.
        message: String,
    },
    /// A publish was not acknowledged (timeout, full stream, server gone):
    /// the batch may or may not be in the stream; the agent retries it.
    #[error("publishing to jetstream failed: {0}")]
    Publish(String),
    /// The writers lag: the front-end refuses new batches for now.
    #[error("the writers lag by {lag} messages, above the {max} allowed: retry later")]
    Lagging {
        /// Messages published and not yet applied.
        lag: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A batch could not be encoded as a message.
    #[error("cannot encode an ingest message: {0}")]
    Encode(String),
    /// A sealed message this side has no key for, or whose key is
    /// another: a configuration error, not a bad message (a writer hands it
    /// back).
    #[error("cannot open a sealed ingest message: {0}")]
    Key(String),
    /// A message did not decode; the reason names what was expected.
    #[error("malformed ingest message: {0}")]
    Decode(String),
    /// The options are not usable.
    #[error("invalid jetstream option {option}: expected {expected}")]
    Option {
        /// The option.
        option: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// Where and how batches go through JetStream. `Debug` shows the server
/// without a user or password, and no key.
#[derive(Clone)]
#[non_exhaustive]
pub struct JetStreamOptions {
    /// The server, as `nats://host:port` (or `host:port`).
    pub url: String,
    /// The stream's name (no spaces, dots, `*` or `>`).
    pub stream: String,
    /// The first subject tokens; a batch goes to
    /// `PREFIX.REGION.CUSTOMER.DEVICE.STREAM`.
    pub subject_prefix: String,
    /// This service's region (a subject token).
    pub region: String,
    /// The writers' durable consumer.
    pub consumer: String,
    /// JetStream's duplicate window.
    pub duplicate_window: Duration,
    /// The longest a batch waits in the stream for a writer (it is removed
    /// after that, applied or not: a bound on how long records sit there).
    pub max_age: Duration,
    /// The stream's size limit in bytes; a full stream refuses publishes.
    pub max_bytes: i64,
    /// How long a writer may hold a message before it is delivered again
    /// (a writer killed mid-group: its messages come back after this).
    pub ack_wait: Duration,
    /// Messages published and not applied above which front-ends refuse
    /// batches with `retry_after`.
    pub max_lag: u64,
    /// How long a publish may wait for JetStream's acknowledgement.
    pub publish_timeout: Duration,
    /// How often a batch that starts beyond its stream's mark is handed
    /// back while no earlier batch of its device stream is in the stream
    /// (a front-end may still be publishing it) before it is terminated;
    /// while one is, it is handed back however often it takes.
    pub max_gap_deliveries: i64,
    /// The stream's replicas (1 on a single server; 3 on a cluster, so an
    /// acknowledged batch survives the loss of a server).
    pub replicas: usize,
    /// The delay before a handed-back batch comes again.
    pub gap_delay: Duration,
    /// Seals messages (AES-256-GCM) when set; writers need the same key.
    pub key: Option<AtRestKey>,
    /// Writers terminate every message that is not sealed (with `key`):
    /// only a holder of the key, a front-end, can then write into the
    /// engine, whatever else may publish on the stream's subjects. Set it
    /// once no front-end publishes without the key (a message published
    /// plain before is terminated, though its agent was acknowledged).
    pub sealed_only: bool,
}

impl std::fmt::Debug for JetStreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamOptions")
            .field("url", &redacted(&self.url))
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("region", &self.region)
            .field("consumer", &self.consumer)
            .field("sealed", &self.key.is_some())
            .field("sealed_only", &self.sealed_only)
            .finish_non_exhaustive()
    }
}

impl JetStreamOptions {
    /// Defaults for the server at `url`: stream `PRIVTEL_INGEST`, subjects
    /// `privtel.ingest.eu.…`, consumer `privtel-writer`, a 2-minute
    /// duplicate window, 3 days' maximum age, 1 GiB, 30 s to acknowledge,
    /// a lag of 20,000 messages, 5 s per publish.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "PRIVTEL_INGEST".into(),
            subject_prefix: "privtel.ingest".into(),
            region: "eu".into(),
            consumer: "privtel-writer".into(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(3 * 86_400),
            max_bytes: 1 << 30,
            ack_wait: Duration::from_secs(30),
            max_lag: 20_000,
            publish_timeout: Duration::from_secs(5),
            max_gap_deliveries: 8,
            replicas: 1,
            gap_delay: Duration::from_millis(200),
            key: None,
            sealed_only: false,
        }
    }

    /// The stream and consumer names (tests give each their own).
    #[must_use]
    pub fn names(
        mut self,
        stream: impl Into<String>,
        subject_prefix: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        self.stream = stream.into();
        self.subject_prefix = subject_prefix.into();
        self.consumer = consumer.into();
        self
    }

    /// This service's region.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Seals messages under `key`.
    #[must_use]
    pub fn key(mut self, key: AtRestKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Whether writers refuse messages that are not sealed
    /// ([`JetStreamOptions::sealed_only`]).
    #[must_use]
    pub fn sealed_only(mut self, yes: bool) -> Self {
        self.sealed_only = yes;
        self
    }

    /// JetStream's duplicate window.
    #[must_use]
    pub fn duplicate_window(mut self, d: Duration) -> Self {
        self.duplicate_window = d;
        self
    }

    /// How long a writer may hold a message unacknowledged.
    #[must_use]
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// The lag above which front-ends refuse batches.
    #[must_use]
    pub fn max_lag(mut self, messages: u64) -> Self {
        self.max_lag = messages;
        self
    }

    fn check(&self) -> Result<(), JetStreamError> {
        let token =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !token(&self.stream) {
            return Err(JetStreamError::Option { option: "stream", expected: "letters, digits, '_' or '-'" });
        }
        if !token(&self.region) {
            return Err(JetStreamError::Option { option: "region", expected: "letters, digits, '_' or '-'" });
        }
        if !token(&self.consumer) {
            return Err(JetStreamError::Option {
                option: "consumer",
                expected: "letters, digits, '_' or '-'",
            });
        }
        if self.subject_prefix.is_empty() || !self.subject_prefix.split('.').all(token) {
            return Err(JetStreamError::Option {
                option: "subject prefix",
                expected: "dot-separated tokens of letters, digits, '_' or '-'",
            });
        }
        if self.duplicate_window.is_zero() || self.ack_wait.is_zero() || self.publish_timeout.is_zero() {
            return Err(JetStreamError::Option { option: "durations", expected: "nonzero durations" });
        }
        Ok(())
    }

    /// The subject of one device stream's batches.
    fn subject(&self, customer: &CustomerId, device: &DeviceId, stream: u64) -> String {
        format!(
            "{}.{}.{}.{}.{stream}",
            self.subject_prefix,
            self.region,
            token(customer.as_str()),
            token(device.as_str())
        )
    }
}

/// `url` without the user and password before an `@` (for errors and
/// logs).
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if scheme.is_empty() { host.to_owned() } else { format!("{scheme}://{host}") }
}

/// An id as a subject token: itself when made of letters, digits, '_' and
/// '-', else `~` and its bytes in hex (no id of the first kind has a `~`).
fn token(id: &str) -> String {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        id.to_owned()
    } else {
        let mut s = String::with_capacity(1 + 2 * id.len());
        s.push('~');
        for b in id.bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Counters of a front-end and of writers (cumulative since start).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Batches a front-end accepted (published and acknowledged).
    pub accepted: AtomicU64,
    /// Records in them (refused ones included).
    pub accepted_records: AtomicU64,
    /// Messages JetStream acknowledged.
    pub published: AtomicU64,
    /// Of them, those JetStream found duplicates (same id in its window).
    pub published_duplicates: AtomicU64,
    /// Batches refused because the writers lag.
    pub refused_lagging: AtomicU64,
    /// Publishes that failed (the agent retries).
    pub publish_failed: AtomicU64,
    /// Messages a writer applied and acknowledged.
    pub applied: AtomicU64,
    /// Records stored by them.
    pub applied_records: AtomicU64,
    /// Records found already stored (retries, redeliveries).
    pub duplicates: AtomicU64,
    /// Records of erased persons, dropped.
    pub suppressed: AtomicU64,
    /// Messages handed back for a gap (applied later, in order).
    pub handed_back: AtomicU64,
    /// Messages terminated: malformed, refused for good, or a gap that
    /// never closed.
    pub terminated: AtomicU64,
    /// Groups whose transaction failed (their messages come again).
    pub failed_groups: AtomicU64,
}

/// A copy of [`Metrics`] with the lag, for the administrator (JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// See [`Metrics::accepted`].
    pub accepted: u64,
    /// See [`Metrics::accepted_records`].
    pub accepted_records: u64,
    /// See [`Metrics::published`].
    pub published: u64,
    /// See [`Metrics::published_duplicates`].
    pub published_duplicates: u64,
    /// See [`Metrics::refused_lagging`].
    pub refused_lagging: u64,
    /// See [`Metrics::publish_failed`].
    pub publish_failed: u64,
    /// See [`Metrics::applied`].
    pub applied: u64,
    /// See [`Metrics::applied_records`].
    pub applied_records: u64,
    /// See [`Metrics::duplicates`].
    pub duplicates: u64,
    /// See [`Metrics::suppressed`].
    pub suppressed: u64,
    /// See [`Metrics::handed_back`].
    pub handed_back: u64,
    /// See [`Metrics::terminated`].
    pub terminated: u64,
    /// See [`Metrics::failed_groups`].
    pub failed_groups: u64,
    /// Messages published and not yet applied (the consumer's pending and
    /// unacknowledged ones) when read; `None` if it could not be read.
    pub lag: Option<u64>,
}

impl Metrics {
    /// The counters now, with `lag`.
    pub fn snapshot(&self, lag: Option<u64>) -> MetricsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            accepted: g(&self.accepted),
            accepted_records: g(&self.accepted_records),
            published: g(&self.published),
            published_duplicates: g(&self.published_duplicates),
            refused_lagging: g(&self.refused_lagging),
            publish_failed: g(&self.publish_failed),
            applied: g(&self.applied),
            applied_records: g(&self.applied_records),
            duplicates: g(&self.duplicates),
            suppressed: g(&self.suppressed),
            handed_back: g(&self.handed_back),
            terminated: g(&self.terminated),
            failed_groups: g(&self.failed_groups),
            lag,
        }
    }
}

/// A connection to JetStream with its own small runtime, so that the
/// service's threads (synchronous) can publish and read: each call blocks
/// its caller until the server answers or the timeout passes.
struct Link {
    js: jetstream::Context,
    client: async_nats::Client,
    options: JetStreamOptions,
    /// Dropped last: the client's tasks need it while they are dropped.
    runtime: tokio::runtime::Runtime,
}

impl Link {
    fn connect(options: JetStreamOptions) -> Result<Self, JetStreamError> {
        options.check()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("privtel-nats")
            .enable_all()
            .build()
            .map_err(|e| JetStreamError::Connect {
                address: redacted(&options.url),
                message: e.to_string(),
            })?;
        let address = options.url.clone();
        let client = runtime
            .block_on(async {
                async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(5))
                    .max_reconnects(None)
                    .connect(address.as_str())
                    .await
            })
            .map_err(|e| JetStreamError::Connect {
                address: redacted(&options.url),
                message: e.to_string(),
            })?;
        // The context spawns a task: made inside the runtime.
        let js = {
            let _inside = runtime.enter();
            let mut js = jetstream::new(client.clone());
            js.set_timeout(options.publish_timeout);
            js
        };
        let link = Self { js, client, options, runtime };
        link.ensure()?;
        Ok(link)
    }

    /// Creates the stream and the consumer when missing.
    fn ensure(&self) -> Result<(), JetStreamError> {
        let o = &self.options;
        let config = stream::Config {
            name: o.stream.clone(),
            subjects: vec![format!("{}.>", o.subject_prefix)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: o.max_bytes,
            max_age: o.max_age,
            duplicate_window: o.duplicate_window,
            num_replicas: o.replicas.max(1),
            ..Default::default()
        };
        let stream = self.create_stream(config)?;
        let consumer = consumer::pull::Config {
            durable_name: Some(o.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: o.ack_wait,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        self.runtime
            .block_on(stream.get_or_create_consumer(&o.consumer, consumer))
            .map_err(|e| JetStreamError::Stream { op: "creating the consumer", message: e.to_string() })?;
        Ok(())
    }

    /// Gets or creates the stream. A server that fails to create the
    /// stream's store answers 10049 ("error creating store for stream")
    /// and writes the cause only to its own log; the failure is often
    /// passing (a store directory being torn down, a moment without file
    /// descriptors), so it is tried [`STORE_ATTEMPTS`] times, waiting a
    /// little longer each time, before it is reported.
    fn create_stream(&self, config: stream::Config) -> Result<stream::Stream, JetStreamError> {
        let mut attempt = 1;
        loop {
            match self.runtime.block_on(self.js.get_or_create_stream(config.clone())) {
                Ok(stream) => return Ok(stream),
                Err(e) if attempt < STORE_ATTEMPTS && store_failed(&e) => {
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                    attempt += 1;
                }
                Err(e) => {
                    let hint = if store_failed(&e) { " (the nats server's log names the cause)" } else { "" };
                    return Err(JetStreamError::Stream {
                        op: "creating the stream",
                        message: format!("{e}{hint}, after {attempt} attempt(s)"),
                    });
                }
            }
        }
    }

    fn consumer(&self) -> Result<consumer::PullConsumer, JetStreamError> {
        let o = &self.options;
        self.runtime
            .block_on(async {
                let stream = self.js.get_stream(&o.stream).await.map_err(|e| e.to_string())?;
                stream.get_consumer(&o.consumer).await.map_err(|e| e.to_string())
            })
            .map_err(|message| JetStreamError::Stream { op: "opening the consumer", message })
    }

    /// Messages published and not yet applied.
    fn lag(&self) -> Result<u64, JetStreamError> {
        let mut consumer = self.consumer()?;
        let info = self
            .runtime
            .block_on(consumer.info())
            .map_err(|e| JetStreamError::Stream { op: "reading the consumer", message: e.to_string() })?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

/// How many times creating the stream is tried when the server fails to
/// create its store (see [`Link::create_stream`]): 1 s of pauses in all.
const STORE_ATTEMPTS: u32 = 5;

/// JetStream's code for any failure to create a stream (10049).
const STREAM_CREATE: jetstream::ErrorCode = jetstream::ErrorCode(10049);

/// The fixed sentence a NATS server answers, under [`STREAM_CREATE`], for
/// a failure to make the stream's store (the cause goes to its log).
const STORE_FAILED: &str = "error creating store for stream";

/// Whether `e` is the server's failure to create the stream's store: the
/// code alone also covers failures that stay (a template that does not
/// own the stream, …), which are not tried again.
fn store_failed(e: &jetstream::context::CreateStreamError) -> bool {
    matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(err)
        if err.error_code() == STREAM_CREATE && err.to_string().starts_with(STORE_FAILED))
}

/// The front-end's side: publishes accepted batches (see the module
/// docs). Cheap to share between connection threads (`Arc`).
pub struct Publisher {
    link: Link,
    /// The lag as last read, when, and the messages this front-end had
    /// published then (read at most every 200 ms).
    lag: Mutex<Option<(Instant, u64, u64)>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("stream", &self.link.options.stream).finish_non_exhaustive()
    }
}

/// What a publish did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// Messages the batch became (a batch above the server's largest
    /// message is cut in parts).
    pub messages: u64,
    /// Of them, those JetStream already held (a retry within its window).
    pub duplicates: u64,
}

impl Publisher {
    /// Connects, and creates the stream and the consumer when missing.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Option`], [`JetStreamError::Connect`] or
    /// [`JetStreamError::Stream`].
    pub fn connect(options: JetStreamOptions) -> Result<Self, JetStreamError> {
        Ok(Self {
            link: Link::connect(options)?,
            lag: Mutex::new(None),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// Its counters (shared with a writer given the same `Arc`).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The counters and the lag now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.metrics.snapshot(self.link.lag().ok())
    }

    /// The options it runs with.
    pub fn options(&self) -> &JetStreamOptions {
        &self.link.options
    }

    /// Deletes the stream and its consumer, with every message still in
    /// it (for tests and for an installation being taken down).
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Stream`].
    pub fn delete_stream(&self) -> Result<(), JetStreamError> {
        self.link
            .runtime
            .block_on(self.link.js.delete_stream(&self.link.options.stream))
            .map(|_| ())
            .map_err(|e| JetStreamError::Stream { op: "deleting the stream", message: e.to_string() })
    }

    /// Removes every message of `customer` from the stream, applied or not
    /// (contract end): each message on the customer's subjects in this
    /// region is deleted by its sequence number, which the server erases
    /// (overwrites) in its files. Returns the number of messages removed.
    ///
    /// One by one rather than a purge filtered by subject: servers before
    /// 2.9.13 move every consumer's position past a filtered purge, so the
    /// other customers' waiting messages would never be delivered.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Stream`]; the messages removed before it stay
    /// removed (run it again).
    pub fn purge_customer(&self, customer: &CustomerId) -> Result<u64, JetStreamError> {
        let o = &self.link.options;
        let filter = format!("{}.{}.{}.>", o.subject_prefix, o.region, token(customer.as_str()));
        self.link
            .runtime
            .block_on(async {
                let stream = self.link.js.get_stream(&o.stream).await.map_err(|e| e.to_string())?;
                // From the sequence after the last one removed: each lookup
                // starts where the previous ended, and a message the server
                // would not delete is an error, never a loop.
                let (mut removed, mut next) = (0u64, 1u64);
                loop {
                    match stream.get_first_raw_message_by_subject(&filter, next).await {
                        Ok(m) => {
                            if !stream.delete_message(m.sequence).await.map_err(|e| e.to_string())? {
                                return Err(format!("message {} was not deleted", m.sequence));
                            }
                            removed += 1;
                            next = m.sequence.saturating_add(1);
                        }
                        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                            return Ok(removed);
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })
            .map_err(|message| JetStreamError::Stream { op: "removing a customer's messages", message })
    }

    /// Messages published and not yet applied.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Stream`].
    pub fn lag(&self) -> Result<u64, JetStreamError> {
        self.link.lag()
    }

    /// `Err(Lagging)` while the writers lag above the maximum: the lag is
    /// read from the server at most every 200 ms, and this front-end's own
    /// publishes since are added to it; an unreadable lag does not refuse.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Lagging`].
    pub fn check_lag(&self) -> Result<(), JetStreamError> {
        let now = Instant::now();
        let published = self.metrics.published.load(Ordering::Relaxed);
        let cached = *self.lag.lock().unwrap_or_else(PoisonError::into_inner);
        let lag = match cached {
            // Between reads, this front-end's own publishes count at once.
            Some((at, lag, then)) if now.duration_since(at) < Duration::from_millis(200) => {
                lag.saturating_add(published.saturating_sub(then))
            }
            // Read without the lock held: a slow server delays this
            // connection, not every other one.
            _ => {
                let lag = self.link.lag().unwrap_or(0);
                *self.lag.lock().unwrap_or_else(PoisonError::into_inner) = Some((now, lag, published));
                lag
            }
        };
        let max = self.link.options.max_lag;
        if lag > max {
            self.metrics.refused_lagging.fetch_add(1, Ordering::Relaxed);
            return Err(JetStreamError::Lagging { lag, max });
        }
        Ok(())
    }

    /// The last sequence number of the stream's batches still waiting in
    /// JetStream (0 when none waits).
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Stream`] when the stream cannot be read.
    pub fn pending_high_water(
        &self,
        customer: &CustomerId,
        device: &DeviceId,
        stream: u64,
    ) -> Result<u64, JetStreamError> {
        let o = &self.link.options;
        let subject = o.subject(customer, device, stream);
        let found = self.link.runtime.block_on(async {
            let stream = self.link.js.get_stream(&o.stream).await.map_err(|e| e.to_string())?;
            match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => Ok(Some(m.headers)),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        });
        match found {
            Ok(None) => Ok(0),
            Ok(Some(headers)) => {
                Ok(headers.get(LAST_SEQ_HEADER).and_then(|v| v.as_str().parse::<u64>().ok()).unwrap_or(0))
            }
            Err(message) => Err(JetStreamError::Stream { op: "reading the last batch of a device", message }),
        }
    }

    /// Publishes `payload` as it is to the subject of (customer, device,
    /// stream), for tests of what writers do with bytes no front-end
    /// wrote.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Publish`]; ids that are not valid.
    #[doc(hidden)]
    pub fn publish_raw(
        &self,
        customer: &str,
        device: &str,
        stream: u64,
        payload: Vec<u8>,
    ) -> Result<(), JetStreamError> {
        let customer = CustomerId::new(customer).map_err(|e| JetStreamError::Encode(e.to_string()))?;
        let device = DeviceId::new(device).map_err(|e| JetStreamError::Encode(e.to_string()))?;
        let subject = self.link.options.subject(&customer, &device, stream);
        self.link
            .runtime
            .block_on(async { self.link.js.publish(subject, payload.into()).await?.await })
            .map(|_| ())
            .map_err(|e| JetStreamError::Publish(e.to_string()))
    }

    /// Publishes `batch` (cut in parts that fit the server's largest
    /// message), waits for JetStream's acknowledgement of every part, and
    /// only then returns: the batch is durable in the stream.
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Encode`] for a batch that cannot be a message;
    /// [`JetStreamError::Publish`] when a part was not acknowledged (the
    /// agent retries; parts that made it are found duplicates then).
    pub fn publish(
        &self,
        batch: AdmittedBatch,
        received: Timestamp,
        industry: &str,
    ) -> Result<Published, JetStreamError> {
        let n = batch.records.len() as u64;
        let max = self.link.client.server_info().max_payload.max(4096) - 1024;
        let mut parts = Vec::new();
        cut(IngestMessage::new(batch, received, industry), max, self.link.options.key.as_ref(), &mut parts)?;
        let o = &self.link.options;
        // One part at a time, each acknowledged before the next is sent:
        // the stream never holds a later part of a batch without the parts
        // before it (a welcome reads the last part's number as held).
        let result = self.link.runtime.block_on(async {
            let mut published = Published::default();
            for (message, bytes) in parts {
                let b = &message.batch;
                let last = b.seq.first_seq.saturating_add(b.records.len() as u64).saturating_sub(1);
                let publish = jetstream::message::PublishMessage::build()
                    .payload(bytes.into())
                    .message_id(message.id())
                    .header(LAST_SEQ_HEADER, last.to_string().as_str());
                let subject = o.subject(&b.customer, &b.device, b.seq.stream);
                let ack = self.link.js.send_publish(subject, publish).await.map_err(|e| e.to_string())?;
                let ack = ack.await.map_err(|e| e.to_string())?;
                published.messages += 1;
                published.duplicates += u64::from(ack.duplicate);
            }
            Ok::<_, String>(published)
        });
        match result {
            Ok(published) => {
                self.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                self.metrics.accepted_records.fetch_add(n, Ordering::Relaxed);
                self.metrics.published.fetch_add(published.messages, Ordering::Relaxed);
                self.metrics.published_duplicates.fetch_add(published.duplicates, Ordering::Relaxed);
                Ok(published)
            }
            Err(e) => {
                self.metrics.publish_failed.fetch_add(1, Ordering::Relaxed);
                Err(JetStreamError::Publish(e))
            }
        }
    }
}

/// Encodes `message`, cutting it in halves (by records) until each part
/// fits in `max` bytes; parts keep their own first sequence number, and
/// only the first carries the declared skip.
fn cut(
    message: IngestMessage,
    max: usize,
    key: Option<&AtRestKey>,
    out: &mut Vec<(IngestMessage, Vec<u8>)>,
) -> Result<(), JetStreamError> {
    let bytes = message.encode(key)?;
    if bytes.len() <= max {
        out.push((message, bytes));
        return Ok(());
    }
    let n = message.batch.records.len();
    if n <= 1 {
        return Err(JetStreamError::Encode(format!(
            "one record of {} bytes, above the server's largest message ({max})",
            bytes.len()
        )));
    }
    let IngestMessage { batch, received, industry, .. } = message;
    let AdmittedBatch { customer, device, seq, mut records } = batch;
    let rest = records.split_off(n / 2);
    let first = IngestMessage::new(
        AdmittedBatch { customer: customer.clone(), device: device.clone(), seq, records },
        received,
        industry.clone(),
    );
    let second_seq = Sequence { stream: seq.stream, first_seq: seq.first_seq + (n / 2) as u64, skipped: 0 };
    let second = IngestMessage::new(
        AdmittedBatch { customer, device, seq: second_seq, records: rest },
        received,
        industry,
    );
    cut(first, max, key, out)?;
    cut(second, max, key, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_is_not_there_is_an_error_at_once_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let started = Instant::now();
        let e = Publisher::connect(JetStreamOptions::new(format!("nats://alice:hunter2@127.0.0.1:{port}")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("cannot connect to nats at nats://127.0.0.1:{port}: ")), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("alice"), "{e}");
        let options =
            JetStreamOptions::new("nats://alice:hunter2@nats.example:4222").key(AtRestKey::new(1, [7; 32]));
        let shown = format!("{options:?}");
        assert!(shown.contains("nats://nats.example:4222") && shown.contains("sealed: true"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("alice"), "{shown}");
        assert!(started.elapsed() < Duration::from_secs(10), "it waited {:?}", started.elapsed());
    }

    #[test]
    fn ids_that_are_not_subject_tokens_are_written_in_hex() {
        assert_eq!(token("dev-1_A"), "dev-1_A");
        assert_eq!(token("a.b"), "~612e62");
        assert_eq!(token("*"), "~2a");
        assert_eq!(token(""), "~");
    }

    #[test]
    fn bad_names_are_refused_naming_the_option() {
        let e = JetStreamOptions::new("nats://127.0.0.1:1").names("a.b", "p", "c").check().unwrap_err();
        assert_eq!(e.to_string(), "invalid jetstream option stream: expected letters, digits, '_' or '-'");
        let e = JetStreamOptions::new("x").names("s", "p..q", "c").check().unwrap_err();
        assert!(e.to_string().contains("subject prefix"), "{e}");
    }
}

//! The service side of privtel, composed from the crates below it: accept
//! agents, negotiate, ingest batches idempotently into an engine store,
//! answer enrichment queries, and keep serving while single connections
//! misbehave.
//!
//! # Overview
//!
//! * [`Service`] holds an engine store, a verdict index and a clock.
//!   [`Service::handle`] serves one agent over any `Read + Write` stream
//!   (an in-memory pipe in tests, TLS in production): it answers a batch
//!   with an [`Ack`] naming what was stored, and a batch it cannot store
//!   now (store full, store locked) with a retryable rejection and a
//!   `retry_after` the agent honours.
//! * With the `tls` feature, [`Service::serve_tls`] accepts TCP connections,
//!   one thread each, and starts TLS on them.
//!
//! The service never trusts a type from the network: a record arrives as
//! whatever the connection sent. Checking it against the customer's
//! settings is the tenancy layer's job (see `docs/ARCHITECTURE.md`).
//!
//! # Example
//!
//! ```
//! use privtel_service::Service;
//! use privtel_store::SqliteEngine;
//! use privtel_wire::{Connection, Hello, Message, VerdictIndex};
//! use privtel_model::{CustomerId, DeviceId, Program, Timestamp};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = SqliteEngine::open(&dir.path().join("engine.db"), Default::default(), None)?;
//! let service = Service::new(engine, VerdictIndex::new(4, [0; 32]), || Timestamp::UNIX_EPOCH);
//!
//! // An agent's side of the conversation, prepared in memory.
//! let mut client = Connection::new(Vec::new());
//! let consent = Program::ALL.iter().map(|p| (*p, true)).collect();
//! let hello = Hello::new("doc", CustomerId::new("acme")?, DeviceId::new("dev-1")?, consent, 1);
//! client.send(&Message::Hello(hello))?;
//! client.send(&Message::Goodbye(privtel_wire::Goodbye { reason: "done".into() }))?;
//! let input = client.into_inner();
//!
//! // The service reads it and answers into `output`.
//! let mut output = Vec::new();
//! service.handle(Connection::new(privtel_service::Duplex::new(input.as_slice(), &mut output)))?;
//! assert!(matches!(Connection::new(output.as_slice()).recv()?, Message::Welcome(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! * `tls` — [`Service::serve_tls`]: the TCP accept loop with TLS.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use privtel_model::Timestamp;
use privtel_store::{EngineStore, SqliteEngine};
use privtel_wire::{Ack, Connection, ErrorCode, Message, Rejection, VerdictIndex, Welcome};

/// How long a connection may stay silent before the service drops it.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long an agent is asked to wait after a batch the store could not
/// take (full, locked): long enough for a sweep or a checkpoint to finish,
/// short enough that a device catches up within minutes.
pub const RETRY_AFTER_MS: u64 = 1_000;

/// Counts of what the service did, readable while it runs.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ServiceStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections that ended with an error (bad TLS, bad frames, …).
    pub failed: AtomicU64,
    /// Records stored.
    pub stored: AtomicU64,
    /// Records ignored as retries or replays.
    pub duplicates: AtomicU64,
    /// Batches refused for now (the store could not take them).
    pub refused: AtomicU64,
}

/// A stream made of a reader and a writer (an in-memory pipe for tests and
/// examples; a socket is both already).
#[derive(Debug)]
pub struct Duplex<R, W> {
    reader: R,
    writer: W,
}

impl<R, W> Duplex<R, W> {
    /// A stream reading from `reader` and writing to `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        Self { reader, writer }
    }
}

impl<R: Read, W> Read for Duplex<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl<R, W: Write> Write for Duplex<R, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// A hook that decides whether the store takes a batch now (tests use it
/// to play a full or locked store); `Some(reason)` refuses it.
type Gate = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// The service: an engine store, verdicts and a clock.
pub struct Service {
    max_batch_records: u32,
    engine: Mutex<SqliteEngine>,
    index: VerdictIndex,
    /// What it did.
    pub stats: ServiceStats,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    gate: Option<Gate>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Service {
    /// A service storing into `engine`, answering from `index`, with
    /// `clock` as its time (injected, so retention can be simulated).
    pub fn new(
        engine: SqliteEngine,
        index: VerdictIndex,
        clock: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Self {
        Self {
            max_batch_records: 10_000,
            engine: Mutex::new(engine),
            index,
            stats: ServiceStats::default(),
            clock: Box::new(clock),
            gate: None,
        }
    }

    /// The most records per batch the service asks agents for (default
    /// 10,000; at least 1).
    #[must_use]
    pub fn with_max_batch_records(mut self, n: u32) -> Self {
        self.max_batch_records = n.max(1);
        self
    }

    /// Refuses batches while `gate` returns a reason (as a full or locked
    /// store would): the batch is answered with a retryable rejection and
    /// `retry_after`. For operators draining a store, and for tests.
    #[must_use]
    pub fn with_gate(mut self, gate: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        self.gate = Some(Box::new(gate));
        self
    }

    /// The engine store (locked).
    pub fn engine(&self) -> std::sync::MutexGuard<'_, SqliteEngine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one agent connection until it says goodbye, closes, or fails.
    ///
    /// # Errors
    ///
    /// The connection's error (frames, protocol, I/O). A storage error is
    /// not one: it is answered to the agent as a retryable rejection.
    pub fn handle<S: Read + Write>(&self, mut conn: Connection<S>) -> Result<(), privtel_wire::Error> {
        let hello = conn.server_handshake(|hello, version| {
            let mut w = Welcome::new(version, self.engine().high_water(&hello.device).unwrap_or(0));
            w.max_batch_records = self.max_batch_records;
            w
        })?;
        loop {
            let msg = match conn.recv() {
                Ok(m) => m,
                Err(privtel_wire::Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            match msg {
                Message::Batch(batch) => {
                    let n = batch.records.len() as u64;
                    let last = batch.first_seq.saturating_add(n.saturating_sub(1));
                    let result = match self.gate.as_ref().and_then(|g| g()) {
                        Some(reason) => Err(reason),
                        None => self
                            .engine()
                            .ingest(&hello.device, batch.first_seq, batch.records, (self.clock)())
                            .map_err(|e| e.to_string()),
                    };
                    let ack = match result {
                        Ok(outcome) => {
                            self.stats.stored.fetch_add(outcome.stored, Ordering::Relaxed);
                            self.stats.duplicates.fetch_add(outcome.duplicates, Ordering::Relaxed);
                            Ack {
                                batch_id: batch.batch_id,
                                accepted_up_to: last,
                                rejections: vec![],
                                retry_after_ms: None,
                            }
                        }
                        // Nothing stored: the agent keeps the batch and
                        // retries after the pause.
                        Err(reason) => {
                            self.stats.refused.fetch_add(1, Ordering::Relaxed);
                            Ack {
                                batch_id: batch.batch_id,
                                accepted_up_to: batch.first_seq.saturating_sub(1),
                                rejections: vec![Rejection { seq: batch.first_seq, reason, retryable: true }],
                                retry_after_ms: Some(RETRY_AFTER_MS),
                            }
                        }
                    };
                    conn.send(&Message::Ack(ack))?;
                }
                Message::EnrichQuery(q) => conn.send(&Message::EnrichAnswer(self.index.answer(&q)))?,
                Message::Goodbye(_) => return Ok(()),
                other => {
                    conn.send(&privtel_wire::error(ErrorCode::Protocol, "unexpected message", false))?;
                    return Err(privtel_wire::Error::Unexpected {
                        expected: "batch, enrich query or goodbye",
                        got: other.kind_name(),
                    });
                }
            }
        }
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use privtel_wire::Connection;
    use privtel_wire::tls::rustls::ServerConfig;

    use super::{IDLE_TIMEOUT, Service};

    impl Service {
        /// Serves one TCP connection: TLS, then [`Service::handle`]. A peer
        /// silent for [`IDLE_TIMEOUT`] is dropped.
        ///
        /// # Errors
        ///
        /// The connection's error (TLS, frames, protocol).
        pub fn handle_tls(
            &self,
            tcp: TcpStream,
            config: Arc<ServerConfig>,
        ) -> Result<(), privtel_wire::Error> {
            tcp.set_read_timeout(Some(IDLE_TIMEOUT))?;
            tcp.set_write_timeout(Some(IDLE_TIMEOUT))?;
            self.handle(Connection::new(privtel_wire::tls::accept(tcp, config)?))
        }

        /// Accepts connections until `stop` is set, one thread each; a
        /// failing connection is counted and does not stop the others.
        pub fn serve_tls(
            self: &Arc<Self>,
            listener: &TcpListener,
            config: &Arc<ServerConfig>,
            stop: &AtomicBool,
        ) {
            for tcp in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                let me = Arc::clone(self);
                let config = Arc::clone(config);
                std::thread::spawn(move || {
                    if me.handle_tls(tcp, config).is_err() {
                        me.stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
    }
}

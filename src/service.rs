//! The service side, composed from the crates: accept agents over TLS,
//! negotiate, ingest batches idempotently, answer enrichment queries, and
//! keep serving while single connections misbehave.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use privtel_model::Timestamp;
use privtel_store::{EngineStore, SqliteEngine};
use privtel_wire::tls::rustls::ServerConfig;
use privtel_wire::{Ack, Connection, ErrorCode, Message, Rejection, VerdictIndex, Welcome};

/// How long a connection may stay silent before the service drops it.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Counts of what the service did, readable while it runs.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections that ended with an error (bad TLS, bad frames, …).
    pub failed: AtomicU64,
    /// Records stored.
    pub stored: AtomicU64,
    /// Records ignored as retries.
    pub duplicates: AtomicU64,
}

/// The service: an engine store, verdicts, and a TLS configuration.
pub struct Service {
    max_batch_records: u32,
    engine: Mutex<SqliteEngine>,
    index: VerdictIndex,
    tls: Arc<ServerConfig>,
    /// What it did.
    pub stats: ServiceStats,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Service {
    /// A service storing into `engine`, answering from `index`, with `clock`
    /// as its time (injected, so retention can be simulated).
    pub fn new(
        engine: SqliteEngine,
        index: VerdictIndex,
        tls: Arc<ServerConfig>,
        clock: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            max_batch_records: 10_000,
            engine: Mutex::new(engine),
            index,
            tls,
            stats: ServiceStats::default(),
            clock: Box::new(clock),
        })
    }

    /// Sets the most records per batch the service asks agents for (before
    /// it is shared).
    pub fn set_max_batch_records(this: &mut Arc<Self>, n: u32) {
        if let Some(me) = Arc::get_mut(this) {
            me.max_batch_records = n.max(1);
        }
    }

    /// The engine store (locked).
    pub fn engine(&self) -> std::sync::MutexGuard<'_, SqliteEngine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one agent connection until it says goodbye or fails.
    ///
    /// # Errors
    ///
    /// The connection's error (TLS, frames, protocol, storage).
    pub fn handle(&self, tcp: TcpStream) -> Result<(), privtel_wire::Error> {
        // A peer that stops talking gives its thread back after this long.
        tcp.set_read_timeout(Some(IDLE_TIMEOUT))?;
        tcp.set_write_timeout(Some(IDLE_TIMEOUT))?;
        let mut conn = Connection::new(privtel_wire::tls::accept(tcp, self.tls.clone())?);
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
                    let last = batch.first_seq + (batch.records.len() as u64).saturating_sub(1);
                    let result =
                        self.engine().ingest(&hello.device, batch.first_seq, batch.records, (self.clock)());
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
                        // Nothing stored: the agent keeps the batch and retries.
                        Err(e) => Ack {
                            batch_id: batch.batch_id,
                            accepted_up_to: batch.first_seq.saturating_sub(1),
                            rejections: vec![Rejection {
                                seq: batch.first_seq,
                                reason: e.to_string(),
                                retryable: true,
                            }],
                            retry_after_ms: Some(1_000),
                        },
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

    /// Accepts connections until `stop` is set, one thread each; a failing
    /// connection is counted and does not stop the others.
    pub fn serve(self: &Arc<Self>, listener: &TcpListener, stop: &AtomicBool) {
        for tcp in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(tcp) = tcp else { continue };
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            let me = Arc::clone(self);
            std::thread::spawn(move || {
                if me.handle(tcp).is_err() {
                    me.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

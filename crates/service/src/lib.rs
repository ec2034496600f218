//! The service side of privtel, composed from the crates below it: accept
//! devices that authenticate with a client certificate, take the tenant
//! and the device from that certificate only, check every record against
//! the customer's settings, ingest idempotently into an engine store,
//! answer enrichment queries, and keep serving while single connections
//! misbehave.
//!
//! # Overview
//!
//! * [`Service`] holds an engine store, a verdict index, the customers'
//!   [`Settings`] and a clock. [`Service::handle`] serves one connection
//!   whose [`Peer`] the transport established: a device says hello as
//!   itself (else it is refused), for a customer with settings (else
//!   refused: fail closed); each batch is checked record by record
//!   (program on, kind carried, every personal field in the customer's
//!   form, not dated in the future) and answered with an [`Ack`] naming
//!   what was refused and why ([`RejectCode`]); a batch the store cannot
//!   take now is deferred with `retry_after`.
//! * Sequence numbers are per (customer, device, spool stream): a batch
//!   leaving an undeclared gap above the high-water mark, or out of range,
//!   is refused and moves nothing.
//! * [`Service::erase_person`], [`Service::export_person`] and
//!   [`Service::sweep`] (each customer with its own TTLs) go through the
//!   service's own store handle; an erasure by another process is seen by
//!   the next ingest too. With [`Service::with_access`],
//!   [`Service::erase_person_as`] and [`Service::export_person_as`] do the
//!   same for an operator under an access grant, each logged, allowed or
//!   refused, in the access log (`privtel-access`); the functions without
//!   `_as` are the unaudited path for embedded use.
//! * Version checks (in the anonymous session an `EnhanceHello` opens)
//!   are answered from the [`VersionOffers`] of the settings while the
//!   customer's `version_check` program is on, and only counted.
//! * With the `tls` feature, [`Service::serve_tls`] accepts TCP
//!   connections up to [`Limits::max_connections`], completes TLS within
//!   a deadline, identifies the device by its certificate with a
//!   [`privtel_authority::Authority`] (which also enrolls devices without
//!   one), and keeps idle and whole-frame deadlines on every connection.
//!
//! # Example
//!
//! ```
//! use privtel_service::{Peer, Service, Settings};
//! use privtel_store::{EngineOptions, SqliteEngine};
//! use privtel_wire::{Connection, Hello, Message, VerdictIndex};
//! use privtel_model::{CustomerId, DeviceId, Program, Timestamp};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = SqliteEngine::open(&dir.path().join("engine.db"), EngineOptions::default())?;
//! let settings = Settings::from_toml("[customers.acme]\nevents_days = 14\n")?;
//! let service = Service::new(engine, VerdictIndex::new(4, [0; 32]), || Timestamp::UNIX_EPOCH)
//!     .with_settings(settings);
//!
//! // A device's side of the conversation, prepared in memory.
//! let mut client = Connection::new(Vec::new());
//! let consent = Program::ALL.iter().map(|p| (*p, true)).collect();
//! let hello = Hello::new("doc", CustomerId::new("acme")?, DeviceId::new("dev-1")?, consent, 1);
//! client.send(&Message::Hello(hello))?;
//! client.send(&Message::Goodbye(privtel_wire::Goodbye { reason: "done".into() }))?;
//! let input = client.into_inner();
//!
//! // The service reads it and answers into `output`. The transport (TLS
//! // with a client certificate in production) says who the peer is.
//! let peer = Peer::device(CustomerId::new("acme")?, DeviceId::new("dev-1")?);
//! let mut output = Vec::new();
//! service.handle(Connection::new(privtel_service::Duplex::new(input.as_slice(), &mut output)), peer)?;
//! assert!(matches!(Connection::new(output.as_slice()).recv()?, Message::Welcome(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! * `tls` — [`Service::serve_tls`], [`Service::handle_tls`] and
//!   [`Service::with_authority`]: rustls with mutual TLS and enrollment
//!   ([`privtel_authority`]).

// The crate docs link items of the `tls` feature; documented without it,
// those links have nothing to point at, which is not an error of the docs.
// With the feature on (as `cargo doc --workspace` builds it) every link is
// checked, so a link broken in both builds is still caught there.
#![cfg_attr(not(feature = "tls"), allow(rustdoc::broken_intra_doc_links))]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use privtel_model::{BinaryVerdict, CustomerId, DeviceId, DomainVerdict, Timestamp, UserId};
use privtel_store::{
    AdmittedBatch, DeletionReceipt, Encoder, EngineReader, EngineStore, ErasureRequest, IngestOutcome,
    Sequence, SqliteEngine, SweepReport,
};
use privtel_wire::{
    Ack, Batch, Connection, EnrichAnswer, EnrichQuery, ErrorCode, Hello, Message, Opening, RejectCode,
    Rejection, Sightings, VerdictIndex, Welcome,
};

mod admin;
mod admission;
mod benchmark;
#[cfg(unix)]
pub mod console;
#[cfg(feature = "jetstream")]
pub mod jetstream;
mod limits;
mod occupancy;
mod settings;
mod versions;
pub mod workers;
mod writer;

pub use admin::{AdminError, CustomerDeletionReceipt, RECEIPT_KIND, RemovedEnrollment, SignedReceipt};
pub use admission::RefusalCounts;
pub use benchmark::{
    BenchmarkError, BenchmarkOptions, Comparison, FIGURES, IndustryCell, Quarter, QuarterlyReport,
    benchmarks, quarterly_report,
};
pub use limits::Limits;
pub use settings::{
    CustomerSettings, DEFAULT_KEY_PICKUP_DAYS, DEFAULT_MAX_FUTURE_SKEW, DEFAULT_RECORDS_PER_SECOND,
    KeySchedule, Settings, SettingsError,
};
pub use versions::{ChannelOffer, Installer, OfferError, VersionOffers};
pub use workers::Workers;

use limits::Bucket;

/// How long a connection may stay silent before the service drops it.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a welcome waits for batches of its stream that are committed
/// and not yet synced to disk (a sync takes milliseconds; only a failing
/// disk makes it wait this long, and the mark given is then 0).
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long [`Service::serve_tls`]'s accept loop pauses after an accept
/// that failed for want of a resource (file descriptors, memory): the
/// failure lasts until connections end, and retrying at once would spin
/// on a core meanwhile.
pub const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The largest message a connection without a certificate may send (64
/// KiB): its one enrollment request holds a token, two ids and a CSR of
/// well under a kilobyte.
pub const MAX_ENROLL_PAYLOAD: u32 = 64 << 10;

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
    /// Connections closed at once because the connection cap was reached.
    pub over_capacity: AtomicU64,
    /// Connections closed before any TLS byte because as many handshakes
    /// as allowed were in progress, from every address together
    /// ([`Limits::max_handshakes`]) or from the connection's address
    /// ([`Limits::max_handshakes_per_address`]). Also counted in `failed`.
    pub over_handshakes: AtomicU64,
    /// Connections refused (`Unavailable`, retryable) because their device
    /// held [`Limits::max_per_device`] connections already, or their
    /// customer its own cap
    /// ([`CustomerSettings::max_connections`](crate::CustomerSettings::max_connections)).
    pub over_tenant_cap: AtomicU64,
    /// Connections without a certificate refused (`Unavailable`,
    /// retryable) because [`Limits::max_enrolling`] of them were served
    /// already. Also counted in `failed`.
    pub over_enrolling: AtomicU64,
    /// Accepts that failed (out of file descriptors or memory, mostly):
    /// after each, but one given up by its client (aborted, reset) or
    /// interrupted, the accept loop pauses [`ACCEPT_PAUSE`] rather than
    /// spin on a core while the failure lasts, and the connections waiting
    /// meanwhile stay in the listener's backlog.
    pub accept_failures: AtomicU64,
    /// Connection threads made. A connection served by a thread kept from
    /// an earlier one ([`Limits::idle_threads`]) adds nothing: a count
    /// close to `connections` means threads are made and ended all the
    /// time (too few kept for the load).
    pub threads: AtomicU64,
    /// Connections refused for their identity: no or a revoked
    /// certificate, a hello naming another customer or device, a customer
    /// without settings.
    pub forbidden: AtomicU64,
    /// Devices enrolled or renewed.
    pub enrolled: AtomicU64,
    /// Records stored.
    pub stored: AtomicU64,
    /// Records ignored as retries or replays.
    pub duplicates: AtomicU64,
    /// Records of erased people, dropped.
    pub suppressed: AtomicU64,
    /// Batches refused for now (the store could not take them, or a rate
    /// limit).
    pub refused: AtomicU64,
    /// Batches refused for their sequence numbers (a gap above the
    /// high-water mark, or out of range).
    pub sequence: AtomicU64,
    /// Sequence numbers devices declared skipped (records removed on the
    /// device unsent: a program purged, expired, evicted).
    pub skipped: AtomicU64,
    /// Batches made under a policy other than the customer's current one.
    pub outdated_policy: AtomicU64,
    /// Writes to the engine (group commits): stored batches divided by
    /// this is the mean group size.
    pub groups: AtomicU64,
    /// Records refused for good, by reason.
    pub records_refused: RefusalCounts,
    /// Records published to JetStream (feature `jetstream`), acknowledged
    /// to their agents before a writer stores them.
    pub published: AtomicU64,
    /// Connections, enrollments and administrative actions refused because
    /// the customer is pinned to another region than this service's (also
    /// counted in `forbidden` for devices).
    pub wrong_region: AtomicU64,
    /// Version checks answered while the customer's version-check program
    /// was on (up to date, an update, or nothing offered).
    pub version_checks: AtomicU64,
    /// Of those, answers that offered an installer.
    pub version_offers: AtomicU64,
    /// Version checks answered "program off".
    pub version_refused: AtomicU64,
    /// Enrichment queries and sightings refused because the customer has
    /// the enrichment program switched off: not answered, nothing written
    /// back onto its objects.
    pub enrich_refused: AtomicU64,
    /// Verdicts answered but not written back onto the customer's objects
    /// because the customer's rate (`records_per_second`, which each
    /// verdict written costs as a record) was spent.
    pub verdicts_not_written: AtomicU64,
    /// Copies of the engine's log into its database file (or syncs of the
    /// file) made off the writer's thread that failed. Each is retried at
    /// the next turn and the engine's own checkpoint stays the backstop,
    /// so nothing is lost; a count that keeps rising means the disk or the
    /// database file is failing, and the writer is pausing for the
    /// engine's checkpoints again.
    pub checkpoint_failures: Arc<AtomicU64>,
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

    /// The reader and the writer back.
    pub fn into_parts(self) -> (R, W) {
        (self.reader, self.writer)
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

/// Who is at the other end of a connection, as the transport established
/// it. The service takes the tenant and the device from here only, never
/// from what the connection says.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Peer {
    /// A device whose identity the transport verified: its client
    /// certificate (or an in-process transport the caller trusts).
    Device {
        /// Its customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// A device whose client certificate the enrollment authority
    /// verified (renewal is open to it).
    #[cfg(feature = "tls")]
    Certified(privtel_authority::DeviceIdentity),
    /// No identity: may only enroll.
    Anonymous,
}

impl Peer {
    /// A verified device.
    pub fn device(customer: CustomerId, device: DeviceId) -> Self {
        Self::Device { customer, device }
    }
}

/// A hook that decides whether the store takes a batch now (tests use it
/// to play a full or locked store); `Some(reason)` refuses it.
type Gate = Box<dyn Fn() -> Option<String> + Send + Sync>;
/// Where the service reports what an operator must see (refused
/// identities, clone suspicions, outdated policies). Lines name customers
/// and devices, never a personal value.
type Log = Box<dyn Fn(&str) + Send + Sync>;

/// The service: an engine store, verdicts, the customers' settings and a
/// clock.
pub struct Service {
    max_batch_records: u32,
    engine: Arc<Mutex<SqliteEngine>>,
    /// Writes batches by group commit.
    writer: writer::Writer,
    /// A read-only connection for welcomes' high-water marks, so a hello
    /// never waits behind a write (`None`: the engine has no file to
    /// share; the engine answers then).
    reader: Option<Mutex<EngineReader>>,
    /// Encodes batches for the engine before its lock is taken.
    encoder: Encoder,
    index: VerdictIndex,
    /// What it did ([`Service::stats`]: read-only outside, so the counters
    /// the writer's threads share cannot be replaced under them).
    stats: ServiceStats,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    gate: Option<Gate>,
    log: Option<Log>,
    settings: RwLock<Arc<Settings>>,
    rates: Mutex<HashMap<CustomerId, Bucket>>,
    limits: Limits,
    active: AtomicUsize,
    /// Connections held by each device and customer.
    occupancy: occupancy::Occupancy,
    /// TLS handshakes in progress, in all and by address.
    #[cfg(feature = "tls")]
    handshakes: Arc<occupancy::Handshakes>,
    /// Connections without a certificate (enrolling) served now.
    #[cfg(feature = "tls")]
    enrolling: AtomicUsize,
    #[cfg(feature = "tls")]
    authority: Option<Arc<privtel_authority::Authority>>,
    /// Where accepted batches go instead of the engine (feature
    /// `jetstream`).
    #[cfg(feature = "jetstream")]
    jetstream: Option<Arc<jetstream::Publisher>>,
    /// Where welcomes read high-water marks instead of the engine (an
    /// engine elsewhere, written by JetStream writers).
    high_water_from: Option<HighWater>,
    /// Where the records live when writers apply them into another engine
    /// ([`Service::with_records_engine`]).
    records: Option<Records>,
    /// Grants and the access log for administrative actions
    /// ([`Service::with_access`]).
    access: Option<Arc<privtel_access::AccessControl>>,
    /// The one region served ([`Service::with_region`]); `None`: every one.
    region: Option<String>,
    /// End users' requests ([`Service::with_requests`]).
    requests: Option<Arc<privtel_access::RequestRegister>>,
    /// Requests being executed now (one execution each at a time).
    executing: Mutex<std::collections::HashSet<u64>>,
}

/// An engine store the service shares with others: the one JetStream
/// writers apply records into when it is not the service's own
/// ([`Service::with_records_engine`]).
pub type SharedRecords = Arc<Mutex<dyn EngineStore + Send>>;

/// Opens another handle on the engine the records live in, for one export
/// (its own connection: a slow reader of an export holds up nothing else).
type OpenRecords = Box<dyn Fn() -> privtel_store::Result<Box<dyn EngineStore + Send>> + Send + Sync>;

/// The engine the records live in when it is not the service's own.
struct Records {
    /// Sweeps, erasures, contract end, verdicts.
    engine: SharedRecords,
    /// Exports and the customer copy, each on a handle of its own.
    open: OpenRecords,
}

/// Adds `more` to `into`, field by field.
fn add_sweep(into: &mut SweepReport, more: &SweepReport) {
    into.events += more.events;
    into.objects += more.objects;
    into.inactive_device_records += more.inactive_device_records;
    into.devices += more.devices;
    into.verdicts += more.verdicts;
    into.users += more.users;
    into.aggregates += more.aggregates;
    into.streams += more.streams;
}

/// A device's session as a batch meets it.
#[derive(Clone, Copy)]
struct Session<'a> {
    customer: &'a CustomerId,
    device: &'a DeviceId,
    hello: &'a Hello,
    /// Whether the welcome's mark was read for sure.
    marks_certain: bool,
    /// What the service holds of the stream as far as this connection
    /// knows: the welcome's mark, raised by each batch acknowledged since.
    held: &'a std::cell::Cell<u64>,
}

/// Reads a device stream's high-water mark from another engine.
type HighWater = Box<dyn Fn(&CustomerId, &DeviceId, u64) -> Option<u64> + Send + Sync>;

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("stats", &self.stats).finish_non_exhaustive()
    }
}

/// Releases a connection slot when the connection ends.
#[cfg(feature = "tls")]
struct Slot<'a>(&'a AtomicUsize);

#[cfg(feature = "tls")]
impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Service {
    /// What the service did: its counters, updated as it runs.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// use privtel_service::Service;
    /// use privtel_store::{EngineOptions, SqliteEngine};
    /// use privtel_wire::VerdictIndex;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default())?;
    /// let service = Service::new(engine, VerdictIndex::default(), privtel_model::Timestamp::now);
    /// assert_eq!(service.stats().stored.load(Ordering::Relaxed), 0);
    /// assert_eq!(service.stats().checkpoint_failures.load(Ordering::Relaxed), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The counters cannot be swapped for others (the writer's threads
    /// would go on counting into the old ones):
    ///
    /// ```compile_fail
    /// use privtel_service::{Service, ServiceStats};
    ///
    /// fn reset(service: &mut Service) {
    ///     service.stats = ServiceStats::default();
    /// }
    /// ```
    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    /// A service storing into `engine`, answering from `index`, with
    /// `clock` as its time (injected, so retention can be simulated). It
    /// has no customer until [`Service::with_settings`]: every device is
    /// refused (fail closed).
    pub fn new(
        engine: SqliteEngine,
        index: VerdictIndex,
        clock: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Self {
        let reader = engine.reader().ok().map(Mutex::new);
        let encoder = engine.encoder();
        let engine = Arc::new(Mutex::new(engine));
        let stats = ServiceStats::default();
        Self {
            max_batch_records: 10_000,
            writer: writer::Writer::start(Arc::clone(&engine), Arc::clone(&stats.checkpoint_failures)),
            engine,
            reader,
            encoder,
            index,
            stats,
            clock: Box::new(clock),
            gate: None,
            log: None,
            settings: RwLock::new(Arc::new(Settings::default())),
            rates: Mutex::new(HashMap::new()),
            limits: Limits::default(),
            active: AtomicUsize::new(0),
            occupancy: occupancy::Occupancy::default(),
            #[cfg(feature = "tls")]
            handshakes: occupancy::Handshakes::new(
                Limits::default().max_handshakes,
                Limits::default().max_handshakes_per_address,
            ),
            #[cfg(feature = "tls")]
            enrolling: AtomicUsize::new(0),
            #[cfg(feature = "tls")]
            authority: None,
            #[cfg(feature = "jetstream")]
            jetstream: None,
            high_water_from: None,
            records: None,
            access: None,
            region: None,
            requests: None,
            executing: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Serves the customers of `region` only (`eu`, `uk`, `us`, … as the
    /// settings name them): a device, an enrollment or an administrative
    /// action of a customer pinned to another region is refused (counted in
    /// [`ServiceStats::wrong_region`], reported through
    /// [`Service::with_log`]), so each region's data lives in its own
    /// instance's store. Without it the service serves every region (one
    /// store for all: small installations, tests).
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The region this service serves, if it is pinned to one.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// `Err(the customer's region)` when this service serves one region and
    /// `customer`'s settings pin it to another. A customer without settings
    /// is not judged here (it is refused as such elsewhere).
    pub(crate) fn other_region(&self, settings: &Settings, customer: &CustomerId) -> Result<(), String> {
        match (&self.region, settings.customer(customer)) {
            (Some(mine), Some(cs)) if cs.region() != mine => Err(cs.region().to_owned()),
            _ => Ok(()),
        }
    }

    /// Welcomes read high-water marks through `read` (an engine that
    /// writers elsewhere fill, such as PostgreSQL) instead of this
    /// service's engine. `None` (the engine did not answer) reads as 0,
    /// and the session then defers batches that declare a skip (with
    /// JetStream, such a skip could cover batches still waiting to be
    /// applied).
    #[must_use]
    pub fn with_high_water(
        mut self,
        read: impl Fn(&CustomerId, &DeviceId, u64) -> Option<u64> + Send + Sync + 'static,
    ) -> Self {
        self.high_water_from = Some(Box::new(read));
        self
    }

    /// Publishes accepted batches to JetStream through `publisher` instead
    /// of storing them: the agent is acknowledged once JetStream has the
    /// batch, and writers ([`jetstream::StreamWriter`]) store it. While
    /// the writers lag, batches are refused with a `retry_after`. A
    /// welcome's high-water mark also counts the device's batches still
    /// waiting in the stream.
    #[cfg(feature = "jetstream")]
    #[must_use]
    pub fn with_jetstream(mut self, publisher: Arc<jetstream::Publisher>) -> Self {
        self.jetstream = Some(publisher);
        self
    }

    /// The engine, shared (for a JetStream writer that applies into the
    /// service's own engine).
    pub fn shared_engine(&self) -> Arc<Mutex<SqliteEngine>> {
        Arc::clone(&self.engine)
    }

    /// The records live in `engine`, not in the service's own store:
    /// JetStream writers apply them there (PostgreSQL, say). From then on
    /// the customers' data is acted on where it is: retention sweeps (each
    /// customer with its own TTL), a person's erasure (also through
    /// [`Service::erase_person_as`]), contract end and the enrichment
    /// verdicts written back go to `engine`; a person's export (also
    /// [`Service::export_person_as`]) and the customer copy read through a
    /// handle `open` makes for each, so that a slow reader of an export
    /// holds up neither `engine` nor anything waiting for it. Sweeps,
    /// exports, erasures, the customer copy and contract end also act on
    /// the service's own store, which may hold what an earlier embedded run
    /// stored. The support read ([`Service::read_records_as`]) is refused
    /// (it pages by the SQLite store's row ids).
    ///
    /// Without it, a service publishing to JetStream with writers storing
    /// into PostgreSQL would sweep and erase only its own, empty store: the
    /// records would outlive their TTL and an erased person's would stay.
    #[must_use]
    pub fn with_records_engine(
        mut self,
        engine: SharedRecords,
        open: impl Fn() -> privtel_store::Result<Box<dyn EngineStore + Send>> + Send + Sync + 'static,
    ) -> Self {
        self.records = Some(Records { engine, open: Box::new(open) });
        self
    }

    /// A handle of its own on the engine the records live in, if not the
    /// service's own, for one export.
    pub(crate) fn records_reader(&self) -> Option<privtel_store::Result<Box<dyn EngineStore + Send>>> {
        self.records.as_ref().map(|r| (r.open)())
    }

    /// The engine the records live in, if not the service's own
    /// ([`Service::with_records_engine`]), locked.
    pub(crate) fn records_engine(
        &self,
    ) -> Option<std::sync::MutexGuard<'_, dyn EngineStore + Send + 'static>> {
        self.records.as_ref().map(|r| r.engine.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The customers' settings.
    #[must_use]
    pub fn with_settings(self, settings: Settings) -> Self {
        self.replace_settings(settings);
        self
    }

    /// Replaces the customers' settings while the service runs: the next
    /// batch of every connection is checked against the new ones.
    pub fn replace_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(settings);
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Connection limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        #[cfg(feature = "tls")]
        {
            self.handshakes =
                occupancy::Handshakes::new(limits.max_handshakes, limits.max_handshakes_per_address);
        }
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Reports what an operator must see to `log` (one line each).
    #[must_use]
    pub fn with_log(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.log = Some(Box::new(log));
        self
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

    /// Batches waiting for the engine now (the write queue's depth: each
    /// is written by the next group commit).
    pub fn queued_batches(&self) -> usize {
        self.writer.queued()
    }

    /// Connections being served now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Connections without a certificate (devices enrolling) being served
    /// now: at most [`Limits::max_enrolling`].
    #[cfg(feature = "tls")]
    pub fn enrolling_connections(&self) -> usize {
        self.enrolling.load(Ordering::Acquire)
    }

    /// Connections of `customer`'s devices being served now (those that
    /// count against its cap and its devices' caps: from the moment the
    /// certificate, or the embedding program, named the device).
    pub fn connections_of(&self, customer: &CustomerId) -> u32 {
        self.occupancy.customer(customer)
    }

    fn report(&self, line: &str) {
        if let Some(log) = &self.log {
            log(line);
        }
    }

    /// Takes a connection slot, or `None` at the cap.
    #[cfg(feature = "tls")]
    fn slot(&self) -> Option<Slot<'_>> {
        let max = self.limits.max_connections;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(&self.active))
    }

    /// Sweeps every customer's data with that customer's retention; a
    /// customer held in the store without settings any more is swept with
    /// the default retention (30 days, 45 for inactive devices).
    ///
    /// # Errors
    ///
    /// The first storage error; customers before it were swept. With the
    /// records in another engine ([`Service::with_records_engine`]) both
    /// stores are swept, each even if the other failed.
    pub fn sweep(&self, now: Timestamp) -> privtel_store::Result<Vec<(CustomerId, SweepReport)>> {
        let settings = self.settings();
        let mut out: Vec<(CustomerId, SweepReport)> = Vec::new();
        let mut sweep_all = |engine: &mut dyn EngineStore| -> privtel_store::Result<()> {
            for customer in engine.customers()? {
                let retention = settings.customer(&customer).map(|c| c.retention()).unwrap_or_default();
                let report = engine.sweep(&customer, &retention, now)?;
                match out.iter_mut().find(|(c, _)| *c == customer) {
                    Some((_, total)) => add_sweep(total, &report),
                    None => out.push((customer, report)),
                }
            }
            Ok(())
        };
        // Each store swept even if the other fails: the first error is
        // returned once both were tried.
        let elsewhere = match self.records_engine() {
            Some(mut records) => sweep_all(&mut *records),
            None => Ok(()),
        };
        let own = sweep_all(&mut *self.engine());
        elsewhere.and(own)?;
        Ok(out)
    }

    /// Erases one person of one customer (the right to erasure), through
    /// the service's own store handle, so ingest running at the same time
    /// sees it at once.
    ///
    /// The unaudited path, for embedded use (a program that is itself the
    /// administrator, tests): no grant is checked and nothing is logged.
    /// An operator acting on a customer's data goes through
    /// [`Service::erase_person_as`].
    ///
    /// # Errors
    ///
    /// A storage error; nothing is removed then.
    pub fn erase_person(
        &self,
        customer: &CustomerId,
        request: &ErasureRequest,
    ) -> privtel_store::Result<DeletionReceipt> {
        self.erase_everywhere(customer, request)
    }

    /// Erases the person in the engine the records live in (if not the
    /// service's own) and in the service's own store; one receipt counting
    /// both stores' records (the suppressions are the same in both: the
    /// records engine's are reported).
    pub(crate) fn erase_everywhere(
        &self,
        customer: &CustomerId,
        request: &ErasureRequest,
    ) -> privtel_store::Result<DeletionReceipt> {
        let now = (self.clock)();
        let elsewhere = match self.records_engine() {
            Some(mut records) => Some(records.erase_person(customer, request, now)?),
            None => None,
        };
        let own = self.engine().erase_person(customer, request, now)?;
        Ok(match elsewhere {
            Some(mut receipt) => {
                receipt.records_removed += own.records_removed;
                receipt.completed_at = receipt.completed_at.max(own.completed_at);
                receipt
            }
            None => own,
        })
    }

    /// Writes everything held about one person of one customer as JSON
    /// Lines (the right of access); returns the number of lines.
    ///
    /// The unaudited path, for embedded use: no grant is checked and
    /// nothing is logged. An operator goes through
    /// [`Service::export_person_as`].
    ///
    /// # Errors
    ///
    /// A storage or write error.
    pub fn export_person(
        &self,
        customer: &CustomerId,
        user: &UserId,
        out: &mut dyn Write,
    ) -> privtel_store::Result<u64> {
        let elsewhere = match self.records_reader() {
            Some(reader) => reader?.export_person(customer, user, out)?,
            None => 0,
        };
        Ok(elsewhere + self.engine().export_person(customer, user, out)?)
    }

    /// Serves one connection whose peer the transport established, until
    /// it says goodbye, closes, or fails. An anonymous peer may only
    /// enroll; a device must say hello as itself, for a customer with
    /// settings.
    ///
    /// # Errors
    ///
    /// The connection's error (frames, protocol, I/O), or
    /// [`privtel_wire::Error::Remote`]-like refusals sent to the peer and
    /// returned as [`privtel_wire::Error::Unexpected`]. A storage error is
    /// not one: it is answered to the agent as a retryable rejection.
    pub fn handle<S: Read + Write>(
        &self,
        mut conn: Connection<S>,
        mut peer: Peer,
    ) -> Result<(), privtel_wire::Error> {
        let (customer, device) = match &peer {
            Peer::Device { customer, device } => (customer.clone(), device.clone()),
            #[cfg(feature = "tls")]
            Peer::Certified(id) => (id.customer.clone(), id.device.clone()),
            Peer::Anonymous => return self.enroll(&mut conn),
        };
        let settings = self.settings();
        let Some(cs) = settings.customer(&customer) else {
            return self.no_settings(&mut conn, &customer, &device, "has no settings at this service");
        };
        if let Err(theirs) = self.other_region(&settings, &customer) {
            return self.wrong_region(&mut conn, &customer, &device, &theirs);
        }
        // Held until the connection ends, whatever it ends with.
        let _seat = match self.occupancy.enter(
            &customer,
            &device,
            self.limits.max_per_device,
            cs.max_connections(),
        ) {
            Ok(seat) => seat,
            Err(full) => return self.over_tenant_cap(&mut conn, &customer, &device, full),
        };
        drop(settings);
        // The welcome's high-water mark is the verified device's, whatever
        // the hello names; whether it is known for sure (see `high_water`).
        let certain = std::cell::Cell::new(true);
        let held = std::cell::Cell::new(0);
        let opening = conn.server_open(|opening, version| {
            let hw = match opening {
                Opening::Device(hello) => {
                    let (hw, sure) = self.high_water(&customer, &device, hello.stream);
                    certain.set(sure);
                    held.set(hw);
                    hw
                }
                _ => 0,
            };
            let mut w = Welcome::new(version, hw);
            w.max_batch_records = self.max_batch_records;
            w
        })?;
        // Enhance: the certificate gave the customer; the device serves only
        // to check its registration before each question (and is named in
        // a refusal's report): nothing of it is written back.
        let Opening::Device(hello) = opening else {
            return self.enhance(&mut conn, &peer, &customer, &device);
        };
        if hello.customer != customer || hello.device != device {
            self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
            self.report(&format!(
                "refused {customer}/{device}: its hello names {}/{}",
                hello.customer, hello.device
            ));
            conn.send(&Message::error(
                ErrorCode::Forbidden,
                "the hello names another customer or device than the certificate",
                false,
            ))?;
            return Err(privtel_wire::Error::Unexpected {
                expected: "a hello naming the certificate's device",
                got: "another identity",
            });
        }
        if hello.stream == 0 {
            conn.send(&Message::error(ErrorCode::Protocol, "stream 0 is not a spool stream", false))?;
            return Err(privtel_wire::Error::Unexpected { expected: "a nonzero stream", got: "stream 0" });
        }
        let mut messages = Bucket::new(
            self.limits.messages_per_second,
            self.limits.messages_per_second.saturating_mul(2),
            Instant::now(),
        );
        let mut outdated_reported = false;
        loop {
            let msg = match conn.recv() {
                Ok(m) => m,
                Err(privtel_wire::Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            match msg {
                Message::Batch(batch) => {
                    // The device's standing and its customer's settings
                    // read anew for each batch: a device revoked, reset or
                    // whose key was replaced, or a customer removed, while
                    // connected is refused from its next batch on.
                    let settings = self.may_still_ask(&mut conn, &peer, &customer, &device)?;
                    let Some(cs) = settings.customer(&customer) else {
                        return self.no_settings(&mut conn, &customer, &device, "had its settings removed");
                    };
                    if batch.records.len() > self.max_batch_records as usize {
                        let message = format!(
                            "a batch of {} records, above the {} the welcome allowed",
                            batch.records.len(),
                            self.max_batch_records
                        );
                        conn.send(&Message::error(ErrorCode::Protocol, &message, false))?;
                        return Err(privtel_wire::Error::Unexpected {
                            expected: "a batch within the welcome's size",
                            got: "a larger batch",
                        });
                    }
                    if batch.policy_hash != cs.policy_digest() {
                        self.stats.outdated_policy.fetch_add(1, Ordering::Relaxed);
                        if !outdated_reported {
                            outdated_reported = true;
                            self.report(&format!(
                                "{customer}/{device} runs a policy other than the customer's current one"
                            ));
                        }
                    }
                    let session = Session {
                        customer: &customer,
                        device: &device,
                        hello: &hello,
                        marks_certain: certain.get(),
                        held: &held,
                    };
                    let first_seq = batch.first_seq;
                    let ack = self.batch(&session, cs, batch, &mut messages);
                    // Held once some of the batch is: a refused or
                    // deferred batch moves nothing.
                    if ack.accepted_up_to >= first_seq {
                        held.set(held.get().max(ack.accepted_up_to));
                    }
                    conn.send(&Message::Ack(ack))?;
                }
                // A query costs lookups; a renewal signs a certificate and
                // writes the register: both held to the connection's
                // message rate, as batches are.
                Message::EnrichQuery(_) | Message::EnrollRequest(_)
                    if messages.take(1, Instant::now()).is_err() =>
                {
                    conn.send(&Message::error(ErrorCode::Unavailable, "too many requests: slow down", true))?;
                }
                // What a binary or a site is travels beside a device id
                // only as hash prefixes: a direct query (digests and names
                // in clear) belongs on an Enhance session, as sightings do.
                Message::EnrichQuery(EnrichQuery::Direct { .. }) => {
                    conn.send(&Message::error(
                        ErrorCode::Protocol,
                        "a direct enrichment query on a device's session, expected a private one \
                         (direct queries go on an enhance session)",
                        false,
                    ))?;
                    return Err(privtel_wire::Error::Unexpected {
                        expected: "a private enrichment query",
                        got: "a direct one",
                    });
                }
                Message::EnrichQuery(q) => {
                    let settings = self.may_still_ask(&mut conn, &peer, &customer, &device)?;
                    let answer = self.enrich(&settings, &customer, &q);
                    conn.send(&answer)?;
                }
                Message::EnrollRequest(req) if req.token.is_none() => {
                    // Not for a customer whose settings went or moved
                    // region since the connection opened (the register
                    // itself refuses a revoked device or a replaced key).
                    self.may_still_ask(&mut conn, &peer, &customer, &device)?;
                    // A renewal moves the device's registered key: the
                    // connection goes on as the certificate it was given.
                    let answer = self.renew(&mut peer, &req);
                    conn.send(&answer)?;
                }
                Message::Goodbye(_) => return Ok(()),
                other => {
                    conn.send(&Message::error(ErrorCode::Protocol, "unexpected message", false))?;
                    return Err(privtel_wire::Error::Unexpected {
                        expected: "batch, enrich query, renewal or goodbye",
                        got: other.kind_name(),
                    });
                }
            }
        }
    }

    /// Why a certified device may no longer send, if it may not, with the
    /// error code it is told: revoked, reset or removed since its
    /// connection's handshake, or its registered key replaced by another
    /// (as the authority's register says now).
    /// `None` for a peer without a certificate of this service's authority.
    fn no_longer_enrolled(&self, peer: &Peer) -> Option<(ErrorCode, &'static str)> {
        #[cfg(feature = "tls")]
        if let (Peer::Certified(id), Some(authority)) = (peer, &self.authority) {
            return match authority.device(&id.customer, &id.device) {
                Ok(Some(d)) if d.revoked.is_some() => Some((ErrorCode::Forbidden, "the device was revoked")),
                // Renewed with a new key, or reset and enrolled again:
                // the register refuses this connection's key now, and so
                // does its next batch (a copy of an old key keeps nothing
                // open).
                Ok(Some(d)) if d.key_fingerprint != id.key_fingerprint => {
                    Some((ErrorCode::Forbidden, "the device's key was replaced"))
                }
                Ok(Some(_)) => None,
                Ok(None) => Some((ErrorCode::Forbidden, "the device is no longer enrolled")),
                // Not known either way: nothing stored now, the agent
                // retries (on a new connection, which is identified anew).
                Err(_) => Some((ErrorCode::Unavailable, "the device's enrollment could not be read")),
            };
        }
        let _ = peer;
        None
    }

    /// Whether a device may still be answered (a query, a version check)
    /// on a connection opened before: its enrollment as the register holds
    /// it now (see [`Service::no_longer_enrolled`]) and its customer's
    /// settings and region as they are now. A refusal is sent, counted and
    /// reported, and ends the connection; else the settings read, which
    /// hold the customer.
    fn may_still_ask<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        peer: &Peer,
        customer: &CustomerId,
        device: &DeviceId,
    ) -> Result<Arc<Settings>, privtel_wire::Error> {
        if let Some((code, why)) = self.no_longer_enrolled(peer) {
            self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
            self.report(&format!("refused {customer}/{device}: {why} while connected"));
            conn.send(&Message::error(code, why, code != ErrorCode::Forbidden))?;
            return Err(privtel_wire::Error::Unexpected {
                expected: "a message of a device still enrolled",
                got: "a message of a device no longer enrolled",
            });
        }
        let settings = self.settings();
        if settings.customer(customer).is_none() {
            self.no_settings(conn, customer, device, "had its settings removed")?;
        }
        if let Err(theirs) = self.other_region(&settings, customer) {
            self.wrong_region(conn, customer, device, &theirs)?;
        }
        Ok(settings)
    }

    /// Refuses a connection beyond its device's or its customer's cap:
    /// counted, reported as `refused CUSTOMER/DEVICE: the device has N
    /// connections open, expected at most M` (or the customer's), answered
    /// with `Unavailable`, retryable: the agent comes back once one of its
    /// connections ended.
    fn over_tenant_cap<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        customer: &CustomerId,
        device: &DeviceId,
        full: occupancy::Full,
    ) -> Result<(), privtel_wire::Error> {
        self.stats.over_tenant_cap.fetch_add(1, Ordering::Relaxed);
        self.report(&format!("refused {customer}/{device}: {full}"));
        conn.send(&Message::error(ErrorCode::Unavailable, &full.to_string(), true))?;
        Err(privtel_wire::Error::Unexpected {
            expected: "a connection within its device's and customer's caps",
            got: "one more",
        })
    }

    /// Refuses a device whose customer has no settings (fail closed):
    /// counted, reported as `refused CUSTOMER/DEVICE: the customer WHY`, and
    /// answered with `Forbidden`.
    fn no_settings<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        customer: &CustomerId,
        device: &DeviceId,
        why: &str,
    ) -> Result<(), privtel_wire::Error> {
        self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
        self.report(&format!("refused {customer}/{device}: the customer {why}"));
        conn.send(&Message::error(
            ErrorCode::Forbidden,
            "the customer has no settings at this service",
            false,
        ))?;
        Err(privtel_wire::Error::Unexpected { expected: "a customer with settings", got: "unknown customer" })
    }

    /// Refuses a device of a customer pinned to another region: counted,
    /// reported as `refused CUSTOMER/DEVICE: the customer's data is kept in
    /// region R, this service serves region S`, answered with `Forbidden`.
    fn wrong_region<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        customer: &CustomerId,
        device: &DeviceId,
        theirs: &str,
    ) -> Result<(), privtel_wire::Error> {
        self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
        self.stats.wrong_region.fetch_add(1, Ordering::Relaxed);
        let mine = self.region.as_deref().unwrap_or_default();
        self.report(&format!(
            "refused {customer}/{device}: the customer's data is kept in region {theirs}, this service serves region {mine}"
        ));
        conn.send(&Message::error(
            ErrorCode::Forbidden,
            "the customer's data is kept in another region: connect to that region's service",
            false,
        ))?;
        Err(privtel_wire::Error::Unexpected {
            expected: "a customer of this service's region",
            got: "a customer of another region",
        })
    }

    /// An Enhance session (opened by an `EnhanceHello`): sightings and
    /// enrichment queries of `customer`, answered with verdicts, and
    /// version checks, answered from the settings, until goodbye. The
    /// device serves only to check, before each question, that it is still
    /// enrolled and its customer still served (see `may_still_ask`): what
    /// is written back is keyed by the customer and the binary's digest or
    /// the domain's name only (a repeated upload writes the same rows
    /// again).
    fn enhance<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        peer: &Peer,
        customer: &CustomerId,
        device: &DeviceId,
    ) -> Result<(), privtel_wire::Error> {
        let mut messages = Bucket::new(
            self.limits.messages_per_second,
            self.limits.messages_per_second.saturating_mul(2),
            Instant::now(),
        );
        loop {
            let msg = match conn.recv() {
                Ok(m) => m,
                Err(privtel_wire::Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            let query = match msg {
                Message::VersionQuery(q) => {
                    if messages.take(1, Instant::now()).is_err() {
                        conn.send(&Message::error(
                            ErrorCode::Unavailable,
                            "too many queries: slow down",
                            true,
                        ))?;
                        continue;
                    }
                    self.may_still_ask(conn, peer, customer, device)?;
                    conn.send(&self.version_answer(customer, &q))?;
                    continue;
                }
                Message::Sightings(Sightings { query_id, binaries, domains }) => EnrichQuery::Direct {
                    query_id,
                    binaries: binaries.into_iter().map(|b| b.sha256).collect(),
                    domains: domains.into_iter().map(|d| d.domain).collect(),
                },
                Message::EnrichQuery(q) => q,
                Message::Goodbye(_) => return Ok(()),
                other => {
                    conn.send(&Message::error(ErrorCode::Protocol, "unexpected message", false))?;
                    return Err(privtel_wire::Error::Unexpected {
                        expected: "sightings, enrich query, version query or goodbye",
                        got: other.kind_name(),
                    });
                }
            };
            if messages.take(1, Instant::now()).is_err() {
                conn.send(&Message::error(ErrorCode::Unavailable, "too many queries: slow down", true))?;
                continue;
            }
            let settings = self.may_still_ask(conn, peer, customer, device)?;
            conn.send(&self.enrich(&settings, customer, &query))?;
        }
    }

    /// Takes `n` records' worth from the customer's rate
    /// (`records_per_second`, a bucket of four seconds' worth shared by
    /// its connections), or says how long until there is enough.
    fn charge(&self, cs: &CustomerSettings, n: u64, now: Instant) -> Result<(), std::time::Duration> {
        let mut rates = self.rates.lock().unwrap_or_else(PoisonError::into_inner);
        let rate = cs.records_per_second();
        let bucket = rates
            .entry(cs.customer().clone())
            .or_insert_with(|| Bucket::new(rate, rate.saturating_mul(4), now));
        // The customer's rate as the settings say now (they change at run
        // time).
        bucket.retune(rate, rate.saturating_mul(4), now);
        bucket.take(n, now)
    }

    /// Answers an enrichment query, and writes the verdicts of a direct one
    /// back onto the customer's objects; refuses it (`Forbidden`, counted
    /// in `enrich_refused`) when the customer has the enrichment program
    /// switched off, as a batch of the program would be.
    ///
    /// Each verdict written back costs the customer's rate as a record
    /// does (it is a write to the customer's store): beyond the rate the
    /// query is still answered, and nothing is written back (counted in
    /// `verdicts_not_written`), so sightings sent without end cannot hold
    /// the store other customers' batches wait for.
    fn enrich(&self, settings: &Settings, customer: &CustomerId, q: &EnrichQuery) -> Message {
        let Some(cs) =
            settings.customer(customer).filter(|cs| cs.policy().enabled(privtel_model::Program::Enrichment))
        else {
            self.stats.enrich_refused.fetch_add(1, Ordering::Relaxed);
            return Message::error(
                ErrorCode::Forbidden,
                "the customer has the enrichment program switched off",
                false,
            );
        };
        match self.index.answer(q) {
            Ok(answer) => {
                if let EnrichAnswer::Direct { binaries, domains, .. } = &answer {
                    // Only what the index knows is written back: a device
                    // asking about 4,096 made-up digests a query must not
                    // fill its customer's tables (nor hold the store's lock).
                    let binaries: Vec<_> = binaries
                        .iter()
                        .filter(|v| **v != BinaryVerdict::unknown(v.sha256))
                        .cloned()
                        .collect();
                    let domains: Vec<_> = domains
                        .iter()
                        .filter(|v| **v != DomainVerdict::unknown(v.domain.clone()))
                        .cloned()
                        .collect();
                    let n = (binaries.len() + domains.len()) as u64;
                    let within_rate = n > 0 && self.charge(cs, n, Instant::now()).is_ok();
                    if n > 0 && !within_rate {
                        self.stats.verdicts_not_written.fetch_add(n, Ordering::Relaxed);
                    }
                    if within_rate {
                        // A failure to write verdicts back costs their
                        // record, not the device's answer.
                        let now = (self.clock)();
                        // Where the records are, if that engine is free
                        // now: a device's answer never waits behind a
                        // sweep or an erasure there.
                        let _ = match &self.records {
                            Some(r) => match r.engine.try_lock() {
                                Ok(mut records) => {
                                    records.record_verdicts(customer, &binaries, &domains, now)
                                }
                                Err(_) => Ok(0),
                            },
                            None => self.engine().record_verdicts(customer, &binaries, &domains, now),
                        };
                    }
                }
                Message::EnrichAnswer(answer)
            }
            Err(e) => Message::error(ErrorCode::Malformed, &e.to_string(), false),
        }
    }

    /// A stream's high-water mark for a welcome, and whether it is sure: a
    /// mark read from another engine or from JetStream that could not be
    /// read is given as the engine's (or 0), and the session then refuses
    /// declared skips (see `batch`).
    fn high_water(&self, customer: &CustomerId, device: &DeviceId, stream: u64) -> (u64, bool) {
        let mut sure = true;
        let stored = if let Some(read) = &self.high_water_from {
            read(customer, device, stream).unwrap_or_else(|| {
                sure = false;
                0
            })
        } else {
            let read = self.reader.as_ref().map(|reader| {
                reader.lock().unwrap_or_else(PoisonError::into_inner).high_water(customer, device, stream)
            });
            let hw = match read {
                Some(Ok(hw)) => hw,
                // No reader, or it failed: the engine answers (a mark of 0
                // would make the device resend everything it holds).
                _ => self.engine().high_water(customer, device, stream).unwrap_or(0),
            };
            // The read sees groups committed and not yet synced: the mark
            // is given only once the stream's batches among them are
            // durable (else 0: the device resends, the engine counts
            // duplicates).
            if self.writer.wait_durable(writer::stream_key(customer, device, stream), DURABLE_WAIT) {
                hw
            } else {
                sure = false;
                0
            }
        };
        #[cfg(feature = "jetstream")]
        if let Some(js) = &self.jetstream {
            // Published and not yet applied counts as held: the agent must
            // not declare it skipped.
            return match js.pending_high_water(customer, device, stream) {
                Ok(pending) => (stored.max(pending), sure),
                Err(_) => (stored, false),
            };
        }
        (stored, sure)
    }

    /// Stores one batch by group commit (see `writer`): encoded on this
    /// connection's thread, written by the writer with whatever else
    /// queued meanwhile, acknowledged once durable. Benchmarking records
    /// are folded into the customer's aggregates, tagged with `industry`,
    /// and stored nowhere else (see `benchmark`).
    fn store(
        &self,
        batch: AdmittedBatch,
        received: Timestamp,
        industry: &str,
    ) -> Result<IngestOutcome, privtel_store::Error> {
        // Payloads, sealing and digests here, in parallel with the other
        // connections: the writer only inserts.
        let stream = writer::stream_key(&batch.customer, &batch.device, batch.seq.stream);
        let batch = self.encoder.encode_folding(batch, received, industry);
        let (outcome, opened) = self.writer.store(batch, stream, (self.clock)());
        if opened {
            self.stats.groups.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// One batch: rate limits, the customer's settings, the store.
    fn batch(
        &self,
        session: &Session<'_>,
        cs: &CustomerSettings,
        batch: Batch,
        messages: &mut Bucket,
    ) -> Ack {
        let Session { customer, device, hello, marks_certain, held } = *session;
        #[cfg(not(feature = "jetstream"))]
        let _ = (marks_certain, held); // only a JetStream front-end acknowledges before the mark is checked
        let n = batch.records.len() as u64;
        let now = Instant::now();
        let defer = |code: RejectCode, reason: String, wait: std::time::Duration| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            Ack {
                batch_id: batch.batch_id,
                accepted_up_to: batch.first_seq.saturating_sub(1),
                rejections: vec![Rejection { seq: batch.first_seq, code, reason, retryable: true }],
                retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(RETRY_AFTER_MS)),
            }
        };
        if let Some(reason) = self.gate.as_ref().and_then(|g| g()) {
            return defer(RejectCode::UNAVAILABLE, reason, std::time::Duration::ZERO);
        }
        if let Err(wait) = messages.take(1, now) {
            return defer(RejectCode::RATE_LIMITED, "too many messages on this connection".into(), wait);
        }
        // An empty batch is still a write (the device's and the stream's
        // rows, a group): it costs as one record.
        if let Err(wait) = self.charge(cs, n.max(1), now) {
            return defer(RejectCode::RATE_LIMITED, "the customer's devices send too fast".into(), wait);
        }
        let clock = (self.clock)();
        let settings = self.settings();
        let ctx = admission::Admission {
            settings: cs,
            device,
            hello_consent: &hello.consent,
            program: batch.program,
            now: clock,
            max_future_skew: settings.max_future_skew(),
        };
        let (admitted, mut rejections) =
            admission::admit(&ctx, batch.first_seq, batch.records, &self.stats.records_refused);
        let seq = Sequence { stream: hello.stream, first_seq: batch.first_seq, skipped: batch.skipped };
        #[cfg(feature = "jetstream")]
        if let Some(js) = &self.jetstream {
            let admitted =
                AdmittedBatch { customer: customer.clone(), device: device.clone(), seq, records: admitted };
            // What the engine would refuse for good is refused here, before
            // the agent is told the batch is held: numbers out of range,
            // skips beyond the batch's start, and (below) a gap after what
            // the service holds as far as it can tell.
            let range = privtel_store::parts::check_range(batch.first_seq, n as usize).and_then(|()| {
                if batch.skipped > batch.first_seq - 1 {
                    Err(privtel_store::Error::SequenceRange { first_seq: batch.first_seq, records: n })
                } else {
                    Ok(())
                }
            });
            if let Err(e) = range {
                self.stats.sequence.fetch_add(1, Ordering::Relaxed);
                return Ack {
                    batch_id: batch.batch_id,
                    accepted_up_to: batch.first_seq.saturating_sub(1),
                    rejections: vec![Rejection {
                        seq: batch.first_seq,
                        code: RejectCode::SEQUENCE,
                        reason: e.to_string(),
                        retryable: false,
                    }],
                    retry_after_ms: Some(RETRY_AFTER_MS),
                };
            }
            // A gap after what the service holds (stored, or published
            // and not yet applied) would be acknowledged here and then
            // terminated by the writer, the records lost with the agent
            // told they are held: refused here, as the engine refuses it.
            // Before refusing, the mark is read again (another connection
            // of the device may have moved it).
            let follows = batch.first_seq.saturating_sub(1).saturating_sub(batch.skipped);
            if marks_certain && follows > held.get() {
                let (now_held, sure) = self.high_water(customer, device, hello.stream);
                held.set(held.get().max(now_held));
                if follows > held.get() {
                    if !sure {
                        return defer(
                            RejectCode::UNAVAILABLE,
                            "the service could not read where this stream stands: retry later".into(),
                            std::time::Duration::from_secs(1),
                        );
                    }
                    self.stats.sequence.fetch_add(1, Ordering::Relaxed);
                    let gap = privtel_store::Error::SequenceGap {
                        first_seq: batch.first_seq,
                        high_water: held.get(),
                    };
                    return Ack {
                        batch_id: batch.batch_id,
                        accepted_up_to: batch.first_seq.saturating_sub(1),
                        rejections: vec![Rejection {
                            seq: batch.first_seq,
                            code: RejectCode::SEQUENCE,
                            reason: gap.to_string(),
                            retryable: false,
                        }],
                        retry_after_ms: Some(RETRY_AFTER_MS),
                    };
                }
            }
            // A skip declared against a mark that could not be read may
            // cover batches waiting in the stream: refused for now (the
            // next session's welcome reads the mark again).
            if batch.skipped > 0 && !marks_certain {
                return defer(
                    RejectCode::UNAVAILABLE,
                    "the service could not read where this stream stands: retry later".into(),
                    std::time::Duration::from_secs(1),
                );
            }
            // What a device is told names nothing of the service's insides
            // (its lag, its queue's errors); the log has the detail.
            if js.check_lag().is_err() {
                return defer(
                    RejectCode::UNAVAILABLE,
                    "the service is busy: retry later".into(),
                    std::time::Duration::from_secs(1),
                );
            }
            return match js.publish(admitted, clock, cs.industry().unwrap_or("")) {
                Ok(_) => {
                    self.stats.published.fetch_add(n, Ordering::Relaxed);
                    Ack {
                        batch_id: batch.batch_id,
                        accepted_up_to: batch.first_seq.saturating_add(n).saturating_sub(1),
                        rejections,
                        retry_after_ms: None,
                    }
                }
                Err(e) => {
                    self.report(&format!("{customer}/{device}: a batch was not queued: {e}"));
                    defer(
                        RejectCode::UNAVAILABLE,
                        "the service could not queue the batch: retry later".into(),
                        std::time::Duration::ZERO,
                    )
                }
            };
        }
        let result = self.store(
            AdmittedBatch { customer: customer.clone(), device: device.clone(), seq, records: admitted },
            clock,
            cs.industry().unwrap_or(""),
        );
        match result {
            Ok(outcome) => {
                self.stats.stored.fetch_add(outcome.stored, Ordering::Relaxed);
                self.stats.duplicates.fetch_add(outcome.duplicates, Ordering::Relaxed);
                self.stats.suppressed.fetch_add(outcome.suppressed, Ordering::Relaxed);
                self.stats.skipped.fetch_add(outcome.skipped, Ordering::Relaxed);
                Ack {
                    batch_id: batch.batch_id,
                    // An empty batch acknowledges nothing.
                    accepted_up_to: batch.first_seq.saturating_add(n).saturating_sub(1),
                    rejections,
                    retry_after_ms: None,
                }
            }
            Err(
                e @ (privtel_store::Error::SequenceGap { .. } | privtel_store::Error::SequenceRange { .. }),
            ) => {
                self.stats.sequence.fetch_add(1, Ordering::Relaxed);
                rejections.clear();
                rejections.push(Rejection {
                    seq: batch.first_seq,
                    code: RejectCode::SEQUENCE,
                    reason: e.to_string(),
                    retryable: false,
                });
                Ack {
                    batch_id: batch.batch_id,
                    accepted_up_to: batch.first_seq.saturating_sub(1),
                    rejections,
                    retry_after_ms: Some(RETRY_AFTER_MS),
                }
            }
            // The customer's contract ended: nothing of it is stored again
            // (until it is onboarded anew); the device is told so, for good.
            Err(privtel_store::Error::CustomerDeleted) => {
                self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                self.report(&format!(
                    "batch of {customer}/{device} refused: the customer was deleted at contract end"
                ));
                Ack {
                    batch_id: batch.batch_id,
                    accepted_up_to: batch.first_seq.saturating_sub(1),
                    rejections: vec![Rejection {
                        seq: batch.first_seq,
                        code: RejectCode::UNKNOWN_CUSTOMER,
                        reason: "the customer's data was deleted at contract end".into(),
                        retryable: false,
                    }],
                    retry_after_ms: Some(RETRY_AFTER_MS),
                }
            }
            // Nothing stored: the agent keeps the batch and retries after
            // the pause.
            Err(e) => defer(RejectCode::UNAVAILABLE, e.to_string(), std::time::Duration::ZERO),
        }
    }
}

#[cfg(not(feature = "tls"))]
impl Service {
    /// Without the `tls` feature there is no enrollment authority: a peer
    /// without an identity is refused.
    fn enroll<S: Read + Write>(&self, conn: &mut Connection<S>) -> Result<(), privtel_wire::Error> {
        self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
        conn.send(&Message::error(ErrorCode::Forbidden, "this service enrolls no device", false))?;
        Err(privtel_wire::Error::Unexpected { expected: "an authenticated device", got: "an anonymous peer" })
    }

    fn renew(&self, _: &mut Peer, _: &privtel_wire::EnrollRequest) -> Message {
        Message::error(ErrorCode::Forbidden, "this service renews no certificate", false)
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use privtel_authority::Authority;
    use privtel_wire::tls::rustls::ServerConfig;
    use privtel_wire::{Connection, ErrorCode, Message};

    use super::{Peer, Service};

    /// How long a connection thread whose connection ended waits for the
    /// next before it ends.
    const WORKER_LINGER: std::time::Duration = std::time::Duration::from_secs(10);

    impl Service {
        /// Enrolls devices and verifies their certificates with
        /// `authority` (see [`privtel_authority`]). Certificates live in
        /// real time: enrollment, renewal and identification use the wall
        /// clock, not the service's injected clock (which is the data's).
        #[must_use]
        pub fn with_authority(mut self, authority: Arc<Authority>) -> Self {
            self.authority = Some(authority);
            self
        }

        /// A peer without a certificate: one enrollment request with a
        /// token, answered with the device's certificate, and nothing else.
        pub(crate) fn enroll<S: Read + Write>(
            &self,
            conn: &mut Connection<S>,
        ) -> Result<(), privtel_wire::Error> {
            let refuse = |conn: &mut Connection<S>, msg: &str| {
                self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                conn.send(&Message::error(ErrorCode::Forbidden, msg, false))?;
                Err(privtel_wire::Error::Unexpected {
                    expected: "an enrollment request",
                    got: "something else",
                })
            };
            let Some(authority) = &self.authority else {
                return refuse(conn, "this service enrolls no device: present a client certificate");
            };
            match conn.recv()? {
                Message::EnrollRequest(req) if req.token.is_some() => {
                    if let Err(theirs) = self.other_region(&self.settings(), &req.customer) {
                        self.stats.wrong_region.fetch_add(1, Ordering::Relaxed);
                        self.report(&format!(
                            "enrollment of {}/{} refused: the customer's data is kept in region {theirs}",
                            req.customer, req.device
                        ));
                        return refuse(
                            conn,
                            "the customer's data is kept in another region: enroll with that region's service",
                        );
                    }
                    let now = time::OffsetDateTime::now_utc();
                    match authority.enroll(&req, now) {
                        Ok(enrolled) => {
                            self.stats.enrolled.fetch_add(1, Ordering::Relaxed);
                            conn.send(&Message::Enrolled(enrolled))
                        }
                        Err(e) => {
                            self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                            self.report(&format!(
                                "enrollment of {}/{} refused: {e}",
                                req.customer, req.device
                            ));
                            conn.send(&Message::Error(e.to_error_message()))?;
                            Err(privtel_wire::Error::Remote { code: e.code(), message: e.to_string() })
                        }
                    }
                }
                _ => refuse(conn, "a device without a certificate may only enroll, with a token"),
            }
        }

        /// A renewal over a connection its certificate authenticated.
        pub(crate) fn renew(&self, peer: &mut Peer, req: &privtel_wire::EnrollRequest) -> Message {
            let (Some(authority), Peer::Certified(identity)) = (&self.authority, peer) else {
                return Message::error(
                    ErrorCode::Forbidden,
                    "only a certified device renews its certificate",
                    false,
                );
            };
            if req.customer != identity.customer || req.device != identity.device {
                self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                self.report(&format!("{identity} asked to renew {}/{}", req.customer, req.device));
                return Message::error(
                    ErrorCode::Forbidden,
                    "a device renews its own certificate only",
                    false,
                );
            }
            match authority.renew_identity(identity, &req.csr_der, time::OffsetDateTime::now_utc()) {
                Ok((enrolled, renewed)) => {
                    self.stats.enrolled.fetch_add(1, Ordering::Relaxed);
                    *identity = renewed;
                    Message::Enrolled(enrolled)
                }
                Err(e) => {
                    self.report(&format!("renewal of {identity} refused: {e}"));
                    Message::Error(e.to_error_message())
                }
            }
        }

        /// Serves one TCP connection: the TLS handshake within the
        /// handshake deadline, the peer's identity from its certificate
        /// (checked against the authority as it is now), then
        /// [`Service::handle`] with the idle and frame deadlines.
        ///
        /// # Errors
        ///
        /// The connection's error (TLS, deadline, frames, protocol), or a
        /// refused identity.
        pub fn handle_tls(
            &self,
            tcp: TcpStream,
            config: Arc<ServerConfig>,
        ) -> Result<(), privtel_wire::Error> {
            // A handshake slot of the peer's address, held until a
            // certificate says who is there (a peer without one, which may
            // only enroll, holds it for its whole connection): until then
            // one host takes only its own share of the service.
            let slot = match self.handshakes.begin(tcp.peer_addr()?.ip()) {
                Ok(slot) => slot,
                Err(busy) => {
                    // Closed before any TLS byte, as at the connection cap.
                    self.stats.over_handshakes.fetch_add(1, Ordering::Relaxed);
                    return Err(privtel_wire::Error::Tls(format!("connection closed: {busy}")));
                }
            };
            tcp.set_read_timeout(Some(privtel_wire::DEADLINE_TICK))?;
            tcp.set_write_timeout(Some(privtel_wire::DEADLINE_TICK))?;
            let stream = privtel_wire::tls::accept_within(tcp, config, self.limits.handshake)?;
            let peer = match (stream.conn.peer_certificates(), &self.authority) {
                (Some(certs), Some(authority)) => {
                    match authority.identify(certs, time::OffsetDateTime::now_utc()) {
                        Ok(identity) => Peer::Certified(identity),
                        Err(e) => {
                            self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                            self.report(&format!("connection refused: {e}"));
                            let mut conn = Connection::new(stream);
                            let _ = conn.send(&Message::error(ErrorCode::Forbidden, &e.to_string(), false));
                            return Err(privtel_wire::Error::Tls(format!("client certificate refused: {e}")));
                        }
                    }
                }
                _ => Peer::Anonymous,
            };
            // A certified device counts as itself from here on. A peer
            // without a certificate keeps its address's share, and leaves
            // the count of handshakes in progress (its handshake is over,
            // and strangers through TLS must not fill the slots every new
            // device's handshake needs) for the count of enrolling peers,
            // which has a cap of its own; it gets the handshake's
            // deadline and a small frame for its one request.
            if !matches!(peer, Peer::Anonymous) {
                drop(slot);
                let conn = Connection::new(stream).with_deadlines(self.limits.idle, self.limits.frame);
                return self.handle(conn, peer);
            }
            let mut slot = slot;
            slot.leave_all();
            let Some(_enrolling) =
                crate::occupancy::Enrolling::enter(&self.enrolling, self.limits.max_enrolling)
            else {
                self.stats.over_enrolling.fetch_add(1, Ordering::Relaxed);
                let mut conn = Connection::new(stream);
                let _ = conn.send(&Message::error(
                    ErrorCode::Unavailable,
                    "as many devices are enrolling as this service takes at once: retry later",
                    true,
                ));
                return Err(privtel_wire::Error::Tls(format!(
                    "connection closed: {} enrolling connections, the most allowed",
                    self.limits.max_enrolling
                )));
            };
            let within = self.limits.handshake;
            let conn = Connection::new(stream)
                .with_deadlines(self.limits.idle.min(within), self.limits.frame.min(within))
                .with_max_payload(crate::MAX_ENROLL_PAYLOAD);
            let served = self.handle(conn, peer);
            drop(slot);
            served
        }

        /// Accepts connections until `stop` is set, one thread each (with
        /// [`Limits::thread_stack`](crate::Limits) of stack; up to
        /// [`Limits::idle_threads`](crate::Limits) of them wait for the
        /// next connection when theirs ends, each for ten seconds at
        /// most, and go when this returns); beyond
        /// [`Limits::max_connections`](crate::Limits) a connection is
        /// closed at once and counted. A failing connection is counted and
        /// does not stop the others.
        pub fn serve_tls(
            self: &Arc<Self>,
            listener: &TcpListener,
            config: &Arc<ServerConfig>,
            stop: &AtomicBool,
        ) {
            let workers = crate::Workers::new(
                "privtel-conn",
                self.limits.thread_stack,
                self.limits.idle_threads,
                WORKER_LINGER,
            );
            for tcp in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let tcp = match tcp {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        self.stats.accept_failures.fetch_add(1, Ordering::Relaxed);
                        // One connection given up by its client: nothing
                        // to wait for. Anything else (no file descriptor
                        // left, no memory) lasts until connections end.
                        if !matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionAborted
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::Interrupted
                        ) {
                            std::thread::sleep(super::ACCEPT_PAUSE);
                        }
                        continue;
                    }
                };
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                if self.slot().map(std::mem::forget).is_none() {
                    // Closed before any TLS byte: the agent retries later.
                    self.stats.over_capacity.fetch_add(1, Ordering::Relaxed);
                    drop(tcp);
                    continue;
                }
                let me = Arc::clone(self);
                let config = Arc::clone(config);
                let spawned = workers.run(move || {
                    let _slot = super::Slot(&me.active);
                    if me.handle_tls(tcp, config).is_err() {
                        me.stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
                match spawned {
                    Ok(made) => {
                        self.stats.threads.fetch_add(u64::from(made), Ordering::Relaxed);
                    }
                    Err(_) => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        self.active.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            // Threads waiting for a connection go now; those serving one
            // end with it.
            workers.close();
        }
    }
}

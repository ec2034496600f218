//! The application SDK: how a desktop application reports its own usage.
//!
//! A [`TelemetryBuilder`] makes a [`Telemetry`] handle, cheap to clone and
//! `Send + Sync`. Each call ([`Telemetry::feature_used`],
//! [`Telemetry::crash`], [`Telemetry::licence_session`], …) checks first
//! whether the customer's policy has the call's program on — a switched-off
//! program costs one array read and nothing else — then builds the record,
//! filters it under the policy **on the caller's thread** (what leaves the
//! call is already in the customer's form) and hands it to the background
//! worker of the record's endpoint through a bounded in-memory queue: no call
//! waits for a disk or a network. A full queue drops the record and counts
//! it ([`SdkStats::dropped_queue_full`]).
//!
//! Each endpoint ([`Connector`], named) has its own spool file
//! (`DIR/NAME.spool.db`, its own sequence numbers and stream) and its own
//! worker thread, which appends what arrives (one transaction for
//! everything waiting) and uploads on a timer, with exponential backoff after
//! a failure: an endpoint that is down delays only its own programs.
//! Programs go to the first endpoint unless routed elsewhere
//! ([`TelemetryBuilder::route`]); a record kind can be routed on its own
//! ([`TelemetryBuilder::route_kind`]: crash reports to a crash endpoint).
//!
//! Per-person consent to personalised usage ([`Telemetry::set_consent`]) is
//! recorded durably with its source and time, travels to the service as a
//! consent record, and gates every personalised record; a withdrawal purges
//! the person's waiting personalised records from every endpoint's spool.
//!
//! [`Telemetry::flush`] appends everything queued and uploads at once;
//! [`Telemetry::shutdown`] does so within a deadline and stops the workers.
//! Dropping the last handle spools what is queued and stops the workers
//! without uploading.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use privtel_filter::{Filter, FilterBuilder, LicenceError, LicenceTerms, Policy, RedactionReport};
use privtel_model::{
    ConfigSample, Consent, ConsentSource, CrashReport, CustomerId, DeviceId, Event, EventBody, EventId,
    FeatureUsage, Feedback, Finite, Geohash, Interaction, LicenceSession, OsInfo, PerformanceSample,
    Personal, Program, Record, RecordBody, Score, Timestamp, User, UserId, VersionCheck,
};
use privtel_store::{ConsentChange, ConsentState, SpoolOptions, Subject};
use privtel_wire::Connection;

use crate::error::AgentError;
use crate::{Agent, Filtered, RetryBudget, VersionOffer};

/// A byte stream to a service: what a [`Connector`] opens.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// The connection a [`Connector`] opens.
pub type BoxConnection = Connection<Box<dyn Stream>>;

type ConnectFn = dyn Fn() -> Result<BoxConnection, AgentError> + Send + Sync;

/// How an endpoint's worker reaches its service: a function that opens a
/// connection (TCP and TLS, or anything that reads and writes frames).
#[derive(Clone)]
pub struct Connector(Arc<ConnectFn>);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector(..)")
    }
}

impl Connector {
    /// A connector calling `connect` for each upload.
    pub fn new(connect: impl Fn() -> Result<BoxConnection, AgentError> + Send + Sync + 'static) -> Self {
        Self(Arc::new(connect))
    }

    /// Mutual TLS to `addr`, checking the service's certificate against
    /// `server_name`, the TCP connection and handshake within 10 s, each
    /// frame within 60 s and no more than 120 s idle.
    #[cfg(feature = "tls")]
    pub fn tls(
        addr: std::net::SocketAddr,
        server_name: impl Into<String>,
        config: Arc<privtel_wire::tls::rustls::ClientConfig>,
    ) -> Self {
        let name = server_name.into();
        Self::new(move || {
            let stream =
                privtel_wire::tls::connect_within(addr, &name, config.clone(), Duration::from_secs(10))?;
            let stream: Box<dyn Stream> = Box::new(stream);
            Ok(Connection::new(stream).with_deadlines(Duration::from_secs(120), Duration::from_secs(60)))
        })
    }

    /// Opens a connection.
    ///
    /// # Errors
    ///
    /// Whatever the connector's function returns.
    pub fn connect(&self) -> Result<BoxConnection, AgentError> {
        (self.0)()
    }
}

/// A mistake in the SDK's set-up or a call it cannot honour. Never holds a
/// personal value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// No endpoint was given.
    #[error("no endpoint: expected at least one (TelemetryBuilder::endpoint)")]
    NoEndpoint,
    /// Two endpoints share a name.
    #[error("endpoint {name:?} is given twice: expected one name per endpoint")]
    DuplicateEndpoint {
        /// The name.
        name: String,
    },
    /// An endpoint's name cannot name a spool file.
    #[error("endpoint name {name:?}: expected 1 to 32 characters of a-z, 0-9, '-' and '_'")]
    EndpointName {
        /// The name.
        name: String,
    },
    /// A route names an endpoint that was not given.
    #[error("route of {what} names endpoint {name:?}, which was not given")]
    UnknownEndpoint {
        /// The program or kind routed.
        what: String,
        /// The endpoint named.
        name: String,
    },
    /// The spool directory or the subject key could not be made.
    #[error("spool directory {path}: {error}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Per-person consent is for personalised usage only.
    #[error(
        "per-person consent applies to personalised_usage only; {program} is switched by the customer's policy"
    )]
    NotPerPerson {
        /// The program asked for.
        program: Program,
    },
    /// The customer's policy has the program off: a person's consent
    /// cannot switch it on.
    #[error("program {program} is off in the customer's policy: a person's consent cannot switch it on")]
    ProgramOff {
        /// The program.
        program: Program,
    },
    /// A value outside its range (a score above 100, a non-finite measure).
    #[error("{what}: {reason}")]
    Value {
        /// Which argument.
        what: &'static str,
        /// What was expected.
        reason: String,
    },
    /// The endpoint's worker stopped (the handle was shut down, or the
    /// worker failed for good).
    #[error("endpoint {name:?} is stopped")]
    Stopped {
        /// The endpoint.
        name: String,
    },
    /// The worker did not answer in time.
    #[error("endpoint {name:?} did not answer within {waited:?}")]
    Timeout {
        /// The endpoint.
        name: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The policy switches off a program the customer's licence requires.
    #[error(transparent)]
    Licence(#[from] LicenceError),
    /// An agent error (spool, key, wire).
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// The person using the application, as personalised usage names them.
/// Only recorded while the person's consent to personalised usage stands;
/// each field is then in the form the customer's policy gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserProfile {
    /// The person's opaque id in the application.
    pub id: UserId,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email address.
    pub email: String,
}

impl std::fmt::Debug for UserProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserProfile").finish_non_exhaustive()
    }
}

/// A function turning a public IP address into a coarse location (a
/// geohash): the application's own geolocation database. Without one,
/// licence sessions carry no location.
pub type Geolocate = dyn Fn(IpAddr) -> Option<Geohash> + Send + Sync;

/// Builds a [`Telemetry`].
///
/// ```
/// use privtel_agent::sdk::{Connector, TelemetryBuilder};
/// use privtel_agent::{AgentError, CustomerId, DeviceId, Program};
/// use privtel_filter::Policy;
///
/// let dir = tempfile::tempdir()?;
/// // A service that is never reachable: records wait in the spool.
/// let down = Connector::new(|| Err(AgentError::Refused { message: "down".into(), retryable: true }));
/// let sdk = TelemetryBuilder::new(CustomerId::new("acme")?, DeviceId::new("dev-1")?, "Studio", "4.2.0")
///     .policy(Policy::from_toml("[programs]\nbenchmarking = false\n")?)
///     .spool_dir(dir.path())
///     .endpoint("analytics", down.clone())
///     .endpoint("crashes", down)
///     .route_kind("crash_report", "crashes")
///     .build()?;
/// sdk.feature_used("export_pdf");
/// sdk.crash("panicked at 'index out of bounds'");
/// let report = sdk.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(report.pending("analytics"), Some(1));
/// assert_eq!(report.pending("crashes"), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TelemetryBuilder {
    customer: CustomerId,
    device: DeviceId,
    product: String,
    version: String,
    filter: FilterBuilder,
    dir: PathBuf,
    endpoints: Vec<(String, Connector)>,
    routes: Vec<(Program, String)>,
    kind_routes: Vec<(&'static str, String)>,
    spool: SpoolOptions,
    policy_version: u32,
    first_upload_after: Duration,
    upload_every: Duration,
    queue_capacity: usize,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    geolocate: Option<Arc<Geolocate>>,
    retry: RetryBudget,
    licence: Option<LicenceTerms>,
}

impl std::fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("customer", &self.customer)
            .field("device", &self.device)
            .field("product", &self.product)
            .field("endpoints", &self.endpoints.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TelemetryBuilder {
    /// A builder for `product` at `version`, on `device` of `customer`,
    /// with the default policy, the spool in the current directory, uploads
    /// 5 minutes after start and every minute after, and a queue of 10,000
    /// records.
    pub fn new(
        customer: CustomerId,
        device: DeviceId,
        product: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            filter: FilterBuilder::new(),
            customer,
            device,
            product: product.into(),
            version: version.into(),
            dir: PathBuf::from("."),
            endpoints: Vec::new(),
            routes: Vec::new(),
            kind_routes: Vec::new(),
            spool: SpoolOptions::default(),
            policy_version: 1,
            first_upload_after: Duration::from_secs(300),
            upload_every: Duration::from_secs(60),
            queue_capacity: 10_000,
            clock: Arc::new(Timestamp::now),
            geolocate: None,
            retry: RetryBudget::forever(),
            licence: None,
        }
    }

    /// The customer's licence, as the service's settings give it: `build`
    /// refuses a policy that switches off a program the licence requires
    /// (support telemetry without the opt-out flag; benchmarking in the
    /// cloud offering).
    #[must_use]
    pub fn licence(mut self, terms: LicenceTerms) -> Self {
        self.licence = Some(terms);
        self
    }

    /// The customer's policy (programs on, each field's form), and the
    /// spools' retention from it: its TTLs of events and objects and its
    /// inactive-device purge ([`crate::policy_retention`]), so nothing
    /// waits on the device longer than the policy keeps it. Spool options
    /// given after this ([`TelemetryBuilder::spool_options`]) replace that
    /// retention with theirs.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.spool.retention = crate::policy_retention(&policy);
        self.filter.policy(policy);
        self
    }

    /// The pseudonym key fields the policy pseudonymises are keyed with.
    #[must_use]
    pub fn pseudonym_key(mut self, key: privtel_filter::PseudonymKey) -> Self {
        self.filter.key(key);
        self
    }

    /// The version of the policy, sent in each session's hello.
    #[must_use]
    pub fn policy_version(mut self, version: u32) -> Self {
        self.policy_version = version;
        self
    }

    /// Where the spools and the subject key live (created if missing).
    #[must_use]
    pub fn spool_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = dir.as_ref().to_owned();
        self
    }

    /// The spools' limits and retention (replacing the retention a
    /// [`TelemetryBuilder::policy`] given before set).
    #[must_use]
    pub fn spool_options(mut self, options: SpoolOptions) -> Self {
        self.spool = options;
        self
    }

    /// An endpoint, by name (its spool is `DIR/NAME.spool.db`). The first
    /// one takes every program not routed elsewhere.
    #[must_use]
    pub fn endpoint(mut self, name: impl Into<String>, connector: Connector) -> Self {
        self.endpoints.push((name.into(), connector));
        self
    }

    /// Sends `program`'s records to the endpoint `name`.
    #[must_use]
    pub fn route(mut self, program: Program, name: impl Into<String>) -> Self {
        self.routes.push((program, name.into()));
        self
    }

    /// Sends records of `kind` (`crash_report`, as
    /// `RecordBody::kind_name` names it) to the endpoint `name`, whatever
    /// their program.
    #[must_use]
    pub fn route_kind(mut self, kind: &'static str, name: impl Into<String>) -> Self {
        self.kind_routes.push((kind, name.into()));
        self
    }

    /// The first upload after start (default 5 minutes, as the reference
    /// products do; 0 for a demo).
    #[must_use]
    pub fn first_upload_after(mut self, wait: Duration) -> Self {
        self.first_upload_after = wait;
        self
    }

    /// Uploads after the first (default every minute).
    #[must_use]
    pub fn upload_every(mut self, every: Duration) -> Self {
        self.upload_every = every.max(Duration::from_millis(10));
        self
    }

    /// Waits after a failed upload (default: 500 ms doubling to 5 minutes,
    /// with jitter; the attempts limit is ignored: a worker never gives up).
    #[must_use]
    pub fn retry(mut self, retry: RetryBudget) -> Self {
        self.retry = retry;
        self
    }

    /// Records held in memory per endpoint before calls start dropping
    /// (default 10,000).
    #[must_use]
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// The clock records are dated by (default the system clock).
    #[must_use]
    pub fn clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How a licence session's public IP becomes a geohash.
    #[must_use]
    pub fn geolocate(mut self, f: impl Fn(IpAddr) -> Option<Geohash> + Send + Sync + 'static) -> Self {
        self.geolocate = Some(Arc::new(f));
        self
    }

    /// Opens every endpoint's spool and starts its worker.
    ///
    /// # Errors
    ///
    /// [`SdkError`] naming the bad endpoint or route; a directory, key or
    /// spool error.
    pub fn build(self) -> Result<Telemetry, SdkError> {
        if self.endpoints.is_empty() {
            return Err(SdkError::NoEndpoint);
        }
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in &self.endpoints {
            let ok = (1..=32).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !ok {
                return Err(SdkError::EndpointName { name: name.clone() });
            }
            if names.contains(&name.as_str()) {
                return Err(SdkError::DuplicateEndpoint { name: name.clone() });
            }
            names.push(name);
        }
        let index_of = |what: String, name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| SdkError::UnknownEndpoint { what, name: name.to_owned() })
        };
        let mut by_program = [0usize; Program::ALL.len()];
        for (program, name) in &self.routes {
            by_program[program.index()] = index_of(program.to_string(), name)?;
        }
        let mut by_kind = Vec::new();
        for (kind, name) in &self.kind_routes {
            by_kind.push((*kind, index_of((*kind).to_owned(), name)?));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|error| SdkError::Directory { path: self.dir.clone(), error })?;
        let subject_key =
            crate::keys::load_or_create_key(self.dir.join("subject.key")).map_err(AgentError::from)?;
        let filter = Arc::new(self.filter.build());
        if let Some(terms) = &self.licence {
            filter.policy().check_licence(terms)?;
        }
        let on = Program::ALL.map(|p| filter.enabled(p));
        let mut workers = Vec::new();
        for (name, connector) in &self.endpoints {
            let agent = Agent::open(
                self.customer.clone(),
                self.device.clone(),
                self.filter.build(),
                self.dir.join(format!("{name}.spool.db")),
                self.spool.clone(),
            )?;
            workers.push(Worker::start(
                name.clone(),
                agent,
                WorkerConfig {
                    connector: connector.clone(),
                    policy_version: self.policy_version,
                    first_upload_after: self.first_upload_after,
                    upload_every: self.upload_every,
                    retry: self.retry,
                    clock: self.clock.clone(),
                },
            )?);
        }
        let consent_route = route_of(&by_program, &by_kind, Program::PersonalisedUsage, "consent");
        Ok(Telemetry {
            inner: Arc::new(Inner {
                customer: self.customer,
                device: self.device,
                product: self.product,
                version: self.version,
                filter,
                on,
                workers,
                by_program,
                by_kind,
                consent_route,
                subject_key,
                people: RwLock::new(People::default()),
                clock: self.clock,
                geolocate: self.geolocate,
                queue_capacity: self.queue_capacity,
                stats: Counters::default(),
            }),
        })
    }
}

fn route_of(by_program: &[usize], by_kind: &[(&'static str, usize)], program: Program, kind: &str) -> usize {
    by_kind.iter().find(|(k, _)| *k == kind).map_or(by_program[program.index()], |(_, i)| *i)
}

/// The application's telemetry handle: cheap to clone, `Send + Sync`; no
/// call blocks on a disk or the network except those that say so
/// ([`Telemetry::set_consent`], [`Telemetry::set_user`],
/// [`Telemetry::flush`], [`Telemetry::shutdown`]).
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("customer", &self.inner.customer)
            .field("device", &self.inner.device)
            .field("product", &self.inner.product)
            .finish_non_exhaustive()
    }
}

struct Inner {
    customer: CustomerId,
    device: DeviceId,
    product: String,
    version: String,
    filter: Arc<Filter>,
    on: [bool; Program::ALL.len()],
    workers: Vec<Worker>,
    by_program: [usize; Program::ALL.len()],
    by_kind: Vec<(&'static str, usize)>,
    consent_route: usize,
    subject_key: [u8; 32],
    people: RwLock<People>,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    geolocate: Option<Arc<Geolocate>>,
    queue_capacity: usize,
    stats: Counters,
}

/// Who uses the application now, and whose personalised-usage consent
/// stands (by subject; read from the spool when a person is first set).
#[derive(Default)]
struct People {
    current: Option<(UserId, Subject)>,
    /// Whose consent stands: `true` only once stored; absent or `false`
    /// means no personalised record.
    consented: HashMap<Subject, bool>,
    /// Bumped by every `set_consent` of the subject, so a `set_user` that
    /// read the stored choice before it never overwrites the newer one.
    changes: HashMap<Subject, u64>,
}

impl People {
    fn changes(&self, subject: &Subject) -> u64 {
        self.changes.get(subject).copied().unwrap_or(0)
    }
}

thread_local! {
    /// The redaction report the calls of this thread fill (and nobody reads).
    static REPORT: std::cell::RefCell<RedactionReport> = std::cell::RefCell::new(RedactionReport::default());
}

/// The longest text argument kept (64 KiB): a longer one (a crash's
/// stack, say) is cut at a character boundary and counted
/// ([`SdkStats::truncated`]).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct Counters {
    truncated: AtomicU64,
    recorded: AtomicU64,
    filtered_out: AtomicU64,
    dropped_queue_full: AtomicU64,
    not_consented: AtomicU64,
}

/// The SDK's counts since it was built.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct SdkStats {
    /// Records handed to an endpoint's worker.
    pub recorded: u64,
    /// Records the filter dropped (a kind the program does not carry, an
    /// interaction with a web application or action the policy does not
    /// define).
    pub filtered_out: u64,
    /// Records dropped because an endpoint's queue was full.
    pub dropped_queue_full: u64,
    /// Personalised records not made because the person has not agreed.
    pub not_consented: u64,
    /// Text arguments cut to [`MAX_TEXT_BYTES`].
    pub truncated: u64,
    /// Per endpoint: records in its memory queue now.
    pub queued: Vec<(String, u64)>,
}

/// What one endpoint did during a [`Telemetry::flush`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct EndpointFlush {
    /// The endpoint.
    pub name: String,
    /// Records the service acknowledged during the flush.
    pub sent: u64,
    /// Records still waiting in the endpoint's spool afterwards; `None`
    /// when the endpoint did not answer in time (or its spool could not be
    /// read).
    pub pending: Option<u64>,
    /// Why the upload failed, if it did (the records stay spooled).
    pub error: Option<String>,
}

/// What a [`Telemetry::flush`] did, per endpoint.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct FlushReport {
    /// One entry per endpoint, in the order they were given.
    pub endpoints: Vec<EndpointFlush>,
}

impl FlushReport {
    /// Records still waiting at the endpoint `name`.
    pub fn pending(&self, name: &str) -> Option<u64> {
        self.endpoints.iter().find(|e| e.name == name).and_then(|e| e.pending)
    }

    /// Records acknowledged by the endpoint `name` during the flush.
    pub fn sent(&self, name: &str) -> Option<u64> {
        self.endpoints.iter().find(|e| e.name == name).map(|e| e.sent)
    }
}

impl Telemetry {
    /// Whether the customer's policy has `program` on.
    pub fn enabled(&self, program: Program) -> bool {
        self.inner.on[program.index()]
    }

    /// The counts since the handle was built.
    pub fn stats(&self) -> SdkStats {
        let s = &self.inner.stats;
        SdkStats {
            recorded: s.recorded.load(Relaxed),
            filtered_out: s.filtered_out.load(Relaxed),
            dropped_queue_full: s.dropped_queue_full.load(Relaxed),
            not_consented: s.not_consented.load(Relaxed),
            truncated: s.truncated.load(Relaxed),
            queued: self
                .inner
                .workers
                .iter()
                .map(|w| (w.name.clone(), w.queued.load(Relaxed) as u64))
                .collect(),
        }
    }

    /// A feature of the product was used: anonymous usage (and support
    /// telemetry) count it; personalised usage also files it under the
    /// current person, if they agreed.
    pub fn feature_used(&self, feature: &str) {
        let usage = || {
            EventBody::FeatureUsage(FeatureUsage {
                product: self.inner.product.clone(),
                feature: self.bounded(feature),
                count: 1,
            })
        };
        if self.enabled(Program::AnonymousUsage) {
            self.record_event(Program::AnonymousUsage, None, usage());
        }
        if self.enabled(Program::PersonalisedUsage) {
            self.record_personal(usage);
        }
    }

    /// Keyboard and mouse interaction with a web application during one
    /// user action (issue #16 point 6): `host` is the application's host
    /// (or a URL, read for its host only), `action` a name from the
    /// customer's list. Recorded under personalised usage for the current
    /// person, if they agreed, and only when the customer's policy defines
    /// the application and the action (`[interactions]`,
    /// `privtel_filter::Interactions`); anything else is dropped here,
    /// before a record exists, and counted in [`SdkStats::filtered_out`].
    /// Only counts and the duration are recorded, never which keys.
    pub fn interaction(&self, host: &str, action: &str, keys: u32, clicks: u32, duration: Duration) {
        if !self.enabled(Program::PersonalisedUsage) {
            return;
        }
        let defined = &self.inner.filter.policy().interactions;
        let Some(application) = defined.application(host).filter(|a| defined.allows(a, action)) else {
            self.inner.stats.filtered_out.fetch_add(1, Relaxed);
            return;
        };
        self.record_personal(|| {
            EventBody::Interaction(Interaction {
                application,
                action: action.to_owned(),
                keys,
                clicks,
                duration: Personal::Clear(
                    privtel_model::Duration::try_from(duration).unwrap_or(privtel_model::Duration::MAX),
                ),
            })
        });
    }

    /// A configuration value of the product (support telemetry).
    pub fn configuration(&self, key: &str, value: &str) {
        if self.enabled(Program::SupportTelemetry) {
            let body = EventBody::Configuration(ConfigSample {
                product: self.inner.product.clone(),
                key: self.bounded(key),
                value: self.bounded(value),
            });
            self.record_event(Program::SupportTelemetry, None, body);
        }
    }

    /// A performance measurement of the product (support telemetry).
    ///
    /// # Errors
    ///
    /// [`SdkError::Value`] for NaN or an infinity.
    pub fn performance(&self, metric: &str, value: f64, unit: &str) -> Result<(), SdkError> {
        if !self.enabled(Program::SupportTelemetry) {
            return Ok(());
        }
        let value = Finite::new(value)
            .map_err(|e| SdkError::Value { what: "performance value", reason: e.to_string() })?;
        let body = EventBody::Performance(PerformanceSample {
            product: self.inner.product.clone(),
            metric: self.bounded(metric),
            value,
            unit: self.bounded(unit),
        });
        self.record_event(Program::SupportTelemetry, None, body);
        Ok(())
    }

    /// The person rated the product, 0–100, with what they wrote (free
    /// text: scrubbed or dropped as the policy says).
    ///
    /// # Errors
    ///
    /// [`SdkError::Value`] for a score above 100.
    pub fn feedback(&self, score: u8, text: &str) -> Result<(), SdkError> {
        if !self.enabled(Program::SupportTelemetry) {
            return Ok(());
        }
        let score = Score::new(score)
            .map_err(|e| SdkError::Value { what: "feedback score", reason: e.to_string() })?;
        let body = EventBody::Feedback(Feedback {
            product: self.inner.product.clone(),
            score,
            text: Personal::Clear(self.bounded(text)),
        });
        self.record_event(Program::SupportTelemetry, None, body);
        Ok(())
    }

    /// The product crashed: the message and stack are free text, scrubbed
    /// as the policy says (paths, emails, addresses removed) before they
    /// leave the call. Anonymous usage.
    pub fn crash(&self, message: &str) {
        if self.enabled(Program::AnonymousUsage) {
            let body = EventBody::CrashReport(CrashReport {
                product: self.inner.product.clone(),
                version: self.inner.version.clone(),
                message: Personal::Clear(self.bounded(message)),
            });
            self.record_event(Program::AnonymousUsage, None, body);
        }
    }

    /// A licence session starts: the account's email, the device's
    /// fingerprint and OS, and a geohash of the public IP address (through
    /// [`TelemetryBuilder::geolocate`]; the address itself is never
    /// recorded). End it with [`LicenceSessionGuard::end`]; each field is in
    /// the form the policy gives it (the email and fingerprint
    /// pseudonymised by default).
    pub fn licence_session(
        &self,
        email: &str,
        fingerprint: &str,
        os: OsInfo,
        public_ip: Option<IpAddr>,
    ) -> LicenceSessionGuard {
        if !self.enabled(Program::LicenceAuthentication) {
            return LicenceSessionGuard { sdk: self.clone(), session: None };
        }
        let start = (self.inner.clock)();
        let geohash = public_ip
            .and_then(|ip| self.inner.geolocate.as_ref().and_then(|g| g(ip)))
            .map_or(Personal::Withheld, Personal::Clear);
        let session = LicenceSession {
            email: Personal::Clear(self.bounded(email)),
            start: Personal::Clear(start),
            end: Personal::Withheld,
            device_fingerprint: Personal::Clear(self.bounded(fingerprint)),
            os,
            geohash,
        };
        self.record_event(Program::LicenceAuthentication, None, EventBody::LicenceSession(session.clone()));
        LicenceSessionGuard { sdk: self.clone(), session: Some(session) }
    }

    /// The person now using the application. Their consent to
    /// personalised usage is read from the spool (this call waits for it);
    /// if it stands, their profile is recorded under personalised usage.
    ///
    /// # Errors
    ///
    /// A spool error, or the consent endpoint stopped.
    pub fn set_user(&self, profile: &UserProfile) -> Result<(), SdkError> {
        let subject = self.subject(&profile.id);
        // The new person is current at once, not consented until their
        // stored choice is read: nothing of theirs is filed under the
        // previous person, and nothing personalised is made meanwhile.
        let seen = {
            let mut people = self.inner.people.write().unwrap_or_else(|p| p.into_inner());
            people.current = Some((profile.id.clone(), subject));
            people.consented.remove(&subject);
            people.changes(&subject)
        };
        if !self.enabled(Program::PersonalisedUsage) {
            return Ok(());
        }
        let granted = self.stored_consent(subject)?.is_some_and(|s| s.granted);
        let mut people = self.inner.people.write().unwrap_or_else(|p| p.into_inner());
        // A choice made while the stored one was read is newer: keep it.
        if people.changes(&subject) != seen {
            return Ok(());
        }
        people.consented.insert(subject, granted);
        if granted && people.current.as_ref().is_some_and(|(_, s)| *s == subject) {
            self.send_profile(profile, subject);
        }
        Ok(())
    }

    /// Nobody uses the application now: later records are anonymous only.
    pub fn clear_user(&self) {
        self.inner.people.write().unwrap_or_else(|p| p.into_inner()).current = None;
    }

    /// A person's consent to personalised usage, given or withdrawn, from
    /// `source`: stored durably (this call waits until it is) with its
    /// time, sent to the service as a consent record, and honoured from
    /// this call on. A withdrawal purges every waiting personalised record
    /// of the person from every endpoint's spool.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotPerPerson`] for another program;
    /// [`SdkError::ProgramOff`] when the customer's policy has it off; a
    /// spool error (nothing changed then).
    pub fn set_consent(
        &self,
        user: &UserId,
        program: Program,
        granted: bool,
        source: ConsentSource,
    ) -> Result<ConsentChange, SdkError> {
        if program != Program::PersonalisedUsage {
            return Err(SdkError::NotPerPerson { program });
        }
        if !self.enabled(program) {
            return Err(SdkError::ProgramOff { program });
        }
        let subject = self.subject(user);
        let at = (self.inner.clock)();
        let record = Record {
            program,
            body: RecordBody::Consent(Consent {
                device: self.inner.device.clone(),
                user: Some(user.clone()),
                program,
                granted,
                source,
                at,
            }),
        };
        let mut report = RedactionReport::default();
        let filtered = self.inner.filter.apply(record, &mut report);
        let (reply_tx, reply_rx) = mpsc::sync_channel(self.inner.workers.len());
        let mut asked = 0;
        let seen = {
            // Under the write lock: no personalised record of this person
            // can be queued between the check and the purge. A withdrawal
            // takes effect at once; a grant only once it is stored.
            let mut people = self.inner.people.write().unwrap_or_else(|p| p.into_inner());
            *people.changes.entry(subject).or_insert(0) += 1;
            if !granted {
                people.consented.insert(subject, false);
            }
            for (i, w) in self.inner.workers.iter().enumerate() {
                let msg = if i == self.inner.consent_route {
                    Msg::Consent {
                        subject,
                        program,
                        state: ConsentState::new(granted, source, at),
                        record: filtered.clone(),
                        reply: reply_tx.clone(),
                    }
                } else if !granted {
                    Msg::Purge { subject, program, reply: reply_tx.clone() }
                } else {
                    continue;
                };
                w.control(msg)?;
                asked += 1;
            }
            people.changes(&subject)
        };
        // Every endpoint's answer: the choice stored and, on a withdrawal,
        // every spool purged, before this returns.
        let deadline = Instant::now() + CONTROL_WAIT;
        let mut change = ConsentChange::default();
        for _ in 0..asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match reply_rx.recv_timeout(left) {
                Ok(Ok(c)) => {
                    change.seq = change.seq.or(c.seq);
                    change.purged += c.purged;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    let name = self.inner.workers[self.inner.consent_route].name.clone();
                    return Err(SdkError::Timeout { name, waited: CONTROL_WAIT });
                }
            }
        }
        if granted {
            let mut people = self.inner.people.write().unwrap_or_else(|p| p.into_inner());
            if people.changes(&subject) == seen {
                people.consented.insert(subject, true);
            }
        }
        Ok(change)
    }

    /// Appends everything queued and uploads at once, on every endpoint;
    /// waits at most `timeout` in all. An endpoint that does not answer in
    /// time is reported with an error, its records still spooled.
    ///
    /// # Errors
    ///
    /// [`SdkError::Stopped`] if the handle was shut down.
    pub fn flush(&self, timeout: Duration) -> Result<FlushReport, SdkError> {
        let deadline = Instant::now() + timeout;
        let mut waiting = Vec::new();
        for w in &self.inner.workers {
            let (tx, rx) = mpsc::sync_channel(1);
            w.control(Msg::Flush(tx))?;
            waiting.push((w.name.clone(), rx));
        }
        let mut report = FlushReport::default();
        for (name, rx) in waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            let entry = match rx.recv_timeout(left) {
                Ok(e) => e,
                Err(_) => EndpointFlush {
                    name: name.clone(),
                    sent: 0,
                    pending: None,
                    error: Some(format!("no answer within {timeout:?}")),
                },
            };
            report.endpoints.push(entry);
        }
        Ok(report)
    }

    /// Flushes within `timeout`, then stops every endpoint's worker (what
    /// was not sent stays spooled for the next start). Other clones of the
    /// handle keep working until they are dropped, but their records are
    /// spooled only, not uploaded, once the workers stop.
    ///
    /// # Errors
    ///
    /// As [`Telemetry::flush`].
    pub fn shutdown(self, timeout: Duration) -> Result<FlushReport, SdkError> {
        let report = self.flush(timeout)?;
        for w in &self.inner.workers {
            let _ = w.control(Msg::Stop);
        }
        Ok(report)
    }

    /// Asks the endpoint carrying version checks whether a newer version
    /// of the product exists on `channel` (`stable`, `beta`), for this
    /// build's platform; records the check (a `VersionCheck` event: product,
    /// version, channel — nothing of the person). The query goes on an
    /// anonymous session of its own (no device or person named: the
    /// service knows the customer from the client certificate). An offer
    /// comes back only if it is newer and its installer an `https://` URL;
    /// download it, then [`crate::verify_installer`] it before use. Waits
    /// for the answer, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`SdkError::Timeout`]; an agent error (the connection, a refusal, an
    /// offer that does not hold).
    pub fn check_version(&self, channel: &str, timeout: Duration) -> Result<VersionOffer, SdkError> {
        if !self.enabled(Program::VersionCheck) {
            return Ok(VersionOffer::Off);
        }
        // Checked here, before anything is queued or any connection opened.
        privtel_wire::VersionQuery::new(0, &self.inner.product, &self.inner.version, channel)
            .map_err(AgentError::from)?;
        let body = EventBody::VersionCheck(VersionCheck {
            product: self.inner.product.clone(),
            current_version: self.inner.version.clone(),
            channel: channel.to_owned(),
        });
        self.record_event(Program::VersionCheck, None, body);
        let route =
            route_of(&self.inner.by_program, &self.inner.by_kind, Program::VersionCheck, "version_check");
        let worker = &self.inner.workers[route];
        let (tx, rx) = mpsc::sync_channel(1);
        worker.control(Msg::CheckVersion {
            product: self.inner.product.clone(),
            current: self.inner.version.clone(),
            channel: channel.to_owned(),
            reply: tx,
        })?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(SdkError::from),
            Err(RecvTimeoutError::Timeout) => {
                Err(SdkError::Timeout { name: worker.name.clone(), waited: timeout })
            }
            Err(RecvTimeoutError::Disconnected) => Err(SdkError::Stopped { name: worker.name.clone() }),
        }
    }

    /// `text`, cut to [`MAX_TEXT_BYTES`] at a character boundary (counted),
    /// so no argument can make a record the spool cannot take.
    fn bounded(&self, text: &str) -> String {
        if text.len() <= MAX_TEXT_BYTES {
            return text.to_owned();
        }
        self.inner.stats.truncated.fetch_add(1, Relaxed);
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    }

    fn subject(&self, user: &UserId) -> Subject {
        let mut h = blake3::Hasher::new_keyed(&self.inner.subject_key);
        h.update(b"privtel subject v1\0");
        h.update(user.as_str().as_bytes());
        Subject::from_bytes(*h.finalize().as_bytes())
    }

    fn stored_consent(&self, subject: Subject) -> Result<Option<ConsentState>, SdkError> {
        let worker = &self.inner.workers[self.inner.consent_route];
        let (tx, rx) = mpsc::sync_channel(1);
        worker.control(Msg::ReadConsent { subject, reply: tx })?;
        let waited = Duration::from_secs(30);
        match rx.recv_timeout(waited) {
            Ok(r) => r.map_err(SdkError::from),
            Err(RecvTimeoutError::Timeout) => Err(SdkError::Timeout { name: worker.name.clone(), waited }),
            Err(RecvTimeoutError::Disconnected) => Err(SdkError::Stopped { name: worker.name.clone() }),
        }
    }

    fn event(&self, user: Option<UserId>, body: EventBody) -> RecordBody {
        RecordBody::Event(Event {
            id: EventId::random(),
            device: self.inner.device.clone(),
            user,
            recorded_at: (self.inner.clock)(),
            body,
        })
    }

    fn record_event(&self, program: Program, user: Option<UserId>, body: EventBody) {
        let record = Record { program, body: self.event(user, body) };
        self.dispatch(record, None);
    }

    /// A personalised copy of an event, filed under the current person, if
    /// they agreed. Holds the people lock while queueing, so a withdrawal
    /// cannot slip between the check and the queue.
    fn record_personal(&self, body: impl FnOnce() -> EventBody) {
        let people = self.inner.people.read().unwrap_or_else(|p| p.into_inner());
        let Some((user, subject)) = &people.current else { return };
        if people.consented.get(subject) != Some(&true) {
            self.inner.stats.not_consented.fetch_add(1, Relaxed);
            return;
        }
        let record =
            Record { program: Program::PersonalisedUsage, body: self.event(Some(user.clone()), body()) };
        self.dispatch(record, Some(*subject));
    }

    fn send_profile(&self, profile: &UserProfile, subject: Subject) {
        // The profile names the person as their events do: in the form the
        // policy gives `event.username` (a pseudonym, say), or not at all.
        let Some(id) = self.inner.filter.user_key(&profile.id) else { return };
        let user = User {
            id,
            username: Personal::Withheld,
            upn: Personal::Withheld,
            first_name: Personal::Clear(self.bounded(&profile.first_name)),
            last_name: Personal::Clear(self.bounded(&profile.last_name)),
            job_title: Personal::Withheld,
            email: Personal::Clear(self.bounded(&profile.email)),
            phone: Personal::Withheld,
        };
        self.dispatch(
            Record { program: Program::PersonalisedUsage, body: RecordBody::User(user) },
            Some(subject),
        );
    }

    fn dispatch(&self, record: Record, subject: Option<Subject>) {
        let route =
            route_of(&self.inner.by_program, &self.inner.by_kind, record.program, record.body.kind_name());
        // One report per thread, reused: a fresh one is a 12 KiB table
        // zeroed on every call (its counts are not read here).
        let filtered = REPORT.with(|report| self.inner.filter.apply(record, &mut report.borrow_mut()));
        let Some(filtered) = filtered else {
            self.inner.stats.filtered_out.fetch_add(1, Relaxed);
            return;
        };
        let worker = &self.inner.workers[route];
        if worker.queued.fetch_add(1, Relaxed) >= self.inner.queue_capacity {
            worker.queued.fetch_sub(1, Relaxed);
            self.inner.stats.dropped_queue_full.fetch_add(1, Relaxed);
            return;
        }
        if worker.tx.send(Msg::Record(filtered, subject)).is_err() {
            worker.queued.fetch_sub(1, Relaxed);
            self.inner.stats.dropped_queue_full.fetch_add(1, Relaxed);
            return;
        }
        self.inner.stats.recorded.fetch_add(1, Relaxed);
    }
}

/// An open licence session: [`LicenceSessionGuard::end`] records its end.
/// Dropped without `end`, the session stays open in the data (its end
/// withheld), as a crash would leave it.
#[derive(Debug)]
pub struct LicenceSessionGuard {
    sdk: Telemetry,
    session: Option<LicenceSession>,
}

impl LicenceSessionGuard {
    /// Records the session's end, now.
    pub fn end(mut self) {
        if let Some(mut session) = self.session.take() {
            session.end = Personal::Clear((self.sdk.inner.clock)());
            self.sdk.record_event(Program::LicenceAuthentication, None, EventBody::LicenceSession(session));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Msg::Stop);
        }
        // Each worker spools what is queued and stops; one busy in an
        // upload is waited for at most 5 s, then left to finish alone.
        let deadline = after(Duration::from_secs(5));
        for w in &self.workers {
            if let Some(h) = w.handle.lock().unwrap_or_else(|p| p.into_inner()).take() {
                while !h.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if h.is_finished() {
                    let _ = h.join();
                }
            }
        }
    }
}

enum Msg {
    Record(Filtered, Option<Subject>),
    Consent {
        subject: Subject,
        program: Program,
        state: ConsentState,
        record: Option<Filtered>,
        reply: SyncSender<Result<ConsentChange, AgentError>>,
    },
    Purge {
        subject: Subject,
        program: Program,
        reply: SyncSender<Result<ConsentChange, AgentError>>,
    },
    ReadConsent {
        subject: Subject,
        reply: SyncSender<Result<Option<ConsentState>, AgentError>>,
    },
    Flush(SyncSender<EndpointFlush>),
    CheckVersion {
        product: String,
        current: String,
        channel: String,
        reply: SyncSender<Result<VersionOffer, AgentError>>,
    },
    Stop,
}

struct WorkerConfig {
    connector: Connector,
    policy_version: u32,
    first_upload_after: Duration,
    upload_every: Duration,
    retry: RetryBudget,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

/// One endpoint's background worker: owns the endpoint's agent (its spool).
struct Worker {
    name: String,
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    fn start(name: String, agent: Agent, config: WorkerConfig) -> Result<Self, SdkError> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let n = name.clone();
        let handle = std::thread::Builder::new()
            .name(format!("privtel-{name}"))
            .spawn(move || run(n, agent, rx, q, config))
            .map_err(|error| SdkError::Directory { path: PathBuf::from("<thread>"), error })?;
        Ok(Self { name, tx, queued, handle: Mutex::new(Some(handle)) })
    }

    fn control(&self, msg: Msg) -> Result<(), SdkError> {
        self.tx.send(msg).map_err(|_| SdkError::Stopped { name: self.name.clone() })
    }
}

/// Most records appended in one transaction.
const APPEND_GROUP: usize = 1_000;

/// How long a call that waits for a worker (consent, the current person)
/// waits at most.
const CONTROL_WAIT: Duration = Duration::from_secs(30);

/// `now + wait`, or ten years on when that overflows (a wait of
/// `Duration::MAX` means "not in this process's life").
fn after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait).or_else(|| now.checked_add(Duration::from_secs(10 * 365 * 86_400))).unwrap_or(now)
}

/// The worker's state between messages.
struct Run {
    name: String,
    agent: Agent,
    queued: Arc<AtomicUsize>,
    config: WorkerConfig,
    /// Records taken from the queue, not yet appended.
    batch: Vec<(Filtered, Option<Subject>)>,
    /// Records the spool can never take (too large to encode), dropped.
    unspoolable: u64,
    last_error: Option<String>,
    /// What the service asked for when it deferred the upload of the last
    /// flush: the worker's next upload waits at least that long.
    deferred: Option<Duration>,
}

impl Run {
    /// Appends the records taken so far, in one transaction. When the
    /// spool refuses the group, each record is tried alone: one that can
    /// never be encoded (over the store's size limit) is dropped and
    /// counted; on any other error (a full disk) the rest are kept and tried
    /// again with the next records — still counted as queued, so callers
    /// drop, rather than this hold more, once the queue is full.
    fn spool_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let now = (self.config.clock)();
        let n = self.batch.len();
        match self.agent.outbox().append_for(&self.batch, now) {
            Ok(_) => {
                self.batch.clear();
                self.queued.fetch_sub(n, Relaxed);
            }
            Err(_) => {
                let mut kept = Vec::new();
                for item in std::mem::take(&mut self.batch) {
                    match self.agent.outbox().append_for(std::slice::from_ref(&item), now) {
                        Ok(_) => {
                            self.queued.fetch_sub(1, Relaxed);
                        }
                        Err(AgentError::Store(privtel_store::Error::Encode(_))) => {
                            self.unspoolable += 1;
                            self.queued.fetch_sub(1, Relaxed);
                            self.last_error = Some("a record too large to spool was dropped".into());
                        }
                        Err(e) => {
                            self.last_error = Some(format!("spooling: {e}"));
                            kept.push(item);
                        }
                    }
                }
                self.batch = kept;
            }
        }
    }

    /// Removes the person's records of `program`: those not yet appended
    /// and those in the spool.
    fn purge(&mut self, subject: &Subject, program: Program) -> Result<u64, AgentError> {
        let before = self.batch.len();
        self.batch.retain(|(r, s)| !(s.as_ref() == Some(subject) && r.program() == program));
        let dropped = before - self.batch.len();
        self.queued.fetch_sub(dropped, Relaxed);
        Ok(self.agent.outbox().purge_subject(subject, program)? + dropped as u64)
    }

    /// Runs one control message.
    fn control(&mut self, msg: Msg) {
        match msg {
            Msg::Record(r, s) => self.batch.push((r, s)),
            Msg::Consent { subject, program, state, record, reply } => {
                let now = (self.config.clock)();
                let mut dropped = 0;
                if !state.granted {
                    let before = self.batch.len();
                    self.batch.retain(|(r, s)| !(s.as_ref() == Some(&subject) && r.program() == program));
                    dropped = before - self.batch.len();
                    self.queued.fetch_sub(dropped, Relaxed);
                }
                let r =
                    self.agent.outbox().record_consent(&subject, program, state, record.as_ref(), now).map(
                        |mut c| {
                            c.purged += dropped as u64;
                            c
                        },
                    );
                let _ = reply.send(r);
            }
            Msg::Purge { subject, program, reply } => {
                let r = self.purge(&subject, program).map(|n| {
                    let mut c = ConsentChange::default();
                    c.purged = n;
                    c
                });
                let _ = reply.send(r);
            }
            Msg::ReadConsent { subject, reply } => {
                let _ = reply.send(self.agent.outbox().consent(&subject, Program::PersonalisedUsage));
            }
            Msg::CheckVersion { product, current, channel, reply } => {
                let now = (self.config.clock)();
                let agent = &mut self.agent;
                let offer =
                    self.config.connector.connect().and_then(|mut conn| {
                        agent.check_version(&mut conn, &product, &current, &channel, now)
                    });
                let _ = reply.send(offer);
            }
            Msg::Flush(reply) => {
                // Every record queued before the flush was taken before it
                // (messages run in order): append, then upload.
                self.spool_batch();
                let (sent, error) = match self.upload() {
                    Ok(sent) => (sent, self.last_error.take()),
                    Err(e) => {
                        self.deferred = deferral(&e);
                        (0, Some(e.to_string()))
                    }
                };
                let pending = self.agent.outbox().len(None).ok();
                let _ = reply.send(EndpointFlush { name: self.name.clone(), sent, pending, error });
            }
            Msg::Stop => {}
        }
    }

    /// On-device retention, then one upload of everything waiting.
    fn upload(&mut self) -> Result<u64, AgentError> {
        let now = (self.config.clock)();
        self.agent.maintain(now)?;
        upload(&mut self.agent, &self.config)
    }
}

fn run(name: String, agent: Agent, rx: Receiver<Msg>, queued: Arc<AtomicUsize>, config: WorkerConfig) {
    let mut next_upload = after(config.first_upload_after);
    let mut failures = 0u32;
    let mut w = Run {
        name,
        agent,
        queued,
        config,
        batch: Vec::new(),
        unspoolable: 0,
        last_error: None,
        deferred: None,
    };
    loop {
        let first = match rx.recv_timeout(next_upload.saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Msg::Stop),
        };
        // Take every record already waiting (up to a group), stopping at
        // the first control message: it runs after them, in order.
        let mut control = None;
        let mut next = first;
        while let Some(m) = next.take() {
            match m {
                Msg::Record(r, s) => {
                    w.batch.push((r, s));
                    if w.batch.len() < APPEND_GROUP {
                        next = rx.try_recv().ok();
                    }
                }
                other => control = Some(other),
            }
        }
        w.spool_batch();
        match control {
            None => {}
            Some(Msg::Stop) => {
                // Whatever is still queued runs before the worker stops
                // (a withdrawal's purge above all); a flush is answered.
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Stop => {}
                        Msg::Flush(reply) => {
                            let pending = w.agent.outbox().len(None).ok();
                            let error = Some("the endpoint is stopping".to_owned());
                            let _ =
                                reply.send(EndpointFlush { name: w.name.clone(), sent: 0, pending, error });
                        }
                        other => w.control(other),
                    }
                }
                w.spool_batch();
                return;
            }
            Some(m @ Msg::Flush(_)) => {
                w.control(m);
                // A deferral the flush met is honoured as any other (the
                // service's wait, within the retry policy's longest).
                let wait = match w.deferred.take() {
                    Some(asked) => w.config.retry.wait(1, Some(asked)).max(w.config.upload_every),
                    None => w.config.upload_every,
                };
                next_upload = after(wait);
                failures = 0;
                continue;
            }
            Some(m) => w.control(m),
        }
        if Instant::now() >= next_upload {
            match w.upload() {
                Ok(_) => {
                    failures = 0;
                    next_upload = after(w.config.upload_every);
                }
                Err(e) => {
                    // Backoff, and never sooner than a deferral asks (the
                    // service's `retry_after`, within the retry policy's
                    // longest wait), as `Agent::deliver` does.
                    failures = failures.saturating_add(1);
                    next_upload = after(w.config.retry.wait(failures, deferral(&e)));
                    w.last_error = Some(e.to_string());
                }
            }
        }
    }
}

/// One upload of everything waiting; returns the records acknowledged, or
/// why it failed (nothing unacknowledged is lost):
/// [`AgentError::Deferred`] with the service's wait when it deferred a
/// batch.
fn upload(agent: &mut Agent, config: &WorkerConfig) -> Result<u64, AgentError> {
    let mut sent = 0;
    // An upload that moved the spool to a new stream (its hello named the
    // old one) is followed at once by one under the new stream, once, as
    // `Agent::deliver` does: not a failure to back off from.
    for again in [false, true] {
        if agent.outbox().is_empty()? {
            return Ok(sent);
        }
        let mut conn = config.connector.connect()?;
        let now = (config.clock)();
        let report = agent.upload(&mut conn, config.policy_version, now)?;
        let _ = agent.goodbye(&mut conn, now);
        sent += report.sent_total();
        if report.new_stream && !again {
            continue;
        }
        return match report.retry_after {
            Some(retry_after) => Err(AgentError::Deferred {
                retry_after,
                reason: report.deferred_because.unwrap_or_else(|| "no reason given".to_owned()),
            }),
            None => Ok(sent),
        };
    }
    Ok(sent)
}

/// The wait a deferral asks for, if `e` is one.
fn deferral(e: &AgentError) -> Option<Duration> {
    match e {
        AgentError::Deferred { retry_after, .. } => Some(*retry_after),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spools keep no record longer than the policy's TTLs: events,
    /// objects and the inactive-device purge all come from the policy.
    #[test]
    fn the_policy_sets_the_spools_retention() {
        let policy = Policy::from_toml("[retention]\nevents = 7\nobjects = 7\ninactive_device = 7\n")
            .expect("a policy");
        let builder = TelemetryBuilder::new(
            CustomerId::new("acme").expect("an id"),
            DeviceId::new("dev-1").expect("an id"),
            "app",
            "1.0",
        )
        .policy(policy.clone());
        assert_eq!(builder.spool.retention, crate::policy_retention(&policy));
        assert_eq!(builder.spool.retention.objects.days(), 7);
    }
}

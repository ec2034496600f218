//! [`RequestRegister`]: end users' requests (a copy of their data, or its
//! erasure), the customer's notification queue, the customer's instruction,
//! and the deadlines.
//!
//! The promise it keeps: the vendor notifies the customer promptly of every
//! request an end user makes to the vendor, and does not act on it without
//! the customer's prior instruction. An erasure is done within 24 hours of
//! the instruction; a copy is handed out within 30 days of the request.
//!
//! The register is a SQLite file (schema version [`REQUESTS_SCHEMA_VERSION`],
//! application id [`REQUESTS_APPLICATION_ID`]) held open by one instance at a
//! time. The subject of a request (an end user's [`UserId`]) and the
//! request's reference text are kept only while the request is open: when it
//! is done or declined they are deleted with `secure_delete` on and the
//! write-ahead log is checkpointed and truncated, so no byte of the files
//! holds them any more.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use privtel_model::{CustomerId, Duration, Timestamp, UserId};
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};

use crate::error::RequestError;

/// The schema version of a register file (`PRAGMA user_version`). A file
/// of a later version is refused; an earlier one is migrated on open.
pub const REQUESTS_SCHEMA_VERSION: i64 = 1;

/// The SQLite application id of a register file (`PRAGMA application_id`):
/// the bytes `PTRQ`. A SQLite file with another nonzero id is refused.
pub const REQUESTS_APPLICATION_ID: i32 = 0x5054_5251;

/// The longest reference text, in bytes.
pub const MAX_REFERENCE_LEN: usize = 256;

/// The longest name of the customer's administrator giving an
/// instruction, in bytes.
pub const MAX_INSTRUCTED_BY_LEN: usize = 128;

/// The longest reason for declining, in bytes.
pub const MAX_DECLINE_REASON_LEN: usize = 2000;

/// The default time to do an erasure: 24 hours after the customer's
/// instruction to proceed.
pub const DEFAULT_ERASURE_DEADLINE: Duration = Duration::hours(24);

/// The default time to hand out a copy: 30 days after the request was
/// received.
pub const DEFAULT_ACCESS_DEADLINE: Duration = Duration::days(30);

/// The default time a request may wait for the customer's instruction
/// before [`RequestRegister::overdue`] reports it: 3 days.
pub const DEFAULT_RESPONSE_WINDOW: Duration = Duration::days(3);

/// The schema, version 1. Codes, not names, in every enumerated column:
/// see [`RequestKind::code`], [`RequestState::code`], [`Decision::code`]
/// and [`NotificationEvent::code`]. Instants are Unix nanoseconds.
const SCHEMA_V1: &str = "
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    kind INTEGER NOT NULL,
    state INTEGER NOT NULL,
    received INTEGER NOT NULL,
    due INTEGER,
    instructed INTEGER,
    instructed_by TEXT,
    decision INTEGER,
    decline_reason TEXT,
    completed INTEGER,
    records INTEGER,
    suppressed INTEGER
);
CREATE INDEX requests_by_customer ON requests (customer, state);
CREATE INDEX requests_by_state ON requests (state);
-- What is personal about an open request: deleted when it closes.
CREATE TABLE open_subjects (
    request INTEGER PRIMARY KEY REFERENCES requests (id),
    subject TEXT NOT NULL,
    reference TEXT NOT NULL
);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    request INTEGER NOT NULL REFERENCES requests (id),
    event INTEGER NOT NULL,
    at INTEGER NOT NULL,
    acknowledged INTEGER
);
CREATE INDEX notifications_unread ON notifications (customer, acknowledged);
";

/// What an end user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// A copy of their data (due [`RequestOptions::access_deadline`] after
    /// the request was received).
    Access,
    /// The erasure of their data (due [`RequestOptions::erasure_deadline`]
    /// after the customer's instruction to proceed).
    Erasure,
}

impl RequestKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 2] = [Self::Access, Self::Erasure];

    /// The stable code stored in the register.
    pub const fn code(self) -> u8 {
        match self {
            Self::Access => 1,
            Self::Erasure => 2,
        }
    }

    /// The kind of a stored code, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Its name: `access` or `erasure`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Erasure => "erasure",
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestState {
    /// Recorded, the customer notified; nothing is done until the customer
    /// instructs.
    AwaitingInstruction,
    /// The customer said proceed; not done yet.
    Instructed,
    /// The customer declined it. Closed: its subject is gone.
    Declined,
    /// Done. Closed: its subject is gone.
    Done,
}

impl RequestState {
    /// Every state, in code order.
    pub const ALL: [Self; 4] = [Self::AwaitingInstruction, Self::Instructed, Self::Declined, Self::Done];

    /// The stable code stored in the register.
    pub const fn code(self) -> u8 {
        match self {
            Self::AwaitingInstruction => 1,
            Self::Instructed => 2,
            Self::Declined => 3,
            Self::Done => 4,
        }
    }

    /// The state of a stored code, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether the request is closed (declined or done).
    pub const fn is_closed(self) -> bool {
        matches!(self, Self::Declined | Self::Done)
    }
}

/// The customer's instruction about one request.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instruction {
    /// Do it.
    Proceed,
    /// Do not do it. The reason is kept with the closed request as the
    /// customer's record (1 to [`MAX_DECLINE_REASON_LEN`] bytes, no control
    /// characters, not naming the subject).
    Decline {
        /// Why, in the customer's words.
        reason: String,
    },
}

impl Instruction {
    /// The decision it stands for.
    pub fn decision(&self) -> Decision {
        match self {
            Self::Proceed => Decision::Proceed,
            Self::Decline { .. } => Decision::Decline,
        }
    }
}

impl fmt::Debug for Instruction {
    /// The decision and the reason's length, not its words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Proceed => f.write_str("Proceed"),
            Self::Decline { reason } => write!(f, "Decline {{ reason: <{} bytes> }}", reason.len()),
        }
    }
}

/// The decision of an [`Instruction`], as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// [`Instruction::Proceed`].
    Proceed,
    /// [`Instruction::Decline`].
    Decline,
}

impl Decision {
    /// Every decision, in code order.
    pub const ALL: [Self; 2] = [Self::Proceed, Self::Decline];

    /// The stable code stored in the register.
    pub const fn code(self) -> u8 {
        match self {
            Self::Proceed => 1,
            Self::Decline => 2,
        }
    }

    /// The decision of a stored code, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.code() == code)
    }
}

macro_rules! register_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Random (63 bits, never 0), so that it tells a customer nothing of
        /// other customers' requests. Its text form is 16 lowercase hex
        /// digits.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// The id of a number, if it is one an id can be (1 to 2^63 - 1).
            pub fn from_u64(n: u64) -> Option<Self> {
                (n != 0 && i64::try_from(n).is_ok()).then_some(Self(n))
            }

            /// The number.
            pub const fn get(self) -> u64 {
                self.0
            }

            fn sql(self) -> i64 {
                // from_u64 and random keep it below 2^63.
                self.0 as i64
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:016x})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = RequestError;

            /// 16 hex digits.
            fn from_str(s: &str) -> Result<Self, RequestError> {
                let bad = || RequestError::IdText { what: $what, len: s.len() };
                if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                u64::from_str_radix(s, 16).ok().and_then(Self::from_u64).ok_or_else(bad)
            }
        }
    };
}

register_id!(
    /// A request's id.
    RequestId,
    "request id"
);
register_id!(
    /// A notification's id.
    NotificationId,
    "notification id"
);

/// What a completed request did, in counts only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestOutcome {
    /// Records handed out (access) or removed (erasure).
    pub records: u64,
    /// Identifiers put on the suppression list so that they are not stored
    /// again (erasure; 0 for access).
    pub suppressed: u64,
}

/// The customer's instruction as the register keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct InstructionRecord {
    /// When it was given.
    pub at: Timestamp,
    /// The customer's administrator who gave it (their account name).
    pub by: String,
    /// What was decided.
    pub decision: Decision,
    /// Why it was declined (declined requests only).
    pub reason: Option<String>,
}

impl fmt::Debug for InstructionRecord {
    /// Without the administrator's name and the reason's words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstructionRecord")
            .field("at", &self.at)
            .field("by", &format_args!("<{} bytes>", self.by.len()))
            .field("decision", &self.decision)
            .field("reason", &self.reason.as_ref().map(|r| format!("<{} bytes>", r.len())))
            .finish()
    }
}

/// One end user's request, as the register holds it.
///
/// `Debug` shows neither the subject nor the reference.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// Its id.
    pub id: RequestId,
    /// The customer whose end user made it.
    pub customer: CustomerId,
    /// What was asked.
    pub kind: RequestKind,
    /// Where it stands.
    pub state: RequestState,
    /// The end user it is about; `None` once it is closed (the register
    /// no longer holds it).
    pub subject: Option<UserId>,
    /// How it came in and its reference (a channel, a ticket); `None` once
    /// it is closed.
    pub reference: Option<String>,
    /// When it was received.
    pub received: Timestamp,
    /// When it is due: an access request from when it is received, an
    /// erasure from the customer's instruction to proceed (`None` before).
    pub due: Option<Timestamp>,
    /// The customer's instruction, once given.
    pub instruction: Option<InstructionRecord>,
    /// When it was done.
    pub completed: Option<Timestamp>,
    /// What it did, once done.
    pub outcome: Option<RequestOutcome>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |held: bool| if held { "<redacted>" } else { "<gone>" };
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("customer", &self.customer)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("subject", &format_args!("{}", redacted(self.subject.is_some())))
            .field("reference", &format_args!("{}", redacted(self.reference.is_some())))
            .field("received", &self.received)
            .field("due", &self.due)
            .field("instruction", &self.instruction)
            .field("completed", &self.completed)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// What a notification tells the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotificationEvent {
    /// An end user made a request; it waits for the customer's instruction.
    Received,
    /// A request the customer instructed is done.
    Completed,
}

impl NotificationEvent {
    /// Every event, in code order.
    pub const ALL: [Self; 2] = [Self::Received, Self::Completed];

    /// The stable code stored in the register.
    pub const fn code(self) -> u8 {
        match self {
            Self::Received => 1,
            Self::Completed => 2,
        }
    }

    /// The event of a stored code, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

/// A message in a customer's queue. It names the request, not the end
/// user: the customer's administrator reads the request itself
/// ([`RequestRegister::request`]) while it is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notification {
    /// Its id.
    pub id: NotificationId,
    /// The request it is about.
    pub request: RequestId,
    /// The request's kind.
    pub kind: RequestKind,
    /// What happened.
    pub event: NotificationEvent,
    /// When.
    pub at: Timestamp,
}

/// Who an overdue request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Waiting {
    /// The customer has not instructed within the response window: the
    /// vendor may not act, the customer must be reminded.
    Customer,
    /// The customer said proceed and the request is past its deadline.
    Execution,
}

/// A request past its deadline, or waiting for the customer longer than
/// the response window.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Overdue {
    /// The customer.
    pub customer: CustomerId,
    /// The request.
    pub id: RequestId,
    /// Its kind.
    pub kind: RequestKind,
    /// Who it waits for.
    pub waiting: Waiting,
    /// When it was due: the deadline ([`Waiting::Execution`]), or the end
    /// of the response window ([`Waiting::Customer`]).
    pub due: Timestamp,
    /// How late it is.
    pub late: Duration,
}

/// How a [`RequestRegister`] counts deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Time to do an erasure after the instruction to proceed
    /// ([`DEFAULT_ERASURE_DEADLINE`]).
    pub erasure_deadline: Duration,
    /// Time to hand out a copy after the request was received
    /// ([`DEFAULT_ACCESS_DEADLINE`]).
    pub access_deadline: Duration,
    /// Time a request may wait for the customer's instruction before it is
    /// reported ([`DEFAULT_RESPONSE_WINDOW`]).
    pub response_window: Duration,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            erasure_deadline: DEFAULT_ERASURE_DEADLINE,
            access_deadline: DEFAULT_ACCESS_DEADLINE,
            response_window: DEFAULT_RESPONSE_WINDOW,
        }
    }
}

impl RequestOptions {
    /// Options with `d` as the time to do an erasure.
    #[must_use]
    pub fn with_erasure_deadline(mut self, d: Duration) -> Self {
        self.erasure_deadline = d;
        self
    }

    /// Options with `d` as the time to hand out a copy.
    #[must_use]
    pub fn with_access_deadline(mut self, d: Duration) -> Self {
        self.access_deadline = d;
        self
    }

    /// Options with `d` as the customer's response window.
    #[must_use]
    pub fn with_response_window(mut self, d: Duration) -> Self {
        self.response_window = d;
        self
    }
}

/// The register of end users' requests of one service (or region): what
/// was asked, the customer's notification queue, the customer's
/// instruction, execution and deadlines (the flow and the formats: the
/// repository's `docs/ACCESS.md`, "End-user requests").
///
/// The promise it keeps: the vendor notifies the customer promptly of every
/// request an end user makes to the vendor ([`Self::record`] puts a
/// notification in the customer's queue), and does not act on it without
/// the customer's prior instruction ([`Self::authorize_execution`] refuses
/// a request the customer has not told it to proceed with). An erasure is
/// due 24 hours after the instruction, a copy 30 days after the request
/// ([`RequestOptions`]); [`Self::overdue`] lists what is late, and what has
/// waited for the customer too long.
///
/// The register is one SQLite file (with its write-ahead log), held by one
/// instance at a time. The subject (an end user's [`UserId`]) and the
/// reference are kept only while the request is open: once it is done or
/// declined they are deleted (`secure_delete`) and the write-ahead log
/// checkpointed and truncated before the call returns, so no byte of the
/// files holds them any more. `Debug` of a [`Request`] shows neither.
///
/// Every call takes the current instant (`now`); the register never reads
/// the clock. Methods take `&self` (one connection behind a lock), so the
/// register can be shared (`Arc`).
///
/// # Example
///
/// ```
/// use privtel_access::{
///     Instruction, RequestError, RequestKind, RequestOptions, RequestOutcome, RequestRegister, RequestState,
/// };
/// use privtel_model::{CustomerId, Duration, Timestamp, UserId};
///
/// let dir = tempfile::tempdir()?;
/// let register = RequestRegister::open(&dir.path().join("requests.db"), RequestOptions::default())?;
/// let acme = CustomerId::new("acme")?;
/// let t0 = Timestamp::from_unix_seconds(1_800_000_000)?;
/// let later = |h: i64| t0.checked_add(Duration::hours(h)).expect("in range");
///
/// // An end user writes to the vendor: the request is recorded and the
/// // customer notified.
/// let id = register.record(&acme, RequestKind::Erasure, &UserId::new("u-1042")?, "email, case PRIV-7", t0)?;
/// let queue = register.notifications(&acme)?;
/// assert_eq!(queue.len(), 1);
/// assert_eq!(queue[0].request, id);
/// register.acknowledge(&acme, queue[0].id, later(1))?;
///
/// // Nothing is done before the customer's instruction.
/// assert!(matches!(register.authorize_execution(&acme, id), Err(RequestError::NotInstructed(_))));
/// register.instruct(&acme, id, Instruction::Proceed, "admin.kim", later(2))?;
/// assert_eq!(register.ready(&acme)?.len(), 1);
///
/// // The service erases, then closes the request: the subject is gone.
/// let request = register.authorize_execution(&acme, id)?;
/// assert_eq!(request.subject.as_ref().map(UserId::as_str), Some("u-1042"));
/// assert_eq!(request.due, Some(later(26)));
/// register.complete(&acme, id, later(3), RequestOutcome { records: 12, suppressed: 1 })?;
/// let done = register.request(&acme, id)?;
/// assert_eq!(done.state, RequestState::Done);
/// assert_eq!(done.subject, None);
/// assert!(register.overdue(later(100))?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RequestRegister {
    conn: Mutex<Connection>,
    options: RequestOptions,
}

impl fmt::Debug for RequestRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestRegister").field("options", &self.options).finish_non_exhaustive()
    }
}

/// Attaches what was being done to a SQLite error.
trait Op<T> {
    fn op(self, op: &'static str) -> Result<T, RequestError>;
}

impl<T> Op<T> for rusqlite::Result<T> {
    fn op(self, op: &'static str) -> Result<T, RequestError> {
        self.map_err(|source| {
            if matches!(source.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy)) {
                RequestError::Locked
            } else if matches!(source.sqlite_error_code(), Some(rusqlite::ErrorCode::NotADatabase)) {
                RequestError::NotARegister
            } else {
                RequestError::Sqlite { op, source }
            }
        })
    }
}

fn nanos(at: Timestamp, what: &'static str) -> Result<i64, RequestError> {
    i64::try_from(at.unix_nanos()).map_err(|_| RequestError::TimeOutOfRange { what })
}

fn instant(n: i64, field: &'static str) -> Result<Timestamp, RequestError> {
    Timestamp::from_unix_nanos(i128::from(n)).map_err(|_| RequestError::Corrupt { field })
}

fn add(at: Timestamp, d: Duration, what: &'static str) -> Result<Timestamp, RequestError> {
    at.checked_add(d).ok_or(RequestError::TimeOutOfRange { what })
}

/// Checks a free-text field: `min` to `max` bytes, no control characters.
fn text(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), RequestError> {
    if value.len() < min || value.len() > max || value.chars().any(char::is_control) {
        return Err(RequestError::Text { field, len: value.len(), min, max });
    }
    Ok(())
}

fn random_id() -> Result<u64, RequestError> {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| RequestError::Random)?;
    // 63 bits, never 0: an SQLite integer key.
    Ok((u64::from_le_bytes(b) >> 1).max(1))
}

const REQUEST_COLUMNS: &str = "r.id, r.customer, r.kind, r.state, r.received, r.due, r.instructed, \
     r.instructed_by, r.decision, r.decline_reason, r.completed, r.records, r.suppressed, \
     s.subject, s.reference";

const REQUEST_FROM: &str = "FROM requests r LEFT JOIN open_subjects s ON s.request = r.id";

/// A request row as stored, before its codes are checked.
fn read_request(row: &Row<'_>) -> rusqlite::Result<RawRequest> {
    Ok(RawRequest {
        id: row.get(0)?,
        customer: row.get(1)?,
        kind: row.get(2)?,
        state: row.get(3)?,
        received: row.get(4)?,
        due: row.get(5)?,
        instructed: row.get(6)?,
        instructed_by: row.get(7)?,
        decision: row.get(8)?,
        decline_reason: row.get(9)?,
        completed: row.get(10)?,
        records: row.get(11)?,
        suppressed: row.get(12)?,
        subject: row.get(13)?,
        reference: row.get(14)?,
    })
}

struct RawRequest {
    id: i64,
    customer: String,
    kind: i64,
    state: i64,
    received: i64,
    due: Option<i64>,
    instructed: Option<i64>,
    instructed_by: Option<String>,
    decision: Option<i64>,
    decline_reason: Option<String>,
    completed: Option<i64>,
    records: Option<i64>,
    suppressed: Option<i64>,
    subject: Option<String>,
    reference: Option<String>,
}

fn code<T>(n: i64, field: &'static str, from: fn(u8) -> Option<T>) -> Result<T, RequestError> {
    u8::try_from(n).ok().and_then(from).ok_or(RequestError::Corrupt { field })
}

fn count(n: i64, field: &'static str) -> Result<u64, RequestError> {
    u64::try_from(n).map_err(|_| RequestError::Corrupt { field })
}

impl RawRequest {
    fn check(self) -> Result<Request, RequestError> {
        let corrupt = |field| RequestError::Corrupt { field };
        let id = u64::try_from(self.id).ok().and_then(RequestId::from_u64).ok_or(corrupt("request id"))?;
        let customer = CustomerId::new(self.customer).map_err(|_| corrupt("customer"))?;
        let kind = code(self.kind, "kind", RequestKind::from_code)?;
        let state = code(self.state, "state", RequestState::from_code)?;
        let instruction = match (self.instructed, self.instructed_by, self.decision) {
            (None, None, None) => None,
            (Some(at), Some(by), Some(d)) => Some(InstructionRecord {
                at: instant(at, "instruction time")?,
                by,
                decision: code(d, "decision", Decision::from_code)?,
                reason: self.decline_reason,
            }),
            _ => return Err(corrupt("instruction")),
        };
        let outcome = match (self.records, self.suppressed) {
            (None, None) => None,
            (Some(r), Some(s)) => {
                Some(RequestOutcome { records: count(r, "records")?, suppressed: count(s, "suppressed")? })
            }
            _ => return Err(corrupt("outcome")),
        };
        let subject = self.subject.map(UserId::new).transpose().map_err(|_| corrupt("subject"))?;
        // The states and what each must (not) hold.
        let decided = instruction.as_ref().map(|i| i.decision);
        let consistent = match state {
            RequestState::AwaitingInstruction => decided.is_none() && self.completed.is_none(),
            RequestState::Instructed => decided == Some(Decision::Proceed) && self.completed.is_none(),
            RequestState::Declined => decided == Some(Decision::Decline) && self.completed.is_none(),
            RequestState::Done => decided == Some(Decision::Proceed) && self.completed.is_some(),
        } && (subject.is_some() != state.is_closed())
            && (self.reference.is_some() == subject.is_some())
            && (outcome.is_some() == self.completed.is_some());
        if !consistent {
            return Err(corrupt("state"));
        }
        Ok(Request {
            id,
            customer,
            kind,
            state,
            subject,
            reference: self.reference,
            received: instant(self.received, "received")?,
            due: self.due.map(|d| instant(d, "due")).transpose()?,
            instruction,
            completed: self.completed.map(|c| instant(c, "completed")).transpose()?,
            outcome,
        })
    }
}

impl RequestRegister {
    /// Opens the register at `path`, creating it if there is no file.
    ///
    /// The file is held open exclusively (SQLite's exclusive locking mode):
    /// a second register — in this process or another — opening the same
    /// file gets [`RequestError::Locked`] until this one is dropped.
    ///
    /// # Errors
    ///
    /// [`RequestError::Locked`], [`RequestError::NotARegister`] (another
    /// SQLite file, or not SQLite), [`RequestError::Schema`] (a later
    /// version), or an I/O or SQLite error.
    pub fn open(path: &Path, options: RequestOptions) -> Result<Self, RequestError> {
        let mut conn = Connection::open(path).op("opening the register")?;
        // Exclusive locking: the lock taken by the first read below is kept
        // (and raised by the first write) until the connection closes, and
        // the write-ahead log needs no shared-memory file. secure_delete:
        // deleted rows are overwritten with zeros. FULL: a change is on
        // disk when its call returns. temp_store: sorts never spill rows
        // (subjects) into temporary files.
        conn.execute_batch(
            "PRAGMA busy_timeout = 0;
             PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA secure_delete = ON;
             PRAGMA foreign_keys = ON;
             PRAGMA synchronous = FULL;
             PRAGMA temp_store = MEMORY;",
        )
        .op("configuring the register")?;
        // Check what the file is before changing anything in it.
        let app: i32 =
            conn.query_row("PRAGMA application_id", [], |r| r.get(0)).op("reading the register")?;
        let version: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).op("reading the register")?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .op("reading the register")?;
        if app != REQUESTS_APPLICATION_ID && (app != 0 || tables != 0 || version != 0) {
            return Err(RequestError::NotARegister);
        }
        if version > REQUESTS_SCHEMA_VERSION {
            return Err(RequestError::Schema { found: version, supported: REQUESTS_SCHEMA_VERSION });
        }
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .op("configuring the register")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive).op("locking the register")?;
        if version == 0 {
            tx.execute_batch(SCHEMA_V1).op("creating the register")?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {REQUESTS_APPLICATION_ID}; PRAGMA user_version = {REQUESTS_SCHEMA_VERSION};"
            ))
            .op("creating the register")?;
        }
        tx.commit().op("creating the register")?;
        Ok(Self { conn: Mutex::new(conn), options })
    }

    /// The options in force.
    pub fn options(&self) -> RequestOptions {
        self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request an end user made, and puts a
    /// [`NotificationEvent::Received`] notification in the customer's queue,
    /// in one transaction.
    ///
    /// `reference` says how it came in (a channel, a ticket: 1 to
    /// [`MAX_REFERENCE_LEN`] bytes, no control characters); like the
    /// subject, it is kept only while the request is open.
    ///
    /// # Errors
    ///
    /// [`RequestError::Text`] for a reference out of bounds,
    /// [`RequestError::TimeOutOfRange`], or a SQLite error (nothing is
    /// recorded then).
    pub fn record(
        &self,
        customer: &CustomerId,
        kind: RequestKind,
        subject: &UserId,
        reference: &str,
        now: Timestamp,
    ) -> Result<RequestId, RequestError> {
        text("reference", reference, 1, MAX_REFERENCE_LEN)?;
        let received = nanos(now, "received")?;
        let due = match kind {
            RequestKind::Access => Some(nanos(add(now, self.options.access_deadline, "due")?, "due")?),
            RequestKind::Erasure => None,
        };
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).op("recording a request")?;
        let id = loop {
            let id = RequestId(random_id()?);
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO requests (id, customer, kind, state, received, due) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        id.sql(),
                        customer.as_str(),
                        kind.code(),
                        RequestState::AwaitingInstruction.code(),
                        received,
                        due
                    ],
                )
                .op("recording a request")?;
            if n == 1 {
                break id;
            }
        };
        tx.execute(
            "INSERT INTO open_subjects (request, subject, reference) VALUES (?1, ?2, ?3)",
            params![id.sql(), subject.as_str(), reference],
        )
        .op("recording a request")?;
        notify(&tx, customer, id, NotificationEvent::Received, received)?;
        tx.commit().op("recording a request")?;
        Ok(id)
    }

    /// The customer's unread notifications, oldest first.
    ///
    /// # Errors
    ///
    /// A SQLite error, or [`RequestError::Corrupt`].
    pub fn notifications(&self, customer: &CustomerId) -> Result<Vec<Notification>, RequestError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT n.id, n.request, r.kind, n.event, n.at FROM notifications n JOIN requests r ON r.id = n.request
                 WHERE n.customer = ?1 AND n.acknowledged IS NULL ORDER BY n.at, n.id",
            )
            .op("reading notifications")?;
        let rows = stmt
            .query_map([customer.as_str()], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .op("reading notifications")?;
        let mut out = Vec::new();
        for row in rows {
            let (id, request, kind, event, at) = row.op("reading notifications")?;
            let corrupt = |field| RequestError::Corrupt { field };
            out.push(Notification {
                id: u64::try_from(id)
                    .ok()
                    .and_then(NotificationId::from_u64)
                    .ok_or(corrupt("notification id"))?,
                request: u64::try_from(request)
                    .ok()
                    .and_then(RequestId::from_u64)
                    .ok_or(corrupt("request id"))?,
                kind: code(kind, "kind", RequestKind::from_code)?,
                event: code(event, "event", NotificationEvent::from_code)?,
                at: instant(at, "notification time")?,
            });
        }
        Ok(out)
    }

    /// Marks one of the customer's notifications read: it leaves
    /// [`Self::notifications`]; when it was read is kept. Acknowledging a
    /// notification already read changes nothing.
    ///
    /// # Errors
    ///
    /// [`RequestError::UnknownNotification`] if the customer has no such
    /// notification (another customer's is unknown too), or a SQLite
    /// error.
    pub fn acknowledge(
        &self,
        customer: &CustomerId,
        notification: NotificationId,
        now: Timestamp,
    ) -> Result<(), RequestError> {
        let at = nanos(now, "acknowledged")?;
        let conn = self.lock();
        let found: Option<i64> = conn
            .query_row(
                "SELECT id FROM notifications WHERE id = ?1 AND customer = ?2",
                params![notification.sql(), customer.as_str()],
                |r| r.get(0),
            )
            .optional()
            .op("reading a notification")?;
        if found.is_none() {
            return Err(RequestError::UnknownNotification(notification));
        }
        conn.execute(
            "UPDATE notifications SET acknowledged = ?1 WHERE id = ?2 AND acknowledged IS NULL",
            params![at, notification.sql()],
        )
        .op("acknowledging a notification")?;
        Ok(())
    }

    /// One of the customer's requests.
    ///
    /// # Errors
    ///
    /// [`RequestError::UnknownRequest`] if the customer has no such request
    /// (another customer's is unknown too), or a SQLite error.
    pub fn request(&self, customer: &CustomerId, id: RequestId) -> Result<Request, RequestError> {
        let conn = self.lock();
        get(&conn, customer, id)
    }

    /// Every request of the customer, open and closed, oldest first.
    ///
    /// # Errors
    ///
    /// A SQLite error, or [`RequestError::Corrupt`].
    pub fn requests(&self, customer: &CustomerId) -> Result<Vec<Request>, RequestError> {
        let conn = self.lock();
        select(
            &conn,
            &format!(
                "SELECT {REQUEST_COLUMNS} {REQUEST_FROM} WHERE r.customer = ?1 ORDER BY r.received, r.id"
            ),
            params![customer.as_str()],
        )
    }

    /// Records the customer's instruction about a request waiting for one.
    ///
    /// [`Instruction::Proceed`] makes it [`RequestState::Instructed`]: from
    /// now it is in [`Self::ready`], and an erasure is due
    /// [`RequestOptions::erasure_deadline`] from `now`.
    /// [`Instruction::Decline`] closes it: its subject and reference are
    /// deleted and the write-ahead log truncated before this returns.
    ///
    /// `by` is the customer's administrator (1 to
    /// [`MAX_INSTRUCTED_BY_LEN`] bytes, no control characters).
    ///
    /// # Errors
    ///
    /// [`RequestError::UnknownRequest`] (none of the customer's),
    /// [`RequestError::AlreadyInstructed`] (instructed, declined or done),
    /// [`RequestError::Text`] for `by` or the reason out of bounds,
    /// [`RequestError::NamesSubject`] for a reason holding the subject's
    /// id, or a SQLite error (nothing changes then; as in
    /// [`Self::complete`], a failure of the checkpoint after a decline is
    /// returned although the request is closed).
    pub fn instruct(
        &self,
        customer: &CustomerId,
        id: RequestId,
        instruction: Instruction,
        by: &str,
        now: Timestamp,
    ) -> Result<(), RequestError> {
        text("instructed by", by, 1, MAX_INSTRUCTED_BY_LEN)?;
        if let Instruction::Decline { reason } = &instruction {
            text("decline reason", reason, 1, MAX_DECLINE_REASON_LEN)?;
        }
        let at = nanos(now, "instructed")?;
        let mut conn = self.lock();
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).op("recording an instruction")?;
        let request = get(&tx, customer, id)?;
        if request.state != RequestState::AwaitingInstruction {
            return Err(RequestError::AlreadyInstructed(id));
        }
        match instruction {
            Instruction::Proceed => {
                let due = match (request.kind, request.due) {
                    (RequestKind::Erasure, _) | (_, None) => {
                        nanos(add(now, self.options.erasure_deadline, "due")?, "due")?
                    }
                    (_, Some(due)) => nanos(due, "due")?,
                };
                tx.execute(
                    "UPDATE requests SET state = ?1, instructed = ?2, instructed_by = ?3, decision = ?4, due = ?5 WHERE id = ?6",
                    params![RequestState::Instructed.code(), at, by, Decision::Proceed.code(), due, id.sql()],
                )
                .op("recording an instruction")?;
                tx.commit().op("recording an instruction")?;
            }
            Instruction::Decline { reason } => {
                if request
                    .subject
                    .as_ref()
                    .is_some_and(|s| reason.to_ascii_lowercase().contains(&s.as_str().to_ascii_lowercase()))
                {
                    return Err(RequestError::NamesSubject { field: "decline reason" });
                }
                tx.execute(
                    "UPDATE requests SET state = ?1, instructed = ?2, instructed_by = ?3, decision = ?4, decline_reason = ?5 WHERE id = ?6",
                    params![RequestState::Declined.code(), at, by, Decision::Decline.code(), reason, id.sql()],
                )
                .op("recording an instruction")?;
                forget(&tx, id)?;
                tx.commit().op("recording an instruction")?;
                checkpoint(&conn)?;
            }
        }
        Ok(())
    }

    /// The customer's requests instructed to proceed and not done yet,
    /// earliest due first: what the service may execute.
    ///
    /// # Errors
    ///
    /// A SQLite error, or [`RequestError::Corrupt`].
    pub fn ready(&self, customer: &CustomerId) -> Result<Vec<Request>, RequestError> {
        let conn = self.lock();
        select(
            &conn,
            &format!(
                "SELECT {REQUEST_COLUMNS} {REQUEST_FROM} WHERE r.customer = ?1 AND r.state = ?2 ORDER BY r.due, r.id"
            ),
            params![customer.as_str(), RequestState::Instructed.code()],
        )
    }

    /// The request, with its subject, if the service may execute it now:
    /// the customer's, instructed to proceed, not done. The service calls
    /// this before it exports or erases anything.
    ///
    /// # Errors
    ///
    /// [`RequestError::UnknownRequest`] (none of the customer's: another
    /// customer's request is unknown too), [`RequestError::NotInstructed`]
    /// (waiting for the customer), [`RequestError::Declined`],
    /// [`RequestError::AlreadyDone`], or a SQLite error.
    pub fn authorize_execution(&self, customer: &CustomerId, id: RequestId) -> Result<Request, RequestError> {
        let conn = self.lock();
        let request = get(&conn, customer, id)?;
        executable(&request)?;
        Ok(request)
    }

    /// Closes an executed request: records when and what (counts only),
    /// deletes its subject and reference, puts a
    /// [`NotificationEvent::Completed`] notification in the customer's
    /// queue, and truncates the write-ahead log before it returns, so no
    /// byte of the register's files holds the subject any more.
    ///
    /// # Errors
    ///
    /// As [`Self::authorize_execution`] (nothing changes then), or
    /// [`RequestError::CountTooLarge`]. A failure of the final checkpoint
    /// (an I/O error) is returned although the request is closed; the next
    /// closing call checkpoints again.
    pub fn complete(
        &self,
        customer: &CustomerId,
        id: RequestId,
        now: Timestamp,
        outcome: RequestOutcome,
    ) -> Result<(), RequestError> {
        let at = nanos(now, "completed")?;
        let records = i64::try_from(outcome.records).map_err(|_| RequestError::CountTooLarge)?;
        let suppressed = i64::try_from(outcome.suppressed).map_err(|_| RequestError::CountTooLarge)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).op("completing a request")?;
        executable(&get(&tx, customer, id)?)?;
        tx.execute(
            "UPDATE requests SET state = ?1, completed = ?2, records = ?3, suppressed = ?4 WHERE id = ?5",
            params![RequestState::Done.code(), at, records, suppressed, id.sql()],
        )
        .op("completing a request")?;
        forget(&tx, id)?;
        notify(&tx, customer, id, NotificationEvent::Completed, at)?;
        tx.commit().op("completing a request")?;
        checkpoint(&conn)
    }

    /// Removes everything the register holds of `customer` (contract end):
    /// its requests, open or closed, their subjects and references, and its
    /// notifications, in one transaction, then checkpoints the log so no
    /// byte of them stays in the register's files. Returns the number of
    /// requests removed.
    ///
    /// # Errors
    ///
    /// A SQLite error; nothing is removed then.
    pub fn remove_customer(&self, customer: &CustomerId) -> Result<u64, RequestError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).op("removing a customer")?;
        let c = customer.as_str();
        tx.execute(
            "DELETE FROM open_subjects WHERE request IN (SELECT id FROM requests WHERE customer = ?1)",
            [c],
        )
        .op("removing a customer")?;
        tx.execute("DELETE FROM notifications WHERE customer = ?1", [c]).op("removing a customer")?;
        let removed =
            tx.execute("DELETE FROM requests WHERE customer = ?1", [c]).op("removing a customer")?;
        tx.commit().op("removing a customer")?;
        checkpoint(&conn)?;
        Ok(removed as u64)
    }

    /// Every open request, of every customer, that is past its deadline
    /// ([`Waiting::Execution`]), or that has waited for the customer's
    /// instruction longer than [`RequestOptions::response_window`]
    /// ([`Waiting::Customer`]: the vendor may not act, the customer must be
    /// reminded). Latest first. A request is late once `now` is after its
    /// due instant.
    ///
    /// # Errors
    ///
    /// A SQLite error, or [`RequestError::Corrupt`].
    pub fn overdue(&self, now: Timestamp) -> Result<Vec<Overdue>, RequestError> {
        let open = {
            let conn = self.lock();
            select(
                &conn,
                &format!("SELECT {REQUEST_COLUMNS} {REQUEST_FROM} WHERE r.state IN (?1, ?2) ORDER BY r.id"),
                params![RequestState::AwaitingInstruction.code(), RequestState::Instructed.code()],
            )?
        };
        let mut out = Vec::new();
        for r in open {
            let (waiting, due) = match (r.state, r.due) {
                (RequestState::AwaitingInstruction, _) => {
                    (Waiting::Customer, add(r.received, self.options.response_window, "response window")?)
                }
                (_, Some(due)) => (Waiting::Execution, due),
                (_, None) => return Err(RequestError::Corrupt { field: "due" }),
            };
            if now > due {
                out.push(Overdue {
                    customer: r.customer,
                    id: r.id,
                    kind: r.kind,
                    waiting,
                    due,
                    late: now - due,
                });
            }
        }
        out.sort_by(|a, b| b.late.cmp(&a.late).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

fn executable(request: &Request) -> Result<(), RequestError> {
    match request.state {
        RequestState::Instructed => Ok(()),
        RequestState::AwaitingInstruction => Err(RequestError::NotInstructed(request.id)),
        RequestState::Declined => Err(RequestError::Declined(request.id)),
        RequestState::Done => Err(RequestError::AlreadyDone(request.id)),
    }
}

fn get(conn: &Connection, customer: &CustomerId, id: RequestId) -> Result<Request, RequestError> {
    let mut found = select(
        conn,
        &format!("SELECT {REQUEST_COLUMNS} {REQUEST_FROM} WHERE r.id = ?1 AND r.customer = ?2"),
        params![id.sql(), customer.as_str()],
    )?;
    found.pop().ok_or(RequestError::UnknownRequest(id))
}

fn select(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Request>, RequestError> {
    let mut stmt = conn.prepare_cached(sql).op("reading requests")?;
    let rows = stmt.query_map(args, read_request).op("reading requests")?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.op("reading requests")?.check()?);
    }
    Ok(out)
}

fn notify(
    conn: &Connection,
    customer: &CustomerId,
    request: RequestId,
    event: NotificationEvent,
    at: i64,
) -> Result<(), RequestError> {
    loop {
        let id = NotificationId(random_id()?);
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO notifications (id, customer, request, event, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id.sql(), customer.as_str(), request.sql(), event.code(), at],
            )
            .op("notifying the customer")?;
        if n == 1 {
            return Ok(());
        }
    }
}

/// Deletes what is personal about a request (secure_delete overwrites it).
fn forget(conn: &Connection, id: RequestId) -> Result<(), RequestError> {
    conn.execute("DELETE FROM open_subjects WHERE request = ?1", [id.sql()]).op("removing the subject")?;
    Ok(())
}

/// Moves the write-ahead log into the file and truncates it: the pages a
/// deletion overwrote leave no older copy in the log. (No reader can hold
/// the log back: the connection holds the file exclusively; should SQLite
/// still report the checkpoint blocked, that is [`RequestError::Locked`].)
fn checkpoint(conn: &Connection) -> Result<(), RequestError> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))
        .op("checkpointing the register")
        .and_then(|busy| if busy == 0 { Ok(()) } else { Err(RequestError::Locked) })
}

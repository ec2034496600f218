//! The administrative interface: operators act on a running service through
//! a local socket, never by opening its stores behind its back.
//!
//! One request a connection, as one line of JSON (at most
//! [`MAX_REQUEST_BYTES`], whole within [`REQUEST_DEADLINE`]), answered with
//! one line of JSON, or, for exports and copies, a header line, the body's
//! JSON Lines and a trailer line. The protocol is in `docs/ACCESS.md`.
//!
//! Who asks is proven by an **operator token** (`ptop_` and 64 hex digits)
//! whose SHA-256 the service's operators file lists, with the operator's
//! name and whether they approve grants. The socket itself is made mode
//! 0600: only the service's account reaches it. Every action on a
//! customer's data goes through [`Service`]'s audited methods, so it needs
//! a grant and is written to the access log, allowed or refused.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use privtel_access::{
    Action, GrantId, GrantRequest, Instruction, NotificationId, Operator, RequestId, RequestKind, Scope,
    Waiting,
};
use privtel_model::{CustomerId, Timestamp, UserId};
use privtel_store::{ErasureRequest, MasterKey};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{AdminError, Service};

/// The protocol version requests carry (`"v": 1`).
pub const CONSOLE_VERSION: u32 = 1;
/// The longest request line, newline included.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The whole request line must arrive within this (a drip is cut off).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Administrative connections served at once; more are closed at once.
pub const MAX_CONSOLE_CONNECTIONS: usize = 8;
/// The prefix of every operator token.
pub const OPERATOR_TOKEN_PREFIX: &str = "ptop_";
/// The key of the trailer line that ends a streamed answer; the trailer
/// starts with it (`{"privtel_console_end":true,"lines":N}` or
/// `{"privtel_console_end":false,"code":…,"error":…}`).
pub const END_KEY: &str = "privtel_console_end";

/// One operator as the operators file names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorEntry {
    /// Their account.
    pub operator: Operator,
    /// Whether they may create and revoke other operators' grants (never
    /// their own).
    pub approver: bool,
}

/// The operators the service knows, by the SHA-256 of their tokens.
#[derive(Clone, Default)]
pub struct Operators {
    by_digest: HashMap<[u8; 32], OperatorEntry>,
}

impl fmt::Debug for Operators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.by_digest.values().map(|o| o.operator.as_str()).collect();
        names.sort_unstable();
        f.debug_struct("Operators").field("operators", &names).finish()
    }
}

/// An operators file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorsError {
    /// The file could not be read.
    #[error("cannot read the operators file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not the expected TOML.
    #[error("operators file: {0}")]
    Syntax(String),
    /// A bad entry.
    #[error("operators file, operator number {index}: expected {expected}")]
    Entry {
        /// Its position, from 1.
        index: usize,
        /// What was expected.
        expected: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorsFile {
    #[serde(default)]
    operator: Vec<OperatorLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorLine {
    name: String,
    token_sha256: String,
    #[serde(default)]
    approver: bool,
}

impl Operators {
    /// Parses an operators file:
    ///
    /// ```toml
    /// [[operator]]
    /// name = "ops.lead"
    /// token_sha256 = "…64 hex digits…"   # `admin operator-token` prints it
    /// approver = true
    /// ```
    ///
    /// # Errors
    ///
    /// [`OperatorsError`] naming the entry and what was expected (never a
    /// digest).
    pub fn from_toml(text: &str) -> Result<Self, OperatorsError> {
        let file: OperatorsFile =
            toml::from_str(text).map_err(|e| OperatorsError::Syntax(e.message().to_owned()))?;
        let mut by_digest = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, line) in file.operator.into_iter().enumerate() {
            let index = i + 1;
            let operator = Operator::new(line.name).map_err(|_| OperatorsError::Entry {
                index,
                expected: "a name of 1 to 128 printable bytes",
            })?;
            let digest = hex32(&line.token_sha256)
                .ok_or(OperatorsError::Entry { index, expected: "token_sha256 of 64 hex digits" })?;
            if !names.insert(operator.as_str().to_owned()) {
                return Err(OperatorsError::Entry { index, expected: "each operator named once" });
            }
            if by_digest.insert(digest, OperatorEntry { operator, approver: line.approver }).is_some() {
                return Err(OperatorsError::Entry { index, expected: "a token of its own" });
            }
        }
        Ok(Self { by_digest })
    }

    /// Reads an operators file.
    ///
    /// # Errors
    ///
    /// As [`Operators::from_toml`], or the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, OperatorsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| OperatorsError::Io { path: path.to_owned(), source })?;
        Self::from_toml(&text)
    }

    /// The operator a token proves, if any.
    pub fn identify(&self, token: &str) -> Option<&OperatorEntry> {
        if !token.starts_with(OPERATOR_TOKEN_PREFIX) || token.len() != OPERATOR_TOKEN_PREFIX.len() + 64 {
            return None;
        }
        self.by_digest.get(&<[u8; 32]>::from(Sha256::digest(token.as_bytes())))
    }

    /// How many operators there are.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there is none (then every request is refused).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// A new operator token and the SHA-256 (hex) the operators file lists for
/// it. The token is shown once to its operator, who keeps it in a file only
/// they can read; the service keeps the digest only.
///
/// # Errors
///
/// The system's random source could not be read.
pub fn operator_token() -> std::io::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = format!("{OPERATOR_TOKEN_PREFIX}{}", hex(&bytes));
    let digest = hex(&Sha256::digest(token.as_bytes()));
    Ok((token, digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// A request line that is not a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Longer than [`MAX_REQUEST_BYTES`].
    #[error("a request line of at most {MAX_REQUEST_BYTES} bytes expected")]
    TooLong,
    /// Not a JSON object of a known operation with its fields.
    #[error("a request of the console protocol expected: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("console protocol version {CONSOLE_VERSION} expected, got {0}")]
    Version(u32),
    /// A field that does not hold what it must (which field, not its value).
    #[error("field {field}: expected {expected}")]
    Field {
        /// The field.
        field: &'static str,
        /// What it must hold.
        expected: &'static str,
    },
}

#[derive(Deserialize)]
struct Envelope {
    v: u32,
    token: String,
    #[serde(flatten)]
    request: Value,
}

/// One parsed request.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Who the token proves.
    Whoami,
    /// A grant for another operator (approvers only).
    Grant(GrantRequest),
    /// Revokes a grant (approvers, or the grant's own operator).
    Revoke(GrantId),
    /// The grants on a customer.
    Grants(CustomerId),
    /// Every record of one person, as JSON Lines.
    ExportPerson {
        /// The grant presented.
        grant: GrantId,
        /// The customer.
        customer: CustomerId,
        /// The person.
        user: UserId,
    },
    /// Erases one person.
    ErasePerson {
        /// The grant presented.
        grant: GrantId,
        /// The customer.
        customer: CustomerId,
        /// The person.
        user: UserId,
        /// The request's reference.
        request: String,
    },
    /// The access log's entries on one customer and a signed checkpoint.
    AccessLog(CustomerId),
    /// The whole access log's bytes (hex) and a signed checkpoint, for a
    /// customer to verify the chain.
    RawLog,
    /// Sweeps what expired now.
    Sweep,
    /// An operation this module does not serve itself (handed to the
    /// service's other administrative parts): its name and fields.
    Other(String, serde_json::Map<String, Value>),
}

impl fmt::Debug for Request {
    /// The operation only: never a person's id or a justification.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Request({})", self.op())
    }
}

impl Request {
    /// The operation's name.
    pub fn op(&self) -> &str {
        match self {
            Self::Whoami => "whoami",
            Self::Grant(_) => "grant",
            Self::Revoke(_) => "revoke",
            Self::Grants(_) => "grants",
            Self::ExportPerson { .. } => "export-person",
            Self::ErasePerson { .. } => "erase-person",
            Self::AccessLog(_) => "access-log",
            Self::RawLog => "raw-log",
            Self::Sweep => "sweep",
            Self::Other(op, _) => op,
        }
    }

    /// Parses one request line (without its newline) into the token and
    /// the request; `now` dates a grant that names no start.
    ///
    /// # Errors
    ///
    /// [`RequestError`] naming the field and what was expected, never a
    /// value (and never the token).
    pub fn parse(line: &[u8], now: Timestamp) -> Result<(String, Self), RequestError> {
        if line.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLong);
        }
        let env: Envelope = serde_json::from_slice(line).map_err(|e| {
            // serde's message may quote a value: keep its category only.
            RequestError::Malformed(format!("{:?} error at column {}", e.classify(), e.column()))
        })?;
        if env.v != CONSOLE_VERSION {
            return Err(RequestError::Version(env.v));
        }
        let Value::Object(mut fields) = env.request else {
            return Err(RequestError::Malformed("an object".into()));
        };
        let Some(Value::String(op)) = fields.remove("op") else {
            return Err(RequestError::Field { field: "op", expected: "the operation's name" });
        };
        let f = Fields(fields);
        let request = match op.as_str() {
            "whoami" => Self::Whoami,
            "grant" => {
                let minutes = f.u64("minutes", "the grant's length in minutes, 1 to 100000")?;
                if !(1..=100_000).contains(&minutes) {
                    return Err(RequestError::Field { field: "minutes", expected: "1 to 100000" });
                }
                let starts = match f.0.get("starts_unix") {
                    None => now,
                    Some(_) => Timestamp::from_unix_seconds(
                        i64::try_from(f.u64("starts_unix", "unix seconds")?).unwrap_or(i64::MAX),
                    )
                    .map_err(|_| RequestError::Field { field: "starts_unix", expected: "unix seconds" })?,
                };
                let expires = starts
                    .checked_add(time::Duration::minutes(i64::try_from(minutes).unwrap_or(0)))
                    .ok_or(RequestError::Field { field: "minutes", expected: "an expiry in range" })?;
                let scope = match f.0.get("scope") {
                    Some(Value::Array(names)) => {
                        let mut actions = Vec::new();
                        for n in names {
                            let a = n.as_str().and_then(Action::from_name).ok_or(RequestError::Field {
                                field: "scope",
                                expected: "action names such as export-person",
                            })?;
                            actions.push(a);
                        }
                        Scope::of(&actions)
                    }
                    _ => {
                        return Err(RequestError::Field {
                            field: "scope",
                            expected: "a list of action names",
                        });
                    }
                };
                Self::Grant(GrantRequest {
                    operator: Operator::new(f.str("operator", "the operator's account")?).map_err(|_| {
                        RequestError::Field { field: "operator", expected: "an operator account" }
                    })?,
                    customer: f.customer()?,
                    justification: f.str("justification", "why, as text")?.to_owned(),
                    ticket: f.str("ticket", "a ticket reference")?.to_owned(),
                    scope,
                    starts,
                    expires,
                })
            }
            "revoke" => Self::Revoke(f.grant()?),
            "grants" => Self::Grants(f.customer()?),
            "export-person" => {
                Self::ExportPerson { grant: f.grant()?, customer: f.customer()?, user: f.user()? }
            }
            "erase-person" => Self::ErasePerson {
                grant: f.grant()?,
                customer: f.customer()?,
                user: f.user()?,
                request: {
                    let r = f.str("request", "the request's reference")?;
                    if r.is_empty() || r.len() > 128 || r.chars().any(char::is_control) {
                        return Err(RequestError::Field {
                            field: "request",
                            expected: "1 to 128 bytes of printable text",
                        });
                    }
                    r.to_owned()
                },
            },
            "access-log" => Self::AccessLog(f.customer()?),
            "raw-log" => Self::RawLog,
            "sweep" => Self::Sweep,
            other => {
                if other.is_empty()
                    || other.len() > 64
                    || !other.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                {
                    return Err(RequestError::Field { field: "op", expected: "an operation's name" });
                }
                Self::Other(op.clone(), f.0)
            }
        };
        Ok((env.token, request))
    }
}

/// Typed reads of a request's fields.
pub(crate) struct Fields(pub(crate) serde_json::Map<String, Value>);

impl Fields {
    pub(crate) fn str(&self, field: &'static str, expected: &'static str) -> Result<&str, RequestError> {
        self.0.get(field).and_then(Value::as_str).ok_or(RequestError::Field { field, expected })
    }

    pub(crate) fn u64(&self, field: &'static str, expected: &'static str) -> Result<u64, RequestError> {
        self.0.get(field).and_then(Value::as_u64).ok_or(RequestError::Field { field, expected })
    }

    pub(crate) fn grant(&self) -> Result<GrantId, RequestError> {
        self.u64("grant", "the grant's number").map(GrantId)
    }

    pub(crate) fn customer(&self) -> Result<CustomerId, RequestError> {
        CustomerId::new(self.str("customer", "a customer id")?)
            .map_err(|_| RequestError::Field { field: "customer", expected: "a customer id" })
    }

    pub(crate) fn request_id(&self, field: &'static str) -> Result<RequestId, RequestError> {
        self.str(field, "a request id of 16 hex digits")?
            .parse()
            .map_err(|_| RequestError::Field { field, expected: "a request id of 16 hex digits" })
    }

    pub(crate) fn user(&self) -> Result<UserId, RequestError> {
        UserId::new(self.str("user", "a user id")?)
            .map_err(|_| RequestError::Field { field: "user", expected: "a user id" })
    }
}

/// How an answer went wrong, as the answer line's `code`.
fn code_of(e: &AdminError) -> &'static str {
    match e {
        AdminError::Denied(_) => "denied",
        AdminError::WrongRegion { .. } => "wrong-region",
        AdminError::NoAccessControl | AdminError::NoRequests | AdminError::InProgress => "unavailable",
        AdminError::BadRequest(_) => "bad-request",
        AdminError::Request(_) => "refused",
        _ => "failed",
    }
}

/// Where answers go: one JSON line at a time, or a streamed body.
struct Answer<W: Write> {
    out: BufWriter<Paced<W>>,
}

impl<W: Write> Answer<W> {
    fn line(&mut self, value: &Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    fn ok(&mut self, mut value: Value) -> std::io::Result<()> {
        if let Value::Object(m) = &mut value {
            m.insert("ok".into(), Value::Bool(true));
        }
        self.line(&value)
    }

    fn fail(&mut self, code: &str, error: &str) -> std::io::Result<()> {
        self.line(&json!({"ok": false, "code": code, "error": error}))
    }

    /// A streamed answer: the header, what `body` writes (JSON Lines), and
    /// the trailer with the line count or the error that cut it short.
    fn stream(
        &mut self,
        header: Value,
        body: impl FnOnce(&mut dyn Write) -> Result<u64, AdminError>,
    ) -> std::io::Result<Result<u64, String>> {
        let mut header = header;
        if let Value::Object(m) = &mut header {
            m.insert("ok".into(), Value::Bool(true));
            m.insert("stream".into(), Value::Bool(true));
        }
        let mut head = serde_json::to_vec(&header)?;
        head.push(b'\n');
        // The header goes out with the body's first bytes: an action refused
        // before anything was written (a grant, the region) is answered with
        // one `ok: false` line, never a stream.
        let mut lazy = Lazy { out: &mut self.out, head: Some(head) };
        let result = body(&mut lazy);
        let unsent = lazy.head.take();
        // The trailer's first key is always END_KEY, so a reader tells it
        // from a body line by its first bytes.
        let (trailer, outcome) = match result {
            Err(e) if unsent.is_some() => {
                self.fail(code_of(&e), &e.to_string())?;
                return Ok(Err(e.to_string()));
            }
            Ok(lines) => (format!("{{\"{END_KEY}\":true,\"lines\":{lines}}}"), Ok(lines)),
            Err(e) => {
                let (code, error) = (json!(code_of(&e)), json!(e.to_string()));
                (format!("{{\"{END_KEY}\":false,\"code\":{code},\"error\":{error}}}"), Err(e.to_string()))
            }
        };
        if let Some(head) = unsent {
            self.out.write_all(&head)?;
        }
        self.out.write_all(trailer.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(outcome)
    }
}

/// A writer that sends `head` before the first bytes written to it.
struct Lazy<'a, W: Write> {
    out: &'a mut W,
    head: Option<Vec<u8>>,
}

impl<W: Write> Write for Lazy<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(head) = self.head.take() {
            self.out.write_all(&head)?;
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The answer's socket, with a pace it must keep from its first byte on: a
/// reader that takes more than [`ANSWER_GRACE`] plus a second per
/// [`MIN_ANSWER_RATE`] bytes is cut off, so a slow reader cannot hold a
/// snapshot of the store (and the log checkpoints it prevents) for long.
/// The work before the first byte (an erasure, a contract end) does not
/// count.
struct Paced<W: Write> {
    inner: W,
    started: Option<Instant>,
    sent: u64,
}

/// Time an answer always has.
pub const ANSWER_GRACE: Duration = Duration::from_secs(10);
/// Bytes a second an answer must average beyond the grace (1 MiB/s).
pub const MIN_ANSWER_RATE: u64 = 1 << 20;

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let allowed = ANSWER_GRACE + Duration::from_secs(self.sent / MIN_ANSWER_RATE);
        if self.started.get_or_insert_with(Instant::now).elapsed() > allowed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the reader of the answer is slower than the console allows",
            ));
        }
        let n = self.inner.write(buf)?;
        self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads one request line within the deadline: at most
/// [`MAX_REQUEST_BYTES`], the buffer growing with what arrives.
fn read_line(stream: &mut UnixStream, deadline: Instant) -> Result<Vec<u8>, RequestError> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::Malformed("a whole request line within the deadline".into()));
        }
        // Refit before every read: a drip cannot stretch the deadline.
        let _ = stream.set_read_timeout(Some(left.min(Duration::from_millis(250))));
        match stream.read(&mut chunk) {
            Ok(0) => return Err(RequestError::Malformed("a request line ended by a newline".into())),
            Ok(n) => {
                if let Some(end) = chunk[..n].iter().position(|&b| b == b'\n') {
                    line.extend_from_slice(&chunk[..end]);
                    return if line.len() > MAX_REQUEST_BYTES {
                        Err(RequestError::TooLong)
                    } else {
                        Ok(line)
                    };
                }
                line.extend_from_slice(&chunk[..n]);
                if line.len() > MAX_REQUEST_BYTES {
                    return Err(RequestError::TooLong);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(RequestError::Malformed("a readable connection".into())),
        }
    }
}

impl Service {
    /// Serves the administrative interface on `listener` until `stop` is
    /// set: one thread a connection, at most [`MAX_CONSOLE_CONNECTIONS`] at
    /// once (more are closed at once). Make the listener with
    /// [`bind_console`], which creates the socket mode 0600.
    pub fn serve_console(
        self: &Arc<Self>,
        listener: &UnixListener,
        operators: &Arc<Operators>,
        stop: &AtomicBool,
    ) {
        let active = Arc::new(AtomicUsize::new(0));
        for stream in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(stream) = stream else { continue };
            if active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_CONSOLE_CONNECTIONS).then_some(n + 1)
                })
                .is_err()
            {
                drop(stream);
                continue;
            }
            let (me, ops, act) = (Arc::clone(self), Arc::clone(operators), Arc::clone(&active));
            let spawned = std::thread::Builder::new().name("privtel-console".into()).spawn(move || {
                // Given back when the thread ends, even by a panic: a
                // request that panicked must not hold one of the console's
                // places for good.
                struct Leave(Arc<AtomicUsize>);
                impl Drop for Leave {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                let _leave = Leave(act);
                me.console(stream, &ops);
            });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Serves one administrative connection: one request, one answer.
    pub fn console(&self, mut stream: UnixStream, operators: &Operators) {
        // A write that makes no progress at all for this long fails at once.
        let _ = stream.set_write_timeout(Some(ANSWER_GRACE));
        let line = read_line(&mut stream, Instant::now() + REQUEST_DEADLINE);
        let Ok(writer) = stream.try_clone() else { return };
        let mut answer = Answer { out: BufWriter::new(Paced { inner: writer, started: None, sent: 0 }) };
        let now = (self.clock)();
        let parsed = line.and_then(|l| Request::parse(&l, now));
        let (token, request) = match parsed {
            Ok(p) => p,
            Err(e) => {
                self.report(&format!("console: request refused: {e}"));
                let _ = answer.fail("bad-request", &e.to_string());
                return;
            }
        };
        let Some(who) = operators.identify(&token).cloned() else {
            self.report(&format!("console: {} refused: no operator has this token", request.op()));
            let _ = answer.fail("unauthenticated", "an operator token the service knows expected");
            return;
        };
        let _ = self.console_request(&who, request, &mut answer);
    }

    fn console_request<W: Write>(
        &self,
        who: &OperatorEntry,
        request: Request,
        answer: &mut Answer<W>,
    ) -> std::io::Result<()> {
        let op = request.op().to_owned();
        let done = |result: &Result<Value, AdminError>| match result {
            Ok(_) => format!("console: {} by {}: done", op, who.operator),
            Err(e) => format!("console: {} by {}: {e}", op, who.operator),
        };
        let result: Result<Value, AdminError> = match request {
            Request::Whoami => Ok(json!({"operator": who.operator.as_str(), "approver": who.approver})),
            Request::Grant(req) => self.grant_as(who, req).map(|g| grant_json(&g)),
            Request::Revoke(id) => self.revoke_as(who, id).map(|()| json!({"revoked": id.0})),
            Request::Grants(customer) => self.check_region(&customer).and_then(|()| self.grants_of(&customer)).map(|gs| {
                json!({"grants": gs.iter().map(grant_json).collect::<Vec<_>>()})
            }),
            Request::ExportPerson { grant, customer, user } => {
                let header = json!({"customer": customer.as_str()});
                let r = answer.stream(header, |out| self.export_person_as(&who.operator, grant, &customer, &user, out));
                self.report(&match &r {
                    Ok(Ok(n)) => format!("console: export-person by {}: {n} lines", who.operator),
                    Ok(Err(e)) => format!("console: export-person by {}: {e}", who.operator),
                    Err(e) => format!("console: export-person by {}: cut off: {e}", who.operator),
                });
                return r.map(|_| ());
            }
            Request::ErasePerson { grant, customer, user, request } => {
                let req = ErasureRequest::new(request, user, (self.clock)());
                self.erase_person_as(&who.operator, grant, &customer, &req)
                    .and_then(|r| serde_json::to_value(r).map_err(|e| AdminError::Output(e.to_string())))
                    .map(|r| json!({"receipt": r}))
            }
            Request::AccessLog(customer) => self.check_region(&customer).and_then(|()| self.access_log_of(&customer)),
            Request::RawLog => self.raw_log(),
            Request::Sweep if !who.approver => Err(AdminError::NotApprover),
            Request::Sweep => self
                .sweep((self.clock)())
                .map_err(AdminError::from)
                .map(|reports| {
                    json!({"swept": reports.iter().map(|(c, r)| json!({"customer": c.as_str(), "report": r})).collect::<Vec<_>>()})
                }),
            Request::Other(op, fields) => {
                let fields = Fields(fields);
                let handled = self.console_extra(who, &op, &fields, answer);
                return match handled {
                    Some(r) => r,
                    None => {
                        self.report(&format!("console: unknown operation by {}", who.operator));
                        answer.fail("bad-request", "an operation of the console protocol expected")
                    }
                };
            }
        };
        self.report(&done(&result));
        match result {
            Ok(v) => answer.ok(v),
            Err(e) => answer.fail(code_of(&e), &e.to_string()),
        }
    }

    /// Operations served beyond this module's own; `None` if unknown.
    fn console_extra<W: Write>(
        &self,
        who: &OperatorEntry,
        op: &str,
        fields: &Fields,
        answer: &mut Answer<W>,
    ) -> Option<std::io::Result<()>> {
        let now = (self.clock)();
        let result: Result<Value, AdminError> = match op {
            "request-record" | "notifications" | "acknowledge" | "instruct" | "requests" | "overdue" => {
                self.request_op(who, op, fields, now)
            }
            "execute-request" => {
                let parsed = (|| {
                    Ok::<_, RequestError>((fields.grant()?, fields.customer()?, fields.request_id("id")?))
                })();
                let (grant, customer, id) = match parsed {
                    Ok(p) => p,
                    Err(e) => return Some(answer.fail("bad-request", &e.to_string())),
                };
                if let Err(e) = self.check_region(&customer) {
                    return Some(answer.fail(code_of(&e), &e.to_string()));
                }
                let kind = self.requests().map(|r| r.request(&customer, id).map(|q| q.kind));
                if let Some(Ok(RequestKind::Access)) = kind {
                    // A request that is not ready is refused before a stream opens.
                    let ready = self.requests().map(|r| r.authorize_execution(&customer, id));
                    if let Some(Err(e)) = ready {
                        let e = AdminError::from(e);
                        self.report(&format!("console: execute-request by {}: {e}", who.operator));
                        return Some(answer.fail(code_of(&e), &e.to_string()));
                    }
                    let header = json!({"customer": customer.as_str(), "request": id.to_string()});
                    let streamed = answer.stream(header, |out| {
                        self.execute_request_as(&who.operator, grant, &customer, id, out).map(|o| o.records)
                    });
                    self.report(&format!("console: execute-request (access) by {}", who.operator));
                    return Some(streamed.map(|_| ()));
                }
                self.execute_request_as(&who.operator, grant, &customer, id, &mut std::io::sink()).map(
                    |o| json!({"request": id.to_string(), "records": o.records, "suppressed": o.suppressed}),
                )
            }
            "copy-customer" => {
                let parsed = (|| Ok::<_, RequestError>((fields.grant()?, fields.customer()?)))();
                let (grant, customer) = match parsed {
                    Ok(p) => p,
                    Err(e) => return Some(answer.fail("bad-request", &e.to_string())),
                };
                let header = json!({"customer": customer.as_str()});
                let streamed = answer.stream(header, |out| {
                    self.copy_customer_as(&who.operator, grant, &customer, out).map(|s| s.lines)
                });
                self.report(&match &streamed {
                    Ok(Ok(n)) => format!("console: copy-customer by {}: {n} lines", who.operator),
                    Ok(Err(e)) => format!("console: copy-customer by {}: {e}", who.operator),
                    Err(e) => format!(
                        "console: copy-customer by {}: the answer could not be written: {e}",
                        who.operator
                    ),
                });
                return Some(streamed.map(|_| ()));
            }
            "read-records" => {
                let parsed = (|| {
                    let after = match fields.0.get("after") {
                        None => 0,
                        Some(_) => i64::try_from(fields.u64("after", "a row id")?).unwrap_or(i64::MAX),
                    };
                    let limit = match fields.0.get("limit") {
                        None => 100,
                        Some(_) => fields.u64("limit", "1 to 1000 records")?,
                    };
                    if !(1..=1_000).contains(&limit) {
                        return Err(RequestError::Field { field: "limit", expected: "1 to 1000 records" });
                    }
                    Ok((fields.grant()?, fields.customer()?, after, limit))
                })();
                let (grant, customer, after, limit) = match parsed {
                    Ok(p) => p,
                    Err(e) => return Some(answer.fail("bad-request", &e.to_string())),
                };
                let header = json!({"customer": customer.as_str(), "after": after});
                let streamed = answer.stream(header, |out| {
                    let limit = usize::try_from(limit).unwrap_or(1);
                    self.read_records_as(&who.operator, grant, &customer, after, limit, out).map(|(n, _)| n)
                });
                self.report(&match &streamed {
                    Ok(Ok(n)) => format!("console: read-records by {}: {n} lines", who.operator),
                    Ok(Err(e)) => format!("console: read-records by {}: {e}", who.operator),
                    Err(e) => format!("console: read-records by {}: cut off: {e}", who.operator),
                });
                return Some(streamed.map(|_| ()));
            }
            "delete-customer" => match (fields.grant(), fields.customer()) {
                (Ok(grant), Ok(customer)) => self
                    .delete_customer_as(&who.operator, grant, &customer)
                    .and_then(|r| serde_json::to_value(r).map_err(|e| AdminError::Output(e.to_string()))),
                (Err(e), _) | (_, Err(e)) => Err(AdminError::BadRequest(e.to_string())),
            },
            "rotate-master" if !who.approver => Err(AdminError::NotApprover),
            "rotate-master" => {
                match fields.str("new_key_file", "the new master key's file on the service's machine") {
                    Ok(path) => master_key_file(Path::new(path))
                        .and_then(|m| self.rotate_master_key(m))
                        .map(|id| json!({"master_key": id.to_string()})),
                    Err(e) => Err(AdminError::BadRequest(e.to_string())),
                }
            }
            "rotate-customer-key" => match (fields.grant(), fields.customer()) {
                (Ok(g), Ok(c)) => self
                    .rotate_customer_key_as(&who.operator, g, &c)
                    .map(|id| json!({"customer": c.as_str(), "data_key": id.to_string()})),
                (Err(e), _) | (_, Err(e)) => Err(AdminError::BadRequest(e.to_string())),
            },
            "reseal" => {
                match (fields.grant(), fields.customer(), fields.u64("max_rows", "rows to move, 1 to 10000"))
                {
                    (Ok(g), Ok(c), Ok(n)) if (1..=10_000).contains(&n) => self
                        .reseal_as(&who.operator, g, &c, usize::try_from(n).unwrap_or(1))
                        .map(|p| json!({"customer": c.as_str(), "moved": p.moved, "remaining": p.remaining})),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        Err(AdminError::BadRequest(e.to_string()))
                    }
                    _ => Err(AdminError::BadRequest("field max_rows: expected 1 to 10000".into())),
                }
            }
            _ => return None,
        };
        self.report(&match &result {
            Ok(_) => format!("console: {op} by {}: done", who.operator),
            Err(e) => format!("console: {op} by {}: {e}", who.operator),
        });
        Some(match result {
            Ok(v) => answer.ok(v),
            Err(e) => answer.fail(code_of(&e), &e.to_string()),
        })
    }

    /// The end-user request operations of the console.
    fn request_op(
        &self,
        who: &OperatorEntry,
        op: &str,
        f: &Fields,
        now: Timestamp,
    ) -> Result<Value, AdminError> {
        let register = self.requests().ok_or(AdminError::NoRequests)?;
        let bad = |e: RequestError| AdminError::BadRequest(e.to_string());
        if op == "overdue" {
            // Ids, kinds and times only; this region's customers only.
            let settings = self.settings();
            let overdue: Vec<_> = register
                .overdue(now)?
                .into_iter()
                .filter(|o| self.other_region(&settings, &o.customer).is_ok())
                .collect();
            return Ok(json!({"overdue": overdue.iter().map(|o| json!({
                "customer": o.customer.as_str(),
                "request": o.id.to_string(),
                "kind": o.kind.as_str(),
                "waiting": match o.waiting { Waiting::Customer => "customer", _ => "execution" },
                "due_unix": time_json(o.due),
                "late_seconds": o.late.whole_seconds(),
            })).collect::<Vec<_>>()}));
        }
        let customer = f.customer().map_err(bad)?;
        let grant = f.grant().map_err(bad)?;
        // Every operation on a customer's requests is under a grant and in
        // the access log (the region is checked first).
        let detail = match op {
            "request-record" => "record an end user's request",
            "notifications" => "read the customer's notifications",
            "acknowledge" => "acknowledge a notification",
            "instruct" => "relay the customer's instruction on a request",
            _ => "list the customer's ready requests",
        };
        self.authorize(&who.operator, grant, &customer, Action::EndUserRequests, detail)?;
        Ok(match op {
            "request-record" => {
                if self.settings().customer(&customer).is_none() {
                    return Err(AdminError::BadRequest(
                        "field customer: expected a customer of this service".into(),
                    ));
                }
                let kind = match f.str("kind", "access or erasure").map_err(bad)? {
                    "access" => RequestKind::Access,
                    "erasure" => RequestKind::Erasure,
                    _ => return Err(AdminError::BadRequest("field kind: expected access or erasure".into())),
                };
                let user = f.user().map_err(bad)?;
                let channel = f.str("channel", "how the request came in").map_err(bad)?;
                let id = register.record(&customer, kind, &user, channel, now)?;
                json!({"request": id.to_string()})
            }
            "notifications" => {
                let list = register.notifications(&customer)?;
                json!({"notifications": list.iter().map(|n| json!({
                    "notification": n.id.to_string(),
                    "request": n.request.to_string(),
                    "kind": n.kind.as_str(),
                    "event": format!("{:?}", n.event).to_lowercase(),
                    "at_unix": time_json(n.at),
                })).collect::<Vec<_>>()})
            }
            "acknowledge" => {
                let id: NotificationId = f.str("id", "a notification id").map_err(bad)?.parse()?;
                register.acknowledge(&customer, id, now)?;
                json!({"acknowledged": id.to_string()})
            }
            "instruct" => {
                let id = f.request_id("id").map_err(bad)?;
                let instruction = match f.str("instruction", "proceed or decline").map_err(bad)? {
                    "proceed" => Instruction::Proceed,
                    "decline" => Instruction::Decline {
                        reason: f.str("reason", "the customer's reason").map_err(bad)?.to_owned(),
                    },
                    _ => {
                        return Err(AdminError::BadRequest(
                            "field instruction: expected proceed or decline".into(),
                        ));
                    }
                };
                let by = f.str("by", "the customer's administrator").map_err(bad)?;
                register.instruct(&customer, id, instruction, by, now)?;
                let request = register.request(&customer, id)?;
                json!({"request": id.to_string(), "state": format!("{:?}", request.state).to_lowercase(),
                       "due_unix": request.due.map(time_json)})
            }
            _ => {
                let ready = register.ready(&customer)?;
                json!({"ready": ready.iter().map(|r| json!({
                    "request": r.id.to_string(),
                    "kind": r.kind.as_str(),
                    "received_unix": time_json(r.received),
                    "due_unix": r.due.map(time_json),
                })).collect::<Vec<_>>()})
            }
        })
    }

    /// A grant for another operator, created by an approver.
    fn grant_as(&self, who: &OperatorEntry, req: GrantRequest) -> Result<privtel_access::Grant, AdminError> {
        let access = self.access.as_ref().ok_or(AdminError::NoAccessControl)?;
        if !who.approver {
            return Err(AdminError::NotApprover);
        }
        if who.operator == req.operator {
            return Err(AdminError::OwnGrant);
        }
        self.check_region(&req.customer)?;
        let customer = req.customer.clone();
        let grant = access.grant(req, (self.clock)()).map_err(AdminError::Access)?;
        self.report(&format!(
            "grant {} on customer {customer} for {} approved by {}",
            grant.id, grant.operator, who.operator
        ));
        Ok(grant)
    }

    fn revoke_as(&self, who: &OperatorEntry, id: GrantId) -> Result<(), AdminError> {
        let access = self.access.as_ref().ok_or(AdminError::NoAccessControl)?;
        let own = access.grant_of(id).is_some_and(|g| g.operator == who.operator);
        if !who.approver && !own {
            return Err(AdminError::NotApprover);
        }
        access.revoke(id, &who.operator, (self.clock)()).map_err(AdminError::Access)
    }

    fn grants_of(&self, customer: &CustomerId) -> Result<Vec<privtel_access::Grant>, AdminError> {
        let access = self.access.as_ref().ok_or(AdminError::NoAccessControl)?;
        Ok(access.grants_for(customer))
    }

    fn access_log_of(&self, customer: &CustomerId) -> Result<Value, AdminError> {
        let access = self.access.as_ref().ok_or(AdminError::NoAccessControl)?;
        let entries = access.entries_for(customer).map_err(AdminError::Access)?;
        let checkpoint = access.checkpoint((self.clock)());
        Ok(json!({
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
            "checkpoint": hex(&checkpoint.to_bytes()),
            "public_key": access.public_key().to_string(),
        }))
    }

    fn raw_log(&self) -> Result<Value, AdminError> {
        let access = self.access.as_ref().ok_or(AdminError::NoAccessControl)?;
        let checkpoint = access.checkpoint((self.clock)());
        let raw = access.raw().map_err(AdminError::Access)?;
        Ok(json!({
            "log": hex(&raw),
            "checkpoint": hex(&checkpoint.to_bytes()),
            "public_key": access.public_key().to_string(),
        }))
    }
}

fn time_json(t: Timestamp) -> Value {
    json!(t.unix_seconds())
}

fn grant_json(g: &privtel_access::Grant) -> Value {
    json!({
        "grant": g.id.0,
        "operator": g.operator.as_str(),
        "customer": g.customer.as_str(),
        "scope": g.scope.iter().map(Action::name).collect::<Vec<_>>(),
        "ticket": g.ticket,
        "justification": g.justification,
        "starts_unix": time_json(g.starts),
        "expires_unix": time_json(g.expires),
        "revoked_unix": g.revoked.map(time_json),
    })
}

fn entry_json(e: &privtel_access::Entry) -> Value {
    json!({
        "seq": e.seq,
        "at_unix": time_json(e.at),
        "kind": e.kind.name(),
        "operator": e.operator.as_str(),
        "action": e.action.name(),
        "grant": e.grant.0,
        "outcome": match e.outcome {
            privtel_access::Outcome::Allowed => "allowed".to_owned(),
            privtel_access::Outcome::Refused(r) => format!("refused: {r}"),
        },
        "detail": e.detail,
    })
}

/// The new master key of a `rotate-master` request: a regular file (not a
/// link, a pipe or a device) of at most 4 KiB, read by
/// [`MasterKey::load`]. Every refusal reads the same, so an answer tells
/// nothing of other files on the machine.
fn master_key_file(path: &Path) -> Result<MasterKey, AdminError> {
    let refused = || {
        AdminError::BadRequest(
            "field new_key_file: expected a regular file of 64 hex digits, mode 0600, owned by the service"
                .into(),
        )
    };
    let meta = std::fs::symlink_metadata(path).map_err(|_| refused())?;
    if !meta.file_type().is_file() || meta.len() > 4096 {
        return Err(refused());
    }
    MasterKey::load(path).map_err(|_| refused())
}

/// Binds the administrative socket at `path`, mode 0600 (only the
/// service's account may connect), replacing a stale socket file left by a
/// stopped service. Refuses a path that exists and is not a socket.
///
/// # Errors
///
/// The path exists and is not a socket, or it cannot be bound.
pub fn bind_console(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{}: expected no file or a stale socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    // The mode is set right after bind; a peer connecting in between
    // still needs an operator token for anything.
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

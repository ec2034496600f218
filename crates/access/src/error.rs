//! The error types of `privtel-access`. No message repeats a personal
//! value, an operator's free text or a customer's data: they name fields,
//! lengths, positions and instants.

use privtel_model::Timestamp;

use crate::grant::{Action, GrantId};

/// A grant request that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// The operator name is not 1 to 128 bytes of printable text.
    #[error("operator name of {len} bytes: expected 1 to 128 bytes without control characters")]
    Operator {
        /// Its length.
        len: usize,
    },
    /// No justification.
    #[error("empty justification: expected why the access is needed")]
    EmptyJustification,
    /// The justification is too long or holds control characters.
    #[error("justification of {len} bytes: expected at most 2000 bytes without control characters")]
    Justification {
        /// Its length.
        len: usize,
    },
    /// No ticket reference.
    #[error("empty ticket: expected the ticket or case reference")]
    EmptyTicket,
    /// The ticket is too long or holds control characters.
    #[error("ticket of {len} bytes: expected at most 128 bytes without control characters")]
    Ticket {
        /// Its length.
        len: usize,
    },
    /// No action in the scope.
    #[error("empty scope: expected at least one action")]
    EmptyScope,
    /// The expiry is not after the start.
    #[error(
        "grant expires at {expires}, not after its start at {starts}: expected an expiry after the start"
    )]
    ExpiresBeforeStart {
        /// The requested start.
        starts: Timestamp,
        /// The requested expiry.
        expires: Timestamp,
    },
    /// The grant would last longer than the configured maximum.
    #[error("grant of {requested_secs} s: expected at most {max_secs} s")]
    TooLong {
        /// The requested length in seconds.
        requested_secs: i64,
        /// The maximum in seconds.
        max_secs: i64,
    },
}

/// Why an action was refused. Each reason has a stable code, stored in
/// the access log as the entry's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DenyReason {
    /// No grant has this id.
    #[error("no such grant")]
    NoGrant,
    /// The grant was revoked.
    #[error("the grant was revoked")]
    Revoked,
    /// The grant is another operator's.
    #[error("the grant is another operator's")]
    OtherOperator,
    /// The grant is for another customer.
    #[error("the grant is for another customer")]
    OtherCustomer,
    /// The grant starts later.
    #[error("the grant is not valid yet")]
    NotYetValid,
    /// The grant has expired.
    #[error("the grant has expired")]
    Expired,
    /// The action is not in the grant's scope.
    #[error("the action is outside the grant's scope")]
    OutOfScope,
    /// A grant request that was refused ([`GrantError`]).
    #[error("the grant request was refused")]
    InvalidRequest,
    /// The access log could not be written: nothing is done without its
    /// entry (never stored: there is no entry to store it in).
    #[error("the access log could not be written")]
    LogUnavailable,
}

impl DenyReason {
    /// Every reason, in code order.
    pub const ALL: [Self; 9] = [
        Self::NoGrant,
        Self::Revoked,
        Self::OtherOperator,
        Self::OtherCustomer,
        Self::NotYetValid,
        Self::Expired,
        Self::OutOfScope,
        Self::InvalidRequest,
        Self::LogUnavailable,
    ];

    /// The stable code stored as an entry's outcome (0 is "allowed").
    pub const fn code(self) -> u8 {
        match self {
            Self::NoGrant => 1,
            Self::Revoked => 2,
            Self::OtherOperator => 3,
            Self::OtherCustomer => 4,
            Self::NotYetValid => 5,
            Self::Expired => 6,
            Self::OutOfScope => 7,
            Self::InvalidRequest => 8,
            Self::LogUnavailable => 9,
        }
    }

    /// The reason of a stored code, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// An action refused by [`crate::AccessControl::check`], logged (unless the
/// reason is [`DenyReason::LogUnavailable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} refused under grant {grant}: {reason}")]
pub struct Denied {
    /// Why.
    pub reason: DenyReason,
    /// The grant presented.
    pub grant: GrantId,
    /// The action asked for.
    pub action: Action,
    /// The log entry that records the refusal (`None` if it could not be
    /// written).
    pub entry: Option<u64>,
}

/// Bytes that are not an access log, an entry or a checkpoint of a version
/// this crate reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The file does not start with the log's header.
    #[error("not an access log: expected the header PTACCLOG")]
    Header,
    /// A version this crate does not read.
    #[error("{what} version {found}: expected {expected}")]
    Version {
        /// What was read.
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this crate reads.
        expected: u32,
    },
    /// The bytes end inside an item.
    #[error("{what} ends after {have} bytes at offset {offset}: expected {need}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes there.
        have: usize,
        /// Bytes it needs.
        need: usize,
    },
    /// A field holds a value no encoder writes.
    #[error("entry at offset {offset}: invalid {field}")]
    Field {
        /// Where the entry starts.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// Bytes left after an entry's last field.
    #[error("entry at offset {offset}: {extra} bytes after its last field")]
    Trailing {
        /// Where the entry starts.
        offset: usize,
        /// How many.
        extra: usize,
    },
    /// A frame longer than any entry.
    #[error("frame at offset {offset} of {len} bytes: expected at most {max}")]
    FrameTooLong {
        /// Where the frame starts.
        offset: usize,
        /// The length it claims.
        len: usize,
        /// The longest entry.
        max: usize,
    },
}

/// Why a log does not verify against a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes do not decode.
    #[error("the log does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The checkpoint's signature is not the key's.
    #[error("the checkpoint's signature does not verify under the service's public key")]
    Signature,
    /// Fewer entries than the checkpoint covers: the log was truncated.
    #[error("the log holds {have} entries but the checkpoint covers {expected}: truncated")]
    Truncated {
        /// Entries present.
        have: u64,
        /// Entries the checkpoint covers.
        expected: u64,
    },
    /// An entry is not at its place: inserted, deleted or reordered.
    #[error("entry at position {position} carries sequence number {found}: expected {position}")]
    Sequence {
        /// Its position in the log.
        position: u64,
        /// The sequence number it carries.
        found: u64,
    },
    /// An entry does not carry the hash of the one before it: the one
    /// before was edited, or entries were removed or swapped.
    #[error("entry {seq} does not carry the hash of entry {}: the log was edited", seq.wrapping_sub(1))]
    Chain {
        /// The entry whose link is broken.
        seq: u64,
    },
    /// The hash of the last covered entry is not the checkpoint's head.
    #[error("the hash of the first {size} entries is not the checkpoint's head: the log was edited")]
    Head {
        /// The checkpoint's size.
        size: u64,
    },
    /// The later checkpoint covers fewer entries than the earlier one.
    #[error("the later checkpoint covers {later} entries, the earlier {earlier}: the log shrank")]
    Shrunk {
        /// The earlier size.
        earlier: u64,
        /// The later size.
        later: u64,
    },
    /// The later checkpoint is dated before the earlier one.
    #[error("the later checkpoint is dated {later}, before the earlier at {earlier}")]
    Backdated {
        /// The earlier checkpoint's time.
        earlier: Timestamp,
        /// The later checkpoint's time.
        later: Timestamp,
    },
}

/// A key that cannot be read or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not an Ed25519 key in PKCS#8.
    #[error("not an Ed25519 private key in PKCS#8 v2: {0}")]
    Rejected(String),
    /// The system's random source failed.
    #[error("the random source failed")]
    Random,
    /// The key file could not be read or written.
    #[error("key file: {0}")]
    Io(#[from] std::io::Error),
    /// A public key of the wrong length.
    #[error("public key of {len} bytes: expected 32")]
    PublicKeyLength {
        /// Its length.
        len: usize,
    },
}

/// An operation of [`crate::AccessControl`] that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The grant request was refused (and logged).
    #[error("grant refused: {0}")]
    Grant(#[from] GrantError),
    /// No grant has this id.
    #[error("no grant {0}")]
    UnknownGrant(GrantId),
    /// Reading or writing the log failed; after a failed append the log
    /// refuses every write until reopened.
    #[error("access log {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the log.
    #[error("the access log is locked by another process")]
    Locked,
    /// The stored log does not decode.
    #[error("the stored access log is corrupt: {0}")]
    Corrupt(DecodeError),
    /// The stored log's hash chain is broken.
    #[error("the stored access log's hash chain is broken: {0}")]
    Chain(VerifyError),
    /// The stored log ends inside an entry (a write cut short, or a cut
    /// made by someone): refused unless
    /// [`crate::AccessOptions::repair_torn_tail`] is set.
    #[error(
        "the stored access log ends inside an entry at offset {offset} ({bytes} bytes): expected whole entries"
    )]
    TornTail {
        /// Where the incomplete entry starts.
        offset: u64,
        /// Its bytes present.
        bytes: u64,
    },
    /// An earlier write failed; the log takes no more entries.
    #[error("the access log failed earlier and takes no more entries: reopen it")]
    Poisoned,
    /// A text field over its limit.
    #[error("{field} of {len} bytes: expected at most {max}")]
    TooLong {
        /// Which.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// An operation of [`crate::RequestRegister`] that failed. No message holds
/// an end user's id, a reference or an administrator's words: they name
/// requests by id, fields, lengths and instants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The customer has no request with this id (another customer's
    /// request is unknown too).
    #[error("no request {0} for this customer")]
    UnknownRequest(crate::requests::RequestId),
    /// The customer has no notification with this id.
    #[error("no notification {0} for this customer")]
    UnknownNotification(crate::requests::NotificationId),
    /// The request waits for the customer's instruction: it may not be
    /// executed yet.
    #[error("request {0} awaits the customer's instruction: expected an instruction to proceed first")]
    NotInstructed(crate::requests::RequestId),
    /// The customer declined the request.
    #[error("request {0} was declined by the customer: expected a request instructed to proceed")]
    Declined(crate::requests::RequestId),
    /// The request is done already.
    #[error("request {0} is done already: expected a request instructed to proceed")]
    AlreadyDone(crate::requests::RequestId),
    /// The request has had its instruction.
    #[error("request {0} was instructed already: expected a request awaiting the customer's instruction")]
    AlreadyInstructed(crate::requests::RequestId),
    /// A text field out of bounds or holding control characters.
    #[error("{field} of {len} bytes: expected {min} to {max} bytes without control characters")]
    Text {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The least.
        min: usize,
        /// The most.
        max: usize,
    },
    /// A text kept after the request closes holds the subject's id.
    #[error("{field} holds the end user's id: expected a text that does not name the end user")]
    NamesSubject {
        /// Which field.
        field: &'static str,
    },
    /// Text that is not a request or notification id.
    #[error("{what} of {len} bytes: expected 16 hex digits, not all zero")]
    IdText {
        /// What was read.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// An instant outside what the register stores (the years 1677 to
    /// 2262), or a deadline beyond it.
    #[error("{what} instant out of range: expected one in the years 1677 to 2262")]
    TimeOutOfRange {
        /// Which instant.
        what: &'static str,
    },
    /// A count of the outcome above 2^63 - 1.
    #[error("outcome count out of range: expected at most 2^63 - 1")]
    CountTooLarge,
    /// Another register (in this process or another) holds the file.
    #[error("the request register is locked by another instance")]
    Locked,
    /// The file is not a request register (another SQLite file, or not
    /// SQLite).
    #[error("not a request register: expected a SQLite file with application id PTRQ")]
    NotARegister,
    /// A register of a later schema version.
    #[error("request register schema version {found}: expected at most {supported}")]
    Schema {
        /// The version of the file.
        found: i64,
        /// The newest this crate reads.
        supported: i64,
    },
    /// A stored value no version of the register writes.
    #[error("the stored request register is corrupt: invalid {field}")]
    Corrupt {
        /// Which field.
        field: &'static str,
    },
    /// The system's random source failed.
    #[error("the random source failed")]
    Random,
    /// SQLite failed.
    #[error("request register {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: rusqlite::Error,
    },
}

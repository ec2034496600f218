//! Log entries and their canonical bytes (version 1).
//!
//! An entry's bytes, all integers big-endian:
//!
//! ```text
//! u8      entry format version (1)
//! u64     seq (0, 1, 2, … : its position in the log)
//! i64 u32 at: Unix seconds, nanoseconds of the second
//! u8      kind: 1 grant, 2 revocation, 3 check (an action asked for)
//! u16 + … operator (UTF-8, 1..=128 bytes)
//! u16 + … customer id (1..=64 bytes of the id alphabet)
//! u8      action code (Action::code)
//! u64     grant id
//! u8      outcome: 0 allowed, else DenyReason::code
//! if kind = grant and outcome = allowed, the terms:
//!   u64     scope (bit set of action codes)
//!   i64 u32 starts
//!   i64 u32 expires
//!   u16 + … ticket (UTF-8, 1..=128 bytes)
//!   u16 + … justification (UTF-8, 1..=2000 bytes)
//! u16 + … detail (UTF-8, 0..=512 bytes; never a personal value)
//! [32]    prev_hash: the hash of the previous entry's bytes (zeros for seq 0)
//! ```
//!
//! The decoder is strict: exactly one byte string decodes to a given entry
//! (no unknown codes, no trailing bytes, valid UTF-8, valid ids), so
//! hashing the re-encoded entry is hashing the stored bytes.

use privtel_model::{CustomerId, Timestamp};

use crate::error::{DecodeError, DenyReason};
use crate::grant::{
    Action, GrantId, MAX_JUSTIFICATION_LEN, MAX_OPERATOR_LEN, MAX_TICKET_LEN, Operator, Scope,
};

/// The entry format version this crate writes and reads.
pub const ENTRY_VERSION: u8 = 1;
/// The longest detail, in bytes.
pub const MAX_DETAIL_LEN: usize = 512;
/// The longest an entry's bytes can be.
pub const MAX_ENTRY_LEN: usize = 1
    + 8
    + 12
    + 1
    + 2
    + MAX_OPERATOR_LEN
    + 2
    + privtel_model::MAX_TEXT_ID_LEN
    + 1
    + 8
    + 1
    + 8
    + 12
    + 12
    + 2
    + MAX_TICKET_LEN
    + 2
    + MAX_JUSTIFICATION_LEN
    + 2
    + MAX_DETAIL_LEN
    + 32;

/// The hash of the entry before the first.
pub const GENESIS: [u8; 32] = [0; 32];

/// The BLAKE3 key-derivation context of entry hashes.
const ENTRY_HASH_CONTEXT: &str = "privtel-access 2026-01 log entry v1";

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A grant was asked for (allowed: created; refused: its request was
    /// invalid).
    Grant,
    /// A grant was revoked.
    Revoke,
    /// An action was asked for under a grant (allowed or refused).
    Check,
}

impl EntryKind {
    /// The stable code stored.
    pub const fn code(self) -> u8 {
        match self {
            Self::Grant => 1,
            Self::Revoke => 2,
            Self::Check => 3,
        }
    }

    /// The kind of a stored code.
    pub fn from_code(code: u8) -> Option<Self> {
        [Self::Grant, Self::Revoke, Self::Check].into_iter().find(|k| k.code() == code)
    }

    /// The name shown to people.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Revoke => "revoke",
            Self::Check => "check",
        }
    }
}

/// Whether what an entry records was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_enums)] // allowed or refused: new reasons go in `DenyReason`
pub enum Outcome {
    /// Allowed (code 0).
    Allowed,
    /// Refused, and why (the reason's code).
    Refused(DenyReason),
}

impl Outcome {
    /// The stable code stored.
    pub const fn code(self) -> u8 {
        match self {
            Self::Allowed => 0,
            Self::Refused(r) => r.code(),
        }
    }

    /// The outcome of a stored code.
    pub fn from_code(code: u8) -> Option<Self> {
        if code == 0 { Some(Self::Allowed) } else { DenyReason::from_code(code).map(Self::Refused) }
    }
}

/// The terms of a grant, as its creating entry records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    /// Which actions.
    pub scope: Scope,
    /// From when.
    pub starts: Timestamp,
    /// Until when (excluded).
    pub expires: Timestamp,
    /// The ticket or case reference.
    pub ticket: String,
    /// Why.
    pub justification: String,
}

/// One entry of the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the log, from 0.
    pub seq: u64,
    /// When it was written (the service's clock).
    pub at: Timestamp,
    /// What it records.
    pub kind: EntryKind,
    /// Who acted or asked.
    pub operator: Operator,
    /// On whose data.
    pub customer: CustomerId,
    /// The action asked for ([`Action::ManageGrants`] for grants and
    /// revocations).
    pub action: Action,
    /// The grant created, revoked or presented.
    pub grant: GrantId,
    /// Allowed or refused.
    pub outcome: Outcome,
    /// The grant's terms (a grant entry that was allowed; `None` otherwise).
    pub terms: Option<Terms>,
    /// What else the customer should know (counts, reasons), never a
    /// personal value.
    pub detail: String,
    /// The hash of the previous entry's bytes ([`GENESIS`] for the first).
    pub prev_hash: [u8; 32],
}

impl Entry {
    /// The canonical bytes (format version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.detail.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        put_time(&mut out, self.at);
        out.push(self.kind.code());
        put_str(&mut out, self.operator.as_str());
        put_str(&mut out, self.customer.as_str());
        out.push(self.action.code());
        out.extend_from_slice(&self.grant.0.to_be_bytes());
        out.push(self.outcome.code());
        if let Some(t) = &self.terms {
            out.extend_from_slice(&t.scope.bits().to_be_bytes());
            put_time(&mut out, t.starts);
            put_time(&mut out, t.expires);
            put_str(&mut out, &t.ticket);
            put_str(&mut out, &t.justification);
        }
        put_str(&mut out, &self.detail);
        out.extend_from_slice(&self.prev_hash);
        out
    }

    /// Decodes the canonical bytes of one entry; `offset` (where they
    /// start in their file) is only for error messages.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for anything but exactly one valid entry.
    pub fn decode(bytes: &[u8], offset: usize) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, pos: 0, offset };
        let version = r.u8()?;
        if version != ENTRY_VERSION {
            return Err(DecodeError::Version {
                what: "entry format",
                found: u32::from(version),
                expected: u32::from(ENTRY_VERSION),
            });
        }
        let seq = r.u64()?;
        let at = r.time("at")?;
        let kind = EntryKind::from_code(r.u8()?).ok_or(r.field("kind"))?;
        let operator = r.text("operator", MAX_OPERATOR_LEN)?;
        let operator = Operator::new(operator).map_err(|_| r.field("operator"))?;
        let customer = r.text("customer", privtel_model::MAX_TEXT_ID_LEN)?;
        let customer = CustomerId::new(customer).map_err(|_| r.field("customer"))?;
        let action = Action::from_code(r.u8()?).ok_or(r.field("action"))?;
        let grant = GrantId(r.u64()?);
        let outcome = Outcome::from_code(r.u8()?).ok_or(r.field("outcome"))?;
        if outcome == Outcome::Refused(DenyReason::LogUnavailable) {
            return Err(r.field("outcome"));
        }
        let terms = if kind == EntryKind::Grant && outcome == Outcome::Allowed {
            let scope = Scope::from_bits(r.u64()?).filter(|s| !s.is_empty()).ok_or(r.field("scope"))?;
            let starts = r.time("starts")?;
            let expires = r.time("expires")?;
            let ticket = r.text("ticket", MAX_TICKET_LEN)?;
            let justification = r.text("justification", MAX_JUSTIFICATION_LEN)?;
            if ticket.is_empty() || justification.is_empty() {
                return Err(r.field("terms"));
            }
            Some(Terms { scope, starts, expires, ticket, justification })
        } else {
            None
        };
        let detail = r.text("detail", MAX_DETAIL_LEN)?;
        let prev_hash = r.array::<32>()?;
        if r.pos != bytes.len() {
            return Err(DecodeError::Trailing { offset, extra: bytes.len() - r.pos });
        }
        Ok(Self { seq, at, kind, operator, customer, action, grant, outcome, terms, detail, prev_hash })
    }

    /// The hash of this entry's canonical bytes (what the next entry
    /// carries as `prev_hash`).
    pub fn hash(&self) -> [u8; 32] {
        hash_bytes(&self.encode())
    }
}

/// The hash of an entry's canonical bytes: BLAKE3 in key-derivation mode
/// with the context `privtel-access 2026-01 log entry v1`.
pub fn hash_bytes(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(ENTRY_HASH_CONTEXT);
    h.update(bytes);
    *h.finalize().as_bytes()
}

fn put_time(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&t.unix_seconds().to_be_bytes());
    out.extend_from_slice(&t.subsec_nanos().to_be_bytes());
}

/// Writes a length-prefixed string; callers bound every string far below
/// `u16::MAX` (checked on the way in), and a longer one is cut at a
/// character boundary rather than writing a wrong length.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let len = u16::try_from(end).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if rest.len() < n {
            return Err(DecodeError::Truncated {
                what: "entry",
                offset: self.offset,
                have: self.bytes.len(),
                need: self.pos + n,
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn time(&mut self, field: &'static str) -> Result<Timestamp, DecodeError> {
        let secs = i64::from_be_bytes(self.array()?);
        let nanos = u32::from_be_bytes(self.array()?);
        Timestamp::from_parts(secs, nanos).map_err(|_| self.field(field))
    }

    fn text(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len > max {
            return Err(self.field(field));
        }
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| self.field(field))?;
        if s.chars().any(char::is_control) {
            return Err(self.field(field));
        }
        Ok(s.to_owned())
    }

    fn field(&self, field: &'static str) -> DecodeError {
        DecodeError::Field { offset: self.offset, field }
    }
}

//! Operator access to customers' data: time-limited grants with a
//! justification and a ticket, checked before every administrative action,
//! and an append-only, hash-chained access log with signed checkpoints that
//! the customer verifies (the idea behind Certificate Transparency's logs,
//! with a plain hash chain instead of a Merkle tree).
//!
//! # Overview
//!
//! * A [`Grant`] lets one [`Operator`] do the actions of its [`Scope`] on
//!   one customer's data from `starts` until `expires`, at most
//!   [`AccessOptions::max_grant`] (8 hours by default) later. A request
//!   without a justification or a ticket, with an empty scope, an expiry
//!   not after its start or beyond the maximum is refused
//!   ([`GrantError`]) and the refusal logged.
//! * [`AccessControl::check`] answers `Ok(`[`Authorized`]`)` or
//!   `Err(`[`Denied`]`)`: refused without a grant, with a revoked grant,
//!   another operator's or another customer's grant, before its start or
//!   from its expiry on, or for an action outside its scope. Every answer
//!   is an entry of the log, written and synced before it is returned; if
//!   the entry cannot be written, the action is refused.
//! * The log ([`Entry`], format version 1: `entry` and `log` below) holds
//!   every grant, revocation and check. Each entry carries the BLAKE3 hash
//!   of the previous entry's canonical bytes. [`AccessControl::checkpoint`]
//!   signs (size, head hash, time) with the service's Ed25519 key
//!   ([`SigningKey`]); the customer keeps the [`Checkpoint`] and later runs
//!   [`verify`] (any edited, deleted, inserted or reordered entry it
//!   covers, or a log cut below its size, fails) and [`consistent`] (a
//!   later checkpoint extends an earlier one).
//! * [`AccessControl::entries_for`] lists every entry about one customer:
//!   who asked for what, when, under which grant, and whether it was
//!   allowed.
//! * [`RequestRegister`] holds end users' requests made to the vendor (a
//!   copy of their data, or its erasure): the customer is notified at
//!   once, nothing is executed before the customer's instruction
//!   ([`RequestRegister::authorize_execution`]), deadlines are watched
//!   ([`RequestRegister::overdue`]), and the end user's id is deleted from
//!   the register's files when the request closes.
//!
//! The model, the formats and what the log does not protect against are in
//! the repository's `docs/ACCESS.md`.
//!
//! # Storage: an append-only file, synced per entry
//!
//! The log is a file of its own (a 12-byte header, then length-prefixed
//! entries), opened for appending, locked against a second process, and
//! synced (`fdatasync`) after every entry before the answer is returned.
//! Not SQLite, although the store uses it: a SQLite file holds bytes no
//! entry covers (page headers, free space, b-tree cells and their order,
//! the journal), so "any byte of the stored log changed is detected" could
//! not hold, and its pages are rewritten in place. Here every byte of the
//! file is the fixed header, a length that must frame exactly one strictly
//! decoded entry, or a byte of an entry the hash chain covers; the file
//! is only ever appended to; and the verifier reads the very bytes on disk.
//! A write that fails is cut off again; if that fails too, the log takes
//! no more entries (every check is then refused) until reopened.
//!
//! # Example
//!
//! ```
//! use privtel_access::{AccessControl, AccessOptions, Action, GrantRequest, Operator, Scope, SigningKey, verify};
//! use privtel_model::{CustomerId, Duration, Timestamp};
//!
//! let dir = tempfile::tempdir()?;
//! let (key, _pkcs8) = SigningKey::generate()?;
//! let access = AccessControl::open(&dir.path().join("access.log"), key, AccessOptions::default())?;
//! let now = Timestamp::from_unix_seconds(1_800_000_000)?;
//! let jdoe = Operator::new("ops.jdoe")?;
//! let acme = CustomerId::new("acme")?;
//! let grant = access.grant(
//!     GrantRequest {
//!         operator: jdoe.clone(),
//!         customer: acme.clone(),
//!         justification: "end-user access request forwarded by the customer".into(),
//!         ticket: "SUP-1234".into(),
//!         scope: Scope::of(&[Action::ExportPerson]),
//!         starts: now,
//!         expires: now.checked_add(Duration::hours(2)).expect("in range"),
//!     },
//!     now,
//! )?;
//! assert!(access.check(grant.id, &jdoe, &acme, Action::ExportPerson, now).is_ok());
//! assert!(access.check(grant.id, &jdoe, &acme, Action::ErasePerson, now).is_err());
//!
//! // The customer keeps a checkpoint and the public key, and verifies later.
//! let checkpoint = access.checkpoint(now);
//! let verified = verify(&access.entries()?, &checkpoint, &access.public_key())?;
//! assert_eq!(verified.covered, 3);
//! assert_eq!(access.entries_for(&acme)?.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
mod control;
mod entry;
mod error;
mod grant;
mod log;
mod requests;
mod verify;

pub use checkpoint::{CHECKPOINT_LEN, CHECKPOINT_VERSION, Checkpoint, PublicKey, SigningKey};
pub use control::{AccessControl, AccessOptions, Authorized, DEFAULT_MAX_GRANT};
pub use entry::{
    ENTRY_VERSION, Entry, EntryKind, GENESIS, MAX_DETAIL_LEN, MAX_ENTRY_LEN, Outcome, Terms, hash_bytes,
};
pub use error::{
    AccessError, DecodeError, Denied, DenyReason, GrantError, KeyError, RequestError, VerifyError,
};
pub use grant::{
    Action, Grant, GrantId, GrantRequest, MAX_JUSTIFICATION_LEN, MAX_OPERATOR_LEN, MAX_TICKET_LEN, Operator,
    Scope,
};
pub use log::{HEADER_LEN, LOG_VERSION, MAGIC, decode_log, encode_log};
pub use requests::{
    DEFAULT_ACCESS_DEADLINE, DEFAULT_ERASURE_DEADLINE, DEFAULT_RESPONSE_WINDOW, Decision, Instruction,
    InstructionRecord, MAX_DECLINE_REASON_LEN, MAX_INSTRUCTED_BY_LEN, MAX_REFERENCE_LEN, Notification,
    NotificationEvent, NotificationId, Overdue, REQUESTS_APPLICATION_ID, REQUESTS_SCHEMA_VERSION, Request,
    RequestId, RequestKind, RequestOptions, RequestOutcome, RequestRegister, RequestState, Waiting,
};
pub use verify::{Verified, consistent, verify, verify_bytes};

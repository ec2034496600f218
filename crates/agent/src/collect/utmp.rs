//! `struct utmp` records, as glibc on x86_64 (and aarch64) writes them to
//! `/var/run/utmp` (sessions open now) and `/var/log/wtmp` (every login
//! and logout, appended).
//!
//! One record is [`UTMP_RECORD_LEN`] = 384 bytes, little-endian, with no
//! padding but the two bytes after `ut_type` (`<utmp.h>`, `bits/utmp.h`):
//!
//! | offset | size | field | meaning |
//! |---:|---:|---|---|
//! | 0 | 2 | `ut_type` (i16) | the record's kind ([`UtmpKind`]); 2 bytes of padding follow |
//! | 4 | 4 | `ut_pid` (i32) | the login process |
//! | 8 | 32 | `ut_line` | the terminal (`pts/0`), NUL-padded |
//! | 40 | 4 | `ut_id` | the terminal's `inittab` id |
//! | 44 | 32 | `ut_user` | the login name, NUL-padded (all 32 bytes when that long) |
//! | 76 | 256 | `ut_host` | the remote host, NUL-padded |
//! | 332 | 4 | `ut_exit` (2 × i16) | a dead process's termination and exit status |
//! | 336 | 4 | `ut_session` (i32) | the session id |
//! | 340 | 8 | `ut_tv` (2 × i32) | seconds and microseconds since 1970 |
//! | 348 | 16 | `ut_addr_v6` (4 × i32) | the remote address |
//! | 364 | 20 | reserved | |
//!
//! `ut_tv` is two 32-bit numbers even on 64-bit systems (glibc defines
//! `__WORDSIZE_TIME64_COMPAT32` there), so the record is the same size on
//! 32-bit and 64-bit x86. Only what a login event needs is decoded: the
//! kind, the login name, the terminal (to pair a logout with its login)
//! and the time; the remote host and address are never read.

use privtel_model::Timestamp;

/// The size of one `struct utmp` record (glibc, x86_64).
pub const UTMP_RECORD_LEN: usize = 384;

const TYPE_AT: usize = 0;
const LINE_AT: usize = 8;
const LINE_LEN: usize = 32;
const USER_AT: usize = 44;
const USER_LEN: usize = 32;
const TV_SEC_AT: usize = 340;
const TV_USEC_AT: usize = 344;

/// The kind of a utmp record (`ut_type`), by its number in `<utmp.h>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum UtmpKind {
    /// 0, `EMPTY`: an unused slot.
    Empty,
    /// 1, `RUN_LVL`: the run level changed (shutdown, reboot).
    RunLevel,
    /// 2, `BOOT_TIME`: the system booted.
    BootTime,
    /// 3, `NEW_TIME`: the clock after a change.
    NewTime,
    /// 4, `OLD_TIME`: the clock before a change.
    OldTime,
    /// 5, `INIT_PROCESS`: a process spawned by init.
    InitProcess,
    /// 6, `LOGIN_PROCESS`: a getty waiting for a login.
    LoginProcess,
    /// 7, `USER_PROCESS`: a person logged in.
    UserProcess,
    /// 8, `DEAD_PROCESS`: a session ended.
    DeadProcess,
    /// 9, `ACCOUNTING`.
    Accounting,
}

impl UtmpKind {
    /// The kind of number `code`, if it is one.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            0 => Self::Empty,
            1 => Self::RunLevel,
            2 => Self::BootTime,
            3 => Self::NewTime,
            4 => Self::OldTime,
            5 => Self::InitProcess,
            6 => Self::LoginProcess,
            7 => Self::UserProcess,
            8 => Self::DeadProcess,
            9 => Self::Accounting,
            _ => return None,
        })
    }

    /// The kind's number in `<utmp.h>`.
    pub fn code(self) -> i16 {
        match self {
            Self::Empty => 0,
            Self::RunLevel => 1,
            Self::BootTime => 2,
            Self::NewTime => 3,
            Self::OldTime => 4,
            Self::InitProcess => 5,
            Self::LoginProcess => 6,
            Self::UserProcess => 7,
            Self::DeadProcess => 8,
            Self::Accounting => 9,
        }
    }
}

/// One decoded utmp record: what a login event needs of it. `Debug`
/// prints the kind and time only (the login name and terminal are
/// personal).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UtmpRecord {
    /// The kind.
    pub kind: UtmpKind,
    /// The login name (empty for records that name none).
    pub user: String,
    /// The terminal (`pts/0`, `tty1`; empty when none).
    pub line: String,
    /// When.
    pub time: Timestamp,
}

impl std::fmt::Debug for UtmpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtmpRecord")
            .field("kind", &self.kind)
            .field("user", &"<personal>")
            .field("line", &"<personal>")
            .field("time", &self.time)
            .finish()
    }
}

/// A utmp file or record that does not decode. The message names the
/// record's offset and what was expected, never a value read.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UtmpError {
    /// Fewer bytes than one record.
    #[error("utmp record at byte {offset} is truncated: {len} bytes, expected 384")]
    Truncated {
        /// Where the record starts.
        offset: u64,
        /// The bytes there.
        len: usize,
    },
    /// `ut_type` is not one of the kinds of `<utmp.h>`.
    #[error("utmp record at byte {offset} has an unknown type: expected 0 to 9")]
    UnknownKind {
        /// Where the record starts.
        offset: u64,
    },
    /// A text field is not UTF-8 or holds a control character.
    #[error("utmp record at byte {offset}: {field} is not printable utf-8")]
    Text {
        /// Where the record starts.
        offset: u64,
        /// `user` or `line`.
        field: &'static str,
    },
    /// `ut_tv` is not a time (negative, or microseconds of a million or
    /// more).
    #[error("utmp record at byte {offset}: the time is not seconds and microseconds since 1970")]
    Time {
        /// Where the record starts.
        offset: u64,
    },
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_le_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A NUL-padded text field: up to its first NUL (or all of it).
fn text(b: &[u8], offset: u64, field: &'static str) -> Result<String, UtmpError> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = std::str::from_utf8(&b[..end]).map_err(|_| UtmpError::Text { offset, field })?;
    if s.chars().any(char::is_control) {
        return Err(UtmpError::Text { offset, field });
    }
    Ok(s.to_owned())
}

/// Decodes the record in `bytes` (exactly [`UTMP_RECORD_LEN`] bytes; more
/// are ignored), found at `offset` of its file (for errors).
///
/// ```
/// use privtel_agent::collect::{UTMP_RECORD_LEN, UtmpKind, parse_utmp_record};
///
/// let mut rec = [0u8; UTMP_RECORD_LEN];
/// rec[0] = 7; // USER_PROCESS
/// rec[8..13].copy_from_slice(b"pts/0");
/// rec[44..49].copy_from_slice(b"alice");
/// rec[340..344].copy_from_slice(&1_764_583_200i32.to_le_bytes());
/// let r = parse_utmp_record(&rec, 0)?;
/// assert_eq!((r.kind, r.user.as_str(), r.line.as_str()), (UtmpKind::UserProcess, "alice", "pts/0"));
/// assert_eq!(r.time.to_string(), "2025-12-01T10:00:00Z");
/// assert!(parse_utmp_record(&rec[..100], 0).is_err());
/// # Ok::<(), privtel_agent::collect::UtmpError>(())
/// ```
///
/// # Errors
///
/// [`UtmpError`] when the record is short, of an unknown kind, names a
/// user or terminal that is not printable UTF-8, or has no valid time.
pub fn parse_utmp_record(bytes: &[u8], offset: u64) -> Result<UtmpRecord, UtmpError> {
    if bytes.len() < UTMP_RECORD_LEN {
        return Err(UtmpError::Truncated { offset, len: bytes.len() });
    }
    let kind = UtmpKind::from_code(i16_at(bytes, TYPE_AT)).ok_or(UtmpError::UnknownKind { offset })?;
    let user = text(&bytes[USER_AT..USER_AT + USER_LEN], offset, "user")?;
    let line = text(&bytes[LINE_AT..LINE_AT + LINE_LEN], offset, "line")?;
    let (secs, usecs) = (i32_at(bytes, TV_SEC_AT), i32_at(bytes, TV_USEC_AT));
    let micros = u32::try_from(usecs).ok().filter(|&u| u < 1_000_000).ok_or(UtmpError::Time { offset })?;
    if secs < 0 {
        return Err(UtmpError::Time { offset });
    }
    let time =
        Timestamp::from_parts(i64::from(secs), micros * 1_000).map_err(|_| UtmpError::Time { offset })?;
    Ok(UtmpRecord { kind, user, line, time })
}

/// Decodes every whole record of `bytes` (a utmp or wtmp file read from a
/// record boundary, `base` its offset in the file): one result per record,
/// so one bad record does not hide the others; a trailing part of a
/// record is a [`UtmpError::Truncated`] at the end.
///
/// ```
/// use privtel_agent::collect::{UTMP_RECORD_LEN, UtmpError, parse_utmp};
///
/// let mut bytes = vec![0u8; UTMP_RECORD_LEN * 2 + 10];
/// bytes[UTMP_RECORD_LEN] = 42; // not a kind
/// let out = parse_utmp(&bytes, 0);
/// assert_eq!(out.len(), 3);
/// assert!(out[0].is_ok());
/// assert_eq!(out[1], Err(UtmpError::UnknownKind { offset: 384 }));
/// assert_eq!(out[2], Err(UtmpError::Truncated { offset: 768, len: 10 }));
/// ```
pub fn parse_utmp(bytes: &[u8], base: u64) -> Vec<Result<UtmpRecord, UtmpError>> {
    bytes
        .chunks(UTMP_RECORD_LEN)
        .enumerate()
        .map(|(i, rec)| parse_utmp_record(rec, base + (i * UTMP_RECORD_LEN) as u64))
        .collect()
}

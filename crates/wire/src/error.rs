//! The error type of `privtel-wire`.

use std::io;
use std::time::Duration;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a frame or message was refused, or a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the stream failed.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
    /// The peer closed the stream between frames.
    #[error("connection closed by the peer")]
    Closed,
    /// The input ended inside a frame.
    #[error("frame truncated at byte {offset}: expected {needed} more bytes")]
    Truncated {
        /// Bytes of the frame read so far.
        offset: usize,
        /// Bytes still expected.
        needed: usize,
    },
    /// The frame does not start with the magic bytes `PT`.
    #[error("bad magic {found:02x?}: expected \"PT\" (50 54)")]
    BadMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {version}: expected one of {supported:?}")]
    UnsupportedVersion {
        /// The version in the frame or hello.
        version: u8,
        /// The versions this build speaks.
        supported: &'static [u8],
    },
    /// Flag bits that are not defined (or compression without the feature).
    #[error("unsupported frame flags {flags:#04x}")]
    BadFlags {
        /// The flags byte.
        flags: u8,
    },
    /// A payload longer than the configured maximum, refused before any
    /// allocation.
    #[error("frame payload of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The length the frame claims.
        len: u64,
        /// The maximum.
        max: u32,
    },
    /// The checksum over header and payload does not match.
    #[error("checksum mismatch: frame says {expected:016x}, content gives {found:016x}")]
    Checksum {
        /// The checksum in the frame.
        expected: u64,
        /// The checksum of what arrived.
        found: u64,
    },
    /// A message kind this build does not know, before negotiation (after
    /// it, unknown kinds are skipped).
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A payload that does not decode as its message.
    #[error("{kind} payload does not decode at byte {offset}: {reason}")]
    Decode {
        /// The message kind, in words.
        kind: &'static str,
        /// How far decoding got (bytes of the payload consumed; the payload
        /// length when the error is about trailing bytes).
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// A message that could not be encoded (larger than the maximum).
    #[error("{kind} message could not be encoded: {reason}")]
    Encode {
        /// The message kind, in words.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The two sides share no protocol version.
    #[error("no common protocol version: we speak {ours:?}, the peer {theirs:?}")]
    NoCommonVersion {
        /// Ours.
        ours: Vec<u8>,
        /// Theirs.
        theirs: Vec<u8>,
    },
    /// A message that does not fit the conversation (a Batch before Hello).
    #[error("unexpected {got} message: expected {expected}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The peer answered with an Error message.
    #[error("the peer reported error {code:?}: {message}")]
    Remote {
        /// Its code.
        code: crate::ErrorCode,
        /// Its message.
        message: String,
    },
    /// A line of a reputation file that does not parse.
    #[error("reputation file line {line}: {message}")]
    Reputation {
        /// The line (1-based).
        line: usize,
        /// What is wrong, naming the value.
        message: String,
    },
    /// TLS set-up failed (certificates, keys, handshake).
    #[error("tls: {0}")]
    Tls(String),
    /// A deadline passed: the peer was too slow (or silent). The stream is
    /// then in an unknown state (part of a frame may have been read or
    /// written): close it.
    #[error("{which} deadline of {} passed: expected {}", fmt_duration(*.limit), .which.expected())]
    Deadline {
        /// Which deadline.
        which: DeadlineKind,
        /// Its length.
        limit: Duration,
    },
    /// An enrichment query that is refused before any work is done.
    #[error("enrichment query refused: {0}")]
    Query(#[from] QueryError),
}

/// Which deadline of a connection passed (see [`Error::Deadline`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum DeadlineKind {
    /// Waiting for the first byte of a frame.
    Idle,
    /// From the first byte of a frame to its last (receiving), or for a
    /// whole frame to be taken by the peer (sending).
    Frame,
    /// For the TLS handshake to complete.
    Handshake,
}

impl DeadlineKind {
    fn expected(self) -> &'static str {
        match self {
            Self::Idle => "the first byte of a frame within it",
            Self::Frame => "the whole frame within it",
            Self::Handshake => "the tls handshake to complete within it",
        }
    }
}

impl std::fmt::Display for DeadlineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::Frame => "frame",
            Self::Handshake => "handshake",
        })
    }
}

/// `1.5 s`, `250 ms`: a deadline's length in words.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// Why an enrichment query was refused before any work was done (see
/// [`crate::VerdictIndex::answer`]). Messages name the list, the position
/// and the lengths, never a prefix's or a domain's value.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A list holds more entries than a query may.
    #[error("{count} {list} asked about: expected at most {max}")]
    TooMany {
        /// `"binaries"` or `"domains"`.
        list: &'static str,
        /// How many the query holds.
        count: usize,
        /// [`crate::MAX_QUERY_ITEMS`].
        max: usize,
    },
    /// A prefix of a length outside the index's bounds (an empty or short
    /// prefix names a huge bucket).
    #[error("{list} prefix {index} has {len} bytes: expected {min} to {max}")]
    PrefixLength {
        /// `"binaries"` or `"domains"`.
        list: &'static str,
        /// Its position in the list (0-based).
        index: usize,
        /// Its length.
        len: usize,
        /// The index's shortest prefix.
        min: usize,
        /// 32 (a whole SHA-256).
        max: usize,
    },
    /// The answer could be larger than a frame may be.
    #[error(
        "the answer would take at least {bound} bytes: expected at most {max} (ask about fewer at a time)"
    )]
    AnswerTooLarge {
        /// How much of the answer was counted when it passed the limit.
        bound: u64,
        /// The frame limit it was checked against.
        max: u32,
    },
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

//! The error type of `privtel-wire`.

use std::io;

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
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

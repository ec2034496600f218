//! The agent's errors.

use std::path::PathBuf;

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The spool failed.
    #[error(transparent)]
    Store(#[from] privtel_store::Error),
    /// The connection failed (the spool keeps everything not acknowledged).
    #[error(transparent)]
    Wire(#[from] privtel_wire::Error),
    /// The service answered out of turn.
    #[error("the service answered {got} where {expected} was expected")]
    Protocol {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// Enrollment's answer could not be used (a certificate for another key
    /// or identity, unreadable, not saved).
    #[error("enrollment failed: {error}")]
    Enrollment {
        /// What did not hold.
        error: String,
    },
    /// The service said no with an error message.
    #[error("the service refused: {message}")]
    Refused {
        /// The service's words.
        message: String,
        /// Whether the service says a retry may help.
        retryable: bool,
    },
    /// The service deferred a batch (a rate limit, a store that cannot
    /// take it now): the device comes back no sooner than `retry_after`
    /// (the protocol's `retry_after_ms`, or the welcome's initial backoff
    /// when the ack names none). Everything not acknowledged stays spooled.
    #[error("the service deferred a batch for at least {} ms: {reason}", retry_after.as_millis())]
    Deferred {
        /// How long the service asks the device to wait.
        retry_after: std::time::Duration,
        /// Why (the service's words).
        reason: String,
    },
    /// Delivery gave up after its budget of attempts; everything not
    /// acknowledged stays spooled.
    #[error("gave up after {attempts} attempts ({last}); {waiting} records stay spooled")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: String,
        /// Records still waiting in the spool.
        waiting: u64,
    },
    /// Writing the audit log failed.
    #[error("writing the audit log {path}: {error}")]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// What failed (in the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// A key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A source (a log file) could not be opened or read.
    #[error("reading {path}: {error}")]
    Source {
        /// The source.
        path: PathBuf,
        /// What failed (in the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// An endpoint collector could not read the system (or the system
    /// has no such source: [`crate::collect::CollectError::NotSupported`]).
    #[error(transparent)]
    Collect(#[from] crate::collect::CollectError),
    /// A scan root does not exist or cannot be read.
    #[error("scan root {path}: {error}")]
    ScanRoot {
        /// The root.
        path: PathBuf,
        /// What failed (in the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// A version query out of bounds, or a version answer that does not
    /// hold (an offer not newer, not `https://`, a status without its
    /// content).
    #[error("version check: {0}")]
    Version(#[from] privtel_wire::VersionError),
    /// A downloaded installer could not be opened or read.
    #[error("installer not verified: {reason}")]
    Installer {
        /// What failed (an I/O error's kind, never the path or contents).
        reason: String,
    },
    /// A downloaded installer whose size is not the offer's.
    #[error("installer not verified: it holds {actual} bytes, the offer says {expected}")]
    InstallerSize {
        /// The offer's size.
        expected: u64,
        /// The file's.
        actual: u64,
    },
    /// A downloaded installer whose SHA-256 is not the offer's: it must
    /// not be used.
    #[error("installer not verified: its sha-256 is {actual}, the offer says {expected}")]
    InstallerDigest {
        /// The offer's SHA-256.
        expected: privtel_model::Digest,
        /// The file's.
        actual: privtel_model::Digest,
    },
}

impl AgentError {
    /// Whether trying again later may succeed: the network and a service
    /// that says so, not a bad spool or a protocol violation.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Wire(e) => !matches!(e, privtel_wire::Error::UnsupportedVersion { .. }),
            Self::Refused { retryable, .. } => *retryable,
            Self::Deferred { .. } => true,
            _ => false,
        }
    }
}

/// A key file that cannot be used. Never holds key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Group or others may read the key file.
    #[error(
        "key file {path} has mode {mode:03o}: group or others may read it; expected 600 (run `chmod 600` on it)"
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly one key.
    #[error("key file {path} holds {found} bytes: expected 32")]
    Length {
        /// The key file.
        path: PathBuf,
        /// Its length.
        found: u64,
    },
    /// The key file cannot be read or created.
    #[error("key file {path}: {error}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What failed (in the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// The operating system gave no randomness for a new key.
    #[error("no randomness for a new key: {0}")]
    Random(String),
    /// A pseudonym key ring file that does not read, or a change the ring
    /// refuses (an unknown key, destroying the current key).
    #[error("key ring file {path}: {error}")]
    Ring {
        /// The key ring file.
        path: PathBuf,
        /// What the ring said (in the message, so not repeated as a source).
        error: privtel_filter::KeyRingError,
    },
    /// The key ring holds no live current key to pseudonymise with.
    #[error("key ring file {path}: no current key (expected one made by a rotation)")]
    NoCurrentKey {
        /// The key ring file.
        path: PathBuf,
    },
}

/// One line of a source that was skipped: where and what was wrong, never
/// the value (a log line is personal).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct LineProblem {
    /// The line number (1-based) in its file.
    pub line: u64,
    /// The column (field) at fault, or `line` for the whole line.
    pub column: &'static str,
    /// What was expected.
    pub problem: &'static str,
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {} {}", self.line, self.column, self.problem)
    }
}

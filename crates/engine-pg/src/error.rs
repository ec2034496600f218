//! The errors of `privtel-engine-pg` beyond the store's.

/// Bytes read back from the database that do not decode. The reason names
/// what was expected, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored value does not decode: {reason}")]
pub struct DecodeError {
    reason: String,
}

impl DecodeError {
    pub(crate) fn new(reason: String) -> Self {
        Self { reason }
    }
}

/// Opening, maintaining or checking the PostgreSQL engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The server could not be reached or refused the connection.
    #[error("connecting to postgresql failed: {message}")]
    Connect {
        /// The client's message.
        message: String,
    },
    /// A store operation failed (the engine's common errors: a database
    /// error, a newer schema, a secret mismatch).
    #[error(transparent)]
    Store(#[from] privtel_store::Error),
    /// The DEFAULT partition of `records` holds rows: records whose day had
    /// no partition (their instant lies outside the window partitions are
    /// made for). They are kept and swept, but the window or the clock of
    /// their senders needs a look.
    #[error("the default partition holds {records} records: expected none (a record's day had no partition)")]
    DefaultPartitionHolds {
        /// Records in the default partition.
        records: u64,
    },
}

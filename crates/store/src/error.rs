//! The error type of `privtel-store`.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite refused an operation (the message is SQLite's, flattened so
    /// the public API does not expose rusqlite's types).
    #[error("database error while {op}: {message}")]
    Database {
        /// What the store was doing.
        op: &'static str,
        /// SQLite's message.
        message: String,
    },
    /// The file's schema is newer than this version understands.
    #[error("database schema version {found} is newer than the {supported} this version understands")]
    Schema {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest this version writes.
        supported: i64,
    },
    /// A stored payload does not decode as a record.
    #[error("record {id} does not decode: {reason}")]
    Decode {
        /// The row.
        id: i64,
        /// What is wrong.
        reason: String,
    },
    /// A payload was sealed under a key the store was not given.
    #[error("record {id} is sealed under key {key_id}, but the store has {have}")]
    MissingKey {
        /// The row.
        id: i64,
        /// The key it was sealed under.
        key_id: u32,
        /// The key the store has, in words.
        have: String,
    },
    /// The key has the right id but does not open the payload: the wrong
    /// secret, or a corrupted row. Never garbage.
    #[error("record {id} does not open under key {key_id}: wrong key or corrupted data")]
    WrongKey {
        /// The row.
        id: i64,
        /// The key id.
        key_id: u32,
    },
    /// A record could not be encoded (too large for the limit).
    #[error("record could not be encoded: {0}")]
    Encode(String),
    /// Writing an export failed.
    #[error("writing the export failed: {0}")]
    Export(#[source] std::io::Error),
}

pub(crate) trait Context<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::Database { op, message: e.to_string() })
    }
}

//! Small helpers over the `postgres` client: errors as the store's.

use privtel_store::Error;

/// Maps a client error to the store's [`Error::Database`], keeping the
/// server's message (not its detail, which can quote a row's values).
pub(crate) trait Op<T> {
    fn op(self, op: &'static str) -> Result<T, Error>;
}

impl<T> Op<T> for Result<T, postgres::Error> {
    fn op(self, op: &'static str) -> Result<T, Error> {
        self.map_err(|e| db_error(op, &e))
    }
}

pub(crate) fn db_error(op: &'static str, e: &postgres::Error) -> Error {
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    Error::Database { op, message: message.to_lowercase() }
}

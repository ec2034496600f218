//! The one type a filtered record travels in.

use std::ops::Deref;

use privtel_model::{Program, Record};

/// A record that went through a [`Filter`](crate::Filter): its program is
/// switched on, its kind belongs to the program, and every personal field
/// is in the form the policy gives it.
///
/// Only the filter constructs it: the field is private, there is no
/// `From<Record>`, no `Default` and no `Deserialize`. A composition that
/// accepts only `Filtered` (the agent's outbox does) therefore cannot be
/// handed a raw record by mistake — the compiler refuses:
///
/// ```compile_fail
/// use privtel_filter::Filtered;
/// fn raw(record: privtel_model::Record) -> Filtered {
///     Filtered(record) // the field is private
/// }
/// ```
///
/// ```compile_fail
/// use privtel_filter::Filtered;
/// fn raw(record: privtel_model::Record) -> Filtered {
///     record.into() // no `From<Record>`
/// }
/// ```
///
/// Reading it is free ([`Deref`] to [`Record`]); taking the record out
/// ([`Filtered::into_record`]) gives up the guarantee, on purpose, for
/// code below the agent (the wire and the store stay generic over
/// `Record`).
#[derive(Clone, PartialEq, Debug)]
pub struct Filtered(Record);

impl Filtered {
    /// Wraps a record the filter has just treated (crate-private: the
    /// filter is the only way in).
    pub(crate) fn new(record: Record) -> Self {
        Self(record)
    }

    /// The record.
    pub fn record(&self) -> &Record {
        &self.0
    }

    /// The program it belongs to.
    pub fn program(&self) -> Program {
        self.0.program
    }

    /// The record, leaving the type (and its guarantee) behind.
    pub fn into_record(self) -> Record {
        self.0
    }
}

impl Deref for Filtered {
    type Target = Record;

    fn deref(&self) -> &Record {
        &self.0
    }
}

impl AsRef<Record> for Filtered {
    fn as_ref(&self) -> &Record {
        &self.0
    }
}

impl serde::Serialize for Filtered {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl std::borrow::Borrow<Record> for Filtered {
    fn borrow(&self) -> &Record {
        &self.0
    }
}

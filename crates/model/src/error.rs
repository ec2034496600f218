//! The one error type of `privtel-model`: a text or number that is not a valid
//! value of a model type.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest part of a rejected value that an error message repeats.
///
/// Values come from outside (files, the wire); repeating a megabyte of garbage
/// in a log line helps nobody.
const MAX_ECHO: usize = 80;

/// A value that does not fit a model type.
///
/// An error names what was expected, never the value: types that may hold a
/// personal value or a piece of one (ids, pseudonyms, IP prefixes, time
/// buckets, timestamps, domains, geohashes, country codes, digests, labels)
/// are refused with [`Error::Rejected`], which gives the input's length only.
/// Only the names of a closed vocabulary (programs, treatments, threat
/// levels, …), which are never personal, are repeated ([`Error::Parse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text that is not one of the names of a closed vocabulary (a
    /// program, a treatment, a threat level): such names are never personal,
    /// so the error repeats the text.
    #[error("invalid {what} '{value}': expected {expected}")]
    Parse {
        /// The type that was being parsed, in words (`"device id"`).
        what: &'static str,
        /// The rejected text, shortened to at most 80 characters.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A text that does not parse as the named type and is not repeated,
    /// because it may be personal (an email address given where an opaque id
    /// belongs): the error describes where it went wrong instead.
    #[error("invalid {what} ({description}): expected {expected}")]
    Rejected {
        /// The type that was being parsed, in words (`"user id"`).
        what: &'static str,
        /// Its length and its first unexpected character, never the text.
        description: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A number outside the range the named type accepts.
    #[error("{what} {value} is out of range: expected {expected}")]
    OutOfRange {
        /// The type or field, in words (`"score"`).
        what: &'static str,
        /// The rejected number.
        value: i128,
        /// The accepted range, in words.
        expected: &'static str,
    },
}

impl Error {
    /// A [`Error::Rejected`] for a text of a type that may hold a personal
    /// value: it names the type, what was expected and the text's length,
    /// never a character of it.
    pub(crate) fn rejected(what: &'static str, value: &str, expected: &'static str) -> Self {
        Self::Rejected { what, description: shape(value), expected }
    }

    /// A [`Error::Parse`] that repeats at most [`MAX_ECHO`] characters of
    /// `value`: only for the names of a closed vocabulary, never for a type
    /// that may hold a personal value (use [`Error::rejected`]).
    pub(crate) fn parse(what: &'static str, value: &str, expected: &'static str) -> Self {
        let value = match value.char_indices().nth(MAX_ECHO) {
            Some((end, _)) => format!("{}…", &value[..end]),
            None => value.to_owned(),
        };
        Self::Parse { what, value, expected }
    }
}

/// The shape of a rejected text: its length, never its characters.
pub(crate) fn shape(value: &str) -> String {
    match value.len() {
        0 => "empty".to_owned(),
        1 => "1 byte".to_owned(),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let msg = Error::parse("device id", &long, "1 to 64 characters").to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.starts_with("invalid device id 'xxx"));
        assert!(msg.ends_with("…': expected 1 to 64 characters"));
    }

    #[test]
    fn rejected_values_are_described_by_their_length_only() {
        let err = Error::rejected("geohash", "u0canary", "a geohash");
        assert_eq!(err.to_string(), "invalid geohash (8 bytes): expected a geohash");
        assert!(!format!("{err:?}").contains("canary"));
        assert_eq!(shape(""), "empty");
    }
}

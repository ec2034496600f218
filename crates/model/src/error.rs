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
/// Only non-personal types (ids, digests, domains of verdicts, country codes,
/// labels) are parsed in this crate, so an error may repeat the value it
/// rejects; personal values ([`crate::Personal`]) are never parsed here and so
/// never reach an error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text form that does not parse as the named type.
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
    /// A [`Error::Parse`] that repeats at most [`MAX_ECHO`] characters of `value`.
    pub(crate) fn parse(what: &'static str, value: &str, expected: &'static str) -> Self {
        let value = match value.char_indices().nth(MAX_ECHO) {
            Some((end, _)) => format!("{}…", &value[..end]),
            None => value.to_owned(),
        };
        Self::Parse { what, value, expected }
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
}

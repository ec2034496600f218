//! Why an input is not a web host.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest part of the input an error repeats (inputs are URLs from
/// logs; a megabyte of garbage helps nobody, and a long query string is the
/// part most likely to hold personal data).
const MAX_ECHO: usize = 80;

/// An input that is not a web host, with the rule it broke.
///
/// `Display` repeats the input (shortened to 80 characters), as a user of
/// the command line expects. Where inputs are personal (URLs of a person's
/// browsing) and errors are logged or sent, log [`Error::kind`] instead: it
/// names the rule and never the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid web host '{input}': {kind}")]
pub struct Error {
    input: String,
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(input: &str, kind: ErrorKind) -> Self {
        let input = match input.char_indices().nth(MAX_ECHO) {
            Some((end, _)) => format!("{}…", &input[..end]),
            None => input.to_owned(),
        };
        Self { input, kind }
    }

    /// The rule the input broke: safe to log, it never holds the input.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The input, shortened to at most 80 characters.
    pub fn input(&self) -> &str {
        &self.input
    }
}

/// The rule an input broke. Each variant's message is lowercase and never
/// repeats the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing left after trimming control characters and spaces (rule 1).
    #[error("empty input")]
    Empty,
    /// The WHATWG URL parser rejected it (rule 3).
    #[error("not a url: {0}")]
    Url(String),
    /// A scheme other than http, https, ws, wss or ftp (rule 4).
    #[error("scheme '{0}' is not a web scheme (expected http, https, ws, wss or ftp)")]
    Scheme(String),
    /// The URL has no host, or only dots (rules 4 and 6).
    #[error("empty host")]
    EmptyHost,
    /// A label longer than 63 octets in ASCII form (rule 7).
    #[error("a label of {0} octets is longer than 63")]
    LabelTooLong(usize),
    /// A host longer than 253 octets in ASCII form (rule 7).
    #[error("host of {0} octets is longer than 253")]
    HostTooLong(usize),
    /// A character a DNS host name cannot hold (the URL parser lets some
    /// through, such as `*` or `!`).
    #[error("character {0:?} cannot appear in a host name")]
    Character(char),
}

/// A Public Suffix List text that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid public suffix list: {reason}")]
pub struct ListError {
    pub(crate) reason: String,
}

//! Errors of `privtel-filter`: a policy that cannot be used.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A policy that cannot be used. Every variant names the line of the policy
/// file (1-based; 0 for a policy built in code) and the offending name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not valid TOML, or a setting outside the known ones.
    #[error("policy line {line}: {message}")]
    Syntax {
        /// The line.
        line: usize,
        /// What the TOML reader said.
        message: String,
    },
    /// A field name that is not a personal field of the model.
    #[error("policy line {line}: unknown field '{name}' (not a personal field of the model)")]
    UnknownField {
        /// The line.
        line: usize,
        /// The name as written.
        name: String,
    },
    /// A program name that does not exist.
    #[error("policy line {line}: unknown program '{name}'")]
    UnknownProgram {
        /// The line.
        line: usize,
        /// The name as written.
        name: String,
    },
    /// A treatment that does not exist.
    #[error(
        "policy line {line}: unknown treatment '{value}' for field '{field}' \
         (expected clear, pseudonymise, generalise or drop)"
    )]
    UnknownTreatment {
        /// The line.
        line: usize,
        /// The field.
        field: String,
        /// The treatment as written.
        value: String,
    },
    /// `generalise` for a field that has no coarser form (names, phones, …).
    #[error("policy line {line}: field '{field}' has no coarser form and cannot be generalised")]
    CannotGeneralise {
        /// The line.
        line: usize,
        /// The field.
        field: String,
    },
    /// An attempt to switch off a program that cannot be switched off.
    #[error("policy line {line}: program '{program}' is required and cannot be switched off")]
    Required {
        /// The line.
        line: usize,
        /// The program.
        program: String,
    },
    /// A setting with a value outside its range.
    #[error("policy line {line}: {setting} = {value} is out of range: expected {expected}")]
    Setting {
        /// The line.
        line: usize,
        /// The setting.
        setting: &'static str,
        /// The value as written.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
}

//! Errors of `privtel-filter`: a policy that cannot be used.

use privtel_model::Treatment;

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
    /// A field that follows another ([`privtel_model::fields::Derivation::Follows`])
    /// set to a treatment other than its source's.
    #[error(
        "policy line {line}: field '{field}' is taken from '{from}' and always has its treatment \
         ({source_treatment}), not {treatment}: set '{from}' instead"
    )]
    Follows {
        /// The line.
        line: usize,
        /// The derived field.
        field: &'static str,
        /// The field it is taken from.
        from: &'static str,
        /// The treatment asked for the derived field.
        treatment: Treatment,
        /// The source's treatment.
        source_treatment: Treatment,
    },
    /// A clear field that would reveal a field the policy does not keep in
    /// clear ([`privtel_model::fields::Derivation::Reveals`]).
    #[error(
        "policy line {line}: field '{field}' cannot be clear while '{from}' is {source_treatment}: \
         it holds {holds}"
    )]
    Reveals {
        /// The line.
        line: usize,
        /// The derived field.
        field: &'static str,
        /// The field it is taken from.
        from: &'static str,
        /// The source's treatment.
        source_treatment: Treatment,
        /// What of the source the field holds.
        holds: &'static str,
    },
    /// An `[interactions]` entry that cannot be used.
    #[error("policy line {line}: interactions: application '{host}': {source}")]
    Interaction {
        /// The line.
        line: usize,
        /// The host as written (shortened to 80 characters, control
        /// characters escaped).
        host: String,
        /// What is wrong with it.
        source: crate::interactions::InteractionError,
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

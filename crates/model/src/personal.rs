//! Personal data as a type: [`Personal<T>`], a personal value in one of the
//! four forms a policy can choose.
//!
//! The vocabulary that describes fields is in `vocabulary.rs`, pseudonyms in
//! `pseudonym.rs`, generalised values in `generalised.rs`, and the visitor
//! that reaches every personal field of a record in `visit.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::generalised::Generalised;
use crate::pseudonym::Pseudonym;
use crate::vocabulary::{Form, Treatment};

/// A personal value in one of the four forms a policy can choose.
///
/// Every personal field of the model has this type, so nothing personal can
/// be written without a treatment having been chosen for it.
///
/// `Debug` never prints a clear or generalised value (it prints
/// `Clear(<redacted>)`), so a record can be logged with `{:?}` without
/// leaking; pseudonyms, which are safe to log, are printed.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
// Same four forms as `Treatment`: the contract, not an open set.
#[allow(clippy::exhaustive_enums)]
pub enum Personal<T> {
    /// The value itself.
    Clear(T),
    /// A keyed pseudonym of the value.
    Pseudonym(Pseudonym),
    /// A coarser value.
    Generalised(Generalised),
    /// Nothing: the value was never recorded (dropped by policy, or unknown).
    #[default]
    Withheld,
}

impl<T> Personal<T> {
    /// The clear value, if the field holds one.
    pub fn clear_value(&self) -> Option<&T> {
        match self {
            Self::Clear(v) => Some(v),
            _ => None,
        }
    }

    /// Which of the four forms the field is in.
    pub fn form(&self) -> Form {
        match self {
            Self::Clear(_) => Form::Clear,
            Self::Pseudonym(_) => Form::Pseudonym,
            Self::Generalised(_) => Form::Generalised,
            Self::Withheld => Form::Withheld,
        }
    }

    /// The treatment that leaves the field in its form.
    #[deprecated(
        since = "0.1.0",
        note = "a value has a form, not a treatment: use `form()` (or `form().treatment()`)"
    )]
    pub fn treatment(&self) -> Treatment {
        self.form().treatment()
    }

    /// Whether the field holds nothing.
    pub fn is_withheld(&self) -> bool {
        matches!(self, Self::Withheld)
    }

    /// Takes the value out, leaving [`Personal::Withheld`].
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Clear(_) => f.write_str("Clear(<redacted>)"),
            Self::Pseudonym(p) => write!(f, "Pseudonym({p})"),
            Self::Generalised(g) => write!(f, "Generalised({g:?})"),
            Self::Withheld => f.write_str("Withheld"),
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(v: T) -> Self {
        Self::Clear(v)
    }
}

//! The vocabulary that describes personal fields: what a field holds
//! ([`DataCategory`], [`ValueKind`]), the four forms a policy can keep it in
//! ([`Treatment`]), and the static description of one field ([`FieldSpec`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What kind of personal data a field holds, as the design's privacy notice
/// groups it. The customer's policy and the privacy manifest speak in these.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DataCategory {
    /// Who a person is: name, job title, email, phone, login, IP address.
    Identifier,
    /// What a person did on the network: URLs, domains, destination IPs,
    /// page load times.
    NetworkActivity,
    /// What a person did on the device: login times and durations,
    /// privileges, application use, the device's own name.
    DeviceInformation,
    /// Technical values that can still point at a person, such as a file path
    /// under a home folder.
    Technical,
    /// Free text written by or about a person (crash messages, feedback).
    FreeText,
}

impl DataCategory {
    /// Every category, in declaration order.
    pub const ALL: [Self; 5] =
        [Self::Identifier, Self::NetworkActivity, Self::DeviceInformation, Self::Technical, Self::FreeText];

    /// The category's place in [`Self::ALL`], for tables indexed by
    /// category. For memory only: stored and written forms use
    /// [`as_str`](Self::as_str).
    pub const fn index(self) -> usize {
        match self {
            Self::Identifier => 0,
            Self::NetworkActivity => 1,
            Self::DeviceInformation => 2,
            Self::Technical => 3,
            Self::FreeText => 4,
        }
    }

    /// The snake_case name used in policy files and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identifier => "identifier",
            Self::NetworkActivity => "network_activity",
            Self::DeviceInformation => "device_information",
            Self::Technical => "technical",
            Self::FreeText => "free_text",
        }
    }
}

impl fmt::Display for DataCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The shape of a personal value, which decides how it can be generalised
/// (a URL to its registrable domain, an IP to a prefix, …).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ValueKind {
    /// A login or account name (`alice`, `CORP\alice`).
    Login,
    /// A first or last name.
    Name,
    /// Any other short identifying text (job title, device name, fingerprint).
    Text,
    /// An email address or UPN; generalises to its domain.
    Email,
    /// A phone number.
    Phone,
    /// A file system path.
    Path,
    /// A full URL; generalises to its registrable domain.
    Url,
    /// A host name; generalises to its registrable domain.
    Host,
    /// An IPv4 or IPv6 address; generalises to a prefix.
    Ip,
    /// An instant; generalises to the minute, hour or day.
    Timestamp,
    /// A duration; generalises to a bucket.
    Duration,
    /// A geohash; generalises to fewer characters.
    Geohash,
    /// Account privileges.
    Privileges,
    /// Free text; generalising means scrubbing identifiers out of it.
    FreeText,
}

/// The form a personal field is kept in: the customer chooses one per field.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// The four forms are the privacy contract with customers; a fifth would be a
// change of that contract, not a compatible addition.
#[allow(clippy::exhaustive_enums)]
pub enum Treatment {
    /// Kept as it is.
    Clear,
    /// Replaced by a keyed pseudonym ([`Pseudonym`](crate::Pseudonym)).
    Pseudonymise,
    /// Replaced by a coarser value of the same kind ([`Generalised`](crate::Generalised)).
    Generalise,
    /// Never recorded ([`Personal::Withheld`](crate::Personal::Withheld)).
    /// Policy files and serialized forms name it `withhold`; the old
    /// spelling `drop` still reads.
    #[serde(alias = "drop")]
    Withhold,
}

impl Treatment {
    /// Every treatment, from least to most private.
    pub const ALL: [Self; 4] = [Self::Clear, Self::Generalise, Self::Pseudonymise, Self::Withhold];

    /// The old name of [`Treatment::Withhold`].
    #[deprecated(since = "0.1.0", note = "one name per concept: use `Treatment::Withhold`")]
    #[allow(non_upper_case_globals)]
    pub const Drop: Self = Self::Withhold;

    /// The old policy-file spelling of `withhold`, still read (a policy
    /// loader reports it as deprecated).
    pub const LEGACY_WITHHOLD: &'static str = "drop";

    /// The form a value has once this treatment is applied.
    pub const fn form(self) -> Form {
        match self {
            Self::Clear => Form::Clear,
            Self::Generalise => Form::Generalised,
            Self::Pseudonymise => Form::Pseudonym,
            Self::Withhold => Form::Withheld,
        }
    }

    /// The treatment's place in [`Self::ALL`] (from least to most
    /// private, not the declaration order), for tables indexed by
    /// treatment. For memory only: stored and written forms use
    /// [`as_str`](Self::as_str).
    pub const fn index(self) -> usize {
        match self {
            Self::Clear => 0,
            Self::Generalise => 1,
            Self::Pseudonymise => 2,
            Self::Withhold => 3,
        }
    }

    /// The lowercase name used in policy files (`clear`, `pseudonymise`,
    /// `generalise`, `withhold`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::Pseudonymise => "pseudonymise",
            Self::Generalise => "generalise",
            Self::Withhold => "withhold",
        }
    }
}

impl fmt::Display for Treatment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The form a personal value is in: what a [`Treatment`] leaves behind,
/// named as [`Personal`](crate::Personal)'s variants are.
///
/// ```
/// use privtel_model::{Form, Personal, Treatment};
///
/// let email: Personal<String> = Personal::Withheld;
/// assert_eq!(email.form(), Form::Withheld);
/// assert_eq!(Form::Withheld.treatment(), Treatment::Withhold);
/// assert_eq!(Treatment::Pseudonymise.form(), Form::Pseudonym);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[allow(clippy::exhaustive_enums)] // one per treatment, as `Treatment` is
pub enum Form {
    /// The value itself.
    Clear,
    /// A keyed pseudonym of the value.
    Pseudonym,
    /// A coarser value.
    Generalised,
    /// Nothing: the value was never recorded.
    Withheld,
}

impl Form {
    /// The treatment that leaves a value in this form.
    pub const fn treatment(self) -> Treatment {
        match self {
            Self::Clear => Treatment::Clear,
            Self::Pseudonym => Treatment::Pseudonymise,
            Self::Generalised => Treatment::Generalise,
            Self::Withheld => Treatment::Withhold,
        }
    }

    /// The lowercase name (`clear`, `pseudonym`, `generalised`, `withheld`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::Pseudonym => "pseudonym",
            Self::Generalised => "generalised",
            Self::Withheld => "withheld",
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Treatment {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == Self::LEGACY_WITHHOLD {
            return Ok(Self::Withhold);
        }
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Error::parse("treatment", s, "one of 'clear', 'pseudonymise', 'generalise', 'withhold'")
        })
    }
}

/// The static description of one personal field of the model.
///
/// Every personal field has exactly one `FieldSpec`, listed in
/// [`crate::fields::ALL`]; the visitor hands it out with the value, so a
/// policy can look a field up by path and a manifest can list them all.
#[derive(Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FieldSpec {
    /// Dotted path, `<record>.<field>` (`user.email`). Unique in the model;
    /// policy files name fields by it.
    pub path: &'static str,
    /// The privacy category.
    pub category: DataCategory,
    /// The shape of the value.
    pub kind: ValueKind,
    /// The most private treatment that still lets the field serve its
    /// program; what a policy that says nothing about the field gets.
    pub default_treatment: Treatment,
    /// Why the field is collected at all, in one line for the manifest.
    pub purpose: &'static str,
    /// The field's place in [`crate::fields::ALL`], given by the register
    /// itself (see [`FieldSpec::index`]).
    index: usize,
}

impl FieldSpec {
    pub(crate) const fn new(
        index: usize,
        path: &'static str,
        category: DataCategory,
        kind: ValueKind,
        default_treatment: Treatment,
        purpose: &'static str,
    ) -> Self {
        Self { path, category, kind, default_treatment, purpose, index }
    }

    /// The field's place in [`crate::fields::ALL`] (`0..ALL.len()`), for
    /// tables indexed by field, such as per-field counters. Each spec
    /// carries it from the register, so no lookup is needed and no field
    /// can fall back to another's slot. For memory only: what is stored or
    /// written names the field by its [`path`](Self::path).
    ///
    /// ```
    /// use privtel_model::fields;
    /// assert_eq!(fields::USER_EMAIL.index(), 7);
    /// assert!(std::ptr::eq(fields::ALL[fields::USER_EMAIL.index()], &fields::USER_EMAIL));
    /// ```
    pub const fn index(&self) -> usize {
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_place_in_all() {
        for (i, t) in Treatment::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i, "{t}");
        }
        for (i, c) in DataCategory::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i, "{c}");
        }
    }

    #[test]
    fn treatments_parse_by_name_only() {
        for t in Treatment::ALL {
            assert_eq!(t.as_str().parse::<Treatment>().unwrap(), t);
        }
        let err = "hash".parse::<Treatment>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid treatment 'hash': expected one of 'clear', 'pseudonymise', 'generalise', 'withhold'"
        );
    }
}

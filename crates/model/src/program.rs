//! Programs: the separate purposes data is collected for, each switched on or
//! off on its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A purpose the vendor collects data for. Each goes to its own endpoint and
/// each is consented to separately.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Program {
    /// Product configuration, performance, feature usage and feedback, so the
    /// vendor can support the product.
    SupportTelemetry,
    /// Per-customer aggregates for cross-customer benchmarks ("cloud
    /// intelligence"), anonymised at customer level.
    Benchmarking,
    /// Hashes of binaries and names of domains go up, anonymously (as
    /// sightings, with no device, user or path); threat levels,
    /// categories, reputations and hosting countries come back. Its only
    /// records are those answers.
    Enrichment,
    /// Account email, session, device fingerprint, OS and coarse location for
    /// cloud licences.
    LicenceAuthentication,
    /// The current version goes up, an update offer comes back.
    VersionCheck,
    /// Organisation, hardware, OS, crash reports and features used, without
    /// names.
    AnonymousUsage,
    /// First name, last name and email appended to usage data, and what
    /// names the person's activity: binaries where they lie, executions,
    /// web requests. Off unless the person agreed.
    PersonalisedUsage,
}

impl Program {
    /// Every program, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::SupportTelemetry,
        Self::Benchmarking,
        Self::Enrichment,
        Self::LicenceAuthentication,
        Self::VersionCheck,
        Self::AnonymousUsage,
        Self::PersonalisedUsage,
    ];

    /// The program's stable code, as stores keep it: written out here, never
    /// derived from the declaration order, so reordering or adding a variant
    /// changes no stored row. The numbers are the positions wave-1 stores
    /// wrote, so their rows keep their meaning. A new program takes the next
    /// unused number; a number is never reused.
    pub const fn code(self) -> u8 {
        match self {
            Self::SupportTelemetry => 0,
            Self::Benchmarking => 1,
            Self::Enrichment => 2,
            Self::LicenceAuthentication => 3,
            Self::VersionCheck => 4,
            Self::AnonymousUsage => 5,
            Self::PersonalisedUsage => 6,
        }
    }

    /// The program's place in [`Self::ALL`] (`0..ALL.len()`), for tables
    /// indexed by program, such as counters in an array of
    /// `Program::ALL.len()`. Written out, not searched for, so no program
    /// can fall back to another's slot. An index is for memory only: what
    /// is stored uses [`code`](Self::code).
    ///
    /// ```
    /// use privtel_model::Program;
    /// let mut counts = [0u64; Program::ALL.len()];
    /// counts[Program::Enrichment.index()] += 1;
    /// assert_eq!(Program::ALL[Program::Enrichment.index()], Program::Enrichment);
    /// ```
    pub const fn index(self) -> usize {
        match self {
            Self::SupportTelemetry => 0,
            Self::Benchmarking => 1,
            Self::Enrichment => 2,
            Self::LicenceAuthentication => 3,
            Self::VersionCheck => 4,
            Self::AnonymousUsage => 5,
            Self::PersonalisedUsage => 6,
        }
    }

    /// The program with a stable [`code`](Self::code), if any.
    ///
    /// ```
    /// use privtel_model::Program;
    /// assert_eq!(Program::from_code(Program::Enrichment.code()), Some(Program::Enrichment));
    /// assert_eq!(Program::from_code(200), None);
    /// ```
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::SupportTelemetry,
            1 => Self::Benchmarking,
            2 => Self::Enrichment,
            3 => Self::LicenceAuthentication,
            4 => Self::VersionCheck,
            5 => Self::AnonymousUsage,
            6 => Self::PersonalisedUsage,
            _ => return None,
        })
    }

    /// The snake_case name used in policy files and on the wire's endpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SupportTelemetry => "support_telemetry",
            Self::Benchmarking => "benchmarking",
            Self::Enrichment => "enrichment",
            Self::LicenceAuthentication => "licence_authentication",
            Self::VersionCheck => "version_check",
            Self::AnonymousUsage => "anonymous_usage",
            Self::PersonalisedUsage => "personalised_usage",
        }
    }

    /// Whether a customer or user can switch the program off.
    ///
    /// Licence authentication, version check and anonymous usage are required
    /// for the product to work (or to be licensed); everything else is
    /// optional. Benchmarking may still be made mandatory by a SaaS contract:
    /// that is the deployment's decision, not the model's.
    pub fn can_switch_off(self) -> bool {
        !matches!(self, Self::LicenceAuthentication | Self::VersionCheck | Self::AnonymousUsage)
    }

    /// Whether the program is on when a policy says nothing about it.
    ///
    /// Enrichment is a paid add-on and personalised usage needs the person's
    /// agreement, so both start off; the rest start on.
    pub fn default_enabled(self) -> bool {
        !matches!(self, Self::Enrichment | Self::PersonalisedUsage)
    }

    /// The endpoint path the program's data goes to (`/v1/enrichment`).
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::SupportTelemetry => "/v1/support-telemetry",
            Self::Benchmarking => "/v1/benchmarking",
            Self::Enrichment => "/v1/enrichment",
            Self::LicenceAuthentication => "/v1/licence",
            Self::VersionCheck => "/v1/version-check",
            Self::AnonymousUsage => "/v1/usage",
            Self::PersonalisedUsage => "/v1/usage/personalised",
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Program {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            Error::parse(
                "program",
                s,
                "one of support_telemetry, benchmarking, enrichment, licence_authentication, \
                 version_check, anonymous_usage, personalised_usage",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design_table() {
        let table = [
            (Program::SupportTelemetry, true, true),
            (Program::Benchmarking, true, true),
            (Program::Enrichment, true, false),
            (Program::LicenceAuthentication, false, true),
            (Program::VersionCheck, false, true),
            (Program::AnonymousUsage, false, true),
            (Program::PersonalisedUsage, true, false),
        ];
        for (p, switchable, on) in table {
            assert_eq!(p.can_switch_off(), switchable, "{p}");
            assert_eq!(p.default_enabled(), on, "{p}");
            assert_eq!(p.as_str().parse::<Program>().unwrap(), p);
        }
        assert!("support".parse::<Program>().is_err());
    }

    #[test]
    fn index_is_the_place_in_all() {
        for (i, p) in Program::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i, "{p}");
        }
    }

    /// Stored codes are a format: this table pins every one. Changing a
    /// number here breaks every store ever written.
    #[test]
    fn codes_are_pinned() {
        let table = [
            (Program::SupportTelemetry, 0),
            (Program::Benchmarking, 1),
            (Program::Enrichment, 2),
            (Program::LicenceAuthentication, 3),
            (Program::VersionCheck, 4),
            (Program::AnonymousUsage, 5),
            (Program::PersonalisedUsage, 6),
        ];
        assert_eq!(table.len(), Program::ALL.len());
        for (p, code) in table {
            assert_eq!(p.code(), code, "{p}");
            assert_eq!(Program::from_code(code), Some(p));
        }
        for code in 7..=u8::MAX {
            assert_eq!(Program::from_code(code), None, "{code}");
        }
    }
}

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
    /// Hashes of binaries and names of domains go up; threat levels,
    /// categories, reputations and hosting countries come back.
    Enrichment,
    /// Account email, session, device fingerprint, OS and coarse location for
    /// cloud licences.
    LicenceAuthentication,
    /// The current version goes up, an update offer comes back.
    VersionCheck,
    /// Organisation, hardware, OS, crash reports and features used, without
    /// names.
    AnonymousUsage,
    /// First name, last name and email appended to usage data.
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
}

//! The licence rules of the required programs: what a customer's licence
//! (given by the service, not chosen in the policy) demands stay on.
//!
//! * Support telemetry may be switched off only under a licence that says
//!   so (`support_telemetry_opt_out`).
//! * In the cloud offering, benchmarking cannot be switched off.
//!
//! Licence authentication, version check and anonymous usage are required
//! by every licence: a policy cannot switch them off at all
//! ([`Program::can_switch_off`], checked by [`Policy::from_toml`]).

use std::fmt;

use privtel_model::Program;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// How the customer runs the product.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Offering {
    /// The vendor runs the service (SaaS): cross-customer benchmarks are
    /// part of the contract.
    Cloud,
    /// The customer runs the service on its own premises.
    #[default]
    OnPremises,
}

impl Offering {
    /// The name used in settings files (`cloud`, `on_premises`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cloud => "cloud",
            Self::OnPremises => "on_premises",
        }
    }
}

impl fmt::Display for Offering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A customer's licence terms, as the service's settings give them
/// (`[customers.NAME.licence]`). The default is an on-premises licence
/// without the support-telemetry opt-out.
///
/// ```
/// use privtel_filter::{LicenceTerms, Offering, Policy};
/// use privtel_model::Program;
///
/// let terms: LicenceTerms = toml::from_str("offering = \"cloud\"\n").unwrap();
/// assert_eq!(terms.offering, Offering::Cloud);
/// assert!(terms.requires(Program::Benchmarking));
/// assert!(terms.requires(Program::SupportTelemetry), "no opt-out in the licence");
/// assert!(!terms.requires(Program::PersonalisedUsage));
///
/// let policy = Policy::from_toml("[programs]\nbenchmarking = false\n")?;
/// let err = policy.check_licence(&terms).unwrap_err();
/// assert_eq!(err.program(), Program::Benchmarking);
/// assert_eq!(
///     err.to_string(),
///     "program benchmarking is switched off, but the cloud licence requires it: \
///      benchmarking cannot be switched off in the cloud offering",
/// );
/// assert_eq!(policy.check_licence(&LicenceTerms::default()), Ok(()), "on premises it can");
/// # Ok::<(), privtel_filter::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LicenceTerms {
    /// Cloud or on premises (required in a settings file's licence table).
    pub offering: Offering,
    /// Whether the licence lets the customer switch support telemetry off
    /// (default false).
    #[serde(default)]
    pub support_telemetry_opt_out: bool,
}

impl LicenceTerms {
    /// Terms for `offering`, without the support-telemetry opt-out.
    pub fn new(offering: Offering) -> Self {
        Self { offering, support_telemetry_opt_out: false }
    }

    /// The same terms with the support-telemetry opt-out set to `allowed`.
    #[must_use]
    pub fn support_telemetry_opt_out(mut self, allowed: bool) -> Self {
        self.support_telemetry_opt_out = allowed;
        self
    }

    /// Whether these terms require `program` to stay on: the rule, if any,
    /// in words.
    pub fn rule(&self, program: Program) -> Option<&'static str> {
        match program {
            Program::SupportTelemetry if !self.support_telemetry_opt_out => Some(
                "support telemetry may be switched off only under a licence with \
                 support_telemetry_opt_out",
            ),
            Program::Benchmarking if self.offering == Offering::Cloud => {
                Some("benchmarking cannot be switched off in the cloud offering")
            }
            _ if !program.can_switch_off() => Some("the program is required by every licence"),
            _ => None,
        }
    }

    /// Whether these terms require `program` to stay on.
    pub fn requires(&self, program: Program) -> bool {
        self.rule(program).is_some()
    }
}

/// A policy that switches off a program its licence requires. Names the
/// program and the rule, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenceError {
    /// A program the licence requires is off in the policy.
    #[error("program {program} is switched off, but the {offering} licence requires it: {rule}")]
    Required {
        /// The program.
        program: Program,
        /// The licence's offering.
        offering: Offering,
        /// The rule, in words.
        rule: &'static str,
    },
}

impl LicenceError {
    /// The program the policy switches off.
    pub fn program(&self) -> Program {
        match self {
            Self::Required { program, .. } => *program,
        }
    }
}

impl Policy {
    /// Checks that the policy keeps on every program `terms` require
    /// ([`LicenceTerms::requires`]). Pure: the service's settings loading
    /// and an SDK builder call it with the terms the service gives.
    ///
    /// # Errors
    ///
    /// [`LicenceError::Required`] for the first required program (in
    /// [`Program::ALL`] order) the policy switches off.
    pub fn check_licence(&self, terms: &LicenceTerms) -> Result<(), LicenceError> {
        for program in Program::ALL {
            if let Some(rule) = terms.rule(program)
                && !self.enabled(program)
            {
                return Err(LicenceError::Required { program, offering: terms.offering, rule });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(programs: &[Program]) -> Policy {
        let mut p = Policy::default();
        for &program in programs {
            p.programs.insert(program, false);
        }
        p
    }

    #[test]
    fn the_table_of_rules() {
        use Program::{Benchmarking, SupportTelemetry};
        let cloud = LicenceTerms::new(Offering::Cloud);
        let premises = LicenceTerms::new(Offering::OnPremises);
        // (terms, programs off, the program refused)
        let table = [
            (premises, vec![], None),
            (premises, vec![Benchmarking], None),
            (premises, vec![SupportTelemetry], Some(SupportTelemetry)),
            (premises.support_telemetry_opt_out(true), vec![SupportTelemetry, Benchmarking], None),
            (cloud, vec![Benchmarking], Some(Benchmarking)),
            (cloud.support_telemetry_opt_out(true), vec![SupportTelemetry], None),
            (cloud.support_telemetry_opt_out(true), vec![SupportTelemetry, Benchmarking], Some(Benchmarking)),
            (cloud, vec![Program::Enrichment, Program::PersonalisedUsage], None),
        ];
        for (terms, programs, refused) in table {
            let got = off(&programs).check_licence(&terms).err().map(|e| e.program());
            assert_eq!(got, refused, "{terms:?} with {programs:?} off");
        }
    }

    #[test]
    fn programs_no_licence_can_spare_are_required_by_every_licence() {
        for terms in [LicenceTerms::new(Offering::OnPremises).support_telemetry_opt_out(true)] {
            for p in Program::ALL.into_iter().filter(|p| !p.can_switch_off()) {
                assert!(terms.requires(p), "{p}");
                // Built in code (from_toml refuses it earlier).
                assert_eq!(off(&[p]).check_licence(&terms).map_err(|e| e.program()), Err(p));
            }
        }
    }

    #[test]
    fn terms_read_from_toml_and_refuse_unknown_settings() {
        let t: LicenceTerms =
            toml::from_str("offering = \"on_premises\"\nsupport_telemetry_opt_out = true\n").unwrap();
        assert_eq!(t, LicenceTerms::new(Offering::OnPremises).support_telemetry_opt_out(true));
        assert!(toml::from_str::<LicenceTerms>("offering = \"saas\"\n").is_err());
        assert!(
            toml::from_str::<LicenceTerms>("support_telemetry_opt_out = true\n").is_err(),
            "offering is required"
        );
        assert!(
            toml::from_str::<LicenceTerms>("offering = \"cloud\"\nbenchmarking_opt_out = true\n").is_err()
        );
    }
}

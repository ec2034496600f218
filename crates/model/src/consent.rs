//! [`Consent`]: a person's choice about an optional program, with where and
//! when it was made.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fields;
use crate::id::{DeviceId, UserId};
use crate::program::Program;
use crate::timestamp::Timestamp;
use crate::visit::{PersonalField, PersonalMut, VisitPersonal};

/// Where a person's consent was given or withdrawn.
///
/// Stored and sent by name (`installer`, `settings`, `administrator`), never
/// by position.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConsentSource {
    /// The box the person ticked or unticked while installing the product.
    Installer,
    /// The product's settings page, after installation.
    Settings,
    /// The customer's administrator, for the person (a managed machine).
    Administrator,
}

impl ConsentSource {
    /// Every source.
    pub const ALL: [Self; 3] = [Self::Installer, Self::Settings, Self::Administrator];

    /// The snake_case name (`installer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installer => "installer",
            Self::Settings => "settings",
            Self::Administrator => "administrator",
        }
    }
}

impl fmt::Display for ConsentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ConsentSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::parse("consent source", s, "one of installer, settings, administrator"))
    }
}

/// A person's consent to an optional program (personalised usage), given or
/// withdrawn: kept on the device while it is in force and sent with the
/// data, so the service holds the proof of each record's basis.
///
/// The person is named as an event names its person: the personal field
/// `event.username` ([`fields::EVENT_USERNAME`]), so a consent record takes
/// the same form as the person's events (clear, pseudonymised or dropped)
/// and export and erasure of the person find it.
///
/// ```
/// use privtel_model::{Consent, ConsentSource, DeviceId, Program, Timestamp, UserId};
///
/// let c = Consent {
///     device: DeviceId::new("dev-1")?,
///     user: Some(UserId::new("u-1")?),
///     program: Program::PersonalisedUsage,
///     granted: false,
///     source: ConsentSource::Settings,
///     at: Timestamp::from_unix_seconds(1_795_737_600)?,
/// };
/// assert!(format!("{c:?}").contains("Clear(<redacted>)"), "Debug never prints the person");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The device the choice was made on.
    pub device: DeviceId,
    /// The person: the personal field `event.username`.
    pub user: Option<UserId>,
    /// The optional program the choice is about.
    pub program: Program,
    /// Given (`true`) or withdrawn (`false`).
    pub granted: bool,
    /// Where the choice was made.
    pub source: ConsentSource,
    /// When: the record's time to live runs from it.
    pub at: Timestamp,
}

impl fmt::Debug for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut user = self.user.clone();
        f.debug_struct("Consent")
            .field("device", &self.device)
            .field("user", &PersonalMut::UserId(&mut user))
            .field("program", &self.program)
            .field("granted", &self.granted)
            .field("source", &self.source)
            .field("at", &self.at)
            .finish()
    }
}

impl VisitPersonal for Consent {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::EVENT_USERNAME, PersonalMut::UserId(&mut self.user)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_by_name_only() {
        for s in ConsentSource::ALL {
            assert_eq!(s.as_str().parse::<ConsentSource>().unwrap(), s);
        }
        let err = "Installer".parse::<ConsentSource>().unwrap_err().to_string();
        assert!(err.contains("one of installer, settings, administrator"), "{err}");
        assert_eq!(serde_json::to_string(&ConsentSource::Administrator).unwrap(), "\"administrator\"");
    }
}

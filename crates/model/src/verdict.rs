//! What the enrichment service answers about binaries and domains.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::binary::Digest;
use crate::error::{Error, Result};
use crate::values::{Category, CountryCode, Domain};

macro_rules! dash_enum {
    (
        $(#[$doc:meta])* $name:ident, $what:literal, $expected:literal,
        { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every value, from unknown to the highest.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The value's place in [`Self::ALL`], for tables indexed by
            /// value. For memory only: stored forms use the text form.
            pub const fn index(self) -> usize {
                // The variants are declared in the order `ALL` lists them,
                // and carry no explicit discriminant: the discriminant is
                // the place in `ALL` (a test checks it).
                self as usize
            }

            /// The text form; unknown is `-`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            /// Exactly the text forms of [`Self::as_str`]: lowercase, with `-`
            /// for unknown.
            fn from_str(s: &str) -> Result<Self> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| Error::parse($what, s, $expected))
            }
        }
    };
}

dash_enum!(
    /// How dangerous a binary is. Unknown binaries are `-`.
    ThreatLevel, "threat level", "one of 'none', 'low', 'intermediate', 'high' or '-'",
    {
        /// The service does not know the binary.
        Unknown = "-",
        /// Known and harmless.
        None = "none",
        /// Known, low threat (adware, riskware).
        Low = "low",
        /// Known, intermediate threat.
        Intermediate = "intermediate",
        /// Known malware.
        High = "high",
    }
);

dash_enum!(
    /// How far a domain can be trusted. Unknown domains are `-`.
    Reputation, "reputation", "one of 'trustworthy', 'low risk', 'moderate risk', 'high risk' or '-'",
    {
        /// The service does not know the domain.
        Unknown = "-",
        /// Known and trustworthy.
        Trustworthy = "trustworthy",
        /// Known, low risk.
        LowRisk = "low risk",
        /// Known, moderate risk.
        ModerateRisk = "moderate risk",
        /// Known, high risk (phishing, malware delivery).
        HighRisk = "high risk",
    }
);

/// The service's verdict on one binary.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct BinaryVerdict {
    /// The binary's SHA-256.
    pub sha256: Digest,
    /// Its threat level (`-` when unknown).
    pub threat: ThreatLevel,
    /// Its application category; `None` when unknown (`-`).
    pub category: Option<Category>,
}

impl BinaryVerdict {
    /// The verdict for a binary the service does not know.
    pub fn unknown(sha256: Digest) -> Self {
        Self { sha256, threat: ThreatLevel::Unknown, category: None }
    }
}

/// The service's verdict on one registrable domain.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct DomainVerdict {
    /// The registrable domain.
    pub domain: Domain,
    /// Its reputation (`-` when unknown).
    pub reputation: Reputation,
    /// Its category; `None` when unknown (`-`).
    pub category: Option<Category>,
    /// Where it is hosted; `None` when unknown (`-`).
    pub hosting_country: Option<CountryCode>,
}

impl DomainVerdict {
    /// The verdict for a domain the service does not know.
    pub fn unknown(domain: Domain) -> Self {
        Self { domain, reputation: Reputation::Unknown, category: None, hosting_country: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_unknown_both_ways() {
        assert_eq!(ThreatLevel::Unknown.to_string(), "-");
        assert_eq!("-".parse::<ThreatLevel>().unwrap(), ThreatLevel::Unknown);
        assert_eq!("-".parse::<Reputation>().unwrap(), Reputation::Unknown);
        assert_eq!("low risk".parse::<Reputation>().unwrap(), Reputation::LowRisk);
        for (i, t) in ThreatLevel::ALL.iter().enumerate() {
            assert_eq!(t.as_str().parse::<ThreatLevel>().unwrap(), *t);
            assert_eq!(t.index(), i);
        }
        for (i, r) in Reputation::ALL.iter().enumerate() {
            assert_eq!(r.as_str().parse::<Reputation>().unwrap(), *r);
            assert_eq!(r.index(), i);
        }
        for bad in ["", "High", "unknown", "low_risk", " -"] {
            assert!(bad.parse::<ThreatLevel>().is_err(), "{bad}");
            assert!(bad.parse::<Reputation>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_uses_the_text_forms() {
        assert_eq!(serde_json::to_string(&Reputation::ModerateRisk).unwrap(), "\"moderate risk\"");
        assert_eq!(serde_json::to_string(&ThreatLevel::Unknown).unwrap(), "\"-\"");
    }
}

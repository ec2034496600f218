//! Per-customer settings held by the service: which programs are on, the
//! form each personal field may take (the customer's policy), the
//! customer's licence terms (which programs the policy must keep on), how
//! long data is kept, region and industry, and the service-wide limits.
//!
//! A customer without settings is refused (fail closed). The settings are
//! loaded from a TOML file and can be replaced while the service runs
//! ([`crate::Service::replace_settings`]).
//!
//! ```
//! use privtel_service::Settings;
//! use privtel_model::{CustomerId, Program};
//!
//! let settings = Settings::from_toml(r#"
//!     max_future_skew_secs = 300
//!
//!     [customers.acme]
//!     events_days = 7
//!     region = "eu"
//!     industry = "finance"
//!     [customers.acme.policy.programs]
//!     enrichment = true
//!     [customers.acme.policy.fields]
//!     "user.email" = "pseudonymise"
//! "#)?;
//! let acme = settings.customer(&CustomerId::new("acme")?).expect("acme has settings");
//! assert_eq!(acme.retention().events.days(), 7);
//! assert!(acme.policy().enabled(Program::Enrichment));
//! assert_eq!(acme.policy().retention.events, 7, "the manifest promises what the sweep does");
//! assert!(settings.customer(&CustomerId::new("globex")?).is_none());
//! assert_eq!(acme.key_schedule().rotate_every, None, "pseudonym keys rotate on demand by default");
//!
//! let err = Settings::from_toml("[customers.acme]\nevents_days = 10\n").unwrap_err();
//! assert_eq!(err.to_string(), "settings: customer acme: events_days is 10, expected 7, 14 or 30");
//!
//! // The licence is the service's to give, and a policy cannot contradict it.
//! let err = Settings::from_toml(r#"
//!     [customers.acme.licence]
//!     offering = "cloud"
//!     [customers.acme.policy.programs]
//!     benchmarking = false
//! "#).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "settings: customer acme: program benchmarking is switched off, but the cloud licence requires it: \
//!      benchmarking cannot be switched off in the cloud offering",
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use privtel_filter::{LicenceError, LicenceTerms, Policy};
use privtel_model::{CustomerId, Program};
use privtel_retention::{RetentionPolicy, Ttl};
use serde::Deserialize;
use time::Duration;

use crate::versions::{self, OfferAt, OfferError, VersionOffers, VersionsFile};

fn offer_error(scope: String, ((product, channel), problem): (OfferAt, OfferError)) -> SettingsError {
    SettingsError::Offer { scope, product, channel, problem }
}

/// What is wrong with a settings file. Names the customer and the setting,
/// never a personal value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file could not be read.
    #[error("settings file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a setting outside the known ones.
    #[error("settings line {line}: {message}")]
    Syntax {
        /// The line (1-based; 0 when unknown).
        line: usize,
        /// What the TOML reader said.
        message: String,
    },
    /// A customer name that is not a valid customer id.
    #[error("settings: '{name}' is not a customer id (expected letters, digits, '.', '_', '-', ':')")]
    CustomerName {
        /// The name as written (an operator's label, not personal data).
        name: String,
    },
    /// A setting outside its allowed values.
    #[error("settings: customer {customer}: {setting} is {value}, expected {expected}")]
    Range {
        /// The customer.
        customer: String,
        /// The setting.
        setting: &'static str,
        /// The value as written.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// The customer's policy is not valid.
    #[error("settings: customer {customer}: {source}")]
    Policy {
        /// The customer.
        customer: String,
        /// The policy's error (its line counts within the policy table).
        source: privtel_filter::Error,
    },
    /// A version offer (`[versions]` or `[customers.NAME.versions]`) that
    /// is not valid.
    #[error("settings: {scope}versions.{product:?}.{channel:?}: {problem}")]
    Offer {
        /// `customer NAME: `, or empty for the offers of every customer.
        scope: String,
        /// The product as written.
        product: String,
        /// The channel as written.
        channel: String,
        /// What is wrong.
        problem: OfferError,
    },
    /// The customer's policy switches off a program its licence requires
    /// (`[customers.NAME.licence]`; docs/PROGRAMS.md, "Licence rules").
    #[error("settings: customer {customer}: {source}")]
    Licence {
        /// The customer.
        customer: String,
        /// The program the policy switches off.
        program: Program,
        /// The rule it breaks.
        source: LicenceError,
    },
    /// The policy's own retention differs from the customer's settings: the
    /// manifest would promise what the service does not do.
    #[error(
        "settings: customer {customer}: the policy's retention.{setting} is {policy} days \
         but the settings say {settings} days; remove it from the policy or make them equal"
    )]
    RetentionMismatch {
        /// The customer.
        customer: String,
        /// `events`, `objects` or `inactive_device`.
        setting: &'static str,
        /// Days in the policy.
        policy: u32,
        /// Days in the settings.
        settings: u32,
    },
}

/// One customer's settings.
#[derive(Clone, Debug)]
pub struct CustomerSettings {
    customer: CustomerId,
    policy: Policy,
    digest: [u8; 32],
    retention: RetentionPolicy,
    region: String,
    industry: Option<String>,
    records_per_second: u32,
    max_connections: Option<u32>,
    key_schedule: KeySchedule,
    versions: VersionOffers,
    licence: LicenceTerms,
}

/// When a customer's pseudonym keys rotate and how long a retired key is
/// kept (docs/KEYS.md). The customer's key ring runs it
/// (`privtel_filter::KeyRing::maintain`, `privtel_agent::maintain_key_ring`).
///
/// Set per customer:
///
/// ```toml
/// [customers.acme.pseudonym_keys]
/// rotate_days = 90  # absent: on demand only
/// pickup_days = 7   # how long devices may take to pick up a new key
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySchedule {
    /// How old the current key may grow before a new one takes over;
    /// `None`: only on demand.
    pub rotate_every: Option<Duration>,
    /// How long a retired key is kept before its secret is destroyed: the
    /// longest retention of the customer's records plus the pickup time.
    /// A record made with the key is at most that old by then (a device
    /// used it at most the pickup time after its retirement, and a record
    /// expires its TTL after it was made), so it has expired from the store.
    pub keep_after_retired: Duration,
}

/// Default time devices may take to pick up a rotated pseudonym key.
pub const DEFAULT_KEY_PICKUP_DAYS: u32 = 7;

impl KeySchedule {
    /// The schedule for records kept `retention_days` at most, rotating
    /// every `rotate_days` (if any), devices picking up within `pickup_days`.
    pub fn new(rotate_days: Option<u32>, pickup_days: u32, retention_days: u32) -> Self {
        Self {
            rotate_every: rotate_days.map(|d| Duration::days(i64::from(d))),
            keep_after_retired: Duration::days(i64::from(retention_days) + i64::from(pickup_days)),
        }
    }
}

impl CustomerSettings {
    /// Settings for `customer` with `policy` and the defaults: 30-day TTLs,
    /// 45-day inactivity purge, region `eu`, no industry, 50,000 records per
    /// second. The policy's retention is set to match.
    pub fn new(customer: CustomerId, mut policy: Policy) -> Self {
        let retention = RetentionPolicy::default();
        policy.retention.events = 30;
        policy.retention.objects = 30;
        policy.retention.inactive_device = 45;
        let digest = policy.digest();
        Self {
            customer,
            policy,
            digest,
            retention,
            region: "eu".to_owned(),
            industry: None,
            records_per_second: DEFAULT_RECORDS_PER_SECOND,
            max_connections: None,
            key_schedule: KeySchedule::new(None, DEFAULT_KEY_PICKUP_DAYS, 30),
            versions: VersionOffers::default(),
            licence: LicenceTerms::default(),
        }
    }

    /// The same settings with the customer's own update offers (they
    /// replace the global ones for the same product and channel).
    #[must_use]
    pub fn with_versions(mut self, versions: VersionOffers) -> Self {
        self.versions = versions;
        self
    }

    /// The same settings with at most `max` connections of the customer's
    /// devices served at once (`None`: only the service's own caps).
    ///
    /// ```
    /// use privtel_filter::Policy;
    /// use privtel_model::CustomerId;
    /// use privtel_service::{CustomerSettings, Settings};
    ///
    /// let acme = CustomerSettings::new(CustomerId::new("acme")?, Policy::default());
    /// assert_eq!(acme.max_connections(), None, "no cap of its own by default");
    /// assert_eq!(acme.with_max_connections(Some(500)).max_connections(), Some(500));
    /// // In a settings file:
    /// let s = Settings::from_toml("[customers.acme]\nmax_connections = 500\n")?;
    /// assert_eq!(s.customer(&CustomerId::new("acme")?).unwrap().max_connections(), Some(500));
    /// let err = Settings::from_toml("[customers.acme]\nmax_connections = 0\n").unwrap_err();
    /// assert_eq!(err.to_string(), "settings: customer acme: max_connections is 0, expected at least 1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_max_connections(mut self, max: Option<u32>) -> Self {
        self.max_connections = max;
        self
    }

    /// Most connections of the customer's devices served at once, if the
    /// customer has a cap of its own (the service's
    /// [`Limits::max_connections`](crate::Limits) and
    /// [`Limits::max_per_device`](crate::Limits) hold for every customer):
    /// on a service shared by several customers, one customer's fleet (or
    /// its administrator enrolling devices without end) cannot take every
    /// connection from the others.
    pub fn max_connections(&self) -> Option<u32> {
        self.max_connections
    }

    /// The customer's own update offers.
    pub fn versions(&self) -> &VersionOffers {
        &self.versions
    }

    /// The same settings under the licence `terms`, checked against the
    /// policy. ([`CustomerSettings::new`] gives the default terms, an
    /// on-premises licence without the support-telemetry opt-out, and does
    /// not check them: settings loaded from a file always are.)
    ///
    /// ```
    /// use privtel_filter::{LicenceTerms, Offering, Policy};
    /// use privtel_model::{CustomerId, Program};
    /// use privtel_service::CustomerSettings;
    ///
    /// let policy = Policy::from_toml("[programs]\nsupport_telemetry = false\n")?;
    /// let acme = CustomerSettings::new(CustomerId::new("acme")?, policy);
    /// let opt_out = LicenceTerms::new(Offering::OnPremises).support_telemetry_opt_out(true);
    /// assert_eq!(acme.clone().with_licence(opt_out)?.licence(), opt_out);
    /// let err = acme.with_licence(LicenceTerms::new(Offering::Cloud)).unwrap_err();
    /// assert!(err.to_string().starts_with("settings: customer acme: program support_telemetry is switched off"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SettingsError::Licence`] naming the customer and the program.
    pub fn with_licence(mut self, terms: LicenceTerms) -> Result<Self, SettingsError> {
        self.policy.check_licence(&terms).map_err(|source| licence_error(self.customer.as_str(), source))?;
        self.licence = terms;
        Ok(self)
    }

    /// The customer's licence terms: which programs its policy must keep
    /// on ([`Policy::check_licence`]). An SDK or agent given these terms
    /// checks its policy against them the same way.
    pub fn licence(&self) -> LicenceTerms {
        self.licence
    }

    /// The customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// The customer's policy: programs on or off and each field's form.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// [`Policy::digest`] of the policy, computed once.
    pub fn policy_digest(&self) -> [u8; 32] {
        self.digest
    }

    /// How long the customer's data is kept.
    pub fn retention(&self) -> RetentionPolicy {
        self.retention
    }

    /// Where the customer's data is held (`eu`, `us`, …).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The customer's industry, for benchmarks.
    pub fn industry(&self) -> Option<&str> {
        self.industry.as_deref()
    }

    /// Records per second the customer's devices may send together.
    pub fn records_per_second(&self) -> u32 {
        self.records_per_second
    }

    /// When the customer's pseudonym keys rotate and are destroyed.
    pub fn key_schedule(&self) -> KeySchedule {
        self.key_schedule
    }
}

/// Default per-customer rate: far above a fleet's steady flow, low enough
/// that one customer cannot take the store from the others.
pub const DEFAULT_RECORDS_PER_SECOND: u32 = 50_000;
/// Default allowance for device clocks ahead of the service's.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::minutes(5);

/// The service's settings: every customer's, and the service-wide limits.
#[derive(Clone, Debug)]
pub struct Settings {
    customers: BTreeMap<CustomerId, Arc<CustomerSettings>>,
    max_future_skew: Duration,
    versions: VersionOffers,
}

impl Default for Settings {
    /// No customer (every connection refused) and the default limits.
    fn default() -> Self {
        Self {
            customers: BTreeMap::new(),
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            versions: VersionOffers::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    max_future_skew_secs: Option<u32>,
    #[serde(default)]
    customers: BTreeMap<String, CustomerFile>,
    /// Update offers for every customer.
    #[serde(default)]
    versions: VersionsFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerFile {
    events_days: Option<u32>,
    objects_days: Option<u32>,
    inactive_device_days: Option<u32>,
    region: Option<String>,
    industry: Option<String>,
    records_per_second: Option<u32>,
    /// Most connections of the customer's devices at once.
    max_connections: Option<u32>,
    /// The policy, inline (the schema of a policy file).
    policy: Option<toml::Table>,
    /// Or the policy in its own file, relative to the settings file.
    policy_file: Option<PathBuf>,
    /// The pseudonym key schedule.
    pseudonym_keys: Option<KeysFile>,
    /// The customer's own update offers.
    #[serde(default)]
    versions: VersionsFile,
    /// The licence terms (default: on premises, no support-telemetry opt-out).
    licence: Option<LicenceTerms>,
}

/// [`SettingsError::Licence`] for `customer`.
fn licence_error(customer: &str, source: LicenceError) -> SettingsError {
    SettingsError::Licence { customer: customer.to_owned(), program: source.program(), source }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    rotate_days: Option<u32>,
    pickup_days: Option<u32>,
}

impl Settings {
    /// Settings with the customers given and the default limits.
    pub fn with_customers(customers: impl IntoIterator<Item = CustomerSettings>) -> Self {
        let customers = customers.into_iter().map(|c| (c.customer.clone(), Arc::new(c))).collect();
        Self { customers, ..Self::default() }
    }

    /// These settings without `customer` (its contract ended): its devices
    /// are refused from their next batch on.
    #[must_use]
    pub fn without(&self, customer: &CustomerId) -> Self {
        let mut out = self.clone();
        out.customers.remove(customer);
        out
    }

    /// Reads and checks a settings file (policy files it names are read
    /// relative to it).
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming the file, line, customer or setting.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SettingsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| SettingsError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path.parent())
    }

    /// Parses settings from TOML text; `policy_file` entries are refused
    /// (there is no folder to read them from: use [`Settings::load`]).
    ///
    /// # Errors
    ///
    /// [`SettingsError`].
    pub fn from_toml(text: &str) -> Result<Self, SettingsError> {
        Self::parse(text, None)
    }

    fn parse(text: &str, dir: Option<&Path>) -> Result<Self, SettingsError> {
        let file: File = toml::from_str(text).map_err(|e| SettingsError::Syntax {
            line: e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().to_owned(),
        })?;
        let mut settings = Self::default();
        if let Some(s) = file.max_future_skew_secs {
            settings.max_future_skew = Duration::seconds(i64::from(s));
        }
        settings.versions = versions::parse(file.versions).map_err(|e| offer_error(String::new(), e))?;
        for (name, c) in file.customers {
            let customer = CustomerId::new(name.clone())
                .map_err(|_| SettingsError::CustomerName { name: name.clone() })?;
            let range = |setting: &'static str, value: String, expected: &'static str| SettingsError::Range {
                customer: name.clone(),
                setting,
                value,
                expected,
            };
            let ttl = |setting: &'static str, days: Option<u32>| match days.unwrap_or(30) {
                7 => Ok((7, Ttl::DAYS_7)),
                14 => Ok((14, Ttl::DAYS_14)),
                30 => Ok((30, Ttl::DAYS_30)),
                other => Err(range(setting, other.to_string(), "7, 14 or 30")),
            };
            let (events_days, events) = ttl("events_days", c.events_days)?;
            let (objects_days, objects) = ttl("objects_days", c.objects_days)?;
            let inactive_days = c.inactive_device_days.unwrap_or(45);
            if !(1..=365).contains(&inactive_days) {
                return Err(range("inactive_device_days", inactive_days.to_string(), "1 to 365"));
            }
            let region = c.region.unwrap_or_else(|| "eu".to_owned());
            if region.is_empty()
                || region.len() > 16
                || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(range("region", region, "a short lowercase name such as eu or us-east"));
            }
            if let Some(i) = &c.industry
                && (i.is_empty() || i.len() > 64 || i.chars().any(char::is_control))
            {
                return Err(range("industry", i.clone(), "1 to 64 printable characters"));
            }
            let records_per_second = c.records_per_second.unwrap_or(DEFAULT_RECORDS_PER_SECOND);
            if records_per_second == 0 {
                return Err(range("records_per_second", "0".into(), "at least 1"));
            }
            if c.max_connections == Some(0) {
                return Err(range("max_connections", "0".into(), "at least 1"));
            }
            let keys = c.pseudonym_keys.unwrap_or(KeysFile { rotate_days: None, pickup_days: None });
            if let Some(d) = keys.rotate_days
                && !(1..=3650).contains(&d)
            {
                return Err(range("pseudonym_keys.rotate_days", d.to_string(), "1 to 3650"));
            }
            let pickup_days = keys.pickup_days.unwrap_or(DEFAULT_KEY_PICKUP_DAYS);
            if pickup_days > 90 {
                return Err(range("pseudonym_keys.pickup_days", pickup_days.to_string(), "0 to 90"));
            }
            let key_schedule = KeySchedule::new(keys.rotate_days, pickup_days, events_days.max(objects_days));
            let policy_err = |source| SettingsError::Policy { customer: name.clone(), source };
            let (mut policy, has_retention) = match (c.policy, c.policy_file) {
                (Some(_), Some(_)) => {
                    return Err(range("policy", "both inline and policy_file".into(), "one of the two"));
                }
                (Some(table), None) => {
                    let has = table.contains_key("retention");
                    (Policy::from_toml(&table.to_string()).map_err(policy_err)?, has)
                }
                (None, Some(file)) => {
                    let Some(dir) = dir else {
                        return Err(range(
                            "policy_file",
                            file.display().to_string(),
                            "an inline policy (settings read from text)",
                        ));
                    };
                    let path = dir.join(&file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| SettingsError::Io { path: path.clone(), source })?;
                    let has = text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("retention"));
                    (Policy::from_toml(&text).map_err(policy_err)?, has)
                }
                (None, None) => (Policy::default(), false),
            };
            if has_retention {
                for (setting, p, s) in [
                    ("events", policy.retention.events, events_days),
                    ("objects", policy.retention.objects, objects_days),
                    ("inactive_device", policy.retention.inactive_device, inactive_days),
                ] {
                    if p != s {
                        return Err(SettingsError::RetentionMismatch {
                            customer: name.clone(),
                            setting,
                            policy: p,
                            settings: s,
                        });
                    }
                }
            }
            let licence = c.licence.unwrap_or_default();
            policy.check_licence(&licence).map_err(|source| licence_error(&name, source))?;
            policy.retention.events = events_days;
            policy.retention.objects = objects_days;
            policy.retention.inactive_device = inactive_days;
            let retention = RetentionPolicy {
                events,
                objects,
                device_inactivity: Duration::days(i64::from(inactive_days)),
                ..RetentionPolicy::default()
            };
            let versions =
                versions::parse(c.versions).map_err(|e| offer_error(format!("customer {name}: "), e))?;
            let digest = policy.digest();
            settings.customers.insert(
                customer.clone(),
                Arc::new(CustomerSettings {
                    customer,
                    policy,
                    digest,
                    retention,
                    region,
                    industry: c.industry,
                    records_per_second,
                    max_connections: c.max_connections,
                    key_schedule,
                    versions,
                    licence,
                }),
            );
        }
        Ok(settings)
    }

    /// A customer's settings, or `None`: the service refuses that customer.
    pub fn customer(&self, customer: &CustomerId) -> Option<&Arc<CustomerSettings>> {
        self.customers.get(customer)
    }

    /// Every customer with settings.
    pub fn customers(&self) -> impl Iterator<Item = &Arc<CustomerSettings>> {
        self.customers.values()
    }

    /// The update offers for every customer (a customer's own,
    /// [`CustomerSettings::versions`], come first).
    pub fn versions(&self) -> &VersionOffers {
        &self.versions
    }

    /// The same settings with other update offers for every customer.
    #[must_use]
    pub fn with_versions(mut self, versions: VersionOffers) -> Self {
        self.versions = versions;
        self
    }

    /// How far ahead of the service's clock a record may be dated.
    pub fn max_future_skew(&self) -> Duration {
        self.max_future_skew
    }

    /// The same settings with another future-skew allowance.
    #[must_use]
    pub fn with_max_future_skew(mut self, skew: Duration) -> Self {
        self.max_future_skew = if skew.is_negative() { Duration::ZERO } else { skew };
        self
    }
}

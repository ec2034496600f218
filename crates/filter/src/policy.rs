//! The customer's policy: which programs are on, and the form of every
//! personal field. Loaded from TOML and checked on load.

use std::collections::BTreeMap;

use privtel_model::fields::Derivation;
use privtel_model::{EventBody, FieldSpec, Program, TimeUnit, Treatment, ValueKind, fields};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::interactions::Interactions;
use crate::scrub::Detector;

/// How generalised values are made coarser.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Generalisation {
    /// IPv4 prefix length kept (default 24: the network, not the host).
    pub ipv4_prefix: u8,
    /// IPv6 prefix length kept (default 48: the site, not the subnet).
    pub ipv6_prefix: u8,
    /// Unit instants are truncated to (default hour: enough for "when in the
    /// day", not enough to match a person's exact log-in).
    pub time_unit: TimeUnit,
    /// Geohash characters kept (default 4: about 20 km).
    pub geohash_len: u8,
    /// Upper bounds of duration buckets, in milliseconds, ascending (default
    /// 100 ms, 1 s, 10 s, 1 min, 10 min, 1 h; above the last is open-ended).
    pub duration_bounds_ms: Vec<u64>,
}

impl Generalisation {
    /// The prefix length an address is generalised to: the IPv4 length for
    /// IPv4 (an IPv4-mapped IPv6 address is taken as its IPv4 address
    /// first), the IPv6 length for IPv6, except a 6to4 address
    /// (`2002::/16`), whose bits 16 to 48 are a whole IPv4 address: it keeps
    /// no more of that address than the IPv4 length does.
    pub fn prefix_len(&self, ip: std::net::IpAddr) -> u8 {
        match ip {
            std::net::IpAddr::V4(_) => self.ipv4_prefix,
            std::net::IpAddr::V6(a) if a.segments()[0] == 0x2002 => {
                self.ipv6_prefix.min(self.ipv4_prefix.saturating_add(16))
            }
            std::net::IpAddr::V6(_) => self.ipv6_prefix,
        }
    }
}

impl Default for Generalisation {
    fn default() -> Self {
        Self {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            time_unit: TimeUnit::Hour,
            geohash_len: 4,
            duration_bounds_ms: vec![100, 1_000, 10_000, 60_000, 600_000, 3_600_000],
        }
    }
}

/// Which free-text detectors run when free text is generalised.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ScrubSettings {
    /// Email addresses (default on).
    pub email: bool,
    /// IP addresses (default on).
    pub ip: bool,
    /// Luhn-valid card numbers (default on).
    pub card: bool,
    /// User names in home folders (default on).
    pub home_path: bool,
    /// Credentials in URLs (default on).
    pub url_credentials: bool,
    /// Bearer tokens and API keys (default on).
    pub token: bool,
    /// Telephone numbers (default on; a policy file written before the
    /// detector existed has it on).
    pub phone: bool,
}

impl Default for ScrubSettings {
    fn default() -> Self {
        Self {
            email: true,
            ip: true,
            card: true,
            home_path: true,
            url_credentials: true,
            token: true,
            phone: true,
        }
    }
}

impl ScrubSettings {
    /// The detectors switched on.
    pub fn detectors(&self) -> Vec<Detector> {
        [
            (self.email, Detector::Email),
            (self.ip, Detector::Ip),
            (self.card, Detector::Card),
            (self.home_path, Detector::HomePath),
            (self.url_credentials, Detector::UrlCredentials),
            (self.token, Detector::Token),
            (self.phone, Detector::Phone),
        ]
        .into_iter()
        .filter_map(|(on, d)| on.then_some(d))
        .collect()
    }
}

/// How long the service keeps each class of data, as the manifest states it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RetentionDays {
    /// Events (default 30 days).
    pub events: u32,
    /// Objects: devices, users, binaries (default 30 days).
    pub objects: u32,
    /// Purge of an inactive device (default 45 days).
    pub inactive_device: u32,
}

impl Default for RetentionDays {
    fn default() -> Self {
        Self { events: 30, objects: 30, inactive_device: 45 }
    }
}

/// A customer's policy. Plain data: build one in code with `Default` and
/// field updates, or load one with [`Policy::from_toml`].
///
/// A field without an entry in `treatments` gets its model default
/// ([`FieldSpec::default_treatment`], the most private form that still
/// serves its program); a program without an entry in `programs` gets
/// [`Program::default_enabled`].
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct Policy {
    /// The policy's version, stamped on everything it produces (default 0).
    pub version: u32,
    /// Consent per program, where the customer chose.
    pub programs: BTreeMap<Program, bool>,
    /// Treatment per field path, where the customer chose.
    pub treatments: BTreeMap<&'static str, Treatment>,
    /// Groups of fields that share a pseudonym sub-key, so the same value
    /// gets the same token in each (`user.email` with
    /// `licence_session.email`). Fields not in a group get their own.
    pub links: Vec<Vec<&'static str>>,
    /// How values are generalised.
    pub generalise: Generalisation,
    /// Which detectors scrub free text.
    pub scrub: ScrubSettings,
    /// How long the service keeps data (for the manifest).
    pub retention: RetentionDays,
    /// Base address of the service (for the manifest).
    pub service: String,
    /// The web applications and actions whose interaction events are
    /// recorded (`[interactions]`); empty by default: none is.
    pub interactions: Interactions,
}

impl Policy {
    /// Whether `program` is on.
    pub fn enabled(&self, program: Program) -> bool {
        self.programs.get(&program).copied().unwrap_or_else(|| program.default_enabled())
    }

    /// The treatment of `field`: the policy's choice (or the model's
    /// default), bound by the field's derivation ([`fields::DERIVED`]): a
    /// field that [follows](Derivation::Follows) its source has the
    /// source's treatment, and a field that
    /// [reveals](Derivation::Reveals) its source is never clear while the
    /// source is not (it takes the source's treatment instead). A policy
    /// loaded with [`Policy::from_toml`] or passing [`Policy::check`] never
    /// needs the second rule; a policy built in code that breaks it gets
    /// the more private form rather than a leak.
    ///
    /// ```
    /// use privtel_filter::Policy;
    /// use privtel_model::{Treatment, fields};
    ///
    /// let mut policy = Policy::default();
    /// policy.treatments.insert("binary.path", Treatment::Pseudonymise);
    /// assert_eq!(policy.treatment(&fields::BINARY_FILE_NAME), Treatment::Pseudonymise);
    /// policy.treatments.insert("web_request.host", Treatment::Clear);
    /// // The url is dropped by default: a clear host would reveal it.
    /// assert_eq!(policy.treatment(&fields::WEB_REQUEST_HOST), Treatment::Withhold);
    /// assert!(policy.check().is_err());
    /// ```
    pub fn treatment(&self, field: &FieldSpec) -> Treatment {
        let own = self.chosen(field);
        match fields::derivation(field) {
            Some(d) if d.how == Derivation::Follows => self.chosen(d.source),
            Some(d) if own == Treatment::Clear && self.chosen(d.source) != Treatment::Clear => {
                self.chosen(d.source)
            }
            _ => own,
        }
    }

    /// The treatment the policy names for `field`, or its default.
    fn chosen(&self, field: &FieldSpec) -> Treatment {
        self.treatments.get(field.path).copied().unwrap_or(field.default_treatment)
    }

    /// How coarse an event of this kind keeps its own instant
    /// ([`privtel_model::Event::recorded_at`]): `None` keeps it exact. The
    /// coarsest treatment of the kind's time fields
    /// ([`fields::time_fields`]) decides: clear keeps the instant exact,
    /// generalise truncates it to [`Generalisation::time_unit`], and
    /// pseudonymise or drop (the time is not to be read at all) truncates it
    /// to the day: the instant cannot be dropped, retention runs from it. A
    /// kind without time fields (`web_request`, `crash_report`, …) truncates
    /// it to [`Generalisation::time_unit`]. Truncation rounds toward the
    /// past, so a record never lives longer than its time to live.
    ///
    /// ```
    /// use privtel_filter::Policy;
    /// use privtel_model::{EventBody, Login, Personal, TimeUnit};
    ///
    /// let policy = Policy::from_toml("[fields]\n\"login.time\" = \"clear\"\n")?;
    /// let login = EventBody::Login(Login {
    ///     time: Personal::Withheld,
    ///     duration: Personal::Withheld,
    ///     privileges: Personal::Withheld,
    /// });
    /// assert_eq!(policy.instant_unit(&login), None);
    /// let policy = Policy::from_toml("[fields]\n\"login.time\" = \"withhold\"\n")?;
    /// assert_eq!(policy.instant_unit(&login), Some(TimeUnit::Day));
    /// # Ok::<(), privtel_filter::Error>(())
    /// ```
    pub fn instant_unit(&self, body: &EventBody) -> Option<TimeUnit> {
        self.instant_unit_of(body.kind_name())
    }

    /// [`Policy::instant_unit`] of the event kind named `kind`.
    pub(crate) fn instant_unit_of(&self, kind: &str) -> Option<TimeUnit> {
        let times = fields::time_fields(kind);
        if times.is_empty() {
            return Some(self.generalise.time_unit);
        }
        times
            .iter()
            .map(|f| match self.treatment(f) {
                Treatment::Clear => None,
                Treatment::Generalise => Some(self.generalise.time_unit),
                Treatment::Pseudonymise | Treatment::Withhold => Some(TimeUnit::Day),
            })
            .max()
            .flatten()
    }

    /// Checks the rules of derived fields ([`fields::DERIVED`]) for a
    /// policy built in code ([`Policy::from_toml`] checks them itself).
    ///
    /// # Errors
    ///
    /// [`Error::Follows`] for a field set apart from the field it follows,
    /// [`Error::Reveals`] for a clear field whose source is not clear (line
    /// 0: a policy built in code has no lines).
    pub fn check(&self) -> Result<()> {
        self.check_derived(&BTreeMap::new())
    }

    /// [`Policy::check`], with the line of each field's entry.
    fn check_derived(&self, lines: &BTreeMap<&'static str, usize>) -> Result<()> {
        for d in fields::DERIVED {
            let (own, source) = (self.chosen(d.field), self.chosen(d.source));
            let line = |path: &str| lines.get(path).copied();
            match d.how {
                Derivation::Follows if self.treatments.contains_key(d.field.path) && own != source => {
                    return Err(Error::Follows {
                        line: line(d.field.path).unwrap_or(0),
                        field: d.field.path,
                        from: d.source.path,
                        treatment: own,
                        source_treatment: source,
                    });
                }
                Derivation::Reveals if own == Treatment::Clear && source != Treatment::Clear => {
                    return Err(Error::Reveals {
                        line: line(d.field.path).or_else(|| line(d.source.path)).unwrap_or(0),
                        field: d.field.path,
                        from: d.source.path,
                        source_treatment: source,
                        holds: d.holds,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Loads and checks a policy file.
    ///
    /// ```
    /// use privtel_filter::Policy;
    /// use privtel_model::{Program, Treatment, fields};
    ///
    /// let policy = Policy::from_toml(r#"
    ///     version = 3
    ///     [programs]
    ///     enrichment = true
    ///     [fields]
    ///     "user.email" = "pseudonymise"
    /// "#)?;
    /// assert!(policy.enabled(Program::Enrichment));
    /// assert_eq!(policy.treatment(&fields::USER_EMAIL), Treatment::Pseudonymise);
    ///
    /// let err = Policy::from_toml("[fields]\n\"user.mail\" = \"withhold\"\n").unwrap_err();
    /// assert_eq!(err.to_string(), "policy line 2: unknown field 'user.mail' (not a personal field of the model)");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error`] naming the line and the offending name: TOML syntax, an
    /// unknown setting, field, program or treatment, `generalise` for a
    /// field with no coarser form, a required program switched off, a
    /// setting out of range, an `[interactions]` entry that is not a web
    /// host with a list of action names ([`Error::Interaction`]), or a
    /// derived field that would give back what its source's treatment
    /// removes ([`Error::Reveals`], [`Error::Follows`]):
    ///
    /// ```
    /// use privtel_filter::Policy;
    ///
    /// let err = Policy::from_toml(
    ///     "[fields]\n\"web_request.url\" = \"generalise\"\n\"web_request.host\" = \"clear\"\n",
    /// ).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "policy line 3: field 'web_request.host' cannot be clear while 'web_request.url' is generalise: \
    ///      it holds the url's host",
    /// );
    /// ```
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_with_warnings(text).map(|(policy, _)| policy)
    }

    /// [`Policy::from_toml`], also returning every old spelling the file
    /// uses (still read, to be rewritten): a program that loads a
    /// customer's file should show them.
    ///
    /// ```
    /// use privtel_filter::Policy;
    /// use privtel_model::{Treatment, fields};
    ///
    /// let (policy, warnings) = Policy::from_toml_with_warnings("[fields]\n\"user.email\" = \"drop\"\n")?;
    /// assert_eq!(policy.treatment(&fields::USER_EMAIL), Treatment::Withhold);
    /// assert_eq!(warnings[0].to_string(), "policy line 2: 'drop' is deprecated: write 'withhold'");
    /// # Ok::<(), privtel_filter::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Policy::from_toml`].
    pub fn from_toml_with_warnings(text: &str) -> Result<(Self, Vec<Deprecation>)> {
        let mut warnings = Vec::new();
        let file: PolicyFile = toml::from_str(text).map_err(|e| Error::Syntax {
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: e.message().to_owned(),
        })?;
        let line = |s: &std::ops::Range<usize>| line_of(text, s.start);
        let mut policy = Self { version: file.version, ..Self::default() };
        let mut lines = BTreeMap::new();

        for (name, on) in file.programs {
            let program: Program = name.get_ref().parse().map_err(|_| Error::UnknownProgram {
                line: line(&name.span()),
                name: name.get_ref().clone(),
            })?;
            if !*on.get_ref() && !program.can_switch_off() {
                return Err(Error::Required { line: line(&on.span()), program: program.to_string() });
            }
            policy.programs.insert(program, *on.get_ref());
        }
        for (name, value) in file.fields {
            let spec = field(&name, text)?;
            let treatment: Treatment = value.get_ref().parse().map_err(|_| Error::UnknownTreatment {
                line: line(&value.span()),
                field: spec.path.to_owned(),
                value: value.get_ref().clone(),
            })?;
            if value.get_ref() == Treatment::LEGACY_WITHHOLD {
                warnings.push(Deprecation {
                    line: line(&value.span()),
                    old: Treatment::LEGACY_WITHHOLD,
                    new: Treatment::Withhold.as_str(),
                });
            }
            if treatment == Treatment::Generalise && !generalisable(spec.kind) {
                return Err(Error::CannotGeneralise {
                    line: line(&value.span()),
                    field: spec.path.to_owned(),
                });
            }
            policy.treatments.insert(spec.path, treatment);
            lines.insert(spec.path, line(&name.span()));
        }
        policy.check_derived(&lines)?;
        // In the file's order, so a duplicate is reported at its second line.
        let mut interactions: Vec<_> = file.interactions.into_iter().collect();
        interactions.sort_by_key(|(host, _)| host.span().start);
        for (host, actions) in interactions {
            policy.interactions.define(host.get_ref(), &actions).map_err(|source| Error::Interaction {
                line: line(&host.span()),
                host: shown(host.get_ref()),
                source,
            })?;
        }
        for group in file.links {
            let fields = group
                .into_inner()
                .iter()
                .map(|name| field(name, text).map(|f| f.path))
                .collect::<Result<_>>()?;
            policy.links.push(fields);
        }
        let g = &file.generalise;
        let range_check = |ok: bool, setting: &'static str, value: String, expected: &'static str| {
            if ok {
                Ok(())
            } else {
                let at = text.find(setting).unwrap_or(0);
                Err(Error::Setting { line: line_of(text, at), setting, value, expected })
            }
        };
        range_check(g.ipv4_prefix <= 32, "ipv4_prefix", g.ipv4_prefix.to_string(), "0 to 32")?;
        range_check(g.ipv6_prefix <= 128, "ipv6_prefix", g.ipv6_prefix.to_string(), "0 to 128")?;
        range_check((1..=12).contains(&g.geohash_len), "geohash_len", g.geohash_len.to_string(), "1 to 12")?;
        range_check(
            g.duration_bounds_ms.windows(2).all(|w| w[0] < w[1]) && g.duration_bounds_ms.first() != Some(&0),
            "duration_bounds_ms",
            format!("{:?}", g.duration_bounds_ms),
            "ascending bounds above zero",
        )?;
        policy.generalise = file.generalise;
        policy.scrub = file.scrub;
        policy.retention = file.retention;
        policy.service = file.service.unwrap_or_else(|| "https://telemetry.invalid".to_owned());
        warnings.sort_by_key(|w| w.line);
        Ok((policy, warnings))
    }
}

/// An old spelling a policy file still uses: read as its new name, to be
/// rewritten.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Deprecation {
    /// The line it is on.
    pub line: usize,
    /// The old spelling.
    pub old: &'static str,
    /// What to write instead.
    pub new: &'static str,
}

impl std::fmt::Display for Deprecation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy line {}: '{}' is deprecated: write '{}'", self.line, self.old, self.new)
    }
}

/// The model field a policy names, or an error with its line.
fn field(name: &Spanned<String>, text: &str) -> Result<&'static FieldSpec> {
    fields::by_path(name.get_ref()).ok_or_else(|| Error::UnknownField {
        line: line_of(text, name.span().start),
        name: name.get_ref().clone(),
    })
}

/// A host as an error may show it: at most 80 characters, control
/// characters escaped (it is the customer's own setting, never personal).
fn shown(host: &str) -> String {
    let mut out: String = host.chars().take(80).flat_map(char::escape_debug).collect();
    if host.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

/// Whether a field of this kind has a coarser form.
pub(crate) fn generalisable(kind: ValueKind) -> bool {
    matches!(
        kind,
        ValueKind::Email
            | ValueKind::Url
            | ValueKind::Host
            | ValueKind::Ip
            | ValueKind::Timestamp
            | ValueKind::Duration
            | ValueKind::Geohash
            | ValueKind::FreeText
    )
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The file as written, before checking.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    programs: BTreeMap<Spanned<String>, Spanned<bool>>,
    #[serde(default)]
    fields: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    links: Vec<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    generalise: Generalisation,
    #[serde(default)]
    scrub: ScrubSettings,
    #[serde(default)]
    retention: RetentionDays,
    #[serde(default)]
    service: Option<String>,
    /// Web application host -> the actions whose interactions are recorded.
    #[serde(default)]
    interactions: BTreeMap<Spanned<String>, Vec<String>>,
}

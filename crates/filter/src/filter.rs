//! Applying a policy to records: consent, per-field treatment, and the
//! redaction report.

use std::fmt;
use std::net::IpAddr;

use privtel_domain::Normalizer;
use privtel_model::{
    CustomerId, DurationBucket, FieldSpec, Form, Generalised, IpPrefix, KeyId, Personal, PersonalMut,
    Program, Pseudonym, Record, RecordBody, TOKEN_LEN, TimeBucket, Treatment, UserId, ValueKind,
    VisitPersonal, fields,
};
use serde::Serialize;
use time::Duration;

use crate::filtered::Filtered;
use crate::keyring::KeyRing;
use crate::policy::Policy;
use crate::scrub::{Detector, Scrubber};

/// Context string of the sub-key derivation (BLAKE3 `derive_key` mode).
/// Changing it changes every pseudonym: it is part of the format.
const SUBKEY_CONTEXT: &str = "privtel 2026-11-27 pseudonym sub-key v1";

/// A customer's secret pseudonymisation key and its id.
///
/// The secret never leaves this type: `Debug` prints the id only. Rotation
/// is a new key with a new id; destroying a key (dropping every copy of the
/// secret) makes the tokens made with it unlinkable to any value.
#[derive(Clone)]
pub struct PseudonymKey {
    id: KeyId,
    secret: [u8; 32],
}

impl PseudonymKey {
    /// A key from 32 secret bytes (from a CSPRNG, such as `/dev/urandom`).
    pub fn new(id: KeyId, secret: [u8; 32]) -> Self {
        Self { id, secret }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PseudonymKey({}, <secret>)", self.id)
    }
}

/// What happened to one personal value, for the report. Named after the
/// [`Form`](privtel_model::Form) the value was left in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// Kept in clear.
    Clear,
    /// Replaced by a pseudonym.
    Pseudonymised,
    /// Replaced by a coarser value.
    Generalised,
    /// Withheld because the policy withholds it.
    Withheld,
    /// Withheld because the policy's form could not be made (no key for a
    /// pseudonym, no registrable domain for a URL, …, or a value that
    /// arrived already in another form): the most private outcome stands
    /// in for the one asked for.
    Fallback,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Self; 5] =
        [Self::Clear, Self::Pseudonymised, Self::Generalised, Self::Withheld, Self::Fallback];

    /// The old name of [`Rule::Withheld`].
    #[deprecated(since = "0.1.0", note = "one name per concept: use `Rule::Withheld`")]
    #[allow(non_upper_case_globals)]
    pub const Dropped: Self = Self::Withheld;

    /// The rule's place in [`Self::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Self::Clear => 0,
            Self::Pseudonymised => 1,
            Self::Generalised => 2,
            Self::Withheld => 3,
            Self::Fallback => 4,
        }
    }
}

/// Counts of what a filter did to a batch: per program, field and rule,
/// never a value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RedactionReport {
    records_in: [u64; 7],
    records_out: [u64; 7],
    consent_off: [u64; 7],
    kind_not_allowed: [u64; 7],
    interaction_not_defined: [u64; 7],
    /// [program][field][rule]
    fields: Vec<[[u64; 5]; 7]>,
    scrubbed: [u64; crate::scrub::DETECTORS],
}

impl Default for RedactionReport {
    fn default() -> Self {
        Self {
            records_in: [0; 7],
            records_out: [0; 7],
            consent_off: [0; 7],
            kind_not_allowed: [0; 7],
            interaction_not_defined: [0; 7],
            fields: vec![[[0; 5]; 7]; fields::ALL.len()],
            scrubbed: [0; crate::scrub::DETECTORS],
        }
    }
}

fn program_index(p: Program) -> usize {
    p.index()
}

fn field_index(spec: &FieldSpec) -> usize {
    spec.index()
}

impl RedactionReport {
    /// Records of `program` that came in.
    pub fn records_in(&self, program: Program) -> u64 {
        self.records_in[program_index(program)]
    }

    /// Records of `program` that went out.
    pub fn records_out(&self, program: Program) -> u64 {
        self.records_out[program_index(program)]
    }

    /// Records dropped because `program` is switched off.
    pub fn consent_off(&self, program: Program) -> u64 {
        self.consent_off[program_index(program)]
    }

    /// Records dropped because their kind does not belong to `program`.
    pub fn kind_not_allowed(&self, program: Program) -> u64 {
        self.kind_not_allowed[program_index(program)]
    }

    /// Interaction events dropped because the policy does not define their
    /// web application, or their action for it ([`Policy::interactions`]).
    pub fn interaction_not_defined(&self, program: Program) -> u64 {
        self.interaction_not_defined[program_index(program)]
    }

    /// Values of `field` in records of `program` that met `rule`.
    pub fn count(&self, program: Program, field: &FieldSpec, rule: Rule) -> u64 {
        self.fields[field_index(field)][program_index(program)][rule.index()]
    }

    /// Matches of a scrubbing detector in free text.
    pub fn scrubbed(&self, detector: Detector) -> u64 {
        self.scrubbed[detector.index()]
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: &Self) {
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.records_in, &other.records_in);
        add(&mut self.records_out, &other.records_out);
        add(&mut self.consent_off, &other.consent_off);
        add(&mut self.kind_not_allowed, &other.kind_not_allowed);
        add(&mut self.interaction_not_defined, &other.interaction_not_defined);
        add(&mut self.scrubbed, &other.scrubbed);
        for (a, b) in self.fields.iter_mut().zip(&other.fields) {
            for (pa, pb) in a.iter_mut().zip(b) {
                add(pa, pb);
            }
        }
    }

    /// The report as JSON: only non-zero counts, by program, field and rule.
    pub fn to_json(&self) -> serde_json::Value {
        let mut programs = serde_json::Map::new();
        for (pi, p) in Program::ALL.iter().enumerate() {
            let mut fields_json = serde_json::Map::new();
            for (fi, spec) in fields::ALL.iter().enumerate() {
                let rules: serde_json::Map<_, _> = Rule::ALL
                    .iter()
                    .enumerate()
                    .filter(|(ri, _)| self.fields[fi][pi][*ri] > 0)
                    .map(|(ri, r)| {
                        (
                            serde_json::to_value(r)
                                .map(|v| v.as_str().unwrap_or("").to_owned())
                                .unwrap_or_default(),
                            self.fields[fi][pi][ri].into(),
                        )
                    })
                    .collect();
                if !rules.is_empty() {
                    fields_json.insert(spec.path.to_owned(), rules.into());
                }
            }
            let totals = [
                self.records_in[pi],
                self.records_out[pi],
                self.consent_off[pi],
                self.kind_not_allowed[pi],
                self.interaction_not_defined[pi],
            ];
            if totals.iter().any(|&n| n > 0) || !fields_json.is_empty() {
                programs.insert(
                    p.to_string(),
                    serde_json::json!({
                        "records_in": totals[0],
                        "records_out": totals[1],
                        "dropped_consent_off": totals[2],
                        "dropped_kind_not_allowed": totals[3],
                        "dropped_interaction_not_defined": totals[4],
                        "fields": fields_json,
                    }),
                );
            }
        }
        let scrubbed: serde_json::Map<_, _> = Detector::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| self.scrubbed[*i] > 0)
            .map(|(i, d)| (d.to_string(), self.scrubbed[i].into()))
            .collect();
        serde_json::json!({ "programs": programs, "scrubbed": scrubbed })
    }
}

/// The record kinds each program may carry. A record of another kind is
/// dropped and counted: a `user` record sent under anonymous usage would
/// carry identity where the customer agreed to none.
pub fn allowed_kinds(program: Program) -> &'static [&'static str] {
    match program {
        Program::SupportTelemetry => {
            &["configuration", "performance", "feature_usage", "feedback", "crash_report"]
        }
        Program::Benchmarking => &[
            "device",
            "application",
            "package",
            "binary",
            "execution",
            "web_request",
            "login",
            "experience_score",
            // What agents send now: the service folds it into the
            // customer's aggregates (docs/BENCHMARKS.md).
            "device_summary",
        ],
        // Enhance is anonymous: what the device sends for enrichment is
        // sightings (digests, sizes, formats, registrable domains), never
        // records; the only records of the program are the answers.
        Program::Enrichment => &["binary_verdict", "domain_verdict"],
        Program::LicenceAuthentication => &["licence_session", "device"],
        Program::VersionCheck => &["version_check"],
        Program::AnonymousUsage => &[
            "device",
            "application",
            "package",
            "crash_report",
            "feature_usage",
            "configuration",
            "performance",
            "experience_score",
        ],
        // What names a device and a person — a binary where it lies, what
        // ran, which pages were read, how they worked in a web application —
        // is about the person: only with their consent (docs/FIELDS.md).
        // And the person's own consent records: the proof of each of the
        // program's records' basis travels with them.
        Program::PersonalisedUsage => {
            &["user", "feature_usage", "binary", "execution", "web_request", "consent", "interaction"]
        }
        // `Program` may grow; a program this crate does not know carries nothing.
        _ => &[],
    }
}

/// Per-field plan, precomputed from the policy and key.
#[derive(Clone)]
struct Plan {
    treatment: Treatment,
    /// The field's link group (its own path unless linked): part of the
    /// sub-key, so linked fields share tokens.
    group: &'static str,
    subkey: Option<[u8; 32]>,
}

/// The sub-key of one link group under one key and customer.
fn subkey(key: &PseudonymKey, customer: &str, group: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SUBKEY_CONTEXT);
    h.update(&key.secret);
    h.update(&(customer.len() as u64).to_le_bytes());
    h.update(customer.as_bytes());
    h.update(group.as_bytes());
    *h.finalize().as_bytes()
}

/// Builds a [`Filter`].
#[derive(Clone, Debug, Default)]
pub struct FilterBuilder {
    policy: Policy,
    customer: Option<CustomerId>,
    key: Option<PseudonymKey>,
}

impl FilterBuilder {
    /// A builder with the default policy and no key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The policy to apply.
    pub fn policy(&mut self, policy: Policy) -> &mut Self {
        self.policy = policy;
        self
    }

    /// The customer whose key pseudonymises (pseudonyms differ across
    /// customers even under equal secrets).
    pub fn customer(&mut self, customer: CustomerId) -> &mut Self {
        self.customer = Some(customer);
        self
    }

    /// The pseudonymisation key. Without one, fields treated `pseudonymise`
    /// are withheld instead (the more private outcome).
    pub fn key(&mut self, key: PseudonymKey) -> &mut Self {
        self.key = Some(key);
        self
    }

    /// The filter.
    pub fn build(&self) -> Filter {
        let customer = self.customer.as_ref().map(CustomerId::as_str).unwrap_or("");
        let plans = fields::ALL
            .iter()
            .map(|spec| {
                let treatment = self.policy.treatment(spec);
                let group = self
                    .policy
                    .links
                    .iter()
                    .find(|g| g.contains(&spec.path))
                    .and_then(|g| g.iter().min().copied())
                    .unwrap_or(spec.path);
                let subkey = self.key.as_ref().map(|k| subkey(k, customer, group));
                Plan { treatment, group, subkey }
            })
            .collect();
        let enabled = Program::ALL.map(|p| self.policy.enabled(p));
        Filter {
            scrubber: Scrubber::new(&self.policy.scrub.detectors()),
            policy: self.policy.clone(),
            plans,
            enabled,
            key_id: self.key.as_ref().map(PseudonymKey::id),
            customer: customer.to_owned(),
            normalizer: Normalizer::shared(),
        }
    }
}

/// Applies a policy to records. Built once by [`FilterBuilder`]; immutable,
/// `Send + Sync`.
pub struct Filter {
    policy: Policy,
    plans: Vec<Plan>,
    enabled: [bool; 7],
    key_id: Option<KeyId>,
    customer: String,
    scrubber: Scrubber,
    normalizer: &'static Normalizer,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("policy", &self.policy)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Filter {
    /// The policy this filter applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether records of `program` pass at all.
    pub fn enabled(&self, program: Program) -> bool {
        self.enabled[program_index(program)]
    }

    /// Filters one record: `None` when its program is off, its kind does
    /// not belong to the program, it is an interaction event with a web
    /// application or action the policy does not define
    /// ([`Policy::interactions`]), or it is a user record whose id
    /// (`event.username`, as in events) ends withheld: the policy drops
    /// `event.username`, or pseudonymises it without a key; otherwise the record with every personal
    /// field in the policy's form, and an event's own instant truncated to
    /// [`Policy::instant_unit`] (toward the past). Counts go to `report`.
    pub fn apply(&self, mut record: Record, report: &mut RedactionReport) -> Option<Filtered> {
        let pi = program_index(record.program);
        report.records_in[pi] += 1;
        if !self.enabled[pi] {
            report.consent_off[pi] += 1;
            return None;
        }
        if !allowed_kinds(record.program).contains(&record.body.kind_name()) {
            report.kind_not_allowed[pi] += 1;
            return None;
        }
        if !self.policy.interaction_defined(&record) {
            report.interaction_not_defined[pi] += 1;
            return None;
        }
        record.visit_personal(&mut |mut field| {
            let fi = field_index(field.spec);
            let rule = self.treat(field.spec, &self.plans[fi], &mut field.value, report);
            if let Some(rule) = rule {
                report.fields[fi][pi][rule.index()] += 1;
            }
        });
        // A user record's id is `event.username`: where the policy drops it
        // (or a pseudonym cannot be made), the record cannot exist.
        if let RecordBody::User(u) = &record.body
            && u.id.is_withheld()
        {
            return None;
        }
        if let RecordBody::Event(e) = &mut record.body
            && let Some(unit) = self.policy.instant_unit(&e.body)
        {
            e.recorded_at = TimeBucket::containing(e.recorded_at, unit).start();
        }
        report.records_out[pi] += 1;
        Some(Filtered::new(record))
    }

    /// The user id a person's events carry once through this filter, which
    /// is what the store files them under: the id itself when
    /// `event.username` is clear, its pseudonym's text form under this
    /// filter's key when pseudonymised, `None` when dropped (or when a
    /// pseudonym cannot be made without a key). A customer asking for a
    /// person's export or erasure names this id.
    ///
    /// ```
    /// use privtel_filter::{FilterBuilder, Policy, PseudonymKey};
    /// use privtel_model::{CustomerId, KeyId, UserId};
    ///
    /// let policy = Policy::from_toml("[fields]\n\"event.username\" = \"pseudonymise\"\n")?;
    /// let filter = FilterBuilder::new()
    ///     .policy(policy)
    ///     .customer(CustomerId::new("acme")?)
    ///     .key(PseudonymKey::new(KeyId::new(4), [1; 32]))
    ///     .build();
    /// let id = UserId::new("u-1042")?;
    /// let filed = filter.user_key(&id).expect("a key is set");
    /// assert!(filed.pseudonym().is_some_and(|p| p.key_id() == KeyId::new(4)));
    /// assert_eq!(filter.user_key(&id), Some(filed), "the same person, the same key");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn user_key(&self, user: &UserId) -> Option<UserId> {
        let spec = &fields::EVENT_USERNAME;
        let mut value = Some(user.clone());
        let mut report = RedactionReport::default();
        self.treat(spec, &self.plans[field_index(spec)], &mut PersonalMut::UserId(&mut value), &mut report);
        value
    }

    /// Every id a person's events may be filed under while the keys of
    /// `ring` live: the id itself when `event.username` is clear, its
    /// pseudonym under each live key of the ring (oldest first) when
    /// pseudonymised, nothing when dropped. After a rotation the person's
    /// earlier events carry the old key's pseudonym and later ones the
    /// new key's; export and erasure ask for each. A destroyed key gives
    /// nothing: the events filed under its pseudonyms can no longer be
    /// found by the person's id (docs/KEYS.md).
    ///
    /// ```
    /// use privtel_filter::{FilterBuilder, KeyRing, Policy};
    /// use privtel_model::{CustomerId, Timestamp, UserId};
    ///
    /// let now = Timestamp::from_unix_seconds(1_800_000_000)?;
    /// let mut ring = KeyRing::new();
    /// let old = ring.rotate([1; 32], now)?;
    /// ring.rotate([2; 32], now)?;
    /// let policy = Policy::from_toml("[fields]\n\"event.username\" = \"pseudonymise\"\n")?;
    /// let filter = FilterBuilder::new()
    ///     .policy(policy)
    ///     .customer(CustomerId::new("acme")?)
    ///     .key(ring.current().expect("a current key"))
    ///     .build();
    /// let id = UserId::new("u-1042")?;
    /// let ids = filter.user_keys(&ring, &id);
    /// assert_eq!(ids.len(), 2);
    /// assert_eq!(ids.last(), filter.user_key(&id).as_ref(), "the newest is what the filter files");
    /// ring.destroy(old, now)?;
    /// assert_eq!(filter.user_keys(&ring, &id).len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn user_keys(&self, ring: &KeyRing, user: &UserId) -> Vec<UserId> {
        let spec = &fields::EVENT_USERNAME;
        let plan = &self.plans[field_index(spec)];
        if plan.treatment != Treatment::Pseudonymise {
            return self.user_key(user).into_iter().collect();
        }
        ring.live()
            .filter_map(|key| {
                let plan = Plan {
                    treatment: plan.treatment,
                    group: plan.group,
                    subkey: Some(subkey(&key, &self.customer, plan.group)),
                };
                let mut value = Some(user.clone());
                let mut report = RedactionReport::default();
                self.treat_with(
                    spec,
                    &plan,
                    Some(key.id()),
                    &mut PersonalMut::UserId(&mut value),
                    &mut report,
                );
                value
            })
            .collect()
    }

    /// Filters a batch, returning what passes and the report.
    pub fn apply_batch(&self, records: impl IntoIterator<Item = Record>) -> (Vec<Filtered>, RedactionReport) {
        let mut report = RedactionReport::default();
        let out = records.into_iter().filter_map(|r| self.apply(r, &mut report)).collect();
        (out, report)
    }

    /// Applies the plan to one value; `None` when there was nothing there.
    fn treat(
        &self,
        spec: &FieldSpec,
        plan: &Plan,
        value: &mut PersonalMut<'_>,
        report: &mut RedactionReport,
    ) -> Option<Rule> {
        self.treat_with(spec, plan, self.key_id, value, report)
    }

    /// [`Self::treat`] under the key `key_id` (whose sub-key `plan` holds).
    fn treat_with(
        &self,
        spec: &FieldSpec,
        plan: &Plan,
        key_id: Option<KeyId>,
        value: &mut PersonalMut<'_>,
        report: &mut RedactionReport,
    ) -> Option<Rule> {
        let form = value.form();
        if form == Form::Withheld {
            return None;
        }
        if form != Form::Clear {
            // Already transformed upstream: keep it only if it is exactly
            // the form asked for (a generalised value: as this policy
            // generalises, what the service admits); anything else is
            // withheld.
            if form == plan.treatment.form()
                && (form != Form::Generalised || self.policy.generalises_to(spec.kind, value))
            {
                return Some(match form {
                    Form::Pseudonym => Rule::Pseudonymised,
                    _ => Rule::Generalised,
                });
            }
            value.withhold();
            return Some(Rule::Fallback);
        }
        match plan.treatment {
            Treatment::Clear => Some(Rule::Clear),
            Treatment::Withhold => {
                value.withhold();
                Some(Rule::Withheld)
            }
            Treatment::Pseudonymise => match (plan.subkey, key_id) {
                (Some(subkey), Some(key_id)) => {
                    let mut bytes = Vec::with_capacity(64);
                    canonical_bytes(spec.kind, value, &mut bytes);
                    let hash = blake3::keyed_hash(&subkey, &bytes);
                    let mut token = [0u8; TOKEN_LEN];
                    token.copy_from_slice(&hash.as_bytes()[..TOKEN_LEN]);
                    value.set_pseudonym(Pseudonym::new(key_id, token));
                    Some(Rule::Pseudonymised)
                }
                _ => {
                    value.withhold();
                    Some(Rule::Fallback)
                }
            },
            Treatment::Generalise => match self.generalise(spec.kind, value, report) {
                Some(g) => {
                    value.set_generalised(g);
                    Some(Rule::Generalised)
                }
                None => {
                    value.withhold();
                    Some(Rule::Fallback)
                }
            },
        }
    }

    /// The coarser form of a clear value, if its kind has one.
    fn generalise(
        &self,
        kind: ValueKind,
        value: &PersonalMut<'_>,
        report: &mut RedactionReport,
    ) -> Option<Generalised> {
        let g = &self.policy.generalise;
        match value {
            PersonalMut::Text(Personal::Clear(text)) => match kind {
                ValueKind::Url | ValueKind::Host => self.host_form(text),
                ValueKind::Email => {
                    let (_, domain) = text.rsplit_once('@')?;
                    let n = self.normalizer.normalize(domain).ok()?;
                    n.registrable_domain().map(Generalised::Domain)
                }
                ValueKind::FreeText => {
                    // Settled, as the service checks it (none: withheld).
                    let scrubbed = self.scrubber.scrub_settled(text)?;
                    report.scrubbed.iter_mut().zip(scrubbed.counts).for_each(|(a, b)| *a += u64::from(b));
                    Some(Generalised::Text(scrubbed.text))
                }
                _ => None,
            },
            PersonalMut::Ip(Personal::Clear(ip)) => Some(Generalised::IpPrefix(self.prefix(*ip)?)),
            PersonalMut::Timestamp(Personal::Clear(t)) => {
                Some(Generalised::Time(TimeBucket::containing(*t, g.time_unit)))
            }
            PersonalMut::Duration(Personal::Clear(d)) => {
                duration_bucket(*d, &g.duration_bounds_ms).map(Generalised::Duration)
            }
            PersonalMut::Geohash(Personal::Clear(h)) => {
                Some(Generalised::Geohash(h.truncated(usize::from(g.geohash_len))))
            }
            _ => None,
        }
    }

    fn prefix(&self, ip: IpAddr) -> Option<IpPrefix> {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        IpPrefix::new(ip, self.policy.generalise.prefix_len(ip)).ok()
    }

    /// A URL or host: its registrable domain, or its network if it is an IP.
    fn host_form(&self, text: &str) -> Option<Generalised> {
        let n = self.normalizer.normalize(text).ok()?;
        match n.ip() {
            Some(ip) => self.prefix(ip).map(Generalised::IpPrefix),
            None => n.registrable_domain().map(Generalised::Domain),
        }
    }
}

/// The bucket of `bounds` (upper bounds in ms) that holds `d`.
pub(crate) fn duration_bucket(d: Duration, bounds: &[u64]) -> Option<DurationBucket> {
    if d.is_negative() {
        return None;
    }
    let ms = u64::try_from(d.whole_milliseconds()).ok()?;
    let to = |ms: u64| Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
    let mut lo = 0;
    for &hi in bounds {
        if ms < hi {
            return DurationBucket::new(to(lo), Some(to(hi))).ok();
        }
        lo = hi;
    }
    DurationBucket::new(to(lo), None).ok()
}

/// The bytes a pseudonym is computed from: case-folded for identifiers that
/// are case-insensitive in practice (emails, logins, hosts), exact otherwise.
fn canonical_bytes(kind: ValueKind, value: &PersonalMut<'_>, out: &mut Vec<u8>) {
    match value {
        PersonalMut::Text(Personal::Clear(t)) => match kind {
            ValueKind::Email | ValueKind::Login | ValueKind::Host => {
                out.extend(t.trim().bytes().map(|b| b.to_ascii_lowercase()))
            }
            _ => out.extend_from_slice(t.as_bytes()),
        },
        PersonalMut::Ip(Personal::Clear(IpAddr::V4(a))) => out.extend_from_slice(&a.octets()),
        PersonalMut::Ip(Personal::Clear(IpAddr::V6(a))) => out.extend_from_slice(&a.octets()),
        PersonalMut::Timestamp(Personal::Clear(t)) => out.extend_from_slice(&t.unix_nanos().to_le_bytes()),
        PersonalMut::Duration(Personal::Clear(d)) => {
            out.extend_from_slice(&d.whole_nanoseconds().to_le_bytes())
        }
        PersonalMut::Geohash(Personal::Clear(g)) => out.extend_from_slice(g.as_str().as_bytes()),
        PersonalMut::Privileges(Personal::Clear(p)) => out.extend_from_slice(format!("{p:?}").as_bytes()),
        // A user id is an opaque key: exact bytes, so export and erasure can
        // pseudonymise the id they are given the same way.
        PersonalMut::UserId(Some(id)) => out.extend_from_slice(id.as_str().as_bytes()),
        _ => {}
    }
}

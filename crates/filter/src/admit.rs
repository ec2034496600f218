//! The service's side of a policy: whether a record that arrived is in a
//! form the customer's policy allows, and a digest that names a policy.
//!
//! The filter on the device makes records admissible; the service checks
//! them again, because a device (or whoever holds its key) may lie. The
//! check is exact: a field must be in the form the policy gives it, or
//! withheld (withholding is always allowed: it is the filter's answer when
//! it cannot produce the asked form). A pseudonym where the policy says
//! generalise is refused like a clear value: the service stores exactly
//! the forms the customer chose.

use std::collections::BTreeMap;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use privtel_model::{
    Form, Generalised, Personal, PersonalMut, Program, Record, RecordBody, TimeBucket, TimeUnit, ValueKind,
    VisitPersonal as _, fields,
};
use serde::Serialize;

use crate::filter::{allowed_kinds, duration_bucket};
use crate::policy::Policy;
use crate::scrub::{Detector, Scrubber};

/// Why a record is not admissible under a policy. Names programs, kinds and
/// field paths, never a value.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Inadmissible {
    /// The record's program is off in the policy.
    #[error("program {program} is off for this customer")]
    ProgramOff {
        /// The program.
        program: Program,
    },
    /// The program does not carry records of this kind.
    #[error("program {program} does not carry {kind} records")]
    Kind {
        /// The program.
        program: Program,
        /// The record's kind.
        kind: &'static str,
    },
    /// An interaction event with a web application or action the policy
    /// does not define ([`Policy::interactions`]). Names neither: what a
    /// lying device sends may be anything a person did.
    #[error("program {program}: an interaction with a web application or action the policy does not define")]
    Interaction {
        /// The program.
        program: Program,
    },
    /// A personal field in a form other than the policy's.
    #[error("field {field} arrived {found}, the policy allows {}", allowed_forms(*.allowed))]
    FieldForm {
        /// The field's path (`user.email`).
        field: &'static str,
        /// The form it arrived in.
        found: Form,
        /// The form the policy gives it (withheld is always allowed too).
        allowed: Form,
    },
    /// A personal field in the generalised form, but not as the policy
    /// generalises it: another kind of value than the field's (free text
    /// where a domain belongs), finer than the policy keeps it (an IP
    /// prefix longer than the policy's, a minute where it keeps hours, a
    /// duration range that is not one of its buckets, a domain under the
    /// registrable one), or free text that still holds what the policy's
    /// scrubber replaces. A device that skipped its filter can tag anything
    /// "generalised": the service checks the value too.
    #[error("field {field} arrived generalised, but not as the policy generalises it")]
    Generalised {
        /// The field's path (`crash_report.message`).
        field: &'static str,
    },
    /// An event whose own instant is finer than the policy keeps it
    /// ([`Policy::instant_unit`]).
    #[error("a {kind} event's instant arrived finer than the policy keeps it (to the {unit})")]
    Instant {
        /// The event's kind.
        kind: &'static str,
        /// The unit the policy truncates it to.
        unit: TimeUnit,
    },
}

impl Policy {
    /// Whether `record` is admissible: its program on, its kind carried by
    /// the program, an interaction event's application and action defined
    /// ([`Policy::interaction_defined`]), every personal field in the policy's form or withheld,
    /// and an event's own instant on a whole [`Policy::instant_unit`].
    /// The record is visited mutably but not changed.
    ///
    /// ```
    /// use privtel_filter::model::User;
    /// use privtel_filter::{FilterBuilder, Inadmissible, Policy, PseudonymKey};
    /// use privtel_model::{Form, KeyId, Personal, Program, Record, RecordBody, UserId};
    ///
    /// let policy = Policy::from_toml(
    ///     "[programs]\npersonalised_usage = true\n[fields]\n\"user.email\" = \"pseudonymise\"\n",
    /// )?;
    /// let filter = FilterBuilder::new()
    ///     .policy(policy.clone())
    ///     .key(PseudonymKey::new(KeyId::new(1), [7; 32]))
    ///     .build();
    /// let clear = |text: &str| Personal::Clear(text.to_owned());
    /// let raw = Record {
    ///     program: Program::PersonalisedUsage,
    ///     body: RecordBody::User(User {
    ///         id: UserId::new("u-1042")?,
    ///         username: clear("alice"),
    ///         upn: clear("alice@corp.example"),
    ///         first_name: clear("Alice"),
    ///         last_name: clear("Martin"),
    ///         job_title: clear("Engineer"),
    ///         email: clear("alice@corp.example"),
    ///         phone: clear("+41 21 000 00 00"),
    ///     }),
    /// };
    /// // What the filter lets through, the policy admits.
    /// let filtered = filter.apply(raw.clone(), &mut Default::default()).expect("personalised usage is on");
    /// assert_eq!(policy.admits(&mut filtered.into_record()), Ok(()));
    /// // The record that skipped the filter, with a clear username, is refused.
    /// let refused = policy.admits(&mut raw.clone()).unwrap_err();
    /// assert!(matches!(refused, Inadmissible::FieldForm { found: Form::Clear, .. }));
    /// assert_eq!(refused.to_string(), "field user.username arrived clear, the policy allows only withheld");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The first reason found, as [`Inadmissible`].
    pub fn admits(&self, record: &mut Record) -> Result<(), Inadmissible> {
        let program = record.program;
        if !self.enabled(program) {
            return Err(Inadmissible::ProgramOff { program });
        }
        let kind = record.body.kind_name();
        if !allowed_kinds(program).contains(&kind) {
            return Err(Inadmissible::Kind { program, kind });
        }
        if !self.interaction_defined(record) {
            return Err(Inadmissible::Interaction { program });
        }
        let mut bad = None;
        record.visit_personal(&mut |field| {
            if bad.is_some() {
                return;
            }
            let found = field.value.form();
            let allowed = self.treatment(field.spec).form();
            if found != allowed && found != Form::Withheld {
                bad = Some(Inadmissible::FieldForm { field: field.spec.path, found, allowed });
            } else if found == Form::Generalised && !self.generalises_to(field.spec.kind, &field.value) {
                bad = Some(Inadmissible::Generalised { field: field.spec.path });
            }
        });
        if let Some(bad) = bad {
            return Err(bad);
        }
        if let RecordBody::Event(e) = &record.body
            && let Some(unit) = self.instant_unit(&e.body)
            && e.recorded_at.unix_nanos().rem_euclid(i128::from(unit.seconds()) * 1_000_000_000) != 0
        {
            return Err(Inadmissible::Instant { kind: e.body.kind_name(), unit });
        }
        Ok(())
    }

    /// Whether a generalised `value` of a field of `kind` is one the
    /// filter could have made under this policy: the variant the field's
    /// kind generalises to, as coarse as the policy says, and a fixed point
    /// of the generalisation (generalising it again changes nothing).
    pub(crate) fn generalises_to(&self, kind: ValueKind, value: &PersonalMut<'_>) -> bool {
        let g = &self.generalise;
        let prefix_fits = |p: &privtel_model::IpPrefix| p.len() == g.prefix_len(p.addr());
        let registrable = |d: &privtel_model::Domain| {
            privtel_domain::Normalizer::shared()
                .normalize(d.as_str())
                .ok()
                .and_then(|n| n.registrable_domain())
                .is_some_and(|r| r == *d)
        };
        match value {
            PersonalMut::Text(Personal::Generalised(v)) => match (kind, v) {
                (ValueKind::Url | ValueKind::Host, Generalised::Domain(d))
                | (ValueKind::Email, Generalised::Domain(d)) => registrable(d),
                (ValueKind::Url | ValueKind::Host, Generalised::IpPrefix(p)) => prefix_fits(p),
                // Settled: one more pass of the policy's scrubber changes
                // nothing (the filter scrubs until it does).
                (ValueKind::FreeText, Generalised::Text(t)) => scrubber(&self.scrub).is_settled(t),
                _ => false,
            },
            PersonalMut::Ip(Personal::Generalised(Generalised::IpPrefix(p))) => prefix_fits(p),
            PersonalMut::Timestamp(Personal::Generalised(Generalised::Time(b))) => {
                b.unit() == g.time_unit && TimeBucket::containing(b.start(), g.time_unit) == *b
            }
            PersonalMut::Duration(Personal::Generalised(Generalised::Duration(b))) => {
                duration_bucket(b.lo(), &g.duration_bounds_ms).is_some_and(|mine| mine == *b)
            }
            PersonalMut::Geohash(Personal::Generalised(Generalised::Geohash(h))) => {
                h.as_str().len() <= usize::from(g.geohash_len)
            }
            _ => false,
        }
    }

    /// A digest naming the policy's effect: BLAKE3 of a canonical form in
    /// which every program and every personal field appears with its
    /// resolved setting, and the interactions defined (sorted) (so a policy that spells out a default and one that
    /// leaves it out have the same digest). Agents send it with each batch;
    /// the service compares it with the customer's current policy.
    ///
    /// ```
    /// use privtel_filter::Policy;
    ///
    /// let a = Policy::default();
    /// let b = Policy::from_toml("[programs]\nsupport_telemetry = true\n")?;
    /// assert_eq!(a.digest(), b.digest(), "spelling out a default changes nothing");
    /// let c = Policy::from_toml("[programs]\nsupport_telemetry = false\n")?;
    /// assert_ne!(a.digest(), c.digest());
    /// # Ok::<(), privtel_filter::Error>(())
    /// ```
    pub fn digest(&self) -> [u8; 32] {
        #[derive(Serialize)]
        struct Canonical<'a> {
            format: u32,
            version: u32,
            programs: BTreeMap<&'static str, bool>,
            fields: BTreeMap<&'static str, &'static str>,
            links: Vec<Vec<&'static str>>,
            generalise: &'a crate::policy::Generalisation,
            scrub: &'a crate::policy::ScrubSettings,
            retention: &'a crate::policy::RetentionDays,
            interactions: BTreeMap<&'a str, Vec<&'a str>>,
        }
        let mut links: Vec<Vec<&'static str>> = self
            .links
            .iter()
            .map(|g| {
                let mut g = g.clone();
                g.sort_unstable();
                g.dedup();
                g
            })
            .collect();
        links.sort();
        let canonical = Canonical {
            // 2: fields taken from others follow them, event instants are
            // truncated, `event.username` and `binary.file_name` exist.
            // 3: interactions are defined, `interaction.duration` exists.
            // 4: the scrubber's `phone` detector exists (`scrub.phone`):
            // every digest of format 3 differs, as the policy's effect on
            // free text does.
            format: 4,
            version: self.version,
            programs: Program::ALL.iter().map(|p| (p.as_str(), self.enabled(*p))).collect(),
            fields: fields::ALL.iter().map(|f| (f.path, self.treatment(f).as_str())).collect(),
            links,
            generalise: &self.generalise,
            scrub: &self.scrub,
            retention: &self.retention,
            interactions: self
                .interactions
                .iter()
                .map(|(application, actions)| (application.as_str(), actions.collect()))
                .collect(),
        };
        // Serialising plain data with string keys into a Vec cannot fail.
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }
}

/// What a field may arrive as: its policy form, or withheld.
fn allowed_forms(allowed: Form) -> String {
    if allowed == Form::Withheld { "only withheld".to_owned() } else { format!("{allowed} or withheld") }
}

/// The scrubber of the detectors `settings` switch on, made once per set
/// for the process (its expressions are compiled once; there are 128 sets
/// at most). Each
/// thread keeps the last one it used: a batch's texts share their policy,
/// so the process-wide map (behind a lock every connection thread shares)
/// is consulted once per batch rather than once per text.
fn scrubber(settings: &crate::policy::ScrubSettings) -> Arc<Scrubber> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(crate::policy::ScrubSettings, Arc<Scrubber>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((set, made)) if set == settings => Arc::clone(made),
        _ => {
            let made = shared_scrubber(&settings.detectors());
            *last = Some((settings.clone(), Arc::clone(&made)));
            made
        }
    })
}

/// [`scrubber`]'s process-wide map.
fn shared_scrubber(detectors: &[Detector]) -> Arc<Scrubber> {
    static MADE: OnceLock<Mutex<HashMap<Vec<Detector>, Arc<Scrubber>>>> = OnceLock::new();
    let mut made = MADE.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = made.get(detectors) {
        return Arc::clone(s);
    }
    Arc::clone(made.entry(detectors.to_vec()).or_insert_with(|| Arc::new(Scrubber::new(detectors))))
}

//! The privacy manifest: what each program sends, in what form, where, and
//! for how long — for machines (JSON) and for people (Markdown).

use privtel_model::{Program, Treatment, fields};
use serde::Serialize;

use crate::filter::allowed_kinds;
use crate::policy::Policy;

/// One personal field a program can carry.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct ManifestField {
    /// The field's path (`user.email`).
    pub path: &'static str,
    /// Its privacy category.
    pub category: privtel_model::DataCategory,
    /// The form it is sent in.
    pub treatment: Treatment,
    /// The form in words (`keyed pseudonym (BLAKE3, per-customer key)`).
    pub form: String,
    /// Why it is collected.
    pub purpose: &'static str,
}

/// One program's entry.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct ManifestProgram {
    /// The program.
    pub program: Program,
    /// Whether it is on under this policy.
    pub enabled: bool,
    /// Whether the customer can switch it off.
    pub optional: bool,
    /// Where its data goes.
    pub endpoint: String,
    /// The record kinds it carries.
    pub record_kinds: Vec<&'static str>,
    /// What it sends that is no record of the device or a person: the
    /// sightings Enhance uploads anonymously for enrichment (digests,
    /// sizes, formats, registrable domains, first-seen days); empty for
    /// every other program.
    pub sightings: Vec<&'static str>,
    /// Its personal fields; empty when the program is off (nothing is sent).
    pub fields: Vec<ManifestField>,
    /// How precisely each event kind the program carries keeps its own
    /// instant: (kind, unit it is truncated to; `None` is exact). See
    /// [`Policy::instant_unit`].
    pub event_times: Vec<(&'static str, Option<privtel_model::TimeUnit>)>,
    /// How long the service keeps events, in days.
    pub events_kept_days: u32,
    /// How long the service keeps objects, in days.
    pub objects_kept_days: u32,
}

/// The privacy manifest of a policy.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct Manifest {
    /// The policy version it describes.
    pub policy_version: u32,
    /// Devices inactive this long are purged, in days.
    pub inactive_device_purge_days: u32,
    /// One entry per program.
    pub programs: Vec<ManifestProgram>,
    /// The web applications (host names) whose interaction events are
    /// recorded, each with its actions, sorted; empty: none is. Sent only
    /// while personalised usage is on.
    pub interactions: Vec<(String, Vec<String>)>,
}

impl Manifest {
    /// The manifest of `policy`.
    pub fn from_policy(policy: &Policy) -> Self {
        let g = &policy.generalise;
        let form = |path: &str, kind: privtel_model::ValueKind, t: Treatment| -> String {
            use privtel_model::ValueKind as K;
            match t {
                Treatment::Clear => "as collected".to_owned(),
                Treatment::Withhold => "never recorded".to_owned(),
                Treatment::Pseudonymise => {
                    let linked = policy.links.iter().any(|l| l.contains(&path));
                    format!(
                        "keyed pseudonym (BLAKE3, per-customer key){}",
                        if linked { ", linked across fields" } else { "" }
                    )
                }
                Treatment::Generalise => match kind {
                    K::Url | K::Host => "registrable domain only".to_owned(),
                    K::Email => "email domain only".to_owned(),
                    K::Ip => format!("network only (IPv4 /{}, IPv6 /{})", g.ipv4_prefix, g.ipv6_prefix),
                    K::Timestamp => format!("{:?} only", g.time_unit).to_lowercase(),
                    K::Duration => "range only".to_owned(),
                    K::Geohash => format!("location to {} geohash characters", g.geohash_len),
                    K::FreeText => "text with identifiers replaced by placeholders".to_owned(),
                    _ => "never recorded".to_owned(),
                },
            }
        };
        let programs = Program::ALL
            .iter()
            .map(|&program| {
                let kinds = allowed_kinds(program);
                let enabled = policy.enabled(program);
                let fields = if enabled {
                    fields::ALL
                        .iter()
                        .filter(|f| kinds.iter().any(|k| fields::carried_by(f, k)))
                        .map(|f| {
                            let t = policy.treatment(f);
                            ManifestField {
                                path: f.path,
                                category: f.category,
                                treatment: t,
                                form: form(f.path, f.kind, t),
                                purpose: f.purpose,
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let event_times = event_times(policy, kinds);
                ManifestProgram {
                    program,
                    enabled,
                    event_times,
                    optional: program.can_switch_off(),
                    endpoint: format!("{}{}", policy.service.trim_end_matches('/'), program.endpoint()),
                    record_kinds: kinds.to_vec(),
                    sightings: sightings(program).to_vec(),
                    fields,
                    events_kept_days: policy.retention.events,
                    objects_kept_days: policy.retention.objects,
                }
            })
            .collect();
        Self {
            policy_version: policy.version,
            inactive_device_purge_days: policy.retention.inactive_device,
            programs,
            interactions: policy
                .interactions
                .iter()
                .map(|(application, actions)| (application.to_string(), actions.map(str::to_owned).collect()))
                .collect(),
        }
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and enums cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The manifest as a Markdown document a customer can read.
    pub fn to_markdown(&self) -> String {
        let mut md = format!(
            "# Privacy manifest (policy version {})\n\nDevices that stop reporting are removed after {} days.\n",
            self.policy_version, self.inactive_device_purge_days
        );
        for p in &self.programs {
            md.push_str(&format!(
                "\n## {} — {}{}\n\nSent to `{}`; events kept {} days, objects {} days. Carries: {}.\n",
                p.program,
                if p.enabled { "on" } else { "off: nothing is sent" },
                if p.optional { "" } else { " (required)" },
                p.endpoint,
                p.events_kept_days,
                p.objects_kept_days,
                p.record_kinds.join(", ")
            ));
            if p.enabled && !p.sightings.is_empty() {
                md.push_str(&format!(
                    "\nSends, with no device, user, path or time of day: {}.\n",
                    p.sightings.join(", ")
                ));
            }
            if !p.event_times.is_empty() {
                let times: Vec<String> = p
                    .event_times
                    .iter()
                    .map(|(kind, unit)| match unit {
                        Some(unit) => format!("{kind} to the {unit}"),
                        None => format!("{kind} exact"),
                    })
                    .collect();
                md.push_str(&format!("\nEvent times kept: {}.\n", times.join(", ")));
            }
            if p.fields.is_empty() {
                if p.enabled {
                    md.push_str("\nNo personal fields.\n");
                }
                continue;
            }
            md.push_str("\n| field | category | sent as | why |\n|---|---|---|---|\n");
            for f in &p.fields {
                md.push_str(&format!("| `{}` | {} | {} | {} |\n", f.path, f.category, f.form, f.purpose));
            }
        }
        md.push_str("\n## Interactions with web applications\n\n");
        if self.interactions.is_empty() {
            md.push_str("No web application is defined: no interaction is recorded.\n");
        } else {
            md.push_str(
                "Key and click counts and the duration of these actions only (never which keys, \
                 never a page address), under personalised usage:\n\n",
            );
            for (application, actions) in &self.interactions {
                md.push_str(&format!("* `{application}`: {}\n", actions.join(", ")));
            }
        }
        md
    }
}

/// What `program` sends that is no record: the sightings Enhance uploads
/// anonymously (`privtel_model::BinarySighting`, `DomainSighting`) for
/// enrichment, nothing for the other programs. Its record kinds are the
/// answers it brings back.
pub(crate) fn sightings(program: Program) -> &'static [&'static str] {
    match program {
        Program::Enrichment => &[
            "binary SHA-256 and BLAKE3 digests",
            "binary size",
            "executable format",
            "registrable domain",
            "first-seen day",
        ],
        _ => &[],
    }
}

/// The instant precision of each event kind among `kinds`.
fn event_times(
    policy: &Policy,
    kinds: &[&'static str],
) -> Vec<(&'static str, Option<privtel_model::TimeUnit>)> {
    kinds
        .iter()
        .filter(|k| privtel_model::EventBody::KINDS.contains(k))
        .map(|&kind| (kind, policy.instant_unit_of(kind)))
        .collect()
}

//! Canary test: a unique canary in every personal field of generated
//! records, under generated policies. The filtered output (JSON and
//! bincode) holds the canary of every field kept in clear and of no other.

use std::net::{IpAddr, Ipv4Addr};

use privtel_filter::{FilterBuilder, Policy, PseudonymKey, RedactionReport, allowed_kinds};
use privtel_model::{
    FieldSpec, Geohash, KeyId, Personal, PersonalMut, Program, Record, Timestamp, Treatment, ValueKind,
    VisitPersonal, fields,
};
use proptest::prelude::*;
use time::Duration;

/// The canary of field `fi` in record `ri`: a lowercase label, so it also
/// fits in host names.
fn canary(ri: usize, fi: usize) -> String {
    format!("cnry{ri}x{fi}q")
}

/// A text value holding the canary where generalisation removes it.
fn canary_text(kind: ValueKind, c: &str) -> String {
    match kind {
        ValueKind::Url => format!("https://{c}.www.example.com/{c}?q={c}"),
        ValueKind::Host => format!("{c}.example.com"),
        ValueKind::Email => format!("{c}@corp.example"),
        // Scrubbing removes identifiers, not arbitrary words: the canary is
        // an email address and a home-folder user name.
        ValueKind::FreeText => format!("failed for {c}@corp.example in /home/{c}/app"),
        _ => c.to_owned(),
    }
}

/// The non-text canaries and how they print in JSON.
fn canary_ip(ri: usize, fi: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (ri % 250) as u8 + 1, fi as u8 + 1, 77))
}

fn canary_time(ri: usize, fi: usize) -> Timestamp {
    Timestamp::from_unix_nanos(
        1_795_752_000_000_000_000 + (ri as i128 * 1000 + fi as i128) * 1_000_000_007 + 123,
    )
    .unwrap()
}

fn canary_duration(ri: usize, fi: usize) -> Duration {
    Duration::new(1000 + ri as i64 * 100 + fi as i64, 987_654_321)
}

fn canary_geohash(fi: usize) -> Geohash {
    Geohash::new(&format!("u33dc1v0{}", ["b", "c", "d", "e", "f", "g", "h", "j", "k", "m"][fi % 10])).unwrap()
}

/// Puts a canary in every personal field; returns (field, json needle)
/// pairs to look for.
fn plant(record: &mut Record, ri: usize) -> Vec<(&'static FieldSpec, String)> {
    let mut needles = Vec::new();
    record.visit_personal(&mut |field| {
        let fi = fields::ALL.iter().position(|f| std::ptr::eq(*f, field.spec)).unwrap();
        let needle = match field.value {
            PersonalMut::Text(p) => {
                *p = Personal::Clear(canary_text(field.spec.kind, &canary(ri, fi)));
                canary(ri, fi)
            }
            PersonalMut::Ip(p) => {
                *p = Personal::Clear(canary_ip(ri, fi));
                canary_ip(ri, fi).to_string()
            }
            PersonalMut::Timestamp(p) => {
                *p = Personal::Clear(canary_time(ri, fi));
                canary_time(ri, fi).to_string()
            }
            PersonalMut::Duration(p) => {
                *p = Personal::Clear(canary_duration(ri, fi));
                let d = canary_duration(ri, fi);
                format!("[{},{}]", d.whole_seconds(), d.subsec_nanoseconds())
            }
            PersonalMut::Geohash(p) => {
                *p = Personal::Clear(canary_geohash(fi));
                canary_geohash(fi).to_string()
            }
            // Privileges have four values, nothing unique to look for; the
            // typed check below covers them.
            PersonalMut::Privileges(p) => {
                *p = Personal::Clear(privtel_model::Privileges::Administrator);
                return;
            }
            _ => return,
        };
        needles.push((field.spec, needle));
    });
    needles
}

/// A policy: each field's treatment drawn from those its kind allows, each
/// optional program on or off.
fn policy() -> impl Strategy<Value = Policy> {
    let treatments = prop::collection::vec(0usize..4, fields::ALL.len());
    let consent = prop::collection::vec(any::<bool>(), Program::ALL.len());
    (treatments, consent).prop_map(|(t, c)| {
        let mut text = String::from("[programs]\n");
        for (p, on) in Program::ALL.iter().zip(c) {
            if p.can_switch_off() {
                text.push_str(&format!("{p} = {on}\n"));
            }
        }
        text.push_str("[fields]\n");
        for (spec, pick) in fields::ALL.iter().zip(t) {
            let mut choices = vec!["clear", "pseudonymise", "drop"];
            if !matches!(
                spec.kind,
                ValueKind::Name
                    | ValueKind::Login
                    | ValueKind::Text
                    | ValueKind::Phone
                    | ValueKind::Path
                    | ValueKind::Privileges
            ) {
                choices.push("generalise");
            }
            text.push_str(&format!("\"{}\" = \"{}\"\n", spec.path, choices[pick % choices.len()]));
        }
        Policy::from_toml(&text).expect("generated policies are valid")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 64 } else { 512 }, ..ProptestConfig::default() })]

    #[test]
    fn only_clear_fields_keep_their_canary(
        policy in policy(),
        records in prop::collection::vec(privtel_testkit::record(), 1..12),
        fixture in any::<bool>(),
    ) {
        let filter = FilterBuilder::new()
            .policy(policy.clone())
            .customer(privtel_model::CustomerId::new("acme").unwrap())
            .key(PseudonymKey::new(KeyId::new(9), [42; 32]))
            .build();
        // Half the time, the hand-written record of every kind as well, so
        // every field is reached whatever the generator picks.
        let mut records = records;
        if fixture {
            records.extend(privtel_testkit::fixtures::records("x"));
        }
        let mut report = RedactionReport::default();
        for (ri, mut record) in records.into_iter().enumerate() {
            let needles = plant(&mut record, ri);
            let program = record.program;
            let kind = record.body.kind_name();
            let out = filter.apply(record, &mut report);
            let passes = policy.enabled(program) && allowed_kinds(program).contains(&kind);
            prop_assert_eq!(out.is_some(), passes, "{} {}", program, kind);
            let Some(out) = out else { continue };
            let mut out = out.into_record();
            // The service's check agrees with the filter: what the filter
            // lets through is admissible under the same policy.
            prop_assert_eq!(policy.admits(&mut out), Ok(()), "{} {}", program, kind);
            let json = serde_json::to_string(&out).unwrap();
            let bin = bincode::serde::encode_to_vec(&out, bincode::config::standard()).unwrap();
            let debug = format!("{out:?}");
            for (spec, needle) in &needles {
                let clear = policy.treatment(spec) == Treatment::Clear;
                prop_assert_eq!(json.contains(needle.as_str()), clear, "{} ({}) in json: {}", spec.path, policy.treatment(spec), json);
                if spec.kind != ValueKind::Ip && !needle.starts_with('[') && !needle.contains(':') {
                    let in_bin = bin.windows(needle.len()).any(|w| w == needle.as_bytes());
                    prop_assert_eq!(in_bin, clear, "{} in bincode", spec.path);
                }
                prop_assert!(!debug.contains(needle.as_str()), "{} in debug output", spec.path);
            }
            // Typed check: every value is in the form the policy asked for,
            // or withheld.
            out.visit_personal(&mut |f| {
                let asked = policy.treatment(f.spec);
                let got = f.value.treatment();
                assert!(got == asked || got == Treatment::Drop, "{}: asked {asked}, got {got}", f.spec.path);
            });
        }
        let report_json = report.to_json().to_string();
        prop_assert!(!report_json.contains("cnry"), "the report holds no value");
    }
}

#[test]
fn switching_a_program_off_drops_its_records_whole() {
    let policy = Policy::from_toml("[programs]\nbenchmarking = false\nsupport_telemetry = false\n").unwrap();
    let filter = FilterBuilder::new().policy(policy).build();
    let (out, report) = filter.apply_batch(privtel_testkit::fixtures::records("x"));
    assert!(out.iter().all(|r| r.program != Program::Benchmarking && r.program != Program::SupportTelemetry));
    // Application, package, login and experience score.
    assert_eq!(report.consent_off(Program::Benchmarking), 4);
    assert_eq!(report.records_out(Program::Benchmarking), 0);
    // Personalised usage is off by default: the user record is dropped too.
    assert_eq!(report.consent_off(Program::PersonalisedUsage), 1);
    assert!(!out.iter().any(|r| r.program == Program::PersonalisedUsage));
}

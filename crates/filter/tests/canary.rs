//! Canary test: a unique canary in every personal field of generated
//! records (URL-, email- and path-shaped text, exact instants, the event's
//! user id and its own instant), under generated policies. The filtered
//! output (JSON and bincode) holds the canary of every field kept in clear
//! and of no other, and no field the policy coarsens can be read back from
//! another field: no instant finer than the policy's bucket, no component
//! of a withheld path in the file name, no URL path or query in the host.

use std::net::{IpAddr, Ipv4Addr};

use privtel_filter::{Error, FilterBuilder, Policy, PseudonymKey, RedactionReport, allowed_kinds};
use privtel_model::fields::Derivation;
use privtel_model::{
    FieldSpec, Generalised, Geohash, KeyId, Personal, PersonalMut, Program, Record, RecordBody, TimeBucket,
    TimeUnit, Timestamp, Treatment, UserId, ValueKind, VisitPersonal, fields,
};
use proptest::prelude::*;
use time::Duration;

/// The canary of field `fi` in record `ri`: a lowercase label, so it also
/// fits in host names and user ids.
fn canary(ri: usize, fi: usize) -> String {
    format!("cnry{ri}x{fi}q")
}

/// The shapes a text canary is planted in.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Url,
    Email,
    Path,
}

/// A text value of `shape` holding the canary `c` only where the field's
/// generalisation (if it has one) removes it: in a URL's subdomain, path
/// and query; in an email's local part; in a home folder.
fn canary_text(kind: ValueKind, shape: Shape, c: &str) -> String {
    // Scrubbing free text removes identifiers (emails, home folders), not
    // URLs: a URL in free text is kept by design, so free text gets the
    // other shapes.
    let shape = match (kind, shape) {
        (ValueKind::FreeText, Shape::Url) => Shape::Email,
        (_, s) => s,
    };
    match shape {
        Shape::Url => format!("https://{c}.www.example.com/{c}?q={c}"),
        Shape::Email => format!("{c}@corp.example"),
        Shape::Path => format!("/home/{c}/app/tool"),
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

/// The index of the event instant's canary (beyond every field's).
fn instant_index() -> usize {
    fields::ALL.len() + 1
}

/// What was planted in one record.
struct Planted {
    /// (field, needle in the JSON output).
    needles: Vec<(&'static FieldSpec, String)>,
    /// The event's exact instant, if the record is an event.
    instant: Option<Timestamp>,
    /// The clear instants planted, by field.
    times: Vec<(&'static FieldSpec, Timestamp)>,
    /// Whether derived fields were planted as parts of their sources (the
    /// file name as the path's last component, the host as the URL's).
    derived: bool,
    /// The user id planted, for an event or a user record.
    user: Option<UserId>,
}

/// Puts a canary in every personal field and in an event's instant.
/// With `derived`, a binary's file name is its path's last component and
/// a web request's host is its URL's host, as collectors fill them.
fn plant(record: &mut Record, ri: usize, shape: usize, derived: bool) -> Planted {
    let shapes = [Shape::Url, Shape::Email, Shape::Path];
    let mut planted = Planted { needles: Vec::new(), instant: None, times: Vec::new(), derived, user: None };
    record.visit_personal(&mut |field| {
        let fi = fields::ALL.iter().position(|f| std::ptr::eq(*f, field.spec)).unwrap();
        let needle = match field.value {
            PersonalMut::Text(p) => {
                let shape = shapes[(shape + fi) % shapes.len()];
                *p = Personal::Clear(canary_text(field.spec.kind, shape, &canary(ri, fi)));
                canary(ri, fi)
            }
            PersonalMut::UserId(u) => {
                let id = UserId::new(canary(ri, fi)).unwrap();
                planted.user = Some(id.clone());
                *u = Some(id);
                canary(ri, fi)
            }
            PersonalMut::Ip(p) => {
                *p = Personal::Clear(canary_ip(ri, fi));
                canary_ip(ri, fi).to_string()
            }
            PersonalMut::Timestamp(p) => {
                *p = Personal::Clear(canary_time(ri, fi));
                planted.times.push((field.spec, canary_time(ri, fi)));
                canary_time(ri, fi).to_string()
            }
            PersonalMut::Duration(p) => {
                *p = Personal::Clear(canary_duration(ri, fi));
                let d = canary_duration(ri, fi);
                // JSON writes durations as ISO 8601 text.
                privtel_model::iso8601::format(d)
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
        planted.needles.push((field.spec, needle));
    });
    let index = |spec: &FieldSpec| fields::ALL.iter().position(|f| std::ptr::eq(*f, spec)).unwrap();
    match &mut record.body {
        RecordBody::Event(e) => {
            let at = canary_time(ri, instant_index());
            e.recorded_at = at;
            planted.instant = Some(at);
            if let privtel_model::EventBody::WebRequest(w) = &mut e.body
                && derived
            {
                let host = canary(ri, index(&fields::WEB_REQUEST_HOST));
                let rest = canary(ri, index(&fields::WEB_REQUEST_URL));
                w.url = Personal::Clear(format!("https://{host}.www.example.com/{rest}?q={rest}"));
                w.host = Personal::Clear(format!("{host}.www.example.com"));
            }
        }
        RecordBody::Binary(b) if derived => {
            let name = canary(ri, index(&fields::BINARY_FILE_NAME));
            let folder = canary(ri, index(&fields::BINARY_PATH));
            b.path = Personal::Clear(format!("/home/{folder}/bin/{name}"));
            b.file_name = Personal::Clear(name);
        }
        _ => {}
    }
    planted
}

/// A policy file: each field's treatment drawn from those its kind allows,
/// each optional program on or off, a time unit. Derived fields may break
/// their rule: the test checks the loader refuses exactly those.
fn policy_text() -> impl Strategy<Value = String> {
    let treatments = prop::collection::vec(0usize..4, fields::ALL.len());
    let consent = prop::collection::vec(any::<bool>(), Program::ALL.len());
    let unit = prop_oneof![Just("minute"), Just("hour"), Just("day")];
    (treatments, consent, unit, any::<bool>(), any::<bool>()).prop_map(
        |(t, c, unit, spell_followers, interactions)| {
            let mut text = format!("[generalise]\ntime_unit = \"{unit}\"\n[programs]\n");
            for (p, on) in Program::ALL.iter().zip(c) {
                if p.can_switch_off() {
                    text.push_str(&format!("{p} = {on}\n"));
                }
            }
            text.push_str("[fields]\n");
            for (spec, pick) in fields::ALL.iter().zip(t) {
                let follows = fields::derivation(spec).is_some_and(|d| d.how == Derivation::Follows);
                if follows && !spell_followers {
                    continue;
                }
                let mut choices = vec!["clear", "pseudonymise", "withhold"];
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
            if interactions {
                // The fixture's interaction (the strategy's are any host and action).
                text.push_str("[interactions]\n\"crm.example.com\" = [\"create_ticket\"]\n");
            }
            text
        },
    )
}

/// The treatment a policy text names for `path`, or the model's default.
fn named(text: &str, spec: &FieldSpec) -> Treatment {
    let key = format!("\"{}\" = \"", spec.path);
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .map_or(spec.default_treatment, |rest| rest.trim_end_matches('"').parse().unwrap())
}

/// Loads a generated policy: the loader refuses it exactly when a derived
/// field breaks its rule, with the error naming both fields; the broken
/// entries are then repaired (followers removed, revealing fields dropped).
fn load(mut text: String) -> Result<Policy, TestCaseError> {
    loop {
        let broken = fields::DERIVED.iter().find(|d| {
            let (own, source) = (named(&text, d.field), named(&text, d.source));
            match d.how {
                Derivation::Follows => text.contains(&format!("\"{}\"", d.field.path)) && own != source,
                _ => own == Treatment::Clear && source != Treatment::Clear,
            }
        });
        let loaded = Policy::from_toml(&text);
        let Some(d) = broken else {
            return loaded.map_err(|e| TestCaseError::fail(format!("valid policy refused: {e}")));
        };
        let err = loaded.err().ok_or_else(|| TestCaseError::fail(format!("{} accepted", d.field.path)))?;
        let (field, from) = match &err {
            Error::Follows { field, from, .. } | Error::Reveals { field, from, .. } => (*field, *from),
            other => return Err(TestCaseError::fail(format!("wrong error: {other}"))),
        };
        prop_assert_eq!((field, from), (d.field.path, d.source.path));
        let entry = format!("\"{}\" = \"{}\"\n", d.field.path, named(&text, d.field));
        prop_assert!(text.contains(&entry), "{} is broken by its default", d.field.path);
        text = match d.how {
            Derivation::Follows => text.replace(&entry, ""),
            _ => text.replace(&entry, &format!("\"{}\" = \"withhold\"\n", d.field.path)),
        };
    }
}

/// Every string in a JSON value.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn aligned(t: Timestamp, unit: TimeUnit) -> bool {
    t.unix_nanos().rem_euclid(i128::from(unit.seconds()) * 1_000_000_000) == 0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 64 } else { 512 }, ..ProptestConfig::default() })]

    #[test]
    fn only_clear_fields_keep_their_canary(
        text in policy_text(),
        records in prop::collection::vec(privtel_testkit::record(), 1..12),
        fixture in any::<bool>(),
        shape in 0usize..3,
        derived in any::<bool>(),
    ) {
        let policy = load(text)?;
        prop_assert_eq!(policy.check(), Ok(()));
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
            records.push(privtel_testkit::fixtures::interaction());
        }
        let clear = |spec: &FieldSpec| policy.treatment(spec) == Treatment::Clear;
        let mut report = RedactionReport::default();
        for (ri, mut record) in records.into_iter().enumerate() {
            let planted = plant(&mut record, ri, shape + ri, derived);
            let program = record.program;
            let kind = record.body.kind_name();
            let defined = policy.interaction_defined(&record);
            let out = filter.apply(record, &mut report);
            // A user record's id is `event.username`: where the filter files
            // the person under no id (the policy drops it), no user record.
            let keyed = kind != "user" || planted.user.as_ref().and_then(|u| filter.user_key(u)).is_some();
            let passes = policy.enabled(program) && allowed_kinds(program).contains(&kind) && defined && keyed;
            prop_assert_eq!(out.is_some(), passes, "{} {}", program, kind);
            let Some(out) = out else { continue };
            let mut out = out.into_record();
            // The service's check agrees with the filter: what the filter
            // lets through is admissible under the same policy.
            prop_assert_eq!(policy.admits(&mut out), Ok(()), "{} {}", program, kind);
            let json = serde_json::to_string(&out).unwrap();
            let bin = bincode::serde::encode_to_vec(&out, bincode::config::standard()).unwrap();
            let debug = format!("{out:?}");
            for (spec, needle) in &planted.needles {
                // A derived field planted as a part of its source is also
                // readable where the source is kept in clear.
                let source_clear = planted.derived
                    && fields::derivation(spec).is_some_and(|d| {
                        clear(d.source) && !std::ptr::eq(d.source, &fields::EVENT_USERNAME)
                    });
                let expected = clear(spec) || source_clear;
                prop_assert_eq!(json.contains(needle.as_str()), expected, "{} ({}) in json: {}", spec.path, policy.treatment(spec), json);
                // Addresses, durations and instants are numbers in bincode,
                // not their text.
                if !matches!(spec.kind, ValueKind::Ip | ValueKind::Duration) && !needle.contains(':') {
                    let in_bin = bin.windows(needle.len()).any(|w| w == needle.as_bytes());
                    prop_assert_eq!(in_bin, expected, "{} in bincode", spec.path);
                }
                prop_assert!(!debug.contains(needle.as_str()), "{} in debug output", spec.path);
            }
            // Independently of `Policy::treatment`: a derived field planted
            // as a part of its source is a part of the source's value, so
            // where the policy as written does not keep the source in
            // clear, the derived field's canary is nowhere.
            if planted.derived {
                for d in fields::DERIVED.iter().filter(|d| !std::ptr::eq(d.source, &fields::EVENT_USERNAME)) {
                    let written = policy.treatments.get(d.source.path).copied().unwrap_or(d.source.default_treatment);
                    if written != Treatment::Clear
                        && let Some((_, needle)) = planted.needles.iter().find(|(f, _)| std::ptr::eq(*f, d.field))
                    {
                        prop_assert!(!json.contains(needle.as_str()), "{} of a {} {}: {}", d.field.path, written, d.source.path, json);
                    }
                }
            }
            // Typed check: every value is in the form the policy asked for,
            // or withheld.
            out.visit_personal(&mut |f| {
                let asked = policy.treatment(f.spec);
                let got = f.value.form().treatment();
                assert!(got == asked || got == Treatment::Withhold, "{}: asked {asked}, got {got}", f.spec.path);
            });
            match &out.body {
                RecordBody::Event(e) => {
                    // Who: the user the store files the event under is the
                    // one `user_key` gives for the planted id.
                    let user = planted.user.as_ref().unwrap();
                    prop_assert_eq!(out.body.user().cloned(), filter.user_key(user));
                    // The event's own instant: exact only where every time
                    // field of the kind is clear; otherwise on a whole unit
                    // at most one unit before the exact instant.
                    let exact = planted.instant.unwrap();
                    let unit = policy.instant_unit(&e.body);
                    prop_assert_eq!(json.contains(&exact.to_string()), unit.is_none(), "instant of {}", kind);
                    if let Some(unit) = unit {
                        prop_assert!(aligned(e.recorded_at, unit), "{} instant on a whole {:?}", kind, unit);
                        let lag = exact.unix_nanos() - e.recorded_at.unix_nanos();
                        prop_assert!((0..i128::from(unit.seconds()) * 1_000_000_000).contains(&lag));
                    }
                    // No instant finer than the policy's bucket anywhere:
                    // every instant in the record is a clear field's own,
                    // or on a whole generalisation unit.
                    let mut all = Vec::new();
                    strings(&serde_json::to_value(&out).unwrap(), &mut all);
                    for s in all {
                        // `@<nanos>` also parses; generated labels may look like it.
                        if s.starts_with('@') {
                            continue;
                        }
                        let Ok(t) = s.parse::<Timestamp>() else { continue };
                        let own = planted.times.iter().any(|(f, v)| *v == t && clear(f))
                            || (unit.is_none() && t == exact);
                        prop_assert!(own || aligned(t, policy.generalise.time_unit), "{} holds {} in {}", kind, s, json);
                    }
                    out.clone().visit_personal(&mut |f| {
                        if let PersonalMut::Timestamp(Personal::Generalised(Generalised::Time(b))) = f.value {
                            assert_eq!(b.unit(), policy.generalise.time_unit, "{}", f.spec.path);
                        }
                    });
                    // No URL path or query in the host: where it was
                    // planted as the URL's host, and wherever the policy
                    // coarsens it (a clear host is what the collector put).
                    if let privtel_model::EventBody::WebRequest(w) = &e.body {
                        let host = serde_json::to_string(&w.host).unwrap();
                        if planted.derived || !clear(&fields::WEB_REQUEST_HOST) {
                            prop_assert!(!host.contains(['/', '?', '@']), "host {}", host);
                        }
                        if !clear(&fields::WEB_REQUEST_URL) {
                            let rest = canary(ri, fields::ALL.iter().position(|f| std::ptr::eq(*f, &fields::WEB_REQUEST_URL)).unwrap());
                            prop_assert!(!json.contains(&rest), "the url's path in {}", json);
                        }
                    }
                }
                // The user record is filed under the id its person's events
                // are: `user_key` of the planted id.
                RecordBody::User(_) => {
                    let user = planted.user.as_ref().unwrap();
                    prop_assert_eq!(out.body.user().cloned(), filter.user_key(user));
                }
                // No component of a withheld path in the file name.
                RecordBody::Binary(b) if !clear(&fields::BINARY_PATH) => {
                    prop_assert!(b.file_name.clear_value().is_none(), "a clear file name of a {} path", policy.treatment(&fields::BINARY_PATH));
                    if planted.derived {
                        let folder = canary(ri, fields::ALL.iter().position(|f| std::ptr::eq(*f, &fields::BINARY_PATH)).unwrap());
                        prop_assert!(!json.contains(&folder), "the path's folder in {}", json);
                    }
                }
                _ => {}
            }
        }
        let report_json = report.to_json().to_string();
        prop_assert!(!report_json.contains("cnry"), "the report holds no value");
    }
}

#[test]
fn a_truncated_instant_rounds_toward_the_past_also_before_1970() {
    let policy =
        Policy::from_toml("[programs]\npersonalised_usage = true\n[generalise]\ntime_unit = \"day\"\n")
            .unwrap();
    let filter = FilterBuilder::new().policy(policy).build();
    for secs in [-1, -86_401, 0, 86_399, 1_795_752_123] {
        let mut record = privtel_testkit::fixtures::records("x")
            .into_iter()
            .find(|r| r.body.kind_name() == "web_request")
            .unwrap();
        let at = Timestamp::from_parts(secs, 5).unwrap();
        let RecordBody::Event(e) = &mut record.body else { unreachable!() };
        e.recorded_at = at;
        let out = filter.apply(record, &mut RedactionReport::default()).unwrap().into_record();
        let RecordBody::Event(e) = &out.body else { unreachable!() };
        assert_eq!(e.recorded_at, TimeBucket::containing(at, TimeUnit::Day).start());
        assert!(e.recorded_at <= at && e.recorded_at.unix_seconds() > secs - 86_400, "{secs}");
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
    // Personalised usage is off by default: the user record, the binary
    // (where it lies), the execution and the web request are dropped too.
    assert_eq!(report.consent_off(Program::PersonalisedUsage), 4);
    assert!(!out.iter().any(|r| r.program == Program::PersonalisedUsage));
}

/// Enhance is anonymous at the filter too: whatever a collector labels
/// enrichment, only the answers (verdicts) pass, and the kinds enrichment
/// carries have no personal field, no device and no user. Every program
/// on, every field clear: the most a policy can let through.
#[test]
fn no_enrichment_record_names_a_device_a_user_or_a_path() {
    for kind in allowed_kinds(Program::Enrichment) {
        let carried: Vec<&str> =
            fields::ALL.iter().filter(|f| fields::carried_by(f, kind)).map(|f| f.path).collect();
        assert_eq!(carried, Vec::<&str>::new(), "enrichment's {kind} carries personal fields");
    }
    let mut text = String::from("[programs]\n");
    for p in Program::ALL {
        text.push_str(&format!("{p} = true\n"));
    }
    text.push_str("[fields]\n");
    for f in fields::ALL {
        text.push_str(&format!("\"{}\" = \"clear\"\n", f.path));
    }
    let filter = FilterBuilder::new().policy(Policy::from_toml(&text).unwrap()).build();
    let tag = "enhcanary";
    let mut records = privtel_testkit::fixtures::records(tag);
    for r in &mut records {
        r.program = Program::Enrichment;
    }
    let (out, report) = filter.apply_batch(records);
    let kinds: Vec<&str> = out.iter().map(|r| r.body.kind_name()).collect();
    assert_eq!(kinds, ["binary_verdict", "domain_verdict"]);
    assert_eq!(report.kind_not_allowed(Program::Enrichment), 16, "every other kind is refused");
    let json = serde_json::to_string(&out.iter().map(|r| r.body.clone()).collect::<Vec<_>>()).unwrap();
    for needle in [tag, "dev-0001", "u-1042", "/home/", "alice"] {
        assert!(!json.contains(needle), "{needle} in an enrichment record: {json}");
    }
    // The same records under their own programs do carry them (the search
    // can fail).
    let (own, _) = filter.apply_batch(privtel_testkit::fixtures::records(tag));
    let json = serde_json::to_string(&own.iter().map(|r| r.body.clone()).collect::<Vec<_>>()).unwrap();
    assert!(
        json.contains(tag) && json.contains("dev-0001") && json.contains("u-1042") && json.contains("/home/")
    );
}

//! The visitor reaches exactly the personal fields written out here, with
//! these categories: a personal field added to the model but not declared
//! (or declared but not visited) makes this fail.

use std::collections::BTreeSet;

use privtel_model::DataCategory::{DeviceInformation, FreeText, Identifier, NetworkActivity, Technical};
use privtel_model::{DataCategory, Personal, PersonalMut, Record, RecordBody, VisitPersonal, fields};

/// For each record kind: (path, category) of every personal field, in visit
/// order.
const EXPECTED: &[(&str, &[(&str, DataCategory)])] = &[
    ("device", &[("device.name", DeviceInformation), ("device.ip", Identifier)]),
    (
        "user",
        &[
            ("event.username", Identifier),
            ("user.username", Identifier),
            ("user.upn", Identifier),
            ("user.first_name", Identifier),
            ("user.last_name", Identifier),
            ("user.job_title", Identifier),
            ("user.email", Identifier),
            ("user.phone", Identifier),
        ],
    ),
    ("binary", &[("binary.file_name", Technical), ("binary.path", Technical)]),
    ("application", &[]),
    ("package", &[]),
    ("binary_verdict", &[]),
    ("domain_verdict", &[]),
    (
        "execution",
        &[
            ("event.username", Identifier),
            ("execution.username", Identifier),
            ("execution.path", Technical),
            ("execution.start", DeviceInformation),
            ("execution.duration", DeviceInformation),
        ],
    ),
    (
        "web_request",
        &[
            ("event.username", Identifier),
            ("web_request.url", NetworkActivity),
            ("web_request.host", NetworkActivity),
            ("web_request.destination_ip", NetworkActivity),
            ("web_request.page_load", NetworkActivity),
        ],
    ),
    (
        "login",
        &[
            ("event.username", Identifier),
            ("login.time", DeviceInformation),
            ("login.duration", DeviceInformation),
            ("login.privileges", DeviceInformation),
        ],
    ),
    ("crash_report", &[("event.username", Identifier), ("crash_report.message", FreeText)]),
    ("feature_usage", &[("event.username", Identifier)]),
    ("configuration", &[("event.username", Identifier)]),
    ("performance", &[("event.username", Identifier)]),
    ("feedback", &[("event.username", Identifier), ("feedback.text", FreeText)]),
    (
        "licence_session",
        &[
            ("event.username", Identifier),
            ("licence_session.email", Identifier),
            ("licence_session.start", DeviceInformation),
            ("licence_session.end", DeviceInformation),
            ("licence_session.device_fingerprint", DeviceInformation),
            ("licence_session.geohash", NetworkActivity),
        ],
    ),
    ("version_check", &[("event.username", Identifier)]),
    ("experience_score", &[("event.username", Identifier)]),
    ("interaction", &[("event.username", Identifier), ("interaction.duration", DeviceInformation)]),
];

/// One record of every kind: the fixtures, and the interaction event kept
/// out of them (`privtel_testkit::fixtures::interaction`).
fn every_kind(tag: &str) -> Vec<Record> {
    let mut out = privtel_testkit::fixtures::records(tag);
    out.push(privtel_testkit::fixtures::interaction());
    out
}

fn visited(record: &mut Record) -> Vec<(&'static str, DataCategory)> {
    let mut out = Vec::new();
    record.visit_personal(&mut |f| out.push((f.spec.path, f.spec.category)));
    out
}

#[test]
fn visitor_reaches_exactly_the_declared_fields() {
    let mut records = every_kind("t");
    let kinds: Vec<_> = records.iter().map(|r| r.body.kind_name()).collect();
    let expected_kinds: Vec<_> = EXPECTED.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, expected_kinds, "one fixture per record kind, in this order");
    for (record, (kind, expected)) in records.iter_mut().zip(EXPECTED) {
        assert_eq!(visited(record), *expected, "personal fields of {kind}");
    }
}

#[test]
fn the_register_lists_every_visited_field_once() {
    let from_visitors: BTreeSet<&str> =
        EXPECTED.iter().flat_map(|(_, fields)| fields.iter().map(|(p, _)| *p)).collect();
    let register: BTreeSet<&str> = fields::ALL.iter().map(|f| f.path).collect();
    assert_eq!(from_visitors, register);
    assert_eq!(register.len(), fields::ALL.len(), "paths are unique");
    for f in fields::ALL {
        // `event.<field>` is a field of every event kind.
        let record_kind = f.path.split('.').next().unwrap();
        assert!(record_kind == "event" || EXPECTED.iter().any(|(k, _)| *k == record_kind), "{}", f.path);
        assert!(!f.purpose.is_empty(), "{} has a purpose", f.path);
    }
}

#[test]
fn visitor_visits_withheld_fields_too_and_can_withhold() {
    for mut record in every_kind("t") {
        let before = visited(&mut record);
        record.visit_personal(&mut |mut f| f.value.withhold());
        assert_eq!(visited(&mut record), before, "withheld fields are still visited");
        let mut any_clear = false;
        record.visit_personal(&mut |f| {
            any_clear |= f.value.form().treatment() != privtel_model::Treatment::Withhold
        });
        assert!(!any_clear);
    }
}

#[test]
fn debug_of_any_record_hides_every_personal_value() {
    let canary = "CANARYq7z";
    for record in every_kind(canary) {
        let json = serde_json::to_string(&record).unwrap();
        let debug = format!("{record:?} {record:#?}");
        assert!(!debug.contains(canary), "{} debug leaks: {debug}", record.body.kind_name());
        assert!(!debug.to_lowercase().contains(&canary.to_lowercase()));
        // The canary is really there, so the check above means something.
        let has_personal = {
            let mut r = record.clone();
            !r.personal_specs().is_empty()
        };
        let has_text_field = {
            let mut r = record.clone();
            let mut text = false;
            r.visit_personal(&mut |f| text |= matches!(f.value, PersonalMut::Text(_)));
            text
        };
        if has_personal && has_text_field {
            assert!(json.to_lowercase().contains(&canary.to_lowercase()), "{}", record.body.kind_name());
        }
    }
}

#[test]
fn record_user_and_device_point_at_the_person_and_device() {
    for record in every_kind("t") {
        match &record.body {
            RecordBody::User(u) => assert_eq!(record.body.user(), Some(&u.id)),
            RecordBody::Event(e) => {
                assert_eq!(record.body.user(), e.user.as_ref());
                assert_eq!(record.body.device(), Some(&e.device));
            }
            RecordBody::Device(d) => assert_eq!(record.body.device(), Some(&d.id)),
            _ => assert_eq!(record.body.user(), None),
        }
    }
    let p: Personal<u8> = Personal::Clear(1);
    assert_eq!(p.clear_value(), Some(&1));
}

#[test]
fn the_event_user_is_a_personal_field_in_three_forms() {
    use privtel_model::{KeyId, Pseudonym, Treatment, UserId};
    let mut record = every_kind("t").into_iter().find(|r| matches!(r.body, RecordBody::Event(_))).unwrap();
    let form = |r: &mut Record| {
        let mut out = None;
        r.visit_personal(&mut |f| {
            if f.spec.path == "event.username" {
                out = Some((f.value.form().treatment(), f.value.pseudonym()));
            }
        });
        out.unwrap()
    };
    assert_eq!(form(&mut record), (Treatment::Clear, None));
    assert!(!format!("{record:?}").contains("u-1042"), "debug hides a clear user id");
    let ps = Pseudonym::new(KeyId::new(2), [5; 16]);
    record.visit_personal(&mut |mut f| {
        if f.spec.path == "event.username" {
            f.value.set_pseudonym(ps);
        }
    });
    assert_eq!(form(&mut record), (Treatment::Pseudonymise, Some(ps)));
    // The store files it under the pseudonym: that is the record's user.
    assert_eq!(record.body.user(), Some(&UserId::from_pseudonym(&ps)));
    assert!(format!("{record:?}").contains(&format!("Pseudonym({ps})")));
    record.visit_personal(&mut |mut f| f.value.withhold());
    assert_eq!(form(&mut record), (Treatment::Withhold, None));
    assert_eq!(record.body.user(), None);
}

/// The old names still compile (deprecated) and mean the new ones.
#[test]
#[allow(deprecated)]
fn old_names_are_aliases_of_the_new_ones() {
    use privtel_model::{BinaryExecution, Execution, Form, Personal, Treatment};
    fn same_type(e: BinaryExecution) -> Execution {
        e
    }
    let _ = same_type;
    assert_eq!(Treatment::Drop, Treatment::Withhold);
    // The old variant name still works as a pattern.
    assert!(matches!(Treatment::Withhold, Treatment::Drop));
    assert!(!matches!(Treatment::Clear, Treatment::Drop));
    let p: Personal<String> = Personal::Withheld;
    assert_eq!(p.treatment(), Treatment::Withhold);
    assert_eq!(Personal::Clear(1u8).form(), Form::Clear);
    for t in Treatment::ALL {
        assert_eq!(t.form().treatment(), t);
    }
}

//! Interaction events (issue #16 point 6): recorded only for the web
//! applications and actions the customer's policy defines; anything else is
//! dropped on the device, counted under a reason of its own, and refused by
//! the service's check.

use privtel_filter::{Error, FilterBuilder, Inadmissible, InteractionError, Manifest, Policy, Rule};
use privtel_model::{
    DeviceId, Domain, Duration, Event, EventBody, EventId, Interaction, Personal, Program, Record,
    RecordBody, Timestamp, UserId, fields,
};
use proptest::prelude::*;

const POLICY: &str = r#"
[programs]
personalised_usage = true
[interactions]
"CRM.Example.com" = ["create_ticket", "search"]
"https://intranet.example.org:8443/portal" = ["approve"]
"#;

fn interaction(application: &str, action: &str, duration_secs: i64) -> Record {
    Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Event(Event {
            id: EventId::from_u128(7),
            device: DeviceId::new("dev-1").unwrap(),
            user: Some(UserId::new("u-1").unwrap()),
            recorded_at: Timestamp::from_unix_seconds(1_800_000_123).unwrap(),
            body: EventBody::Interaction(Interaction {
                application: Domain::new(application).unwrap(),
                action: action.into(),
                keys: 40,
                clicks: 3,
                duration: Personal::Clear(Duration::seconds(duration_secs)),
            }),
        }),
    }
}

#[test]
fn the_policy_defines_normalised_hosts_and_their_actions() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let defined: Vec<(String, Vec<String>)> =
        policy.interactions.iter().map(|(d, a)| (d.to_string(), a.map(str::to_owned).collect())).collect();
    assert_eq!(
        defined,
        [
            ("crm.example.com".to_owned(), vec!["create_ticket".to_owned(), "search".to_owned()]),
            ("intranet.example.org".to_owned(), vec!["approve".to_owned()]),
        ]
    );
    assert!(Policy::default().interactions.is_empty(), "nothing is defined by default");
}

#[test]
fn only_defined_interactions_pass_the_filter_and_the_rest_are_counted() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let filter = FilterBuilder::new().policy(policy).build();
    let records = vec![
        interaction("crm.example.com", "search", 48),
        interaction("crm.example.com", "export_all", 5), // action not defined
        interaction("mail.example.com", "search", 5),    // application not defined
        interaction("intranet.example.org", "approve", 2),
        interaction("intranet.example.org", "search", 2), // another application's action
    ];
    let (out, report) = filter.apply_batch(records);
    let passed: Vec<(String, String)> = out
        .into_iter()
        .map(|f| match f.into_record().body {
            RecordBody::Event(Event { body: EventBody::Interaction(i), .. }) => {
                (i.application.to_string(), i.action)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        passed,
        [("crm.example.com".into(), "search".into()), ("intranet.example.org".into(), "approve".into())]
    );
    let p = Program::PersonalisedUsage;
    assert_eq!(report.interaction_not_defined(p), 3);
    assert_eq!((report.records_in(p), report.records_out(p)), (5, 2));
    assert_eq!((report.consent_off(p), report.kind_not_allowed(p)), (0, 0), "a reason of its own");
    // Only what passed had its duration treated (generalised by default).
    assert_eq!(report.count(p, &fields::INTERACTION_DURATION, Rule::Generalised), 2);
    let json = report.to_json();
    assert_eq!(json["programs"]["personalised_usage"]["dropped_interaction_not_defined"], 3);
}

#[test]
fn with_nothing_defined_every_interaction_is_dropped() {
    let policy = Policy::from_toml("[programs]\npersonalised_usage = true\n").unwrap();
    let filter = FilterBuilder::new().policy(policy).build();
    let (out, report) = filter.apply_batch([interaction("crm.example.com", "search", 1)]);
    assert!(out.is_empty());
    assert_eq!(report.interaction_not_defined(Program::PersonalisedUsage), 1);
}

#[test]
fn the_duration_leaves_as_a_bucket_and_the_service_check_agrees() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let filter = FilterBuilder::new().policy(policy.clone()).build();
    let out = filter.apply(interaction("crm.example.com", "search", 48), &mut Default::default()).unwrap();
    let mut record = out.into_record();
    let RecordBody::Event(e) = &record.body else { panic!() };
    let EventBody::Interaction(i) = &e.body else { panic!() };
    assert!(matches!(i.duration, Personal::Generalised(_)), "{:?}", i.duration);
    assert_eq!(e.recorded_at.unix_seconds() % 3600, 0, "no time field: the instant to the hour");
    assert_eq!(policy.admits(&mut record), Ok(()));
    // A device that skips the filter: an undefined action is refused, and
    // the reason names neither the application nor the action.
    let mut lying = interaction("crm.example.com", "read_mail_of_ceo", 48);
    if let RecordBody::Event(e) = &mut lying.body {
        e.recorded_at = Timestamp::from_unix_seconds(1_800_000_000).unwrap();
        if let EventBody::Interaction(i) = &mut e.body {
            i.duration = Personal::Withheld;
        }
    }
    let err = policy.admits(&mut lying).unwrap_err();
    assert_eq!(err, Inadmissible::Interaction { program: Program::PersonalisedUsage });
    assert!(!err.to_string().contains("read_mail") && !err.to_string().contains("crm"), "{err}");
    // The same record with a defined action is admitted.
    if let RecordBody::Event(e) = &mut lying.body
        && let EventBody::Interaction(i) = &mut e.body
    {
        i.action = "create_ticket".into();
    }
    assert_eq!(policy.admits(&mut lying), Ok(()));
}

#[test]
fn interactions_are_personalised_usage_only() {
    let mut text = String::from(POLICY);
    text = text.replace("personalised_usage = true", "personalised_usage = true\nbenchmarking = true");
    let policy = Policy::from_toml(&text).unwrap();
    let filter = FilterBuilder::new().policy(policy).build();
    let mut record = interaction("crm.example.com", "search", 1);
    record.program = Program::Benchmarking;
    let mut report = Default::default();
    assert!(filter.apply(record, &mut report).is_none());
    assert_eq!(report.kind_not_allowed(Program::Benchmarking), 1);
}

#[test]
fn bad_entries_are_errors_with_their_line() {
    let cases: &[(&str, usize, InteractionError)] = &[
        ("[interactions]\n\"10.1.2.3\" = [\"a\"]\n", 2, InteractionError::IpAddress),
        ("[interactions]\n\"crm.example.com\" = []\n", 2, InteractionError::NoActions),
        (
            "\n[interactions]\n\"crm.example.com\" = [\"ok\", \"not ok\"]\n",
            3,
            InteractionError::ActionName { position: 2 },
        ),
        (
            "[interactions]\n\"crm.example.com\" = [\"a\", \"a\"]\n",
            2,
            InteractionError::DuplicateAction { position: 2 },
        ),
        (
            "[interactions]\n\"crm.example.com\" = [\"a\"]\n\"CRM.example.com.\" = [\"b\"]\n",
            3,
            InteractionError::DuplicateApplication,
        ),
    ];
    for (text, want_line, want) in cases {
        match Policy::from_toml(text) {
            Err(Error::Interaction { line, source, .. }) => {
                assert_eq!((line, &source), (*want_line, want), "{text}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    assert_eq!(
        Policy::from_toml(cases[0].0).unwrap_err().to_string(),
        "policy line 2: interactions: application '10.1.2.3': expected a host name, not an ip address"
    );
    let err = Policy::from_toml("[interactions]\n\"mailto:x@example.com\" = [\"a\"]\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("policy line 2: interactions: application 'mailto:x@example.com': not a web host"),
        "{err}"
    );
    // Not a list of names: the TOML reader's error, with its line.
    let err = Policy::from_toml("[interactions]\n\"crm.example.com\" = \"search\"\n").unwrap_err();
    assert!(matches!(err, Error::Syntax { line: 2, .. }), "{err}");
    // A host the error shows is escaped and shortened.
    let err = Policy::from_toml(&format!("[interactions]\n\"a\\u0007{}\" = [\"a\"]\n", "b".repeat(200)))
        .unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("a\\u{7}b") && shown.contains('…') && shown.len() < 300, "{shown}");
}

#[test]
fn the_digest_sees_what_interactions_are_defined() {
    let base = Policy::from_toml("[programs]\npersonalised_usage = true\n").unwrap();
    let a = Policy::from_toml(POLICY).unwrap();
    let b = Policy::from_toml(&POLICY.replace("\"search\"", "\"search\", \"close\"")).unwrap();
    // The same definitions written in another order and case.
    let c = Policy::from_toml(
        "[programs]\npersonalised_usage = true\n[interactions]\n\"intranet.example.org\" = [\"approve\"]\n\
         \"crm.example.com\" = [\"search\", \"create_ticket\"]\n",
    )
    .unwrap();
    assert_ne!(a.digest(), base.digest());
    assert_ne!(a.digest(), b.digest(), "one more action is another policy");
    assert_eq!(a.digest(), c.digest(), "order and spelling of the same definitions do not matter");
    let empty = Policy::from_toml("[programs]\npersonalised_usage = true\n[interactions]\n").unwrap();
    assert_eq!(empty.digest(), base.digest(), "an empty table defines nothing");
}

#[test]
fn the_manifest_lists_what_is_recorded() {
    let m = Manifest::from_policy(&Policy::from_toml(POLICY).unwrap());
    assert_eq!(
        m.interactions,
        [
            ("crm.example.com".to_owned(), vec!["create_ticket".to_owned(), "search".to_owned()]),
            ("intranet.example.org".to_owned(), vec!["approve".to_owned()]),
        ]
    );
    let md = m.to_markdown();
    assert!(md.contains("`crm.example.com`: create_ticket, search"), "{md}");
    let none = Manifest::from_policy(&Policy::default()).to_markdown();
    assert!(none.contains("No web application is defined: no interaction is recorded."), "{none}");
}

proptest! {
    /// An interaction event passes the filter exactly when its application
    /// and action are defined, whatever else the policy defines.
    #[test]
    fn an_interaction_passes_iff_its_application_and_action_are_defined(
        defined in prop::collection::btree_map(
            prop::sample::select(vec!["a.example", "b.example", "crm.example.com", "x.test"]),
            prop::collection::btree_set(prop::sample::select(vec!["search", "create", "edit", "Delete"]), 1..4),
            0..4,
        ),
        app in prop::sample::select(vec!["a.example", "b.example", "crm.example.com", "x.test", "other.example"]),
        action in prop::sample::select(vec!["search", "create", "edit", "Delete", "delete", "other"]),
        body in privtel_testkit::interaction(),
    ) {
        let mut text = String::from("[programs]\npersonalised_usage = true\n[interactions]\n");
        for (host, actions) in &defined {
            let list: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
            text.push_str(&format!("\"{host}\" = [{}]\n", list.join(", ")));
        }
        let policy = Policy::from_toml(&text).unwrap();
        let filter = FilterBuilder::new().policy(policy.clone()).build();
        let expected = defined.get(app).is_some_and(|a| a.contains(action));
        // Any generated body, with the chosen application and action.
        let mut record = interaction(app, action, 1);
        if let RecordBody::Event(e) = &mut record.body {
            e.body = EventBody::Interaction(Interaction {
                application: Domain::new(app).unwrap(),
                action: action.into(),
                ..body.clone()
            });
        }
        let mut report = Default::default();
        let out = filter.apply(record.clone(), &mut report);
        prop_assert_eq!(out.is_some(), expected);
        prop_assert_eq!(report.interaction_not_defined(Program::PersonalisedUsage), u64::from(!expected));
        if let Some(out) = out {
            prop_assert_eq!(policy.admits(&mut out.into_record()), Ok(()));
        } else {
            let refused = policy.admits(&mut record).unwrap_err();
            prop_assert_eq!(refused, Inadmissible::Interaction { program: Program::PersonalisedUsage });
        }
        // A generated (random) application or action is never defined here.
        let mut random = interaction(app, action, 1);
        if let RecordBody::Event(e) = &mut random.body {
            e.body = EventBody::Interaction(body.clone());
        }
        let random_expected = defined.get(body.application.as_str()).is_some_and(|a| a.contains(body.action.as_str()));
        prop_assert_eq!(filter.apply(random, &mut Default::default()).is_some(), random_expected);
    }
}

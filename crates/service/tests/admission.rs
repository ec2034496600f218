//! Property: for random settings and random records, the service stores a
//! record if and only if the customer's settings allow it in exactly the
//! form it arrived in. The oracle is written from the settings' parts
//! (programs, each field's treatment, the program's kinds, the clock), not
//! from the service's check.

use std::sync::atomic::Ordering;

use privtel_filter::{Policy, allowed_kinds};
use privtel_model::{Program, Record, RecordBody, Treatment, VisitPersonal as _, fields};
use privtel_service::{CustomerSettings, Peer, Settings};
use privtel_store::EngineStore as _;
use privtel_wire::{Batch, Hello, Message};
use proptest::prelude::*;

use super::{connect, id, now};

fn settings() -> impl Strategy<Value = Policy> {
    let forms = prop::collection::vec(prop::sample::select(Treatment::ALL.to_vec()), fields::ALL.len());
    let programs = prop::collection::vec(any::<bool>(), Program::ALL.len());
    let defined = prop::collection::vec((privtel_testkit::domain(), "[a-z]{1,3}"), 0..3);
    (forms, programs, defined).prop_map(|(forms, programs, defined)| {
        let mut policy = Policy::default();
        for (application, action) in defined {
            // Short names, so generated interactions sometimes match.
            let _ = policy.interactions.define(application.as_str(), [action]);
        }
        for (spec, form) in fields::ALL.iter().zip(forms) {
            policy.treatments.insert(spec.path, form);
        }
        for (p, on) in Program::ALL.iter().zip(programs) {
            policy.programs.insert(*p, on || !p.can_switch_off());
        }
        policy
    })
}

/// The oracle: whether `record` may be stored under `policy` at `now`.
fn allowed(policy: &Policy, program: Program, record: &Record) -> bool {
    let mut record = record.clone();
    let on = policy.programs.get(&record.program).copied().unwrap_or(false);
    let kind_ok = allowed_kinds(record.program).contains(&record.body.kind_name());
    // An interaction only for an application and action the policy defines.
    let interaction_ok = match &record.body {
        RecordBody::Event(e) => match &e.body {
            privtel_model::EventBody::Interaction(i) => policy.interactions.allows(&i.application, &i.action),
            _ => true,
        },
        _ => true,
    };
    let mut forms_ok = true;
    record.visit_personal(&mut |f| {
        let form = f.value.form().treatment();
        // The field's treatment as the policy resolves it: a field taken
        // from another is bound by its source (privtel_model::fields::DERIVED).
        let wanted = policy.treatment(f.spec);
        forms_ok &= form == wanted || form == Treatment::Withhold;
    });
    // An event's own instant on a whole unit of the policy's truncation.
    if let RecordBody::Event(e) = &record.body
        && let Some(unit) = policy.instant_unit(&e.body)
    {
        forms_ok &= e.recorded_at.unix_nanos() % (i128::from(unit.seconds()) * 1_000_000_000) == 0;
    }
    let latest = now().checked_add(privtel_service::DEFAULT_MAX_FUTURE_SKEW).unwrap();
    let dated_ok = match &record.body {
        RecordBody::Event(e) => e.recorded_at <= latest,
        RecordBody::Device(d) => d.last_seen <= latest,
        _ => true,
    };
    // A value arriving generalised must also be one the policy's
    // generalisation makes (the variant of its kind, as coarse as the
    // policy keeps it, unchanged when generalised again): that judgement
    // is the filter's own, tested value by value in
    // crates/filter/tests/policy.rs and crates/service/tests/generalised.rs;
    // here it is asked of the filter, and everything else computed apart.
    let generalised_ok =
        !matches!(policy.admits(&mut record), Err(privtel_filter::Inadmissible::Generalised { .. }));
    record.program == program && on && kind_ok && interaction_ok && forms_ok && dated_ok && generalised_ok
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 48 } else { 256 }, ..ProptestConfig::default() })]

    #[test]
    fn a_record_is_stored_iff_the_settings_allow_it_in_exactly_that_form(
        policy in settings(),
        records in prop::collection::vec(privtel_testkit::record(), 1..16),
        program in privtel_testkit::program(),
        same in prop::collection::vec(any::<bool>(), 16),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cs = CustomerSettings::new(id("acme"), policy.clone());
        let service = super::service_with(dir.path(), Settings::with_customers([cs]));
        // Most records of the batch's program, some of another.
        let mut records = records;
        for (r, s) in records.iter_mut().zip(&same) {
            if *s {
                r.program = program;
            }
        }
        // Some interactions with an application and action the policy
        // defines (generated ones hardly ever are).
        let first = policy.interactions.iter().next().map(|(d, mut a)| (d.clone(), a.next().unwrap().to_owned()));
        for (i, r) in records.iter_mut().enumerate() {
            if let (Some((application, action)), RecordBody::Event(e)) = (&first, &mut r.body)
                && let privtel_model::EventBody::Interaction(x) = &mut e.body
                && i % 2 == 0
            {
                x.application = application.clone();
                x.action = action.clone();
            }
        }
        let expected: Vec<bool> = records.iter().map(|r| allowed(&policy, program, r)).collect();
        let mut conn = connect(&service, Peer::device(id("acme"), id("dev-1")));
        let consent = Program::ALL.iter().map(|p| (*p, true)).collect();
        conn.client_handshake(&Hello::new("p", id("acme"), id("dev-1"), consent, 1)).unwrap();
        let n = records.len() as u64;
        let hash = service.settings().customer(&id("acme")).unwrap().policy_digest();
        conn.send(&Message::Batch(Batch {
            program,
            batch_id: privtel_model::BatchId::from_u128(1),
            first_seq: 1,
            records,
            skipped: 0,
            policy_hash: hash,
        })).unwrap();
        let Message::Ack(ack) = conn.recv().unwrap() else { panic!("no ack") };
        prop_assert_eq!(ack.accepted_up_to, n);
        let refused: std::collections::BTreeSet<u64> = ack.rejections.iter().map(|r| r.seq).collect();
        for (i, allowed) in expected.iter().enumerate() {
            prop_assert_eq!(!refused.contains(&(i as u64 + 1)), *allowed, "record {}", i + 1);
        }
        // Generated event ids are random: every admitted record is a new one.
        let admitted = expected.iter().filter(|a| **a).count() as u64;
        // Benchmarking records are folded into the customer's aggregates,
        // never stored as rows (tests/benchmarks.rs).
        let stored = if program == Program::Benchmarking { 0 } else { admitted };
        prop_assert_eq!(service.engine().record_count().unwrap(), stored);
        prop_assert_eq!(service.stats().stored.load(Ordering::Relaxed), stored);
    }
}

/// The user record's id is the personal field `event.username`, as an
/// event's user is: pseudonymised, the honest filter sends the pseudonym's
/// text form (the key the person's events carry) and the service refuses a
/// clear id; dropped, no user record is made, and none is admitted, clear,
/// pseudonymised or withheld. Nothing of a refused id reaches the engine.
#[test]
fn a_user_record_s_id_follows_the_event_username_treatment() {
    use privtel_model::UserId;
    use privtel_wire::RejectCode;

    use super::{admissible, batch, hello, in_engine_files, peer, send};

    const CLEAR_ID: &str = "canary-alice.martin";
    let user_record =
        |records: &[Record]| records.iter().find(|r| matches!(r.body, RecordBody::User(_))).cloned();
    let with_id = |record: &Record, id: UserId| {
        let mut record = record.clone();
        if let RecordBody::User(u) = &mut record.body {
            u.id = id;
        }
        record
    };
    let clear = Settings::from_toml("[customers.acme.policy.programs]\npersonalised_usage = true\n").unwrap();
    let template = {
        let dir = tempfile::tempdir().unwrap();
        let service = super::service_with(dir.path(), clear);
        user_record(&admissible(&service, "acme", "u", Program::PersonalisedUsage))
            .expect("clear: a user record")
    };
    for treatment in ["clear", "pseudonymise", "drop"] {
        let settings = format!(
            "[customers.acme.policy.programs]\npersonalised_usage = true\n\
             [customers.acme.policy.fields]\n\"event.username\" = \"{treatment}\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let service = super::service_with(dir.path(), Settings::from_toml(&settings).unwrap());
        let honest = admissible(&service, "acme", "u", Program::PersonalisedUsage);
        let mut cases = vec![("clear id", with_id(&template, id(CLEAR_ID)))];
        match (treatment, user_record(&honest)) {
            ("clear", Some(u)) => assert_eq!(u, template, "clear: the id as it is"),
            ("pseudonymise", Some(u)) => {
                let RecordBody::User(user) = &u.body else { unreachable!() };
                assert!(user.id.pseudonym().is_some(), "pseudonymise: the pseudonym's text form");
                let event_user = honest.iter().find_map(|r| match &r.body {
                    RecordBody::Event(e) => e.user.clone(),
                    _ => None,
                });
                assert_eq!(Some(&user.id), event_user.as_ref(), "the key the person's events carry");
                cases.push(("the filter's record", u));
            }
            ("drop", None) => {
                let pseudonym = privtel_model::Pseudonym::new(privtel_model::KeyId::new(1), [7; 16]);
                cases.push(("pseudonymised id", with_id(&template, UserId::from_pseudonym(&pseudonym))));
            }
            (_, u) => panic!("{treatment}: the filter made {u:?}"),
        }
        cases.push(("withheld id", with_id(&template, UserId::withheld())));
        let mut conn = connect(&service, peer("acme", "dev-1"));
        conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
        for (i, (label, record)) in cases.into_iter().enumerate() {
            let ack = send(&mut conn, batch(&service, "acme", i as u64 + 1, vec![record]));
            let admit =
                matches!((treatment, label), ("clear", "clear id") | ("pseudonymise", "the filter's record"));
            assert_eq!(ack.rejections.is_empty(), admit, "{treatment}, {label}: {:?}", ack.rejections);
            for r in &ack.rejections {
                assert_eq!(r.code, RejectCode::FIELD_FORM, "{treatment}, {label}");
                assert!(!r.reason.contains("canary"), "{}", r.reason);
            }
        }
        let held = service.export_person(&id("acme"), &id(CLEAR_ID), &mut Vec::new()).unwrap();
        assert_eq!(
            (held > 0, in_engine_files(dir.path(), CLEAR_ID)),
            (treatment == "clear", treatment == "clear")
        );
    }
}

/// A frame whose record does not decode (an IP "prefix" with its host bits
/// set: the address itself) ends the connection with an error that names
/// what was expected, never the address.
#[test]
fn a_frame_that_does_not_decode_is_refused_without_repeating_the_personal_value() {
    use privtel_model::{Generalised, IpPrefix, Personal};

    use super::{admissible, batch, hello, peer};

    let dir = tempfile::tempdir().unwrap();
    let service = super::service_with(dir.path(), Settings::from_toml("[customers.acme]\n").unwrap());
    let mut records = admissible(&service, "acme", "x", Program::AnonymousUsage);
    let device = records.iter_mut().find(|r| matches!(r.body, RecordBody::Device(_))).unwrap();
    if let RecordBody::Device(d) = &mut device.body {
        d.ip = Personal::Generalised(Generalised::IpPrefix(
            IpPrefix::new("203.0.113.0".parse().unwrap(), 24).unwrap(),
        ));
    }
    let (client, server) = privtel_testkit::pipe();
    let s = std::sync::Arc::clone(&service);
    let served =
        std::thread::spawn(move || s.handle(privtel_wire::Connection::new(server), peer("acme", "dev-1")));
    let mut conn = privtel_wire::Connection::new(client);
    let welcome = conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let frame = Message::Batch(batch(&service, "acme", 1, records)).to_frame(welcome.version, false).unwrap();
    let mut payload = frame.payload.clone();
    let at = payload.windows(5).position(|w| w == [203, 0, 113, 0, 24]).expect("the prefix's bytes");
    payload[at + 3] = 77;
    let forged = privtel_wire::Frame::new(frame.version, frame.kind, frame.flags, payload);
    privtel_wire::write_frame(conn.get_mut(), &forged, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
    let answer = conn.recv();
    let err = served.join().unwrap().expect_err("the frame does not decode");
    for text in [err.to_string(), format!("{err:?}"), format!("{answer:?}")] {
        assert!(!text.contains("203.0.113.77"), "{text}");
    }
    assert!(err.to_string().contains("ip prefix"), "names what was refused: {err}");
    assert_eq!(service.engine().record_count().unwrap(), 0);
}

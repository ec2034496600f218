//! A device that tags a value "generalised" without generalising it: the
//! service checks the value against how the customer's policy generalises
//! (the variant of the field's kind, as coarse as the policy keeps it,
//! free text as the policy's scrubber leaves it), refuses the record with
//! its code, and nothing of it reaches the engine's files.

use privtel_filter::{Detector, Scrubber};
use privtel_model::{
    DurationBucket, EventBody, Generalised, IpPrefix, Personal, Program, Record, RecordBody, TimeBucket,
    TimeUnit,
};
use privtel_service::Settings;
use privtel_store::EngineStore as _;
use privtel_wire::RejectCode;

use super::{admissible, batch, connect, hello, in_engine_files, peer, send, service_with};

const CANARY: &str = "canary-7f3a@example.com";

/// The first event of `kind` among `records`, as a record of its own.
fn event(records: &[Record], kind: &str) -> Record {
    records
        .iter()
        .find(|r| matches!(&r.body, RecordBody::Event(e) if e.body.kind_name() == kind))
        .unwrap_or_else(|| panic!("no {kind} event"))
        .clone()
}

fn event_body(record: &mut Record) -> &mut EventBody {
    match &mut record.body {
        RecordBody::Event(e) => &mut e.body,
        _ => panic!("an event"),
    }
}

/// Sends `stored` then `refused` in one batch of acme's dev-1: the first
/// is stored, the second refused on its own with the field-form code (not
/// retryable). The refusal's reason.
fn second_refused(
    service: &std::sync::Arc<privtel_service::Service>,
    stored: Record,
    refused: Record,
) -> String {
    let mut conn = connect(service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let ack = send(&mut conn, batch(service, "acme", 1, vec![stored, refused]));
    assert_eq!(ack.accepted_up_to, 2);
    assert_eq!(ack.rejections.len(), 1, "{:?}", ack.rejections);
    let r = &ack.rejections[0];
    assert_eq!((r.seq, r.code, r.retryable), (2, RejectCode::FIELD_FORM, false));
    r.reason.clone()
}

#[test]
fn unscrubbed_free_text_tagged_generalised_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    // The default policy: crash messages are generalised (scrubbed).
    let service = service_with(dir.path(), Settings::from_toml("[customers.acme]\n").unwrap());
    let records = admissible(&service, "acme", "c", Program::AnonymousUsage);
    let mut crash = event(&records, "crash_report");
    // What the filter made of it is stored.
    let scrubbed = crash.clone();
    let EventBody::CrashReport(c) = event_body(&mut crash) else { unreachable!() };
    assert!(matches!(c.message, Personal::Generalised(Generalised::Text(_))));
    c.message = Personal::Generalised(Generalised::Text(format!(
        "panic at /home/alice.martin/app.rs: mail {CANARY}, card 4111 1111 1111 1111"
    )));
    assert_eq!(
        second_refused(&service, scrubbed, crash),
        "field crash_report.message arrived generalised, but not as the policy generalises it"
    );
    assert_eq!(service.engine().record_count().unwrap(), 1);
    for needle in [CANARY, "alice.martin", "4111 1111"] {
        assert!(!in_engine_files(dir.path(), needle), "{needle} reached the engine's files");
    }
}

/// An agent built before the scrubber found phone numbers settled its
/// free text under the detectors it had: the number is still in it. The
/// customer's policy scrubs phone numbers (on by default), so the service
/// refuses that text as it refuses any other it would scrub, per record,
/// with the record's code, and stores none of it.
#[test]
fn a_phone_number_an_older_agent_left_in_free_text_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let service = service_with(dir.path(), Settings::from_toml("[customers.acme]\n").unwrap());
    let records = admissible(&service, "acme", "c", Program::SupportTelemetry);
    let mut feedback = event(&records, "feedback");
    // Today's filter scrubs the fixture's number: that record is stored.
    let scrubbed = feedback.clone();
    let EventBody::Feedback(f) = event_body(&mut feedback) else { unreachable!() };
    assert_eq!(f.text, Personal::Generalised(Generalised::Text("works well, call me on [phone]-c".into())));
    let without_phone: Vec<_> = Detector::ALL.into_iter().filter(|d| *d != Detector::Phone).collect();
    let older =
        Scrubber::new(&without_phone).scrub_settled("works well, call me on +33 6 12 34 56 78-c").unwrap();
    assert_eq!(older.text, "works well, call me on +33 6 12 34 56 78-c", "settled for the older agent");
    f.text = Personal::Generalised(Generalised::Text(older.text));
    assert_eq!(
        second_refused(&service, scrubbed, feedback),
        "field feedback.text arrived generalised, but not as the policy generalises it"
    );
    assert_eq!(service.engine().record_count().unwrap(), 1);
    // The engine's files are plain here: the stored text is in them, the
    // number in no form.
    assert!(in_engine_files(dir.path(), "call me on [phone]"), "the scan proves nothing");
    for needle in ["+33 6 12", "12 34 56 78", "612345678"] {
        assert!(!in_engine_files(dir.path(), needle), "{needle} reached the engine's files");
    }
}

/// Forms the phone detector of the day before left in free text (a label
/// glued with a dot, no-break spaces, `00` and a space, emphasis): an
/// agent built then settles them as they are; the service, which finds
/// them, refuses each of those records and stores none of their digits.
#[test]
fn phone_numbers_the_previous_detector_missed_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let service = service_with(dir.path(), Settings::from_toml("[customers.acme]\n").unwrap());
    let records = admissible(&service, "acme", "c", Program::SupportTelemetry);
    let feedback = event(&records, "feedback");
    let forms = [
        "Tel.0687654321 merci",
        "appelez le 06\u{202f}87\u{202f}65\u{202f}43\u{202f}21",
        "from abroad 00 33 6 87 65 43 21",
        "_+33 6 87 65 43 21_ anytime",
    ];
    let mut batch_records = vec![feedback.clone()];
    for form in forms {
        let mut r = feedback.clone();
        let EventBody::Feedback(f) = event_body(&mut r) else { unreachable!() };
        f.text = Personal::Generalised(Generalised::Text(form.into()));
        batch_records.push(r);
    }
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let ack = send(&mut conn, batch(&service, "acme", 1, batch_records));
    assert_eq!(ack.accepted_up_to, 5);
    let refused: Vec<_> = ack.rejections.iter().map(|r| (r.seq, r.code, r.retryable)).collect();
    assert_eq!(refused, (2..=5).map(|seq| (seq, RejectCode::FIELD_FORM, false)).collect::<Vec<_>>());
    assert_eq!(service.engine().record_count().unwrap(), 1);
    assert!(in_engine_files(dir.path(), "call me on [phone]"), "the scan proves nothing");
    for needle in ["87 65 43 21", "0687654321", "87\u{202f}65"] {
        assert!(!in_engine_files(dir.path(), needle), "{needle} reached the engine's files");
    }
}

#[test]
fn generalised_values_of_another_kind_or_finer_than_the_policy_are_refused() {
    const SETTINGS: &str = r#"
[customers.acme.policy.programs]
personalised_usage = true
[customers.acme.policy.fields]
"device.ip" = "generalise"
"user.email" = "generalise"
"#;
    let dir = tempfile::tempdir().unwrap();
    let service = service_with(dir.path(), Settings::from_toml(SETTINGS).unwrap());
    let anonymous = admissible(&service, "acme", "d", Program::AnonymousUsage);
    let personal = admissible(&service, "acme", "p", Program::PersonalisedUsage);
    let device = anonymous.iter().find(|r| matches!(r.body, RecordBody::Device(_))).unwrap().clone();
    let user = personal.iter().find(|r| matches!(r.body, RecordBody::User(_))).unwrap().clone();
    let web = event(&personal, "web_request");
    let execution = event(&personal, "execution");
    let minute = privtel_testkit::fixtures::base_time().checked_add(time::Duration::minutes(17)).unwrap();
    let ms = time::Duration::milliseconds;

    type Change = Box<dyn Fn(&mut Record)>;
    let cases: Vec<(&str, &Record, Change)> = vec![
        (
            "device.ip as a /32",
            &device,
            Box::new(|r| {
                let RecordBody::Device(d) = &mut r.body else { unreachable!() };
                d.ip = Personal::Generalised(Generalised::IpPrefix(
                    IpPrefix::new("203.0.113.77".parse().unwrap(), 32).unwrap(),
                ));
            }),
        ),
        (
            "device.ip as text",
            &device,
            Box::new(|r| {
                let RecordBody::Device(d) = &mut r.body else { unreachable!() };
                d.ip = Personal::Generalised(Generalised::Text(format!("203.0.113.77 {CANARY}")));
            }),
        ),
        (
            "user.email as text",
            &user,
            Box::new(|r| {
                let RecordBody::User(u) = &mut r.body else { unreachable!() };
                u.email = Personal::Generalised(Generalised::Text(CANARY.into()));
            }),
        ),
        (
            "web_request.host as a url in text",
            &web,
            Box::new(|r| {
                let EventBody::WebRequest(w) = event_body(r) else { unreachable!() };
                w.host = Personal::Generalised(Generalised::Text(format!(
                    "https://hr.corp.example/case?who={CANARY}"
                )));
            }),
        ),
        (
            "web_request.host as a whole host",
            &web,
            Box::new(|r| {
                let EventBody::WebRequest(w) = event_body(r) else { unreachable!() };
                w.host = Personal::Generalised(Generalised::Domain(
                    "alice-martin.home.dyndns.example.com".parse().unwrap(),
                ));
            }),
        ),
        (
            "web_request.page_load in a 1 ms bucket",
            &web,
            Box::new(move |r| {
                let EventBody::WebRequest(w) = event_body(r) else { unreachable!() };
                w.page_load = Personal::Generalised(Generalised::Duration(
                    DurationBucket::new(ms(843), Some(ms(844))).unwrap(),
                ));
            }),
        ),
        (
            "execution.start to the minute",
            &execution,
            Box::new(move |r| {
                let EventBody::Execution(x) = event_body(r) else { unreachable!() };
                x.start = Personal::Generalised(Generalised::Time(TimeBucket::containing(
                    minute,
                    TimeUnit::Minute,
                )));
            }),
        ),
        (
            "execution.start as text",
            &execution,
            Box::new(|r| {
                let EventBody::Execution(x) = event_body(r) else { unreachable!() };
                x.start = Personal::Generalised(Generalised::Text("2026-11-27T04:17:23.512Z".into()));
            }),
        ),
    ];
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let mut seq = 1;
    for (label, admissible, change) in &cases {
        // As the filter made it, the record is stored; changed, refused.
        let mut changed = (*admissible).clone();
        change(&mut changed);
        assert_ne!(&changed, *admissible, "{label}: the case changes the record");
        let ack = send(&mut conn, batch(&service, "acme", seq, vec![(*admissible).clone(), changed]));
        seq += 2;
        assert_eq!(ack.rejections.len(), 1, "{label}: {:?}", ack.rejections);
        let r = &ack.rejections[0];
        assert_eq!((r.seq, r.code), (seq - 1, RejectCode::FIELD_FORM), "{label}: {}", r.reason);
        assert!(
            r.reason.ends_with("arrived generalised, but not as the policy generalises it"),
            "{label}: {}",
            r.reason
        );
        assert!(!r.reason.contains("canary") && !r.reason.contains("alice"), "{label}: {}", r.reason);
    }
    // Each object as often as sent; an event once (sent again, the same
    // event is a duplicate): the two events and three objects sent.
    let objects = cases.iter().filter(|(_, r, _)| !matches!(r.body, RecordBody::Event(_))).count();
    assert_eq!(objects, 3);
    assert_eq!(service.engine().record_count().unwrap(), objects as u64 + 2);
    for needle in [CANARY, "alice-martin", "203.0.113.77"] {
        assert!(!in_engine_files(dir.path(), needle), "{needle} reached the engine's files");
    }
}

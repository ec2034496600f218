//! The application SDK against the real service, in one process over
//! in-memory connections: what the service stores for each call, per-person
//! consent and its withdrawal, per-endpoint spools, a full queue, restarts.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privtel_agent::AgentError;
use privtel_agent::sdk::{Connector, SdkError, Stream, Telemetry, TelemetryBuilder, UserProfile};
use privtel_filter::{Policy, PseudonymKey};
use privtel_model::{
    ConsentSource, CustomerId, DeviceId, KeyId, OsFamily, OsInfo, Program, Timestamp, UserId,
};
use privtel_service::{CustomerSettings, Peer, Service, Settings};
use privtel_store::{EngineStore, SqliteEngine};
use privtel_testkit::pipe;
use privtel_wire::{Connection, VerdictIndex};

const FLUSH: Duration = Duration::from_secs(20);

fn now() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

fn acme() -> CustomerId {
    CustomerId::new("acme").unwrap()
}

const POLICY: &str = "version = 4\n[programs]\npersonalised_usage = true\n[fields]\n\"user.first_name\" = \"clear\"\n\"user.last_name\" = \"clear\"\n\"user.email\" = \"pseudonymise\"\n";

fn policy(text: &str) -> Policy {
    Policy::from_toml(text).unwrap()
}

fn service(dir: &Path, name: &str, policy_text: &str) -> Arc<Service> {
    let engine = SqliteEngine::open(dir.join(format!("{name}.engine.db")), Default::default()).unwrap();
    let settings = Settings::with_customers([CustomerSettings::new(acme(), policy(policy_text))]);
    Arc::new(Service::new(engine, VerdictIndex::new(4, [1; 32]), now).with_settings(settings))
}

/// A connector to `service` over a pipe, refusing while `down` is set.
fn connector(service: &Arc<Service>, down: Arc<AtomicBool>) -> Connector {
    let service = Arc::clone(service);
    Connector::new(move || {
        if down.load(Ordering::SeqCst) {
            return Err(AgentError::Refused { message: "endpoint down".into(), retryable: true });
        }
        let (client, server) = pipe();
        let service = Arc::clone(&service);
        let peer = Peer::device(acme(), DeviceId::new("dev-1").unwrap());
        std::thread::spawn(move || service.handle(Connection::new(server), peer));
        let stream: Box<dyn Stream> = Box::new(client);
        Ok(Connection::new(stream))
    })
}

fn builder(dir: &Path, policy_text: &str) -> TelemetryBuilder {
    TelemetryBuilder::new(acme(), DeviceId::new("dev-1").unwrap(), "Studio", "4.2.0")
        .policy(policy(policy_text))
        .pseudonym_key(PseudonymKey::new(KeyId::new(1), [7; 32]))
        .spool_dir(dir.join("sdk"))
        .first_upload_after(Duration::from_secs(3600))
        .upload_every(Duration::from_secs(3600))
        .clock(now)
}

/// Every stored record of acme: (program, kind, the record's JSON).
fn stored(service: &Service) -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    service.engine().export_customer(&acme(), &serde_json::Map::new(), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((
                v.get("program")?.as_str()?.to_owned(),
                v.get("kind")?.as_str()?.to_owned(),
                v["record"].clone(),
            ))
        })
        .collect()
}

fn count(rows: &[(String, String, serde_json::Value)], program: &str, kind: &str) -> usize {
    rows.iter().filter(|(p, k, _)| p == program && k == kind).count()
}

fn alice() -> UserProfile {
    UserProfile {
        id: UserId::new("u-alice").unwrap(),
        first_name: "Alicecanary".into(),
        last_name: "Liddellcanary".into(),
        email: "alice.canary@example.com".into(),
    }
}

#[test]
fn each_call_is_stored_in_the_form_the_policy_gives_and_on_its_own_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let analytics = service(dir.path(), "analytics", POLICY);
    let crashes = service(dir.path(), "crashes", POLICY);
    let crashes_down = Arc::new(AtomicBool::new(true));
    let sdk = builder(dir.path(), POLICY)
        .endpoint("analytics", connector(&analytics, Arc::new(AtomicBool::new(false))))
        .endpoint("crashes", connector(&crashes, crashes_down.clone()))
        .route_kind("crash_report", "crashes")
        .build()
        .unwrap();
    sdk.feature_used("export_pdf");
    sdk.feature_used("export_pdf");
    sdk.configuration("theme", "dark");
    sdk.performance("startup_time", 812.0, "ms").unwrap();
    sdk.feedback(80, "love it, mail me at bob.canary@example.com").unwrap();
    sdk.crash("panicked at /home/carol/src/main.rs: index out of bounds");
    let os = OsInfo { family: OsFamily::Linux, version: "Debian 12".into(), build: None };
    sdk.licence_session("dave.canary@example.com", "fp-canary-1234", os, None).end();
    let report = sdk.flush(FLUSH).unwrap();
    assert_eq!(report.sent("analytics"), Some(7), "{report:?}");
    assert_eq!(report.pending("analytics"), Some(0));
    // The crash endpoint is down: only the crash waits.
    assert_eq!(report.pending("crashes"), Some(1), "{report:?}");
    assert!(report.endpoints[1].error.as_deref().is_some_and(|e| e.contains("endpoint down")), "{report:?}");
    let rows = stored(&analytics);
    assert_eq!(count(&rows, "anonymous_usage", "feature_usage"), 2);
    assert_eq!(count(&rows, "support_telemetry", "configuration"), 1);
    assert_eq!(count(&rows, "support_telemetry", "performance"), 1);
    assert_eq!(count(&rows, "support_telemetry", "feedback"), 1);
    assert_eq!(count(&rows, "licence_authentication", "licence_session"), 2, "start and end");
    assert_eq!(count(&rows, "anonymous_usage", "crash_report"), 0, "crashes go to their own endpoint");
    // No person set: no personalised copy.
    assert_eq!(count(&rows, "personalised_usage", "feature_usage"), 0);
    let all = serde_json::to_string(&rows.iter().map(|r| &r.2).collect::<Vec<_>>()).unwrap();
    for canary in ["bob.canary", "dave.canary", "fp-canary-1234"] {
        assert!(!all.contains(canary), "{canary} stored in clear: {all}");
    }
    crashes_down.store(false, Ordering::SeqCst);
    let report = sdk.flush(FLUSH).unwrap();
    assert_eq!(report.sent("crashes"), Some(1), "{report:?}");
    let crash_rows = stored(&crashes);
    assert_eq!(count(&crash_rows, "anonymous_usage", "crash_report"), 1);
    let text = crash_rows[0].2.to_string();
    assert!(!text.contains("/home/carol"), "the crash message is scrubbed: {text}");
    drop(sdk.shutdown(FLUSH).unwrap());
}

#[test]
fn a_withdrawal_purges_what_waits_and_stops_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "analytics", POLICY);
    let down = Arc::new(AtomicBool::new(false));
    let sdk =
        builder(dir.path(), POLICY).endpoint("analytics", connector(&svc, down.clone())).build().unwrap();
    let alice = alice();
    // Agreed at installation, then used the product: sent.
    let change =
        sdk.set_consent(&alice.id, Program::PersonalisedUsage, true, ConsentSource::Installer).unwrap();
    assert_eq!(change.purged, 0);
    sdk.set_user(&alice).unwrap();
    sdk.feature_used("search");
    let report = sdk.flush(FLUSH).unwrap();
    // consent + profile + anonymous + personalised feature use
    assert_eq!(report.sent("analytics"), Some(4), "{report:?}");
    // More use while the service is unreachable, then a withdrawal in the
    // settings: the waiting personalised records go, the anonymous stay.
    down.store(true, Ordering::SeqCst);
    sdk.feature_used("print");
    sdk.feature_used("print");
    let change =
        sdk.set_consent(&alice.id, Program::PersonalisedUsage, false, ConsentSource::Settings).unwrap();
    assert_eq!(change.purged, 2, "the two personalised copies waiting");
    sdk.feature_used("share");
    assert_eq!(sdk.stats().not_consented, 1);
    down.store(false, Ordering::SeqCst);
    let report = sdk.flush(FLUSH).unwrap();
    assert_eq!(report.sent("analytics"), Some(4), "3 anonymous uses and the withdrawal: {report:?}");
    let rows = stored(&svc);
    assert_eq!(count(&rows, "anonymous_usage", "feature_usage"), 4);
    assert_eq!(count(&rows, "personalised_usage", "feature_usage"), 1, "only the use before the withdrawal");
    assert_eq!(count(&rows, "personalised_usage", "user"), 1);
    let consents: Vec<&serde_json::Value> = rows.iter().filter(|r| r.1 == "consent").map(|r| &r.2).collect();
    assert_eq!(consents.len(), 2, "{consents:?}");
    let text = serde_json::to_string(&consents).unwrap();
    assert!(text.contains("\"installer\"") && text.contains("\"settings\""), "{text}");
    // The email is pseudonymised by the policy, the names clear (agreed).
    let all = serde_json::to_string(&rows.iter().map(|r| &r.2).collect::<Vec<_>>()).unwrap();
    assert!(all.contains("Alicecanary"), "the person agreed to their name: {all}");
    assert!(!all.contains("alice.canary@example.com"), "{all}");
    sdk.shutdown(FLUSH).unwrap();
}

#[test]
fn consent_outlives_a_restart_and_the_spool_names_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "analytics", POLICY);
    let down = Arc::new(AtomicBool::new(true));
    {
        let sdk =
            builder(dir.path(), POLICY).endpoint("analytics", connector(&svc, down.clone())).build().unwrap();
        sdk.set_consent(&alice().id, Program::PersonalisedUsage, true, ConsentSource::Administrator).unwrap();
        sdk.shutdown(FLUSH).unwrap();
    }
    let sdk =
        builder(dir.path(), POLICY).endpoint("analytics", connector(&svc, down.clone())).build().unwrap();
    sdk.set_user(&alice()).unwrap();
    sdk.feature_used("search");
    let report = sdk.flush(FLUSH).unwrap();
    assert_eq!(report.pending("analytics"), Some(4), "consent, profile, anonymous and personalised use");
    // The spool is sealed and files people under keyed digests: no byte of
    // the spool or its log names the person.
    drop(sdk);
    for entry in std::fs::read_dir(dir.path().join("sdk")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for canary in [&b"u-alice"[..], b"Alicecanary", b"alice.canary"] {
            assert!(!bytes.windows(canary.len()).any(|w| w == canary), "{}", String::from_utf8_lossy(canary));
        }
    }
    down.store(false, Ordering::SeqCst);
    let sdk = builder(dir.path(), POLICY).endpoint("analytics", connector(&svc, down)).build().unwrap();
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("analytics"), Some(4));
    let rows = stored(&svc);
    assert_eq!(count(&rows, "personalised_usage", "feature_usage"), 1);
    assert_eq!(count(&rows, "personalised_usage", "consent"), 1);
}

#[test]
fn a_switched_off_program_records_nothing_and_consent_cannot_switch_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let off = "[programs]\nsupport_telemetry = false\nanonymous_usage = true\n";
    let svc = service(dir.path(), "analytics", off);
    let sdk = builder(dir.path(), off)
        .endpoint("analytics", connector(&svc, Arc::new(AtomicBool::new(false))))
        .build()
        .unwrap();
    assert!(!sdk.enabled(Program::SupportTelemetry));
    sdk.configuration("theme", "dark");
    sdk.performance("startup_time", f64::NAN, "ms").unwrap(); // off: not even checked
    sdk.feedback(200, "x").unwrap();
    assert_eq!(sdk.stats().recorded, 0);
    let err =
        sdk.set_consent(&alice().id, Program::PersonalisedUsage, true, ConsentSource::Installer).unwrap_err();
    assert!(matches!(err, SdkError::ProgramOff { program: Program::PersonalisedUsage }), "{err}");
    let err =
        sdk.set_consent(&alice().id, Program::Benchmarking, true, ConsentSource::Installer).unwrap_err();
    assert!(err.to_string().contains("personalised_usage only"), "{err}");
    sdk.feature_used("search");
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("analytics"), Some(1));
}

#[test]
fn bad_values_and_bad_set_up_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let c = || connector(&svc, Arc::new(AtomicBool::new(false)));
    let err = builder(dir.path(), POLICY).build().unwrap_err();
    assert!(matches!(err, SdkError::NoEndpoint), "{err}");
    let err = builder(dir.path(), POLICY).endpoint("a", c()).endpoint("a", c()).build().unwrap_err();
    assert!(matches!(err, SdkError::DuplicateEndpoint { .. }), "{err}");
    let err = builder(dir.path(), POLICY).endpoint("../etc", c()).build().unwrap_err();
    assert!(matches!(err, SdkError::EndpointName { .. }), "{err}");
    let err = builder(dir.path(), POLICY)
        .endpoint("a", c())
        .route(Program::LicenceAuthentication, "licence")
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route of licence_authentication names endpoint \"licence\", which was not given"
    );
    let sdk = builder(dir.path(), POLICY).endpoint("a", c()).build().unwrap();
    let err = sdk.performance("startup_time", f64::INFINITY, "ms").unwrap_err();
    assert!(err.to_string().starts_with("performance value"), "{err}");
    let err = sdk.feedback(101, "text").unwrap_err();
    assert!(err.to_string().starts_with("feedback score"), "{err}");
}

#[test]
fn a_full_queue_drops_and_counts_but_never_blocks_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    // A connector that holds the worker until released: records pile up in
    // the queue meanwhile.
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let inner = connector(&svc, Arc::new(AtomicBool::new(false)));
    let g = gate.clone();
    let slow = Connector::new(move || {
        drop(g.lock().unwrap());
        inner_connect(&inner)
    });
    let sdk = builder(dir.path(), POLICY).endpoint("a", slow).queue_capacity(5).build().unwrap();
    sdk.feature_used("first");
    // The flush takes the first record and blocks in the connector.
    let flusher = {
        let sdk = sdk.clone();
        std::thread::spawn(move || sdk.flush(FLUSH).unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    for _ in 0..50 {
        sdk.feature_used("again");
    }
    assert!(started.elapsed() < Duration::from_secs(1), "calls never wait for the worker");
    let stats = sdk.stats();
    assert_eq!(stats.dropped_queue_full, 45, "{stats:?}");
    assert_eq!(stats.queued, vec![("a".to_owned(), 5)]);
    drop(held);
    assert_eq!(flusher.join().unwrap().sent("a"), Some(1));
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("a"), Some(5));
    assert_eq!(svc.engine().record_count().unwrap(), 6);
}

fn inner_connect(c: &Connector) -> Result<privtel_agent::sdk::BoxConnection, AgentError> {
    c.connect()
}

/// Handles are cheap clones shared across threads.
#[test]
fn clones_record_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let sdk: Telemetry = builder(dir.path(), POLICY)
        .endpoint("a", connector(&svc, Arc::new(AtomicBool::new(false))))
        .build()
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sdk = sdk.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    sdk.configuration(&format!("key-{t}-{i}"), "v");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("a"), Some(1000));
    assert_eq!(svc.engine().record_count().unwrap(), 1000);
}

const SETTLE: Duration = Duration::from_millis(300);

/// A connector that waits on `gate` before connecting, refusing while
/// `down` is set: holds a worker in its upload while a test queues more.
fn gated(service: &Arc<Service>, gate: Arc<Mutex<()>>, down: Arc<AtomicBool>) -> Connector {
    let inner = connector(service, down);
    Connector::new(move || {
        drop(gate.lock().unwrap());
        inner.connect()
    })
}

fn personalised(svc: &Service) -> usize {
    let rows = stored(svc);
    count(&rows, "personalised_usage", "feature_usage") + count(&rows, "personalised_usage", "user")
}

/// A person set while their stored choice is being read, then a withdrawal
/// before the read completes: the older read never brings consent back.
#[test]
fn a_stale_read_of_consent_never_undoes_a_withdrawal() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let gate = Arc::new(Mutex::new(()));
    let sdk = builder(dir.path(), POLICY)
        .endpoint("a", gated(&svc, gate.clone(), Arc::new(AtomicBool::new(false))))
        .build()
        .unwrap();
    sdk.set_consent(&alice().id, Program::PersonalisedUsage, true, ConsentSource::Installer).unwrap();
    let held = gate.lock().unwrap();
    let flush = {
        let s = sdk.clone();
        std::thread::spawn(move || s.flush(FLUSH).unwrap())
    };
    std::thread::sleep(SETTLE); // the worker waits in its upload
    let set_user = {
        let s = sdk.clone();
        std::thread::spawn(move || s.set_user(&alice()))
    };
    std::thread::sleep(SETTLE); // the read of the stored choice is queued
    let withdraw = {
        let s = sdk.clone();
        std::thread::spawn(move || {
            s.set_consent(&alice().id, Program::PersonalisedUsage, false, ConsentSource::Settings)
        })
    };
    std::thread::sleep(SETTLE);
    sdk.feature_used("while_pending");
    drop(held);
    flush.join().unwrap();
    set_user.join().unwrap().unwrap();
    withdraw.join().unwrap().unwrap();
    sdk.feature_used("after_withdrawal");
    sdk.flush(FLUSH).unwrap();
    assert_eq!(personalised(&svc), 0, "{:?}", stored(&svc));
    assert_eq!(count(&stored(&svc), "personalised_usage", "consent"), 2);
}

/// With consent records on an endpoint of their own, a withdrawal returns
/// only once every endpoint purged the person's waiting records.
#[test]
fn a_withdrawal_returns_once_every_endpoint_purged() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "analytics", POLICY);
    let legal = service(dir.path(), "legal", POLICY);
    let down = Arc::new(AtomicBool::new(true));
    let sdk = builder(dir.path(), POLICY)
        .endpoint("analytics", connector(&svc, down.clone()))
        .endpoint("legal", connector(&legal, Arc::new(AtomicBool::new(false))))
        .route_kind("consent", "legal")
        .build()
        .unwrap();
    sdk.set_consent(&alice().id, Program::PersonalisedUsage, true, ConsentSource::Installer).unwrap();
    sdk.set_user(&alice()).unwrap();
    sdk.feature_used("search");
    let change =
        sdk.set_consent(&alice().id, Program::PersonalisedUsage, false, ConsentSource::Settings).unwrap();
    // The profile and the personalised use on the analytics endpoint, and
    // the grant's consent record waiting on the legal one.
    assert_eq!(change.purged, 3);
    down.store(false, Ordering::SeqCst);
    let report = sdk.flush(FLUSH).unwrap();
    assert_eq!(report.sent("analytics"), Some(1), "the anonymous use only: {report:?}");
    assert_eq!(personalised(&svc), 0);
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("legal"), Some(0), "sent with the first flush");
    let legal_rows = stored(&legal);
    assert_eq!(count(&legal_rows, "personalised_usage", "consent"), 1, "the withdrawal: {legal_rows:?}");
}

/// A person set while the worker is busy is current at once: their use is
/// never filed under the previous person, and not personalised until their
/// own choice is read.
#[test]
fn a_new_person_is_never_filed_under_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let gate = Arc::new(Mutex::new(()));
    let sdk = builder(dir.path(), POLICY)
        .endpoint("a", gated(&svc, gate.clone(), Arc::new(AtomicBool::new(false))))
        .build()
        .unwrap();
    sdk.set_consent(&alice().id, Program::PersonalisedUsage, true, ConsentSource::Installer).unwrap();
    sdk.set_user(&alice()).unwrap();
    let held = gate.lock().unwrap();
    let flush = {
        let s = sdk.clone();
        std::thread::spawn(move || s.flush(FLUSH))
    };
    std::thread::sleep(SETTLE);
    let bob = UserProfile {
        id: UserId::new("u-bob").unwrap(),
        first_name: "Bob".into(),
        last_name: "B".into(),
        email: "bob@example.com".into(),
    };
    let set_bob = {
        let s = sdk.clone();
        std::thread::spawn(move || s.set_user(&bob))
    };
    std::thread::sleep(SETTLE);
    sdk.feature_used("bob_clicked");
    drop(held);
    flush.join().unwrap().unwrap();
    set_bob.join().unwrap().unwrap();
    sdk.clear_user();
    sdk.feature_used("nobody_clicked");
    sdk.flush(FLUSH).unwrap();
    let rows = stored(&svc);
    let personal: Vec<String> = rows
        .iter()
        .filter(|(p, k, _)| p == "personalised_usage" && k == "feature_usage")
        .map(|r| r.2.to_string())
        .collect();
    assert!(
        personal.iter().all(|r| !r.contains("bob_clicked") && !r.contains("nobody_clicked")),
        "{personal:?}"
    );
    assert_eq!(count(&rows, "anonymous_usage", "feature_usage"), 2);
}

/// A text argument over the limit is cut, not a record the spool cannot
/// take: the endpoint goes on storing.
#[test]
fn an_oversized_argument_is_cut_and_the_endpoint_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let sdk = builder(dir.path(), POLICY)
        .endpoint("a", connector(&svc, Arc::new(AtomicBool::new(false))))
        .build()
        .unwrap();
    sdk.feature_used("before");
    sdk.configuration("blob", &"é".repeat(9 << 20));
    sdk.feature_used("after");
    assert_eq!(sdk.stats().truncated, 1);
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("a"), Some(3));
    let rows = stored(&svc);
    let blob = rows.iter().find(|(_, k, _)| k == "configuration").unwrap().2.to_string();
    assert!(blob.len() < 2 * privtel_agent::sdk::MAX_TEXT_BYTES, "{}", blob.len());
}

/// "Never" as `Duration::MAX` is a wait, not a worker that dies.
#[test]
fn the_longest_waits_do_not_stop_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let sdk = builder(dir.path(), POLICY)
        .first_upload_after(Duration::MAX)
        .upload_every(Duration::MAX)
        .endpoint("a", connector(&svc, Arc::new(AtomicBool::new(false))))
        .build()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    sdk.feature_used("x");
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("a"), Some(1));
    sdk.feature_used("y");
    assert_eq!(sdk.flush(FLUSH).unwrap().sent("a"), Some(1));
}

/// The spools keep the time to live: a record older than it is expired on
/// the device, never sent.
#[test]
fn what_outlives_its_time_to_live_on_the_device_is_never_sent() {
    use std::sync::atomic::AtomicI64;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let down = Arc::new(AtomicBool::new(true));
    let t = Arc::new(AtomicI64::new(now().unix_seconds()));
    let clock = t.clone();
    let sdk = builder(dir.path(), POLICY)
        .clock(move || Timestamp::from_unix_seconds(clock.load(Ordering::SeqCst)).unwrap())
        .endpoint("a", connector(&svc, down.clone()))
        .build()
        .unwrap();
    sdk.feature_used("old");
    assert_eq!(sdk.flush(FLUSH).unwrap().pending("a"), Some(1));
    t.fetch_add(31 * 86_400, Ordering::SeqCst);
    down.store(false, Ordering::SeqCst);
    let report = sdk.flush(FLUSH).unwrap();
    assert_eq!((report.sent("a"), report.pending("a")), (Some(0), Some(0)), "{report:?}");
    assert_eq!(svc.engine().record_count().unwrap(), 0);
}

/// A lying client: consent records naming another device, another
/// program, or dated before the time to live are refused, not stored as a
/// person's basis.
#[test]
fn the_service_refuses_forged_consent_records() {
    use privtel_model::{Consent, Record, RecordBody};
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let mut builder = privtel_filter::FilterBuilder::new();
    builder.policy(policy(POLICY));
    let consent = |device: &str, program: Program, at: &str| Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Consent(Consent {
            device: DeviceId::new(device).unwrap(),
            user: Some(UserId::new("u-bob").unwrap()),
            program,
            granted: true,
            source: ConsentSource::Administrator,
            at: at.parse().unwrap(),
        }),
    };
    let records = vec![
        consent("someone-elses-laptop", Program::PersonalisedUsage, "2026-11-27T09:00:00Z"),
        consent("dev-1", Program::Benchmarking, "2026-11-27T09:00:00Z"),
        consent("dev-1", Program::PersonalisedUsage, "2020-01-01T00:00:00Z"),
        consent("dev-1", Program::PersonalisedUsage, "2026-11-27T09:00:00Z"),
    ];
    let mut agent = privtel_agent::Agent::open(
        acme(),
        DeviceId::new("dev-1").unwrap(),
        builder.build(),
        dir.path().join("liar.spool.db"),
        Default::default(),
    )
    .unwrap();
    agent.collect(records, now()).unwrap();
    let mut conn = connector(&svc, Arc::new(AtomicBool::new(false))).connect().unwrap();
    let report = agent.upload(&mut conn, 1, now()).unwrap();
    assert_eq!(report.refused, 3, "{report:?}");
    let rows = stored(&svc);
    assert_eq!(count(&rows, "personalised_usage", "consent"), 1, "only the true one: {rows:?}");
}

/// Issue #16 point 6 through the SDK: an interaction is recorded only for a
/// web application and action the customer defines, and only for a person
/// who agreed to personalised usage; the rest is dropped before a record
/// exists and counted. The service stores the defined one, its duration as
/// a range.
#[test]
fn only_interactions_the_customer_defines_are_recorded() {
    let policy_text =
        format!("{POLICY}[interactions]\n\"crm.example.com\" = [\"create_ticket\", \"search\"]\n");
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "analytics", &policy_text);
    let sdk = builder(dir.path(), &policy_text)
        .endpoint("analytics", connector(&svc, Arc::new(AtomicBool::new(false))))
        .build()
        .unwrap();
    let alice = alice();
    // No person yet, then a person who has not agreed: nothing.
    sdk.interaction("crm.example.com", "search", 12, 2, Duration::from_secs(9));
    sdk.set_user(&alice).unwrap();
    sdk.interaction("crm.example.com", "search", 12, 2, Duration::from_secs(9));
    assert_eq!(sdk.stats().not_consented, 1);
    sdk.set_consent(&alice.id, Program::PersonalisedUsage, true, ConsentSource::Settings).unwrap();
    let before = sdk.stats().filtered_out;
    // Defined (a URL is read for its host): recorded.
    sdk.interaction(
        "https://CRM.example.com/tickets/new?customer=canaryq",
        "create_ticket",
        212,
        9,
        Duration::from_secs(48),
    );
    // Not defined: another application, another action, a case that differs.
    sdk.interaction("mail.example.com", "search", 1, 1, Duration::from_secs(1));
    sdk.interaction("crm.example.com", "export_all_canary", 1, 1, Duration::from_secs(1));
    sdk.interaction("crm.example.com", "Search", 1, 1, Duration::from_secs(1));
    sdk.interaction("not a host", "search", 1, 1, Duration::from_secs(1));
    assert_eq!(sdk.stats().filtered_out - before, 4);
    sdk.flush(FLUSH).unwrap();
    let rows = stored(&svc);
    let interactions: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r.1 == "interaction").map(|r| &r.2).collect();
    assert_eq!(interactions.len(), 1, "{interactions:?}");
    let i = &interactions[0]["body"]["event"]["body"]["interaction"];
    assert_eq!(i["application"], "crm.example.com");
    assert_eq!(i["action"], "create_ticket");
    assert_eq!((i["keys"].as_u64(), i["clicks"].as_u64()), (Some(212), Some(9)));
    assert!(i["duration"].get("generalised").is_some(), "a range, not 48 s: {i}");
    let all = serde_json::to_string(&rows.iter().map(|r| &r.2).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("export_all_canary"), "an undefined action is stored: {all}");
    assert!(!all.contains("canaryq") && !all.contains("tickets/new"), "no url is stored: {all}");
    sdk.shutdown(FLUSH).unwrap();
}

/// The licence rules: a policy switching off what the customer's licence
/// requires does not build.
#[test]
fn a_policy_that_breaks_its_licence_does_not_build() {
    use privtel_filter::{LicenceTerms, Offering};
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), "a", POLICY);
    let c = || connector(&svc, Arc::new(AtomicBool::new(false)));
    let no_support = "[programs]\nsupport_telemetry = false\n";
    let err = builder(dir.path(), no_support)
        .licence(LicenceTerms::new(Offering::OnPremises))
        .endpoint("a", c())
        .build()
        .unwrap_err();
    assert!(matches!(err, SdkError::Licence(_)), "{err}");
    assert!(err.to_string().contains("support_telemetry"), "{err}");
    let mut opt_out = LicenceTerms::new(Offering::OnPremises);
    opt_out.support_telemetry_opt_out = true;
    builder(dir.path(), no_support).licence(opt_out).endpoint("a", c()).build().unwrap();
    let no_benchmarks = "[programs]\nbenchmarking = false\n";
    let err = builder(dir.path(), no_benchmarks)
        .licence(LicenceTerms::new(Offering::Cloud))
        .endpoint("a", c())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("benchmarking"), "{err}");
    builder(dir.path(), no_benchmarks)
        .licence(LicenceTerms::new(Offering::OnPremises))
        .endpoint("a", c())
        .build()
        .unwrap();
}

/// A fake service on a pipe, counting connections in `conns`: its welcome
/// gives `mark(connection index)` as the high-water mark, and it answers
/// each batch with `ack(batch)`.
fn fake_service(
    conns: Arc<std::sync::atomic::AtomicU32>,
    mark: impl Fn(u32) -> u64 + Send + Sync + 'static,
    ack: impl Fn(&privtel_wire::Batch) -> privtel_wire::Ack + Send + Sync + 'static,
) -> Connector {
    use privtel_wire::{Message, Welcome};
    let (mark, ack) = (Arc::new(mark), Arc::new(ack));
    Connector::new(move || {
        let high_water = mark(conns.fetch_add(1, Ordering::SeqCst));
        let ack = Arc::clone(&ack);
        let (client, server) = pipe();
        std::thread::spawn(move || {
            let mut conn = Connection::new(server);
            if conn.server_handshake(|_, v| Welcome::new(v, high_water)).is_err() {
                return;
            }
            while let Ok(msg) = conn.recv() {
                if let Message::Batch(b) = msg
                    && conn.send(&Message::Ack(ack(&b))).is_err()
                {
                    return;
                }
            }
        });
        let stream: Box<dyn Stream> = Box::new(client);
        Ok(Connection::new(stream))
    })
}

/// A fake service that defers every batch with a rate limit and
/// `retry_after`.
fn deferring(conns: Arc<std::sync::atomic::AtomicU32>, retry_after: Duration) -> Connector {
    use privtel_wire::{Ack, RejectCode, Rejection};
    fake_service(
        conns,
        |_| 0,
        move |b| Ack {
            batch_id: b.batch_id,
            accepted_up_to: b.first_seq - 1,
            rejections: vec![Rejection {
                seq: b.first_seq,
                code: RejectCode::RATE_LIMITED,
                reason: "rate limited".into(),
                retryable: true,
            }],
            retry_after_ms: Some(retry_after.as_millis() as u64),
        },
    )
}

/// The protocol: a device waits at least a deferral's `retry_after` before
/// it comes back (the worker's backoff alone would be back within a second).
#[test]
fn the_worker_waits_what_a_deferral_asks_before_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sdk = builder(dir.path(), POLICY)
        .endpoint("a", deferring(Arc::clone(&conns), Duration::from_secs(60)))
        .first_upload_after(Duration::from_millis(50))
        .build()
        .unwrap();
    sdk.feature_used("export");
    std::thread::sleep(Duration::from_secs(3));
    let n = conns.load(Ordering::SeqCst);
    drop(sdk);
    assert_eq!(n, 1, "the worker connected {n} times within 3 s of a 60 s retry_after");
}

/// A deferral's wait is bounded by the retry policy's longest wait, as in
/// `Agent::deliver`: a service asking for an hour does not silence a device
/// whose policy says a few hundred milliseconds at most.
#[test]
fn a_deferral_waits_no_longer_than_the_retry_policys_longest_wait() {
    let dir = tempfile::tempdir().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut retry = privtel_agent::RetryBudget::forever();
    retry.max = Duration::from_millis(300);
    let sdk = builder(dir.path(), POLICY)
        .endpoint("a", deferring(Arc::clone(&conns), Duration::from_secs(3600)))
        .first_upload_after(Duration::from_millis(50))
        .retry(retry)
        .build()
        .unwrap();
    sdk.feature_used("export");
    std::thread::sleep(Duration::from_secs(2));
    let n = conns.load(Ordering::SeqCst);
    drop(sdk);
    assert!(n >= 3, "the worker connected {n} times within 2 s with waits of at most 300 ms");
}

/// A flush that meets a deferral answers with the typed deferral, and the
/// worker's next upload waits what it asked, however soon uploads are due.
#[test]
fn a_flush_that_meets_a_deferral_reports_it_and_the_worker_waits_it() {
    let dir = tempfile::tempdir().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sdk = builder(dir.path(), POLICY)
        .endpoint("a", deferring(Arc::clone(&conns), Duration::from_secs(60)))
        .upload_every(Duration::from_millis(100))
        .build()
        .unwrap();
    sdk.feature_used("export");
    let report = sdk.flush(FLUSH).unwrap();
    let error = report.endpoints[0].error.clone().unwrap();
    assert_eq!(error, "the service deferred a batch for at least 60000 ms: rate limited");
    assert_eq!(report.pending("a"), Some(1));
    std::thread::sleep(Duration::from_secs(1));
    let n = conns.load(Ordering::SeqCst);
    drop(sdk);
    assert_eq!(n, 1, "the worker connected {n} times within 1 s of a 60 s retry_after");
}

/// A service whose first welcome claims a mark above anything the spool
/// sent (as for a spool restored from an older copy), then stores every
/// batch whole: the worker moves to a new stream and sends under it at
/// once, not after a failure's backoff.
fn claiming_then_storing(conns: Arc<std::sync::atomic::AtomicU32>) -> Connector {
    fake_service(
        conns,
        |n| if n == 0 { 1_000_000 } else { 0 },
        |b| privtel_wire::Ack {
            batch_id: b.batch_id,
            accepted_up_to: b.first_seq + b.records.len() as u64 - 1,
            rejections: Vec::new(),
            retry_after_ms: None,
        },
    )
}

#[test]
fn a_move_to_a_new_stream_is_followed_at_once_by_the_upload_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sdk = builder(dir.path(), POLICY)
        .endpoint("a", claiming_then_storing(Arc::clone(&conns)))
        .upload_every(Duration::from_secs(3600))
        .build()
        .unwrap();
    sdk.feature_used("export");
    let report = sdk.flush(FLUSH).unwrap();
    assert_eq!(report.endpoints[0].error, None);
    assert_eq!(report.pending("a"), Some(0), "sent under the new stream in the same flush");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

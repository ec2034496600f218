//! Hostile review B: the agent against stale state and a large spool.

use std::path::Path;
use std::sync::Arc;

use privtel_agent::{Agent, AgentError, RetryBudget};
use privtel_filter::{FilterBuilder, Policy, PseudonymKey};
use privtel_model::{CustomerId, DeviceId, EventBody, KeyId, Personal, Record, RecordBody, Timestamp};
use privtel_service::{CustomerSettings, Peer, Service, Settings};
use privtel_store::{EngineStore as _, SpoolOptions, SqliteEngine};
use privtel_testkit::{End, pipe};
use privtel_wire::{Connection, VerdictIndex};

fn rb_now() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

fn rb_policy() -> Policy {
    Policy::from_toml(
        "version = 3\n[programs]\nbenchmarking = true\nenrichment = true\npersonalised_usage = true\nlicence_authentication = true\nsupport_telemetry = true\nanonymous_usage = true\n",
    )
    .unwrap()
}

fn rb_agent(dir: &Path) -> Agent {
    let filter = FilterBuilder::new()
        .policy(rb_policy())
        .customer(CustomerId::new("acme").unwrap())
        .key(PseudonymKey::new(KeyId::new(1), [9; 32]))
        .build();
    Agent::open(
        CustomerId::new("acme").unwrap(),
        DeviceId::new("dev-1").unwrap(),
        filter,
        dir.join("spool.db"),
        SpoolOptions::default(),
    )
    .unwrap()
}

fn rb_service(dir: &Path) -> Arc<Service> {
    let engine = SqliteEngine::open(dir.join("engine.db"), Default::default()).unwrap();
    let settings =
        Settings::with_customers([CustomerSettings::new(CustomerId::new("acme").unwrap(), rb_policy())]);
    Arc::new(Service::new(engine, VerdictIndex::new(4, [1; 32]), rb_now).with_settings(settings))
}

fn rb_connector(service: &Arc<Service>) -> impl FnMut() -> Result<Connection<End>, AgentError> + use<> {
    let service = Arc::clone(service);
    move || {
        let (client, server) = pipe();
        let service = Arc::clone(&service);
        let peer = Peer::device(CustomerId::new("acme").unwrap(), DeviceId::new("dev-1").unwrap());
        std::thread::spawn(move || service.handle(Connection::new(server), peer));
        Ok(Connection::new(client))
    }
}

/// Feature-usage events with event ids `ids` (distinct events).
fn rb_events(ids: std::ops::Range<u64>) -> Vec<Record> {
    ids.map(|i| {
        let mut r = privtel_testkit::fixtures::records("t")
            .into_iter()
            .find(|r| r.body.kind_name() == "feature_usage")
            .unwrap();
        if let RecordBody::Event(e) = &mut r.body {
            e.recorded_at = rb_now();
            e.id = privtel_model::EventId::from_u128(u128::from(i));
        }
        r
    })
    .collect()
}

fn rb_deliver(agent: &mut Agent, service: &Arc<Service>) -> privtel_agent::UploadReport {
    let mut d = agent.deliver(rb_connector(service), 3, &RetryBudget::attempts(1), |_| {}, rb_now).unwrap();
    agent.goodbye(&mut d.conn, rb_now()).unwrap();
    d.report
}

#[test]
fn rb_a_spool_restored_from_an_older_copy_loses_new_records_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let service = rb_service(dir.path());
    let spool = dir.path().join("spool.db");
    let backup = dir.path().join("spool.db.backup");

    // Ten events recorded (seq 1..=10); a copy of the spool is taken (a VM
    // snapshot, a disk image, a backup) with the agent stopped.
    let mut agent = rb_agent(dir.path());
    assert_eq!(agent.collect(rb_events(1..11), rb_now()).unwrap().records, 10);
    drop(agent);
    std::fs::copy(&spool, &backup).unwrap();

    // Twenty more (seq 11..=30); all thirty delivered: the stream's mark is 30.
    let mut agent = rb_agent(dir.path());
    agent.collect(rb_events(11..31), rb_now()).unwrap();
    assert_eq!(rb_deliver(&mut agent, &service).sent_total(), 30);
    assert_eq!(service.engine().record_count().unwrap(), 30);
    drop(agent);

    // The machine is rolled back to the copy; then twenty NEW events happen.
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(spool.with_extension(ext));
    }
    std::fs::copy(&backup, &spool).unwrap();
    let mut agent = rb_agent(dir.path());
    agent.collect(rb_events(1_000..1_020), rb_now()).unwrap();
    let report = rb_deliver(&mut agent, &service);
    assert!(agent.outbox().is_empty().unwrap(), "the agent deleted everything as acknowledged");
    // The agent reports them sent; the service must hold the 20 new events.
    assert_eq!(
        service.engine().record_count().unwrap(),
        50,
        "agent reported {} sent; the new events were numbered 11..=30 again and dropped as duplicates",
        report.sent_total()
    );
}

/// A crash report whose message is `len` bytes (the SDK cuts at 64 KiB).
fn rb_crash(i: usize, len: usize) -> Record {
    let mut r = privtel_testkit::fixtures::records("crash")
        .into_iter()
        .find(|r| r.body.kind_name() == "crash_report")
        .unwrap();
    if let RecordBody::Event(e) = &mut r.body {
        e.id = privtel_model::EventId::from_u128(10_000 + i as u128);
        e.recorded_at = rb_now();
        if let EventBody::CrashReport(c) = &mut e.body {
            let mut text = format!("panic {i} at frame ");
            while text.len() < len {
                text.push_str("abcdefghij ");
            }
            text.truncate(len);
            c.message = Personal::Clear(text);
        }
    }
    r
}

#[test]
fn rb_a_batch_of_large_records_above_the_frame_limit_wedges_the_spool_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let service = rb_service(dir.path());
    let mut agent = rb_agent(dir.path());
    // 300 crash reports of 60 KiB (under the SDK's 64 KiB cut, far under the
    // spool's 16 MiB per record): one run of 300 records, about 18 MiB.
    let kept = agent.collect((0..300).map(|i| rb_crash(i, 60 << 10)).collect(), rb_now()).unwrap().records;
    assert_eq!(kept, 300);
    let result = agent.deliver(rb_connector(&service), 3, &RetryBudget::attempts(3), |_| {}, rb_now);
    let err = result.err().map(|e| e.to_string());
    assert_eq!(
        service.engine().record_count().unwrap(),
        300,
        "nothing was ever delivered: {err:?}; waiting {}",
        agent.outbox().len(None).unwrap()
    );
}

#[test]
fn rb_records_of_a_program_the_current_policy_switches_off_are_still_sent_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    // Collected while every program was on.
    let mut agent = rb_agent(dir.path());
    let kept = agent.collect(privtel_testkit::fixtures::records("SECRETCANARY"), rb_now()).unwrap().records;
    assert!(kept > 0);
    drop(agent);
    // The customer switches personalised usage (and everything but
    // anonymous usage) off; the agent restarts with the new policy.
    let strict = Policy::from_toml("version = 4\n[programs]\nanonymous_usage = true\n").unwrap();
    let filter = FilterBuilder::new()
        .policy(strict.clone())
        .customer(CustomerId::new("acme").unwrap())
        .key(PseudonymKey::new(KeyId::new(1), [9; 32]))
        .build();
    assert!(!filter.enabled(privtel_model::Program::PersonalisedUsage));
    let audit = dir.path().join("audit.jsonl");
    let mut agent = Agent::open(
        CustomerId::new("acme").unwrap(),
        DeviceId::new("dev-1").unwrap(),
        filter,
        dir.path().join("spool.db"),
        SpoolOptions::default(),
    )
    .unwrap()
    .with_audit_log(privtel_agent::AuditLog::open(&audit, privtel_agent::AuditOptions::default()).unwrap());
    let engine = SqliteEngine::open(dir.path().join("engine.db"), Default::default()).unwrap();
    let settings =
        Settings::with_customers([CustomerSettings::new(CustomerId::new("acme").unwrap(), strict)]);
    let service =
        Arc::new(Service::new(engine, VerdictIndex::new(4, [1; 32]), rb_now).with_settings(settings));
    let report = rb_deliver(&mut agent, &service);
    let text = std::fs::read_to_string(&audit).unwrap();
    // Sent (and written to the audit log) after the policy switched the
    // program off: the person's id, binaries' paths and so on.
    let leaked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"batch\"") && l.contains("\"program\":\"personalised_usage\""))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} batches of a program the current policy switches off were sent and audited (service refused {}): {}",
        leaked.len(),
        report.refused,
        &leaked[0][..leaked[0].len().min(300)]
    );
}

#[test]
fn rb_a_lying_service_deletes_nothing_unsent_and_is_not_spun_on() {
    use privtel_wire::{Ack, Message, RejectCode, Rejection, Welcome};
    let dir = tempfile::tempdir().unwrap();
    let mut agent = rb_agent(dir.path());
    agent.collect(rb_events(1..21), rb_now()).unwrap();
    let connect = || -> Result<Connection<End>, AgentError> {
        let (client, server) = pipe();
        std::thread::spawn(move || {
            let mut conn = Connection::new(server);
            let _ = conn.server_handshake(|_, v| {
                let mut w = Welcome::new(v, 0);
                w.max_batch_records = 0;
                w
            });
            while let Ok(Message::Batch(b)) = conn.recv() {
                let ack = Ack {
                    batch_id: b.batch_id,
                    accepted_up_to: b.first_seq - 1,
                    rejections: vec![
                        Rejection { seq: 0, code: RejectCode(999), reason: "x".into(), retryable: false },
                        Rejection {
                            seq: u64::MAX,
                            code: RejectCode::KIND,
                            reason: "y".into(),
                            retryable: false,
                        },
                    ],
                    retry_after_ms: Some(u64::MAX),
                };
                let _ = conn.send(&Message::Ack(ack));
            }
        });
        Ok(Connection::new(client))
    };
    let mut waits = Vec::new();
    let err = agent.deliver(connect, 3, &RetryBudget::attempts(4), |d| waits.push(d), rb_now).unwrap_err();
    assert!(matches!(err, AgentError::GaveUp { .. }), "{err}");
    assert_eq!(agent.outbox().len(None).unwrap(), 20, "nothing deleted");
    assert!(waits.iter().all(|w| *w <= std::time::Duration::from_secs(300)), "{waits:?}");
}

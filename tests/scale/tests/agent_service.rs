//! The agent library against the service in one process (an in-memory
//! pipe), with the service publishing to NATS JetStream and writers
//! applying into the embedded engine or PostgreSQL: the seams of the
//! scale-out path as a device meets them.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privtel_access::{AccessControl, AccessOptions, Action, GrantRequest, Operator, Scope, SigningKey};
use privtel_agent::{Agent, AgentError, RetryBudget, WebLog};
use privtel_filter::{FilterBuilder, Policy, PseudonymKey};
use privtel_model::{CustomerId, DeviceId, KeyId, Timestamp, UserId};
use privtel_scale_tests::{OwnNats, StreamGuard, TestDb, nats_url, stream_options, wait_until, walk};
use privtel_service::jetstream::{JetStreamOptions, Publisher, Rows, StreamWriter};
use privtel_service::{AdminError, CustomerSettings, Peer, Service, Settings, SharedRecords};
use privtel_store::{AtRestKey, EngineStore, ErasureRequest, SpoolOptions, SqliteEngine};
use privtel_testkit::{End, pipe};
use privtel_wire::{Connection, VerdictIndex};

fn now() -> Timestamp {
    Timestamp::now()
}

fn policy() -> Policy {
    Policy::from_toml(
        "version = 3\n[programs]\nenrichment = true\npersonalised_usage = true\n[fields]\n\"web_request.host\" = \"generalise\"\n\"web_request.url\" = \"generalise\"\n\"user.username\" = \"clear\"\n",
    )
    .unwrap()
}

fn agent(dir: &Path) -> Agent {
    let filter = FilterBuilder::new()
        .policy(policy())
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

fn service(dir: &Path, publisher: Arc<Publisher>) -> Service {
    let engine = SqliteEngine::open(dir.join("engine.db"), Default::default()).unwrap();
    let settings =
        Settings::with_customers([CustomerSettings::new(CustomerId::new("acme").unwrap(), policy())]);
    Service::new(engine, VerdictIndex::new(4, [1; 32]), now)
        .with_settings(settings)
        .with_max_batch_records(300)
        .with_jetstream(publisher)
}

/// Opens an engine of its own on `db` for each export.
fn pg_reader(
    db: &TestDb,
) -> impl Fn() -> privtel_store::Result<Box<dyn EngineStore + Send>> + Send + Sync + 'static {
    let url = db.url.clone();
    move || {
        let engine = privtel_engine_pg::PgEngine::connect(&url, privtel_engine_pg::PgOptions::default())
            .map_err(|e| privtel_store::Error::Database { op: "opening a reader", message: e.to_string() })?;
        Ok(Box::new(engine) as Box<dyn EngineStore + Send>)
    }
}

fn connector(service: &Arc<Service>) -> impl FnMut() -> Result<Connection<End>, AgentError> + use<> {
    let service = Arc::clone(service);
    move || {
        let (client, server) = pipe();
        let service = Arc::clone(&service);
        let peer = Peer::device(CustomerId::new("acme").unwrap(), DeviceId::new("dev-1").unwrap());
        std::thread::spawn(move || service.handle(Connection::new(server), peer));
        Ok(Connection::new(client))
    }
}

fn write_log(path: &Path, lines: std::ops::Range<usize>, tag: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for i in lines {
        writeln!(
            f,
            "2026-11-27T09:{:02}:{:02}Z\tu-{}-{tag}\thttps://site{}.example/p?i={i}\t203.0.113.{}\t{}",
            i / 60 % 60,
            i % 60,
            i % 7,
            i % 13,
            i % 250,
            i % 900
        )
        .unwrap();
    }
}

fn deliver(agent: &mut Agent, service: &Arc<Service>, attempts: u32) -> Result<u64, AgentError> {
    let mut d = agent.deliver(connector(service), 3, &RetryBudget::attempts(attempts), |_| {}, now)?;
    agent.goodbye(&mut d.conn, now())?;
    Ok(d.report.sent_total())
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn an_agent_is_acknowledged_at_publish_and_a_writer_stores_everything_once_in_the_embedded_engine() {
    let dir = tempfile::tempdir().unwrap();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let publisher = Arc::new(Publisher::connect(options.clone()).unwrap());
    let service = Arc::new(service(dir.path(), Arc::clone(&publisher)));
    let log = dir.path().join("web.log");
    write_log(&log, 0..2000, "a");
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    // No writer runs: the agent is acknowledged once JetStream holds the
    // batches, and its spool is empty.
    assert_eq!(deliver(&mut agent, &service, 1).unwrap(), 2000);
    assert!(agent.outbox().is_empty().unwrap());
    assert_eq!(service.engine().record_count().unwrap(), 0);
    assert_eq!(publisher.lag().unwrap(), 7, "2000 records in batches of 300");
    assert_eq!(service.stats().published.load(std::sync::atomic::Ordering::Relaxed), 2000);
    // A writer into the service's own engine.
    let mut writer = StreamWriter::connect(options, service.shared_engine()).unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        writer.step(Duration::from_millis(100)).unwrap();
        writer.lag().unwrap() == 0
    }));
    assert_eq!(service.engine().record_count().unwrap(), 2000);
    // The next session's welcome reads the mark the writer moved: nothing
    // is sent again.
    write_log(&log, 2000..2100, "a");
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(deliver(&mut agent, &service, 1).unwrap(), 100);
    writer.step(Duration::from_millis(500)).unwrap();
    assert_eq!(service.engine().record_count().unwrap(), 2100);
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn writers_that_lag_make_the_service_defer_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let options = stream_options(&nats_url()).max_lag(2);
    let _guard = StreamGuard { options: options.clone() };
    let publisher = Arc::new(Publisher::connect(options.clone()).unwrap());
    // Welcomes read the marks from PostgreSQL, where the writer stores.
    let reader = Arc::new(Mutex::new(db.engine()));
    let marks = Arc::clone(&reader);
    let service = Arc::new(
        service(dir.path(), Arc::clone(&publisher))
            .with_high_water(move |c, d, s| marks.lock().unwrap().high_water(c, d, s).ok()),
    );
    let log = dir.path().join("web.log");
    write_log(&log, 0..1500, "l");
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    // Three batches are taken, then the lag refuses the rest.
    let err = deliver(&mut agent, &service, 1).unwrap_err();
    assert!(matches!(err, AgentError::GaveUp { .. }), "{err}");
    assert!(err.to_string().contains("the service is busy"), "{err}");
    let spooled = agent.outbox().len(None).unwrap();
    assert_eq!(spooled, 600, "three batches of 300 taken");
    assert!(publisher.snapshot().refused_lagging >= 1);
    // A writer catches up; the agent delivers the rest.
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    let drain = |writer: &mut StreamWriter<Rows<privtel_engine_pg::PgEngine>>| {
        assert!(wait_until(Duration::from_secs(30), || {
            writer.step(Duration::from_millis(100)).unwrap();
            writer.lag().unwrap() == 0
        }));
    };
    drain(&mut writer);
    std::thread::sleep(Duration::from_millis(250)); // the front-end reads the lag anew
    let mut sent = 0;
    for _ in 0..10 {
        match deliver(&mut agent, &service, 1) {
            Ok(n) => {
                sent += n;
                break;
            }
            Err(AgentError::GaveUp { .. }) => {
                drain(&mut writer);
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("{e}"),
        }
        sent = 1500 - agent.outbox().len(None).unwrap();
    }
    assert!(agent.outbox().is_empty().unwrap(), "{sent}");
    drain(&mut writer);
    assert_eq!(db.rows(), (1500, 1500), "every record once");
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn sealed_messages_leave_no_readable_record_in_the_stream_s_files() {
    let _ = nats_url(); // a NATS installation: this test runs a server of its own
    let scan = |key: Option<AtRestKey>, tag: &str| -> bool {
        let dir = tempfile::tempdir().unwrap();
        let nats = OwnNats::start();
        let mut options = JetStreamOptions::new(nats.url());
        options.key = key;
        let publisher = Arc::new(Publisher::connect(options).unwrap());
        let service = Arc::new(service(dir.path(), Arc::clone(&publisher)));
        let log = dir.path().join("web.log");
        write_log(&log, 0..50, tag);
        let mut agent = agent(dir.path());
        agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
        assert_eq!(deliver(&mut agent, &service, 1).unwrap(), 50);
        drop((service, publisher));
        let canary = format!("-{tag}");
        walk(nats.dir.path()).iter().any(|f| {
            std::fs::read(f).unwrap_or_default().windows(canary.len()).any(|w| w == canary.as_bytes())
        })
    };
    assert!(scan(None, "CANARYPLAIN7"), "the scan finds a clear username in plain messages");
    assert!(
        !scan(Some(AtRestKey::new(1, [4; 32])), "CANARYSEALED7"),
        "a sealed message left a username readable"
    );
}

/// A connection of acme's dev-1 served by `service`, past its hello on
/// stream 7; the welcome's mark.
fn hello_on_stream_7(service: &Arc<Service>) -> (Connection<End>, u64) {
    let (client, server) = pipe();
    let s = Arc::clone(service);
    std::thread::spawn(move || {
        s.handle(
            Connection::new(server),
            Peer::device(CustomerId::new("acme").unwrap(), DeviceId::new("dev-1").unwrap()),
        )
    });
    let mut conn = Connection::new(client);
    let consent = privtel_model::Program::ALL.iter().map(|p| (*p, true)).collect();
    let hello = privtel_wire::Hello::new(
        "test",
        CustomerId::new("acme").unwrap(),
        DeviceId::new("dev-1").unwrap(),
        consent,
        1,
    )
    .with_stream(7);
    let mark = conn.client_handshake(&hello).unwrap().high_water;
    (conn, mark)
}

/// Sends an empty batch at `first_seq` declaring `skipped`; its ack.
fn send_empty(conn: &mut Connection<End>, first_seq: u64, skipped: u64) -> privtel_wire::Ack {
    let batch = privtel_wire::Batch {
        program: privtel_model::Program::AnonymousUsage,
        batch_id: privtel_model::BatchId::from_u128(u128::from(first_seq)),
        first_seq,
        records: Vec::new(),
        skipped,
        policy_hash: [0; 32],
    };
    conn.send(&privtel_wire::Message::Batch(batch)).unwrap();
    match conn.recv().unwrap() {
        privtel_wire::Message::Ack(ack) => ack,
        other => panic!("expected an ack, got {}", other.kind_name()),
    }
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_skip_declared_against_a_mark_that_could_not_be_read_is_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let publisher = Arc::new(Publisher::connect(options).unwrap());
    // The engine the marks come from cannot be read.
    let service = Arc::new(service(dir.path(), Arc::clone(&publisher)).with_high_water(|_, _, _| None));
    let (mut conn, mark) = hello_on_stream_7(&service);
    assert_eq!(mark, 0);
    let send = send_empty;
    let ack = send(&mut conn, 6, 5);
    assert_eq!(ack.accepted_up_to, 5, "nothing accepted");
    assert!(
        ack.rejections[0].retryable && ack.rejections[0].reason.contains("could not read"),
        "{:?}",
        ack.rejections
    );
    assert_eq!(publisher.lag().unwrap(), 0, "nothing published");
    // Without a skip the batch is safe to take.
    let ack = send(&mut conn, 1, 0);
    assert!(ack.rejections.is_empty() && ack.retry_after_ms.is_none(), "{ack:?}");
    assert_eq!(publisher.lag().unwrap(), 1);
}

/// A batch that leaves a gap after what the service holds is refused at
/// the front-end, as the engine refuses it: acknowledged and published, it
/// would be terminated by the writer, with the agent told it is held.
#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn a_batch_claiming_a_gap_is_refused_at_the_front_end_not_acknowledged_then_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let publisher = Arc::new(Publisher::connect(options).unwrap());
    let service = Arc::new(service(dir.path(), Arc::clone(&publisher)));
    let (mut conn, mark) = hello_on_stream_7(&service);
    assert_eq!(mark, 0);
    let send = send_empty;
    // Numbers 1 to 4 neither held nor declared skipped.
    let ack = send(&mut conn, 5, 0);
    assert_eq!(ack.accepted_up_to, 4, "nothing of the batch accepted");
    assert!(
        ack.rejections.len() == 1
            && ack.rejections[0].code == privtel_wire::RejectCode::SEQUENCE
            && !ack.rejections[0].retryable,
        "{ack:?}"
    );
    assert_eq!(publisher.lag().unwrap(), 0, "nothing published");
    // Again on the same connection: a refusal moves nothing.
    assert_eq!(send(&mut conn, 5, 0).rejections[0].code, privtel_wire::RejectCode::SEQUENCE);
    assert_eq!(publisher.lag().unwrap(), 0);
    // The same numbers declared skipped, and a batch that follows what is
    // held: both taken.
    let ack = send(&mut conn, 5, 4);
    assert!(ack.rejections.is_empty(), "{ack:?}");
    let ack = send(&mut conn, 1, 0);
    assert!(ack.rejections.is_empty(), "{ack:?}");
    assert_eq!(publisher.lag().unwrap(), 2);
}

/// With the records in PostgreSQL, the service's sweeps, exports and
/// erasures act there. Before, they acted on its own store, which the
/// writers never fill: records outlived their TTL and an erased person's
/// stayed, exportable.
#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn sweeps_exports_and_erasures_act_where_the_writers_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let publisher = Arc::new(Publisher::connect(options.clone()).unwrap());
    let records: SharedRecords = Arc::new(Mutex::new(db.engine()));
    let marks = Arc::clone(&records);
    let service = Arc::new(
        service(dir.path(), Arc::clone(&publisher))
            .with_high_water(move |c, d, s| marks.lock().unwrap().high_water(c, d, s).ok())
            .with_records_engine(records, pg_reader(&db)),
    );
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    let mut drain = || {
        assert!(wait_until(Duration::from_secs(30), || {
            writer.step(Duration::from_millis(100)).unwrap();
            writer.lag().unwrap() == 0
        }))
    };
    let log = dir.path().join("web.log");
    // Seven people, 100 requests each (dated 2026-11-27).
    write_log(&log, 0..700, "sea");
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(deliver(&mut agent, &service, 1).unwrap(), 700);
    drain();
    assert_eq!(db.rows().0, 700);
    assert_eq!(service.engine().record_count().unwrap(), 0, "nothing in the service's own store");
    let acme = CustomerId::new("acme").unwrap();
    let person = UserId::new("u-3-sea").unwrap();

    // The right of access finds the person's records where they are.
    let mut out = Vec::new();
    assert_eq!(service.export_person(&acme, &person, &mut out).unwrap(), 100);
    assert!(out.windows(7).any(|w| w == b"u-3-sea"));

    // Erasure removes them there, and the writers suppress what comes later.
    let receipt = service.erase_person(&acme, &ErasureRequest::new("r-1", person.clone(), now())).unwrap();
    assert_eq!(receipt.records_removed, 100);
    assert_eq!(db.rows().0, 600);
    assert_eq!(service.export_person(&acme, &person, &mut Vec::new()).unwrap(), 0);
    write_log(&log, 700..770, "sea");
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(deliver(&mut agent, &service, 1).unwrap(), 70);
    drain();
    assert_eq!(db.rows().0, 660, "the erased person's 10 later records suppressed, the rest stored");
    assert_eq!(service.export_person(&acme, &person, &mut Vec::new()).unwrap(), 0);

    // The sweep applies acme's 30-day TTL there: 27 days from now every
    // record (of 2026-11-27) is past it; the device was seen now, so it
    // stays.
    let later = now().checked_add(privtel_model::Duration::days(27)).unwrap();
    let reports = service.sweep(later).unwrap();
    let (customer, report) = &reports[0];
    assert_eq!((customer, report.events, reports.len()), (&acme, 660, 1));
    assert_eq!(db.rows().0, 0);
}

/// The audited paths (an operator under a grant) act where the records
/// are too: export, erasure, contract end; the support read, which has no
/// counterpart there, is refused with a typed error.
#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn operators_export_erase_and_end_contracts_where_the_writers_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let options = stream_options(&nats_url());
    let _guard = StreamGuard { options: options.clone() };
    let publisher = Arc::new(Publisher::connect(options.clone()).unwrap());
    let (key, _) = SigningKey::generate().unwrap();
    let access =
        Arc::new(AccessControl::open(&dir.path().join("access.log"), key, AccessOptions::default()).unwrap());
    let records: SharedRecords = Arc::new(Mutex::new(db.engine()));
    let service = Arc::new(
        service(dir.path(), Arc::clone(&publisher))
            .with_records_engine(Arc::clone(&records), pg_reader(&db))
            .with_access(Arc::clone(&access)),
    );
    let mut writer = StreamWriter::connect(options, Rows(db.engine())).unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..700, "ops");
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(deliver(&mut agent, &service, 1).unwrap(), 700);
    assert!(wait_until(Duration::from_secs(30), || {
        writer.step(Duration::from_millis(100)).unwrap();
        writer.lag().unwrap() == 0
    }));
    assert_eq!(db.rows().0, 700);
    let acme = CustomerId::new("acme").unwrap();
    let jdoe = Operator::new("ops.jdoe").unwrap();
    let grant = access
        .grant(
            GrantRequest {
                operator: jdoe.clone(),
                customer: acme.clone(),
                justification: "the customer asked for it".into(),
                ticket: "OPS-1".into(),
                scope: Scope::of(&[
                    Action::ExportPerson,
                    Action::ErasePerson,
                    Action::ReadRecords,
                    Action::DeleteCustomer,
                ]),
                starts: now(),
                expires: now().checked_add(privtel_model::Duration::hours(1)).unwrap(),
            },
            now(),
        )
        .unwrap()
        .id;
    let person = UserId::new("u-5-ops").unwrap();
    let mut out = Vec::new();
    assert_eq!(service.export_person_as(&jdoe, grant, &acme, &person, &mut out).unwrap(), 100);
    let request = ErasureRequest::new("r-9", person.clone(), now());
    assert_eq!(service.erase_person_as(&jdoe, grant, &acme, &request).unwrap().records_removed, 100);
    assert_eq!(db.rows().0, 600);
    let err = service.read_records_as(&jdoe, grant, &acme, 0, 10, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, AdminError::NotAvailable { .. }), "{err}");
    assert!(err.to_string().starts_with("a support read is not available here"), "{err}");
    // Contract end: PostgreSQL's rows and keys go, its receipt first.
    let signed = service.delete_customer_as(&jdoe, grant, &acme).unwrap();
    assert_eq!(db.rows().0, 0);
    assert_eq!(records.lock().unwrap().record_count_of(&acme).unwrap(), 0);
    assert!(signed.receipt.contains("service store: engine"), "{}", signed.receipt);
    let receipt: serde_json::Value = serde_json::from_str(&signed.receipt).unwrap();
    assert_eq!(receipt["engine"]["removed"]["records"], 600, "{}", signed.receipt);
}

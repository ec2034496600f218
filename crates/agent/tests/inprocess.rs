//! The agent against the real service, in one process, over an in-memory
//! duplex connection (no sockets): the seams between collection, the
//! outbox, the wire and the engine, under refusals, lost connections,
//! restarts, rotation and bad input.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privtel_agent::{Agent, AgentError, AuditLog, AuditOptions, RetryBudget, WebLog};
use privtel_filter::{FilterBuilder, Policy, PseudonymKey};
use privtel_model::{
    CustomerId, DeviceId, EventBody, KeyId, Personal, Program, Record, RecordBody, Timestamp,
};
use privtel_service::Service;
use privtel_service::{CustomerSettings, Peer, Settings};
use privtel_store::{EngineStore, SpoolOptions, SqliteEngine};
use privtel_testkit::{End, pipe};
use privtel_wire::{Connection, VerdictIndex};

/// The device the in-memory transport vouches for (TLS with a client
/// certificate does this in production).
fn acme_device() -> Peer {
    Peer::device(CustomerId::new("acme").unwrap(), DeviceId::new("dev-1").unwrap())
}

fn now() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

fn policy() -> Policy {
    Policy::from_toml(
        "version = 3\n[programs]\nenrichment = true\npersonalised_usage = true\n[fields]\n\"web_request.host\" = \"generalise\"\n\"web_request.url\" = \"generalise\"\n",
    )
    .unwrap()
}

fn agent(dir: &Path) -> Agent {
    agent_under(dir, policy())
}

/// An agent on `dir`'s spool under `policy`.
fn agent_under(dir: &Path, policy: Policy) -> Agent {
    let filter = FilterBuilder::new()
        .policy(policy)
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

fn service(dir: &Path) -> Service {
    service_under(dir, policy())
}

/// A service on `dir`'s engine whose customer has `policy`.
fn service_under(dir: &Path, policy: Policy) -> Service {
    let engine = SqliteEngine::open(dir.join("engine.db"), Default::default()).unwrap();
    let settings =
        Settings::with_customers([CustomerSettings::new(CustomerId::new("acme").unwrap(), policy)]);
    Service::new(engine, VerdictIndex::new(4, [1; 32]), now).with_settings(settings)
}

/// A connector: each call opens a pipe and serves its far end with
/// `service` on a thread.
fn connector(service: &Arc<Service>) -> impl FnMut() -> Result<Connection<End>, AgentError> + use<> {
    connector_for(service, acme_device())
}

/// A connector for the device `peer`.
fn connector_for(
    service: &Arc<Service>,
    peer: Peer,
) -> impl FnMut() -> Result<Connection<End>, AgentError> + use<> {
    let service = Arc::clone(service);
    move || {
        let (client, server) = pipe();
        let (service, peer) = (Arc::clone(&service), peer.clone());
        std::thread::spawn(move || service.handle(Connection::new(server), peer));
        Ok(Connection::new(client))
    }
}

/// The bytes of the service's first welcome to this device.
fn welcome_len() -> usize {
    let mut welcome = privtel_wire::Welcome::new(2, 0);
    welcome.max_batch_records = 100;
    let mut out = Connection::new(Vec::new());
    out.send(&privtel_wire::Message::Welcome(welcome)).unwrap();
    out.into_inner().len()
}

fn line(i: usize) -> String {
    format!(
        "2026-11-27T09:{:02}:{:02}Z\tu-{}\thttps://site{}.example/p?i={i}\t203.0.113.{}\t{}\n",
        i / 60 % 60,
        i % 60,
        i % 7,
        i % 13,
        i % 250,
        i % 900
    )
}

fn write_log(path: &Path, lines: std::ops::Range<usize>) {
    let text: String = lines.map(line).collect();
    append(path, text.as_bytes());
}

/// Appends raw bytes to a file, as a writer would.
fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
}

fn events(service: &Service) -> u64 {
    service.engine().record_count().unwrap()
}

/// Feature-usage events (anonymous usage) with the event ids `ids`.
fn feature_events(ids: std::ops::Range<u64>) -> Vec<Record> {
    let template = privtel_testkit::fixtures::records("t")
        .into_iter()
        .find(|r| r.body.kind_name() == "feature_usage")
        .unwrap();
    ids.map(|i| {
        let mut r = template.clone();
        if let RecordBody::Event(e) = &mut r.body {
            e.recorded_at = now();
            e.id = privtel_model::EventId::from_u128(u128::from(i));
        }
        r
    })
    .collect()
}

/// A crash report (support telemetry) whose message is `len` bytes.
fn crash_report(i: u64, len: usize) -> Record {
    let mut r = privtel_testkit::fixtures::records("crash")
        .into_iter()
        .find(|r| r.body.kind_name() == "crash_report")
        .unwrap();
    if let RecordBody::Event(e) = &mut r.body {
        e.id = privtel_model::EventId::from_u128(1_000_000 + u128::from(i));
        e.recorded_at = now();
        if let EventBody::CrashReport(c) = &mut e.body {
            let mut text = format!("panic {i} at frame ");
            text.extend(std::iter::repeat_n('x', len.saturating_sub(text.len())));
            text.truncate(len);
            c.message = Personal::Clear(text);
        }
    }
    r
}

/// Delivers with a sleep that only records what it was asked to wait.
fn deliver(
    agent: &mut Agent,
    service: &Arc<Service>,
    budget: RetryBudget,
) -> (Result<privtel_agent::UploadReport, AgentError>, Vec<Duration>) {
    let mut waits = Vec::new();
    let result = agent.deliver(connector(service), 3, &budget, |d| waits.push(d), now).and_then(|mut d| {
        agent.goodbye(&mut d.conn, now())?;
        Ok(d.report)
    });
    (result, waits)
}

#[test]
fn full_cycle_collect_filter_spool_upload_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..500);
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    let (report, collected) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!((report.lines, report.records, report.skipped), (500, 500, 0));
    assert_eq!(collected.domains.len(), 13, "one registrable domain per site");
    let (sent, waits) = deliver(&mut agent, &service, RetryBudget::attempts(1));
    let sent = sent.unwrap();
    assert!(waits.is_empty());
    assert_eq!(sent.sent_total(), 500);
    assert_eq!(events(&service), 500);
    assert!(agent.outbox().is_empty().unwrap());
}

#[test]
fn a_refusal_is_honoured_with_retry_after_and_sent_counts_only_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..300);
    let refusals = Arc::new(AtomicU32::new(2));
    let gate = Arc::clone(&refusals);
    let service = Arc::new(service(dir.path()).with_max_batch_records(100).with_gate(move || {
        // Refuses the first batch of the first two connections.
        (gate.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok())
            .then(|| "the store is locked".to_owned())
    }));
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    let (sent, waits) = deliver(&mut agent, &service, RetryBudget::attempts(5));
    let sent = sent.unwrap();
    assert_eq!(waits.len(), 2, "one wait per refusal");
    assert!(waits.iter().all(|w| *w >= Duration::from_millis(privtel_service::RETRY_AFTER_MS)), "{waits:?}");
    assert_eq!(sent.sent_total(), 300);
    assert_eq!(sent.batches, 3);
    assert_eq!(events(&service), 300);
    assert_eq!(service.stats().refused.load(Ordering::Relaxed), 2);
}

#[test]
fn a_store_that_stays_full_ends_a_bounded_delivery_with_everything_still_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..50);
    let service = Arc::new(service(dir.path()).with_gate(|| Some("the store is full".to_owned())));
    let mut agent = agent(dir.path());
    let audit = dir.path().join("audit.jsonl");
    agent = agent.with_audit_log(AuditLog::open(&audit, AuditOptions::default()).unwrap());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    let (result, waits) = deliver(&mut agent, &service, RetryBudget::attempts(3));
    let err = result.unwrap_err();
    assert!(matches!(err, AgentError::GaveUp { attempts: 3, waiting: 50, .. }), "{err}");
    assert!(err.to_string().contains("the store is full"), "{err}");
    assert_eq!(waits.len(), 2, "no wait after the last attempt");
    // Exponential: the second wait's floor is the first's ceiling.
    assert!(waits[1] >= Duration::from_millis(1000), "{waits:?}");
    assert_eq!(agent.outbox().len(None).unwrap(), 50);
    assert_eq!(events(&service), 0);
    // The audit log says what left, once per attempt: hello, batch, goodbye.
    let text = std::fs::read_to_string(&audit).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "batch").count(), 3, "{kinds:?}");
    assert_eq!(kinds.len(), 9, "{kinds:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn a_service_gone_mid_batch_loses_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..400);
    let service = Arc::new(service(dir.path()).with_max_batch_records(100));
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    // First connection: the service stores the first batch but its ack is
    // lost (the connection dies after the welcome); second: it goes away
    // before reading anything; third: all is well.
    let calls = Arc::new(Mutex::new(0));
    let connect = {
        let service = Arc::clone(&service);
        let calls = Arc::clone(&calls);
        move || -> Result<Connection<End>, AgentError> {
            let (client, mut server) = pipe();
            let mut n = calls.lock().unwrap();
            *n += 1;
            match *n {
                1 => {
                    server = server.with_budget(welcome_len()); // the welcome, not the ack
                    let service = Arc::clone(&service);
                    std::thread::spawn(move || service.handle(Connection::new(server), acme_device()));
                }
                2 => drop(server),
                _ => {
                    let service = Arc::clone(&service);
                    std::thread::spawn(move || service.handle(Connection::new(server), acme_device()));
                }
            }
            Ok(Connection::new(client))
        }
    };
    let mut waits = Vec::new();
    let mut delivery = agent.deliver(connect, 3, &RetryBudget::attempts(5), |d| waits.push(d), now).unwrap();
    agent.goodbye(&mut delivery.conn, now()).unwrap();
    assert_eq!(delivery.attempts, 3);
    assert_eq!(*calls.lock().unwrap(), 3);
    assert_eq!(events(&service), 400, "every event stored once");
    // The batch whose ack was lost was acknowledged through the welcome's
    // high-water mark, not sent again and not counted as sent.
    assert_eq!(delivery.report.sent_total(), 300);
    assert!(agent.outbox().is_empty().unwrap());
}

#[test]
fn a_restart_on_the_same_log_reads_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..1000);
    let service = Arc::new(service(dir.path()));
    {
        let mut agent = agent(dir.path());
        agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
        deliver(&mut agent, &service, RetryBudget::attempts(1)).0.unwrap();
    }
    // A new process on the same spool: nothing new, nothing sent.
    let mut agent = agent(dir.path());
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(report.lines, 0);
    // A half-written line waits for its newline.
    write_log(&log, 1000..1200);
    append(&log, b"2026-11-27T09:59:59Z\tu-1\thttps://");
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(report.lines, 200);
    append(&log, b"late.example/\t203.0.113.9\t5\n");
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!((report.lines, report.records), (1, 1));
    deliver(&mut agent, &service, RetryBudget::attempts(1)).0.unwrap();
    assert_eq!(events(&service), 1201);
}

#[test]
fn rotation_finishes_the_old_file_then_reads_the_new_one_and_truncation_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..100);
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    // More lines land, then logrotate moves the file aside and creates a
    // new one, which gets lines of its own before the agent looks again.
    write_log(&log, 100..150);
    append(&log, b"garbage\n");
    std::fs::rename(&log, dir.path().join("web.log.1")).unwrap();
    write_log(&log, 150..180);
    append(&log, b"garbage\n");
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert!(report.rotated);
    assert_eq!((report.rotated_lines, report.lines), (51, 82));
    // Each problem names the file it is in.
    let problems: Vec<String> = report.problem_lines().collect();
    let problem = "line does not have 5 tab-separated columns (time, user, url, ip, page load ms)";
    assert_eq!(
        problems,
        [
            format!("{}:151: {problem}", dir.path().join("web.log.1").display()),
            format!("{}:31: {problem}", log.display())
        ]
    );
    // copytruncate: the same file emptied in place and written again.
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    write_log(&log, 180..190);
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert!(report.truncated);
    assert_eq!(report.lines, 10);
    deliver(&mut agent, &service, RetryBudget::attempts(1)).0.unwrap();
    assert_eq!(events(&service), 190, "every line once, none twice");
}

#[test]
fn a_log_first_seen_empty_or_half_written_is_finished_after_a_rotation() {
    for first in [&b""[..], b"2026-11-27T09:00:00Z\tu-1\thttps://"] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web.log");
        append(&log, first);
        let service = Arc::new(service(dir.path()));
        let mut agent = agent(dir.path());
        // The first pass reads no line, but the agent has seen the file.
        let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
        assert_eq!(report.lines, 0);
        // The writer fills it, then logrotate moves it aside before the
        // agent looks again.
        if !first.is_empty() {
            append(&log, b"late.example/\t203.0.113.9\t5\n");
        }
        write_log(&log, 0..100);
        std::fs::rename(&log, dir.path().join("web.log.1")).unwrap();
        write_log(&log, 100..130);
        let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
        assert!(report.rotated);
        let old = 100 + u64::from(!first.is_empty());
        assert_eq!((report.rotated_lines, report.lines), (old, old + 30));
        deliver(&mut agent, &service, RetryBudget::attempts(1)).0.unwrap();
        assert_eq!(events(&service), old + 30, "every line once, from both files");
    }
}

#[test]
fn a_malformed_line_among_good_ones_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..8);
    append(&log, b"2026-11-27T09:00:00Z\talice@corp.example\thttps://x.example/\t1.2.3.4\t1\n\xff\xfe\n");
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    let problems: Vec<String> = report.problem_lines().collect();
    assert_eq!(
        problems,
        [
            format!("{}:9: user is not a valid user id", log.display()),
            format!("{}:10: line is not utf-8", log.display())
        ]
    );
    assert!(!problems.concat().contains("alice"));
    deliver(&mut agent, &service, RetryBudget::attempts(1)).0.unwrap();
    assert_eq!(events(&service), 8);
}

#[test]
fn enrichment_sends_no_query_when_off_or_when_nothing_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..20);
    let service = Arc::new(service(dir.path()));
    let audit = dir.path().join("audit.jsonl");
    let mut agent =
        agent(dir.path()).with_audit_log(AuditLog::open(&audit, AuditOptions::default()).unwrap());
    let (_, collected) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    let mut d = agent.deliver(connector(&service), 3, &RetryBudget::attempts(1), |_| {}, now).unwrap();
    let (_, first) = agent.enrich(&mut d.conn, &[], &collected.domains, now()).unwrap();
    assert_eq!(first.len(), 13);
    // The same domains again, minutes later: nothing is new.
    let (b, again) = agent.enrich(&mut d.conn, &[], &collected.domains, now()).unwrap();
    assert!(b.is_empty() && again.is_empty());
    agent.goodbye(&mut d.conn, now()).unwrap();
    let queries = std::fs::read_to_string(&audit).unwrap().matches("\"kind\":\"enrich query\"").count();
    assert_eq!(queries, 1);

    // Enrichment switched off: no query at all.
    let off = Policy::from_toml("[programs]\nenrichment = false\n").unwrap();
    let filter = FilterBuilder::new().policy(off).build();
    let dir2 = tempfile::tempdir().unwrap();
    let mut agent = Agent::open(
        CustomerId::new("acme").unwrap(),
        DeviceId::new("dev-2").unwrap(),
        filter,
        dir2.path().join("spool.db"),
        SpoolOptions::default(),
    )
    .unwrap()
    .with_audit_log(AuditLog::open(dir2.path().join("audit.jsonl"), AuditOptions::default()).unwrap());
    let dev2 = Peer::device(CustomerId::new("acme").unwrap(), DeviceId::new("dev-2").unwrap());
    let mut d =
        agent.deliver(connector_for(&service, dev2), 3, &RetryBudget::attempts(1), |_| {}, now).unwrap();
    let (b, dv) = agent.enrich(&mut d.conn, &[], &collected.domains, now()).unwrap();
    assert!(b.is_empty() && dv.is_empty());
    agent.goodbye(&mut d.conn, now()).unwrap();
    let text = std::fs::read_to_string(dir2.path().join("audit.jsonl")).unwrap();
    assert!(!text.contains("enrich query"), "{text}");
}

#[test]
fn a_high_water_mark_above_what_was_sent_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..30);
    let service = Arc::new(service(dir.path()));
    // A gap cannot raise this stream's mark (refused); a skip the stream
    // itself declares can (only the authenticated device may declare one:
    // this is a device whose older software lied, or a service that lies).
    let (event, _) = privtel_agent::parse_web_log(&line(99), "other", &DeviceId::new("dev-1").unwrap());
    let customer = CustomerId::new("acme").unwrap();
    let stream = agent(dir.path()).outbox().spool().stream_id();
    let device = DeviceId::new("dev-1").unwrap();
    assert!(service.engine().ingest(&customer, &device, stream, 1_000_000, event.clone(), now()).is_err());
    let seq = privtel_store::Sequence { stream, first_seq: 1_000_000, skipped: 999_999 };
    service
        .engine()
        .ingest_admitted(&customer, &device, seq, event.into_iter().map(Some).collect(), now())
        .unwrap();
    assert_eq!(service.engine().high_water(&customer, &device, stream).unwrap(), 1_000_000);
    assert_eq!(events(&service), 1);
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    let (report, _) = deliver(&mut agent, &service, RetryBudget::attempts(1));
    // The agent did not drop its 30 records on the welcome's word, nor
    // send them under numbers the service already holds (taken for
    // duplicates): it moved to a new stream and the service stored them.
    let report = report.unwrap();
    assert_eq!(events(&service), 31, "the 30 records stored, not acknowledged as duplicates");
    assert!(report.new_stream);
    assert_eq!(report.sent_total(), 30);
    assert!(agent.outbox().is_empty().unwrap());
    let new = agent.outbox().spool().stream_id();
    assert_ne!(new, stream);
    assert_eq!(service.engine().high_water(&customer, &device, new).unwrap(), 30);
    assert_eq!(service.engine().high_water(&customer, &device, stream).unwrap(), 1_000_000);
}

#[test]
fn a_spool_restored_from_an_older_copy_moves_to_a_new_stream_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(service(dir.path()));
    let spool = dir.path().join("spool.db");
    let backup = dir.path().join("spool.db.backup");
    // Ten events spooled (1..=10), then a copy of the spool is taken (a VM
    // snapshot, a backup) with the agent stopped.
    let mut first = agent(dir.path());
    assert_eq!(first.collect(feature_events(1..11), now()).unwrap().records, 10);
    drop(first);
    std::fs::copy(&spool, &backup).unwrap();
    // Twenty more (11..=30); all thirty delivered: the stream's mark is 30.
    let mut second = agent(dir.path());
    let stream = second.outbox().spool().stream_id();
    second.collect(feature_events(11..31), now()).unwrap();
    assert_eq!(deliver(&mut second, &service, RetryBudget::attempts(1)).0.unwrap().sent_total(), 30);
    assert_eq!(events(&service), 30);
    drop(second);
    // The machine is put back to the copy; twenty new events happen, and
    // get the numbers 11..=30 again.
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(spool.with_extension(ext));
    }
    std::fs::copy(&backup, &spool).unwrap();
    let mut agent = agent(dir.path());
    assert_eq!(agent.outbox().spool().stream_id(), stream);
    agent.collect(feature_events(1_000..1_020), now()).unwrap();
    let (report, waits) = deliver(&mut agent, &service, RetryBudget::attempts(1));
    let report = report.unwrap();
    // The twenty new events are stored; the ten sent again are not stored
    // twice (the engine keeps an event once per device, whatever its stream).
    assert_eq!(events(&service), 50);
    assert!(waits.is_empty(), "sent under the new stream in the same delivery, at once");
    assert!(report.new_stream);
    assert_eq!(report.sent_total(), 30, "the ten old events sent again, the twenty new ones");
    assert!(agent.outbox().is_empty().unwrap());
    let new = agent.outbox().spool().stream_id();
    assert_ne!(new, stream);
    let counters = agent.outbox().counters().unwrap();
    assert_eq!(counters.new_streams, 1);
    assert_eq!(counters.acknowledged, 30, "nothing deleted on the old stream's mark");
    let (customer, device) = (CustomerId::new("acme").unwrap(), DeviceId::new("dev-1").unwrap());
    assert_eq!(service.engine().high_water(&customer, &device, new).unwrap(), 30);
}

#[test]
fn batches_fit_the_frame_limit_and_a_record_too_large_for_any_frame_is_skipped_and_declared() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    // 300 crash reports of 60 KiB (about 18 MiB: more than one frame of
    // 16 MiB), events, one crash report too large for any frame (stored:
    // within the spool's 16 MiB per record), more events.
    let large: Vec<Record> = (0..300).map(|i| crash_report(i, 60 << 10)).collect();
    assert_eq!(agent.collect(large, now()).unwrap().records, 300);
    agent.collect(feature_events(1..11), now()).unwrap();
    assert_eq!(agent.collect(vec![crash_report(300, 16_700_000)], now()).unwrap().records, 1);
    agent.collect(feature_events(11..21), now()).unwrap();
    let (report, waits) = deliver(&mut agent, &service, RetryBudget::attempts(1));
    let report = report.unwrap();
    assert!(waits.is_empty());
    assert_eq!(report.sent_total(), 320);
    // About 16 MiB, the rest with ten events, the ten after the skip.
    assert_eq!(report.batches, 3);
    assert_eq!(report.too_large, 1);
    assert!(agent.outbox().is_empty().unwrap());
    assert_eq!(agent.outbox().counters().unwrap().too_large, 1);
    assert_eq!(events(&service), 320);
    assert_eq!(service.stats().skipped.load(Ordering::Relaxed), 1, "declared skipped, not a gap");
}

#[test]
fn records_of_a_program_the_policy_now_switches_off_are_removed_unsent_and_declared_skipped() {
    let dir = tempfile::tempdir().unwrap();
    // Spooled while personalised usage was on: web requests (1..=30), then
    // anonymous feature usage (31..=40).
    let log = dir.path().join("web.log");
    write_log(&log, 0..30);
    let mut before = agent(dir.path());
    before.collect_web_log(&WebLog::new(&log), now()).unwrap();
    before.collect(feature_events(1..11), now()).unwrap();
    assert_eq!(before.outbox().len(Some(Program::PersonalisedUsage)).unwrap(), 30);
    drop(before);
    // The customer switches personalised usage off; the agent restarts
    // under the new policy.
    let strict = Policy::from_toml("version = 4\n[programs]\npersonalised_usage = false\n").unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut agent = agent_under(dir.path(), strict.clone())
        .with_audit_log(AuditLog::open(&audit, AuditOptions::default()).unwrap());
    assert!(!agent.filter().enabled(Program::PersonalisedUsage));
    let service = Arc::new(service_under(dir.path(), strict));
    let (report, _) = deliver(&mut agent, &service, RetryBudget::attempts(1));
    let report = report.unwrap();
    assert_eq!(report.switched_off, 30);
    assert_eq!(report.sent.get(&Program::PersonalisedUsage), None);
    assert_eq!(report.sent_total(), 10);
    assert_eq!(report.refused, 0);
    assert!(agent.outbox().is_empty().unwrap());
    assert_eq!(agent.outbox().counters().unwrap().switched_off, 30);
    assert_eq!(events(&service), 10);
    assert_eq!(service.stats().skipped.load(Ordering::Relaxed), 30, "declared skipped, not a gap");
    // Nothing of the program left, so nothing of it is in the audit log
    // (sealed with the spool's key: read as its owner does).
    let entries = privtel_agent::read_audit_log(&audit, dir.path().join("spool.db")).unwrap();
    let batches: Vec<_> = entries.iter().filter(|e| e.kind == "batch").collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].message["program"], "anonymous_usage");
    assert!(!entries.iter().any(|e| e.message.to_string().contains("\"program\":\"personalised_usage\"")));
    assert!(!std::fs::read_to_string(&audit).unwrap().contains("anonymous_usage"), "the file is sealed");
}

#[test]
fn a_lying_service_deletes_nothing_unsent_and_is_not_spun_on() {
    use privtel_wire::{Ack, Message, RejectCode, Rejection, Welcome};
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent(dir.path());
    agent.collect(feature_events(1..21), now()).unwrap();
    let connect = || -> Result<Connection<End>, AgentError> {
        let (client, server) = pipe();
        std::thread::spawn(move || {
            let mut conn = Connection::new(server);
            let _ = conn.server_handshake(|_, v| {
                let mut w = Welcome::new(v, 0);
                w.max_batch_records = 0;
                w.max_payload = 0;
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
    let err = agent.deliver(connect, 3, &RetryBudget::attempts(4), |d| waits.push(d), now).unwrap_err();
    assert!(matches!(err, AgentError::GaveUp { .. }), "{err}");
    assert_eq!(agent.outbox().len(None).unwrap(), 20, "nothing deleted");
    assert_eq!(agent.outbox().counters().unwrap().too_large, 0, "a welcome's limit of 0 skips nothing");
    assert!(waits.iter().all(|w| *w <= Duration::from_secs(300)), "{waits:?}");
}

#[cfg(unix)]
#[test]
fn a_fifo_or_an_overlong_line_being_written_does_not_hang_or_split() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.log");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut agent = agent(dir.path());
    let err = agent.collect_web_log(&WebLog::new(&fifo), now()).unwrap_err().to_string();
    assert!(err.contains("not a regular file") && err.contains("fifo.log"), "{err}");

    // A line of 100 KiB still being written: nothing consumed until its
    // newline; then it is one problem, and the next line is read whole.
    let log = dir.path().join("web.log");
    write_log(&log, 0..2);
    append(&log, &vec![b'x'; 100 << 10]);
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!((report.lines, report.skipped), (2, 0));
    append(&log, &vec![b'y'; 50 << 10]);
    append(&log, b"\n");
    write_log(&log, 2..3);
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!((report.lines, report.records, report.skipped), (2, 1, 1));
    assert_eq!(
        report.problem_lines().next().unwrap(),
        format!("{}:3: line is longer than 65536 bytes", log.display())
    );
}

#[test]
fn lines_a_writer_adds_to_the_rotated_file_before_it_reopens_are_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    let old = dir.path().join("web.log.1");
    write_log(&log, 0..100);
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    // logrotate moves the file and creates a new one; the writer keeps its
    // old descriptor a while (until its postrotate signal).
    std::fs::rename(&log, &old).unwrap();
    write_log(&log, 100..110);
    write_log(&old, 110..120);
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!((report.rotated_lines, report.lines), (10, 20));
    // Still writing to the old file after that pass, and a half line too.
    write_log(&old, 120..125);
    append(&old, b"2026-11-27T09:");
    write_log(&log, 125..130);
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!((report.rotated_lines, report.lines), (5, 10));
    // Nothing new: nothing read, from either file.
    let (report, _) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(report.lines, 0);
    // A second agent process on the same spool agrees.
    drop(agent);
    let mut second = self::agent(dir.path());
    let (report, _) = second.collect_web_log(&WebLog::new(&log), now()).unwrap();
    assert_eq!(report.lines, 0);
    deliver(&mut second, &service, RetryBudget::attempts(1)).0.unwrap();
    assert_eq!(events(&service), 130, "every line once, from both files");
}

#[test]
fn records_removed_unsent_are_declared_skipped_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_log(&log, 0..30);
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    // Sequence numbers 1..=30: web requests; then the anonymous records.
    agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    let anonymous: Vec<_> = privtel_testkit::fixtures::records("skip")
        .into_iter()
        .filter(|r| r.program == Program::AnonymousUsage)
        .collect();
    let kept = agent.collect(anonymous, now()).unwrap().records;
    assert!(kept > 0);
    // The web requests are purged unsent (consent withdrawn on the device).
    assert_eq!(agent.outbox().purge_program(Program::PersonalisedUsage).unwrap(), 30);
    let (report, _) = deliver(&mut agent, &service, RetryBudget::attempts(1));
    assert_eq!(report.unwrap().sent_total(), kept as u64, "not refused as a gap");
    assert!(agent.outbox().is_empty().unwrap());
    assert_eq!(service.stats().skipped.load(Ordering::Relaxed), 30);
    assert_eq!(service.engine().record_count().unwrap(), kept as u64);
}

/// A scan of `dir/home/canarylogin42/Downloads/` holding one executable:
/// the path a person's login and download are in, which the default
/// policy withholds.
fn canary_scan(dir: &Path) -> (privtel_hash::ScanReport, std::path::PathBuf) {
    let folder = dir.join("home").join("canarylogin42").join("Downloads");
    std::fs::create_dir_all(&folder).unwrap();
    let (_, bytes) = privtel_testkit::fixtures::sample_executables().remove(0);
    let file = folder.join("canary-salary-tool");
    std::fs::write(&file, bytes).unwrap();
    let scan = privtel_hash::ScannerBuilder::new()
        .algorithms(privtel_hash::Algorithms::Both)
        .executables_only(true)
        .build()
        .scan(&[&folder]);
    assert_eq!(scan.hashed.len(), 1);
    (scan, file)
}

/// The ids of the events `agent` has spooled, in order.
fn spooled_ids(agent: &mut Agent) -> Vec<privtel_model::EventId> {
    let mut ids = Vec::new();
    for program in Program::ALL {
        for s in agent.outbox().spool().next_batch(program, usize::MAX).unwrap() {
            if let RecordBody::Event(e) = &s.record.body {
                ids.push(e.id);
            }
        }
    }
    ids
}

/// The unkeyed id the agent gave a scanned execution before: anyone could
/// compute it from a guessed device, path and digest.
fn unkeyed_scan_id(device: &DeviceId, path: &Path, sha256: &privtel_model::Digest) -> privtel_model::EventId {
    privtel_agent::derive_event_id(
        "privtel-agent 2026-11 scan event id",
        &[device.as_str().as_bytes(), path.as_os_str().as_encoded_bytes(), sha256.as_bytes()],
    )
}

#[test]
fn a_scanned_execution_s_id_gives_back_no_withheld_path() {
    let dir = tempfile::tempdir().unwrap();
    let (scan, file) = canary_scan(dir.path());
    let device = DeviceId::new("dev-1").unwrap();
    let sha256 = scan.hashed[0].digests.sha256.unwrap();
    let mut agent = agent(dir.path());
    let raw = privtel_agent::records_from_scan(&scan, &device, None, now());
    assert_eq!(agent.collect(raw, now()).unwrap().records, 1, "personalised usage is on");
    let ids = spooled_ids(&mut agent);
    assert_eq!(ids.len(), 1);
    // The path is withheld by default, and the id cannot be derived from
    // it: a guess of the path (and the login in it) tested with one hash
    // finds nothing.
    let spooled = serde_json::to_string(
        &agent.outbox().spool().next_batch(Program::PersonalisedUsage, 10).unwrap()[0].record,
    )
    .unwrap();
    assert!(!spooled.contains("canarylogin42") && !spooled.contains("canary-salary-tool"), "{spooled}");
    assert_ne!(ids[0], unkeyed_scan_id(&device, &file, &sha256), "the id is the unkeyed hash of the path");
    for login in ["alice", "bob", "canarylogin42"] {
        let guess = dir.path().join("home").join(login).join("Downloads/canary-salary-tool");
        assert_ne!(ids[0], unkeyed_scan_id(&device, &guess, &sha256), "a guess tested with one hash");
    }
    drop(agent);
    // Nor is the canary in any byte of the spool's files or its key files.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && p.file_name().unwrap().to_str().unwrap().starts_with("spool") {
            let bytes = std::fs::read(&p).unwrap();
            assert!(!bytes.windows(13).any(|w| w == b"canarylogin42"), "{}", p.display());
        }
    }
}

#[test]
fn keyed_ids_are_the_same_after_a_restart_so_the_service_still_drops_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (scan, file) = canary_scan(dir.path());
    let device = DeviceId::new("dev-1").unwrap();
    let sha256 = scan.hashed[0].digests.sha256.unwrap();
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    agent.collect(privtel_agent::records_from_scan(&scan, &device, None, now()), now()).unwrap();
    let first = spooled_ids(&mut agent);
    assert_eq!(deliver(&mut agent, &service, RetryBudget::attempts(1)).0.unwrap().sent_total(), 1);
    assert_eq!(events(&service), 1);
    drop(agent);
    assert!(
        privtel_agent::key_path(dir.path().join("spool.db"), "ids").exists(),
        "the key is kept beside the spool"
    );

    // A new process on the same spool and key file scans the same machine
    // again: the same id, so the service keeps the event once.
    let mut restarted = agent_under(dir.path(), policy());
    restarted.collect(privtel_agent::records_from_scan(&scan, &device, None, now()), now()).unwrap();
    let again = spooled_ids(&mut restarted);
    assert_eq!(again, first);
    assert_ne!(again[0], unkeyed_scan_id(&device, &file, &sha256));
    deliver(&mut restarted, &service, RetryBudget::attempts(1)).0.unwrap();
    assert_eq!(events(&service), 1, "a replay after a restart is recognised");
    assert!(restarted.outbox().is_empty().unwrap());
}

#[test]
fn another_device_key_gives_other_ids_for_the_same_event() {
    let dir = tempfile::tempdir().unwrap();
    let (scan, _) = canary_scan(dir.path());
    let device = DeviceId::new("dev-1").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut ids = Vec::new();
    for spool_dir in [&a, &b] {
        std::fs::create_dir_all(spool_dir).unwrap();
        let mut agent = agent(spool_dir);
        agent.collect(privtel_agent::records_from_scan(&scan, &device, None, now()), now()).unwrap();
        ids.push(spooled_ids(&mut agent));
    }
    assert_eq!((ids[0].len(), ids[1].len()), (1, 1));
    assert_ne!(ids[0], ids[1], "same device id, same file, another key: another id");
}

/// A device's description (an object) and a feature-usage event recorded at
/// `t0`, spooled by an agent opened the way the shipped agent opens its
/// spool under `policy` ([`privtel_agent::spool_options`]).
fn spool_under_policy(dir: &Path, policy: &Policy, t0: Timestamp) -> Agent {
    let filter = FilterBuilder::new()
        .policy(policy.clone())
        .customer(CustomerId::new("acme").unwrap())
        .key(PseudonymKey::new(KeyId::new(1), [9; 32]))
        .build();
    let mut agent = Agent::open(
        CustomerId::new("acme").unwrap(),
        DeviceId::new("dev-1").unwrap(),
        filter,
        dir.join("spool.db"),
        privtel_agent::spool_options(policy),
    )
    .unwrap();
    let mut device = privtel_testkit::fixtures::records("ttl")
        .into_iter()
        .find(|r| matches!(r.body, RecordBody::Device(_)))
        .unwrap();
    if let RecordBody::Device(d) = &mut device.body {
        d.last_seen = t0;
    }
    assert_eq!(agent.collect(vec![device], t0).unwrap().records, 1, "anonymous usage is on");
    agent
}

#[test]
fn the_spool_keeps_objects_no_longer_than_the_policy_s_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::from_toml("[retention]\nevents = 7\nobjects = 7\ninactive_device = 7\n").unwrap();
    let retention = privtel_agent::policy_retention(&policy);
    assert_eq!((retention.events.days(), retention.objects.days()), (7, 7));
    assert_eq!(retention.device_inactivity.whole_days(), 7);
    let t0 = now();
    let mut agent = spool_under_policy(dir.path(), &policy, t0);
    let day = |n: i64| t0.checked_add(time::Duration::days(n)).unwrap();
    assert_eq!(agent.maintain(day(6)).unwrap(), 0, "within the TTL");
    assert_eq!(
        agent.maintain(day(8)).unwrap(),
        1,
        "the device's description waited past the policy's 7 days"
    );
    assert!(agent.outbox().is_empty().unwrap());
}

/// A phone number in free text (feedback, a crash message) goes through
/// the agent's filter, its spool and the wire into the engine: it is
/// scrubbed on the device (the policy's default), so none of its digits is
/// in the spooled records, any byte of the spool's files, or any byte of
/// the engine's database or its log; the rest of the text is.
#[test]
fn a_phone_number_in_free_text_reaches_neither_the_spool_nor_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(service(dir.path()));
    let mut agent = agent(dir.path());
    let texts = [
        ("feedback", "works well, call me on +33 6 12 34 56 78 or 0033 6 98 76 54 32"),
        ("crash_report", "panic in dialer: (555) 867-5309 then 06.55.44.33.22 busy"),
    ];
    let records: Vec<Record> = texts
        .iter()
        .enumerate()
        .map(|(i, (kind, text))| {
            let mut r = privtel_testkit::fixtures::records("p")
                .into_iter()
                .find(|r| r.body.kind_name() == *kind)
                .unwrap();
            let RecordBody::Event(e) = &mut r.body else { unreachable!() };
            e.id = privtel_model::EventId::from_u128(7_000 + i as u128);
            e.recorded_at = now();
            match &mut e.body {
                EventBody::Feedback(f) => f.text = Personal::Clear((*text).to_owned()),
                EventBody::CrashReport(c) => c.message = Personal::Clear((*text).to_owned()),
                _ => unreachable!(),
            }
            r
        })
        .collect();
    assert_eq!(agent.collect(records, now()).unwrap().records, 2);
    let needles =
        ["+33 6 12", "12 34 56 78", "98 76 54 32", "867-5309", "(555)", "06.55.44", "33.22", "612345678"];
    let mut spooled = String::new();
    for program in [Program::SupportTelemetry, Program::AnonymousUsage] {
        for s in agent.outbox().spool().next_batch(program, 10).unwrap() {
            spooled.push_str(&serde_json::to_string(&s.record).unwrap());
        }
    }
    assert!(spooled.contains("works well, call me on [phone] or [phone]"), "{spooled}");
    assert!(spooled.contains("panic in dialer: [phone] then [phone] busy"), "{spooled}");
    for needle in needles {
        assert!(!spooled.contains(needle), "{needle} in a spooled record: {spooled}");
    }
    let (sent, _) = deliver(&mut agent, &service, RetryBudget::attempts(1));
    assert_eq!(sent.unwrap().sent_total(), 2);
    assert_eq!(events(&service), 2);
    drop(agent);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            p.is_file() && (name.starts_with("spool") || name.starts_with("engine"))
        })
        .collect();
    let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_owned()).collect();
    assert!(names.iter().any(|n| n == "engine.db") && names.iter().any(|n| n == "spool.db"), "{names:?}");
    let engine: Vec<u8> = files
        .iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("engine"))
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    let has = |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The engine's files are plain here: the scrubbed text is in them.
    assert!(has(&engine, "call me on [phone]"), "the scan of the engine's files proves nothing");
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        for needle in needles {
            assert!(!has(&bytes, needle), "{needle} in {}", p.display());
        }
    }
}

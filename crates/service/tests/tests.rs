//! The service against hostile and careful clients, in one process over an
//! in-memory pipe: identities, tenants, the customer's settings enforced
//! record by record, sequence numbers, erasure while ingesting, retention
//! per customer.

mod access;
mod admission;
mod benchmarks;
#[cfg(unix)]
mod console;
mod generalised;
mod records_engine;
mod rotation;
#[cfg(feature = "tls")]
mod tls;

use std::path::Path;
use std::sync::Arc;

use privtel_filter::{FilterBuilder, PseudonymKey};
use privtel_model::{BatchId, KeyId, Program, Record, Timestamp};
use privtel_service::{Peer, Service, Settings};
use privtel_store::{EngineOptions, EngineStore, SqliteEngine};
use privtel_testkit::End;
use privtel_wire::{Ack, Batch, Connection, Hello, Message, RejectCode, VerdictIndex};

pub(crate) const SETTINGS: &str = r#"
[customers.acme]
events_days = 7
[customers.acme.policy.programs]
enrichment = true
[customers.acme.policy.fields]
"web_request.url" = "generalise"

[customers.globex]
"#;

pub(crate) fn now() -> Timestamp {
    privtel_testkit::fixtures::base_time()
}

pub(crate) fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

pub(crate) fn service_with(dir: &Path, settings: Settings) -> Arc<Service> {
    let engine = SqliteEngine::open(dir.join("engine.db"), EngineOptions::default().secret([5; 32])).unwrap();
    Arc::new(Service::new(engine, VerdictIndex::new(4, [1; 32]), now).with_settings(settings))
}

pub(crate) fn service(dir: &Path) -> Arc<Service> {
    service_with(dir, Settings::from_toml(SETTINGS).unwrap())
}

/// A client connection served by `service` on a thread, as `peer`.
pub(crate) fn connect(service: &Arc<Service>, peer: Peer) -> Connection<End> {
    let (client, server) = privtel_testkit::pipe();
    let service = Arc::clone(service);
    std::thread::spawn(move || service.handle(Connection::new(server), peer));
    Connection::new(client)
}

pub(crate) fn peer(customer: &str, device: &str) -> Peer {
    Peer::device(id(customer), id(device))
}

pub(crate) fn hello(customer: &str, device: &str, stream: u64) -> Hello {
    let consent = Program::ALL.iter().map(|p| (*p, true)).collect();
    Hello::new("test", id(customer), id(device), consent, 1).with_stream(stream)
}

/// The records of the fixtures that the customer's own filter lets
/// through, of one program.
pub(crate) fn admissible(service: &Service, customer: &str, tag: &str, program: Program) -> Vec<Record> {
    let settings = service.settings();
    let cs = settings.customer(&id(customer)).unwrap();
    let filter = FilterBuilder::new()
        .policy(cs.policy().clone())
        .customer(id(customer))
        .key(PseudonymKey::new(KeyId::new(1), [3; 32]))
        .build();
    privtel_testkit::fixtures::records(tag)
        .into_iter()
        .filter(|r| r.program == program)
        .filter_map(|r| filter.apply(r, &mut Default::default()))
        .map(privtel_filter::Filtered::into_record)
        .collect()
}

pub(crate) fn batch(service: &Service, customer: &str, first_seq: u64, records: Vec<Record>) -> Batch {
    let hash = service.settings().customer(&id(customer)).map_or([0; 32], |c| c.policy_digest());
    let program = records.first().map_or(Program::AnonymousUsage, |r| r.program);
    Batch {
        program,
        batch_id: BatchId::from_u128(u128::from(first_seq)),
        first_seq,
        records,
        skipped: 0,
        policy_hash: hash,
    }
}

pub(crate) fn send(conn: &mut Connection<End>, batch: Batch) -> Ack {
    conn.send(&Message::Batch(batch)).unwrap();
    match conn.recv().unwrap() {
        Message::Ack(a) => a,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn refused(conn: &mut Connection<End>) -> String {
    match conn.recv() {
        Ok(Message::Error(e)) => {
            assert_eq!(e.code, privtel_wire::ErrorCode::Forbidden);
            e.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_device_cannot_say_hello_as_another_device_or_customer() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    for (customer, device) in [("globex", "dev-1"), ("acme", "dev-victim")] {
        let mut conn = connect(&service, peer("acme", "dev-1"));
        conn.client_handshake(&hello(customer, device, 1)).unwrap();
        let message = refused(&mut conn);
        assert!(message.contains("another customer or device"), "{message}");
    }
    assert_eq!(service.stats().forbidden.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(service.engine().record_count().unwrap(), 0);
}

#[test]
fn a_hello_with_a_consent_list_longer_than_the_bound_is_refused_before_any_batch() {
    // Kept for the session and looked up for every record, an unbounded
    // consent list would make each record of every batch cost as many
    // comparisons as the hello had entries.
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("acme", "dev-1"));
    let mut h = hello("acme", "dev-1", 1);
    h.consent = vec![(Program::Benchmarking, false); 1_000_000];
    h.consent.push((Program::AnonymousUsage, true));
    let answer = conn.client_handshake(&h);
    let refused = match answer {
        Err(e) => e.to_string(),
        Ok(welcome) => panic!("expected the hello refused, got {welcome:?}"),
    };
    assert!(refused.contains("the hello could not be decoded"), "{refused}");
    // The connection is over: a batch is not taken.
    let records = admissible(&service, "acme", "c", Program::AnonymousUsage);
    let _ = conn.send(&Message::Batch(batch(&service, "acme", 1, records)));
    assert!(!matches!(conn.recv(), Ok(Message::Ack(_))));
    assert_eq!(service.engine().record_count().unwrap(), 0);
}

#[test]
fn a_customer_without_settings_is_refused_before_anything() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("initech", "dev-1"));
    // Refused before its hello is read: the service may have answered and
    // hung up before the hello is written (a broken pipe), never after.
    let _ = conn.send(&Message::Hello(hello("initech", "dev-1", 1)));
    assert!(refused(&mut conn).contains("no settings"));
    // And settings can arrive while the service runs.
    let with = format!("{SETTINGS}\n[customers.initech]\n");
    service.replace_settings(Settings::from_toml(&with).unwrap());
    let mut conn = connect(&service, peer("initech", "dev-1"));
    conn.client_handshake(&hello("initech", "dev-1", 1)).unwrap();
    let records = admissible(&service, "initech", "i", Program::AnonymousUsage);
    let n = records.len() as u64;
    let ack = send(&mut conn, batch(&service, "initech", 1, records));
    assert_eq!((ack.accepted_up_to, ack.rejections.len()), (n, 0));
}

#[test]
fn the_same_device_id_in_two_customers_is_two_devices() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let acme = admissible(&service, "acme", "a", Program::AnonymousUsage);
    let globex = admissible(&service, "globex", "g", Program::AnonymousUsage);
    let mut a = connect(&service, peer("acme", "dev-1"));
    assert_eq!(a.client_handshake(&hello("acme", "dev-1", 7)).unwrap().high_water, 0);
    let n = acme.len() as u64;
    assert_eq!(send(&mut a, batch(&service, "acme", 1, acme)).accepted_up_to, n);
    let mut g = connect(&service, peer("globex", "dev-1"));
    assert_eq!(g.client_handshake(&hello("globex", "dev-1", 7)).unwrap().high_water, 0, "not acme's mark");
    let ack = send(&mut g, batch(&service, "globex", 1, globex.clone()));
    assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    let engine = service.engine();
    assert_eq!(
        engine.record_count_of(&id("globex")).unwrap(),
        globex.len() as u64,
        "nothing taken as a retry"
    );
    assert_eq!(engine.record_count_of(&id("acme")).unwrap(), n);
}

#[test]
fn sequence_numbers_cannot_claim_a_gap_or_leave_the_stored_range() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let records = admissible(&service, "acme", "s", Program::AnonymousUsage);
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    for first in [1_000_000, i64::MAX as u64, u64::MAX - 1] {
        let ack = send(&mut conn, batch(&service, "acme", first, records.clone()));
        assert_eq!(ack.accepted_up_to, first - 1, "nothing accepted");
        assert_eq!(ack.rejections[0].code, RejectCode::SEQUENCE, "{:?}", ack.rejections);
    }
    assert_eq!(service.engine().record_count().unwrap(), 0);
    assert_eq!(
        service.engine().high_water(&id("acme"), &id("dev-1"), 1).unwrap(),
        0,
        "the mark did not move"
    );
    // The honest batch after them is stored whole.
    let n = records.len() as u64;
    let ack = send(&mut conn, batch(&service, "acme", 1, records));
    assert_eq!((ack.accepted_up_to, ack.rejections.len()), (n, 0));
    assert_eq!(service.engine().record_count().unwrap(), n);
}

#[test]
fn stream_zero_is_not_a_spool_stream() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 0)).unwrap();
    assert!(matches!(conn.recv(), Ok(Message::Error(e)) if e.code == privtel_wire::ErrorCode::Protocol));
    assert_eq!(service.engine().record_count().unwrap(), 0);
}

#[test]
fn a_new_spool_of_a_known_device_is_a_new_stream_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    // Anonymous usage: benchmarking records are folded, not stored.
    let first = admissible(&service, "acme", "one", Program::AnonymousUsage);
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 11)).unwrap();
    send(&mut conn, batch(&service, "acme", 1, first.clone()));
    // Reinstalled: a new spool numbers from 1 again, with new events.
    let second = renumbered(admissible(&service, "acme", "two", Program::AnonymousUsage), 1_000);
    let mut conn = connect(&service, peer("acme", "dev-1"));
    assert_eq!(conn.client_handshake(&hello("acme", "dev-1", 22)).unwrap().high_water, 0);
    let ack = send(&mut conn, batch(&service, "acme", 1, second.clone()));
    assert!(ack.rejections.is_empty());
    let held = service.engine().record_count_of(&id("acme")).unwrap();
    assert_eq!(
        held,
        (first.len() + second.len()) as u64,
        "the new stream's records were not taken as retries"
    );
    // Its replay of the first spool's events (same ids) is stored once.
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 33)).unwrap();
    let events: Vec<Record> =
        first.into_iter().filter(|r| matches!(r.body, privtel_model::RecordBody::Event(_))).collect();
    assert!(!events.is_empty());
    send(&mut conn, batch(&service, "acme", 1, events));
    assert_eq!(service.engine().record_count_of(&id("acme")).unwrap(), held);
}

/// A certified device that names a fresh stream in every hello and sends
/// one empty batch holds a bounded number of stream marks, and the sweep
/// removes them once unused for longer than the customer's longest TTL
/// (acme: events 7 days, objects 30).
#[test]
fn a_device_cycling_stream_ids_holds_a_bounded_number_of_marks() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    for stream in 1..=150u64 {
        let mut conn = connect(&service, peer("acme", "dev-1"));
        let stream = stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        assert_eq!(conn.client_handshake(&hello("acme", "dev-1", stream)).unwrap().high_water, 0);
        let ack = send(&mut conn, batch(&service, "acme", 1, Vec::new()));
        assert!(ack.rejections.is_empty(), "{ack:?}");
    }
    let held = || service.engine().stream_count(&id("acme"), &id("dev-1")).unwrap();
    assert_eq!(held(), privtel_store::MAX_STREAMS_PER_DEVICE);
    let swept = |days: i64| {
        let reports = service.sweep(now().checked_add(time::Duration::days(days)).unwrap()).unwrap();
        reports.iter().find(|(c, _)| c.as_str() == "acme").unwrap().1
    };
    assert_eq!(swept(8).streams, 0, "within the objects' TTL");
    assert_eq!(held(), privtel_store::MAX_STREAMS_PER_DEVICE);
    assert_eq!(swept(31).streams, privtel_store::MAX_STREAMS_PER_DEVICE);
    assert_eq!(held(), 0);
}

/// The records with event ids moved by `offset` (new events).
pub(crate) fn renumbered(records: Vec<Record>, offset: u128) -> Vec<Record> {
    records
        .into_iter()
        .map(|mut r| {
            if let privtel_model::RecordBody::Event(e) = &mut r.body {
                e.id = privtel_model::EventId::from_u128(e.id.as_u128() + offset);
            }
            r
        })
        .collect()
}

#[test]
fn each_record_the_settings_forbid_is_refused_with_its_code_and_nothing_of_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("globex", "dev-1"));
    // The device says personalised usage is off.
    let mut h = hello("globex", "dev-1", 1);
    h.consent.retain(|(p, _)| *p != Program::SupportTelemetry);
    conn.client_handshake(&h).unwrap();
    let all = privtel_testkit::fixtures::records("raw");
    let pick = |p: Program| all.iter().filter(|r| r.program == p).cloned().collect::<Vec<_>>();
    // Globex keeps enrichment off (the default): every record refused.
    let enrichment = pick(Program::Enrichment);
    let ack = send(&mut conn, batch(&service, "globex", 1, enrichment.clone()));
    let n = enrichment.len() as u64;
    assert_eq!(ack.accepted_up_to, n, "refused for good: the device may forget them");
    assert_eq!(ack.rejections.len() as u64, n);
    assert!(ack.rejections.iter().all(|r| r.code == RejectCode::PROGRAM_OFF && !r.retryable));
    // Unfiltered personalised records: personalised usage is off too.
    // Anonymous usage unfiltered: the device record's clear name and IP are
    // not in the default policy's form.
    let anonymous = pick(Program::AnonymousUsage);
    let ack = send(&mut conn, batch(&service, "globex", n + 1, anonymous.clone()));
    assert!(ack.rejections.iter().any(|r| r.code == RejectCode::FIELD_FORM), "{:?}", ack.rejections);
    for r in &ack.rejections {
        assert!(
            !r.reason.contains("ALICE") && !r.reason.contains("192.0.2.17"),
            "a reason names a value: {}",
            r.reason
        );
    }
    // A program the hello declared off.
    let support = admissible(&service, "globex", "s", Program::SupportTelemetry);
    let start = n + 1 + anonymous.len() as u64;
    let ack = send(&mut conn, batch(&service, "globex", start, support.clone()));
    assert_eq!(ack.rejections.len(), support.len());
    assert!(ack.rejections.iter().all(|r| r.code == RejectCode::PROGRAM_OFF));
    // Dated in 2099, and a record of another program in the batch.
    let mut future = admissible(&service, "globex", "f", Program::AnonymousUsage);
    let start = start + support.len() as u64;
    for r in &mut future {
        if let privtel_model::RecordBody::Event(e) = &mut r.body {
            e.recorded_at = id("2099-01-01T00:00:00Z");
        }
    }
    let mut mixed = future.clone();
    mixed.push(admissible(&service, "globex", "m", Program::Benchmarking).remove(0));
    let ack = send(&mut conn, batch(&service, "globex", start, mixed));
    assert!(ack.rejections.iter().any(|r| r.code == RejectCode::FUTURE));
    assert!(ack.rejections.iter().any(|r| r.code == RejectCode::WRONG_PROGRAM));
    let stored = service.engine().record_count_of(&id("globex")).unwrap();
    let refused = |c| {
        let s = &service.stats().records_refused;
        match c {
            0 => s.program_off.load(std::sync::atomic::Ordering::Relaxed),
            1 => s.field_form.load(std::sync::atomic::Ordering::Relaxed),
            2 => s.future.load(std::sync::atomic::Ordering::Relaxed),
            _ => s.wrong_program.load(std::sync::atomic::Ordering::Relaxed),
        }
    };
    assert!(refused(0) >= n + support.len() as u64 && refused(1) > 0 && refused(2) > 0 && refused(3) == 1);
    // What was stored is exactly the anonymous records that passed and the
    // future batch's objects (not dated).
    let events_stored = stored;
    assert!(events_stored < (anonymous.len() + future.len()) as u64);
    assert_eq!(
        service.engine().high_water(&id("globex"), &id("dev-1"), 1).unwrap(),
        start + future.len() as u64
    );
}

#[test]
fn settings_changed_while_running_apply_to_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let records = admissible(&service, "acme", "e", Program::Enrichment);
    let n = records.len() as u64;
    assert!(send(&mut conn, batch(&service, "acme", 1, records.clone())).rejections.is_empty());
    let device_policy = service.settings().customer(&id("acme")).unwrap().policy_digest();
    service.replace_settings(Settings::from_toml("[customers.acme]\n[customers.globex]\n").unwrap());
    let mut next = batch(&service, "acme", n + 1, renumbered(records, 100));
    next.policy_hash = device_policy;
    let ack = send(&mut conn, next);
    assert_eq!(ack.rejections.len() as u64, n);
    assert!(ack.rejections.iter().all(|r| r.code == RejectCode::PROGRAM_OFF));
    assert_eq!(service.stats().outdated_policy.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn each_customer_is_swept_with_its_own_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    for customer in ["acme", "globex"] {
        let mut conn = connect(&service, peer(customer, "dev-1"));
        conn.client_handshake(&hello(customer, "dev-1", 1)).unwrap();
        let records = admissible(&service, customer, customer, Program::AnonymousUsage);
        assert!(send(&mut conn, batch(&service, customer, 1, records)).rejections.is_empty());
    }
    let events = |c: &str| service.engine().record_count_of(&id(c)).unwrap();
    let (acme0, globex0) = (events("acme"), events("globex"));
    let day8 = now().checked_add(time::Duration::days(8)).unwrap();
    let reports = service.sweep(day8).unwrap();
    let of = |c: &str| reports.iter().find(|(k, _)| k.as_str() == c).unwrap().1;
    assert!(of("acme").events > 0, "acme keeps events 7 days");
    assert_eq!(of("globex").events, 0, "globex keeps them 30");
    assert_eq!(events("globex"), globex0);
    assert_eq!(events("acme"), acme0 - of("acme").events);
}

#[test]
fn a_rate_limited_customer_is_deferred_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_toml("[customers.acme]\nrecords_per_second = 1\n").unwrap();
    let service = service_with(dir.path(), settings);
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let one = admissible(&service, "acme", "r", Program::AnonymousUsage);
    let records: Vec<Record> = (0..4).flat_map(|i| renumbered(one.clone(), i * 100)).collect();
    assert!(records.len() > 4, "more than the burst of 4");
    // The first batch passes on a full bucket, and is owed for.
    assert!(send(&mut conn, batch(&service, "acme", 1, records.clone())).rejections.is_empty());
    let n = records.len() as u64;
    let ack = send(&mut conn, batch(&service, "acme", n + 1, renumbered(records, 50)));
    assert_eq!(ack.accepted_up_to, n);
    assert_eq!(ack.rejections[0].code, RejectCode::RATE_LIMITED);
    assert!(ack.rejections[0].retryable);
    assert!(ack.retry_after_ms.unwrap() >= 1_000);
}

/// A record naming another device than the connection's certificate (an
/// event's device, a device record's id) is stored as the certificate's:
/// the customer's copy shows no record about the other device.
#[test]
fn records_naming_another_device_are_filed_as_the_certificates_device() {
    use privtel_model::RecordBody;
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let records = admissible(&service, "acme", "other", Program::AnonymousUsage);
    let named = |r: &Record| match &r.body {
        RecordBody::Event(e) => Some(e.device.as_str().to_owned()),
        RecordBody::Device(d) => Some(d.id.as_str().to_owned()),
        _ => None,
    };
    let others: Vec<String> = records.iter().filter_map(named).collect();
    assert!(
        others.iter().any(|d| d == "dev-0001") && others.iter().any(|d| d != "dev-1"),
        "the records name another device: {others:?}"
    );
    let n = records.len() as u64;
    let ack = send(&mut conn, batch(&service, "acme", 1, records));
    assert_eq!((ack.accepted_up_to, ack.rejections.len()), (n, 0), "{:?}", ack.rejections);
    let mut copy = Vec::new();
    service.engine().export_customer(&id("acme"), &serde_json::Map::new(), &mut copy).unwrap();
    let copy = String::from_utf8(copy).unwrap();
    assert!(copy.contains("\"dev-1\""), "the records are in the copy");
    assert!(!copy.contains("dev-0001"), "a stored record names the other device:\n{copy}");
}

/// The customer's rate is read from the settings as they are at each
/// batch: lowered, the next batches are deferred; raised, they pass.
#[test]
fn a_customers_rate_changed_at_run_time_applies_to_its_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let fast = || Settings::from_toml("[customers.acme]\nrecords_per_second = 100000\n").unwrap();
    let slow = || Settings::from_toml("[customers.acme]\nrecords_per_second = 1\n").unwrap();
    let service = service_with(dir.path(), fast());
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let one = admissible(&service, "acme", "r", Program::AnonymousUsage);
    let mut next = 1;
    let mut round = 0;
    let mut send_one = |conn: &mut Connection<End>| {
        round += 1;
        let records = renumbered(one.clone(), round * 100);
        let n = records.len() as u64;
        let ack = send(conn, batch(&service, "acme", next, records));
        if ack.rejections.is_empty() {
            next += n;
        }
        ack
    };
    assert!(send_one(&mut conn).rejections.is_empty());
    // Lowered to 1 a second (a burst of 4): from the next batch on, at
    // most the new burst passes before a deferral.
    service.replace_settings(slow());
    let deferred = (0..10).map(|_| send_one(&mut conn)).filter(|a| !a.rejections.is_empty()).count();
    assert!(deferred >= 9, "{deferred} of 10 batches deferred after the rate fell to 1 a second");
    // Raised again: the next batches pass at once.
    service.replace_settings(fast());
    for _ in 0..10 {
        let ack = send_one(&mut conn);
        assert!(ack.rejections.is_empty(), "deferred after the rate rose: {:?}", ack.rejections);
    }
}

/// An empty batch costs the writer a group all the same: it is held to
/// the customer's rate as a batch of one record.
#[test]
fn empty_batches_are_held_to_the_customers_rate() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_toml("[customers.acme]\nrecords_per_second = 1\n").unwrap();
    let service = service_with(dir.path(), settings);
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let groups = || service.stats().groups.load(std::sync::atomic::Ordering::Relaxed);
    let before = groups();
    let started = std::time::Instant::now();
    let acks: Vec<Ack> = (0..20).map(|_| send(&mut conn, batch(&service, "acme", 1, Vec::new()))).collect();
    // A burst of 4, and one more for each second the 20 took (each batch
    // taken waits for its group's sync).
    let allowed = 4 + started.elapsed().as_secs() as usize + 1;
    let deferred =
        acks.iter().filter(|a| a.rejections.iter().any(|r| r.code == RejectCode::RATE_LIMITED)).count();
    assert!(deferred >= 20 - allowed, "{deferred} of 20 empty batches deferred at 1 a second (a burst of 4)");
    assert!(groups() - before <= allowed as u64, "{} groups written for empty batches", groups() - before);
}

#[test]
fn direct_enrichment_answers_are_written_back_on_the_customers_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = VerdictIndex::new(4, [1; 32]);
    let digest: privtel_model::Digest = privtel_testkit::fixtures::EMPTY_SHA256.parse().unwrap();
    index.add_binary(privtel_model::BinaryVerdict {
        sha256: digest,
        threat: privtel_model::ThreatLevel::High,
        category: None,
    });
    let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    let service =
        Arc::new(Service::new(engine, index, now).with_settings(Settings::from_toml(SETTINGS).unwrap()));
    // On an Enhance session (a device's session takes private queries only).
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_enhance_handshake(&privtel_wire::EnhanceHello::new("test")).unwrap();
    conn.send(&Message::EnrichQuery(privtel_wire::EnrichQuery::Direct {
        query_id: 1,
        binaries: vec![digest],
        domains: vec![],
    }))
    .unwrap();
    assert!(matches!(conn.recv().unwrap(), Message::EnrichAnswer(_)));
    let stored = service.engine().binary_verdict(&id("acme"), &digest).unwrap().expect("written back");
    assert_eq!(stored.verdict.threat, privtel_model::ThreatLevel::High);
    assert!(service.engine().binary_verdict(&id("globex"), &digest).unwrap().is_none(), "per customer");
    // Digests the index does not know are answered, and not written back.
    let made_up: Vec<privtel_model::Digest> =
        (0u8..50).map(|i| privtel_model::Digest::from_bytes([i; 32])).collect();
    conn.send(&Message::EnrichQuery(privtel_wire::EnrichQuery::Direct {
        query_id: 3,
        binaries: made_up.clone(),
        domains: vec![],
    }))
    .unwrap();
    assert!(matches!(conn.recv().unwrap(), Message::EnrichAnswer(_)));
    for d in &made_up {
        assert!(service.engine().binary_verdict(&id("acme"), d).unwrap().is_none());
    }
    // A hostile query is refused, not answered.
    conn.send(&Message::EnrichQuery(privtel_wire::EnrichQuery::Private {
        query_id: 2,
        binaries: vec![privtel_wire::HashPrefix(vec![])],
        domains: vec![],
    }))
    .unwrap();
    assert!(
        matches!(conn.recv().unwrap(), Message::Error(e) if e.code == privtel_wire::ErrorCode::Malformed)
    );
}

/// Events of `user` (anonymous usage, as acme's filter makes them), with
/// event ids from `first_id`.
pub(crate) fn events_of(service: &Service, user: &str, first_id: u128, n: usize) -> Vec<Record> {
    let template = admissible(service, "acme", "e", Program::AnonymousUsage)
        .into_iter()
        .find(|r| matches!(r.body, privtel_model::RecordBody::Event(_)))
        .unwrap();
    (0..n)
        .map(|i| {
            let mut r = template.clone();
            if let privtel_model::RecordBody::Event(e) = &mut r.body {
                e.id = privtel_model::EventId::from_u128(first_id + i as u128);
                e.user = Some(id(user));
            }
            r
        })
        .collect()
}

#[test]
fn a_person_erased_while_the_service_ingests_stays_erased_and_is_never_filed_under_another() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let writer = {
        let service = Arc::clone(&service);
        std::thread::spawn(move || {
            let mut conn = connect(&service, peer("acme", "dev-1"));
            conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
            let mut seq = 1;
            for round in 0..120u128 {
                let mut records = events_of(&service, "u-erased", round * 1_000, 3);
                records.extend(events_of(&service, "u-dsar", round * 1_000 + 100, 3));
                records.extend(events_of(&service, "u-kept", round * 1_000 + 200, 3));
                let n = records.len() as u64;
                let ack = send(&mut conn, batch(&service, "acme", seq, records));
                assert_eq!(ack.accepted_up_to, seq + n - 1);
                assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
                seq += n;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let held = |user: &str| service.export_person(&id("acme"), &id(user), &mut Vec::new()).unwrap();
    let began = std::time::Instant::now();
    while held("u-erased") == 0 || held("u-dsar") == 0 {
        assert!(!writer.is_finished() && began.elapsed().as_secs() < 30, "the writer stopped early");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let receipt = service
        .erase_person(&id("acme"), &privtel_store::ErasureRequest::new("r-1", id("u-erased"), now()))
        .unwrap();
    assert!(receipt.records_removed > 0);
    // The other erasure comes from another process's handle on the same
    // file, as the dsar tool does.
    let mut other =
        SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default().secret([5; 32])).unwrap();
    let receipt = other
        .erase_person(&id("acme"), &privtel_store::ErasureRequest::new("r-2", id("u-dsar"), now()), now())
        .unwrap();
    assert!(receipt.records_removed > 0);
    drop(other);
    writer.join().unwrap();
    for erased in ["u-erased", "u-dsar"] {
        let mut out = Vec::new();
        assert_eq!(service.export_person(&id("acme"), &id(erased), &mut out).unwrap(), 0, "{erased}");
    }
    let mut kept = Vec::new();
    let lines = service.export_person(&id("acme"), &id("u-kept"), &mut kept).unwrap();
    assert_eq!(lines, 360, "every record of the kept person, and only theirs");
    let text = String::from_utf8(kept).unwrap();
    assert!(
        !text.contains("u-erased") && !text.contains("u-dsar"),
        "an erased person's record filed under another"
    );
    assert!(service.stats().suppressed.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let total = service.engine().record_count_of(&id("acme")).unwrap();
    assert_eq!(total, 360, "nothing of the erased people remains");
}

#[test]
fn a_customer_removed_while_connected_is_refused_from_its_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("globex", "dev-1"));
    conn.client_handshake(&hello("globex", "dev-1", 1)).unwrap();
    service.replace_settings(Settings::from_toml("[customers.acme]\n").unwrap());
    let records = admissible(&service, "acme", "x", Program::AnonymousUsage);
    conn.send(&Message::Batch(batch(&service, "acme", 1, records))).unwrap();
    assert!(refused(&mut conn).contains("no settings"));
    assert_eq!(service.engine().record_count().unwrap(), 0);
}

#[test]
fn a_batch_above_the_welcomes_size_is_refused_and_an_empty_one_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    let service = Arc::new(
        Service::new(engine, VerdictIndex::new(4, [1; 32]), now)
            .with_settings(Settings::from_toml(SETTINGS).unwrap())
            .with_max_batch_records(2),
    );
    let mut conn = connect(&service, peer("acme", "dev-1"));
    assert_eq!(conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap().max_batch_records, 2);
    let ack = send(&mut conn, batch(&service, "acme", 1, vec![]));
    assert_eq!((ack.accepted_up_to, ack.rejections.len()), (0, 0));
    let records = admissible(&service, "acme", "big", Program::AnonymousUsage);
    assert!(records.len() > 2);
    conn.send(&Message::Batch(batch(&service, "acme", 1, records))).unwrap();
    assert!(matches!(conn.recv(), Ok(Message::Error(e)) if e.code == privtel_wire::ErrorCode::Protocol));
    assert_eq!(service.engine().record_count().unwrap(), 0);
}

/// Whether `needle` is anywhere in the engine's files (database and log).
pub(crate) fn in_engine_files(dir: &Path, needle: &str) -> bool {
    ["engine.db", "engine.db-wal"].iter().any(|f| {
        std::fs::read(dir.join(f))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

#[test]
fn no_byte_of_an_erased_or_expired_person_remains_in_the_engine_files() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let mut records = events_of(&service, "u-erasedcanary", 1, 5);
    records.extend(events_of(&service, "u-expiredcanary", 100, 5));
    records.extend(events_of(&service, "u-keptcanary", 200, 5));
    assert!(send(&mut conn, batch(&service, "acme", 1, records)).rejections.is_empty());
    for who in ["u-erasedcanary", "u-expiredcanary", "u-keptcanary"] {
        assert!(in_engine_files(dir.path(), who), "{who} not written at all: the scan proves nothing");
    }
    service
        .erase_person(&id("acme"), &privtel_store::ErasureRequest::new("r-1", id("u-erasedcanary"), now()))
        .unwrap();
    assert!(!in_engine_files(dir.path(), "u-erasedcanary"), "erased, yet in the files");
    // Eight days on, past acme's 7: every event expires, and with the last
    // record of a person, the person's id.
    let later = now().checked_add(time::Duration::days(8)).unwrap();
    let reports = service.sweep(later).unwrap();
    assert!(reports.iter().any(|(_, r)| r.events > 0 && r.users == 2));
    assert!(!in_engine_files(dir.path(), "u-expiredcanary"), "expired, yet in the files");
}

#[test]
fn batches_that_wait_for_the_engine_are_written_as_one_group_and_each_gets_its_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path());
    let records = admissible(&service, "acme", "grp", Program::AnonymousUsage);
    let n = records.len() as u64;
    // Eight devices; one of them claims a gap. Their hellos are answered
    // while a writer holds the engine (the welcome's mark comes from a
    // reader).
    let mut conns: Vec<_> = (0..8)
        .map(|i| {
            let device = format!("dev-{i}");
            let mut c = connect(&service, peer("acme", &device));
            assert_eq!(c.client_handshake(&hello("acme", &device, 7)).unwrap().high_water, 0);
            c
        })
        .collect();
    let held = service.engine();
    let waiting: Vec<_> = conns
        .drain(..)
        .enumerate()
        .map(|(i, mut c)| {
            let first_seq = if i == 3 { 50 } else { 1 };
            let b = batch(&service, "acme", first_seq, records.clone());
            std::thread::spawn(move || send(&mut c, b))
        })
        .collect();
    let start = std::time::Instant::now();
    while service.queued_batches() < 8 {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "the batches never queued");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let groups_before = service.stats().groups.load(std::sync::atomic::Ordering::Relaxed);
    drop(held);
    let acks: Vec<Ack> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(service.stats().groups.load(std::sync::atomic::Ordering::Relaxed) - groups_before, 1);
    assert_eq!(service.queued_batches(), 0);
    for (i, ack) in acks.iter().enumerate() {
        if i == 3 {
            assert_eq!(ack.accepted_up_to, 49);
            assert_eq!(ack.rejections.len(), 1);
            assert_eq!(ack.rejections[0].code, RejectCode::SEQUENCE);
        } else {
            assert!(ack.rejections.is_empty(), "{i}: {:?}", ack.rejections);
            assert_eq!(ack.accepted_up_to, n);
        }
    }
    let engine = service.engine();
    assert_eq!(engine.record_count_of(&id("acme")).unwrap(), 7 * n);
    assert_eq!(engine.high_water(&id("acme"), &id("dev-3"), 7).unwrap(), 0);
    assert_eq!(engine.high_water(&id("acme"), &id("dev-4"), 7).unwrap(), n);
}

/// Issue #16 point 2: the licence is a setting the service gives each
/// customer; a policy that switches off what the licence requires is a
/// settings error naming the customer and the program, and nothing loads.
#[test]
fn a_policy_that_contradicts_its_customer_s_licence_is_a_settings_error() {
    use privtel_filter::{LicenceTerms, Offering};
    use privtel_service::SettingsError;

    let settings = Settings::from_toml(
        r#"
[customers.acme.licence]
offering = "cloud"
support_telemetry_opt_out = true
[customers.acme.policy.programs]
support_telemetry = false

[customers.initech.licence]
offering = "on_premises"
[customers.initech.policy.programs]
benchmarking = false

[customers.globex]
"#,
    )
    .unwrap();
    let licence = |c: &str| settings.customer(&id(c)).unwrap().licence();
    assert_eq!(licence("acme"), LicenceTerms::new(Offering::Cloud).support_telemetry_opt_out(true));
    assert_eq!(licence("initech"), LicenceTerms::new(Offering::OnPremises));
    assert_eq!(licence("globex"), LicenceTerms::default(), "no licence table: on premises, no opt-out");
    assert!(!settings.customer(&id("acme")).unwrap().policy().enabled(Program::SupportTelemetry));

    // (settings, customer, program refused)
    let refused = [
        (
            "[customers.globex]\n[customers.globex.policy.programs]\nsupport_telemetry = false\n",
            "globex",
            Program::SupportTelemetry,
        ),
        (
            "[customers.acme]\n[customers.zeta.licence]\noffering = \"cloud\"\nsupport_telemetry_opt_out = true\n\
             [customers.zeta.policy.programs]\nbenchmarking = false\n",
            "zeta",
            Program::Benchmarking,
        ),
        (
            "[customers.zeta.licence]\noffering = \"cloud\"\n[customers.zeta.policy.programs]\n\
             support_telemetry = false\n",
            "zeta",
            Program::SupportTelemetry,
        ),
    ];
    for (text, customer, program) in refused {
        match Settings::from_toml(text) {
            Err(err @ SettingsError::Licence { .. }) => {
                let SettingsError::Licence { customer: c, program: p, .. } = &err else { unreachable!() };
                assert_eq!((c.as_str(), *p), (customer, program), "{text}");
                let message = err.to_string();
                assert!(
                    message.starts_with(&format!(
                        "settings: customer {customer}: program {program} is switched off"
                    )),
                    "{message}"
                );
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // An offering that does not exist, or a setting that does not: the
    // TOML reader's error, with its line.
    let err = Settings::from_toml("[customers.acme.licence]\noffering = \"saas\"\n").unwrap_err();
    assert!(matches!(err, SettingsError::Syntax { line: 2, .. }), "{err}");
    let err =
        Settings::from_toml("[customers.acme.licence]\noffering = \"cloud\"\nbenchmarking_opt_out = true\n")
            .unwrap_err();
    assert!(matches!(err, SettingsError::Syntax { .. }), "{err}");
}

/// The interactions a customer defines reach the service's copy of the
/// policy (and its digest), so admission sees what the devices apply.
#[test]
fn the_customer_s_interactions_are_part_of_its_settings_and_digest() {
    let with = Settings::from_toml(
        "[customers.acme.policy.programs]\npersonalised_usage = true\n\
         [customers.acme.policy.interactions]\n\"CRM.example.com\" = [\"search\"]\n",
    )
    .unwrap();
    let without =
        Settings::from_toml("[customers.acme.policy.programs]\npersonalised_usage = true\n").unwrap();
    let acme = with.customer(&id("acme")).unwrap();
    assert!(acme.policy().interactions.allows(&id("crm.example.com"), "search"));
    assert_ne!(acme.policy_digest(), without.customer(&id("acme")).unwrap().policy_digest());
    let err = Settings::from_toml("[customers.acme.policy.interactions]\n\"10.0.0.1\" = [\"search\"]\n")
        .unwrap_err();
    assert!(
        err.to_string().contains("customer acme: policy line")
            && err.to_string().contains("not an ip address"),
        "{err}"
    );
}

/// A service whose index knows the empty file's digest (a high threat).
fn service_knowing_one_binary(dir: &Path) -> (Arc<Service>, privtel_model::Digest) {
    let mut index = VerdictIndex::new(4, [1; 32]);
    let digest: privtel_model::Digest = privtel_testkit::fixtures::EMPTY_SHA256.parse().unwrap();
    index.add_binary(privtel_model::BinaryVerdict {
        sha256: digest,
        threat: privtel_model::ThreatLevel::High,
        category: None,
    });
    let engine = SqliteEngine::open(dir.join("engine.db"), EngineOptions::default()).unwrap();
    (Arc::new(Service::new(engine, index, now).with_settings(Settings::from_toml(SETTINGS).unwrap())), digest)
}

/// Enrichment is a program the customer switches on or off like any
/// other: with it off (globex, by default), neither sightings nor a
/// query of either kind is answered, and nothing is written back onto
/// the customer's objects; switched on at run time, the next is.
#[test]
fn enrichment_is_refused_to_a_customer_with_the_program_off_and_nothing_is_written_back() {
    use privtel_model::BinarySighting;
    let dir = tempfile::tempdir().unwrap();
    let (service, digest) = service_knowing_one_binary(dir.path());
    let sightings = |query_id| {
        Message::Sightings(privtel_wire::Sightings {
            query_id,
            binaries: vec![BinarySighting::new(digest, None, 0, None, now())],
            domains: Vec::new(),
        })
    };
    let direct = |query_id| {
        Message::EnrichQuery(privtel_wire::EnrichQuery::Direct {
            query_id,
            binaries: vec![digest],
            domains: vec![],
        })
    };
    let private = |query_id| {
        Message::EnrichQuery(privtel_wire::private_query(
            query_id,
            &[digest],
            &[],
            privtel_wire::DEFAULT_PREFIX_LEN,
        ))
    };
    let refused = |m: Message| {
        matches!(m, Message::Error(e) if e.code == privtel_wire::ErrorCode::Forbidden
        && e.message == "the customer has the enrichment program switched off")
    };
    let mut enhance = connect(&service, peer("globex", "dev-1"));
    enhance.client_enhance_handshake(&privtel_wire::EnhanceHello::new("test")).unwrap();
    for m in [sightings(1), direct(2), private(3)] {
        enhance.send(&m).unwrap();
        assert!(refused(enhance.recv().unwrap()), "answered with the program off");
    }
    let mut device = connect(&service, peer("globex", "dev-1"));
    device.client_handshake(&hello("globex", "dev-1", 1)).unwrap();
    device.send(&private(4)).unwrap();
    assert!(refused(device.recv().unwrap()));
    assert!(service.engine().binary_verdict(&id("globex"), &digest).unwrap().is_none(), "written back");
    assert_eq!(service.stats().enrich_refused.load(std::sync::atomic::Ordering::Relaxed), 4);
    // The customer switches it on: the same session is answered and the
    // verdict written back.
    let on =
        SETTINGS.replace("[customers.globex]\n", "[customers.globex.policy.programs]\nenrichment = true\n");
    assert_ne!(on, SETTINGS);
    service.replace_settings(Settings::from_toml(&on).unwrap());
    enhance.send(&sightings(5)).unwrap();
    assert!(matches!(enhance.recv().unwrap(), Message::EnrichAnswer(_)));
    assert!(service.engine().binary_verdict(&id("globex"), &digest).unwrap().is_some());
}

/// Digests and names in clear travel only on an Enhance session, which
/// names no device: on a device's session a direct query is refused as
/// sightings are (`Protocol`, the connection closed), nothing written
/// back; a private query (hash prefixes) is answered.
#[test]
fn a_direct_enrichment_query_beside_a_device_id_is_refused_and_nothing_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let (service, digest) = service_knowing_one_binary(dir.path());
    let mut device = connect(&service, peer("acme", "dev-1"));
    device.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    device
        .send(&Message::EnrichQuery(privtel_wire::private_query(
            1,
            &[digest],
            &[],
            privtel_wire::DEFAULT_PREFIX_LEN,
        )))
        .unwrap();
    assert!(matches!(device.recv().unwrap(), Message::EnrichAnswer(_)), "a private query is answered");
    device
        .send(&Message::EnrichQuery(privtel_wire::EnrichQuery::Direct {
            query_id: 2,
            binaries: vec![digest],
            domains: vec![],
        }))
        .unwrap();
    assert!(
        matches!(device.recv().unwrap(), Message::Error(e) if e.code == privtel_wire::ErrorCode::Protocol),
        "a direct query answered beside a device id"
    );
    assert!(device.recv().is_err(), "the connection is closed");
    assert!(service.engine().binary_verdict(&id("acme"), &digest).unwrap().is_none(), "written back");
}

/// A verdict written back onto the customer's objects is a write to its
/// store, and costs its rate as a record does: sightings sent without end
/// are all answered, but beyond the rate nothing more is written (the
/// store other customers' batches wait for is not held by them).
#[test]
fn verdicts_written_back_cost_the_customers_rate_and_beyond_it_are_answered_unwritten() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (service, digest) = service_knowing_one_binary(dir.path());
    let slow = SETTINGS.replace("[customers.acme]\n", "[customers.acme]\nrecords_per_second = 1\n");
    assert_ne!(slow, SETTINGS);
    service.replace_settings(Settings::from_toml(&slow).unwrap());
    let mut enhance = connect(&service, peer("acme", "dev-1"));
    enhance.client_enhance_handshake(&privtel_wire::EnhanceHello::new("test")).unwrap();
    let started = std::time::Instant::now();
    for query_id in 0..40 {
        enhance
            .send(&Message::Sightings(privtel_wire::Sightings {
                query_id,
                binaries: vec![privtel_model::BinarySighting::new(digest, None, 0, None, now())],
                domains: Vec::new(),
            }))
            .unwrap();
        assert!(matches!(enhance.recv().unwrap(), Message::EnrichAnswer(_)), "every sighting is answered");
    }
    let written_at_most = 4 + started.elapsed().as_secs() + 1;
    let not_written = service.stats().verdicts_not_written.load(Ordering::Relaxed);
    assert!(
        not_written >= 40 - written_at_most,
        "only {not_written} of 40 verdicts not written at 1 a second"
    );
    assert!(
        service.engine().binary_verdict(&id("acme"), &digest).unwrap().is_some(),
        "the first are written"
    );
}

//! The real service over mutual TLS on 127.0.0.1: enrollment, identities
//! from certificates only, tenants that cannot reach each other,
//! revocation and renewal without a restart, clones, the connection cap,
//! and clients that drip bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use privtel_authority::{Authority, Credentials, DeviceKey};
use privtel_model::{Program, Timestamp};
use privtel_service::{Limits, Service, Settings};
use privtel_store::{EngineOptions, EngineStore as _, SqliteEngine};
use privtel_wire::tls::ClientStream;
use privtel_wire::{Connection, ErrorCode, Message, VerdictIndex};

use super::{SETTINGS, admissible, batch, hello, id};

fn wall() -> Timestamp {
    Timestamp::from(time::OffsetDateTime::now_utc())
}

struct Running {
    service: Arc<Service>,
    authority: Arc<Authority>,
    addr: SocketAddr,
    server_ca: String,
    stop: Arc<AtomicBool>,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn start(limits: Limits) -> Running {
    start_in(limits, SETTINGS, None)
}

/// A service with `settings`, serving `region` only when one is given.
fn start_in(limits: Limits, settings: &str, region: Option<&str>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let authority = Arc::new(Authority::open(dir.path().join("authority.db")).unwrap());
    for c in ["acme", "globex"] {
        authority.add_customer(&id(c), wall().as_offset_date_time()).unwrap();
    }
    let identity = privtel_wire::tls::generate_identity(&["127.0.0.1"]).unwrap();
    let config = privtel_authority::server_config(&authority, &identity).unwrap();
    let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    let mut service = Service::new(engine, VerdictIndex::new(4, [1; 32]), wall)
        .with_settings(Settings::from_toml(settings).unwrap())
        .with_authority(Arc::clone(&authority))
        .with_limits(limits);
    if let Some(r) = region {
        service = service.with_region(r);
    }
    let service = Arc::new(service);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (service, stop) = (Arc::clone(&service), Arc::clone(&stop));
        std::thread::spawn(move || service.serve_tls(&listener, &config, &stop));
    }
    Running { service, authority, addr, server_ca: identity.ca_pem, stop, dir }
}

fn limits() -> Limits {
    Limits::default()
}

impl Running {
    /// Enrolls (customer, device) with a fresh one-use token.
    fn enroll(&self, customer: &str, device: &str) -> Result<Credentials, String> {
        let token = self
            .authority
            .issue_token(&id(customer), time::Duration::hours(1), 1, wall().as_offset_date_time())
            .unwrap();
        self.enroll_with(&token, customer, device, &DeviceKey::generate().unwrap())
    }

    fn enroll_with(
        &self,
        token: &str,
        customer: &str,
        device: &str,
        key: &DeviceKey,
    ) -> Result<Credentials, String> {
        let config = privtel_authority::enrollment_client_config(&self.server_ca).unwrap();
        let stream = privtel_wire::tls::connect(self.addr, "127.0.0.1", config).unwrap();
        let mut conn = Connection::new(stream);
        let request = privtel_authority::request(Some(token), &id(customer), &id(device), key).unwrap();
        conn.send(&Message::EnrollRequest(request)).map_err(|e| e.to_string())?;
        match conn.recv().map_err(|e| e.to_string())? {
            Message::Enrolled(e) => {
                Ok(privtel_authority::accept(key, &id(customer), &id(device), e).unwrap())
            }
            Message::Error(e) => Err(e.message),
            other => Err(format!("unexpected {}", other.kind_name())),
        }
    }

    /// A mutual-TLS connection with `credentials`.
    fn session(&self, credentials: &Credentials) -> Connection<ClientStream> {
        let config = privtel_authority::client_config(&self.server_ca, credentials).unwrap();
        let stream = privtel_wire::tls::connect(self.addr, "127.0.0.1", config).unwrap();
        Connection::new(stream)
    }
}

/// The answer to a hello: a welcome, or the refusal's message.
fn say_hello(conn: &mut Connection<ClientStream>, customer: &str, device: &str) -> Result<u64, String> {
    conn.client_handshake(&hello(customer, device, 1)).map(|w| w.high_water).map_err(|e| e.to_string())
}

fn forbidden(conn: &mut Connection<ClientStream>) -> bool {
    matches!(conn.recv(), Ok(Message::Error(e)) if e.code == ErrorCode::Forbidden)
}

#[test]
fn a_device_writes_as_itself_only_and_never_into_another_tenant() {
    let run = start(limits());
    let acme = run.enroll("acme", "dev-1").unwrap();
    let globex = run.enroll("globex", "dev-1").unwrap();
    // Its own identity: stored under acme.
    let mut conn = run.session(&acme);
    say_hello(&mut conn, "acme", "dev-1").unwrap();
    let records = admissible(&run.service, "acme", "t", Program::AnonymousUsage);
    let n = records.len() as u64;
    conn.send(&Message::Batch(batch(&run.service, "acme", 1, records))).unwrap();
    assert!(
        matches!(conn.recv().unwrap(), Message::Ack(a) if a.accepted_up_to == n && a.rejections.is_empty())
    );
    // Acme's certificate saying hello as globex's device, or as another
    // acme device: refused, nothing moved.
    for (c, d) in [("globex", "dev-1"), ("acme", "dev-victim")] {
        let mut conn = run.session(&acme);
        let _ = say_hello(&mut conn, c, d);
        assert!(forbidden(&mut conn), "{c}/{d}");
        conn.send(&Message::Batch(batch(
            &run.service,
            c,
            1,
            admissible(&run.service, c, "x", Program::AnonymousUsage),
        )))
        .ok();
    }
    let engine = run.service.engine();
    assert_eq!(engine.record_count_of(&id("globex")).unwrap(), 0);
    assert_eq!(engine.high_water(&id("globex"), &id("dev-1"), 1).unwrap(), 0);
    assert_eq!(engine.high_water(&id("acme"), &id("dev-victim"), 1).unwrap(), 0);
    drop(engine);
    // Globex's own device with the same device id is a device of its own.
    let mut conn = run.session(&globex);
    assert_eq!(say_hello(&mut conn, "globex", "dev-1").unwrap(), 0, "not acme's mark");
    // A renewal naming another identity is refused.
    let key = DeviceKey::generate().unwrap();
    let mut conn = run.session(&acme);
    say_hello(&mut conn, "acme", "dev-1").unwrap();
    conn.send(&Message::EnrollRequest(
        privtel_authority::request(None, &id("globex"), &id("dev-1"), &key).unwrap(),
    ))
    .unwrap();
    assert!(forbidden(&mut conn));
}

#[test]
fn a_peer_without_a_certificate_may_only_enroll_and_a_token_works_once() {
    let run = start(limits());
    let config = privtel_authority::enrollment_client_config(&run.server_ca).unwrap();
    let mut conn = Connection::new(privtel_wire::tls::connect(run.addr, "127.0.0.1", config).unwrap());
    conn.send(&Message::Hello(hello("acme", "dev-1", 1))).unwrap();
    assert!(matches!(conn.recv(), Ok(Message::Error(e)) if e.code == ErrorCode::Forbidden));
    let token = run
        .authority
        .issue_token(&id("acme"), time::Duration::hours(1), 1, wall().as_offset_date_time())
        .unwrap();
    run.enroll_with(&token, "acme", "dev-1", &DeviceKey::generate().unwrap()).unwrap();
    let again = run.enroll_with(&token, "acme", "dev-2", &DeviceKey::generate().unwrap()).unwrap_err();
    assert!(!again.contains(&token), "the refusal echoes the token: {again}");
    // A token of acme cannot enroll into globex.
    let token = run
        .authority
        .issue_token(&id("acme"), time::Duration::hours(1), 1, wall().as_offset_date_time())
        .unwrap();
    assert!(run.enroll_with(&token, "globex", "dev-1", &DeviceKey::generate().unwrap()).is_err());
}

#[test]
fn revocation_and_renewal_apply_without_a_restart_and_clones_are_reported() {
    let run = start(limits());
    let creds = run.enroll("acme", "dev-1").unwrap();
    let mut conn = run.session(&creds);
    say_hello(&mut conn, "acme", "dev-1").unwrap();
    // Renewal with a new key, over the authenticated connection.
    let key = DeviceKey::generate().unwrap();
    conn.send(&Message::EnrollRequest(
        privtel_authority::request(None, &id("acme"), &id("dev-1"), &key).unwrap(),
    ))
    .unwrap();
    let renewed = match conn.recv().unwrap() {
        Message::Enrolled(e) => privtel_authority::accept(&key, &id("acme"), &id("dev-1"), e).unwrap(),
        other => panic!("{other:?}"),
    };
    // The old certificate (the old key) is refused now.
    let mut old = run.session(&creds);
    assert!(say_hello(&mut old, "acme", "dev-1").is_err());
    let mut new = run.session(&renewed);
    say_hello(&mut new, "acme", "dev-1").unwrap();
    // A clone: the same identity enrolling with another key.
    let clone = run.enroll("acme", "dev-1").unwrap_err();
    assert!(clone.contains("already enrolled"), "{clone}");
    let reports = run.authority.reports(Some(&id("acme")), time::OffsetDateTime::UNIX_EPOCH).unwrap();
    assert!(!reports.is_empty(), "the clone is reported");
    // Revoked by an administrator's own handle on the register (another
    // process in production): refused at the next connection.
    let admin = Authority::open(run.dir.path().join("authority.db")).unwrap();
    assert!(admin.revoke_device(&id("acme"), &id("dev-1"), wall().as_offset_date_time()).unwrap());
    let mut after = run.session(&renewed);
    assert!(say_hello(&mut after, "acme", "dev-1").is_err());
    assert!(run.service.stats().forbidden.load(Ordering::Relaxed) >= 2);
}

#[test]
fn beyond_the_connection_cap_a_connection_is_closed_and_a_freed_slot_serves_the_next() {
    let mut l = limits();
    l.max_connections = 3;
    let run = start(l);
    let creds = run.enroll("acme", "dev-1").unwrap();
    let mut held: Vec<_> = (0..3)
        .map(|_| {
            let mut c = run.session(&creds);
            say_hello(&mut c, "acme", "dev-1").unwrap();
            c
        })
        .collect();
    let mut over = run.session(&creds);
    assert!(say_hello(&mut over, "acme", "dev-1").is_err(), "the fourth is closed");
    assert!(run.service.stats().over_capacity.load(Ordering::Relaxed) >= 1);
    drop(held.pop());
    // The slot frees once the service sees the close: an agent retrying
    // with backoff gets in.
    let start = Instant::now();
    loop {
        let mut c = run.session(&creds);
        if say_hello(&mut c, "acme", "dev-1").is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no slot freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connections one after another, alternating two tenants' devices of
/// the same id, each storing a batch and then trying the other's identity:
/// with threads kept, a few threads serve them all, each connection as
/// itself (nothing of one connection's identity stays on its thread for
/// the next); with none kept, a thread each.
#[test]
fn connection_threads_are_kept_for_the_next_connection_and_serve_each_as_itself() {
    for kept in [64, 0] {
        let mut l = limits();
        l.idle_threads = kept;
        let run = start(l);
        let creds = [
            ("acme", run.enroll("acme", "dev-1").unwrap()),
            ("globex", run.enroll("globex", "dev-1").unwrap()),
        ];
        let mut stored = [0u64; 2];
        for i in 0..30 {
            let (me, other) = (i % 2, 1 - i % 2);
            let (customer, c) = (&creds[me].0, &creds[me].1);
            let mut conn = run.session(c);
            assert_eq!(say_hello(&mut conn, customer, "dev-1").unwrap(), stored[me], "{customer}'s own mark");
            let records = admissible(&run.service, customer, &format!("k{i}"), Program::AnonymousUsage);
            let n = records.len() as u64;
            conn.send(&Message::Batch(batch(&run.service, customer, stored[me] + 1, records))).unwrap();
            match conn.recv().unwrap() {
                Message::Ack(a) => assert_eq!(a.accepted_up_to, stored[me] + n, "{customer}"),
                other => panic!("expected an ack, got {}", other.kind_name()),
            }
            stored[me] += n;
            drop(conn);
            // The same thread, likely, next: the other tenant's identity
            // is still refused.
            let mut conn = run.session(c);
            let _ = say_hello(&mut conn, creds[other].0, "dev-1");
            assert!(forbidden(&mut conn), "{customer} as {}", creds[other].0);
        }
        let stats = run.service.stats();
        let engine = run.service.engine();
        let mut rows = 0;
        for (i, (customer, _)) in creds.iter().enumerate() {
            let of = engine.record_count_of(&id(customer)).unwrap();
            assert!(of > 0, "{customer}");
            rows += of;
            assert_eq!(engine.high_water(&id(customer), &id("dev-1"), 1).unwrap(), stored[i], "{customer}");
        }
        assert_eq!(rows, stats.stored.load(Ordering::Relaxed), "every stored row under one of the two");
        drop(engine);
        let (made, connections) =
            (stats.threads.load(Ordering::Relaxed), stats.connections.load(Ordering::Relaxed));
        assert_eq!(connections, 62, "2 enrollments and 60 sessions");
        if kept == 0 {
            assert_eq!(made, connections, "none kept: a thread each");
        } else {
            // One after another: a thread is made only when the previous
            // connection's has not come back yet.
            assert!(made <= connections / 3, "{made} threads made for {connections} connections");
        }
    }
}

/// A connection closed by its idle deadline leaves nothing of that
/// deadline on its thread: the next connections, served by kept threads,
/// run well past it.
#[test]
fn a_deadline_that_closed_a_connection_does_not_stay_on_its_kept_thread() {
    let mut l = limits();
    l.idle = Duration::from_secs(1);
    let run = start(l);
    let creds = run.enroll("acme", "dev-1").unwrap();
    let quiet = |run: &Running| {
        let t0 = Instant::now();
        while run.service.active_connections() > 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "a connection still served");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Its thread back to waiting for the next.
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut silent = run.session(&creds);
    say_hello(&mut silent, "acme", "dev-1").unwrap();
    let t0 = Instant::now();
    match silent.recv() {
        Err(_) | Ok(Message::Error(_)) => {}
        Ok(other) => panic!("expected the connection closed, got {}", other.kind_name()),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "closed after {:?}", t0.elapsed());
    drop(silent);
    quiet(&run);
    let made = run.service.stats().threads.load(Ordering::Relaxed);
    let mut high_water = 0;
    for i in 0..4 {
        let mut conn = run.session(&creds);
        assert_eq!(say_hello(&mut conn, "acme", "dev-1").unwrap(), high_water);
        // Under the deadline each time; the four together far past the
        // silent connection's.
        std::thread::sleep(Duration::from_millis(600));
        let records = admissible(&run.service, "acme", &format!("d{i}"), Program::AnonymousUsage);
        let n = records.len() as u64;
        conn.send(&Message::Batch(batch(&run.service, "acme", high_water + 1, records))).unwrap();
        match conn.recv().unwrap() {
            Message::Ack(a) => assert_eq!(a.accepted_up_to, high_water + n),
            other => panic!("expected an ack, got {}", other.kind_name()),
        }
        high_water += n;
        drop(conn);
        quiet(&run);
    }
    assert_eq!(run.service.stats().threads.load(Ordering::Relaxed), made, "all on kept threads");
}

#[test]
fn a_thousand_dripping_connections_are_closed_within_the_deadlines() {
    let frame = Duration::from_secs(2);
    let mut l = limits();
    (l.frame, l.handshake, l.idle) = (frame, Duration::from_secs(2), Duration::from_secs(3));
    // All 1,000 from one host and 500 of one device: each drips until its
    // deadline, none is turned away by the host's or the device's cap.
    (l.max_handshakes_per_address, l.max_per_device) = (1_000, 1_000);
    let run = start(l);
    let creds = run.enroll("acme", "dev-1").unwrap();
    // Half drip inside a frame after a proper hello; half drip the TLS
    // handshake itself.
    let mut framed: Vec<Connection<ClientStream>> = (0..500)
        .map(|_| {
            let mut c = run.session(&creds);
            say_hello(&mut c, "acme", "dev-1").unwrap();
            c
        })
        .collect();
    let mut raw: Vec<TcpStream> = (0..500)
        .map(|_| {
            let t = TcpStream::connect(run.addr).unwrap();
            t.set_nonblocking(true).unwrap();
            t
        })
        .collect();
    let began = Instant::now();
    let header = [b'P', b'T', 2, 3, 0, 0, 0xff, 0xff, 0, 0];
    let mut closed_at = vec![None; 1000];
    for round in 0.. {
        let byte = header[round % header.len()];
        for (i, c) in framed.iter_mut().enumerate() {
            if closed_at[i].is_none()
                && (c.get_mut().write_all(&[byte]).and_then(|()| c.get_mut().flush())).is_err()
            {
                closed_at[i] = Some(began.elapsed());
            }
        }
        for (i, t) in raw.iter_mut().enumerate() {
            if closed_at[500 + i].is_none() && t.write_all(&[0x16]).is_err() {
                closed_at[500 + i] = Some(began.elapsed());
            }
        }
        // A closed socket shows as an end of stream on a read too.
        for (i, t) in raw.iter_mut().enumerate() {
            if closed_at[500 + i].is_some() {
                continue;
            }
            let mut b = [0; 64];
            let closed = match t.read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            if closed {
                closed_at[500 + i] = Some(began.elapsed());
            }
        }
        if closed_at.iter().all(Option::is_some) || began.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let open = closed_at.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} dripping connections still open after 20 s");
    let latest = closed_at.iter().flatten().max().unwrap();
    // Each deadline plus the tick and this loop's own pace.
    assert!(*latest < frame + Duration::from_secs(4), "the last closed after {latest:?}");
    // And an honest device is served meanwhile and after.
    let mut c = run.session(&creds);
    say_hello(&mut c, "acme", "dev-1").unwrap();
}

#[test]
fn enhance_over_mutual_tls_needs_a_certificate_and_keeps_nothing_of_the_device() {
    use privtel_model::{BinarySighting, Digest, DomainSighting};
    use privtel_wire::{EnhanceHello, EnrichAnswer, Sightings};
    let run = start(limits());
    let sightings = Sightings {
        query_id: 1,
        binaries: vec![BinarySighting::new(Digest::from_bytes([5; 32]), None, 10, None, wall())],
        domains: vec![DomainSighting::new("example.com".parse().unwrap(), wall())],
    };
    // Without a certificate: refused, as everything but enrollment.
    let config = privtel_authority::enrollment_client_config(&run.server_ca).unwrap();
    let mut conn = Connection::new(privtel_wire::tls::connect(run.addr, "127.0.0.1", config).unwrap());
    let refused = conn.client_enhance_handshake(&EnhanceHello::new("test")).unwrap_err();
    assert!(matches!(refused, privtel_wire::Error::Remote { code: ErrorCode::Forbidden, .. }), "{refused}");
    // With one: welcomed, answered, and nothing stored under the device.
    let acme = run.enroll("acme", "dev-1").unwrap();
    let mut conn = run.session(&acme);
    assert_eq!(conn.client_enhance_handshake(&EnhanceHello::new("test")).unwrap().high_water, 0);
    conn.send(&Message::Sightings(sightings)).unwrap();
    match conn.recv().unwrap() {
        Message::EnrichAnswer(EnrichAnswer::Direct { query_id: 1, binaries, domains }) => {
            assert_eq!((binaries.len(), domains.len()), (1, 1));
        }
        other => panic!("expected a direct answer, got {}", other.kind_name()),
    }
    // A batch has no place on an Enhance session.
    let records = admissible(&run.service, "acme", "t", Program::AnonymousUsage);
    conn.send(&Message::Batch(batch(&run.service, "acme", 1, records))).unwrap();
    assert!(matches!(conn.recv(), Ok(Message::Error(e)) if e.code == ErrorCode::Protocol));
    assert_eq!(run.service.engine().record_count_of(&id("acme")).unwrap(), 0);
    assert_eq!(run.service.engine().high_water(&id("acme"), &id("dev-1"), 1).unwrap(), 0);
}

#[test]
fn a_service_of_the_us_refuses_to_enroll_or_serve_a_customer_pinned_to_the_eu() {
    let settings = "[customers.acme]\nregion = \"eu\"\n[customers.acme.policy.programs]\nanonymous_usage = true\n\
                    [customers.globex]\nregion = \"us\"\n[customers.globex.policy.programs]\nanonymous_usage = true\n";
    let run = start_in(limits(), settings, Some("us"));
    // Enrollment through the US service: refused for acme, done for globex.
    let e = run.enroll("acme", "dev-1").unwrap_err();
    assert!(e.contains("another region"), "{e}");
    assert!(run.authority.device(&id("acme"), &id("dev-1")).unwrap().is_none(), "nothing enrolled");
    let globex = run.enroll("globex", "dev-1").unwrap();
    let mut conn = run.session(&globex);
    say_hello(&mut conn, "globex", "dev-1").unwrap();
    // An acme device enrolled elsewhere (its EU service, the same register
    // here) is refused by the US service over its valid certificate.
    let key = DeviceKey::generate().unwrap();
    let token = run
        .authority
        .issue_token(&id("acme"), time::Duration::hours(1), 1, wall().as_offset_date_time())
        .unwrap();
    let request = privtel_authority::request(Some(&token), &id("acme"), &id("dev-2"), &key).unwrap();
    let enrolled = run.authority.enroll(&request, wall().as_offset_date_time()).unwrap();
    let acme = privtel_authority::accept(&key, &id("acme"), &id("dev-2"), enrolled).unwrap();
    let mut conn = run.session(&acme);
    let _ = conn.send(&Message::Hello(hello("acme", "dev-2", 1)));
    match conn.recv() {
        Ok(Message::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Forbidden);
            assert!(e.message.contains("another region"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(run.service.stats().wrong_region.load(Ordering::Relaxed), 2);
    assert_eq!(run.service.engine().record_count_of(&id("acme")).unwrap(), 0);
}

/// Issue #16 point 6: a device that skips its filter (or lies) sends
/// interaction events for a web application and an action the customer's
/// policy does not define. The real service over mutual TLS refuses each
/// with its own code and counter, names neither in the reason, and stores
/// nothing of them; the defined interaction of the same batch is stored.
#[test]
fn an_interaction_the_customer_did_not_define_is_refused_over_tls_and_a_defined_one_stored() {
    use privtel_filter::{FilterBuilder, PseudonymKey};
    use privtel_model::{Domain, EventBody, EventId, KeyId, RecordBody};
    use privtel_wire::RejectCode;

    const DEFINED: &str = r#"
[customers.acme]
[customers.acme.policy.programs]
personalised_usage = true
[customers.acme.policy.interactions]
"crm.example.com" = ["create_ticket", "search"]
"#;
    let run = start_in(limits(), DEFINED, None);
    let creds = run.enroll("acme", "dev-1").unwrap();
    let policy = run.service.settings().customer(&id("acme")).unwrap().policy().clone();
    let filter = FilterBuilder::new()
        .policy(policy)
        .customer(id("acme"))
        .key(PseudonymKey::new(KeyId::new(1), [3; 32]))
        .build();
    let fixture = privtel_testkit::fixtures::interaction();
    let defined = filter.apply(fixture, &mut Default::default()).expect("defined").into_record();
    // The filtered record, changed only where the definitions are.
    let lie = |n: u128, application: &str, action: &str| {
        let mut r = defined.clone();
        let RecordBody::Event(e) = &mut r.body else { unreachable!() };
        e.id = EventId::from_u128(n);
        let EventBody::Interaction(i) = &mut e.body else { unreachable!() };
        i.application = Domain::new(application).unwrap();
        i.action = action.into();
        r
    };
    let records = vec![
        lie(100, "crm.example.com", "read_mail_canaryact"),
        defined.clone(),
        lie(101, "canaryapp.example.net", "search"),
        lie(102, "crm.example.com", "Search"),
    ];
    let mut conn = run.session(&creds);
    say_hello(&mut conn, "acme", "dev-1").unwrap();
    conn.send(&Message::Batch(batch(&run.service, "acme", 1, records))).unwrap();
    let Message::Ack(ack) = conn.recv().unwrap() else { panic!("expected an ack") };
    assert_eq!(ack.accepted_up_to, 4);
    let refused: Vec<(u64, RejectCode, bool)> =
        ack.rejections.iter().map(|r| (r.seq, r.code, r.retryable)).collect();
    assert_eq!(
        refused,
        [
            (1, RejectCode::INTERACTION, false),
            (3, RejectCode::INTERACTION, false),
            (4, RejectCode::INTERACTION, false)
        ]
    );
    for r in &ack.rejections {
        assert!(
            !r.reason.contains("canary") && !r.reason.contains("crm"),
            "a reason names a value: {}",
            r.reason
        );
    }
    let counts = &run.service.stats().records_refused;
    assert_eq!(counts.interaction.load(Ordering::Relaxed), 3);
    assert_eq!(counts.kind.load(Ordering::Relaxed) + counts.field_form.load(Ordering::Relaxed), 0);
    // Only the defined interaction is stored.
    let engine = run.service.engine();
    assert_eq!(engine.record_count_of(&id("acme")).unwrap(), 1);
    let mut out = Vec::new();
    assert_eq!(engine.export_person(&id("acme"), &id("u-1042"), &mut out).unwrap(), 1);
    let line: serde_json::Value = serde_json::from_slice(out.trim_ascii_end()).unwrap();
    assert_eq!(line["kind"], "interaction");
    assert_eq!(line["record"]["body"]["event"]["body"]["interaction"]["action"], "create_ticket");
    drop(engine);
    // Nothing of the refused ones in any file the service wrote (the
    // engine is not sealed here: the stored action is readable, so the
    // scan can see).
    let mut seen_defined = false;
    for entry in std::fs::read_dir(run.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!has(b"canaryact") && !has(b"canaryapp"), "a refused interaction was written");
        seen_defined |= has(b"create_ticket");
    }
    assert!(seen_defined, "the scan reads the stored rows");
}

#[test]
fn a_revoked_devices_open_connection_is_refused_at_its_next_batch() {
    let run = start(limits());
    let creds = run.enroll("acme", "dev-1").unwrap();
    let mut conn = run.session(&creds);
    say_hello(&mut conn, "acme", "dev-1").unwrap();
    let records = admissible(&run.service, "acme", "before", Program::AnonymousUsage);
    let n = records.len() as u64;
    conn.send(&Message::Batch(batch(&run.service, "acme", 1, records))).unwrap();
    assert!(matches!(conn.recv().unwrap(), Message::Ack(a) if a.accepted_up_to == n));
    // Revoked by an administrator in another process (a stolen laptop).
    let admin = Authority::open(run.dir.path().join("authority.db")).unwrap();
    assert!(admin.revoke_device(&id("acme"), &id("dev-1"), wall().as_offset_date_time()).unwrap());
    let mut fresh = run.session(&creds);
    assert!(say_hello(&mut fresh, "acme", "dev-1").is_err(), "a new connection is refused");
    // The connection opened before the revocation.
    let more = admissible(&run.service, "acme", "after", Program::AnonymousUsage);
    let m = more.len() as u64;
    conn.send(&Message::Batch(batch(&run.service, "acme", n + 1, more))).unwrap();
    let answer = conn.recv();
    let stored = run.service.engine().high_water(&id("acme"), &id("dev-1"), 1).unwrap();
    assert!(
        matches!(answer, Ok(Message::Error(ref e)) if e.code == ErrorCode::Forbidden) && stored == n,
        "revoked device still served: {answer:?}; high-water {stored} (was {n}, batch of {m})"
    );
}

#[test]
fn renewals_are_held_to_the_connections_message_rate() {
    let mut l = limits();
    l.messages_per_second = 1; // bursts of 2
    let run = start(l);
    let creds = run.enroll("acme", "dev-1").unwrap();
    let key = creds.key().unwrap();
    let mut conn = run.session(&creds);
    say_hello(&mut conn, "acme", "dev-1").unwrap();
    // Renewals as fast as the connection takes them.
    let request = privtel_authority::request(None, &id("acme"), &id("dev-1"), &key).unwrap();
    let started = Instant::now();
    let mut issued = 0;
    for _ in 0..40 {
        conn.send(&Message::EnrollRequest(request.clone())).unwrap();
        if matches!(conn.recv().unwrap(), Message::Enrolled(_)) {
            issued += 1;
        }
    }
    let took = started.elapsed();
    assert!(issued >= 1, "the first renewals are served");
    assert!(
        issued as u64 <= 2 + took.as_secs() + 1,
        "{issued} certificates signed (each a synced register write) in {took:?} at 1 message a second"
    );
}

/// Strangers through TLS (no certificate: they may only enroll) hold at
/// most `max_enrolling` connections, however many addresses they have;
/// each gets the handshake's deadline for its one request and a small
/// frame; a device with a certificate is served meanwhile.
#[test]
fn strangers_without_a_certificate_hold_at_most_max_enrolling_and_not_for_long() {
    let mut l = limits();
    l.max_enrolling = 8;
    l.handshake = Duration::from_secs(2);
    let run = start(l);
    let device = run.enroll("acme", "dev-1").unwrap();
    let stranger = || {
        let config = privtel_authority::enrollment_client_config(&run.server_ca).unwrap();
        // The handshake done now (`connect` leaves it to the first use).
        let stream = privtel_wire::tls::connect_within(run.addr, "127.0.0.1", config, Duration::from_secs(5));
        Connection::new(stream.unwrap())
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < until, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Eight silent strangers take every enrolling place.
    let silent: Vec<_> = (0..8).map(|_| stranger()).collect();
    wait_for("8 strangers held", &|| run.service.enrolling_connections() == 8);
    // A ninth is told to retry later, even with a good token.
    let token = run
        .authority
        .issue_token(&id("acme"), time::Duration::hours(1), 1, wall().as_offset_date_time())
        .unwrap();
    let refused = run.enroll_with(&token, "acme", "dev-2", &DeviceKey::generate().unwrap()).unwrap_err();
    assert!(refused.contains("retry later"), "{refused}");
    assert!(run.service.stats().over_enrolling.load(Ordering::Relaxed) >= 1);
    // A device with its certificate is served meanwhile.
    let mut conn = run.session(&device);
    assert_eq!(say_hello(&mut conn, "acme", "dev-1"), Ok(0));
    // The silent ones are closed once the handshake's deadline (2 s) is
    // over, not the idle one (120 s)...
    let started = Instant::now();
    for mut s in silent {
        assert!(s.recv().is_err(), "a silent stranger is closed");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    // ... and the token, unspent, now enrolls.
    wait_for("the strangers' places freed", &|| run.service.enrolling_connections() == 0);
    run.enroll_with(&token, "acme", "dev-2", &DeviceKey::generate().unwrap()).unwrap();
    // An enrollment request above 64 KiB is not read.
    let mut big = stranger();
    let mut request =
        privtel_authority::request(Some(&token), &id("acme"), &id("dev-3"), &DeviceKey::generate().unwrap())
            .unwrap();
    request.csr_der = vec![0; 100 << 10];
    let _ = big.send(&Message::EnrollRequest(request));
    assert!(!matches!(big.recv(), Ok(Message::Enrolled(_))));
}

/// Each renewal signs a certificate and syncs the authority's register
/// under the lock every handshake takes: a device renewing on all its
/// connections at once gets one certificate, not one a message.
#[test]
fn a_device_renewing_on_every_connection_gets_one_certificate_a_minute() {
    let run = start(limits());
    let creds = run.enroll("acme", "dev-1").unwrap();
    let key = creds.key().unwrap();
    let request = privtel_authority::request(None, &id("acme"), &id("dev-1"), &key).unwrap();
    let enrolled_before = run.service.stats().enrolled.load(Ordering::Relaxed);
    let mut conns: Vec<_> = (0..4)
        .map(|_| {
            let mut c = run.session(&creds);
            say_hello(&mut c, "acme", "dev-1").unwrap();
            c
        })
        .collect();
    let (mut issued, mut held_back) = (0, 0);
    for _ in 0..5 {
        for c in &mut conns {
            c.send(&Message::EnrollRequest(request.clone())).unwrap();
            match c.recv().unwrap() {
                Message::Enrolled(_) => issued += 1,
                Message::Error(e) => {
                    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
                    assert!(e.retryable && e.message.contains("renewed less than a minute ago"), "{e:?}");
                    held_back += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!((issued, held_back), (1, 19));
    assert_eq!(run.service.stats().enrolled.load(Ordering::Relaxed), enrolled_before + 1);
    // The connections go on: a batch on each is still taken.
    let records = admissible(&run.service, "acme", "after", Program::AnonymousUsage);
    let n = records.len() as u64;
    let c = &mut conns[3];
    c.send(&Message::Batch(batch(&run.service, "acme", 1, records))).unwrap();
    assert!(matches!(c.recv().unwrap(), Message::Ack(a) if a.accepted_up_to == n));
}

/// A copy of a device's key (a cloned disk, a stolen backup) connects
/// before the device renews with a new key: from its next message on, the
/// copy's connection is refused, as a new connection with the old key is;
/// the connection that renewed goes on as its new certificate.
#[test]
fn a_connection_whose_key_was_replaced_is_refused_at_its_next_message() {
    use privtel_model::Digest;
    let run = start(limits());
    let old = run.enroll("acme", "dev-1").unwrap();
    let mut copy = run.session(&old);
    say_hello(&mut copy, "acme", "dev-1").unwrap();
    let first = admissible(&run.service, "acme", "first", Program::AnonymousUsage);
    let n = first.len() as u64;
    copy.send(&Message::Batch(batch(&run.service, "acme", 1, first))).unwrap();
    assert!(matches!(copy.recv().unwrap(), Message::Ack(a) if a.accepted_up_to == n));
    let mut copy_asking = run.session(&old);
    say_hello(&mut copy_asking, "acme", "dev-1").unwrap();

    // The device renews with a new key over its own connection, and sends
    // on it afterwards.
    let mut device = run.session(&old);
    assert_eq!(say_hello(&mut device, "acme", "dev-1").unwrap(), n);
    let key = DeviceKey::generate().unwrap();
    device
        .send(&Message::EnrollRequest(
            privtel_authority::request(None, &id("acme"), &id("dev-1"), &key).unwrap(),
        ))
        .unwrap();
    let renewed = match device.recv().unwrap() {
        Message::Enrolled(e) => privtel_authority::accept(&key, &id("acme"), &id("dev-1"), e).unwrap(),
        other => panic!("{other:?}"),
    };
    let second = admissible(&run.service, "acme", "second", Program::AnonymousUsage);
    let m = second.len() as u64;
    device.send(&Message::Batch(batch(&run.service, "acme", n + 1, second))).unwrap();
    let answer = device.recv();
    assert!(
        matches!(answer, Ok(Message::Ack(ref a)) if a.accepted_up_to == n + m),
        "the renewing connection goes on: {answer:?}"
    );

    // The copy's open connection: its next batch is refused, nothing moves.
    let third = admissible(&run.service, "acme", "third", Program::AnonymousUsage);
    copy.send(&Message::Batch(batch(&run.service, "acme", n + m + 1, third))).unwrap();
    let answer = copy.recv();
    assert!(
        matches!(answer, Ok(Message::Error(ref e)) if e.code == ErrorCode::Forbidden && e.message.contains("key was replaced")),
        "the old key's connection still served: {answer:?}"
    );
    assert_eq!(run.service.engine().high_water(&id("acme"), &id("dev-1"), 1).unwrap(), n + m);
    // Its other open connection is not answered either.
    let query =
        privtel_wire::private_query(1, &[Digest::from_bytes([5; 32])], &[], privtel_wire::DEFAULT_PREFIX_LEN);
    copy_asking.send(&Message::EnrichQuery(query.clone())).unwrap();
    assert!(forbidden(&mut copy_asking), "a query of the old key's connection is answered");
    // The device's own connection is.
    device.send(&Message::EnrichQuery(query)).unwrap();
    assert!(matches!(device.recv().unwrap(), Message::EnrichAnswer(_)));
    // The new certificate opens new connections; the old one does not.
    let mut again = run.session(&renewed);
    assert_eq!(say_hello(&mut again, "acme", "dev-1").unwrap(), n + m);
    let mut stale = run.session(&old);
    assert!(say_hello(&mut stale, "acme", "dev-1").is_err());
}

/// An Enhance session opened before its device was revoked, or before its
/// customer's settings were removed, is refused at its next question.
#[test]
fn an_enhance_session_is_refused_once_its_device_is_revoked_or_its_customer_removed() {
    use privtel_model::{BinarySighting, Digest};
    use privtel_wire::{EnhanceHello, Sightings};
    let run = start(limits());
    let sightings = |query_id| Sightings {
        query_id,
        binaries: vec![BinarySighting::new(Digest::from_bytes([5; 32]), None, 10, None, wall())],
        domains: Vec::new(),
    };
    let revoked = run.enroll("acme", "dev-1").unwrap();
    let kept = run.enroll("acme", "dev-2").unwrap();
    let mut conn = run.session(&revoked);
    conn.client_enhance_handshake(&EnhanceHello::new("test")).unwrap();
    let mut other = run.session(&kept);
    other.client_enhance_handshake(&EnhanceHello::new("test")).unwrap();
    conn.send(&Message::Sightings(sightings(1))).unwrap();
    assert!(matches!(conn.recv().unwrap(), Message::EnrichAnswer(_)), "answered while enrolled");

    let admin = Authority::open(run.dir.path().join("authority.db")).unwrap();
    assert!(admin.revoke_device(&id("acme"), &id("dev-1"), wall().as_offset_date_time()).unwrap());
    conn.send(&Message::Sightings(sightings(2))).unwrap();
    let answer = conn.recv();
    assert!(
        matches!(answer, Ok(Message::Error(ref e)) if e.code == ErrorCode::Forbidden && e.message.contains("revoked")),
        "a revoked device's enhance session still answered: {answer:?}"
    );
    // Another device of the customer is still answered, until the
    // customer's settings go.
    other.send(&Message::Sightings(sightings(3))).unwrap();
    assert!(matches!(other.recv().unwrap(), Message::EnrichAnswer(_)));
    run.service.replace_settings(Settings::from_toml("[customers.globex]\n").unwrap());
    other.send(&Message::Sightings(sightings(4))).unwrap();
    assert!(forbidden(&mut other), "a removed customer's enhance session still answered");
}

/// Set in the process [`an_accept_loop_out_of_file_descriptors_pauses_rather_than_spins`] starts.
const CHILD: &str = "PRIVTEL_SERVICE_TLS_CHILD";

/// This process's CPU time (user and system), from `/proc/self/stat`
/// opened beforehand (read again from its start: no descriptor needed).
fn process_cpu(file: &mut std::fs::File) -> Duration {
    use std::io::Seek as _;
    file.rewind().unwrap();
    let mut stat = String::new();
    file.read_to_string(&mut stat).unwrap();
    // The fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks of 1/100 s.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after.split(' ').skip(11).take(2).map(|f| f.parse().unwrap()).collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// Out of file descriptors, every accept fails at once: the accept loop
/// pauses after each failure instead of spinning on a core, and serves
/// the waiting connections once descriptors are free again. Run in a
/// process of its own with a low `ulimit -n`.
#[test]
fn an_accept_loop_out_of_file_descriptors_pauses_rather_than_spins() {
    let name = "tls::child_an_accept_loop_out_of_file_descriptors";
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{name} in its own process:\n{text}");
}

#[test]
#[ignore = "run by an_accept_loop_out_of_file_descriptors_pauses_rather_than_spins in a process of its own"]
fn child_an_accept_loop_out_of_file_descriptors() {
    if std::env::var_os(CHILD).is_none() {
        return; // run on its own (`--include-ignored`): only its parent test sets the limit
    }
    // Every connection waits in its handshake, from this one address: none
    // is to be closed for the address's share, so the service's
    // descriptors run out.
    let mut l = limits();
    l.max_handshakes_per_address = 10_000;
    let run = start(l);
    let creds = run.enroll("acme", "dev-1").unwrap();
    let mut stat = std::fs::File::open("/proc/self/stat").unwrap();
    // Connections until the process has no descriptor left: each takes
    // the client's end, and the service's once accepted.
    let mut held = Vec::new();
    while let Ok(tcp) = TcpStream::connect(run.addr) {
        held.push(tcp);
        assert!(held.len() < 10_000, "no descriptor limit");
    }
    let failures = || run.service.stats().accept_failures.load(Ordering::Relaxed);
    let waited = Instant::now();
    while failures() == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "accepts never failed ({} connections)",
            held.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (cpu0, failed0) = (process_cpu(&mut stat), failures());
    std::thread::sleep(Duration::from_secs(2));
    let (cpu, failed) = (process_cpu(&mut stat) - cpu0, failures() - failed0);
    println!("{} connections; in 2 s: {failed} failed accepts, {cpu:?} of CPU", held.len());
    assert!(
        cpu < Duration::from_millis(500),
        "{cpu:?} of CPU in 2 s while accepts failed ({failed} of them)"
    );
    assert!(failed <= 2_000 / 50 + 10, "{failed} failed accepts in 2 s");
    // Descriptors free again: the device is served.
    drop(held);
    let mut conn = run.session(&creds);
    assert_eq!(say_hello(&mut conn, "acme", "dev-1"), Ok(0));
}

/// The refusal a hello gets: its code and words, or `None` if welcomed.
fn refusal(conn: &mut Connection<ClientStream>, customer: &str, device: &str) -> Option<(ErrorCode, String)> {
    match conn.client_handshake(&hello(customer, device, 1)) {
        Ok(_) => None,
        Err(privtel_wire::Error::Remote { code, message }) => Some((code, message)),
        Err(e) => panic!("expected a welcome or an error message, got {e}"),
    }
}

/// Opens `n` connections of `credentials`, each welcomed.
fn hold(
    run: &Running,
    credentials: &Credentials,
    customer: &str,
    device: &str,
    n: usize,
) -> Vec<Connection<ClientStream>> {
    (0..n)
        .map(|i| {
            let mut c = run.session(credentials);
            if let Some(refused) = refusal(&mut c, customer, device) {
                panic!("connection {i} of {customer}/{device} refused: {refused:?}");
            }
            c
        })
        .collect()
}

/// Retries a new connection of `credentials` every 50 ms for at most
/// 10 s, until one is welcomed (a seat frees once the service has seen
/// its connection close).
fn welcomed_soon(
    run: &Running,
    credentials: &Credentials,
    customer: &str,
    device: &str,
) -> Connection<ClientStream> {
    let start = Instant::now();
    loop {
        let mut c = run.session(credentials);
        // Refused with a message (a seat), or closed before TLS (a slot).
        match c.client_handshake(&hello(customer, device, 1)) {
            Ok(_) => return c,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(10), "still refused after 10 s: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One device (a copied key, a runaway agent) and one customer's fleet
/// cannot take the connections every other device needs: beyond the
/// device's cap (`Limits::max_per_device`) and its customer's own
/// (`max_connections` in the settings) a connection is answered
/// `Unavailable`, retryable, and counted; the same device id of another
/// customer is another device; a seat frees when its connection ends,
/// and a customer's cap raised at run time serves the next connection.
#[test]
fn a_device_and_a_customer_hold_at_most_their_caps_and_every_other_device_is_served() {
    let mut l = limits();
    l.max_per_device = 3;
    let settings = SETTINGS.replace("[customers.acme]\n", "[customers.acme]\nmax_connections = 5\n");
    assert_ne!(settings, SETTINGS);
    let run = start_in(l, &settings, None);
    let dev1 = run.enroll("acme", "dev-1").unwrap();
    let dev2 = run.enroll("acme", "dev-2").unwrap();
    let dev3 = run.enroll("acme", "dev-3").unwrap();
    let other = run.enroll("globex", "dev-1").unwrap();
    let stats = run.service.stats();

    let mut held = hold(&run, &dev1, "acme", "dev-1", 3);
    let mut fourth = run.session(&dev1);
    assert_eq!(
        refusal(&mut fourth, "acme", "dev-1"),
        Some((ErrorCode::Unavailable, "the device has 3 connections open, expected at most 3".into()))
    );
    held.extend(hold(&run, &dev2, "acme", "dev-2", 2));
    let mut sixth = run.session(&dev3);
    assert_eq!(
        refusal(&mut sixth, "acme", "dev-3"),
        Some((
            ErrorCode::Unavailable,
            "the customer's devices have 5 connections open, expected at most 5".into()
        ))
    );
    assert_eq!(stats.over_tenant_cap.load(Ordering::Relaxed), 2);
    // Another customer's device of the same id, which has no customer cap
    // of its own, holds its own three, and stores a batch.
    let mut theirs = hold(&run, &other, "globex", "dev-1", 3);
    let records = admissible(&run.service, "globex", "capped", Program::AnonymousUsage);
    let n = records.len() as u64;
    theirs[0].send(&Message::Batch(batch(&run.service, "globex", 1, records))).unwrap();
    assert!(matches!(theirs[0].recv().unwrap(), Message::Ack(a) if a.accepted_up_to == n));
    assert_eq!(run.service.connections_of(&id("acme")), 5);
    assert_eq!(run.service.connections_of(&id("globex")), 3);

    // One of acme's connections ends: dev-3 gets its seat.
    drop(held.pop());
    let _dev3 = welcomed_soon(&run, &dev3, "acme", "dev-3");
    let mut over = run.session(&dev3);
    assert!(refusal(&mut over, "acme", "dev-3").is_some(), "acme is at 5 again");
    // The administrator raises acme's cap while the service runs.
    let raised = SETTINGS.replace("[customers.acme]\n", "[customers.acme]\nmax_connections = 6\n");
    run.service.replace_settings(Settings::from_toml(&raised).unwrap());
    let mut sixth = run.session(&dev3);
    assert_eq!(refusal(&mut sixth, "acme", "dev-3"), None, "served under the raised cap");
    // Every seat comes back when its connection ends.
    drop((held, sixth, _dev3, theirs));
    let start = Instant::now();
    while run.service.connections_of(&id("acme")) + run.service.connections_of(&id("globex")) > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "seats still held after their connections closed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client socket from `source` (another loopback address than the
/// service's own 127.0.0.1, which Linux routes as well) to `to`.
#[cfg(target_os = "linux")]
fn tcp_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Whether the service closed `tcp` (an end of stream or an error on a
/// read that would otherwise wait).
#[cfg(target_os = "linux")]
fn closed_by_service(tcp: &mut TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let mut b = [0; 16];
    match tcp.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A stranger's host opening connections without end, silent in the
/// handshake or through with it but never enrolling, holds its own
/// address's share of handshakes (`Limits::max_handshakes_per_address`),
/// not the service: beyond it a connection is closed before any TLS
/// byte and counted, while devices from other addresses, and connections
/// already authenticated, are served. Its slots come back when its
/// connections end.
#[test]
#[cfg(target_os = "linux")] // 127.0.0.2 is a loopback address of Linux only
fn one_host_holding_handshakes_open_takes_its_own_share_and_other_hosts_are_served() {
    let mut l = limits();
    // The silent sockets that got a slot keep it for the whole test.
    (l.max_handshakes_per_address, l.handshake) = (8, Duration::from_secs(30));
    let run = start(l);
    let creds = run.enroll("acme", "dev-1").unwrap();
    let stats = run.service.stats();
    // Authenticated before the flood.
    let mut before = run.session(&creds);
    say_hello(&mut before, "acme", "dev-1").unwrap();

    // The flood, from 127.0.0.1: four strangers through TLS without a
    // certificate (may only enroll), then 200 silent sockets.
    let enroll = privtel_authority::enrollment_client_config(&run.server_ca).unwrap();
    let mut strangers: Vec<ClientStream> = (0..4)
        .map(|_| {
            privtel_wire::tls::connect_within(
                run.addr,
                "127.0.0.1",
                Arc::clone(&enroll),
                Duration::from_secs(5),
            )
            .unwrap()
        })
        .collect();
    let mut silent: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(run.addr).unwrap()).collect();
    let start = Instant::now();
    let open = loop {
        std::thread::sleep(Duration::from_millis(100));
        let open = silent.iter_mut().map(closed_by_service).filter(|closed| !closed).count();
        if open <= 4 || start.elapsed() > Duration::from_secs(8) {
            break open;
        }
    };
    assert_eq!(open, 4, "of 200 silent sockets, all but the address's 8 slots less the 4 strangers closed");
    assert!(stats.over_handshakes.load(Ordering::Relaxed) >= 196);

    // A device from another host is served during the flood.
    let config = privtel_authority::client_config(&run.server_ca, &creds).unwrap();
    let name = privtel_wire::tls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = privtel_wire::tls::rustls::ClientConnection::new(config, name).unwrap();
    let tcp = tcp_from("127.0.0.2", run.addr);
    let stream = privtel_wire::tls::rustls::StreamOwned::new(tls, privtel_wire::tls::Socket::new(tcp));
    let mut elsewhere = Connection::new(stream);
    say_hello(&mut elsewhere, "acme", "dev-1").unwrap();
    // And the connection authenticated before it stores a batch.
    let records = admissible(&run.service, "acme", "flood", Program::AnonymousUsage);
    let n = records.len() as u64;
    before.send(&Message::Batch(batch(&run.service, "acme", 1, records))).unwrap();
    assert!(matches!(before.recv().unwrap(), Message::Ack(a) if a.accepted_up_to == n));
    // From the flooding host itself, nothing new gets in while it holds
    // its share, a device of it included.
    let refused = stats.over_handshakes.load(Ordering::Relaxed);
    let mut same_host = run.session(&creds);
    assert!(say_hello(&mut same_host, "acme", "dev-1").is_err(), "the host's share is taken");
    assert_eq!(stats.over_handshakes.load(Ordering::Relaxed), refused + 1, "closed for its address's share");

    // The strangers and the silent sockets go: the host's share is free.
    strangers.iter_mut().for_each(|s| {
        let _ = s.sock.get_ref().shutdown(std::net::Shutdown::Both);
    });
    drop((strangers, silent));
    let _served = welcomed_soon(&run, &creds, "acme", "dev-1");
}

//! Deadlines over TLS: the handshake within a deadline however the client
//! drips it, and a TLS record dripped faster than the socket's tick cut off
//! at the connection's deadline, not when the record is complete; and a
//! peer that stops reading while the other side sends a large frame cut
//! off at the frame deadline, in both directions.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use privtel_model::{Digest, ThreatLevel};
use privtel_wire::tls::{self, rustls};
use privtel_wire::{
    BinaryEntry, Bucket, Connection, DEADLINE_TICK, DeadlineKind, EnrichAnswer, Error, Goodbye, HashPrefix,
    Message,
};

struct Setup {
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn setup() -> Setup {
    let identity = tls::generate_identity(&["127.0.0.1"]).unwrap();
    Setup {
        listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        server: tls::server_config(&identity).unwrap(),
        client: tls::client_config(&identity.ca_pem).unwrap(),
    }
}

fn goodbye(reason: &str) -> Message {
    Message::Goodbye(Goodbye { reason: reason.into() })
}

/// A raw rustls client over `tcp`, handshake done.
fn raw_client(tcp: &mut TcpStream, config: Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
    let mut conn = rustls::ClientConnection::new(config, "127.0.0.1".try_into().unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(tcp).unwrap();
    }
    conn
}

/// Sends `bytes` one at a time, `every` apart, until done or the peer
/// leaves; returns how many went.
fn drip(tcp: &mut TcpStream, bytes: &[u8], every: Duration) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if tcp.write_all(std::slice::from_ref(b)).is_err() {
            return i;
        }
        std::thread::sleep(every);
    }
    bytes.len()
}

#[test]
fn a_silent_client_meets_the_handshake_deadline() {
    let s = setup();
    let _client = TcpStream::connect(s.listener.local_addr().unwrap()).unwrap();
    let (tcp, _) = s.listener.accept().unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    let err = tls::accept_within(tcp, s.server, deadline).unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, Error::Deadline { which: DeadlineKind::Handshake, limit } if limit == deadline),
        "{err}"
    );
    assert!(took >= deadline && took < deadline + 2 * DEADLINE_TICK, "took {took:?}");
    assert_eq!(
        err.to_string(),
        "handshake deadline of 300 ms passed: expected the tls handshake to complete within it"
    );
}

#[test]
fn a_client_hello_dripped_faster_than_the_tick_meets_the_handshake_deadline() {
    let s = setup();
    let addr = s.listener.local_addr().unwrap();
    // The real client hello, sent a byte every 10 ms (the handshake's tick
    // is 250 ms, so no socket read ever times out).
    let mut hello = Vec::new();
    let mut cc = rustls::ClientConnection::new(s.client.clone(), "127.0.0.1".try_into().unwrap()).unwrap();
    cc.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a client hello of {} bytes", hello.len());
    let dripper = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        drip(&mut tcp, &hello, Duration::from_millis(10))
    });
    let (tcp, _) = s.listener.accept().unwrap();
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    let err = tls::accept_within(tcp, s.server, deadline).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::Deadline { which: DeadlineKind::Handshake, .. }), "{err}");
    assert!(took < deadline + Duration::from_millis(150), "took {took:?}");
    let sent = dripper.join().unwrap();
    assert!(sent < 60, "the dripper got {sent} bytes in");
}

#[test]
fn a_record_dripped_faster_than_the_tick_meets_the_connection_deadline() {
    let s = setup();
    let addr = s.listener.local_addr().unwrap();
    let client_config = s.client.clone();
    let dripper = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut conn = raw_client(&mut tcp, client_config);
        // One frame in one TLS record of about 600 bytes: 6 s at 10 ms a
        // byte, and each byte comes well within the server's tick.
        let mut frame = Vec::new();
        Connection::new(&mut frame).send(&goodbye(&"d".repeat(600))).unwrap();
        conn.writer().write_all(&frame).unwrap();
        let mut record = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut record).unwrap();
        }
        drip(&mut tcp, &record, Duration::from_millis(10))
    });
    let (tcp, _) = s.listener.accept().unwrap();
    tcp.set_read_timeout(Some(DEADLINE_TICK)).unwrap();
    tcp.set_write_timeout(Some(DEADLINE_TICK)).unwrap();
    let stream = tls::accept_within(tcp, s.server, Duration::from_secs(5)).unwrap();
    // The socket's own timeouts apply again without a deadline.
    let (read, write) = stream.sock.own_timeouts();
    for own in [read, write] {
        let own = own.expect("the socket's own timeout");
        assert!(own.abs_diff(DEADLINE_TICK) < Duration::from_millis(20), "{own:?}");
    }
    let idle = Duration::from_millis(400);
    let mut conn = Connection::new(stream).with_deadlines(idle, Duration::from_secs(30));
    let start = Instant::now();
    let err = conn.recv().unwrap_err();
    let took = start.elapsed();
    // No byte of the frame was readable (the record was never complete):
    // the idle deadline.
    assert!(matches!(err, Error::Deadline { which: DeadlineKind::Idle, .. }), "{err}");
    assert!(took >= idle && took < idle + Duration::from_millis(200), "took {took:?}");
    drop(conn);
    let sent = dripper.join().unwrap();
    assert!(sent < 200, "the dripper got {sent} bytes in");
}

#[test]
fn prompt_peers_talk_over_tls_with_deadlines_and_short_ticks() {
    let s = setup();
    let addr = s.listener.local_addr().unwrap();
    let tick = Duration::from_millis(20);
    let server = std::thread::spawn(move || {
        let (tcp, _) = s.listener.accept().unwrap();
        tcp.set_read_timeout(Some(tick)).unwrap();
        tcp.set_write_timeout(Some(tick)).unwrap();
        let stream = tls::accept_within(tcp, s.server, Duration::from_secs(10)).unwrap();
        let mut conn =
            Connection::new(stream).with_deadlines(Duration::from_secs(10), Duration::from_secs(10));
        // Echo twice: a small message and a 3 MiB one (many records, reads
        // that time out in the middle of records).
        for _ in 0..2 {
            let msg = conn.recv().unwrap();
            conn.send(&msg).unwrap();
        }
    });
    let mut stream = tls::connect_within(addr, "127.0.0.1", s.client, Duration::from_secs(10)).unwrap();
    stream.sock.set_timeouts(Some(tick), Some(tick)).unwrap();
    let mut conn = Connection::new(stream).with_deadlines(Duration::from_secs(10), Duration::from_secs(10));
    for msg in [goodbye("hi"), goodbye(&"big".repeat(1 << 20))] {
        conn.send(&msg).unwrap();
        assert_eq!(conn.recv().unwrap(), msg);
    }
    server.join().unwrap();
}

#[test]
fn a_handshake_that_fails_is_a_tls_error_not_a_deadline() {
    let s = setup();
    let addr = s.listener.local_addr().unwrap();
    let other = tls::generate_identity(&["127.0.0.1"]).unwrap();
    let untrusting = tls::client_config(&other.ca_pem).unwrap();
    let client = std::thread::spawn(move || {
        tls::connect_within(addr, "127.0.0.1", untrusting, Duration::from_secs(5)).unwrap_err()
    });
    let (tcp, _) = s.listener.accept().unwrap();
    let err = tls::accept_within(tcp, s.server, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    let err = client.join().unwrap();
    assert!(
        matches!(&err, Error::Tls(m) if m.contains("certificate") || m.contains("UnknownIssuer")),
        "{err}"
    );
}

/// A private enrichment answer of about `mib` MiB: one bucket of entries
/// (the service's answers can be megabytes).
fn large_answer(mib: usize) -> Message {
    let entries = (0..(mib << 20) / 36)
        .map(|i: usize| BinaryEntry {
            sha256: {
                let mut bytes = [0; 32];
                bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Digest::from_bytes(bytes)
            },
            threat: ThreatLevel::None,
            category: None,
        })
        .collect();
    Message::EnrichAnswer(EnrichAnswer::Private {
        query_id: 1,
        binaries: vec![Bucket { prefix: HashPrefix(vec![0xe3, 0xb0]), entries }],
        domains: Vec::new(),
    })
}

/// Runs `send` (which returns what its `Connection::send` gave) on a thread
/// and waits for it at most 30 s, so a send that blocks for good fails the
/// test instead of hanging the suite; returns the result and the time the
/// send took.
fn send_guarded(
    send: impl FnOnce() -> (privtel_wire::Result<()>, Duration) + Send + 'static,
) -> (privtel_wire::Result<()>, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(send());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the send is still blocked 30 s later: the frame deadline was not kept")
}

#[test]
fn an_agent_sending_to_a_tls_service_that_stopped_reading_meets_the_frame_deadline() {
    let s = setup();
    let addr = s.listener.local_addr().unwrap();
    // The service completes the handshake, then never reads again and keeps
    // the connection open until the test ends.
    let (hold, held) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (tcp, _) = s.listener.accept().unwrap();
        let _stream = tls::accept_within(tcp, s.server, Duration::from_secs(10)).unwrap();
        let _ = held.recv();
    });
    let client = s.client;
    let frame = Duration::from_secs(1);
    let (result, took) = send_guarded(move || {
        // As the agent's TLS connector does: no timeout on the socket.
        let stream = tls::connect_within(addr, "127.0.0.1", client, Duration::from_secs(10)).unwrap();
        assert_eq!(stream.sock.own_timeouts().1, None);
        let mut conn = Connection::new(stream).with_deadlines(Duration::from_secs(10), frame);
        // Near the frame limit: far more than the socket buffers hold.
        let big = goodbye(&"z".repeat(15 << 20));
        let start = Instant::now();
        (conn.send(&big), start.elapsed())
    });
    drop(hold);
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Deadline { which: DeadlineKind::Frame, limit } if limit == frame), "{err}");
    assert!(took >= frame && took < frame + Duration::from_millis(500), "took {took:?}");
}

#[test]
fn a_tls_service_answering_a_client_that_stopped_reading_meets_the_frame_deadline() {
    let s = setup();
    let addr = s.listener.local_addr().unwrap();
    // The client sends its query, then never reads again and keeps the
    // connection open until the test ends.
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let client = s.client;
    std::thread::spawn(move || {
        let stream = tls::connect_within(addr, "127.0.0.1", client, Duration::from_secs(10)).unwrap();
        let mut conn = Connection::new(stream);
        conn.send(&goodbye("query")).unwrap();
        let _ = held.recv();
    });
    let answer = large_answer(14);
    let mut bytes = Vec::new();
    Connection::new(&mut bytes).send(&answer).unwrap();
    assert!(bytes.len() > 12 << 20, "an answer of {} bytes", bytes.len());
    let frame = Duration::from_secs(1);
    let (result, took) = send_guarded(move || {
        // The service's accept, without a tick on the socket.
        let (tcp, _) = s.listener.accept().unwrap();
        let stream = tls::accept_within(tcp, s.server, Duration::from_secs(10)).unwrap();
        assert_eq!(stream.sock.own_timeouts().1, None);
        let mut conn = Connection::new(stream).with_deadlines(Duration::from_secs(10), frame);
        assert_eq!(conn.recv().unwrap(), goodbye("query"));
        let start = Instant::now();
        (conn.send(&answer), start.elapsed())
    });
    drop(hold);
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Deadline { which: DeadlineKind::Frame, limit } if limit == frame), "{err}");
    assert!(took >= frame && took < frame + Duration::from_millis(500), "took {took:?}");
    assert_eq!(err.to_string(), "frame deadline of 1 s passed: expected the whole frame within it");
}

//! Deadlines against slow and silent peers, over plain TCP and over TLS:
//! a peer that drips bytes (slower or faster than the socket's tick), says
//! nothing, or never reads, is cut off at the deadline, not at the peer's
//! pleasure; a well-behaved peer never sees a deadline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use privtel_wire::{Connection, DeadlineKind, Error, Goodbye, Message};

const TICK: Duration = Duration::from_millis(50);

fn goodbye(reason: &str) -> Message {
    Message::Goodbye(Goodbye { reason: reason.into() })
}

/// The encoded frame of `msg`.
fn frame_bytes(msg: &Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    Connection::new(&mut bytes).send(msg).unwrap();
    bytes
}

/// A connected pair of TCP streams on the loopback; the server side has a
/// read and write timeout of one tick.
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(TICK)).unwrap();
    server.set_write_timeout(Some(TICK)).unwrap();
    client.set_nodelay(true).unwrap();
    (server, client)
}

/// Sends `bytes` one at a time, `every` apart, until they are gone or the
/// peer is; returns how many went.
fn drip(mut to: impl Write, bytes: &[u8], every: Duration) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if to.write_all(std::slice::from_ref(b)).and_then(|()| to.flush()).is_err() {
            return i;
        }
        std::thread::sleep(every);
    }
    bytes.len()
}

fn assert_deadline(err: &Error, which: DeadlineKind, limit: Duration) {
    match err {
        Error::Deadline { which: w, limit: l } => assert_eq!((*w, *l), (which, limit), "{err}"),
        other => panic!("expected the {which} deadline, got: {other}"),
    }
}

#[test]
fn a_silent_peer_meets_the_idle_deadline() {
    let (server, _client) = pair();
    let idle = Duration::from_millis(300);
    let mut conn = Connection::new(server).with_deadlines(idle, Duration::from_secs(30));
    let start = Instant::now();
    let err = conn.recv().unwrap_err();
    let took = start.elapsed();
    assert_deadline(&err, DeadlineKind::Idle, idle);
    assert!(took >= idle && took < idle + 4 * TICK, "took {took:?}");
    assert_eq!(
        err.to_string(),
        "idle deadline of 300 ms passed: expected the first byte of a frame within it"
    );
}

#[test]
fn a_drip_slower_than_the_tick_meets_the_frame_deadline() {
    let (server, client) = pair();
    let frame = Duration::from_millis(400);
    let bytes = frame_bytes(&goodbye("a reason long enough to take a while"));
    let dripper = std::thread::spawn(move || drip(client, &bytes, 3 * TICK));
    let mut conn = Connection::new(server).with_deadlines(Duration::from_secs(30), frame);
    let start = Instant::now();
    let err = conn.recv().unwrap_err();
    let took = start.elapsed();
    assert_deadline(&err, DeadlineKind::Frame, frame);
    // The frame clock starts at the first byte (at once here).
    assert!(took >= frame && took < frame + 4 * TICK, "took {took:?}");
    drop(conn);
    let sent = dripper.join().unwrap();
    assert!(sent < 20, "the dripper got {sent} bytes in");
}

#[test]
fn a_drip_faster_than_the_tick_meets_the_frame_deadline_too() {
    // Every read returns a byte before the socket's timeout: the clocks are
    // checked between reads all the same.
    let (server, client) = pair();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let frame = Duration::from_millis(300);
    let bytes = frame_bytes(&goodbye(&"x".repeat(200)));
    let dripper = std::thread::spawn(move || drip(client, &bytes, Duration::from_millis(10)));
    let mut conn = Connection::new(server).with_deadlines(Duration::from_secs(30), frame);
    let start = Instant::now();
    let err = conn.recv().unwrap_err();
    assert_deadline(&err, DeadlineKind::Frame, frame);
    assert!(start.elapsed() < frame + Duration::from_millis(200), "took {:?}", start.elapsed());
    drop(conn);
    dripper.join().unwrap();
}

#[test]
fn a_prompt_peer_never_meets_a_deadline_and_timeouts_are_retried() {
    let (server, mut client) = pair();
    // Two frames: the first whole after a pause longer than a tick, the
    // second split in the middle by another pause.
    let first = frame_bytes(&goodbye("one"));
    let second = frame_bytes(&goodbye(&"two".repeat(10_000)));
    let writer = std::thread::spawn(move || {
        std::thread::sleep(3 * TICK);
        client.write_all(&first).unwrap();
        client.write_all(&second[..second.len() / 2]).unwrap();
        std::thread::sleep(3 * TICK);
        client.write_all(&second[second.len() / 2..]).unwrap();
        client
    });
    let mut conn = Connection::new(server).with_deadlines(Duration::from_secs(5), Duration::from_secs(5));
    assert_eq!(conn.recv().unwrap(), goodbye("one"));
    assert_eq!(conn.recv().unwrap(), goodbye(&"two".repeat(10_000)));
    assert_eq!(conn.deadlines(), Some((Duration::from_secs(5), Duration::from_secs(5))));
    drop(writer.join().unwrap());
    // A clean end is still `Closed`, not a deadline.
    assert!(matches!(conn.recv(), Err(Error::Closed)));
}

#[test]
fn without_deadlines_a_timeout_is_an_io_error_as_before() {
    let (server, _client) = pair();
    let err = Connection::new(server).recv().unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{err}"
    );
}

#[test]
fn a_peer_that_never_reads_meets_the_frame_deadline_when_sending() {
    let (server, client) = pair();
    let frame = Duration::from_millis(400);
    let mut conn = Connection::new(server).with_deadlines(Duration::from_secs(30), frame);
    // Far more than the socket buffers hold.
    let big = goodbye(&"z".repeat(12 << 20));
    let start = Instant::now();
    let err = conn.send(&big).unwrap_err();
    assert_deadline(&err, DeadlineKind::Frame, frame);
    assert!(start.elapsed() < frame + 4 * TICK, "took {:?}", start.elapsed());
    drop(client);
}

#[test]
fn a_deadline_of_duration_max_never_overflows() {
    let mut wire = frame_bytes(&goodbye("x"));
    wire.extend(frame_bytes(&goodbye("y")));
    let mut conn = Connection::new(wire.as_slice()).with_deadlines(Duration::MAX, Duration::MAX);
    assert_eq!(conn.recv().unwrap(), goodbye("x"));
    assert_eq!(conn.recv().unwrap(), goodbye("y"));
    assert!(matches!(conn.recv(), Err(Error::Closed)));
    let mut out = Vec::new();
    Connection::new(&mut out).with_deadlines(Duration::MAX, Duration::MAX).send(&goodbye("z")).unwrap();
    assert_eq!(out, frame_bytes(&goodbye("z")));
}

/// A reader handing out its bytes one at a time, each after a pause, and
/// then timing out forever: the idle clock covers skipped frames too.
struct Slow {
    bytes: Vec<u8>,
    at: usize,
    pause: Duration,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.pause);
        if self.at == self.bytes.len() || buf.is_empty() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        buf[0] = self.bytes[self.at];
        self.at += 1;
        Ok(1)
    }
}

impl Write for Slow {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn skipped_frames_count_against_the_same_frame_clock() {
    // After negotiation, frames of unknown kinds are skipped; a peer
    // sending them forever must not hold one `recv` past its deadlines.
    let hello = super::samples()[0].1.clone();
    let mut bytes = frame_bytes(&hello);
    let mut unknown = Vec::new();
    privtel_wire::encode_frame(&privtel_wire::Frame::new(2, 200, 0, vec![1; 4]), 1 << 20, &mut unknown)
        .unwrap();
    for _ in 0..1000 {
        bytes.extend_from_slice(&unknown);
    }
    let frame = Duration::from_millis(200);
    let mut conn = Connection::new(Slow { bytes, at: 0, pause: Duration::from_micros(200) })
        .with_deadlines(Duration::from_secs(5), frame);
    conn.server_handshake(|_, v| privtel_wire::Welcome::new(v, 0)).unwrap();
    let start = Instant::now();
    let err = conn.recv().unwrap_err();
    assert_deadline(&err, DeadlineKind::Frame, frame);
    assert!(start.elapsed() < frame + Duration::from_millis(100), "took {:?}", start.elapsed());
    assert!(conn.skipped() > 0 && conn.skipped() < 1000, "skipped {}", conn.skipped());
}

//! A blocking connection over any `Read + Write`: framing, negotiation,
//! skipping of unknown message kinds after negotiation, and deadlines.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::error::{DeadlineKind, Error, Result};
use crate::frame::{
    DEFAULT_MAX_PAYLOAD, Plain, SUPPORTED_VERSIONS, Source, encode_frame, read_frame_from, write_frame,
};
use crate::message::{EnhanceHello, ErrorCode, Hello, Message, Welcome};

/// One side of a conversation.
///
/// ```
/// use privtel_wire::{Connection, Goodbye, Message};
///
/// let mut wire = Vec::new();
/// Connection::new(&mut wire).send(&Message::Goodbye(Goodbye { reason: "done".into() }))?;
/// let got = Connection::new(wire.as_slice()).recv()?;
/// assert!(matches!(got, Message::Goodbye(g) if g.reason == "done"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    max_payload: u32,
    version: Option<u8>,
    compress: bool,
    /// Frames of unknown kinds skipped after negotiation.
    skipped: u64,
    /// Idle and frame deadlines, if set.
    deadlines: Option<Deadlines>,
}

/// The recommended read and write timeout of a socket under a connection
/// with deadlines ([`Connection::with_deadlines`]): the deadlines are
/// checked at least this often, so they are kept to within about this much.
pub const DEADLINE_TICK: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Deadlines {
    idle: Duration,
    frame: Duration,
}

impl<S> Connection<S> {
    /// A connection with the default limits, not yet negotiated, without
    /// deadlines.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            max_payload: DEFAULT_MAX_PAYLOAD,
            version: None,
            compress: false,
            skipped: 0,
            deadlines: None,
        }
    }

    /// Keep deadlines (off unless set): [`recv`](Self::recv) waits at most
    /// `idle` for the first byte of a frame, and at most `frame` from that
    /// byte to the last byte of the message it returns (frames of unknown
    /// kinds skipped on the way count against the same clock), so one
    /// `recv` takes at most `idle + frame` whatever the peer does;
    /// [`send`](Self::send) gives the peer at most `frame` to take a whole
    /// frame. Breaching either is [`Error::Deadline`]; the stream is then in
    /// an unknown state and must be closed.
    ///
    /// The deadlines are checked between reads (and writes), so a read must
    /// not block for long: give the socket a short read and write timeout
    /// (a tick, such as [`DEADLINE_TICK`]). A read or write that fails with
    /// `WouldBlock` or `TimedOut` then only means "check the clocks and try
    /// again". A [`tls`](crate::tls) stream also checks them before each
    /// socket read inside a TLS record, so a peer that drips a record one
    /// byte per tick cannot hold a connection past its deadline either, and
    /// it bounds each socket read and write by the time left before the
    /// deadline itself (no socket timeout needed). Over another stream,
    /// without a timeout on the socket, a silent peer blocks a read forever
    /// and a peer that stops reading blocks a write forever.
    ///
    /// A frame of the largest size must be able to arrive within `frame`
    /// over the slowest link to be served: 16 MiB in 60 s needs 280 KiB/s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use privtel_wire::{Connection, DeadlineKind, Error};
    ///
    /// /// A peer that never sends anything: every read times out.
    /// struct Silent;
    /// impl std::io::Read for Silent {
    ///     fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
    ///         std::thread::sleep(Duration::from_millis(5));
    ///         Err(std::io::ErrorKind::WouldBlock.into())
    ///     }
    /// }
    ///
    /// let mut conn = Connection::new(Silent).with_deadlines(Duration::from_millis(50), Duration::from_secs(1));
    /// let err = conn.recv().unwrap_err();
    /// assert!(matches!(err, Error::Deadline { which: DeadlineKind::Idle, .. }));
    /// assert_eq!(err.to_string(), "idle deadline of 50 ms passed: expected the first byte of a frame within it");
    /// ```
    #[must_use]
    pub fn with_deadlines(mut self, idle: Duration, frame: Duration) -> Self {
        self.deadlines = Some(Deadlines { idle, frame });
        self
    }

    /// The (idle, frame) deadlines, if set.
    pub fn deadlines(&self) -> Option<(Duration, Duration)> {
        self.deadlines.map(|d| (d.idle, d.frame))
    }

    /// Refuse frames above `max` bytes of payload.
    #[must_use]
    pub fn with_max_payload(mut self, max: u32) -> Self {
        self.max_payload = max;
        self
    }

    /// Compress payloads sent (with the `lz4` feature; ignored without).
    #[must_use]
    pub fn with_compression(mut self, yes: bool) -> Self {
        self.compress = yes;
        self
    }

    /// The negotiated version, once there is one.
    pub fn version(&self) -> Option<u8> {
        self.version
    }

    /// Frames of unknown kinds skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S: Write> Connection<S> {
    /// Sends one message.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::TooLarge`] or [`Error::Io`].
    ///
    /// With deadlines, [`Error::Deadline`] if the peer does not take the
    /// whole frame within the frame deadline.
    pub fn send(&mut self, msg: &Message) -> Result<()> {
        let version = self.version.unwrap_or(SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1]);
        let frame = msg.to_frame(version, self.compress)?;
        let Some(deadlines) = self.deadlines else {
            return write_frame(&mut self.stream, &frame, self.max_payload);
        };
        let mut bytes = Vec::new();
        encode_frame(&frame, self.max_payload, &mut bytes)?;
        write_within(&mut self.stream, &bytes, deadlines.frame)
    }
}

/// Writes all of `bytes` and flushes within `limit`, retrying writes that
/// time out until then.
fn write_within<W: Write + ?Sized>(w: &mut W, bytes: &[u8], limit: Duration) -> Result<()> {
    let clock = Clock::start(DeadlineKind::Frame, limit);
    let _scope = Scope::enter(Some(clock));
    let mut done = 0;
    while done < bytes.len() {
        clock.check()?;
        match w.write(&bytes[done..]) {
            Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if retry(&e) => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    loop {
        clock.check()?;
        match w.flush() {
            Ok(()) => return Ok(()),
            Err(e) if retry(&e) => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

/// An error that only means "nothing happened yet, try again" under
/// deadlines.
fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// One deadline: when, which, and its length (for the error).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// `None`: too far away to represent, never.
    pub(crate) at: Option<Instant>,
    pub(crate) which: DeadlineKind,
    pub(crate) limit: Duration,
}

impl Clock {
    /// A clock that passes `limit` from now.
    pub(crate) fn start(which: DeadlineKind, limit: Duration) -> Self {
        Self { at: Instant::now().checked_add(limit), which, limit }
    }

    pub(crate) fn passed(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// [`Error::Deadline`] once the deadline has passed.
    pub(crate) fn check(&self) -> Result<()> {
        if self.passed() {
            return Err(Error::Deadline { which: self.which, limit: self.limit });
        }
        Ok(())
    }
}

thread_local! {
    /// The deadline of the connection reading or writing on this thread,
    /// for transports that loop over several socket reads per call
    /// (`tls::Socket` under rustls, which reads a whole TLS record before
    /// returning): they check it before each socket read or write.
    static CURRENT: Cell<Option<Clock>> = const { Cell::new(None) };
}

/// The deadline in force on this thread, if any.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) fn current_deadline() -> Option<Clock> {
    CURRENT.with(Cell::get)
}

/// Sets this thread's deadline for its lifetime, restoring the one before.
pub(crate) struct Scope {
    prev: Option<Clock>,
}

impl Scope {
    pub(crate) fn enter(clock: Option<Clock>) -> Self {
        Self { prev: CURRENT.with(|c| c.replace(clock)) }
    }

    fn set(&self, clock: Option<Clock>) {
        CURRENT.with(|c| c.set(clock));
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

/// A reader that keeps the idle and frame deadlines of one `recv`.
struct Timed<'a, R: ?Sized> {
    inner: &'a mut R,
    /// The idle clock until the first byte arrives, then the frame clock.
    clock: Clock,
    frame: Duration,
    started: bool,
    scope: Scope,
}

impl<R: Read + ?Sized> Source for Timed<'_, R> {
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            self.clock.check()?;
            self.scope.set(Some(self.clock));
            match self.inner.read(buf) {
                Ok(n) => {
                    if n > 0 && !self.started {
                        self.started = true;
                        self.clock = Clock::start(DeadlineKind::Frame, self.frame);
                    }
                    return Ok(n);
                }
                Err(e) if retry(&e) => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }
}

impl<S: Read> Connection<S> {
    /// Receives one message. After negotiation, frames of unknown kinds are
    /// skipped (a newer peer may send messages this build does not know);
    /// before it they are an error.
    ///
    /// With deadlines ([`with_deadlines`](Self::with_deadlines)), reads
    /// that time out are retried until a deadline passes.
    ///
    /// # Errors
    ///
    /// Any frame or decode error; [`Error::Closed`] at a clean end;
    /// [`Error::Deadline`] when a deadline passes.
    pub fn recv(&mut self) -> Result<Message> {
        match self.deadlines {
            None => {
                let mut src = Plain(&mut self.stream);
                recv_from(&mut src, self.max_payload, self.version.is_some(), &mut self.skipped)
            }
            Some(d) => {
                let clock = Clock::start(DeadlineKind::Idle, d.idle);
                let mut src = Timed {
                    inner: &mut self.stream,
                    clock,
                    frame: d.frame,
                    started: false,
                    scope: Scope::enter(Some(clock)),
                };
                recv_from(&mut src, self.max_payload, self.version.is_some(), &mut self.skipped)
            }
        }
    }
}

impl<S: Read + Write> Connection<S> {
    /// The agent's side of negotiation: sends `hello`, returns the service's
    /// welcome.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the service refuses; [`Error::Unexpected`] for
    /// any other answer; frame errors.
    pub fn client_handshake(&mut self, hello: &Hello) -> Result<Welcome> {
        self.send(&Message::Hello(hello.clone()))?;
        self.welcome(&hello.versions)
    }

    /// The service's side: reads the agent's hello, picks the highest common
    /// version, and sends the welcome `welcome(hello, version)` builds.
    /// Without a common version, sends an error and fails.
    ///
    /// # Errors
    ///
    /// [`Error::NoCommonVersion`], [`Error::Unexpected`] (also for an
    /// [`EnhanceHello`]: use [`Connection::server_open`] to take both),
    /// frame errors.
    pub fn server_handshake(&mut self, welcome: impl FnOnce(&Hello, u8) -> Welcome) -> Result<Hello> {
        let hello = match self.recv()? {
            Message::Hello(h) => h,
            other => {
                let _ = self.send(&Message::error(ErrorCode::Protocol, "expected hello", false));
                return Err(Error::Unexpected { expected: "hello", got: other.kind_name() });
            }
        };
        let Some(version) = SUPPORTED_VERSIONS.iter().rev().find(|v| hello.versions.contains(v)).copied()
        else {
            let _ = self.send(&Message::error(
                ErrorCode::UnsupportedVersion,
                "no common protocol version",
                false,
            ));
            return Err(Error::NoCommonVersion { ours: SUPPORTED_VERSIONS.to_vec(), theirs: hello.versions });
        };
        self.version = Some(version);
        self.send(&Message::Welcome(welcome(&hello, version)))?;
        Ok(hello)
    }

    /// The service's side for both openings: a device's [`Hello`] or an
    /// anonymous [`EnhanceHello`]. Picks the highest common version and
    /// sends the welcome `welcome(opening, version)` builds; without a
    /// common version, sends an error and fails.
    ///
    /// # Errors
    ///
    /// [`Error::NoCommonVersion`], [`Error::Unexpected`] for any other first
    /// message, frame errors.
    pub fn server_open(&mut self, welcome: impl FnOnce(&Opening, u8) -> Welcome) -> Result<Opening> {
        let opening = match self.recv() {
            Ok(Message::Hello(h)) => Opening::Device(h),
            Ok(Message::EnhanceHello(h)) => Opening::Enhance(h),
            // Told, not just closed: an agent that sent a hello this
            // service cannot take (a list over its bound) learns why.
            Err(e @ Error::Decode { .. }) => {
                let _ =
                    self.send(&Message::error(ErrorCode::Protocol, "the hello could not be decoded", false));
                return Err(e);
            }
            Err(e) => return Err(e),
            Ok(other) => {
                let _ = self.send(&Message::error(ErrorCode::Protocol, "expected hello", false));
                return Err(Error::Unexpected { expected: "hello", got: other.kind_name() });
            }
        };
        let versions = match &opening {
            Opening::Device(h) => &h.versions,
            Opening::Enhance(h) => &h.versions,
        };
        let Some(version) = SUPPORTED_VERSIONS.iter().rev().find(|v| versions.contains(v)).copied() else {
            let _ = self.send(&Message::error(
                ErrorCode::UnsupportedVersion,
                "no common protocol version",
                false,
            ));
            return Err(Error::NoCommonVersion {
                ours: SUPPORTED_VERSIONS.to_vec(),
                theirs: versions.clone(),
            });
        };
        self.version = Some(version);
        self.send(&Message::Welcome(welcome(&opening, version)))?;
        Ok(opening)
    }

    /// The agent's side of an Enhance session: sends `hello` (no device
    /// named) and waits for the welcome.
    ///
    /// # Errors
    ///
    /// As [`Connection::client_handshake`].
    pub fn client_enhance_handshake(&mut self, hello: &EnhanceHello) -> Result<Welcome> {
        self.send(&Message::EnhanceHello(hello.clone()))?;
        self.welcome(&hello.versions)
    }

    /// The service's answer to an opening that offered `versions`.
    fn welcome(&mut self, versions: &[u8]) -> Result<Welcome> {
        match self.recv()? {
            Message::Welcome(w) if versions.contains(&w.version) => {
                self.version = Some(w.version);
                Ok(w)
            }
            Message::Welcome(w) => {
                Err(Error::UnsupportedVersion { version: w.version, supported: SUPPORTED_VERSIONS })
            }
            Message::Error(e) => Err(Error::Remote { code: e.code, message: e.message }),
            other => Err(Error::Unexpected { expected: "welcome", got: other.kind_name() }),
        }
    }
}

/// How a conversation opened: a device naming itself, or an Enhance
/// session naming nothing of the device.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Opening {
    /// A [`Hello`]: batches of the device's stream may follow.
    Device(Hello),
    /// An [`EnhanceHello`]: only sightings, enrichment queries, version
    /// queries and goodbye.
    Enhance(EnhanceHello),
}

/// Reads frames until one holds a message this build knows (after
/// negotiation, unknown kinds are counted in `skipped` and passed over).
fn recv_from(
    src: &mut impl Source,
    max_payload: u32,
    negotiated: bool,
    skipped: &mut u64,
) -> Result<Message> {
    loop {
        let frame = read_frame_from(src, max_payload)?;
        match Message::from_frame(&frame, max_payload) {
            Err(Error::UnknownKind { .. }) if negotiated => *skipped += 1,
            other => return other,
        }
    }
}

/// An error message.
#[deprecated(since = "0.1.0", note = "builds a message, not an error: use `Message::error`")]
pub fn error(code: ErrorCode, message: &str, retryable: bool) -> Message {
    Message::error(code, message, retryable)
}

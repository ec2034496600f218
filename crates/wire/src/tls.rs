//! TLS 1.2/1.3 with rustls (ring provider), feature `tls`; and
//! certificates made with rcgen, feature `certs` (a service or a test needs
//! a certificate authority, an agent does not).
//!
//! # Deadlines over TLS
//!
//! [`accept_within`] and [`connect_within`] complete the handshake within a
//! deadline. After it, a [`Connection`](crate::Connection) with deadlines
//! keeps them over these streams as over a plain socket: rustls keeps the
//! bytes of a TLS record read so far in its own buffer when a socket read
//! times out, so a read retried after a timeout goes on where it stopped
//! (rustls 0.23: `read_tls` appends to the deframer buffer, and a
//! `WouldBlock` leaves it as it was). But one rustls `read` loops over
//! socket reads until a whole record (up to 16 KiB) is decrypted, and a
//! peer dripping a byte per tick would keep it there for an hour. So the
//! socket under these streams is a [`Socket`], which checks the deadline of
//! the connection reading on this thread before each socket read and write
//! and fails with `TimedOut` once it has passed. It also sets the socket's
//! read or write timeout to the time left before that deadline before each
//! socket read or write, so a peer that goes silent, or stops reading while
//! this side writes (a full send buffer), cannot hold one blocking socket
//! call past the deadline either, whatever timeouts the socket was given.

use std::io::{self, Read, Write};
#[cfg(feature = "certs")]
use std::net::IpAddr;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "certs")]
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::conn::{Clock, Scope, current_deadline};
use crate::error::{DeadlineKind, Error, Result};

/// The rustls version this module is built on, for naming its types.
pub use rustls;

/// A TLS client stream.
pub type ClientStream = StreamOwned<ClientConnection, Socket>;
/// A TLS server stream.
pub type ServerStream = StreamOwned<ServerConnection, Socket>;

/// The TCP socket under a TLS stream: a `TcpStream` that fails a read or
/// write with `TimedOut`, without touching the socket, once the deadline of
/// the [`Connection`](crate::Connection) (or handshake) working on this
/// thread has passed. Without a deadline in force it is the `TcpStream`.
///
/// A read under a deadline waits on the socket until that deadline and no
/// longer (its read timeout is fitted to the time left), so a connection
/// that stays silent costs no wake-up until its idle deadline: 10,000 idle
/// connections do not wake 4 times a second each, as they would with a
/// fixed [`DEADLINE_TICK`](crate::DEADLINE_TICK). A write under a deadline is bounded the same
/// way (its write timeout is fitted), so a peer that stops reading while a
/// large frame is sent holds the writer until the deadline and no longer;
/// the write then fails with `WouldBlock` or `TimedOut`, which a
/// [`Connection`](crate::Connection) reports as its [`Error::Deadline`].
/// Without a deadline in force, the socket's own read and write timeouts
/// (as they were when wrapped) apply.
///
/// The operating system starts a socket's timeout again at each read, so a
/// timeout fitted once would let a peer that drips a byte before each
/// timeout stretch the deadline. A timeout is therefore fitted again
/// before a read (or write) unless the one in place would end within
/// [`FIT_SLACK`] of the deadline in force: a socket call never outlasts its
/// deadline by more than that, and the reads of one frame, or frames that
/// follow each other with the same limit, share one fitted timeout (one
/// `setsockopt` where there was one a read).
///
/// When a socket read fills the buffer it was given (rustls asks for 4 KiB
/// at a time), more is likely waiting: the next read takes what is there,
/// up to [`READ_AHEAD`] bytes, in one call without waiting (the socket is
/// non-blocking for that call only), and hands it out from a buffer of
/// the socket's own, freed once drained; if nothing is there, it waits
/// on the caller's buffer as any read does. The buffer is never held
/// across a wait: a connection that is idle, or that filled one read and
/// went silent, holds none. Nothing read ahead is lost while the `Socket`
/// lives; only [`into_inner`](Self::into_inner) drops it (see there).
#[derive(Debug)]
pub struct Socket {
    tcp: TcpStream,
    /// The read timeout the socket had when wrapped.
    own: Option<Duration>,
    /// The read timeout now in place if it is one fitted to a deadline.
    fitted: Option<Duration>,
    /// The write timeout the socket had when wrapped.
    own_write: Option<Duration>,
    /// The write timeout now in place if it is one fitted to a deadline.
    fitted_write: Option<Duration>,
    /// Bytes read ahead and not yet handed out.
    ahead: Ahead,
}

/// How far past its deadline a socket call may last at most: a fitted
/// timeout is kept for the next read or write while it would end within
/// this of the deadline then in force (see [`Socket`]).
pub const FIT_SLACK: Duration = Duration::from_millis(20);

/// The most a [`Socket`] reads ahead in one call (see there): two TLS
/// records of the largest size.
pub const READ_AHEAD: usize = 2 * (16 * 1024 + 256);

/// A [`Socket`]'s read-ahead: `buf[start..end]` not yet handed out.
#[derive(Debug, Default)]
struct Ahead {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last socket read filled what it was given.
    full: bool,
}

impl Ahead {
    /// Hands out what is buffered (0 if nothing is); frees the buffer
    /// once drained.
    fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            *self = Self { full: self.full, ..Self::default() };
        }
        n
    }
}

impl Socket {
    /// Wraps a TCP stream.
    pub fn new(tcp: TcpStream) -> Self {
        let own = tcp.read_timeout().ok().flatten();
        let own_write = tcp.write_timeout().ok().flatten();
        Self { tcp, own, fitted: None, own_write, fitted_write: None, ahead: Ahead::default() }
    }

    /// The TCP stream (to read addresses, shut it down). Set its timeouts
    /// with [`set_timeouts`](Self::set_timeouts), not through this: the
    /// `Socket` would not know of them.
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket's own read and write timeouts: those that apply to reads
    /// and writes without a deadline in force.
    pub fn own_timeouts(&self) -> (Option<Duration>, Option<Duration>) {
        (self.own, self.own_write)
    }

    /// Sets the socket's own read and write timeouts (see
    /// [`own_timeouts`](Self::own_timeouts)), in place at once.
    ///
    /// # Errors
    ///
    /// As `TcpStream::set_read_timeout`: a zero duration is refused.
    pub fn set_timeouts(&mut self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        if read == Some(Duration::ZERO) || write == Some(Duration::ZERO) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "expected a timeout above zero"));
        }
        self.fitted = None;
        self.fitted_write = None;
        self.tcp.set_read_timeout(read)?;
        self.own = read;
        self.tcp.set_write_timeout(write)?;
        self.own_write = write;
        Ok(())
    }

    /// Gives the TCP stream back. Bytes read ahead and not yet read
    /// through this `Socket` are dropped: give the stream back only once
    /// the TLS connection above it is done with.
    pub fn into_inner(self) -> TcpStream {
        self.tcp
    }

    fn check(&self) -> io::Result<()> {
        match current_deadline() {
            Some(clock) if clock.passed() => Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")),
            _ => Ok(()),
        }
    }

    /// Fits the read timeout to the deadline in force, or gives the socket
    /// its own back without one (see [`fit`]).
    fn fit_read_timeout(&mut self) -> io::Result<()> {
        let Self { tcp, own, fitted, .. } = self;
        fit(fitted, *own, |t| tcp.set_read_timeout(t))
    }

    /// As [`fit_read_timeout`](Self::fit_read_timeout), for writes: a peer
    /// that stops reading fills the socket's send buffer, and a write then
    /// waits on the socket until the deadline and no longer (it fails with
    /// `WouldBlock` or `TimedOut`, which the connection turns into its
    /// deadline error).
    fn fit_write_timeout(&mut self) -> io::Result<()> {
        let Self { tcp, own_write, fitted_write, .. } = self;
        fit(fitted_write, *own_write, |t| tcp.set_write_timeout(t))
    }
}

/// Sets one timeout of a socket (with `set`) to the time left before the
/// deadline in force on this thread, unless the fitted one in place
/// (`fitted`) would end within [`FIT_SLACK`] of that deadline if a call
/// started now; without a deadline in force, puts `own` (the socket's
/// own) back if a fitted one is in place.
fn fit(
    fitted: &mut Option<Duration>,
    own: Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    match current_deadline().and_then(|c| c.at) {
        Some(at) => {
            let now = Instant::now();
            // Within the slack either way (`abs_diff` of instants: no
            // sum that could overflow near the end of time).
            if let Some(ends) = fitted.and_then(|t| now.checked_add(t))
                && ends.max(at).duration_since(ends.min(at)) <= FIT_SLACK
            {
                return Ok(());
            }
            // At least a millisecond: a zero timeout is refused by the OS.
            let left = at.saturating_duration_since(now).max(Duration::from_millis(1));
            // Forgotten first: if the OS refuses, the next call fits again.
            *fitted = None;
            set(Some(left))?;
            *fitted = Some(left);
        }
        None if fitted.is_some() => {
            set(own)?;
            *fitted = None;
        }
        None => {}
    }
    Ok(())
}

impl From<TcpStream> for Socket {
    fn from(tcp: TcpStream) -> Self {
        Self::new(tcp)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.ahead.take(buf);
        if n > 0 {
            return Ok(n);
        }
        if self.ahead.full && buf.len() < READ_AHEAD {
            // More is likely waiting: what is there, without waiting, into
            // a buffer of the socket's own. Never held across a wait: a
            // peer that filled one read and went silent costs no buffer.
            let mut ahead = vec![0; READ_AHEAD];
            self.tcp.set_nonblocking(true)?;
            let got = self.tcp.read(&mut ahead);
            self.tcp.set_nonblocking(false)?;
            match got {
                Ok(n) => {
                    self.ahead = Ahead { buf: ahead, start: 0, end: n, full: n == READ_AHEAD };
                    return Ok(self.ahead.take(buf));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ahead.full = false,
                Err(e) => return Err(e),
            }
        }
        // Only a read that may wait needs its timeout fitted.
        self.fit_read_timeout()?;
        let n = self.tcp.read(buf)?;
        self.ahead.full = n == buf.len();
        Ok(n)
    }
}

// `write_vectored` is passed on as it is: rustls writes its queued records
// with one vectored write, and after an error makes a single last attempt
// to send its alert; the default (first buffer only) would leave an alert
// queued behind an earlier record unsent, and the peer waiting.
impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.fit_write_timeout()?;
        self.tcp.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.check()?;
        self.fit_write_timeout()?;
        self.tcp.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// A service identity: a CA certificate (what agents trust) and a server
/// certificate signed by it, with the server's key. `Debug` hides the key.
#[derive(Clone)]
pub struct Identity {
    /// The CA certificate, PEM: give it to agents.
    pub ca_pem: String,
    /// The server certificate, PEM.
    pub cert_pem: String,
    /// The server's private key, PEM. Secret.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn tls<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// Makes a CA and a server certificate for `names` (host names or IP
/// addresses such as `127.0.0.1`), valid from now for about a year.
///
/// # Errors
///
/// [`Error::Tls`] if a name is not valid in a certificate.
#[cfg(feature = "certs")]
pub fn generate_identity(names: &[&str]) -> Result<Identity> {
    let ca_key = KeyPair::generate().map_err(tls("generating the ca key"))?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "privtel test ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(tls("signing the ca"))?;

    let key = KeyPair::generate().map_err(tls("generating the server key"))?;
    let mut server = CertificateParams::default();
    server.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("privtel"));
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into().map_err(tls("host name"))?),
        };
        server.subject_alt_names.push(san);
    }
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cert = server.signed_by(&key, &issuer).map_err(tls("signing the server certificate"))?;
    Ok(Identity { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration for `identity` (TLS 1.2 and 1.3).
///
/// # Errors
///
/// [`Error::Tls`] if the PEM texts do not hold a certificate and a key.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .chain(CertificateDer::pem_slice_iter(identity.ca_pem.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(tls("reading the certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(tls("reading the key"))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls("choosing versions"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls("using the certificate"))?;
    Ok(Arc::new(config))
}

/// A client configuration trusting the CA in `ca_pem` only.
///
/// # Errors
///
/// [`Error::Tls`] if `ca_pem` holds no usable certificate.
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(tls("reading the ca"))?).map_err(tls("trusting the ca"))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("the ca file holds no certificate".into()));
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls("choosing versions"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `addr` and starts TLS, checking the certificate for
/// `server_name` (a host name or IP address). The handshake completes on
/// first use of the stream, with no deadline: see [`connect_within`].
///
/// # Errors
///
/// [`Error::Io`] if the TCP connection fails; [`Error::Tls`] for a bad name.
pub fn connect(
    addr: std::net::SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<ClientStream> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(tls("server name"))?;
    let conn = ClientConnection::new(config, name).map_err(tls("starting the client"))?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    Ok(StreamOwned::new(conn, Socket::new(tcp)))
}

/// [`connect`], with the TCP connection and the TLS handshake completed
/// within `deadline` (see [`accept_within`]). The socket's timeouts are
/// left as they were (none); a [`Connection`](crate::Connection) with
/// deadlines needs none: the [`Socket`] fits its read and write timeouts to
/// the connection's deadlines before each socket read and write.
///
/// # Errors
///
/// [`Error::Io`] if the TCP connection fails or times out;
/// [`Error::Deadline`] ([`DeadlineKind::Handshake`]) if the handshake does
/// not complete in time; [`Error::Tls`] if it fails.
pub fn connect_within(
    addr: std::net::SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    deadline: Duration,
) -> Result<ClientStream> {
    let clock = Clock::start(DeadlineKind::Handshake, deadline);
    let name = ServerName::try_from(server_name.to_owned()).map_err(tls("server name"))?;
    let conn = ClientConnection::new(config, name).map_err(tls("starting the client"))?;
    let tcp = TcpStream::connect_timeout(&addr, deadline.max(Duration::from_millis(1)))?;
    tcp.set_nodelay(true)?;
    let mut stream = StreamOwned::new(conn, Socket::new(tcp));
    handshake(&mut stream.conn, &mut stream.sock, clock)?;
    Ok(stream)
}

/// Starts TLS on an accepted TCP stream. The handshake completes on first
/// use of the stream, bounded only by the socket's timeouts per read: see
/// [`accept_within`].
///
/// # Errors
///
/// [`Error::Tls`] if the server cannot be started.
pub fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<ServerStream> {
    tcp.set_nodelay(true)?;
    let conn = ServerConnection::new(config).map_err(tls("starting the server"))?;
    Ok(StreamOwned::new(conn, Socket::new(tcp)))
}

/// Starts TLS on an accepted TCP stream and completes the handshake within
/// `deadline`, however the client drips its bytes: the deadline is checked
/// before each socket read and write, and each waits on the socket until
/// the deadline and no longer (the [`Socket`] fits its timeouts to it).
/// The socket's own read and write timeouts apply again to the first read
/// or write after without a deadline. A
/// [`Connection`](crate::Connection) with deadlines over the stream keeps
/// them with or without those timeouts (the [`Socket`] fits them to the
/// time left before each socket read and write): a client that stops
/// reading while a large answer is sent holds the sending thread until the
/// frame deadline and no longer.
///
/// ```no_run
/// use std::time::Duration;
/// use privtel_wire::{Connection, DEADLINE_TICK, tls};
///
/// # fn serve(listener: std::net::TcpListener, config: std::sync::Arc<tls::rustls::ServerConfig>) -> privtel_wire::Result<()> {
/// let (tcp, _) = listener.accept()?;
/// tcp.set_read_timeout(Some(DEADLINE_TICK))?;
/// tcp.set_write_timeout(Some(DEADLINE_TICK))?;
/// let stream = tls::accept_within(tcp, config, Duration::from_secs(10))?;
/// let mut conn = Connection::new(stream).with_deadlines(Duration::from_secs(120), Duration::from_secs(60));
/// let _first = conn.recv()?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Deadline`] ([`DeadlineKind::Handshake`]) if the handshake does
/// not complete in time; [`Error::Tls`] if it fails (a bad client hello,
/// the client closing); [`Error::Io`] if the socket fails.
pub fn accept_within(tcp: TcpStream, config: Arc<ServerConfig>, deadline: Duration) -> Result<ServerStream> {
    let clock = Clock::start(DeadlineKind::Handshake, deadline);
    let mut stream = accept(tcp, config)?;
    handshake(&mut stream.conn, &mut stream.sock, clock)?;
    Ok(stream)
}

/// Drives a handshake to its end or until `clock` passes. The [`Socket`]
/// fits its timeouts to the clock before each read and write, and puts
/// its own back at the first read or write after without a deadline.
fn handshake<D: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut Socket,
    clock: Clock,
) -> Result<()> {
    drive(conn, sock, clock)
}

fn drive<D: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut Socket,
    clock: Clock,
) -> Result<()> {
    let _scope = Scope::enter(Some(clock));
    while conn.is_handshaking() {
        clock.check()?;
        match conn.complete_io(sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Error::Tls("handshake: the peer closed the connection".into()));
            }
            Err(e) => return Err(Error::Tls(format!("handshake: {e}"))),
        }
    }
    // What the handshake left to send (a TLS 1.3 server's tickets) goes
    // with the first write.
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::{FIT_SLACK, READ_AHEAD, Socket, fit};
    use crate::conn::{Clock, Scope};
    use crate::error::DeadlineKind;

    /// What `fit` set, call by call, under `clock` (or none).
    fn fits(fitted: &mut Option<Duration>, clock: Option<Clock>, set: &RefCell<Vec<Option<Duration>>>) {
        let _scope = Scope::enter(clock);
        fit(fitted, Some(Duration::from_millis(250)), |t| {
            set.borrow_mut().push(t);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_fitted_timeout_is_kept_only_while_it_ends_within_the_slack_of_the_deadline() {
        let set = RefCell::new(Vec::new());
        let mut fitted = None;
        let frame = Clock::start(DeadlineKind::Frame, Duration::from_secs(60));
        fits(&mut fitted, Some(frame), &set);
        assert_eq!(set.borrow().len(), 1, "the first read under a deadline fits");
        let first = set.borrow()[0].unwrap();
        assert!(first <= Duration::from_secs(60) && first > Duration::from_secs(59), "{first:?}");
        // The same deadline at once: kept.
        fits(&mut fitted, Some(frame), &set);
        assert_eq!(set.borrow().len(), 1, "a read of the same frame right after keeps the timeout");
        // The next frame with the same limit, started now: kept as well.
        fits(&mut fitted, Some(Clock::start(DeadlineKind::Frame, Duration::from_secs(60))), &set);
        assert_eq!(set.borrow().len(), 1, "the next frame of the same limit keeps it");
        // Another limit: fitted again.
        fits(&mut fitted, Some(Clock::start(DeadlineKind::Idle, Duration::from_secs(120))), &set);
        assert_eq!(set.borrow().len(), 2, "an idle deadline twice as far fits again");
        let idle = set.borrow()[1].unwrap();
        assert!(idle > Duration::from_secs(119), "{idle:?}");
        // A deadline sooner than the timeout in place would end: fitted
        // again, or a read could outlast it (a peer dripping a byte before
        // each timeout cannot stretch the deadline by more than the slack).
        let soon = Clock::start(DeadlineKind::Frame, Duration::from_millis(500));
        fits(&mut fitted, Some(soon), &set);
        assert_eq!(set.borrow().len(), 3);
        std::thread::sleep(FIT_SLACK + Duration::from_millis(5));
        fits(&mut fitted, Some(soon), &set);
        assert_eq!(set.borrow().len(), 4, "the same deadline, more than the slack later, fits again");
        let last = set.borrow()[3].unwrap();
        assert!(last < Duration::from_millis(500) - FIT_SLACK, "{last:?}");
        // Without a deadline: the socket's own comes back, once.
        fits(&mut fitted, None, &set);
        fits(&mut fitted, None, &set);
        assert_eq!(set.borrow()[4..], [Some(Duration::from_millis(250))]);
        // A deadline already passed: the shortest timeout the OS takes.
        let passed = Clock::start(DeadlineKind::Frame, Duration::ZERO);
        fits(&mut fitted, Some(passed), &set);
        assert_eq!(set.borrow()[5], Some(Duration::from_millis(1)));
    }

    #[test]
    fn a_refused_timeout_is_fitted_again_at_the_next_call() {
        let mut fitted = None;
        let clock = Clock::start(DeadlineKind::Frame, Duration::from_secs(5));
        let _scope = Scope::enter(Some(clock));
        assert!(fit(&mut fitted, None, |_| Err(std::io::ErrorKind::Other.into())).is_err());
        let mut calls = 0;
        fit(&mut fitted, None, |_| {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 1, "a timeout the OS refused is not taken for one in place");
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn reads_after_a_full_one_come_from_one_socket_read_ahead_in_order_and_the_buffer_goes_when_drained() {
        let (mut client, server) = pair();
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).unwrap();
        // Everything sent is waiting before the first read.
        std::thread::sleep(Duration::from_millis(50));
        let mut socket = Socket::new(server);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let n = socket.read(&mut buf).unwrap();
        assert_eq!(n, 4096, "the first read fills what it is given");
        got.extend_from_slice(&buf[..n]);
        assert!(socket.ahead.buf.is_empty(), "nothing is read ahead before a full read");
        let n = socket.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        assert_eq!(socket.ahead.buf.len(), READ_AHEAD, "the read after a full one reads ahead");
        assert_eq!(socket.ahead.end, READ_AHEAD, "up to the read-ahead size in one socket read");
        while got.len() < sent.len() {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, sent, "every byte once, in order");
        assert!(socket.ahead.start == socket.ahead.end, "all handed out");
        // The last socket read did not fill its buffer: the next waits on
        // the socket with the caller's buffer, holding nothing of its own.
        drop(client);
        assert_eq!(socket.read(&mut buf).unwrap(), 0, "the end of the stream");
        assert_eq!(socket.ahead.buf.capacity(), 0, "an idle socket holds no read-ahead buffer");
    }

    #[test]
    fn a_peer_that_fills_one_read_and_goes_silent_costs_no_read_ahead_buffer() {
        let (mut client, server) = pair();
        client.write_all(&[7u8; 4096]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut socket = Socket::new(server);
        let mut buf = [0u8; 4096];
        assert_eq!(socket.read(&mut buf).unwrap(), 4096);
        assert!(socket.ahead.full, "the read filled its buffer");
        let _scope = Scope::enter(Some(Clock::start(DeadlineKind::Frame, Duration::from_millis(100))));
        let err = socket.read(&mut buf).unwrap_err();
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
        assert_eq!(socket.ahead.buf.capacity(), 0, "nothing was there: no buffer of its own");
        assert!(!socket.ahead.full);
        // The socket waits again: bytes that come later are read.
        client.write_all(b"late").unwrap();
        let _later = Scope::enter(Some(Clock::start(DeadlineKind::Frame, Duration::from_secs(5))));
        assert_eq!(socket.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"late");
    }

    #[test]
    fn a_read_under_a_deadline_waits_no_longer_than_the_deadline_and_the_slack() {
        let (_client, server) = pair();
        let mut socket = Socket::new(server);
        let limit = Duration::from_millis(200);
        let clock = Clock::start(DeadlineKind::Frame, limit);
        let _scope = Scope::enter(Some(clock));
        let start = Instant::now();
        let mut buf = [0u8; 16];
        let mut reads = 0;
        // As a connection does: retry timed-out reads until the deadline.
        let err = loop {
            reads += 1;
            match socket.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut && clock.passed() => break e,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                other => panic!("expected the deadline, got {other:?}"),
            }
        };
        let took = start.elapsed();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(took >= limit && took < limit + FIT_SLACK + Duration::from_millis(100), "took {took:?}");
        assert!(reads <= 3, "{reads} reads: the socket waited on the deadline, not on a tick");
    }

    #[test]
    fn own_timeouts_come_back_without_a_deadline_and_zero_is_refused() {
        let (_client, server) = pair();
        let mut socket = Socket::new(server);
        assert_eq!(socket.own_timeouts(), (None, None));
        socket.set_timeouts(Some(Duration::from_millis(30)), None).unwrap();
        // The OS rounds a timeout to its clock's ticks.
        let near_30ms = |t: Option<Duration>| {
            t.is_some_and(|t| t.abs_diff(Duration::from_millis(30)) < Duration::from_millis(10))
        };
        assert!(near_30ms(socket.get_ref().read_timeout().unwrap()));
        {
            let _scope = Scope::enter(Some(Clock::start(DeadlineKind::Frame, Duration::from_secs(5))));
            socket.fit_read_timeout().unwrap();
            let fitted = socket.get_ref().read_timeout().unwrap().unwrap();
            assert!(fitted > Duration::from_secs(4), "{fitted:?}");
        }
        let start = Instant::now();
        let err = socket.read(&mut [0u8; 8]).unwrap_err();
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        assert!(start.elapsed() < Duration::from_secs(1), "the socket's own 30 ms applied");
        assert!(near_30ms(socket.get_ref().read_timeout().unwrap()), "put back");
        let err = socket.set_timeouts(Some(Duration::ZERO), None).unwrap_err();
        assert_eq!(err.to_string(), "expected a timeout above zero");
        assert_eq!(socket.own_timeouts(), (Some(Duration::from_millis(30)), None));
    }
}

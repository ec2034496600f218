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

use crate::conn::{Clock, DEADLINE_TICK, Scope, current_deadline};
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
/// longer (its read timeout is set to the time left before each read), so
/// a connection that stays silent costs no wake-up until its idle
/// deadline: 10,000 idle connections do not wake 4 times a second each, as
/// they would with a fixed [`DEADLINE_TICK`]. A write under a deadline is
/// bounded the same way (its write timeout is set to the time left before
/// each write), so a peer that stops reading while a large frame is sent
/// holds the writer until the deadline and no longer; the write then fails
/// with `WouldBlock` or `TimedOut`, which a [`Connection`](crate::Connection)
/// reports as its [`Error::Deadline`]. Without a deadline in force, the
/// socket's own read and write timeouts (as they were when wrapped) apply.
#[derive(Debug)]
pub struct Socket {
    tcp: TcpStream,
    /// The read timeout the socket had when wrapped.
    own: Option<Duration>,
    /// Whether the read timeout is now one fitted to a deadline.
    fitted: bool,
    /// The write timeout the socket had when wrapped.
    own_write: Option<Duration>,
    /// Whether the write timeout is now one fitted to a deadline.
    fitted_write: bool,
}

impl Socket {
    /// Wraps a TCP stream.
    pub fn new(tcp: TcpStream) -> Self {
        let own = tcp.read_timeout().ok().flatten();
        let own_write = tcp.write_timeout().ok().flatten();
        Self { tcp, own, fitted: false, own_write, fitted_write: false }
    }

    /// The TCP stream (to set timeouts, read addresses).
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// Gives the TCP stream back.
    pub fn into_inner(self) -> TcpStream {
        self.tcp
    }

    fn check(&self) -> io::Result<()> {
        match current_deadline() {
            Some(clock) if clock.passed() => Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")),
            _ => Ok(()),
        }
    }

    /// Sets the read timeout to the time left before the deadline in force
    /// (every read: the OS starts the wait again at each read, so a timeout
    /// fitted once would let a peer dripping a byte just before it stretch
    /// the deadline); without one, gives the socket its own timeout back.
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
/// deadline in force on this thread, or back to `own` (the socket's own)
/// when none is in force; `fitted` says whether it is now a fitted one.
fn fit(
    fitted: &mut bool,
    own: Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    match current_deadline().and_then(|c| c.at) {
        Some(at) => {
            // At least a millisecond: a zero timeout is refused by the OS.
            let left = at.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            set(Some(left))?;
            *fitted = true;
        }
        None if *fitted => {
            set(own)?;
            *fitted = false;
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
        self.fit_read_timeout()?;
        self.tcp.read(buf)
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
/// `deadline`, however the client drips its bytes: the socket reads and
/// writes with a short timeout ([`DEADLINE_TICK`]) during the handshake,
/// and the deadline is checked between socket reads. The socket's read and
/// write timeouts are then put back as they were. A
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

/// Drives a handshake to its end or until `clock` passes, with the socket
/// on a short tick; puts its timeouts back after.
fn handshake<D: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut Socket,
    clock: Clock,
) -> Result<()> {
    let tcp = sock.get_ref();
    let before = (tcp.read_timeout()?, tcp.write_timeout()?);
    let tick = Some(DEADLINE_TICK.min(clock.limit).max(Duration::from_millis(1)));
    tcp.set_read_timeout(tick)?;
    tcp.set_write_timeout(tick)?;
    let result = drive(conn, sock, clock);
    let tcp = sock.get_ref();
    let restored = tcp.set_read_timeout(before.0).and_then(|()| tcp.set_write_timeout(before.1));
    result?;
    restored?;
    Ok(())
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

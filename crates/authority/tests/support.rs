//! Fixtures: a register with two customers, enrollment helpers, a minimal
//! mutual-TLS server loop and a client.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use privtel_authority::{Authority, Credentials, DeviceKey};
use privtel_model::{CustomerId, DeviceId};
use privtel_wire::tls::rustls::{ClientConfig, ServerConfig};
use privtel_wire::{Connection, EnrollRequest, ErrorCode, ErrorMessage, Goodbye, Message};
use time::{Duration, OffsetDateTime};

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) authority: Authority,
    pub(crate) acme: CustomerId,
    pub(crate) beta: CustomerId,
    pub(crate) now: OffsetDateTime,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::open(dir.path().join("authority.db")).unwrap();
        let now = OffsetDateTime::now_utc();
        let acme = CustomerId::new("acme").unwrap();
        let beta = CustomerId::new("beta").unwrap();
        authority.add_customer(&acme, now).unwrap();
        authority.add_customer(&beta, now).unwrap();
        Self { dir, authority, acme, beta, now }
    }

    /// Another handle on the same file: what a second process (an admin
    /// command line) would open.
    pub(crate) fn second_process(&self) -> Authority {
        Authority::open(self.dir.path().join("authority.db")).unwrap()
    }

    pub(crate) fn token(&self, customer: &CustomerId, uses: u32) -> String {
        self.authority.issue_token(customer, Duration::hours(1), uses, self.now).unwrap()
    }

    /// Enrolls `device` through the API with a fresh key and token.
    pub(crate) fn enroll(&self, customer: &CustomerId, device: &str) -> (DeviceKey, Credentials) {
        let device = DeviceId::new(device).unwrap();
        let key = DeviceKey::generate().unwrap();
        let token = self.token(customer, 1);
        let request = privtel_authority::request(Some(&token), customer, &device, &key).unwrap();
        let enrolled = self.authority.enroll(&request, self.now).unwrap();
        let credentials = privtel_authority::accept(&key, customer, &device, enrolled).unwrap();
        (key, credentials)
    }
}

/// A test service: handshake; with a certificate, `identify` and answer a
/// hello with a goodbye naming the identity, or a token-less enroll
/// request with a renewal; without one, only an enroll request.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) server_ca_pem: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(authority: &Authority) -> Self {
        Self::start_with(authority, privtel_wire::tls::generate_identity(&["127.0.0.1"]).unwrap())
    }

    /// A test service presenting `identity` (its certificate and CA).
    pub(crate) fn start_with(authority: &Authority, identity: privtel_wire::tls::Identity) -> Self {
        let config = privtel_authority::server_config(authority, &identity).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let authority = authority.clone();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let (config, authority) = (Arc::clone(&config), authority.clone());
                std::thread::spawn(move || serve(tcp, config, &authority));
            }
        });
        Self { addr, server_ca_pem: identity.ca_pem, stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn refuse(message: String) -> Message {
    Message::Error(ErrorMessage { code: ErrorCode::Forbidden, message, retryable: false })
}

fn serve(tcp: std::net::TcpStream, config: Arc<ServerConfig>, authority: &Authority) {
    let Ok(mut stream) = privtel_wire::tls::accept(tcp, config) else { return };
    // Finish the handshake before looking at the peer's certificate.
    while stream.conn.is_handshaking() {
        if stream.conn.complete_io(&mut stream.sock).is_err() {
            return;
        }
    }
    let now = OffsetDateTime::now_utc();
    let peer = stream.conn.peer_certificates().map(<[_]>::to_vec);
    let mut conn = Connection::new(stream);
    let Ok(msg) = conn.recv() else { return };
    let answer = match peer {
        Some(chain) => match authority.identify(&chain, now) {
            Err(e) => refuse(e.to_string()),
            Ok(identity) => match msg {
                Message::Hello(_) => Message::Goodbye(Goodbye { reason: format!("hello {identity}") }),
                Message::EnrollRequest(EnrollRequest { token: None, csr_der, .. }) => {
                    match authority.renew(&identity, &csr_der, now) {
                        Ok(enrolled) => Message::Enrolled(enrolled),
                        Err(e) => Message::Error(e.to_error_message()),
                    }
                }
                _ => refuse("expected hello or renewal".into()),
            },
        },
        None => match msg {
            Message::EnrollRequest(request) => match authority.enroll(&request, now) {
                Ok(enrolled) => Message::Enrolled(enrolled),
                Err(e) => Message::Error(e.to_error_message()),
            },
            _ => refuse("no client certificate: expected an enroll request".into()),
        },
    };
    let _ = conn.send(&answer);
    let mut stream = conn.into_inner();
    stream.conn.send_close_notify();
    let _ = stream.conn.complete_io(&mut stream.sock);
}

/// Sends one message over a new TLS connection and returns the answer.
pub(crate) fn talk(
    server: &Server,
    config: Arc<ClientConfig>,
    msg: &Message,
) -> privtel_wire::Result<Message> {
    let stream = privtel_wire::tls::connect(server.addr, "127.0.0.1", config)?;
    let mut conn = Connection::new(stream);
    conn.send(msg)?;
    conn.recv()
}

pub(crate) fn hello(customer: &CustomerId, device: &str) -> Message {
    Message::Hello(privtel_wire::Hello::new(
        "test",
        customer.clone(),
        DeviceId::new(device).unwrap(),
        vec![],
        1,
    ))
}

/// Connects with `credentials` and says hello; the server's answer.
pub(crate) fn hello_with(
    server: &Server,
    credentials: &Credentials,
    claim: &CustomerId,
) -> privtel_wire::Result<Message> {
    let config = privtel_authority::client_config(&server.server_ca_pem, credentials).unwrap();
    talk(server, config, &hello(claim, "whatever-the-hello-says"))
}

pub(crate) fn goodbye_reason(answer: privtel_wire::Result<Message>) -> String {
    match answer {
        Ok(Message::Goodbye(g)) => g.reason,
        other => panic!("expected a goodbye, got {other:?}"),
    }
}

pub(crate) fn refusal(answer: privtel_wire::Result<Message>) -> String {
    match answer {
        Ok(Message::Error(e)) => e.message,
        other => panic!("expected an error message, got {other:?}"),
    }
}

/// Signs a device certificate with `issuer_customer`'s CA key (read from the
/// file, as an attacker holding one customer's CA would) naming `named`.
pub(crate) fn forge(
    fx: &Fixture,
    issuer_customer: &CustomerId,
    named: &CustomerId,
    device: &str,
    key: &DeviceKey,
) -> String {
    let db = rusqlite::Connection::open(fx.dir.path().join("authority.db")).unwrap();
    let (ca_pem, ca_key_pem): (String, String) = db
        .query_row(
            "SELECT ca_cert_pem, ca_key_pem FROM customers WHERE customer = ?1",
            [issuer_customer.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key).unwrap();
    let device_key = rcgen::KeyPair::from_pem(&key.to_pem()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    let uri = privtel_authority::identity_uri(named, &DeviceId::new(device).unwrap());
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = fx.now - Duration::hours(1);
    params.not_after = fx.now + Duration::days(1);
    params.signed_by(&device_key, &issuer).unwrap().pem()
}

/// The DER of a PEM certificate.
pub(crate) fn der(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

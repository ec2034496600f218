//! TLS 1.2/1.3 with rustls (ring provider), feature `tls`; and
//! certificates made with rcgen, feature `certs` (a service or a test needs
//! a certificate authority, an agent does not).

#[cfg(feature = "certs")]
use std::net::IpAddr;
use std::net::TcpStream;
use std::sync::Arc;

#[cfg(feature = "certs")]
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::error::{Error, Result};

/// The rustls version this module is built on, for naming its types.
pub use rustls;

/// A TLS client stream.
pub type ClientStream = StreamOwned<ClientConnection, TcpStream>;
/// A TLS server stream.
pub type ServerStream = StreamOwned<ServerConnection, TcpStream>;

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
/// first use of the stream.
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
    Ok(StreamOwned::new(conn, tcp))
}

/// Starts TLS on an accepted TCP stream.
///
/// # Errors
///
/// [`Error::Tls`] if the server cannot be started.
pub fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<ServerStream> {
    tcp.set_nodelay(true)?;
    let conn = ServerConnection::new(config).map_err(tls("starting the server"))?;
    Ok(StreamOwned::new(conn, tcp))
}

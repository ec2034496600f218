//! The device side (feature `client`): a key pair that never leaves the
//! device, the CSR, the credentials file, and TLS client configurations.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use privtel_model::{CustomerId, DeviceId};
use privtel_wire::{EnrollRequest, Enrolled};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData as _, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

use crate::chains::{Chains, validity};
use crate::error::ClientError;
use crate::identity::{KeyFingerprint, identity_of, identity_uri};

/// The credentials file inside the folder given to [`Credentials::save`].
pub const CREDENTIALS_FILE: &str = "credentials.pem";

/// The first line of a credentials file: its format and version.
const CREDENTIALS_HEADER: &str =
    "# privtel device credentials v1: device key, device certificate, authority certificate";

/// A credentials file is a key and two certificates; anything much larger
/// is not one (and is not read into memory).
const MAX_CREDENTIALS_LEN: u64 = 64 * 1024;

fn crypto<E: std::fmt::Display>(action: &'static str) -> impl Fn(E) -> ClientError {
    move |e| ClientError::Crypto { action, reason: e.to_string() }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The device's key pair (ECDSA P-256). Made on the device, kept in its
/// credentials file, never sent: the service sees a CSR signed with it.
/// `Debug` shows the fingerprint, never the key.
pub struct DeviceKey {
    key: KeyPair,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// A new key from the operating system's randomness.
    ///
    /// # Errors
    ///
    /// [`ClientError::Crypto`] if no key can be made.
    pub fn generate() -> Result<Self, ClientError> {
        Ok(Self { key: KeyPair::generate().map_err(crypto("generating the device key"))? })
    }

    /// A key read from its PKCS#8 PEM text.
    ///
    /// # Errors
    ///
    /// [`ClientError::Pem`] if the text holds no P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self, ClientError> {
        let key = KeyPair::from_pem(pem).map_err(|_| ClientError::Pem {
            what: "device key",
            expected: "a pkcs#8 ecdsa p-256 private key",
        })?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(ClientError::Pem {
                what: "device key",
                expected: "a pkcs#8 ecdsa p-256 private key",
            });
        }
        Ok(Self { key })
    }

    /// The key as PKCS#8 PEM. Secret.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The fingerprint the service registers for this key.
    pub fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint::of_spki(&self.key.subject_public_key_info())
    }

    /// A CSR (DER) for this key. It names (customer, device) in its subject
    /// and names for a reader's sake; the service ignores both and takes the
    /// identity from the request and its token.
    ///
    /// # Errors
    ///
    /// [`ClientError::Crypto`] if signing fails.
    pub fn csr_der(&self, customer: &CustomerId, device: &DeviceId) -> Result<Vec<u8>, ClientError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, customer.as_str());
        params.distinguished_name.push(DnType::CommonName, device.as_str());
        let uri = identity_uri(customer, device).try_into().map_err(crypto("writing the identity uri"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params.serialize_request(&self.key).map_err(crypto("signing the request"))?;
        Ok(csr.der().to_vec())
    }
}

/// What a device keeps after enrollment: its certificate, its key and its
/// customer's authority certificate, PEM. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
// Plain data: the three texts are all a credentials file holds.
pub struct Credentials {
    /// The device certificate.
    pub cert_pem: String,
    /// The device key (PKCS#8). Secret.
    pub key_pem: String,
    /// The customer's enrollment authority certificate.
    pub ca_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Writes the credentials to `dir`/[`CREDENTIALS_FILE`], one file with
    /// mode 0600, replacing any older one: written whole under a temporary
    /// name, synced, then renamed into place, so a crash leaves either the
    /// old credentials or the new ones, never a key without its certificate.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<PathBuf, ClientError> {
        let text = format!(
            "{CREDENTIALS_HEADER}\n{}\n{}\n{}\n",
            self.key_pem.trim_end(),
            self.cert_pem.trim_end(),
            self.ca_pem.trim_end()
        );
        write_private(dir.as_ref(), CREDENTIALS_FILE, &text)
    }

    /// Reads the credentials from `dir`/[`CREDENTIALS_FILE`].
    ///
    /// # Errors
    ///
    /// [`ClientError::TooOpen`] if group or others may read the file (on
    /// Unix); [`ClientError::Pem`] if it is not a credentials file;
    /// [`ClientError::Io`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = dir.as_ref().join(CREDENTIALS_FILE);
        let io = |source| ClientError::Io { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ClientError::TooOpen { path, mode });
            }
        }
        let not_ours = ClientError::Pem {
            what: "credentials file",
            expected: "the v1 header, a private key and two certificates",
        };
        if meta.len() > MAX_CREDENTIALS_LEN {
            return Err(not_ours);
        }
        let mut text = String::new();
        file.take(MAX_CREDENTIALS_LEN).read_to_string(&mut text).map_err(io)?;
        if text.lines().next() != Some(CREDENTIALS_HEADER) {
            return Err(not_ours);
        }
        match pem_blocks(&text).as_slice() {
            // PEM texts end with a line break, as rcgen writes them.
            [("PRIVATE KEY", key), ("CERTIFICATE", cert), ("CERTIFICATE", ca)] => Ok(Self {
                cert_pem: format!("{cert}\n"),
                key_pem: format!("{key}\n"),
                ca_pem: format!("{ca}\n"),
            }),
            _ => Err(not_ours),
        }
    }

    /// The device key.
    ///
    /// # Errors
    ///
    /// [`ClientError::Pem`] if `key_pem` holds no P-256 key.
    pub fn key(&self) -> Result<DeviceKey, ClientError> {
        DeviceKey::from_pem(&self.key_pem)
    }
}

/// Writes `text` to `dir`/`name` with mode 0600, replacing any older file:
/// written whole under a temporary name, synced, renamed into place and the
/// folder synced, so a crash leaves the old file or the new one.
fn write_private(dir: &Path, name: &str, text: &str) -> Result<PathBuf, ClientError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(source) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(ClientError::Io { path: tmp, source });
    }
    // The new name is durable once its folder is synced.
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(path)
}

/// The file of a key made for an enrollment whose answer has not been
/// saved yet ([`DeviceKey::pending`]).
pub const PENDING_KEY_FILE: &str = "pending-key.pem";

impl DeviceKey {
    /// The key of an enrollment not finished in `dir`, or a new one, saved
    /// there first (`PENDING_KEY_FILE`, mode 0600, written whole) before
    /// any request is sent: an enrollment interrupted after the service
    /// registered the key (the connection lost, the service or the device
    /// stopped) is asked again with the same key, which the service takes
    /// (a new key would be refused as a clone). Remove it with
    /// [`DeviceKey::forget_pending`] once the credentials are saved.
    ///
    /// # Errors
    ///
    /// [`ClientError::TooOpen`] if group or others may read the file (on
    /// Unix); [`ClientError::Pem`] if it holds no P-256 key;
    /// [`ClientError::Io`]; [`ClientError::Crypto`].
    pub fn pending(dir: impl AsRef<Path>) -> Result<Self, ClientError> {
        let dir = dir.as_ref();
        let path = dir.join(PENDING_KEY_FILE);
        match std::fs::File::open(&path) {
            Ok(file) => {
                let io = |source| ClientError::Io { path: path.clone(), source };
                let meta = file.metadata().map_err(io)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = meta.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Err(ClientError::TooOpen { path, mode });
                    }
                }
                let mut text = String::new();
                file.take(MAX_CREDENTIALS_LEN).read_to_string(&mut text).map_err(io)?;
                Self::from_pem(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_private(dir, PENDING_KEY_FILE, &key.to_pem())?;
                Ok(key)
            }
            Err(source) => Err(ClientError::Io { path, source }),
        }
    }

    /// Removes the pending key of `dir` (its credentials are saved).
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] if it exists and cannot be removed.
    pub fn forget_pending(dir: impl AsRef<Path>) -> Result<(), ClientError> {
        let path = dir.as_ref().join(PENDING_KEY_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ClientError::Io { path, source }),
        }
    }
}

/// The PEM blocks of `text` as (label, block text with its BEGIN and END
/// lines), in order.
fn pem_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else { break };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else { break };
        let stop = start + end + end_marker.len();
        blocks.push((label, &rest[start..stop]));
        rest = &rest[stop..];
    }
    blocks
}

/// The enrollment request for `key` as (customer, device): with the token
/// the administrator issued, or `None` for a renewal over a connection
/// already authenticated by the device's certificate.
///
/// # Errors
///
/// [`ClientError::Crypto`] if the CSR cannot be signed.
pub fn request(
    token: Option<&str>,
    customer: &CustomerId,
    device: &DeviceId,
    key: &DeviceKey,
) -> Result<EnrollRequest, ClientError> {
    Ok(EnrollRequest {
        token: token.map(str::to_owned),
        customer: customer.clone(),
        device: device.clone(),
        csr_der: key.csr_der(customer, device)?,
    })
}

/// Checks the service's answer and makes the device's credentials: the
/// certificate must be one certificate, naming (customer, device), for
/// `key`, issued by the authority certificate in the answer for client
/// authentication, and valid now.
///
/// # Errors
///
/// [`ClientError::Certificate`] naming what did not hold;
/// [`ClientError::Pem`] for unreadable PEM.
pub fn accept(
    key: &DeviceKey,
    customer: &CustomerId,
    device: &DeviceId,
    enrolled: Enrolled,
) -> Result<Credentials, ClientError> {
    let cert = single_cert(&enrolled.cert_pem, "device certificate")?;
    let identity = identity_of(&cert).map_err(|p| ClientError::Certificate { expected: p.expected() })?;
    if identity.customer != *customer || identity.device != *device {
        return Err(ClientError::Certificate { expected: "a certificate naming this customer and device" });
    }
    if identity.key_fingerprint != key.fingerprint() {
        return Err(ClientError::Certificate { expected: "a certificate for this device's key" });
    }
    let roots = roots(&enrolled.ca_pem, "authority certificate")?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    verifier.verify_client_cert(&cert, &[], UnixTime::now()).map_err(|_| ClientError::Certificate {
        expected: "a certificate of the authority in the answer, for client authentication, valid now",
    })?;
    Ok(Credentials { cert_pem: enrolled.cert_pem, key_pem: key.to_pem(), ca_pem: enrolled.ca_pem })
}

fn single_cert(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, ClientError> {
    let bad = ClientError::Pem { what, expected: "exactly one certificate" };
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| ClientError::Pem { what, expected: "exactly one certificate" })?;
    let [cert] = <[_; 1]>::try_from(certs).map_err(|_| bad)?;
    Ok(cert)
}

fn roots(pem: &str, what: &'static str) -> Result<RootCertStore, ClientError> {
    let bad = || ClientError::Pem { what, expected: "one or more ca certificates" };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.map_err(|_| bad())?).map_err(|_| bad())?;
    }
    if roots.is_empty() {
        return Err(bad());
    }
    Ok(roots)
}

fn builder(
    server_ca_pem: &str,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, ClientError> {
    let verifier = ServiceVerifier::new(server_ca_pem)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier)))
}

/// The most chains of the service a device remembers (a device talks to a
/// handful of endpoints; see [`Chains`]).
const MAX_SERVICE_CHAINS: usize = 64;

/// A device's check of the service's certificate: rustls's webpki verifier
/// trusting the service's CA alone, which remembers each chain it verified
/// in full ([`Chains`]), as the service remembers each device's. An agent
/// connects to the same service with the same certificate every few
/// minutes for months; verifying the CA's signature on those bytes again
/// (an ECDSA verification, about a sixth of the device's CPU a session)
/// learns nothing new.
///
/// A remembered verification stands for a new one only for exactly the
/// same bytes: the end-entity certificate, the intermediates, the name
/// the device asked for and any OCSP answer, all in the digest; and only
/// within the validity of every certificate of the chain (expiry is
/// checked on every connection). Every handshake still verifies the
/// service's signature over the handshake (`verify_tls13_signature`:
/// proof that the peer holds the certificate's key), so a peer replaying
/// the service's certificate without its key is refused. The service's
/// certificate is checked against no revocation list (none is
/// configured): remembering loses no revocation check.
struct ServiceVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    /// SHA-256 of the service CA's PEM: the trust anchor of every chain
    /// remembered (one verifier has one).
    anchor: [u8; 32],
    chains: Chains,
}

impl ServiceVerifier {
    fn new(server_ca_pem: &str) -> Result<Self, ClientError> {
        let roots = roots(server_ca_pem, "server ca")?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self {
            webpki,
            anchor: Sha256::digest(server_ca_pem.as_bytes()).into(),
            chains: Chains::new(MAX_SERVICE_CHAINS),
        })
    }
}

impl std::fmt::Debug for ServiceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceVerifier")
            .field("verifications", &self.chains.counts())
            .finish_non_exhaustive()
    }
}

/// What a verification of the service's chain looked at, as one digest:
/// each part's length, then its bytes.
fn chain_digest(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    ocsp_response: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(b"privtel service chain v1");
    part(end_entity);
    part(&(intermediates.len() as u64).to_le_bytes());
    for i in intermediates {
        part(i);
    }
    // The name's kind too: a DNS name and an address never share a digest,
    // whatever text each is written as.
    let kind: &[u8] = match server_name {
        ServerName::DnsName(_) => b"dns",
        ServerName::IpAddress(_) => b"ip",
        _ => b"other",
    };
    part(kind);
    part(server_name.to_str().as_bytes());
    part(ocsp_response);
    h.finalize().into()
}

/// The time every certificate the service sent is valid (webpki checks
/// each one of the path it builds; the others only narrow the window, so
/// a stale extra certificate means the chain is verified in full every
/// time, never that it is trusted longer); `None` if one cannot be read
/// or they share no time.
fn chain_validity(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<(u64, u64)> {
    let mut window = validity(end_entity)?;
    for i in intermediates {
        let (not_before, not_after) = validity(i)?;
        window = (window.0.max(not_before), window.1.min(not_after));
    }
    (window.0 <= window.1).then_some(window)
}

impl ServerCertVerifier for ServiceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = chain_digest(end_entity, intermediates, server_name, ocsp_response);
        if self.chains.stands_for(&digest, &self.anchor, now) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified =
            self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        self.chains.count_full();
        if let Some(window) = chain_validity(end_entity, intermediates) {
            self.chains.remember(digest, &self.anchor, window, now);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A client configuration for mutual TLS: trusts the service's CA in
/// `server_ca_pem` only, and presents the device certificate.
///
/// # Errors
///
/// [`ClientError::Pem`] for unreadable PEM; [`ClientError::Tls`] if
/// rustls refuses the certificate and key.
pub fn client_config(
    server_ca_pem: &str,
    credentials: &Credentials,
) -> Result<Arc<ClientConfig>, ClientError> {
    let cert = single_cert(&credentials.cert_pem, "device certificate")?;
    let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes())
        .map_err(|_| ClientError::Pem { what: "device key", expected: "a pkcs#8 private key" })?;
    let config = builder(server_ca_pem)?
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A client configuration without a client certificate, to enroll: trusts
/// the service's CA in `server_ca_pem` only.
///
/// # Errors
///
/// [`ClientError::Pem`] for unreadable PEM.
pub fn enrollment_client_config(server_ca_pem: &str) -> Result<Arc<ClientConfig>, ClientError> {
    Ok(Arc::new(builder(server_ca_pem)?.with_no_client_auth()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChainVerifications;

    #[test]
    fn pem_blocks_split_in_order() {
        let text =
            "# x\n-----BEGIN A-----\nAAA\n-----END A-----\njunk\n-----BEGIN B C-----\nB\n-----END B C-----\n";
        let blocks = pem_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], ("A", "-----BEGIN A-----\nAAA\n-----END A-----"));
        assert_eq!(blocks[1].0, "B C");
        assert!(pem_blocks("-----BEGIN A-----\nno end").is_empty());
    }

    /// A CA and the certificate it issued for `name`, valid from `from` to
    /// `to` (unix seconds), as the service presents it (with its CA).
    fn service_chain(name: &str, from: i64, to: i64) -> (String, Vec<CertificateDer<'static>>) {
        let at = |secs| time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "service ca");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let mut leaf = CertificateParams::new(vec![name.to_string()]).unwrap();
        (leaf.not_before, leaf.not_after) = (at(from), at(to));
        let cert =
            leaf.signed_by(&KeyPair::generate().unwrap(), &rcgen::Issuer::from_params(&ca, &ca_key)).unwrap();
        (ca_cert.pem(), vec![cert.der().clone(), ca_cert.der().clone()])
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    const FROM: i64 = 1_800_000_000;
    const TO: i64 = FROM + 30 * 86_400;

    fn verify(
        v: &ServiceVerifier,
        chain: &[CertificateDer<'static>],
        name: &str,
        now: u64,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(&chain[0], &chain[1..], &name, &[], at(now))
    }

    #[test]
    fn the_service_chain_is_verified_in_full_once_then_remembered_within_its_validity() {
        let (ca, chain) = service_chain("service.example", FROM, TO);
        let v = ServiceVerifier::new(&ca).unwrap();
        let now = (FROM + 86_400) as u64;
        verify(&v, &chain, "service.example", now).unwrap();
        assert_eq!(v.chains.counts(), ChainVerifications { full: 1, remembered: 0 });
        verify(&v, &chain, "service.example", now + 60).unwrap();
        verify(&v, &chain, "service.example", TO as u64).unwrap();
        assert_eq!(v.chains.counts(), ChainVerifications { full: 1, remembered: 2 });
        // Expired (and not yet valid): refused as webpki refuses it, the
        // remembered verification notwithstanding.
        for when in [TO as u64 + 1, FROM as u64 - 1] {
            let e = verify(&v, &chain, "service.example", when).unwrap_err();
            assert!(
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                            | rustls::CertificateError::NotValidYetContext { .. }
                    )
                ),
                "{e:?}"
            );
        }
        assert_eq!(v.chains.counts(), ChainVerifications { full: 1, remembered: 2 });
    }

    #[test]
    fn a_remembered_chain_stands_for_no_other_name_bytes_or_authority() {
        let (ca, chain) = service_chain("service.example", FROM, TO);
        let v = ServiceVerifier::new(&ca).unwrap();
        let now = (FROM + 86_400) as u64;
        verify(&v, &chain, "service.example", now).unwrap();
        // Another name than the one the certificate was verified for.
        let e = verify(&v, &chain, "other.example", now).unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
        // The same name certified by another authority of the same name
        // (its signature does not verify under the service CA's key).
        let (_, forged) = service_chain("service.example", FROM, TO);
        let e = verify(&v, &forged, "service.example", now).unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadSignature | rustls::CertificateError::UnknownIssuer
                )
            ),
            "{e:?}"
        );
        // The right end-entity certificate with other intermediates, or an
        // OCSP answer: verified in full again.
        let name = ServerName::try_from("service.example").unwrap();
        v.verify_server_cert(&chain[0], &[], &name, &[], at(now)).unwrap();
        v.verify_server_cert(&chain[0], &chain[1..], &name, b"ocsp", at(now)).unwrap();
        assert_eq!(v.chains.counts(), ChainVerifications { full: 3, remembered: 0 });
        // A verifier of another service CA trusts none of it.
        let (other_ca, _) = service_chain("service.example", FROM, TO);
        assert!(verify(&ServiceVerifier::new(&other_ca).unwrap(), &chain, "service.example", now).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = DeviceKey::generate().unwrap();
        let pem = key.to_pem();
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let creds = Credentials { cert_pem: "c".into(), key_pem: pem.clone(), ca_pem: "a".into() };
        let shown = format!("{creds:?}");
        assert!(!shown.contains(&pem) && !shown.contains("PRIVATE"), "{shown}");
        assert_eq!(DeviceKey::from_pem(&pem).unwrap().fingerprint(), key.fingerprint());
    }
}

//! The register: one SQLite file holding each customer's CA, the enrollment
//! tokens (as digests), the enrolled devices and the reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use privtel_model::{CustomerId, DeviceId};
use privtel_wire::{EnrollRequest, Enrolled};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rusqlite::{OptionalExtension as _, TransactionBehavior, params};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::verifier::{AuthorityVerifier, CustomerCa};
use crate::chains::{ChainVerifications, Chains};
use crate::error::{AuthError, EnrollError, Error, Result};
use crate::identity::{DeviceIdentity, KeyFingerprint, identity_of, identity_uri};

/// The prefix of every enrollment token, so that a leaked token is
/// recognisable (secret scanners, logs) and a token pasted into the wrong
/// field is refused by its form.
pub const TOKEN_PREFIX: &str = "ptenr_";

/// The schema this build reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long an issued device certificate is valid unless configured:
/// short enough that a stolen certificate outside the register's reach
/// (a copy taken before revocation, used against another deployment with
/// the same CA) dies by itself within a month; long enough that a device
/// offline for a fortnight still renews over its own certificate.
pub(crate) const DEFAULT_CERT_VALIDITY: Duration = Duration::days(30);

/// The shortest time between two renewals of one device
/// ([`EnrollError::RenewedTooSoon`] within it): certificates live 30 days,
/// and each renewal signs one and syncs the register under the lock every
/// handshake takes.
pub const RENEWAL_INTERVAL: Duration = Duration::minutes(1);

/// A customer's CA lives 20 years: replacing it means re-enrolling every
/// device of the customer.
const CA_VALIDITY: Duration = Duration::days(20 * 365);

/// Certificates start this long before `now`, so a device whose clock is a
/// little behind the service's accepts its certificate at once.
const BACKDATE: Duration = Duration::minutes(5);

/// The longest a waiting writer waits for another process's transaction.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most device certificates whose verification is remembered (about
/// 100 bytes each; see [`Chains`]).
const MAX_DEVICE_CHAINS: usize = 100_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customers (
    customer     TEXT PRIMARY KEY,
    ca_cert_pem  TEXT NOT NULL,
    ca_key_pem   TEXT NOT NULL,
    created_unix INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tokens (
    digest       BLOB PRIMARY KEY,      -- SHA-256 of the token text; never the token
    customer     TEXT NOT NULL REFERENCES customers(customer),
    created_unix INTEGER NOT NULL,
    expires_unix INTEGER NOT NULL,
    max_uses     INTEGER NOT NULL,
    uses         INTEGER NOT NULL DEFAULT 0,
    revoked_unix INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS devices (
    customer        TEXT NOT NULL REFERENCES customers(customer),
    device          TEXT NOT NULL,
    key_fingerprint BLOB NOT NULL,      -- SHA-256 of the DER SubjectPublicKeyInfo
    serial          BLOB NOT NULL,
    not_after_unix  INTEGER NOT NULL,
    enrolled_unix   INTEGER NOT NULL,
    renewed_unix    INTEGER NOT NULL,
    revoked_unix    INTEGER,
    PRIMARY KEY (customer, device)
) STRICT;
CREATE TABLE IF NOT EXISTS reports (
    kind            INTEGER NOT NULL,   -- ReportKind::code
    customer        TEXT NOT NULL,
    device          TEXT NOT NULL,
    key_fingerprint BLOB NOT NULL,      -- the key presented
    first_unix      INTEGER NOT NULL,
    last_unix       INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (kind, customer, device, key_fingerprint)
) STRICT;
";

/// What a report says happened. Stored by [`ReportKind::code`], never by
/// declaration order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ReportKind {
    /// Code 1: an enrollment for a device already enrolled with another key
    /// (a cloned machine, or a reinstall nobody reset).
    CloneAtEnrollment,
    /// Code 2: a connection whose certificate carries a key other than the
    /// device's registered one (a clone that enrolled elsewhere, or an old
    /// certificate of a renewed device).
    CloneAtConnection,
    /// Code 3: a revoked device connected.
    RevokedConnection,
    /// Code 4: a certificate of a device the register does not hold (reset
    /// since) was presented.
    UnknownDeviceConnection,
}

impl ReportKind {
    /// The stored code.
    pub const fn code(self) -> i64 {
        match self {
            Self::CloneAtEnrollment => 1,
            Self::CloneAtConnection => 2,
            Self::RevokedConnection => 3,
            Self::UnknownDeviceConnection => 4,
        }
    }

    /// The kind of a stored code.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::CloneAtEnrollment,
            2 => Self::CloneAtConnection,
            3 => Self::RevokedConnection,
            4 => Self::UnknownDeviceConnection,
            _ => return None,
        })
    }
}

/// One report: something refused about one device and one key, counted.
#[derive(Clone, PartialEq, Eq, Debug)]
// Plain data read back from the register.
pub struct Report {
    /// What happened.
    pub kind: ReportKind,
    /// The customer.
    pub customer: CustomerId,
    /// The device.
    pub device: DeviceId,
    /// The key that was presented.
    pub key_fingerprint: KeyFingerprint,
    /// The first time.
    pub first_seen: OffsetDateTime,
    /// The latest time.
    pub last_seen: OffsetDateTime,
    /// How many times.
    pub count: u64,
}

/// One enrolled device as the register holds it.
#[derive(Clone, PartialEq, Eq, Debug)]
// Plain data read back from the register.
pub struct DeviceRecord {
    /// The customer.
    pub customer: CustomerId,
    /// The device.
    pub device: DeviceId,
    /// The registered key.
    pub key_fingerprint: KeyFingerprint,
    /// The serial number of the latest certificate, big-endian.
    pub serial: Vec<u8>,
    /// When the latest certificate expires.
    pub not_after: OffsetDateTime,
    /// When it first enrolled (since its latest reset).
    pub enrolled: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked: Option<OffsetDateTime>,
}

/// A customer's enrollment authority register: CAs, tokens, devices and
/// reports in one SQLite file.
///
/// `Send + Sync`: share one `Authority` (or an `Arc` of it) between the
/// service's threads. Several processes may open the same file (the
/// service and an admin command line); each sees the others' changes on
/// its next call.
///
/// # Example
///
/// ```
/// use privtel_authority::{Authority, DeviceKey};
/// use privtel_model::{CustomerId, DeviceId};
/// use time::{Duration, OffsetDateTime};
///
/// let dir = tempfile::tempdir()?;
/// let authority = Authority::open(dir.path().join("authority.db"))?;
/// let now = OffsetDateTime::now_utc();
/// let acme = CustomerId::new("acme")?;
/// authority.add_customer(&acme, now)?;
/// let token = authority.issue_token(&acme, Duration::days(1), 10, now)?;
///
/// // On the device: a key that never leaves it, and a request.
/// let key = DeviceKey::generate()?;
/// let pc = DeviceId::new("pc-7")?;
/// let request = privtel_authority::request(Some(&token), &acme, &pc, &key)?;
///
/// // On the service: the certificate.
/// let enrolled = authority.enroll(&request, now)?;
///
/// // Back on the device: checked and kept.
/// let credentials = privtel_authority::accept(&key, &acme, &pc, enrolled)?;
/// assert!(credentials.cert_pem.contains("BEGIN CERTIFICATE"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
    validity: Duration,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("path", &self.inner.path)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    path: PathBuf,
    conn: Mutex<rusqlite::Connection>,
    /// Each customer's CA as a ready verifier. A CA changes only when its
    /// customer is removed (and perhaps added again with a new one): this
    /// process's removal drops its entry, and a commit by another process
    /// (another connection to the file: an administrative command, the
    /// console of another service) empties the cache (`cas_seen`), so no
    /// removed CA is trusted a moment longer than its removal's commit.
    cas: Mutex<HashMap<CustomerId, Arc<CustomerCa>>>,
    /// The file's `PRAGMA data_version` when `cas` was last known current:
    /// it changes when another connection commits.
    cas_seen: std::sync::atomic::AtomicI64,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Certificates this authority's own verifier has just verified in a
    /// handshake (see [`Verified`]).
    pub(crate) verified: Verified,
    /// Device certificates whose chain the verifier verified in full (see
    /// [`Chains`]).
    pub(crate) chains: Chains,
}

/// SHA-256 digests of end-entity certificates that [`AuthorityVerifier`]
/// verified in a handshake, so that `identify` right after the handshake
/// does not verify the chain a second time (an ECDSA verification). A
/// chain verified by the verifier is only pending until the same
/// handshake's signature check proves the peer holds the certificate's key
/// (certificates are public: a replayed one in a handshake that then fails
/// must not count). Each proven entry is used once and lives
/// [`Verified::FRESH`]; the map is bounded (a flood of handshakes that
/// never identify cannot grow it). `identify` still reads the register
/// (revocation, renewal, clones) every time.
#[derive(Default)]
pub(crate) struct Verified(Mutex<HashMap<[u8; 32], (std::time::Instant, bool)>>);

impl Verified {
    /// How long a verification stands in for a second one.
    const FRESH: std::time::Duration = std::time::Duration::from_secs(30);
    /// The most entries kept.
    const MAX: usize = 16_384;

    /// The chain of `end_entity` was verified; its key not yet proven.
    pub(crate) fn pending(&self, digest: [u8; 32]) {
        let now = std::time::Instant::now();
        let mut map = lock(&self.0);
        if map.len() >= Self::MAX {
            map.retain(|_, (at, _)| now.duration_since(*at) < Self::FRESH);
            if map.len() >= Self::MAX {
                map.clear();
            }
        }
        map.insert(digest, (now, false));
    }

    /// Forgets every verification (a customer's CA was removed).
    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }

    /// The handshake's signature with `end_entity`'s key checked out.
    pub(crate) fn proven(&self, end_entity: &[u8]) {
        if let Some(entry) = lock(&self.0).get_mut(&<[u8; 32]>::from(Sha256::digest(end_entity))) {
            entry.1 = true;
        }
    }

    /// Whether `end_entity` was verified and proven by a handshake moments
    /// ago (and forgets it: one handshake, one identification).
    fn take(&self, end_entity: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(end_entity).into();
        lock(&self.0).remove(&digest).is_some_and(|(at, proven)| proven && at.elapsed() < Self::FRESH)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves SQLite consistent (the
    // transaction rolls back on drop), so the data is still good.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_unix(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn crypto<E: std::fmt::Display>(action: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Crypto { action, reason: e.to_string() }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(crypto("reading the operating system's randomness"))?;
    Ok(bytes)
}

/// A positive 16-byte serial number (RFC 5280: at most 20 bytes, positive).
fn random_serial() -> Result<Vec<u8>> {
    let mut serial = random::<16>()?;
    // Top bit clear (positive), next bit set (no leading zero byte to strip).
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial.to_vec())
}

/// The digest stored for a token, or `None` if it is not of the token form.
fn token_digest(token: &str) -> Option<[u8; 32]> {
    let hex = token.strip_prefix(TOKEN_PREFIX)?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Sha256::digest(token.as_bytes()).into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fingerprint_of(blob: &[u8]) -> KeyFingerprint {
    KeyFingerprint::from_bytes(blob.try_into().unwrap_or([0; 32]))
}

/// A P-256 public key taken from a verified CSR, signed into a certificate
/// as it is (rcgen writes its SubjectPublicKeyInfo).
pub(crate) struct CsrKey {
    point: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl CsrKey {
    fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint::of_spki(&self.subject_public_key_info())
    }
}

/// Parses a CSR and verifies its signature; only ECDSA P-256 keys are
/// accepted (what `DeviceKey` makes, and what every TLS stack signs with).
/// Subject and extensions are ignored: the identity comes from the request
/// and its token.
pub(crate) fn csr_key(der: &[u8]) -> std::result::Result<CsrKey, EnrollError> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    use x509_parser::prelude::FromDer as _;

    let bad = |expected| EnrollError::Csr { expected };
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|_| bad("a der pkcs#10 certificate signing request"))?;
    if !rest.is_empty() {
        return Err(bad("a certificate signing request with nothing after it"));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve.as_ref() != Some(&OID_EC_P256) {
        return Err(bad("an ecdsa p-256 public key"));
    }
    let point = &spki.subject_public_key.data;
    if point.len() != 65 || point[0] != 4 {
        return Err(bad("an uncompressed p-256 point"));
    }
    csr.verify_signature().map_err(|_| bad("a request signed by the key it names"))?;
    Ok(CsrKey { point: point.to_vec() })
}

/// What [`Authority::remove_customer`] removed: counts only.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct RemovedCustomer {
    /// Whether the customer's enrollment authority (CA and key) existed.
    pub authority: bool,
    /// Enrollment tokens removed.
    pub tokens: u64,
    /// Device registrations removed.
    pub devices: u64,
    /// Reports (clones, revoked devices) removed.
    pub reports: u64,
}

/// A certificate just made for a device.
struct Issued {
    enrolled: Enrolled,
    serial: Vec<u8>,
    fingerprint: KeyFingerprint,
}

impl Authority {
    /// Opens the register at `path`, creating it (mode 0600) if there is
    /// none.
    ///
    /// # Errors
    ///
    /// [`Error::TooOpen`] if group or others may read an existing file (on
    /// Unix); [`Error::Schema`] for a file of another schema version;
    /// [`Error::Io`] or [`Error::Database`] if it cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        create_private(&path)?;
        let mut conn = rusqlite::Connection::open(&path)
            .map_err(|e| Error::Database { action: "opening", reason: e.to_string() })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: the service's reads never wait for an admin's write. FULL:
        // a token use or a revocation, once answered, survives a power cut.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
        )?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)?;
                tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
            }
            SCHEMA_VERSION => {}
            found => return Err(Error::Schema { found, expected: SCHEMA_VERSION }),
        }
        tx.commit()?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                cas: Mutex::new(HashMap::new()),
                cas_seen: std::sync::atomic::AtomicI64::new(i64::MIN),
                provider: Arc::new(rustls::crypto::ring::default_provider()),
                verified: Verified::default(),
                chains: Chains::new(MAX_DEVICE_CHAINS),
            }),
            validity: DEFAULT_CERT_VALIDITY,
        })
    }

    /// The same register issuing certificates valid for `validity` (default
    /// 30 days).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] unless `validity` is between one minute and ten
    /// years.
    pub fn with_cert_validity(mut self, validity: Duration) -> Result<Self> {
        if validity < Duration::minutes(1) || validity > Duration::days(3650) {
            return Err(Error::Invalid { what: "certificate validity", expected: "one minute to ten years" });
        }
        self.validity = validity;
        Ok(self)
    }

    /// Makes `customer`'s enrollment authority (an ECDSA P-256 CA) unless it
    /// exists, and returns its certificate, PEM. Idempotent: a second call
    /// returns the same CA.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] or [`Error::Database`].
    pub fn add_customer(&self, customer: &CustomerId, now: OffsetDateTime) -> Result<String> {
        if let Some(ca) = self.inner.customer_ca(customer)? {
            return Ok(ca.cert_pem.clone());
        }
        let key = KeyPair::generate().map_err(crypto("generating the ca key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, customer.as_str());
        params.distinguished_name.push(DnType::CommonName, "privtel enrollment authority");
        // Path length 0: this CA signs device certificates only, never
        // another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let cert = params.self_signed(&key).map_err(crypto("signing the ca"))?;
        let conn = lock(&self.inner.conn);
        // Two admins adding the same customer at once: the first one wins,
        // both return its CA.
        conn.execute(
            "INSERT OR IGNORE INTO customers (customer, ca_cert_pem, ca_key_pem, created_unix) VALUES (?1, ?2, ?3, ?4)",
            params![customer.as_str(), cert.pem(), key.serialize_pem(), unix(now)],
        )?;
        let pem = conn.query_row(
            "SELECT ca_cert_pem FROM customers WHERE customer = ?1",
            [customer.as_str()],
            |r| r.get(0),
        )?;
        Ok(pem)
    }

    /// The customer's CA certificate, PEM, if the customer exists.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn customer_ca_pem(&self, customer: &CustomerId) -> Result<Option<String>> {
        Ok(self.inner.customer_ca(customer)?.map(|ca| ca.cert_pem.clone()))
    }

    /// Issues an enrollment token for `customer`, valid for `ttl` from `now`
    /// and for `max_uses` enrollments. The token is returned once and never
    /// stored (the register keeps its SHA-256 digest): show it to the
    /// administrator and forget it.
    ///
    /// The form is `ptenr_` and 64 hex digits (32 random bytes).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCustomer`]; [`Error::Invalid`] unless `ttl` is
    /// positive and at most a year and `max_uses` at least 1;
    /// [`Error::Database`].
    pub fn issue_token(
        &self,
        customer: &CustomerId,
        ttl: Duration,
        max_uses: u32,
        now: OffsetDateTime,
    ) -> Result<String> {
        if ttl <= Duration::ZERO || ttl > Duration::days(366) {
            return Err(Error::Invalid {
                what: "token lifetime",
                expected: "more than zero and at most a year",
            });
        }
        if max_uses == 0 {
            return Err(Error::Invalid { what: "token uses", expected: "at least 1" });
        }
        if self.inner.customer_ca(customer)?.is_none() {
            return Err(Error::UnknownCustomer { customer: customer.clone() });
        }
        let token = format!("{TOKEN_PREFIX}{}", hex(&random::<32>()?));
        let digest =
            token_digest(&token).ok_or(Error::Invalid { what: "token", expected: "its own form" })?;
        lock(&self.inner.conn).execute(
            "INSERT INTO tokens (digest, customer, created_unix, expires_unix, max_uses) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![digest.as_slice(), customer.as_str(), unix(now), unix(now + ttl), i64::from(max_uses)],
        )?;
        Ok(token)
    }

    /// Revokes a token: no further enrollment with it. Returns whether a
    /// token that was not yet revoked was found.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn revoke_token(&self, token: &str, now: OffsetDateTime) -> Result<bool> {
        let Some(digest) = token_digest(token) else { return Ok(false) };
        let changed = lock(&self.inner.conn).execute(
            "UPDATE tokens SET revoked_unix = ?2 WHERE digest = ?1 AND revoked_unix IS NULL",
            params![digest.as_slice(), unix(now)],
        )?;
        Ok(changed == 1)
    }

    /// Revokes a device: its next connection is refused (every process
    /// sharing the file sees it at once), and it cannot enroll again until
    /// [`Authority::reset_device`]. Returns whether an enrolled, unrevoked
    /// device was found.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn revoke_device(
        &self,
        customer: &CustomerId,
        device: &DeviceId,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let changed = lock(&self.inner.conn).execute(
            "UPDATE devices SET revoked_unix = ?3 WHERE customer = ?1 AND device = ?2 AND revoked_unix IS NULL",
            params![customer.as_str(), device.as_str(), unix(now)],
        )?;
        Ok(changed == 1)
    }

    /// Forgets a device's registration (key and revocation): its old
    /// certificates are refused from now on, and it may enroll again, with
    /// a token and any key (a reinstalled machine). Returns whether the
    /// device was registered.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn reset_device(&self, customer: &CustomerId, device: &DeviceId) -> Result<bool> {
        let changed = lock(&self.inner.conn).execute(
            "DELETE FROM devices WHERE customer = ?1 AND device = ?2",
            params![customer.as_str(), device.as_str()],
        )?;
        Ok(changed == 1)
    }

    /// Removes `customer`'s enrollment authority and everything the
    /// register holds of it (contract end): its CA and the CA's private key,
    /// its tokens, its devices and its reports, in one transaction; then
    /// checkpoints the register's log (the file overwrites deleted rows,
    /// `secure_delete`), so no byte of them stays in the register's files.
    /// Every certificate the CA issued is refused from this instant (the
    /// verifier no longer knows the CA), and tokens issued for the customer
    /// no longer enroll. Idempotent: removing an unknown customer removes
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Database`]; nothing is removed then.
    pub fn remove_customer(&self, customer: &CustomerId) -> Result<RemovedCustomer> {
        let mut conn = lock(&self.inner.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let c = customer.as_str();
        let reports = tx.execute("DELETE FROM reports WHERE customer = ?1", [c])?;
        let devices = tx.execute("DELETE FROM devices WHERE customer = ?1", [c])?;
        let tokens = tx.execute("DELETE FROM tokens WHERE customer = ?1", [c])?;
        let authority = tx.execute("DELETE FROM customers WHERE customer = ?1", [c])? == 1;
        tx.commit()?;
        // Trust ends with the commit: the cached verifier goes too.
        lock(&self.inner.cas).remove(customer);
        self.inner.verified.clear();
        self.inner.chains.clear();
        // Busy while another connection reads an older snapshot: retried,
        // then refused rather than reported clean.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))? != 0 {
            if std::time::Instant::now() >= deadline {
                return Err(Error::Database {
                    action: "checkpointing after removing a customer",
                    reason: "another connection holds an old snapshot: run it again".into(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        Ok(RemovedCustomer { authority, tokens: n(tokens), devices: n(devices), reports: n(reports) })
    }

    /// The registration of one device.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn device(&self, customer: &CustomerId, device: &DeviceId) -> Result<Option<DeviceRecord>> {
        let conn = lock(&self.inner.conn);
        // Cached: the service reads it for every batch.
        let row = conn
            .prepare_cached(
                "SELECT key_fingerprint, serial, not_after_unix, enrolled_unix, revoked_unix
                 FROM devices WHERE customer = ?1 AND device = ?2",
            )?
            .query_row(params![customer.as_str(), device.as_str()], |r| {
                Ok(DeviceRecord {
                    customer: customer.clone(),
                    device: device.clone(),
                    key_fingerprint: fingerprint_of(&r.get::<_, Vec<u8>>(0)?),
                    serial: r.get(1)?,
                    not_after: from_unix(r.get(2)?),
                    enrolled: from_unix(r.get(3)?),
                    revoked: r.get::<_, Option<i64>>(4)?.map(from_unix),
                })
            })
            .optional()?;
        Ok(row)
    }

    /// Reports since `since` (by latest time), of one customer or of all,
    /// newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn reports(&self, customer: Option<&CustomerId>, since: OffsetDateTime) -> Result<Vec<Report>> {
        let conn = lock(&self.inner.conn);
        let mut stmt = conn.prepare(
            "SELECT kind, customer, device, key_fingerprint, first_unix, last_unix, count FROM reports
             WHERE last_unix >= ?1 AND (?2 IS NULL OR customer = ?2)
             ORDER BY last_unix DESC, customer, device",
        )?;
        let rows = stmt.query_map(params![unix(since), customer.map(CustomerId::as_str)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut reports = Vec::new();
        for row in rows {
            let (kind, c, d, fp, first, last, count) = row?;
            // A row this build cannot read (a newer kind, an id edited by
            // hand) is skipped, not fatal to the listing.
            let (Some(kind), Ok(customer), Ok(device)) =
                (ReportKind::from_code(kind), CustomerId::new(c), DeviceId::new(d))
            else {
                continue;
            };
            reports.push(Report {
                kind,
                customer,
                device,
                key_fingerprint: fingerprint_of(&fp),
                first_seen: from_unix(first),
                last_seen: from_unix(last),
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        Ok(reports)
    }

    /// Enrolls a device: checks the token (issued for this customer, not
    /// expired, not revoked, a use left) and the CSR (DER, signature valid,
    /// ECDSA P-256), refuses a device that is revoked or enrolled with
    /// another key (reported as [`ReportKind::CloneAtEnrollment`]), then
    /// issues a client certificate naming (customer, device) and consumes
    /// one use of the token, all in one transaction. The CSR's own subject
    /// and names are ignored.
    ///
    /// Enrolling again with the same key (a device that lost the answer)
    /// is allowed with the token it enrolled with or another valid one of
    /// the customer, and costs no use (the token may have none left).
    ///
    /// # Errors
    ///
    /// An [`EnrollError`] naming what was expected; never the token.
    pub fn enroll(
        &self,
        request: &EnrollRequest,
        now: OffsetDateTime,
    ) -> std::result::Result<Enrolled, EnrollError> {
        let token = request.token.as_deref().ok_or(EnrollError::TokenMissing)?;
        let digest = token_digest(token).ok_or(EnrollError::TokenMalformed)?;
        let key = csr_key(&request.csr_der)?;
        let fingerprint = key.fingerprint();
        let (customer, device) = (&request.customer, &request.device);

        let mut conn = lock(&self.inner.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, i64, i64, i64, Option<i64>)> = tx
            .query_row(
                "SELECT customer, expires_unix, max_uses, uses, revoked_unix FROM tokens WHERE digest = ?1",
                [digest.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((token_customer, expires, max_uses, uses, revoked)) = row else {
            return Err(EnrollError::TokenUnknown);
        };
        if revoked.is_some() {
            return Err(EnrollError::TokenRevoked);
        }
        if unix(now) >= expires {
            return Err(EnrollError::TokenExpired);
        }
        if token_customer != customer.as_str() {
            return Err(EnrollError::TokenWrongCustomer { customer: customer.clone() });
        }
        let registered: Option<(Vec<u8>, Option<i64>)> = tx
            .query_row(
                "SELECT key_fingerprint, revoked_unix FROM devices WHERE customer = ?1 AND device = ?2",
                params![customer.as_str(), device.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let enrolled_unix = match registered {
            Some((_, Some(_))) => {
                return Err(EnrollError::Revoked { customer: customer.clone(), device: device.clone() });
            }
            Some((fp, None)) if fp != fingerprint.as_bytes() => {
                drop(tx);
                record(&conn, ReportKind::CloneAtEnrollment, customer, device, &fingerprint, now)?;
                return Err(EnrollError::AlreadyEnrolled {
                    customer: customer.clone(),
                    device: device.clone(),
                });
            }
            Some(_) => None,
            None => Some(unix(now)),
        };
        // The same key again (a device whose answer was lost: the
        // connection dropped, the service stopped) costs no use and needs
        // none left: it proves the key the token was spent on.
        let again = enrolled_unix.is_none();
        if !again && uses >= max_uses {
            return Err(EnrollError::TokenUsedUp);
        }
        let issued = self.issue(&tx, customer, device, &key, now)?;
        tx.execute(
            "INSERT INTO devices (customer, device, key_fingerprint, serial, not_after_unix, enrolled_unix, renewed_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (customer, device) DO UPDATE SET
                key_fingerprint = excluded.key_fingerprint, serial = excluded.serial,
                not_after_unix = excluded.not_after_unix, renewed_unix = excluded.renewed_unix",
            params![
                customer.as_str(),
                device.as_str(),
                issued.fingerprint.as_bytes().as_slice(),
                issued.serial,
                issued.enrolled.not_after_unix,
                enrolled_unix.unwrap_or(unix(now)),
                unix(now)
            ],
        )?;
        if !again {
            tx.execute("UPDATE tokens SET uses = uses + 1 WHERE digest = ?1", [digest.as_slice()])?;
        }
        tx.commit()?;
        Ok(issued.enrolled)
    }

    /// Renews the certificate of a device over a connection already
    /// authenticated as `identity` (from [`Authority::identify`]). The key
    /// may change: the registered key moves to the CSR's, and certificates
    /// of the old key are refused from then on
    /// ([`AuthError::CloneSuspected`]).
    ///
    /// # Errors
    ///
    /// [`EnrollError::Csr`]; [`EnrollError::NotEnrolled`],
    /// [`EnrollError::Revoked`] or [`EnrollError::KeyMismatch`] if the
    /// register changed since the connection was authenticated;
    /// [`EnrollError::RenewedTooSoon`] within [`RENEWAL_INTERVAL`] of the
    /// device's last renewal (not of its enrollment).
    pub fn renew(
        &self,
        identity: &DeviceIdentity,
        csr_der: &[u8],
        now: OffsetDateTime,
    ) -> std::result::Result<Enrolled, EnrollError> {
        self.renew_identity(identity, csr_der, now).map(|(enrolled, _)| enrolled)
    }

    /// [`Authority::renew`], also giving the identity the new certificate
    /// names (the same device, the CSR's key): a connection that renewed
    /// goes on as that identity, since the register now refuses the key
    /// it was authenticated with.
    ///
    /// # Errors
    ///
    /// As [`Authority::renew`].
    pub fn renew_identity(
        &self,
        identity: &DeviceIdentity,
        csr_der: &[u8],
        now: OffsetDateTime,
    ) -> std::result::Result<(Enrolled, DeviceIdentity), EnrollError> {
        let key = csr_key(csr_der)?;
        let (customer, device) = (&identity.customer, &identity.device);
        let mut conn = lock(&self.inner.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        type Registered = (Vec<u8>, Option<i64>, i64, i64);
        let registered: Option<Registered> = tx
            .query_row(
                "SELECT key_fingerprint, revoked_unix, enrolled_unix, renewed_unix FROM devices
                 WHERE customer = ?1 AND device = ?2",
                params![customer.as_str(), device.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((fingerprint, revoked, enrolled_unix, renewed_unix)) = registered else {
            return Err(EnrollError::NotEnrolled { customer: customer.clone(), device: device.clone() });
        };
        if revoked.is_some() {
            return Err(EnrollError::Revoked { customer: customer.clone(), device: device.clone() });
        }
        if fingerprint != identity.key_fingerprint.as_bytes() {
            return Err(EnrollError::KeyMismatch { customer: customer.clone(), device: device.clone() });
        }
        // Renewed already, and not long ago: each renewal signs a
        // certificate and syncs this register under the lock every
        // handshake needs, so a device (with all its connections) gets one
        // a RENEWAL_INTERVAL. The first renewal after an enrollment is
        // never held back.
        if renewed_unix > enrolled_unix {
            let next = renewed_unix.saturating_add(RENEWAL_INTERVAL.whole_seconds());
            if unix(now) < next {
                return Err(EnrollError::RenewedTooSoon {
                    customer: customer.clone(),
                    device: device.clone(),
                    retry_after_s: u64::try_from(next - unix(now)).unwrap_or(0),
                });
            }
        }
        let issued = self.issue(&tx, customer, device, &key, now)?;
        tx.execute(
            "UPDATE devices SET key_fingerprint = ?3, serial = ?4, not_after_unix = ?5, renewed_unix = ?6
             WHERE customer = ?1 AND device = ?2",
            params![
                customer.as_str(),
                device.as_str(),
                issued.fingerprint.as_bytes().as_slice(),
                issued.serial,
                issued.enrolled.not_after_unix,
                // Later than the enrollment, even within its second: a
                // renewal is told from an enrollment by it (the first
                // renewal is never held back, the next ones are).
                unix(now).max(enrolled_unix.saturating_add(1))
            ],
        )?;
        tx.commit()?;
        let renewed = DeviceIdentity {
            customer: customer.clone(),
            device: device.clone(),
            key_fingerprint: issued.fingerprint,
        };
        Ok((issued.enrolled, renewed))
    }

    /// The device a connection's verified certificate chain names, checked
    /// against the register as it is now: call it after every handshake
    /// and take tenant and device from its answer only.
    ///
    /// The chain is verified again against the named customer's CA (so
    /// this is safe whatever verifier the TLS configuration used), unless
    /// this authority's own verifier verified that very certificate in a
    /// handshake moments before whose signature check proved the key (each
    /// such verification stands in once, within 30 seconds, and was made at
    /// the handshake's time, not `now`); then a
    /// revoked device, a device not enrolled, or a key other than the
    /// registered one is refused and reported.
    ///
    /// # Errors
    ///
    /// [`AuthError::NoCertificate`] for an empty chain (the connection may
    /// only enroll); the other [`AuthError`]s as documented there.
    pub fn identify(
        &self,
        peer_certs: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> std::result::Result<DeviceIdentity, AuthError> {
        let (end_entity, intermediates) = peer_certs.split_first().ok_or(AuthError::NoCertificate)?;
        let identity =
            identity_of(end_entity).map_err(|p| AuthError::BadCertificate { expected: p.expected() })?;
        let ca = self.inner.customer_ca(&identity.customer)?.ok_or(AuthError::UnknownCustomer)?;
        let at =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(unix(now)).unwrap_or(0)));
        // Verified by this authority's verifier in the handshake a moment
        // ago, or now.
        if !self.inner.verified.take(end_entity) {
            ca.verifier
                .verify_client_cert(end_entity, intermediates, at)
                .map_err(|e| AuthError::Untrusted { reason: e.to_string() })?;
        }

        let (customer, device) = (&identity.customer, &identity.device);
        let conn = lock(&self.inner.conn);
        // Cached: read on every handshake.
        let registered: Option<(Vec<u8>, Option<i64>)> = conn
            .prepare_cached(
                "SELECT key_fingerprint, revoked_unix FROM devices WHERE customer = ?1 AND device = ?2",
            )?
            .query_row(params![customer.as_str(), device.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (kind, refusal) = match registered {
            None => (
                ReportKind::UnknownDeviceConnection,
                AuthError::NotEnrolled { customer: customer.clone(), device: device.clone() },
            ),
            Some((_, Some(_))) => (
                ReportKind::RevokedConnection,
                AuthError::Revoked { customer: customer.clone(), device: device.clone() },
            ),
            Some((fp, None)) if fp != identity.key_fingerprint.as_bytes() => (
                ReportKind::CloneAtConnection,
                AuthError::CloneSuspected { customer: customer.clone(), device: device.clone() },
            ),
            Some(_) => return Ok(identity),
        };
        record(&conn, kind, customer, device, &identity.key_fingerprint, now)?;
        Err(refusal)
    }

    /// A rustls verifier of client certificates: client authentication is
    /// offered but not required (a device without a certificate may only
    /// enroll: the service enforces that with [`Authority::identify`]). A
    /// certificate is verified against the CA of the customer it names, and
    /// that CA only; a certificate naming an unknown customer is refused.
    /// No CA names are hinted to clients (that list would tell a stranger
    /// which customers exist).
    pub fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(AuthorityVerifier::new(Arc::clone(&self.inner)))
    }

    /// How many client-certificate chains this authority's verifiers
    /// verified in full, and how many times a remembered verification of
    /// the same certificate stood for one (a device presents the same
    /// certificate on every connection; the CA's signature on it is checked
    /// once, its expiry on every handshake). Counts since this `Authority`
    /// was opened.
    pub fn chain_verifications(&self) -> ChainVerifications {
        self.inner.chains.counts()
    }

    /// Signs a certificate for (customer, device) and `key` with the
    /// customer's CA (read inside the caller's transaction).
    fn issue(
        &self,
        tx: &rusqlite::Transaction<'_>,
        customer: &CustomerId,
        device: &DeviceId,
        key: &CsrKey,
        now: OffsetDateTime,
    ) -> std::result::Result<Issued, EnrollError> {
        let (ca_pem, ca_key_pem): (String, String) = tx
            .query_row(
                "SELECT ca_cert_pem, ca_key_pem FROM customers WHERE customer = ?1",
                [customer.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| Error::UnknownCustomer { customer: customer.clone() })?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(crypto("reading the ca key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(crypto("reading the ca certificate"))?;

        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, customer.as_str());
        params.distinguished_name.push(DnType::CommonName, device.as_str());
        let uri = identity_uri(customer, device).try_into().map_err(crypto("writing the identity uri"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = now + self.validity;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.signed_by(key, &issuer).map_err(crypto("signing the device certificate"))?;
        Ok(Issued {
            enrolled: Enrolled { cert_pem: cert.pem(), ca_pem, not_after_unix: unix(params.not_after) },
            serial,
            fingerprint: key.fingerprint(),
        })
    }
}

/// Counts one report (one row per kind, customer, device and key).
/// The most keys one device has report rows of, per kind: a key beyond
/// them is counted on the device's newest row instead (whoever holds a
/// token could otherwise add a row per fresh key for as long as it lasts).
const MAX_KEYS_REPORTED: i64 = 16;

fn record(
    conn: &rusqlite::Connection,
    kind: ReportKind,
    customer: &CustomerId,
    device: &DeviceId,
    fingerprint: &KeyFingerprint,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    let (known, keys): (bool, i64) = conn.query_row(
        "SELECT coalesce(max(key_fingerprint = ?4), 0), count(*) FROM reports
         WHERE kind = ?1 AND customer = ?2 AND device = ?3",
        params![kind.code(), customer.as_str(), device.as_str(), fingerprint.as_bytes().as_slice()],
        |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)),
    )?;
    if !known && keys >= MAX_KEYS_REPORTED {
        conn.execute(
            "UPDATE reports SET last_unix = max(last_unix, ?4), count = count + 1
             WHERE rowid = (SELECT rowid FROM reports WHERE kind = ?1 AND customer = ?2 AND device = ?3
                            ORDER BY last_unix DESC, rowid DESC LIMIT 1)",
            params![kind.code(), customer.as_str(), device.as_str(), unix(now)],
        )?;
        return Ok(());
    }
    conn.execute(
        "INSERT INTO reports (kind, customer, device, key_fingerprint, first_unix, last_unix, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1)
         ON CONFLICT (kind, customer, device, key_fingerprint) DO UPDATE SET
            last_unix = max(last_unix, excluded.last_unix), count = count + 1",
        params![
            kind.code(),
            customer.as_str(),
            device.as_str(),
            fingerprint.as_bytes().as_slice(),
            unix(now)
        ],
    )?;
    Ok(())
}

impl Inner {
    /// The customer's CA, from the cache or the file.
    pub(crate) fn customer_ca(&self, customer: &CustomerId) -> Result<Option<Arc<CustomerCa>>> {
        let conn = lock(&self.conn);
        // Another process committed since the cache was filled (it may have
        // removed a customer): nothing cached is trusted any more.
        // Cached: read twice in every handshake.
        let version: i64 = conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        if self.cas_seen.swap(version, std::sync::atomic::Ordering::AcqRel) != version {
            lock(&self.cas).clear();
        }
        if let Some(ca) = lock(&self.cas).get(customer) {
            return Ok(Some(Arc::clone(ca)));
        }
        let pem: Option<String> = conn
            .query_row("SELECT ca_cert_pem FROM customers WHERE customer = ?1", [customer.as_str()], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(pem) = pem else { return Ok(None) };
        let ca = Arc::new(CustomerCa::new(pem, Arc::clone(&self.provider))?);
        // Cached while the register is still locked: `remove_customer`
        // (which holds it from its commit to its removal from the cache)
        // cannot run between this read and this insert, which would leave
        // the removed CA cached, and trusted, in this process.
        lock(&self.cas).insert(customer.clone(), Arc::clone(&ca));
        drop(conn);
        Ok(Some(ca))
    }

    pub(crate) fn provider(&self) -> &Arc<rustls::crypto::CryptoProvider> {
        &self.provider
    }
}

/// Creates the file with mode 0600 if it does not exist, and refuses an
/// existing one that group or others may read.
fn create_private(path: &Path) -> Result<()> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::TooOpen { path: path.to_owned(), mode });
        }
    }
    drop(file);
    Ok(())
}

/// A server configuration for mutual TLS: the service's own certificate
/// from `server_identity`, and client certificates verified by
/// [`Authority::client_verifier`] (offered, not required). TLS 1.3 and 1.2,
/// ring provider.
///
/// No session is resumed: the service sends no TLS 1.3 tickets and keeps
/// no session cache, so every connection presents its certificate and
/// proves possession of the device key in a full handshake (a resumed
/// session would be authenticated by a secret from an earlier connection,
/// not by the key). rustls's default (a cache of 256 sessions, two tickets
/// a handshake) gave a fleet nothing either: thousands of devices, each
/// reconnecting minutes or hours later, find their session evicted long
/// before, while every handshake paid for making, sending and storing two
/// tickets (about 45,000 instructions a handshake on the service, counted
/// with callgrind).
///
/// # Errors
///
/// [`Error::Crypto`] if the identity's PEM texts do not hold a certificate
/// and a key rustls accepts.
pub fn server_config(
    authority: &Authority,
    server_identity: &privtel_wire::tls::Identity,
) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server_identity.cert_pem.as_bytes())
            .chain(CertificateDer::pem_slice_iter(server_identity.ca_pem.as_bytes()))
            .collect::<std::result::Result<_, _>>()
            .map_err(crypto("reading the server certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(server_identity.key_pem.as_bytes())
        .map_err(crypto("reading the server key"))?;
    let mut config = ServerConfig::builder_with_provider(Arc::clone(authority.inner.provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(crypto("choosing tls versions"))?
        .with_client_cert_verifier(authority.client_verifier())
        .with_single_cert(certs, key)
        .map_err(crypto("using the server certificate"))?;
    // No resumption (see above): no tickets (TLS 1.3), no session ids
    // (TLS 1.2).
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_form_is_checked_before_any_lookup() {
        let good = format!("{TOKEN_PREFIX}{}", "ab".repeat(32));
        assert!(token_digest(&good).is_some());
        for bad in [
            String::new(),
            "ab".repeat(32),
            format!("{TOKEN_PREFIX}{}", "AB".repeat(32)),
            format!("{TOKEN_PREFIX}{}", "ab".repeat(31)),
            format!("{TOKEN_PREFIX}{}g", "ab".repeat(31)),
            format!("xx{good}"),
        ] {
            assert!(token_digest(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn report_codes_round_trip_and_are_fixed() {
        let all = [
            ReportKind::CloneAtEnrollment,
            ReportKind::CloneAtConnection,
            ReportKind::RevokedConnection,
            ReportKind::UnknownDeviceConnection,
        ];
        assert_eq!(all.map(ReportKind::code), [1, 2, 3, 4]);
        for kind in all {
            assert_eq!(ReportKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ReportKind::from_code(0), None);
        assert_eq!(ReportKind::from_code(5), None);
    }

    #[test]
    fn serials_are_positive_and_sixteen_bytes() {
        for _ in 0..64 {
            let s = random_serial().unwrap();
            assert_eq!(s.len(), 16);
            assert_eq!(s[0] & 0xc0, 0x40);
        }
    }

    #[test]
    fn garbage_csrs_are_refused_by_form() {
        for bad in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xff; 64]] {
            assert!(matches!(csr_key(bad), Err(EnrollError::Csr { .. })));
        }
    }
}

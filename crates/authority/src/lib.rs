//! Device enrollment and mutual TLS for privtel: each customer has its own
//! certificate authority; a device enrolls once with a token the customer's
//! administrator issued, proves a key that never leaves it with a CSR, and
//! from then on authenticates every connection with a client certificate
//! naming (customer, device). The service takes tenant and device from that
//! certificate only.
//!
//! # Overview
//!
//! Service side (feature `server`):
//!
//! * [`Authority`]: the register in one SQLite file (mode 0600): each
//!   customer's CA, enrollment tokens (as SHA-256 digests), devices (key
//!   fingerprint, serial, expiry, revocation) and [`Report`]s.
//!   Administration: [`Authority::add_customer`], [`Authority::issue_token`],
//!   [`Authority::revoke_token`], [`Authority::revoke_device`],
//!   [`Authority::reset_device`], [`Authority::reports`].
//! * [`Authority::enroll`] and [`Authority::renew`]: CSR in, certificate out.
//! * [`Authority::client_verifier`] and [`server_config`]: rustls verifies a
//!   client certificate against the CA of the customer it names, and that
//!   CA only; client authentication is offered, not required.
//! * [`Authority::identify`]: after each handshake, the [`DeviceIdentity`]
//!   the certificate names, checked against the register as it is now
//!   (revocation, renewal and clones apply at once, without a restart).
//!
//! Device side (feature `client`):
//!
//! * [`DeviceKey`]: the device's ECDSA P-256 key and its CSR.
//! * [`request`] and [`accept`]: the enrollment request, and the check of
//!   the answer that makes [`Credentials`] (saved 0600 in one file).
//! * [`client_config`] (mutual TLS) and [`enrollment_client_config`] (no
//!   client certificate, to enroll): the service's certificate verified
//!   against its CA alone, a chain verified in full remembered for the
//!   next connection (expiry checked on each; the handshake signature
//!   always verified; `docs/ENROLLMENT.md`).
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "server", feature = "client"))] {
//! use privtel_authority::{Authority, DeviceKey};
//! use privtel_model::{CustomerId, DeviceId};
//! use time::{Duration, OffsetDateTime};
//!
//! let dir = tempfile::tempdir()?;
//! let authority = Authority::open(dir.path().join("authority.db"))?;
//! let now = OffsetDateTime::now_utc();
//! let acme = CustomerId::new("acme")?;
//! authority.add_customer(&acme, now)?;
//! let token = authority.issue_token(&acme, Duration::hours(1), 1, now)?;
//!
//! let key = DeviceKey::generate()?;
//! let pc = DeviceId::new("pc-7")?;
//! let enrolled = authority.enroll(&privtel_authority::request(Some(&token), &acme, &pc, &key)?, now)?;
//! let credentials = privtel_authority::accept(&key, &acme, &pc, enrolled)?;
//!
//! // What the service sees after a handshake with these credentials:
//! let chain = [privtel_authority::certificate_der(&credentials.cert_pem)?];
//! let identity = authority.identify(&chain, now)?;
//! assert_eq!((identity.customer, identity.device), (acme, pc));
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! * `server` — [`Authority`], [`server_config`]: SQLite (bundled), rcgen,
//!   x509-parser (CSR parsing), rustls.
//! * `client` — [`DeviceKey`], [`Credentials`], [`request`], [`accept`],
//!   [`client_config`]: rcgen and rustls only (no SQLite, no x509-parser).
//!
//! # What it does not do
//!
//! TLS cannot tell two machines apart that hold the same key: an exact copy
//! of a device's disk, key included, is that device. Clone detection
//! catches a second machine with the same identity and *another* key
//! (at enrollment or at connection), not a byte-for-byte copy. See
//! `docs/ENROLLMENT.md`.

#[cfg(any(feature = "server", feature = "client"))]
mod chains;
mod error;
mod identity;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "server")]
mod server;

#[cfg(any(feature = "server", feature = "client"))]
pub use chains::ChainVerifications;
#[cfg(feature = "client")]
pub use client::{
    CREDENTIALS_FILE, Credentials, DeviceKey, PENDING_KEY_FILE, accept, client_config,
    enrollment_client_config, request,
};
#[cfg(feature = "client")]
pub use error::ClientError;
#[cfg(feature = "server")]
pub use error::{AuthError, EnrollError, Error, Result};
pub use identity::{DeviceIdentity, IDENTITY_URI_PREFIX, KeyFingerprint, identity_uri};
#[cfg(feature = "server")]
pub use server::{
    Authority, DeviceRecord, RENEWAL_INTERVAL, RemovedCustomer, Report, ReportKind, TOKEN_PREFIX,
    server_config,
};

/// Readers of outside bytes, for the fuzz targets.
#[cfg(any(feature = "server", feature = "client"))]
#[doc(hidden)]
pub mod fuzzing {
    /// The reading of a certificate's validity a verifier remembers chains by.
    pub fn validity(der: &[u8]) -> Option<(u64, u64)> {
        crate::chains::validity(der)
    }

    /// x509-parser's reading of the same (feature `server`), for the fuzz
    /// target to hold the two to one answer.
    #[cfg(feature = "server")]
    pub fn x509_validity(der: &[u8]) -> Option<(i64, i64)> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let v = cert.validity();
        Some((v.not_before.timestamp(), v.not_after.timestamp()))
    }
}

/// The rustls version this crate is built on, for naming its types
/// (`CertificateDer`, `ServerConfig`, `ClientConfig`).
pub use rustls;

/// The DER of the single certificate in a PEM text (what a TLS peer
/// presents for it).
///
/// # Errors
///
/// [`BadPem`] unless the text holds exactly one certificate.
pub fn certificate_der(pem: &str) -> Result<rustls::pki_types::CertificateDer<'static>, BadPem> {
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| BadPem)?;
    let [cert] = <[_; 1]>::try_from(certs).map_err(|_| BadPem)?;
    Ok(cert)
}

/// A PEM text that does not hold exactly one certificate.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("certificate pem: expected exactly one certificate")]
pub struct BadPem;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "server", feature = "client"))]
pub struct ReadmeDoctests;

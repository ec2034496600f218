//! The rustls client-certificate verifier: each certificate is verified
//! against the CA of the customer it names, and that CA only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

use super::register::Inner;
use crate::error::Error;
use crate::identity::identity_of;

/// One customer's CA: its PEM and a webpki verifier trusting it alone.
pub(crate) struct CustomerCa {
    pub(crate) cert_pem: String,
    /// SHA-256 of `cert_pem`: which CA verified a remembered chain.
    digest: [u8; 32],
    pub(crate) verifier: Arc<dyn ClientCertVerifier>,
}

impl CustomerCa {
    pub(crate) fn new(
        cert_pem: String,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, Error> {
        let bad = |reason: String| Error::Crypto { action: "reading a customer's ca", reason };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { digest: Sha256::digest(cert_pem.as_bytes()).into(), cert_pem, verifier })
    }
}

pub(crate) struct AuthorityVerifier {
    inner: Arc<Inner>,
}

impl AuthorityVerifier {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

impl std::fmt::Debug for AuthorityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthorityVerifier")
    }
}

impl ClientCertVerifier for AuthorityVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A device without a certificate may connect to enroll; everything
        // else is refused by `Authority::identify`.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hinting every customer's CA would list the customers to anyone.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let identity = identity_of(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let ca = self
            .inner
            .customer_ca(&identity.customer)
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        let digest: [u8; 32] = Sha256::digest(end_entity).into();
        // Only a certificate the CA signed directly is remembered (a
        // device's always is); a chain with intermediates is verified
        // whole every time.
        let direct = intermediates.is_empty();
        if direct && self.inner.chains.stands_for(&digest, &ca, now) {
            self.inner.verified.pending(digest);
            return Ok(ClientCertVerified::assertion());
        }
        // Every refusal of the chain is the one an unknown customer gets
        // (`unknown_ca`): a bad signature or an expired certificate would
        // say that the named customer's authority exists and looked at it,
        // so a look-alike authority of a guessed name would list the
        // customers. (The service's `identify` and its reports tell the
        // reasons of certificates that pass.)
        let verified = ca
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        self.inner.chains.count_full();
        if direct && let Some(window) = validity(end_entity) {
            self.inner.chains.remember(digest, &ca, window, now);
        }
        self.inner.verified.pending(digest);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let valid = rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.inner.provider().signature_verification_algorithms,
        )?;
        self.inner.verified.proven(cert);
        Ok(valid)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let valid = rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.inner.provider().signature_verification_algorithms,
        )?;
        self.inner.verified.proven(cert);
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The validity of a certificate, in seconds since the Unix epoch, as
/// webpki checks it (`not_before <= now <= not_after`); `None` when it
/// cannot be read (then nothing is remembered).
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = cert.validity();
    let not_before = u64::try_from(validity.not_before.timestamp()).ok()?;
    let not_after = u64::try_from(validity.not_after.timestamp()).ok()?;
    Some((not_before, not_after))
}

/// Device certificates whose chain [`AuthorityVerifier`] has verified in
/// full, by the SHA-256 digest of their DER, with the CA that verified
/// them and their validity. A device presents the same certificate on
/// every connection for the certificate's life (30 days by default);
/// verifying its CA's signature on it again each time (an ECDSA
/// verification, about a seventh of the service's instructions a session)
/// learns nothing new: the signature on those exact bytes under that CA
/// key was valid and stays valid.
///
/// A remembered verification stands for a new one only when
///
/// * the certificate is byte for byte the one verified (its digest), and
///   came without intermediates;
/// * the customer it names has, as the register holds it now, the very CA
///   certificate that verified it (a customer removed has none: refused;
///   one removed and added again, by this process or another, has a new
///   CA: verified in full, and refused);
/// * the handshake's time is within the certificate's validity (expiry is
///   checked on every connection, as webpki checks it).
///
/// What every handshake still does: the handshake signature (proof that
/// the peer holds the certificate's key) and, in
/// [`Authority::identify`](super::Authority::identify), the register's
/// revocation and registered key (which a renewal or a clone changes).
/// Only verifications that succeeded are remembered, so nothing a client
/// sends can make a certificate trusted. Bounded by [`Chains::MAX`]: when
/// it is reached, the expired entries are forgotten, and all of them if
/// that frees less than a quarter (each device is then verified in full
/// once more).
#[derive(Default)]
pub(crate) struct Chains {
    map: Mutex<HashMap<[u8; 32], Chain>>,
    full: AtomicU64,
    remembered: AtomicU64,
}

struct Chain {
    /// [`CustomerCa::digest`] of the CA that verified it.
    ca: [u8; 32],
    not_before: u64,
    not_after: u64,
}

/// How often the verifier of
/// [`Authority::client_verifier`](super::Authority::client_verifier)
/// verified a client certificate's chain in full, and how often a
/// remembered verification of the same bytes stood for one (a handshake
/// whose key proof then fails counts too); see
/// [`Authority::chain_verifications`](super::Authority::chain_verifications).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ChainVerifications {
    /// Chains verified in full (signatures checked) that passed.
    pub full: u64,
    /// Lookups where a remembered verification stood for a full one.
    pub remembered: u64,
}

impl Chains {
    /// The most certificates remembered (about 100 bytes each).
    pub(crate) const MAX: usize = 100_000;

    fn stands_for(&self, digest: &[u8; 32], ca: &CustomerCa, now: UnixTime) -> bool {
        let now = now.as_secs();
        let hit = lock(&self.map)
            .get(digest)
            .is_some_and(|c| c.ca == ca.digest && c.not_before <= now && now <= c.not_after);
        if hit {
            self.remembered.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn count_full(&self) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    fn remember(
        &self,
        digest: [u8; 32],
        ca: &CustomerCa,
        (not_before, not_after): (u64, u64),
        now: UnixTime,
    ) {
        let mut map = lock(&self.map);
        if map.len() >= Self::MAX && !map.contains_key(&digest) {
            // Each pass over the map frees at least a quarter of it, so the
            // passes cost O(1) an insertion over time (one that freed a
            // single expired entry would run again at the next insertion).
            let now = now.as_secs();
            map.retain(|_, c| c.not_after >= now);
            if map.len() > Self::MAX / 4 * 3 {
                map.clear();
            }
        }
        map.insert(digest, Chain { ca: ca.digest, not_before, not_after });
    }

    /// Forgets every remembered verification.
    pub(crate) fn clear(&self) {
        lock(&self.map).clear();
    }

    pub(crate) fn counts(&self) -> ChainVerifications {
        ChainVerifications {
            full: self.full.load(Ordering::Relaxed),
            remembered: self.remembered.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A map of digests stays consistent whatever panicked while holding it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> CustomerCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        CustomerCa::new(pem, Arc::new(rustls::crypto::ring::default_provider())).unwrap()
    }

    fn digest(i: usize) -> [u8; 32] {
        Sha256::digest(i.to_le_bytes()).into()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    #[test]
    fn a_remembered_chain_stands_in_exactly_within_its_validity_and_for_its_ca() {
        let (chains, ca, other) = (Chains::default(), ca(), ca());
        chains.remember(digest(1), &ca, (1_000, 2_000), at(1_500));
        // As webpki: refused when `now < not_before` or `now > not_after`.
        for (now, stands) in [(999, false), (1_000, true), (1_500, true), (2_000, true), (2_001, false)] {
            assert_eq!(chains.stands_for(&digest(1), &ca, at(now)), stands, "at {now}");
        }
        // Another CA's verification of the same bytes, or other bytes.
        assert!(!chains.stands_for(&digest(1), &other, at(1_500)));
        assert!(!chains.stands_for(&digest(2), &ca, at(1_500)));
        assert_eq!(chains.counts(), ChainVerifications { full: 0, remembered: 3 });
    }

    #[test]
    fn what_is_remembered_stays_within_its_bound_expired_entries_go_first() {
        let (chains, ca) = (Chains::default(), ca());
        let now = at(1_000);
        // Half of them expired by `now`.
        for i in 0..Chains::MAX {
            let not_after = if i % 2 == 0 { 999 } else { 2_000 };
            chains.remember(digest(i), &ca, (0, not_after), at(500));
        }
        assert_eq!(lock(&chains.map).len(), Chains::MAX);
        // Remembering one already there forgets nothing.
        chains.remember(digest(1), &ca, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), Chains::MAX);
        // A new one: the expired half goes, the valid half stays.
        chains.remember(digest(Chains::MAX), &ca, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), Chains::MAX / 2 + 1);
        assert!(chains.stands_for(&digest(1), &ca, now));
        assert!(chains.stands_for(&digest(Chains::MAX), &ca, now));
        // Fewer than a quarter expired: all go but the new one (else each
        // insertion would scan the whole map to free one entry).
        let chains = Chains::default();
        for i in 0..Chains::MAX {
            let not_after = if i % 8 == 0 { 999 } else { 2_000 };
            chains.remember(digest(i), &ca, (0, not_after), at(500));
        }
        chains.remember(digest(Chains::MAX), &ca, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), 1);
        // All valid and full: all go but the new one.
        let chains = Chains::default();
        for i in 0..Chains::MAX {
            chains.remember(digest(i), &ca, (0, 2_000), now);
        }
        assert_eq!(lock(&chains.map).len(), Chains::MAX);
        chains.remember(digest(Chains::MAX + 1), &ca, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), 1);
        assert!(chains.stands_for(&digest(Chains::MAX + 1), &ca, now));
    }
}

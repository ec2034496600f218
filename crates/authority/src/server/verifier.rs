//! The rustls client-certificate verifier: each certificate is verified
//! against the CA of the customer it names, and that CA only.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

use super::register::Inner;
use crate::chains::validity;
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
        if direct && self.inner.chains.stands_for(&digest, &ca.digest, now) {
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
            self.inner.chains.remember(digest, &ca.digest, window, now);
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

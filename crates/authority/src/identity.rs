//! What a device certificate names: the identity URI, the key fingerprint,
//! and reading both back from a certificate.

use std::fmt;

use privtel_model::{CustomerId, DeviceId};
use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};

/// The scheme and namespace of the identity URI in a device certificate's
/// subject alternative names: `urn:privtel:<customer>:<device>`.
pub const IDENTITY_URI_PREFIX: &str = "urn:privtel:";

/// The SHA-256 digest of a key's DER `SubjectPublicKeyInfo`: what the
/// register holds for each device, and what a connection's certificate must
/// match.
///
/// `Display` prints 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyFingerprint([u8; 32]);

impl KeyFingerprint {
    /// The fingerprint of a DER `SubjectPublicKeyInfo`.
    ///
    /// ```
    /// let a = privtel_authority::KeyFingerprint::of_spki(b"spki");
    /// assert_eq!(a.to_string().len(), 64);
    /// assert_ne!(a, privtel_authority::KeyFingerprint::of_spki(b"other"));
    /// ```
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// Wraps 32 digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

/// A device as its verified certificate names it: the only source of tenant
/// and device a service may use.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
// Plain data: a new field is a new fact the certificate proves, and every
// user should see it.
pub struct DeviceIdentity {
    /// The customer (tenant) whose authority issued the certificate.
    pub customer: CustomerId,
    /// The device.
    pub device: DeviceId,
    /// The fingerprint of the certificate's key.
    pub key_fingerprint: KeyFingerprint,
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.customer, self.device)
    }
}

/// The identity URI of (customer, device): `urn:privtel:<customer>:<device>`,
/// with `:` inside an id written `%3A` (ids may hold `:`, and the two parts
/// must split one way only).
///
/// ```
/// use privtel_model::{CustomerId, DeviceId};
/// let uri = privtel_authority::identity_uri(&CustomerId::new("acme")?, &DeviceId::new("pc:7")?);
/// assert_eq!(uri, "urn:privtel:acme:pc%3A7");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn identity_uri(customer: &CustomerId, device: &DeviceId) -> String {
    format!("{IDENTITY_URI_PREFIX}{}:{}", escape(customer.as_str()), escape(device.as_str()))
}

fn escape(id: &str) -> String {
    id.replace(':', "%3A")
}

/// Reads an identity URI back; `None` for anything [`identity_uri`] does not
/// write.
pub(crate) fn parse_identity_uri(uri: &str) -> Option<(CustomerId, DeviceId)> {
    let rest = uri.strip_prefix(IDENTITY_URI_PREFIX)?;
    let (customer, device) = rest.split_once(':')?;
    let unescape = |s: &str| {
        // The only escape is %3A; any other `%`, or a bare `:`, is not ours.
        let text = s.replace("%3A", ":");
        (!s.contains(':') && !text.contains('%')).then_some(text)
    };
    let customer = CustomerId::new(unescape(customer)?).ok()?;
    let device = DeviceId::new(unescape(device)?).ok()?;
    Some((customer, device))
}

/// Why a certificate names no device identity (no value from it repeated).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CertProblem {
    /// Not a DER X.509 v3 certificate webpki can read.
    Unreadable,
    /// No identity URI, or more than one.
    NoIdentity,
}

impl CertProblem {
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Self::Unreadable => "a der x.509 v3 certificate",
            Self::NoIdentity => "exactly one subject alternative name urn:privtel:<customer>:<device>",
        }
    }
}

/// The identity a certificate names (not yet verified: the caller checks
/// the chain against that customer's authority).
pub(crate) fn identity_of(cert: &CertificateDer<'_>) -> Result<DeviceIdentity, CertProblem> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| CertProblem::Unreadable)?;
    let mut ours = parsed.valid_uri_names().filter(|u| u.starts_with(IDENTITY_URI_PREFIX));
    let (Some(uri), None) = (ours.next(), ours.next()) else {
        return Err(CertProblem::NoIdentity);
    };
    let (customer, device) = parse_identity_uri(uri).ok_or(CertProblem::NoIdentity)?;
    let key_fingerprint = KeyFingerprint::of_spki(&parsed.subject_public_key_info());
    Ok(DeviceIdentity { customer, device, key_fingerprint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_split_one_way_only() {
        let c = CustomerId::new("a:b").unwrap();
        let d = DeviceId::new("c").unwrap();
        let uri = identity_uri(&c, &d);
        assert_eq!(uri, "urn:privtel:a%3Ab:c");
        assert_eq!(parse_identity_uri(&uri), Some((c, d)));
        for bad in [
            "urn:privtel:a",
            "urn:privtel:a:b:c",
            "urn:privtel::b",
            "urn:privtel:a%3a:b",
            "urn:privtel:a%41:b",
            "urn:other:a:b",
            "urn:privtel:a b:c",
        ] {
            assert_eq!(parse_identity_uri(bad), None, "{bad}");
        }
    }
}

//! Signed checkpoints and the service's Ed25519 key.
//!
//! A checkpoint's bytes (version 1, 117 bytes, integers big-endian):
//!
//! ```text
//! u8    checkpoint format version (1)
//! u64   size: how many entries it covers
//! [32]  head: the hash of entry size - 1 (zeros for an empty log)
//! i64   at, Unix seconds
//! u32   at, nanoseconds of the second
//! [64]  Ed25519 signature of: "privtel-access checkpoint v1\0" and the
//!       52 bytes from size to at
//! ```

use std::fmt;
use std::path::Path;

use privtel_model::Timestamp;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::error::{DecodeError, KeyError};

/// The checkpoint format version this crate writes and reads.
pub const CHECKPOINT_VERSION: u8 = 1;
/// A checkpoint's length in bytes.
pub const CHECKPOINT_LEN: usize = 1 + 8 + 32 + 12 + 64;
/// What the signature covers before the fields (domain separation: a
/// checkpoint signature is never a valid signature of anything else the
/// key signs).
const SIGNED_PREFIX: &[u8] = b"privtel-access checkpoint v1\0";

/// The service's signing key (Ed25519).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public_key()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key, and its PKCS#8 v2 bytes to keep it.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] if the system's random source fails.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let pkcs8 = doc.as_ref().to_vec();
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// The key of PKCS#8 v2 bytes (as [`SigningKey::generate`] returns).
    ///
    /// # Errors
    ///
    /// [`KeyError::Rejected`] if they are not an Ed25519 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(|pair| Self { pair })
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }

    /// Reads the key at `path`, or creates one there (PKCS#8 v2, mode
    /// 0600 on Unix, the file's name synced).
    ///
    /// # Errors
    ///
    /// The file cannot be read or written, or holds no Ed25519 key.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_pkcs8(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                let (key, pkcs8) = Self::generate()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path)?;
                file.write_all(&pkcs8)?;
                file.sync_all()?;
                #[cfg(unix)]
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(key)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The public key, which the customer holds to verify checkpoints.
    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }

    /// Signs a checkpoint of `size` entries whose last has hash `head`,
    /// dated `at`.
    pub fn sign(&self, size: u64, head: [u8; 32], at: Timestamp) -> Checkpoint {
        let mut signature = [0; 64];
        signature.copy_from_slice(self.pair.sign(&signed_message(size, &head, at)).as_ref());
        Checkpoint { size, head, at, signature }
    }

    /// Signs a document the service hands to a customer (a deletion
    /// receipt): the Ed25519 signature of `"privtel signed document v1\0"`,
    /// `kind`'s length (u16, big-endian), `kind` and `document`. The prefix
    /// and the kind keep it from ever being a valid checkpoint signature or
    /// the signature of a document of another kind.
    pub fn sign_document(&self, kind: &str, document: &[u8]) -> [u8; 64] {
        let mut signature = [0; 64];
        signature.copy_from_slice(self.pair.sign(&document_message(kind, document)).as_ref());
        signature
    }
}

/// The service's public key (Ed25519, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key of 32 bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::PublicKeyLength`] for any other length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        <[u8; 32]>::try_from(bytes).map(Self).map_err(|_| KeyError::PublicKeyLength { len: bytes.len() })
    }
}

impl PublicKey {
    /// Whether `signature` is this key's signature of `document` as
    /// [`SigningKey::sign_document`] made it for `kind`.
    pub fn verifies_document(&self, kind: &str, document: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0).verify(&document_message(kind, document), signature).is_ok()
    }
}

/// What a document signature covers (see [`SigningKey::sign_document`]).
fn document_message(kind: &str, document: &[u8]) -> Vec<u8> {
    const PREFIX: &[u8] = b"privtel signed document v1\0";
    let kind = &kind.as_bytes()[..kind.len().min(usize::from(u16::MAX))];
    let mut msg = Vec::with_capacity(PREFIX.len() + 2 + kind.len() + document.len());
    msg.extend_from_slice(PREFIX);
    msg.extend_from_slice(&u16::try_from(kind.len()).unwrap_or(u16::MAX).to_be_bytes());
    msg.extend_from_slice(kind);
    msg.extend_from_slice(document);
    msg
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The log's size and head hash at an instant, signed by the service: what
/// the customer keeps, to check later that the log still holds exactly the
/// entries it covered (and that a later one extends it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// How many entries it covers.
    pub size: u64,
    /// The hash of the last entry it covers (zeros for none).
    pub head: [u8; 32],
    /// When it was signed.
    pub at: Timestamp,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// Its bytes (version 1).
    pub fn to_bytes(&self) -> [u8; CHECKPOINT_LEN] {
        let mut out = [0; CHECKPOINT_LEN];
        out[0] = CHECKPOINT_VERSION;
        out[1..53].copy_from_slice(&fields(self.size, &self.head, self.at));
        out[53..].copy_from_slice(&self.signature);
        out
    }

    /// Reads the bytes of [`Checkpoint::to_bytes`]. The signature is not
    /// checked here: [`crate::verify`] does.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for another length, version or an invalid time.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != CHECKPOINT_LEN {
            return Err(DecodeError::Truncated {
                what: "checkpoint",
                offset: 0,
                have: bytes.len(),
                need: CHECKPOINT_LEN,
            });
        }
        if bytes[0] != CHECKPOINT_VERSION {
            return Err(DecodeError::Version {
                what: "checkpoint format",
                found: u32::from(bytes[0]),
                expected: u32::from(CHECKPOINT_VERSION),
            });
        }
        let mut size = [0; 8];
        size.copy_from_slice(&bytes[1..9]);
        let mut head = [0; 32];
        head.copy_from_slice(&bytes[9..41]);
        let mut secs = [0; 8];
        secs.copy_from_slice(&bytes[41..49]);
        let mut nanos = [0; 4];
        nanos.copy_from_slice(&bytes[49..53]);
        let at = Timestamp::from_parts(i64::from_be_bytes(secs), u32::from_be_bytes(nanos))
            .map_err(|_| DecodeError::Field { offset: 41, field: "checkpoint time" })?;
        let mut signature = [0; 64];
        signature.copy_from_slice(&bytes[53..]);
        Ok(Self { size: u64::from_be_bytes(size), head, at, signature })
    }

    /// Whether the signature is `key`'s.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        UnparsedPublicKey::new(&ED25519, key.0)
            .verify(&signed_message(self.size, &self.head, self.at), &self.signature)
            .is_ok()
    }
}

fn fields(size: u64, head: &[u8; 32], at: Timestamp) -> [u8; 52] {
    let mut out = [0; 52];
    out[..8].copy_from_slice(&size.to_be_bytes());
    out[8..40].copy_from_slice(head);
    out[40..48].copy_from_slice(&at.unix_seconds().to_be_bytes());
    out[48..].copy_from_slice(&at.subsec_nanos().to_be_bytes());
    out
}

fn signed_message(size: u64, head: &[u8; 32], at: Timestamp) -> Vec<u8> {
    let mut msg = SIGNED_PREFIX.to_vec();
    msg.extend_from_slice(&fields(size, head, at));
    msg
}

//! Per-person data keys: what a record's payload is sealed under.
//!
//! Every stored record names its *subjects*: the keyed digest of its user id
//! (if any) and every keyed digest of what else in it names a person
//! (pseudonyms, logins, emails, full names, home folders; see
//! `privtel_store::parts::mentions`). Each subject of a customer has a random
//! 32-byte key in the `subject_keys` table. A record's payload is sealed
//! (the store's AES-256-GCM codec) under a key derived from the customer's
//! base key and the keys of all its subjects, so destroying any one of them
//! makes the record unreadable. Erasure destroys exactly the keys of the
//! person's user id and of the digests their records carry, which are
//! exactly the subjects of the records it removes (one hop).

use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use privtel_store::parts::{DIGEST_LEN, Digest};

use crate::error::DecodeError;

/// One subject as stored in `records.subjects`: its kind code
/// (`MentionKind::code`) and its keyed digest.
pub(crate) type Subject = (u8, Digest);

/// Bytes of one subject in `records.subjects`.
pub const SUBJECT_LEN: usize = 1 + DIGEST_LEN;

/// The most subjects one record may list (far above any real record: a
/// record has a handful of personal fields).
pub const MAX_SUBJECTS: usize = 1024;

/// The digest under which a customer's base key is kept (kind 0): not the
/// digest of anything, never erased.
pub(crate) const BASE: Digest = [0; DIGEST_LEN];

/// The key id the store's codec authenticates with a record's payload (a
/// record key is derived, never stored, so the id only names the scheme).
pub(crate) const RECORD_KEY_ID: u32 = 1;

/// Encodes subjects for `records.subjects`: kind byte and digest, in order.
pub(crate) fn encode_subjects(subjects: &[Subject]) -> Vec<u8> {
    let mut out = Vec::with_capacity(subjects.len() * SUBJECT_LEN);
    for (kind, digest) in subjects {
        out.push(*kind);
        out.extend_from_slice(digest);
    }
    out
}

/// Decodes `records.subjects` as read back from the database.
///
/// # Errors
///
/// [`DecodeError`] when the length is not a whole number of subjects, there
/// are more than [`MAX_SUBJECTS`], or a kind code is not one of 1–6.
pub fn decode_subjects(bytes: &[u8]) -> Result<Vec<(u8, [u8; DIGEST_LEN])>, DecodeError> {
    if !bytes.len().is_multiple_of(SUBJECT_LEN) {
        return Err(DecodeError::new(format!(
            "subjects of {} bytes, expected a multiple of {SUBJECT_LEN}",
            bytes.len()
        )));
    }
    if bytes.len() / SUBJECT_LEN > MAX_SUBJECTS {
        return Err(DecodeError::new(format!(
            "{} subjects, expected at most {MAX_SUBJECTS}",
            bytes.len() / SUBJECT_LEN
        )));
    }
    bytes
        .chunks_exact(SUBJECT_LEN)
        .map(|c| {
            let kind = c[0];
            if !(1..=6).contains(&kind) {
                return Err(DecodeError::new(format!("subject kind {kind}, expected 1 to 6")));
            }
            let mut d = [0; DIGEST_LEN];
            d.copy_from_slice(&c[1..]);
            Ok((kind, d))
        })
        .collect()
}

/// A fresh random subject key.
pub(crate) fn new_key() -> [u8; 32] {
    let mut k = [0; 32];
    OsRng.fill_bytes(&mut k);
    k
}

/// The key a record is sealed under: derived (BLAKE3 key derivation) from
/// the customer's base key and its subjects' keys, in the stored order.
pub(crate) fn record_key<'a>(
    base: &[u8; 32],
    subject_keys: impl IntoIterator<Item = &'a [u8; 32]>,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("privtel-engine-pg 2026-12 record key v1");
    h.update(base);
    for k in subject_keys {
        h.update(k);
    }
    *h.finalize().as_bytes()
}

/// Wraps subject keys stored in `subject_keys.key` when the operator gives
/// a wrapping key: the table (and so the log and backups) then holds only
/// ciphertexts. `Debug` prints no key.
#[derive(Clone)]
pub(crate) struct Wrap {
    id: u32,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Wrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wrap({}, <secret>)", self.id)
    }
}

const NONCE_LEN: usize = 12;

/// Bytes of a wrapped key: key id, nonce, ciphertext and tag.
pub const WRAPPED_LEN: usize = 4 + NONCE_LEN + 32 + 16;

impl Wrap {
    pub(crate) fn new(id: u32, secret: [u8; 32]) -> Self {
        Self { id, cipher: Aes256Gcm::new(&secret.into()) }
    }
}

/// The additional data a wrapped key is bound to: its customer and digest,
/// so a key row moved to another subject does not open.
fn aad(customer: i32, digest: &Digest) -> [u8; 4 + DIGEST_LEN] {
    let mut a = [0; 4 + DIGEST_LEN];
    a[..4].copy_from_slice(&customer.to_le_bytes());
    a[4..].copy_from_slice(digest);
    a
}

/// A key as stored: wrapped when there is a wrapping key, else as is.
pub(crate) fn store_key(wrap: Option<&Wrap>, customer: i32, digest: &Digest, key: &[u8; 32]) -> Vec<u8> {
    let Some(w) = wrap else { return key.to_vec() };
    let nonce = Nonce::from(privtel_store::parts::random_nonce());
    let sealed =
        w.cipher.encrypt(&nonce, Payload { msg: key, aad: &aad(customer, digest) }).unwrap_or_default();
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&w.id.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// A key read back from `subject_keys.key` (see [`store_key`]).
///
/// # Errors
///
/// [`DecodeError`] for a length other than 32 (plain) or [`WRAPPED_LEN`]
/// (wrapped), a wrapped key and no wrapping key or another one, or a
/// ciphertext that does not open.
pub(crate) fn load_key(
    wrap: Option<&Wrap>,
    customer: i32,
    digest: &Digest,
    stored: &[u8],
) -> Result<[u8; 32], DecodeError> {
    match (stored.len(), wrap) {
        (32, None) => {
            let mut k = [0; 32];
            k.copy_from_slice(stored);
            Ok(k)
        }
        (32, Some(_)) => Err(DecodeError::new("a plain subject key, expected a wrapped one".into())),
        (WRAPPED_LEN, None) => {
            Err(DecodeError::new("a wrapped subject key, expected a wrapping key in the options".into()))
        }
        (WRAPPED_LEN, Some(w)) => {
            let id = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
            if id != w.id {
                return Err(DecodeError::new(format!("a key wrapped under key {id}, expected key {}", w.id)));
            }
            let (nonce, sealed) = stored[4..].split_at(NONCE_LEN);
            let plain = w
                .cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad(customer, digest) })
                .map_err(|_| {
                    DecodeError::new("a wrapped subject key does not open: wrong key or corrupted row".into())
                })?;
            let mut k = [0; 32];
            k.copy_from_slice(&plain);
            Ok(k)
        }
        (n, _) => Err(DecodeError::new(format!("a subject key of {n} bytes, expected 32 or {WRAPPED_LEN}"))),
    }
}

/// Checks bytes as read back from `subject_keys.key`, for the fuzz target:
/// plain or wrapped under a fixed test key.
#[doc(hidden)]
pub fn fuzz_load_key(stored: &[u8], wrapped: bool) -> Result<[u8; 32], DecodeError> {
    let w = Wrap::new(1, [3; 32]);
    load_key(wrapped.then_some(&w), 1, &BASE, stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_bad_bytes_are_refused() {
        let s = vec![(1, [7; DIGEST_LEN]), (2, [9; DIGEST_LEN])];
        assert_eq!(decode_subjects(&encode_subjects(&s)).unwrap(), s);
        assert!(decode_subjects(&[1; SUBJECT_LEN - 1]).unwrap_err().to_string().contains("multiple of 17"));
        let mut bad = encode_subjects(&s);
        bad[0] = 9;
        assert!(decode_subjects(&bad).unwrap_err().to_string().contains("kind 9"));
    }

    #[test]
    fn wrapped_keys_open_only_for_their_subject_and_wrapping_key() {
        let w = Wrap::new(4, [1; 32]);
        let key = new_key();
        let stored = store_key(Some(&w), 2, &[5; DIGEST_LEN], &key);
        assert_eq!(stored.len(), WRAPPED_LEN);
        assert!(!stored.windows(32).any(|x| x == key));
        assert_eq!(load_key(Some(&w), 2, &[5; DIGEST_LEN], &stored).unwrap(), key);
        assert!(load_key(Some(&w), 3, &[5; DIGEST_LEN], &stored).is_err());
        assert!(load_key(Some(&Wrap::new(4, [2; 32])), 2, &[5; DIGEST_LEN], &stored).is_err());
        assert!(load_key(None, 2, &[5; DIGEST_LEN], &stored).is_err());
        assert_eq!(load_key(None, 2, &[5; DIGEST_LEN], &key).unwrap(), key);
    }

    #[test]
    fn a_record_key_depends_on_every_subject_key() {
        let (a, b) = ([1; 32], [2; 32]);
        let k = record_key(&BASE_KEY, [&a, &b]);
        assert_ne!(k, record_key(&BASE_KEY, [&a]));
        assert_ne!(k, record_key(&BASE_KEY, [&b, &a]));
        assert_ne!(k, record_key(&[9; 32], [&a, &b]));
    }

    const BASE_KEY: [u8; 32] = [4; 32];
}

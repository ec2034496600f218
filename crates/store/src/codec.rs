//! Record payloads: bincode with a size limit, optionally sealed with
//! AES-256-GCM.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use privtel_model::Record;

use crate::error::{Error, Result};

/// The largest record payload decoded (and encoded): far above any real
/// record, low enough that a corrupt length cannot exhaust memory.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

const NONCE_LEN: usize = 12;

/// A key for payloads at rest (AES-256-GCM) and its id, stored beside each
/// sealed row so the wrong key is a clear error. `Debug` never prints the
/// secret.
#[derive(Clone)]
pub struct AtRestKey {
    id: u32,
    cipher: Aes256Gcm,
}

impl AtRestKey {
    /// A key from 32 secret bytes.
    pub fn new(id: u32, secret: [u8; 32]) -> Self {
        Self { id, cipher: Aes256Gcm::new(&secret.into()) }
    }

    /// The key's id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtRestKey({}, <secret>)", self.id)
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// Encodes (and seals, with a key) a record: (key id, payload).
pub(crate) fn seal(record: &Record, key: Option<&AtRestKey>) -> Result<(Option<u32>, Vec<u8>)> {
    let plain = bincode::serde::encode_to_vec(record, config()).map_err(|e| Error::Encode(e.to_string()))?;
    let Some(key) = key else { return Ok((None, plain)) };
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = key.id.to_le_bytes();
    let sealed = key
        .cipher
        .encrypt(&nonce, Payload { msg: &plain, aad: &aad })
        .map_err(|_| Error::Encode("encryption failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok((Some(key.id), out))
}

/// The inverse of [`seal`] for row `id`.
pub(crate) fn open(id: i64, key_id: Option<u32>, payload: &[u8], key: Option<&AtRestKey>) -> Result<Record> {
    let plain;
    let bytes = match key_id {
        None => payload,
        Some(key_id) => {
            let key = key.filter(|k| k.id == key_id).ok_or_else(|| Error::MissingKey {
                id,
                key_id,
                have: key.map_or_else(|| "no key".to_owned(), |k| format!("key {}", k.id)),
            })?;
            if payload.len() < NONCE_LEN {
                return Err(Error::WrongKey { id, key_id });
            }
            let (nonce, sealed) = payload.split_at(NONCE_LEN);
            plain = key
                .cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &key_id.to_le_bytes() })
                .map_err(|_| Error::WrongKey { id, key_id })?;
            &plain
        }
    };
    let (record, used): (Record, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| Error::Decode { id, reason: e.to_string() })?;
    if used != bytes.len() {
        return Err(Error::Decode { id, reason: format!("{} bytes after the record", bytes.len() - used) });
    }
    Ok(record)
}

/// Unix nanoseconds as an `i64` column (saturating outside 1677–2262).
pub(crate) fn nanos(t: privtel_model::Timestamp) -> i64 {
    i64::try_from(t.unix_nanos()).unwrap_or(if t.unix_nanos() < 0 { i64::MIN } else { i64::MAX })
}

/// The instant a record's retention runs from: an event's recording time, a
/// device's last report, else when the store received it.
pub(crate) fn record_time(record: &Record, received: privtel_model::Timestamp) -> privtel_model::Timestamp {
    match &record.body {
        privtel_model::RecordBody::Event(e) => e.recorded_at,
        privtel_model::RecordBody::Device(d) => d.last_seen,
        _ => received,
    }
}

/// Index of a program (its position in `Program::ALL`) as stored.
pub(crate) fn program_code(p: privtel_model::Program) -> i64 {
    privtel_model::Program::ALL.iter().position(|x| *x == p).unwrap_or(0) as i64
}

//! Record payloads: a versioned row format (format 1, bincode in the
//! model's field and variant order, read only; format 2, the model's JSON;
//! format 3, that JSON compressed with a fixed dictionary), with a size
//! limit, optionally sealed with AES-256-GCM.

use std::fmt;

use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use privtel_model::{KeyId, Record};

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
    /// A key from its id and 32 secret bytes. The id is a [`KeyId`], as a
    /// pseudonym key's is (a bare `u32` still converts).
    ///
    /// ```
    /// use privtel_store::{AtRestKey, KeyId};
    ///
    /// let key = AtRestKey::new(KeyId::new(3), [7; 32]);
    /// assert_eq!(key.id(), KeyId::new(3));
    /// assert_eq!(format!("{key:?}"), "AtRestKey(k3, <secret>)");
    /// ```
    pub fn new(id: impl Into<KeyId>, secret: [u8; 32]) -> Self {
        Self { id: id.into().get(), cipher: Aes256Gcm::new(&secret.into()) }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        KeyId::new(self.id)
    }
}

impl fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtRestKey({}, <secret>)", self.id())
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// How a stored payload is encoded, kept in each row's `format` column.
/// The codes are a file format: written out, never reused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Format {
    /// Wave-1 and wave-2 rows: bincode of [`Record`] in the model's field
    /// and variant order, so adding a field or reordering a variant changes
    /// what old bytes mean. Still read, never written.
    Bincode,
    /// serde_json of [`Record`]: fields and variants by name, so the model
    /// can grow a field (with a serde default) or reorder variants and old
    /// rows still read. The SQLite engine's new rows.
    Json,
    /// [`Format::Json`] compressed as one zstd frame with the dictionary
    /// `records-1` (`crates/store/data/records-1.zdict`, trained on the
    /// fixtures' records): the frame carries its content size (checked
    /// against [`MAX_RECORD_BYTES`] before anything is allocated), no
    /// checksum (a sealed payload is authenticated already) and no
    /// dictionary id (this code names the dictionary). A small record
    /// takes a quarter of its JSON's bytes. The PostgreSQL engine's new
    /// rows. The dictionary is frozen: another one needs another code.
    JsonZstd,
}

/// The dictionary of [`Format::JsonZstd`]. Its SHA-256 is checked by a
/// test: rows on disk depend on these exact bytes.
pub const RECORDS_DICTIONARY_1: &[u8] = include_bytes!("../data/records-1.zdict");

/// zstd's level for [`Format::JsonZstd`]: measured on the fixtures, level 3
/// makes payloads a few bytes smaller than level 1 at about the same cost
/// for records this small.
const ZSTD_LEVEL: i32 = 3;

fn encoder_dictionary() -> &'static zstd::dict::EncoderDictionary<'static> {
    static DICT: std::sync::OnceLock<zstd::dict::EncoderDictionary<'static>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| zstd::dict::EncoderDictionary::copy(RECORDS_DICTIONARY_1, ZSTD_LEVEL))
}

fn decoder_dictionary() -> &'static zstd::dict::DecoderDictionary<'static> {
    static DICT: std::sync::OnceLock<zstd::dict::DecoderDictionary<'static>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| zstd::dict::DecoderDictionary::copy(RECORDS_DICTIONARY_1))
}

/// Compresses JSON bytes as [`Format::JsonZstd`] (one compressor per
/// thread, its dictionary prepared once).
fn compress(json: &[u8]) -> Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let failed = |e: std::io::Error| Error::Encode(format!("compressing a record: {e}").to_lowercase());
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut c =
                zstd::bulk::Compressor::with_prepared_dictionary(encoder_dictionary()).map_err(failed)?;
            c.set_parameter(CParameter::ChecksumFlag(false)).map_err(failed)?;
            c.set_parameter(CParameter::DictIdFlag(false)).map_err(failed)?;
            c.set_parameter(CParameter::ContentSizeFlag(true)).map_err(failed)?;
            *slot = Some(c);
        }
        match slot.as_mut() {
            Some(c) => c.compress(json).map_err(failed),
            None => Err(Error::Encode("compressing a record: no compressor".into())),
        }
    })
}

/// Decompresses a [`Format::JsonZstd`] payload of row `id`: its declared
/// size is checked before any allocation, and the output must be exactly
/// that size.
fn decompress(id: i64, bytes: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Decode { id, reason };
    let size = match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(bad("compressed payload without its size, expected a sized zstd frame".into()));
        }
        Err(_) => return Err(bad("compressed payload is not a zstd frame".into())),
    };
    let size = usize::try_from(size).ok().filter(|n| *n <= MAX_RECORD_BYTES).ok_or_else(|| {
        bad(format!("compressed payload of {size} bytes, expected at most {MAX_RECORD_BYTES}"))
    })?;
    // One decompressor per thread: making one costs several times the
    // decompression of a small record.
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let out = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let d = zstd::bulk::Decompressor::with_prepared_dictionary(decoder_dictionary())
                .map_err(|e| bad(format!("decompressor: {e}").to_lowercase()))?;
            *slot = Some(d);
        }
        match slot.as_mut() {
            Some(d) => {
                d.decompress(bytes, size).map_err(|e| bad(format!("compressed payload: {e}").to_lowercase()))
            }
            None => Err(bad("no decompressor".into())),
        }
    })?;
    if out.len() != size {
        return Err(bad(format!("compressed payload gave {} bytes, its frame declares {size}", out.len())));
    }
    Ok(out)
}

impl Format {
    /// The format new rows are written in.
    pub const CURRENT: Self = Self::Json;

    /// The stored code.
    pub const fn code(self) -> i64 {
        match self {
            Self::Bincode => 1,
            Self::Json => 2,
            Self::JsonZstd => 3,
        }
    }

    /// The format of a stored code, if any.
    pub const fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Bincode),
            2 => Some(Self::Json),
            3 => Some(Self::JsonZstd),
            _ => None,
        }
    }
}

/// Encodes (and seals, with a key) a record in [`Format::CURRENT`]: (key
/// id, payload). With a key the payload is the 12-byte nonce followed by
/// the AES-256-GCM ciphertext and tag, the additional data being the key
/// id as 4 little-endian bytes (docs/STORAGE.md).
///
/// # Errors
///
/// [`Error::Encode`] when the encoding exceeds [`MAX_RECORD_BYTES`].
pub fn seal(record: &Record, key: Option<&AtRestKey>) -> Result<(Option<u32>, Vec<u8>)> {
    // Most records' JSON fits: one allocation, no regrowth.
    let mut out = Vec::with_capacity(512);
    let key_id = seal_into(record, key, &mut out)?;
    Ok((key_id, out))
}

/// [`seal`], appending the payload to `out` (a batch's one buffer for
/// all its records' payloads): the key id. Sealed in place: the nonce,
/// the record's JSON encrypted where it was written, the tag. On `Err`,
/// `out` may hold part of a payload after what it held: the caller
/// truncates it.
///
/// # Errors
///
/// As [`seal`].
pub(crate) fn seal_into(record: &Record, key: Option<&AtRestKey>, out: &mut Vec<u8>) -> Result<Option<u32>> {
    let Some(key) = key else {
        encode_into(record, out)?;
        return Ok(None);
    };
    let nonce = random_nonce();
    let start = out.len() + NONCE_LEN;
    out.extend_from_slice(&nonce);
    encode_into(record, out)?;
    encrypt_after(key, nonce, out, start)?;
    Ok(Some(key.id))
}

/// Encrypts `out[start..]` in place under `key` and `nonce` (the key's id
/// as associated data) and appends the tag: the sealed form's ciphertext
/// and tag, after the nonce the caller wrote before `start`.
fn encrypt_after(key: &AtRestKey, nonce: [u8; NONCE_LEN], out: &mut Vec<u8>, start: usize) -> Result<()> {
    let tag = key
        .cipher
        .encrypt_in_place_detached(&Nonce::from(nonce), &key.id.to_le_bytes(), &mut out[start..])
        .map_err(|_| Error::Encode("encryption failed".into()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// [`encode`], appending to `out`.
fn encode_into(record: &Record, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    if crate::json::write(out, record).is_err() {
        // The same bytes, by `serde_json` (or its error).
        out.truncate(start);
        serde_json::to_writer(&mut *out, record).map_err(|e| Error::Encode(e.to_string()))?;
    }
    let len = out.len() - start;
    if len > MAX_RECORD_BYTES {
        return Err(Error::Encode(format!("{len} bytes, expected at most {MAX_RECORD_BYTES}")));
    }
    Ok(())
}

/// A record in [`Format::CURRENT`], not sealed: the first half of [`seal`].
///
/// # Errors
///
/// [`Error::Encode`] when the encoding exceeds [`MAX_RECORD_BYTES`].
pub fn encode(record: &Record) -> Result<Vec<u8>> {
    // Most records' JSON fits: one allocation, no regrowth.
    let mut plain = Vec::with_capacity(512);
    encode_into(record, &mut plain)?;
    Ok(plain)
}

/// A record in `format` ([`Format::Json`] or [`Format::JsonZstd`]), not
/// sealed.
///
/// # Errors
///
/// [`Error::Encode`] when the JSON exceeds [`MAX_RECORD_BYTES`], or for
/// [`Format::Bincode`] (read only).
pub fn encode_as(record: &Record, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Json => encode(record),
        Format::JsonZstd => compress(&encode(record)?),
        Format::Bincode => Err(Error::Encode("format 1 is read only, expected format 2 or 3".into())),
    }
}

/// A record's JSON, as [`encode`] gives it, in `format` ([`Format::Json`]:
/// as it is; [`Format::JsonZstd`]: compressed), for a caller that holds
/// the record already encoded (a writer that decoded it from those bytes)
/// and so need not encode it again.
///
/// # Errors
///
/// [`Error::Encode`] when the JSON exceeds [`MAX_RECORD_BYTES`], or for
/// [`Format::Bincode`] (read only).
pub fn encode_json_as(json: Vec<u8>, format: Format) -> Result<Vec<u8>> {
    if json.len() > MAX_RECORD_BYTES {
        return Err(Error::Encode(format!("{} bytes, expected at most {MAX_RECORD_BYTES}", json.len())));
    }
    match format {
        Format::Json => Ok(json),
        Format::JsonZstd => compress(&json),
        Format::Bincode => Err(Error::Encode("format 1 is read only, expected format 2 or 3".into())),
    }
}

/// Seals bytes from [`encode`] under `key` (none: returned as they are):
/// the second half of [`seal`], for a caller that encodes before it knows
/// the key.
///
/// # Errors
///
/// [`Error::Encode`] if the cipher refuses (it does not for inputs within
/// [`MAX_RECORD_BYTES`]).
pub fn seal_encoded(plain: Vec<u8>, key: Option<&AtRestKey>) -> Result<(Option<u32>, Vec<u8>)> {
    let Some(key) = key else { return Ok((None, plain)) };
    let nonce = random_nonce();
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&plain);
    encrypt_after(key, nonce, &mut out, NONCE_LEN)?;
    Ok((Some(key.id), out))
}

/// The inverse of [`seal`] for row `id`, whose `format` column holds
/// `format`.
///
/// # Errors
///
/// [`Error::Decode`] for an unknown format or bytes that do not decode
/// (the reason names no value), [`Error::MissingKey`] /
/// [`Error::WrongKey`] for a sealed payload the key given cannot open.
pub fn unseal(
    id: i64,
    format: i64,
    key_id: Option<u32>,
    payload: &[u8],
    key: Option<&AtRestKey>,
) -> Result<Record> {
    let format = Format::from_code(format).ok_or_else(|| Error::Decode {
        id,
        reason: format!("unknown row format {format}, expected 1, 2 or 3"),
    })?;
    let plain;
    let bytes = match key_id {
        None => payload,
        Some(_) => {
            plain = unseal_bytes(id, key_id, payload, key)?;
            &plain
        }
    };
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Error::Decode {
            id,
            reason: format!("{} bytes, expected at most {MAX_RECORD_BYTES}", bytes.len()),
        });
    }
    // serde_json's message can quote the offending value, which may be
    // personal: only its category and position are kept.
    let json = |bytes: &[u8]| {
        serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            id,
            reason: format!("{:?} json error at line {} column {}", e.classify(), e.line(), e.column())
                .to_lowercase(),
        })
    };
    match format {
        Format::Json => json(bytes),
        Format::JsonZstd => json(&decompress(id, bytes)?),
        Format::Bincode => {
            let (record, used): (Record, usize) = bincode::serde::decode_from_slice(bytes, config())
                .map_err(|e| Error::Decode { id, reason: e.to_string() })?;
            if used != bytes.len() {
                return Err(Error::Decode {
                    id,
                    reason: format!("{} bytes after the record", bytes.len() - used),
                });
            }
            Ok(record)
        }
    }
}

/// 12 random bytes for an AES-GCM nonce, from the operating system's
/// generator drawn 4,092 bytes at a time per thread (one system call per
/// 341 nonces instead of one each: a tenth of the engine's sealing cost).
/// Each nonce is still 96 fresh random bits, never reused. A process that
/// forks must not seal in the child before it execs (the pool would repeat
/// the parent's); `std::process::Command` execs at once.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    const POOL: usize = NONCE_LEN * 341;
    thread_local! {
        static NONCES: std::cell::RefCell<([u8; POOL], usize)> = const { std::cell::RefCell::new(([0; POOL], POOL)) };
    }
    NONCES.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (pool, used) = &mut *guard;
        if *used + NONCE_LEN > POOL {
            OsRng.fill_bytes(pool);
            *used = 0;
        }
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&pool[*used..*used + NONCE_LEN]);
        // What was handed out does not stay in memory.
        pool[*used..*used + NONCE_LEN].fill(0);
        *used += NONCE_LEN;
        nonce
    })
}

/// Opens bytes from [`seal_encoded`] (row `id`, for errors): `key_id`
/// `None` returns them as they are.
///
/// # Errors
///
/// [`Error::MissingKey`] / [`Error::WrongKey`] for sealed bytes the key
/// given cannot open.
pub fn unseal_bytes(
    id: i64,
    key_id: Option<u32>,
    payload: &[u8],
    key: Option<&AtRestKey>,
) -> Result<Vec<u8>> {
    let Some(key_id) = key_id else { return Ok(payload.to_vec()) };
    let key = key.filter(|k| k.id == key_id).ok_or_else(|| Error::MissingKey {
        id,
        key_id,
        have: key.map_or_else(|| "no key".to_owned(), |k| format!("key {}", k.id)),
    })?;
    if payload.len() < NONCE_LEN {
        return Err(Error::WrongKey { id, key_id });
    }
    let (nonce, sealed) = payload.split_at(NONCE_LEN);
    key.cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &key_id.to_le_bytes() })
        .map_err(|_| Error::WrongKey { id, key_id })
}

/// Unix nanoseconds as an `i64` column (saturating outside 1677–2262).
pub fn nanos(t: privtel_model::Timestamp) -> i64 {
    i64::try_from(t.unix_nanos()).unwrap_or(if t.unix_nanos() < 0 { i64::MIN } else { i64::MAX })
}

/// The instant a record's retention runs from: an event's recording time, a
/// device's last report, else when the store received it.
pub fn record_time(record: &Record, received: privtel_model::Timestamp) -> privtel_model::Timestamp {
    match &record.body {
        privtel_model::RecordBody::Event(e) => e.recorded_at,
        privtel_model::RecordBody::Device(d) => d.last_seen,
        privtel_model::RecordBody::Consent(c) => c.at,
        _ => received,
    }
}

/// When a batch counts as received: the time its front-end received it,
/// never later than `now` (a time ahead, from a skewed clock or a forged
/// message, would put off its records' expiry), or `now` when none is
/// known.
pub fn received_by(
    received: Option<privtel_model::Timestamp>,
    now: privtel_model::Timestamp,
) -> privtel_model::Timestamp {
    received.map_or(now, |r| r.min(now))
}

/// A program's stable code as stored ([`privtel_model::Program::code`]).
pub fn program_code(p: privtel_model::Program) -> i64 {
    i64::from(p.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_sealed_into_one_buffer_open_one_by_one_as_seal_s_do() {
        let records = privtel_testkit::fixtures::records("into");
        for key in [None, Some(AtRestKey::new(KeyId::new(9), [7; 32]))] {
            let mut out = b"held before".to_vec();
            let mut spans = Vec::new();
            for r in &records {
                let start = out.len();
                let key_id = seal_into(r, key.as_ref(), &mut out).unwrap();
                assert_eq!(key_id, key.as_ref().map(AtRestKey::id).map(KeyId::get));
                spans.push((key_id, start..out.len()));
            }
            assert!(out.starts_with(b"held before"), "what the buffer held is kept");
            for (r, (key_id, span)) in records.iter().zip(spans) {
                let payload = &out[span];
                let opened = unseal(1, Format::CURRENT.code(), key_id, payload, key.as_ref()).unwrap();
                assert_eq!(&opened, r);
                let json = encode(r).unwrap();
                match &key {
                    None => assert_eq!(payload, &json[..], "unsealed: the JSON itself"),
                    Some(_) => {
                        assert_eq!(payload.len(), NONCE_LEN + json.len() + 16, "nonce, ciphertext, tag");
                        assert!(
                            !payload.windows(16).any(|w| json.windows(16).any(|j| j == w)),
                            "no run of the JSON"
                        );
                        // seal's payload of the same record opens the same way.
                        let (id, sealed) = seal(r, key.as_ref()).unwrap();
                        assert_eq!(id, key_id);
                        assert_eq!(unseal(2, Format::CURRENT.code(), id, &sealed, key.as_ref()).unwrap(), *r);
                    }
                }
            }
        }
    }

    #[test]
    fn nonces_never_repeat_across_refills_and_threads() {
        let draw = || (0..2_000).map(|_| random_nonce()).collect::<Vec<_>>();
        let mut all = draw();
        let other = std::thread::spawn(draw).join().unwrap();
        all.extend(other);
        let n = all.len();
        assert!(all.iter().all(|x| x.iter().any(|b| *b != 0)), "a nonce of zeros: the pool was not filled");
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "every nonce is new, over several refills of 341");
    }

    #[test]
    fn format_3_round_trips_every_record_kind_sealed_or_not() {
        let key = AtRestKey::new(2, [5; 32]);
        let mut records = privtel_testkit::fixtures::records("zstd");
        records.push(privtel_testkit::fixtures::interaction());
        records.push(privtel_testkit::fixtures::device_summary());
        let at = privtel_testkit::fixtures::base_time();
        records.push(privtel_testkit::bench::feature_event(77, at, 10));
        for (i, r) in records.iter().enumerate() {
            let id = i as i64;
            let json = encode_as(r, Format::Json).unwrap();
            let packed = encode_as(r, Format::JsonZstd).unwrap();
            assert!(packed.len() < json.len(), "record {i}: {} >= {}", packed.len(), json.len());
            assert_eq!(&unseal(id, 3, None, &packed, None).unwrap(), r);
            let (key_id, sealed) = seal_encoded(packed, Some(&key)).unwrap();
            assert_eq!(&unseal(id, 3, key_id, &sealed, Some(&key)).unwrap(), r);
            // The same bytes under another format code are not this record.
            assert!(unseal(id, 2, key_id, &sealed, Some(&key)).is_err());
        }
        // A small record takes well under half of its JSON's bytes.
        let small = records.last().unwrap();
        let (json, packed) =
            (encode(small).unwrap().len(), encode_as(small, Format::JsonZstd).unwrap().len());
        assert!(packed * 2 < json, "{packed} of {json} bytes");
        assert!(encode_as(small, Format::Bincode).is_err(), "format 1 is read only");
    }

    #[test]
    fn hostile_compressed_payloads_are_typed_errors_without_a_large_allocation() {
        let decode_err = |bytes: &[u8]| match unseal(9, 3, None, bytes, None) {
            Err(Error::Decode { id: 9, reason }) => reason,
            other => panic!("expected a decode error, got {other:?}"),
        };
        // A frame header declaring 1 TiB (single segment, 8-byte content
        // size): refused from the header, before any output is allocated.
        let mut huge = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        huge.extend_from_slice(&[1, 0, 0]);
        let started = std::time::Instant::now();
        let reason = decode_err(&huge);
        assert!(reason.contains("expected at most"), "{reason}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // A frame that does not say its size (no content size field).
        let reason = decode_err(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 1, 0, 0]);
        assert!(reason.contains("without its size"), "{reason}");
        // Not a frame; a truncated frame; a frame whose size is a lie.
        assert!(decode_err(b"{\"program\":1}").contains("not a zstd frame"));
        let record = privtel_testkit::fixtures::interaction();
        let good = encode_as(&record, Format::JsonZstd).unwrap();
        decode_err(&good[..good.len() - 3]);
        // A frame of under 256 bytes of JSON has a single-segment header
        // with a 1-byte content size: made one byte smaller than the truth.
        let at = privtel_testkit::fixtures::base_time();
        let mut lying =
            encode_as(&privtel_testkit::bench::feature_event(1, at, 10), Format::JsonZstd).unwrap();
        assert_eq!(lying[4] & 0xe0, 0x20, "a 1-byte content size");
        lying[5] -= 1;
        decode_err(&lying);
        // Errors never quote the payload: serde_json's own message for a
        // string where a number belongs quotes the string.
        let text =
            String::from_utf8(encode(&privtel_testkit::bench::feature_event(1, at, 10)).unwrap()).unwrap();
        let bad = text.replace("\"count\":1", "\"count\":\"u-CANARY\"");
        assert_ne!(bad, text);
        let quoted = serde_json::from_str::<Record>(&bad).unwrap_err().to_string();
        assert!(quoted.contains("u-CANARY"), "the check below can fail: {quoted}");
        let reason = decode_err(&zstd::bulk::compress(bad.as_bytes(), 1).unwrap());
        assert!(!reason.contains("u-CANARY"), "{reason}");
    }

    #[test]
    fn the_same_payload_sealed_twice_differs_and_both_open() {
        let key = AtRestKey::new(4, [1; 32]);
        let (_, a) = seal_encoded(b"same".to_vec(), Some(&key)).unwrap();
        let (_, b) = seal_encoded(b"same".to_vec(), Some(&key)).unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_eq!(unseal_bytes(1, Some(4), &a, Some(&key)).unwrap(), b"same");
        assert_eq!(unseal_bytes(1, Some(4), &b, Some(&key)).unwrap(), b"same");
    }
}

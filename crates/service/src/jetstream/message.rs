//! The ingest message: one accepted batch (or one part of it) as the
//! front-end publishes it to JetStream and the writer reads it back. A file
//! format (messages stay in the stream's files until applied, up to the
//! stream's maximum age): explicit magic, version and field order, each
//! record in the engine's stored form (the model's JSON, the same
//! [`Format`](privtel_store::parts::Format) code 2 the engine rows use),
//! never a Rust declaration order. Sealed (AES-256-GCM) under the
//! service's at-rest key when it has one, so the stream's files hold no
//! readable record.
//!
//! ```text
//! magic "PTJS" | version u8 = 1 | key id: u8 0 (plain) or 1 + u32 LE, then
//! body (sealed: nonce 12 | ciphertext of the body | tag 16)
//! body := str customer | str device | u64 stream | u64 first_seq
//!       | u64 skipped | i64 received (unix ns) | str industry
//!       | u32 count | count × (u8 0 refused | u8 1, u32 len, len bytes of JSON)
//! str := u16 len, len bytes of UTF-8; integers little-endian
//! ```

use privtel_model::{CustomerId, DeviceId, Record, Timestamp};
use privtel_store::parts::{encode, seal_encoded, unseal_bytes};
use privtel_store::{AdmittedBatch, AtRestKey, JsonBatch, MAX_RECORD_BYTES, Sequence};

use super::JetStreamError;

/// The first bytes of every ingest message.
pub const MAGIC: &[u8; 4] = b"PTJS";
/// The version this code writes (and the only one it reads).
pub const VERSION: u8 = 1;
/// The most records one message may hold (a batch is at most 10,000).
pub const MAX_RECORDS: u32 = 10_000;
/// The most bytes a message body may hold before it is refused unread.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// One batch (or part of one) as the writer applies it.
/// `Debug` shows where the batch sits and its size, none of its records.
#[derive(Clone)]
pub struct IngestMessage {
    /// The batch, as admitted by the front-end.
    pub batch: AdmittedBatch,
    /// When the front-end received it (dates records without a time).
    pub received: Timestamp,
    /// The customer's industry, for benchmarking aggregates ('' for none).
    pub industry: String,
    /// Each record's JSON as the decoded message held it (empty for a
    /// message made with [`IngestMessage::new`]): what the engine may
    /// store instead of encoding the record again.
    json: Vec<Option<Vec<u8>>>,
    /// Whether the decoded message was sealed (only a holder of the key,
    /// a front-end, can have written it).
    sealed: bool,
}

impl std::fmt::Debug for IngestMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestMessage")
            .field("customer", &self.batch.customer)
            .field("device", &self.batch.device)
            .field("seq", &self.batch.seq)
            .field("records", &self.batch.records.len())
            .finish_non_exhaustive()
    }
}

impl IngestMessage {
    /// A message of `batch`, received at `received`, of a customer in
    /// `industry`.
    pub fn new(batch: AdmittedBatch, received: Timestamp, industry: impl Into<String>) -> Self {
        Self { batch, received, industry: industry.into(), json: Vec::new(), sealed: false }
    }

    /// Whether the message was sealed when it was decoded (false for one
    /// made with [`IngestMessage::new`]): a writer configured with
    /// [`JetStreamOptions::sealed_only`](super::JetStreamOptions::sealed_only)
    /// refuses any other.
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    /// The batch with the JSON its records were decoded from, for
    /// [`EngineStore::ingest_group_json`](privtel_store::EngineStore::ingest_group_json).
    pub fn into_json_batch(self) -> JsonBatch {
        JsonBatch { batch: self.batch, json: self.json, received: Some(self.received) }
    }

    /// The JetStream message id: (customer, device, stream, first and last
    /// sequence number). A retry of the same range has the same id, so
    /// JetStream drops it within its duplicate window; a retry with
    /// another range (a batch cut differently) gets its own id, never
    /// mistaken for the first (the engine's high-water mark then skips
    /// what the first stored).
    pub fn id(&self) -> String {
        let b = &self.batch;
        let last = b.seq.first_seq.saturating_add(b.records.len() as u64).saturating_sub(1);
        format!("{}/{}/{}/{}-{}", b.customer, b.device, b.seq.stream, b.seq.first_seq, last)
    }

    /// Encodes (and seals under `key`, when given).
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Encode`] for a record above the store's size limit
    /// or a message above [`MAX_MESSAGE_BYTES`].
    pub fn encode(&self, key: Option<&AtRestKey>) -> Result<Vec<u8>, JetStreamError> {
        let b = &self.batch;
        let mut body = Vec::with_capacity(64 + b.records.len() * 256);
        put_str(&mut body, b.customer.as_str())?;
        put_str(&mut body, b.device.as_str())?;
        body.extend_from_slice(&b.seq.stream.to_le_bytes());
        body.extend_from_slice(&b.seq.first_seq.to_le_bytes());
        body.extend_from_slice(&b.seq.skipped.to_le_bytes());
        body.extend_from_slice(&privtel_store::parts::nanos(self.received).to_le_bytes());
        put_str(&mut body, &self.industry)?;
        let count = u32::try_from(b.records.len()).ok().filter(|n| *n <= MAX_RECORDS).ok_or_else(|| {
            JetStreamError::Encode(format!("{} records, expected at most {MAX_RECORDS}", b.records.len()))
        })?;
        body.extend_from_slice(&count.to_le_bytes());
        for record in &b.records {
            match record {
                None => body.push(0),
                Some(record) => {
                    let json = encode(record).map_err(|e| JetStreamError::Encode(e.to_string()))?;
                    body.push(1);
                    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
                    body.extend_from_slice(&json);
                }
            }
        }
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(JetStreamError::Encode(format!(
                "a message of {} bytes, expected at most {MAX_MESSAGE_BYTES}",
                body.len()
            )));
        }
        let (key_id, body) = seal_encoded(body, key).map_err(|e| JetStreamError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 10);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match key_id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes (and unseals with `key`) a message from [`IngestMessage::encode`].
    ///
    /// # Errors
    ///
    /// [`JetStreamError::Decode`] naming what was expected (never a value
    /// of the message); a sealed message `key` cannot open.
    pub fn decode(bytes: &[u8], key: Option<&AtRestKey>) -> Result<Self, JetStreamError> {
        if bytes.len() > MAX_MESSAGE_BYTES + 64 {
            return Err(bad(format!(
                "a message of {} bytes, expected at most {MAX_MESSAGE_BYTES}",
                bytes.len()
            )));
        }
        let mut r = Reader(bytes);
        if r.take(4, "the magic 'PTJS'")? != MAGIC {
            return Err(bad("expected a message starting with 'PTJS'".into()));
        }
        let version = r.u8("a version")?;
        if version != VERSION {
            return Err(bad(format!("version {version}, expected {VERSION}")));
        }
        let key_id = match r.u8("a key flag")? {
            0 => None,
            1 => Some(r.u32("a key id")?),
            other => return Err(bad(format!("key flag {other}, expected 0 or 1"))),
        };
        let plain;
        let body = match key_id {
            None => r.0,
            Some(id) => {
                // No key, another key, or the same id with another secret:
                // this side's configuration, not the message, is taken to
                // be wrong (a writer hands the message back, never drops
                // it).
                plain = unseal_bytes(0, Some(id), r.0, key).map_err(|e| match e {
                    privtel_store::Error::MissingKey { key_id, .. }
                    | privtel_store::Error::WrongKey { key_id, .. } => JetStreamError::Key(format!(
                        "sealed under key {key_id}, which this side does not hold"
                    )),
                    other => JetStreamError::Decode(format!("a sealed body that opens: {other}")),
                })?;
                &plain[..]
            }
        };
        let mut r = Reader(body);
        let customer = CustomerId::new(r.str("a customer id")?)
            .map_err(|_| bad("expected a valid customer id".into()))?;
        let device =
            DeviceId::new(r.str("a device id")?).map_err(|_| bad("expected a valid device id".into()))?;
        let stream = r.u64("a stream id")?;
        let first_seq = r.u64("a first sequence number")?;
        let skipped = r.u64("a skipped count")?;
        let received = Timestamp::from_unix_nanos(i128::from(r.i64("a receive time")?))
            .map_err(|_| bad("expected a receive time within the model's range".into()))?;
        let industry = r.str("an industry")?.to_owned();
        let count = r.u32("a record count")?;
        if count > MAX_RECORDS {
            return Err(bad(format!("{count} records, expected at most {MAX_RECORDS}")));
        }
        // Each record takes at least one byte: a count the bytes cannot
        // hold is refused before anything is reserved for it.
        if count as usize > r.0.len() {
            return Err(bad(format!(
                "{count} records in {} bytes, expected at least one byte each",
                r.0.len()
            )));
        }
        let mut records = Vec::with_capacity(count as usize);
        let mut json = Vec::with_capacity(count as usize);
        for i in 0..count {
            match r.u8("a record tag")? {
                0 => {
                    records.push(None);
                    json.push(None);
                }
                1 => {
                    let len = r.u32("a record length")? as usize;
                    if len > MAX_RECORD_BYTES {
                        return Err(bad(format!(
                            "a record of {len} bytes, expected at most {MAX_RECORD_BYTES}"
                        )));
                    }
                    let bytes = r.take(len, "a record's bytes")?;
                    let (record, ignored) = parse_record(bytes).map_err(|e| {
                        bad(format!(
                            "record {i}: {:?} json error at column {}, expected a record",
                            e.classify(),
                            e.column()
                        )
                        .to_lowercase())
                    })?;
                    records.push(Some(record));
                    // Bytes with a member the model ignores (a hostile
                    // publisher, a newer front-end) would keep what no
                    // digest names and no export shows: the engine encodes
                    // that record again instead.
                    json.push((!ignored).then(|| bytes.to_vec()));
                }
                other => return Err(bad(format!("record tag {other}, expected 0 or 1"))),
            }
        }
        if !r.0.is_empty() {
            return Err(bad(format!("{} bytes after the records, expected none", r.0.len())));
        }
        Ok(Self {
            batch: AdmittedBatch { customer, device, seq: Sequence { stream, first_seq, skipped }, records },
            received,
            industry,
            json,
            sealed: key_id.is_some(),
        })
    }
}

/// A record from its JSON, and whether the JSON held a member the model
/// ignores (anywhere in it): then its bytes are not the record's encoding.
fn parse_record(bytes: &[u8]) -> Result<(Record, bool), serde_json::Error> {
    let mut ignored = false;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let record: Record = serde_ignored::deserialize(&mut de, |_| ignored = true)?;
    de.end()?;
    Ok((record, ignored))
}

fn bad(expected: String) -> JetStreamError {
    JetStreamError::Decode(expected)
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), JetStreamError> {
    let len = u16::try_from(s.len()).map_err(|_| {
        JetStreamError::Encode(format!("a text of {} bytes, expected at most 65535", s.len()))
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], JetStreamError> {
        if self.0.len() < n {
            return Err(bad(format!("expected {what} ({n} bytes), found {}", self.0.len())));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, JetStreamError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, JetStreamError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self, what: &str) -> Result<u64, JetStreamError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or_default()))
    }
    fn i64(&mut self, what: &str) -> Result<i64, JetStreamError> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or_default()))
    }
    fn str(&mut self, what: &str) -> Result<&'a str, JetStreamError> {
        let len = u16::from_le_bytes(self.take(2, what)?.try_into().unwrap_or_default()) as usize;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| bad(format!("expected {what} in UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(tag: &str) -> IngestMessage {
        IngestMessage {
            batch: AdmittedBatch {
                customer: CustomerId::new("acme").unwrap(),
                device: DeviceId::new("dev-0001").unwrap(),
                seq: Sequence { stream: 7, first_seq: 41, skipped: 3 },
                records: privtel_testkit::fixtures::records(tag)
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (i % 5 != 2).then_some(r))
                    .collect(),
            },
            received: privtel_testkit::fixtures::base_time(),
            industry: "retail".into(),
            json: Vec::new(),
            sealed: false,
        }
    }

    fn same(a: &IngestMessage, b: &IngestMessage) {
        assert_eq!(a.batch.customer, b.batch.customer);
        assert_eq!(a.batch.device, b.batch.device);
        assert_eq!(a.batch.seq, b.batch.seq);
        assert_eq!(a.batch.records, b.batch.records);
        assert_eq!((a.received, &a.industry), (b.received, &b.industry));
    }

    /// The version-1 file: what this code wrote must read back the same
    /// forever (`PRIVTEL_BLESS=1` writes it when missing).
    #[test]
    fn the_version_1_golden_message_reads_back() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ingest-v1.ptjs");
        let sealed_file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ingest-v1-sealed.ptjs");
        let key = AtRestKey::new(9, [0x5a; 32]);
        if !file.exists() && std::env::var_os("PRIVTEL_BLESS").is_some() {
            std::fs::write(&file, message("golden").encode(None).unwrap()).unwrap();
            std::fs::write(&sealed_file, message("golden").encode(Some(&key)).unwrap()).unwrap();
        }
        let bytes = std::fs::read(&file).expect("run once with PRIVTEL_BLESS=1");
        same(&IngestMessage::decode(&bytes, None).unwrap(), &message("golden"));
        assert_eq!(bytes, message("golden").encode(None).unwrap(), "the plain form is byte for byte");
        let sealed = std::fs::read(&sealed_file).unwrap();
        same(&IngestMessage::decode(&sealed, Some(&key)).unwrap(), &message("golden"));
    }

    #[test]
    fn a_sealed_message_needs_its_key_and_says_so() {
        let sealed = message("k").encode(Some(&AtRestKey::new(2, [1; 32]))).unwrap();
        let e = IngestMessage::decode(&sealed, None).unwrap_err().to_string();
        assert!(e.contains("key 2"), "{e}");
        let e = IngestMessage::decode(&sealed, Some(&AtRestKey::new(2, [9; 32]))).unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot open a sealed ingest message: sealed under key 2, which this side does not hold"
        );
        // Sealed bytes hold no personal text of the records.
        assert!(!sealed.windows(9).any(|w| w == b"ALICE-LAP"));
        assert!(message("k").encode(None).unwrap().windows(9).any(|w| w == b"ALICE-LAP"));
    }

    #[test]
    fn every_truncation_and_bad_header_is_a_typed_error_naming_no_value() {
        let bytes = message("SECRETTAG").encode(None).unwrap();
        for n in 0..bytes.len() {
            let e = IngestMessage::decode(&bytes[..n], None).unwrap_err().to_string();
            assert!(e.starts_with("malformed ingest message: ") && e.contains("expected"), "{e}");
            assert!(!e.contains("SECRETTAG") && !e.contains("acme"), "{e}");
        }
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(
            IngestMessage::decode(&v2, None).unwrap_err().to_string(),
            "malformed ingest message: version 2, expected 1"
        );
        let mut extra = bytes;
        extra.push(0);
        assert!(
            IngestMessage::decode(&extra, None)
                .unwrap_err()
                .to_string()
                .contains("1 bytes after the records")
        );
        // A count no body can hold reserves nothing.
        let mut huge = b"PTJS\x01\x00".to_vec();
        for s in ["a", "d", ""] {
            huge.extend_from_slice(&(s.len() as u16).to_le_bytes());
            huge.extend_from_slice(s.as_bytes());
            if s == "d" {
                huge.extend_from_slice(&[0; 32]);
            }
        }
        huge.extend_from_slice(&9_000u32.to_le_bytes());
        let e = IngestMessage::decode(&huge, None).unwrap_err().to_string();
        assert!(e.contains("9000 records in 0 bytes"), "{e}");
    }

    /// A plain message of one record, its JSON as given.
    fn with_json(json: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, "acme").unwrap();
        put_str(&mut body, "dev-1").unwrap();
        for n in [7u64, 1, 0] {
            body.extend_from_slice(&n.to_le_bytes());
        }
        body.extend_from_slice(&0i64.to_le_bytes());
        put_str(&mut body, "").unwrap();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(1);
        body.extend_from_slice(&(json.len() as u32).to_le_bytes());
        body.extend_from_slice(json);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[VERSION, 0]);
        out.extend_from_slice(&body);
        out
    }

    /// What a writer may store as it came: bytes that are exactly a
    /// record. A member the model ignores, at the top or deep inside (a
    /// hostile publisher's hidden value, a newer front-end's field, bytes
    /// that are not even UTF-8), makes the engine encode the record again,
    /// so no stored byte is one no digest names and no export shows.
    #[test]
    fn a_record_with_members_the_model_ignores_is_not_stored_as_it_came() {
        let record = privtel_testkit::fixtures::records("ignored").into_iter().next().unwrap();
        let canonical = encode(&record).unwrap();
        let json = |m: IngestMessage| m.into_json_batch().json;
        let back = IngestMessage::decode(&with_json(&canonical), None).unwrap();
        assert_eq!(back.batch.records, vec![Some(record.clone())]);
        assert_eq!(json(back), vec![Some(canonical.clone())]);

        // Spaced out: the same record, kept as it came.
        let spaced = serde_json::to_vec_pretty(&record).unwrap();
        assert_eq!(json(IngestMessage::decode(&with_json(&spaced), None).unwrap()), vec![Some(spaced)]);

        let text = String::from_utf8(canonical).unwrap();
        let top = format!("{{\"hidden\":\"canary@example.com\",{}", &text[1..]);
        // Inside the body's first object (`{"program":…,"body":{"kind":{…`).
        let body_at = text.find("\"body\":{").unwrap() + "\"body\":{".len();
        let inner_at = body_at + text[body_at..].find('{').unwrap() + 1;
        let deep = format!("{}\"hidden\":\"canary@example.com\",{}", &text[..inner_at], &text[inner_at..]);
        let mut not_utf8 = top.clone().into_bytes();
        let at = not_utf8.windows(6).position(|w| w == b"canary").unwrap();
        not_utf8[at] = 0xff;
        for bytes in [top.into_bytes(), deep.into_bytes(), not_utf8] {
            let back = IngestMessage::decode(&with_json(&bytes), None).unwrap();
            assert_eq!(back.batch.records, vec![Some(record.clone())], "{}", String::from_utf8_lossy(&bytes));
            assert_eq!(json(back), vec![None], "{}", String::from_utf8_lossy(&bytes));
        }

        // Inside a personal text read in its several forms (a binary's
        // file name, here generalised to an IP prefix): the member is seen
        // there too.
        let mut binary = privtel_testkit::fixtures::records("ignored")
            .into_iter()
            .find(|r| matches!(r.body, privtel_model::RecordBody::Binary(_)))
            .unwrap();
        if let privtel_model::RecordBody::Binary(b) = &mut binary.body {
            let prefix = privtel_model::IpPrefix::new("10.0.0.0".parse().unwrap(), 8).unwrap();
            b.file_name = privtel_model::Personal::Generalised(privtel_model::Generalised::IpPrefix(prefix));
        }
        let plain = String::from_utf8(encode(&binary).unwrap()).unwrap();
        let back = IngestMessage::decode(&with_json(plain.as_bytes()), None).unwrap();
        assert_eq!(json(back), vec![Some(plain.clone().into_bytes())], "as it came when it is the record");
        let at = plain.find("\"ip_prefix\":{").unwrap() + "\"ip_prefix\":{".len();
        let hidden = format!("{}\"hidden\":\"canary@example.com\",{}", &plain[..at], &plain[at..]);
        let back = IngestMessage::decode(&with_json(hidden.as_bytes()), None).unwrap();
        assert_eq!(back.batch.records, vec![Some(binary)]);
        assert_eq!(json(back), vec![None], "{hidden}");

        // A known member twice is not a record at all.
        let twice = format!("{{\"program\":\"support_telemetry\",{}", &text[1..]);
        let e = IngestMessage::decode(&with_json(twice.as_bytes()), None).unwrap_err().to_string();
        assert!(e.contains("expected a record") && !e.contains("canary"), "{e}");
    }

    #[test]
    fn ids_name_the_range() {
        assert_eq!(
            message("x").id(),
            format!("acme/dev-0001/7/41-{}", 40 + message("x").batch.records.len())
        );
    }

    proptest! {
        #[test]
        fn any_batch_reads_back(
            first in 1u64..1_000_000,
            skipped in 0u64..1000,
            keep in proptest::collection::vec(any::<bool>(), 0..40),
            sealed in any::<bool>(),
        ) {
            let all = privtel_testkit::fixtures::records("p");
            let records = keep.iter().enumerate().map(|(i, k)| k.then(|| all[i % all.len()].clone())).collect();
            let m = IngestMessage {
                batch: AdmittedBatch {
                    customer: CustomerId::new("c-1").unwrap(),
                    device: DeviceId::new("d.1").unwrap(),
                    seq: Sequence { stream: first ^ 0xabcdef, first_seq: first, skipped },
                    records,
                },
                received: privtel_testkit::fixtures::base_time(),
                industry: String::new(),
                json: Vec::new(),
                sealed: false,
            };
            let key = sealed.then(|| AtRestKey::new(1, [3; 32]));
            let back = IngestMessage::decode(&m.encode(key.as_ref()).unwrap(), key.as_ref()).unwrap();
            same(&back, &m);
            prop_assert_eq!(back.sealed(), sealed);
            // What a writer may store in place of encoding again: exactly
            // each record's encoding, none for a refused one.
            let expected: Vec<Option<Vec<u8>>> =
                m.batch.records.iter().map(|r| r.as_ref().map(|r| encode(r).unwrap())).collect();
            let json = back.into_json_batch().json;
            prop_assert_eq!(json, expected);
        }
    }
}

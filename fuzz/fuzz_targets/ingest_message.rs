//! Bytes as a JetStream writer reads them from the ingest stream (anyone
//! who can publish to the stream's subjects could have written them):
//! plain or sealed. Typed errors or a message, never a panic; a message
//! that decodes encodes to bytes that decode to the same batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_service::jetstream::IngestMessage;
use privtel_store::AtRestKey;

fuzz_target!(|data: &[u8]| {
    let key = AtRestKey::new(1, [7; 32]);
    for key in [None, Some(&key)] {
        if let Ok(m) = IngestMessage::decode(data, key) {
            let again = IngestMessage::decode(&m.encode(None).expect("a decoded message encodes"), None)
                .expect("an encoded message decodes");
            assert_eq!(again.batch.seq, m.batch.seq);
            assert_eq!(again.batch.records, m.batch.records);
            assert_eq!(again.id(), m.id());
            // The JSON the writer may store: one entry per record, given
            // only where there is a record (not where its bytes held a
            // member the model ignores), each the bytes it was read from
            // (so it reads back as that record).
            let records = m.batch.records.clone();
            let json = m.into_json_batch().json;
            assert_eq!(json.len(), records.len());
            for (r, j) in records.iter().zip(&json) {
                assert!(j.is_none() || r.is_some());
                if let (Some(r), Some(j)) = (r, j) {
                    let back: privtel_model::Record = serde_json::from_slice(j).expect("the bytes read back");
                    assert_eq!(&back, r);
                }
            }
        }
    }
});

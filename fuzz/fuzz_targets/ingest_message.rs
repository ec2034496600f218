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
        }
    }
});

//! Arbitrary bytes as what a customer's verifier reads: an access log file,
//! one entry, and a checkpoint. Typed errors, never a panic; what decodes
//! re-encodes to the very bytes read (the decoders are strict, so the hash
//! chain over re-encoded entries is the hash chain over the stored bytes);
//! the verifier answers on any log and any checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use privtel_access::{
    CHECKPOINT_LEN, Checkpoint, Entry, PublicKey, SigningKey, decode_log, encode_log, verify, verify_bytes,
};

/// A real key, made once; the fuzzer cannot sign with it.
fn key() -> PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    *KEY.get_or_init(|| SigningKey::generate().expect("key").0.public_key())
}

fuzz_target!(|data: &[u8]| {
    // A log file.
    if let Ok(entries) = decode_log(data) {
        assert_eq!(encode_log(&entries), data, "a decoded log re-encodes to its bytes");
    }
    // One entry.
    if let Ok(entry) = Entry::decode(data, 0) {
        assert_eq!(entry.encode(), data, "a decoded entry re-encodes to its bytes");
        assert_eq!(Entry::decode(&entry.encode(), 0), Ok(entry));
    }
    // A checkpoint: the first bytes; the rest as a log against it.
    let (head, rest) = data.split_at(data.len().min(CHECKPOINT_LEN));
    if let Ok(cp) = Checkpoint::from_bytes(head) {
        assert_eq!(cp.to_bytes().as_slice(), head, "a decoded checkpoint re-encodes to its bytes");
        let key = key();
        // Not signed by that key: refused whatever the log.
        assert!(verify_bytes(rest, &cp, &key).is_err());
        if let Ok(entries) = decode_log(rest) {
            assert!(verify(&entries, &cp, &key).is_err());
        }
    }
});

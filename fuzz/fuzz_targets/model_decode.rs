//! Arbitrary bytes into the bincode decoder of `Record` (as the spool and the
//! wire read them) and arbitrary text into the JSON decoder (as exports are
//! read back). Whatever decodes must re-encode to a value that decodes equal;
//! a device summary's `check` never panics and agrees with its score.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_model::Record;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    if let Ok((record, _)) = bincode::serde::decode_from_slice::<Record, _>(data, config) {
        let bytes = bincode::serde::encode_to_vec(&record, config).expect("a decoded record encodes");
        let (again, used): (Record, usize) =
            bincode::serde::decode_from_slice(&bytes, config).expect("an encoded record decodes");
        assert_eq!(used, bytes.len());
        assert_eq!(again, record);
        let json = serde_json::to_string(&record).expect("a decoded record has a json form");
        let from_json: Record = serde_json::from_str(&json).expect("its json form decodes");
        assert_eq!(from_json, record);
        // A benchmarking summary's check never panics, and what it accepts
        // is scored as its counts say.
        if let privtel_model::RecordBody::DeviceSummary(s) = &record.body
            && s.check().is_ok()
        {
            assert_eq!(s.clone().scored().expect("checked counts").score, s.score);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = serde_json::from_str::<Record>(text);
    }
});

//! Bytes as the SQLite engine's key store reads them back: a key-store file
//! (the JSON of format 1, checked for its structure: format, version, salt,
//! key ids in range and unique, one current key a customer, wrapped bytes
//! only on live keys), and a master key's text (64 hex digits). Typed errors
//! or values, never a panic; an error names no byte of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_store::MasterKey;
use privtel_store::fuzzing::key_store_parse;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        let _ = key_store_parse(rest);
    } else if let Ok(text) = std::str::from_utf8(rest) {
        match MasterKey::from_hex(text) {
            Ok(key) => assert_eq!(text.trim().len(), 64, "{key:?}"),
            Err(e) => assert_eq!(
                e.to_string(),
                format!("master key: {} characters that are not a key, expected 64 hex digits", text.trim().len()),
                "the error names the length only, no character of the input"
            ),
        }
    }
});

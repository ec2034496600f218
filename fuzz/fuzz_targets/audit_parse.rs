//! Arbitrary text as an agent's audit log, read with and without a key:
//! its lines, or an error naming a line within the text; never a panic.
//! A sealed line the fuzzer could not seal with the key never opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_agent::AuditLog;
use privtel_store::AtRestKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let key = AtRestKey::new(1, [7; 32]);
    for key in [None, Some(&key)] {
        match AuditLog::parse(text, key) {
            Ok(entries) => assert!(entries.len() <= text.lines().count()),
            Err(e) => assert!(e.line >= 1 && e.line <= text.lines().count(), "line {}", e.line),
        }
    }
});

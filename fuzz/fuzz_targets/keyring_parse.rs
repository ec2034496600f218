//! Arbitrary text as a pseudonym key ring: a ring whose text form reads
//! back equal, or an error naming a line within the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_filter::{KeyRing, KeyRingError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match KeyRing::from_text(text) {
        Ok(ring) => {
            assert_eq!(KeyRing::from_text(&ring.to_text()).ok(), Some(ring.clone()));
            assert_eq!(ring.live().count(), ring.states().filter(|s| s.destroyed.is_none()).count());
        }
        Err(KeyRingError::Syntax { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1), "line {line}");
        }
        Err(e) => panic!("parsing gave a non-syntax error: {e}"),
    }
});

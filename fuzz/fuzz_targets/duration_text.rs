//! Arbitrary text into the ISO 8601 duration reader (JSON rows and exports
//! carry durations as text). Whatever reads must write back to a text that
//! reads to the same duration, and an error never repeats the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_model::iso8601;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match iso8601::parse(text) {
        Ok(d) => assert_eq!(iso8601::parse(&iso8601::format(d)).expect("our own text reads"), d),
        // The error describes the text by its length and one character,
        // never by the text itself.
        Err(privtel_model::Error::Rejected { description, .. }) => {
            assert!(description.chars().count() <= 48, "the description holds more than a character: {description}")
        }
        Err(other) => panic!("not a rejection: {other}"),
    }
});

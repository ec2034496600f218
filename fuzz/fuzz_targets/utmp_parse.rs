//! Arbitrary bytes as a utmp/wtmp file: never a panic; one result per
//! 384-byte record (the last may be short); a short record is the
//! `Truncated` error of the last one only; a record that decodes is a
//! known kind with printable names; no error message holds a byte of the
//! input's text fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_agent::collect::{UTMP_RECORD_LEN, UtmpError, parse_utmp};

fuzz_target!(|data: &[u8]| {
    let out = parse_utmp(data, 0);
    assert_eq!(out.len(), data.len().div_ceil(UTMP_RECORD_LEN));
    for (i, r) in out.iter().enumerate() {
        match r {
            Ok(rec) => {
                assert!(rec.user.len() <= 32 && rec.line.len() <= 32);
                assert!(!rec.user.chars().any(char::is_control));
                assert_eq!(privtel_agent::collect::UtmpKind::from_code(rec.kind.code()), Some(rec.kind));
            }
            Err(UtmpError::Truncated { offset, len }) => {
                assert_eq!(i + 1, out.len(), "only the last record can be short");
                assert_eq!(*offset as usize + len, data.len());
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("utmp record at byte "), "{msg}");
                assert_eq!(msg, msg.to_lowercase(), "lowercase");
            }
        }
    }
});

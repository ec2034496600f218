//! Bytes as the PostgreSQL engine reads them back from its database: a
//! record's subjects column, a stored subject key (plain or wrapped), a
//! partition's name from the catalog, and a payload in each row format
//! written (2, JSON; 3, JSON compressed with the `records-1` dictionary). Typed errors or values, never a panic; subjects that decode
//! re-encode to the same bytes; a name that parses is a `records_p` name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_engine_pg::fuzzing::{SUBJECT_LEN, decode_subjects, fuzz_load_key, parse_name};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            if let Ok(subjects) = decode_subjects(rest) {
                assert_eq!(subjects.len() * SUBJECT_LEN, rest.len());
                let again: Vec<u8> = subjects.iter().flat_map(|(k, d)| std::iter::once(*k).chain(d.iter().copied())).collect();
                assert_eq!(again, rest);
            }
        }
        1 => {
            let plain = fuzz_load_key(rest, false);
            assert_eq!(plain.is_ok(), rest.len() == 32);
            let _ = fuzz_load_key(rest, true);
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Some((c, cl, d)) = parse_name(text)
            {
                assert!(text.starts_with("records_p"));
                let _ = (c, cl, d);
            }
        }
        _ => {
            use privtel_store::parts::{Format, encode_as, unseal};
            let format = if which & 0x80 == 0 { Format::Json } else { Format::JsonZstd };
            if let Ok(record) = unseal(1, format.code(), None, rest, None) {
                // A record near the size limit may encode a little larger
                // than it decoded (`1` read, `1.0` written): refused, typed.
                let Ok(again) = encode_as(&record, format) else { return };
                assert_eq!(unseal(1, format.code(), None, &again, None).expect("decodes"), record);
            }
        }
    }
});

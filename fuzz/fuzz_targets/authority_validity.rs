//! Arbitrary bytes as a certificate whose validity a verifier remembers
//! (`privtel_authority`'s own DER reading, which a device uses instead of a
//! certificate parser): never a panic, and where x509-parser reads the same
//! bytes as a certificate, the same two times.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_authority::fuzzing::{validity, x509_validity};

fuzz_target!(|data: &[u8]| {
    let ours = validity(data);
    if let (Some((from, to)), Some((x_from, x_to))) = (ours, x509_validity(data)) {
        assert_eq!((i64::try_from(from).ok(), i64::try_from(to).ok()), (Some(x_from), Some(x_to)));
    }
});

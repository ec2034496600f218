//! Arbitrary bytes as a certificate whose validity a verifier remembers
//! (`privtel_authority`'s own DER reading, which a device uses instead of a
//! certificate parser): never a panic, and where x509-parser reads the same
//! bytes as a certificate, the same two times. Random bytes are seldom a
//! certificate, so each input is also written over a real one (the first
//! two bytes say where): its times, lengths and tags get changed in place.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use privtel_authority::fuzzing::{validity, x509_validity};

fn template() -> &'static [u8] {
    static CERT: OnceLock<Vec<u8>> = OnceLock::new();
    CERT.get_or_init(|| {
        let identity = privtel_wire::tls::generate_identity(&["service.example"]).expect("an identity");
        privtel_authority::certificate_der(&identity.cert_pem).expect("one certificate").to_vec()
    })
}

fn same_reading(der: &[u8]) {
    if let (Some((from, to)), Some((x_from, x_to))) = (validity(der), x509_validity(der)) {
        assert_eq!((i64::try_from(from).ok(), i64::try_from(to).ok()), (Some(x_from), Some(x_to)));
    }
}

fuzz_target!(|data: &[u8]| {
    same_reading(data);
    if let [a, b, rest @ ..] = data {
        let mut cert = template().to_vec();
        let at = usize::from(u16::from_le_bytes([*a, *b])) % cert.len();
        let end = (at + rest.len()).min(cert.len());
        cert[at..end].copy_from_slice(&rest[..end - at]);
        same_reading(&cert);
        // Cut where the input ends, as a short read would.
        same_reading(&cert[..end]);
    }
});

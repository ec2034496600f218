//! Arbitrary bytes as the CSR of an enrollment with a valid token, and as a
//! client certificate chain: typed refusals, never a panic. A CSR that is
//! accepted yields a certificate that identifies exactly the requested
//! device; bytes that are not a certificate of this register never
//! identify anyone.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use privtel_authority::rustls::pki_types::CertificateDer;
use privtel_authority::{Authority, EnrollError};
use privtel_model::{CustomerId, DeviceId};
use privtel_wire::EnrollRequest;
use time::{Duration, OffsetDateTime};

struct Setup {
    authority: Authority,
    token: String,
    customer: CustomerId,
    now: OffsetDateTime,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("privtel-fuzz-authority-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let authority = Authority::open(dir.join("authority.db")).expect("a register");
        let now = OffsetDateTime::now_utc();
        let customer = CustomerId::new("fuzz").expect("an id");
        authority.add_customer(&customer, now).expect("a customer");
        let token = authority.issue_token(&customer, Duration::days(300), u32::MAX, now).expect("a token");
        Setup { authority, token, customer, now }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let device = DeviceId::new("fuzzed").expect("an id");
    let request = EnrollRequest {
        token: Some(s.token.clone()),
        customer: s.customer.clone(),
        device: device.clone(),
        csr_der: data.to_vec(),
    };
    match s.authority.enroll(&request, s.now) {
        Ok(enrolled) => {
            let cert = privtel_authority::certificate_der(&enrolled.cert_pem).expect("one certificate");
            let identity = s.authority.identify(&[cert], s.now).expect("an issued certificate identifies");
            assert_eq!((identity.customer, identity.device), (s.customer.clone(), device.clone()));
            // Leave room for the next accepted CSR with another key.
            s.authority.reset_device(&s.customer, &device).expect("a reset");
        }
        Err(EnrollError::Csr { .. }) => {}
        Err(e) => panic!("a csr refusal must be a csr error: {e}"),
    }
    // The same bytes as a presented certificate chain.
    let chain = [CertificateDer::from(data.to_vec())];
    assert!(s.authority.identify(&chain, s.now).is_err(), "random bytes identify nobody");
});

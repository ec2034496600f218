//! Arbitrary text through the domain normalizer: never a panic; every
//! output host normalizes to itself; the registrable domain and suffix are
//! tails of the host; an error's rule stays short, so it cannot carry the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_domain::Normalizer;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let n = Normalizer::shared();
    match n.normalize(input) {
        Ok(out) => {
            let again = n.normalize(out.host()).expect("an output host normalizes");
            assert_eq!(again, out, "idempotence");
            if let Some(reg) = out.registrable() {
                assert!(out.host().ends_with(reg));
                assert!(reg.ends_with(out.suffix().expect("a registrable domain has a suffix")));
                assert!(out.registrable_domain().is_some(), "{reg} is a model domain");
            }
        }
        Err(e) => {
            // The rule is short whatever the input, so it cannot carry it.
            assert!(e.kind().to_string().len() <= 200, "{}", e.kind());
        }
    }
});

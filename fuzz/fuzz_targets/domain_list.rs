//! Arbitrary text as a Public Suffix List (`NormalizerBuilder::list`), then
//! the hosts its own lines and fragments make, looked up in it: never a
//! panic; a list is refused with a short reason or built; every answer's
//! registrable domain ends with its suffix, which ends the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_domain::Normalizer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for icann_only in [false, true] {
        let n = match Normalizer::builder().list(text).icann_only(icann_only).build() {
            Ok(n) => n,
            Err(e) => {
                assert!(e.to_string().len() <= 200, "{e}");
                continue;
            }
        };
        let words = text.split(|c: char| c.is_whitespace() || c == '!' || c == '*');
        for word in words.take(64) {
            for host in [word.to_owned(), format!("a.{word}"), format!("b.a.{word}")] {
                let Ok(out) = n.normalize(&host) else { continue };
                if let Some(suffix) = out.suffix() {
                    assert!(out.host().ends_with(suffix), "{host:?}");
                }
                if let Some(reg) = out.registrable() {
                    assert!(out.host().ends_with(reg), "{host:?}");
                    assert!(reg.ends_with(out.suffix().expect("a registrable domain has a suffix")), "{host:?}");
                }
            }
        }
    }
});

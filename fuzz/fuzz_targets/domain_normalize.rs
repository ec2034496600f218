//! Arbitrary text through the domain normalizer: never a panic; every
//! output host normalizes to itself; the registrable domain and suffix are
//! tails of the host; an error's rule stays short, so it cannot carry the input;
//! a scheme error names at most `MAX_SCHEME_ECHO` lowercase scheme characters;
//! an input that starts with a non-web scheme and no port is never a host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_domain::{ErrorKind, MAX_SCHEME_ECHO, Normalizer};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let n = Normalizer::shared();
    let result = n.normalize(input);
    // `word:` then something other than digits: a scheme by rule 2 (for a
    // word that is not a web scheme), so never a host. Rules 1 and 2 read
    // the input trimmed and without tabs and newlines.
    let read: String = input
        .trim_matches(|c: char| c <= '\u{20}')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    if let Some((word, rest)) = read.split_once(':') {
        let scheme_shaped = word.starts_with(|c: char| c.is_ascii_alphabetic())
            && word.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        let web = ["http", "https", "ws", "wss", "ftp"].iter().any(|w| word.eq_ignore_ascii_case(w));
        let digit_first = rest.starts_with(|c: char| c.is_ascii_digit());
        if scheme_shaped && !web && !digit_first {
            assert!(result.is_err(), "{input:?} is a scheme, not a host");
        }
    }
    match result {
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
            if let ErrorKind::Scheme(scheme) = e.kind() {
                assert!(scheme.chars().count() <= MAX_SCHEME_ECHO, "{scheme}");
                assert!(!scheme.bytes().any(|b| b.is_ascii_uppercase()), "{scheme}");
            }
        }
    }
});

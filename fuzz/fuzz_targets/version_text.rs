//! Arbitrary text as a dotted version, an installer location and a version
//! query's fields: a value or a typed error, never a panic; versions that
//! parse compare consistently (equal ones both ways, order antisymmetric).
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_wire::{DottedVersion, VersionQuery, check_installer_url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i));
    if let (Ok(x), Ok(y)) = (a.parse::<DottedVersion>(), b.parse::<DottedVersion>()) {
        assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
        assert_eq!(x == y, x.cmp(&y).is_eq());
        assert_eq!(x.to_string(), a);
    }
    if check_installer_url(text).is_ok() {
        assert!(text.starts_with("https://"));
    }
    let _ = VersionQuery::new(1, a, b, text);
});

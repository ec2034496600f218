//! Unit tests that need the full path alone: the fast path must agree with
//! it on every input.

use proptest::prelude::*;

use crate::Normalizer;

/// Inputs built from the pieces the fast path looks at, so that generated
/// cases hit both paths and their borders.
fn input() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "",
        "",
        "",
        "http://",
        "https://",
        "HTTP://",
        "hTtPs://",
        "ftp://",
        "ws:",
        "//",
        // Scheme-like prefixes (rule 2): non-web schemes, with and without
        // `//`, in any case, and words that a port turns into hosts.
        "mailto:",
        "MAILTO:",
        "skype:",
        "javascript:",
        "about:",
        "tel:+",
        "urn:isbn:",
        "data:text/html,",
        "chrome://",
        "git+ssh://",
        "a.b-c:",
        "localhost:",
        "example.com:80",
        "x:8080/",
        "c:\\",
        "mail\tto:",
        "ht\ttp://",
    ]);
    let label = prop_oneof![
        "[a-zA-Z0-9_-]{1,12}",
        Just("xn--bcher-kva".to_owned()),
        Just("XN--BCHER-KVA".to_owned()),
        "[0-9]{1,3}",
        Just("0x7f".to_owned()),
        Just("bücher".to_owned()),
        Just("%61".to_owned()),
        Just("a".repeat(64)),
        Just("".to_owned()),
    ];
    let labels = prop::collection::vec(label, 1..6).prop_map(|v| v.join("."));
    let dots = prop::sample::select(vec!["", "", ".", ".."]);
    let port = prop::sample::select(vec!["", "", ":80", ":8080", ":65535", ":65536", ":", ":x", ":0"]);
    let tail = prop::sample::select(vec!["", "/", "/a/b?q=1#f", "?x", "#y", "/\\p"]);
    let user = prop::sample::select(vec!["", "", "user@", "user:pw@", "user:80@"]);
    (scheme, user, dots.clone(), labels, dots, port, tail)
        .prop_map(|(s, u, d1, l, d2, p, t)| format!("{s}{u}{d1}{l}{d2}{p}{t}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 2_000 } else { 20_000 }, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_equals_full_path(input in input()) {
        let n = Normalizer::shared();
        prop_assert_eq!(n.normalize(&input), n.normalize_full(&input), "input {:?}", input);
    }

    #[test]
    fn fast_path_equals_full_path_on_any_text(input in "\\PC{0,40}") {
        let n = Normalizer::shared();
        prop_assert_eq!(n.normalize(&input), n.normalize_full(&input), "input {:?}", input);
    }

    #[test]
    fn a_non_web_scheme_is_never_a_host(
        scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,40}",
        rest in prop_oneof![input(), "\\PC{0,30}"],
    ) {
        prop_assume!(!["http", "https", "ws", "wss", "ftp"].iter().any(|w| scheme.eq_ignore_ascii_case(w)));
        prop_assume!(!rest.starts_with(|c: char| c.is_ascii_digit()));
        let n = Normalizer::shared();
        let got = n.normalize(&format!("{scheme}:{rest}"));
        let mut named: String = scheme.chars().take(crate::MAX_SCHEME_ECHO).collect();
        named.make_ascii_lowercase();
        prop_assert_eq!(got.map_err(|e| e.kind().clone()), Err(crate::ErrorKind::Scheme(named)));
    }
}

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

/// The Unicode labels of the embedded list, their ASCII forms, and both in
/// upper case: the labels the fast path answers without idna, and their
/// neighbours it must leave to the full path.
fn list_idn_labels() -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for line in crate::EMBEDDED_LIST.lines() {
        let Some(rule) = line.split_whitespace().next().filter(|r| !r.starts_with("//")) else { continue };
        for label in
            rule.trim_start_matches('!').trim_start_matches("*.").split('.').filter(|l| !l.is_ascii())
        {
            out.insert(label.to_owned());
            out.insert(label.to_uppercase());
            if let Ok(url::Host::Domain(ascii)) = url::Host::parse(label) {
                out.insert(ascii.to_ascii_uppercase());
                out.insert(ascii);
            }
        }
    }
    out.into_iter().collect()
}

/// Hosts mixing the list's IDN labels (right-to-left ones among them) with
/// ASCII labels that only a non-bidi domain allows (`1a`, digits first),
/// empty labels, long labels, ports and paths.
fn idn_input() -> impl Strategy<Value = String> {
    let label = prop_oneof![
        3 => prop::sample::select(list_idn_labels()),
        2 => "[a-zA-Z0-9_-]{1,12}",
        1 => prop::sample::select(
            ["1a", "0", "123", "0x7f", "-a", "a-", "ab--c", "xn--", "xn--a", "", &"a".repeat(64)].map(str::to_owned).to_vec()
        ),
        1 => Just("\u{5546}\u{5e97}\u{3002}com".to_owned()),
    ];
    let labels = prop::collection::vec(label, 1..5).prop_map(|v| v.join("."));
    let scheme = prop::sample::select(vec!["", "", "http://", "HTTPS://", "//", "ws://"]);
    let tail = prop::sample::select(vec!["", "", ".", ":80", ":99999", "/p?q", ":8080/x"]);
    (scheme, labels, tail).prop_map(|(s, l, t)| format!("{s}{l}{t}"))
}

#[test]
fn the_list_idn_labels_keep_left_to_right_ones_only() {
    let idn = crate::labels::IdnLabels::parse(crate::EMBEDDED_LIST);
    // Both forms of most of the list's 440 Unicode labels.
    assert!(idn.len() > 600, "{}", idn.len());
    assert_eq!(idn.ascii("рус".as_bytes()), Some("xn--p1acf"));
    assert_eq!(idn.ascii(b"xn--p1acf"), Some("xn--p1acf"));
    assert_eq!(idn.ascii("vestvågøy".as_bytes()), Some("xn--vestvgy-ixa6o"));
    // Right to left (Urdu, Arabic): left to the full path.
    assert_eq!(idn.ascii("پاکستان".as_bytes()), None);
    assert_eq!(idn.ascii(b"xn--mgbai9azgqp6j"), None);
    // Not the list's, or not in the form the list spells it.
    assert_eq!(idn.ascii("bücher".as_bytes()), None);
    assert_eq!(idn.ascii("РУС".as_bytes()), None);
    assert_eq!(idn.ascii(b"com"), None);
    assert_eq!(crate::labels::IdnLabels::parse("").ascii(b"xn--p1acf"), None);
    // The fast path answers hosts of kept labels, and leaves the others.
    assert!(crate::host::fast("img.спб.рус", &idn).is_some());
    assert!(crate::host::fast("HTTP://A.XN--P1ACF:80/", &idn).is_some());
    assert!(crate::host::fast("1a.پاکستان", &idn).is_none());
    assert!(crate::host::fast("bücher.de", &idn).is_none());
}

#[test]
fn list_idn_hosts_are_answered_as_the_full_path_does() {
    let n = Normalizer::shared();
    for input in
        ["img.спб.рус", "a.XN--P1ACF", "ВЕСТ.рус", "1a.xn--p1acf", "1a.پاکستان", "x.xn--mgbai9azgqp6j"]
    {
        assert_eq!(n.normalize(input), n.normalize_full(input), "{input}");
    }
    assert_eq!(n.normalize("Img.спб.рус:80/x").unwrap().registrable(), Some("img.xn--90a1af.xn--p1acf"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 2_000 } else { 20_000 }, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_equals_full_path(input in input()) {
        let n = Normalizer::shared();
        prop_assert_eq!(n.normalize(&input), n.normalize_full(&input), "input {:?}", input);
    }

    #[test]
    fn fast_path_equals_full_path_on_list_idn_hosts(input in idn_input()) {
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

//! One table of edge cases, then one test per rule of the contract.

use privtel_domain::{ErrorKind, HostKind, Normalizer, Section};

/// `Ok((host, registrable))`, with `""` for no registrable domain, or
/// `Err(the start of the rule's message)`.
type Expected = Result<(&'static str, &'static str), &'static str>;

/// (input, expected).
const CASES: &[(&str, Expected)] = &[
    // Plain hosts, case, ports, paths.
    ("example.com", Ok(("example.com", "example.com"))),
    ("WWW.EXAMPLE.COM", Ok(("www.example.com", "example.com"))),
    ("www.example.com:8080", Ok(("www.example.com", "example.com"))),
    ("example.com/path?q=1#f", Ok(("example.com", "example.com"))),
    ("//example.com/path", Ok(("example.com", "example.com"))),
    ("HTTPS://Sub.Example.co.uk:443/", Ok(("sub.example.co.uk", "example.co.uk"))),
    ("ws://chat.example.org", Ok(("chat.example.org", "example.org"))),
    ("ftp://files.example.net/pub", Ok(("files.example.net", "example.net"))),
    // IDN in Unicode and punycode forms; homographs stay distinct.
    ("bücher.example", Ok(("xn--bcher-kva.example", "xn--bcher-kva.example"))),
    ("xn--bcher-kva.example", Ok(("xn--bcher-kva.example", "xn--bcher-kva.example"))),
    ("http://www.食狮.公司.cn/", Ok(("www.xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn"))),
    ("аpple.com", Ok(("xn--pple-43d.com", "xn--pple-43d.com"))),
    // Full-width dots and letters map to ASCII (UTS #46).
    ("ｅｘａｍｐｌｅ。com", Ok(("example.com", "example.com"))),
    ("www．example．com", Ok(("www.example.com", "example.com"))),
    // user@host confusions: the host is what follows the last @.
    ("http://example.com@evil.example.net/", Ok(("evil.example.net", "example.net"))),
    // A bare `user:pass@host` is the scheme `user` (rule 2); with a web
    // scheme or `//` in front it is userinfo.
    ("user:pass@example.com", Err("scheme 'user'")),
    ("http://user:pass@example.com", Ok(("example.com", "example.com"))),
    ("//user:pass@example.com/", Ok(("example.com", "example.com"))),
    ("http://evil.com\\@example.com/", Ok(("evil.com", "evil.com"))),
    // IPv4 notations.
    ("1.2.3.4", Ok(("1.2.3.4", ""))),
    ("0x7f.1", Ok(("127.0.0.1", ""))),
    ("http://2130706433/", Ok(("127.0.0.1", ""))),
    ("0300.0250.01.01", Ok(("192.168.1.1", ""))),
    ("1.2.3.4..", Ok(("1.2.3.4", ""))),
    ("1.2.3.256", Err("not a url")),
    // IPv6.
    ("[2001:DB8::1]", Ok(("[2001:db8::1]", ""))),
    ("http://[::ffff:1.2.3.4]:80/", Ok(("[::ffff:102:304]", ""))),
    // Wildcard and exception rules.
    ("a.b.test.ck", Ok(("a.b.test.ck", "b.test.ck"))),
    ("www.ck", Ok(("www.ck", "www.ck"))),
    ("test.ck", Ok(("test.ck", ""))),
    // Private section, and bare public suffixes.
    ("user.github.io", Ok(("user.github.io", "user.github.io"))),
    ("github.io", Ok(("github.io", ""))),
    ("co.uk", Ok(("co.uk", ""))),
    ("com", Ok(("com", ""))),
    ("localhost", Ok(("localhost", ""))),
    ("example.example", Ok(("example.example", "example.example"))),
    // Dots.
    ("..example.com..", Ok(("example.com", "example.com"))),
    ("www..example...com", Ok(("www.example.com", "example.com"))),
    ("...", Err("empty host")),
    // Trimming: C0 and space only; NBSP is part of the input.
    ("  \t example.com \n", Ok(("example.com", "example.com"))),
    ("example.com\u{a0}", Err("")),
    // Errors.
    ("", Err("empty input")),
    (" \u{1} ", Err("empty input")),
    ("file:///etc/passwd", Err("scheme 'file'")),
    ("javascript://alert(1)", Err("scheme 'javascript'")),
    ("mailto://a@b.example", Err("scheme 'mailto'")),
    // Non-web schemes without `//` (issue #14): never a host, never a port
    // error.
    ("mailto:bob@example.com", Err("scheme 'mailto'")),
    ("MAILTO:x", Err("scheme 'mailto'")),
    ("skype:bob@example.com", Err("scheme 'skype'")),
    ("javascript:alert(1)", Err("scheme 'javascript'")),
    ("data:text/html,x", Err("scheme 'data'")),
    ("about:blank", Err("scheme 'about'")),
    ("tel:+331234", Err("scheme 'tel'")),
    ("urn:isbn:1", Err("scheme 'urn'")),
    ("chrome://settings", Err("scheme 'chrome'")),
    // A port after the colon: a host.
    ("localhost:8080", Ok(("localhost", ""))),
    ("example.com:8080/x", Ok(("example.com", "example.com"))),
    ("[::1]:80", Ok(("[::1]", ""))),
    ("http://", Err("not a url")),
    ("http://exa mple.com", Err("not a url")),
    ("http://ex%2561mple.com/", Err("not a url")),
    ("http://a*b.example/", Err("character '*'")),
];

#[test]
fn edge_case_table() {
    let n = Normalizer::shared();
    let mut failures = Vec::new();
    for (input, expected) in CASES {
        let got = n.normalize(input);
        let ok = match (&got, expected) {
            (Ok(out), Ok((host, reg))) => out.host() == *host && out.registrable().unwrap_or("") == *reg,
            (Err(e), Err(prefix)) => e.kind().to_string().starts_with(prefix),
            _ => false,
        };
        if !ok {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rule_1_trims_c0_and_space_only() {
    let n = Normalizer::shared();
    assert_eq!(n.normalize("\u{0}\u{1f} example.com\u{20}").unwrap().host(), "example.com");
    // A trailing NBSP is not trimmed: it is part of the host, and maps away
    // or fails in the URL parser, but never by our trimming.
    let nbsp = n.normalize("example.com\u{a0}");
    assert_ne!(nbsp.as_ref().map(|o| o.host().to_owned()).ok(), Some("example.com".to_owned()), "{nbsp:?}");
    assert_eq!(n.normalize("\u{20}").unwrap_err().kind(), &ErrorKind::Empty);
}

#[test]
fn rule_2_decides_url_or_host() {
    let n = Normalizer::shared();
    let host = |input: &str| n.normalize(input).map(|o| o.host().to_owned());
    let scheme = |input: &str| match n.normalize(input) {
        Err(e) => match e.kind() {
            ErrorKind::Scheme(s) => Some(s.clone()),
            _ => None,
        },
        Ok(_) => None,
    };
    // Web schemes: a URL as it is, even without slashes.
    assert_eq!(host("ftp:example.com").unwrap(), "example.com");
    assert_eq!(host("HtTpS:example.com").unwrap(), "example.com");
    // A word, `:` and a port (digits, then the end, `/`, `\`, `?` or `#`):
    // `host:port`, not a scheme.
    assert_eq!(host("localhost:8080").unwrap(), "localhost");
    assert_eq!(host("example.com:8080/x").unwrap(), "example.com");
    assert_eq!(host("example.com:8080?q").unwrap(), "example.com");
    assert_eq!(host("example.com:8080#f").unwrap(), "example.com");
    assert_eq!(host("example.com:8080\\x").unwrap(), "example.com");
    // Every scheme character before a port: still `host:port`, and then the
    // host rules refuse the `+`.
    assert_eq!(n.normalize("a-b.c+d:1").unwrap_err().kind(), &ErrorKind::Character('+'));
    // A number that is no port (above 65535, or more than 5 digits) is no
    // port: the word is a scheme.
    assert_eq!(host("example.com:65535").unwrap(), "example.com");
    assert_eq!(host("example.com:00080").unwrap(), "example.com");
    assert_eq!(scheme("example.com:65536").as_deref(), Some("example.com"));
    assert_eq!(scheme("example.com:000080").as_deref(), Some("example.com"));
    // The known limit: a non-web scheme and a short number alone reads as
    // `host:port`, as `intranet:112` must.
    assert_eq!(host("intranet:112").unwrap(), "intranet");
    assert_eq!(host("tel:112").unwrap(), "tel");
    // Not scheme-shaped (a digit or `_` or `[` first, `_` inside): never a
    // scheme, whatever follows.
    assert_eq!(host("[::1]:80").unwrap(), "[::1]");
    assert_eq!(host("my_host:8080").unwrap(), "my_host");
    assert!(matches!(n.normalize("my_host:x").unwrap_err().kind(), ErrorKind::Url(_)));
    assert!(matches!(n.normalize("1.2.3.4:x").unwrap_err().kind(), ErrorKind::Url(_)));
    // An empty port is not a port: the word is a scheme.
    assert_eq!(scheme("example.com:").as_deref(), Some("example.com"));
    assert_eq!(scheme("localhost:/x").as_deref(), Some("localhost"));
    // Digits then anything else: a scheme (`a:1x` is no port).
    assert_eq!(scheme("a:1x").as_deref(), Some("a"));
    assert_eq!(scheme("a:80@example.com").as_deref(), Some("a"));
    // Any other scheme, with or without `//`, is refused by name.
    assert_eq!(scheme("git+ssh://example.com").as_deref(), Some("git+ssh"));
    assert_eq!(scheme("user:pass@example.com").as_deref(), Some("user"));
    assert_eq!(scheme("C:\\Users\\bob").as_deref(), Some("c"));
    // Userinfo needs a web scheme or `//` in front.
    assert_eq!(host("https://user:pass@example.com/").unwrap(), "example.com");
    assert_eq!(host("//user:pass@example.com/").unwrap(), "example.com");
    // Tabs and newlines inside are removed first, as WHATWG does.
    assert_eq!(scheme("mail\tto:bob@example.com").as_deref(), Some("mailto"));
    assert_eq!(host("ht\ntps://example.com/").unwrap(), "example.com");
}

/// The inputs of issue #14: each is a scheme error naming the scheme in
/// lowercase, never a host and never a port error.
#[test]
fn rule_4_non_web_schemes_are_scheme_errors() {
    let n = Normalizer::shared();
    for (input, expected) in [
        ("mailto:bob@example.com", "mailto"),
        ("MAILTO:x", "mailto"),
        ("skype:bob@example.com", "skype"),
        ("javascript:alert(1)", "javascript"),
        ("data:text/html,x", "data"),
        ("about:blank", "about"),
        ("tel:+331234", "tel"),
        ("urn:isbn:1", "urn"),
        ("file:///etc/passwd", "file"),
        ("chrome://settings", "chrome"),
        ("Sip:alice@example.com:5060", "sip"),
        ("tel:0123456789", "tel"),
        ("  mailto:bob@example.com\n", "mailto"),
    ] {
        let got = n.normalize(input);
        let kind = got.as_ref().map_err(|e| e.kind().clone());
        assert_eq!(kind, Err(ErrorKind::Scheme(expected.to_owned())), "{input:?}");
        let text = got.unwrap_err().kind().to_string();
        assert!(!text.contains("bob") && !text.contains("port"), "{input:?}: {text}");
    }
}

#[test]
fn rule_4_web_schemes_and_hosts_only() {
    let n = Normalizer::shared();
    for s in ["http", "https", "ws", "wss", "ftp"] {
        assert_eq!(n.normalize(&format!("{s}://example.com/")).unwrap().host(), "example.com");
        assert_eq!(
            n.normalize(&format!("{}://example.com/", s.to_uppercase())).unwrap().host(),
            "example.com"
        );
    }
    assert!(matches!(n.normalize("data://text/plain").unwrap_err().kind(), ErrorKind::Scheme(_)));
    // The scheme named is cut to MAX_SCHEME_ECHO characters.
    let long = format!("{}:x", "AbC".repeat(50));
    let cut = "abc".repeat(50)[..privtel_domain::MAX_SCHEME_ECHO].to_owned();
    assert_eq!(n.normalize(&long).unwrap_err().kind(), &ErrorKind::Scheme(cut));
}

#[test]
fn rule_5_ip_addresses() {
    let n = Normalizer::shared();
    let v4 = n.normalize("http://0x7F000001/").unwrap();
    assert_eq!((v4.host(), v4.kind(), v4.registrable()), ("127.0.0.1", HostKind::Ipv4, None));
    assert_eq!(v4.ip(), Some("127.0.0.1".parse().unwrap()));
    let v6 = n.normalize("http://[0:0:0:0:0:ffff:102:304]/").unwrap();
    assert_eq!(v6.host(), "[::ffff:102:304]");
    assert_eq!(v6.kind(), HostKind::Ipv6);
    assert_eq!(v6.suffix(), None);
}

#[test]
fn rule_6_dots_and_reparse() {
    let n = Normalizer::shared();
    assert_eq!(n.normalize("example.com.").unwrap().host(), "example.com");
    assert_eq!(n.normalize(".example.com").unwrap().host(), "example.com");
    let ip = n.normalize("http://1.2.3.4../").unwrap();
    assert_eq!(ip.kind(), HostKind::Ipv4);
    assert_eq!(n.normalize("http://.../").unwrap_err().kind(), &ErrorKind::EmptyHost);
}

#[test]
fn rule_7_dns_lengths() {
    let n = Normalizer::shared();
    let l63 = "a".repeat(63);
    assert!(n.normalize(&format!("{l63}.com")).is_ok());
    assert_eq!(n.normalize(&format!("a{l63}.com")).unwrap_err().kind(), &ErrorKind::LabelTooLong(64));
    let host_253 = format!("{}.com", vec!["a".repeat(61); 4].join("."));
    assert_eq!(host_253.len(), 251);
    assert!(n.normalize(&format!("{host_253}.x")).is_ok());
    assert_eq!(n.normalize(&format!("{host_253}.xyz")).unwrap_err().kind(), &ErrorKind::HostTooLong(255));
    // Lengths count the punycode form: 20 "ü" are 40 UTF-8 bytes but a
    // longer ASCII label.
    let long_idn = "ü".repeat(60);
    assert!(matches!(
        n.normalize(&format!("{long_idn}.com")).unwrap_err().kind(),
        ErrorKind::LabelTooLong(_)
    ));
}

#[test]
fn rule_8_percent_decoding_happens_once() {
    let n = Normalizer::shared();
    assert_eq!(n.normalize("http://ex%61mple.com/").unwrap().host(), "example.com");
    assert!(matches!(n.normalize("http://ex%2561mple.com/").unwrap_err().kind(), ErrorKind::Url(_)));
}

#[test]
fn rule_9_sections_known_tlds_and_icann_only() {
    let n = Normalizer::shared();
    let private = n.normalize("a.user.github.io").unwrap();
    assert_eq!(
        (private.registrable(), private.section(), private.tld_known()),
        (Some("user.github.io"), Some(Section::Private), true)
    );
    let icann = Normalizer::builder().icann_only(true).build().unwrap();
    let same = icann.normalize("a.user.github.io").unwrap();
    assert_eq!((same.registrable(), same.section()), (Some("github.io"), Some(Section::Icann)));
    let unknown = n.normalize("a.b.example").unwrap();
    assert_eq!(
        (unknown.registrable(), unknown.suffix(), unknown.section(), unknown.tld_known()),
        (Some("b.example"), Some("example"), None, false)
    );
    assert_eq!(n.normalize("localhost").unwrap().registrable(), None);
    // A newer list given as text is used.
    let custom = Normalizer::builder()
        .list("// ===BEGIN ICANN DOMAINS===\nexample\n*.wild.example\n")
        .build()
        .unwrap();
    let out = custom.normalize("a.b.wild.example").unwrap();
    assert_eq!((out.registrable(), out.section()), (Some("a.b.wild.example"), Some(Section::Icann)));
    assert!(Normalizer::builder().list("// nothing\n").build().is_err());
}

#[test]
fn rule_10_output_is_canonical_and_idempotent() {
    let n = Normalizer::shared();
    for (input, _) in CASES {
        if let Ok(out) = n.normalize(input) {
            let again = n.normalize(out.host()).unwrap();
            assert_eq!(again, out, "{input:?}");
            assert!(!out.host().ends_with('.') && !out.host().contains(':') || out.host().starts_with('['));
            if let Some(d) = out.registrable() {
                assert_eq!(out.registrable_domain().unwrap().as_str(), d);
            }
        }
    }
}

#[test]
fn errors_name_input_and_rule_but_kind_hides_the_input() {
    let n = Normalizer::shared();
    let err = n.normalize("file:///home/alice/secret.txt").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid web host 'file:///home/alice/secret.txt': scheme 'file' is not a web scheme (expected http, https, ws, wss or ftp)"
    );
    assert!(!err.kind().to_string().contains("alice"));
    let long = format!("http://{}", "x y".repeat(1000));
    assert!(n.normalize(&long).unwrap_err().to_string().len() < 300);
    let scheme = format!("{}://host", "s".repeat(500));
    let err = n.normalize(&scheme).unwrap_err();
    assert!(err.kind().to_string().len() < 120, "{}", err.kind());
}

#[test]
fn embedded_list_loads_fast_and_records_its_version() {
    assert!(
        privtel_domain::EMBEDDED_LIST
            .contains(&format!("// VERSION: {}", privtel_domain::EMBEDDED_LIST_VERSION))
    );
    assert!(
        privtel_domain::EMBEDDED_LIST
            .contains(&format!("// COMMIT: {}", privtel_domain::EMBEDDED_LIST_COMMIT))
    );
    assert!(
        privtel_domain::EMBEDDED_LIST
            .starts_with("// This Source Code Form is subject to the terms of the Mozilla Public")
    );
}

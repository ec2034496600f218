//! The version check's messages and comparison: bounds on every string
//! before it is copied, typed errors naming no value, explicit status
//! codes, dotted versions compared as numbers.

use privtel_wire::{
    DottedVersion, Error, Message, UpdateOffer, VersionAnswer, VersionError, VersionQuery, VersionStatus,
};

fn query() -> VersionQuery {
    VersionQuery {
        query_id: 1,
        product: "Acme Editor".into(),
        current_version: "2.4.1".into(),
        channel: "stable".into(),
        platform: "linux-x86_64".into(),
    }
}

/// The payload of `msg` decoded again, as its kind.
fn redecode(msg: &Message) -> privtel_wire::Result<Message> {
    Message::decode_payload(msg.kind(), &msg.encode_payload().unwrap())
}

#[test]
fn kinds_are_pinned() {
    assert_eq!(Message::VersionQuery(query()).kind(), 14);
    let answer =
        VersionAnswer { query_id: 1, status: VersionStatus::UNKNOWN_PRODUCT, latest: None, offer: None };
    assert_eq!(Message::VersionAnswer(answer.clone()).kind(), 15);
    assert_eq!(redecode(&Message::VersionAnswer(answer.clone())).unwrap(), Message::VersionAnswer(answer));
    // The status codes are numbers on the wire, pinned here.
    let codes = [
        (VersionStatus::UP_TO_DATE, 1, "up to date"),
        (VersionStatus::UPDATE, 2, "update"),
        (VersionStatus::UNKNOWN_PRODUCT, 3, "unknown product"),
        (VersionStatus::PROGRAM_OFF, 4, "program off"),
    ];
    for (status, code, name) in codes {
        assert_eq!(status.0, code);
        assert_eq!(status.to_string(), name);
    }
    assert_eq!(VersionStatus(77).to_string(), "status 77");
}

#[test]
fn oversized_strings_are_refused_on_decode_naming_no_value() {
    let canary = "CANARYx";
    let long = |n: usize| canary.repeat(n / canary.len() + 1);
    for (field, max) in [("product", 128), ("current_version", 64), ("channel", 32), ("platform", 32)] {
        let mut q = query();
        let slot = match field {
            "product" => &mut q.product,
            "current_version" => &mut q.current_version,
            "channel" => &mut q.channel,
            _ => &mut q.platform,
        };
        *slot = long(max + 1);
        let err = redecode(&Message::VersionQuery(q)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Decode { kind: "version query", .. }), "{field}: {text}");
        assert!(text.contains(&format!("at most {max} bytes")), "{field}: {text}");
        assert!(!text.contains("CANARY"), "{field}: the value is in the error: {text}");
    }
    // At the bound: decodes.
    let mut q = query();
    q.product = "p".repeat(128);
    assert!(redecode(&Message::VersionQuery(q)).is_ok());
    // An installer URL above 2 KiB in an answer.
    let offer = UpdateOffer {
        latest: "3.0".into(),
        installer: format!("https://example.com/{}", "a".repeat(2048)),
        sha256: privtel_model::Digest::from_bytes([1; 32]),
        size: 1,
    };
    let answer = VersionAnswer {
        query_id: 1,
        status: VersionStatus::UPDATE,
        latest: Some("3.0".into()),
        offer: Some(offer),
    };
    let err = redecode(&Message::VersionAnswer(answer)).unwrap_err().to_string();
    assert!(err.contains("at most 2048 bytes"), "{err}");
    // `latest` (an Option) is bounded too.
    let answer = VersionAnswer {
        query_id: 1,
        status: VersionStatus::UP_TO_DATE,
        latest: Some("1".repeat(65)),
        offer: None,
    };
    assert!(redecode(&Message::VersionAnswer(answer)).unwrap_err().to_string().contains("at most 64 bytes"));
}

#[test]
fn a_string_claiming_a_terabyte_is_refused_before_allocating() {
    // query_id 1, then a product whose length prefix claims 2^40 bytes.
    let mut payload = vec![1u8, 253];
    payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
    for kind in [14, 15] {
        let err = Message::decode_payload(kind, &payload).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }
}

#[test]
fn garbage_payloads_are_typed_errors() {
    for bytes in [&[][..], &[0xff; 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9], &[0; 40]] {
        for kind in [14, 15] {
            if let Err(e) = Message::decode_payload(kind, bytes) {
                assert!(matches!(e, Error::Decode { .. }), "{e}");
            }
        }
    }
    // Non-UTF-8 in a string: an error, not a lossy string.
    let mut payload = Message::VersionQuery(query()).encode_payload().unwrap();
    let at = payload.windows(4).position(|w| w == b"Acme").unwrap();
    payload[at] = 0xff;
    assert!(Message::decode_payload(14, &payload).is_err());
}

#[test]
fn dotted_versions_compare_as_numbers() {
    let v = |s: &str| s.parse::<DottedVersion>().unwrap();
    assert!(v("1.9") < v("1.10"));
    assert!(v("2.4.9") < v("2.4.10"));
    assert!(v("2") < v("2.0.1"));
    assert!(v("10.0") > v("9.99.99"));
    assert_eq!(v("1.2"), v("1.2.0.0"));
    assert_eq!(v("01.2"), v("1.2"));
    assert_eq!(v("999999999").cmp(&v("999999998")), std::cmp::Ordering::Greater);
    for bad in [
        "",
        ".",
        "1.",
        ".1",
        "1..2",
        "v1.2",
        "1.2-beta",
        "+1",
        "1.2 ",
        " 1",
        "1.2.3.4.5.6.7.8.9",
        "4294967296",
        "1234567890",
    ] {
        let err = DottedVersion::parse_field(bad, "current version").unwrap_err();
        assert_eq!(err, VersionError::NotDotted { field: "current version" }, "{bad:?}");
    }
    assert!("1.2.3.4.5.6.7.8".parse::<DottedVersion>().is_ok());
    let text = DottedVersion::parse_field("SECRET", "current version").unwrap_err().to_string();
    assert!(!text.contains("SECRET"), "{text}");
}

#[test]
fn queries_and_offers_are_checked() {
    assert!(VersionQuery::new(1, "Acme Editor", "2.4.1", "stable").is_ok());
    assert_eq!(
        VersionQuery::new(1, "", "2.4.1", "stable").unwrap_err(),
        VersionError::Text { field: "product", len: 0, max: 128 }
    );
    assert_eq!(
        VersionQuery::new(1, "Acme\nEditor", "2.4.1", "stable").unwrap_err(),
        VersionError::Text { field: "product", len: 11, max: 128 }
    );
    assert!(matches!(
        VersionQuery::new(1, "Acme", "2.4.1", &"c".repeat(33)),
        Err(VersionError::Text { field: "channel", .. })
    ));
    let current = "2.4.1".parse().unwrap();
    let offer = |latest: &str, installer: &str| UpdateOffer {
        latest: latest.into(),
        installer: installer.into(),
        sha256: privtel_model::Digest::from_bytes([1; 32]),
        size: 1,
    };
    assert_eq!(offer("2.5", "https://dl.example.com/a").check(&current).unwrap().to_string(), "2.5");
    assert_eq!(offer("2.4.1", "https://dl.example.com/a").check(&current), Err(VersionError::NotNewer));
    assert_eq!(offer("2.3", "https://dl.example.com/a").check(&current), Err(VersionError::NotNewer));
    for url in [
        "http://dl.example.com/a",
        "https://",
        "https:///a",
        "https://u:p@dl.example.com/a",
        "https://dl.example.com/a b",
        "ftp://dl.example.com/a",
        "HTTPS://dl.example.com/a",
        "file:///etc/passwd",
    ] {
        assert_eq!(offer("2.5", url).check(&current), Err(VersionError::NotHttps), "{url}");
    }
}

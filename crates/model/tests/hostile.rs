//! Hostile bytes and texts: every decode is a typed error, never a panic.

use privtel_model::{Record, Timestamp};
use proptest::prelude::*;

const LIMIT: usize = 1 << 16;

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<LIMIT>())
        .map(|(v, _)| v)
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
}

#[test]
fn out_of_range_values_are_rejected_when_decoding() {
    // A timestamp far outside the years -9999..9999.
    assert!(decode::<Timestamp>(&encode(&(i64::MAX, 0u32))).is_err());
    assert!(decode::<Timestamp>(&encode(&(0i64, 1_000_000_000u32))).is_err());
    assert!(serde_json::from_str::<Timestamp>("\"10000-01-01T00:00:00Z\"").is_err());
    // A score above 100, a country that does not exist, a non-canonical domain.
    assert!(decode::<privtel_model::Score>(&encode(&101u8)).is_err());
    assert!(serde_json::from_str::<privtel_model::CountryCode>("\"XX\"").is_err());
    assert!(serde_json::from_str::<privtel_model::Domain>("\"Example.COM\"").is_err());
    assert!(serde_json::from_str::<privtel_model::UserId>("\"alice@corp.example\"").is_err());
    // An IP prefix with host bits set, a bucket whose end is before its start.
    assert!(serde_json::from_str::<privtel_model::IpPrefix>(r#"{"addr":"10.0.0.1","len":8}"#).is_err());
    assert!(serde_json::from_str::<privtel_model::DurationBucket>(r#"{"lo":[10,0],"hi":[5,0]}"#).is_err());
    assert!(
        serde_json::from_str::<privtel_model::TimeBucket>(
            r#"{"start":"2026-11-27T04:30:00Z","unit":"hour"}"#
        )
        .is_err()
    );
}

/// Found by the `model_decode` fuzz target: a performance sample whose value
/// was NaN decoded, then did not equal itself and had no JSON form.
#[test]
fn fuzz_nan_performance_value_is_rejected() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(decode::<privtel_model::Finite>(&encode(&bad)).is_err());
        let err = privtel_model::Finite::new(bad).unwrap_err().to_string();
        assert!(err.ends_with("expected a finite number"), "{err}");
    }
    assert_eq!(decode::<privtel_model::Finite>(&encode(&-0.5f64)).unwrap().get(), -0.5);
}

#[test]
fn extreme_durations_do_not_panic() {
    for (s, n) in
        [(i64::MAX, 999_999_999i32), (i64::MIN, -999_999_999), (i64::MAX, -1), (i64::MIN, 1), (0, i32::MAX)]
    {
        let bytes = encode(&(s, n));
        let _ = decode::<time::Duration>(&bytes);
        let _ = serde_json::from_str::<time::Duration>(&format!("[{s},{n}]"));
    }
}

#[test]
fn a_huge_length_prefix_is_refused_by_the_limit() {
    // A Vec<Record> claiming u64::MAX elements: the limit stops it before any
    // allocation of that size.
    let mut bytes = vec![253u8];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode::<Vec<Record>>(&bytes).is_err());
    // A string claiming 2^40 bytes.
    let mut bytes = vec![253u8];
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(decode::<String>(&bytes).is_err());
}

proptest! {
    /// Random bytes never panic the record decoder, and whatever decodes
    /// re-encodes to bytes that decode to the same value.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(record) = decode::<Record>(&bytes) {
            let again = encode(&record);
            prop_assert_eq!(decode::<Record>(&again).unwrap(), record);
        }
    }

    /// Truncating a valid encoding at any byte is an error, not a panic.
    #[test]
    fn truncation_is_an_error(record in privtel_testkit::record(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&record);
        let cut = cut.index(bytes.len());
        prop_assert!(decode::<Record>(&bytes[..cut]).is_err());
    }
}

/// A refused personal value is never repeated by the error: its Display and
/// Debug name the type and what was expected, with the input's length or
/// shape at most (the service returns such errors, and callers log them).
#[test]
fn errors_about_personal_values_never_repeat_the_value() {
    use privtel_model::{CountryCode, Digest, Domain, EventId, Geohash, IpPrefix, Pseudonym, TimeBucket};

    const CANARY: &str = "canary7f3a";
    fn assert_silent<T: std::fmt::Debug, E: std::fmt::Display + std::fmt::Debug>(
        what: &str,
        result: Result<T, E>,
        secret: &str,
    ) {
        let err = result.expect_err(what);
        let (display, debug) = (err.to_string(), format!("{err:?}"));
        assert!(display.starts_with("invalid "), "{what}: {display}");
        for text in [&display, &debug] {
            assert!(
                !text.to_lowercase().contains(&secret.to_lowercase()),
                "{what} repeats the value: {text}"
            );
        }
    }
    // Texts, by FromStr and by the JSON forms a wire or spool holds.
    assert_silent("domain", Domain::new(format!("{CANARY}.Example.COM")), CANARY);
    assert_silent("domain json", serde_json::from_str::<Domain>(&format!("\"{CANARY}..example\"")), CANARY);
    assert_silent("geohash", Geohash::new(&format!("u0{CANARY}")), CANARY);
    assert_silent("geohash json", serde_json::from_str::<Geohash>(&format!("\"u0{CANARY}\"")), CANARY);
    assert_silent("timestamp", format!("{CANARY} 2026-11-27T04:17:23.512Z").parse::<Timestamp>(), CANARY);
    assert_silent("timestamp @", format!("@{CANARY}").parse::<Timestamp>(), CANARY);
    assert_silent("pseudonym", format!("k1:{CANARY}").parse::<Pseudonym>(), CANARY);
    assert_silent("country code", CANARY.parse::<CountryCode>(), CANARY);
    assert_silent("digest", CANARY.parse::<Digest>(), CANARY);
    assert_silent("event id", CANARY.parse::<EventId>(), CANARY);
    assert_silent("user id", format!("{CANARY}@corp.example").parse::<privtel_model::UserId>(), CANARY);
    // An IP "prefix" with its host bits set is the address itself; a time
    // bucket that does not start on its unit is the instant itself.
    let address = "203.0.113.77";
    let prefix = format!(r#"{{"addr":"{address}","len":24}}"#);
    assert_silent("ip prefix json", serde_json::from_str::<IpPrefix>(&prefix), address);
    let ip = IpPrefix::new("203.0.113.0".parse().unwrap(), 24).unwrap();
    let mut bytes = encode(&ip);
    let at = bytes.windows(4).position(|w| w == [203, 0, 113, 0]).expect("the address's bytes");
    bytes[at + 3] = 77;
    let err = decode::<IpPrefix>(&bytes).expect_err("host bits set");
    assert!(!format!("{err} {err:?}").contains(address), "{err:?}");
    let instant = "2026-11-27T04:17:23.512Z";
    let bucket = format!(r#"{{"start":"{instant}","unit":"hour"}}"#);
    assert_silent("time bucket json", serde_json::from_str::<TimeBucket>(&bucket), "04:17");
}

/// Text ids decode from a borrowed text (checked before the copy) and from
/// an owned one (a JSON string with escapes) alike, in JSON and bincode: a
/// valid id as itself, an invalid one as an error that does not repeat it.
#[test]
fn text_ids_are_checked_however_their_text_arrives() {
    use privtel_model::{CustomerId, DeviceId, UserId};
    // Borrowed from the input.
    assert_eq!(serde_json::from_str::<UserId>("\"u-1042\"").unwrap().as_str(), "u-1042");
    // Unescaped into an owned string first.
    assert_eq!(serde_json::from_str::<DeviceId>("\"dev\\u002d7\"").unwrap().as_str(), "dev-7");
    assert_eq!(decode::<CustomerId>(&encode(&"acme")).unwrap().as_str(), "acme");
    assert_eq!(encode(&CustomerId::new("acme").unwrap()), encode(&"acme"));
    assert_eq!(serde_json::to_string(&UserId::new("u-1").unwrap()).unwrap(), "\"u-1\"");
    let canary = "alice.canary@corp.example";
    for e in [
        serde_json::from_str::<UserId>(&format!("\"{canary}\"")).unwrap_err().to_string(),
        serde_json::from_str::<UserId>("\"alice.canary\\u0040corp.example\"").unwrap_err().to_string(),
        decode::<UserId>(&encode(&canary)).unwrap_err().to_string(),
    ] {
        assert!(e.contains("user id"), "{e}");
        assert!(!e.contains("canary"), "{e}");
    }
    for bad in ["", &"x".repeat(65), "a b", "é"] {
        assert!(serde_json::from_str::<DeviceId>(&serde_json::to_string(bad).unwrap()).is_err(), "{bad:?}");
        assert!(decode::<DeviceId>(&encode(&bad)).is_err(), "{bad:?}");
    }
    // Not a string at all.
    assert!(serde_json::from_str::<UserId>("42").is_err());
    // UTF-8 bytes, from a format that gives texts as bytes, as a `String`
    // takes them.
    use serde::Deserialize as _;
    type Bytes<'a> = serde::de::value::BytesDeserializer<'a, serde::de::value::Error>;
    assert_eq!(UserId::deserialize(Bytes::new(b"u-7")).unwrap().as_str(), "u-7");
    assert!(UserId::deserialize(Bytes::new(b"\xff")).is_err());
    let e = UserId::deserialize(Bytes::new(canary.as_bytes())).unwrap_err().to_string();
    assert!(e.contains("user id") && !e.contains("canary"), "{e}");
}

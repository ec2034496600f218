//! Hostile input: every malformed, truncated, oversized or hostile byte
//! sequence is a typed error, and memory stays bounded by the limits.

use privtel_wire::{Connection, Error, Frame, Message, decode_frame, encode_frame, read_frame};
use proptest::prelude::*;

fn valid_frame_bytes() -> Vec<u8> {
    let msg = &super::samples()[2].1; // the batch
    let mut bytes = Vec::new();
    encode_frame(&msg.to_frame(2, false).unwrap(), privtel_wire::DEFAULT_MAX_PAYLOAD, &mut bytes).unwrap();
    bytes
}

#[test]
fn truncated_at_every_byte() {
    let bytes = valid_frame_bytes();
    for cut in 0..bytes.len() {
        let err = decode_frame(&bytes[..cut], privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "cut at {cut}: {err}");
        let err = read_frame(&mut &bytes[..cut], privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap_err();
        if cut == 0 {
            assert!(matches!(err, Error::Closed));
        } else {
            assert!(matches!(err, Error::Truncated { offset, .. } if offset == cut), "cut at {cut}: {err}");
        }
    }
}

#[test]
fn bad_magic_version_flags_and_checksum() {
    let good = valid_frame_bytes();
    let with = |i: usize, b: u8| {
        let mut v = good.clone();
        v[i] = b;
        decode_frame(&v, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap_err().to_string()
    };
    assert_eq!(with(0, b'X'), "bad magic [58, 54]: expected \"PT\" (50 54)");
    assert_eq!(with(2, 9), "unsupported protocol version 9: expected one of [2]");
    assert!(with(4, 0x80).starts_with("unsupported frame flags 0x80"));
    assert!(with(5, 1).starts_with("unsupported frame flags"));
    assert!(with(good.len() - 1, good[good.len() - 1] ^ 1).starts_with("checksum mismatch"));
    assert!(with(12, good[12] ^ 1).starts_with("checksum mismatch"));
}

#[test]
fn huge_length_prefixes_are_refused_before_allocating() {
    // A header claiming 4 GiB: refused from the header alone, so nothing of
    // that size is ever allocated (the stream holds no payload at all).
    let mut head = valid_frame_bytes()[..privtel_wire::HEADER_LEN].to_vec();
    head[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = read_frame(&mut head.as_slice(), privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap_err();
    assert_eq!(err.to_string(), "frame payload of 4294967295 bytes exceeds the maximum of 16777216 bytes");
    // A smaller configured maximum is honoured too.
    let bytes = valid_frame_bytes();
    assert!(matches!(decode_frame(&bytes, 100), Err(Error::TooLarge { max: 100, .. })));
    // And on the sending side.
    let big = Frame::new(1, 3, 0, vec![0; 101]);
    assert!(matches!(encode_frame(&big, 100, &mut Vec::new()), Err(Error::TooLarge { .. })));
}

#[test]
fn hostile_collection_lengths_inside_payloads_are_errors() {
    // bincode varint: 253 means a u64 follows. Nine bytes claiming 2^40
    // elements or bytes, at the start of every kind's payload.
    let mut nine = vec![253u8];
    nine.extend_from_slice(&(1u64 << 40).to_le_bytes());
    for kind in 1..=9u8 {
        let err = Message::decode_payload(kind, &nine).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "kind {kind}: {err}");
    }
    // A string claiming 2^40 bytes (Goodbye's reason): bincode's default
    // configuration would try to allocate a terabyte and abort the process;
    // ours stops at the configured limit, before allocating.
    let err = Message::decode_payload(9, &nine).unwrap_err().to_string();
    assert!(err.contains("LimitExceeded"), "the limit, not luck, stopped it: {err}");
    // A hello's list claiming 2^40 elements: refused from its length
    // prefix (a hello's lists hold at most MAX_HELLO_LIST entries).
    let err = Message::decode_payload(1, &nine).unwrap_err().to_string();
    assert!(err.contains("at most 64 entries"), "{err}");
    // A collection without such a bound (an ack's rejections) claiming 2^40
    // elements with little data: serde caps the up-front capacity (at 1
    // MiB), so this ends as a short read.
    let ack = Message::Ack(privtel_wire::Ack {
        batch_id: privtel_model::BatchId::from_u128(7),
        accepted_up_to: 0,
        rejections: Vec::new(),
        retry_after_ms: None,
    });
    let empty = ack.encode_payload().unwrap();
    // ... its rejections' length (one byte, 0, before the last field's 0)
    // replaced by the nine-byte claim.
    let mut claim = empty[..empty.len() - 2].to_vec();
    claim.extend_from_slice(&nine);
    claim.push(0);
    let err = Message::decode_payload(ack.kind(), &claim).unwrap_err().to_string();
    assert!(err.contains("UnexpectedEnd") || err.contains("LimitExceeded"), "{err}");
}

#[test]
fn deeply_nested_and_trailing_garbage() {
    // Trailing bytes after a valid message are an error, not ignored.
    let msg = &super::samples()[10].1;
    let mut payload = msg.encode_payload().unwrap();
    payload.push(0);
    let err = Message::decode_payload(msg.kind(), &payload).unwrap_err();
    assert!(err.to_string().ends_with("1 bytes after the message"), "{err}");
    // Every sample's payload with a byte flipped: an error or a valid
    // message, never a panic.
    for (_, msg) in super::samples() {
        let payload = msg.encode_payload().unwrap();
        for i in 0..payload.len() {
            let mut p = payload.clone();
            p[i] ^= 0xff;
            let _ = Message::decode_payload(msg.kind(), &p);
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_frame(&bytes, 1 << 16);
        let _ = Connection::new(bytes.as_slice()).recv();
        for kind in 0..=16u8 {
            if let Ok(m) = Message::decode_payload(kind, &bytes) {
                // What decodes re-encodes to a message that decodes equal.
                let again = m.encode_payload().unwrap();
                prop_assert_eq!(Message::decode_payload(kind, &again).unwrap(), m);
            }
        }
    }
}

#[test]
fn enrichment_queries_out_of_bounds_are_refused_naming_no_value() {
    use privtel_wire::{EnrichQuery, HashPrefix, QueryError, VerdictIndex};
    let index = VerdictIndex::new(8, [5; 32]);
    let private = |binaries: Vec<HashPrefix>| EnrichQuery::Private { query_id: 1, binaries, domains: vec![] };
    let secret = vec![0xde, 0xad, 0xbe, 0xef];
    // Too short (empty, 1 byte), too long, too many.
    for (prefix, len) in [(vec![], 0), (vec![0xde], 1), (vec![0xde; 33], 33)] {
        let err = index.answer(&private(vec![HashPrefix(secret.clone()), HashPrefix(prefix)])).unwrap_err();
        assert_eq!(err, QueryError::PrefixLength { list: "binaries", index: 1, len, min: 2, max: 32 });
        // No message shows a prefix's bytes (de = 222, ad = 173).
        let text = err.to_string();
        assert!(["de", "ad", "222", "173"].iter().all(|b| !text.contains(b)), "{text}");
    }
    let many = vec![HashPrefix(secret); privtel_wire::MAX_QUERY_ITEMS + 1];
    let err = index.answer(&private(many.clone())).unwrap_err();
    assert_eq!(err.to_string(), "4097 binaries asked about: expected at most 4096");
    // The same list does not even decode.
    let payload = Message::EnrichQuery(private(many)).encode_payload().unwrap();
    let err = Message::decode_payload(5, &payload).unwrap_err().to_string();
    assert!(err.contains("expected at most 4096 entries"), "{err}");
    // A smaller minimum is the index's choice.
    let lax = VerdictIndex::new(8, [5; 32]).with_min_prefix_len(1);
    assert!(lax.answer(&private(vec![HashPrefix(vec![0xde])])).is_ok());
}

#[test]
fn the_answer_size_bound_is_an_upper_bound() {
    use privtel_wire::{EnrichQuery, HashPrefix, QueryError, VerdictIndex};
    // Buckets of the longest prefixes and the most padding, real entries
    // with categories: the bound is never below the real size, so an
    // index limited to one byte less than the answer refuses it.
    let mut index = VerdictIndex::new(8, [5; 32]);
    for i in 0..50u8 {
        index.add_binary(privtel_model::BinaryVerdict {
            sha256: privtel_model::Digest::from_bytes([i; 32]),
            threat: privtel_model::ThreatLevel::High,
            category: Some(privtel_model::Category::new("remote-access-tool").unwrap()),
        });
    }
    let binaries: Vec<_> = (0..60u8).map(|i| HashPrefix(vec![i; 32])).collect();
    let domains: Vec<_> = (0..60u8).map(|i| HashPrefix(vec![i; 2])).collect();
    let q = EnrichQuery::Private { query_id: u64::MAX, binaries, domains };
    let real = Message::EnrichAnswer(index.answer(&q).unwrap()).encode_payload().unwrap().len() as u32;
    let tight = index.clone().with_max_answer(real - 1);
    assert!(matches!(tight.answer(&q), Err(QueryError::AnswerTooLarge { max, .. }) if max == real - 1));
    // And not far above it: twice the real size is enough.
    assert!(index.with_max_answer(real * 2).answer(&q).is_ok());
}

#[test]
fn a_hello_with_more_list_entries_than_programs_or_versions_is_refused() {
    use privtel_model::{CustomerId, DeviceId, Program};
    use privtel_wire::{Hello, MAX_HELLO_LIST};
    let hello = |versions: usize, consent: usize| {
        let mut h = Hello::new(
            "1.0.0",
            CustomerId::new("acme").unwrap(),
            DeviceId::new("dev-1").unwrap(),
            vec![(Program::AnonymousUsage, true); consent],
            1,
        );
        h.versions = vec![2; versions];
        Message::Hello(h)
    };
    let decode = |m: &Message| Message::decode_payload(m.kind(), &m.encode_payload().unwrap());
    // At the bound: taken, entry for entry.
    let at = hello(MAX_HELLO_LIST, MAX_HELLO_LIST);
    assert_eq!(decode(&at).unwrap(), at);
    // One more in either list: refused from the length prefix, naming the bound.
    for m in [hello(MAX_HELLO_LIST + 1, 1), hello(1, MAX_HELLO_LIST + 1)] {
        let err = decode(&m).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(err.to_string().contains(&format!("at most {MAX_HELLO_LIST} entries")), "{err}");
    }
    // A million consent entries (2 MB, well within a frame): refused just
    // the same, before any entry is decoded.
    let m = hello(1, 1_000_000);
    let payload = m.encode_payload().unwrap();
    assert!(payload.len() > 1_000_000);
    assert!(Message::decode_payload(m.kind(), &payload).is_err());
}

//! Arbitrary bytes as an enrichment query (the payload of kind 5), answered
//! by a small index whose answers may take at most 64 KiB: a typed refusal
//! or an answer that keeps every bound (one bucket or verdict per item, the
//! prefix and padding of every bucket, the size limit); the refusal names
//! no prefix bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_model::{BinaryVerdict, Digest, Domain, DomainVerdict, Reputation, ThreatLevel};
use privtel_wire::{EnrichAnswer, EnrichQuery, MAX_PREFIX_LEN, MAX_QUERY_ITEMS, Message, VerdictIndex};

const MAX_ANSWER: u32 = 64 << 10;
const PAD_TO: usize = 4;

fn index() -> VerdictIndex {
    let mut index = VerdictIndex::new(PAD_TO, [9; 32]).with_max_answer(MAX_ANSWER);
    // A crowded bucket (ab ab ..), and a spread of others.
    for i in 0..300u16 {
        let mut d = [0xab; 32];
        d[2..4].copy_from_slice(&i.to_be_bytes());
        index.add_binary(BinaryVerdict {
            sha256: Digest::from_bytes(d),
            threat: ThreatLevel::High,
            category: None,
        });
        let mut e = [0u8; 32];
        e[..2].copy_from_slice(&i.to_be_bytes());
        index.add_binary(BinaryVerdict::unknown(Digest::from_bytes(e)));
    }
    for name in ["example.com", "example.org", "privtel.example"] {
        index.add_domain(DomainVerdict {
            domain: Domain::new(name).expect("a valid domain"),
            reputation: Reputation::LowRisk,
            category: None,
            hosting_country: None,
        });
    }
    index
}

fuzz_target!(|data: &[u8]| {
    let Ok(Message::EnrichQuery(query)) = Message::decode_payload(5, data) else { return };
    let index = index();
    match index.answer(&query) {
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty() && text.chars().next().is_some_and(|c| !c.is_uppercase()), "{text}");
        }
        Ok(answer) => {
            let msg = Message::EnrichAnswer(answer);
            let payload = msg.encode_payload().expect("an answer encodes");
            assert!(payload.len() <= MAX_ANSWER as usize, "an answer of {} bytes", payload.len());
            let Message::EnrichAnswer(answer) = msg else { unreachable!() };
            match (&query, &answer) {
                (
                    EnrichQuery::Direct { binaries, domains, .. },
                    EnrichAnswer::Direct { binaries: b, domains: d, .. },
                ) => {
                    assert!(binaries.len() <= MAX_QUERY_ITEMS && domains.len() <= MAX_QUERY_ITEMS);
                    assert_eq!((b.len(), d.len()), (binaries.len(), domains.len()));
                    assert!(b.iter().zip(binaries).all(|(v, q)| v.sha256 == *q));
                }
                (
                    EnrichQuery::Private { binaries, domains, .. },
                    EnrichAnswer::Private { binaries: b, domains: d, .. },
                ) => {
                    assert_eq!((b.len(), d.len()), (binaries.len(), domains.len()));
                    for p in binaries.iter().chain(domains) {
                        assert!(
                            (index.min_prefix_len()..=MAX_PREFIX_LEN).contains(&p.0.len()),
                            "a prefix of {} bytes",
                            p.0.len()
                        );
                    }
                    for (bucket, p) in b.iter().zip(binaries) {
                        assert_eq!(&bucket.prefix, p);
                        assert!(!bucket.entries.is_empty() && bucket.entries.len() % PAD_TO == 0);
                        assert!(bucket.entries.iter().all(|e| e.sha256.as_bytes().starts_with(&p.0)));
                    }
                    for (bucket, p) in d.iter().zip(domains) {
                        assert!(!bucket.entries.is_empty() && bucket.entries.len() % PAD_TO == 0);
                        assert!(bucket.entries.iter().all(|e| e.name_sha256.as_bytes().starts_with(&p.0)));
                    }
                }
                _ => panic!("an answer of the other kind"),
            }
        }
    }
});

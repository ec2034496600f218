//! The stored log against the verifier: raw edits, deletions, insertions,
//! reorderings and truncations of the file on disk.

use privtel_access::{
    AccessError, AccessOptions, Action, CHECKPOINT_LEN, Checkpoint, DecodeError, SigningKey, VerifyError,
    consistent, decode_log, encode_log, verify, verify_bytes,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::common::{Fixture, acme, at, busy, frames, grant, jdoe, reopen};

/// A busy log, its checkpoint and its bytes on disk.
fn logged() -> (Fixture, Checkpoint, Vec<u8>) {
    let f = Fixture::new();
    busy(&f);
    let cp = f.access.checkpoint(at(10));
    let bytes = std::fs::read(&f.path).expect("read");
    (f, cp, bytes)
}

#[test]
fn an_untouched_log_verifies_from_its_bytes_and_its_entries() {
    let (f, cp, bytes) = logged();
    let key = f.access.public_key();
    let v = verify_bytes(&bytes, &cp, &key).expect("verifies");
    assert_eq!((v.covered, v.beyond), (cp.size, 0));
    assert_eq!(cp.size, 9);
    let entries = decode_log(&bytes).expect("decodes");
    assert_eq!(encode_log(&entries), bytes, "the decoder is strict: entries re-encode to the stored bytes");
    // A log that grew after the checkpoint still verifies against it.
    let g = grant(&f.access, acme(), &[Action::ReadRecords]);
    f.access.check(g.id, &jdoe(), &acme(), Action::ReadRecords, at(11)).expect("allowed");
    let v = verify(&f.access.entries().expect("entries"), &cp, &key).expect("verifies");
    assert_eq!((v.covered, v.beyond), (9, 2));
}

#[test]
fn editing_one_byte_of_any_entry_on_disk_is_detected_and_refused_at_open() {
    let (f, cp, bytes) = logged();
    let key = f.access.public_key();
    drop(f.access);
    for (offset, len) in frames(&bytes) {
        // The middle of each entry (the detail, a time, a code or a hash).
        let mut edited = bytes.clone();
        edited[offset + len / 2] ^= 0x01;
        assert!(verify_bytes(&edited, &cp, &key).is_err(), "edit at {}", offset + len / 2);
    }
    // An edited entry in the middle: the service refuses to open the log.
    let (offset, len) = frames(&bytes)[3];
    let mut edited = bytes;
    edited[offset + len - 40] ^= 0x20;
    std::fs::write(&f.path, &edited).expect("write");
    assert!(matches!(
        reopen(&f.path, &f.pkcs8, AccessOptions::default()),
        Err(AccessError::Chain(VerifyError::Chain { seq: 4 }) | AccessError::Corrupt(_))
    ));
}

#[test]
fn deleting_inserting_or_reordering_an_entry_is_detected() {
    let (f, cp, bytes) = logged();
    let key = f.access.public_key();
    let fr = frames(&bytes);
    let frame = |i: usize| &bytes[fr[i].0..fr[i].0 + fr[i].1];
    let rebuild = |order: &[usize]| {
        let mut out = bytes[..privtel_access::HEADER_LEN].to_vec();
        for &i in order {
            out.extend_from_slice(frame(i));
        }
        out
    };
    let all: Vec<usize> = (0..fr.len()).collect();
    assert_eq!(rebuild(&all), bytes);
    // Deleted: entry 4 gone.
    let deleted: Vec<usize> = all.iter().copied().filter(|&i| i != 4).collect();
    assert_eq!(
        verify_bytes(&rebuild(&deleted), &cp, &key),
        Err(VerifyError::Sequence { position: 4, found: 5 })
    );
    // Inserted: entry 2 twice.
    let mut inserted = all.clone();
    inserted.insert(3, 2);
    assert_eq!(
        verify_bytes(&rebuild(&inserted), &cp, &key),
        Err(VerifyError::Sequence { position: 3, found: 2 })
    );
    // Reordered: entries 5 and 6 swapped.
    let mut swapped = all;
    swapped.swap(5, 6);
    assert!(verify_bytes(&rebuild(&swapped), &cp, &key).is_err());
    // Renumbered to hide a deletion: the sequence numbers fit, the chain does not.
    let mut entries = decode_log(&bytes).expect("decodes");
    entries.remove(4);
    for (i, e) in entries.iter_mut().enumerate() {
        e.seq = i as u64;
    }
    assert!(matches!(verify(&entries, &cp, &key), Err(VerifyError::Chain { seq: 4 })));
    // An edited entry with every later link recomputed (by someone without
    // the key): the head no longer matches the checkpoint.
    let mut entries = decode_log(&bytes).expect("decodes");
    entries[2].detail = "nothing happened".into();
    for i in 3..entries.len() {
        entries[i].prev_hash = entries[i - 1].hash();
    }
    assert!(matches!(verify(&entries, &cp, &key), Err(VerifyError::Head { size: 9 })));
}

#[test]
fn a_truncated_log_is_detected_against_a_checkpoint() {
    let (f, cp, bytes) = logged();
    let key = f.access.public_key();
    let fr = frames(&bytes);
    // Whole entries cut off the end: the rest is a valid chain, but shorter.
    for keep in [0, 1, fr.len() - 1] {
        let end = if keep == 0 { privtel_access::HEADER_LEN } else { fr[keep - 1].0 + fr[keep - 1].1 };
        assert_eq!(
            verify_bytes(&bytes[..end], &cp, &key),
            Err(VerifyError::Truncated { have: keep as u64, expected: cp.size })
        );
    }
    // Cut inside the last entry: refused at open unless repaired, and the
    // repaired log still fails against the checkpoint.
    drop(f.access);
    let cut = bytes.len() - 10;
    std::fs::write(&f.path, &bytes[..cut]).expect("write");
    assert!(matches!(
        verify_bytes(&bytes[..cut], &cp, &key),
        Err(VerifyError::Decode(DecodeError::Truncated { .. }))
    ));
    let last = fr[fr.len() - 1].0 as u64;
    assert!(
        matches!(reopen(&f.path, &f.pkcs8, AccessOptions::default()), Err(AccessError::TornTail { offset, .. }) if offset == last)
    );
    let repaired =
        reopen(&f.path, &f.pkcs8, AccessOptions::default().with_repair_torn_tail(true)).expect("repaired");
    assert_eq!(repaired.len(), cp.size - 1);
    assert!(matches!(
        verify(&repaired.entries().expect("entries"), &cp, &key),
        Err(VerifyError::Truncated { .. })
    ));
    // Regrown to the same size after the cut: still not the checkpoint's log.
    let g = grant(&repaired, acme(), &[Action::ReadRecords]);
    assert_eq!(g.id.0, cp.size - 1);
    assert_eq!(
        verify(&repaired.entries().expect("entries"), &cp, &key),
        Err(VerifyError::Head { size: cp.size })
    );
}

#[test]
fn checkpoints_are_signed_and_consistent() {
    let (f, earlier, _) = logged();
    let key = f.access.public_key();
    // Bytes round trip; any changed byte fails to decode or to verify.
    let raw = earlier.to_bytes();
    assert_eq!(raw.len(), CHECKPOINT_LEN);
    assert_eq!(Checkpoint::from_bytes(&raw), Ok(earlier));
    let entries = f.access.entries().expect("entries");
    for i in 0..raw.len() {
        let mut bad = raw;
        bad[i] ^= 0x04;
        let ok = Checkpoint::from_bytes(&bad).is_ok_and(|cp| verify(&entries, &cp, &key).is_ok());
        assert!(!ok, "byte {i} of the checkpoint");
    }
    assert!(Checkpoint::from_bytes(&raw[..raw.len() - 1]).is_err());
    // Another key: refused.
    let (other, _) = SigningKey::generate().expect("key");
    assert_eq!(verify(&entries, &earlier, &other.public_key()), Err(VerifyError::Signature));

    // The later log extends the earlier one.
    grant(&f.access, acme(), &[Action::DeleteCustomer]);
    let later = f.access.checkpoint(at(20));
    let now = f.access.entries().expect("entries");
    consistent(&now, &earlier, &later, &key).expect("consistent");
    consistent(&now, &earlier, &earlier, &key).expect("a checkpoint is consistent with itself");
    assert_eq!(
        consistent(&now, &later, &earlier, &key),
        Err(VerifyError::Shrunk { earlier: later.size, later: earlier.size })
    );
    let backdated = SigningKey::from_pkcs8(&f.pkcs8).expect("key").sign(later.size, later.head, at(1));
    assert!(matches!(consistent(&now, &earlier, &backdated, &key), Err(VerifyError::Backdated { .. })));

    // A log rewritten from scratch by the service itself (it holds the key)
    // and signed again is not consistent with what the customer holds.
    let g = tempfile::tempdir().expect("folder");
    let forged = privtel_access::AccessControl::open(
        &g.path().join("access.log"),
        SigningKey::from_pkcs8(&f.pkcs8).expect("key"),
        AccessOptions::default(),
    )
    .expect("open");
    for _ in 0..later.size {
        grant(&forged, acme(), &[Action::ReadRecords]);
    }
    let forged_cp = forged.checkpoint(at(20));
    let forged_entries = forged.entries().expect("entries");
    verify(&forged_entries, &forged_cp, &key).expect("a forged log verifies against its own checkpoint");
    assert_eq!(
        consistent(&forged_entries, &earlier, &forged_cp, &key),
        Err(VerifyError::Head { size: earlier.size })
    );
}

#[test]
fn the_entry_format_is_pinned() {
    // Version 1 of an entry's canonical bytes: a change here breaks every
    // log and checkpoint written before (bump ENTRY_VERSION instead).
    let f = Fixture::new();
    grant(&f.access, acme(), &[Action::ExportPerson]);
    let _ = f.access.check(privtel_access::GrantId(0), &jdoe(), &acme(), Action::ErasePerson, at(1));
    let bytes = f.access.raw().expect("raw");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN);
}

const GOLDEN: &str = concat!(
    "50544143434c4f4700000001", // header: "PTACCLOG", log version 1
    "000000aa010000000000000000000000006b49d200000000000100086f70732e6a646f65000461636d65060000000000",
    "000000000000000000000002000000006b49d20000000000000000006b49ee200000000000085355502d34373131002c",
    "637573746f6d65722061736b656420746f206578706f7274206f6e6520656e6420757365722773206461746100000000",
    "00000000000000000000000000000000000000000000000000000000000000000052010000000000000001000000006b",
    "49d23c000000000300086f70732e6a646f65000461636d65020000000000000000070000867336a5cd043541a434036f",
    "3c7c551830ca1938e44bd89d9317a32711127e80",
);

#[test]
fn any_single_byte_change_of_the_stored_log_is_detected() {
    let (f, cp, bytes) = logged();
    let key = f.access.public_key();
    let mut runner = TestRunner::new(Config { cases: 2_000, ..Config::default() });
    runner
        .run(&(0..bytes.len(), 1u8..=255), |(pos, flip)| {
            let mut changed = bytes.clone();
            changed[pos] ^= flip;
            prop_assert!(
                verify_bytes(&changed, &cp, &key).is_err(),
                "byte {} ^ {:#04x} went unnoticed",
                pos,
                flip
            );
            Ok::<(), TestCaseError>(())
        })
        .expect("every change detected");
    // And exhaustively for one bit of every byte.
    for pos in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[pos] ^= 0x80;
        assert!(verify_bytes(&changed, &cp, &key).is_err(), "byte {pos}");
    }
}

#[test]
fn a_signed_document_verifies_only_as_signed_for_its_kind() {
    let (key, _) = SigningKey::generate().unwrap();
    let public = key.public_key();
    let receipt = br#"{"customer":"acme","records":3}"#;
    let sig = key.sign_document("deletion-receipt", receipt);
    assert!(public.verifies_document("deletion-receipt", receipt, &sig));
    assert!(!public.verifies_document("copy-manifest", receipt, &sig), "another kind");
    let mut edited = receipt.to_vec();
    edited[25] = b'4';
    assert!(!public.verifies_document("deletion-receipt", &edited, &sig), "an edited document");
    assert!(!public.verifies_document("deletion-receipt", receipt, &sig[..63]), "a cut signature");
    let (other, _) = SigningKey::generate().unwrap();
    assert!(!other.public_key().verifies_document("deletion-receipt", receipt, &sig), "another key");
}

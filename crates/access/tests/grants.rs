//! Grants and checks: refused without a valid grant, every answer logged.

use privtel_access::{
    AccessError, AccessOptions, Action, DenyReason, EntryKind, GrantError, GrantId, Operator, Outcome, Scope,
};
use privtel_model::Duration;

use crate::common::{Fixture, acme, at, globex, grant, jdoe, reopen, request, t0};

/// The last entry of the log.
fn last(f: &Fixture) -> privtel_access::Entry {
    f.access.entries().expect("entries").pop().expect("an entry")
}

#[test]
fn a_request_breaking_the_rules_is_refused_and_logged_without_its_words() {
    let f = Fixture::new();
    let secret = "user alice@example.com complained";
    let cases: Vec<(privtel_access::GrantRequest, GrantError)> = vec![
        (
            privtel_access::GrantRequest {
                justification: "  ".into(),
                ..request(acme(), &[Action::ExportPerson], 60)
            },
            GrantError::EmptyJustification,
        ),
        (
            privtel_access::GrantRequest {
                ticket: String::new(),
                justification: secret.into(),
                ..request(acme(), &[Action::ExportPerson], 60)
            },
            GrantError::EmptyTicket,
        ),
        (request(acme(), &[], 60), GrantError::EmptyScope),
        (
            request(acme(), &[Action::ExportPerson], -1),
            GrantError::ExpiresBeforeStart { starts: t0(), expires: at(-1) },
        ),
        (
            request(acme(), &[Action::ExportPerson], 0),
            GrantError::ExpiresBeforeStart { starts: t0(), expires: t0() },
        ),
        (
            request(acme(), &[Action::ExportPerson], 8 * 60 + 1),
            GrantError::TooLong { requested_secs: (8 * 60 + 1) * 60, max_secs: 8 * 3600 },
        ),
    ];
    for (i, (req, expected)) in cases.into_iter().enumerate() {
        let err = f.access.grant(req, t0()).expect_err("refused");
        match err {
            AccessError::Grant(e) => {
                assert_eq!(e, expected);
                let message = e.to_string();
                assert!(message.contains("expected"), "{message}");
                assert!(!message.contains("alice") && message.starts_with(char::is_lowercase), "{message}");
            }
            other => panic!("{other}"),
        }
        let e = last(&f);
        assert_eq!(e.seq, i as u64);
        assert_eq!((e.kind, e.outcome), (EntryKind::Grant, Outcome::Refused(DenyReason::InvalidRequest)));
        assert!(e.terms.is_none() && !e.detail.contains("alice"));
        assert!(f.access.grant_of(e.grant).is_none());
    }
    assert!(!String::from_utf8_lossy(&f.access.raw().expect("raw")).contains("alice"));
    // Exactly the maximum is allowed.
    let g = f.access.grant(request(acme(), &[Action::ExportPerson], 8 * 60), t0()).expect("8 h");
    assert_eq!(g.expires, at(8 * 60));
}

#[test]
fn the_maximum_is_configurable() {
    let f = Fixture::new();
    drop(f.access);
    let access =
        reopen(&f.path, &f.pkcs8, AccessOptions::default().with_max_grant(Duration::hours(1))).expect("open");
    assert_eq!(access.options().max_grant, Duration::hours(1));
    assert!(matches!(
        access.grant(request(acme(), &[Action::ExportPerson], 61), t0()),
        Err(AccessError::Grant(GrantError::TooLong { max_secs: 3600, .. }))
    ));
    assert!(access.grant(request(acme(), &[Action::ExportPerson], 60), t0()).is_ok());
}

#[test]
fn an_action_without_a_valid_grant_is_refused_and_logged() {
    let f = Fixture::new();
    let g = grant(&f.access, acme(), &[Action::ExportPerson]);
    let other = Operator::new("ops.mallory").expect("operator");
    let cases = [
        (GrantId(999), jdoe(), acme(), Action::ExportPerson, at(1), DenyReason::NoGrant),
        (g.id, jdoe(), acme(), Action::ExportPerson, at(-1), DenyReason::NotYetValid),
        (g.id, jdoe(), acme(), Action::ExportPerson, at(120), DenyReason::Expired),
        (g.id, jdoe(), acme(), Action::ExportPerson, at(500), DenyReason::Expired),
        (g.id, jdoe(), acme(), Action::ErasePerson, at(1), DenyReason::OutOfScope),
        (g.id, jdoe(), acme(), Action::ReadRecords, at(1), DenyReason::OutOfScope),
        (g.id, jdoe(), globex(), Action::ExportPerson, at(1), DenyReason::OtherCustomer),
        (g.id, other, acme(), Action::ExportPerson, at(1), DenyReason::OtherOperator),
    ];
    for (grant_id, operator, customer, action, now, reason) in cases {
        let denied = f.access.check(grant_id, &operator, &customer, action, now).expect_err("refused");
        assert_eq!((denied.reason, denied.grant, denied.action), (reason, grant_id, action));
        let e = last(&f);
        assert_eq!(Some(e.seq), denied.entry);
        assert_eq!(
            (e.kind, e.outcome, e.action, e.grant, &e.operator, &e.customer, e.at),
            (EntryKind::Check, Outcome::Refused(reason), action, grant_id, &operator, &customer, now)
        );
        assert!(denied.to_string().starts_with(char::is_lowercase));
    }
    // Allowed at the start and just before the expiry, and logged too.
    for now in [t0(), at(119)] {
        let ok = f.access.check(g.id, &jdoe(), &acme(), Action::ExportPerson, now).expect("allowed");
        let e = last(&f);
        assert_eq!((ok.entry(), e.outcome, e.at), (e.seq, Outcome::Allowed, now));
    }
    // The customer sees every one of them, and only its own.
    let mine = f.access.entries_for(&acme()).expect("entries");
    assert_eq!(mine.len(), 1 + 7 + 2);
    assert!(mine.iter().all(|e| e.customer == acme()));
    let theirs = f.access.entries_for(&globex()).expect("entries");
    assert_eq!(theirs.len(), 1, "the attempt on globex's data is listed for globex");
}

#[test]
fn a_revoked_grant_refuses_from_the_next_check_and_after_a_restart() {
    let f = Fixture::new();
    let g = grant(&f.access, acme(), &[Action::ExportPerson, Action::ReadRecords]);
    assert!(f.access.check(g.id, &jdoe(), &acme(), Action::ReadRecords, at(1)).is_ok());
    let boss = Operator::new("ops.lead").expect("operator");
    f.access.revoke(g.id, &boss, at(2)).expect("revoke");
    let e = last(&f);
    assert_eq!((e.kind, e.outcome, &e.operator, e.grant), (EntryKind::Revoke, Outcome::Allowed, &boss, g.id));
    let denied = f.access.check(g.id, &jdoe(), &acme(), Action::ReadRecords, at(2)).expect_err("revoked");
    assert_eq!(denied.reason, DenyReason::Revoked);
    assert!(matches!(
        f.access.revoke(GrantId(77), &boss, at(3)),
        Err(AccessError::UnknownGrant(GrantId(77)))
    ));

    // The log is the truth: reopened, grants and revocations are rebuilt.
    let h = grant(&f.access, acme(), &[Action::ErasePerson]);
    let len = f.access.len();
    drop(f.access);
    let access = reopen(&f.path, &f.pkcs8, AccessOptions::default()).expect("reopen");
    assert_eq!(access.len(), len);
    assert_eq!(access.grant_of(g.id).and_then(|g| g.revoked), Some(at(2)));
    assert_eq!(
        access.check(g.id, &jdoe(), &acme(), Action::ReadRecords, at(4)).expect_err("revoked").reason,
        DenyReason::Revoked
    );
    let again = access.grant_of(h.id).expect("grant");
    assert_eq!(
        (again.scope, again.ticket.as_str(), again.revoked),
        (Scope::of(&[Action::ErasePerson]), "SUP-4711", None)
    );
    assert!(access.check(h.id, &jdoe(), &acme(), Action::ErasePerson, at(4)).is_ok());
    assert_eq!(access.grants_for(&acme()).len(), 2);
    assert!(access.grants_for(&globex()).is_empty());
    // Grant ids are never reused.
    let k = grant(&access, acme(), &[Action::ErasePerson]);
    assert!(k.id > h.id);
}

#[test]
fn a_second_process_cannot_open_the_log() {
    let f = Fixture::new();
    assert!(matches!(reopen(&f.path, &f.pkcs8, AccessOptions::default()), Err(AccessError::Locked)));
}

#[test]
fn codes_are_stable() {
    // Stored in the log: changing one breaks every log written before.
    let actions: Vec<(u8, &str)> = Action::ALL.iter().map(|a| (a.code(), a.name())).collect();
    assert_eq!(
        actions,
        [
            (1, "export-person"),
            (2, "erase-person"),
            (3, "copy-customer"),
            (4, "delete-customer"),
            (5, "read-records"),
            (6, "manage-grants"),
            (7, "end-user-requests"),
            (8, "manage-keys")
        ]
    );
    let reasons: Vec<u8> = DenyReason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(reasons, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(Scope::of(&[Action::ExportPerson, Action::ManageGrants]).bits(), 0b100_0010);
    assert_eq!(Scope::from_bits(1), None, "bit 0 is no action");
    assert_eq!(Scope::from_bits(1 << 9), None);
    for a in Action::ALL {
        assert_eq!(Action::from_code(a.code()), Some(a));
        assert_eq!(Action::from_name(a.name()), Some(a));
    }
}

#[test]
fn the_signing_key_is_created_0600_and_read_back() {
    let dir = tempfile::tempdir().expect("folder");
    let path = dir.path().join("access.key");
    let key = privtel_access::SigningKey::load_or_create(&path).expect("created");
    let again = privtel_access::SigningKey::load_or_create(&path).expect("read");
    assert_eq!(key.public_key(), again.public_key());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(&path, b"not a key").expect("write");
    assert!(matches!(
        privtel_access::SigningKey::load_or_create(&path),
        Err(privtel_access::KeyError::Rejected(_))
    ));
}

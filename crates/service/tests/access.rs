//! Administrative actions under access grants: refused without a valid
//! grant, every one logged, the log naming no person.

use std::sync::{Arc, Mutex};

use privtel_access::{
    AccessControl, AccessOptions, Action, DenyReason, EntryKind, GrantId, GrantRequest, Operator, Outcome,
    Scope, SigningKey, verify_bytes,
};
use privtel_model::{Duration, Timestamp};
use privtel_service::{AdminError, Service, Settings};
use privtel_store::{EngineOptions, ErasureRequest, SqliteEngine};
use privtel_wire::VerdictIndex;

use crate::{SETTINGS, batch, connect, events_of, hello, id, now, peer, send};

fn at(hours: i64) -> Timestamp {
    now().checked_add(Duration::hours(hours)).unwrap()
}

fn grant(access: &AccessControl, customer: &str, scope: &[Action], starts: Timestamp) -> GrantId {
    let request = GrantRequest {
        operator: Operator::new("ops.jdoe").unwrap(),
        customer: id(customer),
        justification: "the customer forwarded an end user's request".into(),
        ticket: "DSAR-17".into(),
        scope: Scope::of(scope),
        starts,
        expires: starts.checked_add(Duration::hours(2)).unwrap(),
    };
    access.grant(request, now()).unwrap().id
}

#[test]
fn operators_act_only_under_a_valid_grant_and_every_attempt_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default().secret([5; 32])).unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&lines);
    let service = Service::new(engine, VerdictIndex::new(4, [1; 32]), now)
        .with_settings(Settings::from_toml(SETTINGS).unwrap())
        .with_log(move |l| seen.lock().unwrap().push(l.to_owned()));
    let jdoe = Operator::new("ops.jdoe").unwrap();
    let request = ErasureRequest::new("r-1", id("u-alice"), now());

    // Without access control, audited actions are refused, not done unlogged.
    assert!(matches!(
        service.erase_person_as(&jdoe, GrantId(0), &id("acme"), &request),
        Err(AdminError::NoAccessControl)
    ));

    let (key, _) = SigningKey::generate().unwrap();
    let log_path = dir.path().join("access.log");
    let access = Arc::new(AccessControl::open(&log_path, key, AccessOptions::default()).unwrap());
    let service = Arc::new(service.with_access(Arc::clone(&access)));
    let mut conn = connect(&service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let records = events_of(&service, "u-alice", 0, 5);
    assert_eq!(send(&mut conn, batch(&service, "acme", 1, records)).accepted_up_to, 5);

    let export = grant(&access, "acme", &[Action::ExportPerson], at(-1));
    let expired = grant(&access, "acme", &[Action::ErasePerson], at(-3));
    let globex = grant(&access, "globex", &[Action::ErasePerson], at(-1));
    let held = || service.export_person(&id("acme"), &id("u-alice"), &mut Vec::new()).unwrap();

    // Refused: no grant, expired, out of scope, another customer's,
    // another operator's. Nothing is removed.
    let mallory = Operator::new("ops.mallory").unwrap();
    let refused = [
        (&jdoe, GrantId(99), DenyReason::NoGrant),
        (&jdoe, expired, DenyReason::Expired),
        (&jdoe, export, DenyReason::OutOfScope),
        (&jdoe, globex, DenyReason::OtherCustomer),
        (&mallory, export, DenyReason::OtherOperator),
    ];
    for (operator, grant, reason) in refused {
        match service.erase_person_as(operator, grant, &id("acme"), &request) {
            Err(AdminError::Denied(d)) => assert_eq!(d.reason, reason),
            other => panic!("{other:?}"),
        }
        let last = access.entries().unwrap().pop().unwrap();
        assert_eq!(
            (last.kind, last.action, last.grant, last.outcome, last.at),
            (EntryKind::Check, Action::ErasePerson, grant, Outcome::Refused(reason), now())
        );
    }
    assert_eq!(held(), 5);
    assert_eq!(lines.lock().unwrap().iter().filter(|l| l.starts_with("access refused")).count(), 5);

    // Allowed: the export under its grant, logged before it reads.
    let mut out = Vec::new();
    assert_eq!(service.export_person_as(&jdoe, export, &id("acme"), &id("u-alice"), &mut out).unwrap(), 5);
    let last = access.entries().unwrap().pop().unwrap();
    assert_eq!((last.action, last.outcome), (Action::ExportPerson, Outcome::Allowed));
    // An export under an erasure grant of another customer: refused.
    assert!(matches!(
        service.export_person_as(&jdoe, globex, &id("acme"), &id("u-alice"), &mut Vec::new()),
        Err(AdminError::Denied(_))
    ));

    // And the erasure, under a grant that allows it.
    let erase = grant(&access, "acme", &[Action::ErasePerson], at(0));
    let receipt = service.erase_person_as(&jdoe, erase, &id("acme"), &request).unwrap();
    assert_eq!(receipt.records_removed, 5);
    assert_eq!(held(), 0);

    // The customer lists every access to its data and verifies the log;
    // the log names no person.
    let acme = access.entries_for(&id("acme")).unwrap();
    let checks = acme.iter().filter(|e| e.kind == EntryKind::Check).count();
    assert_eq!(checks, 5 + 1 + 1 + 1, "the five refusals, the export, the refused export, the erasure");
    assert_eq!(access.entries_for(&id("globex")).unwrap().len(), 1, "globex's grant only");
    let raw = std::fs::read(&log_path).unwrap();
    assert!(!raw.windows(7).any(|w| w == b"u-alice"));
    let checkpoint = access.checkpoint(now());
    verify_bytes(&raw, &checkpoint, &access.public_key()).unwrap();
}

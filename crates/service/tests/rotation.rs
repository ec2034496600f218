//! Pseudonym key rotation and unlinking (issue #14 point 8): the customer's
//! key ring rotates between two uploads of the same person; the service
//! files the two pseudonyms apart; export by the person's id finds both
//! while the old key lives and only the new one's once it is destroyed —
//! on demand, or by the schedule once the old records have expired.

use privtel_filter::{Filter, FilterBuilder, KeyRing, Maintenance};
use privtel_model::{EventId, KeyId, Program, Record, RecordBody, Timestamp, UserId};
use privtel_service::{Service, Settings};
use privtel_store::EngineStore as _;
use time::Duration;

use super::{batch, connect, hello, id, now, peer, send, service_with};

const SETTINGS: &str = r#"
[customers.acme]
events_days = 7
objects_days = 7
[customers.acme.pseudonym_keys]
rotate_days = 30
pickup_days = 2
[customers.acme.policy.programs]
support_telemetry = true
[customers.acme.policy.fields]
"event.username" = "pseudonymise"
"#;

fn later(days: i64) -> Timestamp {
    now().checked_add(Duration::days(days)).unwrap()
}

/// The device's filter: the customer's policy under the ring's current key.
fn device_filter(service: &Service, ring: &KeyRing) -> Filter {
    let settings = service.settings();
    let acme = settings.customer(&id("acme")).unwrap();
    FilterBuilder::new()
        .policy(acme.policy().clone())
        .customer(id("acme"))
        .key(ring.current().expect("the ring has a current key"))
        .build()
}

/// The fixtures' support events about `user`, tagged, with event ids from
/// `first_id` on, through `filter`.
fn events(filter: &Filter, user: &UserId, tag: &str, first_id: u128) -> Vec<Record> {
    let mut records: Vec<Record> = privtel_testkit::fixtures::records(tag)
        .into_iter()
        .filter(|r| r.program == Program::SupportTelemetry && matches!(r.body, RecordBody::Event(_)))
        .collect();
    for (n, r) in (first_id..).zip(&mut records) {
        if let RecordBody::Event(e) = &mut r.body {
            e.user = Some(user.clone());
            e.id = EventId::from_u128(n);
        }
    }
    let (out, _) = filter.apply_batch(records);
    out.into_iter().map(privtel_filter::Filtered::into_record).collect()
}

fn upload(service: &std::sync::Arc<Service>, first_seq: u64, records: Vec<Record>) {
    let mut conn = connect(service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let n = records.len() as u64;
    let ack = send(&mut conn, batch(service, "acme", first_seq, records));
    assert_eq!(ack.accepted_up_to, first_seq + n - 1, "{ack:?}");
}

/// Every record the customer's ring can still find for `user`, and the
/// text of their export.
fn export_by_user(service: &Service, filter: &Filter, ring: &KeyRing, user: &UserId) -> (u64, String) {
    let engine = service.engine();
    let mut out = Vec::new();
    let mut n = 0;
    for filed in filter.user_keys(ring, user) {
        n += engine.export_person(&id("acme"), &filed, &mut out).unwrap();
    }
    (n, String::from_utf8(out).unwrap())
}

/// Two uploads of one person with a rotation between them; returns the
/// service, the ring, the filter of the second upload and how many records
/// each upload stored.
fn rotated_uploads(dir: &std::path::Path) -> (std::sync::Arc<Service>, KeyRing, Filter, usize, usize) {
    let service = service_with(dir, Settings::from_toml(SETTINGS).unwrap());
    let schedule = service.settings().customer(&id("acme")).unwrap().key_schedule();
    assert_eq!(schedule.rotate_every, Some(Duration::days(30)));
    assert_eq!(schedule.keep_after_retired, Duration::days(9), "7 days of records + 2 of pickup");
    let alice = id::<UserId>("u-1042");

    let mut ring = KeyRing::new();
    let made = ring.maintain(now(), schedule.rotate_every, schedule.keep_after_retired, || [7; 32]).unwrap();
    assert_eq!(made.rotated, Some(KeyId::new(1)));
    let before = device_filter(&service, &ring);
    let first = events(&before, &alice, "BEFORECANARY", 100);
    assert!(!first.is_empty());
    upload(&service, 1, first.clone());

    // The schedule comes due: a new key; the device picks up its id.
    let made = ring.maintain(later(30), schedule.rotate_every, schedule.keep_after_retired, || [8; 32]);
    assert_eq!(made.unwrap(), Maintenance { rotated: Some(KeyId::new(2)), destroyed: vec![] });
    let after = device_filter(&service, &ring);
    let second = events(&after, &alice, "AFTERCANARY", 200);
    upload(&service, 1 + first.len() as u64, second.clone());

    // The two pseudonyms differ and carry their key ids; the service keeps
    // each upload under its own.
    let old = before.user_key(&alice).unwrap();
    let new = after.user_key(&alice).unwrap();
    assert_ne!(old, new);
    assert_eq!(old.pseudonym().map(|p| p.key_id()), Some(KeyId::new(1)));
    assert_eq!(new.pseudonym().map(|p| p.key_id()), Some(KeyId::new(2)));
    assert!(first.iter().all(|r| r.body.user() == Some(&old)));
    assert!(second.iter().all(|r| r.body.user() == Some(&new)));
    {
        let engine = service.engine();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(engine.export_person(&id("acme"), &old, &mut a).unwrap() as usize, first.len());
        assert_eq!(engine.export_person(&id("acme"), &new, &mut b).unwrap() as usize, second.len());
        let (a, b) = (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        assert!(a.contains("BEFORECANARY") && !a.contains("AFTERCANARY"), "kept apart");
        assert!(b.contains("AFTERCANARY") && !b.contains("BEFORECANARY"), "kept apart");
    }

    // While the old key lives, export by the person finds both uploads.
    assert_eq!(after.user_keys(&ring, &alice), vec![old, new]);
    let (n, text) = export_by_user(&service, &after, &ring, &alice);
    assert_eq!(n as usize, first.len() + second.len());
    assert!(text.contains("BEFORECANARY") && text.contains("AFTERCANARY"));
    assert!(!text.contains("u-1042"), "the service never held the id");
    (service, ring, after, first.len(), second.len())
}

#[test]
fn a_destroyed_key_unlinks_the_person_s_earlier_pseudonyms() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut ring, filter, first, second) = rotated_uploads(dir.path());
    let alice = id::<UserId>("u-1042");

    // The customer destroys the old key on demand.
    assert_eq!(ring.destroy(KeyId::new(1), later(31)), Ok(true));
    assert_eq!(filter.user_keys(&ring, &alice).len(), 1);
    let (n, text) = export_by_user(&service, &filter, &ring, &alice);
    assert_eq!(n as usize, second);
    assert!(text.contains("AFTERCANARY") && !text.contains("BEFORECANARY"));
    // The old records stay until their TTL, unlinkable to the person.
    assert_eq!(service.engine().record_count().unwrap() as usize, first + second);
    // No key of the ring computes the old pseudonym any more, even given
    // the person's id: only the destroyed key could.
    let old_prefix = "k1:";
    assert!(filter.user_keys(&ring, &alice).iter().all(|u| !u.as_str().starts_with(old_prefix)));
}

#[test]
fn the_schedule_destroys_an_old_key_once_its_records_have_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut ring, filter, _, _) = rotated_uploads(dir.path());
    let alice = id::<UserId>("u-1042");
    let schedule = service.settings().customer(&id("acme")).unwrap().key_schedule();

    // Not yet: records made up to the pickup time after retirement may
    // still be held.
    let early = ring.maintain(later(38), schedule.rotate_every, schedule.keep_after_retired, || [9; 32]);
    assert_eq!(early.unwrap(), Maintenance::default());
    // At retirement + retention + pickup the old records have expired (the
    // sweep removes them) and the key goes.
    let due = later(39);
    let swept: u64 = service.sweep(due).unwrap().iter().map(|(_, r)| r.events).sum();
    assert!(swept > 0);
    let made = ring.maintain(due, schedule.rotate_every, schedule.keep_after_retired, || [9; 32]).unwrap();
    assert_eq!(made.destroyed, vec![KeyId::new(1)]);
    assert!(ring.key(KeyId::new(1)).is_none());
    assert_eq!(filter.user_keys(&ring, &alice).len(), 1);
    assert_eq!(export_by_user(&service, &filter, &ring, &alice).0, 0, "both uploads have expired by then");
}

//! Retention properties: the boundary to the second, and monotonicity in
//! `now`.

use privtel_model::Timestamp;
use privtel_retention::{RecordClass, RetentionPolicy, Ttl};
use proptest::prelude::*;
use time::Duration;

fn policy() -> impl Strategy<Value = RetentionPolicy> {
    (prop::sample::select(vec![Ttl::DAYS_7, Ttl::DAYS_14, Ttl::DAYS_30]), 0i64..100_000_000, 1i64..200)
        .prop_map(|(events, custom_secs, days)| RetentionPolicy {
            events,
            objects: Ttl::custom(Duration::seconds(custom_secs)),
            device_inactivity: Duration::days(days),
            ..RetentionPolicy::default()
        })
}

proptest! {
    #[test]
    fn expired_exactly_when_age_is_past_the_ttl(p in policy(), t in privtel_testkit::timestamp(), age_ns in -10_000_000_000_000_000i64..10_000_000_000_000_000) {
        for class in [RecordClass::Event, RecordClass::Object] {
            let Some(now) = t.checked_add(Duration::nanoseconds(age_ns)) else { continue };
            let age = now - t;
            prop_assert_eq!(p.is_expired(class, t, now), age > p.ttl(class).duration());
            // The boundary, to the second and to the nanosecond.
            let ttl = p.ttl(class).duration();
            if let Some(edge) = t.checked_add(ttl) {
                prop_assert!(!p.is_expired(class, t, edge));
                if let Some(after) = edge.checked_add(Duration::NANOSECOND) {
                    prop_assert!(p.is_expired(class, t, after));
                }
                if let Some(before) = edge.checked_sub(Duration::SECOND) {
                    prop_assert!(!p.is_expired(class, t, before));
                }
                prop_assert_eq!(p.expires_at(class, t), Some(edge));
            }
        }
    }

    #[test]
    fn expiry_is_monotonic_in_now(p in policy(), t in privtel_testkit::timestamp(), a in 0i64..1_000_000_000, b in 0i64..1_000_000_000) {
        let (Some(n1), Some(n2)) = (t.checked_add(Duration::seconds(a.min(b))), t.checked_add(Duration::seconds(a.max(b)))) else { return Ok(()) };
        for class in [RecordClass::Event, RecordClass::Object] {
            prop_assert!(!p.is_expired(class, t, n1) || p.is_expired(class, t, n2));
        }
        prop_assert!(!p.device_inactive(t, n1) || p.device_inactive(t, n2));
        prop_assert!(!p.erasure_overdue(t, n1) || p.erasure_overdue(t, n2));
    }

    #[test]
    fn cutoffs_agree_with_the_per_record_rule(p in policy(), t in privtel_testkit::timestamp(), now in privtel_testkit::timestamp()) {
        let c = p.cutoffs(now);
        prop_assert_eq!(t < c.events_before, p.is_expired(RecordClass::Event, t, now));
        prop_assert_eq!(t < c.objects_before, p.is_expired(RecordClass::Object, t, now));
        prop_assert_eq!(t < c.devices_seen_before, p.device_inactive(t, now));
    }
}

/// (ttl, age, expired) at the edges.
const EDGES: &[(Ttl, i64, bool)] = &[
    (Ttl::DAYS_7, 7 * 86_400 - 1, false),
    (Ttl::DAYS_7, 7 * 86_400, false),
    (Ttl::DAYS_7, 7 * 86_400 + 1, true),
    (Ttl::DAYS_14, 14 * 86_400, false),
    (Ttl::DAYS_14, 14 * 86_400 + 1, true),
    (Ttl::DAYS_30, 30 * 86_400, false),
    (Ttl::DAYS_30, 30 * 86_400 + 1, true),
    (Ttl::DAYS_30, -5, false),
];

#[test]
fn edges_to_the_second() {
    let t = Timestamp::from_unix_seconds(1_795_752_000).unwrap();
    for &(ttl, age, expired) in EDGES {
        let p = RetentionPolicy { events: ttl, ..RetentionPolicy::default() };
        let now = t.checked_add(Duration::seconds(age)).unwrap();
        assert_eq!(p.is_expired(RecordClass::Event, t, now), expired, "{ttl:?} age {age}");
    }
}

#[test]
fn defaults_are_the_design_defaults() {
    let p = RetentionPolicy::default();
    assert_eq!(p.events.days(), 30);
    assert_eq!(p.objects.days(), 30);
    assert_eq!(p.device_inactivity, Duration::days(45));
    assert_eq!(p.erasure_deadline, Duration::hours(24));
    let t = Timestamp::from_unix_seconds(0).unwrap();
    assert!(!p.device_inactive(t, t.checked_add(Duration::days(45)).unwrap()));
    assert!(p.device_inactive(t, t.checked_add(Duration::days(45) + Duration::SECOND).unwrap()));
    assert!(p.erasure_overdue(t, t.checked_add(Duration::hours(25)).unwrap()));
    assert_eq!(Ttl::custom(Duration::seconds(-3)).duration(), Duration::ZERO);
    // A huge TTL never panics: nothing expires.
    let forever = RetentionPolicy { events: Ttl::custom(Duration::MAX), ..p };
    assert!(!forever.is_expired(RecordClass::Event, t, t));
}

//! Pseudonyms: stable for one key, different across keys, customers and
//! fields unless linked, and stamped with the key id.

use privtel_filter::{Filter, FilterBuilder, Policy, PseudonymKey, RedactionReport, Rule};
use privtel_model::{CustomerId, KeyId, Personal, Program, Pseudonym, Record, RecordBody, fields};

fn filter(customer: &str, key: u32, secret: u8, links: &str) -> Filter {
    let policy = Policy::from_toml(&format!(
        "{links}[programs]\npersonalised_usage = true\n[fields]\n\"user.email\" = \"pseudonymise\"\n\"user.upn\" = \"pseudonymise\"\n\"licence_session.email\" = \"pseudonymise\"\n"
    ))
    .unwrap();
    FilterBuilder::new()
        .policy(policy)
        .customer(CustomerId::new(customer).unwrap())
        .key(PseudonymKey::new(KeyId::new(key), [secret; 32]))
        .build()
}

/// (user.email, user.upn, licence_session.email) pseudonyms of the fixture
/// records, whose three fields hold `alice-T@corp.example` (email holds
/// `alice.martin-T@…`).
fn tokens(f: &Filter, email: &str) -> (Pseudonym, Pseudonym, Pseudonym) {
    let mut records = privtel_testkit::fixtures::records("t");
    let mut report = RedactionReport::default();
    let mut user = None;
    let mut licence = None;
    for r in records.drain(..) {
        let r = match r.body {
            RecordBody::User(mut u) => {
                u.email = Personal::Clear(email.to_owned());
                u.upn = Personal::Clear(email.to_owned());
                Record { program: r.program, body: RecordBody::User(u) }
            }
            RecordBody::Event(mut e) => {
                if let privtel_model::EventBody::LicenceSession(l) = &mut e.body {
                    l.email = Personal::Clear(email.to_uppercase());
                }
                Record { program: r.program, body: RecordBody::Event(e) }
            }
            _ => continue,
        };
        match f.apply(r, &mut report).map(|r| r.into_record().body) {
            Some(RecordBody::User(u)) => user = Some(u),
            Some(RecordBody::Event(e)) => {
                if let privtel_model::EventBody::LicenceSession(l) = e.body {
                    licence = Some(l);
                }
            }
            _ => {}
        }
    }
    assert_eq!(report.count(Program::PersonalisedUsage, &fields::USER_EMAIL, Rule::Pseudonymised), 1);
    let p = |v: &Personal<String>| match v {
        Personal::Pseudonym(p) => *p,
        other => panic!("{other:?}"),
    };
    let (user, licence) = (user.unwrap(), licence.unwrap());
    (p(&user.email), p(&user.upn), p(&licence.email))
}

#[test]
fn stable_under_one_key_and_stamped_with_its_id() {
    let f = filter("acme", 7, 1, "");
    let a = tokens(&f, "alice@corp.example");
    assert_eq!(a, tokens(&f, "alice@corp.example"));
    assert_eq!(a.0.key_id(), KeyId::new(7));
    assert_ne!(a.0, tokens(&f, "bob@corp.example").0);
    // Rebuilding the filter with the same key gives the same tokens.
    assert_eq!(a, tokens(&filter("acme", 7, 1, ""), "alice@corp.example"));
}

#[test]
fn differ_across_keys_customers_and_fields() {
    let base = tokens(&filter("acme", 7, 1, ""), "alice@corp.example");
    let rotated = tokens(&filter("acme", 8, 2, ""), "alice@corp.example");
    assert_ne!(base.0.token(), rotated.0.token());
    assert_eq!(rotated.0.key_id(), KeyId::new(8));
    let other_customer = tokens(&filter("globex", 7, 1, ""), "alice@corp.example");
    assert_ne!(base.0.token(), other_customer.0.token(), "same secret, other customer");
    // Same value in two unlinked fields: two tokens.
    assert_ne!(base.0.token(), base.1.token());
    assert_ne!(base.0.token(), base.2.token());
}

#[test]
fn linked_fields_share_tokens_and_emails_fold_case() {
    let linked = tokens(
        &filter("acme", 7, 1, "links = [[\"user.email\", \"licence_session.email\"]]\n"),
        "alice@corp.example",
    );
    // The licence email was upper-cased: emails are compared case-folded.
    assert_eq!(linked.0, linked.2);
    assert_ne!(linked.0, linked.1, "user.upn is not in the group");
}

#[test]
fn without_a_key_pseudonymised_fields_are_withheld() {
    let policy = Policy::from_toml(
        "[programs]\npersonalised_usage = true\n[fields]\n\"user.email\" = \"pseudonymise\"\n",
    )
    .unwrap();
    let f = FilterBuilder::new().policy(policy).build();
    let (out, report) = f.apply_batch(privtel_testkit::fixtures::records("t"));
    let user = out.iter().find_map(|r| match &r.body {
        RecordBody::User(u) => Some(u),
        _ => None,
    });
    assert!(user.unwrap().email.is_withheld());
    assert_eq!(report.count(Program::PersonalisedUsage, &fields::USER_EMAIL, Rule::Fallback), 1);
}

#[test]
fn the_key_never_prints() {
    let key = PseudonymKey::new(KeyId::new(3), [0xab; 32]);
    let debug = format!("{key:?}");
    assert_eq!(debug, "PseudonymKey(k3, <secret>)");
    let f = FilterBuilder::new().key(key).build();
    assert!(!format!("{f:?}").contains("171"), "no secret byte in the filter's debug output");
}

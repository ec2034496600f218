//! Arbitrary records (decoded from the fuzz input) through filters of three
//! policies: never a panic, and every personal value that comes out is in
//! the form its policy asked for, or withheld; the record is admissible
//! under the same policy (an event's instant truncated to the policy's
//! unit, toward the past).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use privtel_filter::{Filter, FilterBuilder, Policy, PseudonymKey, RedactionReport};
use privtel_model::{CustomerId, KeyId, Record, Treatment, VisitPersonal};

fn filters() -> &'static [Filter] {
    static FILTERS: OnceLock<Vec<Filter>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let everything_generalised = "[programs]\nenrichment = true\npersonalised_usage = true\n[fields]\n\
            \"web_request.url\" = \"generalise\"\n\"user.email\" = \"generalise\"\n\"crash_report.message\" = \"generalise\"\n\
            \"device.ip\" = \"generalise\"\n\"licence_session.geohash\" = \"generalise\"\n";
        let clear = "[programs]\nenrichment = true\npersonalised_usage = true\n[fields]\n\"user.email\" = \"clear\"\n\
            \"execution.username\" = \"pseudonymise\"\n";
        ["", everything_generalised, clear]
            .iter()
            .map(|text| {
                FilterBuilder::new()
                    .policy(Policy::from_toml(text).expect("fixed policies are valid"))
                    .customer(CustomerId::new("fuzz").expect("valid"))
                    .key(PseudonymKey::new(KeyId::new(1), [3; 32]))
                    .build()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
    let Ok((record, _)) = bincode::serde::decode_from_slice::<Record, _>(data, config) else { return };
    for filter in filters() {
        let mut report = RedactionReport::default();
        if let Some(out) = filter.apply(record.clone(), &mut report) {
            let mut out = out.into_record();
            out.visit_personal(&mut |f| {
                let asked = filter.policy().treatment(f.spec);
                let got = f.value.form().treatment();
                assert!(got == asked || got == Treatment::Withhold, "{}: asked {asked}, got {got}", f.spec.path);
            });
            assert_eq!(filter.policy().admits(&mut out), Ok(()));
            if let (privtel_model::RecordBody::Event(before), privtel_model::RecordBody::Event(after)) =
                (&record.body, &out.body)
            {
                assert!(after.recorded_at <= before.recorded_at, "truncated toward the past");
            }
            assert!(bincode::serde::encode_to_vec(&out, config).is_ok());
        }
    }
});

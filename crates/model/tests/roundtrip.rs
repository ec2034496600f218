//! Every model type survives serde JSON and bincode (decoded with a size
//! limit) unchanged.

use std::fmt::Debug;

use privtel_testkit as tk;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The limit every bincode decode in privtel goes through.
const LIMIT: usize = 1 << 20;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
    prop_assert_eq!(&back, value, "json: {}", json);

    let bin = bincode::serde::encode_to_vec(value, bincode_config())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (back, used): (T, usize) = bincode::serde::decode_from_slice(&bin, bincode_config())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(used, bin.len(), "bincode left bytes unread");
    prop_assert_eq!(&back, value);
    Ok(())
}

macro_rules! round_trips {
    ($($name:ident: $strategy:expr;)*) => {
        proptest! {
            $(
                #[test]
                fn $name(v in $strategy) {
                    round_trip(&v)?;
                }
            )*
        }
    };
}

round_trips! {
    customer_id: tk::customer_id();
    device_id: tk::device_id();
    user_id: tk::user_id();
    event_id: tk::event_id();
    batch_id: tk::batch_id();
    binary_id: tk::binary_id();
    domain_id: tk::domain_id();
    timestamp: tk::timestamp();
    duration: tk::duration();
    digest: tk::digest();
    hash_alg: tk::hash_alg();
    domain: tk::domain();
    country_code: tk::country_code();
    geohash: tk::geohash();
    category: tk::category();
    score: tk::score();
    program: tk::program();
    treatment: tk::treatment();
    data_category: tk::data_category();
    key_id: tk::key_id();
    pseudonym: tk::pseudonym();
    ip_prefix: tk::ip_prefix();
    time_unit: tk::time_unit();
    time_bucket: tk::time_bucket();
    duration_bucket: tk::duration_bucket();
    generalised: tk::generalised();
    personal_text: tk::personal_text();
    os_info: tk::os_info();
    device_type: tk::device_type();
    device: tk::device();
    user: tk::user();
    privileges: tk::privileges();
    arch: tk::arch();
    executable_format: tk::executable_format();
    binary: tk::binary();
    application: tk::application();
    package_manager: tk::package_manager();
    package: tk::package();
    threat_level: tk::threat_level();
    reputation: tk::reputation();
    binary_verdict: tk::binary_verdict();
    domain_verdict: tk::domain_verdict();
    binary_execution: tk::binary_execution();
    web_request: tk::web_request();
    login: tk::login();
    licence_session: tk::licence_session();
    event_body: tk::event_body();
    event: tk::event();
    record_body: tk::record_body();
    record: tk::record();
}

proptest! {
    /// Text forms parse back to the same value.
    #[test]
    fn display_from_str_round_trip(
        id in tk::event_id(),
        d in tk::digest(),
        t in tk::timestamp(),
        p in tk::pseudonym(),
        c in tk::country_code(),
        dom in tk::domain(),
    ) {
        prop_assert_eq!(id.to_string().parse::<privtel_model::EventId>().unwrap(), id);
        prop_assert_eq!(d.to_string().parse::<privtel_model::Digest>().unwrap(), d);
        prop_assert_eq!(t.to_string().parse::<privtel_model::Timestamp>().unwrap(), t);
        prop_assert_eq!(p.to_string().parse::<privtel_model::Pseudonym>().unwrap(), p);
        prop_assert_eq!(c.to_string().parse::<privtel_model::CountryCode>().unwrap(), c);
        prop_assert_eq!(dom.to_string().parse::<privtel_model::Domain>().unwrap(), dom);
    }
}

#[test]
fn every_fixture_round_trips() {
    let mut records = privtel_testkit::fixtures::records("fixture");
    records.push(privtel_testkit::fixtures::interaction());
    for record in records {
        round_trip(&record).unwrap();
    }
}

#[test]
fn json_uses_readable_forms() {
    let records = privtel_testkit::fixtures::records("x");
    let json = serde_json::to_string(&records).unwrap();
    assert!(json.contains(privtel_testkit::fixtures::EMPTY_SHA256), "hex digests");
    assert!(json.contains("2026-11-27T04:00:00Z"), "rfc 3339 instants");
    assert!(json.contains("\"trustworthy\""), "verdict words");
    assert!(json.contains("\"anonymous_usage\""), "program names");
}

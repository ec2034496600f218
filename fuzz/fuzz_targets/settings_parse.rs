//! Arbitrary text as the service's settings file: settings or an error;
//! settings that load keep only the TTLs the design allows, and each
//! customer's policy promises (in its manifest's retention) what the
//! service sweeps with, and keeps on what its licence requires.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_service::{Settings, SettingsError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Settings::from_toml(text) {
        Ok(settings) => {
            for c in settings.customers() {
                let r = c.retention();
                for days in [r.events.days(), r.objects.days()] {
                    assert!(matches!(days, 7 | 14 | 30), "a ttl of {days} days");
                }
                assert_eq!(i64::from(c.policy().retention.events), r.events.days());
                assert_eq!(i64::from(c.policy().retention.objects), r.objects.days());
                assert_eq!(c.policy_digest(), c.policy().digest());
                // The licence rules hold for every customer that loads.
                assert_eq!(c.policy().check_licence(&c.licence()), Ok(()));
            }
        }
        Err(SettingsError::Syntax { line, .. }) => {
            assert!(line <= text.lines().count() + 1, "line {line} beyond the text");
        }
        Err(e) => assert!(e.to_string().starts_with("settings"), "{e}"),
    }
});

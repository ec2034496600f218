//! Arbitrary text as a policy file: a policy or an error that names a line
//! within the text; a policy that loads gives a manifest, and its
//! interactions take any text as a host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_filter::{Error, Manifest, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Policy::from_toml(text) {
        Ok(policy) => {
            let m = Manifest::from_policy(&policy);
            assert_eq!(m.programs.len(), 7);
            assert_eq!(m.interactions.len(), policy.interactions.len());
            // The same text as a host a browser gives a recorder: an
            // application it defines, or none, never a panic.
            if let Some(app) = policy.interactions.application(text) {
                assert!(policy.interactions.iter().any(|(d, _)| *d == app));
            }
            let _ = m.to_markdown();
        }
        Err(e) => {
            let line = match &e {
                Error::Syntax { line, .. }
                | Error::UnknownField { line, .. }
                | Error::UnknownProgram { line, .. }
                | Error::UnknownTreatment { line, .. }
                | Error::CannotGeneralise { line, .. }
                | Error::Required { line, .. }
                | Error::Setting { line, .. }
                | Error::Interaction { line, .. } => *line,
                _ => 0,
            };
            assert!(line <= text.lines().count() + 1, "line {line} beyond the text: {e}");
            assert!(e.to_string().starts_with("policy line "));
        }
    }
});

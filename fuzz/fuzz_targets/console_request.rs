//! A request line as anyone who can reach the administrative socket could
//! write it (before their token is checked). Typed errors or a request,
//! never a panic; an error is a short message, never the line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_model::Timestamp;
use privtel_service::console::Request;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_unix_seconds(1_800_000_000).expect("a time");
    match Request::parse(data, now) {
        Ok((_, request)) => {
            let _ = request.op();
        }
        Err(e) => {
            // Errors name fields and expectations: short, never the line.
            let text = e.to_string();
            assert!(text.len() < 160, "{text}");
        }
    }
});

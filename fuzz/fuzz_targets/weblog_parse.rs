//! Arbitrary text as a web log: never a panic; every line is a record, a
//! skipped problem naming a line within the text, or a blank or comment;
//! each record's host is a host (no path, query or credentials).
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_agent::parse_web_log;
use privtel_model::{DeviceId, EventBody, Personal, RecordBody};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let device = DeviceId::new("fuzz").unwrap();
    let (records, report) = parse_web_log(text, "f.log", &device);
    assert!(records.len() as u64 + report.skipped <= report.lines);
    assert_eq!(report.records, records.len() as u64);
    for p in &report.problems {
        assert!(p.line >= 1 && p.line <= report.lines, "line {} of {}", p.line, report.lines);
    }
    for r in &records {
        let RecordBody::Event(e) = &r.body else { panic!("a web log yields events") };
        let EventBody::WebRequest(w) = &e.body else { panic!("a web log yields web requests") };
        let Personal::Clear(host) = &w.host else { panic!("the collector fills the host in clear") };
        assert!(!host.contains(['/', '?', '#', '@']), "host {host:?} is not a host");
    }
});

//! The agent's pure parts: the enrichment schedule under an injected clock,
//! and web-log parsing.

use privtel::agent::{Schedule, parse_web_log};
use privtel::model::{DeviceId, Timestamp};
use time::Duration;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_795_752_000 + secs).unwrap()
}

#[test]
fn the_schedule_follows_the_design() {
    let s = Schedule::default();
    // First upload 5 minutes after start-up, to the second.
    assert!(!s.first_upload_due(t(0), t(299)));
    assert!(s.first_upload_due(t(0), t(300)));
    // The demo's zero delay uploads at once.
    let demo = Schedule { first_upload_after: Duration::ZERO, ..s };
    assert!(demo.first_upload_due(t(0), t(0)));
    // Never evaluated: evaluate now.
    assert!(s.needs_evaluation(t(0), None, t(0)));
    // Active within 7 days: re-evaluated every 24 hours.
    let day = 86_400;
    assert!(!s.needs_evaluation(t(0), Some(t(0)), t(day - 1)));
    assert!(s.needs_evaluation(t(0), Some(t(0)), t(day)));
    assert!(s.needs_evaluation(t(6 * day), Some(t(0)), t(7 * day)));
    // Not active for more than 7 days: left alone.
    assert!(!s.needs_evaluation(t(0), Some(t(0)), t(7 * day + 1)));
    // New binaries and domains: a lookup within 5 minutes.
    assert_eq!(s.lookup_deadline(t(10)), Some(t(310)));
}

#[test]
fn web_log_errors_name_file_line_and_column_never_the_value() {
    let device = DeviceId::new("d").unwrap();
    let good = "# comment\n\n2026-11-27T08:00:00Z\tu-a\thttps://x.example/secret-path\t1.2.3.4\t12\n";
    assert_eq!(parse_web_log(good, "web.log", &device).unwrap().len(), 1);
    let cases = [
        (
            "yesterday\tu-a\thttps://x.example/\t1.2.3.4\t1\n",
            "web.log line 1: time is not an rfc 3339 date and time",
        ),
        (
            "2026-11-27T08:00:00Z\talice@corp.example\thttps://x.example/\t1.2.3.4\t1\n",
            "web.log line 1: user is not a valid user id",
        ),
        (
            "2026-11-27T08:00:00Z\tu-a\thttps://x.example/\tsecret-host\t1\n",
            "web.log line 1: destination is not an ip address",
        ),
        (
            "2026-11-27T08:00:00Z\tu-a\thttps://x.example/\t1.2.3.4\tslow\n",
            "web.log line 1: page load is not a whole number of milliseconds",
        ),
        ("a\tb\n", "web.log line 1: 2 columns, expected 5 (time, user, url, ip, page load ms)"),
    ];
    for (input, expected) in cases {
        let err = parse_web_log(input, "web.log", &device).unwrap_err().to_string();
        assert_eq!(err, expected);
        assert!(!err.contains("alice") && !err.contains("secret"), "{err}");
    }
}

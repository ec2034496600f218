//! The agent's pure parts: the enrichment schedule under an injected clock,
//! and web-log parsing.

use privtel_agent::{Schedule, parse_web_log};
use privtel_model::{DeviceId, Timestamp};
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
fn web_log_problems_name_file_line_and_column_never_the_value() {
    let device = DeviceId::new("d").unwrap();
    let good = "# comment\n\n2026-11-27T08:00:00Z\tu-a\thttps://x.example/secret-path\t1.2.3.4\t12\n";
    let (records, report) = parse_web_log(good, "web.log", &device);
    assert_eq!((records.len(), report.skipped), (1, 0));
    let cases = [
        (
            "yesterday\tu-a\thttps://x.example/\t1.2.3.4\t1\n",
            "web.log:2: time is not an rfc 3339 date and time",
        ),
        (
            "2026-11-27T08:00:00Z\talice@corp.example\thttps://x.example/\t1.2.3.4\t1\n",
            "web.log:2: user is not a valid user id",
        ),
        (
            "2026-11-27T08:00:00Z\tu-a\thttps://[secret/\t1.2.3.4\t1\n",
            "web.log:2: url is not a url with a host",
        ),
        (
            "2026-11-27T08:00:00Z\tu-a\thttps://x.example/\tsecret-host\t1\n",
            "web.log:2: ip is not an ip address",
        ),
        (
            "2026-11-27T08:00:00Z\tu-a\thttps://x.example/\t1.2.3.4\tslow\n",
            "web.log:2: page load is not a whole number of milliseconds",
        ),
        (
            "a\tb\n",
            "web.log:2: line does not have 5 tab-separated columns (time, user, url, ip, page load ms)",
        ),
    ];
    for (bad, expected) in cases {
        // A bad line between two good ones: the good ones still come out.
        let text = format!("{good_line}{bad}{good_line}", good_line = &good[11..]);
        let (records, report) = parse_web_log(&text, "web.log", &device);
        assert_eq!(records.len(), 2, "{expected}");
        assert_eq!(report.skipped, 1);
        let line = report.problem_lines().next().unwrap();
        assert_eq!(line, expected);
        assert!(!line.contains("alice") && !line.contains("secret"), "{line}");
    }
}

#[test]
fn the_host_field_holds_the_host_only() {
    let device = DeviceId::new("d").unwrap();
    let line =
        "2026-11-27T08:00:00Z\tu-a\thttps://bob:pw@Www.Example.com:8443/p/alice?q=secret#frag\t1.2.3.4\t12\n";
    let (records, _) = parse_web_log(line, "web.log", &device);
    let privtel_model::RecordBody::Event(e) = &records[0].body else { panic!() };
    let privtel_model::EventBody::WebRequest(w) = &e.body else { panic!() };
    assert_eq!(w.host, privtel_model::Personal::Clear("www.example.com".to_owned()));
}

#[cfg(unix)]
#[test]
fn key_files_are_made_0600_and_refused_when_others_can_read_them() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.seal.key");
    let key = privtel_agent::load_or_create_key(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(privtel_agent::load_or_create_key(&path).unwrap(), key);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = privtel_agent::load_or_create_key(&path).unwrap_err().to_string();
    assert!(err.contains("mode 644") && err.contains("expected 600"), "{err}");
    // The error never carries key bytes.
    assert!(!err.contains(&format!("{:?}", &key[..4])));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, b"short").unwrap();
    let err = privtel_agent::load_or_create_key(&path).unwrap_err().to_string();
    assert!(err.contains("holds 5 bytes: expected 32"), "{err}");
}

#[test]
fn the_audit_log_rotates_by_size_and_expires_with_the_data() {
    use privtel_agent::{AuditLog, AuditOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut options = AuditOptions::with_ttl(Duration::days(7));
    options.max_bytes = 1000;
    options.keep = 2;
    let mut log = AuditLog::open(&path, options).unwrap();
    let day0 = Timestamp::new(time::OffsetDateTime::now_utc());
    for i in 0..100 {
        let at = day0.checked_add(Duration::seconds(i)).unwrap();
        log.write("batch", &serde_json::json!({ "n": i, "pad": "x".repeat(100) }), at).unwrap();
    }
    let files = || std::fs::read_dir(dir.path()).unwrap().count();
    let total: u64 =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert_eq!(files(), 3, "the current file and two rotated ones");
    assert!(total <= 3000, "{total}");
    // Eight days on, everything the log describes is past its TTL.
    assert_eq!(log.expire(day0.checked_add(Duration::days(6)).unwrap()).unwrap(), 0);
    assert_eq!(log.expire(day0.checked_add(Duration::days(8)).unwrap()).unwrap(), 3);
    assert_eq!(files(), 1);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

/// Every line of the audit log, across its files, opened with `key`.
fn audit_entries(
    dir: &std::path::Path,
    key: Option<&privtel_store::AtRestKey>,
) -> Vec<privtel_agent::AuditEntry> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        entries.extend(privtel_agent::AuditLog::read(entry.unwrap().path(), key).unwrap());
    }
    entries
}

/// An agent that runs every day writes to its audit log every day: no
/// line outlives the TTL all the same (a file holds at most a quarter of
/// it and goes when its first line is past it), across a restart, and a
/// line stays at least three quarters of it; in clear and sealed alike. A
/// batch line with a canary written on day 0 is gone by day 7 of a 7-day
/// TTL; before, a log written every cycle was never old enough to be
/// emptied, and kept it for months.
#[test]
fn no_audit_line_outlives_the_ttl_of_a_log_written_every_day() {
    use privtel_agent::{AuditLog, AuditOptions};
    let sealing = privtel_store::AtRestKey::new(1, [4; 32]);
    for key in [None, Some(&sealing)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let ttl = Duration::days(7);
        let open = || {
            let log = AuditLog::open(&path, AuditOptions::with_ttl(ttl)).unwrap();
            match key {
                Some(k) => log.sealed_with(k.clone()),
                None => log,
            }
        };
        let mut log = open();
        let day0 = Timestamp::new(time::OffsetDateTime::now_utc());
        let at = |hours: i64| day0.checked_add(Duration::hours(hours)).unwrap();
        log.write("batch", &serde_json::json!({ "h": 0, "url": "canary-0d0e1f.example/path" }), at(0))
            .unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert_eq!(raw.contains("canary-0d0e1f"), key.is_none(), "sealed: {raw}");
        let mut written = vec![0];
        // Every six hours for 20 days: a line, then the cycle's expiry; the
        // agent restarts (the log opened again) on day 9.
        for h in (6..20 * 24).step_by(6) {
            if h == 9 * 24 {
                log = open();
            }
            log.write("hello", &serde_json::json!({ "h": h }), at(h)).unwrap();
            written.push(h);
            log.expire(at(h)).unwrap();
            let mut present = Vec::new();
            for e in audit_entries(dir.path(), key) {
                assert!(e.at >= at(h - 7 * 24), "a line of {} kept at hour {h}, past the TTL", e.at);
                present.push(e.message["h"].as_i64().unwrap());
            }
            // What is younger than three quarters of the TTL is all there.
            for w in written.iter().filter(|w| **w > h - 126) {
                assert!(present.contains(w), "the line of hour {w} gone at hour {h}");
            }
        }
        let all: Vec<String> = audit_entries(dir.path(), key).iter().map(|e| e.message.to_string()).collect();
        assert!(!all.concat().contains("canary-0d0e1f"), "the day-0 batch outlived its TTL");
    }
}

/// A file an earlier version rotated is named by the instant it was
/// rotated, later than its first line: it goes once its first line is
/// past the TTL all the same.
#[test]
fn an_audit_file_rotated_by_an_earlier_version_goes_with_its_first_line() {
    use privtel_agent::{AuditLog, AuditOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let day0 = Timestamp::new(time::OffsetDateTime::now_utc());
    let day = |d: i64| day0.checked_add(Duration::days(d)).unwrap();
    // Lines of day 0 and day 20, rotated on day 20 (its name).
    let old = dir.path().join(format!("audit.jsonl.{}", day(20).unix_nanos()));
    std::fs::write(
        &old,
        format!(
            "{{\"at\":\"{}\",\"kind\":\"batch\",\"message\":{{\"url\":\"canary-91ab\"}}}}\n{{\"at\":\"{}\",\"kind\":\"hello\",\"message\":{{}}}}\n",
            day(0),
            day(20)
        ),
    )
    .unwrap();
    let mut log = AuditLog::open(&path, AuditOptions::with_ttl(Duration::days(7))).unwrap();
    assert_eq!(log.expire(day(6)).unwrap(), 0);
    assert_eq!(log.expire(day(8)).unwrap(), 1, "its day-0 line is past the TTL");
    assert!(!old.exists());
}

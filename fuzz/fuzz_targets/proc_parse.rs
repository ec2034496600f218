//! Arbitrary text as each `/proc` and `/etc` file the Linux collectors
//! read (`/proc/PID/stat`, `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`,
//! `/proc/cpuinfo`, `/etc/os-release`, `/etc/group`): never a panic; a
//! typed error whose message names the file and what was expected, never
//! the input; values within their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_agent::collect::{
    ProcError, parse_boot_time, parse_cpuinfo, parse_loadavg, parse_meminfo, parse_os_release,
    parse_proc_stat, privileges_of,
};

fn check(e: ProcError) {
    let msg = e.to_string();
    assert!(msg.starts_with(e.file) && msg.ends_with(e.expected), "{msg}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_proc_stat(text) {
        Ok(s) => assert!(text.contains(&s.start_ticks.to_string())),
        Err(e) => check(e),
    }
    match parse_boot_time(text) {
        Ok(b) => assert!(b >= 0),
        Err(e) => check(e),
    }
    match parse_meminfo(text) {
        Ok(m) => assert!(m.total % 1024 == 0 && m.available % 1024 == 0),
        Err(e) => check(e),
    }
    match parse_loadavg(text) {
        Ok(l) => assert!(l.one.is_finite() && l.one >= 0.0 && l.fifteen.is_finite()),
        Err(e) => check(e),
    }
    match parse_cpuinfo(text) {
        Ok(c) => {
            assert!(c.logical >= 1);
            assert!(c.model.is_none_or(|m| m.chars().count() <= 128 && !m.chars().any(char::is_control)));
        }
        Err(e) => check(e),
    }
    match parse_os_release(text) {
        Ok(r) => {
            for v in [&r.name, &r.version_id, &r.pretty_name].into_iter().flatten() {
                assert!(v.chars().count() <= 128 && !v.chars().any(char::is_control));
            }
        }
        Err(e) => check(e),
    }
    let _ = privileges_of(1000, "alice", text);
});

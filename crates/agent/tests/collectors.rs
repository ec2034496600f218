//! The endpoint collectors through a real agent: a process started by the
//! test is seen once across restarts and its digests reach the service's
//! Enhance once, then again only on the schedule; wtmp is followed exactly
//! once across rotation, truncation and restarts; what the policy
//! withholds is in no byte of the spool.
// Off Linux only the parser tests and the "not supported" test run.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use privtel_agent::collect::{HostFiles, LoginLog, ProcessCollector, UTMP_RECORD_LEN};
use privtel_agent::{Agent, key_path};
use privtel_filter::Policy;
use privtel_model::{
    BinaryVerdict, CustomerId, DeviceId, Event, EventBody, Execution, Login, Personal, Privileges, Program,
    Record, RecordBody, Timestamp,
};
use privtel_service::Peer;
use privtel_store::{AtRestKey, Spool, SpoolOptions};
use privtel_wire::Message;

use crate::enhance::{DEVICE, agent_with, connect, contains, messages, service};

fn t0() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

fn at(hours: i64) -> Timestamp {
    t0().checked_add(time::Duration::hours(hours)).unwrap()
}

fn policy(fields: &str) -> Policy {
    Policy::from_toml(&format!(
        "version = 3\n[programs]\nenrichment = true\npersonalised_usage = true\nbenchmarking = true\nanonymous_usage = true\n[fields]\n{fields}"
    ))
    .unwrap()
}

fn clear_policy() -> Policy {
    policy(
        "\"execution.path\" = \"clear\"\n\"execution.username\" = \"clear\"\n\"execution.start\" = \"clear\"\n\"login.time\" = \"clear\"\n\"login.privileges\" = \"clear\"\n",
    )
}

/// A copy of `/bin/sleep` under `name` in `dir`, running (killed on drop).
struct Sleeper {
    path: PathBuf,
    child: Option<Child>,
}

impl Sleeper {
    /// With the name appended to the file (an ELF file runs with bytes
    /// after its end): a digest of its own, whatever else runs.
    fn copy(dir: &Path, name: &str) -> Self {
        use std::io::Write as _;
        let path = dir.join(name);
        std::fs::copy("/bin/sleep", &path).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(format!("{name} {:?}", dir).as_bytes()).unwrap();
        Self { path, child: None }
    }

    fn start(&mut self) {
        self.stop();
        // Returns once the copy runs (its exe link names it).
        self.child = Some(privtel_testkit::process::spawn_fresh(Command::new(&self.path).arg("600")));
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One hash cache for every test here: the machine's running programs
/// are hashed once per test run (debug builds hash slowly).
static CACHE: std::sync::Mutex<Option<privtel_hash::HashCache>> = std::sync::Mutex::new(None);

/// A collector of the real `/proc` reading `etc`, starting from the shared
/// cache; `done` gives the cache back.
fn collector(etc: Option<&Path>) -> ProcessCollector {
    let cache = CACHE.lock().unwrap().clone().unwrap_or_default();
    let mut c = ProcessCollector::new().with_cache(cache);
    if let Some(etc) = etc {
        c = c.with_host_files(HostFiles::new("/proc", etc));
    }
    c
}

fn done(mut c: ProcessCollector) {
    *CACHE.lock().unwrap() = Some(std::mem::take(c.cache_mut()));
}

/// The executions in the spool whose path is `path`.
fn executions_of(agent: &mut Agent, path: &Path) -> Vec<Execution> {
    let spooled = agent.outbox().spool().next_batch(Program::PersonalisedUsage, usize::MAX).unwrap();
    spooled
        .into_iter()
        .filter_map(|s| match s.record.body {
            RecordBody::Event(Event { body: EventBody::Execution(x), .. })
                if x.path == Personal::Clear(path.display().to_string()) =>
            {
                Some(x)
            }
            _ => None,
        })
        .collect()
}

/// How many of the sightings the agent sent in `bytes` name `sha256`.
fn sighted_in(bytes: &[u8], sha256: &privtel_model::Digest) -> usize {
    messages(bytes)
        .iter()
        .map(|m| match m {
            Message::Sightings(s) => s.binaries.iter().filter(|b| b.sha256 == *sha256).count(),
            _ => 0,
        })
        .sum()
}

#[cfg(target_os = "linux")]
#[test]
fn a_started_process_is_reported_once_and_enhanced_again_only_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("privtel-sleeper-{}", std::process::id());
    let mut sleeper = Sleeper::copy(dir.path(), &name);
    let sha256 = privtel_hash::hash_file(&sleeper.path, &privtel_hash::FileOptions::default())
        .unwrap()
        .digests
        .sha256
        .unwrap();
    let known = BinaryVerdict { sha256, threat: "high".parse().unwrap(), category: None };
    let service = service(dir.path(), &known);
    let peer = Peer::device(CustomerId::new("acme").unwrap(), DeviceId::new(DEVICE).unwrap());
    let mut collector = collector(None);
    // One pass of the agent at `now`: collect, then Enhance what runs.
    // Returns the sightings of the sleeper sent and the report.
    let mut cycle =
        |agent: &mut Agent, now: Timestamp, sightings: Option<&[privtel_model::BinarySighting]>| {
            let (report, collected) = agent.collect_processes(&mut collector, now).unwrap();
            let ours: Vec<_> = match sightings {
                Some(s) => s.to_vec(),
                None => report.sightings.iter().filter(|s| s.sha256 == sha256).cloned().collect(),
            };
            let (mut conn, written, served) = connect(&service, peer.clone());
            let (verdicts, _) = agent.enhance(&mut conn, &ours, &[], now).unwrap();
            drop(conn);
            let _ = served.join();
            let bytes = written.lock().unwrap().clone();
            (sighted_in(&bytes, &sha256), verdicts, report, collected, ours)
        };

    sleeper.start();
    let mut agent = agent_with(dir.path(), clear_policy());
    let (sent, verdicts, report, collected, ours) = cycle(&mut agent, t0(), None);
    assert_eq!(ours.len(), 1, "the sleeper's binary is sighted");
    assert!(report.new >= 1 && report.running >= report.new, "{report:?}");
    assert!(collected.binaries.contains(&sha256));
    assert_eq!(sent, 1, "its digests go up at once");
    assert_eq!(verdicts.iter().find(|v| v.sha256 == sha256).map(|v| v.threat), Some(known.threat));
    let runs = executions_of(&mut agent, &sleeper.path);
    assert_eq!(runs.len(), 1, "one execution of the sleeper");
    assert_eq!(runs[0].sha256, sha256);
    assert!(matches!(runs[0].start, Personal::Clear(s) if s.unix_seconds() > 1_700_000_000), "a start time");

    // Again, five minutes later, and after a restart: nothing repeated.
    let (sent, ..) = cycle(&mut agent, at(0).checked_add(time::Duration::minutes(5)).unwrap(), None);
    assert_eq!(sent, 0, "looked up just now");
    drop(agent);
    let mut agent = agent_with(dir.path(), clear_policy());
    let (sent, _, report, ..) = cycle(&mut agent, at(1), None);
    assert_eq!(sent, 0, "a restart remembers the lookup");
    assert_eq!(executions_of(&mut agent, &sleeper.path).len(), 1, "a restart reports no process again");
    assert!(report.running > 0);

    // 24 hours later, still running: re-evaluated, once.
    let (sent, ..) = cycle(&mut agent, at(24), None);
    assert_eq!(sent, 1, "active within seven days: re-evaluated after 24 hours");
    let (sent, ..) = cycle(&mut agent, at(25), None);
    assert_eq!(sent, 0);

    // Stopped; eight days later (a restart between): not re-evaluated,
    // even when something (a scan) still sights the binary.
    sleeper.stop();
    drop(agent);
    let mut agent = agent_with(dir.path(), clear_policy());
    let (sent, _, report, ..) = cycle(&mut agent, at(24 + 8 * 24), Some(&ours));
    assert!(!report.sightings.iter().any(|s| s.sha256 == sha256), "not running");
    assert_eq!(sent, 0, "not run for seven days: not re-evaluated");

    // Run again: a new execution, and re-evaluated.
    sleeper.start();
    let (sent, ..) = cycle(&mut agent, at(24 + 8 * 24 + 1), None);
    assert_eq!(sent, 1, "ran again: re-evaluated");
    assert_eq!(executions_of(&mut agent, &sleeper.path).len(), 2, "the second run is a second execution");
    done(collector);
}

/// What `agent`'s spool holds, decoded (it is sealed with the key beside it).
fn decoded_spool(spool: &Path) -> String {
    let secret: [u8; 32] = std::fs::read(key_path(spool, "seal")).unwrap().try_into().unwrap();
    let mut options = SpoolOptions::default();
    options.key = Some(AtRestKey::new(1, secret));
    let spool = Spool::open(spool, options).unwrap();
    let mut out = String::new();
    for program in Program::ALL {
        for s in spool.next_batch(program, usize::MAX).unwrap() {
            out.push_str(&serde_json::to_string(&s.record).unwrap());
        }
    }
    out
}

/// Every byte of the spool's files (database, log, shared memory).
fn spool_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_str().unwrap().starts_with("spool.db") {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn a_process_path_and_login_the_policy_withholds_are_in_no_byte_of_the_spool() {
    use std::os::unix::fs::MetadataExt as _;
    const FOLDER: &str = "home-of-canary-procwalker";
    const LOGIN: &str = "canarylogin77";
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let run = |fields: &str| {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join(FOLDER);
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), format!("{LOGIN}:x:{uid}:{uid}::/home/{LOGIN}:/bin/sh\n"))
            .unwrap();
        let mut sleeper = Sleeper::copy(&folder, "canary-tool");
        sleeper.start();
        let mut agent = agent_with(dir.path(), policy(fields));
        let mut collector = collector(Some(&etc));
        let (report, collected) = agent.collect_processes(&mut collector, t0()).unwrap();
        done(collector);
        assert!(report.new >= 1 && collected.records >= 1, "executions were spooled: {report:?}");
        drop(agent);
        let decoded = decoded_spool(&dir.path().join("spool.db"));
        let bytes = spool_bytes(dir.path());
        (decoded, bytes)
    };
    // The defaults withhold the path and the login.
    let (decoded, bytes) = run("");
    assert!(decoded.contains("\"execution\""), "executions are in the spool");
    for canary in [FOLDER, LOGIN, "canary-tool"] {
        assert!(!decoded.contains(canary), "{canary} in a spooled record");
        assert!(!contains(&bytes, canary), "{canary} in the spool's bytes");
    }
    // Pseudonymised: the pseudonym only.
    let (decoded, bytes) =
        run("\"execution.path\" = \"pseudonymise\"\n\"execution.username\" = \"withhold\"\n");
    for canary in [FOLDER, LOGIN, "canary-tool"] {
        assert!(!decoded.contains(canary), "{canary} in a spooled record");
        assert!(!contains(&bytes, canary), "{canary} in the spool's bytes");
    }
    // In clear, the same search finds them (it can fail).
    let (decoded, _) = run("\"execution.path\" = \"clear\"\n\"execution.username\" = \"clear\"\n");
    assert!(decoded.contains(FOLDER) && decoded.contains(LOGIN));
}

/// A `struct utmp` record built field by field at the offsets of
/// `<bits/utmp.h>` (x86_64).
fn utmp(kind: i16, pid: i32, line: &str, user: &str, host: &str, secs: i32, usecs: i32) -> Vec<u8> {
    let mut r = vec![0u8; UTMP_RECORD_LEN];
    r[0..2].copy_from_slice(&kind.to_le_bytes());
    r[4..8].copy_from_slice(&pid.to_le_bytes());
    r[8..8 + line.len()].copy_from_slice(line.as_bytes());
    r[40..44].copy_from_slice(b"ts/0");
    r[44..44 + user.len()].copy_from_slice(user.as_bytes());
    r[76..76 + host.len()].copy_from_slice(host.as_bytes());
    r[336..340].copy_from_slice(&77i32.to_le_bytes()); // ut_session
    r[340..344].copy_from_slice(&secs.to_le_bytes());
    r[344..348].copy_from_slice(&usecs.to_le_bytes());
    r[348..352].copy_from_slice(&[192, 0, 2, 7]); // ut_addr_v6[0]
    r
}

#[test]
fn utmp_records_decode_field_by_field() {
    use privtel_agent::collect::{UtmpKind, parse_utmp, parse_utmp_record};
    let rec = utmp(7, 4242, "pts/3", "alice", "198.51.100.9", 1_764_583_200, 250_000);
    let r = parse_utmp_record(&rec, 0).unwrap();
    assert_eq!((r.kind, r.user.as_str(), r.line.as_str()), (UtmpKind::UserProcess, "alice", "pts/3"));
    assert_eq!(r.time, "2025-12-01T10:00:00.25Z".parse().unwrap());
    assert!(!format!("{r:?}").contains("alice"), "Debug shows no login");
    // A login of all 32 bytes has no NUL.
    let long = "a".repeat(32);
    assert_eq!(parse_utmp_record(&utmp(7, 1, "tty1", &long, "", 1, 0), 0).unwrap().user, long);
    // Every kind of <utmp.h>, and nothing else.
    for code in 0..=9 {
        assert_eq!(UtmpKind::from_code(code).unwrap().code(), code);
    }
    assert_eq!(UtmpKind::from_code(10), None);
    let two: Vec<u8> = [utmp(2, 0, "~", "reboot", "", 5, 0), rec].concat();
    let kinds: Vec<_> = parse_utmp(&two, 0).into_iter().map(|r| r.unwrap().kind).collect();
    assert_eq!(kinds, [UtmpKind::BootTime, UtmpKind::UserProcess]);
}

#[test]
fn odd_utmp_records_are_typed_errors_that_name_no_value() {
    use privtel_agent::collect::{UtmpError, parse_utmp, parse_utmp_record};
    let good = utmp(7, 1, "pts/0", "canaryuser", "", 100, 0);
    assert_eq!(parse_utmp_record(&good[..383], 768), Err(UtmpError::Truncated { offset: 768, len: 383 }));
    let mut bad_kind = good.clone();
    bad_kind[0] = 42;
    assert_eq!(parse_utmp_record(&bad_kind, 0), Err(UtmpError::UnknownKind { offset: 0 }));
    let mut bad_user = good.clone();
    bad_user[44] = 0xff;
    let err = parse_utmp_record(&bad_user, 384).unwrap_err();
    assert_eq!(err, UtmpError::Text { offset: 384, field: "user" });
    assert!(!err.to_string().contains("canary"), "{err}");
    let mut control = good;
    control[45] = b'\n';
    assert_eq!(parse_utmp_record(&control, 0), Err(UtmpError::Text { offset: 0, field: "user" }));
    assert_eq!(
        parse_utmp_record(&utmp(7, 1, "pts/0", "u", "", -5, 0), 0),
        Err(UtmpError::Time { offset: 0 })
    );
    assert_eq!(
        parse_utmp_record(&utmp(7, 1, "pts/0", "u", "", 5, 1_000_000), 0),
        Err(UtmpError::Time { offset: 0 })
    );
    // Garbage: every record an error or a record, never a panic.
    let noise: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let out = parse_utmp(&noise, 0);
    assert_eq!(out.len(), 5000usize.div_ceil(UTMP_RECORD_LEN));
    assert!(matches!(out.last().unwrap(), Err(UtmpError::Truncated { .. })));
    assert!(UtmpError::Truncated { offset: 1, len: 2 }.to_string().starts_with("utmp record at byte 1"));
}

/// Appends login records of users `u{i}` for `i` in `range` to `path`.
fn write_logins(path: &Path, range: std::ops::Range<i32>) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for i in range {
        f.write_all(&utmp(7, i, "pts/1", &format!("u{}", i % 3), "", 1_764_583_200 + i, 0)).unwrap();
        // A logout between (a dead process): read, not a login.
        f.write_all(&utmp(8, i, "pts/1", "", "", 1_764_583_200 + i, 5)).unwrap();
    }
}

/// The login times (seconds past the first) in the spool, sorted.
fn logins_in(agent: &mut Agent) -> Vec<i64> {
    let spooled = agent.outbox().spool().next_batch(Program::Benchmarking, usize::MAX).unwrap();
    let mut out: Vec<i64> = spooled
        .into_iter()
        .filter_map(|s| match s.record.body {
            RecordBody::Event(Event {
                body: EventBody::Login(Login { time: Personal::Clear(t), .. }),
                ..
            }) => Some(t.unix_seconds() - 1_764_583_200),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(target_os = "linux")]
#[test]
fn wtmp_is_followed_exactly_once_across_rotation_truncation_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "u0:x:0:0::/:/bin/sh\nu1:x:1001:1001::/:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "sudo:x:27:u1\n").unwrap();
    let wtmp = dir.path().join("wtmp");
    let users: privtel_agent::collect::UserIds =
        std::sync::Arc::new(|login: &str| privtel_model::UserId::new(format!("id-{login}")).ok());
    let log = LoginLog::new(&wtmp).with_host_files(HostFiles::new("/proc", &etc)).with_users(users);
    let open = || agent_with(dir.path(), clear_policy());
    let mut agent = open();

    write_logins(&wtmp, 0..10);
    let (report, collected) = agent.collect_logins(&log, t0()).unwrap();
    assert_eq!((report.records, report.logins, report.bad, collected.records), (20, 10, 0, 10));
    let spooled = agent.outbox().spool().next_batch(Program::Benchmarking, usize::MAX).unwrap();
    let (users, privileges): (Vec<_>, Vec<_>) = spooled
        .iter()
        .filter_map(|s| match &s.record.body {
            RecordBody::Event(Event { user, body: EventBody::Login(l), .. }) => {
                Some((user.as_ref().map(|u| u.as_str().to_owned()), l.privileges.clone()))
            }
            _ => None,
        })
        .unzip();
    assert_eq!(users[..3], [Some("id-u0".into()), Some("id-u1".into()), Some("id-u2".into())]);
    assert_eq!(
        privileges[..3],
        [Personal::Clear(Privileges::System), Personal::Clear(Privileges::Administrator), Personal::Withheld]
    );

    // Half a record being written waits; completed, it is read once.
    write_logins(&wtmp, 10..12);
    let full = std::fs::read(&wtmp).unwrap();
    let cut = UTMP_RECORD_LEN * 23 - 100;
    std::fs::write(&wtmp, &full[..cut]).unwrap();
    let (report, _) = agent.collect_logins(&log, t0()).unwrap();
    assert_eq!((report.logins, report.partial_bytes), (1, (UTMP_RECORD_LEN - 100) as u64));
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&wtmp).unwrap();
        f.write_all(&full[cut..]).unwrap();
    }
    // A restart between.
    drop(agent);
    let mut agent = open();
    let (report, _) = agent.collect_logins(&log, t0()).unwrap();
    assert_eq!((report.logins, report.partial_bytes), (1, 0));
    assert_eq!(logins_in(&mut agent), (0..12).collect::<Vec<_>>());

    // Rotation: logrotate moves the file aside and creates a new one; a
    // login is written to the old one before the writers reopen.
    std::fs::rename(&wtmp, dir.path().join("wtmp.1")).unwrap();
    write_logins(&dir.path().join("wtmp.1"), 12..14);
    write_logins(&wtmp, 14..17);
    let (report, _) = agent.collect_logins(&log, t0()).unwrap();
    assert!(report.rotated && !report.rotated_lost);
    assert_eq!(report.logins, 5);
    let (again, _) = agent.collect_logins(&log, t0()).unwrap();
    assert_eq!((again.records, again.rotated), (0, false));

    // Truncated in place: read again from the start, a new generation.
    std::fs::write(&wtmp, b"").unwrap();
    write_logins(&wtmp, 100..102);
    let (report, _) = agent.collect_logins(&log, t0()).unwrap();
    assert!(report.truncated);
    assert_eq!(report.logins, 2);

    // A garbage record is skipped, counted and named by offset.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&wtmp).unwrap();
        f.write_all(&[0xee; UTMP_RECORD_LEN]).unwrap();
    }
    write_logins(&wtmp, 102..103);
    drop(agent);
    let mut agent = open();
    let (report, _) = agent.collect_logins(&log, t0()).unwrap();
    assert_eq!((report.logins, report.bad), (1, 1));
    assert_eq!(
        report.problems[0].to_string(),
        "utmp record at byte 1536 has an unknown type: expected 0 to 9"
    );

    let mut expected: Vec<i64> = (0..17).chain(100..103).collect();
    expected.sort_unstable();
    assert_eq!(logins_in(&mut agent), expected, "every login once");
}

#[cfg(target_os = "linux")]
#[test]
fn a_fake_proc_counts_every_process_it_cannot_report() {
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path().join("proc");
    let stat = |pid: u32, state: char| {
        format!("{pid} (p {pid}) {state} 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {} 1000 100 0\n", 100 * pid)
    };
    std::fs::create_dir_all(&proc).unwrap();
    std::fs::write(proc.join("stat"), "cpu 1 2 3\nbtime 1764547200\n").unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("tool"), b"#!/bin/sh\n").unwrap();
    std::fs::write(bin.join("old (deleted)"), b"#!/bin/sh\nold\n").unwrap();
    let process = |pid: u32, state: char, exe: Option<&str>| {
        let d = proc.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("stat"), stat(pid, state)).unwrap();
        if let Some(exe) = exe {
            std::os::unix::fs::symlink(exe, d.join("exe")).unwrap();
        }
    };
    let tool = bin.join("tool").display().to_string();
    process(1, 'S', None); // a kernel thread
    process(2, 'Z', None); // a zombie
    process(3, 'S', Some(&tool));
    process(4, 'S', Some(&tool)); // the same file: hashed once
    process(5, 'S', Some("/nonexistent/gone")); // the file vanished
    process(6, 'S', Some(&bin.join("old (deleted)").display().to_string()));
    std::fs::create_dir_all(proc.join("7")).unwrap();
    std::fs::write(proc.join("7").join("stat"), "7 (cut").unwrap(); // malformed
    std::fs::create_dir_all(proc.join("not-a-pid")).unwrap();

    let mut collector =
        ProcessCollector::new().with_host_files(HostFiles::new(&proc, dir.path().join("etc")));
    let snap = collector.snapshot().unwrap();
    assert_eq!(snap.boot_time, 1_764_547_200);
    let pids: Vec<u32> = snap.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [3, 4, 6]);
    assert_eq!(
        (snap.kernel_threads, snap.zombies, snap.vanished, snap.malformed, snap.unreadable, snap.unhashed),
        (1, 1, 1, 1, 0, 0)
    );
    assert_eq!(snap.hashed, 2, "two distinct files read; the second process of one came from the cache");
    assert_eq!(snap.processes[0].file.digests, snap.processes[1].file.digests);
    // Start: boot + ticks / 100.
    assert_eq!(snap.processes[0].start, "2025-12-01T00:00:03Z".parse().unwrap());
    let old = &snap.processes[2];
    assert!(old.deleted && old.path.ends_with("/bin/old"), "the suffix is taken off");
    let again = collector.snapshot().unwrap();
    assert_eq!(again.hashed, 0, "a second look only stats");
}

#[cfg(target_os = "linux")]
#[test]
fn device_information_and_performance_samples_are_recorded_through_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent_with(dir.path(), clear_policy());
    let files = HostFiles::default();
    let info = privtel_agent::collect::device_info(&files).unwrap();
    assert!(info.cpu.logical >= 1 && info.memory.total > 0, "{info:?}");
    assert!(info.disks.filesystems >= 1 && info.disks.total >= info.disks.available);
    let collected = agent.collect_device(&files, t0()).unwrap();
    assert_eq!(collected.records, 6, "a device and five configuration events");
    let collected = agent.collect_performance(&files, t0()).unwrap();
    assert!(collected.records >= 7, "{collected:?}");
    let spooled = agent.outbox().spool().next_batch(Program::AnonymousUsage, usize::MAX).unwrap();
    let bodies: Vec<Record> = spooled.into_iter().map(|s| s.record).collect();
    let device = bodies
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Device(d) => Some(d.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(device.os.family, privtel_model::OsFamily::Linux);
    assert_eq!(device.name, Personal::Withheld, "the host name is withheld by default");
    let metrics: Vec<String> = bodies
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Event(Event { body: EventBody::Performance(p), .. }) => Some(p.metric.clone()),
            _ => None,
        })
        .collect();
    for m in ["load_1m", "memory_used_bytes", "memory_available_bytes", "threads_total"] {
        assert!(metrics.iter().any(|x| x == m), "{m} in {metrics:?}");
    }
}

#[cfg(not(target_os = "linux"))]
#[test]
fn collectors_say_they_are_not_supported_here() {
    use privtel_agent::collect::CollectError;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent_with(dir.path(), clear_policy());
    let not_supported = |e: privtel_agent::AgentError| {
        matches!(e, privtel_agent::AgentError::Collect(CollectError::NotSupported { .. }))
    };
    assert!(not_supported(agent.collect_processes(&mut ProcessCollector::new(), t0()).unwrap_err()));
    assert!(not_supported(agent.collect_logins(&LoginLog::wtmp(), t0()).unwrap_err()));
    assert!(not_supported(agent.collect_device(&HostFiles::default(), t0()).unwrap_err()));
    assert!(not_supported(agent.collect_performance(&HostFiles::default(), t0()).unwrap_err()));
}

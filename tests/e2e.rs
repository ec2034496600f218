//! End to end, over 127.0.0.1 with TLS, each test starting the real service
//! (`examples/cloud.rs`) and the real agent (`examples/agent.rs`) as
//! processes.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use privtel::model::Program;
use privtel::store::{EngineOptions, EngineStore, Spool, SpoolOptions, SqliteEngine};
use support::{data, example, text, token};

/// A running cloud: the process, its address and the CA agents must trust.
struct Cloud {
    child: Child,
    addr: String,
    ca: PathBuf,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cloud(dir: &Path, extra: &[&str]) -> Cloud {
    let ca = dir.join(format!(
        "ca-{}.pem",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let mut child = Command::new(example("cloud"))
        .args(["--listen", "127.0.0.1:0", "--store"])
        .arg(dir.join("engine.db"))
        .arg("--reputation")
        .arg(data("reputation.csv"))
        .arg("--cert-out")
        .arg(&ca)
        .arg("--settings")
        .arg(data("settings.toml"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("cloud said {line:?}")).to_owned();
    Cloud { child, addr, ca }
}

/// The agent's command line for one cycle against `cloud_addr`.
fn agent_command(dir: &Path, cloud_addr: &str, ca: &Path, policy: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(example("agent"));
    cmd.args(["--server", cloud_addr, "--enroll-token", &token(dir), "--ca"])
        .arg(ca)
        .args(["--customer", "acme", "--device", "dev-e2e", "--policy"])
        .arg(policy)
        .arg("--spool")
        .arg(dir.join("spool.db"))
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .args(["--user", "u-alice", "--once"])
        .args(extra);
    cmd
}

/// The agent's audit log as its owner reads it (`audit --spool`): the
/// messages are sealed with the spool's key in the file itself.
fn audit_text(dir: &Path) -> String {
    let out = Command::new(example("audit"))
        .arg("--spool")
        .arg(dir.join("spool.db"))
        .arg(dir.join("audit.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn agent(dir: &Path, cloud_addr: &str, ca: &Path, policy: &Path, extra: &[&str]) -> Output {
    agent_command(dir, cloud_addr, ca, policy, extra).output().unwrap()
}

fn device(dir: &Path, name: &str) -> PathBuf {
    let bin = dir.join(name).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (file, bytes) in privtel_testkit::fixtures::sample_executables() {
        std::fs::write(bin.join(file), bytes).unwrap();
    }
    bin
}

fn spool(dir: &Path) -> Spool {
    Spool::open(dir.join("spool.db"), SpoolOptions::default()).unwrap()
}

/// Scans the sample device while no service listens (a closed port, and a
/// CA of a service that does not exist, left in `none.pem`): what the agent
/// collected stays spooled.
fn scan_while_offline(dir: &Path) -> Output {
    let bin = device(dir, "device");
    let ca = dir.join("none.pem");
    std::fs::write(&ca, privtel::wire::tls::generate_identity(&["127.0.0.1"]).unwrap().ca_pem).unwrap();
    agent(dir, "127.0.0.1:9", &ca, &data("policy.toml"), &["--scan", bin.to_str().unwrap()])
}

fn engine(dir: &Path) -> SqliteEngine {
    SqliteEngine::open(dir.join("engine.db"), EngineOptions::default()).unwrap()
}

#[test]
fn full_cycle_scan_filter_spool_upload_enrich_store() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), &[]);
    let bin = device(dir.path(), "device");
    let out = agent(
        dir.path(),
        &c.addr,
        &c.ca,
        &data("policy.toml"),
        &["--scan", bin.to_str().unwrap(), "--web-log", data("web.log").to_str().unwrap()],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("binary c5548314cdf8e70f42f47f769c2fbe153b39360a5f12f29d8bb69bad7bf89aeb threat high category malware"), "{stdout}");
    assert!(
        stdout.contains(
            "domain bad-downloads.example reputation high risk category malware delivery hosted in RU"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("domain corp.example reputation - category - hosted in -"), "{stdout}");
    // 4 executions and 6 web requests, stored once; the 4 binaries left as
    // anonymous sightings (Enhance), not as records.
    assert!(stdout.contains("sent 10 personalised_usage records"), "{stdout}");
    drop(c);
    assert_eq!(engine(dir.path()).record_count().unwrap(), 10);
    let spool = spool(dir.path());
    assert_eq!(spool.len(None).unwrap(), 0, "everything acknowledged left the spool");
    // Enhance over TLS between the real processes: the audit log holds every
    // message the agent sent; those of the enrichment session name no
    // device, user, folder or file, and none of the stored records is an
    // enrichment record.
    let raw = text(&std::fs::read(dir.path().join("audit.jsonl")).unwrap());
    assert!(!raw.contains("bad-downloads.example"), "the audit file holds a sighting in clear");
    let audit = audit_text(dir.path());
    let enhance: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"kind\":\"enhance hello\"") || l.contains("\"kind\":\"sightings\""))
        .collect();
    assert_eq!(enhance.len(), 2, "one enhance hello, one sightings message: {audit}");
    assert!(enhance[1].contains("bad-downloads.example"), "the sightings are there: {}", enhance[1]);
    let folder = dir.path().display().to_string();
    for needle in ["dev-e2e", "u-alice", "alice", folder.as_str(), "dropper", "setup.exe", "\"bin\""] {
        assert!(
            !enhance.iter().any(|l| l.contains(needle)),
            "{needle} in the enrichment upload: {enhance:?}"
        );
    }
    // Alice's 4 executions and 4 of the 6 web requests (2 are Bob's).
    let mut out = Vec::new();
    engine(dir.path())
        .export_person(&"acme".parse().unwrap(), &"u-alice".parse().unwrap(), &mut out)
        .unwrap();
    let out = text(&out);
    assert!(out.lines().count() == 8 && !out.contains("\"program\":\"enrichment\""), "{out}");
}

#[test]
fn canaries_never_leave_in_a_form_the_policy_does_not_keep_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let canary = "zqcanary77";
    let bin = device(dir.path(), &format!("home-{canary}"));
    let log = dir.path().join("web.log");
    std::fs::write(
        &log,
        format!("2026-11-27T08:00:00Z\tu-alice\thttps://{canary}.shop.example.com/{canary}?q={canary}\t10.77.77.77\t100\n"),
    )
    .unwrap();
    let c = cloud(dir.path(), &[]);
    let out = agent(
        dir.path(),
        &c.addr,
        &c.ca,
        &data("policy.toml"),
        &["--scan", bin.to_str().unwrap(), "--web-log", log.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(c);
    let mut export = Vec::new();
    let n = engine(dir.path())
        .export_person(&"acme".parse().unwrap(), &"u-alice".parse().unwrap(), &mut export)
        .unwrap();
    assert!(n > 0, "the person's records were stored");
    let audit = std::fs::read(dir.path().join("audit.jsonl")).unwrap();
    let mut db = std::fs::read(dir.path().join("engine.db")).unwrap();
    db.extend(std::fs::read(dir.path().join("engine.db-wal")).unwrap_or_default());
    for (what, bytes) in [("audit log", &audit), ("export", &export), ("database file", &db)] {
        for needle in [canary, "10.77.77.77"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in the {what}");
        }
    }
    // The audit log is real: opened with the spool's key, it shows the
    // batches, with the generalised forms, and nothing dropped.
    let audit = audit_text(dir.path());
    for needle in [canary, "10.77.77.77"] {
        assert!(!audit.contains(needle), "{needle} in the audit log opened");
    }
    assert!(!text(&std::fs::read(dir.path().join("audit.jsonl")).unwrap()).contains("example.com"), "sealed");
    assert!(
        audit.contains("\"kind\":\"batch\"") && audit.contains("example.com") && audit.contains("10.77.77.0"),
        "{audit}"
    );
}

#[test]
fn malformed_inputs_name_file_and_line_and_keep_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    // Unreachable service: the scan is spooled and stays.
    let out = scan_while_offline(dir.path());
    let ca = dir.path().join("none.pem");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("records stay spooled"), "{}", text(&out.stderr));
    let waiting = spool(dir.path()).len(None).unwrap();
    assert_eq!(waiting, 4, "the 4 executions (binaries leave as sightings, not records)");

    let bad_log = dir.path().join("bad.log");
    std::fs::write(&bad_log, "# ok\n2026-11-27T08:00:00Z\tu-a\thttps://a.example/\t1.2.3.4\t5\n2026-11-27T08:00:00Z\tu-a\thttps://b.example/\n").unwrap();
    let out = agent(
        dir.path(),
        "127.0.0.1:9",
        &ca,
        &data("policy.toml"),
        &["--web-log", bad_log.to_str().unwrap(), "--attempts", "2"],
    );
    // The bad line is reported and skipped; the good one is spooled; the
    // service is still unreachable.
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: line does not have 5 tab-separated columns", bad_log.display())),
        "{err}"
    );
    assert!(err.contains("gave up after 2 attempts") && err.contains("5 records stay spooled"), "{err}");
    let waiting = waiting + 1;

    // A scan root that does not exist is an error naming it.
    let out = agent(dir.path(), "127.0.0.1:9", &ca, &data("policy.toml"), &["--scan", "/no/such/folder"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("scan root /no/such/folder"), "{}", text(&out.stderr));

    let bad_policy = dir.path().join("policy.toml");
    std::fs::write(&bad_policy, "[fields]\n\"user.emial\" = \"withhold\"\n").unwrap();
    let out = agent(dir.path(), "127.0.0.1:9", &ca, &bad_policy, &[]);
    let err = text(&out.stderr);
    assert!(
        err.contains("policy.toml") && err.contains("policy line 2: unknown field 'user.emial'"),
        "{err}"
    );

    let bad_csv = dir.path().join("rep.csv");
    std::fs::write(&bad_csv, "binary,e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855,none,,\ndomain,example.com,safe,,\n").unwrap();
    let out = Command::new(example("cloud"))
        .args(["--store"])
        .arg(dir.path().join("e2.db"))
        .arg("--reputation")
        .arg(&bad_csv)
        .arg("--settings")
        .arg(data("settings.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("reputation file line 2: invalid reputation 'safe'"),
        "{}",
        text(&out.stderr)
    );

    // Settings that promise what the service does not do are refused.
    let bad_settings = dir.path().join("settings.toml");
    std::fs::write(&bad_settings, "[customers.acme]\nevents_days = 10\n").unwrap();
    let out = Command::new(example("cloud"))
        .args(["--store"])
        .arg(dir.path().join("e3.db"))
        .arg("--settings")
        .arg(&bad_settings)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("customer acme: events_days is 10, expected 7, 14 or 30"),
        "{}",
        text(&out.stderr)
    );

    // After all that, the spooled scan is still there.
    assert_eq!(spool(dir.path()).len(None).unwrap(), waiting);
}

#[test]
fn withdrawn_consent_sends_nothing_and_empties_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    // Records wait while the service is down.
    let out = scan_while_offline(dir.path());
    assert_eq!(out.status.code(), Some(1));
    // Then the person withdraws consent (personalised usage, the program of
    // executions and web requests), and the service is back.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        std::fs::read_to_string(data("policy.toml"))
            .unwrap()
            .replace("personalised_usage = true", "personalised_usage = false"),
    )
    .unwrap();
    let c = cloud(dir.path(), &[]);
    let out = agent(dir.path(), &c.addr, &c.ca, &policy, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(c);
    let spool = spool(dir.path());
    assert_eq!(spool.len(Some(Program::PersonalisedUsage)).unwrap(), 0);
    assert_eq!(spool.counters().unwrap().purged, 4);
    assert_eq!(engine(dir.path()).record_count().unwrap(), 0, "nothing of the withdrawn program was stored");
    let audit = audit_text(dir.path());
    assert!(!audit.contains("\"kind\":\"batch\""), "no batch was sent: {audit}");
}

#[test]
fn a_service_killed_mid_upload_stores_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Many small records to upload in batches of 2: hundreds of round trips.
    let bin = dir.path().join("many");
    std::fs::create_dir_all(&bin).unwrap();
    for i in 0..150 {
        std::fs::write(bin.join(format!("s{i:03}.sh")), format!("#!/bin/sh\necho {i}\n")).unwrap();
    }
    let c = cloud(dir.path(), &["--max-batch-records", "2"]);
    let mut first =
        agent_command(dir.path(), &c.addr, &c.ca, &data("policy.toml"), &["--scan", bin.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    // Kill the service while the agent uploads.
    std::thread::sleep(std::time::Duration::from_millis(150));
    drop(c);
    let _ = first.wait();
    let stored_before = engine(dir.path()).record_count().unwrap();
    let waiting = spool(dir.path()).len(None).unwrap();
    // A new service on the same store; the agent retries what is waiting.
    let c = cloud(dir.path(), &["--max-batch-records", "2"]);
    let out = agent(dir.path(), &c.addr, &c.ca, &data("policy.toml"), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(c);
    let stored = engine(dir.path()).record_count().unwrap();
    assert_eq!(
        stored, 150,
        "150 executions, each stored exactly once (before the kill: {stored_before}, waiting: {waiting})"
    );
    assert_eq!(spool(dir.path()).len(None).unwrap(), 0);
}

#[test]
fn the_service_keeps_serving_while_connections_misbehave() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), &[]);
    // Garbage instead of a TLS handshake, a connection dropped at once, and
    // a half-open one left hanging.
    let mut garbage = std::net::TcpStream::connect(&c.addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x00\xff").unwrap();
    drop(std::net::TcpStream::connect(&c.addr).unwrap());
    let _hanging = std::net::TcpStream::connect(&c.addr).unwrap();
    // A real agent still gets through.
    let bin = device(dir.path(), "device");
    let out = agent(dir.path(), &c.addr, &c.ca, &data("policy.toml"), &["--scan", bin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sent 4 personalised_usage records"));
}

/// Writes `lines` web-log lines numbered from `from`, dated the last hour.
fn write_web_log(path: &Path, from: usize, lines: usize) {
    use std::io::Write as _;
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut out =
        std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap());
    for i in from..from + lines {
        let at = start + time::Duration::milliseconds(i as i64);
        let at = at.format(&time::format_description::well_known::Rfc3339).unwrap();
        writeln!(
            out,
            "{at}\tu-{}\thttps://site{}.example/page/{i}?q={i}\t203.0.113.{}\t{}",
            i % 50,
            i % 400,
            i % 250,
            i % 3000
        )
        .unwrap();
    }
    out.flush().unwrap();
}

/// Invariant 5 across crashes: the agent is SIGKILLed at random instants
/// while it reads a 200,000-line web log and uploads, restarted on the same
/// file (also after a rotation), and the engine ends up holding every
/// event exactly once. The instants derive from a seed, printed and named
/// in every failure; `PRIVTEL_E2E_SEED=N` replays one.
#[test]
fn an_agent_killed_at_random_instants_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    write_web_log(&log, 0, 200_000);
    let c = cloud(dir.path(), &["--max-batch-records", "5000"]);
    let seed = match std::env::var("PRIVTEL_E2E_SEED") {
        Ok(s) => s.trim().parse::<u64>().expect("PRIVTEL_E2E_SEED is a whole number"),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }
    } | 1;
    eprintln!("seed {seed} (PRIVTEL_E2E_SEED={seed} replays it)");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let run = || {
        agent_command(dir.path(), &c.addr, &c.ca, &data("policy.toml"), &["--web-log", log.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    // Runs the agent and kills it `at` after its start, if it is still
    // running then.
    let mut run_and_kill = |at: std::time::Duration| {
        let mut child = run();
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    };
    // Whether a run has seen web.log (its position is spooled).
    let seen = || {
        let source = format!("web-log:{}", log.display());
        dir.path().join("spool.db").exists() && spool(dir.path()).source_position(&source).unwrap().is_some()
    };
    let mut total = 200_000;
    for round in 0..8 {
        if round == 4 {
            // The promise covers a file the agent had begun to follow: one
            // rotated away before any run got to open it (each killed
            // sooner, as on a loaded machine) was never the agent's. So
            // runs go on until one has seen it, each killed a little later.
            let mut extra = 0;
            while !seen() {
                assert!(extra < 20, "seed {seed}: {extra} more runs never got to the web log");
                extra += 1;
                run_and_kill(std::time::Duration::from_millis(50 + next() % 1500 + extra * 250));
            }
            // logrotate: the file moves aside and a new one starts.
            std::fs::rename(&log, dir.path().join("web.log.1")).unwrap();
            write_web_log(&log, total, 20_000);
            total += 20_000;
        }
        run_and_kill(std::time::Duration::from_millis(50 + next() % 1500));
    }
    assert!(kills >= 4, "seed {seed}: only {kills} runs were killed");
    // The last run completes.
    let out = run().wait_with_output().unwrap();
    assert!(out.status.success(), "seed {seed}: {}", text(&out.stderr));
    drop(c);
    let engine = engine(dir.path());
    assert_eq!(
        engine.record_count().unwrap(),
        total as u64,
        "seed {seed}, {kills} kills: every line stored exactly once"
    );
    assert_eq!(spool(dir.path()).len(None).unwrap(), 0);
}

/// Mutual TLS across the real processes: the agent enrolls on its first
/// upload with the administrator's token; revoked while the service runs,
/// it is refused at its next upload, and nothing it collected is lost.
#[test]
fn a_device_revoked_while_the_service_runs_is_refused_at_its_next_upload() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), &[]);
    let bin = device(dir.path(), "pc");
    let out = agent(dir.path(), &c.addr, &c.ca, &data("policy.toml"), &["--scan", bin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("enrolled as acme/dev-e2e"), "{}", text(&out.stderr));
    let stored = engine(dir.path()).record_count().unwrap();
    assert!(stored > 0);

    let out = Command::new(example("cloud"))
        .arg("--store")
        .arg(dir.path().join("engine.db"))
        .args(["--revoke", "acme:dev-e2e"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::write(bin.join("new-tool"), b"\x7fELF\x02\x01\x01 a tool made after the revocation").unwrap();
    let out = agent(
        dir.path(),
        &c.addr,
        &c.ca,
        &data("policy.toml"),
        &["--scan", bin.to_str().unwrap(), "--attempts", "1"],
    );
    assert!(!out.status.success(), "a revoked device was served");
    assert_eq!(engine(dir.path()).record_count().unwrap(), stored, "nothing more stored");
    assert!(spool(dir.path()).len(None).unwrap() > 0, "what it collected stays spooled");
}

/// Every stored record of acme: (program, kind, the record's JSON).
fn stored(dir: &Path) -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    let acme = privtel::model::CustomerId::new("acme").unwrap();
    engine(dir).export_customer(&acme, &serde_json::Map::new(), &mut out).unwrap();
    text(&out)
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((
                v.get("program")?.as_str()?.to_owned(),
                v.get("kind")?.as_str()?.to_owned(),
                v["record"].clone(),
            ))
        })
        .collect()
}

/// The example application (the SDK) against the real cloud over mutual
/// TLS: usage, a crash, a licence session, personalised usage withdrawn
/// half-way; what the service stored, program by program.
#[test]
fn the_sdk_app_reports_usage_and_a_crash_and_withdraws_personalised_usage_half_way() {
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), &[]);
    let out = Command::new(example("app"))
        .args(["--server", &c.addr, "--ca"])
        .arg(&c.ca)
        .args(["--customer", "acme", "--device", "dev-app", "--policy"])
        .arg(data("policy.toml"))
        .arg("--dir")
        .arg(dir.path().join("app"))
        .args(["--enroll-token", &token(dir.path()), "--email", "ada.canary@example.com", "--installers"])
        .arg(data("installers"))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // consent, profile, 3 anonymous and 3 personalised feature uses
    assert!(stdout.contains("first half: analytics sent 8 records, 0 waiting"), "{stdout}");
    assert!(stdout.contains("personalised usage withdrawn: 0 waiting records purged"), "{stdout}");
    assert!(stdout.contains("second half: crashes sent 1 records, 0 waiting"), "{stdout}");
    // the withdrawal, 2 anonymous uses, configuration, performance,
    // feedback, the version check
    assert!(stdout.contains("second half: analytics sent 7 records, 0 waiting"), "{stdout}");
    assert!(stdout.contains("first half: licence sent 1 records, 0 waiting"), "{stdout}");
    assert!(stdout.contains("second half: licence sent 1 records, 0 waiting"), "{stdout}");
    assert!(stdout.contains("update offered: 2.5.0 (190 bytes, sha256 018aef7c"), "{stdout}");
    assert!(stdout.contains("installer 2.5.0 verified: sha256 018aef7c698407278c91634e943cb1c84257e105c79a0e19cdce8c76190d612c"), "{stdout}");
    drop(c);
    let rows = stored(dir.path());
    let count = |program: &str, kind: &str| rows.iter().filter(|(p, k, _)| p == program && k == kind).count();
    assert_eq!(count("anonymous_usage", "feature_usage"), 5);
    assert_eq!(count("personalised_usage", "feature_usage"), 3, "none after the withdrawal");
    assert_eq!(count("personalised_usage", "user"), 1);
    assert_eq!(count("personalised_usage", "consent"), 2);
    assert_eq!(count("anonymous_usage", "crash_report"), 1);
    assert_eq!(count("support_telemetry", "configuration"), 1);
    assert_eq!(count("support_telemetry", "performance"), 1);
    assert_eq!(count("support_telemetry", "feedback"), 1);
    assert_eq!(count("licence_authentication", "licence_session"), 2);
    let checks: Vec<_> =
        rows.iter().filter(|(p, k, _)| p == "version_check" && k == "version_check").collect();
    assert_eq!(checks.len(), 1, "{rows:?}");
    assert!(checks[0].2.to_string().contains("2.4.1"), "{:?}", checks[0]);
    let withdrawal = rows.iter().find(|(_, k, r)| k == "consent" && r.to_string().contains("\"settings\""));
    assert!(withdrawal.is_some_and(|(_, _, r)| r.to_string().contains("\"granted\":false")), "{rows:?}");
    // The email is pseudonymised by the policy wherever it goes.
    let all = serde_json::to_string(&rows.iter().map(|r| &r.2).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("ada.canary"), "{all}");
    let bytes = std::fs::read(dir.path().join("engine.db")).unwrap();
    assert!(!bytes.windows(10).any(|w| w == b"ada.canary"));
}

/// The process collector between the real processes over TLS: a program
/// the test starts is recorded once (its execution uploaded) and its
/// digests go to Enhance once; a second run of the agent (a restart on the
/// same spool) repeats neither. The 24-hour and seven-day rules, with an
/// injected clock, are `crates/agent/tests/collectors.rs`.
#[cfg(target_os = "linux")]
#[test]
fn a_running_program_is_recorded_and_enhanced_once_across_agent_runs() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let c = cloud(dir.path(), &[]);
    // A copy of sleep with bytes of its own: a digest no other process has.
    let exe = dir.path().join("privtel-e2e-sleeper");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&exe)
        .unwrap()
        .write_all(dir.path().as_os_str().as_encoded_bytes())
        .unwrap();
    let sha =
        privtel::hash::hash_file(&exe, &Default::default()).unwrap().digests.sha256.unwrap().to_string();
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Just written: another test thread's fork may hold it open a moment.
    // Returned once the copy runs (its exe link names it).
    let _running = Killed(privtel_testkit::process::spawn_fresh(Command::new(&exe).arg("600")));
    let run = || {
        let out = agent(dir.path(), &c.addr, &c.ca, &data("policy.toml"), &["--processes"]);
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        audit_text(dir.path())
    };
    let naming = |audit: &str, kind: &str| {
        audit.lines().filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")) && l.contains(&sha)).count()
    };
    let first = run();
    assert_eq!(naming(&first, "sightings"), 1, "its digests go to Enhance once");
    assert_eq!(naming(&first, "batch"), 1, "its execution is uploaded");
    assert!(engine(dir.path()).record_count().unwrap() >= 1);
    let second = run();
    let added = &second[first.len()..];
    assert_eq!(naming(added, "sightings"), 0, "looked up already: not due");
    assert_eq!(naming(added, "batch"), 0, "reported already: not again");
    assert!(dir.path().join("spool.proc-cache").exists(), "the hash cache is kept between runs");
}

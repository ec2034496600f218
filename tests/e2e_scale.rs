//! End to end on the scale-out path, over 127.0.0.1 with TLS: the real
//! service (`examples/cloud.rs --ingest nats://… [--engine postgres://…]`)
//! and the real agent (`examples/agent.rs`) as processes, against the
//! PostgreSQL and NATS servers named by `PRIVTEL_PG_URL` and
//! `PRIVTEL_NATS_URL`. Each test has a database and a stream of its own,
//! dropped at the end.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use privtel::service::jetstream::JetStreamOptions;
use privtel::store::{EngineOptions, EngineStore, SqliteEngine};
use privtel_scale_tests::{StreamGuard, TestDb, nats_url, unique, wait_until};
use support::{data, example, text, token};

/// A stream, subjects and consumer of the test's own (deleted when the
/// guard goes).
fn stream() -> StreamGuard {
    let id = unique("");
    StreamGuard { options: JetStreamOptions::new(nats_url()).names(format!("E{id}"), format!("e{id}"), "w") }
}

/// A running cloud front-end: the process, its address and the CA agents
/// must trust.
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

/// `cloud --ingest` on `stream`, storing into `engine` (a PostgreSQL URL)
/// or, without it, into its own store in `dir`. Its standard error goes
/// to `dir/cloud-N.log`.
fn cloud(dir: &Path, stream: &JetStreamOptions, engine: Option<&str>) -> Cloud {
    cloud_with(dir, stream, engine, &[])
}

/// [`cloud`] with more arguments.
fn cloud_with(dir: &Path, stream: &JetStreamOptions, engine: Option<&str>, more: &[String]) -> Cloud {
    let n = std::fs::read_dir(dir).unwrap().count();
    let ca = dir.join(format!("ca-{n}.pem"));
    let log = std::fs::File::create(dir.join(format!("cloud-{n}.log"))).unwrap();
    let mut cmd = Command::new(example("cloud"));
    cmd.args(["--listen", "127.0.0.1:0", "--store"])
        .arg(dir.join("engine.db"))
        .arg("--cert-out")
        .arg(&ca)
        .arg("--settings")
        .arg(data("settings.toml"))
        .args(["--max-batch-records", "100", "--ingest", &stream.url])
        .args(["--stream", &stream.stream, "--subject-prefix", &stream.subject_prefix])
        .args(["--consumer", &stream.consumer, "--metrics-every", "1"]);
    if let Some(url) = engine {
        cmd.args(["--engine", url]);
    }
    cmd.args(more);
    let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("cloud said {line:?}; its log: {}", logs(dir)))
        .to_owned();
    Cloud { child, addr, ca }
}

/// Every cloud log of `dir`, for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("cloud-") {
            out.push_str(&format!(
                "\n--- {name}\n{}",
                std::fs::read_to_string(entry.path()).unwrap_or_default()
            ));
        }
    }
    out
}

/// Appends `n` web requests of now to `log`, numbered from `from`: each
/// a page of its own (so an event of its own).
fn web_requests(log: &Path, from: usize, n: usize) {
    let now = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let mut lines = String::new();
    for i in from..from + n {
        let at = (now + time::Duration::milliseconds(i as i64))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let user = if i % 3 == 0 { "u-bob" } else { "u-alice" };
        lines.push_str(&format!(
            "{at}\t{user}\thttps://site{}.example.com/page/{i}\t93.184.215.{}\t{}\n",
            i % 37,
            i % 250,
            100 + i % 900
        ));
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    std::io::Write::write_all(&mut f, lines.as_bytes()).unwrap();
}

/// One agent cycle of device `dev-scale` following `log`; returns the
/// records it says it sent.
fn agent(dir: &Path, c: &Cloud, log: &Path) -> (u64, Output) {
    let out = Command::new(example("agent"))
        .args(["--server", &c.addr, "--enroll-token", &token(dir), "--ca"])
        .arg(&c.ca)
        .args(["--customer", "acme", "--device", "dev-scale", "--policy"])
        .arg(data("policy.toml"))
        .arg("--spool")
        .arg(dir.join("spool.db"))
        .arg("--web-log")
        .arg(log)
        .args(["--once"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}\n{}", text(&out.stderr), logs(dir));
    let sent =
        stdout.lines().filter_map(|l| l.strip_prefix("sent ")?.split(' ').next()?.parse::<u64>().ok()).sum();
    (sent, out)
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn cloud_ingest_through_jetstream_into_postgresql_stores_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let guard = stream();
    let log = dir.path().join("web.log");
    web_requests(&log, 0, 1_250);

    // First cycle: 13 batches of at most 100 records (the service asks for
    // 100), published, then applied by the cloud's writer.
    let c = cloud(dir.path(), &guard.options, Some(&db.url));
    let (sent, out) = agent(dir.path(), &c, &log);
    assert!(sent >= 1_000, "the policy kept too few of the requests: {}", text(&out.stdout));
    let first = i64::try_from(sent).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || db.rows().0 >= first),
        "the writer did not apply everything: {:?} of {first}{}",
        db.rows(),
        logs(dir.path())
    );

    // A new front-end process on the same stream and database: the
    // welcome's high-water mark comes from PostgreSQL, so the agent sends
    // only what is new, and nothing is stored twice.
    drop(c);
    let c = cloud(dir.path(), &guard.options, Some(&db.url));
    web_requests(&log, 1_250, 300);
    let (more, out) = agent(dir.path(), &c, &log);
    assert!(more > 0 && more <= 300, "{}", text(&out.stdout));
    let total = first + i64::try_from(more).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || db.rows().0 >= total),
        "the writer did not apply everything: {:?} of {total}{}",
        db.rows(),
        logs(dir.path())
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(db.rows(), (total, total), "every record exactly once");
    // The counters reach the administrator (every second here).
    assert!(
        wait_until(Duration::from_secs(10), || logs(dir.path()).contains("cloud: metrics {\"accepted\":")),
        "{}",
        logs(dir.path())
    );
    // Nothing went to the front-end's own store.
    drop(c);
    let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    assert_eq!(engine.record_count().unwrap(), 0);
}

#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn cloud_ingest_through_jetstream_into_its_own_store() {
    let dir = tempfile::tempdir().unwrap();
    let guard = stream();
    let log = dir.path().join("web.log");
    web_requests(&log, 0, 400);
    let c = cloud(dir.path(), &guard.options, None);
    let (sent, _) = agent(dir.path(), &c, &log);
    assert!(sent >= 300, "{sent}");
    let count = || {
        SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default())
            .unwrap()
            .record_count()
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(60), || count() >= sent),
        "{} of {sent}{}",
        count(),
        logs(dir.path())
    );
    drop(c);
    assert_eq!(count(), sent, "every record once");
}

/// The administrator's tool against `cloud --ingest … --engine postgres://…`:
/// a person's export and erasure act on PostgreSQL, where the writer
/// stores, not on the front-end's own (empty) store.
#[test]
#[ignore = "needs PostgreSQL and NATS: set PRIVTEL_PG_URL and PRIVTEL_NATS_URL"]
fn the_console_exports_and_erases_where_the_writer_stores() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let db = TestDb::new();
    let guard = stream();
    // Two operators: a lead who grants, an engineer who acts.
    let admin = |args: &[&str]| {
        let out = Command::new(example("admin")).args(args).output().unwrap();
        assert!(out.status.success(), "admin {args:?}: {}", text(&out.stderr));
        out
    };
    let mut operators = String::new();
    for (name, approver) in [("ops.lead", true), ("ops.jdoe", false)] {
        let printed = text(&admin(&["operator-token", "--name", name]).stdout);
        let token = printed.lines().find(|l| l.starts_with("ptop_")).unwrap().to_owned();
        let entry = &printed[printed.find("[[operator]]").unwrap()..];
        operators.push_str(&entry.replace("approver = false", &format!("approver = {approver}")));
        operators.push('\n');
        std::fs::write(path(name), &token).unwrap();
        std::fs::set_permissions(path(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(path("operators.toml"), operators).unwrap();
    let more =
        ["--admin-socket", &path("admin.sock"), "--operators", &path("operators.toml")].map(String::from);
    let c = cloud_with(dir.path(), &guard.options, Some(&db.url), &more);
    let log = dir.path().join("web.log");
    web_requests(&log, 0, 600);
    let (sent, out) = agent(dir.path(), &c, &log);
    assert!(sent >= 500, "{}", text(&out.stdout));
    let sent = i64::try_from(sent).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || db.rows().0 >= sent),
        "{:?}{}",
        db.rows(),
        logs(dir.path())
    );
    let console = |who: &str, args: &[&str]| {
        let mut all = vec!["--socket".to_owned(), path("admin.sock"), "--token-file".to_owned(), path(who)];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let out = Command::new(example("admin")).args(&all).output().unwrap();
        assert!(out.status.success(), "admin {args:?}: {}{}", text(&out.stderr), logs(dir.path()));
        out
    };
    let out = console(
        "ops.lead",
        &[
            "grant",
            "--operator",
            "ops.jdoe",
            "--customer",
            "acme",
            "--scope",
            "export-person,erase-person",
            "--justification",
            "forwarded request",
            "--ticket",
            "DSAR-9",
        ],
    );
    let grant = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["grant"].to_string();
    // u-bob wrote every third request; his records are in PostgreSQL only.
    let export = |who| console("ops.jdoe", &["export-person", "--grant", &grant, "--customer", "acme", who]);
    let lines = |out: &Output| -> u64 {
        let said = text(&out.stderr);
        said.trim().strip_prefix("admin: ").and_then(|l| l.strip_suffix(" lines")).unwrap().parse().unwrap()
    };
    let bob = lines(&export("u-bob"));
    assert!(bob >= 100, "u-bob's records found where the writer stored them: {bob}");
    let before = db.rows().0;
    console("ops.jdoe", &["erase-person", "--grant", &grant, "--customer", "acme", "u-bob"]);
    assert_eq!(db.rows().0, before - i64::try_from(bob).unwrap(), "u-bob's records erased in PostgreSQL");
    assert_eq!(lines(&export("u-bob")), 0);
    assert!(lines(&export("u-alice")) > 0, "nobody else's records");
}

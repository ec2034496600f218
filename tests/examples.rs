//! The example programs, run as processes (`cargo test` builds them first).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} not built: run `cargo test` for the whole package", path.display());
    path
}

fn run(name: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// [`run`] for command lines that must end quickly (help, version, bad
/// arguments): a program that starts working instead is killed after a
/// minute and the test fails, rather than hanging. Backtraces are on, so
/// that a panic or an error printed with its backtrace shows.
fn run_briefly(name: &str, args: &[&str]) -> Output {
    let mut child = Command::new(example(name))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} {args:?} still running after a minute\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--help` and `-h` print the help (with a usage line) on stdout and exit
/// 0; `--version` prints the program's version and exits 0.
fn assert_help_and_version(name: &str) {
    for flag in ["--help", "-h"] {
        let out = run_briefly(name, &[flag]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{name} {flag}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains(&format!("Usage: {name}")), "{name} {flag}: no usage line\n{stdout}");
        assert!(stdout.contains("--help") && stdout.contains("--version"), "{name} {flag}\n{stdout}");
    }
    let out = run_briefly(name, &["--version"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{name} --version\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{name} --version: {stdout}");
    assert_eq!(stdout.lines().count(), 1, "{name} --version: {stdout}");
}

/// A usage error: exit status 2, nothing on stdout, and clap's message on
/// stderr holding every one of `expected`, with no panic and no backtrace.
/// Returns stderr.
#[track_caller]
fn assert_usage_error(name: &str, args: &[&str], expected: &[&str]) -> String {
    let out = run_briefly(name, args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{name} {args:?}\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{name} {args:?}: {stderr}");
    for word in expected {
        assert!(stderr.contains(word), "{name} {args:?}: {word:?} not in\n{stderr}");
    }
    for word in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(word), "{name} {args:?}: {word:?} in\n{stderr}");
    }
    stderr
}

/// The help opens with the program's own summary (its doc comment), not the
/// package's description, which is what `#[command(about)]` without a value
/// would put there.
#[test]
fn every_example_describes_itself_not_the_package() {
    let mut wrong = Vec::new();
    for name in ["demo", "agent", "audit", "cloud", "admin", "hash", "normalize", "records"] {
        let out = run_briefly(name, &["-h"]);
        let first = text(&out.stdout).lines().next().unwrap_or_default().to_owned();
        if first.is_empty() || first == env!("CARGO_PKG_DESCRIPTION") {
            wrong.push(format!("{name}: {first:?}"));
        }
    }
    assert!(wrong.is_empty(), "help without the program's summary:\n{}", wrong.join("\n"));
}

#[test]
fn demo_prints_help_and_version() {
    assert_help_and_version("demo");
}

#[test]
fn agent_prints_help_and_version() {
    assert_help_and_version("agent");
}

#[test]
fn audit_prints_help_and_version() {
    assert_help_and_version("audit");
}

#[test]
fn cloud_prints_help_and_version() {
    assert_help_and_version("cloud");
}

#[test]
fn hash_prints_help_and_version() {
    assert_help_and_version("hash");
    // `-h` is the help, not a file called -h.
    let out = run_briefly("hash", &["-h"]);
    assert!(!text(&out.stderr).contains("-h:"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("<PATH>..."));
}

#[test]
fn normalize_prints_help_and_version() {
    assert_help_and_version("normalize");
}

#[test]
fn records_prints_help_and_version() {
    assert_help_and_version("records");
}

#[test]
fn hash_rejects_bad_arguments_with_status_2() {
    assert_usage_error("hash", &[], &["required arguments were not provided", "<PATH>"]);
    assert_usage_error("hash", &["--bogus", "."], &["unexpected argument '--bogus'"]);
    // A near miss gets a suggestion.
    assert_usage_error("hash", &["--stat", "."], &["'--stat'", "--stats"]);
    assert_usage_error("hash", &["--threads", "many", "."], &["invalid value 'many' for '--threads <N>'"]);
    assert_usage_error("hash", &["--max-size=-1", "."], &["invalid value '-1' for '--max-size <BYTES>'"]);
    assert_usage_error("hash", &["--cache"], &["'--cache <FILE>'"]);
    // `--` ends the options: a file named like one is hashed (here: missing,
    // so status 1, a runtime failure, not 2).
    let out = run_briefly("hash", &["--", "--bogus"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("hash: --bogus: unreadable"), "{}", text(&out.stderr));
}

#[test]
fn hash_runtime_failure_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.bin");
    std::fs::write(&cache, b"not a cache").unwrap();
    let out = run_briefly("hash", &["--cache", cache.to_str().unwrap(), dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("hash: ") && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains(cache.to_str().unwrap()), "{stderr}");
}

#[test]
fn normalize_rejects_bad_arguments_with_status_2() {
    assert_usage_error("normalize", &["--bogus"], &["unexpected argument '--bogus'"]);
    assert_usage_error("normalize", &["--icann"], &["'--icann'", "--icann-only"]);
    assert_usage_error("normalize", &["urls.txt"], &["unexpected argument 'urls.txt'"]);
}

#[test]
fn records_rejects_arguments_with_status_2() {
    assert_usage_error("records", &["--bogus"], &["unexpected argument '--bogus'"]);
    assert_usage_error("records", &["extra"], &["unexpected argument 'extra'"]);
}

/// The agent reports every missing required argument at once (clap).
#[test]
fn agent_without_arguments_names_every_required_one() {
    assert_usage_error("agent", &[], &["--server", "--ca", "--customer", "--device", "--policy", "--spool"]);
}

/// The cloud service without `--store`.
#[test]
fn cloud_without_arguments_names_store() {
    assert_usage_error("cloud", &[], &["--store"]);
}

#[test]
fn normalize_prints_one_line_per_input() {
    let input = "WWW.Example.co.uk\n\nhttp://user@a.b.github.io:80/x\nfile:///etc/passwd\n0x7f.1\n\u{ff45}xample.com\n..\n";
    let out = run("normalize", &[], input.as_bytes());
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "www.example.co.uk\texample.co.uk\n\
         ERROR\tempty input\n\
         a.b.github.io\tb.github.io\n\
         ERROR\tscheme 'file' is not a web scheme (expected http, https, ws, wss or ftp)\n\
         127.0.0.1\t\n\
         example.com\texample.com\n\
         ERROR\tempty host\n"
    );
    let icann = run("normalize", &["--icann-only"], b"a.b.github.io\n");
    assert_eq!(String::from_utf8(icann.stdout).unwrap(), "a.b.github.io\tgithub.io\n");
    // A line that is not UTF-8 is one input with one error line.
    let bad = run("normalize", &[], b"\xff\xfe\nexample.org\n");
    assert_eq!(
        String::from_utf8(bad.stdout).unwrap(),
        "ERROR\tinput is not utf-8\nexample.org\texample.org\n"
    );
}

#[test]
fn hash_prints_sha256sum_and_b3sum_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("abc"), b"abc").unwrap();
    std::fs::write(dir.path().join("back\\slash"), b"").unwrap();
    let root = dir.path().to_str().unwrap();
    let sha = run("hash", &["--alg", "sha256", root], b"");
    assert!(sha.status.success(), "{}", String::from_utf8_lossy(&sha.stderr));
    assert_eq!(
        String::from_utf8(sha.stdout).unwrap(),
        format!(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  {root}/abc\n\
             \\e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  {}\n",
            format!("{root}/back\\slash").replace('\\', "\\\\")
        )
    );
    let b3 = run("hash", &["--alg", "blake3", &format!("{root}/abc")], b"");
    assert_eq!(
        String::from_utf8(b3.stdout).unwrap(),
        format!("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85  {root}/abc\n")
    );
    // A path that cannot be hashed: reported on stderr, exit status 1, the
    // rest still printed.
    let missing = format!("{root}/missing");
    let out = run("hash", &["--alg", "sha256", &missing, &format!("{root}/abc")], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains(&format!("hash: {missing}: unreadable")));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    // Bad arguments: exit status 2 and clap's message, naming the argument
    // and what it takes.
    let bad = run("hash", &["--alg", "md5", root], b"");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(err.contains("invalid value 'md5' for '--alg <ALG>'"), "{err}");
    assert!(err.contains("[possible values: sha256, blake3, both]"), "{err}");
    assert!(bad.stdout.is_empty());
}

#[test]
fn hash_cache_file_round_trips_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    let cache = dir.path().join("cache.bin");
    let file = dir.path().join("f");
    let args = ["--stats", "--cache", cache.to_str().unwrap(), file.to_str().unwrap()];
    let first = run("hash", &args, b"");
    assert!(String::from_utf8(first.stderr).unwrap().contains("(0 from cache)"));
    let second = run("hash", &args, b"");
    assert!(String::from_utf8(second.stderr).unwrap().contains("(1 from cache)"));
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn records_prints_every_kind() {
    let out = run("records", &[], b"");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("18 records:"), "{text}");
    assert!(text.contains("licence_session.email"));
}

#[test]
fn demo_runs_end_to_end_and_cleans_up() {
    let out = run("demo", &[], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // The sample device's binaries got their verdicts through the private
    // lookup, and the domains theirs.
    assert!(text.contains("binary dropper    c5548314cdf8…  threat high"), "{text}");
    assert!(text.contains("domain bad-downloads.example    reputation high risk"), "{text}");
    assert!(text.contains("domain example.co.uk            reputation moderate risk"), "{text}");
    // Enhance sends sightings, no records: enrichment stores nothing of the
    // device. What names the person (the user, executions, web requests)
    // went under personalised usage, which this customer's users agreed to.
    assert!(text.contains("enrichment               on     0 sent,  0 dropped"), "{text}");
    assert!(text.contains("personalised_usage       on    11 sent,  0 dropped"), "{text}");
    // Erasure, then retention.
    assert!(text.contains("After erasure, an export finds 0 records."), "{text}");
    assert!(text.contains("\"overdue\":false"));
    assert!(text.contains("Done in") && text.contains("temporary files removed"));
    // No clear personal value of the sample data in the report.
    for secret in ["alice.martin@corp.example", "ALICE-LAPTOP", "10.20.30.40", "private-repo"] {
        assert!(!text.contains(secret), "{secret} in the demo's output");
    }
}

#[test]
fn admin_fails_with_one_line_when_the_service_or_the_token_is_missing() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no.sock");
    let token = dir.path().join("ops.token");
    std::fs::write(&token, "ptop_0").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (socket, token) = (socket.to_str().unwrap(), token.to_str().unwrap());
    // No service behind the socket: status 1, one line naming it.
    let out = run_briefly("admin", &["--socket", socket, "--token-file", token, "whoami"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("admin: ") && stderr.contains("no.sock"), "{stderr}");
    // No socket or token given at all: said so, nothing sent.
    let out = run_briefly("admin", &["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--socket PATH"), "{}", text(&out.stderr));
    let out = run_briefly("admin", &["--socket", socket, "whoami"]);
    assert!(text(&out.stderr).contains("--token-file FILE"), "{}", text(&out.stderr));
    // A missing token file is named.
    let missing = dir.path().join("missing.token");
    let out =
        run_briefly("admin", &["--socket", socket, "--token-file", missing.to_str().unwrap(), "whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.token"), "{}", text(&out.stderr));
}

#[test]
fn admin_prints_help_and_version() {
    assert_help_and_version("admin");
    for args in [&["erase-person", "--help"][..], &["help", "erase-person"]] {
        let out = run_briefly("admin", args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: admin erase-person"), "{args:?}: {stdout}");
        assert!(stdout.contains("--grant <GRANT>") && stdout.contains("--request <REQUEST>"), "{stdout}");
    }
}

#[test]
fn admin_rejects_bad_arguments_with_status_2() {
    let out = run_briefly("admin", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage: admin"), "{}", text(&out.stderr));
    assert_usage_error("admin", &["bogus"], &["unrecognized subcommand 'bogus'"]);
    assert_usage_error("admin", &["--bogus", "whoami"], &["unexpected argument '--bogus'"]);
    assert_usage_error("admin", &["export-person", "u-a"], &["--grant <GRANT>", "--customer <CUSTOMER>"]);
    assert_usage_error("admin", &["instruct", "--customer", "acme", "1", "--by", "x"], &["--proceed"]);
    assert_usage_error("admin", &["manifest"], &["--policy <FILE>"]);
}

/// The administrator's tool against a real `cloud` process: every action
/// through the console socket, under grants, logged, verifiable offline.
#[test]
fn admin_acts_on_a_running_cloud_through_its_console() {
    use std::io::{BufRead as _, BufReader};
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    // Two operators: a lead who approves, an engineer who acts.
    let mut tokens = Vec::new();
    let mut operators = String::new();
    for (name, approver) in [("ops.lead", true), ("ops.jdoe", false)] {
        let out = run_briefly("admin", &["operator-token", "--name", name]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let printed = text(&out.stdout);
        let token = printed.lines().find(|l| l.starts_with("ptop_")).unwrap().to_owned();
        let entry = &printed[printed.find("[[operator]]").unwrap()..];
        operators.push_str(&entry.replace("approver = false", &format!("approver = {approver}")));
        operators.push('\n');
        let file = path(&format!("{name}.token"));
        std::fs::write(&file, &token).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        tokens.push(file);
    }
    std::fs::write(path("operators.toml"), operators).unwrap();
    let settings = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/settings.toml");
    let socket = path("admin.sock");
    let mut cloud = Command::new(example("cloud"))
        .args(["--store", &path("engine.db"), "--settings", settings, "--admin-socket", &socket])
        .args(["--operators", &path("operators.toml"), "--cert-out", &path("ca.pem")])
        .args(["--master-key", &path("master.key")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(cloud.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("listening on"), "{first}");
    let admin = |token: &str, args: &[&str]| {
        let mut all = vec!["--socket", &socket, "--token-file", token];
        all.extend_from_slice(args);
        run_briefly("admin", &all)
    };
    let (lead, jdoe) = (tokens[0].as_str(), tokens[1].as_str());

    let out = admin(jdoe, &["whoami"]);
    assert!(text(&out.stdout).contains("ops.jdoe"), "{}", text(&out.stderr));
    // jdoe cannot grant; the lead grants jdoe an export.
    let grant = ["grant", "--operator", "ops.jdoe", "--customer", "acme", "--scope", "export-person"];
    let why = ["--justification", "forwarded request", "--ticket", "DSAR-1"];
    let out = admin(jdoe, &[&grant[..], &why[..]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("approver"), "{}", text(&out.stderr));
    let out = admin(lead, &[&grant[..], &why[..]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let granted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = granted["grant"].to_string();
    let out = admin(jdoe, &["export-person", "--grant", &id, "--customer", "acme", "u-alice"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "admin: 0 lines\n");
    // Out of scope: refused, status 1.
    let out = admin(jdoe, &["erase-person", "--grant", &id, "--customer", "acme", "u-alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refused (denied)"), "{}", text(&out.stderr));
    // A token file others may read is refused before anything is sent.
    std::fs::set_permissions(jdoe, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(text(&admin(jdoe, &["whoami"]).stderr).contains("only its owner"));
    std::fs::set_permissions(jdoe, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The log as the customer gets it verifies offline; one flipped byte does not.
    let out = admin(jdoe, &["raw-log", "--out", &path("access.bin")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (checkpoint, key) = (cp["checkpoint"].as_str().unwrap(), cp["public_key"].as_str().unwrap());
    let verify = |log: &str| {
        run_briefly("admin", &["verify-log", "--log", log, "--checkpoint", checkpoint, "--public-key", key])
    };
    let out = verify(&path("access.bin"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("verified: 3 entries"), "{}", text(&out.stdout));
    let mut bytes = std::fs::read(path("access.bin")).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    std::fs::write(path("tampered.bin"), bytes).unwrap();
    assert_eq!(verify(&path("tampered.bin")).status.code(), Some(1));

    // Contract end: the copy first, then the deletion and its signed receipt.
    let scope =
        ["grant", "--operator", "ops.jdoe", "--customer", "acme", "--scope", "copy-customer,delete-customer"];
    let out = admin(lead, &[&scope[..], &why[..]].concat());
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["grant"].to_string();
    let out =
        admin(jdoe, &["copy-customer", "--grant", &id, "--customer", "acme", "--out", &path("copy.jsonl")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let copy = std::fs::read_to_string(path("copy.jsonl"))
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stderr), text(&out.stdout)));
    assert!(copy.lines().next().unwrap().contains("privtel-customer-copy"), "{copy}");
    let out = admin(jdoe, &["delete-customer", "--grant", &id, "--customer", "acme"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::write(path("receipt.json"), &out.stdout).unwrap();
    let out =
        run_briefly("admin", &["verify-receipt", "--receipt", &path("receipt.json"), "--public-key", key]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut forged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("receipt.json")).unwrap()).unwrap();
    forged["receipt"] = serde_json::Value::String(
        forged["receipt"].as_str().unwrap().replace("\"records\":", "\"records\":1"),
    );
    std::fs::write(path("forged.json"), forged.to_string()).unwrap();
    let out =
        run_briefly("admin", &["verify-receipt", "--receipt", &path("forged.json"), "--public-key", key]);
    assert_eq!(out.status.code(), Some(1), "an edited receipt does not verify");
    assert_eq!(std::fs::metadata(path("master.key")).unwrap().permissions().mode() & 0o777, 0o600);
    cloud.kill().unwrap();
    cloud.wait().unwrap();
}

//! The example programs, run as processes (`cargo test` builds them first).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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
    // Bad arguments: exit status 2 and a message.
    let bad = run("hash", &["--alg", "md5", root], b"");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8(bad.stderr).unwrap().contains("--alg takes sha256, blake3 or both"));
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
    // Personalised usage is off: its record was dropped, nothing sent.
    assert!(text.contains("personalised_usage       off    0 sent,  1 dropped"), "{text}");
    // Erasure, then retention.
    assert!(text.contains("After erasure, an export finds 0 records."), "{text}");
    assert!(text.contains("\"overdue\":false"));
    assert!(text.contains("Done in") && text.contains("temporary files removed"));
    // No clear personal value of the sample data in the report.
    for secret in ["alice.martin@corp.example", "ALICE-LAPTOP", "10.20.30.40", "private-repo"] {
        assert!(!text.contains(secret), "{secret} in the demo's output");
    }
}

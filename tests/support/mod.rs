//! Helpers shared by the tests that run the example programs as processes
//! (`tests/e2e.rs`, `tests/e2e_scale.rs`).

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built example program `name` (beside the test binary).
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo test` for the whole package (with `--features scale` for e2e_scale)",
        path.display()
    );
    path
}

/// A file of `examples/data`.
pub(crate) fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data").join(name)
}

/// Bytes a process printed, as text.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An enrollment token of acme for 100 devices from the cloud's register
/// in `dir` (issued once by `cloud --issue-token`, kept in `dir/token`).
pub(crate) fn token(dir: &Path) -> String {
    let kept = dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&kept) {
        return t;
    }
    let out = Command::new(example("cloud"))
        .arg("--store")
        .arg(dir.join("engine.db"))
        .args(["--issue-token", "acme", "--token-uses", "100"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout).trim().to_owned();
    std::fs::write(&kept, &t).unwrap();
    t
}

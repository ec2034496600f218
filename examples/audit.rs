//! Prints an agent's audit log: every message it sent, one JSON line each
//! (`{"at", "kind", "message"}`), its sealed messages opened with the key
//! of the agent's spool (`SPOOL.seal.key`), which only the device holds.
//!
//! ```text
//! cargo run --release --example audit -- --spool spool.db audit.jsonl
//! ```
//!
//! Exit status: 0 printed, 1 the log or the key could not be read (the
//! error names the file and the line, never its content), 2 bad arguments.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Prints an agent's audit log, its sealed messages opened with the key
/// of the agent's spool.
#[derive(Parser)]
#[command(name = "audit", version)]
struct Args {
    /// The agent's spool: its key (`SPOOL.seal.key`) opens the sealed
    /// messages.
    #[arg(long, value_name = "FILE")]
    spool: PathBuf,
    /// The audit log (the current file, or one rotated aside).
    #[arg(value_name = "AUDIT_LOG")]
    log: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let entries = privtel::agent::read_audit_log(&args.log, &args.spool)?;
    let mut out = io::stdout().lock();
    for e in entries {
        let line = serde_json::json!({ "at": e.at.to_string(), "kind": e.kind, "message": e.message });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

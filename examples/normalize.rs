//! Reads URLs or hosts from stdin, one per line (an empty line is an input
//! too), and prints exactly one line per input:
//!
//! ```text
//! <host>\t<registrable domain, empty when there is none>
//! ERROR\t<the rule the input broke>
//! ```
//!
//! ```text
//! cargo run --release --example normalize -- [--icann-only] [--stats] < urls.txt
//! cargo run --release --example normalize -- --help
//! ```
//!
//! Options: `--icann-only` (look up the ICANN section only), `--stats`
//! (inputs, seconds and inputs per second on stderr).
//!
//! Exit status: 0 every input answered (an input that breaks a rule is an
//! answer), 1 stdin or stdout failed, 2 bad arguments.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use privtel::domain::Normalizer;

/// Reads URLs or hosts from stdin, one per line, and prints one line per
/// input: its host and registrable domain, or the rule it broke.
///
/// Output lines: `<host>\t<registrable domain, empty when there is none>` or
/// `ERROR\t<the rule the input broke>`. An empty line is an input too.
#[derive(Parser)]
#[command(name = "normalize", version)]
struct Args {
    /// Look up the ICANN section of the Public Suffix List only.
    #[arg(long)]
    icann_only: bool,
    /// Print inputs, seconds and inputs per second to stderr.
    #[arg(long)]
    stats: bool,
}

fn main() -> ExitCode {
    // Bad arguments: clap prints why and exits with status 2.
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("normalize: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let normalizer = Normalizer::builder().icann_only(args.icann_only).build()?;
    let stdin = io::stdin().lock();
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let start = Instant::now();
    let mut count = 0u64;
    let mut line = Vec::new();
    let mut input = stdin;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).context("reading stdin")? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        count += 1;
        // A line that is not UTF-8 is an input like any other: it gets its
        // own error line, and the rest go on.
        let Ok(text) = std::str::from_utf8(&line) else {
            writeln!(out, "ERROR\tinput is not utf-8")?;
            continue;
        };
        match normalizer.normalize(text) {
            // Plain byte writes: formatting machinery was a tenth of the
            // time of a million hosts.
            Ok(n) => {
                out.write_all(n.host().as_bytes())?;
                out.write_all(b"\t")?;
                out.write_all(n.registrable().unwrap_or("").as_bytes())?;
                out.write_all(b"\n")?;
            }
            Err(e) => writeln!(out, "ERROR\t{}", e.kind())?,
        }
    }
    out.flush()?;
    if args.stats {
        let secs = start.elapsed().as_secs_f64();
        eprintln!("normalize: {count} inputs in {secs:.3} s: {:.0} inputs/s", count as f64 / secs);
    }
    Ok(())
}

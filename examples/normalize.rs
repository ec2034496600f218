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
    let mut input = io::BufReader::with_capacity(1 << 16, io::stdin().lock());
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let start = Instant::now();
    let mut count = 0u64;
    // Lines are answered where they lie in the read buffer; only a line
    // that straddles two reads is copied, into `partial`.
    let mut partial = Vec::new();
    loop {
        let buf = input.fill_buf().context("reading stdin")?;
        if buf.is_empty() {
            // The last line, if it has no newline.
            if !partial.is_empty() {
                count += 1;
                answer(&normalizer, &partial, &mut out)?;
            }
            break;
        }
        let mut lines = buf.split(|&b| b == b'\n');
        // What follows the last newline of `buf`: the start of a line.
        let rest = lines.next_back().unwrap_or_default();
        for line in lines {
            count += 1;
            if partial.is_empty() {
                answer(&normalizer, line, &mut out)?;
            } else {
                partial.extend_from_slice(line);
                answer(&normalizer, &partial, &mut out)?;
                partial.clear();
            }
        }
        partial.extend_from_slice(rest);
        let read = buf.len();
        input.consume(read);
    }
    out.flush()?;
    if args.stats {
        let secs = start.elapsed().as_secs_f64();
        eprintln!("normalize: {count} inputs in {secs:.3} s: {:.0} inputs/s", count as f64 / secs);
    }
    Ok(())
}

/// Writes the answer to one input line (without its newline).
fn answer(normalizer: &Normalizer, line: &[u8], out: &mut impl Write) -> io::Result<()> {
    // A line that is not UTF-8 is an input like any other: it gets its own
    // error line, and the rest go on.
    let Ok(text) = std::str::from_utf8(line) else {
        return writeln!(out, "ERROR\tinput is not utf-8");
    };
    match normalizer.normalize(text) {
        // Plain byte writes: formatting machinery was a tenth of the time
        // of a million hosts.
        Ok(n) => {
            out.write_all(n.host().as_bytes())?;
            out.write_all(b"\t")?;
            out.write_all(n.registrable().unwrap_or("").as_bytes())?;
            out.write_all(b"\n")
        }
        Err(e) => writeln!(out, "ERROR\t{}", e.kind()),
    }
}

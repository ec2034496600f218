//! Reads URLs or hosts from stdin, one per line (an empty line is an input
//! too), and prints exactly one line per input:
//!
//! ```text
//! <host>\t<registrable domain, empty when there is none>
//! ERROR\t<the rule the input broke>
//! ```
//!
//! `cargo run --release --example normalize < urls.txt`
//!
//! Options: `--icann-only` (look up the ICANN section only), `--stats`
//! (inputs, seconds and inputs per second on stderr).

use std::io::{self, BufRead, Write};
use std::time::Instant;

use anyhow::{Context as _, bail};
use privtel::domain::Normalizer;

fn main() -> anyhow::Result<()> {
    let mut icann_only = false;
    let mut stats = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--icann-only" => icann_only = true,
            "--stats" => stats = true,
            other => bail!("unknown option {other} (expected --icann-only or --stats)"),
        }
    }
    let normalizer = Normalizer::builder().icann_only(icann_only).build()?;
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
            Ok(n) => writeln!(out, "{}\t{}", n.host(), n.registrable().unwrap_or(""))?,
            Err(e) => writeln!(out, "ERROR\t{}", e.kind())?,
        }
    }
    out.flush()?;
    if stats {
        let secs = start.elapsed().as_secs_f64();
        eprintln!("normalize: {count} inputs in {secs:.3} s: {:.0} inputs/s", count as f64 / secs);
    }
    Ok(())
}

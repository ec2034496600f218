//! Builds one record of every kind, prints each as JSON with its bincode
//! size, and shows what the default treatments would keep.
//!
//! ```text
//! cargo run --release --example records
//! cargo run --release --example records -- --help
//! ```
//!
//! Exit status: 0 done, 1 a record did not encode or round-trip (or stdout
//! failed), 2 bad arguments (it takes none).

use std::io::{self, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use privtel::model::{Record, Treatment, VisitPersonal};

/// Builds one record of every kind, prints each as JSON with its bincode
/// size, and shows what the default treatments would keep.
#[derive(Parser)]
#[command(name = "records", version)]
struct Args {}

fn main() -> ExitCode {
    // Bad arguments: clap prints why and exits with status 2.
    let Args {} = Args::parse();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("records: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
    let records = privtel_testkit::fixtures::records("demo");
    let mut total_bin = 0;
    let mut total_json = 0;
    for record in &records {
        let json = serde_json::to_string(record).context("encoding json")?;
        let bin = bincode::serde::encode_to_vec(record, config).context("encoding bincode")?;
        let (back, _): (Record, usize) =
            bincode::serde::decode_from_slice(&bin, config).context("decoding bincode")?;
        anyhow::ensure!(&back == record, "bincode round trip changed a {}", record.body.kind_name());
        writeln!(
            out,
            "# {} ({}): {} bytes bincode, {} bytes json",
            record.body.kind_name(),
            record.program,
            bin.len(),
            json.len()
        )?;
        writeln!(out, "{json}")?;
        total_bin += bin.len();
        total_json += json.len();
    }
    writeln!(out)?;
    writeln!(out, "{} records: {total_bin} bytes bincode, {total_json} bytes json", records.len())?;

    // What the model's default treatments would do, field by field.
    writeln!(out)?;
    writeln!(out, "default treatment of each personal field:")?;
    for spec in privtel::model::fields::ALL {
        writeln!(out, "  {:<38} {:<18} {}", spec.path, spec.category, spec.default_treatment)?;
    }
    let mut personal = 0;
    let mut dropped = 0;
    for mut record in records {
        record.visit_personal(&mut |mut f| {
            personal += 1;
            if f.spec.default_treatment == Treatment::Withhold {
                f.value.withhold();
                dropped += 1;
            }
        });
    }
    writeln!(out, "{personal} personal values in the sample, {dropped} dropped by default")?;
    Ok(())
}

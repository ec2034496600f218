//! Builds one record of every kind, prints each as JSON with its bincode
//! size, and shows what the default treatments would keep.
//!
//! `cargo run --release --example records`

use anyhow::Context as _;
use privtel::model::{Record, Treatment, VisitPersonal};

fn main() -> anyhow::Result<()> {
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
        println!(
            "# {} ({}): {} bytes bincode, {} bytes json",
            record.body.kind_name(),
            record.program,
            bin.len(),
            json.len()
        );
        println!("{json}");
        total_bin += bin.len();
        total_json += json.len();
    }
    println!();
    println!("{} records: {total_bin} bytes bincode, {total_json} bytes json", records.len());

    // What the model's default treatments would do, field by field.
    println!();
    println!("default treatment of each personal field:");
    for spec in privtel::model::fields::ALL {
        println!("  {:<38} {:<18} {}", spec.path, spec.category, spec.default_treatment);
    }
    let mut personal = 0;
    let mut dropped = 0;
    for mut record in records {
        record.visit_personal(&mut |mut f| {
            personal += 1;
            if f.spec.default_treatment == Treatment::Drop {
                f.value.withhold();
                dropped += 1;
            }
        });
    }
    println!("{personal} personal values in the sample, {dropped} dropped by default");
    Ok(())
}

//! Figures of a customer's lifecycle on the SQLite engine with per-customer
//! data keys, measured once each on real files in a temporary folder:
//!
//! * the customer copy of a customer with 1 M rows (JSON Lines into a sink
//!   that only counts bytes): MB/s, goal at least 100;
//! * contract end of that customer among 2 M rows: the time until its data
//!   is unreadable (its key destroyed; goal under 10 ms) and until its rows
//!   are gone (goal under 5 s).
//!
//! `cargo run --release -p privtel-store --example customer_lifecycle [ROWS_PER_CUSTOMER]`
//!
//! Prints one `RATIO` line per goal (measured / goal, higher is better).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use privtel_store::{
    AdmittedBatch, CustomerId, DeviceId, EngineOptions, EngineStore, KeyStore, KeyStoreOptions, MasterKey,
    Sequence, SqliteEngine, Timestamp,
};

/// A sink that counts what is written.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

use privtel_testkit::bench::{feature_event, ratio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_customer: u64 = std::env::args().nth(1).map_or(Ok(1_000_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let now = Timestamp::from_unix_seconds(1_795_752_000)?;
    println!("load before: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    let keys = Arc::new(KeyStore::open(
        dir.path().join("keys.json"),
        MasterKey::generate(),
        KeyStoreOptions::default(),
    )?);
    let mut engine =
        SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default().key_store(keys))?;
    let (acme, globex) = (CustomerId::new("acme")?, CustomerId::new("globex")?);

    // Fill: both customers, batches of 1,000 sealed under their keys, ten
    // batches a group.
    let start = Instant::now();
    let encoder = engine.encoder();
    let batches = per_customer / 1_000;
    for g in 0..batches.div_ceil(5) {
        let mut group = Vec::new();
        for b in (g * 5)..((g + 1) * 5).min(batches) {
            for (c, customer) in [&acme, &globex].into_iter().enumerate() {
                let first = b * 1_000;
                let records = (first..first + 1_000)
                    .map(|i| Some(feature_event(i + c as u64 * 10_000_000, now, 1000)))
                    .collect();
                group.push(encoder.encode(
                    AdmittedBatch {
                        customer: customer.clone(),
                        device: DeviceId::new("sender")?,
                        seq: Sequence { stream: 1, first_seq: first + 1, skipped: 0 },
                        records,
                    },
                    now,
                ));
            }
        }
        for r in engine.ingest_encoded(group, now) {
            r?;
        }
    }
    let fill = start.elapsed().as_secs_f64();
    let total = engine.record_count()?;
    println!("filled {total} rows in {fill:.1} s ({:.0} rows/s)", total as f64 / fill);
    let db = std::fs::metadata(dir.path().join("engine.db"))?.len();
    println!("engine file {:.0} MiB", db as f64 / (1u64 << 20) as f64);

    // The customer copy.
    let mut fields = serde_json::Map::new();
    fields.insert("policy_version".into(), "bench".into());
    let mut sink = Count(0);
    let start = Instant::now();
    let stats = engine.export_customer(&acme, &fields, &mut sink)?;
    let secs = start.elapsed().as_secs_f64();
    let mb = stats.bytes as f64 / 1e6;
    println!(
        "customer copy: {} records, {} lines, {:.1} MB in {secs:.2} s ({:.0} records/s)",
        stats.records,
        stats.lines,
        mb,
        stats.records as f64 / secs
    );
    ratio("customer_copy_mb_per_s", mb / secs, 100.0, true, "MB/s");

    // Contract end.
    let start = Instant::now();
    let receipt = engine.delete_customer(&acme, now)?;
    let wall = start.elapsed().as_secs_f64();
    let since = |t: Timestamp| (t.unix_nanos() - receipt.started_at.unix_nanos()) as f64 / 1e6;
    let unreadable = since(receipt.keys_destroyed_at.ok_or("no key destroyed")?);
    let gone = since(receipt.completed_at);
    println!("contract end: {:?}; wall {wall:.2} s", receipt.removed);
    ratio("contract_end_unreadable_ms", unreadable, 10.0, false, "ms");
    ratio("contract_end_rows_gone_s", gone / 1000.0, 5.0, false, "s");
    assert_eq!(engine.record_count()?, per_customer, "the other customer's rows remain");
    println!("load after: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    Ok(())
}

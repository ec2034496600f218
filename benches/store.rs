//! Storage figures for the store issue's goals, measured once each on real
//! SQLite files in a temporary folder (not criterion: a sweep of a million
//! rows cannot be repeated a hundred times). Prints one `RATIO` line per goal
//! (measured / goal, higher is better) with the raw figure.
//!
//! `cargo bench --bench store` (or `scripts/bench-store.sh`).
//!
//! Measured: spool appends in batches of 1,000 with `synchronous = FULL`;
//! engine ingest in batches of 1,000; a sweep removing 1 M expired rows out
//! of 2 M; one person's export (about 100 records) out of 1 M rows.
//! Not measured: encryption at rest (off here), the network.

use privtel_testkit::bench::{feature_event, ratio};
use std::time::Instant;

use privtel::model::{CustomerId, DeviceId, Record, Timestamp, UserId};
use privtel::retention::RetentionPolicy;
use privtel::store::{EngineOptions, EngineStore, Spool, SpoolOptions, SqliteEngine};
use time::Duration;

fn main() {
    // Cargo passes `--bench`; nothing else to parse.
    let dir = tempfile::tempdir().expect("temp dir");
    let now = Timestamp::from_unix_seconds(1_795_752_000).expect("in range");
    println!("load before: {:?}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());

    // Spool appends.
    let mut spool = Spool::open(dir.path().join("spool.db"), SpoolOptions::default()).expect("spool");
    let batch: Vec<Record> = (0..1_000).map(|i| feature_event(i, now, 1000)).collect();
    let start = Instant::now();
    let rounds = 200;
    for _ in 0..rounds {
        spool.append_batch(&batch, now).expect("append");
    }
    let per_s = (rounds * batch.len()) as f64 / start.elapsed().as_secs_f64();
    ratio("spool_appends_per_s", per_s, 100_000.0, true, "records/s");

    // Engine ingest of 2 M rows, half of them past the 30-day TTL.
    let mut engine =
        SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).expect("engine");
    let customer = CustomerId::new("bench").expect("valid");
    let old = now.checked_sub(Duration::days(40)).expect("in range");
    let total = 2_000_000u64;
    let users = 9_973; // prime: every person has records of both ages
    let device = DeviceId::new("bench").expect("valid");
    let start = Instant::now();
    let mut seq = 1;
    for chunk in 0..(total / 1_000) {
        let at = if chunk % 2 == 0 { old } else { now };
        let records: Vec<Record> = (0..1_000).map(|i| feature_event(chunk * 1_000 + i, at, users)).collect();
        engine.ingest(&customer, &device, 1, seq, records, now).expect("ingest");
        seq += 1_000;
    }
    let per_s = total as f64 / start.elapsed().as_secs_f64();
    ratio("engine_ingest_per_s", per_s, 200_000.0, true, "records/s");

    // Export of one person out of 2 M rows (1 M after the sweep below is
    // measured too).
    let user = UserId::new("u-4242").expect("valid");
    let mut out = Vec::new();
    let start = Instant::now();
    let lines = engine.export_person(&customer, &user, &mut out).expect("export");
    let ms = start.elapsed().as_secs_f64() * 1e3;
    println!("export before sweep: {lines} records in {ms:.1} ms (2 M rows)");

    // The sweep.
    let start = Instant::now();
    let report = engine.sweep(&customer, &RetentionPolicy::default(), now).expect("sweep");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(report.events, total / 2, "the sweep removed what it should");
    ratio("sweep_1m_of_2m_seconds", secs, 2.0, false, "s");

    let mut out = Vec::new();
    let start = Instant::now();
    let lines = engine.export_person(&customer, &user, &mut out).expect("export");
    let ms = start.elapsed().as_secs_f64() * 1e3;
    ratio("export_one_person_of_1m_ms", ms, 50.0, false, "ms");
    println!("export: {lines} records, {} bytes of JSON Lines", out.len());
    println!("load after: {:?}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}

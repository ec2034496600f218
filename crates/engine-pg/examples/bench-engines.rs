//! Both engines in one run, on the same records: durable ingest of 2 M
//! records in batches of 1,000 (and, on PostgreSQL, in groups of ten
//! batches as the service's writer commits them), then a retention sweep
//! removing the 1 M older ones. Prints one line per figure and `RATIO`
//! lines (measured / goal; 1.00 or more meets the goal).
//!
//! `scripts/bench-engines.sh` builds and runs it:
//! `cargo run --release -p privtel-engine-pg --example bench-engines -- --pg URL [--records N]`.
//! The PostgreSQL side runs in a database of its own, made and dropped here.

use std::time::Instant;

use privtel_engine_pg::{PgEngine, PgOptions};
use privtel_store::{
    AdmittedBatch, CustomerId, DeviceId, Duration, EngineOptions, EngineStore, Record, RetentionPolicy,
    Sequence, SqliteEngine, Timestamp,
};
use privtel_testkit::bench::{feature_event, ratio};

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The batches: half the records 31 to 40 days old (past the 30-day TTL),
/// half 0 to 9 days old, ten days each, at times spread over the day.
fn batches(total: u64, now: Timestamp) -> Vec<Vec<Record>> {
    let users = 9_973; // prime: every person has records of both ages
    (0..total / 1_000)
        .map(|chunk| {
            let old = chunk % 2 == 0;
            let day = (chunk / 2) % 10;
            let base = if old { 31 + day } else { day };
            (0..1_000)
                .map(|i| {
                    let n = chunk * 1_000 + i;
                    let age = Duration::days(base as i64) + Duration::seconds((n % 86_000) as i64);
                    feature_event(n, now.checked_sub(age).expect("in range"), users)
                })
                .collect()
        })
        .collect()
}

struct Figures {
    ingest_per_s: f64,
    sweep_s: f64,
}

fn run<E: EngineStore>(
    name: &str,
    engine: &mut E,
    data: &[Vec<Record>],
    group: usize,
    now: Timestamp,
) -> Figures {
    let customer = CustomerId::new("bench").expect("valid");
    let device = DeviceId::new("bench").expect("valid");
    let total: usize = data.iter().map(Vec::len).sum();
    println!("{name}: load before ingest {}", load());
    let start = Instant::now();
    let mut seq = 1;
    for chunk in data.chunks(group) {
        let mut group_batches = Vec::with_capacity(chunk.len());
        for records in chunk {
            group_batches.push(AdmittedBatch {
                customer: customer.clone(),
                device: device.clone(),
                seq: Sequence { stream: 1, first_seq: seq, skipped: 0 },
                records: records.iter().cloned().map(Some).collect(),
            });
            seq += records.len() as u64;
        }
        for outcome in engine.ingest_group(group_batches, now) {
            assert_eq!(outcome.expect("ingest").stored, 1_000);
        }
    }
    let ingest_per_s = total as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name}: ingest {total} records, groups of {group} batches of 1,000: {ingest_per_s:.0} records/s"
    );
    assert_eq!(engine.record_count().expect("count"), total as u64);
    println!("{name}: load before sweep {}", load());
    let start = Instant::now();
    let report = engine.sweep(&customer, &RetentionPolicy::default(), now).expect("sweep");
    let sweep_s = start.elapsed().as_secs_f64();
    assert_eq!(report.events, total as u64 / 2, "the sweep removed what it should");
    assert_eq!(engine.record_count().expect("count"), total as u64 / 2);
    println!("{name}: sweep removing {} of {total} rows: {sweep_s:.3} s", report.events);
    Figures { ingest_per_s, sweep_s }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut url, mut total) = (None, 2_000_000u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pg" => url = args.next(),
            "--records" => total = args.next().and_then(|n| n.parse().ok()).expect("--records N"),
            "--bench" => {}
            other => {
                eprintln!("unknown argument {other}; usage: bench-engines --pg URL [--records N]");
                std::process::exit(2);
            }
        }
    }
    let url = url.or_else(|| std::env::var("PRIVTEL_PG_URL").ok()).unwrap_or_else(|| {
        eprintln!("usage: bench-engines --pg postgres://user@host:port/db [--records N] (or PRIVTEL_PG_URL)");
        std::process::exit(2);
    });
    let now = Timestamp::from_unix_seconds(1_795_752_000).expect("in range");
    let data = batches(total, now);

    // PostgreSQL, in a database of its own.
    let db = format!("privtel_bench_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).expect("drop");
    admin.batch_execute(&format!("CREATE DATABASE {db}")).expect("create");
    let db_url = match url.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && base.len() > base.find("://").unwrap_or(0) + 3 => {
            format!("{base}/{db}")
        }
        _ => format!("{url}/{db}"),
    };
    let pg = {
        let mut engine = PgEngine::connect(&db_url, PgOptions::default()).expect("open");
        let pg = run("postgresql", &mut engine, &data, 10, now);
        engine.check_default().expect("nothing in the default partition");
        pg
    };
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).expect("drop");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut sqlite =
        SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).expect("open");
    let sq = run("sqlite", &mut sqlite, &data, 10, now);

    ratio("pg_ingest_per_s", pg.ingest_per_s, 100_000.0, true, "records/s");
    println!("RATIO pg_vs_sqlite_ingest {:.2}", pg.ingest_per_s / sq.ingest_per_s);
    let speedup = sq.sweep_s / pg.sweep_s;
    ratio("pg_sweep_speedup_vs_sqlite", speedup, 20.0, true, "x");
    println!("load after: {}", load());
}

//! Both engines in one run, on the same records: durable ingest of 2 M
//! records from 100 devices in batches of 1,000, committed in groups of ten
//! batches as the service's writer commits them, then a retention sweep
//! removing the 1 M older ones. PostgreSQL is measured with one writer and
//! with several at once (`--writers N`, default 2: each its own connection
//! and thread, the devices shared out between them, as several service
//! writers consume one stream); SQLite has one writer. Prints one line per
//! figure and `RATIO` lines (measured / goal; 1.00 or more meets the goal).
//!
//! `scripts/bench-engines.sh` builds and runs it:
//! `cargo run --release -p privtel-engine-pg --example bench-engines -- --pg URL [--records N] [--writers N]`.
//! The PostgreSQL side runs in databases of its own, made and dropped here.
//!
//! The records are feature-usage events naming their person by user id
//! only; `--naming` makes them executions that also name their person by
//! login and home folder (two keyed digests each in the mention index), so
//! every day has its `mentions` partition too.

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::Instant;

use privtel_engine_pg::{PgEngine, PgOptions};
use privtel_model::{Digest, EventBody, Execution, Personal, RecordBody};
use privtel_store::{
    AdmittedBatch, CustomerId, DeviceId, EngineOptions, EngineStore, Record, RetentionPolicy, Sequence,
    SqliteEngine, Timestamp,
};
use privtel_testkit::bench::{feature_event, ratio};

/// Devices the records come from; a batch is one device's.
const DEVICES: u64 = 100;
/// Batches a transaction commits, as the service's writer groups them.
const GROUP: usize = 10;

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One device's batch of 1,000 records.
struct Chunk {
    device: DeviceId,
    records: Vec<Record>,
}

/// The batches: ages spread evenly over the 60 days before `now` (04:00
/// UTC), so that half the records are past the 30-day TTL. A sweep then
/// drops the whole expired days and deletes by row the expired part of
/// the day the cut-off falls in (it falls at 04:00 of its day: about 5,500
/// of that day's 33,000 rows), as every sweep of a running service does.
/// Batch `k` is device `dev-(k mod 100)`'s.
fn batches(total: u64, now: Timestamp, naming: bool) -> Vec<Chunk> {
    let users = 9_973; // prime: every person has records of both ages
    let span = 60 * 86_400 * 1_000_000_000i128; // 60 days, in nanoseconds
    (0..total / 1_000)
        .map(|chunk| {
            let device = DeviceId::new(format!("dev-{}", chunk % DEVICES)).expect("valid");
            let records = (0..1_000)
                .map(|i| {
                    let n = chunk * 1_000 + i;
                    // Record `total / 2` is the first past the TTL (by 1 ns).
                    let age = span * i128::from(n) / i128::from(total) + 1;
                    let at = Timestamp::from_unix_nanos(now.unix_nanos() - age).expect("in range");
                    let mut r = feature_event(n, at, users);
                    if naming {
                        r = name_by_login(r, n % users);
                    }
                    if let RecordBody::Event(e) = &mut r.body {
                        e.device = device.clone();
                    }
                    r
                })
                .collect();
            Chunk { device, records }
        })
        .collect()
}

/// `r` (a feature-usage event) made an execution by login `user{u}` of a
/// binary under that login's home folder: two more digests to index.
fn name_by_login(mut r: Record, u: u64) -> Record {
    if let RecordBody::Event(e) = &mut r.body {
        e.body = EventBody::Execution(Execution {
            sha256: Digest::from_bytes([7; 32]),
            username: Personal::Clear(format!("user{u}")),
            path: Personal::Clear(format!("/home/user{u}/bin/tool")),
            start: Personal::Clear(e.recorded_at),
            duration: Personal::Clear(privtel_model::Duration::seconds(3)),
        });
    }
    r
}

/// Ingests `chunks` through `engine` in groups of [`GROUP`] batches, each
/// device's sequence numbers following on.
fn ingest<E: EngineStore>(engine: &mut E, chunks: &[&Chunk], now: Timestamp) {
    let customer = CustomerId::new("bench").expect("valid");
    let mut seqs: BTreeMap<&str, u64> = BTreeMap::new();
    for group in chunks.chunks(GROUP) {
        let batches = group
            .iter()
            .map(|c| {
                let seq = seqs.entry(c.device.as_str()).or_insert(1);
                let first_seq = *seq;
                *seq += c.records.len() as u64;
                AdmittedBatch {
                    customer: customer.clone(),
                    device: c.device.clone(),
                    seq: Sequence { stream: 1, first_seq, skipped: 0 },
                    records: c.records.iter().cloned().map(Some).collect(),
                }
            })
            .collect();
        for outcome in engine.ingest_group(batches, now) {
            assert_eq!(outcome.expect("ingest").stored, 1_000);
        }
    }
}

/// Puts the records at rest first, as they are when a sweep meets them (a
/// month after they were written): when `checkpoint` is a connection to
/// a PostgreSQL database, its `VACUUM` and the server's checkpoint; then
/// every dirty page of the machine to disk (`sync`). Without it the sweep of records ingested a second before
/// waits for their pages' write-back (truncating a file under write-back
/// waits for it), which measures the bench's own ingest, not the sweep.
fn at_rest(checkpoint: Option<&mut postgres::Client>) {
    if let Some(admin) = checkpoint {
        // A month on, autovacuum has been through every partition; here it
        // would still be at work, and a DROP waits for it to be cancelled.
        admin.batch_execute("VACUUM").expect("vacuum");
        admin.batch_execute("CHECKPOINT").expect("checkpoint");
    }
    let synced = std::process::Command::new("sync").status().expect("sync");
    assert!(synced.success(), "sync failed");
}

/// Sweeps with the default 30-day TTL, once the records are at rest; the
/// seconds it took.
fn sweep<E: EngineStore>(
    name: &str,
    engine: &mut E,
    total: u64,
    now: Timestamp,
    checkpoint: Option<&mut postgres::Client>,
) -> f64 {
    let customer = CustomerId::new("bench").expect("valid");
    assert_eq!(engine.record_count().expect("count"), total);
    at_rest(checkpoint);
    println!("{name}: load before sweep {}", load());
    let start = Instant::now();
    let report = engine.sweep(&customer, &RetentionPolicy::default(), now).expect("sweep");
    let s = start.elapsed().as_secs_f64();
    assert_eq!(report.events, total / 2, "the sweep removed what it should");
    assert_eq!(engine.record_count().expect("count"), total / 2);
    println!("{name}: sweep removing {} of {total} rows: {s:.3} s", report.events);
    s
}

/// A database of its own on the server `url` names: (its URL, its name).
fn new_database(admin: &mut postgres::Client, url: &str, tag: &str) -> (String, String) {
    let db = format!("privtel_bench_{}_{tag}", std::process::id());
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).expect("drop");
    admin.batch_execute(&format!("CREATE DATABASE {db}")).expect("create");
    let db_url = match url.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && base.len() > base.find("://").unwrap_or(0) + 3 => {
            format!("{base}/{db}")
        }
        _ => format!("{url}/{db}"),
    };
    (db_url, db)
}

/// PostgreSQL with `writers` engines at once, each on its own thread and
/// connection, each writing its share of the devices: records/s from the
/// moment all are connected to the last commit; then the sweep if asked.
fn postgres_run(
    admin: &mut postgres::Client,
    url: &str,
    data: &[Chunk],
    writers: usize,
    now: Timestamp,
    sweep_too: bool,
) -> (f64, Option<f64>) {
    let (db_url, db) = new_database(admin, url, &format!("w{writers}"));
    let name = format!("postgresql, {writers} writer{}", if writers == 1 { "" } else { "s" });
    let total = data.len() as u64 * 1_000;
    let mut engines: Vec<PgEngine> =
        (0..writers).map(|_| PgEngine::connect(&db_url, PgOptions::default()).expect("open")).collect();
    // The partitions of the 60 days exist, as on a service that has run for
    // 60 days (each made when its day began, `PgEngine::maintain`): the
    // customer is registered by an empty batch, then its partitions made.
    let setup = AdmittedBatch {
        customer: CustomerId::new("bench").expect("valid"),
        device: DeviceId::new("setup").expect("valid"),
        seq: Sequence { stream: 1, first_seq: 1, skipped: 0 },
        records: Vec::new(),
    };
    for outcome in engines[0].ingest_group(vec![setup], now) {
        assert_eq!(outcome.expect("setup").stored, 0);
    }
    let first_day = now.checked_sub(privtel_store::Duration::days(61)).expect("in range");
    let made = engines[0].maintain(first_day, 62).expect("partitions");
    assert!(made.created >= 60, "{made:?}");
    let shares: Vec<Vec<&Chunk>> = (0..writers)
        .map(|w| {
            data.iter()
                .enumerate()
                .filter(|(k, _)| (*k as u64 % DEVICES) as usize % writers == w)
                .map(|(_, c)| c)
                .collect()
        })
        .collect();
    println!("{name}: load before ingest {}", load());
    let barrier = Barrier::new(writers + 1);
    let elapsed = std::thread::scope(|s| {
        for (engine, share) in engines.iter_mut().zip(&shares) {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                ingest(engine, share, now);
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every writer before it returns.
        start
    })
    .elapsed();
    let per_s = total as f64 / elapsed.as_secs_f64();
    println!("{name}: ingest {total} records, groups of {GROUP} batches of 1,000: {per_s:.0} records/s");
    // Counted in the table itself (the engine's count is its counter table).
    let rows = |url: &str| -> u64 {
        let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
        let n: i64 = c.query_one("SELECT count(*) FROM records", &[]).expect("count").get(0);
        n as u64
    };
    assert_eq!(rows(&db_url), total, "every record stored once");
    {
        // What a sweep meets: the partitions' bytes (tables, TOAST,
        // indexes) and how many relations hold them.
        let mut c = postgres::Client::connect(&db_url, postgres::NoTls).expect("connect");
        let row = c
            .query_one(
                "SELECT count(*), coalesce(sum(pg_relation_size(oid)), 0)::bigint FROM pg_class
                 WHERE relkind IN ('r', 't', 'i') AND (relname ~ '^(records|mentions)_p'
                    OR oid IN (SELECT reltoastrelid FROM pg_class WHERE relname ~ '^(records|mentions)_p')
                    OR oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                               WHERE t.relname ~ '^(records|mentions)_p'
                                  OR t.oid IN (SELECT reltoastrelid FROM pg_class WHERE relname ~ '^(records|mentions)_p')))",
                &[],
            )
            .expect("sizes");
        let (relations, bytes): (i64, i64) = (row.get(0), row.get(1));
        println!(
            "{name}: partitions hold {:.0} MB ({:.0} bytes a record) in {relations} relations",
            bytes as f64 / 1e6,
            bytes as f64 / total as f64
        );
    }
    let swept = sweep_too.then(|| {
        let mut own = postgres::Client::connect(&db_url, postgres::NoTls).expect("connect");
        sweep(&name, &mut engines[0], total, now, Some(&mut own))
    });
    if sweep_too {
        assert_eq!(rows(&db_url), total / 2, "the sweep removed exactly the expired half");
    }
    engines[0].check_default().expect("nothing in the default partition");
    drop(engines);
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).expect("drop");
    (per_s, swept)
}

/// The median of `v` (the mean of the middle two when even).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `median (min–max)` of a figure over the rounds.
fn spread(v: &[f64], digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.digits$} ({:.digits$}–{:.digits$})", median(v), min, max)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut url, mut total, mut writers, mut rounds) = (None, 2_000_000u64, 2usize, 3usize);
    let mut naming = false;
    let usage = "usage: bench-engines --pg postgres://user@host:port/db [--records N] [--writers N] [--rounds N] [--naming] (or PRIVTEL_PG_URL)";
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next().and_then(|n| n.parse().ok()).filter(|n| *n >= 1).unwrap_or_else(|| {
                eprintln!("{name} needs a whole number of at least 1; {usage}");
                std::process::exit(2);
            })
        };
        match a.as_str() {
            "--pg" => url = args.next(),
            "--records" => total = number("--records") as u64,
            "--writers" => writers = number("--writers"),
            "--rounds" => rounds = number("--rounds"),
            "--naming" => naming = true,
            "--bench" => {}
            other => {
                eprintln!("unknown argument {other}; {usage}");
                std::process::exit(2);
            }
        }
    }
    let url = url.or_else(|| std::env::var("PRIVTEL_PG_URL").ok()).unwrap_or_else(|| {
        eprintln!("{usage}");
        std::process::exit(2);
    });
    let now = Timestamp::from_unix_seconds(1_795_752_000).expect("in range");
    let data = batches(total, now, naming);
    let total = data.len() as u64 * 1_000;
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");

    // Each round: PostgreSQL with one writer (then its sweep), with
    // `writers` at once, and SQLite (then its sweep), on fresh stores.
    let (mut pg_one, mut pg_many, mut sq_ingest) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pg_sweep, mut sq_sweep, mut speedup) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        let (one, swept) = postgres_run(&mut admin, &url, &data, 1, now, true);
        pg_one.push(one);
        if writers > 1 {
            pg_many.push(postgres_run(&mut admin, &url, &data, writers, now, false).0);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sqlite =
            SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).expect("open");
        println!("sqlite: load before ingest {}", load());
        let start = Instant::now();
        ingest(&mut sqlite, &data.iter().collect::<Vec<_>>(), now);
        let per_s = total as f64 / start.elapsed().as_secs_f64();
        println!("sqlite: ingest {total} records, groups of {GROUP} batches of 1,000: {per_s:.0} records/s");
        sq_ingest.push(per_s);
        let bytes: u64 = std::fs::read_dir(dir.path())
            .expect("temp dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "sqlite: the store's files hold {:.0} MB ({:.0} bytes a record)",
            bytes as f64 / 1e6,
            bytes as f64 / total as f64
        );
        let sq = sweep("sqlite", &mut sqlite, total, now, None);
        let pg = swept.unwrap_or(f64::INFINITY);
        println!("round {round}: sweep speed-up {:.1}x", sq / pg);
        pg_sweep.push(pg);
        sq_sweep.push(sq);
        speedup.push(sq / pg);
    }

    println!("summary over {rounds} round(s), median (min–max):");
    println!("  postgresql ingest, 1 writer: {} records/s", spread(&pg_one, 0));
    if writers > 1 {
        println!("  postgresql ingest, {writers} writers: {} records/s", spread(&pg_many, 0));
    }
    println!("  sqlite ingest: {} records/s", spread(&sq_ingest, 0));
    println!("  postgresql sweep: {} s", spread(&pg_sweep, 3));
    println!("  sqlite sweep: {} s", spread(&sq_sweep, 3));
    println!("  sweep speed-up (same round): {}x", spread(&speedup, 1));
    ratio("pg_ingest_per_s_one_writer", median(&pg_one), 100_000.0, true, "records/s");
    if writers > 1 {
        ratio(&format!("pg_ingest_per_s_{writers}_writers"), median(&pg_many), 100_000.0, true, "records/s");
    }
    let pg_best = median(&pg_one).max(if pg_many.is_empty() { 0.0 } else { median(&pg_many) });
    println!("RATIO pg_vs_sqlite_ingest {:.2}", pg_best / median(&sq_ingest));
    ratio("pg_sweep_speedup_vs_sqlite", median(&speedup), 20.0, true, "x");
    println!("load after: {}", load());
}

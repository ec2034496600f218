//! The scale-out path end to end, on one machine: agents over mutual TLS →
//! a front-end (`Service` with a JetStream `Publisher`, real rustls sockets
//! on 127.0.0.1) → NATS JetStream → `StreamWriter`s → PostgreSQL. Prints
//! the records per second stored (from the first batch sent until the
//! writers have drained the stream), the agents' acknowledgement latency
//! (from sending a batch to its Ack, which comes after JetStream's publish
//! acknowledgement) p50/p99, the CPU time of each part, and a `RATIO` line
//! against the goal of 50,000 records/s (measured / goal; 1.00 or more
//! meets it).
//!
//! `scripts/bench-scale.sh` builds and runs it:
//! `cargo run --release -p privtel-service --features jetstream,tls --example bench-scale --
//!     [--pg URL] [--nats URL] [--agents N] [--seconds D] [--records N] [--writers W] [--max-group M]`.
//!
//! Everything but the servers runs in this process, on threads named after
//! their part (the agents `agent-N`, the front-end's connection threads,
//! the NATS clients' runtimes `privtel-nats`, the writers `writer-N`), so
//! the CPU time of each part is read from `/proc/self/task`; the NATS
//! server's and PostgreSQL's from `/proc` by process name. The devices
//! enroll through the real path (a token, a CSR over TLS); each agent owns
//! one device and keeps one session open, sending batches of `--records`
//! records (the fixtures' support telemetry put through acme's own filter,
//! fresh event ids), each waiting for its Ack, as an agent emptying its
//! spool does. The run has a database and a stream of its own, dropped at
//! the end.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use privtel_authority::{Authority, DeviceKey};
use privtel_engine_pg::{PgEngine, PgOptions};
use privtel_filter::{FilterBuilder, Filtered, PseudonymKey};
use privtel_model::{BatchId, CustomerId, DeviceId, EventId, KeyId, Program, Record, RecordBody, Timestamp};
use privtel_service::jetstream::{JetStreamOptions, Publisher, Rows, StreamWriter};
use privtel_service::{Limits, Service, Settings};
use privtel_store::parts::Format;
use privtel_store::{EngineOptions, EngineStore as _, SqliteEngine};
use privtel_wire::tls::rustls;
use privtel_wire::{Batch, Connection, Hello, Message, VerdictIndex};

/// The end-to-end ingest bench (see the file's docs).
#[derive(Parser)]
#[command(name = "bench-scale")]
struct Args {
    /// The PostgreSQL server (a database of the run's own is made on it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg: String,
    /// The NATS server (a stream of the run's own is made on it).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Agents sending at once (one device and one session each).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    agents: u32,
    /// Seconds the agents send.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Records a batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    records: u32,
    /// Writer threads (each its own PostgreSQL connection). One by default:
    /// writers sharing the stream hand back each other's device streams'
    /// next batches (the batch before is with the other writer), and on
    /// two cores one writer stored 68,000–74,000 records/s where two stored
    /// 36,000–55,000 (docs/PERFORMANCE.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    writers: u32,
    /// The most messages a writer applies in one transaction.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_group: u32,
    /// The row format the writers store payloads in: 3 (compressed, the
    /// default) or 2 (JSON, as before schema version 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    row_format: u8,
}

const GOAL: f64 = 50_000.0;
const STREAM: u64 = 1;

fn acme() -> CustomerId {
    CustomerId::new("acme").expect("valid id")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ratio(name: &str, measured: f64, goal: f64, unit: &str) {
    let r = measured / goal;
    let met = if r >= 1.0 { "met" } else { "NOT MET" };
    println!("RATIO {name} {r:.2}  ({measured:.3} {unit}, goal >= {goal} {unit}; {met})");
}

/// User + system CPU seconds from a `stat` file's text.
fn stat_cpu(stat: &str) -> Option<f64> {
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of this process's threads, by part (the thread's name
/// without its number); what threads that ended used (the agents and the
/// front-end's connection threads, once their sessions are over) is
/// `ended`: the process's total less its live threads'.
fn threads_cpu() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let total = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| stat_cpu(&s)).unwrap_or(0.0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let part = name.trim().trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').to_owned();
        if let Some(cpu) = std::fs::read_to_string(t.path().join("stat")).ok().and_then(|s| stat_cpu(&s)) {
            *out.entry(if part.is_empty() { "main".into() } else { part }).or_insert(0.0) += cpu;
        }
    }
    let live: f64 = out.values().sum();
    out.insert("agents+front-end".into(), total - live);
    out
}

/// The machine's busy and total CPU ticks since boot (`/proc/stat`; idle
/// and waiting for I/O are not busy).
fn machine_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let all: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((all - idle, all))
}

/// CPU seconds of the processes named `names` (the servers), by name.
fn processes_cpu(names: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if let Some(name) = names.iter().find(|n| comm.starts_with(*n))
            && let Some(cpu) = std::fs::read_to_string(p.path().join("stat")).ok().and_then(|s| stat_cpu(&s))
        {
            *out.entry((*name).to_owned()).or_insert(0.0) += cpu;
        }
    }
    out
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).collect()
}

/// A database of the run's own on the server at `url`.
struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Db {
    fn create(url: &str) -> anyhow::Result<Self> {
        let name = format!("privtel_bench_scale_{}", std::process::id());
        let mut admin = postgres::Client::connect(url, postgres::NoTls).context("connecting to --pg")?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let (base, _) = url.rsplit_once('/').context("--pg: expected postgres://HOST/DB")?;
        Ok(Self { admin: url.to_owned(), url: format!("{base}/{name}"), name })
    }

    fn count(&self) -> anyhow::Result<(i64, i64)> {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls)?;
        let row = c.query_one("SELECT count(*), count(DISTINCT (device, event_id)) FROM records", &[])?;
        Ok((row.get(0), row.get(1)))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// The records a batch sends: the fixtures' support telemetry events,
/// dated now, put through acme's filter (so the front-end admits them).
fn template(settings: &Settings, n: usize) -> anyhow::Result<Vec<Record>> {
    let cs = settings.customer(&acme()).context("acme has no settings")?;
    let filter = FilterBuilder::new()
        .policy(cs.policy().clone())
        .customer(acme())
        .key(PseudonymKey::new(KeyId::new(1), [3; 32]))
        .build();
    let now = Timestamp::now();
    let events: Vec<Record> = privtel_testkit::fixtures::records("bench")
        .into_iter()
        .filter(|r| r.program == Program::SupportTelemetry && matches!(r.body, RecordBody::Event(_)))
        .map(|mut r| {
            if let RecordBody::Event(e) = &mut r.body {
                e.recorded_at = now;
            }
            r
        })
        .filter_map(|r| filter.apply(r, &mut Default::default()))
        .map(Filtered::into_record)
        .collect();
    if events.is_empty() {
        bail!("the default policy admits no support telemetry event");
    }
    Ok((0..n).map(|i| events[i % events.len()].clone()).collect())
}

/// What one agent saw.
#[derive(Default)]
struct Tally {
    batches: u64,
    records: u64,
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// One agent: one session, batches until `until`, each waiting for its Ack.
fn agent(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    device: &DeviceId,
    template: &[Record],
    policy_hash: [u8; 32],
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let error = |tally: &mut Tally, e: String| {
        let kind: String = e.chars().filter(|c| !c.is_ascii_digit()).take(120).collect();
        *tally.errors.entry(kind).or_default() += 1;
    };
    let consent = Program::ALL.iter().map(|p| (*p, true)).collect();
    let hello = Hello::new("bench", acme(), device.clone(), consent, 1).with_stream(STREAM);
    while Instant::now() < until {
        let session = (|| -> anyhow::Result<()> {
            let stream = privtel_wire::tls::connect(addr, "127.0.0.1", Arc::clone(&config))?;
            let mut conn = Connection::new(stream);
            let welcome = conn.client_handshake(&hello)?;
            let mut next = welcome.high_water + 1;
            while Instant::now() < until {
                let records: Vec<Record> = template
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut r = r.clone();
                        if let RecordBody::Event(e) = &mut r.body {
                            e.id = EventId::from_u128((u128::from(next) << 32) | i as u128);
                        }
                        r
                    })
                    .collect();
                let n = records.len() as u64;
                let batch = Batch {
                    program: Program::SupportTelemetry,
                    batch_id: BatchId::from_u128(u128::from(next)),
                    first_seq: next,
                    records,
                    skipped: 0,
                    policy_hash,
                };
                let sent = Instant::now();
                conn.send(&Message::Batch(batch))?;
                match conn.recv()? {
                    Message::Ack(ack) => {
                        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        if let Some(r) = ack.rejections.first() {
                            let wait = ack.retry_after_ms.unwrap_or(100);
                            std::thread::sleep(Duration::from_millis(wait.min(1000)));
                            bail!("rejection {}: {}", r.code, r.reason);
                        }
                        if ack.accepted_up_to != next + n - 1 {
                            bail!("ack: not every record accepted");
                        }
                        tally.latencies_us.push(us);
                        tally.batches += 1;
                        tally.records += n;
                        next += n;
                    }
                    other => bail!("expected an ack, got {}", other.kind_name()),
                }
            }
            Ok(())
        })();
        if let Err(e) = session {
            error(&mut tally, e.to_string());
        }
    }
    tally
}

fn percentile_ms(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-scale: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "bench-scale: {} agents x batches of {} records for {} s, {} writer(s) (groups of {}), {} cores, load {}",
        args.agents,
        args.records,
        args.seconds,
        args.writers,
        args.max_group,
        cores,
        loadavg()
    );
    let dir = tempfile::tempdir()?;
    let db = Db::create(&args.pg)?;
    drop(PgEngine::connect(&db.url, PgOptions::default())?); // the schema
    let id = std::process::id();
    let options = JetStreamOptions::new(args.nats.clone()).names(
        format!("BENCH_SCALE_{id}"),
        format!("bench.scale{id}"),
        "bench-writer",
    );
    let publisher = Arc::new(Publisher::connect(options.clone())?);
    let result = bench(args, &db, dir.path(), &options, &publisher);
    publisher.delete_stream()?;
    result
}

fn bench(
    args: &Args,
    db: &Db,
    dir: &std::path::Path,
    options: &JetStreamOptions,
    publisher: &Arc<Publisher>,
) -> anyhow::Result<()> {
    // The front-end: a service that publishes, welcomes reading marks
    // from PostgreSQL.
    let now = time::OffsetDateTime::now_utc();
    let authority = Arc::new(Authority::open(dir.join("authority.db"))?);
    authority.add_customer(&acme(), now)?;
    let identity = privtel_wire::tls::generate_identity(&["127.0.0.1"])?;
    let config = privtel_authority::server_config(&authority, &identity)?;
    let settings = Settings::from_toml("[customers.acme]\nrecords_per_second = 100000000\n")?;
    let template = template(&settings, args.records as usize)?;
    let policy_hash = settings.customer(&acme()).context("acme has no settings")?.policy_digest();
    let reader = Mutex::new(PgEngine::connect(&db.url, PgOptions::default())?);
    let mut limits = Limits::default();
    limits.max_connections = 20_000;
    let service = Arc::new(
        Service::new(
            SqliteEngine::open(dir.join("engine.db"), EngineOptions::default())?,
            VerdictIndex::new(4, [1; 32]),
            Timestamp::now,
        )
        .with_settings(settings)
        .with_authority(Arc::clone(&authority))
        .with_limits(limits)
        .with_jetstream(Arc::clone(publisher))
        .with_high_water(move |c, d, s| {
            reader.lock().unwrap_or_else(PoisonError::into_inner).high_water(c, d, s).ok()
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (service, stop) = (Arc::clone(&service), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("front-end".into())
            .spawn(move || service.serve_tls(&listener, &config, &stop))?;
    }

    // The devices enroll (a token for all, a CSR each over TLS).
    let token = authority.issue_token(&acme(), time::Duration::hours(1), args.agents, now)?;
    let enrollment = privtel_authority::enrollment_client_config(&identity.ca_pem)?;
    let mut devices = Vec::new();
    for i in 0..args.agents {
        let key = DeviceKey::generate()?;
        let device = DeviceId::new(format!("bench-{i:05}"))?;
        let mut conn =
            Connection::new(privtel_wire::tls::connect(addr, "127.0.0.1", Arc::clone(&enrollment))?);
        conn.send(&Message::EnrollRequest(privtel_authority::request(
            Some(&token),
            &acme(),
            &device,
            &key,
        )?))?;
        let credentials = match conn.recv()? {
            Message::Enrolled(e) => privtel_authority::accept(&key, &acme(), &device, e)?,
            other => bail!("enrollment: expected enrolled, got {}", other.kind_name()),
        };
        devices.push((device, privtel_authority::client_config(&identity.ca_pem, &credentials)?));
    }

    // The writers.
    let applied = Arc::new(AtomicU64::new(0));
    // Work done again: batches handed back (met a gap: the batch before
    // them was still with another writer) and groups that failed.
    let handed_back = Arc::new(AtomicU64::new(0));
    let failed_groups = Arc::new(AtomicU64::new(0));
    let stop_writers = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let format = if args.row_format == 2 { Format::Json } else { Format::JsonZstd };
        let engine = PgEngine::connect(&db.url, PgOptions::default().row_format(format))?;
        let mut writer = StreamWriter::connect(options.clone(), Rows(engine))?
            .with_max_group(args.max_group as usize)
            .with_log(|line| eprintln!("bench-scale: writer: {line}"));
        let (applied, stop) = (Arc::clone(&applied), Arc::clone(&stop_writers));
        let (handed_back, failed_groups) = (Arc::clone(&handed_back), Arc::clone(&failed_groups));
        writers.push(std::thread::Builder::new().name(format!("writer-{w}")).spawn(move || {
            let r = writer.run(&stop);
            let m = writer.metrics().snapshot(None);
            applied.fetch_add(m.applied_records, Ordering::Relaxed);
            handed_back.fetch_add(m.handed_back, Ordering::Relaxed);
            failed_groups.fetch_add(m.failed_groups, Ordering::Relaxed);
            r
        })?);
    }

    // The agents, then the drain.
    let threads_before = threads_cpu();
    let machine_before = machine_cpu();
    let servers = ["nats-server", "postgres"];
    let servers_before = processes_cpu(&servers);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.seconds);
    let template = &template;
    let mut tally = Tally::default();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles = devices
            .iter()
            .enumerate()
            .map(|(i, (device, config))| {
                std::thread::Builder::new().name(format!("agent-{i}")).spawn_scoped(s, move || {
                    agent(addr, Arc::clone(config), device, template, policy_hash, until)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for h in handles {
            let t = h.join().map_err(|_| anyhow::anyhow!("an agent thread panicked"))?;
            tally.batches += t.batches;
            tally.records += t.records;
            tally.latencies_us.extend(t.latencies_us);
            for (k, v) in t.errors {
                *tally.errors.entry(k).or_default() += v;
            }
        }
        Ok(())
    })?;
    let sent_for = start.elapsed();
    let drain_limit = Instant::now() + Duration::from_secs(300);
    while publisher.lag()? > 0 {
        if Instant::now() > drain_limit {
            bail!("the writers did not drain the stream in 300 s (lag {})", publisher.lag()?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let threads = diff(&threads_cpu(), &threads_before);
    let servers_cpu = diff(&processes_cpu(&servers), &servers_before);
    let machine =
        machine_cpu().zip(machine_before).map(|((busy, all), (busy0, all0))| (busy - busy0, all - all0));
    stop_writers.store(true, Ordering::Release);
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
    }

    let (rows, distinct) = db.count()?;
    let per_s = rows as f64 / elapsed.as_secs_f64();
    let p50 = percentile_ms(&mut tally.latencies_us, 0.50);
    let p99 = percentile_ms(&mut tally.latencies_us, 0.99);
    println!(
        "sent {} batches, {} records in {:.1} s ({:.0} records/s accepted); drained {:.1} s later",
        tally.batches,
        tally.records,
        sent_for.as_secs_f64(),
        tally.records as f64 / sent_for.as_secs_f64(),
        (elapsed - sent_for).as_secs_f64()
    );
    for (kind, n) in &tally.errors {
        println!("  agent error x{n}: {kind}");
    }
    println!(
        "stored {rows} rows in PostgreSQL ({distinct} distinct; the writers applied {}) in {:.1} s: {per_s:.0} records/s",
        applied.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    println!("ack latency: p50 {p50:.1} ms, p99 {p99:.1} ms ({} batches)", tally.latencies_us.len());
    println!(
        "writers: {} batches handed back (a gap: the batch before was with another writer), {} failed groups",
        handed_back.load(Ordering::Relaxed),
        failed_groups.load(Ordering::Relaxed)
    );
    let total: f64 = threads.values().sum::<f64>() + servers_cpu.values().sum::<f64>();
    // The parts' figure misses processes that ended before the end (a
    // server's short-lived workers); the machine's counts everything.
    let machine = match machine {
        Some((busy, all)) if all > 0.0 => {
            format!("; the machine {:.0} % busy", 100.0 * busy / all)
        }
        _ => String::new(),
    };
    println!(
        "cpu seconds over {:.1} s of wall time ({:.1} cores busy in these parts{machine}):",
        elapsed.as_secs_f64(),
        total / elapsed.as_secs_f64()
    );
    for (part, cpu) in threads.iter().chain(servers_cpu.iter()) {
        if *cpu >= 0.05 {
            println!("  {part:<16} {cpu:>7.2} s  {:>5.1} %", 100.0 * cpu / total);
        }
    }
    if rows as u64 != tally.records || distinct != rows {
        bail!("stored {rows} rows ({distinct} distinct) for {} records acknowledged", tally.records);
    }
    ratio("end_to_end_records_per_s", per_s, GOAL, "records/s");
    println!("load after: {}", loadavg());
    Ok(())
}

//! The end-to-end demo: a service and an agent on 127.0.0.1 over TLS.
//!
//! `cargo run --release --example demo [-- --scan PATH]`
//!
//! Offline, on a fresh machine, it:
//! 1. creates a sample device (a folder of executables whose hashes the
//!    sample reputation file knows), and scans it (plus `--scan PATH`);
//! 2. starts the service on 127.0.0.1 with a freshly made TLS certificate,
//!    an encrypted SQLite engine store and `examples/data/reputation.csv`;
//! 3. runs the agent once: records from the scan and `examples/data/web.log`
//!    go through `examples/data/policy.toml`, into an encrypted spool, and
//!    up over TLS; a private enrichment query brings verdicts back;
//! 4. prints what left the device, per program and in which form, and the
//!    verdicts; exports and erases one person; simulates 40 and 46 days of
//!    retention sweeps; and removes its temporary files.
//!
//! The web log format: one request a line, tab-separated: time (RFC 3339),
//! user id, URL, destination IP, page load in milliseconds; `#` comments.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, bail};
use privtel::domain::Normalizer;
use privtel::filter::{FilterBuilder, Manifest, Policy, PseudonymKey};
use privtel::hash::{Algorithms, ScannerBuilder};
use privtel::model::{
    Binary, BinaryExecution, CustomerId, Device, DeviceId, DeviceType, Domain, Event, EventBody, EventId,
    Generalised, KeyId, OsFamily, OsInfo, Personal, Program, Record, RecordBody, Timestamp, User, UserId,
    WebRequest,
};
use privtel::retention::{RetentionPolicy, Ttl};
use privtel::store::{AtRestKey, EngineStore, ErasureRequest, Spool, SpoolOptions, SqliteEngine};
use privtel::wire::{self, Ack, Batch, Connection, Goodbye, Hello, Message, VerdictIndex, Welcome, tls};
use time::Duration;

const POLICY: &str = include_str!("data/policy.toml");
const WEB_LOG: &str = include_str!("data/web.log");
const REPUTATION: &str = include_str!("data/reputation.csv");

/// The sample device's files: (name, bytes). Their SHA-256 digests are in
/// `examples/data/reputation.csv`.
fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
    let elf = |machine: u8, text: &str| {
        let mut b = b"\x7fELF\x02\x01\x01".to_vec();
        b.extend([0u8; 9]);
        b.extend([2, 0, machine, 0]);
        b.extend(text.repeat(4).bytes());
        b
    };
    let mut pe = b"MZ".to_vec();
    pe.extend([0u8; 58]);
    pe.extend(64u32.to_le_bytes());
    pe.extend(b"PE\0\0");
    pe.extend(0x8664u16.to_le_bytes());
    pe.extend("privtel demo setup\n".repeat(3).bytes());
    vec![
        ("tool", elf(0x3e, "privtel demo tool\n")),
        ("helper.sh", b"#!/bin/sh\necho privtel demo helper\n".to_vec()),
        ("setup.exe", pe),
        ("dropper", elf(0xb7, "privtel demo dropper\n")),
        ("README.txt", b"not a program\n".to_vec()),
    ]
}

fn random_key() -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    Ok(key)
}

/// One web-log line as a web request event.
fn web_request(line_no: usize, line: &str, device: &DeviceId, i: u64) -> anyhow::Result<Record> {
    let cols: Vec<&str> = line.split('\t').collect();
    let [time, user, url, ip, load] = cols[..] else {
        bail!("web.log line {line_no}: {} columns, expected 5 (time, user, url, ip, load ms)", cols.len())
    };
    let at: Timestamp = time.parse().with_context(|| format!("web.log line {line_no}: time"))?;
    let ms: i64 = load
        .parse()
        .with_context(|| format!("web.log line {line_no}: page load '{load}' is not a number"))?;
    Ok(Record {
        program: Program::Enrichment,
        body: RecordBody::Event(Event {
            id: EventId::from_u128(u128::from(i)),
            device: device.clone(),
            user: Some(UserId::new(user).with_context(|| format!("web.log line {line_no}: user"))?),
            recorded_at: at,
            body: EventBody::WebRequest(WebRequest {
                url: Personal::Clear(url.to_owned()),
                host: Personal::Clear(url.to_owned()),
                destination_ip: Personal::Clear(
                    ip.parse().with_context(|| format!("web.log line {line_no}: ip"))?,
                ),
                destination_port: 443,
                page_load: Personal::Clear(Duration::milliseconds(ms)),
                visit_count: 1,
            }),
        }),
    })
}

/// The service: one connection at a time, until the agent says goodbye.
fn serve(
    listener: TcpListener,
    identity: tls::Identity,
    engine: Arc<Mutex<SqliteEngine>>,
    index: VerdictIndex,
    now: Timestamp,
) -> anyhow::Result<u64> {
    let config = tls::server_config(&identity)?;
    let (tcp, _) = listener.accept()?;
    let mut conn = Connection::new(tls::accept(tcp, config)?);
    let mut device = None;
    let hello = conn.server_handshake(|hello, version| {
        let hw = engine.lock().map(|e| e.high_water(&hello.device).unwrap_or(0)).unwrap_or(0);
        device = Some(hello.device.clone());
        Welcome::new(version, hw)
    })?;
    let device = device.unwrap_or(hello.device);
    let mut stored = 0;
    loop {
        match conn.recv()? {
            Message::Batch(batch) => {
                let outcome = engine.lock().map_err(|_| anyhow::anyhow!("engine lock"))?.ingest(
                    &device,
                    batch.first_seq,
                    &batch.records,
                    now,
                )?;
                stored += outcome.stored;
                let last = batch.first_seq + batch.records.len() as u64 - 1;
                conn.send(&Message::Ack(Ack {
                    batch_id: batch.batch_id,
                    accepted_up_to: last,
                    rejections: vec![],
                    retry_after_ms: None,
                }))?;
            }
            Message::EnrichQuery(q) => conn.send(&Message::EnrichAnswer(index.answer(&q)))?,
            Message::Goodbye(_) => return Ok(stored),
            other => bail!("service: unexpected {} message", other.kind_name()),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut extra_scan: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scan" => extra_scan.push(args.next().context("--scan needs a path")?.into()),
            other => bail!("unknown option {other} (expected --scan PATH)"),
        }
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().context("making a temporary folder")?;
    let now = Timestamp::from_unix_seconds(1_795_770_000)?; // 2026-11-27T09:00:00Z, after the web log
    let retention = RetentionPolicy { events: Ttl::DAYS_30, ..RetentionPolicy::default() };

    // 1. The sample device.
    let bin = dir.path().join("device/bin");
    std::fs::create_dir_all(&bin)?;
    for (name, bytes) in sample_files() {
        std::fs::write(bin.join(name), bytes)?;
    }

    // 2. The service.
    let identity = tls::generate_identity(&["127.0.0.1"])?;
    std::fs::write(dir.path().join("ca.pem"), &identity.ca_pem)?;
    let engine = Arc::new(Mutex::new(SqliteEngine::open(
        &dir.path().join("engine.db"),
        retention,
        Some(AtRestKey::new(1, random_key()?)),
    )?));
    let (binaries, domains) = wire::parse_reputation(REPUTATION).context("examples/data/reputation.csv")?;
    let mut index = VerdictIndex::new(wire::DEFAULT_PAD_TO, random_key()?);
    binaries.into_iter().for_each(|v| index.add_binary(v));
    domains.into_iter().for_each(|v| index.add_domain(v));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let service = {
        let (identity, engine) = (identity, engine.clone());
        std::thread::spawn(move || serve(listener, identity, engine, index, now))
    };

    // 3. The agent: scan, read the web log, filter, spool, upload, enrich.
    let policy = Policy::from_toml(POLICY).context("examples/data/policy.toml")?;
    let customer = CustomerId::new("acme")?;
    let device = DeviceId::new("demo-laptop-01")?;
    let filter = FilterBuilder::new()
        .policy(policy.clone())
        .customer(customer.clone())
        .key(PseudonymKey::new(KeyId::new(1), random_key()?))
        .build();
    let scan_start = Instant::now();
    let mut roots = vec![bin];
    roots.extend(extra_scan);
    let scan = ScannerBuilder::new().algorithms(Algorithms::Both).executables_only(true).build().scan(&roots);
    let scan_secs = scan_start.elapsed().as_secs_f64();

    let alice = UserId::new("u-alice")?;
    let mut records = vec![
        Record {
            program: Program::AnonymousUsage,
            body: RecordBody::Device(Device {
                id: device.clone(),
                name: Personal::Clear("ALICE-LAPTOP".into()),
                os: OsInfo { family: OsFamily::Linux, version: "Debian 12".into(), build: None },
                device_type: DeviceType::Laptop,
                cpu: "AMD EPYC".into(),
                gpu: None,
                ip: Personal::Clear("192.0.2.17".parse()?),
                last_seen: now,
            }),
        },
        Record {
            program: Program::PersonalisedUsage,
            body: RecordBody::User(User {
                id: alice.clone(),
                username: Personal::Clear("alice".into()),
                upn: Personal::Clear("alice@corp.example".into()),
                first_name: Personal::Clear("Alice".into()),
                last_name: Personal::Clear("Martin".into()),
                job_title: Personal::Clear("Engineer".into()),
                email: Personal::Clear("alice.martin@corp.example".into()),
                phone: Personal::Withheld,
            }),
        },
    ];
    let mut n = 0u64;
    for file in &scan.hashed {
        let Some(sha256) = file.digests.sha256 else { continue };
        n += 1;
        let path = file.path.display().to_string();
        records.push(Record {
            program: Program::Enrichment,
            body: RecordBody::Binary(Binary {
                sha256,
                blake3: file.digests.blake3,
                file_name: file
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: Personal::Clear(path.clone()),
                version: None,
                publisher: None,
                size: file.size,
                format: file.format.clone(),
            }),
        });
        records.push(Record {
            program: Program::Enrichment,
            body: RecordBody::Event(Event {
                id: EventId::from_u128(u128::from(n)),
                device: device.clone(),
                user: Some(alice.clone()),
                recorded_at: now.checked_sub(Duration::minutes(5)).unwrap_or(now),
                body: EventBody::Execution(BinaryExecution {
                    sha256,
                    username: Personal::Clear("alice".into()),
                    path: Personal::Clear(path),
                    start: Personal::Clear(now),
                    duration: Personal::Clear(Duration::seconds(42)),
                }),
            }),
        });
    }
    for (i, line) in WEB_LOG.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        n += 1;
        records.push(web_request(i + 1, line, &device, 1000 + n)?);
    }
    let collected = records.len();
    let (filtered, report) = filter.apply_batch(records);

    let mut spool_options = SpoolOptions::default();
    spool_options.retention = retention;
    spool_options.key = Some(AtRestKey::new(1, random_key()?));
    let mut spool = Spool::open(&dir.path().join("spool.db"), spool_options)?;
    spool.append_batch(&filtered, now)?;

    let stream = tls::connect(
        addr,
        "127.0.0.1",
        tls::client_config(&std::fs::read_to_string(dir.path().join("ca.pem"))?)?,
    )?;
    let mut conn = Connection::new(stream);
    let consent = Program::ALL.iter().map(|p| (*p, policy.enabled(*p))).collect();
    let welcome = conn.client_handshake(&Hello::new(
        env!("CARGO_PKG_VERSION"),
        customer,
        device,
        consent,
        policy.version,
    ))?;
    let mut sent: BTreeMap<Program, usize> = BTreeMap::new();
    let mut batch_no = 0u128;
    while let Some((program, run)) = spool.next_run(welcome.max_batch_records as usize)? {
        batch_no += 1;
        let first_seq = run[0].seq;
        let last_seq = run[run.len() - 1].seq;
        *sent.entry(program).or_default() += run.len();
        let records = run.into_iter().map(|s| s.record).collect();
        conn.send(&Message::Batch(Batch {
            program,
            batch_id: privtel::model::BatchId::from_u128(batch_no),
            first_seq,
            records,
        }))?;
        match conn.recv()? {
            Message::Ack(ack) if ack.accepted_up_to >= last_seq => spool.ack(program, ack.accepted_up_to)?,
            other => bail!("agent: expected an ack for batch {batch_no}, got {}", other.kind_name()),
        };
    }
    // Enrichment: private lookups by hash prefix.
    let digests: Vec<_> = scan.hashed.iter().filter_map(|f| f.digests.sha256).collect();
    let mut seen_domains: Vec<Domain> = filtered
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Event(Event { body: EventBody::WebRequest(w), .. }) => match &w.host {
                Personal::Generalised(Generalised::Domain(d)) => Some(d.clone()),
                Personal::Clear(h) => Normalizer::shared().normalize(h).ok()?.registrable_domain(),
                _ => None,
            },
            _ => None,
        })
        .collect();
    seen_domains.sort();
    seen_domains.dedup();
    conn.send(&Message::EnrichQuery(wire::private_query(
        1,
        &digests,
        &seen_domains,
        wire::DEFAULT_PREFIX_LEN,
    )))?;
    let Message::EnrichAnswer(answer) = conn.recv()? else { bail!("agent: expected an enrichment answer") };
    let (bverdicts, dverdicts) = wire::verdicts_for(&answer, &digests, &seen_domains);
    conn.send(&Message::Goodbye(Goodbye { reason: "cycle done".into() }))?;
    let stored = service.join().map_err(|_| anyhow::anyhow!("the service thread panicked"))??;

    // 4. The report.
    let bytes: u64 = scan.hashed.iter().map(|f| f.size).sum();
    println!("privtel demo — service and agent on {addr} over TLS {}\n", welcome.version);
    println!(
        "Scanned {} executables ({} bytes) in {:.1} ms ({:.2} GB/s); {} files skipped (not executables, links, unreadable).",
        scan.hashed.len(),
        bytes,
        scan_secs * 1e3,
        bytes as f64 / scan_secs.max(1e-9) / 1e9,
        scan.skipped.len()
    );
    println!(
        "Web activity: {} requests to {} registrable domains: {}.",
        WEB_LOG.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count(),
        seen_domains.len(),
        seen_domains.iter().map(Domain::as_str).collect::<Vec<_>>().join(", ")
    );
    println!(
        "\nWhat left the device ({collected} records collected, {} sent, {stored} stored), per program:",
        filtered.len()
    );
    let manifest = Manifest::from_policy(&policy);
    for p in &manifest.programs {
        let n = sent.get(&p.program).copied().unwrap_or(0);
        let dropped = report.consent_off(p.program) + report.kind_not_allowed(p.program);
        let forms: Vec<String> = p
            .fields
            .iter()
            .filter(|f| f.treatment != privtel::model::Treatment::Drop)
            .map(|f| format!("{} {}", f.path, f.treatment))
            .take(3)
            .collect();
        println!(
            "  {:<24} {:<4} {:>3} sent, {:>2} dropped{}",
            p.program.to_string(),
            if p.enabled { "on" } else { "off" },
            n,
            dropped,
            if forms.is_empty() {
                String::new()
            } else {
                format!("  [{}{}]", forms.join("; "), if p.fields.len() > 3 { "; …" } else { "" })
            }
        );
    }
    println!(
        "\nVerdicts (private lookup by {}-byte hash prefix, buckets padded to {}):",
        wire::DEFAULT_PREFIX_LEN,
        wire::DEFAULT_PAD_TO
    );
    // Known verdicts first, then a count of the rest (a `--scan /usr/bin`
    // finds hundreds of binaries the sample service does not know).
    let mut rows: Vec<_> = scan.hashed.iter().zip(&bverdicts).collect();
    rows.sort_by_key(|(_, v)| v.threat == privtel::model::ThreatLevel::Unknown);
    for (f, v) in rows.iter().take(6) {
        println!(
            "  binary {:<10} {}…  threat {:<12} category {}",
            f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            &v.sha256.to_string()[..12],
            v.threat.to_string(),
            privtel::model::display_or_dash(v.category.as_ref())
        );
    }
    if rows.len() > 6 {
        let unknown =
            rows.iter().skip(6).filter(|(_, v)| v.threat == privtel::model::ThreatLevel::Unknown).count();
        println!("  … {} more binaries ({unknown} unknown to the service: threat -)", rows.len() - 6);
    }
    for v in &dverdicts {
        println!(
            "  domain {:<24} reputation {:<13} category {:<18} hosted in {}",
            v.domain.as_str(),
            v.reputation.to_string(),
            privtel::model::display_or_dash(v.category.as_ref()),
            privtel::model::display_or_dash(v.hosting_country.as_ref())
        );
    }

    let mut engine = engine.lock().map_err(|_| anyhow::anyhow!("engine lock"))?;
    let mut export = Vec::new();
    let lines = engine.export_person(&alice, &mut export)?;
    println!("\nExport of {alice} (right of access): {lines} records, {} bytes of JSON Lines.", export.len());
    let receipt = engine.erase_person(
        &ErasureRequest::new("dsar-0001", alice.clone(), now),
        now.checked_add(Duration::hours(3)).unwrap_or(now),
    )?;
    println!("Erasure of {alice}: {}", serde_json::to_string(&receipt)?);
    println!("After erasure, an export finds {} records.", engine.export_person(&alice, &mut Vec::new())?);

    let day31 = now.checked_add(Duration::days(31)).unwrap_or(now);
    let s31 = engine.sweep(day31)?;
    println!(
        "\nDay 31 sweep (events TTL {} days): {} events, {} objects expired; {} records left.",
        retention.events.days(),
        s31.events,
        s31.objects,
        engine.record_count()?
    );
    let day46 = now.checked_add(Duration::days(46)).unwrap_or(now);
    let s46 = engine.sweep(day46)?;
    println!(
        "Day 46 sweep (inactive after {} days): {} devices purged with {} records; {} records left.",
        retention.device_inactivity.whole_days(),
        s46.devices,
        s46.inactive_device_records,
        engine.record_count()?
    );
    drop(engine);
    let elapsed = started.elapsed().as_secs_f64();
    dir.close().context("removing the temporary folder")?;
    println!("\nDone in {elapsed:.2} s; temporary files removed.");
    Ok(())
}

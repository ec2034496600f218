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
//!    up over TLS; the binaries and sites go as anonymous sightings
//!    (Enhance, a session naming no device) and bring verdicts back;
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
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use privtel::agent::{Agent, WebLog, records_from_scan};
use privtel::authority::Authority;
use privtel::filter::{FilterBuilder, Manifest, Policy, PseudonymKey};
use privtel::hash::{Algorithms, ScannerBuilder};
use privtel::model::{
    CustomerId, Device, DeviceId, DeviceType, Domain, DomainSighting, KeyId, OsFamily, OsInfo, Personal,
    Program, Record, RecordBody, ThreatLevel, Timestamp, User, UserId, display_or_dash,
};
use privtel::retention::{RetentionPolicy, Ttl};
use privtel::service::{CustomerSettings, Service, Settings};
use privtel::store::{AtRestKey, EngineOptions, EngineStore, ErasureRequest, SpoolOptions, SqliteEngine};
use privtel::wire::{self, Connection, VerdictIndex, tls};
use time::Duration;

const POLICY: &str = include_str!("data/policy.toml");
const WEB_LOG: &str = include_str!("data/web.log");
const REPUTATION: &str = include_str!("data/reputation.csv");

/// Certificates live in real time, whatever the demo's data clock says.
fn wall_clock() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn random_key() -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    Ok(key)
}

/// The end-to-end demo: a service and an agent on 127.0.0.1 over TLS,
/// offline, in well under a second.
#[derive(Parser)]
#[command(name = "demo", version)]
struct Args {
    /// Also scan this folder (repeatable), e.g. /usr/bin.
    #[arg(long = "scan", value_name = "PATH")]
    scan: Vec<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args.scan) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(extra_scan: Vec<PathBuf>) -> anyhow::Result<()> {
    privtel::agent::check_scan_roots(&extra_scan)?;
    let started = Instant::now();
    let dir = tempfile::tempdir().context("making a temporary folder")?;
    let now = Timestamp::from_unix_seconds(1_795_770_000)?; // 2026-11-27T09:00:00Z, after the web log
    // Objects kept 60 days here, so day 46 shows the inactivity purge taking them.
    let retention = RetentionPolicy {
        events: Ttl::DAYS_30,
        objects: Ttl::custom(Duration::days(60)),
        ..RetentionPolicy::default()
    };

    // 1. The sample device.
    let bin = dir.path().join("device/bin");
    std::fs::create_dir_all(&bin)?;
    for (name, bytes) in privtel_testkit::fixtures::sample_executables() {
        std::fs::write(bin.join(name), bytes)?;
    }

    // 2. The service.
    let identity = tls::generate_identity(&["127.0.0.1"])?;
    std::fs::write(dir.path().join("ca.pem"), &identity.ca_pem)?;
    let engine = SqliteEngine::open(
        dir.path().join("engine.db"),
        EngineOptions::default()
            .retention(retention)
            .key(AtRestKey::new(1, random_key()?))
            .secret(random_key()?),
    )?;
    let (binaries, domains) = wire::parse_reputation(REPUTATION).context("examples/data/reputation.csv")?;
    let mut index = VerdictIndex::new(wire::DEFAULT_PAD_TO, random_key()?);
    binaries.into_iter().for_each(|v| index.add_binary(v));
    domains.into_iter().for_each(|v| index.add_domain(v));
    // The customer's settings at the service: the same policy its devices
    // apply, and an enrollment authority that issues their certificates.
    let settings = Settings::with_customers([CustomerSettings::new(
        CustomerId::new("acme")?,
        Policy::from_toml(POLICY).context("examples/data/policy.toml")?,
    )]);
    let authority = Arc::new(Authority::open(dir.path().join("authority.db"))?);
    authority.add_customer(&CustomerId::new("acme")?, wall_clock())?;
    let token = authority.issue_token(&CustomerId::new("acme")?, Duration::hours(1), 1, wall_clock())?;
    let service = Arc::new(
        Service::new(engine, index, move || now)
            .with_settings(settings)
            .with_authority(Arc::clone(&authority)),
    );
    let tls_config = privtel::authority::server_config(&authority, &identity)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Three connections: the device's enrollment, its upload, and the
    // anonymous enrichment session (Enhance).
    let server = {
        let service = Arc::clone(&service);
        std::thread::spawn(move || -> anyhow::Result<()> {
            for _ in 0..3 {
                let (tcp, _) = listener.accept()?;
                service.handle_tls(tcp, Arc::clone(&tls_config))?;
            }
            Ok(())
        })
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
    records.extend(records_from_scan(
        &scan,
        &device,
        Some(&alice),
        now.checked_sub(Duration::minutes(5)).unwrap_or(now),
    ));
    let web_log = dir.path().join("web.log");
    std::fs::write(&web_log, WEB_LOG)?;

    // The spool is sealed with a key made on first run (0600), beside it.
    let mut spool_options = SpoolOptions::default();
    spool_options.retention = retention;
    let mut agent = Agent::open(customer, device, filter, dir.path().join("spool.db"), spool_options)?;
    let raw_n = records.len();
    let mut collected = agent.collect(records, now)?;
    let (log_report, from_log) = agent.collect_web_log(&WebLog::new(&web_log), now)?;
    for problem in log_report.problem_lines() {
        eprintln!("demo: skipped {problem}");
    }
    let collected_n = raw_n + log_report.records as usize;
    collected.records += from_log.records;
    collected.report.merge(&from_log.report);
    collected.domains = from_log.domains;
    // What Enhance sends: binaries by digests, size and format, sites by
    // registrable name, each with the day first seen; nothing of the
    // device, its users or its paths.
    let binary_sightings = privtel::agent::sightings_from_scan(&scan, now);
    let domain_sightings: Vec<DomainSighting> =
        collected.domains.iter().map(|d| DomainSighting::new(d.clone(), now)).collect();
    let ca = std::fs::read_to_string(dir.path().join("ca.pem"))?;
    // Enrollment: a key made on the device, a certificate for it.
    let mut conn =
        Connection::new(tls::connect(addr, "127.0.0.1", privtel::agent::enrollment_client_config(&ca)?)?);
    let credentials =
        privtel::agent::enroll(&mut conn, &token, agent.customer(), agent.device(), dir.path())?;
    drop(conn);
    let mut conn =
        Connection::new(tls::connect(addr, "127.0.0.1", privtel::agent::client_config(&ca, &credentials)?)?);
    let upload = agent.upload(&mut conn, policy.version, now)?;
    agent.goodbye(&mut conn, now)?;
    let mut conn =
        Connection::new(tls::connect(addr, "127.0.0.1", privtel::agent::client_config(&ca, &credentials)?)?);
    let (bverdicts, dverdicts) = agent.enhance(&mut conn, &binary_sightings, &domain_sightings, now)?;
    server.join().map_err(|_| anyhow::anyhow!("the service thread panicked"))??;
    let stored = service.stats().stored.load(std::sync::atomic::Ordering::Relaxed);
    let report = collected.report;
    let seen_domains = collected.domains;
    let sent = upload.sent;
    let filtered_n = collected.records;

    // 4. The report.
    let bytes: u64 = scan.hashed.iter().map(|f| f.size).sum();
    println!(
        "privtel demo — service and agent on {addr}, TLS, protocol version {}\n",
        wire::SUPPORTED_VERSIONS[0]
    );
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
        "\nWhat left the device ({collected_n} records collected, {filtered_n} spooled and sent, {stored} stored), per program:"
    );
    let manifest = Manifest::from_policy(&policy);
    for p in &manifest.programs {
        let n = sent.get(&p.program).copied().unwrap_or(0);
        let dropped = report.consent_off(p.program) + report.kind_not_allowed(p.program);
        let forms: Vec<String> = p
            .fields
            .iter()
            .filter(|f| f.treatment != privtel::model::Treatment::Withhold)
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
        "\nVerdicts (Enhance: {} binaries and {} sites sent by digests, size, format and day first seen, on a session naming no device):",
        binary_sightings.len(),
        domain_sightings.len()
    );
    // Known verdicts first, then a count of the rest (a `--scan /usr/bin`
    // finds hundreds of binaries the sample service does not know).
    let names: BTreeMap<_, _> = scan
        .hashed
        .iter()
        .filter_map(|f| Some((f.digests.sha256?, f.path.file_name()?.to_string_lossy().into_owned())))
        .collect();
    let mut rows: Vec<_> =
        bverdicts.iter().map(|v| (names.get(&v.sha256).cloned().unwrap_or_default(), v)).collect();
    rows.sort_by_key(|(name, v)| (v.threat == ThreatLevel::Unknown, name.clone()));
    for (name, v) in rows.iter().take(6) {
        println!(
            "  binary {:<10} {}…  threat {:<12} category {}",
            name,
            &v.sha256.to_string()[..12],
            v.threat.to_string(),
            display_or_dash(v.category.as_ref())
        );
    }
    if rows.len() > 6 {
        let unknown = rows.iter().skip(6).filter(|(_, v)| v.threat == ThreatLevel::Unknown).count();
        println!("  … {} more binaries ({unknown} unknown to the service: threat -)", rows.len() - 6);
    }
    for v in &dverdicts {
        println!(
            "  domain {:<24} reputation {:<13} category {:<18} hosted in {}",
            v.domain.as_str(),
            v.reputation.to_string(),
            display_or_dash(v.category.as_ref()),
            display_or_dash(v.hosting_country.as_ref())
        );
    }

    let mut engine = service.engine();
    let acme = CustomerId::new("acme")?;
    let mut export = Vec::new();
    let lines = engine.export_person(&acme, &alice, &mut export)?;
    println!("\nExport of {alice} (right of access): {lines} records, {} bytes of JSON Lines.", export.len());
    let receipt = engine.erase_person(
        &acme,
        &ErasureRequest::new("dsar-0001", alice.clone(), now),
        now.checked_add(Duration::hours(3)).unwrap_or(now),
    )?;
    println!("Erasure of {alice}: {}", serde_json::to_string(&receipt)?);
    println!(
        "After erasure, an export finds {} records.",
        engine.export_person(&acme, &alice, &mut Vec::new())?
    );

    let day31 = now.checked_add(Duration::days(31)).unwrap_or(now);
    let s31 = engine.sweep(&acme, &retention, day31)?;
    println!(
        "\nDay 31 sweep (events TTL {} days): {} events, {} objects expired; {} records left.",
        retention.events.days(),
        s31.events,
        s31.objects,
        engine.record_count()?
    );
    let day46 = now.checked_add(Duration::days(46)).unwrap_or(now);
    let s46 = engine.sweep(&acme, &retention, day46)?;
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

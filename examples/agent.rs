//! The device side: scan, follow the web log, filter through the policy,
//! spool (sealed), upload over TLS with retries, look up verdicts privately.
//!
//! ```text
//! cargo run --release --example agent -- --server 127.0.0.1:PORT --ca CA.pem
//!     --customer acme --device dev-01 --policy examples/data/policy.toml --spool spool.db
//!     [--enroll-token TOKEN] [--scan DIR]... [--web-log FILE] [--user ID] [--audit-log FILE]
//!     [--processes] [--wtmp FILE] [--once] [--attempts N]
//! ```
//!
//! `--processes` (Linux) records an execution for each running process not
//! reported before (its binary hashed through a cache kept in
//! `SPOOL.proc-cache`), the device's description and performance samples;
//! the running binaries go to Enhance on the schedule. `--wtmp` follows a
//! login log (`/var/log/wtmp`) exactly once (docs/COLLECTORS.md).
//!
//! The device authenticates with a client certificate (mutual TLS). On its
//! first upload it enrolls: it makes its own key (which never leaves it),
//! sends the token an administrator issued (`cloud --issue-token acme`)
//! with a certificate request, and keeps the certificate and key in
//! `SPOOL.credentials/` (0600). Without credentials and without
//! `--enroll-token`, an upload fails with a message saying so.
//!
//! The web log format: one request a line, tab-separated: time (RFC 3339),
//! user id, URL, destination IP, page load in milliseconds; `#` comments.
//! The log is followed: each run reads only what was added since the last
//! one (the position is kept in the spool), finishing a rotated file first.
//! Malformed lines are reported as `file:line: column problem` and skipped.
//!
//! Keys are kept beside the spool, created 0600 on first run and refused if
//! group or others may read them: `SPOOL.pseudonym.key` (pseudonyms) and
//! `SPOOL.seal.key` (the spool is sealed with AES-256-GCM). Refused or
//! failed uploads are retried with exponential backoff and jitter, never
//! sooner than the service's `retry_after`; with `--once`, at most
//! `--attempts` times (default 5). Without `--once`, the cycle repeats on
//! the enrichment schedule (first upload 5 minutes after start-up; set
//! `PRIVTEL_FIRST_UPLOAD_SECS` to change it).
//!
//! Exit status: 0 done, 1 bad input or the service could not be reached or
//! kept refusing (everything unsent stays spooled), 2 bad arguments.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use privtel::agent::collect::{HostFiles, LoginLog, ProcessCollector};
use privtel::agent::{
    Agent, AgentError, AuditLog, AuditOptions, Credentials, RetryBudget, Schedule, WebLog, check_scan_roots,
    current_pseudonym_key, key_path, load_or_create_key, records_from_scan, sightings_from_scan,
};
use privtel::filter::{FilterBuilder, Policy, PseudonymKey};
use privtel::hash::{Algorithms, HashCache, Progress, ScanHooks, ScannerBuilder};
use privtel::model::{CustomerId, DeviceId, DomainSighting, KeyId, Program, Timestamp, UserId};
use privtel::wire::{Connection, tls};

/// The privtel agent: collect, filter, spool, upload, enrich.
#[derive(Parser)]
#[command(name = "agent", version)]
struct Args {
    /// The service, ADDR:PORT.
    #[arg(long)]
    server: SocketAddr,
    /// The CA certificate the service's certificate is checked against (PEM).
    #[arg(long, value_name = "PEM")]
    ca: PathBuf,
    /// The customer this device belongs to.
    #[arg(long)]
    customer: CustomerId,
    /// This device's id.
    #[arg(long)]
    device: DeviceId,
    /// The customer's policy (TOML).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The spool database (created if missing); keys are kept beside it.
    #[arg(long, value_name = "FILE")]
    spool: PathBuf,
    /// A folder to scan for executables (repeatable).
    #[arg(long, value_name = "DIR")]
    scan: Vec<PathBuf>,
    /// A web log to follow.
    #[arg(long, value_name = "FILE")]
    web_log: Option<PathBuf>,
    /// Record the running processes (executions), the device's description
    /// and performance samples (Linux).
    #[arg(long)]
    processes: bool,
    /// A login log in the utmp format to follow (`/var/log/wtmp`).
    #[arg(long, value_name = "FILE")]
    wtmp: Option<PathBuf>,
    /// The user the scanned executions are attributed to.
    #[arg(long)]
    user: Option<UserId>,
    /// Write every message sent, decoded, to this JSON Lines file (0600,
    /// rotated at 8 MiB, expired with the data; each message sealed with
    /// the spool's key: read it with the `audit` example).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// The enrollment token an administrator issued, for the first
    /// upload of a device without credentials.
    #[arg(long, value_name = "TOKEN")]
    enroll_token: Option<String>,
    /// The customer's pseudonym key ring (0600, docs/KEYS.md): its current
    /// key pseudonymises. Read at start: restart after a rotation. Without
    /// it, a key kept beside the spool, id 1.
    #[arg(long, value_name = "FILE")]
    pseudonym_keys: Option<PathBuf>,
    /// One cycle, then exit.
    #[arg(long)]
    once: bool,
    /// Upload attempts per cycle with --once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    attempts: u32,
}

fn now() -> Timestamp {
    Timestamp::new(time::OffsetDateTime::now_utc())
}

fn cycle(args: &Args, agent: &mut Agent, policy_version: u32) -> anyhow::Result<()> {
    let expired = agent.maintain(now())?;
    if expired > 0 {
        eprintln!("agent: {expired} spooled records expired under the ttl");
    }
    // Collect: scans and the web log, filtered into the spool.
    let mut binaries = Vec::new();
    if !args.scan.is_empty() {
        let tty = std::io::stderr().is_terminal();
        let progress = |p: Progress| {
            if tty && p.files_done.is_multiple_of(64) {
                eprint!("\rscanning: {} of {} files, {} MB", p.files_done, p.files_total, p.bytes_done >> 20);
            }
        };
        let scan = ScannerBuilder::new()
            .algorithms(Algorithms::Both)
            .executables_only(true)
            .build()
            .scan_with(&args.scan, ScanHooks { progress: Some(&progress), ..ScanHooks::default() });
        if tty {
            eprintln!();
        }
        eprintln!("agent: {} executables hashed, {} files skipped", scan.hashed.len(), scan.skipped.len());
        // The executions (device and person) go through the filter into
        // the spool; the binaries leave only as anonymous sightings.
        agent.collect(records_from_scan(&scan, agent.device(), args.user.as_ref(), now()), now())?;
        binaries = sightings_from_scan(&scan, now());
    }
    if args.processes {
        let cache_path = args.spool.with_extension("proc-cache");
        let cache = HashCache::load_or_default(&cache_path)?;
        let mut collector = ProcessCollector::new().with_cache(cache);
        let (report, _) = agent.collect_processes(&mut collector, now())?;
        eprintln!(
            "agent: {} processes read, {} new; not readable by this account {}, kernel threads {}, ended while read {}",
            report.running, report.new, report.unreadable, report.kernel_threads, report.vanished
        );
        if collector.cache_mut().is_dirty() {
            collector.cache_mut().save(&cache_path)?;
        }
        binaries.extend(report.sightings);
        binaries.sort_by_key(|b| b.sha256);
        binaries.dedup_by_key(|b| b.sha256);
        agent.collect_device(&HostFiles::default(), now())?;
        agent.collect_performance(&HostFiles::default(), now())?;
    }
    if let Some(path) = &args.wtmp {
        let (report, _) = agent.collect_logins(&LoginLog::new(path), now())?;
        for problem in &report.problems {
            eprintln!("agent: skipped {}: {problem}", path.display());
        }
        eprintln!("agent: {} new records, {} logins from {}", report.records, report.logins, path.display());
    }
    let mut domains = Vec::new();
    if let Some(path) = &args.web_log {
        let (report, collected) = agent.collect_web_log(&WebLog::new(path), now())?;
        for problem in report.problem_lines() {
            eprintln!("agent: skipped {problem}");
        }
        if report.skipped > report.problems.len() as u64 {
            eprintln!("agent: … {} malformed lines in all", report.skipped);
        }
        if report.rotated {
            eprintln!(
                "agent: {} was rotated; {} lines read from the old file",
                path.display(),
                report.rotated_lines
            );
        }
        if report.truncated {
            eprintln!("agent: {} was truncated; reading it from the start", path.display());
        }
        eprintln!("agent: {} new lines, {} records from the web log", report.lines, report.records);
        domains = collected.domains.into_iter().map(|d| DomainSighting::new(d, now())).collect();
    }
    eprintln!("agent: {} records waiting", agent.outbox().len(None)?);

    // Upload, with backoff while the service is unreachable or refuses;
    // enrollment first, if this device has no credentials yet.
    let server_ca = std::fs::read_to_string(&args.ca).with_context(|| args.ca.display().to_string())?;
    let budget = if args.once { RetryBudget::attempts(args.attempts) } else { RetryBudget::forever() };
    let mut config = None;
    let mut connect = || {
        let config = match &config {
            Some(c) => std::sync::Arc::clone(c),
            None => {
                let credentials = credentials(args, &server_ca)?;
                let c = privtel::agent::client_config(&server_ca, &credentials)
                    .map_err(|e| AgentError::Enrollment { error: e.to_string() })?;
                config.insert(c).clone()
            }
        };
        Ok(Connection::new(tls::connect(args.server, &args.server.ip().to_string(), config)?))
    };
    let sleep = |d: std::time::Duration| {
        eprintln!("agent: retrying in {d:.1?}");
        std::thread::sleep(d);
    };
    let mut delivery = agent.deliver(&mut connect, policy_version, &budget, sleep, now)?;
    for (program, n) in &delivery.report.sent {
        println!("sent {n} {program} records");
    }
    if delivery.report.refused > 0 {
        println!("refused {} records (removed)", delivery.report.refused);
    }
    if delivery.report.switched_off > 0 {
        println!(
            "removed {} records of programs the policy switches off (not sent)",
            delivery.report.switched_off
        );
    }
    if delivery.report.too_large > 0 {
        println!("removed {} records too large to send (not sent)", delivery.report.too_large);
    }
    if delivery.report.new_stream {
        println!(
            "the spool was behind the service's mark (restored from an older copy): moved to a new stream"
        );
    }
    agent.goodbye(&mut delivery.conn, now())?;
    // Enrichment (Enhance), on a session of its own that names no device:
    // binaries by digests, size and format, sites by registrable name,
    // each with the day first seen (nothing is sent when it is off).
    let (b, d) =
        if agent.filter().enabled(Program::Enrichment) && !(binaries.is_empty() && domains.is_empty()) {
            let mut conn = connect()?;
            agent.enhance(&mut conn, &binaries, &domains, now())?
        } else {
            (Vec::new(), Vec::new())
        };
    for v in &b {
        println!(
            "binary {} threat {} category {}",
            v.sha256,
            v.threat,
            privtel::model::display_or_dash(v.category.as_ref())
        );
    }
    for v in &d {
        println!(
            "domain {} reputation {} category {} hosted in {}",
            v.domain,
            v.reputation,
            privtel::model::display_or_dash(v.category.as_ref()),
            privtel::model::display_or_dash(v.hosting_country.as_ref())
        );
    }
    Ok(())
}

/// The device's credentials: kept from an earlier enrollment, or made now
/// with `--enroll-token`.
fn credentials(args: &Args, server_ca: &str) -> Result<Credentials, AgentError> {
    let mut dir = args.spool.clone().into_os_string();
    dir.push(".credentials");
    let dir = PathBuf::from(dir);
    let enrollment = |error: String| AgentError::Enrollment { error };
    if dir.join(privtel::authority::CREDENTIALS_FILE).exists() {
        return Credentials::load(&dir).map_err(|e| enrollment(e.to_string()));
    }
    let Some(token) = &args.enroll_token else {
        return Err(enrollment("this device has no credentials: pass --enroll-token".into()));
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|e| enrollment(format!("{}: {e}", dir.display())))?;
    let config =
        privtel::agent::enrollment_client_config(server_ca).map_err(|e| enrollment(e.to_string()))?;
    let mut conn = Connection::new(tls::connect(args.server, &args.server.ip().to_string(), config)?);
    let credentials = privtel::agent::enroll(&mut conn, token, &args.customer, &args.device, &dir)?;
    eprintln!("agent: enrolled as {}/{}", args.customer, args.device);
    Ok(credentials)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    check_scan_roots(&args.scan)?;
    let text = std::fs::read_to_string(&args.policy).with_context(|| args.policy.display().to_string())?;
    let (policy, warnings) =
        Policy::from_toml_with_warnings(&text).with_context(|| args.policy.display().to_string())?;
    for w in &warnings {
        eprintln!("agent: warning: {}: {w}", args.policy.display());
    }
    let key = match &args.pseudonym_keys {
        Some(ring) => current_pseudonym_key(ring)?,
        None => PseudonymKey::new(KeyId::new(1), load_or_create_key(key_path(&args.spool, "pseudonym"))?),
    };
    let filter = FilterBuilder::new().policy(policy.clone()).customer(args.customer.clone()).key(key).build();
    // The spool keeps events, objects and devices no longer than the
    // policy's TTLs ([retention]: events, objects, inactive_device).
    let options = privtel::agent::spool_options(&policy);
    let ttl = options.retention.events.duration();
    let mut agent = Agent::open(args.customer.clone(), args.device.clone(), filter, &args.spool, options)?;
    if let Some(path) = &args.audit_log {
        agent = agent.with_audit_log(AuditLog::open(path, AuditOptions::with_ttl(ttl))?);
    }
    // Consent withdrawn since the last run: nothing of it may stay spooled.
    for program in Program::ALL {
        if !policy.enabled(program) {
            agent.withdraw(program)?;
        }
    }
    if args.once {
        return cycle(args, &mut agent, policy.version);
    }
    let schedule = Schedule {
        first_upload_after: time::Duration::seconds(
            std::env::var("PRIVTEL_FIRST_UPLOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(300),
        ),
        ..Schedule::default()
    };
    let started = now();
    while !schedule.first_upload_due(started, now()) {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    loop {
        if let Err(e) = cycle(args, &mut agent, policy.version) {
            eprintln!("agent: cycle failed: {e:#}");
        }
        std::thread::sleep(schedule.new_lookup_within.unsigned_abs());
    }
}

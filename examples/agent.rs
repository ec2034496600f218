//! The device side: scan, read the web log, filter through the policy, spool,
//! upload over TLS, look up verdicts privately.
//!
//! ```text
//! cargo run --release --example agent -- --server 127.0.0.1:PORT --ca CA.pem
//!     --customer acme --device dev-01 --policy examples/data/policy.toml --spool spool.db
//!     [--scan DIR]... [--web-log FILE] [--user ID] [--audit-log FILE] [--once]
//! ```
//!
//! The web log format: one request a line, tab-separated: time (RFC 3339),
//! user id, URL, destination IP, page load in milliseconds; `#` comments.
//! The pseudonymisation key is kept beside the spool (`SPOOL.key`, made on
//! first run). Unreachable service: retried with backoff (three tries with
//! `--once`); what is spooled stays spooled. Without `--once`, the cycle
//! repeats on the enrichment schedule (first upload 5 minutes after
//! start-up; set `PRIVTEL_FIRST_UPLOAD_SECS` to change it).
//! Exit status: 0 done, 1 bad input or service error, 2 bad arguments.

use std::io::{IsTerminal as _, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use privtel::agent::{Agent, Schedule, parse_web_log, read_input, records_from_scan};
use privtel::filter::{FilterBuilder, Policy, PseudonymKey};
use privtel::hash::{Algorithms, Progress, ScanHooks, ScannerBuilder};
use privtel::model::{CustomerId, DeviceId, KeyId, Timestamp, UserId};
use privtel::store::{Spool, SpoolOptions};
use privtel::wire::{Connection, tls};

struct Args {
    server: SocketAddr,
    ca: PathBuf,
    customer: CustomerId,
    device: DeviceId,
    policy: PathBuf,
    spool: PathBuf,
    scan: Vec<PathBuf>,
    web_log: Option<PathBuf>,
    user: Option<UserId>,
    audit: Option<PathBuf>,
    once: bool,
}

fn args() -> anyhow::Result<Args> {
    let (mut server, mut ca, mut customer, mut device, mut policy, mut spool) =
        (None, None, None, None, None, None);
    let (mut scan, mut web_log, mut user, mut audit, mut once) = (Vec::new(), None, None, None, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--server" => server = Some(value()?.parse().context("--server takes ADDR:PORT")?),
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--customer" => customer = Some(CustomerId::new(value()?)?),
            "--device" => device = Some(DeviceId::new(value()?)?),
            "--policy" => policy = Some(PathBuf::from(value()?)),
            "--spool" => spool = Some(PathBuf::from(value()?)),
            "--scan" => scan.push(PathBuf::from(value()?)),
            "--web-log" => web_log = Some(PathBuf::from(value()?)),
            "--user" => user = Some(UserId::new(value()?)?),
            "--audit-log" => audit = Some(PathBuf::from(value()?)),
            "--once" => once = true,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(Args {
        server: server.context("--server is required")?,
        ca: ca.context("--ca is required")?,
        customer: customer.context("--customer is required")?,
        device: device.context("--device is required")?,
        policy: policy.context("--policy is required")?,
        spool: spool.context("--spool is required")?,
        scan,
        web_log,
        user,
        audit,
        once,
    })
}

fn now() -> Timestamp {
    Timestamp::new(time::OffsetDateTime::now_utc())
}

/// The pseudonymisation key beside the spool, made from the OS's randomness
/// on first run.
fn key(spool: &std::path::Path) -> anyhow::Result<PseudonymKey> {
    let path = spool.with_extension("key");
    let secret: [u8; 32] = match std::fs::read(&path) {
        Ok(bytes) => bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", path.display()))?,
        Err(_) => {
            let mut s = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut s)?;
            std::fs::write(&path, s).with_context(|| path.display().to_string())?;
            s
        }
    };
    Ok(PseudonymKey::new(KeyId::new(1), secret))
}

fn cycle(args: &Args, agent: &mut Agent, policy_version: u32) -> anyhow::Result<()> {
    // Collect: scans and the web log, filtered into the spool.
    let mut records = Vec::new();
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
        records.extend(records_from_scan(&scan, &args.device, args.user.as_ref(), now()));
    }
    if let Some(path) = &args.web_log {
        let text = read_input(path)?;
        records.extend(parse_web_log(&text, &path.display().to_string(), &args.device)?);
    }
    let collected = agent.collect(records, now())?;
    eprintln!("agent: {} records spooled; {} waiting in all", collected.records, agent.spool().len(None)?);

    // Upload, with backoff while the service is unreachable.
    let config = tls::client_config(
        &std::fs::read_to_string(&args.ca).with_context(|| args.ca.display().to_string())?,
    )?;
    let mut wait = std::time::Duration::from_millis(200);
    let mut tries = 0;
    let mut conn = loop {
        tries += 1;
        match tls::connect(args.server, &args.server.ip().to_string(), config.clone()) {
            Ok(stream) => break Connection::new(stream),
            Err(e) if !args.once || tries < 3 => {
                eprintln!("agent: service unreachable ({e}); retrying in {wait:?}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(300));
            }
            Err(e) => bail!(
                "service unreachable after {tries} tries: {e}; {} records stay spooled",
                agent.spool().len(None)?
            ),
        }
    };
    let upload = agent.upload(&mut conn, policy_version)?;
    for (program, n) in &upload.sent {
        println!("sent {n} {program} records");
    }
    // Enrichment of the binaries just scanned and the domains just seen.
    let (b, d) = agent.enrich(&mut conn, &collected.binaries, &collected.domains)?;
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
    agent.goodbye(&mut conn)?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agent: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let policy =
        Policy::from_toml(&read_input(&args.policy)?).with_context(|| args.policy.display().to_string())?;
    let filter = FilterBuilder::new()
        .policy(policy.clone())
        .customer(args.customer.clone())
        .key(key(&args.spool)?)
        .build();
    let mut options = SpoolOptions::default();
    options.retention.events =
        privtel::retention::Ttl::custom(time::Duration::days(i64::from(policy.retention.events)));
    let spool = Spool::open(&args.spool, options)?;
    let mut agent = Agent::new(args.customer.clone(), args.device.clone(), filter, spool);
    if let Some(path) = &args.audit {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| path.display().to_string())?;
        agent = agent.with_audit_log(Box::new(file));
    }
    // Consent withdrawn since the last run: nothing of it may stay spooled.
    for program in privtel::model::Program::ALL {
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

//! The service: enrolls devices, accepts them over mutual TLS, checks every
//! record against its customer's settings, ingests idempotently into an
//! engine store, answers enrichment queries in both modes, sweeps each
//! customer with its own TTLs, and keeps serving while single connections
//! misbehave.
//!
//! ```text
//! cargo run --release --example cloud -- --listen 127.0.0.1:0 --store engine.db
//!     --settings examples/data/settings.toml --reputation examples/data/reputation.csv
//!     [--authority FILE] [--cert PEM --key PEM] [--cert-out CA.pem] [--store-key FILE]
//!     [--store-secret FILE] [--sweep-every SECONDS] [--max-batch-records N] [--max-connections N]
//!     [--region R] [--admin-socket PATH --operators FILE [--access-log FILE] [--access-key FILE]
//!      [--requests FILE] [--max-grant-hours H]] [--master-key FILE | --master-key-env VAR]
//!     [--key-store FILE] [--key-backup-days N]
//! cargo run --release --features scale --example cloud -- … --ingest nats://127.0.0.1:4222
//!     [--engine postgres://postgres@127.0.0.1:5432/privtel] [--stream NAME] [--subject-prefix P]
//!     [--consumer C] [--region R] [--metrics-every SECONDS]
//! cargo run --example cloud -- --store engine.db --issue-token acme [--token-uses N] [--token-hours H]
//! cargo run --example cloud -- --store engine.db --revoke acme:dev-01
//! cargo run --example cloud -- --store engine.db --settings examples/data/settings.toml
//!     --report acme [--quarter 2026-Q4] [--json] [--noise-seed N]
//! ```
//!
//! The settings file (TOML) names every customer served, with its policy
//! and TTLs; a customer without settings is refused. It is read again when
//! it changes (a bad edit is reported and the previous settings kept).
//!
//! Devices enroll once with a token an administrator issues
//! (`--issue-token CUSTOMER` prints one and exits); the register of
//! customers' authorities, tokens and devices is `--authority` (default:
//! the store's path with `.authority` appended). `--revoke CUSTOMER:DEVICE`
//! revokes a device (a running service refuses it at its next connection).
//!
//! `--report CUSTOMER` prints the customer's quarterly benchmark report
//! (Markdown, or JSON with `--json`) from the store's benchmarking
//! aggregates and exits: its figures against its industry's, each industry
//! cell shown only if at least 5 customers are behind it, with Laplace
//! noise seeded by `--noise-seed` (docs/BENCHMARKS.md).
//!
//! Without `--cert`/`--key` it makes a CA and a certificate for the listen
//! address and writes the CA (what agents must trust) to `--cert-out`. It
//! prints `listening on ADDR` once it accepts connections, and reports
//! refused identities and clone suspicions on standard error.
//!
//! `--ingest nats://…` (the `scale` feature) makes the service a
//! stateless front-end: each accepted batch is published to NATS JetStream
//! and the agent acknowledged once JetStream holds it; a writer thread in
//! this process consumes the stream into the store (`--store`), or, with
//! `--engine postgres://…`, into that PostgreSQL database, which welcomes
//! then read high-water marks from, and where retention sweeps, a
//! person's export and erasure, the customer copy and contract end act
//! (as well as on `--store`). More writers may run elsewhere on the
//! same stream (`privtel-service`'s `writer` example). The counters
//! (accepted, published, applied, lag) go to standard error as one JSON line
//! every `--metrics-every` seconds. `--store-key` also seals the messages in
//! the stream. Without `--ingest` the service stores into `--store` itself,
//! as always.
//!
//! `--admin-socket PATH` serves the administrative console there (mode
//! 0600) for the `admin` example: operators named in `--operators`, each
//! action under a grant and written to the access log (`--access-log`,
//! signed with `--access-key`). `--region R` pins the service to one region:
//! devices and administrative actions of customers of other regions are
//! refused.
//!
//! Exit status: 0 stopped (or an administrative command done), 1 a
//! start-up failure (files, address, settings), 2 bad arguments.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, bail};
use clap::Parser;
use privtel::access::{AccessControl, AccessOptions, RequestOptions, RequestRegister, SigningKey};
use privtel::authority::Authority;
use privtel::model::{CustomerId, DeviceId, Timestamp};
use privtel::service::console::Operators;
use privtel::service::{BenchmarkOptions, Limits, Quarter, Service, Settings, quarterly_report};
use privtel::store::{AtRestKey, EngineOptions, KeyStore, KeyStoreOptions, MasterKey, SqliteEngine};
use privtel::wire::{self, VerdictIndex, tls};

/// The privtel service: accept agents over TLS, ingest, answer enrichment.
#[derive(Parser)]
#[command(name = "cloud", version)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The engine store (SQLite, created if missing).
    #[arg(long, value_name = "FILE")]
    store: PathBuf,
    /// The customers' settings (TOML): required to serve.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["issue_token", "revoke"])]
    settings: Option<PathBuf>,
    /// The register of customers' enrollment authorities, tokens and
    /// devices (SQLite, 0600; default: STORE.authority).
    #[arg(long, value_name = "FILE")]
    authority: Option<PathBuf>,
    /// Print an enrollment token for this customer and exit.
    #[arg(long, value_name = "CUSTOMER", conflicts_with = "revoke")]
    issue_token: Option<CustomerId>,
    /// Devices the token may enroll.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    token_uses: u32,
    /// Hours the token stays valid.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=720))]
    token_hours: u32,
    /// Revoke CUSTOMER:DEVICE and exit.
    #[arg(long, value_name = "CUSTOMER:DEVICE")]
    revoke: Option<String>,
    /// The keyed-hash secret of the suppression lists: 32 bytes in this
    /// file (without it, one is kept in the store).
    #[arg(long, value_name = "FILE")]
    store_secret: Option<PathBuf>,
    /// Most connections served at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Verdicts to answer with (CSV).
    #[arg(long, value_name = "CSV")]
    reputation: Option<PathBuf>,
    /// The server certificate (PEM); with --key. Without both, one is made.
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// The server's private key (PEM); with --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// Where to write the CA agents must trust (when the certificate is made here).
    #[arg(long, value_name = "PEM")]
    cert_out: Option<PathBuf>,
    /// Seal stored payloads with the 32-byte key in this file (one key for
    /// every customer; see --master-key for per-customer keys).
    #[arg(long, value_name = "FILE")]
    store_key: Option<PathBuf>,
    /// Seal each customer's rows under a data key of its own, wrapped by the
    /// master key in this file (64 hex digits, 0600; created if missing).
    /// Contract end destroys the customer's keys first.
    #[arg(long, value_name = "FILE", conflicts_with = "master_key_env")]
    master_key: Option<PathBuf>,
    /// The same, the master key from this environment variable.
    #[arg(long, value_name = "VAR")]
    master_key_env: Option<String>,
    /// The key store (default: STORE.keys), with a master key.
    #[arg(long, value_name = "FILE")]
    key_store: Option<PathBuf>,
    /// Days the key store keeps its backup copies (1 to 30; default 7): how
    /// long a destroyed key can survive in them.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=30))]
    key_backup_days: Option<u64>,
    /// Seconds between retention sweeps.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    sweep_every: u64,
    /// Most records per batch asked of agents.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_batch_records: Option<u32>,
    /// Print this customer's quarterly benchmark report and exit.
    #[arg(long, value_name = "CUSTOMER", conflicts_with_all = ["issue_token", "revoke"])]
    report: Option<CustomerId>,
    /// The report's quarter (`2026-Q4`; default: the current one).
    #[arg(long, value_name = "YYYY-QN", requires = "report")]
    quarter: Option<Quarter>,
    /// The report as JSON rather than Markdown.
    #[arg(long, requires = "report")]
    json: bool,
    /// The benchmark noise's seed (keep it secret: whoever knows it can
    /// subtract the noise).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "report")]
    noise_seed: u64,
    /// Publish accepted batches to NATS JetStream at this server; a writer
    /// thread applies them to the store (needs the `scale` feature).
    #[arg(long, value_name = "nats://HOST:PORT", conflicts_with_all = ["issue_token", "revoke", "report"])]
    ingest: Option<String>,
    /// Apply the stream into this PostgreSQL database instead of --store,
    /// and read welcomes' high-water marks from it (needs --ingest and the
    /// `scale` feature).
    #[arg(long, value_name = "postgres://…", requires = "ingest")]
    engine: Option<String>,
    /// The JetStream stream's name (with --ingest).
    #[arg(long, value_name = "NAME", default_value = "PRIVTEL_INGEST", requires = "ingest")]
    stream: String,
    /// The first tokens of the stream's subjects (with --ingest).
    #[arg(long, value_name = "P", default_value = "privtel.ingest", requires = "ingest")]
    subject_prefix: String,
    /// The writers' durable consumer (with --ingest).
    #[arg(long, value_name = "C", default_value = "privtel-writer", requires = "ingest")]
    consumer: String,
    /// The one region this service serves (`eu`, `uk`, `us`, … as the
    /// settings name them): devices and administrative actions of customers
    /// of other regions are refused. Also the region token of the stream's
    /// subjects with --ingest (default there: eu). Without it, every region.
    #[arg(long, value_name = "R")]
    region: Option<String>,
    /// Serve the administrative console on this Unix socket (made 0600):
    /// the `admin` example's grants, exports, erasures, customer copies and
    /// deletions, end-user requests and keys.
    #[arg(long, value_name = "PATH", requires = "operators")]
    admin_socket: Option<PathBuf>,
    /// The operators (TOML: name, SHA-256 of their token, approver), with
    /// --admin-socket.
    #[arg(long, value_name = "FILE", requires = "admin_socket")]
    operators: Option<PathBuf>,
    /// The access log (default: STORE.access), with --admin-socket.
    #[arg(long, value_name = "FILE", requires = "admin_socket")]
    access_log: Option<PathBuf>,
    /// The service's Ed25519 signing key for checkpoints and receipts,
    /// PKCS#8, created 0600 if missing (default: STORE.access-key).
    #[arg(long, value_name = "FILE", requires = "admin_socket")]
    access_key: Option<PathBuf>,
    /// The register of end users' requests (SQLite; default:
    /// STORE.requests), with --admin-socket.
    #[arg(long, value_name = "FILE", requires = "admin_socket")]
    requests: Option<PathBuf>,
    /// The longest grant, in hours (default 8).
    #[arg(long, value_name = "H", requires = "admin_socket", value_parser = clap::value_parser!(u32).range(1..=720))]
    max_grant_hours: Option<u32>,
    /// Seconds between two metrics lines on standard error (with --ingest).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, requires = "ingest",
          value_parser = clap::value_parser!(u64).range(1..))]
    metrics_every: u64,
}

fn now() -> Timestamp {
    Timestamp::new(time::OffsetDateTime::now_utc())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !cfg!(feature = "scale") && args.ingest.is_some() {
        use clap::CommandFactory as _;
        Args::command()
            .error(
                clap::error::ErrorKind::InvalidValue,
                "--ingest and --engine need the `scale` feature: cargo run --features scale --example cloud",
            )
            .exit();
    }
    if let Some(url) = &args.engine
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        use clap::CommandFactory as _;
        Args::command()
            .error(clap::error::ErrorKind::InvalidValue, "--engine: expected a postgres:// URL")
            .exit();
    }
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--report`: the customer's quarterly benchmark report on standard output.
fn report(args: &Args, customer: &CustomerId) -> anyhow::Result<()> {
    let settings_path = args.settings.clone().context("--settings is required for a report")?;
    let settings = Settings::load(&settings_path)?;
    let mut options = EngineOptions::default();
    if let Some(path) = &args.store_secret {
        options = options.secret(read_key(path)?);
    }
    options = with_key_store(args, options)?;
    let engine =
        SqliteEngine::open(&args.store, options).with_context(|| args.store.display().to_string())?;
    let quarter = args.quarter.unwrap_or_else(|| Quarter::of(now()));
    let benchmark = BenchmarkOptions::default().with_seed(args.noise_seed);
    let report = quarterly_report(&engine, &settings, customer, quarter, &benchmark)?;
    let text = if args.json { report.to_json() } else { report.to_markdown() };
    println!("{text}");
    Ok(())
}

/// `options` sealing under per-customer keys when a master key is given.
fn with_key_store(args: &Args, options: EngineOptions) -> anyhow::Result<EngineOptions> {
    let path = args.key_store.clone().unwrap_or_else(|| beside(&args.store, ".keys"));
    let master = match (&args.master_key, &args.master_key_env) {
        // A new master key only for a new key store: an existing one needs
        // the key it is wrapped under (after a rotation, the new one).
        (Some(key), _) if path.exists() => {
            MasterKey::load(key).with_context(|| format!("{}: the key store's master key", key.display()))?
        }
        (Some(key), _) => MasterKey::load_or_create(key).with_context(|| key.display().to_string())?,
        (None, Some(var)) => MasterKey::from_env(var)?,
        (None, None) => return Ok(options),
    };
    let mut key_options = KeyStoreOptions::default();
    if let Some(days) = args.key_backup_days {
        key_options = key_options.backup_retention(std::time::Duration::from_secs(days * 86_400));
    }
    let keys = KeyStore::open(&path, master, key_options).with_context(|| path.display().to_string())?;
    Ok(options.key_store(Arc::new(keys)))
}

fn read_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", path.display()))
}

/// Loads the settings and registers every customer with the authority.
fn load_settings(path: &std::path::Path, authority: &Authority) -> anyhow::Result<Settings> {
    let settings = Settings::load(path)?;
    for c in settings.customers() {
        authority.add_customer(c.customer(), now().as_offset_date_time())?;
    }
    Ok(settings)
}

fn run(args: Args) -> anyhow::Result<()> {
    let authority_path = args.authority.clone().unwrap_or_else(|| {
        let mut p = args.store.clone().into_os_string();
        p.push(".authority");
        p.into()
    });
    let authority =
        Arc::new(Authority::open(&authority_path).with_context(|| authority_path.display().to_string())?);
    if let Some(customer) = &args.issue_token {
        authority.add_customer(customer, now().as_offset_date_time())?;
        let ttl = time::Duration::hours(i64::from(args.token_hours));
        println!("{}", authority.issue_token(customer, ttl, args.token_uses, now().as_offset_date_time())?);
        return Ok(());
    }
    if let Some(which) = &args.revoke {
        let (c, d) = which.split_once(':').context("--revoke: expected CUSTOMER:DEVICE")?;
        let (c, d) = (CustomerId::new(c)?, DeviceId::new(d)?);
        if !authority.revoke_device(&c, &d, now().as_offset_date_time())? {
            bail!("{c}:{d} is not enrolled");
        }
        println!("revoked {c}:{d}");
        return Ok(());
    }
    if let Some(customer) = &args.report {
        return report(&args, customer);
    }
    let settings_path = args.settings.clone().context("--settings is required to serve")?;
    let settings = load_settings(&settings_path, &authority)?;
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;

    let identity = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => tls::Identity {
            ca_pem: String::new(),
            cert_pem: std::fs::read_to_string(c).with_context(|| c.display().to_string())?,
            key_pem: std::fs::read_to_string(k).with_context(|| k.display().to_string())?,
        },
        (None, None) => tls::generate_identity(&[&addr.ip().to_string(), "localhost"])?,
        _ => bail!("--cert and --key go together"),
    };
    if let Some(out) = &args.cert_out {
        std::fs::write(out, &identity.ca_pem).with_context(|| out.display().to_string())?;
    }
    let mut options = EngineOptions::default();
    if let Some(path) = &args.store_key {
        options = options.key(AtRestKey::new(1, read_key(path)?));
    }
    if let Some(path) = &args.store_secret {
        options = options.secret(read_key(path)?);
    }
    options = with_key_store(&args, options)?;
    let engine =
        SqliteEngine::open(&args.store, options).with_context(|| args.store.display().to_string())?;
    let mut index =
        VerdictIndex::new(wire::DEFAULT_PAD_TO, *blake3::hash(addr.to_string().as_bytes()).as_bytes());
    if let Some(path) = &args.reputation {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let (b, d) = wire::parse_reputation(&text).with_context(|| path.display().to_string())?;
        b.into_iter().for_each(|v| index.add_binary(v));
        d.into_iter().for_each(|v| index.add_domain(v));
    }
    let mut limits = Limits::default();
    if let Some(n) = args.max_connections {
        limits.max_connections = n as usize;
    }
    let mut service = Service::new(engine, index, now)
        .with_settings(settings)
        .with_authority(Arc::clone(&authority))
        .with_limits(limits)
        .with_log(|line| eprintln!("cloud: {line}"));
    if let Some(n) = args.max_batch_records {
        service = service.with_max_batch_records(n);
    }
    if let Some(region) = &args.region {
        service = service.with_region(region.clone());
    }
    let console = match &args.admin_socket {
        Some(socket) => {
            let (access, operators) = console_parts(&args)?;
            let path = args.requests.clone().unwrap_or_else(|| beside(&args.store, ".requests"));
            let register = RequestRegister::open(&path, RequestOptions::default())
                .with_context(|| path.display().to_string())?;
            service = service.with_access(access).with_requests(Arc::new(register));
            Some((socket.clone(), operators))
        }
        None => None,
    };
    #[cfg(feature = "scale")]
    let (service, ingest) = match &args.ingest {
        Some(url) => {
            let (service, ingest) = scale::front_end(&args, url, service)?;
            (service, Some(ingest))
        }
        None => (service, None),
    };
    let service = Arc::new(service);
    #[cfg(feature = "scale")]
    if let Some(ingest) = ingest {
        ingest.start(&service)?;
    }

    // The settings file is read again when it changes.
    {
        let service = Arc::clone(&service);
        let authority = Arc::clone(&authority);
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = modified(&settings_path);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let now_modified = modified(&settings_path);
                if now_modified == seen {
                    continue;
                }
                seen = now_modified;
                match load_settings(&settings_path, &authority) {
                    Ok(s) => {
                        service.replace_settings(s);
                        eprintln!("cloud: settings reloaded from {}", settings_path.display());
                    }
                    Err(e) => {
                        eprintln!("cloud: {}: {e:#}; keeping the previous settings", settings_path.display())
                    }
                }
            }
        });
    }

    // Retention sweeps on a schedule, each customer with its own TTL, where
    // the records are (with --engine, in PostgreSQL too).
    {
        let service = service.clone();
        let every = args.sweep_every;
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(every));
                match service.sweep(now()) {
                    Ok(reports) => {
                        for (customer, r) in reports {
                            eprintln!(
                                "cloud: sweep of {customer} removed {} events, {} objects, {} devices",
                                r.events, r.objects, r.devices
                            );
                        }
                    }
                    Err(e) => eprintln!("cloud: sweep failed: {e}"),
                }
            }
        });
    }
    #[cfg(unix)]
    if let Some((socket, operators)) = console {
        let listener = privtel::service::console::bind_console(&socket)
            .with_context(|| format!("the admin socket {}", socket.display()))?;
        let service = Arc::clone(&service);
        let operators = Arc::new(operators);
        std::thread::spawn(move || service.serve_console(&listener, &operators, &AtomicBool::new(false)));
        eprintln!("cloud: administrative console on {}", socket.display());
    }
    let config = privtel::authority::server_config(&authority, &identity)?;
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    service.serve_tls(&listener, &config, &AtomicBool::new(false));
    Ok(())
}

/// `path` with `ext` appended (`engine.db` → `engine.db.access`).
fn beside(path: &std::path::Path, ext: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(ext);
    PathBuf::from(p)
}

/// The access control and the operators of `--admin-socket`.
fn console_parts(args: &Args) -> anyhow::Result<(Arc<AccessControl>, Operators)> {
    let log = args.access_log.clone().unwrap_or_else(|| beside(&args.store, ".access"));
    let key_path = args.access_key.clone().unwrap_or_else(|| beside(&args.store, ".access-key"));
    let key = SigningKey::load_or_create(&key_path).with_context(|| key_path.display().to_string())?;
    let mut options = AccessOptions::default();
    if let Some(h) = args.max_grant_hours {
        options = options.with_max_grant(time::Duration::hours(i64::from(h)));
    }
    let access = AccessControl::open(&log, key, options).with_context(|| log.display().to_string())?;
    let path = args.operators.as_ref().context("--operators is required with --admin-socket")?;
    let operators = Operators::load(path)?;
    if operators.is_empty() {
        bail!("{}: expected at least one operator", path.display());
    }
    Ok((Arc::new(access), operators))
}

/// `--ingest` and `--engine`: the service as a JetStream front-end, with a
/// writer thread applying the stream into the store or into PostgreSQL.
#[cfg(feature = "scale")]
mod scale {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use anyhow::Context as _;
    use privtel::engine_pg::{PgEngine, PgError, PgOptions};
    use privtel::service::Service;
    use privtel::service::jetstream::{ApplyGroup, JetStreamOptions, Publisher, Rows, StreamWriter};
    use privtel::store::{AtRestKey, EngineStore as _};

    use super::{Args, read_key};

    /// What is left to start once the service is shared.
    pub(crate) struct Ingest {
        options: JetStreamOptions,
        publisher: Arc<Publisher>,
        /// The engine on PostgreSQL the writer applies into (`None`: the
        /// service's own store).
        pg: Option<PgEngine>,
        metrics_every: Duration,
    }

    pub(crate) fn front_end(args: &Args, url: &str, service: Service) -> anyhow::Result<(Service, Ingest)> {
        let mut options = JetStreamOptions::new(url)
            .names(args.stream.clone(), args.subject_prefix.clone(), args.consumer.clone())
            .region(args.region.clone().unwrap_or_else(|| "eu".to_owned()));
        if let Some(path) = &args.store_key {
            // Sealed by this front-end, and only sealed messages applied
            // by its writers: nothing else publishing on the subjects gets
            // into the engine.
            options = options.key(AtRestKey::new(1, read_key(path)?)).sealed_only(true);
        }
        let publisher = Arc::new(Publisher::connect(options.clone())?);
        let mut service = service.with_jetstream(Arc::clone(&publisher));
        let mut pg = None;
        if let Some(pg_url) = &args.engine {
            let mut pg_options = PgOptions::default();
            if let Some(path) = &args.store_secret {
                pg_options = pg_options.secret(read_key(path)?);
            }
            // Never print the URL: it may hold a password.
            let open =
                || PgEngine::connect(pg_url, pg_options.clone()).context("opening the postgresql engine");
            let reader = Mutex::new(open()?);
            service = service.with_high_water(move |customer, device, stream| {
                reader
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .high_water(customer, device, stream)
                    .ok()
            });
            pg = Some(open()?);
            // Sweeps, erasures and contract end act where the records are, on
            // a connection of their own; each export on one more.
            let records: privtel::service::SharedRecords = Arc::new(Mutex::new(open()?));
            let (url, options) = (pg_url.clone(), pg_options.clone());
            service = service.with_records_engine(records, move || {
                match PgEngine::connect(&url, options.clone()) {
                    Ok(engine) => Ok(Box::new(engine) as Box<dyn privtel::store::EngineStore + Send>),
                    Err(PgError::Store(e)) => Err(e),
                    Err(e) => Err(privtel::store::Error::Database {
                        op: "opening the postgresql engine for an export",
                        message: e.to_string(),
                    }),
                }
            });
        }
        Ok((
            service,
            Ingest { options, publisher, pg, metrics_every: Duration::from_secs(args.metrics_every) },
        ))
    }

    impl Ingest {
        /// Starts the writer and the metrics threads.
        pub(crate) fn start(self, service: &Arc<Service>) -> anyhow::Result<()> {
            let Self { options, publisher, pg, metrics_every } = self;
            let metrics = Arc::clone(publisher.metrics());
            match pg {
                Some(engine) => {
                    spawn_writer(StreamWriter::connect(options, Rows(engine))?.with_metrics(metrics))
                }
                None => spawn_writer(
                    StreamWriter::connect(options, service.shared_engine())?.with_metrics(metrics),
                ),
            }
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(metrics_every);
                    match serde_json::to_string(&publisher.snapshot()) {
                        Ok(line) => eprintln!("cloud: metrics {line}"),
                        Err(e) => eprintln!("cloud: metrics: {e}"),
                    }
                }
            });
            Ok(())
        }
    }

    /// Runs `writer` on a thread of its own; a stream unreachable for 30 s
    /// stops the process (its supervisor restarts it: nothing
    /// acknowledged is lost, it waits in the stream).
    fn spawn_writer<A: ApplyGroup + Send + 'static>(writer: StreamWriter<A>) {
        let mut writer = writer.with_log(|line| eprintln!("cloud: writer: {line}"));
        std::thread::spawn(move || {
            if let Err(e) = writer.run(&AtomicBool::new(false)) {
                eprintln!("cloud: the writer stopped: {e}");
                std::process::exit(1);
            }
        });
    }
}

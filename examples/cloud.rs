//! The service: accepts agents over TLS, ingests batches idempotently into an
//! engine store, answers enrichment queries in both modes, sweeps on a
//! schedule, and keeps serving while single connections misbehave.
//!
//! ```text
//! cargo run --release --example cloud -- --listen 127.0.0.1:0 --store engine.db
//!     --reputation examples/data/reputation.csv [--cert PEM --key PEM] [--cert-out CA.pem]
//!     [--store-key FILE] [--sweep-every SECONDS] [--max-batch-records N]
//! ```
//!
//! Without `--cert`/`--key` it makes a CA and a certificate for the listen
//! address and writes the CA (what agents must trust) to `--cert-out`. It
//! prints `listening on ADDR` once it accepts connections.
//!
//! Exit status: 0 stopped, 1 a start-up failure (files, address), 2 bad
//! arguments.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, bail};
use clap::Parser;
use privtel::model::Timestamp;
use privtel::retention::RetentionPolicy;
use privtel::service::Service;
use privtel::store::{AtRestKey, EngineStore, SqliteEngine};
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
    /// Seal stored payloads with the 32-byte key in this file.
    #[arg(long, value_name = "FILE")]
    store_key: Option<PathBuf>,
    /// Seconds between retention sweeps.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    sweep_every: u64,
    /// Most records per batch asked of agents.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_batch_records: Option<u32>,
}

fn now() -> Timestamp {
    Timestamp::new(time::OffsetDateTime::now_utc())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
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
    let at_rest = match &args.store_key {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            let secret: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", path.display()))?;
            Some(AtRestKey::new(1, secret))
        }
        None => None,
    };
    let engine = SqliteEngine::open(&args.store, RetentionPolicy::default(), at_rest)
        .with_context(|| args.store.display().to_string())?;
    let mut index =
        VerdictIndex::new(wire::DEFAULT_PAD_TO, *blake3::hash(addr.to_string().as_bytes()).as_bytes());
    if let Some(path) = &args.reputation {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let (b, d) = wire::parse_reputation(&text).with_context(|| path.display().to_string())?;
        b.into_iter().for_each(|v| index.add_binary(v));
        d.into_iter().for_each(|v| index.add_domain(v));
    }
    let mut service = Service::new(engine, index, now);
    if let Some(n) = args.max_batch_records {
        service = service.with_max_batch_records(n);
    }
    let service = Arc::new(service);

    // Retention sweeps on a schedule, on the service's own store.
    {
        let service = service.clone();
        let every = args.sweep_every;
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(every));
                match service.engine().sweep(now()) {
                    Ok(r) => eprintln!(
                        "cloud: sweep removed {} events, {} objects, {} devices",
                        r.events, r.objects, r.devices
                    ),
                    Err(e) => eprintln!("cloud: sweep failed: {e}"),
                }
            }
        });
    }
    let config = tls::server_config(&identity)?;
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    service.serve_tls(&listener, &config, &AtomicBool::new(false));
    Ok(())
}

//! A JetStream writer process: consumes the ingest stream that service
//! front-ends publish to and applies each batch to an engine exactly once
//! (`privtel_service::jetstream::StreamWriter`), until it is killed.
//!
//! ```text
//! cargo run --release -p privtel-service --features jetstream --example writer --
//!     --nats nats://127.0.0.1:4222 --engine postgres://postgres@127.0.0.1:5432/privtel
//!     [--stream NAME] [--subject-prefix P] [--consumer C] [--region R] [--key-file F]
//!     [--every SECONDS] [--max-group N]
//! ```
//!
//! `--engine` is a PostgreSQL URL (`postgres://` or `postgresql://`) or the
//! path of an embedded SQLite engine (created if missing). The stream and
//! its durable consumer are created when missing; run as many writers on
//! one consumer as you like. `--key-file` holds the 32-byte key (id 1) the
//! front-ends seal messages with (the cloud example's `--store-key`).
//!
//! Every `--every` seconds it prints the counters as one JSON line
//! (`MetricsSnapshot`: accepted, published, applied, lag, …) on standard
//! output; what it terminates or retries goes to standard error. It runs
//! until killed (SIGTERM, SIGINT or SIGKILL: a batch applied and not yet
//! acknowledged comes again and is found a duplicate).
//!
//! Exit status: 1 a failure to start or a stream unreachable for 30 s,
//! 2 bad arguments.

use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use privtel_engine_pg::{PgEngine, PgOptions};
use privtel_service::jetstream::{ApplyGroup, JetStreamOptions, Rows, StreamWriter};
use privtel_store::{AtRestKey, EngineOptions, SqliteEngine};

/// Where the writer applies batches.
#[derive(Clone, Debug)]
enum EngineArg {
    /// A PostgreSQL URL.
    Postgres(String),
    /// An embedded engine's file.
    Sqlite(PathBuf),
}

/// Why an `--engine` value is not usable.
#[derive(Debug, thiserror::Error)]
enum EngineArgError {
    #[error("expected a postgres:// URL or the path of a SQLite engine, got nothing")]
    Empty,
    #[error("expected a postgres:// URL with a host after the scheme")]
    NoHost,
}

impl FromStr for EngineArg {
    type Err = EngineArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(EngineArgError::Empty);
        }
        for scheme in ["postgres://", "postgresql://"] {
            if let Some(rest) = s.strip_prefix(scheme) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(EngineArgError::NoHost);
                }
                return Ok(Self::Postgres(s.to_owned()));
            }
        }
        Ok(Self::Sqlite(PathBuf::from(s)))
    }
}

/// Consume the privtel ingest stream into an engine.
#[derive(Parser)]
#[command(name = "writer", version)]
struct Args {
    /// The NATS server (nats://HOST:PORT).
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The engine: a postgres:// URL, or a SQLite engine's file.
    #[arg(long, value_name = "URL|PATH")]
    engine: EngineArg,
    /// The stream's name.
    #[arg(long, value_name = "NAME", default_value = "PRIVTEL_INGEST")]
    stream: String,
    /// The first tokens of the stream's subjects.
    #[arg(long, value_name = "P", default_value = "privtel.ingest")]
    subject_prefix: String,
    /// The writers' durable consumer.
    #[arg(long, value_name = "C", default_value = "privtel-writer")]
    consumer: String,
    /// The region (a subject token; writers take every region's batches).
    #[arg(long, value_name = "R", default_value = "eu")]
    region: String,
    /// The 32-byte key the front-ends seal messages with (id 1).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Seconds between two metrics lines.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
    /// The most messages applied in one transaction.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_group: u32,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn read_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", path.display()))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut options = JetStreamOptions::new(args.nats.clone())
        .names(args.stream.clone(), args.subject_prefix.clone(), args.consumer.clone())
        .region(args.region.clone());
    if let Some(path) = &args.key_file {
        options = options.key(AtRestKey::new(1, read_key(path)?));
    }
    match &args.engine {
        EngineArg::Postgres(url) => {
            // The URL may hold a password: never printed.
            let engine =
                PgEngine::connect(url, PgOptions::default()).context("opening the postgresql engine")?;
            serve(args, options, Rows(engine))
        }
        EngineArg::Sqlite(path) => {
            let engine = SqliteEngine::open(path.clone(), EngineOptions::default())
                .with_context(|| path.display().to_string())?;
            serve(args, options, engine)
        }
    }
}

/// Steps the writer forever, printing the counters every `--every` seconds.
fn serve<A: ApplyGroup>(args: &Args, options: JetStreamOptions, engine: A) -> anyhow::Result<()> {
    let mut writer = StreamWriter::connect(options, engine)?
        .with_max_group(args.max_group as usize)
        .with_log(|line| eprintln!("writer: {line}"));
    let every = Duration::from_secs(args.every);
    let mut last = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let mut stdout = std::io::stdout();
    loop {
        match writer.step(Duration::from_millis(200)) {
            Ok(_) => failing_since = None,
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    return Err(e.into());
                }
                eprintln!("writer: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if last.elapsed() >= every {
            last = Instant::now();
            let snapshot = writer.metrics().snapshot(writer.lag().ok());
            writeln!(stdout, "{}", serde_json::to_string(&snapshot)?)?;
            stdout.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn engine_arguments_are_urls_or_paths() {
        assert!(matches!("postgres://u@h:5432/db".parse(), Ok(EngineArg::Postgres(_))));
        assert!(matches!("postgresql://h/db".parse(), Ok(EngineArg::Postgres(_))));
        assert!(matches!("engine.db".parse(), Ok(EngineArg::Sqlite(p)) if p == Path::new("engine.db")));
        assert!(matches!("postgres://".parse::<EngineArg>(), Err(EngineArgError::NoHost)));
        assert!(matches!(" ".parse::<EngineArg>(), Err(EngineArgError::Empty)));
    }
}

//! The administrator's tool on an engine store.
//!
//! ```text
//! cargo run --release --example dsar -- --store engine.db [--store-key FILE] export --customer ID USER
//! cargo run --release --example dsar -- --store engine.db erase --customer ID USER [--request ID]
//! cargo run --release --example dsar -- --store engine.db sweep [--customer ID]
//! cargo run --release --example dsar -- manifest --policy examples/data/policy.toml
//! cargo run --release --example dsar -- --help          (or: dsar help erase, dsar erase --help)
//! ```
//!
//! `--store` and `--store-key` may come before the command or after it
//! (`dsar export USER --store engine.db`); `export`, `erase` and `sweep`
//! require `--store`. A person is always a customer's person: `export` and
//! `erase` require `--customer`; `sweep` sweeps one customer, or every one.
//! A store written before tenants is migrated on open under
//! `--legacy-customer ID` (and refused without it, when it holds data).
//!
//! `export` writes JSON Lines on stdout (format in privtel-store's README);
//! `erase` prints the deletion receipt; `sweep` prints what expired;
//! `manifest` prints the privacy manifest of a policy as Markdown.
//!
//! Exit status: 0 done, 1 the store, key or policy could not be read or the
//! request failed, 2 bad arguments (a missing one, an unknown option, a user
//! id outside the id alphabet).

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use privtel::filter::{Manifest, Policy};
use privtel::model::{CustomerId, Timestamp, UserId};
use privtel::retention::RetentionPolicy;
use privtel::store::{AtRestKey, EngineOptions, EngineStore, ErasureRequest, SqliteEngine};

/// The administrator's tool on an engine store: export or erase one person,
/// sweep what expired, print a policy's privacy manifest.
#[derive(Parser)]
#[command(name = "dsar", version)]
struct Cli {
    /// The engine store (SQLite), for export, erase and sweep; may also come
    /// after the command.
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
    /// A file holding the store's 32-byte at-rest key.
    #[arg(long, value_name = "FILE")]
    store_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write every record of one person as JSON Lines on stdout.
    Export {
        #[command(flatten)]
        store: Store,
        /// The customer the person belongs to.
        #[arg(long, value_name = "ID")]
        customer: CustomerId,
        /// The person's user id.
        user: UserId,
    },
    /// Erase one person and print the deletion receipt (JSON).
    Erase {
        #[command(flatten)]
        store: Store,
        /// The customer the person belongs to.
        #[arg(long, value_name = "ID")]
        customer: CustomerId,
        /// The person's user id.
        user: UserId,
        /// The request id the receipt carries [default: erase-<unix seconds>].
        #[arg(long, value_name = "ID")]
        request: Option<String>,
    },
    /// Delete what expired by the retention policy and print what went (JSON).
    Sweep {
        #[command(flatten)]
        store: Store,
        /// Sweep this customer only [default: every customer].
        #[arg(long, value_name = "ID")]
        customer: Option<CustomerId>,
    },
    /// Print the privacy manifest of a policy as Markdown.
    Manifest {
        /// The policy file (TOML).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
}

// The store options of the commands that open it. `--store` is required here
// unless it came before the command (see `parse`). (Not a doc comment: clap
// would take it for the command's about text.)
#[derive(Args)]
struct Store {
    /// The engine store (SQLite).
    #[arg(long, value_name = "FILE", required = true)]
    store: Option<PathBuf>,
    /// A file holding the store's 32-byte at-rest key.
    #[arg(long, value_name = "FILE")]
    store_key: Option<PathBuf>,
    /// The customer owning the rows of a store written before tenants,
    /// migrated when it is opened.
    #[arg(long, value_name = "ID")]
    legacy_customer: Option<CustomerId>,
}

/// The commands whose [`Store`] makes `--store` required.
const STORE_COMMANDS: [&str; 3] = ["export", "erase", "sweep"];

/// Parses the command line, exiting with clap's message and status 2 on bad
/// arguments. `--store` before the command satisfies the command's own
/// required `--store`, so that both `dsar --store F export U` and
/// `dsar export U --store F` work and every missing argument is reported at
/// once.
fn parse() -> Cli {
    let args: Vec<_> = std::env::args_os().collect();
    let mut command = Cli::command();
    // A lenient first pass only to learn whether `--store` came first;
    // `--help`, `--version` and every error are left to the real pass.
    let store_first = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .is_ok_and(|m| m.get_one::<PathBuf>("store").is_some());
    if store_first {
        for name in STORE_COMMANDS {
            command = command.mut_subcommand(name, |c| c.mut_arg("store", |a| a.required(false)));
        }
    }
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit())
}

fn main() -> ExitCode {
    let cli = parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the store named after the command, or else before it.
fn open_store(
    cli_store: Option<&Path>,
    cli_key: Option<&Path>,
    store: &Store,
) -> anyhow::Result<SqliteEngine> {
    let path = store.store.as_deref().or(cli_store).context("--store FILE is required")?;
    let key = match store.store_key.as_deref().or(cli_key) {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| p.display().to_string())?;
            let secret = bytes
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", p.display()))?;
            Some(AtRestKey::new(1, secret))
        }
        None => None,
    };
    // A mistyped path must not read as "we hold nothing about this person":
    // an administrator's request opens an existing store or fails.
    if !path.is_file() {
        anyhow::bail!("{}: no engine store there", path.display());
    }
    let mut options = EngineOptions::default().retention(RetentionPolicy::default());
    if let Some(key) = key {
        options = options.key(key);
    }
    if let Some(c) = &store.legacy_customer {
        options = options.legacy_customer(c.clone());
    }
    Ok(SqliteEngine::open(path, options)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    let open = |store: &Store| open_store(cli.store.as_deref(), cli.store_key.as_deref(), store);
    let mut out = io::stdout().lock();
    match &cli.command {
        Command::Export { store, customer, user } => {
            let n = open(store)?.export_person(customer, user, &mut out)?;
            out.flush()?;
            eprintln!("dsar: {n} records exported");
        }
        Command::Erase { store, customer, user, request } => {
            let request = request.clone().unwrap_or_else(|| format!("erase-{}", now.unix_seconds()));
            let receipt =
                open(store)?.erase_person(customer, &ErasureRequest::new(request, user.clone(), now), now)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&receipt)?)?;
        }
        Command::Sweep { store, customer } => {
            let mut engine = open(store)?;
            let customers = match customer {
                Some(c) => vec![c.clone()],
                None => engine.customers()?,
            };
            let retention = *engine.retention();
            let mut reports = serde_json::Map::new();
            for c in customers {
                let report = engine.sweep(&c, &retention, now)?;
                reports.insert(c.into_string(), serde_json::to_value(report)?);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&reports)?)?;
        }
        Command::Manifest { policy } => {
            let text = std::fs::read_to_string(policy).with_context(|| policy.display().to_string())?;
            let (parsed, warnings) =
                Policy::from_toml_with_warnings(&text).with_context(|| policy.display().to_string())?;
            for w in &warnings {
                eprintln!("dsar: warning: {}: {w}", policy.display());
            }
            let policy = parsed;
            write!(out, "{}", Manifest::from_policy(&policy).to_markdown())?;
        }
    }
    out.flush()?;
    Ok(())
}

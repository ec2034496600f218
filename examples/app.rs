//! A desktop application reporting its own usage through the SDK.
//!
//! ```text
//! cargo run --example app -- --server 127.0.0.1:PORT --ca CA.pem
//!     --customer acme --device dev-app --policy examples/data/policy.toml --dir app-data
//!     [--enroll-token TOKEN] [--licence-server ADDR] [--crash-server ADDR]
//!     [--user u-1 --first-name Ada --last-name Lovelace --email ada@example.com]
//!     [--installers examples/data/installers]
//! ```
//!
//! One session of a user, as the nTop case describes it: the person agreed
//! to personalised usage at installation; they use a few features (each
//! counted as anonymous usage and, while they agree, as personalised
//! usage); then they uncheck personalised usage in the settings — the
//! waiting personalised records are purged and later uses are anonymous
//! only; the product records its configuration and a performance sample,
//! crashes once (the crash report goes to the crash endpoint), the person
//! rates it, the licence session ends, and everything is flushed. Last, it
//! checks for a newer version on the `stable` channel; an offered installer
//! is "downloaded" from `--installers` (a folder standing in for the
//! download server: the file named by the offer's URL) and verified against
//! the offer's SHA-256 before it is reported usable.
//!
//! Each program goes to its own endpoint with its own spool under `--dir`
//! (`analytics`, `licence`, `crashes`): in this demo all on `--server`
//! unless `--licence-server` or `--crash-server` name another. The device
//! enrolls with `--enroll-token` on first run, as the `agent` example does.
//! Prints what each endpoint sent and what waits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use privtel::agent::sdk::{Connector, TelemetryBuilder, UserProfile};
use privtel::agent::{AgentError, Credentials, VersionOffer, load_or_create_key, verify_installer};
use privtel::filter::{Policy, PseudonymKey};
use privtel::model::{ConsentSource, CustomerId, DeviceId, KeyId, OsFamily, OsInfo, Program, UserId};
use privtel::wire::{Connection, tls};

/// A desktop application using the privtel SDK.
#[derive(Parser)]
#[command(name = "app", version)]
struct Args {
    /// The analytics service (every program not routed elsewhere), ADDR:PORT.
    #[arg(long)]
    server: SocketAddr,
    /// The licence endpoint (default: --server).
    #[arg(long)]
    licence_server: Option<SocketAddr>,
    /// The crash endpoint (default: --server).
    #[arg(long)]
    crash_server: Option<SocketAddr>,
    /// The CA certificate the services' certificates are checked against (PEM).
    #[arg(long, value_name = "PEM")]
    ca: PathBuf,
    /// The customer this installation belongs to.
    #[arg(long)]
    customer: CustomerId,
    /// This device's id.
    #[arg(long)]
    device: DeviceId,
    /// The customer's policy (TOML).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Where the spools, keys and credentials live (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The enrollment token an administrator issued, for a device without
    /// credentials.
    #[arg(long, value_name = "TOKEN")]
    enroll_token: Option<String>,
    /// The person using the application.
    #[arg(long, default_value = "u-ada")]
    user: UserId,
    /// Their first name (personalised usage, while they agree).
    #[arg(long, default_value = "Ada")]
    first_name: String,
    /// Their last name.
    #[arg(long, default_value = "Lovelace")]
    last_name: String,
    /// Their email.
    #[arg(long, default_value = "ada@example.com")]
    email: String,
    /// Where offered installers are "downloaded" from (the file named by
    /// the last segment of the offer's URL).
    #[arg(long, value_name = "DIR")]
    installers: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run(&Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("app: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| args.dir.display().to_string())?;
    let text = std::fs::read_to_string(&args.policy).with_context(|| args.policy.display().to_string())?;
    let policy = Policy::from_toml(&text)?;
    let version = policy.version;
    let server_ca = std::fs::read_to_string(&args.ca).with_context(|| args.ca.display().to_string())?;
    let credentials = credentials(args, &server_ca)?;
    let config = privtel::agent::client_config(&server_ca, &credentials)?;
    let endpoint = |addr: SocketAddr| Connector::tls(addr, addr.ip().to_string(), config.clone());
    let key = load_or_create_key(args.dir.join("pseudonym.key"))?;
    let sdk = TelemetryBuilder::new(args.customer.clone(), args.device.clone(), "Acme Editor", "2.4.1")
        .policy(policy)
        .policy_version(version)
        .pseudonym_key(PseudonymKey::new(KeyId::new(1), key))
        .spool_dir(&args.dir)
        .first_upload_after(Duration::ZERO)
        .endpoint("analytics", endpoint(args.server))
        .endpoint("licence", endpoint(args.licence_server.unwrap_or(args.server)))
        .endpoint("crashes", endpoint(args.crash_server.unwrap_or(args.server)))
        .route(Program::LicenceAuthentication, "licence")
        .route_kind("crash_report", "crashes")
        .build()?;

    let os = OsInfo { family: OsFamily::Linux, version: "Debian 12".into(), build: None };
    let session = sdk.licence_session(&args.email, "fp-3c9a", os, None);
    // Agreed at installation.
    let person = UserProfile {
        id: args.user.clone(),
        first_name: args.first_name.clone(),
        last_name: args.last_name.clone(),
        email: args.email.clone(),
    };
    sdk.set_consent(&person.id, Program::PersonalisedUsage, true, ConsentSource::Installer)?;
    sdk.set_user(&person)?;
    for feature in ["open_project", "render", "export_pdf"] {
        sdk.feature_used(feature);
    }
    report("first half", &sdk.flush(Duration::from_secs(30))?);

    // Half-way, the person unchecks personalised usage in the settings.
    let change = sdk.set_consent(&person.id, Program::PersonalisedUsage, false, ConsentSource::Settings)?;
    println!("personalised usage withdrawn: {} waiting records purged", change.purged);
    for feature in ["render", "share"] {
        sdk.feature_used(feature);
    }
    sdk.configuration("theme", "dark");
    sdk.performance("startup_time", 812.0, "ms")?;
    sdk.crash("thread 'main' panicked at src/render.rs:88: index out of bounds");
    sdk.feedback(80, "fast, but the export dialog is confusing")?;
    session.end();
    match sdk.check_version("stable", Duration::from_secs(30))? {
        VersionOffer::Update(offer) => {
            println!("update offered: {} ({} bytes, sha256 {})", offer.latest, offer.size, offer.sha256);
            if let Some(dir) = &args.installers {
                let name = offer.installer.rsplit('/').next().unwrap_or_default();
                let verified = verify_installer(dir.join(name), &offer)?;
                println!("installer {} verified: sha256 {}", verified.version(), verified.sha256());
            }
        }
        VersionOffer::UpToDate { latest } => println!("up to date (latest {latest})"),
        VersionOffer::UnknownProduct => println!("no offer for this product"),
        VersionOffer::Off => println!("version check is off"),
        other => println!("version check: {other:?}"),
    }
    let stats = sdk.stats();
    report("second half", &sdk.shutdown(Duration::from_secs(30))?);
    println!(
        "recorded {}, filtered out {}, not consented {}, dropped {}",
        stats.recorded, stats.filtered_out, stats.not_consented, stats.dropped_queue_full
    );
    Ok(())
}

fn report(when: &str, r: &privtel::agent::sdk::FlushReport) {
    for e in &r.endpoints {
        let waiting = e.pending.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        match &e.error {
            None => println!("{when}: {} sent {} records, {waiting} waiting", e.name, e.sent),
            Some(err) => println!("{when}: {} sent {} records, {waiting} waiting ({err})", e.name, e.sent),
        }
    }
}

/// The device's credentials: kept from an earlier enrollment, or made now
/// with `--enroll-token`.
fn credentials(args: &Args, server_ca: &str) -> anyhow::Result<Credentials> {
    let dir = args.dir.join("credentials");
    if dir.join(privtel::authority::CREDENTIALS_FILE).exists() {
        return Ok(Credentials::load(&dir)?);
    }
    let Some(token) = &args.enroll_token else {
        anyhow::bail!("this device has no credentials: pass --enroll-token");
    };
    make_private_dir(&dir)?;
    let config = privtel::agent::enrollment_client_config(server_ca)?;
    let mut conn = Connection::new(tls::connect(args.server, &args.server.ip().to_string(), config)?);
    let credentials = privtel::agent::enroll(&mut conn, token, &args.customer, &args.device, &dir)
        .map_err(|e: AgentError| anyhow::anyhow!(e))?;
    eprintln!("app: enrolled as {}/{}", args.customer, args.device);
    Ok(credentials)
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| dir.display().to_string())
}

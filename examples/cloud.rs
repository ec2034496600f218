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

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, bail};
use privtel::model::Timestamp;
use privtel::retention::RetentionPolicy;
use privtel::service::Service;
use privtel::store::{AtRestKey, EngineStore, SqliteEngine};
use privtel::wire::{self, VerdictIndex, tls};

fn now() -> Timestamp {
    Timestamp::new(time::OffsetDateTime::now_utc())
}

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let (mut store, mut reputation, mut cert, mut key, mut cert_out, mut store_key) =
        (None, None, None, None, None, None);
    let mut sweep_every = 3600u64;
    let mut max_batch: Option<u32> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?,
            "--store" => store = Some(PathBuf::from(value()?)),
            "--reputation" => reputation = Some(PathBuf::from(value()?)),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--cert-out" => cert_out = Some(PathBuf::from(value()?)),
            "--store-key" => store_key = Some(PathBuf::from(value()?)),
            "--sweep-every" => sweep_every = value()?.parse().context("--sweep-every takes seconds")?,
            "--max-batch-records" => {
                max_batch = Some(value()?.parse().context("--max-batch-records takes a number")?)
            }
            other => bail!("unknown option {other}"),
        }
    }
    let store = store.context("--store FILE is required")?;
    let listener = TcpListener::bind(&listen).with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;

    let identity = match (cert, key) {
        (Some(c), Some(k)) => tls::Identity {
            ca_pem: String::new(),
            cert_pem: std::fs::read_to_string(&c).with_context(|| c.display().to_string())?,
            key_pem: std::fs::read_to_string(&k).with_context(|| k.display().to_string())?,
        },
        (None, None) => tls::generate_identity(&[&addr.ip().to_string(), "localhost"])?,
        _ => bail!("--cert and --key go together"),
    };
    if let Some(out) = &cert_out {
        std::fs::write(out, &identity.ca_pem).with_context(|| out.display().to_string())?;
    }
    let at_rest = match &store_key {
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
    let engine = SqliteEngine::open(&store, RetentionPolicy::default(), at_rest)?;
    let mut index =
        VerdictIndex::new(wire::DEFAULT_PAD_TO, *blake3::hash(addr.to_string().as_bytes()).as_bytes());
    if let Some(path) = &reputation {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let (b, d) = wire::parse_reputation(&text).with_context(|| path.display().to_string())?;
        b.into_iter().for_each(|v| index.add_binary(v));
        d.into_iter().for_each(|v| index.add_domain(v));
    }
    let mut service = Service::new(engine, index, tls::server_config(&identity)?, now);
    if let Some(n) = max_batch {
        Service::set_max_batch_records(&mut service, n);
    }

    // Retention sweeps on a schedule, on the service's own store.
    {
        let service = service.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(sweep_every.max(1)));
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
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    service.serve(&listener, &AtomicBool::new(false));
    Ok(())
}

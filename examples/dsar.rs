//! The administrator's tool on an engine store.
//!
//! ```text
//! cargo run --release --example dsar -- --store engine.db [--store-key FILE] export USER
//! cargo run --release --example dsar -- --store engine.db erase USER [--request ID]
//! cargo run --release --example dsar -- --store engine.db sweep
//! cargo run --release --example dsar -- manifest --policy examples/data/policy.toml
//! ```
//!
//! `export` writes JSON Lines on stdout (format in privtel-store's README);
//! `erase` prints the deletion receipt; `sweep` prints what expired;
//! `manifest` prints the privacy manifest of a policy as Markdown.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use privtel::filter::{Manifest, Policy};
use privtel::model::{Timestamp, UserId};
use privtel::retention::RetentionPolicy;
use privtel::store::{AtRestKey, EngineStore, ErasureRequest, SqliteEngine};

fn main() -> anyhow::Result<()> {
    let mut store = None;
    let mut store_key = None;
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--store" => store = Some(PathBuf::from(args.next().context("--store needs a value")?)),
            "--store-key" => {
                store_key = Some(PathBuf::from(args.next().context("--store-key needs a value")?))
            }
            _ => rest.push(a),
        }
    }
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    let open = || -> anyhow::Result<SqliteEngine> {
        let path = store.as_ref().context("--store FILE is required")?;
        let key = match &store_key {
            Some(p) => {
                let bytes = std::fs::read(p).with_context(|| p.display().to_string())?;
                Some(AtRestKey::new(
                    1,
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", p.display()))?,
                ))
            }
            None => None,
        };
        Ok(SqliteEngine::open(path, RetentionPolicy::default(), key)?)
    };
    match rest.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["export", user] => {
            let n = open()?.export_person(&UserId::new(*user)?, &mut std::io::stdout().lock())?;
            eprintln!("dsar: {n} records exported");
        }
        ["erase", user, more @ ..] => {
            let request = match more {
                ["--request", id] => (*id).to_owned(),
                [] => format!("erase-{}", now.unix_seconds()),
                _ => bail!("erase USER [--request ID]"),
            };
            let receipt =
                open()?.erase_person(&ErasureRequest::new(request, UserId::new(*user)?, now), now)?;
            println!("{}", serde_json::to_string_pretty(&receipt)?);
        }
        ["sweep"] => println!("{}", serde_json::to_string_pretty(&open()?.sweep(now)?)?),
        ["manifest", "--policy", path] => {
            let text = std::fs::read_to_string(path).with_context(|| (*path).to_owned())?;
            let policy = Policy::from_toml(&text).with_context(|| (*path).to_owned())?;
            print!("{}", Manifest::from_policy(&policy).to_markdown());
        }
        _ => bail!(
            "usage: dsar --store FILE (export USER | erase USER [--request ID] | sweep) | dsar manifest --policy FILE"
        ),
    }
    Ok(())
}

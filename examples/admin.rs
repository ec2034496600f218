//! The administrator's tool: talks to a running service's administrative
//! console (`cloud --admin-socket PATH`), never to its stores directly.
//!
//! ```text
//! cargo run --example admin -- operator-token                  (a new token, and its operators-file entry)
//! cargo run --example admin -- --socket S --token-file T whoami
//! … grant --operator ops.jdoe --customer acme --scope export-person,erase-person
//!         --justification "…" --ticket DSAR-17 [--minutes 120]   (approvers only, never for themselves)
//! … revoke GRANT | grants --customer C
//! … export-person --grant G --customer C USER                  (JSON Lines on stdout)
//! … erase-person --grant G --customer C USER [--request ID]   (the deletion receipt)
//! … copy-customer --grant G --customer C [--out FILE]          (the customer copy, JSON Lines)
//! … delete-customer --grant G --customer C                     (contract end: the signed receipt)
//! … read-records --grant G --customer C [--after ID] [--limit N] (a page of the customer's records)
//! … request-record --grant G --customer C --kind access|erasure --user U --channel TEXT
//! … notifications --grant G --customer C | acknowledge --grant G --customer C ID
//! … instruct --grant G --customer C ID (--proceed | --decline REASON) --by NAME
//! … requests --grant G --customer C | overdue | execute-request --grant G --customer C ID
//! … rotate-master --new-key-file FILE (approvers) | rotate-customer-key --grant G --customer C
//!   | reseal --grant G --customer C [--max-rows N]
//! … access-log --customer C | raw-log --out FILE | sweep (approvers)
//! cargo run --example admin -- verify-log --log FILE --checkpoint HEX --public-key HEX
//! cargo run --example admin -- verify-receipt --receipt FILE --public-key HEX
//! cargo run --example admin -- manifest --policy examples/data/policy.toml
//! ```
//!
//! `--socket` and `--token-file` may also come from `PRIVTEL_ADMIN_SOCKET`
//! and `PRIVTEL_OPERATOR_TOKEN_FILE`. The token file holds one operator
//! token and must be readable by its owner only. Every action on a
//! customer's data needs a grant an approver gave and is written to the
//! service's access log, allowed or refused.
//!
//! Exit status: 0 done, 1 refused or failed (the service's answer on
//! standard error), 2 bad arguments.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use privtel::access::{Checkpoint, PublicKey, verify_bytes};
use privtel::filter::{Manifest, Policy};
use privtel::service::console::{END_KEY, operator_token};
use serde_json::{Value, json};

/// The administrator's tool: grants, person and customer requests, keys
/// and the access log, through the service's administrative console.
#[derive(Parser)]
#[command(name = "admin", version)]
struct Cli {
    /// The service's administrative socket.
    #[arg(long, value_name = "PATH", env = "PRIVTEL_ADMIN_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// A file holding this operator's token (owner-only).
    #[arg(long, value_name = "FILE", env = "PRIVTEL_OPERATOR_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new operator token: the token (give it to its operator) and the
    /// entry for the service's operators file (its SHA-256).
    OperatorToken {
        /// The operator's account, for the printed entry.
        #[arg(long, default_value = "ops.someone")]
        name: String,
    },
    /// Who the token proves.
    Whoami,
    /// Grant another operator actions on one customer's data (approvers).
    Grant {
        #[arg(long)]
        operator: String,
        #[arg(long)]
        customer: String,
        /// Comma-separated: export-person, erase-person, copy-customer,
        /// delete-customer, read-records, manage-grants.
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<String>,
        #[arg(long)]
        justification: String,
        #[arg(long)]
        ticket: String,
        /// How long it lasts (at most the service's maximum).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Revoke a grant.
    Revoke { grant: u64 },
    /// The grants on a customer.
    Grants {
        #[arg(long)]
        customer: String,
    },
    /// Everything held about one person, as JSON Lines.
    ExportPerson {
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        user: String,
    },
    /// Erase one person; prints the deletion receipt.
    ErasePerson {
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        user: String,
        /// The request's reference [default: erase-<unix seconds>].
        #[arg(long)]
        request: Option<String>,
    },
    /// Everything of one customer, as JSON Lines with a manifest.
    CopyCustomer {
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        /// Write the copy here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// A support read: a page of the customer's records as JSON Lines.
    ReadRecords {
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        /// Records with row ids above this (the last id of the page before).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Records in the page (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Contract end: destroy the customer's keys, then every row; prints the
    /// signed receipt.
    DeleteCustomer {
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
    },
    /// Record an end user's request; the customer is notified.
    RequestRecord {
        /// The grant (scope end-user-requests).
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        /// access or erasure.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        user: String,
        /// How it reached the vendor (an e-mail's reference, a form).
        #[arg(long)]
        channel: String,
    },
    /// The customer's unread notifications.
    Notifications {
        /// The grant (scope end-user-requests).
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
    },
    /// Mark a notification read.
    Acknowledge {
        /// The grant (scope end-user-requests).
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        /// The notification's id (16 hex digits).
        id: String,
    },
    /// Record the customer's instruction on a request.
    Instruct {
        /// The grant (scope end-user-requests).
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        /// The request's id (16 hex digits).
        id: String,
        #[arg(long, conflicts_with = "decline", required_unless_present = "decline")]
        proceed: bool,
        #[arg(long, value_name = "REASON")]
        decline: Option<String>,
        /// Who at the customer instructed it.
        #[arg(long)]
        by: String,
    },
    /// The customer's requests ready to execute (instructed, not done).
    Requests {
        /// The grant (scope end-user-requests).
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
    },
    /// Requests past their deadline, or waiting for the customer too long.
    Overdue,
    /// Execute an instructed request under a grant: the person's export, or
    /// their erasure.
    ExecuteRequest {
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        /// The request's id (16 hex digits).
        id: String,
    },
    /// Re-wrap every customer's data keys under a new master key (a file on
    /// the service's machine); the old one is no longer needed after.
    RotateMaster {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Give a customer a new data key (older rows move with `reseal`).
    RotateCustomerKey {
        /// The grant (scope manage-keys).
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
    },
    /// Move at most N (1 to 10,000) of a customer's rows to its current data key.
    Reseal {
        /// The grant (scope manage-keys).
        #[arg(long)]
        grant: u64,
        #[arg(long)]
        customer: String,
        #[arg(long, default_value_t = 10_000)]
        max_rows: u64,
    },
    /// The access log's entries on one customer, with a signed checkpoint.
    AccessLog {
        #[arg(long)]
        customer: String,
    },
    /// Save the whole access log (for `verify-log`); prints the checkpoint.
    RawLog {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sweep what expired now.
    Sweep,
    /// Check a saved access log against a signed checkpoint (offline).
    VerifyLog {
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
        #[arg(long, value_name = "HEX")]
        checkpoint: String,
        #[arg(long, value_name = "HEX")]
        public_key: String,
    },
    /// Check a customer-deletion receipt's signature (offline).
    VerifyReceipt {
        /// The answer `delete-customer` printed.
        #[arg(long, value_name = "FILE")]
        receipt: PathBuf,
        #[arg(long, value_name = "HEX")]
        public_key: String,
    },
    /// Print the privacy manifest of a policy as Markdown (offline).
    Manifest {
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn unhex(what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{what}: expected hex digits");
    }
    (0..s.len()).step_by(2).map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?)).collect()
}

/// Reads the operator's token, refusing a file others may read.
fn token(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).with_context(|| path.display().to_string())?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("{}: expected a file only its owner may read (mode {:o})", path.display(), mode & 0o777);
    }
    Ok(std::fs::read_to_string(path).with_context(|| path.display().to_string())?.trim().to_owned())
}

/// The request of a console command, or `None` for an offline one.
fn request(command: &Command) -> anyhow::Result<Option<Value>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(Some(match command {
        Command::Whoami => json!({"op": "whoami"}),
        Command::Grant { operator, customer, scope, justification, ticket, minutes } => json!({
            "op": "grant", "operator": operator, "customer": customer, "scope": scope,
            "justification": justification, "ticket": ticket, "minutes": minutes,
        }),
        Command::Revoke { grant } => json!({"op": "revoke", "grant": grant}),
        Command::Grants { customer } => json!({"op": "grants", "customer": customer}),
        Command::ExportPerson { grant, customer, user } => {
            json!({"op": "export-person", "grant": grant, "customer": customer, "user": user})
        }
        Command::ErasePerson { grant, customer, user, request } => json!({
            "op": "erase-person", "grant": grant, "customer": customer, "user": user,
            "request": request.clone().unwrap_or_else(|| format!("erase-{now}")),
        }),
        Command::CopyCustomer { grant, customer, .. } => {
            json!({"op": "copy-customer", "grant": grant, "customer": customer})
        }
        Command::ReadRecords { grant, customer, after, limit } => json!({
            "op": "read-records", "grant": grant, "customer": customer, "after": after, "limit": limit,
        }),
        Command::DeleteCustomer { grant, customer } => {
            json!({"op": "delete-customer", "grant": grant, "customer": customer})
        }
        Command::RequestRecord { grant, customer, kind, user, channel } => json!({
            "op": "request-record", "grant": grant, "customer": customer, "kind": kind, "user": user,
            "channel": channel,
        }),
        Command::Notifications { grant, customer } => {
            json!({"op": "notifications", "grant": grant, "customer": customer})
        }
        Command::Acknowledge { grant, customer, id } => {
            json!({"op": "acknowledge", "grant": grant, "customer": customer, "id": id})
        }
        Command::Instruct { grant, customer, id, proceed: _, decline, by } => json!({
            "op": "instruct", "grant": grant, "customer": customer, "id": id, "by": by,
            "instruction": if decline.is_some() { "decline" } else { "proceed" }, "reason": decline,
        }),
        Command::Requests { grant, customer } => {
            json!({"op": "requests", "grant": grant, "customer": customer})
        }
        Command::Overdue => json!({"op": "overdue"}),
        Command::ExecuteRequest { grant, customer, id } => {
            json!({"op": "execute-request", "grant": grant, "customer": customer, "id": id})
        }
        Command::RotateMaster { new_key_file } => {
            let path = std::path::absolute(new_key_file)?;
            json!({"op": "rotate-master", "new_key_file": path.to_string_lossy()})
        }
        Command::RotateCustomerKey { grant, customer } => {
            json!({"op": "rotate-customer-key", "grant": grant, "customer": customer})
        }
        Command::Reseal { grant, customer, max_rows } => {
            json!({"op": "reseal", "grant": grant, "customer": customer, "max_rows": max_rows})
        }
        Command::AccessLog { customer } => json!({"op": "access-log", "customer": customer}),
        Command::RawLog { .. } => json!({"op": "raw-log"}),
        Command::Sweep => json!({"op": "sweep"}),
        Command::OperatorToken { .. }
        | Command::VerifyLog { .. }
        | Command::VerifyReceipt { .. }
        | Command::Manifest { .. } => return Ok(None),
    }))
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    let Some(mut req) = request(&cli.command)? else { return offline(&cli.command, &mut out) };
    let socket = cli.socket.as_deref().context("--socket PATH (or PRIVTEL_ADMIN_SOCKET) is required")?;
    let token_file = cli
        .token_file
        .as_deref()
        .context("--token-file FILE (or PRIVTEL_OPERATOR_TOKEN_FILE) is required")?;
    req["v"] = json!(1);
    req["token"] = json!(token(token_file)?);
    let mut stream =
        UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    writeln!(stream, "{req}")?;
    let mut lines = BufReader::new(stream).lines();
    let first = lines.next().context("the service closed the connection without an answer")??;
    let mut answer: Value = serde_json::from_str(&first).context("the service's answer")?;
    if answer["ok"] != json!(true) {
        eprintln!(
            "admin: refused ({}): {}",
            answer["code"].as_str().unwrap_or("?"),
            answer["error"].as_str().unwrap_or("?")
        );
        return Ok(false);
    }
    if answer["stream"] == json!(true) {
        let mut sink: Box<dyn std::io::Write> = match &cli.command {
            Command::CopyCustomer { out: Some(path), .. } => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| path.display().to_string())?,
            )),
            _ => Box::new(&mut out),
        };
        for line in lines {
            let line = line?;
            if line.starts_with(&format!("{{\"{END_KEY}\"")) {
                let end: Value = serde_json::from_str(&line)?;
                sink.flush()?;
                if end[END_KEY] == json!(true) {
                    eprintln!("admin: {} lines", end["lines"]);
                    return Ok(true);
                }
                eprintln!(
                    "admin: cut short ({}): {}",
                    end["code"].as_str().unwrap_or("?"),
                    end["error"].as_str().unwrap_or("?")
                );
                return Ok(false);
            }
            writeln!(sink, "{line}")?;
        }
        bail!("the answer ended without its trailer: it is incomplete");
    }
    if let Command::RawLog { out: path } = &cli.command {
        let bytes = unhex("log", answer["log"].as_str().unwrap_or_default())?;
        std::fs::write(path, bytes).with_context(|| path.display().to_string())?;
        if let Value::Object(m) = &mut answer {
            m.remove("log");
        }
    }
    if let Value::Object(m) = &mut answer {
        m.remove("ok");
    }
    writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    Ok(true)
}

fn offline(command: &Command, out: &mut impl std::io::Write) -> anyhow::Result<bool> {
    match command {
        Command::OperatorToken { name } => {
            let (token, digest) = operator_token()?;
            writeln!(out, "token (give it to {name}, keep it in a file only they can read):\n{token}\n")?;
            writeln!(
                out,
                "entry for the service's operators file:\n[[operator]]\nname = \"{name}\"\ntoken_sha256 = \"{digest}\"\napprover = false"
            )?;
        }
        Command::VerifyLog { log, checkpoint, public_key } => {
            let bytes = std::fs::read(log).with_context(|| log.display().to_string())?;
            let checkpoint = Checkpoint::from_bytes(&unhex("--checkpoint", checkpoint)?)?;
            let key = PublicKey::from_slice(&unhex("--public-key", public_key)?)?;
            match verify_bytes(&bytes, &checkpoint, &key) {
                Ok(v) => writeln!(
                    out,
                    "verified: {} entries covered by the checkpoint, {} after it",
                    v.covered, v.beyond
                )?,
                Err(e) => {
                    eprintln!("admin: the log does not verify: {e}");
                    return Ok(false);
                }
            }
        }
        Command::VerifyReceipt { receipt, public_key } => {
            let text = std::fs::read_to_string(receipt).with_context(|| receipt.display().to_string())?;
            let v: Value = serde_json::from_str(&text).context("a receipt as delete-customer printed it")?;
            let document = v["receipt"].as_str().context("a receipt field")?;
            let signature = unhex("signature", v["signature"].as_str().context("a signature field")?)?;
            let key = PublicKey::from_slice(&unhex("--public-key", public_key)?)?;
            if !key.verifies_document("customer-deletion", document.as_bytes(), &signature) {
                eprintln!("admin: the receipt's signature does not verify with this key");
                return Ok(false);
            }
            writeln!(out, "verified: signed by {key}")?;
        }
        Command::Manifest { policy } => {
            let text = std::fs::read_to_string(policy).with_context(|| policy.display().to_string())?;
            let (parsed, warnings) =
                Policy::from_toml_with_warnings(&text).with_context(|| policy.display().to_string())?;
            for w in &warnings {
                eprintln!("admin: warning: {}: {w}", policy.display());
            }
            write!(out, "{}", Manifest::from_policy(&parsed).to_markdown())?;
        }
        _ => bail!("a console command needs the service"),
    }
    Ok(true)
}

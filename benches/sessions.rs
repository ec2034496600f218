//! Agent sessions over mutual TLS, against the bare rustls mutual-TLS
//! handshake measured in the same run, and 10,000 idle authenticated
//! connections held by the service (not criterion: each figure is a
//! throughput over seconds of load, or a resident set size).
//!
//! `cargo bench --bench sessions [-- OPTIONS]` (or `scripts/bench-sessions.sh`).
//!
//! One binary with modes; it runs itself again so that each server has a
//! process of its own, whose RSS and CPU time are the server's alone:
//!
//! * `serve`: the real service. A temporary folder holds an [`Authority`]
//!   with the customer `acme`, a [`SqliteEngine`] and the service's own
//!   certificate; [`Service::serve_tls`] over
//!   [`privtel::authority::server_config`], settings with `acme` on the
//!   default policy, limits raised for the idle test. It enrolls
//!   `--devices` devices through the real enrollment path (a one-time token,
//!   a CSR over TLS, [`privtel::authority::accept`]) and saves their
//!   credentials in the folder, prints `listening ADDR`, answers `stats` on
//!   stdin with its counters, and exits when stdin closes.
//! * `bare-serve`: a minimal rustls server, thread per connection (kept for
//!   the next one as the service's are, `privtel_service::Workers`), with the
//!   same key types (ECDSA P-256 server and client certificates, ring, TLS
//!   1.3) and the service's session settings (no tickets, no session
//!   cache): it verifies the client certificate against the customer's CA,
//!   completes the handshake, sends `close_notify` and closes. Its clients
//!   are rustls's own configuration (its webpki verifier of the server's
//!   chain, every handshake), where an agent's (`client_config`) remembers
//!   a chain it verified once, as the service remembers a device's.
//! * the default (the load generator): `--threads` client threads for
//!   `--seconds`, `--rounds` times, ours then bare each round. A session is
//!   TCP connect, the mutual-TLS handshake, Hello (the certificate's
//!   device, stream 1), one Batch of 100 records the customer's policy
//!   admits (fresh event ids, `first_seq` = the Welcome's high-water
//!   mark + 1), the Ack (no rejection, every record accepted, else an error),
//!   Goodbye, close. The records are filtered once, before the run (an
//!   agent filters on its own machine), and each device keeps its hello
//!   and its batch: a session writes a fresh batch id, fresh event ids and
//!   `first_seq` into it, then encodes and sends it as an agent does. A bare session is TCP connect, the handshake, and the
//!   server's `close_notify`. Each round prints, beside each side's rate,
//!   the shares of the machine's CPU time the hypervisor stole and the
//!   cores sat idle while that side ran (`/proc/stat`): stolen time slows
//!   one side alone, and idle time says a side was not bound by the
//!   machine's CPU. Each thread owns its devices, so a device's
//!   sequence numbers never race. Every handshake is a full one: neither
//!   server sends tickets, and client resumption is off as well. The default of 16
//!   threads a core (32 sessions in flight here) is what a service meets:
//!   many devices at once. With a handful of clients the figure is the
//!   latency of one durable write (a sync to disk, ~1.4 ms on this disk)
//!   and not what the service can take; the bare server gets the same load.
//! * `--idle N` (default 10,000; 0 skips it): a fresh `serve` process; N
//!   connections each complete the handshake and Hello, then stay silent.
//!   The service's `VmRSS`/`VmHWM` (from `/proc/PID/status`) with 0 and N
//!   held, its threads, and its CPU time while they idle.
//! * `--only pipeline` (a diagnostic, not a goal): the service's side of
//!   a session without TLS, in this process: `--threads` threads run
//!   [`Service::handle`] over in-memory streams on a hello, a batch and a
//!   goodbye encoded beforehand, through the real admission, encoding and
//!   group commit. Sessions/s and CPU a session; with `--sessions N` each
//!   thread runs N sessions and no rate is given (for an instruction
//!   count: `valgrind --tool=callgrind --toggle-collect='*Service*handle*'
//!   --toggle-collect='*write_loop*'`, which a machine's noise does not
//!   move).
//! * `--only ingest` (a diagnostic, not a goal): the engine alone, in this
//!   process, one thread: the session's records ingested in batches of 1,
//!   100 and 1,000 for `--seconds` each, one transaction per batch as the
//!   service does, to show the cost of a transaction against its records.
//!
//! Options: `--seconds D` (10), `--threads C` (16 × cores), `--rounds R` (2),
//! `--warmup S` (2), `--devices N` (64), `--records N` (100 a batch),
//! `--idle N` (10000), `--hold S` (10), `--sessions N` (0), `--records-per-second N` (acme's
//! per-customer rate, default 10,000,000: the bench measures what the
//! service can take, not the limiter; the service's own default, 50,000
//! records/s, is exactly 500 sessions of 100 records; 0 keeps it), `--only
//! sessions|idle|ingest|pipeline`, `--ids rising|scattered` (rising: a
//! session's ids are consecutive and rise from one session to the next, so
//! the engine's unique index of (device, event id) takes them side by
//! side; scattered: spread over the whole range, as an agent's random or
//! hashed ids are, each landing at a random place of that index, which
//! costs the service more: `docs/PERFORMANCE.md`).
//!
//! Prints one `RATIO` line per goal (measured / goal, 1.00 or more meets it)
//! and a summary table. Beside the rates, the table gives the server's and
//! the load generator's CPU time a session, and their sum on each side: the
//! ratio of those sums is what the rates' ratio would be with both sides
//! bound by the machine's CPU alone, which time stolen by the hypervisor
//! and cores left idle move much less than the rates (a diagnostic, not
//! the goal).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use privtel::authority::{Authority, Credentials, DeviceKey};
use privtel::filter::{FilterBuilder, Filtered, PseudonymKey};
use privtel::model::{BatchId, CustomerId, DeviceId, EventId, KeyId, Program, Record, RecordBody, Timestamp};
use privtel::service::{Limits, Service, Settings, Workers};
use privtel::store::{EngineOptions, SqliteEngine};
use privtel::wire::tls::rustls;
use privtel::wire::{Batch, Connection, Goodbye, Hello, Message, VerdictIndex};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The spool stream every device names in its hello.
const STREAM: u64 = 1;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    // Cargo passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let opts = Options::parse(&args);
    let result = match opts.mode.as_str() {
        "serve" => serve(&opts),
        "bare-serve" => bare_serve(&opts),
        "run" => run(&opts),
        other => Err(format!("unknown mode {other}: expected serve, bare-serve or none").into()),
    };
    if let Err(e) = result {
        eprintln!("sessions bench: {e}");
        std::process::exit(1);
    }
}

/// The command line: a mode, then `--name value` pairs.
#[derive(Clone, Debug)]
struct Options {
    mode: String,
    dir: Option<PathBuf>,
    seconds: f64,
    threads: usize,
    rounds: usize,
    warmup: f64,
    devices: usize,
    idle: usize,
    hold: f64,
    idle_secs: u64,
    records_per_second: u32,
    records: usize,
    /// `--only pipeline`: sessions each thread runs (0: for `--seconds`).
    sessions: usize,
    only: Option<String>,
    /// Event ids scattered as an agent's are (`--ids scattered`), rather
    /// than rising with each session (`--ids rising`, the default).
    scattered: bool,
}

impl Options {
    fn parse(args: &[String]) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let mut o = Self {
            mode: "run".into(),
            dir: None,
            seconds: 10.0,
            threads: 16 * cores,
            rounds: 2,
            warmup: 2.0,
            devices: 64,
            idle: 10_000,
            hold: 10.0,
            idle_secs: 900,
            records_per_second: 10_000_000,
            records: 100,
            sessions: 0,
            only: None,
            scattered: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                o.mode.clone_from(a);
                continue;
            };
            let value = it.next().unwrap_or_else(|| usage(&format!("--{name} needs a value")));
            let num = |v: &str| -> f64 {
                v.parse().unwrap_or_else(|_| usage(&format!("--{name}: expected a number")))
            };
            match name {
                "dir" => o.dir = Some(PathBuf::from(value)),
                "seconds" => o.seconds = num(value),
                "threads" => o.threads = num(value) as usize,
                "rounds" => o.rounds = num(value) as usize,
                "warmup" => o.warmup = num(value),
                "devices" => o.devices = num(value) as usize,
                "idle" => o.idle = num(value) as usize,
                "hold" => o.hold = num(value),
                "idle-secs" => o.idle_secs = num(value) as u64,
                "records-per-second" => o.records_per_second = num(value) as u32,
                "records" => o.records = num(value) as usize,
                "sessions" => o.sessions = num(value) as usize,
                "only" => o.only = Some(value.clone()),
                "ids" => {
                    o.scattered = match value.as_str() {
                        "rising" => false,
                        "scattered" => true,
                        _ => usage("expected --ids rising or --ids scattered"),
                    }
                }
                _ => usage(&format!("unknown option --{name}")),
            }
        }
        if o.threads == 0 || o.devices < o.threads || o.records == 0 || o.records > 1 << 16 {
            usage(
                "expected at least one thread, at least as many devices as threads, and 1 to 65,536 records a batch",
            );
        }
        o
    }
}

fn usage(why: &str) -> ! {
    eprintln!("sessions bench: {why}");
    eprintln!(
        "usage: sessions [--seconds D] [--threads C] [--rounds R] [--warmup S] [--devices N] \
         [--idle N] [--hold S] [--records-per-second N] [--sessions N] [--only sessions|idle|ingest|pipeline] [--ids rising|scattered]"
    );
    std::process::exit(2);
}

fn wall() -> Timestamp {
    Timestamp::from(time::OffsetDateTime::now_utc())
}

fn acme() -> CustomerId {
    CustomerId::new("acme").expect("valid id")
}

fn device_id(i: usize) -> DeviceId {
    DeviceId::new(format!("bench-{i:05}")).expect("valid id")
}

/// Acme on the default policy; the per-customer rate raised only if asked.
fn settings_toml(records_per_second: u32) -> String {
    if records_per_second == 0 {
        "[customers.acme]\n".to_owned()
    } else {
        format!("[customers.acme]\nrecords_per_second = {records_per_second}\n")
    }
}

// ---------------------------------------------------------------------------
// The service's process

fn serve(opts: &Options) -> Res<()> {
    let dir = opts.dir.clone().ok_or("serve: expected --dir")?;
    let now = time::OffsetDateTime::now_utc();
    let authority = Arc::new(Authority::open(dir.join("authority.db"))?);
    let customer_ca = authority.add_customer(&acme(), now)?;
    std::fs::write(dir.join("customer-ca.pem"), customer_ca)?;
    let identity = privtel::wire::tls::generate_identity(&["127.0.0.1"])?;
    std::fs::write(dir.join("server-ca.pem"), &identity.ca_pem)?;
    let config = privtel::authority::server_config(&authority, &identity)?;
    let engine = SqliteEngine::open(dir.join("engine.db"), EngineOptions::default())?;
    let mut limits = Limits::default();
    limits.max_connections = 20_000;
    // The idle test holds 10,000 connections of the 64 devices (enrolling
    // 10,000 would take longer than the run): what a connection costs does
    // not depend on how many its device holds.
    limits.max_per_device = 20_000;
    // Every client is on 127.0.0.1, 16 a core: on a machine of more than
    // four cores more than the 64 handshakes of one address would run at
    // once (a real fleet comes from many addresses).
    limits.max_handshakes_per_address = 20_000;
    limits.idle = Duration::from_secs(opts.idle_secs);
    let service = Arc::new(
        Service::new(engine, VerdictIndex::new(4, [1; 32]), wall)
            .with_settings(Settings::from_toml(&settings_toml(opts.records_per_second))?)
            .with_authority(Arc::clone(&authority))
            .with_limits(limits),
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = AtomicBool::new(false);
    {
        let service = Arc::clone(&service);
        std::thread::spawn(move || service.serve_tls(&listener, &config, &stop));
    }

    // Enrollment, the real path: a token for all of them, one CSR each over
    // TLS without a client certificate.
    let token = authority.issue_token(
        &acme(),
        time::Duration::hours(1),
        u32::try_from(opts.devices).unwrap_or(u32::MAX),
        now,
    )?;
    let enrollment = privtel::authority::enrollment_client_config(&identity.ca_pem)?;
    for i in 0..opts.devices {
        let key = DeviceKey::generate()?;
        let device = device_id(i);
        let stream = privtel::wire::tls::connect(addr, "127.0.0.1", Arc::clone(&enrollment))?;
        let mut conn = Connection::new(stream);
        conn.send(&Message::EnrollRequest(privtel::authority::request(
            Some(&token),
            &acme(),
            &device,
            &key,
        )?))?;
        let credentials = match conn.recv()? {
            Message::Enrolled(e) => privtel::authority::accept(&key, &acme(), &device, e)?,
            other => return Err(format!("enrollment: expected enrolled, got {}", other.kind_name()).into()),
        };
        let folder = dir.join("devices").join(device.as_str());
        std::fs::create_dir_all(&folder)?;
        credentials.save(folder)?;
    }
    println!("listening {addr}");
    std::io::stdout().flush()?;

    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "stats" {
            let s = service.stats();
            let chains = authority.chain_verifications();
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            println!(
                "stats active={} connections={} threads={} failed={} forbidden={} over_capacity={} \
                 over_handshakes={} over_tenant_cap={} enrolled={} stored={} duplicates={} refused={} sequence={} groups={} checkpoint_failures={} \
                 chains_full={} chains_remembered={}",
                service.active_connections(),
                get(&s.connections),
                get(&s.threads),
                get(&s.failed),
                get(&s.forbidden),
                get(&s.over_capacity),
                get(&s.over_handshakes),
                get(&s.over_tenant_cap),
                get(&s.enrolled),
                get(&s.stored),
                get(&s.duplicates),
                get(&s.refused),
                get(&s.sequence),
                get(&s.groups),
                get(&s.checkpoint_failures),
                chains.full,
                chains.remembered,
            );
            std::io::stdout().flush()?;
        }
    }
    // Stdin closed: the parent is done. Connection threads are not joined.
    std::process::exit(0);
}

// ---------------------------------------------------------------------------
// The bare rustls server's process

fn bare_serve(opts: &Options) -> Res<()> {
    let dir = opts.dir.clone().ok_or("bare-serve: expected --dir")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("customer-ca.pem"))? {
        roots.add(cert?)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()?;
    let identity = privtel::wire::tls::generate_identity(&["127.0.0.1"])?;
    std::fs::write(dir.join("bare-server-ca.pem"), &identity.ca_pem)?;
    let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .chain(CertificateDer::pem_slice_iter(identity.ca_pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    // As the service's (`privtel::authority::server_config`): no session
    // tickets, no session cache.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let handshakes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    {
        let (handshakes, failed) = (Arc::clone(&handshakes), Arc::clone(&failed));
        let limits = Limits::default();
        let workers =
            Workers::new("bare-conn", limits.thread_stack, limits.idle_threads, Duration::from_secs(10));
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let config = Arc::clone(&config);
                let (handshakes, failed) = (Arc::clone(&handshakes), Arc::clone(&failed));
                // The service's connection threads (`Service::serve_tls`),
                // for the same thread costs: its stack size, and threads
                // kept for the next connection as many and as long.
                let _ = workers.run(move || {
                    let count = if bare_accept(tcp, config).is_ok() { &handshakes } else { &failed };
                    count.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "stats" {
            println!(
                "stats handshakes={} failed={}",
                handshakes.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            );
            std::io::stdout().flush()?;
        }
    }
    std::process::exit(0);
}

/// One bare server connection: the handshake, then `close_notify`.
fn bare_accept(mut tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> Res<()> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = rustls::ServerConnection::new(config)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    if conn.peer_certificates().is_none_or(<[_]>::is_empty) {
        return Err("no client certificate".into());
    }
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(&mut tcp)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The load generator

/// A server process of ours, and what it prints.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Server {
    fn start(mode: &str, dir: &Path, extra: &[String]) -> Res<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(mode)
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("{mode}: expected `listening ADDR`, got {line:?}"))?
            .parse()?;
        Ok(Self { child, stdin, stdout, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's counters, `name=value`.
    fn stats(&mut self) -> Res<BTreeMap<String, u64>> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin.write_all(b"stats\n")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let rest =
            line.trim().strip_prefix("stats ").ok_or_else(|| format!("expected stats, got {line:?}"))?;
        Ok(rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect())
    }

    fn stop(mut self) -> Res<()> {
        drop(self.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

/// From `/proc/PID/status`: resident and peak resident KiB, threads.
#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn mem(pid: u32) -> Res<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Mem { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:"), threads: field("Threads:") })
}

/// User + system CPU seconds of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').ok_or("unreadable stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).ok_or("short stat")?.parse::<u64>()?
        + fields.get(12).ok_or("short stat")?.parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok(ticks as f64 / 100.0)
}

/// The machine's CPU time so far, from `/proc/stat`'s first line, in
/// ticks.
#[derive(Clone, Copy, Default)]
struct Ticks {
    /// All of it.
    all: u64,
    /// Idle, or waiting for the disk with nothing else to run.
    idle: u64,
    /// Stolen by the hypervisor.
    steal: u64,
}

/// Reads [`Ticks`]. Time stolen while one side runs slows it alone, which
/// the ratio cannot tell from the code; time idle while a side runs says
/// that side was not bound by the machine's CPU (its clients waited on
/// something else): each round prints both shares for each side.
fn cpu_ticks() -> Ticks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest and
    // guest_nice time are counted in user and nice already).
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    Ticks { all: fields.iter().take(8).sum(), idle: field(3) + field(4), steal: field(7) }
}

/// The shares of the machine's CPU time between two readings of
/// [`cpu_ticks`] that were (idle, stolen), in percent.
fn idle_stolen(before: Ticks, after: Ticks) -> (f64, f64) {
    let all = after.all.saturating_sub(before.all);
    let share = |a: u64, b: u64| if all == 0 { 0.0 } else { a.saturating_sub(b) as f64 * 100.0 / all as f64 };
    (share(after.idle, before.idle), share(after.steal, before.steal))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A device the load generator plays: its id and its mutual-TLS
/// configurations (resumption off: every session is a full handshake).
struct Device {
    id: DeviceId,
    ours: Arc<rustls::ClientConfig>,
    bare: Option<Arc<rustls::ClientConfig>>,
    /// Its hello, the same every session.
    hello: Hello,
    /// Its batch, built once from the template (as an agent's filter and
    /// spool made it on the device): each session only gives it a fresh
    /// batch id, fresh event ids and the welcome's sequence numbers. Only
    /// the thread that owns the device takes it.
    batch: std::sync::Mutex<Option<Batch>>,
}

fn full_handshakes(config: &rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    let mut config = config.clone();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A bare client: rustls's own configuration, with its webpki verifier of
/// the server's chain (verified in full every handshake), and the same
/// provider, versions, CA and device certificate as an agent's.
fn bare_client_config(ca_pem: &str, credentials: &Credentials) -> Res<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let cert = CertificateDer::from_pem_slice(credentials.cert_pem.as_bytes())?;
    let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes())?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)?)
}

fn load_devices(dir: &Path, n: usize) -> Res<Vec<Device>> {
    let server_ca = std::fs::read_to_string(dir.join("server-ca.pem"))?;
    (0..n)
        .map(|i| {
            let id = device_id(i);
            let credentials = Credentials::load(dir.join("devices").join(id.as_str()))?;
            let config = privtel::authority::client_config(&server_ca, &credentials)?;
            let ours = full_handshakes(&config);
            let consent = Program::ALL.iter().map(|p| (*p, true)).collect();
            let hello = Hello::new("bench", acme(), id.clone(), consent, 1).with_stream(STREAM);
            Ok(Device { id, ours, bare: None, hello, batch: std::sync::Mutex::new(None) })
        })
        .collect()
}

/// The records a session sends: the fixtures' Support Telemetry events
/// (configuration, performance, feedback: each stored as a row, where
/// benchmarking records would be folded into aggregates), dated now, put
/// through acme's own filter, so the service's check admits every one; ids
/// are set per session.
fn template(settings: &Settings, n: usize) -> Res<Vec<Record>> {
    let cs = settings.customer(&acme()).ok_or("acme has no settings")?;
    let filter = FilterBuilder::new()
        .policy(cs.policy().clone())
        .customer(acme())
        .key(PseudonymKey::new(KeyId::new(1), [3; 32]))
        .build();
    let now = wall();
    let events: Vec<Record> = privtel_testkit::fixtures::records("bench")
        .into_iter()
        .filter(|r| r.program == Program::SupportTelemetry && matches!(r.body, RecordBody::Event(_)))
        .map(|mut r| {
            if let RecordBody::Event(e) = &mut r.body {
                e.recorded_at = now;
            }
            r
        })
        .filter_map(|r| filter.apply(r, &mut Default::default()))
        .map(Filtered::into_record)
        .collect();
    if events.is_empty() {
        return Err("the default policy admits no support telemetry event".into());
    }
    Ok((0..n).map(|i| events[i % events.len()].clone()).collect())
}

/// What one client thread saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    /// Whole sessions.
    latencies_us: Vec<u64>,
    /// From the start to the first answer (ours: the Welcome; bare: the
    /// client's end of the handshake) and to the second (the Ack; the
    /// server's `close_notify`).
    marks_us: [Vec<u64>; 2],
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        self.ok += other.ok;
        self.latencies_us.extend(other.latencies_us);
        for (m, o) in self.marks_us.iter_mut().zip(other.marks_us) {
            m.extend(o);
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn error(&mut self, e: &(dyn std::error::Error + Send + Sync)) {
        // The message's shape, not its numbers: kinds of failures, counted.
        let kind: String = e.to_string().chars().filter(|c| !c.is_ascii_digit()).take(120).collect();
        *self.errors.entry(kind).or_default() += 1;
    }

    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.latencies_us, p)
    }

    fn mark_ms(&mut self, mark: usize, p: f64) -> f64 {
        percentile_ms(&mut self.marks_us[mark], p)
    }

    fn record(&mut self, t: Times) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.ok += 1;
        self.latencies_us.push(us(t.total));
        self.marks_us[0].push(us(t.first));
        self.marks_us[1].push(us(t.second));
    }
}

fn percentile_ms(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// When a session reached its two answers, and its end, from its start.
#[derive(Clone, Copy)]
struct Times {
    first: Duration,
    second: Duration,
    total: Duration,
}

impl Tally {}

/// Shared by the client threads of a session run.
struct Work {
    addr: SocketAddr,
    template: Vec<Record>,
    policy_hash: [u8; 32],
    salt: u128,
    next_session: AtomicU64,
    /// `--ids scattered`.
    scattered: bool,
}

/// A copy of the template record `r` as `device`'s event `id`.
fn stamped(r: &Record, device: &DeviceId, id: u128) -> Record {
    let mut r = r.clone();
    if let RecordBody::Event(e) = &mut r.body {
        e.id = EventId::from_u128(id);
        e.device = device.clone();
    }
    r
}

/// The device's batch for its next session, from the template the first
/// time: its records carry the device and fresh event ids, its batch id is
/// fresh; the caller sets `first_seq` from the welcome.
fn next_batch(work: &Work, device: &Device, slot: &mut Option<Batch>) -> Batch {
    let n = work.next_session.fetch_add(1, Ordering::Relaxed);
    let base = work.salt ^ (u128::from(n) << 16);
    let mut batch = slot.take().unwrap_or_else(|| Batch {
        program: Program::SupportTelemetry,
        batch_id: BatchId::from_u128(0),
        first_seq: 0,
        records: work.template.iter().enumerate().map(|(i, r)| stamped(r, &device.id, i as u128)).collect(),
        skipped: 0,
        policy_hash: work.policy_hash,
    });
    batch.batch_id = BatchId::from_u128(base);
    for (i, r) in batch.records.iter_mut().enumerate() {
        if let RecordBody::Event(e) = &mut r.body {
            e.id =
                if work.scattered { scattered(base, i as u64) } else { EventId::from_u128(base | i as u128) };
        }
    }
    batch
}

/// The ingest diagnostic's id number `n`, rising or scattered (`--ids`).
fn ingest_id(opts: &Options, n: u128) -> u128 {
    if opts.scattered { scattered(n << 16, 0).as_u128() } else { n }
}

/// The id of record `i` of the session `base`: scattered over the whole
/// range as an agent's are (random, or hashes of what identifies each
/// event), not one run of consecutive numbers, which would put a
/// session's records side by side in the store's index of event ids and
/// hide what random ids cost it. Each half goes through splitmix64's
/// finaliser (a bijection), so distinct (session, record) pairs keep
/// distinct ids, their low 64 bits (what the store indexes) included.
fn scattered(base: u128, i: u64) -> EventId {
    fn mix(mut x: u64) -> u64 {
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    // `base` has sixteen zero bits under the session number: `^ i` keeps
    // the pairs apart below 65,536 records a batch.
    let (high, low) = ((base >> 64) as u64, base as u64);
    EventId::from_u128((u128::from(mix(high ^ i)) << 64) | u128::from(mix(low ^ i)))
}

/// One agent session. Returns its latency.
fn agent_session(work: &Work, device: &Device) -> Res<Times> {
    let mut slot = device.batch.lock().map_err(|_| "a client thread panicked")?;
    let mut batch = next_batch(work, device, &mut slot);

    let start = Instant::now();
    let stream = privtel::wire::tls::connect(work.addr, "127.0.0.1", Arc::clone(&device.ours))?;
    let mut conn = Connection::new(stream);
    let welcome = conn.client_handshake(&device.hello)?;
    let first = start.elapsed();
    let first_seq = welcome.high_water + 1;
    batch.first_seq = first_seq;
    let message = Message::Batch(batch);
    conn.send(&message)?;
    // Kept for the device's next session.
    if let Message::Batch(batch) = message {
        *slot = Some(batch);
    }
    match conn.recv()? {
        Message::Ack(ack) => {
            if let Some(r) = ack.rejections.first() {
                return Err(format!("rejection {}: {}", r.code, r.reason).into());
            }
            if ack.accepted_up_to != first_seq + work.template.len() as u64 - 1 {
                return Err("ack: not every record accepted".into());
            }
        }
        other => return Err(format!("expected an ack, got {}", other.kind_name()).into()),
    }
    let second = start.elapsed();
    conn.send(&Message::Goodbye(Goodbye { reason: "done".into() }))?;
    let mut stream = conn.into_inner();
    stream.conn.send_close_notify();
    let _ = stream.flush();
    Ok(Times { first, second, total: start.elapsed() })
}

/// One bare session: the handshake, then the server's `close_notify`.
fn bare_session(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Res<Times> {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    let first = start.elapsed();
    // The server has verified the client's certificate once it closes
    // cleanly.
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    let mut buf = [0; 64];
    loop {
        match stream.read(&mut buf)? {
            0 => break,
            _ => continue,
        }
    }
    let second = start.elapsed();
    Ok(Times { first, second, total: second })
}

/// Runs `threads` clients for `seconds`; each owns the devices `i` with
/// `i % threads == thread`. Returns the tally and the wall time.
fn drive(
    threads: usize,
    seconds: f64,
    devices: &[Device],
    session: impl Fn(&Device) -> Res<Times> + Sync,
) -> (Tally, Duration) {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut total = Tally::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<&Device> = devices.iter().skip(t).step_by(threads).collect();
                let session = &session;
                s.spawn(move || {
                    let mut tally = Tally::default();
                    for device in mine.iter().cycle() {
                        if Instant::now() >= until {
                            break;
                        }
                        match session(device) {
                            Ok(t) => tally.record(t),
                            Err(e) => tally.error(e.as_ref()),
                        }
                    }
                    tally
                })
            })
            .collect();
        for h in handles {
            total.merge(h.join().expect("client thread"));
        }
    });
    (total, start.elapsed())
}

fn per_s(t: &Tally, d: Duration) -> f64 {
    t.ok as f64 / d.as_secs_f64()
}

fn print_errors(what: &str, t: &Tally) {
    for (kind, n) in &t.errors {
        println!("  {what} error x{n}: {kind}");
    }
}

fn ratio(name: &str, measured: f64, goal: f64, higher_is_better: bool, unit: &str) {
    let r = if higher_is_better { measured / goal } else { goal / measured };
    let met = if r >= 1.0 { "met" } else { "NOT MET" };
    println!(
        "RATIO {name} {r:.2}  ({measured:.3} {unit}, goal {} {goal} {unit}; {met})",
        if higher_is_better { ">=" } else { "<=" }
    );
}

fn run(opts: &Options) -> Res<()> {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "sessions bench: {} client threads, {} devices, {} s x {} rounds (+{} s warm-up), {} cores, load {}",
        opts.threads,
        opts.devices,
        opts.seconds,
        opts.rounds,
        opts.warmup,
        cores,
        loadavg()
    );
    let mut summary: Vec<(String, String)> = Vec::new();
    if opts.only.as_deref() == Some("ingest") {
        ingest(opts, &mut summary)?;
    } else if opts.only.as_deref() == Some("pipeline") {
        pipeline(opts, &mut summary)?;
    } else if opts.only.as_deref() != Some("idle") {
        sessions(opts, &mut summary)?;
    }
    if opts.only.as_deref().is_none_or(|o| o == "idle") && opts.idle > 0 {
        idle(opts, &mut summary)?;
    }
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    for (k, v) in &summary {
        println!("| {k} | {v} |");
    }
    Ok(())
}

fn serve_args(opts: &Options) -> Vec<String> {
    vec![
        "--devices".into(),
        opts.devices.to_string(),
        "--idle-secs".into(),
        opts.idle_secs.to_string(),
        "--records-per-second".into(),
        opts.records_per_second.to_string(),
    ]
}

fn sessions(opts: &Options, summary: &mut Vec<(String, String)>) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let began = Instant::now();
    let mut ours = Server::start("serve", dir.path(), &serve_args(opts))?;
    println!(
        "service pid {} on {}: {} devices enrolled in {:.1} s",
        ours.pid(),
        ours.addr,
        opts.devices,
        began.elapsed().as_secs_f64()
    );
    let bare = Server::start("bare-serve", dir.path(), &[])?;
    let bare_ca = std::fs::read_to_string(dir.path().join("bare-server-ca.pem"))?;
    let mut devices = load_devices(dir.path(), opts.devices)?;
    for (i, d) in devices.iter_mut().enumerate() {
        let credentials = Credentials::load(dir.path().join("devices").join(device_id(i).as_str()))?;
        d.bare = Some(full_handshakes(&bare_client_config(&bare_ca, &credentials)?));
    }
    let settings = Settings::from_toml(&settings_toml(opts.records_per_second))?;
    let policy_hash = settings.customer(&acme()).ok_or("acme has no settings")?.policy_digest();
    let work = Work {
        addr: ours.addr,
        template: template(&settings, opts.records)?,
        policy_hash,
        salt: u128::from(std::process::id()) << 96 | (wall().unix_seconds() as u128) << 64,
        next_session: AtomicU64::new(0),
        scattered: opts.scattered,
    };
    let bare_addr = bare.addr;
    let bare_of = |d: &Device| -> Res<Times> {
        bare_session(bare_addr, d.bare.as_ref().ok_or("no bare configuration")?)
    };
    if opts.warmup > 0.0 {
        let (w, _) = drive(opts.threads, opts.warmup / 2.0, &devices, |d| agent_session(&work, d));
        let (b, _) = drive(opts.threads, opts.warmup / 2.0, &devices, bare_of);
        println!("warm-up: {} sessions, {} bare handshakes", w.ok, b.ok);
    }
    let stored_before = ours.stats()?.get("stored").copied().unwrap_or(0);
    let (mut all_ours, mut all_bare) = (Tally::default(), Tally::default());
    let (mut t_ours, mut t_bare) = (Duration::ZERO, Duration::ZERO);
    let (mut cpu_ours, mut cpu_bare) = (0.0, 0.0);
    let (mut client_ours, mut client_bare) = (0.0, 0.0);
    let (mut steal_ours, mut steal_bare) = (0.0, 0.0);
    let (mut idle_ours, mut idle_bare) = (0.0, 0.0);
    let me = std::process::id();
    for round in 1..=opts.rounds {
        let load = loadavg();
        let (c0, m0, s0) = (cpu_seconds(ours.pid())?, cpu_seconds(me)?, cpu_ticks());
        let (o, to) = drive(opts.threads, opts.seconds, &devices, |d| agent_session(&work, d));
        let (co, mo, (io, so)) =
            (cpu_seconds(ours.pid())? - c0, cpu_seconds(me)? - m0, idle_stolen(s0, cpu_ticks()));
        let (c0, m0, s0) = (cpu_seconds(bare.pid())?, cpu_seconds(me)?, cpu_ticks());
        let (b, tb) = drive(opts.threads, opts.seconds, &devices, bare_of);
        let (cb, mb, (ib, sb)) =
            (cpu_seconds(bare.pid())? - c0, cpu_seconds(me)? - m0, idle_stolen(s0, cpu_ticks()));
        client_ours += mo;
        client_bare += mb;
        steal_ours += so;
        steal_bare += sb;
        idle_ours += io;
        idle_bare += ib;
        println!(
            "round {round}: ours {:.0} sessions/s ({} ok, {} errors, server CPU {:.2} s/s, {so:.0} % stolen, {io:.0} % idle), \
             bare {:.0} handshakes/s ({} ok, {} errors, server CPU {:.2} s/s, {sb:.0} % stolen, {ib:.0} % idle), ratio {:.2}, \
             load before {load}",
            per_s(&o, to),
            o.ok,
            o.errors_total(),
            co / to.as_secs_f64(),
            per_s(&b, tb),
            b.ok,
            b.errors_total(),
            cb / tb.as_secs_f64(),
            per_s(&o, to) / per_s(&b, tb),
        );
        print_errors("ours", &o);
        print_errors("bare", &b);
        all_ours.merge(o);
        all_bare.merge(b);
        t_ours += to;
        t_bare += tb;
        cpu_ours += co;
        cpu_bare += cb;
    }
    let stats = ours.stats()?;
    let stored = stats.get("stored").copied().unwrap_or(0) - stored_before;
    println!("service counters: {stats:?}");
    let expected = all_ours.ok * opts.records as u64;
    if stored < expected {
        return Err(format!("the service stored {stored} records, expected at least {expected}").into());
    }
    ours.stop()?;
    bare.stop()?;

    let ours_rate = per_s(&all_ours, t_ours);
    let bare_rate = per_s(&all_bare, t_bare);
    let share = ours_rate / bare_rate;
    let (p50, p99) = (all_ours.percentile_ms(0.5), all_ours.percentile_ms(0.99));
    let (bp50, bp99) = (all_bare.percentile_ms(0.5), all_bare.percentile_ms(0.99));
    ratio("sessions_per_s", ours_rate, 500.0, true, "sessions/s");
    ratio("share_of_bare_handshakes", share, 0.5, true, "x");
    summary.push(("client threads, devices".into(), format!("{}, {}", opts.threads, opts.devices)));
    summary.push((
        "event ids (`--ids`)".into(),
        if opts.scattered { "scattered, as an agent's" } else { "rising with each session" }.into(),
    ));
    summary.push((
        format!("agent sessions/s (handshake, hello, {} records, ack)", opts.records),
        format!(
            "{ours_rate:.0} ({} sessions in {:.1} s, {} errors)",
            all_ours.ok,
            t_ours.as_secs_f64(),
            all_ours.errors_total()
        ),
    ));
    summary.push(("session latency p50 / p99".into(), format!("{p50:.2} / {p99:.2} ms")));
    summary.push((
        "session p50: to the Welcome / to the Ack".into(),
        format!("{:.2} / {:.2} ms", all_ours.mark_ms(0, 0.5), all_ours.mark_ms(1, 0.5)),
    ));
    summary.push((
        "bare rustls mTLS handshakes/s".into(),
        format!(
            "{bare_rate:.0} ({} in {:.1} s, {} errors)",
            all_bare.ok,
            t_bare.as_secs_f64(),
            all_bare.errors_total()
        ),
    ));
    summary.push(("bare handshake latency p50 / p99".into(), format!("{bp50:.2} / {bp99:.2} ms")));
    summary.push((
        "bare p50: client handshake done / server's close".into(),
        format!("{:.2} / {:.2} ms", all_bare.mark_ms(0, 0.5), all_bare.mark_ms(1, 0.5)),
    ));
    summary.push(("ours / bare".into(), format!("{share:.2}")));
    summary.push((
        "server CPU per session: ours / bare".into(),
        format!(
            "{:.2} / {:.2} ms",
            cpu_ours * 1000.0 / all_ours.ok.max(1) as f64,
            cpu_bare * 1000.0 / all_bare.ok.max(1) as f64
        ),
    ));
    summary.push((
        "load generator CPU per session: ours / bare".into(),
        format!(
            "{:.2} / {:.2} ms",
            client_ours * 1000.0 / all_ours.ok.max(1) as f64,
            client_bare * 1000.0 / all_bare.ok.max(1) as f64
        ),
    ));
    // Both processes' CPU time a session: what the rate ratio would be if
    // both sides were bound by the machine's CPU alone (time the
    // hypervisor stole, or cores left idle, move the rates but not this).
    let machine_ours = (cpu_ours + client_ours) * 1000.0 / all_ours.ok.max(1) as f64;
    let machine_bare = (cpu_bare + client_bare) * 1000.0 / all_bare.ok.max(1) as f64;
    summary.push((
        "server + load generator CPU per session: ours / bare (bare / ours)".into(),
        format!(
            "{machine_ours:.2} / {machine_bare:.2} ms ({:.2})",
            machine_bare / machine_ours.max(f64::MIN_POSITIVE)
        ),
    ));
    let rounds = opts.rounds.max(1) as f64;
    for (what, ours_sum, bare_sum) in
        [("stolen by the hypervisor", steal_ours, steal_bare), ("idle", idle_ours, idle_bare)]
    {
        summary.push((
            format!("machine's CPU time {what}: ours / bare (mean of the rounds)"),
            format!("{:.1} / {:.1} %", ours_sum / rounds, bare_sum / rounds),
        ));
    }
    summary.push(("records stored by the service".into(), stored.to_string()));
    Ok(())
}

fn idle(opts: &Options, summary: &mut Vec<(String, String)>) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start("serve", dir.path(), &serve_args(opts))?;
    let pid = server.pid();
    let devices = load_devices(dir.path(), opts.devices)?;
    std::thread::sleep(Duration::from_secs(1));
    let before = mem(pid)?;
    println!(
        "idle: service pid {pid}, {} MiB resident with no connection ({} threads), load {}",
        before.rss_kib / 1024,
        before.threads,
        loadavg()
    );
    let n = opts.idle;
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let (held, tally) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.threads)
            .map(|_| {
                let (devices, next, addr) = (&devices, &next, server.addr);
                s.spawn(move || {
                    let mut held = Vec::new();
                    let mut tally = Tally::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= n {
                            break;
                        }
                        let device = &devices[i % devices.len()];
                        let t = Instant::now();
                        let opened: Res<_> = (|| {
                            let stream =
                                privtel::wire::tls::connect(addr, "127.0.0.1", Arc::clone(&device.ours))?;
                            let mut conn = Connection::new(stream);
                            conn.client_handshake(&device.hello)?;
                            Ok(conn)
                        })();
                        match opened {
                            Ok(conn) => {
                                tally.ok += 1;
                                tally
                                    .latencies_us
                                    .push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                                held.push(conn);
                            }
                            Err(e) => tally.error(e.as_ref()),
                        }
                    }
                    (held, tally)
                })
            })
            .collect();
        let mut held = Vec::new();
        let mut tally = Tally::default();
        for h in handles {
            let (h, t) = h.join().expect("client thread");
            held.extend(h);
            tally.merge(t);
        }
        (held, tally)
    });
    let opening = started.elapsed();
    println!(
        "idle: {} connections authenticated in {:.1} s ({} errors)",
        held.len(),
        opening.as_secs_f64(),
        tally.errors_total()
    );
    print_errors("idle", &tally);
    // Settle, then hold and sample.
    std::thread::sleep(Duration::from_secs(2));
    let stats = server.stats()?;
    let active = stats.get("active").copied().unwrap_or(0);
    let c0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut peak = mem(pid)?;
    while t0.elapsed() < Duration::from_secs_f64(opts.hold) {
        std::thread::sleep(Duration::from_millis(500));
        let m = mem(pid)?;
        if m.rss_kib > peak.rss_kib {
            peak = m;
        }
    }
    let cpu_idle = (cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64();
    let held_mem = mem(pid)?;
    let still = server.stats()?.get("active").copied().unwrap_or(0);
    let own = mem(std::process::id())?;
    let count = held.len();
    drop(held);
    std::thread::sleep(Duration::from_secs(3));
    let after = mem(pid)?;
    let after_stats = server.stats()?;
    server.stop()?;

    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "idle: held {count}, service active {active} then {still} after {:.0} s; RSS {:.1} MiB (peak sample {:.1}, \
         VmHWM {:.1}), {} threads; service CPU while idle {:.3} s/s; after closing: RSS {:.1} MiB, active {}; \
         load generator RSS {:.1} MiB",
        opts.hold,
        mib(held_mem.rss_kib),
        mib(peak.rss_kib),
        mib(held_mem.hwm_kib),
        held_mem.threads,
        cpu_idle,
        mib(after.rss_kib),
        after_stats.get("active").copied().unwrap_or(0),
        mib(own.rss_kib),
    );
    if still < n as u64 {
        println!("idle: WARNING the service held {still} of {n} connections");
    }
    let per_conn = (held_mem.rss_kib.saturating_sub(before.rss_kib)) as f64 / count.max(1) as f64;
    ratio("idle_rss", mib(held_mem.hwm_kib.max(held_mem.rss_kib)), 1024.0, false, "MiB");
    summary.push((
        format!("service RSS, 0 / {count} idle authenticated connections"),
        format!(
            "{:.1} / {:.1} MiB (VmHWM {:.1} MiB)",
            mib(before.rss_kib),
            mib(held_mem.rss_kib),
            mib(held_mem.hwm_kib)
        ),
    ));
    summary.push(("RSS per idle connection".into(), format!("{per_conn:.1} KiB")));
    summary.push(("service threads with them held".into(), held_mem.threads.to_string()));
    summary.push(("service CPU while they idle".into(), format!("{:.1} % of a core", cpu_idle * 100.0)));
    summary.push((
        format!("opening {count}: handshake + hello"),
        format!(
            "{:.1} s, {} errors, {} still held after {:.0} s",
            opening.as_secs_f64(),
            tally.errors_total(),
            still,
            opts.hold
        ),
    ));
    Ok(())
}

/// The engine alone: the sessions' records in batches of 1, 100 and 1,000,
/// one transaction each (as the service ingests a batch).
/// `--only pipeline` (a diagnostic, not a goal): the service's side of a
/// session without TLS, in this process: `--threads` threads each run
/// [`Service::handle`] on a hello, a batch of the session's records and a
/// goodbye, encoded beforehand as an agent would send them (over an
/// in-memory stream), through the real admission, encoding and group
/// commit, for `--seconds`. Gives sessions/s and this process's CPU time a
/// session, of which encoding the client's bytes is measured apart.
fn pipeline(opts: &Options, summary: &mut Vec<(String, String)>) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default())?;
    let settings = Settings::from_toml(&settings_toml(opts.records_per_second))?;
    let policy_hash = settings.customer(&acme()).ok_or("acme has no settings")?.policy_digest();
    let template = template(&settings, opts.records)?;
    let mut limits = Limits::default();
    limits.max_connections = 20_000;
    let service =
        Service::new(engine, VerdictIndex::new(4, [1; 32]), wall).with_settings(settings).with_limits(limits);
    let consent: Vec<(Program, bool)> = Program::ALL.iter().map(|p| (*p, true)).collect();
    let stop = AtomicBool::new(false);
    let sessions = AtomicU64::new(0);
    let client_ns = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let work = Work {
        addr: "127.0.0.1:1".parse()?,
        template,
        policy_hash,
        salt: 7 << 100,
        next_session: AtomicU64::new(0),
        scattered: opts.scattered,
    };
    let per_thread = (opts.devices / opts.threads).max(1);
    let (elapsed, cpu) = std::thread::scope(|s| -> Res<(Duration, f64)> {
        for t in 0..opts.threads {
            let (service, work, stop, sessions, client_ns, errors, consent) =
                (&service, &work, &stop, &sessions, &client_ns, &errors, &consent);
            s.spawn(move || {
                let devices: Vec<Device> = (0..per_thread)
                    .map(|k| {
                        let id = device_id(t * per_thread + k);
                        let hello =
                            Hello::new("bench", acme(), id.clone(), consent.clone(), 1).with_stream(STREAM);
                        Device {
                            id,
                            ours: Arc::new(
                                rustls::ClientConfig::builder()
                                    .with_root_certificates(rustls::RootCertStore::empty())
                                    .with_no_client_auth(),
                            ),
                            bare: None,
                            hello,
                            batch: std::sync::Mutex::new(None),
                        }
                    })
                    .collect();
                let mut seqs = vec![1u64; devices.len()];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && (opts.sessions == 0 || i < opts.sessions) {
                    let k = i % devices.len();
                    i += 1;
                    let device = &devices[k];
                    let t0 = Instant::now();
                    let mut slot = device.batch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let mut batch = next_batch(work, device, &mut slot);
                    batch.first_seq = seqs[k];
                    let mut client =
                        Connection::new(privtel::service::Duplex::new(std::io::empty(), Vec::new()));
                    let message = Message::Batch(batch);
                    let sent = client
                        .send(&Message::Hello(device.hello.clone()))
                        .and_then(|()| client.send(&message))
                        .and_then(|()| client.send(&Message::Goodbye(Goodbye { reason: "done".into() })));
                    if let Message::Batch(batch) = message {
                        *slot = Some(batch);
                    }
                    drop(slot);
                    let bytes = client.into_inner();
                    client_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    let Ok(()) = sent else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let (_, bytes) = bytes.into_parts();
                    let stream = privtel::service::Duplex::new(std::io::Cursor::new(bytes), std::io::sink());
                    match service.handle(
                        Connection::new(stream),
                        privtel::service::Peer::device(acme(), device.id.clone()),
                    ) {
                        Ok(()) => {
                            seqs[k] += work.template.len() as u64;
                            sessions.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        if opts.sessions > 0 {
            // A fixed number: the threads run it to its end.
            return Ok((Duration::ZERO, 0.0));
        }
        std::thread::sleep(Duration::from_secs_f64(opts.warmup));
        let (n0, c0, cpu0) = (
            sessions.load(Ordering::Relaxed),
            client_ns.load(Ordering::Relaxed),
            cpu_seconds(std::process::id())?,
        );
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(opts.seconds));
        let elapsed = start.elapsed();
        let cpu = cpu_seconds(std::process::id())? - cpu0;
        let n = sessions.load(Ordering::Relaxed) - n0;
        let client = (client_ns.load(Ordering::Relaxed) - c0) as f64 / 1e9;
        stop.store(true, Ordering::Relaxed);
        sessions.store(n, Ordering::Relaxed);
        client_ns.store((client * 1e9) as u64, Ordering::Relaxed);
        Ok((elapsed, cpu))
    })?;
    if opts.sessions > 0 {
        let line = format!(
            "{} sessions of {} records run, {} errors (a fixed count, to count instructions: no rates)",
            sessions.load(Ordering::Relaxed),
            work.template.len(),
            errors.load(Ordering::Relaxed)
        );
        println!("pipeline: {line}");
        summary.push(("the service's side of sessions without TLS, in process".into(), line));
        return Ok(());
    }
    let n = sessions.load(Ordering::Relaxed).max(1) as f64;
    let client = client_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let line = format!(
        "{:.0} sessions/s, {:.3} ms of CPU a session (of which the client's encoding at most {:.3} ms), {} errors",
        n / elapsed.as_secs_f64(),
        cpu * 1e3 / n,
        client * 1e3 / n,
        errors.load(Ordering::Relaxed)
    );
    println!("pipeline: {line}");
    summary.push(("the service's side of a session without TLS, in process".into(), line));
    Ok(())
}

fn ingest(opts: &Options, summary: &mut Vec<(String, String)>) -> Res<()> {
    use privtel::store::EngineStore as _;
    let dir = tempfile::tempdir()?;
    let mut engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default())?;
    let settings = Settings::from_toml(&settings_toml(0))?;
    let template = template(&settings, 1_000)?;
    let device = device_id(0);
    let mut next_id: u128 = 1;
    let mut seq = 1;
    for size in [1, 100, 1_000] {
        let start = Instant::now();
        let mut batches = 0u64;
        while start.elapsed().as_secs_f64() < opts.seconds {
            let records: Vec<Record> = template[..size]
                .iter()
                .map(|r| {
                    next_id += 1;
                    stamped(r, &device, ingest_id(opts, next_id - 1))
                })
                .collect();
            let outcome = engine.ingest(&acme(), &device, STREAM, seq, records, wall())?;
            if outcome.stored != size as u64 {
                return Err(format!("ingest stored {} of {size}", outcome.stored).into());
            }
            seq += size as u64;
            batches += 1;
        }
        let per_batch = start.elapsed().as_secs_f64() / batches as f64;
        println!(
            "ingest: batches of {size}: {:.3} ms a batch, {:.0} records/s ({batches} batches)",
            per_batch * 1000.0,
            size as f64 / per_batch
        );
        summary.push((
            format!("engine ingest, batches of {size}, one transaction each"),
            format!("{:.3} ms a batch, {:.0} records/s", per_batch * 1000.0, size as f64 / per_batch),
        ));
    }
    // The service's writer: groups of 16 batches of 100 from 16 devices,
    // encoded beforehand (as connection threads do), then written one
    // group after another: wall time and this process's CPU time of the
    // writing alone (nothing else runs in it then).
    let encoder = engine.encoder();
    let mut seqs = [1u64; 16];
    let groups = ((opts.seconds * 40.0) as usize).max(1);
    let encoded: Vec<Vec<_>> = (0..groups)
        .map(|_| {
            (0..16)
                .map(|d| {
                    let device = device_id(d + 1);
                    let records = template[..100]
                        .iter()
                        .map(|r| {
                            next_id += 1;
                            Some(stamped(r, &device, ingest_id(opts, next_id - 1)))
                        })
                        .collect();
                    let seq = privtel::store::Sequence { stream: STREAM, first_seq: seqs[d], skipped: 0 };
                    seqs[d] += 100;
                    encoder.encode(
                        privtel::store::AdmittedBatch { customer: acme(), device, seq, records },
                        wall(),
                    )
                })
                .collect()
        })
        .collect();
    let (start, cpu) = (Instant::now(), cpu_seconds(std::process::id())?);
    for batches in encoded {
        for o in engine.ingest_encoded(batches, wall()) {
            if o?.stored != 100 {
                return Err("a group's batch was not stored whole".into());
            }
        }
    }
    let (writing, cpu) = (start.elapsed(), cpu_seconds(std::process::id())? - cpu);
    let records = (groups * 1_600) as f64;
    let per_record_us = writing.as_secs_f64() * 1e6 / records;
    let cpu_per_record_us = cpu * 1e6 / records;
    println!(
        "ingest: writer, groups of 16 x 100: {:.2} ms a group, {per_record_us:.2} us a record, \
         {cpu_per_record_us:.2} us of CPU a record ({groups} groups)",
        writing.as_secs_f64() * 1000.0 / groups as f64
    );
    summary.push((
        "engine writer, groups of 16 batches of 100, encoded beforehand".into(),
        format!(
            "{per_record_us:.2} us a record ({cpu_per_record_us:.2} us of CPU), {:.0} records/s",
            1e6 / per_record_us
        ),
    ));
    Ok(())
}

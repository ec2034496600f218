//! Helpers of the scale-out tests: a database and a stream of their own
//! for each test (dropped when the guard goes, also when the test panics),
//! records, and a NATS server of the test's own for restart tests.

use std::hash::{BuildHasher as _, RandomState};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use privtel_engine_pg::{PgEngine, PgOptions};
use privtel_model::{
    CustomerId, DeviceId, Event, EventBody, EventId, FeatureUsage, Program, Record, RecordBody, Timestamp,
    UserId,
};
use privtel_service::jetstream::JetStreamOptions;
use privtel_store::{AdmittedBatch, Sequence};

/// The PostgreSQL server from `PRIVTEL_PG_URL`.
pub fn pg_url() -> String {
    std::env::var("PRIVTEL_PG_URL")
        .expect("set PRIVTEL_PG_URL (postgres://user@host:port/db) to run this test")
}

/// The NATS server from `PRIVTEL_NATS_URL`.
pub fn nats_url() -> String {
    std::env::var("PRIVTEL_NATS_URL").expect("set PRIVTEL_NATS_URL (nats://host:port) to run this test")
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name nobody else uses (process id, a counter, randomness).
pub fn unique(prefix: &str) -> String {
    let n = RandomState::new().hash_one((std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    format!("{prefix}{n:016x}")
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let q = if query.is_empty() { String::new() } else { format!("?{query}") };
    format!("{}/{db}{q}", &base[..path])
}

/// A database that exists while this guard lives.
pub struct TestDb {
    server: String,
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl TestDb {
    /// Creates one on `PRIVTEL_PG_URL`'s server.
    pub fn new() -> Self {
        let server = pg_url();
        let name = unique("privtel_scale_");
        let mut admin =
            postgres::Client::connect(&server, postgres::NoTls).expect("connect to PRIVTEL_PG_URL");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        let url = with_database(&server, &name);
        Self { server, name, url }
    }

    /// An engine on it.
    pub fn engine(&self) -> PgEngine {
        PgEngine::connect(&self.url, PgOptions::default()).expect("open the engine")
    }

    /// Rows in its records table, and distinct (device, event id) among them.
    pub fn rows(&self) -> (i64, i64) {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("connect");
        let row = c
            .query_one("SELECT count(*), count(DISTINCT (device, event_id)) FROM records", &[])
            .expect("count the records");
        (row.get(0), row.get(1))
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// Stream, subjects and consumer of the test's own, on `url`.
pub fn stream_options(url: &str) -> JetStreamOptions {
    let id = unique("");
    JetStreamOptions::new(url).names(format!("T{id}"), format!("t{id}"), "w")
}

/// Deletes a test's stream (with its consumer) when dropped.
pub struct StreamGuard {
    /// The options naming it.
    pub options: JetStreamOptions,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        delete_stream(&self.options);
    }
}

/// Deletes the stream named in `options` (best effort).
pub fn delete_stream(options: &JetStreamOptions) {
    if let Ok(p) = privtel_service::jetstream::Publisher::connect(options.clone()) {
        let _ = p.delete_stream();
    }
}

/// An event of `device` numbered `i` (its id too), recorded at `at`.
pub fn event(device: &str, i: u64, at: Timestamp) -> Record {
    Record {
        program: Program::AnonymousUsage,
        body: RecordBody::Event(Event {
            id: EventId::from_u128(u128::from(i) | (u128::from(device.len() as u64) << 100)),
            device: DeviceId::new(device).expect("valid"),
            user: Some(UserId::new(format!("u-{}", i % 50)).expect("valid")),
            recorded_at: at,
            body: EventBody::FeatureUsage(FeatureUsage {
                product: "agent".into(),
                feature: format!("f{}", i % 40),
                count: 1,
            }),
        }),
    }
}

/// Batch `k` (from 0) of `per` records of `device`'s stream 7.
pub fn batch(customer: &str, device: &str, k: u64, per: u64, at: Timestamp) -> AdmittedBatch {
    let first = k * per + 1;
    AdmittedBatch {
        customer: CustomerId::new(customer).expect("valid"),
        device: DeviceId::new(device).expect("valid"),
        seq: Sequence { stream: 7, first_seq: first, skipped: 0 },
        records: (first..first + per).map(|i| Some(event(device, i, at))).collect(),
    }
}

/// Now, to the second.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Polls `f` every 50 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A NATS server of this test's own (the `nats-server` on PATH, or
/// `PRIVTEL_NATS_SERVER`), with JetStream in a folder of its own, so it
/// can be killed and started again.
pub struct OwnNats {
    child: Option<Child>,
    port: u16,
    /// Where it keeps its streams.
    pub dir: tempfile::TempDir,
}

impl OwnNats {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut nats = Self { child: None, port, dir: tempfile::tempdir().unwrap() };
        nats.restart();
        nats
    }

    /// Its address.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and folder.
    pub fn restart(&mut self) {
        let bin = std::env::var("PRIVTEL_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (set PRIVTEL_NATS_SERVER): {e}"));
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", self.port))
                .is_ok()),
            "nats-server did not start"
        );
    }

    /// SIGKILL: whatever it had not written is lost, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every file under `dir`, at any depth (for raw scans of a server's store).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

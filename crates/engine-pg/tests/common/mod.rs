//! A database of its own for each test, made from `PRIVTEL_PG_URL` and
//! dropped when the guard goes (also when the test panics).

#![allow(dead_code)] // each test file uses part of it

use std::hash::{BuildHasher as _, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use privtel_engine_pg::{PgEngine, PgOptions};

/// The server's URL from the environment.
pub(crate) fn server_url() -> String {
    std::env::var("PRIVTEL_PG_URL")
        .expect("set PRIVTEL_PG_URL (postgres://user@host:port/db) to run this test")
}

/// `url` with its database name replaced by `db`.
pub(crate) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let q = if query.is_empty() { String::new() } else { format!("?{query}") };
    format!("{}/{db}{q}", &base[..path])
}

/// A database that exists while this guard lives.
pub(crate) struct TestDb {
    server: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    pub(crate) fn new() -> Self {
        let server = server_url();
        let n = RandomState::new().hash_one((std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let name = format!("privtel_test_{n:016x}");
        let mut admin =
            postgres::Client::connect(&server, postgres::NoTls).expect("connect to PRIVTEL_PG_URL");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        let url = with_database(&server, &name);
        Self { server, name, url }
    }

    pub(crate) fn engine(&self, options: PgOptions) -> PgEngine {
        PgEngine::connect(&self.url, options).expect("open the engine")
    }

    /// A plain client on the test database.
    pub(crate) fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

#[test]
fn urls_get_the_database_replaced() {
    assert_eq!(with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
    assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
}

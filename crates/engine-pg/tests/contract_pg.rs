//! The engine contract suite (privtel-testkit) on PostgreSQL: each test on
//! a database of its own, dropped at the end.

mod common;

use common::TestDb;
use privtel_engine_pg::{PgEngine, PgOptions};
use privtel_store::RetentionPolicy;
use privtel_testkit::engine_contract::Harness;

/// Makes the engines of the contract suite; holds the test's databases.
#[derive(Default)]
struct Pg {
    dbs: Vec<TestDb>,
}

impl Harness for Pg {
    type Engine = PgEngine;

    fn fresh(&mut self, retention: RetentionPolicy) -> PgEngine {
        let db = TestDb::new();
        let engine = db.engine(PgOptions::default().retention(retention));
        self.dbs.push(db);
        engine
    }

    fn again(&mut self) -> PgEngine {
        self.dbs.last().expect("fresh first").engine(PgOptions::default())
    }
}

privtel_testkit::engine_contract_tests!(Pg::default(); #[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]);

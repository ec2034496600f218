//! The engine contract suite (privtel-testkit) on the SQLite engine: the
//! reference the PostgreSQL engine is held to.

use privtel_store::{EngineOptions, RetentionPolicy, SqliteEngine};
use privtel_testkit::engine_contract::Harness;

/// Makes the engines of the contract suite; holds the test's folders.
#[derive(Default)]
struct Sqlite {
    dirs: Vec<tempfile::TempDir>,
}

impl Harness for Sqlite {
    type Engine = SqliteEngine;

    fn fresh(&mut self, retention: RetentionPolicy) -> SqliteEngine {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine =
            SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default().retention(retention))
                .expect("open");
        self.dirs.push(dir);
        engine
    }

    fn again(&mut self) -> SqliteEngine {
        let dir = self.dirs.last().expect("fresh first");
        SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).expect("open")
    }
}

privtel_testkit::engine_contract_tests!(Sqlite::default());

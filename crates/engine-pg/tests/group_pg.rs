//! Group commit on PostgreSQL: a batch that fails while it is written is
//! left out and the rest of its group commits; nothing of the failed batch
//! stays (no customer, no mark, no key).

mod common;

use common::TestDb;
use privtel_engine_pg::PgOptions;
use privtel_store::{CustomerId, DeviceId, EngineStore, Error, UserId};
use privtel_testkit::engine_contract::{batch, event_at, fixtures_at};
use privtel_testkit::fixtures;

fn cid(name: &str) -> CustomerId {
    CustomerId::new(name).unwrap()
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn a_batch_that_fails_while_writing_is_left_out_and_the_rest_of_its_group_commits() {
    let db = TestDb::new();
    let mut engine = db.engine(PgOptions::default());
    let now = fixtures::base_time();
    // A write that fails for one device only, after the batch's checks.
    db.client()
        .batch_execute(
            "CREATE FUNCTION fail_bad() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF (SELECT device FROM devices WHERE id = NEW.device) = 'dev-bad' THEN
                     RAISE EXCEPTION 'the disk said no';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE TRIGGER fail_bad AFTER INSERT ON records FOR EACH ROW EXECUTE FUNCTION fail_bad();",
        )
        .unwrap();
    let n = fixtures_at(0).len() as u64;
    let outcomes = engine.ingest_group(
        vec![
            batch(cid("acme"), "dev-a", 1, fixtures_at(0)),
            batch(cid("globex"), "dev-bad", 1, fixtures_at(1_000)),
            batch(cid("acme"), "dev-c", 1, fixtures_at(2_000)),
            batch(cid("acme"), "dev-a", n + 1, vec![event_at(900_001, now)]),
        ],
        now,
    );
    let stored: Vec<Option<u64>> = outcomes.iter().map(|o| o.as_ref().ok().map(|o| o.stored)).collect();
    assert_eq!(stored, vec![Some(n), None, Some(n), Some(1)]);
    let err = outcomes[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err}");
    assert!(err.to_string().contains("the disk said no"), "{err}");
    assert_eq!(engine.record_count().unwrap(), 2 * n + 1);
    assert_eq!(engine.customers().unwrap(), vec![cid("acme")], "nothing of the failed batch");
    let globex = cid("globex");
    assert_eq!(engine.high_water(&globex, &DeviceId::new("dev-bad").unwrap(), 7).unwrap(), 0);
    // The failed attempt's keys were never cached: the next batch of that
    // customer makes and stores its own, and its records open.
    let next = engine.ingest_group(vec![batch(cid("globex"), "dev-ok", 1, fixtures_at(3_000))], now);
    assert_eq!(next[0].as_ref().unwrap().stored, n);
    let mut out = Vec::new();
    assert!(engine.export_person(&globex, &UserId::new("u-1042").unwrap(), &mut out).unwrap() > 0);
}

//! Row formats on PostgreSQL: new rows are format 3 (JSON compressed with
//! the `records-1` dictionary); rows of format 2 (JSON, as versions before
//! schema 3 wrote) still read, export and erase beside them.

mod common;

use common::TestDb;
use privtel_engine_pg::PgOptions;
use privtel_store::parts::Format;
use privtel_store::{CustomerId, DeviceId, EngineStore, ErasureRequest, UserId};
use privtel_testkit::engine_contract::records_of;
use privtel_testkit::fixtures;

fn formats(db: &TestDb) -> Vec<(i16, i64)> {
    db.client()
        .query("SELECT format, count(*) FROM records GROUP BY format ORDER BY format", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn export(engine: &impl EngineStore, user: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    engine.export_person(&CustomerId::new("acme").unwrap(), &UserId::new(user).unwrap(), &mut out).unwrap();
    let mut lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for l in &mut lines {
        // What was stored, not where or when.
        if let Some(o) = l.as_object_mut() {
            o.retain(|k, _| k == "record");
        }
    }
    lines.sort_by_key(|v| v.to_string());
    lines
}

#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn rows_of_both_formats_read_export_and_erase() {
    let db = TestDb::new();
    let acme = CustomerId::new("acme").unwrap();
    let now = fixtures::base_time();
    let mut old = db.engine(PgOptions::default().row_format(Format::Json));
    let n = records_of("u-mixed", "old", 0).len() as u64;
    let out =
        old.ingest(&acme, &DeviceId::new("dev-old").unwrap(), 7, 1, records_of("u-mixed", "old", 0), now);
    assert_eq!(out.unwrap().stored, n);
    assert_eq!(formats(&db), vec![(2, n as i64)]);
    // The person's records among them (the others name nobody).
    let theirs = export(&old, "u-mixed").len();
    assert!(theirs >= 10, "{theirs}");
    let mut new = db.engine(PgOptions::default());
    let out =
        new.ingest(&acme, &DeviceId::new("dev-new").unwrap(), 7, 1, records_of("u-mixed", "new", 900), now);
    assert_eq!(out.unwrap().stored, n);
    assert_eq!(formats(&db), vec![(2, n as i64), (3, n as i64)]);

    // Each engine reads both formats, the same records.
    let seen = export(&new, "u-mixed");
    assert_eq!(seen.len(), 2 * theirs);
    assert_eq!(export(&old, "u-mixed"), seen);
    let text = serde_json::to_string(&seen).unwrap();
    assert!(text.contains("-old") && text.contains("-new"), "records of both writers");

    // Compressed rows are smaller than JSON ones of the same records.
    let sizes: Vec<(i16, i64)> = db
        .client()
        .query(
            "SELECT format, sum(length(payload))::bigint FROM records GROUP BY format ORDER BY format",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(sizes[1].1 * 2 < sizes[0].1, "{sizes:?}");

    let receipt =
        new.erase_person(&acme, &ErasureRequest::new("r1", UserId::new("u-mixed").unwrap(), now), now);
    assert_eq!(receipt.unwrap().records_removed, 2 * theirs as u64);
    assert!(export(&old, "u-mixed").is_empty());
}

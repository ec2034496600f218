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

/// A writer hands the engine each record with the JSON it decoded the
/// record from: the rows hold those bytes (compressed for format 3), and
/// read, export and erase as rows the engine encoded itself. JSON above
/// the size limit, or a list of another length than the records, refuses
/// its batch, nothing of it stored.
#[test]
#[ignore = "needs PostgreSQL: set PRIVTEL_PG_URL"]
fn records_given_with_their_json_store_the_same() {
    use privtel_store::parts::encode;
    use privtel_store::{AdmittedBatch, JsonBatch, MAX_RECORD_BYTES, Sequence};

    let db = TestDb::new();
    let acme = CustomerId::new("acme").unwrap();
    let now = fixtures::base_time();
    for (format, tag) in [(Format::Json, "f2"), (Format::JsonZstd, "f3")] {
        let mut engine = db.engine(PgOptions::default().row_format(format));
        let user = format!("u-{tag}");
        let batch = |device: &str, ids: u128| AdmittedBatch {
            customer: acme.clone(),
            device: DeviceId::new(device).unwrap(),
            seq: Sequence { stream: 7, first_seq: 1, skipped: 0 },
            records: records_of(&user, tag, ids).into_iter().map(Some).collect(),
        };
        let plain = batch(&format!("dev-{tag}-plain"), 0);
        let n = plain.records.len() as u64;
        let given = batch(&format!("dev-{tag}-json"), 0);
        // Spaced out, so the rows show which bytes they hold.
        let json =
            given.records.iter().map(|r| r.as_ref().map(|r| serde_json::to_vec_pretty(r).unwrap())).collect();
        let outcomes = engine.ingest_group_json(
            vec![
                JsonBatch { batch: plain, json: Vec::new(), received: None },
                JsonBatch { batch: given, json, received: None },
            ],
            now,
        );
        for o in outcomes {
            assert_eq!(o.unwrap().stored, n);
        }
        let bytes = |device: String| -> i64 {
            db.client()
                .query_one(
                    "SELECT sum(length(r.payload))::bigint FROM records r JOIN devices d ON d.id = r.device
                     WHERE d.device = $1 AND r.format = $2",
                    &[&device, &(format.code() as i16)],
                )
                .unwrap()
                .get(0)
        };
        let (plain_bytes, given_bytes) =
            (bytes(format!("dev-{tag}-plain")), bytes(format!("dev-{tag}-json")));
        assert!(given_bytes > plain_bytes, "{given_bytes} vs {plain_bytes}: the given bytes are stored");
        // Both devices' rows export the same records.
        let exported = export(&engine, &user);
        assert_eq!(exported.len() % 2, 0);
        let (a, b): (Vec<_>, Vec<_>) = exported.chunks(2).map(|p| (p[0].clone(), p[1].clone())).unzip();
        assert_eq!(a, b, "each record twice, once from each device");

        // JSON above the limit: the batch is refused, nothing stored.
        let mut big = batch(&format!("dev-{tag}-big"), 5000);
        big.records.truncate(2);
        // The second record's JSON spaced out beyond the limit.
        let mut huge = encode(big.records[1].as_ref().unwrap()).unwrap();
        huge.resize(MAX_RECORD_BYTES + 1, b' ');
        let json = vec![Some(encode(big.records[0].as_ref().unwrap()).unwrap()), Some(huge)];
        let out =
            engine.ingest_group_json(vec![JsonBatch { batch: big, json, received: None }], now).remove(0);
        assert!(matches!(out, Err(privtel_store::Error::Encode(_))), "{out:?}");
        let big_rows: i64 = db
            .client()
            .query_one(
                "SELECT count(*) FROM records r JOIN devices d ON d.id = r.device WHERE d.device = $1",
                &[&format!("dev-{tag}-big")],
            )
            .unwrap()
            .get(0);
        assert_eq!(big_rows, 0);

        // A list of another length than the records: refused, never
        // matched up by position.
        let short = batch(&format!("dev-{tag}-short"), 6000);
        let json = short.records.iter().skip(1).map(|r| r.as_ref().map(|r| encode(r).unwrap())).collect();
        let out =
            engine.ingest_group_json(vec![JsonBatch { batch: short, json, received: None }], now).remove(0);
        assert!(
            matches!(&out, Err(privtel_store::Error::Encode(e)) if e.contains("one per record")),
            "{out:?}"
        );

        // Erasure finds the person's rows from both devices.
        let receipt = engine
            .erase_person(
                &acme,
                &ErasureRequest::new(format!("r-{tag}"), UserId::new(&user).unwrap(), now),
                now,
            )
            .unwrap();
        assert_eq!(receipt.records_removed, exported.len() as u64);
        assert!(export(&engine, &user).is_empty());
    }
}

//! A service whose records live in another engine
//! (`Service::with_records_engine`; here a second SQLite store, so no
//! server is needed): the customer copy covers both stores, and a slow
//! reader of an export holds up nothing.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use privtel_access::{
    AccessControl, AccessOptions, Action, GrantId, GrantRequest, Operator, Scope, SigningKey,
};
use privtel_service::{Service, Settings, SharedRecords};
use privtel_store::{
    AdmittedBatch, CustomerId, DeviceId, EngineOptions, EngineStore, Sequence, SqliteEngine, UserId,
};
use privtel_wire::VerdictIndex;

use crate::{SETTINGS, id, now};

fn store(engine: &mut SqliteEngine) -> u64 {
    let batch = AdmittedBatch {
        customer: id("acme"),
        device: DeviceId::new("dev-0001").unwrap(),
        seq: Sequence { stream: 1, first_seq: 1, skipped: 0 },
        records: privtel_testkit::fixtures::records("t").into_iter().map(Some).collect(),
    };
    engine.ingest_group(vec![batch], now()).remove(0).unwrap().stored
}

fn grant(access: &AccessControl, scope: &[Action]) -> GrantId {
    let request = GrantRequest {
        operator: Operator::new("ops.jdoe").unwrap(),
        customer: id("acme"),
        justification: "the customer asked".into(),
        ticket: "R-1".into(),
        scope: Scope::of(scope),
        starts: now(),
        expires: now().checked_add(privtel_model::Duration::hours(2)).unwrap(),
    };
    access.grant(request, now()).unwrap().id
}

/// (service, access, records in the service's own store, in the records engine)
fn setup(dir: &std::path::Path) -> (Arc<Service>, Arc<AccessControl>, u64, u64) {
    let options = EngineOptions::default().secret([5; 32]);
    let mut own = SqliteEngine::open(dir.join("own.db"), options.clone()).unwrap();
    let path = dir.join("records.db");
    let mut elsewhere = SqliteEngine::open(&path, options.clone()).unwrap();
    let in_own = store(&mut own);
    let in_records = store(&mut elsewhere);
    let records: SharedRecords = Arc::new(Mutex::new(elsewhere));
    let (key, _) = SigningKey::generate().unwrap();
    let access =
        Arc::new(AccessControl::open(&dir.join("access.log"), key, AccessOptions::default()).unwrap());
    let service = Service::new(own, VerdictIndex::new(4, [1; 32]), now)
        .with_settings(Settings::from_toml(SETTINGS).unwrap())
        .with_access(Arc::clone(&access))
        .with_records_engine(records, move || {
            Ok(Box::new(SqliteEngine::open(&path, options.clone())?) as Box<dyn EngineStore + Send>)
        });
    (Arc::new(service), access, in_own, in_records)
}

/// Before, the copy read the records engine only, and contract end then
/// destroyed what the service's own store held of the customer.
#[test]
fn the_customer_copy_holds_the_records_of_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (service, access, in_own, in_records) = setup(dir.path());
    assert!(in_own > 0 && in_records > 0);
    let jdoe = Operator::new("ops.jdoe").unwrap();
    let g = grant(&access, &[Action::CopyCustomer, Action::ExportPerson]);
    let mut copy = Vec::new();
    let stats = service.copy_customer_as(&jdoe, g, &id("acme"), &mut copy).unwrap();
    assert_eq!(stats.records, in_own + in_records);
    let text = String::from_utf8(copy).unwrap();
    assert_eq!(text.lines().count() as u64, stats.lines);
    assert_eq!(
        text.lines().filter(|l| l.contains("privtel-customer-copy")).count(),
        2,
        "one document a store"
    );
    let person: UserId = id("u-1042");
    let both = service.export_person_as(&jdoe, g, &id("acme"), &person, &mut Vec::new()).unwrap();
    let own_only = SqliteEngine::open(dir.path().join("own.db"), EngineOptions::default().secret([5; 32]))
        .unwrap()
        .export_person(&id::<CustomerId>("acme"), &person, &mut Vec::new())
        .unwrap();
    assert!(own_only > 0);
    assert_eq!(both, 2 * own_only, "the person's export reads both stores");
}

/// A writer of an export that reads slowly (an operator's connection)
/// holds nothing: a sweep meanwhile is not kept waiting. Before, the
/// export held the records engine's lock while it wrote.
#[test]
fn a_slow_export_reader_holds_up_no_sweep() {
    struct SlowReader(bool);
    impl Write for SlowReader {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if !self.0 {
                self.0 = true;
                std::thread::sleep(Duration::from_secs(3));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (service, access, _, _) = setup(dir.path());
    let g = grant(&access, &[Action::ExportPerson, Action::CopyCustomer]);
    for copy in [false, true] {
        let exporter = Arc::clone(&service);
        let export = std::thread::spawn(move || {
            let jdoe = Operator::new("ops.jdoe").unwrap();
            let mut out = SlowReader(false);
            if copy {
                exporter.copy_customer_as(&jdoe, g, &id("acme"), &mut out).unwrap().lines
            } else {
                exporter.export_person_as(&jdoe, g, &id("acme"), &id("u-1042"), &mut out).unwrap()
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        service.sweep(now()).unwrap();
        let waited = started.elapsed();
        assert!(export.join().unwrap() > 0);
        assert!(waited < Duration::from_secs(2), "the sweep waited {waited:?} for the export's reader");
    }
}

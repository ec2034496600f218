//! The application SDK: what one call costs the application's thread.
//!
//! Measured: `Telemetry::feature_used`, `Telemetry::configuration` and
//! `Telemetry::crash` with their program on (build the record, filter it on
//! the caller's thread, queue it to the endpoint's worker), and
//! `configuration` and `feedback` with support telemetry off (the program
//! check alone; anonymous usage cannot be switched off). The worker appends
//! to its spool on another thread meanwhile; its endpoint is unreachable, so
//! nothing is uploaded. Not measured: the worker's spooling (see the store
//! bench) or the upload.
//!
//! `cargo bench --bench sdk`

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use privtel::agent::AgentError;
use privtel::agent::sdk::{Connector, Telemetry, TelemetryBuilder};
use privtel::filter::{Policy, PseudonymKey};
use privtel::model::{CustomerId, DeviceId, KeyId};

fn sdk(dir: &std::path::Path, policy: &str) -> Telemetry {
    let down = Connector::new(|| Err(AgentError::Refused { message: "down".into(), retryable: true }));
    TelemetryBuilder::new(
        CustomerId::new("acme").expect("valid"),
        DeviceId::new("dev-1").expect("valid"),
        "Studio",
        "4.2.0",
    )
    .policy(Policy::from_toml(policy).expect("valid policy"))
    .pseudonym_key(PseudonymKey::new(KeyId::new(1), [7; 32]))
    .spool_dir(dir)
    .first_upload_after(Duration::from_secs(86_400))
    .queue_capacity(100_000_000)
    .endpoint("analytics", down)
    .build()
    .expect("an sdk")
}

fn calls(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let on = sdk(&dir.path().join("on"), "[programs]\nsupport_telemetry = true\n");
    let off = sdk(&dir.path().join("off"), "[programs]\nsupport_telemetry = false\n");
    let mut g = c.benchmark_group("sdk");
    g.bench_function("feature_used, program on", |b| b.iter(|| on.feature_used("export_pdf")));
    g.bench_function("configuration, program on", |b| b.iter(|| on.configuration("theme", "dark")));
    g.bench_function("configuration, program off", |b| b.iter(|| off.configuration("theme", "dark")));
    g.bench_function("feedback, program off", |b| b.iter(|| off.feedback(80, "fast, but confusing")));
    let crash = "thread 'main' panicked at /home/alice/src/render.rs:88:5: index out of bounds; mail alice@example.com";
    g.bench_function("crash (scrubbed), program on", |b| b.iter(|| on.crash(crash)));
    g.finish();
    println!("recorded {}, dropped {}", on.stats().recorded, on.stats().dropped_queue_full);
}

criterion_group!(benches, calls);
criterion_main!(benches);

//! The privacy filter: execution events per second on one core with two
//! pseudonymised fields (username, path) and one generalised (start time),
//! and free-text scrubbing throughput on 1 KiB crash messages.
//!
//! Measured: `Filter::apply` on records already in memory (each iteration
//! clones the batch first; the clone is measured separately to subtract).
//! Not measured: reading or serialising records.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use privtel::filter::{FilterBuilder, Policy, PseudonymKey, RedactionReport, Scrubber};
use privtel::model::{
    CustomerId, DeviceId, Digest, Event, EventBody, EventId, Execution, KeyId, Personal, Program, Record,
    RecordBody, Timestamp, UserId,
};

fn executions(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            program: Program::PersonalisedUsage,
            body: RecordBody::Event(Event {
                id: EventId::from_u128(i as u128),
                device: DeviceId::new("dev-1").expect("valid"),
                user: Some(UserId::new("u-1").expect("valid")),
                recorded_at: Timestamp::from_unix_seconds(1_795_752_000 + i as i64).expect("in range"),
                body: EventBody::Execution(Execution {
                    sha256: Digest::from_bytes([i as u8; 32]),
                    username: Personal::Clear(format!("user{}", i % 50)),
                    path: Personal::Clear(format!("C:\\Program Files\\App{}\\app.exe", i % 200)),
                    start: Personal::Clear(
                        Timestamp::from_unix_seconds(1_795_750_000 + i as i64).expect("in range"),
                    ),
                    duration: Personal::Withheld,
                }),
            }),
        })
        .collect()
}

/// A 1 KiB crash message with a few identifiers in it.
fn crash_message(i: usize) -> String {
    let mut s = format!(
        "thread 'main' panicked at src/worker.rs:{i}:5: connection to 10.1.{}.{} refused while syncing \
         /home/user{i}/.cache/app for alice{i}@corp.example; retrying with token=abc{i}def in 5 s\n",
        i % 250,
        i % 200
    );
    while s.len() < 1024 {
        s.push_str("   at app::sync::run (src/sync.rs:120:9)\n");
    }
    s.truncate(1024);
    s
}

fn filter(c: &mut Criterion) {
    let policy = Policy::from_toml(
        "[programs]\npersonalised_usage = true\n[fields]\n\"execution.username\" = \"pseudonymise\"\n\
         \"execution.path\" = \"pseudonymise\"\n\"execution.start\" = \"generalise\"\n",
    )
    .expect("valid policy");
    let f = FilterBuilder::new()
        .policy(policy)
        .customer(CustomerId::new("acme").expect("valid"))
        .key(PseudonymKey::new(KeyId::new(1), [7; 32]))
        .build();
    let batch = executions(10_000);
    // What is measured is filtering, not dropping: every record passes.
    let passed = batch.iter().cloned().filter_map(|r| f.apply(r, &mut RedactionReport::default())).count();
    assert_eq!(passed, batch.len(), "every execution passes the policy");

    let mut g = c.benchmark_group("filter/executions");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("clone-only", |b| b.iter_batched(|| batch.clone(), black_box, BatchSize::LargeInput));
    g.bench_function("apply", |b| {
        b.iter_batched(
            || batch.clone(),
            |records| {
                let mut report = RedactionReport::default();
                records.into_iter().filter_map(|r| f.apply(r, &mut report)).count()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let scrubber = Scrubber::default();
    let messages: Vec<String> = (0..1000).map(crash_message).collect();
    let bytes: usize = messages.iter().map(String::len).sum();
    let mut g = c.benchmark_group("filter/scrub");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("1KiB-crash-messages", |b| {
        b.iter(|| messages.iter().map(|m| scrubber.scrub(black_box(m)).text.len()).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, filter);
criterion_main!(benches);

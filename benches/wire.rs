//! The wire codec on a batch of 1,000 execution events (as the filter leaves
//! them: pseudonymised user and path, generalised start time): encode +
//! decode of the whole frame against serde_json of the same batch, and the
//! sizes. Prints the size ratio once; criterion reports the times.
//!
//! Not measured: TLS, compression, sockets.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use privtel::filter::{FilterBuilder, Policy, PseudonymKey};
use privtel::model::{
    BatchId, CustomerId, DeviceId, Digest, Event, EventBody, EventId, Execution, KeyId, Personal, Program,
    Record, RecordBody, Timestamp, UserId,
};
use privtel::wire::{Batch, DEFAULT_MAX_PAYLOAD, Message, encode_frame};
use time::Duration;

fn batch() -> Message {
    let policy = Policy::from_toml(
        "[programs]\npersonalised_usage = true\n[fields]\n\"execution.username\" = \"pseudonymise\"\n\
         \"execution.path\" = \"pseudonymise\"\n\"execution.start\" = \"generalise\"\n\"execution.duration\" = \"generalise\"\n",
    )
    .expect("valid policy");
    let filter = FilterBuilder::new()
        .policy(policy)
        .customer(CustomerId::new("acme").expect("valid"))
        .key(PseudonymKey::new(KeyId::new(1), [7; 32]))
        .build();
    let t0 = Timestamp::from_unix_seconds(1_795_752_000).expect("in range");
    let records: Vec<Record> = (0..1_000u64)
        .map(|i| Record {
            program: Program::PersonalisedUsage,
            body: RecordBody::Event(Event {
                id: EventId::from_u128(u128::from(i) * 0x9e37_79b9),
                device: DeviceId::new("dev-0001").expect("valid"),
                user: Some(UserId::new(format!("u-{}", i % 40)).expect("valid")),
                recorded_at: t0.checked_add(Duration::seconds(i as i64)).expect("in range"),
                body: EventBody::Execution(Execution {
                    sha256: Digest::from_bytes([(i % 251) as u8; 32]),
                    username: Personal::Clear(format!("user{}", i % 40)),
                    path: Personal::Clear(format!("C:\\Program Files\\App{}\\app.exe", i % 90)),
                    start: Personal::Clear(t0),
                    duration: Personal::Clear(Duration::milliseconds((i * 37) as i64)),
                }),
            }),
        })
        .collect();
    let (filtered, _) = filter.apply_batch(records);
    let records: Vec<Record> = filtered.into_iter().map(privtel::filter::Filtered::into_record).collect();
    assert_eq!(records.len(), 1_000, "every execution passes the policy");
    Message::Batch(Batch {
        program: Program::PersonalisedUsage,
        batch_id: BatchId::from_u128(1),
        first_seq: 1,
        records,
        skipped: 0,
        policy_hash: [0; 32],
    })
}

fn codec(c: &mut Criterion) {
    let msg = batch();
    let Message::Batch(b) = &msg else { unreachable!() };
    let mut frame = Vec::new();
    encode_frame(&msg.to_frame(2, false).expect("encodes"), DEFAULT_MAX_PAYLOAD, &mut frame).expect("fits");
    let json = serde_json::to_vec(&b.records).expect("encodes");
    println!(
        "wire/sizes: frame {} bytes, json {} bytes: json is {:.2}x larger",
        frame.len(),
        json.len(),
        json.len() as f64 / frame.len() as f64
    );

    let mut g = c.benchmark_group("wire/batch-1000-executions");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("frame-encode+decode", |bench| {
        bench.iter(|| {
            let mut out = Vec::with_capacity(frame.len());
            black_box(&msg).encode_frame_into(1, DEFAULT_MAX_PAYLOAD, &mut out).expect("fits");
            Message::decode_frame_from(&out, DEFAULT_MAX_PAYLOAD).expect("decodes").0
        })
    });
    g.bench_function("serde_json-encode+decode", |bench| {
        bench.iter(|| {
            let out = serde_json::to_vec(black_box(&b.records)).expect("encodes");
            serde_json::from_slice::<Vec<Record>>(&out).expect("decodes")
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

//! Serialization cost of model records: bincode (the wire and spool format)
//! against serde_json (the export and audit-log format), for a batch of
//! every record kind.
//!
//! Measured: encode and decode of the whole batch in memory, with bincode
//! decoding through a size limit as privtel always does; and the engine's
//! payload encoding (`privtel::store::parts::encode`, the JSON each stored
//! row holds, as the service's connection threads write it), record by
//! record. Not measured: I/O, framing, compression (the `wire` bench).

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use privtel::model::Record;

const LIMIT: usize = 16 << 20;

fn batch(n: usize) -> Vec<Record> {
    let kinds = privtel_testkit::fixtures::records("bench");
    kinds.iter().cycle().take(n).cloned().collect()
}

fn serialization(c: &mut Criterion) {
    let records = batch(1_000);
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let bin = bincode::serde::encode_to_vec(&records, config).expect("encodes");
    let json = serde_json::to_vec(&records).expect("encodes");

    let mut g = c.benchmark_group("model/1000-records");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("bincode-encode", |b| {
        b.iter(|| bincode::serde::encode_to_vec(black_box(&records), config).expect("encodes"))
    });
    g.bench_function("bincode-decode", |b| {
        b.iter(|| {
            let (v, _): (Vec<Record>, usize) =
                bincode::serde::decode_from_slice(black_box(&bin), config).expect("decodes");
            v
        })
    });
    g.bench_function("json-encode", |b| b.iter(|| serde_json::to_vec(black_box(&records)).expect("encodes")));
    g.bench_function("json-decode", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Record>>(black_box(&json)).expect("decodes"))
    });
    g.bench_function("engine-payload-encode", |b| {
        b.iter(|| {
            black_box(&records)
                .iter()
                .map(|r| privtel::store::parts::encode(r).expect("encodes").len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, serialization);
criterion_main!(benches);

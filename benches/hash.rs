//! In-memory hashing throughput: SHA-256, BLAKE3 and both in one pass, on one
//! core (`Hasher`) and with the parallel path (`digest_bytes`), for inputs
//! from 1 KiB to 64 MiB.
//!
//! Not measured here: file I/O, page faults, tree walking, process start —
//! `scripts/bench-hash.sh` measures those against `b3sum`, `openssl` and
//! `sha256sum` on the same files.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use privtel::hash::{Algorithms, Hasher, digest_bytes};

const SIZES: [usize; 5] = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20];

fn input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn one_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash/one-core");
    for &len in &SIZES[..4] {
        let data = input(len);
        g.throughput(Throughput::Bytes(len as u64));
        for (name, alg) in
            [("sha256", Algorithms::Sha256), ("blake3", Algorithms::Blake3), ("both", Algorithms::Both)]
        {
            g.bench_with_input(BenchmarkId::new(name, len), &data, |b, data| {
                b.iter(|| Hasher::new(alg).update(black_box(data)).clone().finalize())
            });
        }
    }
    g.finish();
}

fn parallel(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash/parallel");
    g.sample_size(20);
    for &len in &SIZES[2..] {
        let data = input(len);
        g.throughput(Throughput::Bytes(len as u64));
        for (name, alg) in [("blake3", Algorithms::Blake3), ("both", Algorithms::Both)] {
            g.bench_with_input(BenchmarkId::new(name, len), &data, |b, data| {
                b.iter(|| digest_bytes(alg, black_box(data), true))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, one_core, parallel);
criterion_main!(benches);

//! Integration tests of privtel-hash, built as one binary.

mod cache;
mod changed;
mod peers;
mod props;
mod reasons;

use std::path::Path;

/// Deterministic bytes: a xorshift stream from `seed`.
pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(crate) fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

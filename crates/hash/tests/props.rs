//! Property tests: one-pass digests equal each crate called directly, for any
//! input split into any chunks, in memory and through files.

use privtel_hash::{Algorithms, FileOptions, Hasher, digest_bytes, digest_reader, hash_file};
use proptest::prelude::*;
use sha2::Digest as _;

fn direct(data: &[u8]) -> ([u8; 32], [u8; 32]) {
    (sha2::Sha256::digest(data).into(), *blake3::hash(data).as_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 48 } else { 512 }, ..ProptestConfig::default() })]

    #[test]
    fn chunked_updates_equal_direct(data in prop::collection::vec(any::<u8>(), 0..20_000), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut h = Hasher::new(Algorithms::Both);
        let mut last = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            h.update(&data[last..c]);
            last = c;
        }
        let d = h.finalize();
        let (sha, b3) = direct(&data);
        prop_assert_eq!(*d.sha256.unwrap().as_bytes(), sha);
        prop_assert_eq!(*d.blake3.unwrap().as_bytes(), b3);
        // Writing is updating: `io::copy` through the `io::Write` impl
        // gives the same digests.
        let mut w = Hasher::new(Algorithms::Both);
        std::io::copy(&mut data.as_slice(), &mut w).unwrap();
        prop_assert_eq!(w.finalize(), d);
        // Selecting one algorithm computes only that one.
        prop_assert!(Hasher::new(Algorithms::Sha256).finalize().blake3.is_none());
    }

    #[test]
    fn readers_and_parallel_paths_agree(seed in any::<u64>(), len in 0usize..3_000_000) {
        let data = super::bytes(seed, len);
        let (sha, b3) = direct(&data);
        for alg in [Algorithms::Sha256, Algorithms::Blake3, Algorithms::Both] {
            for parallel in [false, true] {
                let d = digest_bytes(alg, &data, parallel);
                prop_assert_eq!(d.sha256.map(|d| *d.as_bytes()), alg.sha256().then_some(sha));
                prop_assert_eq!(d.blake3.map(|d| *d.as_bytes()), alg.blake3().then_some(b3));
            }
        }
        let (d, n) = digest_reader(Algorithms::Both, data.as_slice()).unwrap();
        prop_assert_eq!(n, len as u64);
        prop_assert_eq!(*d.sha256.unwrap().as_bytes(), sha);
    }

    #[test]
    fn files_hash_the_same_on_every_read_path(seed in any::<u64>(), len in 0usize..600_000) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = super::bytes(seed, len);
        std::fs::write(&path, &data).unwrap();
        let (sha, b3) = direct(&data);
        // Read on one thread, on several, or mapped.
        for (parallel, mapped) in [(u64::MAX, u64::MAX), (0, u64::MAX), (4096, u64::MAX), (u64::MAX, 0)] {
            for alg in [Algorithms::Sha256, Algorithms::Blake3, Algorithms::Both] {
                let mut options = FileOptions::default();
                options.parallel_threshold = parallel;
                options.mmap_threshold = mapped;
                options.algorithms = alg;
                let f = hash_file(&path, &options).unwrap();
                prop_assert_eq!(f.size, len as u64);
                prop_assert_eq!(f.digests.sha256.map(|d| *d.as_bytes()), alg.sha256().then_some(sha));
                prop_assert_eq!(f.digests.blake3.map(|d| *d.as_bytes()), alg.blake3().then_some(b3));
            }
        }
    }
}

/// BLAKE3 of a large file is put together from subtrees read and hashed
/// apart: the tree must be BLAKE3's at every shape (sizes around the 256 KiB
/// leaves, powers of two of them, and the 1 KiB chunks).
#[test]
fn blake3_of_large_files_equals_blake3_of_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let leaf = 256 << 10;
    let data = super::bytes(99, 9 * leaf + 3000);
    let mut options = FileOptions::default();
    options.parallel_threshold = 0;
    options.algorithms = Algorithms::Blake3;
    for len in [
        1,
        1024,
        1025,
        leaf - 1,
        leaf,
        leaf + 1,
        leaf + 1024,
        2 * leaf,
        2 * leaf + 1,
        3 * leaf - 1024,
        3 * leaf + 5,
        4 * leaf,
        4 * leaf + 1,
        5 * leaf + 2047,
        8 * leaf,
        8 * leaf + 1024,
        9 * leaf + 3000,
    ] {
        std::fs::write(&path, &data[..len]).unwrap();
        let f = hash_file(&path, &options).unwrap();
        assert_eq!(*f.digests.blake3.unwrap().as_bytes(), *blake3::hash(&data[..len]).as_bytes(), "{len}");
    }
}

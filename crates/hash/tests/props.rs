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
    fn files_hash_the_same_mapped_or_read(seed in any::<u64>(), len in 0usize..600_000) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = super::bytes(seed, len);
        std::fs::write(&path, &data).unwrap();
        let (sha, b3) = direct(&data);
        for threshold in [0, 4096, u64::MAX] {
            let mut options = FileOptions::default();
            options.mmap_threshold = threshold;
            let f = hash_file(&path, &options).unwrap();
            prop_assert_eq!(f.size, len as u64);
            prop_assert_eq!(*f.digests.sha256.unwrap().as_bytes(), sha);
            prop_assert_eq!(*f.digests.blake3.unwrap().as_bytes(), b3);
        }
    }
}

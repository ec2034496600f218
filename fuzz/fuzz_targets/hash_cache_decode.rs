//! Arbitrary bytes as a hash cache file: a typed error or a cache, never a
//! panic or an allocation beyond the decode limit; a cache that loads saves
//! and loads again to the same number of entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_hash::HashCache;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut cache) = HashCache::from_bytes(data) {
        let dir = std::env::temp_dir().join(format!("privtel-fuzz-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cache.bin");
        cache.save(&path).expect("a loaded cache saves");
        let again = HashCache::load(&path).expect("a saved cache loads");
        assert_eq!(again.len(), cache.len());
    }
});

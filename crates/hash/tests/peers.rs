//! Digests equal `sha256sum` and `b3sum` (when installed) and published
//! known-answer vectors (always).

use std::process::Command;

use privtel_hash::{Algorithms, FileOptions, HashCache, ScanHooks, ScannerBuilder, digest, hash_file};
use privtel_model::HashAlg;

/// (input, SHA-256, BLAKE3): FIPS 180-2 examples and the BLAKE3 reference.
const VECTORS: &[(&[u8], &str, &str)] = &[
    (
        b"",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    ),
    (
        b"abc",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
    ),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        "c19012cc2aaf0dc3d8e5c45a1b79114d2df42abb2a410bf54be09e891af06ff8",
    ),
];

#[test]
fn known_answer_vectors() {
    for (input, sha, b3) in VECTORS {
        assert_eq!(digest(HashAlg::Sha256, input).to_string(), *sha);
        assert_eq!(digest(HashAlg::Blake3, input).to_string(), *b3);
    }
    // One million 'a's (FIPS 180-2), through a file on every read path.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a");
    std::fs::write(&path, vec![b'a'; 1_000_000]).unwrap();
    for (parallel, mapped) in [(0, u64::MAX), (u64::MAX, u64::MAX), (u64::MAX, 0)] {
        let mut options = FileOptions::default();
        options.parallel_threshold = parallel;
        options.mmap_threshold = mapped;
        let d = hash_file(&path, &options).unwrap().digests;
        assert_eq!(
            d.sha256.unwrap().to_string(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }
}

fn tool(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Lines `<hex>  <path>` from a peer tool, sorted.
fn peer_lines(tool: &str, files: &[std::path::PathBuf]) -> Vec<String> {
    let out = Command::new(tool).args(files).output().unwrap();
    assert!(out.status.success(), "{tool} failed");
    let mut lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn equal_to_sha256sum_and_b3sum() {
    let dir = tempfile::tempdir().unwrap();
    // Sizes around every boundary: chunk and BLAKE3 subtree leaf (256 KiB),
    // several-core threshold (1 MiB),
    // BLAKE3 chunk (1 KiB) and block (64 B), the format probe (4 KiB).
    let sizes = [
        0, 1, 63, 64, 65, 1023, 1024, 1025, 4095, 4096, 4097, 262_143, 262_144, 262_145, 1_048_575,
        1_048_576, 1_048_577, 3_000_001,
    ];
    let files: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = dir.path().join(format!("f{i:02}-{n}"));
            super::write(&p, &super::bytes(i as u64 + 7, n));
            p
        })
        .collect();
    let mut checked = 0;
    for (name, alg) in [("sha256sum", Algorithms::Sha256), ("b3sum", Algorithms::Blake3)] {
        if !tool(name) {
            eprintln!("{name} not installed: compared with the known-answer vectors only");
            continue;
        }
        let expected = peer_lines(name, &files);
        // Read on several threads, on one, or mapped.
        for (threshold, mapped) in [(0, u64::MAX), (1 << 20, u64::MAX), (u64::MAX, u64::MAX), (u64::MAX, 0)] {
            let report = ScannerBuilder::new()
                .algorithms(alg)
                .parallel_threshold(threshold)
                .mmap_threshold(mapped)
                .build()
                .scan(&[dir.path()]);
            assert!(report.skipped.is_empty(), "{:?}", report.skipped);
            let mut ours: Vec<String> = report
                .hashed
                .iter()
                .map(|f| {
                    let d = if alg == Algorithms::Sha256 { f.digests.sha256 } else { f.digests.blake3 };
                    format!("{}  {}", d.unwrap(), f.path.display())
                })
                .collect();
            ours.sort();
            assert_eq!(ours, expected, "{name}, thresholds {threshold} {mapped}");
        }
        checked += 1;
    }
    // Whatever the peers, both digests from one pass equal each alone.
    let mut cache = HashCache::new();
    let both = ScannerBuilder::new()
        .build()
        .scan_with(&[dir.path()], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
    for f in &both.hashed {
        let data = std::fs::read(&f.path).unwrap();
        assert_eq!(f.digests.sha256, Some(digest(HashAlg::Sha256, &data)));
        assert_eq!(f.digests.blake3, Some(digest(HashAlg::Blake3, &data)));
    }
    eprintln!("compared with {checked} peer tools");
}

/// Files last changed long ago take the one-`fstat` path when a scan has no
/// cache (the walk does not stat them): their digests must still equal an
/// independent read of each file. The system's own programs are such files.
#[cfg(target_os = "linux")]
#[test]
fn settled_files_of_a_real_tree_hash_like_an_independent_read() {
    use std::os::unix::fs::MetadataExt;
    let root = std::path::Path::new("/usr/bin");
    // Only files that fit the one read (256 KiB): larger ones go the general
    // way and only cost the test time.
    let report = ScannerBuilder::new().max_file_size(Some(256 << 10)).build().scan(&[root]);
    let ten_minutes_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 600;
    let mut settled_small = 0;
    for file in &report.hashed {
        let bytes = std::fs::read(&file.path).unwrap();
        assert_eq!(
            file.digests,
            privtel_hash::digest_bytes(Algorithms::Both, &bytes, false),
            "{}",
            file.path.display()
        );
        assert_eq!(file.size, bytes.len() as u64);
        let meta = std::fs::metadata(&file.path).unwrap();
        settled_small += usize::from(meta.ctime() < ten_minutes_ago && bytes.len() < 256 << 10);
    }
    // The settled path was taken for real (a system image has many small,
    // old programs and scripts).
    assert!(settled_small >= 10, "only {settled_small} small settled files in {}", root.display());
}

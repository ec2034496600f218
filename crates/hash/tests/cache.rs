//! The cache: a second scan of an unchanged tree only stats; changed files
//! are hashed again; bad cache files are typed errors.

use privtel_hash::{Algorithms, Error, HashCache, ScanHooks, ScannerBuilder};

fn scan(dir: &std::path::Path, cache: &mut HashCache, alg: Algorithms) -> privtel_hash::ScanReport {
    ScannerBuilder::new()
        .algorithms(alg)
        .build()
        .scan_with(&[dir], ScanHooks { cache: Some(cache), ..ScanHooks::default() })
}

#[test]
fn unchanged_files_come_from_the_cache_changed_ones_are_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for i in 0..10 {
        super::write(&data.join(format!("{i}")), &super::bytes(i, 3000));
    }
    let mut cache = HashCache::new();
    let first = scan(&data, &mut cache, Algorithms::Both);
    assert_eq!(first.from_cache(), 0);
    assert_eq!(cache.len(), 10);

    let path = dir.path().join("cache.bin");
    cache.save(&path).unwrap();
    let mut cache = HashCache::load(&path).unwrap();
    let second = scan(&data, &mut cache, Algorithms::Sha256);
    assert_eq!(second.from_cache(), 10);
    assert_eq!(
        first.hashed.iter().map(|f| f.digests.sha256).collect::<Vec<_>>(),
        second.hashed.iter().map(|f| f.digests.sha256).collect::<Vec<_>>()
    );

    // Same size, new content: the mtime/ctime change makes it a new key.
    std::thread::sleep(std::time::Duration::from_millis(20));
    super::write(&data.join("3"), &super::bytes(99, 3000));
    let third = scan(&data, &mut cache, Algorithms::Both);
    assert_eq!(third.from_cache(), 9);
    let changed = third.hashed.iter().find(|f| f.path.ends_with("3")).unwrap();
    assert!(!changed.from_cache);
    assert_eq!(
        changed.digests.sha256,
        Some(privtel_hash::digest(privtel_model::HashAlg::Sha256, &super::bytes(99, 3000)))
    );

    // The stale entry for the old "3" goes at the next prune.
    assert_eq!(cache.len(), 11);
    cache.prune();
    assert_eq!(cache.len(), 10);
}

#[test]
fn bad_cache_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.bin");
    let mut good = HashCache::new();
    let data = dir.path().join("d");
    super::write(&data.join("f"), b"f");
    scan(&data, &mut good, Algorithms::Both);
    good.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let mut huge_len = b"PTHCACHE\x01\x00".to_vec();
    huge_len.push(253);
    huge_len.extend_from_slice(&u64::MAX.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"NOTCACHE\x01\x00".to_vec(), "magic"),
        (b"PTHCACHE\x09\x00".to_vec(), "version 9"),
        (b"PTHCACHE\x01".to_vec(), "truncated"),
        (bytes[..bytes.len() - 1].to_vec(), "corrupt"),
        ([bytes.as_slice(), b"x"].concat(), "unexpected bytes"),
        (huge_len, "corrupt"),
    ];
    for (content, expect) in cases {
        std::fs::write(&path, &content).unwrap();
        match HashCache::load(&path) {
            Err(e @ Error::CacheFormat { .. }) => assert!(e.to_string().contains(expect), "{e}"),
            other => panic!("{expect}: {other:?}"),
        }
    }
    assert!(matches!(HashCache::load(dir.path().join("missing")), Err(Error::CacheIo { .. })));

    // A missing file is an empty cache; a bad one is still an error, and so
    // is a path that cannot be read for another reason (a folder).
    assert!(HashCache::load_or_default(dir.path().join("missing")).unwrap().is_empty());
    match HashCache::load_or_default(&path) {
        Err(Error::CacheFormat { .. }) => {}
        other => panic!("a corrupt cache must stay an error: {other:?}"),
    }
    match HashCache::load_or_default(dir.path()) {
        Err(Error::CacheIo { .. }) => {}
        other => panic!("a folder is not a missing file: {other:?}"),
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(HashCache::load_or_default(&path).unwrap().len(), HashCache::load(&path).unwrap().len());
    assert!(!HashCache::load_or_default(&path).unwrap().is_empty());
}

#[test]
fn a_file_given_as_a_root_is_taken_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    super::write(&file, b"data");
    let mut cache = HashCache::new();
    let scanner = ScannerBuilder::new().build();
    let first = scanner.scan_with(&[&file], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
    let second = scanner.scan_with(&[&file], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
    assert_eq!((first.from_cache(), second.from_cache()), (0, 1));
}

/// Names chosen so that byte order and component order differ (`b-x`
/// sorts before `b/…` as bytes, after it as components), over more files
/// than one lookup batch and one hashing task, in two roots.
fn ordered_tree(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for name in ["b-x", "b/z", "b/a/1", "b.txt", "a", "c/d/e/f", "c/d-", "B", "b/a-1"] {
        files.push(root.join(name));
    }
    for i in 0..300 {
        files.push(root.join("many").join(format!("{}", 299 - i)));
    }
    for (i, f) in files.iter().enumerate() {
        super::write(f, &super::bytes(i as u64, 10 + i));
    }
    files
}

#[test]
fn results_come_in_walk_order_with_and_without_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("r1"), dir.path().join("r0"));
    let mut want = ordered_tree(&one);
    want.sort();
    let mut want_two = ordered_tree(&two);
    want_two.sort();
    want.extend(want_two);

    let scanner = ScannerBuilder::new().algorithms(Algorithms::Blake3).build();
    let mut cache = HashCache::new();
    for round in 0..2 {
        // Roots keep the caller's order (r1 before r0); inside a root,
        // paths are in `Path`'s component order.
        let report =
            scanner.scan_with(&[&one, &two], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
        let got: Vec<_> = report.hashed.iter().map(|f| f.path.clone()).collect();
        assert_eq!(got, want, "round {round}");
        assert_eq!(report.from_cache(), if round == 0 { 0 } else { want.len() });
    }
}

#[test]
fn entries_used_by_a_scan_survive_prune_even_when_only_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    super::write(&data.join("script"), b"#!/bin/sh\necho hi\n");
    super::write(&data.join("text"), b"just text");
    let scanner = ScannerBuilder::new().executables_only(true).build();
    let mut cache = HashCache::new();
    for round in 0..2 {
        let report =
            scanner.scan_with(&[&data], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
        assert_eq!((report.hashed.len(), report.skipped.len()), (1, 1), "round {round}");
        cache.prune();
        // The "not an executable" verdict is remembered and, used by the
        // second scan, kept by the prune.
        assert_eq!(cache.len(), 2, "round {round}");
    }
    assert_eq!(
        scanner
            .scan_with(&[&data], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() })
            .from_cache(),
        1
    );
    // A scan that does not reach the files leaves their entries unused.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    scanner.scan_with(&[&empty], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
    cache.prune();
    assert_eq!(cache.len(), 0);
}

//! Every reason for not hashing a file, produced for real.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privtel_hash::{Algorithms, FileOptions, ScanHooks, ScannerBuilder, SkipReason, hash_file};
use privtel_model::{Arch, ExecutableFormat};

fn euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn unreadable_file_is_reported_and_the_scan_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    super::write(&dir.path().join("ok"), b"fine");
    // Root reads any file mode, so as root use a file the kernel refuses to
    // read even to root: a write-only sysctl.
    let locked = if euid_is_root() {
        std::path::PathBuf::from("/proc/sys/vm/compact_memory")
    } else {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join("locked");
        super::write(&p, b"secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        p
    };
    assert!(locked.exists(), "{} missing", locked.display());
    let report = ScannerBuilder::new().build().scan(&[dir.path(), &locked]);
    assert_eq!(report.hashed.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped.len(), 1);
    let SkipReason::Unreadable(io) = &report.skipped[0].reason else {
        panic!("{:?}", report.skipped[0].reason)
    };
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(report.skipped[0].reason.to_string().starts_with("unreadable: "));
}

#[test]
fn a_file_that_grows_during_the_read_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("growing.log");
    // The one-thread read, the read-ahead thread (SHA-256, both) and the
    // BLAKE3 subtrees.
    let paths = [
        (u64::MAX, false, Algorithms::Both),
        (0, true, Algorithms::Both),
        (0, true, Algorithms::Sha256),
        (0, true, Algorithms::Blake3),
    ];
    for (parallel_threshold, parallel, algorithms) in paths {
        std::fs::write(&path, super::bytes(1, 8 << 20)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, path) = (stop.clone(), path.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    f.write_all(&[b'x'; 512]).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        // Hash repeatedly until one hash overlaps an append (the first almost
        // always does; the loop only guards against a descheduled writer).
        let mut options = FileOptions::default();
        options.parallel_threshold = parallel_threshold;
        options.parallel = parallel;
        options.algorithms = algorithms;
        let mut changed = None;
        for _ in 0..50 {
            match hash_file(&path, &options) {
                Err(privtel_hash::Error::File { reason: r @ SkipReason::Changed { .. }, .. }) => {
                    changed = Some(r);
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let Some(SkipReason::Changed { before, after }) = changed else { panic!("never saw the change") };
        assert!(after > before, "{before} -> {after}");
    }
}

#[test]
fn symlinks_are_reported_unfollowed_and_loops_do_not_loop() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    super::write(&root.join("a/file"), b"x");
    std::os::unix::fs::symlink(root.join("a"), root.join("a/loop")).unwrap();
    std::os::unix::fs::symlink(root.join("a/file"), root.join("link")).unwrap();

    let report = ScannerBuilder::new().build().scan(&[root]);
    assert_eq!(report.hashed.len(), 1);
    let reasons: Vec<_> =
        report.skipped.iter().map(|s| (s.path.file_name().unwrap().to_owned(), &s.reason)).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().all(|(_, r)| matches!(r, SkipReason::Symlink)));

    let report = ScannerBuilder::new().follow_symlinks(true).build().scan(&[root]);
    // a/file and link (followed to a/file); a/loop is a loop back to a.
    assert_eq!(report.hashed.len(), 2, "{:?}", report.skipped);
    assert_eq!(report.skipped.len(), 1);
    let SkipReason::SymlinkLoop(ancestor) = &report.skipped[0].reason else {
        panic!("{:?}", report.skipped[0].reason)
    };
    assert_eq!(ancestor, &root.join("a"));
}

#[test]
fn oversized_non_executable_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    super::write(&root.join("big.bin"), &[0x7f; 10_000]);
    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    elf.resize(18, 0);
    elf.extend_from_slice(&183u16.to_le_bytes());
    elf.resize(5000, 0);
    super::write(&root.join("prog"), &elf);
    super::write(&root.join("readme.txt"), b"hello");
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();

    let report =
        ScannerBuilder::new().max_file_size(Some(9_999)).executables_only(true).build().scan(&[root]);
    assert_eq!(report.hashed.len(), 1);
    assert_eq!(report.hashed[0].format, Some(ExecutableFormat::Elf { arch: Arch::Aarch64 }));
    let mut reasons: Vec<String> = report
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.path.file_name().unwrap().to_string_lossy(), s.reason))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "big.bin: 10000 bytes is larger than the limit of 9999 bytes",
            "readme.txt: not an executable",
            "sock: not a regular file",
        ]
    );
}

#[test]
fn a_file_deleted_between_walk_and_read_vanished() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["1", "2", "3"];
    for name in names {
        super::write(&dir.path().join(name), name.as_bytes());
    }
    // With one thread the three files (listed together, in one batch) are
    // hashed one after another: once the first is done, delete all three;
    // the two the walk listed but had not read yet have vanished.
    let progress = |p: privtel_hash::Progress| {
        if p.files_done == 1 {
            for name in names {
                let _ = std::fs::remove_file(dir.path().join(name));
            }
        }
    };
    let report = ScannerBuilder::new()
        .threads(1)
        .build()
        .scan_with(&[dir.path()], ScanHooks { progress: Some(&progress), ..ScanHooks::default() });
    assert_eq!(report.hashed.len(), 1);
    assert_eq!(report.skipped.len(), 2);
    for s in &report.skipped {
        assert!(matches!(s.reason, SkipReason::Vanished), "{:?}", s.reason);
        assert_eq!(s.reason.to_string(), "vanished before it was read");
    }
}

/// A file replaced by a FIFO between the walk and the open must not hang the
/// scan (a blocking open of a FIFO waits for a writer forever): with the
/// walk's stat it is "changed", without it "not a regular file".
#[cfg(target_os = "linux")]
#[test]
fn a_file_replaced_by_a_fifo_after_the_walk_does_not_hang() {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    for with_cache in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let names = ["1", "2", "3"];
        for name in names {
            super::write(&dir.path().join(name), b"regular file");
        }
        let progress = |p: privtel_hash::Progress| {
            if p.files_done == 1 {
                for name in names {
                    let path = dir.path().join(name);
                    let _ = std::fs::remove_file(&path);
                    mknodat(CWD, &path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
                }
            }
        };
        let mut cache = privtel_hash::HashCache::new();
        let hooks = ScanHooks {
            progress: Some(&progress),
            cache: with_cache.then_some(&mut cache),
            ..ScanHooks::default()
        };
        let report = ScannerBuilder::new().threads(1).build().scan_with(&[dir.path()], hooks);
        assert_eq!((report.hashed.len(), report.skipped.len()), (1, 2));
        for s in &report.skipped {
            assert!(
                matches!(s.reason, SkipReason::Changed { .. } | SkipReason::NotRegular),
                "{:?}",
                s.reason
            );
        }
    }
    // Without a progress callback or a cache the walk does not stat; a FIFO
    // listed as one is not opened at all.
    let dir = tempfile::tempdir().unwrap();
    mknodat(CWD, dir.path().join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    let report = ScannerBuilder::new().build().scan(&[dir.path()]);
    assert!(matches!(report.skipped[0].reason, SkipReason::NotRegular));
}

#[test]
fn progress_counts_everything_and_cancel_stops() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        super::write(&dir.path().join(format!("{i:02}")), &super::bytes(i, 1000 + i as usize));
    }
    let seen = Mutex::new(Vec::new());
    let progress = |p: privtel_hash::Progress| seen.lock().unwrap().push(p);
    let report = ScannerBuilder::new()
        .build()
        .scan_with(&[dir.path()], ScanHooks { progress: Some(&progress), ..ScanHooks::default() });
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 20);
    let last = seen.iter().max_by_key(|p| p.files_done).unwrap();
    assert_eq!((last.files_done, last.files_total), (20, 20));
    assert_eq!(last.bytes_done, last.bytes_total);
    assert_eq!(last.bytes_total, report.bytes());

    let cancel = AtomicBool::new(false);
    let stop_after_five = |p: privtel_hash::Progress| {
        if p.files_done == 5 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let report = ScannerBuilder::new().threads(1).build().scan_with(
        &[dir.path()],
        ScanHooks { progress: Some(&stop_after_five), cancel: Some(&cancel), ..ScanHooks::default() },
    );
    assert!(report.cancelled);
    assert_eq!(report.hashed.len(), 5);
}

#[test]
fn a_missing_root_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    super::write(&dir.path().join("x"), b"x");
    let missing = dir.path().join("nope");
    let report = ScannerBuilder::new().build().scan(&[missing.as_path(), dir.path()]);
    assert_eq!(report.hashed.len(), 1);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].path, missing);
    assert!(
        matches!(&report.skipped[0].reason, SkipReason::Unreadable(e) if e.kind() == std::io::ErrorKind::NotFound)
    );
}

#[test]
fn every_read_path_stops_early_on_a_non_executable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    super::write(&path, &vec![b'z'; 5 << 20]);
    for alg in [Algorithms::Sha256, Algorithms::Blake3, Algorithms::Both] {
        for (parallel, mapped) in [(0, u64::MAX), (u64::MAX, u64::MAX), (u64::MAX, 0)] {
            let mut options = FileOptions::default();
            options.algorithms = alg;
            options.parallel_threshold = parallel;
            options.mmap_threshold = mapped;
            options.executables_only = true;
            match hash_file(&path, &options) {
                Err(privtel_hash::Error::File { reason: SkipReason::NotExecutable, .. }) => {}
                other => panic!("{alg:?} {parallel} {mapped}: {other:?}"),
            }
            options.executables_only = false;
            assert_eq!(hash_file(&path, &options).unwrap().size, 5 << 20);
        }
    }
}

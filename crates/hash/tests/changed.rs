//! A 1 GiB file truncated, grown or replaced by another thread while the
//! library's defaults hash it: the outcome is `SkipReason::Changed`, never a
//! digest and never a signal (a mapped file raises `SIGBUS` when truncated
//! under the mapping, which would kill this test binary).
//!
//! One file is written once (real bytes: a pseudo-random 1 MiB block, made
//! different in every MiB) and restored after each case; every case checks
//! that the change landed after the hash began and before it ended, and
//! tries another delay when it did not.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use privtel_hash::{Algorithms, FileOptions, HashedFile, ScannerBuilder, SkipReason, hash_file};

const MIB: usize = 1 << 20;
const SIZE: u64 = 1 << 30;

/// The bytes of MiB number `i` of the big file.
fn block(base: &[u8], i: u64) -> Vec<u8> {
    let mut b = base.to_vec();
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

/// Writes MiBs `from..` of the big file (all of it from 0), to `SIZE` bytes.
fn fill(path: &Path, base: &[u8], from: u64) {
    let mut f = OpenOptions::new().create(true).write(true).truncate(false).open(path).unwrap();
    f.set_len(from * MIB as u64).unwrap();
    f.seek(SeekFrom::Start(from * MIB as u64)).unwrap();
    for i in from..SIZE / MIB as u64 {
        f.write_all(&block(base, i)).unwrap();
    }
    assert_eq!(f.metadata().unwrap().len(), SIZE);
}

#[derive(Clone, Copy, Debug)]
enum Via {
    HashFile,
    Scanner,
}

/// Hashes `path` with the library's defaults (but for the algorithms).
fn hash(via: Via, alg: Algorithms, path: &Path) -> Result<HashedFile, SkipReason> {
    match via {
        Via::HashFile => {
            let mut options = FileOptions::default();
            options.algorithms = alg;
            hash_file(path, &options).map_err(|e| match e {
                privtel_hash::Error::File { reason, .. } => reason,
                e => panic!("{e}"),
            })
        }
        Via::Scanner => {
            let mut report = ScannerBuilder::new().algorithms(alg).build().scan(&[path]);
            assert_eq!(report.hashed.len() + report.skipped.len(), 1, "{report:?}");
            match report.hashed.pop() {
                Some(hashed) => Ok(hashed),
                None => Err(report.skipped.remove(0).reason),
            }
        }
    }
}

/// Starts hashing `path` on another thread, runs `change` `delay` after the
/// start, and returns the outcome and whether `change` began while the hash
/// was still running. (Truncating 1 GiB takes a while: the size drops at
/// once, the pages are freed after, and the hash may end in between.)
fn race(
    via: Via,
    alg: Algorithms,
    path: &Path,
    delay: Duration,
    change: impl FnOnce(),
) -> (Result<HashedFile, SkipReason>, bool) {
    let start = Barrier::new(2);
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| {
            start.wait();
            let outcome = hash(via, alg, path);
            (outcome, Instant::now())
        });
        start.wait();
        std::thread::sleep(delay);
        let changing = Instant::now();
        change();
        let (outcome, done) = hashing.join().unwrap();
        (outcome, changing < done)
    })
}

/// Runs `case` with delays from 30 ms until one lands in the middle of the
/// hash (`case` restores the file each time), and checks the outcome is
/// `Changed` from the full size.
fn until_it_races(what: &str, mut case: impl FnMut(Duration) -> (Result<HashedFile, SkipReason>, bool)) {
    for delay in [30, 10, 60, 3, 120].map(Duration::from_millis) {
        let t = Instant::now();
        let (outcome, in_time) = case(delay);
        match outcome {
            Err(SkipReason::Changed { before, .. }) if in_time => {
                assert_eq!(before, SIZE, "{what}");
                eprintln!("{what}: changed after {delay:?}, reported in {:?}", t.elapsed());
                return;
            }
            // The change came before the open (the hash saw only the new
            // file) or after the end: try another delay.
            Ok(hashed) if !in_time || hashed.size != SIZE => {}
            Err(SkipReason::Changed { .. }) if !in_time => {}
            other => panic!("{what} ({delay:?}, in time: {in_time}): {other:?}"),
        }
    }
    panic!("{what}: no delay changed the file while it was hashed");
}

#[test]
fn a_file_changed_while_it_is_hashed_is_reported_as_changed_by_every_default_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    let base = super::bytes(10, MIB);
    let t = Instant::now();
    fill(&path, &base, 0);
    eprintln!("wrote 1 GiB in {:?}", t.elapsed());

    // Sanity: unchanged, the defaults hash it (BLAKE3, checked against the
    // blocks hashed here without the library; SHA-256 of 1 GiB takes
    // about a minute in a debug build).
    let expected = {
        let mut h = blake3::Hasher::new();
        for i in 0..SIZE / MIB as u64 {
            h.update(&block(&base, i));
        }
        privtel_model::Digest::from_bytes(*h.finalize().as_bytes())
    };
    let hashed = hash(Via::HashFile, Algorithms::Blake3, &path).unwrap();
    assert_eq!(hashed.digests.blake3, Some(expected));

    for via in [Via::HashFile, Via::Scanner] {
        for alg in [Algorithms::Sha256, Algorithms::Blake3, Algorithms::Both] {
            // Truncated to nothing, as `copytruncate` log rotation does.
            until_it_races(&format!("truncated, {via:?} {alg:?}"), |delay| {
                let outcome = race(via, alg, &path, delay, || File::create(&path).map(drop).unwrap());
                fill(&path, &base, 0);
                outcome
            });
        }
    }

    // Truncated near the end: most of the file read before the reads
    // come up short (no digest of the first part).
    until_it_races("truncated near the end, HashFile Blake3", |delay| {
        let keep = SIZE / MIB as u64 - 16;
        let outcome = race(Via::HashFile, Algorithms::Blake3, &path, delay, || {
            OpenOptions::new().write(true).open(&path).unwrap().set_len(keep * MIB as u64).unwrap();
        });
        fill(&path, &base, keep);
        outcome
    });

    // Grown: appended to while read. (BLAKE3 only: these read the whole
    // file, and SHA-256 of 1 GiB takes about a minute in a debug build.)
    for (via, alg) in [(Via::HashFile, Algorithms::Blake3), (Via::Scanner, Algorithms::Blake3)] {
        until_it_races(&format!("grown, {via:?} {alg:?}"), |delay| {
            let outcome = race(via, alg, &path, delay, || {
                OpenOptions::new().append(true).open(&path).unwrap().write_all(&base).unwrap();
            });
            OpenOptions::new().write(true).open(&path).unwrap().set_len(SIZE).unwrap();
            outcome
        });
    }

    // Replaced: another file renamed over it (the open file stays intact,
    // but the path no longer names it).
    let other = dir.path().join("big.log.new");
    for (via, alg) in [(Via::HashFile, Algorithms::Blake3), (Via::Scanner, Algorithms::Blake3)] {
        until_it_races(&format!("replaced, {via:?} {alg:?}"), |delay| {
            std::fs::write(&other, b"the next log").unwrap();
            let outcome = race(via, alg, &path, delay, || std::fs::rename(&other, &path).unwrap());
            fill(&path, &base, 0);
            outcome
        });
    }

    // And the file, restored, hashes as before.
    let hashed = hash(Via::Scanner, Algorithms::Blake3, &path).unwrap();
    assert_eq!(hashed.digests.blake3, Some(expected));
    drop(dir);
}

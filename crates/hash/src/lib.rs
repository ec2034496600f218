//! One-pass SHA-256 and BLAKE3 of byte slices, readers, files and directory
//! trees; executable format detection; and a hash cache.
//!
//! Devices report the binaries that run on them by hash, never by content.
//! This crate computes those hashes fast enough to scan a machine's program
//! folders without the user noticing.
//!
//! # Overview
//!
//! * [`digest()`], [`digest_bytes`], [`digest_reader`] and [`Hasher`] hash bytes:
//!   SHA-256 (`sha2`, which uses the CPU's SHA extensions when present),
//!   BLAKE3, or both from one read ([`Algorithms`]).
//! * [`hash_file`] hashes one file with `read` (by default never a mapping):
//!   below [`DEFAULT_PARALLEL_THRESHOLD`] in 256 KiB chunks on the calling
//!   thread; at or above it on several cores (SHA-256 behind a thread that
//!   reads 2 MiB ahead, with BLAKE3 beside it when both are asked for;
//!   BLAKE3 alone as 256 KiB subtrees that every core reads with `pread`
//!   and hashes). A file whose size or modification time changed during
//!   the read, that ended before its size (truncated), or that a large
//!   read's path no longer names afterwards (replaced), is reported as
//!   [`SkipReason::Changed`], never given a digest; another process
//!   truncating a file under the hash cannot raise `SIGBUS`. Mapping large
//!   files is an opt-in, unsafe against that truncation
//!   ([`FileOptions::mmap_threshold`]).
//! * [`ScannerBuilder`] → [`Scanner`] walks trees and hashes every regular
//!   file on every core, returning a [`ScanReport`]: one [`HashedFile`] or
//!   one [`SkippedFile`] (with a typed [`SkipReason`]) per file found. A scan
//!   never aborts because of one file and never loops on symlink cycles.
//!   [`ScanHooks`] add a [`HashCache`], a progress callback and a cancel flag.
//!   Per file, a scan costs the system calls it must: on Linux, folders are
//!   read with `getdents` into a reused buffer and files opened relative to
//!   their open folder (one name to look up, not the whole path); a file is
//!   stat'ed by the walk only when a cache or a progress callback needs its
//!   identity or size early, otherwise once it is open. A file under 256 KiB
//!   whose last change (ctime) is more than ten minutes old then costs
//!   `openat`, one `read`, one `fstat` and `close`: its change time, older
//!   than the read, proves that the read saw one version of it (the check
//!   git's index uses), where other files need an `fstat` before and after.
//!   A cached scan of an unchanged file costs one `statx` and no open.
//! * [`detect_format`] recognises ELF, PE, Mach-O (thin and universal) and
//!   `#!` scripts from a file's first bytes.
//! * [`derive_event_id`] derives an [`EventId`] from what identifies an
//!   event at its source (BLAKE3 key derivation), so a replayed event keeps
//!   its id; [`derive_keyed_event_id`] does the same under a secret key, so
//!   that only its holder can compute an id (what an agent uses: an
//!   unkeyed id over a withheld path could be tested against guesses).
//! * The model types this API takes and returns ([`Digest`], [`HashAlg`],
//!   [`ExecutableFormat`], [`EventId`]) are re-exported here, so a program
//!   that uses this crate alone needs no `privtel-model` dependency of its
//!   own.
//!
//! # Example
//!
//! ```
//! use privtel_hash::{Algorithms, ScannerBuilder};
//!
//! let dir = std::env::temp_dir().join(format!("privtel-hash-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("tool"), b"#!/bin/sh\necho hello\n")?;
//! std::fs::write(dir.join("notes.txt"), b"not a program")?;
//!
//! let scanner = ScannerBuilder::new().algorithms(Algorithms::Both).executables_only(true).build();
//! let report = scanner.scan(&[&dir]);
//! assert_eq!(report.hashed.len(), 1);
//! assert_eq!(report.skipped.len(), 1);
//! println!("{}  {}", report.hashed[0].digests.sha256.unwrap(), report.hashed[0].path.display());
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! The digests are those of `sha256sum` and `b3sum` on the same bytes (the
//! tests run both tools when installed). One read feeds both algorithms:
//! one 256 KiB buffer per thread, reused for every file, and for one large
//! file two 2 MiB buffers passed between a reading thread and the hashing
//! one. No file is memory-mapped unless asked for (an agent that scans while
//! logs rotate must not die of a `SIGBUS`). The only `unsafe` in the crate
//! is that opt-in mapping (see `src/file.rs` for why it is sound for our
//! use, and `FileOptions::mmap_threshold` for the SIGBUS caveat every mmap
//! user shares).
//!
//! # Crate features
//!
//! None.

mod cache;
mod digest;
mod error;
mod event_id;
mod file;
mod format;
mod scan;

pub use cache::{HashCache, MAX_CACHE_FILE};
pub use digest::{Algorithms, Digests, Hasher, digest, digest_bytes, digest_reader};
pub use error::{Error, Result, SkipReason};
pub use event_id::{derive_event_id, derive_keyed_event_id};
pub use file::{DEFAULT_MMAP_THRESHOLD, DEFAULT_PARALLEL_THRESHOLD, FileOptions, HashedFile, hash_file};
pub use format::{FORMAT_PROBE_LEN, detect_format};
pub use scan::{Progress, ScanHooks, ScanReport, Scanner, ScannerBuilder, SkippedFile};

// The model types of this crate's API, so that its users need not depend on
// `privtel-model` at a matching version themselves.
pub use privtel_model::{DIGEST_LEN, Digest, EventId, ExecutableFormat, HashAlg};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

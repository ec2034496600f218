//! Tree scanning: walk roots, hash every regular file on every core, report
//! one result per file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use walkdir::WalkDir;

use crate::cache::{Entry, HashCache, Key};
use crate::digest::{Algorithms, Digests};
use crate::error::SkipReason;
use crate::file::{FileIdentity, FileOptions, HashedFile, hash_file_inner, modified};

/// Builds a [`Scanner`].
///
/// ```
/// use privtel_hash::{Algorithms, ScannerBuilder};
///
/// let scanner = ScannerBuilder::new()
///     .algorithms(Algorithms::Sha256)
///     .executables_only(true)
///     .max_file_size(Some(512 << 20))
///     .build();
/// let report = scanner.scan(&["/usr/bin/env"]);
/// assert_eq!(report.hashed.len() + report.skipped.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ScannerBuilder {
    config: Config,
}

#[derive(Clone, Debug, Default)]
struct Config {
    /// How each file is hashed.
    file: FileOptions,
    /// Follow symbolic links below the roots (loops are detected and
    /// reported). Roots given as links are always followed.
    follow_symlinks: bool,
    /// Worker threads; 0 means one per core.
    threads: usize,
}


impl ScannerBuilder {
    /// A builder with the defaults: both digests, every regular file, no size
    /// limit, links not followed, one thread per core.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which digests to compute. Default: [`Algorithms::Both`].
    pub fn algorithms(&mut self, algorithms: Algorithms) -> &mut Self {
        self.config.file.algorithms = algorithms;
        self
    }

    /// Hash only ELF, PE, Mach-O and `#!` files; others are reported as
    /// [`SkipReason::NotExecutable`] after reading one page. Default: false.
    pub fn executables_only(&mut self, yes: bool) -> &mut Self {
        self.config.file.executables_only = yes;
        self
    }

    /// Skip files larger than this. Default: `None` (no limit).
    pub fn max_file_size(&mut self, limit: Option<u64>) -> &mut Self {
        self.config.file.max_size = limit;
        self
    }

    /// Memory-map files of at least this size. Default:
    /// [`crate::DEFAULT_MMAP_THRESHOLD`]; `u64::MAX` never maps.
    pub fn mmap_threshold(&mut self, bytes: u64) -> &mut Self {
        self.config.file.mmap_threshold = bytes;
        self
    }

    /// Follow symbolic links below the roots. Default: false (links are
    /// reported as [`SkipReason::Symlink`]).
    pub fn follow_symlinks(&mut self, yes: bool) -> &mut Self {
        self.config.follow_symlinks = yes;
        self
    }

    /// Number of worker threads; 0 (the default) means one per core.
    pub fn threads(&mut self, n: usize) -> &mut Self {
        self.config.threads = n;
        self
    }

    /// The scanner.
    pub fn build(&self) -> Scanner {
        Scanner { config: self.config.clone() }
    }
}

/// Hashes files and trees. Built once by [`ScannerBuilder`], used for any
/// number of scans, from any thread.
#[derive(Clone, Debug)]
pub struct Scanner {
    config: Config,
}

/// How far a scan has got. Passed to [`ScanHooks::progress`] after each file.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Files done (hashed, taken from the cache, or skipped).
    pub files_done: u64,
    /// Files found by the walk.
    pub files_total: u64,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes of all files found by the walk.
    pub bytes_total: u64,
}

/// Optional companions of a scan. Build it with struct syntax and
/// `..ScanHooks::default()`.
#[derive(Default)]
pub struct ScanHooks<'a> {
    /// A cache to take unchanged files from and to record new digests in.
    pub cache: Option<&'a mut HashCache>,
    /// Called from worker threads after each file; keep it cheap.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// Set to true (from any thread) to stop the scan: files not started yet
    /// are left out of the report and [`ScanReport::cancelled`] is set.
    pub cancel: Option<&'a AtomicBool>,
}

/// A file that was not hashed, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct SkippedFile {
    /// The path.
    pub path: PathBuf,
    /// Why it was not hashed.
    pub reason: SkipReason,
}

/// The outcome of a scan: every file found is in `hashed` or `skipped`
/// (unless the scan was cancelled), in walk order (sorted by name).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ScanReport {
    /// Files hashed or taken from the cache.
    pub hashed: Vec<HashedFile>,
    /// Files not hashed, with reasons.
    pub skipped: Vec<SkippedFile>,
    /// Whether the scan was cancelled before every file was done.
    pub cancelled: bool,
}

impl ScanReport {
    /// Total size of the files hashed (or taken from the cache).
    pub fn bytes(&self) -> u64 {
        self.hashed.iter().map(|f| f.size).sum()
    }

    /// How many results came from the cache.
    pub fn from_cache(&self) -> usize {
        self.hashed.iter().filter(|f| f.from_cache).count()
    }
}

/// A regular file found by the walk, with what the walk's stat told.
struct Candidate {
    path: PathBuf,
    size: u64,
    identity: FileIdentity,
    modified: Option<privtel_model::Timestamp>,
}

enum Outcome {
    Hashed(HashedFile, Key, Entry),
    Skipped(SkippedFile, Option<(Key, Entry)>),
    NotStarted,
}

impl Scanner {
    /// Scans `roots` (files or folders) without a cache or hooks.
    pub fn scan<P: AsRef<Path>>(&self, roots: &[P]) -> ScanReport {
        self.scan_with(roots, ScanHooks::default())
    }

    /// Scans `roots` (files or folders, walked recursively) with a cache,
    /// progress callback and cancel flag as given in `hooks`.
    ///
    /// Never fails as a whole: every file that cannot be hashed is reported in
    /// [`ScanReport::skipped`] with its reason, and the scan goes on.
    pub fn scan_with<P: AsRef<Path>>(&self, roots: &[P], hooks: ScanHooks<'_>) -> ScanReport {
        let ScanHooks { mut cache, progress, cancel } = hooks;
        if let Some(cache) = cache.as_deref_mut() {
            cache.start_scan();
        }
        let mut report = ScanReport::default();
        let candidates = self.walk(roots, &mut report.skipped);

        let done_files = AtomicU64::new(0);
        let done_bytes = AtomicU64::new(0);
        let totals = Progress {
            files_total: candidates.len() as u64,
            bytes_total: candidates.iter().map(|c| c.size).sum(),
            ..Progress::default()
        };
        let cache_ref = cache.as_deref();
        let work = |c: &Candidate| -> Outcome {
            if cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                return Outcome::NotStarted;
            }
            let outcome = self.one(c, cache_ref);
            if let Some(report) = progress {
                let files = done_files.fetch_add(1, Ordering::Relaxed) + 1;
                let bytes = done_bytes.fetch_add(c.size, Ordering::Relaxed) + c.size;
                report(Progress { files_done: files, bytes_done: bytes, ..totals });
            }
            outcome
        };
        let outcomes: Vec<Outcome> = self.run(|| candidates.par_iter().with_max_len(1).map(work).collect());

        let mut learned = Vec::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Hashed(file, key, entry) => {
                    report.hashed.push(file);
                    learned.push((key, entry));
                }
                Outcome::Skipped(skipped, known) => {
                    report.skipped.push(skipped);
                    learned.extend(known);
                }
                Outcome::NotStarted => report.cancelled = true,
            }
        }
        if let Some(cache) = cache {
            for (key, entry) in learned {
                cache.put(key, entry);
            }
        }
        report
    }

    /// Runs `f` on this scanner's pool (or the global one if a pool cannot
    /// be made, which only happens when threads cannot be spawned).
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match rayon::ThreadPoolBuilder::new().num_threads(self.config.threads).build() {
            Ok(pool) => pool.install(f),
            Err(_) => f(),
        }
    }

    /// Walks every root, returning the regular files and recording what is
    /// skipped on the way (links, special files, unreadable folders, loops).
    fn walk<P: AsRef<Path>>(&self, roots: &[P], skipped: &mut Vec<SkippedFile>) -> Vec<Candidate> {
        let mut found = Vec::new();
        for root in roots {
            let walk = WalkDir::new(root.as_ref())
                .follow_links(self.config.follow_symlinks)
                .follow_root_links(true)
                .sort_by_file_name();
            for entry in walk {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) => {
                        let path = err.path().unwrap_or(root.as_ref()).to_owned();
                        let ancestor = err.loop_ancestor().map(Path::to_owned);
                        let reason = match (ancestor, err.depth(), err.into_io_error()) {
                            (Some(ancestor), _, _) => SkipReason::SymlinkLoop(ancestor),
                            (None, depth, Some(io)) if depth > 0 => SkipReason::from_open_error(io),
                            (None, _, Some(io)) => SkipReason::Unreadable(io),
                            (None, _, None) => SkipReason::Vanished,
                        };
                        skipped.push(SkippedFile { path, reason });
                        continue;
                    }
                };
                let file_type = entry.file_type();
                if file_type.is_dir() {
                    continue;
                }
                let path = entry.path().to_owned();
                if file_type.is_symlink() {
                    skipped.push(SkippedFile { path, reason: SkipReason::Symlink });
                    continue;
                }
                if !file_type.is_file() {
                    skipped.push(SkippedFile { path, reason: SkipReason::NotRegular });
                    continue;
                }
                match entry.metadata() {
                    Ok(meta) => found.push(Candidate {
                        size: meta.len(),
                        identity: FileIdentity::of(&meta),
                        modified: modified(&meta),
                        path,
                    }),
                    Err(err) => {
                        let reason =
                            err.into_io_error().map_or(SkipReason::Vanished, SkipReason::from_open_error);
                        skipped.push(SkippedFile { path, reason });
                    }
                }
            }
        }
        found
    }

    /// One file: from the cache if its identity is known, else hashed.
    fn one(&self, c: &Candidate, cache: Option<&HashCache>) -> Outcome {
        let options = &self.config.file;
        let key = Key {
            identity: c.identity,
            #[cfg(not(unix))]
            path: c.path.clone(),
        };
        if let Some(entry) = cache.and_then(|cache| cache.get(&key)) {
            if options.executables_only && entry.format.is_none() {
                let skipped = SkippedFile { path: c.path.clone(), reason: SkipReason::NotExecutable };
                return Outcome::Skipped(skipped, Some((key, entry.clone())));
            }
            let too_large = options.max_size.is_some_and(|limit| c.size > limit);
            if !too_large && options.algorithms.satisfied_by(&entry.digests) {
                let hashed = HashedFile {
                    path: c.path.clone(),
                    size: c.size,
                    modified: c.modified,
                    digests: entry.digests,
                    format: entry.format.clone(),
                    from_cache: true,
                };
                return Outcome::Hashed(hashed, key, entry.clone());
            }
        }
        match hash_file_inner(&c.path, options) {
            Ok((hashed, identity)) => {
                let entry = Entry { digests: hashed.digests, format: hashed.format.clone() };
                let key = Key {
                    identity,
                    #[cfg(not(unix))]
                    path: c.path.clone(),
                };
                Outcome::Hashed(hashed, key, entry)
            }
            Err(SkipReason::NotExecutable) => {
                // Remember the verdict so the next scan does not read the
                // first page again.
                let entry = Entry { digests: Digests::default(), format: None };
                let skipped = SkippedFile { path: c.path.clone(), reason: SkipReason::NotExecutable };
                Outcome::Skipped(skipped, Some((key, entry)))
            }
            Err(reason) => Outcome::Skipped(SkippedFile { path: c.path.clone(), reason }, None),
        }
    }
}

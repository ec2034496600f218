//! Tree scanning: walk roots, hash every regular file on every core, report
//! one result per file.

use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::Scope;

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
///
/// The walk and the hashing run together, so the totals grow while
/// `walk_done` is false; once it is true they are final.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Files done (hashed, taken from the cache, or skipped).
    pub files_done: u64,
    /// Regular files found so far.
    pub files_total: u64,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes of the files found so far.
    pub bytes_total: u64,
    /// Whether every folder has been listed (the totals are final).
    pub walk_done: bool,
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

/// Files handed to one task: few enough that a folder of thousands of files
/// spreads over every core, enough that spawning costs little per file.
const FILES_PER_TASK: usize = 16;

/// A regular file found by the walk, with what the walk's stat told.
struct Candidate {
    path: PathBuf,
    size: u64,
    identity: FileIdentity,
    meta: Metadata,
}

impl Candidate {
    fn new(path: PathBuf, meta: Metadata) -> Self {
        Self { size: meta.len(), identity: FileIdentity::of(&meta), meta, path }
    }
}

enum Outcome {
    Hashed(HashedFile, Key, Entry),
    Skipped(SkippedFile, Option<(Key, Entry)>),
}

impl Outcome {
    fn path(&self) -> &Path {
        match self {
            Self::Hashed(f, ..) => &f.path,
            Self::Skipped(s, _) => &s.path,
        }
    }
}

/// (dev, ino) of a folder and its path, for symlink-loop detection.
type Ancestors = Arc<Vec<((u64, u64), PathBuf)>>;

/// The shared state of one scan.
struct Walk<'a> {
    scanner: &'a Scanner,
    cache: Option<&'a HashCache>,
    progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    cancel: Option<&'a AtomicBool>,
    found_files: AtomicU64,
    found_bytes: AtomicU64,
    done_files: AtomicU64,
    done_bytes: AtomicU64,
    /// Folders whose listing has not finished yet.
    pending_dirs: AtomicU64,
    cancelled: AtomicBool,
    results: Mutex<Vec<(usize, Box<Outcome>)>>,
}

impl<'a> Walk<'a> {
    fn stopped(&self) -> bool {
        let stop = self.cancel.is_some_and(|flag| flag.load(Ordering::Relaxed));
        if stop {
            self.cancelled.store(true, Ordering::Relaxed);
        }
        stop
    }

    fn push(&self, root: usize, outcomes: Vec<Outcome>) {
        if !outcomes.is_empty() {
            let mut results = self.results.lock().unwrap_or_else(PoisonError::into_inner);
            results.extend(outcomes.into_iter().map(|o| (root, Box::new(o))));
        }
    }

    fn skip(&self, root: usize, path: PathBuf, reason: SkipReason) {
        self.push(root, vec![Outcome::Skipped(SkippedFile { path, reason }, None)]);
    }

    fn root<'s>(&'s self, scope: &Scope<'s>, root: usize, path: PathBuf) {
        // A root is followed even if it is a link: the caller named it.
        match fs::metadata(&path) {
            Err(e) => self.skip(root, path, SkipReason::Unreadable(e)),
            Ok(meta) if meta.is_dir() => {
                let ancestors = Arc::new(vec![(dev_ino(&meta), path.clone())]);
                self.pending_dirs.fetch_add(1, Ordering::Relaxed);
                self.dir(scope, root, path, ancestors);
            }
            Ok(meta) if meta.is_file() => self.files(scope, root, vec![Candidate::new(path, meta)]),
            Ok(_) => self.skip(root, path, SkipReason::NotRegular),
        }
    }

    /// Lists one folder: subfolders become tasks, files go out in batches.
    /// The caller has counted this folder in `pending_dirs`.
    fn dir<'s>(&'s self, scope: &Scope<'s>, root: usize, dir: PathBuf, ancestors: Ancestors) {
        if !self.stopped() {
            self.list(scope, root, dir, &ancestors);
        }
        self.pending_dirs.fetch_sub(1, Ordering::Relaxed);
    }

    fn list<'s>(&'s self, scope: &Scope<'s>, root: usize, dir: PathBuf, ancestors: &Ancestors) {
        let follow = self.scanner.config.follow_symlinks;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => return self.skip(root, dir, SkipReason::from_open_error(e)),
        };
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        let mut hits = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    skipped.push(Outcome::Skipped(
                        SkippedFile { path: dir.clone(), reason: SkipReason::Unreadable(e) },
                        None,
                    ));
                    continue;
                }
            };
            let path = entry.path();
            // `file_type` comes from the directory entry itself where the
            // file system provides it: no extra system call.
            let meta = match entry.file_type() {
                Ok(t) if t.is_symlink() && !follow => Err(SkipReason::Symlink),
                Ok(t) if t.is_symlink() => fs::metadata(&path).map_err(SkipReason::from_open_error),
                Ok(_) => entry.metadata().map_err(SkipReason::from_open_error),
                Err(e) => Err(SkipReason::from_open_error(e)),
            };
            match meta {
                Ok(meta) if meta.is_dir() => {
                    let id = dev_ino(&meta);
                    if let Some((_, ancestor)) = ancestors.iter().find(|(a, _)| *a == id) {
                        let reason = SkipReason::SymlinkLoop(ancestor.clone());
                        skipped.push(Outcome::Skipped(SkippedFile { path, reason }, None));
                        continue;
                    }
                    let mut chain = Vec::with_capacity(ancestors.len() + 1);
                    chain.extend(ancestors.iter().cloned());
                    chain.push((id, path.clone()));
                    self.pending_dirs.fetch_add(1, Ordering::Relaxed);
                    scope.spawn(move |scope| self.dir(scope, root, path, Arc::new(chain)));
                }
                Ok(meta) if meta.is_file() => {
                    let c = Candidate::new(path, meta);
                    // A cache hit costs less than handing the file to
                    // another task: answer it here.
                    if let Some(outcome) = self.scanner.cached(&c, self.cache) {
                        self.found_files.fetch_add(1, Ordering::Relaxed);
                        self.found_bytes.fetch_add(c.size, Ordering::Relaxed);
                        self.done(c.size);
                        hits.push(outcome);
                        continue;
                    }
                    files.push(c);
                    if files.len() == FILES_PER_TASK {
                        self.files(scope, root, std::mem::take(&mut files));
                    }
                }
                Ok(_) => {
                    skipped.push(Outcome::Skipped(SkippedFile { path, reason: SkipReason::NotRegular }, None))
                }
                Err(reason) => skipped.push(Outcome::Skipped(SkippedFile { path, reason }, None)),
            }
        }
        self.push(root, skipped);
        self.push(root, hits);
        self.files(scope, root, files);
    }

    /// Counts one file as done and reports progress.
    fn done(&self, size: u64) {
        if let Some(report) = self.progress {
            let files = self.done_files.fetch_add(1, Ordering::Relaxed) + 1;
            let bytes = self.done_bytes.fetch_add(size, Ordering::Relaxed) + size;
            report(Progress {
                files_done: files,
                files_total: self.found_files.load(Ordering::Relaxed),
                bytes_done: bytes,
                bytes_total: self.found_bytes.load(Ordering::Relaxed),
                walk_done: self.pending_dirs.load(Ordering::Relaxed) == 0,
            });
        }
    }

    /// Counts a batch of files as found and hashes it in a task of its own.
    fn files<'s>(&'s self, scope: &Scope<'s>, root: usize, batch: Vec<Candidate>) {
        if batch.is_empty() {
            return;
        }
        self.found_files.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.found_bytes.fetch_add(batch.iter().map(|c| c.size).sum(), Ordering::Relaxed);
        scope.spawn(move |_| {
            let mut outcomes = Vec::with_capacity(batch.len());
            for c in &batch {
                if self.stopped() {
                    break;
                }
                // Roots given as files arrive here without a cache check.
                let outcome = match self.scanner.cached(c, self.cache) {
                    Some(hit) => hit,
                    None => self.scanner.hashed(c),
                };
                outcomes.push(outcome);
                self.done(c.size);
            }
            self.push(root, outcomes);
        });
    }
}

/// The order of a depth-first walk with names sorted: `Path`'s own
/// component-by-component order, computed on the bytes (a separator sorts
/// before every other byte), which is several times faster on large trees.
#[cfg(unix)]
fn walk_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    let (a, b) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
    // Equal up to the first differing byte; only that byte needs the
    // separator-first mapping.
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let key = |c: Option<&u8>| c.map(|&c| if c == b'/' { 0 } else { u16::from(c) + 1 });
    key(a.get(common)).cmp(&key(b.get(common)))
}

#[cfg(not(unix))]
fn walk_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    a.cmp(b)
}

#[cfg(unix)]
fn dev_ino(meta: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dev_ino(_: &Metadata) -> (u64, u64) {
    // No inode numbers: loops through links cannot be told apart from deep
    // trees here; the path length limit of the OS ends them.
    (0, 0)
}

impl Scanner {
    /// Scans `roots` (files or folders) without a cache or hooks.
    pub fn scan<P: AsRef<Path>>(&self, roots: &[P]) -> ScanReport {
        self.scan_with(roots, ScanHooks::default())
    }

    /// Scans `roots` (files or folders, walked recursively) with a cache,
    /// progress callback and cancel flag as given in `hooks`.
    ///
    /// Folders are listed and files hashed at the same time, on every core.
    /// Never fails as a whole: every file that cannot be hashed is reported in
    /// [`ScanReport::skipped`] with its reason, and the scan goes on.
    pub fn scan_with<P: AsRef<Path>>(&self, roots: &[P], hooks: ScanHooks<'_>) -> ScanReport {
        let ScanHooks { mut cache, progress, cancel } = hooks;
        if let Some(cache) = cache.as_deref_mut() {
            cache.start_scan();
        }
        let walk = Walk {
            scanner: self,
            cache: cache.as_deref(),
            progress,
            cancel,
            found_files: AtomicU64::new(0),
            found_bytes: AtomicU64::new(0),
            done_files: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            pending_dirs: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            results: Mutex::new(Vec::new()),
        };
        let roots: Vec<PathBuf> = roots.iter().map(|r| r.as_ref().to_owned()).collect();
        self.run(|| {
            rayon::scope(|scope| {
                for (i, root) in roots.into_iter().enumerate() {
                    let walk = &walk;
                    scope.spawn(move |scope| walk.root(scope, i, root));
                }
            })
        });

        let cancelled = walk.cancelled.load(Ordering::Relaxed);
        let mut results = walk.results.into_inner().unwrap_or_else(PoisonError::into_inner);
        // Walk order: by root, then by path component by component (a
        // folder's files before the next sibling's).
        results.sort_unstable_by(|(ra, a), (rb, b)| ra.cmp(rb).then_with(|| walk_order(a.path(), b.path())));
        let mut report = ScanReport { cancelled, ..ScanReport::default() };
        let mut learned = Vec::new();
        for (_, outcome) in results {
            match *outcome {
                Outcome::Hashed(file, key, entry) => {
                    report.hashed.push(file);
                    learned.push((key, entry));
                }
                Outcome::Skipped(skipped, known) => {
                    report.skipped.push(skipped);
                    learned.extend(known);
                }
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

    /// One file: from the cache if its identity is known, else hashed.
    fn key(c: &Candidate) -> Key {
        Key {
            identity: c.identity,
            #[cfg(not(unix))]
            path: c.path.clone(),
        }
    }

    /// The outcome for `c` if the cache can give it without reading the file.
    fn cached(&self, c: &Candidate, cache: Option<&HashCache>) -> Option<Outcome> {
        let options = &self.config.file;
        let key = Self::key(c);
        let entry = cache?.get(&key)?;
        if options.executables_only && entry.format.is_none() {
            let skipped = SkippedFile { path: c.path.clone(), reason: SkipReason::NotExecutable };
            return Some(Outcome::Skipped(skipped, Some((key, entry.clone()))));
        }
        let too_large = options.max_size.is_some_and(|limit| c.size > limit);
        if too_large || !options.algorithms.satisfied_by(&entry.digests) {
            return None;
        }
        let hashed = HashedFile {
            path: c.path.clone(),
            size: c.size,
            modified: modified(&c.meta),
            digests: entry.digests,
            format: entry.format.clone(),
            from_cache: true,
        };
        Some(Outcome::Hashed(hashed, key, entry.clone()))
    }

    /// Reads and hashes `c`.
    fn hashed(&self, c: &Candidate) -> Outcome {
        let options = &self.config.file;
        let key = Self::key(c);
        match hash_file_inner(&c.path, options, Some(&c.meta)) {
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

//! Tree scanning: walk roots, hash every regular file on every core, report
//! one result per file.

use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::Scope;

use crate::cache::{Entry, HashCache, Hit, Key};
use crate::digest::{Algorithms, Digests};
use crate::error::SkipReason;
use crate::file::{DirFd, FileOptions, HashedFile, Stat, hash_file_inner};

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

    /// **Unsafe against concurrent truncation; opt-in.** Memory-map files
    /// of at least this size instead of reading them. Default:
    /// [`crate::DEFAULT_MMAP_THRESHOLD`] (never). A mapped file that another
    /// process truncates during the scan raises `SIGBUS` and kills the
    /// process; see [`crate::FileOptions::mmap_threshold`].
    pub fn mmap_threshold(&mut self, bytes: u64) -> &mut Self {
        self.config.file.mmap_threshold = bytes;
        self
    }

    /// Files of at least this size are read and hashed on several cores;
    /// `u64::MAX` hashes each file on one thread. Default:
    /// [`crate::DEFAULT_PARALLEL_THRESHOLD`].
    pub fn parallel_threshold(&mut self, bytes: u64) -> &mut Self {
        self.config.file.parallel_threshold = bytes;
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
    /// With a cache the walk stats every file as it lists it (the identity
    /// is the cache key).
    pub cache: Option<&'a mut HashCache>,
    /// Called from worker threads after each file; keep it cheap. With a
    /// callback the walk stats every file as it lists it, so the byte totals
    /// are known as early as the file counts.
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

/// Files of one folder stat'ed before their cache lookups are done together.
const LOOKUP_BATCH: usize = 256;

/// Open folders, at most, for a listing to lend its folder to the files it
/// finds: beyond this many (a walk far ahead of the hashing), files are
/// opened by their full path.
/// (Linux only: elsewhere files are always opened by their path.)
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const MAX_LENT_DIRS: usize = 64;

/// A regular file found by the walk.
struct Candidate {
    path: PathBuf,
    /// What the walk's stat told, if the walk stat'ed it (it does when a
    /// cache or a progress callback needs the identity or size early;
    /// otherwise the file is stat'ed once opened).
    stat: Option<Stat>,
    /// The open folder it is in, to open it relative to.
    dir: Option<Arc<LentDir>>,
}

impl Candidate {
    fn size(&self) -> u64 {
        self.stat.map_or(0, |s| s.size())
    }
}

/// An open folder, shared by the files found in it when the walk lends it;
/// counts itself in the walk's number of open folders while it lives.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct LentDir {
    fd: DirFd,
    lent: Arc<AtomicUsize>,
}

impl LentDir {
    /// The open folder `fd`, counted in `lent` while it lives.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn new(fd: DirFd, lent: &Arc<AtomicUsize>) -> Arc<Self> {
        lent.fetch_add(1, Ordering::Relaxed);
        Arc::new(Self { fd, lent: Arc::clone(lent) })
    }
}

impl Drop for LentDir {
    fn drop(&mut self) {
        self.lent.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A cache lookup for a file: the answer, or the file back to be hashed.
enum Lookup {
    Hit(Outcome),
    Miss(Candidate),
}

/// What the walk found at one name in a folder.
enum Found {
    Dir(PathBuf, (u64, u64)),
    File(Candidate),
    Skipped(PathBuf, SkipReason),
}

enum Outcome {
    /// A file hashed, with what the cache should learn (`None` for a cache
    /// hit, already marked used, and in a scan without a cache).
    Hashed(HashedFile, Learned),
    /// A file not hashed, with what the cache should learn, if anything.
    Skipped(SkippedFile, Learned),
    /// Moved into the report (a placeholder while the results are taken
    /// out in walk order).
    Taken,
}

impl Outcome {
    fn path(&self) -> &Path {
        match self {
            Self::Hashed(f, ..) => &f.path,
            Self::Skipped(s, _) => &s.path,
            Self::Taken => Path::new(""),
        }
    }
}

/// What the cache learns from one file. Boxed: only files read by a scan
/// with a cache have it, and a cached scan moves tens of thousands of
/// outcomes.
type Learned = Option<Box<(Key, Entry)>>;

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
    /// How many folders are open (being listed or lent to files found in
    /// them).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    lent: Arc<AtomicUsize>,
    done_files: AtomicU64,
    done_bytes: AtomicU64,
    /// Folders whose listing has not finished yet.
    pending_dirs: AtomicU64,
    cancelled: AtomicBool,
    /// Outcomes as the tasks finish them, one batch per task with its root.
    results: Mutex<Vec<(usize, Vec<Outcome>)>>,
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
            self.results.lock().unwrap_or_else(PoisonError::into_inner).push((root, outcomes));
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
            Ok(meta) if meta.is_file() => {
                let c = Candidate { path, stat: Some(Stat::of(&meta)), dir: None };
                self.files(scope, root, vec![c]);
            }
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
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        let mut hits = Vec::new();
        let mut found = Vec::with_capacity(LOOKUP_BATCH);
        let listed = self.read_dir(&dir, &mut |entry| match entry {
            Found::Dir(path, id) => {
                if let Some((_, ancestor)) = ancestors.iter().find(|(a, _)| *a == id) {
                    let reason = SkipReason::SymlinkLoop(ancestor.clone());
                    skipped.push(Outcome::Skipped(SkippedFile { path, reason }, None));
                    return;
                }
                let mut chain = Vec::with_capacity(ancestors.len() + 1);
                chain.extend(ancestors.iter().cloned());
                chain.push((id, path.clone()));
                self.pending_dirs.fetch_add(1, Ordering::Relaxed);
                scope.spawn(move |scope| self.dir(scope, root, path, Arc::new(chain)));
            }
            Found::File(c) => {
                found.push(c);
                if found.len() == LOOKUP_BATCH {
                    self.sort_out(scope, root, &mut found, &mut hits, &mut files);
                }
            }
            Found::Skipped(path, reason) => {
                skipped.push(Outcome::Skipped(SkippedFile { path, reason }, None))
            }
        });
        if let Err(reason) = listed {
            skipped.push(Outcome::Skipped(SkippedFile { path: dir, reason }, None));
        }
        self.sort_out(scope, root, &mut found, &mut hits, &mut files);
        self.push(root, skipped);
        self.push(root, hits);
        self.files(scope, root, files);
    }

    /// Whether the walk stats every file it lists: when the cache needs the
    /// identity or the progress report the size before the file is opened.
    /// Otherwise a regular file (as its folder entry says) is stat'ed once,
    /// after it is opened. (On other systems than Linux the walk always
    /// stats.)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn stat_while_walking(&self) -> bool {
        self.cache.is_some() || self.progress.is_some()
    }

    /// Lists `dir`, telling `found` about every entry: through `getdents`
    /// into a reused buffer, with `statx` relative to the folder, and the
    /// folder lent to its files so they are opened relative to it too.
    ///
    /// `Err` if the folder cannot be opened or read to its end (the entries
    /// read before an error have been told).
    #[cfg(target_os = "linux")]
    fn read_dir(&self, dir: &Path, found: &mut dyn FnMut(Found)) -> Result<(), SkipReason> {
        use crate::file::STATX_MASK;
        use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
        use std::mem::MaybeUninit;
        use std::os::unix::ffi::OsStrExt;

        thread_local! {
            static DIRENTS: std::cell::RefCell<Vec<MaybeUninit<u8>>> =
                std::cell::RefCell::new(vec![MaybeUninit::uninit(); 32 << 10]);
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd =
            rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| SkipReason::from_open_error(e.into()))?;
        let stat_files = self.stat_while_walking();
        let follow = self.scanner.config.follow_symlinks;
        // A soft limit: two listings may both pass it at once.
        let lend = self.lent.load(Ordering::Relaxed) < MAX_LENT_DIRS;
        let dir_fd = LentDir::new(fd, &self.lent);
        let lent = || lend.then(|| Arc::clone(&dir_fd));
        let fd = &dir_fd.fd;
        DIRENTS.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut entries = RawDir::new(fd, &mut buf);
            while let Some(entry) = entries.next() {
                let entry = entry.map_err(|e| SkipReason::Unreadable(e.into()))?;
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                let path = child(dir, std::ffi::OsStr::from_bytes(name.to_bytes()));
                let stat = |nofollow: bool| {
                    let at = if nofollow { AtFlags::SYMLINK_NOFOLLOW } else { AtFlags::empty() };
                    rustix::fs::statx(fd, name, at, STATX_MASK)
                        .map_err(|e| SkipReason::from_open_error(e.into()))
                };
                let kind = entry.file_type();
                let st = match kind {
                    FileType::Symlink if !follow => Err(SkipReason::Symlink),
                    FileType::Symlink => stat(false),
                    FileType::RegularFile if !stat_files => {
                        let dir = lent();
                        found(Found::File(Candidate { path, stat: None, dir }));
                        continue;
                    }
                    FileType::Fifo | FileType::Socket | FileType::CharacterDevice | FileType::BlockDevice => {
                        Err(SkipReason::NotRegular)
                    }
                    _ => stat(true),
                };
                found(match st {
                    Err(reason) => Found::Skipped(path, reason),
                    Ok(st) => {
                        let mode = FileType::from_raw_mode(rustix::fs::RawMode::from(st.stx_mode));
                        if mode == FileType::Directory {
                            Found::Dir(
                                path,
                                (rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino),
                            )
                        } else if mode == FileType::RegularFile {
                            // A followed link is opened by its path, which
                            // the open follows as the stat did.
                            let dir = lent().filter(|_| kind != FileType::Symlink);
                            Found::File(Candidate { path, stat: Some(Stat::of_statx(&st)), dir })
                        } else {
                            Found::Skipped(path, SkipReason::NotRegular)
                        }
                    }
                });
            }
            Ok(())
        })
    }

    /// Lists `dir` through the standard library, stat'ing every entry.
    #[cfg(not(target_os = "linux"))]
    fn read_dir(&self, dir: &Path, found: &mut dyn FnMut(Found)) -> Result<(), SkipReason> {
        let follow = self.scanner.config.follow_symlinks;
        for entry in fs::read_dir(dir).map_err(SkipReason::from_open_error)? {
            let entry = entry.map_err(SkipReason::Unreadable)?;
            let path = entry.path();
            // `file_type` comes from the directory entry itself where the
            // file system provides it: no extra system call.
            let meta = match entry.file_type() {
                Ok(t) if t.is_symlink() && !follow => Err(SkipReason::Symlink),
                Ok(t) if t.is_symlink() => fs::metadata(&path).map_err(SkipReason::from_open_error),
                Ok(_) => entry.metadata().map_err(SkipReason::from_open_error),
                Err(e) => Err(SkipReason::from_open_error(e)),
            };
            found(match meta {
                Ok(meta) if meta.is_dir() => Found::Dir(path, dev_ino(&meta)),
                Ok(meta) if meta.is_file() => {
                    Found::File(Candidate { path, stat: Some(Stat::of(&meta)), dir: None })
                }
                Ok(_) => Found::Skipped(path, SkipReason::NotRegular),
                Err(reason) => Found::Skipped(path, reason),
            });
        }
        Ok(())
    }

    /// Answers the files in `found` from the cache where it can (a hit
    /// costs less than handing the file to another task) and sends the rest
    /// to be hashed in batches; `found` is left empty.
    ///
    /// The cache is looked up for all of them first, in a tight loop: each
    /// lookup is a likely cache miss in a large map, and the processor
    /// overlaps independent misses where the system calls between them
    /// would not let it.
    fn sort_out<'s>(
        &'s self,
        scope: &Scope<'s>,
        root: usize,
        found: &mut Vec<Candidate>,
        hits: &mut Vec<Outcome>,
        files: &mut Vec<Candidate>,
    ) {
        let entries: Vec<_> = match self.cache {
            Some(cache) => found.iter().map(|c| Scanner::key(c).and_then(|key| cache.get(&key))).collect(),
            None => Vec::new(),
        };
        let mut entries = entries.into_iter();
        let (hits_before, mut hit_bytes) = (hits.len(), 0);
        if self.cache.is_some() {
            hits.reserve(found.len());
        }
        for c in found.drain(..) {
            let c = match self.scanner.answer(c, entries.next().flatten()) {
                Lookup::Hit(outcome) => {
                    hit_bytes += outcome_size(&outcome);
                    hits.push(outcome);
                    continue;
                }
                Lookup::Miss(c) => c,
            };
            files.push(c);
            if files.len() == FILES_PER_TASK {
                self.files(scope, root, std::mem::replace(files, Vec::with_capacity(FILES_PER_TASK)));
            }
        }
        // Counters shared by the workers are updated once per batch, not
        // once per file.
        self.found_files.fetch_add((hits.len() - hits_before) as u64, Ordering::Relaxed);
        self.found_bytes.fetch_add(hit_bytes, Ordering::Relaxed);
        if self.progress.is_some() {
            hits[hits_before..].iter().for_each(|o| self.done(outcome_size(o)));
        }
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
        self.found_bytes.fetch_add(batch.iter().map(Candidate::size).sum(), Ordering::Relaxed);
        scope.spawn(move |_| {
            let mut outcomes = Vec::with_capacity(batch.len());
            for c in batch {
                if self.stopped() {
                    break;
                }
                let size = c.size();
                // Roots given as files arrive here without a cache check.
                let outcome = match self.scanner.cached(c, self.cache) {
                    Lookup::Hit(hit) => hit,
                    Lookup::Miss(c) => self.scanner.hashed(c, self.cache.is_some()),
                };
                outcomes.push(outcome);
                self.done(size);
            }
            self.push(root, outcomes);
        });
    }
}

/// The report from the tasks' batches: every outcome in walk order (by
/// root, then by path component by component: a folder's files before the
/// next sibling's), and what the cache should learn.
///
/// Outcomes are a few hundred bytes: a list of indices is sorted (on the
/// pool's threads), and each outcome is moved once, into the report.
fn in_walk_order(
    mut batches: Vec<(usize, Vec<Outcome>)>,
    cancelled: bool,
) -> (ScanReport, Vec<(Key, Entry)>) {
    use rayon::slice::ParallelSliceMut as _;
    let total: usize = batches.iter().map(|(_, b)| b.len()).sum();
    let mut order: Vec<(usize, &Path, u32, u32)> = Vec::with_capacity(total);
    for (bi, (root, batch)) in batches.iter().enumerate() {
        // A batch holds at most one folder's entries; there are fewer than
        // 2^32 of either in memory.
        order.extend(batch.iter().enumerate().map(|(i, o)| (*root, o.path(), bi as u32, i as u32)));
    }
    order.par_sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| walk_order(a.1, b.1)));
    let order: Vec<(u32, u32)> = order.into_iter().map(|(_, _, b, i)| (b, i)).collect();

    let hashed = batches.iter().flat_map(|(_, b)| b).filter(|o| matches!(o, Outcome::Hashed(..))).count();
    let mut report = ScanReport {
        hashed: Vec::with_capacity(hashed),
        skipped: Vec::with_capacity(total - hashed),
        cancelled,
    };
    let mut learned = Vec::new();
    for (b, i) in order {
        // Each index appears once in `order`, so nothing is taken twice.
        match std::mem::replace(&mut batches[b as usize].1[i as usize], Outcome::Taken) {
            Outcome::Hashed(file, known) => {
                report.hashed.push(file);
                learned.extend(known.map(|k| *k));
            }
            Outcome::Skipped(skipped, known) => {
                report.skipped.push(skipped);
                learned.extend(known.map(|k| *k));
            }
            Outcome::Taken => {}
        }
    }
    (report, learned)
}

/// `dir/name` in one allocation of the right size (`Path::join` allocates,
/// then grows): the walk makes one path per file, on every thread at once,
/// and the allocator's locks are shared.
#[cfg(target_os = "linux")]
fn child(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let mut path = PathBuf::with_capacity(dir.as_os_str().len() + 1 + name.len());
    path.push(dir);
    path.push(name);
    path
}

fn outcome_size(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Hashed(f, _) => f.size,
        Outcome::Skipped(..) | Outcome::Taken => 0,
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
    // separator-first mapping. Paths of one tree share long prefixes: skip
    // them eight bytes at a time.
    let n = a.len().min(b.len());
    let mut common = 0;
    while common + 8 <= n && a[common..common + 8] == b[common..common + 8] {
        common += 8;
    }
    while common < n && a[common] == b[common] {
        common += 1;
    }
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
            lent: Arc::new(AtomicUsize::new(0)),
            done_files: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            pending_dirs: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            results: Mutex::new(Vec::new()),
        };
        let roots: Vec<PathBuf> = roots.iter().map(|r| r.as_ref().to_owned()).collect();
        let (report, learned) = self.run(|| {
            rayon::scope(|scope| {
                for (i, root) in roots.into_iter().enumerate() {
                    let walk = &walk;
                    scope.spawn(move |scope| walk.root(scope, i, root));
                }
            });
            let cancelled = walk.cancelled.load(Ordering::Relaxed);
            let results = walk.results.into_inner().unwrap_or_else(PoisonError::into_inner);
            in_walk_order(results, cancelled)
        });
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
    fn key(c: &Candidate) -> Option<Key> {
        Some(Key {
            identity: c.stat?.identity,
            #[cfg(not(unix))]
            path: c.path.clone(),
        })
    }

    /// The outcome for `c` if the cache can give it without reading the
    /// file; else `c` back.
    fn cached(&self, c: Candidate, cache: Option<&HashCache>) -> Lookup {
        let found = cache.zip(Self::key(&c)).and_then(|(cache, key)| cache.get(&key));
        self.answer(c, found)
    }

    /// The outcome for `c` from its cache entry (`found`, if any) when the
    /// entry has what this scan asks for; else `c` back.
    fn answer(&self, c: Candidate, found: Option<(&Entry, Hit<'_>)>) -> Lookup {
        let options = &self.config.file;
        let (Some((entry, hit)), Some(stat)) = (found, c.stat) else {
            return Lookup::Miss(c);
        };
        if options.executables_only && entry.format.is_none() {
            hit.mark();
            let skipped = SkippedFile { path: c.path, reason: SkipReason::NotExecutable };
            return Lookup::Hit(Outcome::Skipped(skipped, None));
        }
        let too_large = options.max_size.is_some_and(|limit| stat.size() > limit);
        if too_large || !options.algorithms.satisfied_by(&entry.digests) {
            return Lookup::Miss(c);
        }
        hit.mark();
        Lookup::Hit(Outcome::Hashed(
            HashedFile {
                modified: stat.modified,
                path: c.path,
                size: stat.size(),
                digests: entry.digests,
                format: entry.format.clone(),
                from_cache: true,
            },
            None,
        ))
    }

    /// Reads and hashes `c`.
    fn hashed(&self, c: Candidate, learn: bool) -> Outcome {
        let options = &self.config.file;
        let key = Self::key(&c);
        let dir = c.dir.as_ref().map(|d| &d.fd);
        match hash_file_inner(&c.path, options, c.stat.as_ref(), dir) {
            Ok((hashed, identity)) => {
                // Only a scan with a cache learns anything.
                let learned = learn.then(|| {
                    let entry = Entry { digests: hashed.digests, format: hashed.format.clone() };
                    let key = Key {
                        identity,
                        #[cfg(not(unix))]
                        path: c.path.clone(),
                    };
                    Box::new((key, entry))
                });
                Outcome::Hashed(HashedFile { path: c.path, ..hashed }, learned)
            }
            Err(SkipReason::NotExecutable) => {
                // Remember the verdict so the next scan does not read the
                // first page again.
                let entry = Entry { digests: Digests::default(), format: None };
                let skipped = SkippedFile { path: c.path, reason: SkipReason::NotExecutable };
                Outcome::Skipped(skipped, key.filter(|_| learn).map(|key| Box::new((key, entry))))
            }
            Err(reason) => Outcome::Skipped(SkippedFile { path: c.path, reason }, None),
        }
    }
}

//! Hashing one file: open once, stat, read once, detect the format, stat
//! again to catch changes.
//!
//! By default nothing here maps a file into memory. A mapping of a file that
//! another process truncates raises `SIGBUS` on the first touch past the new
//! end, which kills the process (as it does `b3sum`); a `read` past the new
//! end returns fewer bytes instead, which the checks below report as
//! [`SkipReason::Changed`]. Large files are still hashed on several cores:
//! SHA-256 behind a thread that reads ahead, BLAKE3 as subtrees that each
//! core reads (`pread`) and hashes on its own. Mapping remains as an opt-in
//! ([`FileOptions::mmap_threshold`]) for files nothing can truncate: it
//! saves the copy, which BLAKE3 alone on two cores feels (see the README).

use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
#[cfg(not(unix))]
use std::time::SystemTime;

use privtel_model::{ExecutableFormat, Timestamp};

use crate::digest::{Algorithms, Digests, Hasher, READ_BUF, digest_bytes};
use crate::error::{Error, Result, SkipReason};
use crate::format::{FORMAT_PROBE_LEN, detect_format};

/// The default of [`FileOptions::mmap_threshold`]: `u64::MAX`, no file is
/// ever memory-mapped unless asked for, so that another process truncating
/// a file under the hash cannot kill this one with `SIGBUS`.
///
/// (It was 16 MiB, the value [`DEFAULT_PARALLEL_THRESHOLD`] keeps. Against
/// the read path that replaced the mapping, measured on 1 GiB on a 2-core
/// Xeon under load, the mapping saves the copy out of the page cache, 0.16 s
/// of system time per GiB: BLAKE3 alone 0.145 s mapped against 0.20 s read,
/// SHA-256 and both within 4 %.)
pub const DEFAULT_MMAP_THRESHOLD: u64 = u64::MAX;

/// Files at least this large are hashed on several cores by default (see
/// [`FileOptions::parallel_threshold`]).
///
/// Measured on the 2-core EPYC development machine (see the README's
/// performance notes): over a tree of files up to 2 MiB, one core per file
/// reading in 256 KiB chunks beats the several-core path of the time (a
/// mapping) at every threshold tried (BLAKE3 0.27 s against 0.32 s with
/// 1 MiB and 0.38 s with 64 KiB): in a tree every core already has a file
/// of its own. One large file gains from several cores. 16 MiB keeps trees
/// of ordinary files on the one-core path and gives large files the
/// parallel one.
pub const DEFAULT_PARALLEL_THRESHOLD: u64 = 16 << 20;

/// How one file is hashed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FileOptions {
    /// Which digests to compute. Default: both.
    pub algorithms: Algorithms,
    /// Skip (with [`SkipReason::NotExecutable`]) files that are not ELF, PE,
    /// Mach-O or `#!` scripts, without reading past their first page.
    /// Default: false.
    pub executables_only: bool,
    /// Skip files larger than this many bytes. Default: none.
    pub max_size: Option<u64>,
    /// **Unsafe against concurrent truncation; opt-in.** Memory-map files
    /// of at least this many bytes instead of reading them. Default:
    /// [`DEFAULT_MMAP_THRESHOLD`] (`u64::MAX`: never).
    ///
    /// A mapped file that another process truncates while it is hashed
    /// raises `SIGBUS`, which kills the whole process (as it does `b3sum`
    /// and every mmap user). Lower this only for files nothing can truncate
    /// (read-only media, files this process owns). Unmapped, a truncated,
    /// grown or replaced file is reported as [`SkipReason::Changed`]. What
    /// mapping saves is the copy out of the page cache: BLAKE3 alone of one
    /// large file on two cores is about a third faster mapped; SHA-256 and
    /// both gain a few per cent.
    pub mmap_threshold: u64,
    /// Files of at least this many bytes are hashed on several cores when
    /// `parallel` is set: SHA-256 behind a thread that reads ahead (with
    /// BLAKE3 beside it when both are asked for), BLAKE3 alone as subtrees
    /// that every core reads and hashes. Default:
    /// [`DEFAULT_PARALLEL_THRESHOLD`]; `u64::MAX` hashes every file on the
    /// calling thread alone.
    pub parallel_threshold: u64,
    /// Let one large file use several cores (SHA-256 and BLAKE3 side by side,
    /// BLAKE3 split across cores). Default: true.
    pub parallel: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            algorithms: Algorithms::Both,
            executables_only: false,
            max_size: None,
            mmap_threshold: DEFAULT_MMAP_THRESHOLD,
            parallel_threshold: DEFAULT_PARALLEL_THRESHOLD,
            parallel: true,
        }
    }
}

/// A file that was hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HashedFile {
    /// The path it was found at.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, where the file system keeps one.
    pub modified: Option<Timestamp>,
    /// The digests asked for.
    pub digests: Digests,
    /// Its executable format, `None` when it is none of the known ones.
    pub format: Option<ExecutableFormat>,
    /// Whether the result came from the cache (the file was only stat'ed).
    pub from_cache: bool,
}

/// What identifies one version of a file without reading it: the cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct FileIdentity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime_ns: i128,
    /// The inode change time: also moves when a tool resets the mtime after
    /// writing (`touch -r`, archive extractors), which the mtime alone misses.
    pub(crate) ctime_ns: i128,
}

impl FileIdentity {
    #[cfg(unix)]
    pub(crate) fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    pub(crate) fn of(meta: &Metadata) -> Self {
        // No inode numbers: size and times alone (the cache then also keys by
        // path, see `cache.rs`).
        let ns = |t: io::Result<SystemTime>| t.ok().and_then(system_time_nanos).unwrap_or(0);
        Self { dev: 0, ino: 0, size: meta.len(), mtime_ns: ns(meta.modified()), ctime_ns: ns(meta.created()) }
    }
}

#[cfg(not(unix))]
fn system_time_nanos(t: SystemTime) -> Option<i128> {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).ok(),
        Err(e) => i128::try_from(e.duration().as_nanos()).ok().map(|n| -n),
    }
}

#[cfg(unix)]
pub(crate) fn modified(meta: &Metadata) -> Option<Timestamp> {
    use std::os::unix::fs::MetadataExt;
    // Seconds and nanoseconds as the file system gives them: no 128-bit
    // arithmetic on the path of a cached scan.
    let nanos = u32::try_from(meta.mtime_nsec()).ok()?;
    Timestamp::from_parts(meta.mtime(), nanos).ok()
}

#[cfg(not(unix))]
pub(crate) fn modified(meta: &Metadata) -> Option<Timestamp> {
    meta.modified().ok().and_then(system_time_nanos).and_then(|n| Timestamp::from_unix_nanos(n).ok())
}

/// What one stat of a file told, as much as hashing needs: its identity
/// (the cache key), its modification time and whether it is a regular file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat {
    pub(crate) identity: FileIdentity,
    pub(crate) modified: Option<Timestamp>,
    pub(crate) regular: bool,
}

impl Stat {
    pub(crate) fn of(meta: &Metadata) -> Self {
        Self { identity: FileIdentity::of(meta), modified: modified(meta), regular: meta.is_file() }
    }

    /// From a `statx` result; the same values [`Stat::of`] gives for the
    /// `Metadata` of the same file (std's `Metadata` is a `statx` too on
    /// Linux, with the device number made by the same `makedev`).
    #[cfg(target_os = "linux")]
    pub(crate) fn of_statx(st: &rustix::fs::Statx) -> Self {
        let ns =
            |t: &rustix::fs::StatxTimestamp| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
        let mode = rustix::fs::FileType::from_raw_mode(rustix::fs::RawMode::from(st.stx_mode));
        Self {
            identity: FileIdentity {
                dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
                ino: st.stx_ino,
                size: st.stx_size,
                mtime_ns: ns(&st.stx_mtime),
                ctime_ns: ns(&st.stx_ctime),
            },
            modified: Timestamp::from_parts(st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec).ok(),
            regular: mode == rustix::fs::FileType::RegularFile,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.identity.size
    }
}

thread_local! {
    /// One read buffer per thread, reused for every file that thread reads.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// Hashes one file.
///
/// ```
/// use privtel_hash::{FileOptions, hash_file};
///
/// let dir = std::env::temp_dir().join(format!("privtel-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("hello.txt");
/// std::fs::write(&path, b"hello world")?;
/// let hashed = hash_file(&path, &FileOptions::default())?;
/// assert_eq!(
///     hashed.digests.sha256.unwrap().to_string(),
///     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
/// );
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::File`] with the [`SkipReason`] when the file is not hashed.
pub fn hash_file(path: impl AsRef<Path>, options: &FileOptions) -> Result<HashedFile> {
    let path = path.as_ref();
    hash_file_inner(path, options, None, None)
        .map(|(hashed, _)| HashedFile { path: path.to_owned(), ..hashed })
        .map_err(|reason| Error::File { path: path.to_owned(), reason })
}

/// [`hash_file`], also returning the identity that was read (for the cache).
/// The result's `path` is left empty for the caller to fill in (a scan moves
/// its own path in rather than copying it).
///
/// `walked` is what a stat of the path said just before, if the caller has
/// it (a scan does): it stands in for the `fstat` before the read, and the
/// `fstat` after the read must then also show the same inode, so a file
/// replaced between the walk and the open is reported as changed.
///
/// `dir` is the open folder the file is in, if the caller has it: the file
/// is then opened relative to it (one name to look up, not every folder of
/// the path again).
pub(crate) fn hash_file_inner(
    path: &Path,
    options: &FileOptions,
    walked: Option<&Stat>,
    dir: Option<&DirFd>,
) -> std::result::Result<(HashedFile, FileIdentity), SkipReason> {
    let mut file = open(path, dir).map_err(SkipReason::from_open_error)?;
    let before = match walked {
        Some(stat) => *stat,
        None => {
            #[cfg(target_os = "linux")]
            if options.max_size.is_none_or(|limit| limit >= READ_BUF as u64) {
                if let Some(done) = read_settled(&mut file, options, SETTLED_NS)? {
                    return Ok(done);
                }
                // Back to the start for the general path. A FIFO cannot
                // seek; the `fstat` below reports it as not regular.
                let _ = io::Seek::seek(&mut file, io::SeekFrom::Start(0));
            }
            fstat(&file).map_err(SkipReason::Unreadable)?
        }
    };
    if !before.regular {
        return Err(SkipReason::NotRegular);
    }
    let size = before.size();
    if let Some(limit) = options.max_size.filter(|&limit| size > limit) {
        return Err(SkipReason::TooLarge { size, limit });
    }

    let mapped = if size > 0 && size >= options.mmap_threshold { map(&file) } else { None };
    let large = mapped.is_some() || (options.parallel && size > 0 && size >= options.parallel_threshold);
    let (digests, format, read) = match &mapped {
        Some(bytes) => {
            let format = probe(bytes, options)?;
            (digest_bytes(options.algorithms, bytes, options.parallel), format, bytes.len() as u64)
        }
        None if !large => read_and_hash(&mut file, size, options)?,
        #[cfg(unix)]
        None if options.algorithms == Algorithms::Blake3 => blake3_subtrees(&file, size, options)?,
        // SHA-256 cannot be split across cores: a second thread that reads
        // ahead hides the copy (and BLAKE3, with both, runs beside it).
        None => read_ahead(&mut file, size, options)?,
    };
    drop(mapped);
    let done = finish(&file, &before, size, read, digests, format)?;
    // A large read takes long enough for the path to be renamed over (a log
    // rotated) meanwhile: the open file is then intact, but no longer the
    // one the path names. One more stat per large file tells.
    if large && !still_named(path, dir, &done.1) {
        return Err(SkipReason::Changed { before: size, after: size });
    }
    Ok(done)
}

/// Maps `file` read-only, or `None` if the file system cannot map it (the
/// caller then reads it instead). Only when [`FileOptions::mmap_threshold`]
/// asks for it.
fn map(file: &File) -> Option<memmap2::Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the mapped bytes can change if
    // another process writes the file while it is mapped; Rust would then see
    // a `&[u8]` change under it. We only ever read the bytes into hash
    // functions, for which a concurrent change yields a wrong digest, not
    // memory unsafety in our code; and we detect such changes afterwards
    // (size and mtime before/after) and report `SkipReason::Changed` instead
    // of the digest. Truncation by another process raises SIGBUS, which
    // kills the process: that is why mapping is opt-in, as documented on
    // `FileOptions::mmap_threshold`.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
    #[cfg(unix)]
    {
        // A hint only: failure changes nothing but read-ahead.
        let _ = map.advise(memmap2::Advice::Sequential);
    }
    Some(map)
}

/// Whether `path` (relative to `dir` when given, as [`open`] opened it)
/// still names the file with `identity`: false when it is gone or names
/// another file.
#[cfg(target_os = "linux")]
fn still_named(path: &Path, dir: Option<&DirFd>, identity: &FileIdentity) -> bool {
    let at = rustix::fs::AtFlags::empty();
    let st = match (dir, path.file_name()) {
        (Some(dir), Some(name)) => rustix::fs::statx(dir, name, at, STATX_MASK),
        _ => rustix::fs::statx(rustix::fs::CWD, path, at, STATX_MASK),
    };
    st.is_ok_and(|st| {
        let now = Stat::of_statx(&st).identity;
        (now.dev, now.ino) == (identity.dev, identity.ino)
    })
}

/// Whether `path` still names the file with `identity` (by device and inode
/// where the system has them; elsewhere only that the path still exists).
#[cfg(not(target_os = "linux"))]
fn still_named(path: &Path, _: Option<&DirFd>, identity: &FileIdentity) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| {
        let now = FileIdentity::of(&meta);
        (now.dev, now.ino) == (identity.dev, identity.ino)
    })
}

/// How long ago a file's last change (its ctime) must lie for
/// [`read_settled`] to take the file as unchanged during a read that began
/// now: ten minutes, far above the granularity of any file system's
/// timestamps (2 s on FAT) and of the kernel's coarse clock, and above any
/// sane clock difference between this machine and a network file server.
#[cfg(target_os = "linux")]
const SETTLED_NS: i128 = 600 * 1_000_000_000;

/// Hashes a small file that was not stat'ed before it was opened with one
/// `read` and one `fstat`, where the general path needs two `fstat`s around
/// the read (a `statx` per file is a fifth of the cost of hashing a small
/// one).
///
/// The `fstat` before a read proves that nothing changed during it by
/// comparison with the `fstat` after. Here the proof is the one git's index
/// uses for "racily clean" files: the inode's change time (which every
/// write moves, and which no system call can set back) lies more than
/// `settled_ns` before the moment the read began, so no write happened
/// during the read; and the size after the read equals the bytes the one
/// `read` returned, so the read saw the whole file. A file that fails
/// either test, or fills the whole buffer, or is not a regular file, is
/// left to the general path (`None`; the file offset may have moved).
#[cfg(target_os = "linux")]
fn read_settled(
    file: &mut File,
    options: &FileOptions,
    settled_ns: i128,
) -> std::result::Result<Option<(HashedFile, FileIdentity)>, SkipReason> {
    let Ok(started) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
        return Ok(None);
    };
    let started = i128::try_from(started.as_nanos()).unwrap_or(i128::MAX);
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let n = match file.read(&mut buf) {
            Ok(n) if n < buf.len() => n,
            // Larger than the buffer, interrupted, or would block (a FIFO
            // put where a file was listed): the general path decides.
            Ok(_) | Err(_) => return Ok(None),
        };
        let after = fstat(file).map_err(SkipReason::Unreadable)?;
        let settled = after.identity.ctime_ns < started.saturating_sub(settled_ns);
        if !after.regular || after.size() != n as u64 || !settled {
            return Ok(None);
        }
        let bytes = &buf[..n];
        let format = probe(bytes, options)?;
        let mut hasher = Hasher::new(options.algorithms);
        hasher.update(bytes);
        let hashed = HashedFile {
            path: PathBuf::new(),
            size: n as u64,
            modified: after.modified,
            digests: hasher.finalize(),
            format,
            from_cache: false,
        };
        Ok(Some((hashed, after.identity)))
    })
}

/// `fstat` of an open file: on Linux a `statx` asking only for what [`Stat`]
/// holds (std's `metadata` asks for everything and converts it).
#[cfg(target_os = "linux")]
fn fstat(file: &File) -> io::Result<Stat> {
    let at = rustix::fs::AtFlags::EMPTY_PATH;
    Ok(Stat::of_statx(&rustix::fs::statx(file, c"", at, STATX_MASK)?))
}

/// What a `statx` asks for: what [`Stat::of_statx`] reads, and no more.
#[cfg(target_os = "linux")]
pub(crate) const STATX_MASK: rustix::fs::StatxFlags = rustix::fs::StatxFlags::TYPE
    .union(rustix::fs::StatxFlags::MODE)
    .union(rustix::fs::StatxFlags::INO)
    .union(rustix::fs::StatxFlags::SIZE)
    .union(rustix::fs::StatxFlags::MTIME)
    .union(rustix::fs::StatxFlags::CTIME);

#[cfg(not(target_os = "linux"))]
fn fstat(file: &File) -> io::Result<Stat> {
    file.metadata().map(|meta| Stat::of(&meta))
}

/// An open folder whose files are opened relative to it.
#[cfg(target_os = "linux")]
pub(crate) type DirFd = std::os::fd::OwnedFd;
/// An open folder whose files are opened relative to it (Linux only; other
/// systems open every file by its path).
#[cfg(not(target_os = "linux"))]
pub(crate) type DirFd = std::convert::Infallible;

/// Opens `path` for reading, relative to `dir` when given. Non-blocking, so
/// that a FIFO put where a regular file was listed cannot hang the scan (the
/// `fstat` then reports it as not regular); reads of regular files ignore
/// the flag.
#[cfg(target_os = "linux")]
fn open(path: &Path, dir: Option<&DirFd>) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match (dir, path.file_name()) {
        (Some(dir), Some(name)) => rustix::fs::openat(dir, name, flags, Mode::empty())?,
        _ => rustix::fs::open(path, flags, Mode::empty())?,
    };
    Ok(File::from(fd))
}

/// Opens `path` for reading. Unlike the Linux path this open blocks: a FIFO
/// put where the walk's stat saw a regular file would wait for a writer.
#[cfg(not(target_os = "linux"))]
fn open(path: &Path, _: Option<&DirFd>) -> io::Result<File> {
    File::open(path)
}

/// The checks after a read: the file must still be the one `before`
/// describes, with `read` bytes; then the result (without its path).
fn finish(
    file: &File,
    before: &Stat,
    size: u64,
    read: u64,
    digests: Digests,
    format: Option<ExecutableFormat>,
) -> std::result::Result<(HashedFile, FileIdentity), SkipReason> {
    let after = fstat(file).map_err(SkipReason::Unreadable)?;
    let identity = before.identity;
    let now = after.identity;
    let same =
        (now.dev, now.ino, now.size, now.mtime_ns) == (identity.dev, identity.ino, size, identity.mtime_ns);
    if read != size || !same {
        return Err(SkipReason::Changed { before: size, after: after.size().max(read) });
    }
    let hashed = HashedFile {
        path: PathBuf::new(),
        size,
        modified: before.modified,
        digests,
        format,
        from_cache: false,
    };
    Ok((hashed, identity))
}

/// Reads the `size` bytes `fstat` reported, in [`READ_BUF`] chunks, hashing
/// as it goes. Returns the digests, the format and how many bytes were read.
///
/// It stops at `size` rather than at end of file: a file that grows during
/// the read is caught by the second `fstat` (its size differs), and a small
/// file costs one `read` instead of two. An empty file gets one read anyway,
/// so a pseudo-file that reports size 0 but has content (as in `/proc`) is
/// reported as changed rather than hashed as empty.
fn read_and_hash(
    file: &mut File,
    size: u64,
    options: &FileOptions,
) -> std::result::Result<(Digests, Option<ExecutableFormat>, u64), SkipReason> {
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut hasher = Hasher::new(options.algorithms);
        let mut total = 0u64;
        let mut format = None;
        loop {
            let want = usize::try_from(size - total).map_or(buf.len(), |left| left.clamp(1, buf.len()));
            let n = read_full(file, &mut buf[..want]).map_err(SkipReason::Unreadable)?;
            if total == 0 {
                format = probe(&buf[..n], options)?;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
            if n < want || total >= size {
                break;
            }
        }
        Ok((hasher.finalize(), format, total))
    })
}

/// Chunk size of the read-ahead thread: large enough that a hand-over (a
/// thread wake-up) costs nothing next to hashing the chunk (about 1 ms of
/// SHA-256). Measured on 1 GiB: 1 MiB chunks 0.558 s, 2 MiB 0.548 s, 4 MiB
/// 0.548 s, against 0.534 s of SHA-256 alone at this machine's 2.0 GB/s.
const AHEAD_CHUNK: usize = 2 << 20;

/// Reads `size` bytes on a helper thread, one chunk ahead, while this thread
/// hashes: SHA-256 here, and BLAKE3 (when asked for) beside it on another
/// core. Returns what [`read_and_hash`] returns; a file that ends early
/// (truncated during the read) returns fewer bytes than `size`.
fn read_ahead(
    file: &mut File,
    size: u64,
    options: &FileOptions,
) -> std::result::Result<(Digests, Option<ExecutableFormat>, u64), SkipReason> {
    use std::sync::mpsc::sync_channel;
    // Two buffers in flight: one being hashed, one being filled.
    let (full_tx, full_rx) = sync_channel::<io::Result<Vec<u8>>>(1);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        let _ = empty_tx.send(vec![0; AHEAD_CHUNK]);
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut left = size;
            while left > 0 {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let want = usize::try_from(left).map_or(AHEAD_CHUNK, |l| l.min(AHEAD_CHUNK));
                buf.resize(AHEAD_CHUNK, 0);
                let got = read_full(file, &mut buf[..want]);
                let stop = !matches!(got, Ok(n) if n == want);
                let sent = got.map(|n| {
                    buf.truncate(n);
                    buf
                });
                left -= want as u64;
                if full_tx.send(sent).is_err() || stop {
                    return;
                }
            }
        });
        // Owned here, so an early return drops them before the scope joins
        // the reader, which then sees closed channels and stops.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        let mut hasher = Hasher::new(options.algorithms);
        let mut total = 0u64;
        let mut format = None;
        for chunk in full_rx.iter() {
            let chunk = chunk.map_err(SkipReason::Unreadable)?;
            if total == 0 {
                format = probe(&chunk, options)?;
            }
            hasher.update_parallel(&chunk);
            total += chunk.len() as u64;
            // The reader may be done already; a failed send only means so.
            let _ = empty_tx.send(chunk);
        }
        Ok((hasher.finalize(), format, total))
    })
}

/// Bytes of one BLAKE3 subtree that one core reads and hashes in one go, in
/// [`blake3_subtrees`]: small enough that the buffer stays in the core's L2
/// cache between the copy and the hash, large enough for BLAKE3's widest
/// SIMD (16 chunks) and to make a `pread` and a rayon hand-over cheap.
/// Measured on 1 GiB from page cache (BLAKE3 alone, a 2-core Xeon, three
/// rounds): leaves of 128 KiB to 4 MiB all took 0.20-0.22 s; the copy out
/// of the page cache (0.16 s of system time per GiB), not the leaf size,
/// bounds this path, so the leaf is the 256 KiB read buffer itself.
#[cfg(unix)]
const SUBTREE_LEAF: usize = READ_BUF;

/// BLAKE3 of the `size` bytes of `file` on every core of the current rayon
/// pool, without a mapping: the BLAKE3 tree is split as the hash defines it
/// (the left subtree is the largest power of two of chunks below the whole)
/// down to [`SUBTREE_LEAF`] bytes; each leaf is read with `pread` into the
/// reading thread's buffer and hashed there, and the chaining values are
/// merged back up. This is what `blake3`'s own `update_rayon` does over a
/// slice in memory, with reads where that touches pages.
///
/// Returns what [`read_and_hash`] returns; when the file ends before `size`
/// (truncated during the read) the count is short, and the digest is
/// meaningless (the caller reports the file as changed).
#[cfg(unix)]
fn blake3_subtrees(
    file: &File,
    size: u64,
    options: &FileOptions,
) -> std::result::Result<(Digests, Option<ExecutableFormat>, u64), SkipReason> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root};

    /// What every leaf shares: the file, and how the read is going.
    struct Tree<'a> {
        file: &'a File,
        read: AtomicU64,
        /// Set by the first leaf that hits an error or the end of the file:
        /// the leaves not read yet are then left alone.
        stop: AtomicBool,
        error: std::sync::Mutex<Option<io::Error>>,
    }

    impl Tree<'_> {
        /// Reads `len` bytes at `offset` and gives them to `hash`, or
        /// `None` (and stops the tree) if they could not all be read.
        fn leaf<T>(&self, offset: u64, len: usize, hash: impl FnOnce(&[u8]) -> T) -> Option<T> {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                let bytes = &mut buf[..len];
                match read_full_at(self.file, bytes, offset) {
                    Ok(n) => {
                        self.read.fetch_add(n as u64, Ordering::Relaxed);
                        if n == len {
                            return Some(hash(bytes));
                        }
                    }
                    Err(e) => {
                        let mut error = self.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        error.get_or_insert(e);
                    }
                }
                self.stop.store(true, Ordering::Relaxed);
                None
            })
        }

        /// The chaining value of the subtree of `len` bytes at `offset`.
        fn subtree(&self, offset: u64, len: u64) -> Option<ChainingValue> {
            if len <= SUBTREE_LEAF as u64 {
                return self.leaf(offset, len as usize, |bytes| {
                    blake3::Hasher::new().set_input_offset(offset).update(bytes).finalize_non_root()
                });
            }
            let left = left_subtree_len(len);
            let (l, r) =
                rayon::join(|| self.subtree(offset, left), || self.subtree(offset + left, len - left));
            Some(merge_subtrees_non_root(&l?, &r?, Mode::Hash))
        }
    }

    let format = {
        let mut first = [0; FORMAT_PROBE_LEN];
        let n = read_full_at(file, &mut first, 0).map_err(SkipReason::Unreadable)?;
        probe(&first[..n], options)?
    };
    let tree =
        Tree { file, read: AtomicU64::new(0), stop: AtomicBool::new(false), error: Default::default() };
    let root = if size <= SUBTREE_LEAF as u64 {
        tree.leaf(0, size as usize, blake3::hash)
    } else {
        let left = left_subtree_len(size);
        let (l, r) = rayon::join(|| tree.subtree(0, left), || tree.subtree(left, size - left));
        l.zip(r).map(|(l, r)| blake3::hazmat::merge_subtrees_root(&l, &r, Mode::Hash))
    };
    if let Some(e) = tree.error.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(SkipReason::Unreadable(e));
    }
    let blake3 = root.map(|hash| privtel_model::Digest::from_bytes(*hash.as_bytes()));
    // A short read leaves `blake3` empty, and the count tells the caller.
    Ok((Digests { sha256: None, blake3 }, format, tree.read.into_inner()))
}

/// Fills `buf` from `offset` as far as the file allows, with `pread`
/// (which leaves the file offset alone, so several threads can share it).
#[cfg(unix)]
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The executable format from a file's first bytes (`first` may be longer
/// than the probe needs), or [`SkipReason::NotExecutable`] when only
/// executables are asked for and this is none.
fn probe(first: &[u8], options: &FileOptions) -> std::result::Result<Option<ExecutableFormat>, SkipReason> {
    let format = detect_format(&first[..first.len().min(FORMAT_PROBE_LEN)]);
    if options.executables_only && format.is_none() {
        return Err(SkipReason::NotExecutable);
    }
    Ok(format)
}

/// Fills `buf` as far as the file allows (so the format probe sees a whole
/// page even when the kernel returns short reads).
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The walk's `statx` and the standard library's `fstat` must describe a
    /// file identically, or the change check after every read would fail
    /// (and cache keys would differ between the two paths).
    #[test]
    fn statx_and_std_metadata_give_the_same_stat() {
        for path in ["/proc/self/exe", "/etc/hostname", "/"] {
            let path = Path::new(path);
            let Ok(meta) = std::fs::metadata(path) else { continue };
            let flags = rustix::fs::StatxFlags::BASIC_STATS;
            let st = rustix::fs::statx(rustix::fs::CWD, path, rustix::fs::AtFlags::empty(), flags).unwrap();
            let (a, b) = (Stat::of(&meta), Stat::of_statx(&st));
            assert_eq!(a.identity, b.identity, "{}", path.display());
            assert_eq!((a.modified, a.regular), (b.modified, b.regular), "{}", path.display());
        }
    }

    fn settled(path: &Path, options: &FileOptions, settled_ns: i128) -> Option<HashedFile> {
        let mut file = open(path, None).unwrap();
        read_settled(&mut file, options, settled_ns).unwrap().map(|(hashed, _)| hashed)
    }

    #[test]
    fn a_settled_small_file_is_hashed_with_one_read_and_one_fstat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let options = FileOptions::default();
        // Just written: not settled under the real margin.
        assert!(settled(&path, &options, SETTLED_NS).is_none());
        // With no margin it is, and the result is the file's.
        let hashed = settled(&path, &options, 0).unwrap();
        assert_eq!(hashed.digests, digest_bytes(Algorithms::Both, &bytes, false));
        assert_eq!(hashed.size, 3000);
        assert_eq!(hashed.modified, Stat::of(&std::fs::metadata(&path).unwrap()).modified);
    }

    #[test]
    fn unsettled_cases_are_left_to_the_general_path() {
        let options = FileOptions::default();
        // Reports size 0 but has content: the sizes differ.
        assert!(settled(Path::new("/proc/self/status"), &options, 0).is_none());
        // Fills the whole buffer: not small.
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![7u8; READ_BUF]).unwrap();
        assert!(settled(&big, &options, 0).is_none());
        // A FIFO: the non-blocking read would block.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
        assert!(settled(&fifo, &options, 0).is_none());
        // Through the general path all three get their usual outcome.
        let general = |p: &Path| hash_file_inner(p, &options, None, None).map(|(h, _)| h.size);
        assert!(matches!(general(Path::new("/proc/self/status")), Err(SkipReason::Changed { .. })));
        assert_eq!(general(&big).unwrap(), READ_BUF as u64);
        assert!(matches!(general(&fifo), Err(SkipReason::NotRegular)));
    }
}

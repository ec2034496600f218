//! Executions observed from `/proc`: the running processes, their
//! executables (hashed through the hash cache) and start times.

use privtel_hash::{FileOptions, HashCache, HashedFile};
use privtel_model::{BinarySighting, Timestamp};

use super::{CollectError, HostFiles, UserIds};

/// One running process, as the collector saw it. `Debug` shows the pid,
/// start and digest only (the path and login are personal).
#[derive(Clone)]
#[non_exhaustive]
pub struct RunningProcess {
    /// The process id.
    pub pid: u32,
    /// When it started, in clock ticks after boot (`/proc/PID/stat` field
    /// 22): with the boot time and the pid, what identifies it.
    pub start_ticks: u64,
    /// When it started: boot time plus `start_ticks` /
    /// [`CLOCK_TICKS_PER_SECOND`](super::CLOCK_TICKS_PER_SECOND).
    pub start: Timestamp,
    /// The owner's user number.
    pub uid: u32,
    /// The owner's login name, from `passwd`, if found.
    pub login: Option<String>,
    /// The executable's path, without the kernel's ` (deleted)` suffix.
    pub path: String,
    /// Whether the executable was deleted (or replaced) since it started:
    /// its digests are then those of the file the process runs, read
    /// through `/proc/PID/exe`.
    pub deleted: bool,
    /// The executable, hashed (or taken from the cache).
    pub file: HashedFile,
}

impl std::fmt::Debug for RunningProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProcess")
            .field("pid", &self.pid)
            .field("start_ticks", &self.start_ticks)
            .field("sha256", &self.file.digests.sha256)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

/// One look at the running processes. Every process listed is in exactly
/// one of `processes` or a count.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ProcessSnapshot {
    /// The boot time (`/proc/stat` `btime`, seconds since 1970).
    pub boot_time: i64,
    /// The processes whose executable was read and hashed.
    pub processes: Vec<RunningProcess>,
    /// Kernel threads (no executable).
    pub kernel_threads: u64,
    /// Zombies (ended, not yet reaped: no executable left).
    pub zombies: u64,
    /// Processes this account may not inspect (another user's, without
    /// the rights): counted, never silently left out.
    pub unreadable: u64,
    /// Processes that ended while they were read.
    pub vanished: u64,
    /// Processes whose `/proc/PID/stat` did not parse.
    pub malformed: u64,
    /// Executables that could be named but not hashed (changed while read).
    pub unhashed: u64,
    /// Executables read and hashed in this look (not from the cache).
    pub hashed: u64,
}

/// What [`Agent::collect_processes`](crate::Agent::collect_processes) did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ProcessReport {
    /// The look at the processes (counts included).
    pub running: usize,
    /// Processes reported for the first time (executions recorded).
    pub new: usize,
    /// As in [`ProcessSnapshot`].
    pub kernel_threads: u64,
    /// As in [`ProcessSnapshot`].
    pub zombies: u64,
    /// As in [`ProcessSnapshot`].
    pub unreadable: u64,
    /// As in [`ProcessSnapshot`].
    pub vanished: u64,
    /// As in [`ProcessSnapshot`].
    pub malformed: u64,
    /// As in [`ProcessSnapshot`].
    pub unhashed: u64,
    /// As in [`ProcessSnapshot`].
    pub hashed: u64,
    /// One sighting per distinct running binary (digests, size, format,
    /// day): what [`Agent::enhance`](crate::Agent::enhance) may send.
    pub sightings: Vec<BinarySighting>,
}

/// Reads the running processes from `/proc` and hashes their executables
/// through a [`HashCache`] (each version of a file is read once; a
/// process seen again costs a `stat`).
pub struct ProcessCollector {
    pub(crate) files: HostFiles,
    cache: HashCache,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    options: FileOptions,
    pub(crate) users: Option<UserIds>,
}

impl std::fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCollector")
            .field("files", &self.files)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    /// A collector of `/proc`, with an empty cache; SHA-256 and BLAKE3,
    /// one core per file (an agent in the background).
    pub fn new() -> Self {
        let mut options = FileOptions::default();
        options.parallel = false;
        Self { files: HostFiles::default(), cache: HashCache::new(), options, users: None }
    }

    /// Reads `files` instead of `/proc` and `/etc`.
    #[must_use]
    pub fn with_host_files(mut self, files: HostFiles) -> Self {
        self.files = files;
        self
    }

    /// Starts from `cache` (one saved by [`HashCache::save`]).
    #[must_use]
    pub fn with_cache(mut self, cache: HashCache) -> Self {
        self.cache = cache;
        self
    }

    /// Gives executions the user id `users` maps the owner's login to.
    #[must_use]
    pub fn with_users(mut self, users: UserIds) -> Self {
        self.users = Some(users);
        self
    }

    /// The hash cache (to save it).
    pub fn cache_mut(&mut self) -> &mut HashCache {
        &mut self.cache
    }

    /// Looks at the running processes.
    ///
    /// # Errors
    ///
    /// [`CollectError::NotSupported`] off Linux; [`CollectError::Read`]
    /// when `/proc` or `/proc/stat` cannot be read;
    /// [`CollectError::Parse`] when `/proc/stat` has no boot time.
    pub fn snapshot(&mut self) -> Result<ProcessSnapshot, CollectError> {
        #[cfg(target_os = "linux")]
        {
            self.snapshot_linux()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(super::not_supported("processes"))
        }
    }

    #[cfg(target_os = "linux")]
    fn snapshot_linux(&mut self) -> Result<ProcessSnapshot, CollectError> {
        use std::io::ErrorKind;
        use std::os::unix::fs::MetadataExt as _;

        let boot_time = super::parse_boot_time(&self.files.proc_text("stat")?)?;
        let passwd = self.files.etc_text("passwd");
        let mut snap = ProcessSnapshot { boot_time, ..ProcessSnapshot::default() };
        let read = |error| CollectError::Read { path: self.files.proc.clone(), error };
        let entries = std::fs::read_dir(&self.files.proc).map_err(read)?;
        let mut pids: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        pids.sort_unstable();
        for pid in pids {
            let dir = self.files.proc.join(pid.to_string());
            let gone_or_denied = |snap: &mut ProcessSnapshot, e: &std::io::Error| match e.kind() {
                ErrorKind::PermissionDenied => snap.unreadable += 1,
                _ => snap.vanished += 1,
            };
            let stat = match std::fs::read_to_string(dir.join("stat")) {
                Ok(text) => text,
                Err(e) => {
                    gone_or_denied(&mut snap, &e);
                    continue;
                }
            };
            let Ok(stat) = super::parse_proc_stat(&stat) else {
                snap.malformed += 1;
                continue;
            };
            if stat.state == 'Z' {
                snap.zombies += 1;
                continue;
            }
            let uid = match std::fs::metadata(&dir) {
                Ok(m) => m.uid(),
                Err(e) => {
                    gone_or_denied(&mut snap, &e);
                    continue;
                }
            };
            let exe = dir.join("exe");
            let target = match std::fs::read_link(&exe) {
                Ok(t) => t,
                // A kernel thread has no executable: its link reads ENOENT
                // while the process is there.
                Err(e) if e.kind() == ErrorKind::NotFound && dir.join("stat").exists() => {
                    snap.kernel_threads += 1;
                    continue;
                }
                Err(e) => {
                    gone_or_denied(&mut snap, &e);
                    continue;
                }
            };
            let file = match self.cache.hash_file(&exe, &self.options) {
                Ok(f) => f,
                Err(privtel_hash::Error::File { reason, .. }) => {
                    match reason {
                        privtel_hash::SkipReason::Vanished => snap.vanished += 1,
                        privtel_hash::SkipReason::Unreadable(e)
                            if e.kind() == ErrorKind::PermissionDenied =>
                        {
                            snap.unreadable += 1;
                        }
                        _ => snap.unhashed += 1,
                    }
                    continue;
                }
                Err(_) => {
                    snap.unhashed += 1;
                    continue;
                }
            };
            snap.hashed += u64::from(!file.from_cache);
            let text = target.to_string_lossy();
            let (path, deleted) = match text.strip_suffix(" (deleted)") {
                Some(p) => (p.to_owned(), true),
                None => (text.into_owned(), false),
            };
            let start = start_time(boot_time, stat.start_ticks);
            snap.processes.push(RunningProcess {
                pid,
                start_ticks: stat.start_ticks,
                start,
                uid,
                login: crate::login_of_uid(&passwd, uid).map(str::to_owned),
                path,
                deleted,
                file,
            });
        }
        Ok(snap)
    }
}

/// Boot time plus clock ticks, as an instant (the epoch for nonsense).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn start_time(boot_time: i64, ticks: u64) -> Timestamp {
    let hz = i128::from(super::CLOCK_TICKS_PER_SECOND);
    let nanos = i128::from(boot_time) * 1_000_000_000 + i128::from(ticks) * 1_000_000_000 / hz;
    Timestamp::from_unix_nanos(nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}

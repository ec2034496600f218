//! Endpoint collectors (Linux): executions from `/proc`, logins from
//! `wtmp`, device information and performance samples. Each goes through
//! the agent's filter ([`Agent::collect_processes`],
//! [`Agent::collect_logins`], [`Agent::collect_device`],
//! [`Agent::collect_performance`]) and commits its state — which
//! processes it reported, how far it read `wtmp` — in the same spool
//! transaction as the records it produced, so a restart neither loses nor
//! repeats one. docs/COLLECTORS.md describes each.
//!
//! On other systems every collector returns
//! [`CollectError::NotSupported`]: never an empty result that would read
//! as "nothing ran, nobody logged in".
//!
//! The parsers of what the collectors read ([`parse_utmp_record`],
//! [`parse_proc_stat`], [`parse_meminfo`], …) are pure and available on
//! every system.
//!
//! [`Agent::collect_processes`]: crate::Agent::collect_processes
//! [`Agent::collect_logins`]: crate::Agent::collect_logins
//! [`Agent::collect_device`]: crate::Agent::collect_device
//! [`Agent::collect_performance`]: crate::Agent::collect_performance

mod agent;
mod logins;
mod process;
mod procfs;
mod system;
mod utmp;

use std::path::PathBuf;
use std::sync::Arc;

use privtel_model::UserId;

pub use logins::{LoginLog, LoginReport, MAX_LOGIN_PROBLEMS};
pub use process::{ProcessCollector, ProcessReport, ProcessSnapshot, RunningProcess};
pub use procfs::{
    ADMIN_GROUPS, CpuInfo, LoadAvg, MemInfo, OsRelease, ProcError, ProcStat, parse_boot_time, parse_cpuinfo,
    parse_loadavg, parse_meminfo, parse_os_release, parse_proc_stat, privileges_of,
};
pub use system::{DEVICE_PRODUCT, DeviceInfo, DiskTotals, device_info, performance_samples};
pub use utmp::{UTMP_RECORD_LEN, UtmpError, UtmpKind, UtmpRecord, parse_utmp, parse_utmp_record};

/// Clock ticks per second of the times in `/proc/PID/stat` (`USER_HZ`).
/// Linux fixes it at 100 on every architecture it exports to user space
/// (`getconf CLK_TCK` prints 100); the kernel converts from its internal
/// `HZ` before writing the file, so no system call is needed to learn it.
pub const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// Why a collector gave nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// This system has no such source (not Linux).
    #[error(
        "the {collector} collector is not supported on {os}: it reads Linux's /proc, /etc and utmp files"
    )]
    NotSupported {
        /// Which collector.
        collector: &'static str,
        /// The system (`std::env::consts::OS`).
        os: &'static str,
    },
    /// A file the collector needs could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file (a `/proc` or `/etc` path, or the login log).
        path: PathBuf,
        /// What failed (in the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// A file the collector needs did not have the expected shape.
    #[error(transparent)]
    Parse(#[from] ProcError),
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn not_supported(collector: &'static str) -> CollectError {
    CollectError::NotSupported { collector, os: std::env::consts::OS }
}

/// Maps a login name to the opaque [`UserId`] the customer knows the
/// person by (a directory lookup, a table the installer wrote). Events
/// carry no user when it gives `None` — the default: a login is never
/// used as an id (docs/FIELDS.md, "Who").
pub type UserIds = Arc<dyn Fn(&str) -> Option<UserId> + Send + Sync>;

/// Where the collectors read the system: `/proc` and `/etc` by default;
/// tests point them at prepared copies.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostFiles {
    /// The proc file system (`/proc`).
    pub proc: PathBuf,
    /// The configuration folder (`/etc`): `passwd`, `group`, `os-release`.
    pub etc: PathBuf,
}

impl Default for HostFiles {
    fn default() -> Self {
        Self { proc: PathBuf::from("/proc"), etc: PathBuf::from("/etc") }
    }
}

impl HostFiles {
    /// The files under `proc` and `etc`.
    pub fn new(proc: impl Into<PathBuf>, etc: impl Into<PathBuf>) -> Self {
        Self { proc: proc.into(), etc: etc.into() }
    }

    /// Reads `etc/NAME`, empty when it does not exist or cannot be read
    /// (`passwd` and `group` only refine what is recorded).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn etc_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.etc.join(name)).unwrap_or_default()
    }

    /// Reads `proc/NAME` as text.
    #[cfg(target_os = "linux")]
    pub(crate) fn proc_text(&self, name: &str) -> Result<String, CollectError> {
        let path = self.proc.join(name);
        std::fs::read_to_string(&path).map_err(|error| CollectError::Read { path, error })
    }
}

/// The uid of login `name` in a `passwd(5)` text (the inverse of
/// [`login_of_uid`](crate::login_of_uid)).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn uid_of_login(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut cols = line.split(':');
        let (n, _, id) = (cols.next()?, cols.next()?, cols.next()?);
        (n == name).then(|| id.parse().ok()).flatten()
    })
}

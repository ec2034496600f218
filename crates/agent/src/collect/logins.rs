//! Logins from `wtmp`: followed exactly once, like the web log — the read
//! position (offset, file identity, generation) is committed with the
//! records read, across restarts, rotation and truncation.

use std::path::{Path, PathBuf};

use super::{HostFiles, UserIds, UtmpError};

/// How many problems a [`LoginReport`] keeps (the rest are counted).
pub const MAX_LOGIN_PROBLEMS: usize = 100;

/// A login log in the `struct utmp` format (`/var/log/wtmp`), followed
/// from where the agent last stopped.
///
/// Only `wtmp` is followed: it is appended to. `/var/run/utmp` holds the
/// sessions open now in slots that are rewritten in place, so a read
/// position in it means nothing; its records parse the same
/// ([`parse_utmp`](super::parse_utmp)).
#[derive(Clone)]
pub struct LoginLog {
    pub(crate) path: PathBuf,
    pub(crate) files: HostFiles,
    pub(crate) users: Option<UserIds>,
}

impl std::fmt::Debug for LoginLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLog").field("path", &self.path).finish_non_exhaustive()
    }
}

impl LoginLog {
    /// The login log at `path`; `passwd` and `group` from `/etc`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), files: HostFiles::default(), users: None }
    }

    /// `/var/log/wtmp`.
    pub fn wtmp() -> Self {
        Self::new("/var/log/wtmp")
    }

    /// Reads `passwd` and `group` (for the account's privileges) under
    /// `files.etc`.
    #[must_use]
    pub fn with_host_files(mut self, files: HostFiles) -> Self {
        self.files = files;
        self
    }

    /// Gives login events the user id `users` maps the login name to.
    #[must_use]
    pub fn with_users(mut self, users: UserIds) -> Self {
        self.users = Some(users);
        self
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name its read position is saved under in the spool.
    pub(crate) fn source(&self) -> String {
        format!("login-log:{}", self.path.display())
    }
}

/// What one pass over a login log did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginReport {
    /// The log.
    pub file: String,
    /// Whole records read.
    pub records: u64,
    /// Login events made (`USER_PROCESS` records naming a user).
    pub logins: u64,
    /// Records that did not decode (skipped, counted; the first
    /// [`MAX_LOGIN_PROBLEMS`] are in `problems`).
    pub bad: u64,
    /// The problems, by record offset, never a value read.
    pub problems: Vec<UtmpError>,
    /// The log was replaced since the last pass (rotated): the old file,
    /// found beside it by identity, was finished first.
    pub rotated: bool,
    /// The rotated file could not be found (deleted before it was
    /// finished): what it held after the last pass is lost, and said so.
    pub rotated_lost: bool,
    /// The log was truncated in place: read again from the start.
    pub truncated: bool,
    /// Bytes of a record still being written, left for the next pass.
    pub partial_bytes: u64,
}

impl LoginReport {
    pub(crate) fn problem(&mut self, e: UtmpError) {
        self.bad += 1;
        if self.problems.len() < MAX_LOGIN_PROBLEMS {
            self.problems.push(e);
        }
    }
}

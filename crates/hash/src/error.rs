//! Why a file was not hashed, and the crate's error type.

use std::io;
use std::path::PathBuf;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one file was not hashed. A scan reports these per file and goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// The file could not be opened or read (permission denied, I/O error).
    #[error("unreadable: {0}")]
    Unreadable(#[source] io::Error),
    /// The file was listed but was gone when it was opened.
    #[error("vanished before it was read")]
    Vanished,
    /// Its size or modification time differed before and after the read, so
    /// the digest would describe no version of the file that ever existed.
    /// (A small file whose change time is long past needs no `fstat` before
    /// the read: that time, older than the read, shows nothing changed.)
    #[error("changed while being read (size {before} -> {after} bytes)")]
    Changed {
        /// Size when the file was opened.
        before: u64,
        /// Size after the read.
        after: u64,
    },
    /// Larger than the configured limit.
    #[error("{size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not an ELF, PE, Mach-O or `#!` script, and only executables were asked for.
    #[error("not an executable")]
    NotExecutable,
    /// A symbolic link, and links are not followed.
    #[error("symbolic link not followed")]
    Symlink,
    /// A symbolic link that leads back to one of its own parent folders.
    #[error("symbolic link loop back to {0}")]
    SymlinkLoop(PathBuf),
    /// Not a regular file (a device, socket or FIFO): reading it could block
    /// forever or never end.
    #[error("not a regular file")]
    NotRegular,
}

impl SkipReason {
    pub(crate) fn from_open_error(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound { Self::Vanished } else { Self::Unreadable(e) }
    }
}

/// An error of `privtel-hash`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One file could not be hashed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        reason: SkipReason,
    },
    /// A cache file could not be read or written.
    #[error("hash cache {path}: {source}")]
    CacheIo {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A cache file is not one this version wrote (wrong magic or version,
    /// truncated, corrupt or oversized).
    #[error("hash cache {path} is not a valid cache: {reason}")]
    CacheFormat {
        /// The cache file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

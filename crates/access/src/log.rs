//! The log file: a header, then one frame per entry, appended and synced
//! one at a time.
//!
//! ```text
//! [8]  "PTACCLOG"
//! u32  log format version (1), big-endian
//! then for each entry, in sequence order:
//! u32  length of the entry's bytes, big-endian (at most MAX_ENTRY_LEN)
//! […]  the entry's canonical bytes (crate::entry)
//! ```
//!
//! Every byte of the file is either the fixed header, a length that must
//! frame exactly one strict entry, or an entry byte covered by the hash
//! chain: there is no byte whose change goes unnoticed by the verifier
//! (except in entries after the last checkpoint the customer holds).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::entry::{Entry, MAX_ENTRY_LEN};
use crate::error::{AccessError, DecodeError};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"PTACCLOG";
/// The log format version this crate writes and reads.
pub const LOG_VERSION: u32 = 1;
/// The header's length.
pub const HEADER_LEN: usize = 12;

/// The header of an empty log.
pub(crate) fn header() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&LOG_VERSION.to_be_bytes());
    out
}

/// One frame: the entry's length and bytes.
pub(crate) fn frame(entry: &Entry) -> Vec<u8> {
    let bytes = entry.encode();
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// A whole log file's bytes.
pub fn encode_log(entries: &[Entry]) -> Vec<u8> {
    let mut out = header();
    for e in entries {
        out.extend_from_slice(&frame(e));
    }
    out
}

/// Decodes a whole log file's bytes (strictly: a torn last frame is an
/// error here; see [`crate::AccessOptions::repair_torn_tail`] for the
/// service's side).
///
/// # Errors
///
/// [`DecodeError`] for anything but a header and whole, valid entries.
pub fn decode_log(bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let (entries, tail) = decode_prefix(bytes)?;
    match tail {
        None => Ok(entries),
        Some(Torn { offset, have, need }) => {
            Err(DecodeError::Truncated { what: "frame", offset, have, need })
        }
    }
}

/// A last frame cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Torn {
    pub(crate) offset: usize,
    pub(crate) have: usize,
    pub(crate) need: usize,
}

/// The whole entries, and where a last incomplete frame starts, if any.
pub(crate) fn decode_prefix(bytes: &[u8]) -> Result<(Vec<Entry>, Option<Torn>), DecodeError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(DecodeError::Header);
    }
    let mut version = [0; 4];
    version.copy_from_slice(&bytes[8..HEADER_LEN]);
    let version = u32::from_be_bytes(version);
    if version != LOG_VERSION {
        return Err(DecodeError::Version { what: "log format", found: version, expected: LOG_VERSION });
    }
    let mut entries = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < 4 {
            return Ok((entries, Some(Torn { offset: pos, have: rest.len(), need: 4 })));
        }
        let mut len = [0; 4];
        len.copy_from_slice(&rest[..4]);
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_ENTRY_LEN {
            return Err(DecodeError::FrameTooLong { offset: pos, len, max: MAX_ENTRY_LEN });
        }
        if rest.len() - 4 < len {
            return Ok((entries, Some(Torn { offset: pos, have: rest.len(), need: 4 + len })));
        }
        entries.push(Entry::decode(&rest[4..4 + len], pos + 4)?);
        pos += 4 + len;
    }
    Ok((entries, None))
}

/// The open log file: appends only, each synced before it returns.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    /// Its length after the last whole entry.
    len: u64,
    /// A write failed and could not be undone: no more writes.
    poisoned: bool,
}

impl LogFile {
    /// Opens (or creates) the log at `path`, locked against other
    /// processes, and returns its entries.
    pub(crate) fn open(path: &Path, repair_torn_tail: bool) -> Result<(Self, Vec<Entry>), AccessError> {
        let io = |op| move |source| AccessError::Io { op, source };
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(AccessError::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(AccessError::Io { op: "lock", source: e }),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        if bytes.is_empty() {
            file.write_all(&header()).map_err(io("write header"))?;
            file.sync_all().map_err(io("sync"))?;
            sync_dir(path).map_err(io("sync folder"))?;
            let log = Self { path: path.to_owned(), file, len: HEADER_LEN as u64, poisoned: false };
            return Ok((log, Vec::new()));
        }
        let (entries, torn) = decode_prefix(&bytes).map_err(AccessError::Corrupt)?;
        let mut len = bytes.len() as u64;
        if let Some(t) = torn {
            if !repair_torn_tail {
                return Err(AccessError::TornTail { offset: t.offset as u64, bytes: t.have as u64 });
            }
            len = t.offset as u64;
            file.set_len(len).map_err(io("cut torn tail"))?;
            file.sync_all().map_err(io("sync"))?;
        }
        Ok((Self { path: path.to_owned(), file, len, poisoned: false }, entries))
    }

    /// Appends one entry and syncs it to disk. A failed write is cut off
    /// again; if that fails too, the log takes no more entries.
    pub(crate) fn append(&mut self, entry: &Entry) -> Result<(), AccessError> {
        if self.poisoned {
            return Err(AccessError::Poisoned);
        }
        let bytes = frame(entry);
        let written = self.file.write_all(&bytes).and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            let undone = self.file.set_len(self.len).and_then(|()| self.file.sync_all());
            if undone.is_err() {
                self.poisoned = true;
            }
            return Err(AccessError::Io { op: "append", source });
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Reads the file as it is on disk now.
    pub(crate) fn read_all(&self) -> Result<Vec<u8>, AccessError> {
        std::fs::read(&self.path).map_err(|source| AccessError::Io { op: "read", source })
    }
}

/// Makes a new file's name durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

//! The audit log: every message that leaves the device, decoded, as JSON
//! Lines, so a customer can see exactly what was sent. Bounded: created
//! 0600, rotated by size and by time, and expired under the same time to
//! live as the data it describes: no line outlives the TTL.
//!
//! Sealed when the agent's spool is ([`crate::Agent::with_audit_log`]):
//! each line's message is then AES-256-GCM under the spool's key, and only
//! its instant and kind (`hello`, `batch`, …) read without the key, as
//! the spool's payloads. [`read_audit_log`] (and the `audit` example:
//! `cargo run --example audit -- --spool SPOOL LOG`) opens it with the
//! key.
//!
//! How a line's life is bounded: a file holds lines of at most a quarter
//! of the TTL (a line that would make the current file span more is
//! written to a new one), and a rotated file is named by the instant of
//! its *first* line. A file is removed, or the current one emptied, as
//! soon as its first line is past the TTL: its other lines go with it,
//! up to a quarter of the TTL before their time, never after.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use privtel_model::Timestamp;
use privtel_store::AtRestKey;
use time::Duration;

use crate::error::AgentError;

/// Limits of an audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditOptions {
    /// Size at which the current file is rotated (default 8 MiB: a few
    /// thousand batches' worth of messages at typical sizes).
    pub max_bytes: u64,
    /// Rotated files kept at most, newest first (default 4), so the log
    /// never holds more than `(keep + 1) × max_bytes`.
    pub keep: usize,
    /// Time to live of what the log describes (default 30 days, the
    /// longest event TTL): no line is kept past it. Each file covers at
    /// most a quarter of it, and goes (a rotated file removed, the current
    /// one emptied) once its first line is past it.
    pub ttl: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self { max_bytes: 8 << 20, keep: 4, ttl: Duration::days(30) }
    }
}

impl AuditOptions {
    /// Options with this TTL and the default sizes.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { ttl, ..Self::default() }
    }
}

/// An append-only JSON Lines file of what left the device.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    size: u64,
    options: AuditOptions,
    /// The instant of the current file's first line (read back from the
    /// file when it is opened; `None`: the file is empty).
    started: Option<Timestamp>,
    /// The key messages are sealed with (`None`: written in clear).
    key: Option<AtRestKey>,
}

/// One line of an audit log, opened: when a message left, its kind, and
/// the message as JSON.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// When it was sent.
    pub at: Timestamp,
    /// Its kind (`hello`, `batch`, `sightings`, …).
    pub kind: String,
    /// The message, as it was sent, as JSON.
    pub message: serde_json::Value,
}

/// A line as written: the message in clear, or sealed (`key`: the key's
/// id; `sealed`: the nonce and ciphertext, in hex).
#[derive(serde::Deserialize)]
struct StoredLine {
    at: String,
    kind: String,
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    key: Option<u32>,
    #[serde(default)]
    sealed: Option<String>,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the audit log at `path`. An existing
    /// file that group or others could read is narrowed to 0600.
    ///
    /// # Errors
    ///
    /// [`AgentError::Audit`] if the file cannot be opened.
    pub fn open(path: impl AsRef<Path>, options: AuditOptions) -> Result<Self, AgentError> {
        let path = path.as_ref().to_owned();
        let file =
            open_append(&path).map_err(|source| AgentError::Audit { path: path.clone(), error: source })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let started = if size == 0 { None } else { Some(first_line_at(&path)) };
        Ok(Self { path, file, size, options, started, key: None })
    }

    /// The same log with every message written from now on sealed with
    /// `key` (AES-256-GCM, a fresh nonce a line): only each line's instant
    /// and kind read without it. [`crate::Agent::with_audit_log`] seals
    /// with the spool's key when the spool is sealed.
    #[must_use]
    pub fn sealed_with(mut self, key: AtRestKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Whether messages are sealed.
    pub fn is_sealed(&self) -> bool {
        self.key.is_some()
    }

    /// The longest span of time one file's lines cover: a quarter of the
    /// TTL (at least a second).
    fn span(&self) -> Duration {
        (self.options.ttl / 4_i32).max(Duration::SECOND)
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line `{"at", "kind", "message"}`, rotating first if the
    /// line would take the file past its size.
    ///
    /// # Errors
    ///
    /// [`AgentError::Audit`] if writing fails.
    pub fn write(
        &mut self,
        kind: &str,
        message: &impl serde::Serialize,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        // Serialised straight to text: a batch of thousands of records
        // never exists as a JSON tree in memory.
        #[derive(serde::Serialize)]
        struct Line<'a, T> {
            at: String,
            kind: &'a str,
            message: &'a T,
        }
        // Sealed: the line is written in pieces, the ciphertext in hex a
        // chunk at a time, so a large batch is held as its JSON and its
        // ciphertext only, never also as hex and as a line.
        let (head, body, tail) = match &self.key {
            None => {
                let line = serde_json::to_string(&Line { at: now.to_string(), kind, message })
                    .map_err(|e| self.err(std::io::Error::other(e)))?;
                (line, Vec::new(), String::new())
            }
            Some(key) => {
                let plain = serde_json::to_vec(message).map_err(|e| self.err(std::io::Error::other(e)))?;
                let (id, sealed) = privtel_store::parts::seal_encoded(plain, Some(key))
                    .map_err(|e| self.err(std::io::Error::other(e.to_string())))?;
                let key = id.unwrap_or(key.id().get());
                let at = serde_json::to_string(&now.to_string())
                    .map_err(|e| self.err(std::io::Error::other(e)))?;
                let kind = serde_json::to_string(kind).map_err(|e| self.err(std::io::Error::other(e)))?;
                (
                    format!("{{\"at\":{at},\"kind\":{kind},\"key\":{key},\"sealed\":\""),
                    sealed,
                    "\"}".to_owned(),
                )
            }
        };
        let len = (head.len() + 2 * body.len() + tail.len()) as u64 + 1;
        let too_long = self
            .started
            .is_some_and(|first| first.checked_add(self.span()).is_none_or(|end| now >= end) || now < first);
        if self.size > 0 && (self.size + len > self.options.max_bytes || too_long) {
            self.rotate()?;
        }
        let mut out = std::io::BufWriter::with_capacity(64 << 10, &self.file);
        let written = (|| {
            out.write_all(head.as_bytes())?;
            let mut hexed = String::with_capacity(2 * 4096);
            for chunk in body.chunks(4096) {
                hexed.clear();
                push_hex(&mut hexed, chunk);
                out.write_all(hexed.as_bytes())?;
            }
            out.write_all(tail.as_bytes())?;
            out.write_all(b"\n")?;
            out.flush()
        })();
        drop(out);
        written.map_err(|e| self.err(e))?;
        self.size += len;
        self.started.get_or_insert(now);
        Ok(())
    }

    /// Deletes what is past the TTL at `now`: every rotated file whose
    /// first line is older than `now - ttl`, and the current file's
    /// content if its first line is. Returns the number of files removed
    /// or emptied.
    ///
    /// # Errors
    ///
    /// [`AgentError::Audit`] if a file cannot be listed or removed.
    pub fn expire(&mut self, now: Timestamp) -> Result<u64, AgentError> {
        let cutoff = now.checked_sub(self.options.ttl).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut removed = 0;
        for (first, path) in self.rotated()? {
            if first < cutoff.unix_nanos() {
                std::fs::remove_file(&path).map_err(|e| self.err(e))?;
                removed += 1;
            }
        }
        if self.size > 0 && self.started.is_none_or(|first| first < cutoff) {
            self.file.set_len(0).map_err(|e| self.err(e))?;
            self.size = 0;
            self.started = None;
            removed += 1;
        }
        Ok(removed)
    }

    /// Rotated files, oldest first, with the instant of their first line
    /// (a file an earlier version rotated is named by the instant it was
    /// rotated instead, which is later).
    fn rotated(&self) -> Result<Vec<(i128, PathBuf)>, AgentError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = format!("{name}.");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| self.err(e))? {
            let entry = entry.map_err(|e| self.err(e))?;
            let file_name = entry.file_name();
            let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
            if let Ok(at) = rest.parse::<i128>() {
                // A file an earlier version rotated is named by the instant
                // it was rotated: its first line counts if it is older.
                let first = first_line_at(&entry.path()).unix_nanos();
                out.push((at.min(first), entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Moves the current file aside as `NAME.<unix ns of its first line>`
    /// and starts a new one; drops the oldest rotated files beyond `keep`.
    fn rotate(&mut self) -> Result<(), AgentError> {
        // Named by the first line's instant, made unique: two files may
        // start at one instant (one upload's messages share a clock
        // reading) and must not overwrite each other.
        let mut at = self.started.unwrap_or(Timestamp::UNIX_EPOCH).unix_nanos();
        let aside = loop {
            let mut aside = self.path.clone().into_os_string();
            aside.push(format!(".{at}"));
            let aside = PathBuf::from(aside);
            if !aside.exists() {
                break aside;
            }
            at += 1;
        };
        std::fs::rename(&self.path, &aside).map_err(|e| self.err(e))?;
        self.file = open_append(&self.path).map_err(|e| self.err(e))?;
        self.size = 0;
        self.started = None;
        let rotated = self.rotated()?;
        let excess = rotated.len().saturating_sub(self.options.keep);
        for (_, path) in rotated.into_iter().take(excess) {
            std::fs::remove_file(path).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn err(&self, source: std::io::Error) -> AgentError {
        AgentError::Audit { path: self.path.clone(), error: source }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file)
}

/// The instant of the first line of the audit file at `path`; the Unix
/// epoch when it cannot be read or parsed, so that a file of unknown age
/// is expired at once rather than kept.
fn first_line_at(path: &Path) -> Timestamp {
    use std::io::{BufRead as _, Read as _};
    #[derive(serde::Deserialize)]
    struct At {
        at: String,
    }
    let Ok(file) = File::open(path) else { return Timestamp::UNIX_EPOCH };
    // A line is one message: read at most what the first one needs to
    // name its instant, whatever the file holds.
    let mut first = Vec::new();
    let mut reader = std::io::BufReader::new(file).take(64);
    let _ = reader.read_until(b'\n', &mut first);
    // The line starts `{"at":"<timestamp>",`: parse that prefix alone.
    let text = String::from_utf8_lossy(&first);
    let prefix = match text.find("\",\"") {
        Some(end) => format!("{}\"}}", &text[..end]),
        None => return Timestamp::UNIX_EPOCH,
    };
    serde_json::from_str::<At>(&prefix).ok().and_then(|a| a.at.parse().ok()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks_exact(2).map(|p| Some((digit(p[0])? << 4) | digit(p[1])?)).collect()
}

impl AuditLog {
    /// Every line of the audit file at `path`, oldest first, its sealed
    /// messages opened with `key`.
    ///
    /// ```
    /// use privtel_agent::{AuditLog, AuditOptions};
    /// use privtel_store::AtRestKey;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("audit.jsonl");
    /// let key = AtRestKey::new(1, [9; 32]);
    /// let now = privtel_model::Timestamp::UNIX_EPOCH;
    /// let mut log = AuditLog::open(&path, AuditOptions::default())?.sealed_with(key.clone());
    /// log.write("batch", &serde_json::json!({ "domain": "example.com" }), now)?;
    /// assert!(!std::fs::read_to_string(&path)?.contains("example.com"), "sealed");
    /// let lines = AuditLog::read(&path, Some(&key))?;
    /// assert_eq!(lines[0].kind, "batch");
    /// assert_eq!(lines[0].message["domain"], "example.com");
    /// let err = AuditLog::read(&path, Some(&AtRestKey::new(1, [8; 32]))).unwrap_err();
    /// assert!(err.to_string().ends_with("line 1: a sealed message the key given does not open"), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AgentError::Audit`] naming the file and the line (never its
    /// content): unreadable, not a line of an audit log, or sealed with a
    /// key not given.
    pub fn read(path: impl AsRef<Path>, key: Option<&AtRestKey>) -> Result<Vec<AuditEntry>, AgentError> {
        let path = path.as_ref();
        let failed = |error: std::io::Error| AgentError::Audit { path: path.to_owned(), error };
        let text = std::fs::read_to_string(path).map_err(failed)?;
        Self::parse(&text, key).map_err(|e| failed(std::io::Error::other(e.to_string())))
    }

    /// The lines of an audit log's text, oldest first, its sealed messages
    /// opened with `key` ([`AuditLog::read`] without the file).
    ///
    /// # Errors
    ///
    /// [`AuditLineError`] naming the first bad line and what is wrong with
    /// it, never its content.
    pub fn parse(text: &str, key: Option<&AtRestKey>) -> Result<Vec<AuditEntry>, AuditLineError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |problem| AuditLineError { line: i + 1, problem };
            let stored: StoredLine =
                serde_json::from_str(line).map_err(|_| bad("not a line of an audit log"))?;
            let at = stored.at.parse().map_err(|_| bad("an instant that does not parse"))?;
            let message = match (stored.message, stored.sealed) {
                (Some(message), None) => message,
                (None, Some(_)) if stored.key.is_none() => {
                    return Err(bad("a sealed message without its key id"));
                }
                (None, Some(sealed)) => {
                    let sealed = unhex(&sealed).ok_or_else(|| bad("a sealed message that is not hex"))?;
                    let Some(key) = key else { return Err(bad("a sealed message, and no key given")) };
                    let row = i64::try_from(i + 1).unwrap_or(i64::MAX);
                    let plain = privtel_store::parts::unseal_bytes(row, stored.key, &sealed, Some(key))
                        .map_err(|_| bad("a sealed message the key given does not open"))?;
                    serde_json::from_slice(&plain).map_err(|_| bad("a sealed message that is not JSON"))?
                }
                _ => return Err(bad("expected one message, in clear or sealed")),
            };
            out.push(AuditEntry { at, kind: stored.kind, message });
        }
        Ok(out)
    }
}

/// A line of an audit log that does not read: its number (1-based) and
/// what is wrong with it. Never its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct AuditLineError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Every line of the audit file at `path` written by an agent whose spool
/// is at `spool` (opened with its key, `SPOOL.seal.key`, as
/// [`crate::Agent::open`] made it; a log in clear needs none; nothing is
/// created). A spool sealed with a key of the caller's own
/// (`SpoolOptions::key`) seals its audit log with that key: read it with
/// [`AuditLog::read`].
///
/// # Errors
///
/// A key error when the spool's key file is unusable; as
/// [`AuditLog::read`] otherwise.
pub fn read_audit_log(
    path: impl AsRef<Path>,
    spool: impl AsRef<Path>,
) -> Result<Vec<AuditEntry>, AgentError> {
    let key_file = crate::key_path(spool, "seal");
    let key = crate::keys::load_existing_key(&key_file)?.map(|secret| AtRestKey::new(1, secret));
    AuditLog::read(path, key.as_ref())
}

//! The web-log collector: reads a log of web requests once, exactly, across
//! crashes, restarts, rotation and truncation.
//!
//! Format: one request a line, tab-separated: time (RFC 3339), user id,
//! URL, destination IP, page load in milliseconds. Blank lines and lines
//! starting with `#` are skipped. A line counts once it ends with a newline:
//! a writer may be half-way through the last one.

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use privtel_model::{
    DeviceId, Event, EventBody, EventId, Personal, Program, Record, RecordBody, Timestamp, UserId, WebRequest,
};
use privtel_store::SourcePosition;
use time::Duration;

use crate::error::{AgentError, LineProblem};

/// The longest line read (64 KiB): far above any real request line; a
/// longer one is skipped as a problem, so a line without newlines cannot
/// make the agent hold a whole file.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// Lines spooled per transaction (2,048): one disk sync per chunk, and the
/// chunk's records are all the agent holds in memory at once.
pub const CHUNK_LINES: usize = 2048;

/// Problems kept per file for the report (the count is exact beyond it).
pub const MAX_PROBLEMS_KEPT: usize = 100;

/// A web log to follow, named by its path as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebLog {
    path: PathBuf,
}

impl WebLog {
    /// The log at `path`. The path as given names the source: its read
    /// position is kept under it, and event ids derive from it.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self { path: path.as_ref().to_owned() }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The source's name in the spool.
    pub(crate) fn source(&self) -> String {
        format!("web-log:{}", self.path.display())
    }

    /// Where the file before the last rotation was read up to: a writer
    /// keeps appending to it until it reopens the log.
    pub(crate) fn previous_source(&self) -> String {
        format!("{}#previous", self.source())
    }
}

/// What one pass over a source did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceReport {
    /// The file, as named.
    pub file: String,
    /// Lines read in this pass (good, bad and comments).
    pub lines: u64,
    /// Records produced (before the filter).
    pub records: u64,
    /// Lines skipped as malformed (exact count).
    pub skipped: u64,
    /// The first [`MAX_PROBLEMS_KEPT`] of them.
    pub problems: Vec<LineProblem>,
    /// Whether the file was found replaced (rotated) since the last pass.
    pub rotated: bool,
    /// Whether the file was found truncated since the last pass.
    pub truncated: bool,
    /// Lines finished from the rotated file before starting the new one.
    pub rotated_lines: u64,
    /// The rotated file that was finished, as found.
    pub rotated_file: Option<String>,
    /// How many of `problems` (the first ones) are the rotated file's.
    rotated_problems: usize,
}

impl SourceReport {
    /// The problems as `file:line: column problem` lines.
    pub fn problem_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().enumerate().map(|(i, p)| {
            let file = match &self.rotated_file {
                Some(rotated) if i < self.rotated_problems => rotated,
                _ => &self.file,
            };
            format!("{file}:{}: {} {}", p.line, p.column, p.problem)
        })
    }

    fn problem(&mut self, p: LineProblem) {
        self.skipped += 1;
        if self.problems.len() < MAX_PROBLEMS_KEPT {
            self.problems.push(p);
        }
    }
}

/// A file's identity: device and inode (on Unix), so a replaced file is
/// told from a grown one.
pub(crate) fn identity(meta: &std::fs::Metadata) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let mut id = meta.dev().to_le_bytes().to_vec();
        id.extend_from_slice(&meta.ino().to_le_bytes());
        id
    }
    #[cfg(not(unix))]
    {
        meta.created().ok().map(|t| format!("{t:?}").into_bytes()).unwrap_or_default()
    }
}

/// The event id of the line at `offset` of generation `generation` of
/// `source` on `device`: the same line always gets the same id, so a replay
/// is recognised by the service.
pub(crate) fn line_event_id(
    device: &DeviceId,
    source: &str,
    identity: &[u8],
    generation: u64,
    offset: u64,
) -> EventId {
    crate::event_id::derive(
        "privtel-agent 2026-11 source line event id",
        &[
            device.as_str().as_bytes(),
            source.as_bytes(),
            identity,
            &generation.to_le_bytes(),
            &offset.to_le_bytes(),
        ],
    )
}

/// Parses one web-log line into a record. The error names the column and
/// what was expected, never the value.
///
/// # Errors
///
/// `(column, problem)` for a line that is not five valid columns.
pub fn parse_web_line(
    line: &str,
    device: &DeviceId,
    id: EventId,
) -> Result<Record, (&'static str, &'static str)> {
    let mut cols = line.split('\t');
    let (Some(time), Some(user), Some(url), Some(ip), Some(load), None) =
        (cols.next(), cols.next(), cols.next(), cols.next(), cols.next(), cols.next())
    else {
        return Err(("line", "does not have 5 tab-separated columns (time, user, url, ip, page load ms)"));
    };
    let at: Timestamp = time.parse().map_err(|_| ("time", "is not an rfc 3339 date and time"))?;
    let user = UserId::new(user).map_err(|_| ("user", "is not a valid user id"))?;
    // The host field holds the host only, never the URL's path or query.
    let host = privtel_domain::Normalizer::shared()
        .normalize(url)
        .map_err(|_| ("url", "is not a url with a host"))?
        .host()
        .to_owned();
    let destination_ip = ip.parse().map_err(|_| ("ip", "is not an ip address"))?;
    let ms: u32 = load.parse().map_err(|_| ("page load", "is not a whole number of milliseconds"))?;
    Ok(Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Event(Event {
            id,
            device: device.clone(),
            user: Some(user),
            recorded_at: at,
            body: EventBody::WebRequest(WebRequest {
                url: Personal::Clear(url.to_owned()),
                host: Personal::Clear(host),
                destination_ip: Personal::Clear(destination_ip),
                destination_port: 443,
                page_load: Personal::Clear(Duration::milliseconds(i64::from(ms))),
                visit_count: 1,
            }),
        }),
    })
}

/// Parses a whole web-log text (for tests, examples and one-shot tools; the
/// agent follows files with [`crate::Agent::collect_web_log`]). Event ids
/// derive from `file` and each line's byte offset. Returns the records and
/// a report of the lines skipped.
pub fn parse_web_log(text: &str, file: &str, device: &DeviceId) -> (Vec<Record>, SourceReport) {
    let mut report = SourceReport { file: file.to_owned(), ..SourceReport::default() };
    let mut out = Vec::new();
    let mut offset = 0u64;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len() as u64;
        report.lines += 1;
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_web_line(line, device, line_event_id(device, file, &[], 0, start)) {
            Ok(r) => out.push(r),
            Err((column, problem)) => report.problem(LineProblem { line: i as u64 + 1, column, problem }),
        }
    }
    report.records = out.len() as u64;
    (out, report)
}

/// One chunk of parsed lines and the position after them.
pub(crate) struct Chunk {
    pub(crate) records: Vec<Record>,
    pub(crate) position: SourcePosition,
}

/// Reads a source from its saved position, chunk by chunk. `sink` spools
/// each chunk with its position in one transaction.
pub(crate) fn follow(
    log: &WebLog,
    saved: Option<SourcePosition>,
    previous: Option<SourcePosition>,
    device: &DeviceId,
    mut sink: impl FnMut(Chunk) -> Result<(), AgentError>,
) -> Result<SourceReport, AgentError> {
    let source = log.source();
    let src_err = |source: std::io::Error| AgentError::Source { path: log.path.clone(), error: source };
    let mut report = SourceReport { file: log.path.display().to_string(), ..SourceReport::default() };
    // A FIFO or a device would block an open or a read: only regular files,
    // checked before opening and again on what was opened.
    let not_regular = || src_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    if !std::fs::metadata(&log.path).map_err(src_err)?.is_file() {
        return Err(not_regular());
    }
    let file = open_nonblocking(&log.path).map_err(src_err)?;
    let meta = file.metadata().map_err(src_err)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let id = identity(&meta);
    let ctx = Ctx { device, id_source: source.clone() };
    // Reads the file before a rotation (found beside the log by identity)
    // from `from`: what the writer added after the last pass saw it moved.
    let mut finish_previous = |from: SourcePosition, save: bool, report: &mut SourceReport| {
        let Some(old) = find_rotated(&log.path, &from.identity) else { return Ok(()) };
        let len = std::fs::metadata(&old).map(|m| m.len()).unwrap_or(0);
        if len <= from.offset && !save {
            return Ok(());
        }
        let file = open_nonblocking(&old).map_err(src_err)?;
        let before = report.lines;
        report.rotated_file = Some(old.display().to_string());
        read_from(file, from, save, &ctx, report, &mut sink)?;
        report.rotated_lines += report.lines - before;
        report.rotated_problems = report.problems.len();
        Ok::<(), AgentError>(())
    };
    let rotated_now = matches!(&saved, Some(p) if p.identity != id);
    if let Some(prev) = &previous {
        let now_finished_below = matches!(&saved, Some(p) if rotated_now && p.identity == prev.identity);
        if !now_finished_below {
            finish_previous(prev.clone(), false, &mut report)?;
        }
    }
    // A file seen for the first time, and a new generation (a file replaced
    // or truncated), is saved at once, in a commit of its own before any
    // line is read: an agent killed before its first chunk was spooled, or
    // whose first pass found no whole line, still knows the file's
    // identity, so after a rotation it finds the file by it and finishes
    // it; and a file that regrows past the old offset is not mistaken for
    // the old one. Lines then commit with their positions, chunk by chunk.
    let mut changed = false;
    let start = match saved {
        None => {
            changed = true;
            SourcePosition::new(&source, id, 0, 0, 0)
        }
        Some(p) if p.identity == id => {
            if meta.len() < p.offset {
                // Truncated in place (logrotate's copytruncate): a new
                // generation from the start.
                report.truncated = true;
                changed = true;
                SourcePosition::new(&source, id, p.generation + 1, 0, 0)
            } else {
                p
            }
        }
        Some(p) => {
            // Replaced (logrotate's create): finish the old file where it
            // now lives — from the previous-file position if a pass already
            // began it — and keep following it under the previous-file
            // name; then start the new one.
            report.rotated = true;
            changed = true;
            let from = match previous {
                Some(q) if q.identity == p.identity && q.offset >= p.offset => q,
                _ => {
                    let mut from = p.clone();
                    from.source = log.previous_source();
                    from
                }
            };
            finish_previous(from, true, &mut report)?;
            SourcePosition::new(&source, id, p.generation + 1, 0, 0)
        }
    };
    if changed {
        sink(Chunk { records: Vec::new(), position: start.clone() })?;
    }
    read_from(file, start, false, &ctx, &mut report, &mut sink)?;
    Ok(report)
}

/// What every read of one source shares.
struct Ctx<'a> {
    device: &'a DeviceId,
    /// The source's name in event ids: the same whichever position (the
    /// log's or the previous file's) tracks a line.
    id_source: String,
}

/// Opens a file for reading without blocking on a FIFO (Linux).
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, 0o4000); // O_NONBLOCK
    options.open(path)
}

/// A file beside `path` whose name starts with `path`'s and whose identity
/// is `identity` (`access.log.1`, `access.log-20261130`, …).
pub(crate) fn find_rotated(path: &Path, identity_wanted: &[u8]) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name()?.to_str()?.to_owned();
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).find_map(|entry| {
        let n = entry.file_name();
        let n = n.to_str()?;
        if n == name || !n.starts_with(&name) {
            return None;
        }
        let meta = entry.metadata().ok()?;
        (meta.is_file() && identity(&meta) == identity_wanted).then(|| entry.path())
    })
}

/// Reads `file` from `pos`, parsing lines into chunks; a last line without
/// a newline waits (a writer may be half-way through it). With `save`, the
/// position is saved even when no line follows.
fn read_from(
    mut file: File,
    mut pos: SourcePosition,
    save: bool,
    ctx: &Ctx<'_>,
    report: &mut SourceReport,
    sink: &mut impl FnMut(Chunk) -> Result<(), AgentError>,
) -> Result<(), AgentError> {
    let path = PathBuf::from(&report.file);
    let src_err = |source: std::io::Error| AgentError::Source { path: path.clone(), error: source };
    file.seek(SeekFrom::Start(pos.offset)).map_err(src_err)?;
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut buf = Vec::with_capacity(1024);
    let mut records = Vec::with_capacity(CHUNK_LINES);
    let mut lines_in_chunk = 0;
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf).map_err(src_err)?;
        let mut too_long = false;
        let mut consumed = n as u64;
        let mut ended = buf.last() == Some(&b'\n');
        if n > MAX_LINE_BYTES && !ended {
            // Skip to the end of this over-long line, without holding it.
            too_long = true;
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader)
                    .take(MAX_LINE_BYTES as u64)
                    .read_until(b'\n', &mut rest)
                    .map_err(src_err)?;
                consumed += m as u64;
                if rest.last() == Some(&b'\n') {
                    ended = true;
                    break;
                }
                if m == 0 {
                    break;
                }
            }
        }
        // A line still being written (no newline yet) waits, however long:
        // consuming half of it would make its rest look like a line.
        let complete = ended;
        if n == 0 || !complete {
            // End of what is written: a partial line waits for its newline.
            break;
        }
        let start = pos.offset;
        pos.offset += consumed;
        pos.line += 1;
        report.lines += 1;
        lines_in_chunk += 1;
        if too_long {
            report.problem(LineProblem {
                line: pos.line,
                column: "line",
                problem: "is longer than 65536 bytes",
            });
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => {
                    report.problem(LineProblem { line: pos.line, column: "line", problem: "is not utf-8" })
                }
                Ok(text) => {
                    let text = text.trim_end_matches(['\n', '\r']);
                    if !(text.trim().is_empty() || text.starts_with('#')) {
                        let id =
                            line_event_id(ctx.device, &ctx.id_source, &pos.identity, pos.generation, start);
                        match parse_web_line(text, ctx.device, id) {
                            Ok(r) => records.push(r),
                            Err((column, problem)) => {
                                report.problem(LineProblem { line: pos.line, column, problem });
                            }
                        }
                    }
                }
            }
        }
        if lines_in_chunk >= CHUNK_LINES {
            report.records += records.len() as u64;
            sink(Chunk { records: std::mem::take(&mut records), position: pos.clone() })?;
            lines_in_chunk = 0;
        }
    }
    if lines_in_chunk > 0 || save {
        report.records += records.len() as u64;
        sink(Chunk { records, position: pos })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;

    use privtel_store::{Spool, SpoolOptions};

    use super::*;

    fn now() -> Timestamp {
        "2026-11-27T10:00:00Z".parse().unwrap()
    }

    fn device() -> DeviceId {
        DeviceId::new("dev-1").unwrap()
    }

    /// Appends lines `lines` (each naming its number in its URL), as a
    /// writer would.
    fn write_lines(path: &Path, lines: std::ops::Range<usize>) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        let text: String = lines
            .map(|i| {
                format!("2026-11-27T09:00:00Z\tu-{}\thttps://site.example/p?i={i}\t203.0.113.9\t5\n", i % 7)
            })
            .collect();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Where a pass's process is SIGKILLed.
    #[derive(Clone, Copy, Debug)]
    enum Kill {
        /// Just before its commit number `n` (from 0), whatever it holds.
        BeforeCommit(usize),
        /// Just before the commit of its chunk of lines number `n` (from
        /// 0): `BeforeLines(0)` is a process killed after it opened the
        /// log, before any of its lines was spooled.
        BeforeLines(usize),
    }

    /// One pass of an agent process over `log`, as `Agent::collect_web_log`
    /// does it (each chunk's records and position in one transaction), the
    /// process killed at `kill`: what it committed before stays, nothing
    /// else does. Returns whether the pass finished.
    fn pass(spool: &Path, log: &WebLog, kill: Option<Kill>) -> bool {
        let mut spool = Spool::open(spool, SpoolOptions::default()).unwrap();
        let saved = spool.source_position(&log.source()).unwrap();
        let previous = spool.source_position(&log.previous_source()).unwrap();
        let (mut commits, mut chunks) = (0, 0);
        let result = follow(log, saved, previous, &device(), |chunk| {
            let killed = match kill {
                Some(Kill::BeforeCommit(n)) => commits == n,
                Some(Kill::BeforeLines(n)) => !chunk.records.is_empty() && chunks == n,
                None => false,
            };
            if killed {
                return Err(AgentError::Source {
                    path: log.path.clone(),
                    error: std::io::Error::other("killed"),
                });
            }
            commits += 1;
            chunks += usize::from(!chunk.records.is_empty());
            spool.append_at(&chunk.records, Some(&chunk.position), now())?;
            Ok(())
        });
        result.is_ok()
    }

    /// How many times each line number is in the spool.
    fn spooled(spool: &Path) -> BTreeMap<usize, usize> {
        let spool = Spool::open(spool, SpoolOptions::default()).unwrap();
        let mut seen = BTreeMap::new();
        for s in spool.next_batch(Program::PersonalisedUsage, usize::MAX).unwrap() {
            let RecordBody::Event(Event { body: EventBody::WebRequest(w), .. }) = s.record.body else {
                panic!("not a web request: {:?}", s.record);
            };
            let Personal::Clear(url) = w.url else { panic!("url not in clear") };
            let i: usize = url.rsplit_once("?i=").unwrap().1.parse().unwrap();
            *seen.entry(i).or_insert(0) += 1;
        }
        seen
    }

    /// The agent killed before each chunk of lines of its first pass —
    /// also right after it first opened the log, before any line was
    /// spooled — then the log rotated (the writer adding to the old file a
    /// while), the agent killed at every commit of the next pass, and then
    /// left to finish: every line of both files is spooled exactly once.
    /// (A process killed before the first commit of its first pass has not
    /// seen the file: a rotation then hides it, as if the agent had never
    /// run; its first commit holds no line, so the window is small.)
    #[test]
    fn a_pass_killed_at_any_commit_around_a_rotation_spools_every_line_once() {
        let (before, added, after) = (CHUNK_LINES + 500, 100, CHUNK_LINES + 100);
        for first in (0..2).map(Kill::BeforeLines).map(Some).chain([None]) {
            // At most 5 commits: the old file's 2 chunks, the new file's
            // generation, its 2 chunks.
            for second in (0..5).map(Kill::BeforeCommit) {
                let dir = tempfile::tempdir().unwrap();
                let (path, spool) = (dir.path().join("web.log"), dir.path().join("spool.db"));
                let log = WebLog::new(&path);
                write_lines(&path, 0..before);
                pass(&spool, &log, first);
                // logrotate moves the file aside and creates a new one; the
                // writer adds to the old one until it reopens the log.
                std::fs::rename(&path, dir.path().join("web.log.1")).unwrap();
                write_lines(&dir.path().join("web.log.1"), before..before + added);
                write_lines(&path, before + added..before + added + after);
                pass(&spool, &log, Some(second));
                assert!(pass(&spool, &log, None));
                assert!(pass(&spool, &log, None), "nothing new: the pass finishes");
                let seen = spooled(&spool);
                let total = before + added + after;
                let missing = (0..total).filter(|i| !seen.contains_key(i)).count();
                let twice = seen.values().filter(|&&n| n > 1).count();
                assert_eq!(
                    (missing, twice, seen.len()),
                    (0, 0, total),
                    "killed at {first:?} in the first pass and at {second:?} in the second"
                );
            }
        }
    }
}

//! The agent's side of the collectors: every record through the filter,
//! the collector's state in the same transaction as its records.

use std::collections::{BTreeMap, HashSet};

use privtel_model::{
    BinarySighting, DeviceId, Event, EventBody, EventId, Execution, Login, Personal, Program, Record,
    RecordBody, Timestamp,
};
use privtel_store::{MarkChange, SourcePosition};

use super::process::{ProcessCollector, ProcessReport, RunningProcess};
use super::{CollectError, HostFiles, LoginLog, LoginReport, UserIds};
use crate::agent::{Agent, Collected, sighted};
use crate::error::AgentError;
use crate::marks::{self, PROCESS};

/// Whole records read and committed at a time from a login log (384 KiB).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const LOGIN_CHUNK_RECORDS: usize = 1024;

/// The event id of the execution of process `pid` started `ticks` after
/// the boot at `boot_time`: the same process always gets the same id.
fn process_event_id(device: &DeviceId, boot_time: i64, pid: u32, ticks: u64) -> EventId {
    crate::event_id::derive(
        "privtel-agent 2026-12 process event id",
        &[device.as_str().as_bytes(), &boot_time.to_le_bytes(), &pid.to_le_bytes(), &ticks.to_le_bytes()],
    )
}

fn execution(
    p: &RunningProcess,
    boot_time: i64,
    device: &DeviceId,
    users: Option<&UserIds>,
    now: Timestamp,
) -> Option<Record> {
    let sha256 = p.file.digests.sha256?;
    Some(Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Event(Event {
            id: process_event_id(device, boot_time, p.pid, p.start_ticks),
            device: device.clone(),
            user: p.login.as_deref().and_then(|l| users.and_then(|u| u(l))),
            recorded_at: now,
            body: EventBody::Execution(Execution {
                sha256,
                username: p.login.clone().map_or(Personal::Withheld, Personal::Clear),
                path: Personal::Clear(p.path.clone()),
                start: Personal::Clear(p.start),
                duration: Personal::Withheld,
            }),
        }),
    })
}

impl Agent {
    /// Looks at the running processes and records, through the filter, an
    /// execution for each process not reported before (a process is its
    /// boot, pid and start time), with the owner's login, the executable's
    /// path and digests and the start time. In the same transaction the
    /// spool remembers which processes are running (so a restart reports
    /// none again) and, when enrichment is on, that each running binary
    /// was active now (to the hour; Enhance's timing). Processes that
    /// cannot be inspected are counted in the report.
    ///
    /// # Errors
    ///
    /// [`AgentError::Collect`] when `/proc` cannot be read (or off Linux);
    /// a spool error, nothing committed then.
    pub fn collect_processes(
        &mut self,
        collector: &mut ProcessCollector,
        now: Timestamp,
    ) -> Result<(ProcessReport, Collected), AgentError> {
        let snap = collector.snapshot()?;
        let seen: HashSet<Vec<u8>> = self.outbox.marks(PROCESS)?.into_iter().map(|(k, _)| k).collect();
        let enrichment = self.filter.enabled(Program::Enrichment);
        let active = marks::hour(now);
        let (mut records, mut changes, mut keep) = (Vec::new(), Vec::new(), Vec::new());
        let mut sightings = BTreeMap::new();
        let mut report = ProcessReport {
            running: snap.processes.len(),
            kernel_threads: snap.kernel_threads,
            zombies: snap.zombies,
            unreadable: snap.unreadable,
            vanished: snap.vanished,
            malformed: snap.malformed,
            unhashed: snap.unhashed,
            hashed: snap.hashed,
            ..ProcessReport::default()
        };
        for p in &snap.processes {
            let key = self.marks.key(
                PROCESS,
                &[&snap.boot_time.to_le_bytes(), &p.pid.to_le_bytes(), &p.start_ticks.to_le_bytes()],
            );
            if !seen.contains(&key) {
                if let Some(r) = execution(p, snap.boot_time, &self.device, collector.users.as_ref(), now) {
                    records.push(r);
                    report.new += 1;
                }
                changes.push(MarkChange::Active { scope: PROCESS, key: key.clone(), at: active });
            }
            keep.push(key);
            let Some(sha256) = p.file.digests.sha256 else { continue };
            sightings.entry(sha256).or_insert_with(|| {
                if enrichment {
                    let key = marks::binary_key(&self.marks, &sha256);
                    changes.push(MarkChange::Active { scope: marks::BINARY, key, at: active });
                }
                BinarySighting::new(sha256, p.file.digests.blake3, p.file.size, p.file.format.clone(), now)
            });
        }
        changes.push(MarkChange::Retain { scope: PROCESS, keep });
        report.sightings = sightings.into_values().collect();
        let sighted = sighted(&self.filter, &records);
        let (kept, redaction) = self.ids.filter(&self.filter, records);
        self.outbox.append_marked(&kept, None, &changes, now)?;
        let mut collected = Collected::default();
        collected.merge(&kept, &redaction, sighted);
        Ok((report, collected))
    }

    /// Reads `log` (`wtmp`) from where the last pass stopped and records,
    /// through the filter, a login event (under benchmarking, the program
    /// that carries logins) for each `USER_PROCESS` record: its time, the
    /// account's privileges, the user id `log`'s mapping gives. Records
    /// are read in chunks; each chunk's events are spooled with the new
    /// position in one transaction. A replaced log (rotation) is first
    /// finished where it now lies (found beside it by identity); a log
    /// truncated in place is read again from the start, as a new
    /// generation. Records that do not decode are skipped and counted.
    ///
    /// # Errors
    ///
    /// [`AgentError::Collect`] when the log cannot be opened or read (or
    /// off Linux); a spool error. Chunks spooled before stay spooled.
    pub fn collect_logins(
        &mut self,
        log: &LoginLog,
        now: Timestamp,
    ) -> Result<(LoginReport, Collected), AgentError> {
        #[cfg(target_os = "linux")]
        {
            self.collect_logins_linux(log, now)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (log, now);
            Err(super::not_supported("login").into())
        }
    }

    #[cfg(target_os = "linux")]
    fn collect_logins_linux(
        &mut self,
        log: &LoginLog,
        now: Timestamp,
    ) -> Result<(LoginReport, Collected), AgentError> {
        use crate::weblog::{find_rotated, identity, open_nonblocking};

        let source = log.source();
        let read_err = |path: &std::path::Path| {
            let path = path.to_owned();
            move |error| AgentError::Collect(CollectError::Read { path: path.clone(), error })
        };
        let not_regular = || {
            read_err(&log.path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"))
        };
        if !std::fs::metadata(&log.path).map_err(read_err(&log.path))?.is_file() {
            return Err(not_regular());
        }
        let file = open_nonblocking(&log.path).map_err(read_err(&log.path))?;
        let meta = file.metadata().map_err(read_err(&log.path))?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        let id = identity(&meta);
        let ctx = LoginCtx {
            passwd: log.files.etc_text("passwd"),
            group: log.files.etc_text("group"),
            users: log.users.clone(),
        };
        let mut report = LoginReport { file: log.path.display().to_string(), ..LoginReport::default() };
        let mut collected = Collected::default();
        // A log seen for the first time, or truncated (a new generation),
        // is saved at once, before any record is read: a rotation before
        // the first record still finds it by its identity.
        let start = match self.outbox.position(&source)? {
            None => {
                let start = SourcePosition::new(&source, id, 0, 0, 0);
                self.outbox.append_marked(&[], Some(&start), &[], now)?;
                start
            }
            Some(p) if p.identity == id => {
                if meta.len() < p.offset {
                    report.truncated = true;
                    let start = SourcePosition::new(&source, id, p.generation + 1, 0, 0);
                    self.outbox.append_marked(&[], Some(&start), &[], now)?;
                    start
                } else {
                    p
                }
            }
            Some(p) => {
                // Replaced: finish the old file where it lies now, chunk by
                // chunk under its own identity, then start the new one.
                report.rotated = true;
                let next = SourcePosition::new(&source, id, p.generation + 1, 0, 0);
                match find_rotated(&log.path, &p.identity) {
                    Some(old) => {
                        let file = open_nonblocking(&old).map_err(read_err(&old))?;
                        self.read_logins(file, p, Some(next.clone()), &ctx, &mut report, &mut collected, now)
                            .map_err(|e| e.at(&old))?;
                    }
                    None => {
                        report.rotated_lost = true;
                        self.outbox.append_marked(&[], Some(&next), &[], now)?;
                    }
                }
                next
            }
        };
        self.read_logins(file, start, None, &ctx, &mut report, &mut collected, now)
            .map_err(|e| e.at(&log.path))?;
        Ok((report, collected))
    }

    /// Reads whole records of `file` from `pos`, committing each chunk's
    /// login events with its position; with `then`, the last commit saves
    /// `then` instead (the log's next file) — with whatever records it
    /// holds.
    #[cfg(target_os = "linux")]
    #[allow(clippy::too_many_arguments)]
    fn read_logins(
        &mut self,
        file: std::fs::File,
        mut pos: SourcePosition,
        then: Option<SourcePosition>,
        ctx: &LoginCtx,
        report: &mut LoginReport,
        collected: &mut Collected,
        now: Timestamp,
    ) -> Result<(), ReadError> {
        use std::io::{Read as _, Seek as _, SeekFrom};

        let mut file = file;
        file.seek(SeekFrom::Start(pos.offset)).map_err(ReadError::Io)?;
        let chunk_bytes = (LOGIN_CHUNK_RECORDS * super::UTMP_RECORD_LEN) as u64;
        let mut buf = Vec::with_capacity(chunk_bytes as usize);
        loop {
            buf.clear();
            (&mut file).take(chunk_bytes).read_to_end(&mut buf).map_err(ReadError::Io)?;
            let whole = buf.len() - buf.len() % super::UTMP_RECORD_LEN;
            let last = whole < chunk_bytes as usize;
            let mut records = Vec::new();
            for (i, rec) in buf[..whole].chunks(super::UTMP_RECORD_LEN).enumerate() {
                let offset = pos.offset + (i * super::UTMP_RECORD_LEN) as u64;
                report.records += 1;
                match super::parse_utmp_record(rec, offset) {
                    Ok(r) => {
                        if let Some(event) = login_event(&r, &pos, offset, &self.device, ctx, now) {
                            records.push(event);
                            report.logins += 1;
                        }
                    }
                    Err(e) => report.problem(e),
                }
            }
            pos.offset += whole as u64;
            pos.line += (whole / super::UTMP_RECORD_LEN) as u64;
            if last {
                report.partial_bytes = (buf.len() - whole) as u64;
                if then.is_some() && report.partial_bytes > 0 {
                    // The old file ends in part of a record: it never
                    // will be whole now. Counted as a bad record.
                    report.problem(super::UtmpError::Truncated {
                        offset: pos.offset,
                        len: report.partial_bytes as usize,
                    });
                    report.partial_bytes = 0;
                }
            }
            let save = if last { then.clone().unwrap_or_else(|| pos.clone()) } else { pos.clone() };
            if whole > 0 || last && then.is_some() {
                let sighted = sighted(&self.filter, &records);
                let (kept, redaction) = self.ids.filter(&self.filter, records);
                self.outbox.append_marked(&kept, Some(&save), &[], now).map_err(ReadError::Agent)?;
                collected.merge(&kept, &redaction, sighted);
            }
            if last {
                return Ok(());
            }
        }
    }

    /// Describes the device (OS, kernel, CPU, memory, disks, the agent's
    /// privileges) and records it through the filter, under anonymous
    /// usage ([`DeviceInfo::records`](super::DeviceInfo::records)).
    ///
    /// # Errors
    ///
    /// [`AgentError::Collect`] when the system cannot be read (or off
    /// Linux); a spool error.
    pub fn collect_device(&mut self, files: &HostFiles, now: Timestamp) -> Result<Collected, AgentError> {
        let info = super::device_info(files)?;
        self.collect(info.records(&self.device, now), now)
    }

    /// Measures the device (load, memory, disks, uptime) and records the
    /// samples through the filter, under anonymous usage, one performance
    /// event each.
    ///
    /// # Errors
    ///
    /// [`AgentError::Collect`] when the system cannot be read (or off
    /// Linux); a spool error.
    pub fn collect_performance(
        &mut self,
        files: &HostFiles,
        now: Timestamp,
    ) -> Result<Collected, AgentError> {
        let samples = super::performance_samples(files)?;
        let records = super::system::sample_records(samples, &self.device, now);
        self.collect(records, now)
    }
}

/// What every login event of one pass shares.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct LoginCtx {
    passwd: String,
    group: String,
    users: Option<UserIds>,
}

/// A failure while reading a login log: of the file (its path added by
/// the caller) or of the spool.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum ReadError {
    Io(std::io::Error),
    Agent(AgentError),
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
impl ReadError {
    fn at(self, path: &std::path::Path) -> AgentError {
        match self {
            Self::Io(error) => AgentError::Collect(CollectError::Read { path: path.to_owned(), error }),
            Self::Agent(e) => e,
        }
    }
}

/// The login event of `r` (a `USER_PROCESS` record naming a user) at
/// `offset` of the file `pos` reads; `None` for other records.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn login_event(
    r: &super::UtmpRecord,
    pos: &SourcePosition,
    offset: u64,
    device: &DeviceId,
    ctx: &LoginCtx,
    now: Timestamp,
) -> Option<Record> {
    if r.kind != super::UtmpKind::UserProcess || r.user.is_empty() {
        return None;
    }
    let privileges = super::uid_of_login(&ctx.passwd, &r.user)
        .map_or(Personal::Withheld, |uid| Personal::Clear(super::privileges_of(uid, &r.user, &ctx.group)));
    Some(Record {
        program: Program::Benchmarking,
        body: RecordBody::Event(Event {
            id: crate::weblog::line_event_id(device, &pos.source, &pos.identity, pos.generation, offset),
            device: device.clone(),
            user: ctx.users.as_ref().and_then(|u| u(&r.user)),
            recorded_at: now,
            body: EventBody::Login(Login {
                time: Personal::Clear(r.time),
                duration: Personal::Withheld,
                privileges,
            }),
        }),
    })
}

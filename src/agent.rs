//! The device side, composed from the crates: turn scans and web logs into
//! records, filter them, spool them, upload them, look up verdicts; and the
//! enrichment schedule as pure functions of an injected clock.

use std::io::{Read, Write};
use std::path::Path;

use privtel_filter::{Filter, RedactionReport};
use privtel_hash::ScanReport;
use privtel_model::{
    BatchId, Binary, BinaryExecution, BinaryVerdict, CustomerId, DeviceId, Digest, Domain, DomainVerdict,
    Event, EventBody, EventId, Generalised, Personal, Program, Record, RecordBody, Timestamp, UserId,
    WebRequest,
};
use privtel_store::Spool;
use privtel_wire::{Batch, Connection, Hello, Message};
use time::Duration;

/// An input line that could not be read, naming the file and line.
#[derive(Debug, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct InputError {
    /// The file, as the caller named it.
    pub file: String,
    /// The line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Errors of an agent cycle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The spool failed.
    #[error(transparent)]
    Store(#[from] privtel_store::Error),
    /// The connection failed (the spool keeps everything not acknowledged).
    #[error(transparent)]
    Wire(#[from] privtel_wire::Error),
    /// The service answered out of turn.
    #[error("the service answered {got} where {expected} was expected")]
    Protocol {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// Writing the audit log failed.
    #[error("writing the audit log: {0}")]
    Audit(#[source] std::io::Error),
}

/// Records for every hashed executable of a scan: the binary (enrichment)
/// and one execution event by `user`.
pub fn records_from_scan(
    scan: &ScanReport,
    device: &DeviceId,
    user: Option<&UserId>,
    now: Timestamp,
) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, file) in scan.hashed.iter().enumerate() {
        let Some(sha256) = file.digests.sha256 else { continue };
        let path = file.path.display().to_string();
        out.push(Record {
            program: Program::Enrichment,
            body: RecordBody::Binary(Binary {
                sha256,
                blake3: file.digests.blake3,
                file_name: file
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: Personal::Clear(path.clone()),
                version: None,
                publisher: None,
                size: file.size,
                format: file.format.clone(),
            }),
        });
        out.push(Record {
            program: Program::Enrichment,
            body: RecordBody::Event(Event {
                id: event_id(device, "exec", i as u64, now),
                device: device.clone(),
                user: user.cloned(),
                recorded_at: now,
                body: EventBody::Execution(BinaryExecution {
                    sha256,
                    username: user.map_or(Personal::Withheld, |u| Personal::Clear(u.to_string())),
                    path: Personal::Clear(path),
                    start: file.modified.map_or(Personal::Withheld, Personal::Clear),
                    duration: Personal::Withheld,
                }),
            }),
        });
    }
    out
}

/// A stable event id from what identifies the event.
fn event_id(device: &DeviceId, kind: &str, n: u64, at: Timestamp) -> EventId {
    let mut h = blake3::Hasher::new();
    h.update(device.as_str().as_bytes());
    h.update(kind.as_bytes());
    h.update(&n.to_le_bytes());
    h.update(&at.unix_nanos().to_le_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    EventId::from_bytes(b)
}

/// Reads a web log: one request a line, tab-separated: time (RFC 3339),
/// user id, URL, destination IP, page load in milliseconds. Blank lines and
/// lines starting with `#` are skipped.
///
/// # Errors
///
/// [`InputError`] naming `file` and the line.
pub fn parse_web_log(text: &str, file: &str, device: &DeviceId) -> Result<Vec<Record>, InputError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        // Messages name the column, never the value: a web log is personal.
        let bad =
            |message: &str| InputError { file: file.to_owned(), line: line_no, message: message.to_owned() };
        let cols: Vec<&str> = line.split('\t').collect();
        let [time, user, url, ip, load] = cols[..] else {
            return Err(bad(&format!(
                "{} columns, expected 5 (time, user, url, ip, page load ms)",
                cols.len()
            )));
        };
        let at: Timestamp = time.parse().map_err(|_| bad("time is not an rfc 3339 date and time"))?;
        let ms: i64 = load.parse().map_err(|_| bad("page load is not a whole number of milliseconds"))?;
        out.push(Record {
            program: Program::Enrichment,
            body: RecordBody::Event(Event {
                id: event_id(device, "web", line_no as u64, at),
                device: device.clone(),
                user: Some(UserId::new(user).map_err(|_| bad("user is not a valid user id"))?),
                recorded_at: at,
                body: EventBody::WebRequest(WebRequest {
                    url: Personal::Clear(url.to_owned()),
                    host: Personal::Clear(url.to_owned()),
                    destination_ip: Personal::Clear(
                        ip.parse().map_err(|_| bad("destination is not an ip address"))?,
                    ),
                    destination_port: 443,
                    page_load: Personal::Clear(Duration::milliseconds(ms)),
                    visit_count: 1,
                }),
            }),
        });
    }
    Ok(out)
}

/// What one collection spooled.
#[derive(Debug)]
#[non_exhaustive]
pub struct Collected {
    /// What the filter did.
    pub report: RedactionReport,
    /// Records spooled.
    pub records: usize,
    /// Digests of the binaries among them, for enrichment.
    pub binaries: Vec<Digest>,
    /// Registrable domains among them, for enrichment.
    pub domains: Vec<Domain>,
}

/// What one upload did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct UploadReport {
    /// Records acknowledged, per program.
    pub sent: std::collections::BTreeMap<Program, u64>,
    /// Batches sent.
    pub batches: u64,
}

/// The agent: a filter in front of a spool, and an uploader behind it.
pub struct Agent {
    /// The customer.
    pub customer: CustomerId,
    /// This device.
    pub device: DeviceId,
    filter: Filter,
    spool: Spool,
    audit: Option<Box<dyn Write + Send>>,
    batch_counter: u128,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("customer", &self.customer)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent filtering with `filter` into `spool`.
    pub fn new(customer: CustomerId, device: DeviceId, filter: Filter, spool: Spool) -> Self {
        Self { customer, device, filter, spool, audit: None, batch_counter: 0 }
    }

    /// Writes every message the agent sends, decoded, as JSON Lines to
    /// `audit`, so a customer can see exactly what leaves the machine.
    #[must_use]
    pub fn with_audit_log(mut self, audit: Box<dyn Write + Send>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The spool.
    pub fn spool(&mut self) -> &mut Spool {
        &mut self.spool
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Filters records and appends what passes to the spool (durably).
    /// Returns the report and what the records ask enrichment about: the
    /// binaries' digests and the registrable domains that passed the filter.
    ///
    /// # Errors
    ///
    /// A spool error; nothing of the call is spooled then.
    pub fn collect(&mut self, records: Vec<Record>, now: Timestamp) -> Result<Collected, AgentError> {
        let (kept, report) = self.filter.apply_batch(records);
        self.spool.append_batch(&kept, now)?;
        let mut binaries: Vec<Digest> = kept
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::Binary(b) => Some(b.sha256),
                _ => None,
            })
            .collect();
        binaries.sort();
        binaries.dedup();
        Ok(Collected { report, domains: domains_in(&kept), binaries, records: kept.len() })
    }

    /// Consent withdrawn: purges the program's waiting records.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn withdraw(&mut self, program: Program) -> Result<u64, AgentError> {
        Ok(self.spool.purge_program(program)?)
    }

    fn audit(&mut self, msg: &Message) -> Result<(), AgentError> {
        if let Some(out) = &mut self.audit {
            let body = match msg {
                Message::Hello(m) => serde_json::to_value(m),
                Message::Batch(m) => serde_json::to_value(m),
                Message::EnrichQuery(m) => serde_json::to_value(m),
                Message::Goodbye(m) => serde_json::to_value(m),
                _ => Ok(serde_json::Value::Null),
            }
            .map_err(|e| AgentError::Audit(std::io::Error::other(e)))?;
            let line = serde_json::json!({ "kind": msg.kind_name(), "message": body });
            writeln!(out, "{line}").and_then(|()| out.flush()).map_err(AgentError::Audit)?;
        }
        Ok(())
    }

    fn send<S: Write>(&mut self, conn: &mut Connection<S>, msg: &Message) -> Result<(), AgentError> {
        self.audit(msg)?;
        Ok(conn.send(msg)?)
    }

    /// Negotiates, then sends every waiting record in gap-free batches of one
    /// program, removing each batch from the spool only once the service
    /// acknowledged it. A failure leaves the rest in the spool for the next
    /// try (the service stores a retried batch once).
    ///
    /// # Errors
    ///
    /// A wire, spool or protocol error.
    pub fn upload<S: Read + Write>(
        &mut self,
        conn: &mut Connection<S>,
        policy_version: u32,
    ) -> Result<UploadReport, AgentError> {
        let consent = Program::ALL.iter().map(|p| (*p, self.filter.enabled(*p))).collect();
        let hello = Hello::new(
            env!("CARGO_PKG_VERSION"),
            self.customer.clone(),
            self.device.clone(),
            consent,
            policy_version,
        );
        self.audit(&Message::Hello(hello.clone()))?;
        let welcome = conn.client_handshake(&hello)?;
        // Everything at or below the service's high-water mark is stored
        // (an acknowledgement lost with a dropped connection): drop it here
        // instead of sending it again.
        for program in Program::ALL {
            self.spool.ack(program, welcome.high_water)?;
        }
        let mut report = UploadReport::default();
        while let Some((program, run)) = self.spool.next_run(welcome.max_batch_records as usize)? {
            let first_seq = run[0].seq;
            let last_seq = run[run.len() - 1].seq;
            self.batch_counter += 1;
            let records: Vec<Record> = run.into_iter().map(|s| s.record).collect();
            let n = records.len() as u64;
            let batch_id = BatchId::from_u128(u128::from(first_seq) << 64 | u128::from(last_seq));
            self.send(conn, &Message::Batch(Batch { program, batch_id, first_seq, records }))?;
            match conn.recv()? {
                Message::Ack(ack) if ack.batch_id == batch_id => {
                    self.spool.ack(program, ack.accepted_up_to.min(last_seq))?;
                    *report.sent.entry(program).or_default() += n;
                    report.batches += 1;
                }
                other => return Err(AgentError::Protocol { expected: "ack", got: other.kind_name() }),
            }
        }
        Ok(report)
    }

    /// A private enrichment lookup (hash prefixes only) for these binaries
    /// and domains; `-` verdicts for anything the service does not know.
    ///
    /// # Errors
    ///
    /// A wire or protocol error.
    pub fn enrich<S: Read + Write>(
        &mut self,
        conn: &mut Connection<S>,
        binaries: &[Digest],
        domains: &[Domain],
    ) -> Result<(Vec<BinaryVerdict>, Vec<DomainVerdict>), AgentError> {
        let query = privtel_wire::private_query(1, binaries, domains, privtel_wire::DEFAULT_PREFIX_LEN);
        self.send(conn, &Message::EnrichQuery(query))?;
        match conn.recv()? {
            Message::EnrichAnswer(answer) => Ok(privtel_wire::verdicts_for(&answer, binaries, domains)),
            other => Err(AgentError::Protocol { expected: "enrich answer", got: other.kind_name() }),
        }
    }

    /// Ends the conversation.
    ///
    /// # Errors
    ///
    /// A wire error.
    pub fn goodbye<S: Write>(&mut self, conn: &mut Connection<S>) -> Result<(), AgentError> {
        self.send(conn, &Message::Goodbye(privtel_wire::Goodbye { reason: "cycle done".into() }))
    }
}

/// The registrable domains in filtered records (web requests whose host was
/// generalised to its domain), sorted and without duplicates.
pub fn domains_in(records: &[Record]) -> Vec<Domain> {
    let mut out: Vec<Domain> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Event(Event { body: EventBody::WebRequest(w), .. }) => match &w.host {
                Personal::Generalised(Generalised::Domain(d)) => Some(d.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// When the enrichment cycle acts, from the design: the first upload five
/// minutes after start-up, binaries active in the last seven days
/// re-evaluated every 24 hours, new binaries and domains looked up within
/// five minutes. Pure: every decision takes `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Delay of the first upload after start-up (5 minutes; 0 in the demo).
    pub first_upload_after: Duration,
    /// How often active binaries are re-evaluated (24 hours).
    pub reevaluate_every: Duration,
    /// A binary counts as active if it ran within this (7 days).
    pub active_within: Duration,
    /// A new binary or domain gets a lookup within this (5 minutes).
    pub new_lookup_within: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            first_upload_after: Duration::minutes(5),
            reevaluate_every: Duration::hours(24),
            active_within: Duration::days(7),
            new_lookup_within: Duration::minutes(5),
        }
    }
}

impl Schedule {
    /// Whether the first upload is due.
    pub fn first_upload_due(&self, started: Timestamp, now: Timestamp) -> bool {
        now - started >= self.first_upload_after
    }

    /// Whether a binary last active at `last_active` and last evaluated at
    /// `last_evaluated` (if ever) needs a verdict now.
    pub fn needs_evaluation(
        &self,
        last_active: Timestamp,
        last_evaluated: Option<Timestamp>,
        now: Timestamp,
    ) -> bool {
        match last_evaluated {
            None => true,
            Some(done) => now - last_active <= self.active_within && now - done >= self.reevaluate_every,
        }
    }

    /// The latest instant a lookup for something first seen at `first_seen`
    /// may be sent.
    pub fn lookup_deadline(&self, first_seen: Timestamp) -> Option<Timestamp> {
        first_seen.checked_add(self.new_lookup_within)
    }
}

/// Reads a file to text, naming it in the error.
///
/// # Errors
///
/// [`InputError`] with line 0 if the file cannot be read.
pub fn read_input(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|e| InputError {
        file: path.display().to_string(),
        line: 0,
        message: e.to_string(),
    })
}

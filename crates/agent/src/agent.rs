//! The agent: a filter in front of an outbox, and an uploader behind it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use privtel_filter::{Filter, Filtered, RedactionReport};
use privtel_model::{
    BatchId, BinarySighting, BinaryVerdict, CustomerId, DeviceId, Digest, Domain, DomainSighting,
    DomainVerdict, Event, EventBody, Generalised, Personal, Program, Record, RecordBody, Timestamp,
};
use privtel_store::{AtRestKey, MarkChange, Run, Spool, SpoolOptions};
use privtel_wire::{Batch, Connection, EnrichAnswer, Hello, Message};

use crate::audit::AuditLog;
use crate::error::AgentError;
use crate::marks::Lookup;
use crate::outbox::Outbox;
use crate::retry::RetryBudget;
use crate::schedule::Schedule;
use crate::weblog::{Chunk, SourceReport, WebLog, follow};

/// The most records the agent puts in one batch, whatever the service asks
/// (10,000: the service's default; a few MB of memory).
pub const MAX_BATCH_RECORDS: u32 = 10_000;

/// Bytes of a batch's payload besides its records' own encodings (the
/// program, batch id, first sequence number, skipped count, policy digest
/// and the records' count: under 100), with room to spare.
const BATCH_OVERHEAD: u64 = 1024;

/// The bytes a batch's records may take on the wire when the frame's
/// payload may be `max_payload` bytes: less the batch's own fields, and
/// less what LZ4 may add to incompressible bytes (1/255 of them, plus a
/// few) should the connection compress.
fn records_budget(max_payload: u32) -> u64 {
    let max = u64::from(max_payload);
    max.saturating_sub(max / 128).saturating_sub(BATCH_OVERHEAD)
}

/// The bytes `record` takes in a batch on the wire: its encoding in the
/// wire's payload codec (bincode 2, standard configuration, as
/// `privtel_wire::Message::encode_payload`), counted, not kept. A record
/// that does not encode counts as larger than any frame.
fn wire_len(record: &Record) -> u64 {
    bincode::serde::encode_into_std_write(record, &mut std::io::sink(), bincode::config::standard())
        .map_or(u64::MAX, |n| n as u64)
}

/// What one collection spooled.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Collected {
    /// What the filter did.
    pub report: RedactionReport,
    /// Records spooled.
    pub records: usize,
    /// Digests of the binaries and executions in the records given, for
    /// enrichment (empty when enrichment is off). Read before the filter:
    /// a record dropped because its program is off still names a binary
    /// enrichment may look up, anonymously.
    pub binaries: Vec<Digest>,
    /// Registrable domains of the web requests in the records given, for
    /// enrichment, read before the filter; empty when enrichment is off or
    /// the policy drops or pseudonymises `web_request.host`.
    pub domains: Vec<Domain>,
}

impl Collected {
    /// Adds what the filter kept and reported; `sighted` is what the
    /// records ask enrichment about (see [`sighted`]).
    pub(crate) fn merge(&mut self, kept: &[Filtered], report: &RedactionReport, sighted: Sighted) {
        self.report.merge(report);
        self.records += kept.len();
        let mut binaries: BTreeSet<Digest> = self.binaries.drain(..).collect();
        let mut domains: BTreeSet<Domain> = self.domains.drain(..).collect();
        binaries.extend(sighted.0);
        domains.extend(sighted.1);
        self.binaries = binaries.into_iter().collect();
        self.domains = domains.into_iter().collect();
    }
}

/// Binaries and registrable domains sighted in some records.
pub(crate) type Sighted = (BTreeSet<Digest>, BTreeSet<Domain>);

/// What `records` ask enrichment about, read before the filter: the
/// digests of binaries and executions, the registrable domains of web
/// requests. Enrichment needs no record of the person to ask (Enhance
/// sends sightings, not records), so this does not depend on whether the
/// records themselves are kept — only on enrichment being on, and, for
/// domains, on the policy letting at least the registrable domain of a
/// host leave (`web_request.host` clear or generalised): a host the policy
/// drops or pseudonymises is not sighted, so no byte the agent writes holds
/// more of it than the policy allows.
pub(crate) fn sighted(filter: &Filter, records: &[Record]) -> Sighted {
    let mut out = Sighted::default();
    if !filter.enabled(Program::Enrichment) {
        return out;
    }
    let hosts = matches!(
        filter.policy().treatment(&privtel_model::fields::WEB_REQUEST_HOST),
        privtel_model::Treatment::Clear | privtel_model::Treatment::Generalise
    );
    for r in records {
        match &r.body {
            RecordBody::Binary(b) => {
                out.0.insert(b.sha256);
            }
            RecordBody::Event(Event { body: EventBody::Execution(x), .. }) => {
                out.0.insert(x.sha256);
            }
            RecordBody::Event(Event { body: EventBody::WebRequest(w), .. }) if hosts => {
                let domain = match &w.host {
                    Personal::Clear(host) => privtel_domain::Normalizer::shared()
                        .normalize(host)
                        .ok()
                        .and_then(|n| n.registrable_domain()),
                    Personal::Generalised(Generalised::Domain(d)) => Some(d.clone()),
                    _ => None,
                };
                out.1.extend(domain);
            }
            _ => {}
        }
    }
    out
}

/// What uploads did. "Sent" counts only records the service acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadReport {
    /// Records acknowledged as stored, per program.
    pub sent: BTreeMap<Program, u64>,
    /// Batches fully acknowledged.
    pub batches: u64,
    /// Records the service refused for good (removed from the spool).
    pub refused: u64,
    /// Set when the service deferred a batch: wait this long.
    pub retry_after: Option<std::time::Duration>,
    /// Why it deferred (the service's words).
    pub deferred_because: Option<String>,
    /// Records removed unsent because the policy in force switches their
    /// program off (declared skipped to the service, never sent).
    pub switched_off: u64,
    /// Records removed unsent because one alone is larger than any batch
    /// the wire can carry (declared skipped to the service, never sent).
    pub too_large: u64,
    /// Set when the spool moved to a new stream: the service held more of
    /// its stream than it ever sent (a spool restored from an older copy),
    /// so its records were renumbered under a new stream id, to be sent on
    /// a new connection (the hello named the old stream).
    pub new_stream: bool,
}

impl UploadReport {
    /// Records acknowledged, all programs.
    pub fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    fn merge(&mut self, other: Self) {
        for (p, n) in other.sent {
            *self.sent.entry(p).or_default() += n;
        }
        self.batches += other.batches;
        self.refused += other.refused;
        self.retry_after = other.retry_after;
        self.deferred_because = other.deferred_because;
        self.switched_off += other.switched_off;
        self.too_large += other.too_large;
        self.new_stream |= other.new_stream;
    }
}

/// The outcome of [`Agent::deliver`]: the open connection (for enrichment
/// and goodbye) and what was sent.
#[derive(Debug)]
#[non_exhaustive]
pub struct Delivery<S> {
    /// The connection of the last, successful attempt.
    pub conn: Connection<S>,
    /// What all attempts sent.
    pub report: UploadReport,
    /// Attempts made.
    pub attempts: u32,
}

/// The agent: a filter in front of an outbox, and an uploader behind it.
///
/// Raw records come in ([`Agent::collect`], the collectors); only what the
/// filter hands out ([`Filtered`]) reaches the [`Outbox`], and only the
/// outbox's content reaches the wire.
pub struct Agent {
    customer: CustomerId,
    pub(crate) device: DeviceId,
    pub(crate) filter: Filter,
    pub(crate) outbox: Outbox,
    audit: Option<AuditLog>,
    pub(crate) schedule: Schedule,
    /// The key of the spool's marks (`PATH.marks.key`): what the agent
    /// remembers of processes, binaries and domains is kept under keyed
    /// hashes of them, never their names (docs/COLLECTORS.md).
    pub(crate) marks: crate::marks::MarkKey,
    /// The key of the events' ids (`PATH.ids.key`): every event is spooled
    /// under an id keyed with it, so no id can be tested against a guess of
    /// what the policy withholds (docs/COLLECTORS.md, "Event ids").
    pub(crate) ids: crate::event_id::EventIdKey,
    query_counter: u64,
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
    /// An agent on a spool it opened itself: the agent owns the spool and
    /// lends it out only as an [`Outbox`] (no caller hands it a spool that
    /// was filled some other way).
    fn new(
        customer: CustomerId,
        device: DeviceId,
        filter: Filter,
        spool: Spool,
        marks: crate::marks::MarkKey,
        ids: crate::event_id::EventIdKey,
    ) -> Self {
        Self {
            customer,
            device,
            filter,
            outbox: Outbox::new(spool),
            audit: None,
            schedule: Schedule::default(),
            marks,
            ids,
            query_counter: 0,
        }
    }

    /// Opens the spool at `path`, sealed (AES-256-GCM) with the key in
    /// `PATH.seal.key` — created 0600 on first run, refused if group or
    /// others may read it — unless `options.key` names another key, and
    /// makes an agent on it. What the agent remembers between runs of
    /// processes, binaries and domains is kept in the spool under hashes
    /// keyed with `PATH.marks.key` (created 0600 likewise), and every event
    /// is spooled under an id keyed with `PATH.ids.key` (likewise): the
    /// same event always gets the same id on this device, and nobody
    /// without the key can derive one from a guess (docs/COLLECTORS.md).
    ///
    /// # Errors
    ///
    /// A key or spool error.
    pub fn open(
        customer: CustomerId,
        device: DeviceId,
        filter: Filter,
        path: impl AsRef<Path>,
        mut options: SpoolOptions,
    ) -> Result<Self, AgentError> {
        let path = path.as_ref();
        if options.key.is_none() {
            let secret = crate::keys::load_or_create_key(key_path(path, "seal"))?;
            options.key = Some(AtRestKey::new(1, secret));
        }
        let marks = crate::marks::MarkKey::new(crate::keys::load_or_create_key(key_path(path, "marks"))?);
        let ids = crate::event_id::EventIdKey::new(crate::keys::load_or_create_key(key_path(path, "ids"))?);
        let spool = Spool::open(path, options)?;
        Ok(Self::new(customer, device, filter, spool, marks, ids))
    }

    /// Writes every message the agent sends, decoded, to `audit`, so a
    /// customer can see exactly what leaves the machine. When the spool is
    /// sealed (as [`Agent::open`] makes it) and `audit` is not already, the
    /// messages are sealed with the spool's key: what a file on the device
    /// holds of a payload never reads without the key
    /// ([`crate::read_audit_log`] opens it).
    #[must_use]
    pub fn with_audit_log(mut self, audit: AuditLog) -> Self {
        let audit = match self.outbox.spool().sealing_key() {
            Some(key) if !audit.is_sealed() => audit.sealed_with(key.clone()),
            _ => audit,
        };
        self.audit = Some(audit);
        self
    }

    /// Uses `schedule` for enrichment decisions.
    #[must_use]
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// This device.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The outbox (filtered records only).
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Filters records (the application SDK's way in) and appends what
    /// passes to the outbox, durably. Returns the report and what the
    /// records ask enrichment about.
    ///
    /// # Errors
    ///
    /// A spool error; nothing of the call is spooled then.
    pub fn collect(&mut self, records: Vec<Record>, now: Timestamp) -> Result<Collected, AgentError> {
        let sighted = sighted(&self.filter, &records);
        let (kept, report) = self.ids.filter(&self.filter, records);
        self.outbox.append(&kept, now)?;
        let mut out = Collected::default();
        out.merge(&kept, &report, sighted);
        Ok(out)
    }

    /// Reads `log` from where the last call stopped, chunk by chunk: each
    /// chunk's filtered records are spooled with the new read position in
    /// one transaction, so a crash at any instant neither loses nor repeats
    /// a line. Malformed lines are skipped and counted in the report; a
    /// log seen for the first time is recorded (its identity) before its
    /// first line is read, so a rotation cannot hide it even from an agent
    /// killed at once; a rotated file is finished before the new one is
    /// started; a truncated one is read again from the start (a new
    /// generation of event ids).
    ///
    /// # Errors
    ///
    /// [`AgentError::Source`] if the log cannot be opened or read; a spool
    /// error. Chunks spooled before the error stay spooled.
    pub fn collect_web_log(
        &mut self,
        log: &WebLog,
        now: Timestamp,
    ) -> Result<(SourceReport, Collected), AgentError> {
        let saved = self.outbox.position(&log.source())?;
        let previous = self.outbox.position(&log.previous_source())?;
        let mut collected = Collected::default();
        let (filter, outbox, device, ids) = (&self.filter, &mut self.outbox, &self.device, &self.ids);
        let report = follow(log, saved, previous, device, |chunk: Chunk| {
            let sighted = sighted(filter, &chunk.records);
            let (kept, report) = ids.filter(filter, chunk.records);
            outbox.append_at(&kept, &chunk.position, now)?;
            collected.merge(&kept, &report, sighted);
            Ok(())
        })?;
        Ok((report, collected))
    }

    /// Consent withdrawn: purges the program's waiting records.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn withdraw(&mut self, program: Program) -> Result<u64, AgentError> {
        self.outbox.purge_program(program)
    }

    /// On-device retention, every cycle: expires the outbox under the TTL
    /// (and checkpoints whenever records were expired, acknowledged or
    /// evicted since the last checkpoint, so their values leave the file
    /// and its log) and
    /// the audit log under its own. Returns the records expired.
    ///
    /// # Errors
    ///
    /// A spool or audit-log error.
    pub fn maintain(&mut self, now: Timestamp) -> Result<u64, AgentError> {
        let n = self.outbox.expire(now)?;
        if let Some(audit) = &mut self.audit {
            audit.expire(now)?;
        }
        Ok(n)
    }

    /// The next query id of this agent (enrichment, sightings, version
    /// checks share the counter).
    pub(crate) fn next_query_id(&mut self) -> u64 {
        self.query_counter += 1;
        self.query_counter
    }

    pub(crate) fn audit(&mut self, msg: &Message, now: Timestamp) -> Result<(), AgentError> {
        if let Some(audit) = &mut self.audit {
            let kind = msg.kind_name();
            match msg {
                Message::Hello(m) => audit.write(kind, m, now)?,
                Message::Batch(m) => audit.write(kind, m, now)?,
                Message::EnrichQuery(m) => audit.write(kind, m, now)?,
                Message::EnhanceHello(m) => audit.write(kind, m, now)?,
                Message::Sightings(m) => audit.write(kind, m, now)?,
                Message::VersionQuery(m) => audit.write(kind, m, now)?,
                Message::Goodbye(m) => audit.write(kind, m, now)?,
                _ => audit.write(kind, &(), now)?,
            }
        }
        Ok(())
    }

    pub(crate) fn send<S: Write>(
        &mut self,
        conn: &mut Connection<S>,
        msg: &Message,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        self.audit(msg, now)?;
        Ok(conn.send(msg)?)
    }

    /// Negotiates, then sends waiting records in gap-free batches of one
    /// program, removing each from the outbox only once the service
    /// acknowledged it. Stops early when the service defers a batch (the
    /// report then says how long to wait); records the service refuses for
    /// good are removed and counted.
    ///
    /// Before anything is sent, records of programs the policy in force
    /// switches off are removed (counted, declared skipped). A batch holds
    /// at most the welcome's `max_batch_records` (and
    /// [`MAX_BATCH_RECORDS`]) and fits the welcome's `max_payload`; a
    /// record alone larger than the wire's frame limit is removed unsent
    /// (counted, declared skipped). When the welcome's high-water mark is
    /// above anything this spool ever sent, the spool's numbering is behind
    /// the service's (a spool restored from an older copy): nothing is
    /// deleted on that mark; the spool moves to a new stream
    /// ([`privtel_store::Spool::new_stream`]) and the upload ends with
    /// [`UploadReport::new_stream`] set and `retry_after` zero, to be
    /// started again on a new connection ([`Agent::deliver`] does so at
    /// once).
    ///
    /// # Errors
    ///
    /// A wire, spool or protocol error, or [`AgentError::Refused`] when the
    /// service answers with an error. Nothing unacknowledged is lost.
    pub fn upload<S: Read + Write>(
        &mut self,
        conn: &mut Connection<S>,
        policy_version: u32,
        now: Timestamp,
    ) -> Result<UploadReport, AgentError> {
        let mut report = UploadReport::default();
        // A program switched off: nothing of it leaves the device any more,
        // whenever it was spooled.
        let off: Vec<Program> = Program::ALL.iter().copied().filter(|p| !self.filter.enabled(*p)).collect();
        report.switched_off = self.outbox.purge_switched_off(&off)?;
        let consent = Program::ALL.iter().map(|p| (*p, self.filter.enabled(*p))).collect();
        let hello = Hello::new(
            env!("CARGO_PKG_VERSION"),
            self.customer.clone(),
            self.device.clone(),
            consent,
            policy_version,
        )
        .with_stream(self.outbox.spool().stream_id());
        let policy_hash = self.filter.policy().digest();
        self.audit(&Message::Hello(hello.clone()), now)?;
        let welcome = conn.client_handshake(&hello)?;
        let sent_up_to = self.outbox.sent_up_to()?;
        if welcome.high_water > sent_up_to {
            // The service holds numbers of this stream the spool never
            // sent: the spool was put back to an older copy, and its new
            // records would be numbered like ones already stored, taken
            // for duplicates and deleted. A new stream, nothing deleted.
            self.outbox.new_stream()?;
            report.new_stream = true;
            report.retry_after = Some(std::time::Duration::ZERO);
            report.deferred_because = Some(format!(
                "the service holds sequence numbers up to {} of this spool's stream, which sent up to {sent_up_to}: \
                 the spool moved to a new stream",
                welcome.high_water
            ));
            return Ok(report);
        }
        // Everything at or below the service's high-water mark is stored
        // (an acknowledgement lost with a dropped connection): drop it here
        // instead of sending it again.
        for program in Program::ALL {
            self.outbox.ack(program, welcome.high_water)?;
        }
        // The service names the batch size; the agent caps it, so a service
        // cannot make it load its whole spool at once.
        let max = welcome.max_batch_records.clamp(1, MAX_BATCH_RECORDS) as usize;
        // A batch's bytes fit the welcome's frame limit and the wire's; a
        // record alone beyond the wire's can never be sent.
        let budget = records_budget(welcome.max_payload.min(privtel_wire::DEFAULT_MAX_PAYLOAD));
        let never = records_budget(privtel_wire::DEFAULT_MAX_PAYLOAD);
        // What the service holds of this stream, as far as this session
        // knows: sequence numbers between it and a run's first were removed
        // here unsent (a program purged or switched off, records expired,
        // evicted or too large), and are declared as skipped rather than
        // left as a gap.
        let mut service_holds = welcome.high_water;
        while let Some(next) = self.outbox.next_run_within(max, budget, wire_len)? {
            let (program, run) = match next {
                Run::Batch(program, run) => (program, run),
                Run::TooLarge { seq, size, .. } if size > never => {
                    report.too_large += u64::from(self.outbox.skip_too_large(seq)?);
                    continue;
                }
                // Above this service's limit, within the wire's: alone.
                Run::TooLarge { .. } => match self.outbox.next_run_within(1, u64::MAX, |_| 0)? {
                    Some(Run::Batch(program, run)) => (program, run),
                    _ => break,
                },
                // A run this version does not know: nothing sent.
                _ => break,
            };
            let first_seq = run[0].seq;
            let last_seq = run[run.len() - 1].seq;
            let records: Vec<Record> = run.into_iter().map(|s| s.record).collect();
            let batch_id = BatchId::from_u128(u128::from(first_seq) << 64 | u128::from(last_seq));
            self.outbox.mark_sent(last_seq)?;
            let skipped = first_seq.saturating_sub(1).saturating_sub(service_holds);
            let batch = Batch { program, batch_id, first_seq, records, skipped, policy_hash };
            self.send(conn, &Message::Batch(batch), now)?;
            let ack = match conn.recv()? {
                Message::Ack(ack) if ack.batch_id == batch_id => ack,
                Message::Error(e) => {
                    return Err(AgentError::Refused { message: e.message, retryable: e.retryable });
                }
                other => return Err(AgentError::Protocol { expected: "ack", got: other.kind_name() }),
            };
            // A service may not acknowledge what was not sent.
            let accepted = ack.accepted_up_to.min(last_seq);
            service_holds = service_holds.max(accepted);
            if accepted >= first_seq {
                let for_good = ack
                    .rejections
                    .iter()
                    .filter(|r| !r.retryable && (first_seq..=accepted).contains(&r.seq))
                    .map(|r| r.seq)
                    .collect::<BTreeSet<_>>()
                    .len() as u64;
                self.outbox.ack(program, accepted)?;
                *report.sent.entry(program).or_default() += accepted - first_seq + 1 - for_good;
                report.refused += for_good;
            }
            if accepted < last_seq {
                let wait = ack.retry_after_ms.unwrap_or(welcome.retry.initial_backoff_ms);
                report.retry_after = Some(std::time::Duration::from_millis(wait));
                report.deferred_because = Some(
                    ack.rejections
                        .iter()
                        .find(|r| r.retryable)
                        .map_or_else(|| "the service took part of a batch".to_owned(), |r| r.reason.clone()),
                );
                return Ok(report);
            }
            report.batches += 1;
        }
        Ok(report)
    }

    /// Uploads everything waiting, connecting with `connect`, within
    /// `budget`: after a failed or deferred attempt it waits (exponential
    /// backoff with jitter, never less than the service's `retry_after`)
    /// through `sleep`, then tries again. An upload that moved the spool to
    /// a new stream ([`UploadReport::new_stream`]) is followed at once by
    /// one under the new stream, without waiting and without spending an
    /// attempt (once per call: a service claiming a mark on a brand-new
    /// stream as well is waited for like a deferral).
    ///
    /// # Errors
    ///
    /// [`AgentError::GaveUp`] when the budget is spent (everything not
    /// acknowledged stays spooled); a non-retryable error at once.
    pub fn deliver<S: Read + Write>(
        &mut self,
        mut connect: impl FnMut() -> Result<Connection<S>, AgentError>,
        policy_version: u32,
        budget: &RetryBudget,
        mut sleep: impl FnMut(std::time::Duration),
        clock: impl Fn() -> Timestamp,
    ) -> Result<Delivery<S>, AgentError> {
        let mut total = UploadReport::default();
        let mut attempt = 0u32;
        let mut restarted = false;
        loop {
            attempt += 1;
            let outcome = connect().and_then(|mut conn| {
                let report = self.upload(&mut conn, policy_version, clock())?;
                Ok((conn, report))
            });
            let (asked, last) = match outcome {
                Ok((conn, report)) if report.retry_after.is_none() => {
                    total.merge(report);
                    return Ok(Delivery { conn, report: total, attempts: attempt });
                }
                Ok((mut conn, report)) if report.new_stream && !restarted => {
                    // The hello named the old stream: again, on a new
                    // connection, under the new one.
                    total.merge(report);
                    let bye = privtel_wire::Goodbye { reason: "the spool moved to a new stream".into() };
                    let _ = self.send(&mut conn, &Message::Goodbye(bye), clock());
                    restarted = true;
                    attempt -= 1;
                    continue;
                }
                Ok((mut conn, report)) => {
                    let asked = report.retry_after;
                    let why = report.deferred_because.clone().unwrap_or_default();
                    total.merge(report);
                    // Best effort: the service is told we go; it may be gone.
                    let bye =
                        privtel_wire::Goodbye { reason: "deferred by the service; retrying later".into() };
                    let _ = self.send(&mut conn, &Message::Goodbye(bye), clock());
                    (asked, format!("the service deferred a batch: {why}"))
                }
                Err(e) if e.is_retryable() => (None, e.to_string()),
                Err(e) => return Err(e),
            };
            if budget.max_attempts.is_some_and(|max| attempt >= max) {
                return Err(AgentError::GaveUp { attempts: attempt, last, waiting: self.outbox.len(None)? });
            }
            sleep(budget.wait(attempt, asked));
        }
    }

    /// A private enrichment lookup (hash prefixes only) for the binaries
    /// and domains that need one now — new ones, and active ones due for
    /// re-evaluation. Sends nothing, and returns no verdicts, when
    /// enrichment is switched off or nothing needs a lookup.
    ///
    /// # Errors
    ///
    /// A wire or protocol error.
    pub fn enrich<S: Read + Write>(
        &mut self,
        conn: &mut Connection<S>,
        binaries: &[Digest],
        domains: &[Domain],
        now: Timestamp,
    ) -> Result<(Vec<BinaryVerdict>, Vec<DomainVerdict>), AgentError> {
        if !self.filter.enabled(Program::Enrichment) {
            return Ok((Vec::new(), Vec::new()));
        }
        let binaries = self.due(binaries, |b| Lookup::Binary(b), now)?;
        let domains = self.due(domains, |d| Lookup::Domain(d), now)?;
        if binaries.is_empty() && domains.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.query_counter += 1;
        let query = privtel_wire::private_query(
            self.query_counter,
            &binaries,
            &domains,
            privtel_wire::DEFAULT_PREFIX_LEN,
        );
        self.send(conn, &Message::EnrichQuery(query), now)?;
        match conn.recv()? {
            Message::EnrichAnswer(answer) => {
                self.looked_up_at(
                    binaries.iter().map(Lookup::Binary),
                    domains.iter().map(Lookup::Domain),
                    now,
                )?;
                Ok(privtel_wire::verdicts_for(&answer, &binaries, &domains))
            }
            Message::Error(e) => Err(AgentError::Refused { message: e.message, retryable: e.retryable }),
            other => Err(AgentError::Protocol { expected: "enrich answer", got: other.kind_name() }),
        }
    }

    /// The enrichment upload (Enhance), anonymous: on a connection of its
    /// own, opens with an [`EnhanceHello`](privtel_wire::EnhanceHello) —
    /// no customer, device, stream or consent named; the service knows the
    /// customer from the client certificate — sends the sightings (digests,
    /// sizes, formats, registrable domains, first-seen days: nothing of the
    /// device, its users or its paths) in messages of at most
    /// [`MAX_QUERY_ITEMS`](privtel_wire::MAX_QUERY_ITEMS) each, collects
    /// the verdicts and says goodbye. Only what is due is sent (new
    /// binaries and sites, and those due for re-evaluation under the
    /// schedule, as for [`Agent::enrich`]). Sends nothing, and returns no
    /// verdicts, when enrichment is switched off or nothing is due. Sending
    /// the same sightings again (an answer lost) is harmless: the service
    /// keeps them by content.
    ///
    /// # Errors
    ///
    /// A wire or protocol error, [`AgentError::Refused`] when the service
    /// answers with an error.
    pub fn enhance<S: Read + Write>(
        &mut self,
        conn: &mut Connection<S>,
        binaries: &[BinarySighting],
        domains: &[DomainSighting],
        now: Timestamp,
    ) -> Result<(Vec<BinaryVerdict>, Vec<DomainVerdict>), AgentError> {
        if !self.filter.enabled(Program::Enrichment) {
            return Ok((Vec::new(), Vec::new()));
        }
        let binaries = self.due(binaries, |b| Lookup::Binary(&b.sha256), now)?;
        let domains = self.due(domains, |d| Lookup::Domain(&d.domain), now)?;
        if binaries.is_empty() && domains.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let hello = privtel_wire::EnhanceHello::new(env!("CARGO_PKG_VERSION"));
        self.audit(&Message::EnhanceHello(hello.clone()), now)?;
        conn.client_enhance_handshake(&hello)?;
        let max = privtel_wire::MAX_QUERY_ITEMS;
        let (mut bins, mut doms) = (binaries.as_slice(), domains.as_slice());
        let (mut out_b, mut out_d) = (Vec::new(), Vec::new());
        while !bins.is_empty() || !doms.is_empty() {
            let (b, rest_b) = bins.split_at(bins.len().min(max));
            let (d, rest_d) = doms.split_at(doms.len().min(max));
            (bins, doms) = (rest_b, rest_d);
            self.query_counter += 1;
            let query_id = self.query_counter;
            let msg = privtel_wire::Sightings { query_id, binaries: b.to_vec(), domains: d.to_vec() };
            self.send(conn, &Message::Sightings(msg), now)?;
            match conn.recv()? {
                Message::EnrichAnswer(EnrichAnswer::Direct { query_id: id, binaries: vb, domains: vd })
                    if id == query_id =>
                {
                    self.looked_up_at(
                        b.iter().map(|s| Lookup::Binary(&s.sha256)),
                        d.iter().map(|s| Lookup::Domain(&s.domain)),
                        now,
                    )?;
                    out_b.extend(vb);
                    out_d.extend(vd);
                }
                Message::Error(e) => {
                    return Err(AgentError::Refused { message: e.message, retryable: e.retryable });
                }
                other => {
                    return Err(AgentError::Protocol { expected: "enrich answer", got: other.kind_name() });
                }
            }
        }
        self.goodbye(conn, now)?;
        Ok((out_b, out_d))
    }

    /// The items of `items` whose verdict is due now (never looked up, or
    /// due again under the schedule, from the marks in the spool: see
    /// [`crate::marks`]).
    fn due<T: Clone>(
        &self,
        items: &[T],
        key: impl Fn(&T) -> Lookup<'_>,
        now: Timestamp,
    ) -> Result<Vec<T>, AgentError> {
        let mut out = Vec::new();
        for item in items {
            if crate::marks::is_due(&self.outbox, &self.marks, &self.schedule, key(item), now)? {
                out.push(item.clone());
            }
        }
        Ok(out)
    }

    /// Records, durably, that these binaries and sites were looked up at
    /// `now`, and forgets marks long unused.
    fn looked_up_at<'a>(
        &mut self,
        binaries: impl Iterator<Item = Lookup<'a>>,
        domains: impl Iterator<Item = Lookup<'a>>,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        let mut changes: Vec<MarkChange> =
            binaries.chain(domains).map(|l| crate::marks::evaluated(&self.marks, l, now)).collect();
        changes.extend(crate::marks::forget_old(now));
        self.outbox.update_marks(&changes, now)?;
        Ok(())
    }

    /// Ends the conversation.
    ///
    /// # Errors
    ///
    /// A wire error.
    pub fn goodbye<S: Write>(&mut self, conn: &mut Connection<S>, now: Timestamp) -> Result<(), AgentError> {
        self.send(conn, &Message::Goodbye(privtel_wire::Goodbye { reason: "cycle done".into() }), now)
    }
}

/// The retention a device applies under `policy`: the policy's TTLs of
/// events and objects and its inactive-device purge (`[retention]`, whole
/// days), as the service keeps the customer's data, so nothing waits on the
/// device longer than the customer allows in the cloud. The spool expires
/// its events and objects (a device description, a user, a binary) under
/// them ([`Spool::expire`](privtel_store::Spool::expire)).
///
/// ```
/// use privtel_agent::policy_retention;
/// use privtel_filter::Policy;
///
/// let policy = Policy::from_toml("[retention]\nevents = 7\nobjects = 14\ninactive_device = 30\n")?;
/// let retention = policy_retention(&policy);
/// assert_eq!((retention.events.days(), retention.objects.days()), (7, 14));
/// assert_eq!(retention.device_inactivity.whole_days(), 30);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn policy_retention(policy: &privtel_filter::Policy) -> privtel_store::RetentionPolicy {
    let days = |d: u32| privtel_store::Ttl::custom(time::Duration::days(i64::from(d)));
    privtel_store::RetentionPolicy {
        events: days(policy.retention.events),
        objects: days(policy.retention.objects),
        device_inactivity: time::Duration::days(i64::from(policy.retention.inactive_device)),
        ..privtel_store::RetentionPolicy::default()
    }
}

/// The default spool options with `policy`'s whole retention
/// ([`policy_retention`]): what an agent opens its spool with
/// ([`Agent::open`]) under a customer's policy.
pub fn spool_options(policy: &privtel_filter::Policy) -> SpoolOptions {
    let mut options = SpoolOptions::default();
    options.retention = policy_retention(policy);
    options
}

/// `PATH.NAME.key` beside a spool at `PATH` (the extension replaced).
pub fn key_path(spool: impl AsRef<Path>, name: &str) -> std::path::PathBuf {
    spool.as_ref().with_extension(format!("{name}.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_encodes_to_its_records_measured_lengths_plus_at_most_the_overhead() {
        let records = privtel_testkit::fixtures::records("len");
        let measured: u64 = records.iter().map(wire_len).sum();
        let batch = Batch {
            program: Program::AnonymousUsage,
            batch_id: BatchId::from_u128(u128::MAX),
            first_seq: u64::MAX,
            records,
            skipped: u64::MAX,
            policy_hash: [0xff; 32],
        };
        let encoded = Message::Batch(batch).encode_payload().unwrap().len() as u64;
        assert!(encoded >= measured && encoded <= measured + BATCH_OVERHEAD, "{encoded} {measured}");
        assert!(records_budget(privtel_wire::DEFAULT_MAX_PAYLOAD) + BATCH_OVERHEAD < 16 << 20);
        assert_eq!(records_budget(0), 0);
    }
}

//! The outbox: the agent's spool, which takes filtered records only.

use privtel_filter::Filtered;
use privtel_model::{Program, Timestamp};
use privtel_store::{
    ConsentChange, ConsentState, Mark, MarkChange, Run, SourcePosition, Spool, SpoolCounters, Subject,
};

use crate::error::AgentError;

/// The agent's durable outbox: a [`Spool`] that accepts only
/// [`Filtered`] records, so nothing reaches the spool — and so the wire —
/// without the filter. The store underneath stays generic; the guarantee is
/// the agent's.
///
/// What the filter hands out goes in:
///
/// ```
/// # fn f(outbox: &mut privtel_agent::Outbox, filter: &privtel_filter::Filter, raw: privtel_model::Record) {
/// let now = privtel_model::Timestamp::UNIX_EPOCH;
/// let mut report = privtel_filter::RedactionReport::default();
/// if let Some(filtered) = filter.apply(raw, &mut report) {
///     outbox.append(&[filtered], now).unwrap();
/// }
/// # }
/// ```
///
/// A raw [`Record`](privtel_model::Record) does not compile:
///
/// ```compile_fail
/// # fn f(outbox: &mut privtel_agent::Outbox, raw: privtel_model::Record) {
/// let now = privtel_model::Timestamp::UNIX_EPOCH;
/// outbox.append(&[raw], now); // expected `Filtered`, found `Record`
/// # }
/// ```
///
/// and the agent lends no writable spool:
///
/// ```compile_fail
/// # fn f(agent: &mut privtel_agent::Agent, raw: privtel_model::Record) {
/// let now = privtel_model::Timestamp::UNIX_EPOCH;
/// agent.outbox().spool_mut().append(&raw, now); // no such method
/// # }
/// ```
///
/// ```compile_fail
/// # fn f(agent: &mut privtel_agent::Agent, raw: privtel_model::Record) {
/// let now = privtel_model::Timestamp::UNIX_EPOCH;
/// agent.outbox().spool().append(&raw, now); // `&Spool` cannot append
/// # }
/// ```
#[derive(Debug)]
pub struct Outbox {
    spool: Spool,
}

impl Outbox {
    pub(crate) fn new(spool: Spool) -> Self {
        Self { spool }
    }

    /// Appends filtered records (one transaction, durable on return);
    /// returns their sequence numbers.
    ///
    /// # Errors
    ///
    /// A spool error; nothing is appended then.
    pub fn append(&mut self, records: &[Filtered], now: Timestamp) -> Result<Vec<u64>, AgentError> {
        Ok(self.spool.append_at(records, None, now)?)
    }

    /// Appends filtered records and, in the same transaction, how far their
    /// source was read.
    ///
    /// # Errors
    ///
    /// A spool error; nothing is appended and the position is unchanged.
    pub fn append_at(
        &mut self,
        records: &[Filtered],
        position: &SourcePosition,
        now: Timestamp,
    ) -> Result<Vec<u64>, AgentError> {
        Ok(self.spool.append_at(records, Some(position), now)?)
    }

    /// Appends filtered records, each filed under the person it names (if
    /// any), in one transaction; returns their sequence numbers.
    ///
    /// # Errors
    ///
    /// A spool error; nothing is appended then.
    pub fn append_for(
        &mut self,
        records: &[(Filtered, Option<Subject>)],
        now: Timestamp,
    ) -> Result<Vec<u64>, AgentError> {
        Ok(self.spool.append_for(records, now)?)
    }

    /// A person's standing choice about an optional program.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn consent(&self, subject: &Subject, program: Program) -> Result<Option<ConsentState>, AgentError> {
        Ok(self.spool.consent(subject, program)?)
    }

    /// Records a person's choice with its consent record (filtered), and on
    /// a withdrawal purges the person's waiting records of the program —
    /// one transaction (see [`privtel_store::Spool::record_consent`]).
    ///
    /// # Errors
    ///
    /// A spool error; nothing changes then.
    pub fn record_consent(
        &mut self,
        subject: &Subject,
        program: Program,
        state: ConsentState,
        record: Option<&Filtered>,
        now: Timestamp,
    ) -> Result<ConsentChange, AgentError> {
        Ok(self.spool.record_consent(subject, program, state, record.map(|f| f.record()), now)?)
    }

    /// Purges the person's waiting records of `program` (a withdrawal
    /// recorded in another spool).
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn purge_subject(&mut self, subject: &Subject, program: Program) -> Result<u64, AgentError> {
        Ok(self.spool.purge_subject(subject, program)?)
    }

    /// Where `source` was read up to.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn position(&self, source: &str) -> Result<Option<SourcePosition>, AgentError> {
        Ok(self.spool.source_position(source)?)
    }

    /// Records waiting, for one program or all.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn len(&self, program: Option<Program>) -> Result<u64, AgentError> {
        Ok(self.spool.len(program)?)
    }

    /// Whether nothing waits.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn is_empty(&self) -> Result<bool, AgentError> {
        Ok(self.len(None)? == 0)
    }

    /// What left the outbox, by way.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn counters(&self) -> Result<SpoolCounters, AgentError> {
        Ok(self.spool.counters()?)
    }

    /// Removes what is past the TTL (and checkpoints, so it is gone from
    /// the file and its log); returns how many records.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn expire(&mut self, now: Timestamp) -> Result<u64, AgentError> {
        Ok(self.spool.expire(now)?)
    }

    /// Consent withdrawn: removes every waiting record of `program`.
    ///
    /// # Errors
    ///
    /// A spool error.
    pub fn purge_program(&mut self, program: Program) -> Result<u64, AgentError> {
        Ok(self.spool.purge_program(program)?)
    }

    /// The spool, to read (counters, integrity checks). It cannot append.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Appends filtered records, saves `position` if given and applies
    /// `changes` to the marks, in one transaction.
    pub(crate) fn append_marked(
        &mut self,
        records: &[Filtered],
        position: Option<&SourcePosition>,
        changes: &[MarkChange],
        now: Timestamp,
    ) -> Result<Vec<u64>, AgentError> {
        Ok(self.spool.append_marked(records, position, changes, now)?)
    }

    /// Applies `changes` to the marks (one transaction).
    pub(crate) fn update_marks(&mut self, changes: &[MarkChange], now: Timestamp) -> Result<(), AgentError> {
        self.spool.append_marked::<Filtered>(&[], None, changes, now)?;
        Ok(())
    }

    /// The mark of `key` in `scope`.
    pub(crate) fn mark(&self, scope: &str, key: &[u8]) -> Result<Option<Mark>, AgentError> {
        Ok(self.spool.mark(scope, key)?)
    }

    /// Every mark of `scope`.
    pub(crate) fn marks(&self, scope: &str) -> Result<Vec<(Vec<u8>, Mark)>, AgentError> {
        Ok(self.spool.marks(scope)?)
    }

    pub(crate) fn next_run_within(
        &self,
        max: usize,
        budget: u64,
        size: impl Fn(&privtel_model::Record) -> u64,
    ) -> Result<Option<Run>, AgentError> {
        Ok(self.spool.next_run_within(max, budget, size)?)
    }

    pub(crate) fn skip_too_large(&mut self, seq: u64) -> Result<bool, AgentError> {
        Ok(self.spool.skip_too_large(seq)?)
    }

    pub(crate) fn purge_switched_off(&mut self, off: &[Program]) -> Result<u64, AgentError> {
        Ok(self.spool.purge_switched_off(off)?)
    }

    pub(crate) fn new_stream(&mut self) -> Result<u64, AgentError> {
        Ok(self.spool.new_stream()?)
    }

    pub(crate) fn mark_sent(&mut self, seq: u64) -> Result<(), AgentError> {
        Ok(self.spool.mark_sent(seq)?)
    }

    pub(crate) fn sent_up_to(&self) -> Result<u64, AgentError> {
        Ok(self.spool.sent_up_to()?)
    }

    pub(crate) fn ack(&mut self, program: Program, up_to: u64) -> Result<u64, AgentError> {
        Ok(self.spool.ack(program, up_to)?)
    }
}

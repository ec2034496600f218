//! [`AccessControl`]: grants, checks and the log, in one place.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use privtel_model::{CustomerId, Timestamp};

use crate::checkpoint::{Checkpoint, PublicKey, SigningKey};
use crate::entry::{Entry, EntryKind, GENESIS, MAX_DETAIL_LEN, Outcome, Terms};
use crate::error::{AccessError, Denied, DenyReason};
use crate::grant::{Action, Grant, GrantId, GrantRequest, Operator};
use crate::log::{LogFile, decode_log};
use crate::verify::verify;

/// The longest a grant may last unless configured otherwise: 8 hours.
pub const DEFAULT_MAX_GRANT: time::Duration = time::Duration::hours(8);

/// How [`AccessControl`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessOptions {
    /// The longest a grant may last ([`DEFAULT_MAX_GRANT`]).
    pub max_grant: time::Duration,
    /// Cut a last entry the file holds only part of (a write cut short by
    /// a crash) when opening, instead of refusing to open. Off by default:
    /// the operator decides, since the cut is also what someone shortening
    /// the log would leave (the customer's checkpoints detect either).
    pub repair_torn_tail: bool,
}

impl Default for AccessOptions {
    fn default() -> Self {
        Self { max_grant: DEFAULT_MAX_GRANT, repair_torn_tail: false }
    }
}

impl AccessOptions {
    /// Options with `max_grant` as the longest grant.
    #[must_use]
    pub fn with_max_grant(mut self, max_grant: time::Duration) -> Self {
        self.max_grant = max_grant;
        self
    }

    /// Options that cut a torn last entry when opening.
    #[must_use]
    pub fn with_repair_torn_tail(mut self, repair: bool) -> Self {
        self.repair_torn_tail = repair;
        self
    }
}

/// Proof that an action was allowed and logged: only
/// [`AccessControl::check`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorized {
    grant: GrantId,
    action: Action,
    customer: CustomerId,
    entry: u64,
}

impl Authorized {
    /// The grant it was allowed under.
    pub fn grant(&self) -> GrantId {
        self.grant
    }

    /// The action allowed.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The customer whose data it touches.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// The log entry that records it.
    pub fn entry(&self) -> u64 {
        self.entry
    }
}

/// Grants, checks and the access log. Every grant, revocation and check is
/// written to the log (and synced) before its answer is returned; a check
/// whose entry cannot be written is refused.
#[derive(Debug)]
pub struct AccessControl {
    inner: Mutex<Inner>,
    key: SigningKey,
    options: AccessOptions,
}

#[derive(Debug)]
struct Inner {
    log: LogFile,
    /// Entries written.
    len: u64,
    /// The hash of the last entry.
    head: [u8; 32],
    grants: HashMap<GrantId, Grant>,
}

impl AccessControl {
    /// Opens the log at `path` (creating it), checks its hash chain and
    /// rebuilds the grants from it; checkpoints are signed with `key`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or locked ([`AccessError::Locked`]), does
    /// not decode, ends inside an entry (see
    /// [`AccessOptions::repair_torn_tail`]) or its chain is broken.
    pub fn open(path: &Path, key: SigningKey, options: AccessOptions) -> Result<Self, AccessError> {
        let (log, entries) = LogFile::open(path, options.repair_torn_tail)?;
        // Check the chain with a checkpoint of its own making.
        let head = entries.last().map_or(GENESIS, Entry::hash);
        let own = key.sign(entries.len() as u64, head, Timestamp::UNIX_EPOCH);
        verify(&entries, &own, &key.public_key()).map_err(AccessError::Chain)?;
        let mut grants = HashMap::new();
        for e in &entries {
            match (e.kind, e.outcome, &e.terms) {
                (EntryKind::Grant, Outcome::Allowed, Some(t)) => {
                    let request = GrantRequest {
                        operator: e.operator.clone(),
                        customer: e.customer.clone(),
                        justification: t.justification.clone(),
                        ticket: t.ticket.clone(),
                        scope: t.scope,
                        starts: t.starts,
                        expires: t.expires,
                    };
                    grants.insert(e.grant, Grant::from_request(e.grant, request));
                }
                (EntryKind::Revoke, Outcome::Allowed, _) => {
                    if let Some(g) = grants.get_mut(&e.grant) {
                        g.revoked.get_or_insert(e.at);
                    }
                }
                _ => {}
            }
        }
        let inner = Inner { log, len: entries.len() as u64, head, grants };
        Ok(Self { inner: Mutex::new(inner), key, options })
    }

    /// The options in force.
    pub fn options(&self) -> AccessOptions {
        self.options
    }

    /// The public key the customer verifies checkpoints with.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Signs a document for a customer with the service's key (see
    /// [`SigningKey::sign_document`]); the customer checks it with
    /// [`AccessControl::public_key`] and [`PublicKey::verifies_document`].
    pub fn sign_document(&self, kind: &str, document: &[u8]) -> [u8; 64] {
        self.key.sign_document(kind, document)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a grant (logged). A request that breaks the rules is
    /// refused and the refusal logged (without its terms).
    ///
    /// # Errors
    ///
    /// [`AccessError::Grant`] for a request that breaks the rules
    /// ([`GrantRequest::validate`] against the configured maximum), or the
    /// log could not be written (then no grant exists).
    pub fn grant(&self, request: GrantRequest, now: Timestamp) -> Result<Grant, AccessError> {
        let mut inner = self.lock();
        let id = GrantId(inner.len);
        if let Err(e) = request.validate(self.options.max_grant) {
            let refused = Pending {
                kind: EntryKind::Grant,
                operator: request.operator,
                customer: request.customer,
                action: Action::ManageGrants,
                grant: id,
                outcome: Outcome::Refused(DenyReason::InvalidRequest),
                terms: None,
                detail: e.to_string(),
            };
            inner.append(refused, now)?;
            return Err(e.into());
        }
        let terms = Terms {
            scope: request.scope,
            starts: request.starts,
            expires: request.expires,
            ticket: request.ticket.clone(),
            justification: request.justification.clone(),
        };
        let entry = Pending {
            kind: EntryKind::Grant,
            operator: request.operator.clone(),
            customer: request.customer.clone(),
            action: Action::ManageGrants,
            grant: id,
            outcome: Outcome::Allowed,
            terms: Some(terms),
            detail: String::new(),
        };
        inner.append(entry, now)?;
        let grant = Grant::from_request(id, request);
        inner.grants.insert(id, grant.clone());
        Ok(grant)
    }

    /// Revokes a grant (logged, with the operator who revoked it): every
    /// check from the next on is refused. Revoking a revoked grant is
    /// logged again and changes nothing.
    ///
    /// # Errors
    ///
    /// [`AccessError::UnknownGrant`] (not logged: there is no customer to
    /// log it under), or the log could not be written (then the grant
    /// stands).
    pub fn revoke(&self, grant: GrantId, by: &Operator, now: Timestamp) -> Result<(), AccessError> {
        let mut inner = self.lock();
        let customer = match inner.grants.get(&grant) {
            Some(g) => g.customer.clone(),
            None => return Err(AccessError::UnknownGrant(grant)),
        };
        let entry = Pending {
            kind: EntryKind::Revoke,
            operator: by.clone(),
            customer,
            action: Action::ManageGrants,
            grant,
            outcome: Outcome::Allowed,
            terms: None,
            detail: String::new(),
        };
        inner.append(entry, now)?;
        if let Some(g) = inner.grants.get_mut(&grant) {
            g.revoked.get_or_insert(now);
        }
        Ok(())
    }

    /// Whether `operator` may do `action` on `customer`'s data at `now`
    /// under `grant`; the answer is logged either way before it is
    /// returned. Refused: no such grant, a revoked grant, another
    /// operator's or another customer's grant, before its start or from
    /// its expiry on, an action outside its scope, or a log that cannot be
    /// written.
    ///
    /// # Errors
    ///
    /// [`Denied`], with the reason and the entry that records it.
    pub fn check(
        &self,
        grant: GrantId,
        operator: &Operator,
        customer: &CustomerId,
        action: Action,
        now: Timestamp,
    ) -> Result<Authorized, Denied> {
        self.check_with(grant, operator, customer, action, now, "")
    }

    /// [`AccessControl::check`], with a `detail` for the log entry (what
    /// the action is about in counts or kinds, never a personal value;
    /// cut at 512 bytes).
    ///
    /// # Errors
    ///
    /// As [`AccessControl::check`].
    pub fn check_with(
        &self,
        grant: GrantId,
        operator: &Operator,
        customer: &CustomerId,
        action: Action,
        now: Timestamp,
        detail: &str,
    ) -> Result<Authorized, Denied> {
        let mut inner = self.lock();
        let refusal = match inner.grants.get(&grant) {
            None => Some(DenyReason::NoGrant),
            Some(g) if g.revoked.is_some() => Some(DenyReason::Revoked),
            Some(g) if &g.operator != operator => Some(DenyReason::OtherOperator),
            Some(g) if &g.customer != customer => Some(DenyReason::OtherCustomer),
            Some(g) if now < g.starts => Some(DenyReason::NotYetValid),
            Some(g) if now >= g.expires => Some(DenyReason::Expired),
            Some(g) if !g.scope.contains(action) => Some(DenyReason::OutOfScope),
            Some(_) => None,
        };
        let outcome = refusal.map_or(Outcome::Allowed, Outcome::Refused);
        let entry = Pending {
            kind: EntryKind::Check,
            operator: operator.clone(),
            customer: customer.clone(),
            action,
            grant,
            outcome,
            terms: None,
            detail: cut(detail, MAX_DETAIL_LEN).to_owned(),
        };
        let Ok(seq) = inner.append(entry, now) else {
            return Err(Denied { reason: DenyReason::LogUnavailable, grant, action, entry: None });
        };
        match refusal {
            Some(reason) => Err(Denied { reason, grant, action, entry: Some(seq) }),
            None => Ok(Authorized { grant, action, customer: customer.clone(), entry: seq }),
        }
    }

    /// A checkpoint of the log as it is now, signed, for the customer to
    /// keep.
    pub fn checkpoint(&self, now: Timestamp) -> Checkpoint {
        let inner = self.lock();
        self.key.sign(inner.len, inner.head, now)
    }

    /// How many entries the log holds.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, read from the file as it is now (what a customer
    /// verifies a checkpoint against).
    ///
    /// # Errors
    ///
    /// The file cannot be read or does not decode.
    pub fn entries(&self) -> Result<Vec<Entry>, AccessError> {
        let bytes = self.raw()?;
        decode_log(&bytes).map_err(AccessError::Corrupt)
    }

    /// The log file's bytes as they are now.
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    pub fn raw(&self) -> Result<Vec<u8>, AccessError> {
        self.lock().log.read_all()
    }

    /// Every entry about `customer`'s data: its grants, revocations and
    /// every action asked for on it, allowed or refused.
    ///
    /// # Errors
    ///
    /// As [`AccessControl::entries`].
    pub fn entries_for(&self, customer: &CustomerId) -> Result<Vec<Entry>, AccessError> {
        Ok(self.entries()?.into_iter().filter(|e| &e.customer == customer).collect())
    }

    /// The grant of an id.
    pub fn grant_of(&self, id: GrantId) -> Option<Grant> {
        self.lock().grants.get(&id).cloned()
    }

    /// Every grant for `customer`, revoked and expired ones included, by id.
    pub fn grants_for(&self, customer: &CustomerId) -> Vec<Grant> {
        let mut out: Vec<Grant> =
            self.lock().grants.values().filter(|g| &g.customer == customer).cloned().collect();
        out.sort_by_key(|g| g.id);
        out
    }
}

/// An entry before its place in the log is known.
struct Pending {
    kind: EntryKind,
    operator: Operator,
    customer: CustomerId,
    action: Action,
    grant: GrantId,
    outcome: Outcome,
    terms: Option<Terms>,
    detail: String,
}

impl Inner {
    /// Writes `p` as the next entry; returns its sequence number.
    fn append(&mut self, p: Pending, now: Timestamp) -> Result<u64, AccessError> {
        let seq = self.len;
        let entry = Entry {
            seq,
            at: now,
            kind: p.kind,
            operator: p.operator,
            customer: p.customer,
            action: p.action,
            grant: p.grant,
            outcome: p.outcome,
            terms: p.terms,
            detail: cut(&p.detail, MAX_DETAIL_LEN).to_owned(),
            prev_hash: self.head,
        };
        self.log.append(&entry)?;
        self.len += 1;
        self.head = entry.hash();
        Ok(seq)
    }
}

/// `s` cut to at most `max` bytes at a character boundary, control
/// characters not allowed (replaced by nothing: the cut stops there).
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.find(char::is_control).unwrap_or(s.len()).min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

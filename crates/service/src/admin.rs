//! Administrative actions under an access grant: each checked against the
//! operator's grant and logged, allowed or refused, in the access log
//! (`privtel-access`) before anything is read or removed.

use std::io::Write;
use std::sync::Arc;

use privtel_access::{
    AccessControl, Action, Denied, GrantId, Operator, RequestId, RequestKind, RequestOutcome, RequestRegister,
};
use privtel_model::{CustomerId, Timestamp, UserId};
use privtel_store::{
    CopyStats, CustomerDeletion, DeletionReceipt, EngineStore, ErasureRequest, KeyStore, MasterKey,
    ResealProgress,
};
use serde::Serialize;

use crate::Service;

/// An administrative action that was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The service has no access control ([`Service::with_access`]):
    /// audited actions are refused rather than done unlogged.
    #[error("no access control configured: expected Service::with_access before audited actions")]
    NoAccessControl,
    /// The grant does not allow it (logged).
    #[error(transparent)]
    Denied(#[from] Denied),
    /// Allowed and logged, but the store failed.
    #[error(transparent)]
    Store(#[from] privtel_store::Error),
    /// The customer is pinned to another region than this service's
    /// (reported through the service's log).
    #[error("customer {customer} is kept in region {region}: expected a customer of this service's region")]
    WrongRegion {
        /// The customer.
        customer: CustomerId,
        /// The customer's region.
        region: String,
    },
    /// Only an approver creates or revokes another operator's grants.
    #[error("only an approver may do this: expected an operator marked approver")]
    NotApprover,
    /// Nobody approves their own grant.
    #[error("a grant for oneself: expected another approver to grant it")]
    OwnGrant,
    /// The access log or a grant request refused it.
    #[error(transparent)]
    Access(privtel_access::AccessError),
    /// The answer could not be written.
    #[error("writing the answer: {0}")]
    Output(String),
    /// A console request's field that does not hold what it must.
    #[error("{0}")]
    BadRequest(String),
    /// The request is being executed by another operator right now.
    #[error("the request is being executed now: expected it once that is done (then it is done)")]
    InProgress,
    /// The service keeps no end-user requests ([`Service::with_requests`]).
    #[error("no request register configured: expected Service::with_requests")]
    NoRequests,
    /// The request register refused it (not instructed, declined, done,
    /// unknown, another customer's).
    #[error(transparent)]
    Request(#[from] privtel_access::RequestError),
    /// The action is not available where this service's records live
    /// ([`Service::with_records_engine`]).
    #[error("{action} is not available here: {expected}")]
    NotAvailable {
        /// The action.
        action: &'static str,
        /// What would make it available.
        expected: &'static str,
    },
}

impl Service {
    /// Checks administrative actions against grants in `access`, which logs
    /// every one ([`Service::erase_person_as`], [`Service::export_person_as`]).
    #[must_use]
    pub fn with_access(mut self, access: Arc<AccessControl>) -> Self {
        self.access = Some(access);
        self
    }

    /// The access control in force, if any (to create and revoke grants,
    /// sign checkpoints and list a customer's entries).
    pub fn access(&self) -> Option<&Arc<AccessControl>> {
        self.access.as_ref()
    }

    /// Refuses (and reports) a customer pinned to another region than this
    /// service's.
    pub(crate) fn check_region(&self, customer: &CustomerId) -> Result<(), AdminError> {
        self.other_region(&self.settings(), customer).map_err(|region| {
            self.stats.wrong_region.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.report(&format!(
                "administrative action refused on customer {customer}: its data is kept in region {region}"
            ));
            AdminError::WrongRegion { customer: customer.clone(), region }
        })
    }

    /// Checks `operator`'s `grant` for `action` on `customer` at the
    /// service's clock, logging the answer.
    pub(crate) fn authorize(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
        action: Action,
        detail: &str,
    ) -> Result<(), AdminError> {
        let access = self.access.as_ref().ok_or(AdminError::NoAccessControl)?;
        self.check_region(customer)?;
        let now = (self.clock)();
        match access.check_with(grant, operator, customer, action, now, detail) {
            Ok(_) => Ok(()),
            Err(denied) => {
                self.report(&format!(
                    "access refused: {} on customer {customer} by {operator} under grant {grant}: {}",
                    action, denied.reason
                ));
                Err(denied.into())
            }
        }
    }

    /// [`Service::erase_person`] by `operator` under `grant`: refused
    /// unless the grant is the operator's, for this customer, in force now
    /// and covers [`Action::ErasePerson`]; logged either way before anything
    /// is removed (the log names no person).
    ///
    /// # Errors
    ///
    /// [`AdminError::Denied`] (logged), [`AdminError::NoAccessControl`], or
    /// a storage error after the allowed entry was logged.
    pub fn erase_person_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
        request: &ErasureRequest,
    ) -> Result<DeletionReceipt, AdminError> {
        self.authorize(operator, grant, customer, Action::ErasePerson, "erase one person")?;
        Ok(self.erase_everywhere(customer, request)?)
    }

    /// [`Service::export_person`] by `operator` under `grant`: refused
    /// unless the grant allows [`Action::ExportPerson`] on this customer
    /// now; logged either way before anything is read.
    ///
    /// # Errors
    ///
    /// As [`Service::erase_person_as`], or a write error.
    pub fn export_person_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
        user: &UserId,
        out: &mut dyn Write,
    ) -> Result<u64, AdminError> {
        self.authorize(operator, grant, customer, Action::ExportPerson, "export one person")?;
        // On a connection of its own: a slow reader of the export does not
        // hold up ingest.
        // Where the records live, if not in the service's own store.
        let elsewhere = match self.records_reader() {
            Some(reader) => reader?.export_person(customer, user, out)?,
            None => 0,
        };
        // Opened outside the engine's lock (opening reads the mirrored tables).
        let (path, options) = self.engine().path_and_options()?;
        let reader = privtel_store::SqliteEngine::open(path, options)?;
        Ok(elsewhere + reader.export_person(customer, user, out)?)
    }

    /// Keeps end users' requests in `register`: recorded, notified to the
    /// customer, executed only once the customer said to proceed
    /// ([`Service::execute_request_as`]).
    #[must_use]
    pub fn with_requests(mut self, register: Arc<RequestRegister>) -> Self {
        self.requests = Some(register);
        self
    }

    /// The request register, if any (to record requests, read the
    /// customer's notifications, record its instructions, list overdue
    /// requests).
    pub fn requests(&self) -> Option<&Arc<RequestRegister>> {
        self.requests.as_ref()
    }

    /// Executes an end user's request that the customer instructed to
    /// proceed, by `operator` under `grant`: an access request exports the
    /// person to `out` ([`Service::export_person_as`]), an erasure erases
    /// them ([`Service::erase_person_as`], due 24 hours after the
    /// instruction); then the request is completed with its counts (and the
    /// register forgets the person). Refused before anything is read if the
    /// request is not ready (not instructed, declined, done, another
    /// customer's) or the grant does not cover the action.
    ///
    /// # Errors
    ///
    /// [`AdminError::NoRequests`], [`AdminError::Request`], or as the
    /// export or erasure.
    pub fn execute_request_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
        id: RequestId,
        out: &mut dyn Write,
    ) -> Result<RequestOutcome, AdminError> {
        let register = self.requests.as_ref().ok_or(AdminError::NoRequests)?;
        self.check_region(customer)?;
        // One execution of a request at a time: a second one is refused at
        // once, and after the first completes the register refuses it as
        // done.
        let _claim = Claim::take(&self.executing, id.get()).ok_or(AdminError::InProgress)?;
        let request = register.authorize_execution(customer, id)?;
        let subject = request
            .subject
            .clone()
            .ok_or(AdminError::Request(privtel_access::RequestError::AlreadyDone(id)))?;
        let outcome = match request.kind {
            RequestKind::Erasure => {
                // The deadline runs from the customer's instruction.
                let asked = request.instruction.as_ref().map_or(request.received, |i| i.at);
                let erasure = ErasureRequest::new(id.to_string(), subject, asked);
                let receipt = self.erase_person_as(operator, grant, customer, &erasure)?;
                RequestOutcome {
                    records: receipt.records_removed,
                    suppressed: receipt.pseudonyms_suppressed + receipt.identifiers_suppressed,
                }
            }
            _ => {
                let lines = self.export_person_as(operator, grant, customer, &subject, out)?;
                // Done only once every byte has left: a cut-off answer
                // leaves the request open, to be executed again.
                out.flush().map_err(|e| AdminError::Output(e.to_string()))?;
                RequestOutcome { records: lines, suppressed: 0 }
            }
        };
        register.complete(customer, id, (self.clock)(), outcome)?;
        self.report(&format!("end-user request {id} of customer {customer} done by {operator}"));
        Ok(outcome)
    }

    /// The customer copy by `operator` under `grant` (action
    /// [`Action::CopyCustomer`]): everything the store holds of `customer`
    /// as JSON Lines to `out`, streamed, its manifest naming the customer's
    /// policy digest and region, when the copy was requested and when it is
    /// due (30 days later), besides the store's format and schema versions.
    ///
    /// # Errors
    ///
    /// As [`Service::erase_person_as`], or a write error.
    pub fn copy_customer_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
        out: &mut dyn Write,
    ) -> Result<CopyStats, AdminError> {
        let now = (self.clock)();
        let due = now.checked_add(time::Duration::days(COPY_DAYS)).unwrap_or(now);
        let detail =
            format!("copy the customer: requested {}, due {}", now.unix_seconds(), due.unix_seconds());
        self.authorize(operator, grant, customer, Action::CopyCustomer, &detail)?;
        let mut manifest = serde_json::Map::new();
        if let Some(cs) = self.settings().customer(customer) {
            manifest.insert("policy_sha256".into(), hex(&cs.policy_digest()).into());
            manifest.insert("region".into(), cs.region().into());
        }
        manifest.insert("requested_unix".into(), now.unix_seconds().into());
        manifest.insert("due_unix".into(), due.unix_seconds().into());
        manifest.insert("operator".into(), operator.as_str().into());
        manifest.insert("grant".into(), grant.0.into());
        // Opened outside the engine's lock (opening reads the mirrored tables).
        let (path, options) = self.engine().path_and_options()?;
        let own = privtel_store::SqliteEngine::open(path, options)?;
        let Some(reader) = self.records_reader() else {
            return Ok(own.export_customer(customer, &manifest, out)?);
        };
        // Where the records are; then, if the service's own store holds
        // records of the customer too (an earlier embedded run), its copy
        // as a second document (its own manifest and counts).
        let mut stats = reader?.export_customer(customer, &manifest, out)?;
        if own.record_count_of(customer)? > 0 {
            let more = own.export_customer(customer, &manifest, out)?;
            stats.lines += more.lines;
            stats.records += more.records;
            stats.bytes += more.bytes;
        }
        Ok(stats)
    }

    /// A support read by `operator` under `grant` (action
    /// [`Action::ReadRecords`], logged): at most `limit` (1 to 1,000) of
    /// `customer`'s records with row ids above `after`, as JSON Lines to
    /// `out`. Returns the lines and the last id (the next page's `after`).
    ///
    /// # Errors
    ///
    /// As [`Service::erase_person_as`], or a write error.
    pub fn read_records_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
        after: i64,
        limit: usize,
        out: &mut dyn Write,
    ) -> Result<(u64, Option<i64>), AdminError> {
        let limit = limit.clamp(1, 1_000);
        let detail = format!("read up to {limit} records after row {after}");
        self.authorize(operator, grant, customer, Action::ReadRecords, &detail)?;
        if self.records.is_some() {
            return Err(AdminError::NotAvailable {
                action: "a support read",
                expected: "a service whose records are in its own store (the records live in another engine)",
            });
        }
        let (path, options) = self.engine().path_and_options()?;
        let reader = privtel_store::SqliteEngine::open(path, options)?;
        Ok(reader.read_records(customer, after, limit, out)?)
    }

    /// Contract end by `operator` under `grant` (action
    /// [`Action::DeleteCustomer`]), in this order: the customer's devices
    /// are cut off (its settings leave the service's settings in force), the
    /// store destroys its data keys (from that instant nothing of it is
    /// readable) then removes every row, the enrollment authority forgets
    /// its CA, tokens and devices, and the request register its end users'
    /// requests. Returns the receipt, signed with the service's key.
    ///
    /// The settings file the service was started with still names the
    /// customer: remove it there too. Until then the store refuses its
    /// data as a deleted customer's.
    ///
    /// # Errors
    ///
    /// As [`Service::erase_person_as`]. A failure after the keys were
    /// destroyed leaves nothing readable; run it again to finish.
    pub fn delete_customer_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
    ) -> Result<SignedReceipt, AdminError> {
        self.authorize(
            operator,
            grant,
            customer,
            Action::DeleteCustomer,
            "delete the customer (contract end)",
        )?;
        let access = self.access.as_ref().ok_or(AdminError::NoAccessControl)?;
        let now = (self.clock)();
        let had_settings = self.settings().customer(customer).is_some();
        self.replace_settings(self.settings().without(customer));
        // Where the records live first (its keys destroyed first), then the
        // service's own store.
        let elsewhere = match self.records_engine() {
            Some(mut records) => Some(records.delete_customer(customer, now)?),
            None => None,
        };
        let own = self.engine().delete_customer(customer, now)?;
        let engine = match elsewhere {
            Some(mut first) => {
                for (table, n) in own.removed {
                    *first.removed.entry(table).or_default() += n;
                }
                first.keys_destroyed.extend(own.keys_destroyed);
                // The own store ran after the records engine: its times,
                // measured from `now`, follow the records engine's. Nothing
                // is unreadable before both stores' keys are gone (a store
                // without a key store: only once it completed).
                let after = |t: Timestamp| {
                    let took = time::Duration::nanoseconds(
                        i64::try_from(t.unix_nanos() - now.unix_nanos()).unwrap_or(i64::MAX).max(0),
                    );
                    first.completed_at.checked_add(took).unwrap_or(first.completed_at)
                };
                first.keys_destroyed_at = match (first.keys_destroyed_at, own.keys_destroyed_at) {
                    (Some(_), Some(theirs)) => Some(after(theirs)),
                    _ => None,
                };
                first.keys_pending_rewrite |= own.keys_pending_rewrite;
                first.completed_at = after(own.completed_at);
                first.stores.extend(own.stores.into_iter().map(|s| format!("service store: {s}")));
                first
            }
            None => own,
        };
        let mut stores = vec!["settings in force".to_owned()];
        stores.extend(engine.stores.iter().cloned());
        let ingest_messages_purged = self.purge_ingest(customer)?;
        if ingest_messages_purged.is_some() {
            stores.push("ingest stream".into());
        }
        let requests = match &self.requests {
            Some(r) => {
                stores.push("end-user requests".into());
                Some(r.remove_customer(customer)?)
            }
            None => None,
        };
        // Last: its certificates are refused from the moment its settings
        // left, and a re-run after a failure finds the rest done.
        let authority = self.remove_enrollment(customer)?;
        if authority.is_some() {
            stores.push("enrollment authority".into());
        }
        let receipt = CustomerDeletionReceipt {
            kind: RECEIPT_KIND,
            version: 1,
            operator: operator.as_str().to_owned(),
            grant: grant.0,
            settings_removed: had_settings,
            authority,
            end_user_requests: requests,
            ingest_messages_purged,
            stores,
            engine,
        };
        let document = serde_json::to_string(&receipt).map_err(|e| AdminError::Output(e.to_string()))?;
        let signature = access.sign_document(RECEIPT_KIND, document.as_bytes());
        self.report(&format!(
            "customer {customer} deleted at contract end by {operator} under grant {grant}"
        ));
        Ok(SignedReceipt {
            receipt: document,
            signature: hex(&signature),
            public_key: access.public_key().to_string(),
        })
    }

    /// The engine's key store (a service whose store seals under
    /// per-customer keys).
    ///
    /// # Errors
    ///
    /// [`AdminError::Store`] when the store has none.
    fn key_store(&self) -> Result<Arc<KeyStore>, AdminError> {
        self.engine().keys().cloned().ok_or_else(|| {
            AdminError::Store(privtel_store::Error::KeyStore {
                reason: "the store has no key store: expected EngineOptions::key_store".into(),
            })
        })
    }

    /// Re-wraps every customer's data keys under `new_master` (no row is
    /// touched); from then on the old master key is not needed. Returns the
    /// new master's id.
    ///
    /// # Errors
    ///
    /// The store has no key store, or the key store could not be written
    /// (then the old master still opens it).
    pub fn rotate_master_key(&self, new_master: MasterKey) -> Result<privtel_model::KeyId, AdminError> {
        let id = new_master.id();
        self.key_store()?.rotate_master(new_master)?;
        self.report(&format!("master key rotated: data keys now wrapped under {id}"));
        Ok(id)
    }

    /// Gives `customer` a new current data key, by `operator` under
    /// `grant` (action [`Action::ManageKeys`], logged); its older rows move
    /// to it with [`Service::reseal_as`].
    ///
    /// # Errors
    ///
    /// As [`Service::erase_person_as`]; the store has no key store, or it
    /// could not be written.
    pub fn rotate_customer_key_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
    ) -> Result<privtel_model::KeyId, AdminError> {
        self.authorize(operator, grant, customer, Action::ManageKeys, "rotate the customer's data key")?;
        let id = self.key_store()?.rotate_customer_key(customer)?;
        self.report(&format!("customer {customer}: new data key {id}"));
        Ok(id)
    }

    /// Moves at most `max_rows` of `customer`'s rows to its current data
    /// key (one transaction), by `operator` under `grant` (action
    /// [`Action::ManageKeys`], logged); when none remains under a retired
    /// key, those keys are destroyed.
    ///
    /// # Errors
    ///
    /// As [`Service::erase_person_as`]; the store has no key store, or a
    /// storage error.
    pub fn reseal_as(
        &self,
        operator: &Operator,
        grant: GrantId,
        customer: &CustomerId,
        max_rows: usize,
    ) -> Result<ResealProgress, AdminError> {
        self.authorize(operator, grant, customer, Action::ManageKeys, "re-seal the customer's rows")?;
        let mut engine = self.engine();
        let progress = engine.reseal(customer, max_rows)?;
        if progress.remaining == 0 {
            let destroyed = engine.destroy_retired_keys(customer)?;
            if !destroyed.is_empty() {
                self.report(&format!("customer {customer}: {} retired data keys destroyed", destroyed.len()));
            }
        }
        Ok(progress)
    }

    /// Purges the customer's messages from the ingest stream, if the service
    /// publishes to one.
    #[cfg(feature = "jetstream")]
    fn purge_ingest(&self, customer: &CustomerId) -> Result<Option<u64>, AdminError> {
        let Some(publisher) = &self.jetstream else { return Ok(None) };
        let purged = publisher.purge_customer(customer).map_err(|e| AdminError::Output(e.to_string()))?;
        Ok(Some(purged))
    }

    #[cfg(not(feature = "jetstream"))]
    fn purge_ingest(&self, _: &CustomerId) -> Result<Option<u64>, AdminError> {
        Ok(None)
    }

    /// Removes the customer's enrollment authority, if the service has one.
    #[cfg(feature = "tls")]
    fn remove_enrollment(&self, customer: &CustomerId) -> Result<Option<RemovedEnrollment>, AdminError> {
        let Some(authority) = &self.authority else { return Ok(None) };
        let r = authority.remove_customer(customer).map_err(|e| AdminError::Output(e.to_string()))?;
        Ok(Some(RemovedEnrollment {
            authority: r.authority,
            tokens: r.tokens,
            devices: r.devices,
            reports: r.reports,
        }))
    }

    #[cfg(not(feature = "tls"))]
    fn remove_enrollment(&self, _: &CustomerId) -> Result<Option<RemovedEnrollment>, AdminError> {
        Ok(None)
    }
}

/// A request being executed, released when dropped.
struct Claim<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<u64>>,
    id: u64,
}

impl<'a> Claim<'a> {
    fn take(set: &'a std::sync::Mutex<std::collections::HashSet<u64>>, id: u64) -> Option<Self> {
        let fresh = set.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id);
        fresh.then_some(Self { set, id })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

/// Days a customer has its copy within, from its request.
const COPY_DAYS: i64 = 30;

/// The kind a contract-end receipt is signed as.
pub const RECEIPT_KIND: &str = "customer-deletion";

/// What the enrollment authority removed at contract end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RemovedEnrollment {
    /// Whether the customer's CA existed.
    pub authority: bool,
    /// Enrollment tokens removed.
    pub tokens: u64,
    /// Devices removed.
    pub devices: u64,
    /// Reports removed.
    pub reports: u64,
}

/// The contract-end receipt: counts, times, key ids and the stores covered;
/// no personal data.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct CustomerDeletionReceipt {
    /// Always [`RECEIPT_KIND`].
    pub kind: &'static str,
    /// The receipt format's version (1).
    pub version: u32,
    /// Who did it.
    pub operator: String,
    /// Under which grant.
    pub grant: u64,
    /// Whether the customer's settings were in force.
    pub settings_removed: bool,
    /// What the enrollment authority removed (none without one).
    pub authority: Option<RemovedEnrollment>,
    /// End users' requests removed (none without a register).
    pub end_user_requests: Option<u64>,
    /// Messages of the customer purged from the JetStream ingest stream
    /// (none without one).
    pub ingest_messages_purged: Option<u64>,
    /// Every store the deletion covered.
    pub stores: Vec<String>,
    /// What the engine store did, with its times.
    pub engine: CustomerDeletion,
}

/// A receipt and the service's signature of its exact bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SignedReceipt {
    /// The receipt, JSON ([`CustomerDeletionReceipt`]): the signed bytes.
    pub receipt: String,
    /// The Ed25519 signature (hex) by [`privtel_access::SigningKey::sign_document`]
    /// with kind [`RECEIPT_KIND`].
    pub signature: String,
    /// The service's public key (hex).
    pub public_key: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

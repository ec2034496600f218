//! Administrative actions under an access grant: each checked against the
//! operator's grant and logged, allowed or refused, in the access log
//! (`privtel-access`) before anything is read or removed.

use std::io::Write;
use std::sync::Arc;

use privtel_access::{
    AccessControl, Action, Denied, GrantId, Operator, RequestId, RequestKind, RequestOutcome, RequestRegister,
};
use privtel_model::{CustomerId, UserId};
use privtel_store::{DeletionReceipt, EngineStore, ErasureRequest};

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
    /// The service keeps no end-user requests ([`Service::with_requests`]).
    #[error("no request register configured: expected Service::with_requests")]
    NoRequests,
    /// The request register refused it (not instructed, declined, done,
    /// unknown, another customer's).
    #[error(transparent)]
    Request(#[from] privtel_access::RequestError),
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
    fn authorize(
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
        let now = (self.clock)();
        Ok(self.engine().erase_person(customer, request, now)?)
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
        Ok(self.engine().export_person(customer, user, out)?)
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
                RequestOutcome { records: lines, suppressed: 0 }
            }
        };
        register.complete(customer, id, (self.clock)(), outcome)?;
        self.report(&format!("end-user request {id} of customer {customer} done by {operator}"));
        Ok(outcome)
    }
}

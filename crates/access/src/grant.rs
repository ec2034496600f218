//! Operators, actions, scopes and grants.

use std::fmt;

use privtel_model::{CustomerId, Timestamp};

use crate::error::GrantError;

/// The longest operator name, in bytes.
pub const MAX_OPERATOR_LEN: usize = 128;
/// The longest ticket reference, in bytes.
pub const MAX_TICKET_LEN: usize = 128;
/// The longest justification, in bytes.
pub const MAX_JUSTIFICATION_LEN: usize = 2_000;

/// A member of the vendor's staff acting on a customer's data: 1 to 128
/// bytes of printable text (an account name such as `ops.jdoe`), no
/// control characters. The operator's name is written to the access log in
/// clear: it is what the customer reads to see who acted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Operator(String);

impl Operator {
    /// Validates `name` and wraps it.
    ///
    /// # Errors
    ///
    /// [`GrantError::Operator`] if `name` is empty, longer than 128 bytes,
    /// or holds a control character (the name is not repeated).
    pub fn new(name: impl Into<String>) -> Result<Self, GrantError> {
        let name = name.into();
        if valid_text(&name, MAX_OPERATOR_LEN) {
            Ok(Self(name))
        } else {
            Err(GrantError::Operator { len: name.len() })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Operator").field(&self.0).finish()
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Non-empty, at most `max` bytes, no control characters.
pub(crate) fn valid_text(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// An administrative action on one customer's data. Each has a stable code
/// ([`Action::code`]) that the access log stores; codes are never reused
/// and do not follow the order of declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Export everything held about one person (the right of access).
    ExportPerson,
    /// Erase everything held about one person (the right to erasure).
    ErasePerson,
    /// Copy everything of one customer (the copy at contract end).
    CopyCustomer,
    /// Delete everything of one customer (contract end).
    DeleteCustomer,
    /// Read a customer's records (support, investigation).
    ReadRecords,
    /// List, create or revoke grants for a customer. Creating and revoking
    /// grants are logged under this action.
    ManageGrants,
    /// Record the customer's end users' requests, read its notifications
    /// and relay its instructions.
    EndUserRequests,
    /// Rotate the customer's data key and re-seal its rows.
    ManageKeys,
}

impl Action {
    /// Every action, in code order.
    pub const ALL: [Self; 8] = [
        Self::ExportPerson,
        Self::ErasePerson,
        Self::CopyCustomer,
        Self::DeleteCustomer,
        Self::ReadRecords,
        Self::ManageGrants,
        Self::EndUserRequests,
        Self::ManageKeys,
    ];

    /// The stable code the log stores (1 to 63; a scope is a bit set of
    /// them).
    pub const fn code(self) -> u8 {
        match self {
            Self::ExportPerson => 1,
            Self::ErasePerson => 2,
            Self::CopyCustomer => 3,
            Self::DeleteCustomer => 4,
            Self::ReadRecords => 5,
            Self::ManageGrants => 6,
            Self::EndUserRequests => 7,
            Self::ManageKeys => 8,
        }
    }

    /// The action of a stored code, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.code() == code)
    }

    /// The name shown to people (`export-person`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ExportPerson => "export-person",
            Self::ErasePerson => "erase-person",
            Self::CopyCustomer => "copy-customer",
            Self::DeleteCustomer => "delete-customer",
            Self::ReadRecords => "read-records",
            Self::ManageGrants => "manage-grants",
            Self::EndUserRequests => "end-user-requests",
            Self::ManageKeys => "manage-keys",
        }
    }

    /// The action of a name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of actions, held as a bit set of their codes (bit `code`), which
/// is also how the log stores it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scope(u64);

impl Scope {
    /// No action.
    pub const EMPTY: Self = Self(0);

    /// The set of `actions`.
    pub fn of(actions: &[Action]) -> Self {
        Self(actions.iter().fold(0, |bits, a| bits | (1 << a.code())))
    }

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & (1 << action.code()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in the set, in code order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// The stored bits.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// The set of stored bits, if every bit set is an action's code.
    pub fn from_bits(bits: u64) -> Option<Self> {
        let known = Self::of(&Action::ALL).0;
        (bits & !known == 0).then_some(Self(bits))
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.name())?;
        }
        Ok(())
    }
}

/// A grant's id: the sequence number of the log entry that created it, so
/// ids are unique, stable across restarts and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantId(pub u64);

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// What an operator asks for: who, on which customer, why (justification
/// and ticket), which actions, and from when to when. Checked by
/// [`GrantRequest::validate`] (and by [`crate::AccessControl::grant`]).
///
/// The justification and the ticket are the operator's words for the
/// customer to read, and are written to the access log: they must say why,
/// never name an end user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRequest {
    /// Who will act.
    pub operator: Operator,
    /// On whose data.
    pub customer: CustomerId,
    /// Why (1 to 2,000 bytes, no control characters).
    pub justification: String,
    /// The ticket or case reference (1 to 128 bytes, no control characters).
    pub ticket: String,
    /// Which actions.
    pub scope: Scope,
    /// From when.
    pub starts: Timestamp,
    /// Until when (excluded): after `starts`, at most the configured
    /// maximum after it.
    pub expires: Timestamp,
}

impl GrantRequest {
    /// Checks the request against `max` (the longest a grant may last).
    ///
    /// # Errors
    ///
    /// The first problem found: an empty or overlong justification or
    /// ticket, an empty scope, an expiry not after the start, or an expiry
    /// more than `max` after the start.
    pub fn validate(&self, max: time::Duration) -> Result<(), GrantError> {
        if self.justification.trim().is_empty() {
            return Err(GrantError::EmptyJustification);
        }
        if !valid_text(&self.justification, MAX_JUSTIFICATION_LEN) {
            return Err(GrantError::Justification { len: self.justification.len() });
        }
        if self.ticket.trim().is_empty() {
            return Err(GrantError::EmptyTicket);
        }
        if !valid_text(&self.ticket, MAX_TICKET_LEN) {
            return Err(GrantError::Ticket { len: self.ticket.len() });
        }
        if self.scope.is_empty() {
            return Err(GrantError::EmptyScope);
        }
        if self.expires <= self.starts {
            return Err(GrantError::ExpiresBeforeStart { starts: self.starts, expires: self.expires });
        }
        let longest = self.starts.checked_add(max).unwrap_or(Timestamp::MAX);
        if self.expires > longest {
            return Err(GrantError::TooLong {
                requested_secs: self.expires.unix_seconds().saturating_sub(self.starts.unix_seconds()),
                max_secs: max.whole_seconds(),
            });
        }
        Ok(())
    }
}

/// A grant in force or past: a request that was accepted, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Its id.
    pub id: GrantId,
    /// Who may act.
    pub operator: Operator,
    /// On whose data.
    pub customer: CustomerId,
    /// Why.
    pub justification: String,
    /// The ticket or case reference.
    pub ticket: String,
    /// Which actions.
    pub scope: Scope,
    /// From when.
    pub starts: Timestamp,
    /// Until when (excluded).
    pub expires: Timestamp,
    /// When it was revoked, if it was.
    pub revoked: Option<Timestamp>,
}

impl Grant {
    pub(crate) fn from_request(id: GrantId, r: GrantRequest) -> Self {
        Self {
            id,
            operator: r.operator,
            customer: r.customer,
            justification: r.justification,
            ticket: r.ticket,
            scope: r.scope,
            starts: r.starts,
            expires: r.expires,
            revoked: None,
        }
    }
}

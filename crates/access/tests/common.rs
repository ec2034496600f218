//! Shared fixtures: a log in a temporary folder, an operator, customers.

use std::path::PathBuf;

use privtel_access::{
    AccessControl, AccessOptions, Action, Grant, GrantRequest, Operator, Scope, SigningKey,
};
use privtel_model::{CustomerId, Duration, Timestamp};

pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) pkcs8: Vec<u8>,
    pub(crate) access: AccessControl,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("access.log");
        let (key, pkcs8) = SigningKey::generate().expect("key");
        let access = AccessControl::open(&path, key, AccessOptions::default()).expect("open");
        Self { _dir: dir, path, pkcs8, access }
    }
}

/// Opens a fixture's file again (its first handle must be dropped).
pub(crate) fn reopen(
    f_path: &std::path::Path,
    pkcs8: &[u8],
    options: AccessOptions,
) -> Result<AccessControl, privtel_access::AccessError> {
    AccessControl::open(f_path, SigningKey::from_pkcs8(pkcs8).expect("key"), options)
}

pub(crate) fn t0() -> Timestamp {
    Timestamp::from_unix_seconds(1_800_000_000).expect("in range")
}

pub(crate) fn at(minutes: i64) -> Timestamp {
    t0().checked_add(Duration::minutes(minutes)).expect("in range")
}

pub(crate) fn jdoe() -> Operator {
    Operator::new("ops.jdoe").expect("operator")
}

pub(crate) fn acme() -> CustomerId {
    CustomerId::new("acme").expect("customer")
}

pub(crate) fn globex() -> CustomerId {
    CustomerId::new("globex").expect("customer")
}

pub(crate) fn request(customer: CustomerId, scope: &[Action], minutes: i64) -> GrantRequest {
    GrantRequest {
        operator: jdoe(),
        customer,
        justification: "customer asked to export one end user's data".into(),
        ticket: "SUP-4711".into(),
        scope: Scope::of(scope),
        starts: t0(),
        expires: at(minutes),
    }
}

pub(crate) fn grant(access: &AccessControl, customer: CustomerId, scope: &[Action]) -> Grant {
    access.grant(request(customer, scope, 120), t0()).expect("grant")
}

/// A log of a few grants and checks, allowed and refused, for two
/// customers.
pub(crate) fn busy(f: &Fixture) {
    let a = grant(&f.access, acme(), &[Action::ExportPerson, Action::ErasePerson]);
    let g = grant(&f.access, globex(), &[Action::ReadRecords]);
    for (i, action) in
        [Action::ExportPerson, Action::ErasePerson, Action::CopyCustomer].into_iter().enumerate()
    {
        let _ = f.access.check(a.id, &jdoe(), &acme(), action, at(i as i64));
    }
    let _ = f.access.check(g.id, &jdoe(), &globex(), Action::ReadRecords, at(5));
    let _ = f.access.check(g.id, &jdoe(), &acme(), Action::ReadRecords, at(6));
    f.access.revoke(a.id, &jdoe(), at(7)).expect("revoke");
    let _ = f.access.check(a.id, &jdoe(), &acme(), Action::ExportPerson, at(8));
}

/// The frames of a log file: (offset, length with the 4-byte prefix).
pub(crate) fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = privtel_access::HEADER_LEN;
    while pos + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        out.push((pos, 4 + len));
        pos += 4 + len;
    }
    out
}

//! Arbitrary bytes as a request register (`privtel-access`): once as a
//! whole file, once as the values of rows written into a register of this
//! version (codes, instants, counts, texts no version writes). Typed errors,
//! never a panic; what reads back keeps the register's rules: a request
//! handed out for execution was instructed to proceed and holds its
//! subject, a closed request holds none, an overdue request is late.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use privtel_access::{Decision, RequestError, RequestRegister, RequestOptions, RequestState};
use privtel_model::{CustomerId, Timestamp};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("privtel-fuzz-requests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// Reads every view of the register and checks its rules.
fn exercise(reg: &RequestRegister, customers: &[CustomerId]) {
    let now = Timestamp::from_unix_seconds(1_800_000_000).expect("in range");
    if let Ok(late) = reg.overdue(now) {
        for o in late {
            assert!(o.late > privtel_model::Duration::ZERO, "an overdue request is late");
            assert!(now > o.due);
        }
    }
    for c in customers {
        let _ = reg.notifications(c);
        if let Ok(ready) = reg.ready(c) {
            for r in ready {
                assert_eq!(r.state, RequestState::Instructed);
            }
        }
        let Ok(all) = reg.requests(c) else { continue };
        for r in all {
            assert_eq!(&r.customer, c);
            assert_eq!(r.subject.is_none(), r.state.is_closed(), "closed requests hold no subject");
            match reg.authorize_execution(c, r.id) {
                Ok(x) => {
                    assert_eq!(x.state, RequestState::Instructed);
                    assert!(x.subject.is_some());
                    assert_eq!(x.instruction.map(|i| i.decision), Some(Decision::Proceed));
                }
                Err(e) => assert!(!matches!(e, RequestError::UnknownRequest(_))),
            }
        }
    }
}

/// Takes bytes off the front of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        let got = self.bytes(8);
        b[..got.len()].copy_from_slice(got);
        i64::from_le_bytes(b)
    }
    /// A small number, or a value anywhere in i64 (flag bit 0x80).
    fn number(&mut self) -> i64 {
        let tag = self.u8();
        if tag & 0x80 != 0 { self.i64() } else { i64::from(tag) }
    }
    fn option(&mut self) -> Option<i64> {
        (self.u8() & 1 == 1).then(|| self.number())
    }
    fn text(&mut self) -> Option<String> {
        let len = self.u8();
        (len != 0).then(|| String::from_utf8_lossy(self.bytes(usize::from(len) - 1)).into_owned())
    }
}

fn rows(path: &Path, data: &[u8]) -> Option<()> {
    drop(RequestRegister::open(path, RequestOptions::default()).ok()?);
    let conn = rusqlite::Connection::open(path).ok()?;
    let mut input = Input(data);
    let customers = ["acme", "globex", ""];
    let t0 = 1_800_000_000_000_000_000i64;
    for _ in 0..input.u8() % 8 {
        let id = input.number();
        let customer = customers[usize::from(input.u8()) % customers.len()];
        let kind = input.number();
        let state = input.number();
        let received = t0.wrapping_add(input.number().wrapping_mul(3_600_000_000_000));
        let due = input.option().map(|d| t0.wrapping_add(d.wrapping_mul(3_600_000_000_000)));
        let instructed = input.option();
        let by = input.text();
        let decision = input.option();
        let reason = input.text();
        let completed = input.option();
        let records = input.option();
        let suppressed = input.option();
        let _ = conn.execute(
            "INSERT INTO requests (id, customer, kind, state, received, due, instructed, instructed_by, decision, decline_reason, completed, records, suppressed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            rusqlite::params![id, customer, kind, state, received, due, instructed, by, decision, reason, completed, records, suppressed],
        );
        if let (Some(subject), Some(reference)) = (input.text(), input.text()) {
            let _ = conn.execute(
                "INSERT INTO open_subjects (request, subject, reference) VALUES (?1, ?2, ?3)",
                rusqlite::params![id, subject, reference],
            );
        }
        if input.u8() & 1 == 1 {
            let _ = conn.execute(
                "INSERT INTO notifications (id, customer, request, event, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![input.number(), customer, id, input.number(), input.number()],
            );
        }
    }
    drop(conn);
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let customers = [CustomerId::new("acme").expect("id"), CustomerId::new("globex").expect("id")];
    // The bytes as a whole file.
    let path = scratch("whole.db");
    std::fs::write(&path, data).expect("scratch file");
    if let Ok(reg) = RequestRegister::open(&path, RequestOptions::default()) {
        exercise(&reg, &customers);
    }
    // The bytes as rows of a register of this version.
    let path = scratch("rows.db");
    if rows(&path, data).is_some() {
        if let Ok(reg) = RequestRegister::open(&path, RequestOptions::default()) {
            exercise(&reg, &customers);
        }
    }
});

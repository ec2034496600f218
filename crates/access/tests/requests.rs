//! The register of end users' requests: notify the customer, wait for its
//! instruction, execute, close; deadlines; customers kept apart; the
//! subject gone from every byte once a request closes.

use std::path::{Path, PathBuf};

use privtel_access::{
    Decision, Instruction, NotificationEvent, NotificationId, REQUESTS_APPLICATION_ID,
    REQUESTS_SCHEMA_VERSION, Request, RequestError, RequestId, RequestKind, RequestOptions, RequestOutcome,
    RequestRegister, RequestState, Waiting,
};
use privtel_model::{Duration, Timestamp, UserId};

use crate::common::{acme, globex, t0};

fn hours(h: i64) -> Timestamp {
    t0().checked_add(Duration::hours(h)).expect("in range")
}

fn user(id: &str) -> UserId {
    UserId::new(id).expect("user id")
}

struct Reg {
    dir: tempfile::TempDir,
    register: RequestRegister,
}

impl Reg {
    fn new() -> Self {
        Self::with(RequestOptions::default())
    }

    fn with(options: RequestOptions) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let register = RequestRegister::open(&dir.path().join("requests.db"), options).expect("open");
        Self { dir, register }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("requests.db")
    }
}

/// Every file in `dir` (the database, its write-ahead log, anything else
/// SQLite left), whole.
fn raw_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("folder") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            out.push((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read")));
        }
    }
    assert!(!out.is_empty(), "the folder holds the register");
    out
}

fn holds(files: &[(String, Vec<u8>)], needle: &str) -> Vec<String> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn the_whole_flow_record_notify_instruct_ready_authorize_complete() {
    let r = Reg::new();
    let reg = &r.register;
    let id =
        reg.record(&acme(), RequestKind::Erasure, &user("u-1042"), "email to privacy desk", t0()).unwrap();

    // Notified at once, and the request waits for the customer.
    let queue = reg.notifications(&acme()).unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(
        (queue[0].request, queue[0].kind, queue[0].event),
        (id, RequestKind::Erasure, NotificationEvent::Received)
    );
    assert_eq!(queue[0].at, t0());
    let open = reg.request(&acme(), id).unwrap();
    assert_eq!(open.state, RequestState::AwaitingInstruction);
    assert_eq!(open.subject, Some(user("u-1042")));
    assert_eq!(open.reference.as_deref(), Some("email to privacy desk"));
    assert_eq!(open.due, None, "an erasure is due from the instruction, not before");
    assert!(reg.ready(&acme()).unwrap().is_empty(), "nothing is ready before the instruction");
    assert!(matches!(reg.authorize_execution(&acme(), id), Err(RequestError::NotInstructed(x)) if x == id));

    // The administrator reads the notification: it leaves the queue.
    reg.acknowledge(&acme(), queue[0].id, hours(1)).unwrap();
    assert!(reg.notifications(&acme()).unwrap().is_empty());
    reg.acknowledge(&acme(), queue[0].id, hours(2)).unwrap();

    // The instruction: ready, due 24 h later.
    reg.instruct(&acme(), id, Instruction::Proceed, "admin.kim", hours(2)).unwrap();
    let ready = reg.ready(&acme()).unwrap();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, id);
    assert_eq!(ready[0].due, Some(hours(26)));
    let instruction = ready[0].instruction.as_ref().expect("instructed");
    assert_eq!(
        (instruction.at, instruction.by.as_str(), instruction.decision),
        (hours(2), "admin.kim", Decision::Proceed)
    );
    assert!(matches!(
        reg.instruct(&acme(), id, Instruction::Proceed, "admin.kim", hours(3)),
        Err(RequestError::AlreadyInstructed(_))
    ));

    // The service asks before it erases, and gets the subject.
    let authorized = reg.authorize_execution(&acme(), id).unwrap();
    assert_eq!(authorized.subject, Some(user("u-1042")));
    assert_eq!(authorized.kind, RequestKind::Erasure);

    reg.complete(&acme(), id, hours(5), RequestOutcome { records: 40, suppressed: 2 }).unwrap();
    let done = reg.request(&acme(), id).unwrap();
    assert_eq!(done.state, RequestState::Done);
    assert_eq!(done.completed, Some(hours(5)));
    assert_eq!(done.outcome, Some(RequestOutcome { records: 40, suppressed: 2 }));
    assert_eq!((done.subject, done.reference), (None, None), "closed: the subject is gone");
    assert_eq!(done.received, t0());
    assert!(reg.ready(&acme()).unwrap().is_empty());
    assert!(matches!(reg.authorize_execution(&acme(), id), Err(RequestError::AlreadyDone(_))));
    assert!(matches!(
        reg.complete(&acme(), id, hours(6), RequestOutcome::default()),
        Err(RequestError::AlreadyDone(_))
    ));
    // The customer hears that it is done.
    let queue = reg.notifications(&acme()).unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!((queue[0].request, queue[0].event, queue[0].at), (id, NotificationEvent::Completed, hours(5)));
    assert!(reg.overdue(hours(24 * 365)).unwrap().is_empty(), "a done request is never overdue");
}

#[test]
fn an_erasure_not_done_25_hours_after_the_instruction_is_overdue() {
    let r = Reg::new();
    let reg = &r.register;
    let id = reg.record(&acme(), RequestKind::Erasure, &user("u-1"), "phone", t0()).unwrap();
    reg.instruct(&acme(), id, Instruction::Proceed, "admin.kim", hours(1)).unwrap();
    assert!(reg.overdue(hours(25)).unwrap().is_empty(), "due at 25 h: not late at 25 h");
    let late = reg.overdue(hours(26)).unwrap();
    assert_eq!(late.len(), 1);
    let o = &late[0];
    assert_eq!(
        (&o.customer, o.id, o.kind, o.waiting),
        (&acme(), id, RequestKind::Erasure, Waiting::Execution)
    );
    assert_eq!(o.due, hours(25));
    assert_eq!(o.late, Duration::hours(1));
    // Done late: no longer reported.
    reg.complete(&acme(), id, hours(27), RequestOutcome { records: 3, suppressed: 1 }).unwrap();
    assert!(reg.overdue(hours(28)).unwrap().is_empty());
}

#[test]
fn an_access_request_is_overdue_30_days_after_it_was_received() {
    let r = Reg::new();
    let reg = &r.register;
    let id = reg.record(&globex(), RequestKind::Access, &user("u-7"), "web form", t0()).unwrap();
    assert_eq!(reg.request(&globex(), id).unwrap().due, Some(hours(30 * 24)));
    // Instructed a day later: still due 30 days after it was received.
    reg.instruct(&globex(), id, Instruction::Proceed, "admin.lee", hours(24)).unwrap();
    assert_eq!(reg.request(&globex(), id).unwrap().due, Some(hours(30 * 24)));
    assert!(reg.overdue(hours(29 * 24)).unwrap().is_empty());
    let late = reg.overdue(hours(30 * 24 + 5)).unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!((late[0].id, late[0].kind, late[0].waiting), (id, RequestKind::Access, Waiting::Execution));
    assert_eq!(late[0].late, Duration::hours(5));

    // Deadlines are options.
    let r = Reg::with(
        RequestOptions::default()
            .with_access_deadline(Duration::days(10))
            .with_erasure_deadline(Duration::hours(2)),
    );
    let a = r.register.record(&acme(), RequestKind::Access, &user("u-8"), "web form", t0()).unwrap();
    let e = r.register.record(&acme(), RequestKind::Erasure, &user("u-9"), "web form", t0()).unwrap();
    r.register.instruct(&acme(), a, Instruction::Proceed, "admin.kim", hours(1)).unwrap();
    r.register.instruct(&acme(), e, Instruction::Proceed, "admin.kim", hours(1)).unwrap();
    assert_eq!(r.register.request(&acme(), a).unwrap().due, Some(hours(240)));
    assert_eq!(r.register.request(&acme(), e).unwrap().due, Some(hours(3)));
    let late = r.register.overdue(hours(241)).unwrap();
    assert_eq!(
        late.iter().map(|o| (o.id, o.late)).collect::<Vec<_>>(),
        [(e, Duration::hours(238)), (a, Duration::hours(1))],
        "latest first"
    );
}

#[test]
fn a_request_never_instructed_cannot_be_executed_and_is_reported_awaiting_the_customer() {
    let r = Reg::with(RequestOptions::default().with_response_window(Duration::hours(48)));
    let reg = &r.register;
    let id = reg.record(&acme(), RequestKind::Access, &user("u-5"), "letter", t0()).unwrap();
    assert!(matches!(reg.authorize_execution(&acme(), id), Err(RequestError::NotInstructed(x)) if x == id));
    assert!(matches!(
        reg.complete(&acme(), id, hours(1), RequestOutcome::default()),
        Err(RequestError::NotInstructed(_))
    ));
    assert!(reg.ready(&acme()).unwrap().is_empty());
    assert!(reg.overdue(hours(48)).unwrap().is_empty(), "inside the window");
    let late = reg.overdue(hours(50)).unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].id, late[0].waiting, late[0].due, late[0].late),
        (id, Waiting::Customer, hours(48), Duration::hours(2))
    );
    // Still waiting after its own deadline: still the customer's move.
    let late = reg.overdue(hours(31 * 24)).unwrap();
    assert_eq!(late[0].waiting, Waiting::Customer);
    assert_eq!(reg.request(&acme(), id).unwrap().state, RequestState::AwaitingInstruction);
    // Refused through every path: still not executable.
    assert!(matches!(reg.authorize_execution(&acme(), id), Err(RequestError::NotInstructed(_))));
}

#[test]
fn a_declined_request_is_closed_its_subject_gone_and_never_executed() {
    let r = Reg::new();
    let reg = &r.register;
    let id = reg.record(&acme(), RequestKind::Erasure, &user("u-declinedzq"), "email", t0()).unwrap();
    // A reason naming the end user is refused: it is kept after closing.
    let err = reg
        .instruct(
            &acme(),
            id,
            Instruction::Decline { reason: "u-declinedzq is not ours".into() },
            "admin.kim",
            hours(1),
        )
        .unwrap_err();
    assert!(matches!(err, RequestError::NamesSubject { .. }));
    assert!(!err.to_string().contains("u-declinedzq"));
    let shouted = Instruction::Decline { reason: "we do not know U-DECLINEDZQ".into() };
    assert!(matches!(
        reg.instruct(&acme(), id, shouted, "admin.kim", hours(1)),
        Err(RequestError::NamesSubject { .. })
    ));
    assert_eq!(reg.request(&acme(), id).unwrap().state, RequestState::AwaitingInstruction, "nothing changed");

    reg.instruct(
        &acme(),
        id,
        Instruction::Decline { reason: "not one of our users".into() },
        "admin.kim",
        hours(1),
    )
    .unwrap();
    let declined = reg.request(&acme(), id).unwrap();
    assert_eq!(declined.state, RequestState::Declined);
    assert_eq!(declined.subject, None);
    let i = declined.instruction.expect("instruction");
    assert_eq!((i.decision, i.reason.as_deref()), (Decision::Decline, Some("not one of our users")));
    assert!(matches!(reg.authorize_execution(&acme(), id), Err(RequestError::Declined(_))));
    assert!(matches!(
        reg.complete(&acme(), id, hours(2), RequestOutcome::default()),
        Err(RequestError::Declined(_))
    ));
    assert!(matches!(
        reg.instruct(&acme(), id, Instruction::Proceed, "admin.kim", hours(2)),
        Err(RequestError::AlreadyInstructed(_))
    ));
    assert!(reg.overdue(hours(24 * 100)).unwrap().is_empty());
    assert!(
        holds(&raw_files(r.dir.path()), "u-declinedzq").is_empty(),
        "a declined request's subject is gone"
    );
}

#[test]
fn one_customer_cannot_see_instruct_or_complete_anothers_requests() {
    let r = Reg::new();
    let reg = &r.register;
    let a = reg.record(&acme(), RequestKind::Erasure, &user("u-a"), "email", t0()).unwrap();
    let b_own = reg.record(&globex(), RequestKind::Access, &user("u-b"), "email", t0()).unwrap();
    let note = reg.notifications(&acme()).unwrap()[0].id;

    // Globex sees only its own.
    let seen: Vec<RequestId> = reg.requests(&globex()).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(seen, [b_own]);
    assert!(reg.notifications(&globex()).unwrap().iter().all(|n| n.request == b_own));
    assert!(matches!(reg.request(&globex(), a), Err(RequestError::UnknownRequest(x)) if x == a));
    assert!(matches!(reg.acknowledge(&globex(), note, hours(1)), Err(RequestError::UnknownNotification(_))));
    assert_eq!(reg.notifications(&acme()).unwrap().len(), 1, "acme's notification is still unread");

    // Nor instructs, executes or completes acme's.
    assert!(matches!(
        reg.instruct(&globex(), a, Instruction::Proceed, "admin.evil", hours(1)),
        Err(RequestError::UnknownRequest(_))
    ));
    assert_eq!(reg.request(&acme(), a).unwrap().state, RequestState::AwaitingInstruction);
    reg.instruct(&acme(), a, Instruction::Proceed, "admin.kim", hours(1)).unwrap();
    assert!(reg.ready(&globex()).unwrap().is_empty());
    assert!(matches!(reg.authorize_execution(&globex(), a), Err(RequestError::UnknownRequest(_))));
    assert!(matches!(
        reg.complete(&globex(), a, hours(2), RequestOutcome::default()),
        Err(RequestError::UnknownRequest(_))
    ));
    assert_eq!(reg.request(&acme(), a).unwrap().state, RequestState::Instructed);
    assert_eq!(reg.ready(&acme()).unwrap().len(), 1);
    // The refusal does not tell whether the request exists at all.
    let unknown = RequestId::from_u64(12345).expect("id");
    let other = reg.authorize_execution(&globex(), a).unwrap_err().to_string();
    let none = reg.authorize_execution(&globex(), unknown).unwrap_err().to_string();
    assert_eq!(other.replace(&a.to_string(), "ID"), none.replace(&unknown.to_string(), "ID"));
}

#[test]
fn a_register_reopened_holds_the_same_state() {
    let r = Reg::new();
    let (ids, notes, all_a, all_g) = {
        let reg = &r.register;
        let a = reg.record(&acme(), RequestKind::Erasure, &user("u-1"), "email", t0()).unwrap();
        let b = reg.record(&acme(), RequestKind::Access, &user("u-2"), "phone", hours(1)).unwrap();
        let c = reg.record(&globex(), RequestKind::Erasure, &user("u-3"), "letter", hours(2)).unwrap();
        reg.instruct(&acme(), a, Instruction::Proceed, "admin.kim", hours(3)).unwrap();
        reg.instruct(&globex(), c, Instruction::Proceed, "admin.lee", hours(3)).unwrap();
        reg.complete(&globex(), c, hours(4), RequestOutcome { records: 9, suppressed: 1 }).unwrap();
        let first = reg.notifications(&acme()).unwrap()[0].id;
        reg.acknowledge(&acme(), first, hours(5)).unwrap();
        let notes = (reg.notifications(&acme()).unwrap(), reg.notifications(&globex()).unwrap());
        ((a, b, c), notes, reg.requests(&acme()).unwrap(), reg.requests(&globex()).unwrap())
    };
    let path = r.path();
    drop(r.register);
    let reg = RequestRegister::open(&path, RequestOptions::default()).expect("reopen");
    assert_eq!(reg.requests(&acme()).unwrap(), all_a);
    assert_eq!(reg.requests(&globex()).unwrap(), all_g);
    assert_eq!((reg.notifications(&acme()).unwrap(), reg.notifications(&globex()).unwrap()), notes);
    assert_eq!(notes.0.len(), 1, "the acknowledged notification stays read");
    assert_eq!(reg.ready(&acme()).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [ids.0]);
    assert!(matches!(reg.authorize_execution(&acme(), ids.1), Err(RequestError::NotInstructed(_))));
    assert!(matches!(reg.authorize_execution(&globex(), ids.2), Err(RequestError::AlreadyDone(_))));
    assert_eq!(reg.overdue(hours(3 + 25)).unwrap().iter().map(|o| o.id).collect::<Vec<_>>(), [ids.0]);
}

#[test]
fn a_second_instance_is_refused_while_the_first_is_open() {
    let r = Reg::new();
    r.register.record(&acme(), RequestKind::Access, &user("u-1"), "email", t0()).unwrap();
    assert!(matches!(RequestRegister::open(&r.path(), RequestOptions::default()), Err(RequestError::Locked)));
    // The first is unharmed.
    assert_eq!(r.register.requests(&acme()).unwrap().len(), 1);
    r.register.record(&acme(), RequestKind::Access, &user("u-2"), "email", t0()).unwrap();
    let path = r.path();
    drop(r.register);
    let again = RequestRegister::open(&path, RequestOptions::default()).expect("free once the first is gone");
    assert_eq!(again.requests(&acme()).unwrap().len(), 2);
}

const CHILD_PATH: &str = "PRIVTEL_REQUESTS_TEST_CHILD_PATH";

/// Run by [`a_second_process_is_refused_while_the_first_holds_the_register`]
/// in a process of its own.
#[test]
fn child_process_opens_the_register() {
    // Run alone (not as the parent's child) it has nothing to check.
    let Some(path) = std::env::var_os(CHILD_PATH) else { return };
    let opened = RequestRegister::open(Path::new(&path), RequestOptions::default());
    assert!(matches!(opened, Err(RequestError::Locked)), "expected locked, got {opened:?}");
}

#[test]
fn a_second_process_is_refused_while_the_first_holds_the_register() {
    let r = Reg::new();
    r.register.record(&acme(), RequestKind::Access, &user("u-1"), "email", t0()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "requests::child_process_opens_the_register",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(CHILD_PATH, r.path())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r.register.requests(&acme()).unwrap().len(), 1, "the first is unharmed");
}

#[test]
fn no_byte_of_the_files_holds_the_subject_once_the_request_is_done() {
    let r = Reg::new();
    let reg = &r.register;
    let subject = "u-CANARYSUBJ91x";
    let reference = "ref-CANARYREF77q";
    // Neighbours that stay open, so the pages stay in use.
    for i in 0..50 {
        reg.record(&acme(), RequestKind::Access, &user(&format!("u-other{i}")), "email", t0()).unwrap();
    }
    let id = reg.record(&acme(), RequestKind::Erasure, &user(subject), reference, t0()).unwrap();
    let files = raw_files(r.dir.path());
    assert!(!holds(&files, subject).is_empty(), "the canary is planted and the scan finds it");
    assert!(!holds(&files, reference).is_empty());

    reg.instruct(&acme(), id, Instruction::Proceed, "admin.kim", hours(1)).unwrap();
    let request = reg.authorize_execution(&acme(), id).unwrap();
    // Debug never shows the subject, even while it is held.
    assert!(!format!("{request:?}").contains(subject));
    assert!(!format!("{request:?}").contains(reference));
    reg.complete(&acme(), id, hours(2), RequestOutcome { records: 5, suppressed: 1 }).unwrap();

    let files = raw_files(r.dir.path());
    assert_eq!(holds(&files, subject), Vec::<String>::new(), "the subject is in no file");
    assert_eq!(holds(&files, reference), Vec::<String>::new(), "the reference is in no file");
    assert!(!holds(&files, "u-other7").is_empty(), "the open neighbours are still there");
    // Nor after the register is closed and reopened.
    let path = r.path();
    drop(r.register);
    let reopened = RequestRegister::open(&path, RequestOptions::default()).unwrap();
    assert_eq!(reopened.request(&acme(), id).unwrap().subject, None);
    drop(reopened);
    let files = raw_files(r.dir.path());
    assert!(holds(&files, subject).is_empty() && holds(&files, reference).is_empty());
}

#[test]
fn errors_and_debug_name_no_personal_value() {
    let r = Reg::new();
    let reg = &r.register;
    let secret = "personal\u{7}canary@example.com";
    for reference in ["", secret, &"x".repeat(257)] {
        let err = reg.record(&acme(), RequestKind::Access, &user("u-1"), reference, t0()).unwrap_err();
        assert!(matches!(err, RequestError::Text { field: "reference", .. }), "{err}");
        assert!(!err.to_string().contains("canary") && !format!("{err:?}").contains("canary"));
    }
    assert_eq!(reg.requests(&acme()).unwrap().len(), 0, "nothing was recorded");
    let id = reg.record(&acme(), RequestKind::Access, &user("u-1"), "email", t0()).unwrap();
    for by in ["", "admin\ncanary", &"a".repeat(129)] {
        let err = reg.instruct(&acme(), id, Instruction::Proceed, by, t0()).unwrap_err();
        assert!(matches!(err, RequestError::Text { field: "instructed by", .. }), "{err}");
        assert!(!err.to_string().contains("canary"));
    }
    let decline = Instruction::Decline { reason: "canary reason words".into() };
    assert!(!format!("{decline:?}").contains("canary"));
    reg.instruct(&acme(), id, decline, "admin.canary", t0()).unwrap();
    let closed = reg.request(&acme(), id).unwrap();
    assert!(!format!("{closed:?}").contains("canary"), "{closed:?}");
    assert!(format!("{closed:?}").contains("Declined"));
    assert_eq!(closed.instruction.as_ref().map(|i| i.by.as_str()), Some("admin.canary"));
    assert!(!format!("{reg:?}").contains("requests.db"));
}

#[test]
fn codes_are_stable_and_ids_round_trip() {
    assert_eq!(RequestKind::ALL.map(RequestKind::code), [1, 2]);
    assert_eq!(RequestState::ALL.map(RequestState::code), [1, 2, 3, 4]);
    assert_eq!(Decision::ALL.map(Decision::code), [1, 2]);
    assert_eq!(NotificationEvent::ALL.map(NotificationEvent::code), [1, 2]);
    for c in 0..=u8::MAX {
        assert_eq!(RequestKind::from_code(c).map(RequestKind::code), (1..=2).contains(&c).then_some(c));
        assert_eq!(RequestState::from_code(c).map(RequestState::code), (1..=4).contains(&c).then_some(c));
        assert_eq!(Decision::from_code(c).map(Decision::code), (1..=2).contains(&c).then_some(c));
        assert_eq!(
            NotificationEvent::from_code(c).map(NotificationEvent::code),
            (1..=2).contains(&c).then_some(c)
        );
    }
    let id = RequestId::from_u64(0x0123_4567_89ab_cdef).expect("id");
    assert_eq!(id.to_string(), "0123456789abcdef");
    assert_eq!("0123456789abcdef".parse::<RequestId>().unwrap(), id);
    assert_eq!(RequestId::from_u64(0), None);
    assert_eq!(RequestId::from_u64(1 << 63), None);
    for bad in ["", "0000000000000000", "0123456789abcdeg", "8000000000000000", "123"] {
        assert!(matches!(bad.parse::<RequestId>(), Err(RequestError::IdText { .. })), "{bad}");
        assert!(matches!(bad.parse::<NotificationId>(), Err(RequestError::IdText { .. })), "{bad}");
    }
}

#[test]
fn files_that_are_not_a_register_of_this_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite.
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, just some bytes of text that are long enough to matter".repeat(100),
    )
    .unwrap();
    assert!(matches!(
        RequestRegister::open(&junk, RequestOptions::default()),
        Err(RequestError::NotARegister)
    ));
    // Another SQLite file.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
    let before = std::fs::read(&other).unwrap();
    assert!(matches!(
        RequestRegister::open(&other, RequestOptions::default()),
        Err(RequestError::NotARegister)
    ));
    assert_eq!(std::fs::read(&other).unwrap(), before, "a file that is not a register is left as it was");
    // A later version.
    let later = dir.path().join("later.db");
    drop(RequestRegister::open(&later, RequestOptions::default()).unwrap());
    rusqlite::Connection::open(&later).unwrap().execute_batch("PRAGMA user_version = 2;").unwrap();
    assert!(matches!(
        RequestRegister::open(&later, RequestOptions::default()),
        Err(RequestError::Schema { found: 2, supported: 1 })
    ));
    // A stored code no version writes: a typed error, not a panic.
    let bad = dir.path().join("bad.db");
    let reg = RequestRegister::open(&bad, RequestOptions::default()).unwrap();
    reg.record(&acme(), RequestKind::Access, &user("u-1"), "email", t0()).unwrap();
    drop(reg);
    rusqlite::Connection::open(&bad).unwrap().execute_batch("UPDATE requests SET kind = 9;").unwrap();
    let reg = RequestRegister::open(&bad, RequestOptions::default()).unwrap();
    assert!(matches!(reg.requests(&acme()), Err(RequestError::Corrupt { field: "kind" })));
    assert!(matches!(reg.notifications(&acme()), Err(RequestError::Corrupt { field: "kind" })));
}

/// The golden register: written by schema version 1 (see
/// [`write_the_golden_register`]).
const GOLDEN: &str = "tests/data/requests-v1.sqlite";

fn golden_t0() -> Timestamp {
    Timestamp::from_unix_seconds(1_800_000_000).expect("in range")
}

fn golden_at(h: i64) -> Timestamp {
    golden_t0().checked_add(Duration::hours(h)).expect("in range")
}

/// What the golden register holds; [`a_golden_register_of_version_1_opens`]
/// checks each.
fn fill_golden(reg: &RequestRegister) {
    let open = reg
        .record(&acme(), RequestKind::Access, &user("golden-open-subject"), "web form", golden_at(0))
        .unwrap();
    let instructed = reg
        .record(&acme(), RequestKind::Erasure, &user("golden-instructed-subject"), "email", golden_at(1))
        .unwrap();
    reg.instruct(&acme(), instructed, Instruction::Proceed, "admin.kim", golden_at(2)).unwrap();
    let done = reg
        .record(&acme(), RequestKind::Erasure, &user("golden-done-subject"), "phone", golden_at(3))
        .unwrap();
    reg.instruct(&acme(), done, Instruction::Proceed, "admin.kim", golden_at(4)).unwrap();
    reg.complete(&acme(), done, golden_at(5), RequestOutcome { records: 12, suppressed: 2 }).unwrap();
    let declined = reg
        .record(&globex(), RequestKind::Access, &user("golden-declined-subject"), "letter", golden_at(6))
        .unwrap();
    reg.instruct(
        &globex(),
        declined,
        Instruction::Decline { reason: "not one of our users".into() },
        "admin.lee",
        golden_at(7),
    )
    .unwrap();
    let first = reg.notifications(&acme()).unwrap()[0].id;
    assert_eq!(reg.notifications(&acme()).unwrap()[0].request, open);
    reg.acknowledge(&acme(), first, golden_at(8)).unwrap();
}

/// Writes the golden register again: `PRIVTEL_WRITE_GOLDEN=1 cargo test -p
/// privtel-access --test integration write_the_golden_register`. Only when
/// the format changes on purpose (with a new version and a migration); the
/// old file stays to prove old registers still open. Without the variable
/// it does nothing (so `--include-ignored` runs never rewrite the file).
#[test]
fn write_the_golden_register() {
    if std::env::var_os("PRIVTEL_WRITE_GOLDEN").is_none() {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let _ = std::fs::remove_file(&path);
    let reg = RequestRegister::open(&path, RequestOptions::default()).unwrap();
    fill_golden(&reg);
    drop(reg);
    // Closing checkpointed and removed the write-ahead log: one file.
    assert!(!path.with_extension("sqlite-wal").exists());
}

#[test]
fn a_golden_register_of_version_1_opens() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let bytes = std::fs::read(&golden).expect("the golden register is committed");
    // The header: application id PTRQ at offset 68, user version at 60.
    assert_eq!(&bytes[68..72], REQUESTS_APPLICATION_ID.to_be_bytes());
    assert_eq!(i64::from(u32::from_be_bytes(bytes[60..64].try_into().unwrap())), REQUESTS_SCHEMA_VERSION);
    // Closed requests' subjects are in no byte of it; the open ones are.
    let file = [("golden".to_owned(), bytes)];
    assert!(holds(&file, "golden-done-subject").is_empty());
    assert!(holds(&file, "golden-declined-subject").is_empty());
    assert!(!holds(&file, "golden-open-subject").is_empty());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.db");
    std::fs::copy(&golden, &path).unwrap();
    let reg = RequestRegister::open(&path, RequestOptions::default()).expect("a version 1 register opens");
    let acme_requests = reg.requests(&acme()).unwrap();
    let summary: Vec<_> = acme_requests
        .iter()
        .map(|r| (r.kind, r.state, r.subject.as_ref().map(UserId::as_str), r.received, r.due))
        .collect();
    assert_eq!(
        summary,
        [
            (
                RequestKind::Access,
                RequestState::AwaitingInstruction,
                Some("golden-open-subject"),
                golden_at(0),
                Some(golden_at(720))
            ),
            (
                RequestKind::Erasure,
                RequestState::Instructed,
                Some("golden-instructed-subject"),
                golden_at(1),
                Some(golden_at(26))
            ),
            (RequestKind::Erasure, RequestState::Done, None, golden_at(3), Some(golden_at(28))),
        ]
    );
    assert_eq!(acme_requests[0].reference.as_deref(), Some("web form"));
    let done: &Request = &acme_requests[2];
    assert_eq!(done.outcome, Some(RequestOutcome { records: 12, suppressed: 2 }));
    assert_eq!(done.completed, Some(golden_at(5)));
    let i = done.instruction.as_ref().unwrap();
    assert_eq!((i.at, i.by.as_str(), i.decision), (golden_at(4), "admin.kim", Decision::Proceed));

    let globex_requests = reg.requests(&globex()).unwrap();
    assert_eq!(globex_requests.len(), 1);
    assert_eq!(globex_requests[0].state, RequestState::Declined);
    assert_eq!(
        globex_requests[0].instruction.as_ref().and_then(|i| i.reason.as_deref()),
        Some("not one of our users")
    );

    // Acme's first notification was read; the others wait.
    let unread = reg.notifications(&acme()).unwrap();
    assert_eq!(
        unread.iter().map(|n| (n.request, n.event, n.at)).collect::<Vec<_>>(),
        [
            (acme_requests[1].id, NotificationEvent::Received, golden_at(1)),
            (acme_requests[2].id, NotificationEvent::Received, golden_at(3)),
            (acme_requests[2].id, NotificationEvent::Completed, golden_at(5)),
        ]
    );
    assert_eq!(reg.notifications(&globex()).unwrap().len(), 1);
    // It works on: the instructed one is ready and can be completed.
    assert_eq!(reg.ready(&acme()).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [acme_requests[1].id]);
    reg.complete(&acme(), acme_requests[1].id, golden_at(9), RequestOutcome::default()).unwrap();
    let late = reg.overdue(golden_at(24 * 31)).unwrap();
    assert_eq!(
        late.iter().map(|o| (o.id, o.waiting)).collect::<Vec<_>>(),
        [(acme_requests[0].id, Waiting::Customer)]
    );
}

#[test]
fn removing_a_customer_leaves_no_byte_of_its_requests_and_keeps_the_others() {
    let r = Reg::new();
    let reg = &r.register;
    let other = globex();
    let open =
        reg.record(&acme(), RequestKind::Erasure, &user("u-CANARYOPEN51"), "ref-CANARYREF52", t0()).unwrap();
    let done = reg.record(&acme(), RequestKind::Access, &user("u-CANARYDONE53"), "email", t0()).unwrap();
    reg.instruct(&acme(), done, Instruction::Proceed, "admin.CANARYBY54", hours(1)).unwrap();
    reg.complete(&acme(), done, hours(2), RequestOutcome { records: 1, suppressed: 0 }).unwrap();
    let kept = reg.record(&other, RequestKind::Access, &user("u-globex1"), "email", t0()).unwrap();
    assert!(!holds(&raw_files(r.dir.path()), "u-CANARYOPEN51").is_empty(), "the scan finds the canary");

    assert_eq!(reg.remove_customer(&acme()).unwrap(), 2);
    for id in [open, done] {
        assert!(matches!(reg.request(&acme(), id), Err(RequestError::UnknownRequest(_))));
    }
    assert!(reg.notifications(&acme()).unwrap().is_empty());
    assert_eq!(reg.request(&other, kept).unwrap().subject, Some(user("u-globex1")));
    let files = raw_files(r.dir.path());
    for canary in ["u-CANARYOPEN51", "ref-CANARYREF52", "u-CANARYDONE53", "admin.CANARYBY54"] {
        assert_eq!(holds(&files, canary), Vec::<String>::new(), "{canary} remains");
    }
    assert_eq!(reg.remove_customer(&acme()).unwrap(), 0, "idempotent");
}

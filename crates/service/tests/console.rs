//! The administrative interface over its real socket, as operators and as
//! an attacker on the host would use it: tokens, approvers, grants, the
//! region, hostile request lines.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use privtel_access::{
    AccessControl, AccessOptions, RequestOptions, RequestRegister, SigningKey, verify_bytes,
};
use privtel_service::console::{END_KEY, MAX_REQUEST_BYTES, Operators, bind_console, operator_token};
use privtel_service::{Service, Settings};
use privtel_store::{EngineOptions, EngineStore as _, KeyStore, KeyStoreOptions, MasterKey, SqliteEngine};
use privtel_wire::VerdictIndex;
use serde_json::{Value, json};

use crate::{SETTINGS, batch, connect, events_of, hello, now, peer, send};

struct Console {
    socket: PathBuf,
    lead: String,
    jdoe: String,
    log: Arc<Mutex<Vec<String>>>,
    service: Arc<Service>,
    dir: tempfile::TempDir,
}

fn start(settings: &str, region: Option<&str>) -> Console {
    start_at(settings, region, Arc::new(AtomicI64::new(0)))
}

/// The master key the tests' key stores start with.
fn master() -> MasterKey {
    MasterKey::new([7; 32])
}

/// A console whose service's clock is `now()` plus `offset` seconds.
fn start_at(settings: &str, region: Option<&str>, offset: Arc<AtomicI64>) -> Console {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path().join("keys.json"), master(), KeyStoreOptions::default()).unwrap();
    let options = EngineOptions::default().secret([5; 32]).key_store(Arc::new(keys));
    let engine = SqliteEngine::open(dir.path().join("engine.db"), options).unwrap();
    let (key, _) = SigningKey::generate().unwrap();
    let access =
        Arc::new(AccessControl::open(&dir.path().join("access.log"), key, AccessOptions::default()).unwrap());
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&log);
    let register = RequestRegister::open(&dir.path().join("requests.db"), RequestOptions::default()).unwrap();
    let clock =
        move || now().checked_add(privtel_model::Duration::seconds(offset.load(Ordering::Relaxed))).unwrap();
    let mut service = Service::new(engine, VerdictIndex::new(4, [1; 32]), clock)
        .with_settings(Settings::from_toml(settings).unwrap())
        .with_access(access)
        .with_requests(Arc::new(register))
        .with_log(move |l| seen.lock().unwrap().push(l.to_owned()));
    if let Some(r) = region {
        service = service.with_region(r);
    }
    let service = Arc::new(service);
    let (lead, lead_sha) = operator_token().unwrap();
    let (jdoe, jdoe_sha) = operator_token().unwrap();
    let operators = Arc::new(
        Operators::from_toml(&format!(
            "[[operator]]\nname = \"ops.lead\"\ntoken_sha256 = \"{lead_sha}\"\napprover = true\n\
             [[operator]]\nname = \"ops.jdoe\"\ntoken_sha256 = \"{jdoe_sha}\"\n"
        ))
        .unwrap(),
    );
    let socket = dir.path().join("admin.sock");
    let listener = bind_console(&socket).unwrap();
    let me = Arc::clone(&service);
    std::thread::spawn(move || me.serve_console(&listener, &operators, &AtomicBool::new(false)));
    Console { socket, lead, jdoe, log, service, dir }
}

/// Sends one request, returns every answer line.
fn ask(socket: &Path, token: &str, mut request: Value) -> Vec<Value> {
    request["v"] = json!(1);
    request["token"] = json!(token);
    let mut s = UnixStream::connect(socket).unwrap();
    writeln!(s, "{request}").unwrap();
    BufReader::new(s).lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect()
}

fn one(socket: &Path, token: &str, request: Value) -> Value {
    let mut lines = ask(socket, token, request);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.remove(0)
}

/// acme's dev-1 stores `n` events of u-alice; the connection stays open.
fn alice_sends(c: &Console, n: usize) -> privtel_wire::Connection<privtel_testkit::End> {
    let mut conn = connect(&c.service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let records = events_of(&c.service, "u-alice", 0, n);
    assert_eq!(send(&mut conn, batch(&c.service, "acme", 1, records)).accepted_up_to, n as u64);
    conn
}

fn grant(c: &Console, scope: &[&str], starts_ago_minutes: i64, minutes: u64) -> u64 {
    let a = one(
        &c.socket,
        &c.lead,
        json!({"op": "grant", "operator": "ops.jdoe", "customer": "acme", "scope": scope,
               "justification": "forwarded end-user request", "ticket": "DSAR-9", "minutes": minutes,
               "starts_unix": now().unix_seconds() - starts_ago_minutes * 60}),
    );
    assert_eq!(a["ok"], json!(true), "{a}");
    a["grant"].as_u64().unwrap()
}

#[test]
fn the_socket_is_private_and_only_known_tokens_are_served() {
    use std::os::unix::fs::PermissionsExt as _;
    let c = start(SETTINGS, None);
    assert_eq!(std::fs::metadata(&c.socket).unwrap().permissions().mode() & 0o777, 0o600);
    let a = one(&c.socket, &c.jdoe, json!({"op": "whoami"}));
    assert_eq!((a["operator"].as_str(), a["approver"].as_bool()), (Some("ops.jdoe"), Some(false)));
    let (stranger, _) = operator_token().unwrap();
    for token in [stranger.as_str(), "", "ptop_", &c.lead[..c.lead.len() - 1]] {
        let a = one(&c.socket, token, json!({"op": "whoami"}));
        assert_eq!(a["code"], json!("unauthenticated"), "{a}");
    }
    // No token ever reaches the service's log.
    let log = c.log.lock().unwrap().join("\n");
    assert!(!log.contains(&c.jdoe[5..]) && !log.contains(&stranger[5..]), "{log}");
}

#[test]
fn grants_need_an_approver_who_is_not_the_grantee() {
    let c = start(SETTINGS, None);
    let by_jdoe = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "grant", "operator": "ops.other", "customer": "acme", "scope": ["export-person"],
               "justification": "x", "ticket": "T-1", "minutes": 60}),
    );
    assert_eq!(by_jdoe["code"], json!("failed"));
    assert!(by_jdoe["error"].as_str().unwrap().contains("approver"), "{by_jdoe}");
    let own = one(
        &c.socket,
        &c.lead,
        json!({"op": "grant", "operator": "ops.lead", "customer": "acme", "scope": ["export-person"],
               "justification": "x", "ticket": "T-1", "minutes": 60}),
    );
    assert!(own["error"].as_str().unwrap().contains("oneself"), "{own}");
    // Longer than the access control's maximum (8 h): refused and logged.
    let long = one(
        &c.socket,
        &c.lead,
        json!({"op": "grant", "operator": "ops.jdoe", "customer": "acme", "scope": ["export-person"],
               "justification": "x", "ticket": "T-1", "minutes": 9 * 60}),
    );
    assert_eq!(long["ok"], json!(false), "{long}");
    let g = grant(&c, &["export-person"], 0, 60);
    let listed = one(&c.socket, &c.jdoe, json!({"op": "grants", "customer": "acme"}));
    let grants = listed["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["grant"].as_u64(), Some(g));
    assert_eq!(grants[0]["scope"], json!(["export-person"]));
    // The grantee may give up their own grant; it then serves nothing.
    assert_eq!(one(&c.socket, &c.jdoe, json!({"op": "revoke", "grant": g}))["ok"], json!(true));
    let a = ask(
        &c.socket,
        &c.jdoe,
        json!({"op": "export-person", "grant": g, "customer": "acme", "user": "u-alice"}),
    );
    // Refused before a stream opens: one line, never an `ok: true` header.
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((&a[0]["ok"], &a[0]["code"]), (&json!(false), &json!("denied")), "{a:?}");
}

#[test]
fn an_operator_exports_and_erases_under_grants_and_the_customer_can_verify_the_log() {
    let c = start(SETTINGS, None);
    let _conn = alice_sends(&c, 5);

    let export = grant(&c, &["export-person"], 0, 60);
    let expired = grant(&c, &["erase-person"], 180, 60);
    let lines = ask(
        &c.socket,
        &c.jdoe,
        json!({"op": "export-person", "grant": export, "customer": "acme", "user": "u-alice"}),
    );
    assert_eq!(lines[0]["stream"], json!(true));
    assert_eq!(lines.last().unwrap()[END_KEY], json!(true));
    assert_eq!(lines.last().unwrap()["lines"].as_u64(), Some(5));
    assert_eq!(lines.len(), 7, "header, 5 records, trailer");

    // Erasing under an expired grant, or one without the action: refused.
    for g in [expired, export] {
        let a = one(
            &c.socket,
            &c.jdoe,
            json!({"op": "erase-person", "grant": g, "customer": "acme",
                                               "user": "u-alice", "request": "R-1"}),
        );
        assert_eq!(a["code"], json!("denied"), "{a}");
    }
    let erase = grant(&c, &["erase-person"], 0, 60);
    let a = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "erase-person", "grant": erase, "customer": "acme",
                                           "user": "u-alice", "request": "R-1"}),
    );
    assert_eq!(a["receipt"]["records_removed"].as_u64(), Some(5), "{a}");

    // The customer's listing shows every attempt, refusals included, and
    // the raw log verifies against the signed checkpoint.
    let listing = one(&c.socket, &c.jdoe, json!({"op": "access-log", "customer": "acme"}));
    let entries = listing["entries"].as_array().unwrap();
    let refusals = entries.iter().filter(|e| e["outcome"].as_str().unwrap().starts_with("refused")).count();
    assert_eq!(refusals, 2, "the expired and the out-of-scope erasures: {entries:?}");
    assert!(!listing.to_string().contains("u-alice"), "the log names no person");
    let raw = one(&c.socket, &c.jdoe, json!({"op": "raw-log"}));
    let bytes = unhex(raw["log"].as_str().unwrap());
    let checkpoint =
        privtel_access::Checkpoint::from_bytes(&unhex(raw["checkpoint"].as_str().unwrap())).unwrap();
    let key = privtel_access::PublicKey::from_slice(&unhex(raw["public_key"].as_str().unwrap())).unwrap();
    let verified = verify_bytes(&bytes, &checkpoint, &key).unwrap();
    assert_eq!(verified.covered, entries.len() as u64, "every entry is acme's, and all are listed");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const TWO_REGIONS: &str = r#"
[customers.acme]
region = "eu"
[customers.acme.policy.programs]
support_telemetry = true
[customers.zeta]
region = "us"
[customers.zeta.policy.programs]
support_telemetry = true
"#;

#[test]
fn a_service_of_one_region_refuses_devices_and_actions_of_another() {
    let c = start(TWO_REGIONS, Some("us"));
    // acme is pinned to the EU: its device is refused by the US instance.
    let mut conn = connect(&c.service, peer("acme", "dev-1"));
    // Refused before its hello is read (the hello may meet a closed pipe).
    let _ = conn.send(&privtel_wire::Message::Hello(hello("acme", "dev-1", 1)));
    match conn.recv() {
        Ok(privtel_wire::Message::Error(e)) => {
            assert_eq!(e.code, privtel_wire::ErrorCode::Forbidden);
            assert!(e.message.contains("another region"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(c.service.stats().wrong_region.load(Ordering::Relaxed), 1);
    // zeta, pinned to the US, is served.
    let mut conn = connect(&c.service, peer("zeta", "dev-1"));
    conn.client_handshake(&hello("zeta", "dev-1", 1)).unwrap();
    // Administrative actions on acme are refused too, even by an approver.
    let a = one(
        &c.socket,
        &c.lead,
        json!({"op": "grant", "operator": "ops.jdoe", "customer": "acme",
        "scope": ["export-person"], "justification": "x", "ticket": "T-1", "minutes": 60}),
    );
    assert_eq!(a["code"], json!("wrong-region"), "{a}");
    let log = c.log.lock().unwrap().join("\n");
    assert!(log.contains("refused acme/dev-1: the customer's data is kept in region eu"), "{log}");
    assert!(log.contains("administrative action refused on customer acme"), "{log}");
}

#[test]
fn hostile_request_lines_are_refused_within_bounds() {
    let c = start(SETTINGS, None);
    // Too long: refused once the limit is passed, without waiting for a newline.
    let mut s = UnixStream::connect(&c.socket).unwrap();
    let big = vec![b'a'; MAX_REQUEST_BYTES + 10];
    let _ = s.write_all(&big);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("bad-request") && answer.contains("at most"), "{answer}");
    // Not JSON, unknown operation, wrong version, missing field: typed refusals.
    for line in [
        "not json".to_owned(),
        json!({"v": 1, "token": c.jdoe, "op": "drop-tables"}).to_string(),
        json!({"v": 2, "token": c.jdoe, "op": "whoami"}).to_string(),
        json!({"v": 1, "token": c.jdoe, "op": "export-person", "grant": 1, "customer": "acme"}).to_string(),
        json!({"v": 1, "token": c.jdoe, "op": "export-person", "grant": 1, "customer": "acme", "user": "bad user id\n"}).to_string(),
    ] {
        let mut s = UnixStream::connect(&c.socket).unwrap();
        writeln!(s, "{line}").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let v: Value = serde_json::from_str(answer.trim()).unwrap();
        assert_eq!(v["ok"], json!(false), "{line}: {answer}");
        assert!(!answer.contains("bad user id"), "no value echoed: {answer}");
    }
    // A drip is cut off at the deadline, and the console still serves.
    let started = Instant::now();
    let mut drip = UnixStream::connect(&c.socket).unwrap();
    drip.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = String::new();
    let t = std::thread::spawn(move || {
        for b in b"{\"v\":1,".iter().cycle().take(40) {
            if drip.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        let _ = drip.read_to_string(&mut answer);
        answer
    });
    let answer = t.join().unwrap();
    assert!(answer.contains("deadline"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(18), "{:?}", started.elapsed());
    assert_eq!(one(&c.socket, &c.jdoe, json!({"op": "whoami"}))["ok"], json!(true));
}

#[test]
fn an_end_users_erasure_waits_for_the_customer_then_is_done_and_overdue_ones_are_reported() {
    let clock = Arc::new(AtomicI64::new(0));
    let c = start_at(SETTINGS, None, Arc::clone(&clock));
    let mut conn = connect(&c.service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let records = events_of(&c.service, "u-alice", 0, 4);
    assert_eq!(send(&mut conn, batch(&c.service, "acme", 1, records)).accepted_up_to, 4);
    let held = || {
        c.service
            .export_person(&"acme".parse().unwrap(), &"u-alice".parse().unwrap(), &mut Vec::new())
            .unwrap()
    };

    // Requests are handled under a grant too, every operation logged.
    let rq = grant(&c, &["end-user-requests"], 0, 60);
    // Two requests reach the vendor: the customer is notified of both.
    let record = |kind: &str| {
        let a = one(
            &c.socket,
            &c.jdoe,
            json!({"op": "request-record", "grant": rq, "customer": "acme", "kind": kind,
                                               "user": "u-alice", "channel": "privacy mailbox #881"}),
        );
        a["request"].as_str().unwrap().to_owned()
    };
    let (erasure, access) = (record("erasure"), record("access"));
    let ungranted = one(&c.socket, &c.jdoe, json!({"op": "notifications", "customer": "acme"}));
    assert_eq!(ungranted["code"], json!("bad-request"), "{ungranted}");
    let notes = one(&c.socket, &c.jdoe, json!({"op": "notifications", "grant": rq, "customer": "acme"}));
    let notes = notes["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().all(|n| n["event"] == json!("received")));
    assert!(!notes.iter().any(|n| n.to_string().contains("u-alice")), "notifications name no person");

    // Nothing is erased before the customer instructs it, even under a grant.
    let g = grant(&c, &["erase-person", "export-person"], 0, 480);
    let early = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "execute-request", "grant": g, "customer": "acme", "id": erasure}),
    );
    assert_eq!(early["code"], json!("refused"), "{early}");
    assert!(early["error"].as_str().unwrap().contains("awaits the customer's instruction"), "{early}");
    assert_eq!(held(), 4);

    // Three days later, neither was instructed: both reported as waiting for the customer.
    clock.store(3 * 86_400 + 60, Ordering::Relaxed);
    let overdue = one(&c.socket, &c.jdoe, json!({"op": "overdue"}));
    let overdue = overdue["overdue"].as_array().unwrap();
    assert_eq!(overdue.len(), 2, "{overdue:?}");
    assert!(overdue.iter().all(|o| o["waiting"] == json!("customer")), "{overdue:?}");

    // The customer says proceed with the erasure: due 24 h later (relayed
    // under a new grant: the first one has expired).
    let rq = grant(&c, &["end-user-requests"], -(3 * 1440 + 1), 60);
    let a = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "instruct", "grant": rq, "customer": "acme", "id": erasure,
                                           "instruction": "proceed", "by": "it-admin@acme"}),
    );
    assert_eq!(a["ok"], json!(true), "{a}");
    let due = a["due_unix"].as_i64().unwrap();
    assert_eq!(due, now().unix_seconds() + 3 * 86_400 + 60 + 86_400);
    // 25 hours after the instruction, still not done: overdue by an hour.
    clock.store(3 * 86_400 + 60 + 25 * 3600, Ordering::Relaxed);
    let overdue = one(&c.socket, &c.jdoe, json!({"op": "overdue"}));
    let late = overdue["overdue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["request"] == json!(erasure))
        .cloned()
        .unwrap();
    assert_eq!((late["waiting"].as_str(), late["late_seconds"].as_i64()), (Some("execution"), Some(3600)));
    // The first grant expired meanwhile (grants are limited in time); a
    // new one (it starts at the service's clock), then the operator
    // executes it: done, the person's records gone, the request closed.
    let expired = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "execute-request", "grant": g, "customer": "acme", "id": erasure}),
    );
    assert!(expired["error"].as_str().unwrap().contains("expired"), "{expired}");
    let g = grant(&c, &["erase-person", "export-person"], -(3 * 1440 + 1 + 25 * 60), 60);
    let a = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "execute-request", "grant": g, "customer": "acme", "id": erasure}),
    );
    assert_eq!(a["records"].as_u64(), Some(4), "{a}");
    assert_eq!(held(), 0);
    let again = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "execute-request", "grant": g, "customer": "acme", "id": erasure}),
    );
    assert_eq!(again["code"], json!("refused"), "done once: {again}");
    let rq = grant(&c, &["end-user-requests"], -(3 * 1440 + 1 + 25 * 60), 60);
    let notes = one(&c.socket, &c.jdoe, json!({"op": "notifications", "grant": rq, "customer": "acme"}));
    assert!(notes["notifications"].as_array().unwrap().iter().any(|n| n["event"] == json!("completed")));
    // The declined access request is closed without any export.
    let a = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "instruct", "grant": rq, "customer": "acme", "id": access,
                                           "instruction": "decline", "reason": "duplicate of an earlier request",
                                           "by": "it-admin@acme"}),
    );
    assert_eq!(a["ok"], json!(true), "{a}");
    let a = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "execute-request", "grant": g, "customer": "acme", "id": access}),
    );
    assert!(a["error"].as_str().unwrap().contains("declined"), "{a}");
    let overdue = one(&c.socket, &c.jdoe, json!({"op": "overdue"}));
    assert_eq!(overdue["overdue"], json!([]), "nothing open is late");
}

/// Every byte of every file under `dir`, with its name.
fn raw_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(raw_files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

fn files_holding(dir: &Path, canary: &str) -> Vec<PathBuf> {
    raw_files(dir)
        .into_iter()
        .filter(|(_, b)| b.windows(canary.len()).any(|w| w == canary.as_bytes()))
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn a_customer_deleted_mid_ingest_leaves_none_of_its_canaries_and_gets_a_signed_receipt() {
    let c = start(SETTINGS, None);
    // acme's and globex's devices keep sending while acme's contract ends.
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (customer, user) in [("acme", "u-CANARYACME1"), ("globex", "u-globexkeep")] {
        let (service, stop) = (Arc::clone(&c.service), Arc::clone(&stop));
        // Made before the deletion removes the customer's settings.
        let batches: Vec<_> = (0..100u64)
            .map(|i| {
                batch(&service, customer, 1 + i * 20, events_of(&service, user, u128::from(1 + i * 20), 20))
            })
            .collect();
        senders.push(std::thread::spawn(move || {
            let mut conn = connect(&service, peer(customer, "dev-1"));
            conn.client_handshake(&hello(customer, "dev-1", 1)).unwrap();
            let mut stored = 0u64;
            for b in batches {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if conn.send(&privtel_wire::Message::Batch(b)).is_err() {
                    break;
                }
                match conn.recv() {
                    Ok(privtel_wire::Message::Ack(a)) if a.rejections.is_empty() => stored = a.accepted_up_to,
                    _ => break, // refused: acme's contract ended
                }
            }
            stored
        }));
    }
    let acme: privtel_model::CustomerId = "acme".parse().unwrap();
    while c.service.engine().record_count_of(&acme).unwrap() < 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!files_holding(c.dir.path(), "u-CANARYACME1").is_empty(), "the scan finds the planted canary");
    let copy = grant(&c, &["copy-customer", "delete-customer"], 0, 60);
    // The customer's copy first, streamed with its manifest.
    let lines = ask(&c.socket, &c.jdoe, json!({"op": "copy-customer", "grant": copy, "customer": "acme"}));
    assert_eq!(lines.last().unwrap()[END_KEY], json!(true), "{:?}", lines.last());
    let manifest = &lines[1]["manifest"];
    assert_eq!(manifest["format"], json!("privtel-customer-copy"), "{manifest}");
    assert_eq!(manifest["due_unix"].as_i64(), Some(now().unix_seconds() + 30 * 86_400));
    assert!(manifest["policy_sha256"].as_str().unwrap().len() == 64);
    assert!(lines.iter().any(|l| l.to_string().contains("u-CANARYACME1")));
    assert!(!lines.iter().any(|l| l.to_string().contains("u-globexkeep")), "only acme's data");

    let answer = one(&c.socket, &c.jdoe, json!({"op": "delete-customer", "grant": copy, "customer": "acme"}));
    assert_eq!(answer["ok"], json!(true), "{answer}");
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    // The receipt verifies with the service's key, and names no person.
    let document = answer["receipt"].as_str().unwrap();
    let signature = unhex(answer["signature"].as_str().unwrap());
    let key = privtel_access::PublicKey::from_slice(&unhex(answer["public_key"].as_str().unwrap())).unwrap();
    assert!(key.verifies_document(privtel_service::RECEIPT_KIND, document.as_bytes(), &signature));
    assert!(!key.verifies_document(
        privtel_service::RECEIPT_KIND,
        document.replace("acme", "acmf").as_bytes(),
        &signature
    ));
    let receipt: Value = serde_json::from_str(document).unwrap();
    assert!(receipt["engine"]["removed"]["records"].as_u64().unwrap() >= 200, "{receipt}");
    // The keys went first: nothing was readable from that instant.
    let (shred, done) =
        (receipt["engine"]["keys_destroyed_at"].as_str(), receipt["engine"]["completed_at"].as_str());
    assert!(shred.is_some() && shred <= done, "{receipt}");
    assert!(!receipt["engine"]["keys_destroyed"].as_array().unwrap().is_empty(), "{receipt}");
    assert!(receipt["stores"].as_array().unwrap().iter().any(|s| s == "end-user requests"), "{receipt}");
    assert!(!document.contains("u-CANARYACME1") && !document.contains("dev-1"), "{document}");

    // None of acme's canaries in any file: engine, its log, key store and
    // its backups, request register, access log. globex's data is intact.
    assert_eq!(files_holding(c.dir.path(), "u-CANARYACME1"), Vec::<PathBuf>::new());
    let globex: privtel_model::CustomerId = "globex".parse().unwrap();
    assert!(c.service.engine().record_count_of(&globex).unwrap() > 0);
    assert_eq!(c.service.engine().record_count_of(&acme).unwrap(), 0);
    // acme's devices are refused from now on.
    let mut conn = connect(&c.service, peer("acme", "dev-2"));
    let _ = conn.send(&privtel_wire::Message::Hello(hello("acme", "dev-2", 1)));
    assert!(matches!(conn.recv(), Ok(privtel_wire::Message::Error(_))));
}

#[test]
fn after_a_master_key_rotation_everything_reads_and_the_old_master_is_not_needed() {
    let c = start(SETTINGS, None);
    let mut conn = connect(&c.service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    let records = events_of(&c.service, "u-alice", 0, 6);
    assert_eq!(send(&mut conn, batch(&c.service, "acme", 1, records)).accepted_up_to, 6);
    let new_key = c.dir.path().join("master.key");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&new_key).unwrap();
        f.write_all("09".repeat(32).as_bytes()).unwrap();
    }
    let path = new_key.to_str().unwrap();
    // Only approvers rotate the master key, from a regular key file only:
    // a pipe, a link or another file gets one and the same refusal.
    let a = one(&c.socket, &c.jdoe, json!({"op": "rotate-master", "new_key_file": path}));
    assert!(a["error"].as_str().unwrap().contains("approver"), "{a}");
    let fifo = c.dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let link = c.dir.path().join("link.key");
    std::os::unix::fs::symlink(&new_key, &link).unwrap();
    let mut refusals = Vec::new();
    for bad in [fifo.to_str().unwrap(), link.to_str().unwrap(), "/etc/shadow", "/nonexistent"] {
        let a = one(&c.socket, &c.lead, json!({"op": "rotate-master", "new_key_file": bad}));
        assert_eq!(a["code"], json!("bad-request"), "{bad}: {a}");
        refusals.push(a["error"].clone());
    }
    refusals.dedup();
    assert_eq!(refusals.len(), 1, "one refusal for all: {refusals:?}");
    let a = one(&c.socket, &c.lead, json!({"op": "rotate-master", "new_key_file": path}));
    assert_eq!(a["ok"], json!(true), "{a}");
    // A customer's data key: under a manage-keys grant, logged.
    let a = one(&c.socket, &c.jdoe, json!({"op": "rotate-customer-key", "grant": 0, "customer": "acme"}));
    assert_eq!(a["code"], json!("denied"), "{a}");
    let keys = grant(&c, &["manage-keys"], 0, 60);
    let a = one(&c.socket, &c.jdoe, json!({"op": "rotate-customer-key", "grant": keys, "customer": "acme"}));
    assert_eq!(a["ok"], json!(true), "{a}");
    let a = one(
        &c.socket,
        &c.jdoe,
        json!({"op": "reseal", "grant": keys, "customer": "acme", "max_rows": 20_000}),
    );
    assert_eq!(a["code"], json!("bad-request"), "at most 10,000 rows a call: {a}");
    let a =
        one(&c.socket, &c.jdoe, json!({"op": "reseal", "grant": keys, "customer": "acme", "max_rows": 4}));
    assert_eq!((a["moved"].as_u64(), a["remaining"].as_u64()), (Some(4), Some(2)), "{a}");
    let a =
        one(&c.socket, &c.jdoe, json!({"op": "reseal", "grant": keys, "customer": "acme", "max_rows": 4}));
    assert_eq!((a["moved"].as_u64(), a["remaining"].as_u64()), (Some(2), Some(0)), "{a}");
    // Everything reads through the service, and a new key store opened with
    // the new master alone reads it; the old master no longer opens it.
    let g = grant(&c, &["export-person"], 0, 60);
    let lines = ask(
        &c.socket,
        &c.jdoe,
        json!({"op": "export-person", "grant": g, "customer": "acme", "user": "u-alice"}),
    );
    assert_eq!(lines.last().unwrap()["lines"].as_u64(), Some(6), "{lines:?}");
    drop(conn);
    let keys = c.dir.path().join("keys.json");
    let again = KeyStore::open(&keys, MasterKey::load(&new_key).unwrap(), KeyStoreOptions::default());
    assert!(again.is_ok(), "{:?}", again.err());
    drop(again);
    assert!(KeyStore::open(&keys, master(), KeyStoreOptions::default()).is_err());
}

#[test]
fn a_slow_reader_of_an_export_holds_up_neither_ingest_nor_the_store_for_long() {
    let c = start(SETTINGS, None);
    let mut conn = connect(&c.service, peer("acme", "dev-1"));
    conn.client_handshake(&hello("acme", "dev-1", 1)).unwrap();
    // Enough of one person that the export fills the socket's buffers.
    let mut seq = 1;
    for round in 0..40u64 {
        let records = events_of(&c.service, "u-alice", u128::from(round * 250), 250);
        assert_eq!(send(&mut conn, batch(&c.service, "acme", seq, records)).accepted_up_to, seq + 249);
        seq += 250;
    }
    let g = grant(&c, &["export-person"], 0, 60);
    let mut slow = UnixStream::connect(&c.socket).unwrap();
    let request = json!({"v": 1, "token": c.jdoe, "op": "export-person", "grant": g, "customer": "acme", "user": "u-alice"});
    writeln!(slow, "{request}").unwrap();
    // Read a little, slowly: the export is stuck on a full socket.
    let mut buf = [0u8; 1024];
    slow.read_exact(&mut buf).unwrap();
    let started = Instant::now();
    // Meanwhile a device's batches are stored at once.
    for _ in 0..3 {
        let records = events_of(&c.service, "u-bob", u128::from(seq) + 100_000, 10);
        let t = Instant::now();
        assert_eq!(send(&mut conn, batch(&c.service, "acme", seq, records)).accepted_up_to, seq + 9);
        assert!(t.elapsed() < Duration::from_secs(3), "ingest waited {:?} behind the export", t.elapsed());
        seq += 10;
    }
    // The reader is too slow: the answer is cut off within the grace (and
    // the snapshot it held released), reported as such.
    let cut = |log: &[String]| log.iter().any(|l| l.contains("export-person by ops.jdoe: cut off"));
    while !cut(&c.log.lock().unwrap()) {
        assert!(started.elapsed() < Duration::from_secs(25), "still sending after {:?}", started.elapsed());
        let _ = slow.read(&mut buf);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!c.log.lock().unwrap().iter().any(|l| l.contains("10030 lines")), "not delivered whole");
}

#[test]
fn a_support_read_of_a_customers_records_needs_its_grant_pages_and_is_logged() {
    let c = start(SETTINGS, None);
    let _conn = alice_sends(&c, 5);
    let export = grant(&c, &["export-person"], 0, 60);
    let read = |g: u64, after: i64, limit: u64| {
        ask(
            &c.socket,
            &c.jdoe,
            json!({"op": "read-records", "grant": g, "customer": "acme", "after": after, "limit": limit}),
        )
    };
    // Another action's grant reads nothing.
    let a = read(export, 0, 2);
    assert_eq!((a.len(), &a[0]["code"]), (1, &json!("denied")), "{a:?}");
    let g = grant(&c, &["read-records"], 0, 60);
    assert_eq!(read(g, 0, 5_000)[0]["code"], json!("bad-request"), "at most 1,000 a page");
    // Pages of 2: 2, 2, 1, then none.
    let (mut after, mut seen) = (0i64, Vec::new());
    loop {
        let lines = read(g, after, 2);
        assert_eq!(lines.last().unwrap()[END_KEY], json!(true), "{lines:?}");
        let page: Vec<i64> = lines[1..lines.len() - 1].iter().map(|l| l["id"].as_i64().unwrap()).collect();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2 && page.iter().all(|&id| id > after));
        after = *page.last().unwrap();
        seen.extend(page);
    }
    assert_eq!(seen.len(), 5, "every record once: {seen:?}");
    // Each page is an entry of the customer's access log.
    let listing = one(&c.socket, &c.jdoe, json!({"op": "access-log", "customer": "acme"}));
    let reads = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == json!("read-records") && e["outcome"] == json!("allowed"))
        .count();
    assert_eq!(reads, 4, "{listing}");
}

//! Enhance is anonymous: the enrichment upload goes through a real agent
//! and the real service (in process, over the testkit pipe) and every byte
//! the agent wrote for it is captured and searched for the device id, the
//! user id, the paths, the file names and the file owner's login.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use privtel_agent::{Agent, AgentError, WebLog, sightings_from_scan};
use privtel_filter::{FilterBuilder, Policy, PseudonymKey};
use privtel_model::{
    BinarySighting, BinaryVerdict, CustomerId, DeviceId, DomainSighting, KeyId, ThreatLevel, Timestamp,
};
use privtel_service::{CustomerSettings, Peer, Service, Settings};
use privtel_store::{EngineStore, SpoolOptions, SqliteEngine};
use privtel_testkit::{End, fixtures, pipe};
use privtel_wire::{Connection, Message, VerdictIndex};

pub(crate) const DEVICE: &str = "dev-canary-4242";
const USER: &str = "user-canary-9191";
const FOLDER: &str = "home-of-canary-alice";

fn now() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

fn policy() -> Policy {
    Policy::from_toml(
        "version = 3\n[programs]\nenrichment = true\n[fields]\n\"web_request.host\" = \"generalise\"\n\"web_request.url\" = \"generalise\"\n",
    )
    .unwrap()
}

fn agent(dir: &Path) -> Agent {
    agent_with(dir, policy())
}

/// An agent of acme's device `DEVICE` under `policy`, spooling in `dir`.
pub(crate) fn agent_with(dir: &Path, policy: Policy) -> Agent {
    let filter = FilterBuilder::new()
        .policy(policy)
        .customer(CustomerId::new("acme").unwrap())
        .key(PseudonymKey::new(KeyId::new(1), [9; 32]))
        .build();
    Agent::open(
        CustomerId::new("acme").unwrap(),
        DeviceId::new(DEVICE).unwrap(),
        filter,
        dir.join("spool.db"),
        SpoolOptions::default(),
    )
    .unwrap()
}

pub(crate) fn service(dir: &Path, known: &BinaryVerdict) -> Arc<Service> {
    let engine = SqliteEngine::open(dir.join("engine.db"), Default::default()).unwrap();
    let settings =
        Settings::with_customers([CustomerSettings::new(CustomerId::new("acme").unwrap(), policy())]);
    let mut index = VerdictIndex::new(4, [1; 32]);
    index.add_binary(known.clone());
    Arc::new(Service::new(engine, index, now).with_settings(settings))
}

/// A client stream that keeps a copy of every byte written to it.
pub(crate) struct Recorder {
    inner: End,
    written: Arc<Mutex<Vec<u8>>>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The service's side of a connection, on its thread.
pub(crate) type Served = std::thread::JoinHandle<Result<(), privtel_wire::Error>>;

/// A recorded connection to `service` as `peer`, served on a thread.
pub(crate) fn connect(
    service: &Arc<Service>,
    peer: Peer,
) -> (Connection<Recorder>, Arc<Mutex<Vec<u8>>>, Served) {
    let (client, server) = pipe();
    let service = Arc::clone(service);
    let served = std::thread::spawn(move || service.handle(Connection::new(server), peer));
    let written = Arc::new(Mutex::new(Vec::new()));
    (Connection::new(Recorder { inner: client, written: Arc::clone(&written) }), written, served)
}

pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The frames of `bytes`, decoded.
pub(crate) fn messages(bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (msg, used) = Message::decode_frame_from(rest, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
        out.push(msg);
        rest = &rest[used..];
    }
    out
}

/// A scan of the fixture executables in a folder named after a person, and
/// a web log of that person: the sightings Enhance sends.
fn sightings(dir: &Path, agent: &mut Agent) -> (Vec<BinarySighting>, Vec<DomainSighting>, Vec<String>) {
    let folder = dir.join(FOLDER);
    std::fs::create_dir_all(&folder).unwrap();
    let mut names = Vec::new();
    for (name, bytes) in fixtures::sample_executables() {
        std::fs::write(folder.join(name), bytes).unwrap();
        names.push(name.to_owned());
    }
    let scan = privtel_hash::ScannerBuilder::new()
        .algorithms(privtel_hash::Algorithms::Both)
        .executables_only(true)
        .build()
        .scan(&[&folder]);
    let binaries = sightings_from_scan(&scan, now());
    assert!(!binaries.is_empty(), "the fixture executables are found");
    let log = dir.join("web.log");
    std::fs::write(
        &log,
        format!(
            "2026-11-27T09:00:00Z\t{USER}\thttps://www.example.com/{USER}/inbox?mail=canary@example.org\t93.184.216.34\t120\n\
             2026-11-27T09:05:00Z\t{USER}\thttps://docs.example.net/a/b\t93.184.216.35\t80\n"
        ),
    )
    .unwrap();
    let (_, collected) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
    let domains: Vec<DomainSighting> =
        collected.domains.into_iter().map(|d| DomainSighting::new(d, now())).collect();
    assert_eq!(domains.len(), 2, "both sites are sighted");
    (binaries, domains, names)
}

#[test]
fn the_enrichment_upload_names_no_device_user_path_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent(dir.path());
    let (binaries, domains, names) = sightings(dir.path(), &mut agent);
    let known = BinaryVerdict { sha256: binaries[0].sha256, threat: "high".parse().unwrap(), category: None };
    let service = service(dir.path(), &known);
    let peer = Peer::device(CustomerId::new("acme").unwrap(), DeviceId::new(DEVICE).unwrap());

    let (mut conn, written, served) = connect(&service, peer.clone());
    let (vb, vd) = agent.enhance(&mut conn, &binaries, &domains, now()).unwrap();
    served.join().unwrap().unwrap();

    // The verdicts: one per sighting, the known one known.
    assert_eq!(vb.len(), binaries.len());
    assert_eq!(vd.len(), domains.len());
    assert_eq!(vb.iter().find(|v| v.sha256 == known.sha256).unwrap().threat, ThreatLevel::High);

    // Every byte the agent wrote for the upload.
    let bytes = written.lock().unwrap().clone();
    let sent = messages(&bytes);
    let kinds: Vec<u8> = sent.iter().map(Message::kind).collect();
    assert_eq!(kinds, [12, 13, 9], "enhance hello, sightings, goodbye");
    let Message::Sightings(s) = &sent[1] else { panic!("sightings") };
    assert_eq!((s.binaries.as_slice(), s.domains.as_slice()), (binaries.as_slice(), domains.as_slice()));
    let owner = {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata(dir.path().join(FOLDER).join(&names[0])).unwrap().uid();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        privtel_agent::login_of_uid(&passwd, uid).map(str::to_owned)
    };
    let dir_text = dir.path().display().to_string();
    let mut canaries =
        vec![DEVICE.to_owned(), USER.to_owned(), FOLDER.to_owned(), dir_text, "canary@".into()];
    canaries.extend(names.iter().cloned());
    canaries.extend(owner.filter(|o| o.len() >= 4));
    for canary in &canaries {
        assert!(!contains(&bytes, canary), "{canary:?} is in the enrichment upload");
        assert!(!format!("{sent:?}").contains(canary.as_str()), "{canary:?} is in a decoded message");
    }
    // The same bytes do carry the sighted content (the search can fail).
    assert!(contains(&bytes, "example.com"));
    assert!(contains(&bytes, "example.net"));

    // The service kept the known verdict under the customer, nothing under
    // the device; a second, identical upload changes nothing.
    let acme = CustomerId::new("acme").unwrap();
    let stored = |service: &Service| {
        let engine = service.engine();
        (
            engine.binary_verdict(&acme, &known.sha256).unwrap().map(|v| v.verdict),
            engine.record_count_of(&acme).unwrap(),
        )
    };
    let first = stored(&service);
    assert_eq!(first, (Some(known.clone()), 0));
    // This agent looked them up just now: nothing is due, nothing is sent.
    let (mut none, quiet, _served) = connect(&service, peer.clone());
    assert_eq!(agent.enhance(&mut none, &binaries, &domains, now()).unwrap(), (Vec::new(), Vec::new()));
    assert!(quiet.lock().unwrap().is_empty());
    // The same sightings from an agent that lost the answer (a new spool).
    let other = tempfile::tempdir().unwrap();
    let (mut again, _, served) = connect(&service, peer);
    let (vb2, vd2) = self::agent(other.path()).enhance(&mut again, &binaries, &domains, now()).unwrap();
    served.join().unwrap().unwrap();
    assert_eq!((vb2, vd2), (vb, vd));
    assert_eq!(stored(&service), first);
}

#[test]
fn enhance_needs_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent(dir.path());
    let (binaries, domains, _) = sightings(dir.path(), &mut agent);
    let service = service(dir.path(), &BinaryVerdict::unknown(binaries[0].sha256));
    let (mut conn, _, served) = connect(&service, Peer::Anonymous);
    let err = agent.enhance(&mut conn, &binaries, &domains, now()).unwrap_err();
    assert!(matches!(err, AgentError::Wire(_) | AgentError::Refused { .. }), "{err}");
    assert!(served.join().unwrap().is_err(), "an anonymous peer may only enroll");
}

#[test]
fn enhance_sends_nothing_when_enrichment_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let off = Policy::from_toml("version = 3\n[programs]\nenrichment = false\n").unwrap();
    let mut agent = agent_with(dir.path(), off);
    let sighting = BinarySighting::new(privtel_model::Digest::from_bytes([3; 32]), None, 10, None, now());
    let written = Arc::new(Mutex::new(Vec::new()));
    let (client, _server) = pipe();
    let mut conn = Connection::new(Recorder { inner: client, written: Arc::clone(&written) });
    assert_eq!(agent.enhance(&mut conn, &[sighting], &[], now()).unwrap(), (Vec::new(), Vec::new()));
    assert!(written.lock().unwrap().is_empty());
}

/// The sites Enhance may ask about come from the web log whatever happens
/// to the person's web requests, but never more than the policy lets a
/// host leave as: none when it drops or pseudonymises `web_request.host`.
#[test]
fn sighted_sites_follow_the_host_treatment_not_the_person_s_consent() {
    let collect = |fields: &str| {
        let dir = tempfile::tempdir().unwrap();
        // Personalised usage off: the web requests themselves stay home.
        let policy = Policy::from_toml(&format!(
            "version = 3\n[programs]\nenrichment = true\npersonalised_usage = false\n[fields]\n{fields}"
        ))
        .unwrap();
        let mut agent = agent_with(dir.path(), policy);
        let log = dir.path().join("web.log");
        std::fs::write(
            &log,
            "2026-11-27T09:00:00Z\tu-1\thttps://mail.example.com/inbox\t93.184.216.34\t120\n",
        )
        .unwrap();
        let (_, collected) = agent.collect_web_log(&WebLog::new(&log), now()).unwrap();
        assert_eq!(collected.records, 0, "the person's web request is not spooled");
        assert_eq!(agent.outbox().len(None).unwrap(), 0);
        collected.domains.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let generalised = "\"web_request.host\" = \"generalise\"\n\"web_request.url\" = \"generalise\"\n";
    assert_eq!(collect(generalised), ["example.com"]);
    let clear = "\"web_request.host\" = \"clear\"\n\"web_request.url\" = \"clear\"\n";
    assert_eq!(collect(clear), ["example.com"]);
    assert_eq!(
        collect("\"web_request.host\" = \"withhold\"\n\"web_request.url\" = \"withhold\"\n"),
        Vec::<String>::new()
    );
    let pseudonymised = "\"web_request.host\" = \"pseudonymise\"\n\"web_request.url\" = \"withhold\"\n";
    assert_eq!(collect(pseudonymised), Vec::<String>::new());
}

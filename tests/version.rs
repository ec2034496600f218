//! The version check end to end, in one process over mutual TLS on
//! 127.0.0.1: the real service with update offers in its settings, a
//! device enrolled with a token, the agent's `check_version`, and the
//! installer's verification against the offer's digest. Also hostile
//! peers on both sides: a client sending oversized strings and garbage, a
//! service offering what must not be followed.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use privtel::agent::{Agent, AgentError, AuditLog, AuditOptions, VersionOffer, verify_installer};
use privtel::authority::{Authority, Credentials};
use privtel::filter::{FilterBuilder, Policy};
use privtel::model::{CustomerId, DeviceId, Digest, HashAlg, Program, Timestamp};
use privtel::service::{CustomerSettings, Service, Settings, SettingsError};
use privtel::store::{EngineOptions, SpoolOptions, SqliteEngine};
use privtel::wire::tls::ClientStream;
use privtel::wire::{
    Connection, EnhanceHello, Message, UpdateOffer, VerdictIndex, VersionAnswer, VersionError, VersionQuery,
    VersionStatus,
};

/// The bytes of the "installer" the settings offer.
const INSTALLER: &[u8] = b"#!/bin/sh\necho installing acme editor 2.5.0\n";

fn wall() -> Timestamp {
    Timestamp::from(time::OffsetDateTime::now_utc())
}

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    privtel::hash::digest(HashAlg::Sha256, bytes).to_string()
}

/// Offers of every customer (2.5.0 on stable) and acme's own beta channel;
/// the platform of this build gets an installer of its own on beta.
fn settings_text() -> String {
    let platform = VersionQuery::this_platform();
    format!(
        r#"
[versions."Acme Editor".stable]
latest = "2.5.0"
installer = "https://downloads.example.com/acme-editor-2.5.0.sh"
sha256 = "{sha}"
size = {size}

[customers.acme]
[customers.acme.versions."Acme Editor".beta]
latest = "2.6.0.1"
installer = "https://downloads.example.com/acme-editor-2.6.0.1-any.sh"
sha256 = "{other}"
size = 10
[customers.acme.versions."Acme Editor".beta.platforms."{platform}"]
installer = "https://downloads.example.com/acme-editor-2.6.0.1-{platform}.sh"
sha256 = "{upper}"
size = 20

[customers.globex]
"#,
        sha = sha256_hex(INSTALLER),
        size = INSTALLER.len(),
        other = "ab".repeat(32),
        upper = "CD".repeat(32),
    )
}

struct Running {
    service: Arc<Service>,
    authority: Arc<Authority>,
    addr: SocketAddr,
    server_ca: String,
    stop: Arc<AtomicBool>,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn start(settings: Settings) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let authority = Arc::new(Authority::open(dir.path().join("authority.db")).unwrap());
    for c in ["acme", "globex"] {
        authority.add_customer(&id(c), wall().as_offset_date_time()).unwrap();
    }
    let identity = privtel::wire::tls::generate_identity(&["127.0.0.1"]).unwrap();
    let config = privtel::authority::server_config(&authority, &identity).unwrap();
    let engine = SqliteEngine::open(dir.path().join("engine.db"), EngineOptions::default()).unwrap();
    let service = Arc::new(
        Service::new(engine, VerdictIndex::new(4, [1; 32]), wall)
            .with_settings(settings)
            .with_authority(Arc::clone(&authority)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (service, stop) = (Arc::clone(&service), Arc::clone(&stop));
        std::thread::spawn(move || service.serve_tls(&listener, &config, &stop));
    }
    Running { service, authority, addr, server_ca: identity.ca_pem, stop, dir }
}

impl Running {
    /// Enrolls `customer`'s device `device` through the agent's own
    /// enrollment, with a fresh one-use token.
    fn enroll(&self, customer: &str, device: &str) -> Credentials {
        let token = self
            .authority
            .issue_token(&id(customer), time::Duration::hours(1), 1, wall().as_offset_date_time())
            .unwrap();
        let config = privtel::authority::enrollment_client_config(&self.server_ca).unwrap();
        let stream = privtel::wire::tls::connect(self.addr, "127.0.0.1", config).unwrap();
        let creds_dir = self.dir.path().join(format!("creds-{customer}-{device}"));
        std::fs::create_dir_all(&creds_dir).unwrap();
        privtel::agent::enroll(&mut Connection::new(stream), &token, &id(customer), &id(device), &creds_dir)
            .unwrap()
    }

    fn session(&self, credentials: &Credentials) -> Connection<ClientStream> {
        let config = privtel::authority::client_config(&self.server_ca, credentials).unwrap();
        Connection::new(privtel::wire::tls::connect(self.addr, "127.0.0.1", config).unwrap())
    }

    /// Waits until the service has seen `n` connections end (served or
    /// failed), so its counters can be read.
    fn settle(&self) {
        for _ in 0..200 {
            if self.service.active_connections() == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("connections still open");
    }
}

fn agent(dir: &Path, customer: &str, device: &str) -> Agent {
    agent_with(dir, customer, device, Policy::default())
}

fn agent_with(dir: &Path, customer: &str, device: &str, policy: Policy) -> Agent {
    let filter = FilterBuilder::new().policy(policy).customer(id(customer)).build();
    Agent::open(
        id::<CustomerId>(customer),
        id::<DeviceId>(device),
        filter,
        dir.join(format!("spool-{device}.db")),
        SpoolOptions::default(),
    )
    .unwrap()
}

#[test]
fn an_old_version_gets_the_offer_the_latest_is_up_to_date_and_unknown_products_get_nothing() {
    let run = start(Settings::from_toml(&settings_text()).unwrap());
    let creds = run.enroll("acme", "dev-1");
    let mut agent = agent(run.dir.path(), "acme", "dev-1")
        .with_audit_log(AuditLog::open(run.dir.path().join("audit.jsonl"), AuditOptions::default()).unwrap());
    let mut check = |product: &str, current: &str, channel: &str| {
        let mut conn = run.session(&creds);
        agent.check_version(&mut conn, product, current, channel, wall())
    };

    // An old version: the global offer, as the settings say it.
    let VersionOffer::Update(offer) = check("Acme Editor", "2.4.9", "stable").unwrap() else {
        panic!("an update is offered")
    };
    assert_eq!(offer.latest, "2.5.0");
    assert_eq!(offer.installer, "https://downloads.example.com/acme-editor-2.5.0.sh");
    assert_eq!(offer.sha256.to_string(), sha256_hex(INSTALLER));
    assert_eq!(offer.size, INSTALLER.len() as u64);
    // 2.4.10 is older than 2.5.0 too (numbers, not text: "2.4.10" > "2.5"
    // would hold as text only in the other direction).
    assert!(matches!(check("Acme Editor", "2.4.10", "stable").unwrap(), VersionOffer::Update(_)));

    // The latest, or newer (a trailing .0 is the same version): up to date.
    for current in ["2.5.0", "2.5", "2.5.0.0", "2.10"] {
        assert_eq!(
            check("Acme Editor", current, "stable").unwrap(),
            VersionOffer::UpToDate { latest: "2.5.0".into() },
            "{current}"
        );
    }
    // Unknown product or channel: nothing.
    assert_eq!(check("Globex Viewer", "1.0", "stable").unwrap(), VersionOffer::UnknownProduct);
    assert_eq!(check("Acme Editor", "1.0", "nightly").unwrap(), VersionOffer::UnknownProduct);

    // Acme's own beta channel: this platform's installer, its digest
    // written in upper case in the settings.
    let VersionOffer::Update(beta) = check("Acme Editor", "2.5.0", "beta").unwrap() else {
        panic!("beta offer")
    };
    assert_eq!(beta.latest, "2.6.0.1");
    assert!(
        beta.installer.ends_with(&format!("-{}.sh", VersionQuery::this_platform())),
        "{}",
        beta.installer
    );
    assert_eq!(beta.sha256, Digest::from_bytes([0xcd; 32]));
    assert_eq!(beta.size, 20);

    // A query out of bounds never leaves the device.
    let mut conn = run.session(&creds);
    let err = agent.check_version(&mut conn, "Acme Editor", "2.5-beta", "stable", wall()).unwrap_err();
    assert!(matches!(err, AgentError::Version(VersionError::NotDotted { .. })), "{err}");
    drop(conn);

    run.settle();
    let stats = run.service.stats();
    assert_eq!(stats.version_checks.load(Ordering::Relaxed), 9);
    assert_eq!(stats.version_offers.load(Ordering::Relaxed), 3);
    assert_eq!(stats.version_refused.load(Ordering::Relaxed), 0);

    // The audit log shows every query that left, and only what it held.
    // (Sealed with the spool's key in the file: read as its owner does.)
    let entries = privtel::agent::read_audit_log(
        run.dir.path().join("audit.jsonl"),
        run.dir.path().join("spool-dev-1.db"),
    )
    .unwrap();
    let queries: Vec<String> =
        entries.iter().filter(|e| e.kind == "version query").map(|e| e.message.to_string()).collect();
    assert_eq!(queries.len(), 9, "{entries:?}");
    assert!(queries[0].contains("\"current_version\":\"2.4.9\""), "{}", queries[0]);
    assert!(
        !entries.iter().any(|e| e.message.to_string().contains("dev-1")),
        "the device is named in the audit of an anonymous session"
    );
}

#[test]
fn globex_gets_only_the_global_offers_and_settings_change_at_run_time() {
    let run = start(Settings::from_toml(&settings_text()).unwrap());
    let creds = run.enroll("globex", "dev-9");
    let mut agent = agent(run.dir.path(), "globex", "dev-9");
    let mut check = |channel: &str| {
        let mut conn = run.session(&creds);
        agent.check_version(&mut conn, "Acme Editor", "2.0", channel, wall()).unwrap()
    };
    assert!(matches!(check("stable"), VersionOffer::Update(o) if o.latest == "2.5.0"));
    assert_eq!(check("beta"), VersionOffer::UnknownProduct, "acme's beta is acme's alone");

    // A new release, without a restart: the next check sees it.
    let newer = settings_text().replace("latest = \"2.5.0\"", "latest = \"2.7\"");
    run.service.replace_settings(Settings::from_toml(&newer).unwrap());
    assert!(matches!(check("stable"), VersionOffer::Update(o) if o.latest == "2.7"));
}

#[test]
fn with_the_program_off_nothing_is_offered_and_nothing_is_sent() {
    // At the service: acme's policy has the version check off.
    let mut policy = Policy::default();
    policy.programs.insert(Program::VersionCheck, false);
    let base = Settings::from_toml(&settings_text()).unwrap();
    let settings = Settings::with_customers([CustomerSettings::new(id("acme"), policy.clone())])
        .with_versions(base.versions().clone());
    let run = start(settings);
    let creds = run.enroll("acme", "dev-1");
    let mut agent = agent(run.dir.path(), "acme", "dev-1");
    let mut conn = run.session(&creds);
    assert_eq!(
        agent.check_version(&mut conn, "Acme Editor", "1.0", "stable", wall()).unwrap(),
        VersionOffer::Off
    );
    run.settle();
    assert_eq!(run.service.stats().version_refused.load(Ordering::Relaxed), 1);
    assert_eq!(run.service.stats().version_offers.load(Ordering::Relaxed), 0);

    // On the device: its own policy has it off; not a byte is written.
    let mut off = agent_with(run.dir.path(), "acme", "dev-2", policy);
    let mut written = Vec::new();
    let mut wire = Connection::new(privtel::service::Duplex::new(std::io::empty(), &mut written));
    assert_eq!(
        off.check_version(&mut wire, "Acme Editor", "1.0", "stable", wall()).unwrap(),
        VersionOffer::Off
    );
    assert!(written.is_empty());
}

#[test]
fn the_installer_is_usable_only_when_its_digest_matches_the_offer() {
    let run = start(Settings::from_toml(&settings_text()).unwrap());
    let creds = run.enroll("acme", "dev-1");
    let mut agent = agent(run.dir.path(), "acme", "dev-1");
    let mut conn = run.session(&creds);
    let VersionOffer::Update(offer) =
        agent.check_version(&mut conn, "Acme Editor", "2.4", "stable", wall()).unwrap()
    else {
        panic!("an update is offered")
    };
    // "Downloaded" into a folder named after a person.
    let folder = run.dir.path().join("home-of-canary-alice");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("acme-editor-2.5.0.sh");

    std::fs::write(&path, INSTALLER).unwrap();
    let verified = verify_installer(&path, &offer).unwrap();
    assert_eq!((verified.version(), verified.size(), verified.sha256()), ("2.5.0", offer.size, offer.sha256));
    assert_eq!(verified.blake3(), privtel::hash::digest(HashAlg::Blake3, INSTALLER));
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut verified.into_file().unwrap(), &mut read).unwrap();
    assert_eq!(read, INSTALLER, "the verified handle reads the verified bytes");

    // One byte changed, same size: refused, naming both digests only.
    let mut tampered = INSTALLER.to_vec();
    tampered[10] ^= 0x20;
    std::fs::write(&path, &tampered).unwrap();
    let err = verify_installer(&path, &offer).unwrap_err();
    let actual = privtel::hash::digest(HashAlg::Sha256, &tampered);
    assert!(
        matches!(&err, AgentError::InstallerDigest { expected, actual: a } if *expected == offer.sha256 && *a == actual),
        "{err}"
    );
    let text = err.to_string();
    assert_eq!(
        text,
        format!("installer not verified: its sha-256 is {actual}, the offer says {}", offer.sha256)
    );
    for canary in ["canary", "installing", "acme-editor"] {
        assert!(!text.contains(canary) && !format!("{err:?}").contains(canary), "{canary} in {text}");
    }
    // Another size: refused before it is read.
    std::fs::write(&path, [INSTALLER, b"#"].concat()).unwrap();
    let err = verify_installer(&path, &offer).unwrap_err();
    assert!(
        matches!(err, AgentError::InstallerSize { expected, actual } if expected == offer.size && actual == expected + 1)
    );
    // Gone, or a folder: a typed error without the path.
    for bad in [folder.join("missing.sh"), folder.clone()] {
        let err = verify_installer(&bad, &offer).unwrap_err();
        assert!(matches!(err, AgentError::Installer { .. }), "{err}");
        assert!(!err.to_string().contains("canary"), "{err}");
    }
}

/// A raw frame of `kind` with `payload`, as a hostile client writes it.
fn raw_frame(kind: u8, payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    privtel::wire::encode_frame(
        &privtel::wire::Frame::new(2, kind, 0, payload),
        privtel::wire::DEFAULT_MAX_PAYLOAD,
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn hostile_clients_get_typed_refusals_and_the_service_keeps_answering() {
    use std::io::Write as _;
    let run = start(Settings::from_toml(&settings_text()).unwrap());
    let creds = run.enroll("acme", "dev-1");
    let failed = || run.service.stats().failed.load(Ordering::Relaxed);

    // An oversized product: the service cannot decode it, and closes.
    let mut conn = run.session(&creds);
    conn.client_enhance_handshake(&EnhanceHello::new("hostile")).unwrap();
    let q = VersionQuery {
        query_id: 1,
        product: "P".repeat(10_000),
        current_version: "1.0".into(),
        channel: "stable".into(),
        platform: "linux-x86_64".into(),
    };
    conn.send(&Message::VersionQuery(q)).unwrap();
    assert!(!matches!(conn.recv(), Ok(Message::VersionAnswer(_))), "an oversized query is never answered");
    drop(conn);

    // A query within bounds but not a dotted version: an error message.
    let mut conn = run.session(&creds);
    conn.client_enhance_handshake(&EnhanceHello::new("hostile")).unwrap();
    let q = VersionQuery {
        query_id: 2,
        product: "Acme Editor".into(),
        current_version: "latest".into(),
        channel: "stable".into(),
        platform: "linux-x86_64".into(),
    };
    conn.send(&Message::VersionQuery(q)).unwrap();
    match conn.recv().unwrap() {
        Message::Error(e) => {
            assert!(e.message.contains("current version is not a dotted numeric version"), "{}", e.message)
        }
        other => panic!("expected an error, got {}", other.kind_name()),
    }
    drop(conn);

    // Garbage after the handshake, and a version query whose payload is
    // cut short.
    for bytes in [
        [&[0x50, 0x54, 2, 14, 0, 0, 0xff, 0xff, 0xff, 0x7f][..], &[0; 8]].concat(),
        raw_frame(14, vec![1, 253, 0xff]),
    ] {
        let mut conn = run.session(&creds);
        conn.client_enhance_handshake(&EnhanceHello::new("hostile")).unwrap();
        conn.get_mut().write_all(&bytes).unwrap();
        conn.get_mut().flush().unwrap();
        assert!(!matches!(conn.recv(), Ok(Message::VersionAnswer(_))));
    }
    run.settle();
    assert!(failed() >= 3, "the hostile connections are counted as failed: {}", failed());

    // The service still answers.
    let mut agent = agent(run.dir.path(), "acme", "dev-1");
    let mut conn = run.session(&creds);
    assert!(matches!(
        agent.check_version(&mut conn, "Acme Editor", "1.0", "stable", wall()).unwrap(),
        VersionOffer::Update(_)
    ));
}

/// Plays a service that answers a version query with `answer` (built from
/// the query), over the testkit pipe; returns what the agent made of it.
fn against(
    answer: impl FnOnce(&VersionQuery) -> Message + Send + 'static,
) -> Result<VersionOffer, AgentError> {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent(dir.path(), "acme", "dev-1");
    let (client, server) = privtel_testkit::pipe();
    let served = std::thread::spawn(move || {
        let mut conn = Connection::new(server);
        conn.server_open(|_, v| privtel::wire::Welcome::new(v, 0)).unwrap();
        let Ok(Message::VersionQuery(q)) = conn.recv() else { panic!("a version query") };
        let _ = conn.send(&answer(&q));
        let _ = conn.recv();
    });
    let out = agent.check_version(&mut Connection::new(client), "Acme Editor", "2.4.1", "stable", wall());
    served.join().unwrap();
    out
}

fn update(q: &VersionQuery, latest: &str, installer: &str) -> Message {
    Message::VersionAnswer(VersionAnswer {
        query_id: q.query_id,
        status: VersionStatus::UPDATE,
        latest: Some(latest.into()),
        offer: Some(UpdateOffer {
            latest: latest.into(),
            installer: installer.into(),
            sha256: Digest::from_bytes([7; 32]),
            size: 1,
        }),
    })
}

#[test]
fn a_hostile_service_cannot_make_the_agent_follow_a_bad_offer() {
    // The honest answer is taken.
    assert!(matches!(against(|q| update(q, "2.5", "https://dl.example.com/a")), Ok(VersionOffer::Update(_))));
    // Not https, a downgrade, the same version, not dotted: refused.
    let refused = [
        (against(|q| update(q, "2.5", "http://dl.example.com/a")), VersionError::NotHttps),
        (against(|q| update(q, "2.4", "https://dl.example.com/a")), VersionError::NotNewer),
        (against(|q| update(q, "2.4.1", "https://dl.example.com/a")), VersionError::NotNewer),
        (
            against(|q| update(q, "2.5-rc1", "https://dl.example.com/a")),
            VersionError::NotDotted { field: "latest version" },
        ),
    ];
    for (got, want) in refused {
        assert!(matches!(&got, Err(AgentError::Version(e)) if *e == want), "{got:?}");
    }
    // A status and a content that disagree, or a status this build does
    // not know: refused.
    let bare = |status: VersionStatus| {
        move |q: &VersionQuery| {
            Message::VersionAnswer(VersionAnswer { query_id: q.query_id, status, latest: None, offer: None })
        }
    };
    for status in [VersionStatus::UPDATE, VersionStatus::UP_TO_DATE, VersionStatus(99)] {
        let got = against(bare(status));
        assert!(
            matches!(&got, Err(AgentError::Version(VersionError::Inconsistent { status: s, has_offer: false })) if *s == status.0),
            "{got:?}"
        );
    }
    // An answer to another query, or another message: a protocol error.
    let got = against(|q| {
        Message::VersionAnswer(VersionAnswer {
            query_id: q.query_id + 1,
            status: VersionStatus::UNKNOWN_PRODUCT,
            latest: None,
            offer: None,
        })
    });
    assert!(matches!(got, Err(AgentError::Protocol { expected: "version answer", .. })), "{got:?}");
    // An answer with an oversized string does not decode: a wire error.
    let got = against(|q| update(q, "2.5", &format!("https://dl.example.com/{}", "a".repeat(4096))));
    assert!(matches!(got, Err(AgentError::Wire(privtel::wire::Error::Decode { .. }))), "{got:?}");
}

#[test]
fn offers_are_checked_when_the_settings_load() {
    let sha = "ab".repeat(32);
    let offer =
        |body: &str| format!("[customers.acme]\n[customers.acme.versions.\"Acme Editor\".stable]\n{body}\n");
    let ok =
        format!("latest = \"2.5\"\ninstaller = \"https://dl.example.com/a\"\nsha256 = \"{sha}\"\nsize = 3");
    assert!(Settings::from_toml(&offer(&ok)).is_ok());
    let cases = [
        (
            ok.replace("\"2.5\"", "\"2.5-beta\""),
            "latest is \"2.5-beta\": expected dotted numbers such as 2.4.1",
        ),
        (
            ok.replace("https://", "http://"),
            "installer is \"http://dl.example.com/a\": expected an https URL with a host, no credentials and no spaces",
        ),
        (
            ok.replace(&sha, &"zz".repeat(32)),
            "sha256 has 64 characters or a non-hex one: expected 64 hex digits",
        ),
        (ok.replace(&sha, "abc"), "sha256 has 3 characters or a non-hex one: expected 64 hex digits"),
        (ok.replace("size = 3", "size = 0"), "size is 0: expected the installer's size in bytes"),
        (ok.replace("size = 3", ""), "size is missing: installer, sha256 and size go together"),
        (
            "latest = \"2.5\"".into(),
            "no installer: expected installer, sha256 and size, or a platforms table",
        ),
    ];
    for (body, problem) in cases {
        let err = Settings::from_toml(&offer(&body)).unwrap_err();
        assert!(matches!(err, SettingsError::Offer { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("settings: customer acme: versions.\"Acme Editor\".\"stable\": {problem}"),
            "{body}"
        );
    }
    // The global table is checked alike, and named without a customer.
    let err = Settings::from_toml(&format!("[versions.\"\".stable]\n{ok}\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "settings: versions.\"\".\"stable\": product name \"\" is not 1 to 128 printable bytes"
    );
    // An unknown key is a syntax error with its line.
    let err = Settings::from_toml(&offer(&format!("{ok}\nmirror = \"x\""))).unwrap_err();
    assert!(matches!(err, SettingsError::Syntax { .. }), "{err}");
}

#[test]
fn the_sample_settings_offer_the_sample_installer() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let settings = Settings::load(data.join("settings.toml")).unwrap();
    let stable = settings.versions().get("Acme Editor", "stable").expect("a stable offer for every customer");
    assert_eq!(stable.latest().to_string(), "2.5.0");
    let installer = stable.installer("linux-x86_64").unwrap();
    let offer = UpdateOffer {
        latest: "2.5.0".into(),
        installer: installer.url.clone(),
        sha256: installer.sha256,
        size: installer.size,
    };
    let verified = verify_installer(data.join("installers/acme-editor-2.5.0.sh"), &offer).unwrap();
    assert_eq!(verified.version(), "2.5.0");
    assert_ne!(stable.installer("windows-x86_64").unwrap(), installer, "windows has its own");
    let acme = settings.customer(&id("acme")).unwrap();
    assert_eq!(acme.versions().get("Acme Editor", "beta").unwrap().latest().to_string(), "2.6.0.1");
}

/// An enrollment whose answer is lost after the service registered the
/// device's key (the connection dropped, the service stopped): the agent
/// asks again with the key it kept, and the one-use token it spent still
/// enrolls it. Before, the second attempt made a new key and was refused
/// as a clone until an administrator reset the device.
#[test]
fn an_enrollment_whose_answer_was_lost_is_asked_again_with_the_same_key() {
    let run = start(Settings::from_toml(&settings_text()).unwrap());
    let token = run
        .authority
        .issue_token(&id("acme"), time::Duration::hours(1), 1, wall().as_offset_date_time())
        .unwrap();
    let creds_dir = run.dir.path().join("creds-lost");
    std::fs::create_dir_all(&creds_dir).unwrap();
    // The first attempt: the service side registers the key, then the
    // connection ends before the answer.
    let (client, server) = privtel_testkit::pipe();
    let authority = Arc::clone(&run.authority);
    let registrar = std::thread::spawn(move || {
        let mut conn = Connection::new(server);
        match conn.recv().unwrap() {
            Message::EnrollRequest(req) => authority.enroll(&req, wall().as_offset_date_time()).unwrap(),
            other => panic!("{other:?}"),
        }
    });
    let lost = privtel::agent::enroll(
        &mut Connection::new(client),
        &token,
        &id("acme"),
        &id("dev-lost"),
        &creds_dir,
    );
    registrar.join().unwrap();
    assert!(lost.is_err(), "no answer came");
    let pending = creds_dir.join(privtel::authority::PENDING_KEY_FILE);
    assert!(pending.exists(), "the key is kept for the next attempt");
    // The next attempt, over TLS to the real service, with the same token.
    let config = privtel::authority::enrollment_client_config(&run.server_ca).unwrap();
    let stream = privtel::wire::tls::connect(run.addr, "127.0.0.1", config).unwrap();
    let credentials = privtel::agent::enroll(
        &mut Connection::new(stream),
        &token,
        &id("acme"),
        &id("dev-lost"),
        &creds_dir,
    )
    .unwrap();
    assert!(!pending.exists(), "the kept key goes once the credentials are saved");
    // The device is served as itself.
    let mut conn = run.session(&credentials);
    let hello = privtel::wire::Hello::new("test", id("acme"), id("dev-lost"), vec![], 1);
    let welcome = conn.client_handshake(&hello);
    assert!(welcome.is_ok(), "{welcome:?}");
}

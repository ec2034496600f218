//! One hand-written record of every kind, with every personal field in clear.
//!
//! Every personal text value contains the marker `tag`, so a test can pass a
//! unique canary and then search output bytes for it.

use privtel_model::{
    Application, Arch, Binary, BinaryVerdict, Category, ConfigSample, CountryCode, CrashReport, Device,
    DeviceId, DeviceSummary, DeviceType, Digest, Domain, DomainVerdict, Event, EventBody, EventId,
    ExecutableFormat, Execution, ExperienceScore, FeatureUsage, Feedback, Finite, Geohash, Interaction,
    LicenceSession, Login, OsFamily, OsInfo, Package, PackageManager, PerformanceSample, Personal,
    Privileges, Program, Record, RecordBody, Reputation, Score, ThreatLevel, Timestamp, User, UserId,
    VersionCheck, WebRequest,
};
use time::Duration;

/// SHA-256 of the empty input.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// BLAKE3 of the empty input.
pub const EMPTY_BLAKE3: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

fn digest(hex: &str) -> Digest {
    hex.parse().expect("fixture digest is valid")
}

fn os() -> OsInfo {
    OsInfo { family: OsFamily::Linux, version: "Debian 12".into(), build: Some("6.1.0-18-amd64".into()) }
}

/// The instant every fixture is relative to: 2026-11-27T04:00:00Z.
pub fn base_time() -> Timestamp {
    Timestamp::from_unix_seconds(1_795_752_000).expect("in range")
}

/// One event of every [`EventBody`] kind, personal text tagged with `tag`.
pub fn event_bodies(tag: &str) -> Vec<EventBody> {
    let t = base_time();
    let text = |what: &str| Personal::Clear(format!("{what}-{tag}"));
    vec![
        EventBody::Execution(Execution {
            sha256: digest(EMPTY_SHA256),
            username: text("alice"),
            path: Personal::Clear(format!("/home/alice-{tag}/bin/tool")),
            start: Personal::Clear(t),
            duration: Personal::Clear(Duration::seconds(95)),
        }),
        EventBody::WebRequest(WebRequest {
            url: Personal::Clear(format!("https://www.example.com/search?q={tag}")),
            host: Personal::Clear(format!("{}.example.com", tag.to_ascii_lowercase())),
            destination_ip: Personal::Clear("93.184.215.14".parse().expect("valid ip")),
            destination_port: 443,
            page_load: Personal::Clear(Duration::milliseconds(840)),
            visit_count: 3,
        }),
        EventBody::Login(Login {
            time: Personal::Clear(t),
            duration: Personal::Clear(Duration::seconds(12)),
            privileges: Personal::Clear(Privileges::Administrator),
        }),
        EventBody::CrashReport(CrashReport {
            product: "privtel-agent".into(),
            version: "0.1.0".into(),
            message: Personal::Clear(format!("panic at /home/alice/{tag}.rs: mail alice@corp.example")),
        }),
        EventBody::FeatureUsage(FeatureUsage {
            product: "privtel-agent".into(),
            feature: "scan".into(),
            count: 4,
        }),
        EventBody::Configuration(ConfigSample {
            product: "privtel-agent".into(),
            key: "scan.threads".into(),
            value: "2".into(),
        }),
        EventBody::Performance(PerformanceSample {
            product: "privtel-agent".into(),
            metric: "startup_time".into(),
            value: Finite::new(182.5).expect("finite"),
            unit: "ms".into(),
        }),
        EventBody::Feedback(Feedback {
            product: "privtel-agent".into(),
            score: Score::new(80).expect("in range"),
            text: text("works well, call me on +33 6 12 34 56 78"),
        }),
        EventBody::LicenceSession(LicenceSession {
            email: Personal::Clear(format!("alice-{tag}@corp.example")),
            start: Personal::Clear(t),
            end: Personal::Clear(t.checked_add(Duration::hours(8)).expect("in range")),
            device_fingerprint: text("fp"),
            os: os(),
            geohash: Personal::Clear(Geohash::new("u09tvw0f").expect("valid geohash")),
        }),
        EventBody::VersionCheck(VersionCheck {
            product: "privtel-agent".into(),
            current_version: "0.1.0".into(),
            channel: "stable".into(),
        }),
        EventBody::ExperienceScore(ExperienceScore {
            score: Score::new(73).expect("in range"),
            period: Duration::days(1),
        }),
    ]
}

/// An interaction event (issue #16 point 6) of user `u-1042` on device
/// `dev-0001` at [`base_time`], under personalised usage:
/// `crm.example.com`, action `create_ticket`, 212 keys, 9 clicks, 48 s in
/// clear. Not in [`records`], whose counts many tests pin (as
/// [`device_summary`] is not): a test that covers every kind adds it.
pub fn interaction() -> Record {
    Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Event(Event {
            id: EventId::from_u128(0x1_0000),
            device: DeviceId::new("dev-0001").expect("valid id"),
            user: Some(UserId::new("u-1042").expect("valid id")),
            recorded_at: base_time(),
            body: EventBody::Interaction(Interaction {
                application: Domain::new("crm.example.com").expect("canonical"),
                action: "create_ticket".into(),
                keys: 212,
                clicks: 9,
                duration: Personal::Clear(Duration::seconds(48)),
            }),
        }),
    }
}

/// [`records`] as the golden files of earlier formats hold them: binaries,
/// executions and web requests under the enrichment program, as agents
/// sent them before Enhance became anonymous (they are personalised usage
/// now). Stored rows keep the program they were written under.
pub fn golden_records(tag: &str) -> Vec<Record> {
    let mut out = records(tag);
    for r in &mut out {
        let kind = r.body.kind_name();
        if matches!(kind, "binary" | "execution" | "web_request") {
            r.program = Program::Enrichment;
        }
    }
    out
}

/// One record of every [`RecordBody`] kind (events once per event kind),
/// personal text tagged with `tag`, each under the program that carries
/// its kind today (`privtel_filter::allowed_kinds`).
pub fn records(tag: &str) -> Vec<Record> {
    let t = base_time();
    let device = DeviceId::new("dev-0001").expect("valid id");
    let user = UserId::new("u-1042").expect("valid id");
    let text = |what: &str| Personal::Clear(format!("{what}-{tag}"));
    let mut out = vec![
        Record {
            program: Program::AnonymousUsage,
            body: RecordBody::Device(Device {
                id: device.clone(),
                name: text("ALICE-LAPTOP"),
                os: os(),
                device_type: DeviceType::Laptop,
                cpu: "AMD EPYC 9R14".into(),
                gpu: None,
                ip: Personal::Clear("192.0.2.17".parse().expect("valid ip")),
                last_seen: t,
            }),
        },
        Record {
            program: Program::PersonalisedUsage,
            body: RecordBody::User(User {
                id: user.clone(),
                username: text("alice"),
                upn: Personal::Clear(format!("alice-{tag}@corp.example")),
                first_name: text("Alice"),
                last_name: text("Martin"),
                job_title: text("Engineer"),
                email: Personal::Clear(format!("alice.martin-{tag}@corp.example")),
                phone: text("+33 1 23 45 67 89"),
            }),
        },
        Record {
            program: Program::PersonalisedUsage,
            body: RecordBody::Binary(Binary {
                sha256: digest(EMPTY_SHA256),
                blake3: Some(digest(EMPTY_BLAKE3)),
                file_name: Personal::Clear("tool".into()),
                path: Personal::Clear(format!("/home/alice-{tag}/bin/tool")),
                version: Some("1.2.3".into()),
                publisher: None,
                size: 0,
                format: Some(ExecutableFormat::Elf { arch: Arch::X86_64 }),
            }),
        },
        Record {
            program: Program::Benchmarking,
            body: RecordBody::Application(Application {
                name: "Firefox".into(),
                version: "128.0".into(),
                publisher: Some("Mozilla".into()),
                category: Some(Category::new("browser").expect("valid label")),
            }),
        },
        Record {
            program: Program::Benchmarking,
            body: RecordBody::Package(Package {
                name: "openssl".into(),
                version: "3.0.15".into(),
                manager: PackageManager::Apt,
                installed_at: Some(t),
            }),
        },
        Record {
            program: Program::Enrichment,
            body: RecordBody::BinaryVerdict(BinaryVerdict {
                sha256: digest(EMPTY_SHA256),
                threat: ThreatLevel::Unknown,
                category: None,
            }),
        },
        Record {
            program: Program::Enrichment,
            body: RecordBody::DomainVerdict(DomainVerdict {
                domain: Domain::new("example.com").expect("canonical"),
                reputation: Reputation::Trustworthy,
                category: Some(Category::new("reference").expect("valid label")),
                hosting_country: Some("US".parse::<CountryCode>().expect("assigned")),
            }),
        },
    ];
    for (i, body) in event_bodies(tag).into_iter().enumerate() {
        let program = match &body {
            EventBody::Execution(_) | EventBody::WebRequest(_) => Program::PersonalisedUsage,
            EventBody::LicenceSession(_) => Program::LicenceAuthentication,
            EventBody::VersionCheck(_) => Program::VersionCheck,
            EventBody::CrashReport(_) | EventBody::FeatureUsage(_) => Program::AnonymousUsage,
            EventBody::ExperienceScore(_) | EventBody::Login(_) => Program::Benchmarking,
            _ => Program::SupportTelemetry,
        };
        out.push(Record {
            program,
            body: RecordBody::Event(Event {
                id: EventId::from_u128(i as u128 + 1),
                device: device.clone(),
                user: Some(user.clone()),
                recorded_at: t,
                body,
            }),
        });
    }
    out
}

/// A device's benchmarking summary of the week from the fixtures' day
/// (2026-11-27): one crash, one slow sample of four, two ratings of 80,
/// three logins of 40 s in all, twelve executions; score 7.8.
pub fn device_summary() -> Record {
    let day = Timestamp::from_unix_seconds(1_795_737_600).expect("in range");
    let mut s = DeviceSummary::new(day, 7);
    s.crashes = 1;
    (s.performance_samples, s.slow_samples) = (4, 1);
    (s.ratings, s.rating_sum) = (2, 160);
    (s.logins, s.login_time) = (3, Duration::seconds(40));
    s.executions = 12;
    Record {
        program: Program::Benchmarking,
        body: RecordBody::DeviceSummary(s.scored().expect("possible counts")),
    }
}

/// A sample device's files: (name, bytes): an x86-64 ELF tool, a shell
/// script, a PE installer, an AArch64 ELF "dropper", and a text file. Their
/// SHA-256 digests are in `examples/data/reputation.csv`.
pub fn sample_executables() -> Vec<(&'static str, Vec<u8>)> {
    let elf = |machine: u8, text: &str| {
        let mut b = b"\x7fELF\x02\x01\x01".to_vec();
        b.extend([0u8; 9]);
        b.extend([2, 0, machine, 0]);
        b.extend(text.repeat(4).bytes());
        b
    };
    let mut pe = b"MZ".to_vec();
    pe.extend([0u8; 58]);
    pe.extend(64u32.to_le_bytes());
    pe.extend(b"PE\0\0");
    pe.extend(0x8664u16.to_le_bytes());
    pe.extend("privtel demo setup\n".repeat(3).bytes());
    vec![
        ("tool", elf(0x3e, "privtel demo tool\n")),
        ("helper.sh", b"#!/bin/sh\necho privtel demo helper\n".to_vec()),
        ("setup.exe", pe),
        ("dropper", elf(0xb7, "privtel demo dropper\n")),
        ("README.txt", b"not a program\n".to_vec()),
    ]
}

/// The fixtures ([`records`]) with every user id replaced by `user` and
/// every event id offset by `id_base` (so batches are not replays of each
/// other).
///
/// # Panics
///
/// If `user` is not a valid user id.
pub fn records_of(user: &str, tag: &str, id_base: u128) -> Vec<Record> {
    let user = UserId::new(user).expect("a valid user id");
    let mut out = records(tag);
    for r in &mut out {
        match &mut r.body {
            RecordBody::Event(e) => {
                e.user = Some(user.clone());
                e.id = EventId::from_u128(e.id.as_u128() + id_base);
            }
            RecordBody::User(u) => u.id = user.clone(),
            _ => {}
        }
    }
    out
}

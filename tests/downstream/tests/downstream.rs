//! The library as a downstream program meets it: one dependency, `privtel`
//! with its default features, and nothing else.
//!
//! Each test does one job a new user does first (hash a file, normalise a
//! URL, filter a record under a policy, frame a message, spool a record),
//! naming every type through a `privtel::…` path: the member crates'
//! re-exports, never `privtel_model`, another `privtel_*` crate or `time`.
//! This package depends on `privtel` alone (with its default features), so
//! naming any of those would not compile; the last test also reads this
//! file and fails if it names one.

use std::io::Write as _;

use privtel::filter::{FilterBuilder, Filtered, Policy, PseudonymKey, RedactionReport};
use privtel::hash::{Algorithms, FileOptions, HashAlg, HashCache, Hasher, hash_file};
use privtel::model::{
    CustomerId, DeviceId, Duration, Event, EventBody, EventId, KeyId, Personal, Program, Record, RecordBody,
    Timestamp, UserId, WebRequest,
};

/// A web request as an agent records it: everything in clear, a page load
/// as a `time` duration (re-exported by the model), an id minted at random.
fn web_request(now: Timestamp) -> Result<Record, Box<dyn std::error::Error>> {
    Ok(Record {
        program: Program::PersonalisedUsage,
        body: RecordBody::Event(Event {
            id: EventId::random(),
            device: DeviceId::new("dev-0001")?,
            user: Some(UserId::new("u-1042")?),
            recorded_at: now,
            body: EventBody::WebRequest(WebRequest {
                url: Personal::Clear("https://alice:secret@WWW.Example.CO.UK/inbox?id=42".into()),
                host: Personal::Clear("WWW.Example.CO.UK".into()),
                destination_ip: Personal::Clear("192.0.2.17".parse()?),
                destination_port: 443,
                page_load: Personal::Clear(Duration::milliseconds(1_250)),
                visit_count: 1,
            }),
        }),
    })
}

/// The record under a policy that has the person's consent and keeps the
/// host generalised (its registrable domain) and the URL dropped.
fn filtered(now: Timestamp) -> Result<Filtered, Box<dyn std::error::Error>> {
    let policy = Policy::from_toml(
        r#"
        [programs]
        personalised_usage = true
        [fields]
        "web_request.url" = "withhold"
        "web_request.host" = "generalise"
        "#,
    )?;
    let filter = FilterBuilder::new()
        .policy(policy)
        .customer(CustomerId::new("acme")?)
        .key(PseudonymKey::new(KeyId::new(1), [7; 32]))
        .build();
    let mut report = RedactionReport::default();
    let out = filter.apply(web_request(now)?, &mut report).ok_or("personalised usage is on")?;
    assert_eq!(report.records_out(Program::PersonalisedUsage), 1);
    Ok(out)
}

#[test]
fn hash_a_file() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hello.txt");
    std::fs::write(&path, b"hello world")?;

    let file = hash_file(&path, &FileOptions::default())?;
    let sha256 = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    assert_eq!(file.digests.get(HashAlg::Sha256).map(|d| d.to_string()).as_deref(), Some(sha256));

    // The same digest by writing to a hasher.
    let mut hasher = Hasher::new(Algorithms::Sha256);
    let who = "world";
    write!(hasher, "hello {who}")?;
    assert_eq!(hasher.finalize().sha256, file.digests.sha256);

    // A cache that is not there yet is empty, not an error.
    assert!(HashCache::load_or_default(dir.path().join("cache.bin"))?.is_empty());
    Ok(())
}

#[test]
fn normalise_a_url() -> Result<(), Box<dyn std::error::Error>> {
    let normalizer = privtel::domain::Normalizer::shared();
    let out = normalizer.normalize("HTTPS://User@WWW.Example.CO.UK.:8443/a?q=1")?;
    assert_eq!(out.host(), "www.example.co.uk");
    assert_eq!(out.registrable(), Some("example.co.uk"));
    assert!(normalizer.normalize("file:///etc/passwd").is_err());
    Ok(())
}

#[test]
fn filter_a_record_under_a_policy() -> Result<(), Box<dyn std::error::Error>> {
    let now = Timestamp::now();
    let out = filtered(now)?;
    let RecordBody::Event(event) = out.into_record().body else { panic!("an event stays an event") };
    let EventBody::WebRequest(web) = event.body else { panic!("a web request stays one") };
    assert!(web.url.is_withheld(), "the url is dropped");
    match web.host {
        Personal::Generalised(g) => assert_eq!(format!("{g:?}"), "Domain(<redacted>)"),
        other => panic!("the host is generalised to its domain, not {other:?}"),
    }
    Ok(())
}

#[test]
fn frame_a_message() -> Result<(), Box<dyn std::error::Error>> {
    use privtel::wire::{BatchId, DEFAULT_MAX_PAYLOAD, Message, SUPPORTED_VERSIONS};

    let now = Timestamp::now();
    let record = filtered(now)?.into_record();
    let message = Message::Batch(privtel::wire::Batch {
        program: Program::PersonalisedUsage,
        batch_id: BatchId::random(),
        first_seq: 1,
        records: vec![record],
        skipped: 0,
        policy_hash: Policy::default().digest(),
    });
    let version = *SUPPORTED_VERSIONS.last().ok_or("a supported version")?;

    let mut bytes = Vec::new();
    message.encode_frame_into(version, DEFAULT_MAX_PAYLOAD, &mut bytes)?;
    let (back, used) = Message::decode_frame_from(&bytes, DEFAULT_MAX_PAYLOAD)?;
    assert_eq!(used, bytes.len());
    assert_eq!(back, message);

    // The same through a `Frame` value.
    let frame = message.to_frame(version, false)?;
    assert_eq!(Message::from_frame(&frame, DEFAULT_MAX_PAYLOAD)?, message);
    Ok(())
}

#[test]
fn spool_a_record() -> Result<(), Box<dyn std::error::Error>> {
    use privtel::store::{RetentionPolicy, Spool, SpoolOptions};

    let dir = tempfile::tempdir()?;
    let now = Timestamp::now();
    let record = filtered(now)?;
    let mut options = SpoolOptions::default();
    options.retention = RetentionPolicy::default();
    let mut spool = Spool::open(dir.path().join("spool.db"), options)?;
    let seq = spool.append(record.record(), now)?;
    assert_eq!(spool.len(Some(Program::PersonalisedUsage))?, 1);
    let batch = spool.next_batch(Program::PersonalisedUsage, 10)?;
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].seq, seq);
    assert_eq!(&batch[0].record, record.record());
    Ok(())
}

/// The point of this file: nothing above names a crate a downstream program
/// would have to add by hand. (The needles are built with `concat!` so that
/// this test does not find itself.)
#[test]
fn names_no_crate_but_the_facade() {
    let source = include_str!("downstream.rs");
    let needles =
        [concat!("privtel", "_"), concat!("privtel", "-"), concat!("time", "::"), concat!("use ", "time")];
    for needle in needles {
        let code_lines = source.lines().filter(|l| !l.trim_start().starts_with("//"));
        for line in code_lines {
            assert!(!line.contains(needle), "names {needle:?} directly: {line}");
        }
    }
}

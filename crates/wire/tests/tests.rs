//! Integration tests of privtel-wire, built as one binary.

mod cost;
mod deadline;
mod golden;
mod hostile;
mod roundtrip;
#[cfg(feature = "certs")]
mod tls;
#[cfg(feature = "certs")]
mod tls_deadline;
mod version;

use privtel_model::{BatchId, Digest, Domain, Program};
use privtel_wire::{
    Ack, Action, Batch, BinaryEntry, Bucket, Command, DomainEntry, EnrichAnswer, EnrichQuery, ErrorCode,
    ErrorMessage, Goodbye, HashPrefix, Hello, Message, Rejection, Welcome,
};

/// One message of every kind, built from the model fixtures (deterministic:
/// the golden files are made from these).
pub(crate) fn samples() -> Vec<(&'static str, Message)> {
    let records = privtel_testkit::fixtures::golden_records("golden");
    let digest: Digest = privtel_testkit::fixtures::EMPTY_SHA256.parse().unwrap();
    let domain = Domain::new("example.com").unwrap();
    vec![
        (
            "hello",
            Message::Hello(
                Hello::new(
                    "0.1.0",
                    "acme".parse().unwrap(),
                    "dev-0001".parse().unwrap(),
                    Program::ALL.iter().map(|p| (*p, p.default_enabled())).collect(),
                    3,
                )
                .with_stream(0x5eed_0000_0000_0001),
            ),
        ),
        ("welcome", Message::Welcome(Welcome::new(2, 41))),
        (
            "batch",
            Message::Batch(Batch {
                program: Program::Enrichment,
                batch_id: BatchId::from_u128(7),
                first_seq: 42,
                records,
                skipped: 3,
                policy_hash: [0xab; 32],
            }),
        ),
        (
            "ack",
            Message::Ack(Ack {
                batch_id: BatchId::from_u128(7),
                accepted_up_to: 59,
                rejections: vec![Rejection {
                    seq: 50,
                    code: privtel_wire::RejectCode::KIND,
                    reason: "kind not allowed".into(),
                    retryable: false,
                }],
                retry_after_ms: Some(1500),
            }),
        ),
        (
            "enrich-query-direct",
            Message::EnrichQuery(EnrichQuery::Direct {
                query_id: 1,
                binaries: vec![digest],
                domains: vec![domain.clone()],
            }),
        ),
        (
            "enrich-query-private",
            Message::EnrichQuery(privtel_wire::private_query(2, &[digest], std::slice::from_ref(&domain), 2)),
        ),
        (
            "enrich-answer-private",
            Message::EnrichAnswer(EnrichAnswer::Private {
                query_id: 2,
                binaries: vec![Bucket {
                    prefix: HashPrefix(vec![0xe3, 0xb0]),
                    entries: vec![BinaryEntry {
                        sha256: digest,
                        threat: privtel_model::ThreatLevel::None,
                        category: None,
                    }],
                }],
                domains: vec![Bucket {
                    prefix: HashPrefix(vec![0xa3]),
                    entries: vec![DomainEntry {
                        name_sha256: privtel_wire::domain_digest(&domain),
                        reputation: privtel_model::Reputation::Trustworthy,
                        category: Some(privtel_model::Category::new("reference").unwrap()),
                        hosting_country: Some("US".parse().unwrap()),
                    }],
                }],
            }),
        ),
        (
            "enrich-answer-direct",
            Message::EnrichAnswer(EnrichAnswer::Direct {
                query_id: 1,
                binaries: vec![privtel_model::BinaryVerdict::unknown(digest)],
                domains: vec![privtel_model::DomainVerdict::unknown(domain)],
            }),
        ),
        (
            "command",
            Message::Command(Command {
                command_id: 9,
                action: Action::ErasePerson("u-1042".parse().unwrap()),
            }),
        ),
        (
            "error",
            Message::Error(ErrorMessage {
                code: ErrorCode::Unavailable,
                message: "overloaded".into(),
                retryable: true,
            }),
        ),
        ("goodbye", Message::Goodbye(Goodbye { reason: "done".into() })),
        (
            "enroll-request",
            Message::EnrollRequest(privtel_wire::EnrollRequest {
                token: Some("pt-enroll-golden".into()),
                customer: "acme".parse().unwrap(),
                device: "dev-0001".parse().unwrap(),
                csr_der: vec![0x30, 0x82, 0x01, 0x00],
            }),
        ),
        (
            "enrolled",
            Message::Enrolled(privtel_wire::Enrolled {
                cert_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
                not_after_unix: 1_800_000_000,
            }),
        ),
        (
            "enhance-hello",
            Message::EnhanceHello(privtel_wire::EnhanceHello {
                versions: vec![2],
                agent_version: "0.1.0".into(),
            }),
        ),
        (
            "sightings",
            Message::Sightings(privtel_wire::Sightings {
                query_id: 9,
                binaries: vec![privtel_model::BinarySighting {
                    sha256: digest,
                    blake3: Some(Digest::from_bytes([0xb3; 32])),
                    size: 4096,
                    format: Some(privtel_model::ExecutableFormat::Elf { arch: privtel_model::Arch::X86_64 }),
                    first_seen_day: 20_419,
                }],
                domains: vec![privtel_model::DomainSighting {
                    domain: Domain::new("example.com").unwrap(),
                    first_seen_day: 20_419,
                }],
            }),
        ),
        (
            "version-query",
            Message::VersionQuery(privtel_wire::VersionQuery {
                query_id: 11,
                product: "Acme Editor".into(),
                current_version: "2.4.1".into(),
                channel: "stable".into(),
                platform: "linux-x86_64".into(),
            }),
        ),
        (
            "version-answer-update",
            Message::VersionAnswer(privtel_wire::VersionAnswer {
                query_id: 11,
                status: privtel_wire::VersionStatus::UPDATE,
                latest: Some("2.5.0".into()),
                offer: Some(privtel_wire::UpdateOffer {
                    latest: "2.5.0".into(),
                    installer: "https://downloads.example.com/acme-editor-2.5.0.tar.gz".into(),
                    sha256: digest,
                    size: 1_048_576,
                }),
            }),
        ),
        (
            "version-answer-up-to-date",
            Message::VersionAnswer(privtel_wire::VersionAnswer {
                query_id: 12,
                status: privtel_wire::VersionStatus::UP_TO_DATE,
                latest: Some("2.5.0".into()),
                offer: None,
            }),
        ),
    ]
}

//! A client and a server over TLS on 127.0.0.1: Hello, a Batch and its Ack,
//! and a private enrichment round trip whose captured bytes hold no full
//! hash and no domain name.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use privtel_model::{
    BatchId, BinaryVerdict, Digest, Domain, DomainVerdict, Program, Reputation, ThreatLevel,
};
use privtel_wire::{Ack, Batch, Connection, Hello, Message, VerdictIndex, Welcome, tls};

/// Records every byte written through it (the plaintext the protocol
/// produces, before TLS encrypts it).
struct Recorder<S> {
    inner: S,
    written: Arc<Mutex<Vec<u8>>>,
}

impl<S: Read> Read for Recorder<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Recorder<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn hello_batch_ack_and_private_enrichment_over_tls() {
    let identity = tls::generate_identity(&["127.0.0.1", "localhost"]).unwrap();
    let server_config = tls::server_config(&identity).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    let known = Digest::from_bytes([0xab; 32]);
    let domain = Domain::new("secret-intranet.example").unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut conn = Connection::new(tls::accept(tcp, server_config).unwrap());
        let hello = conn.server_handshake(|_, v| Welcome::new(v, 0)).unwrap();
        let Message::Batch(batch) = conn.recv().unwrap() else { panic!("expected a batch") };
        let last = batch.first_seq + batch.records.len() as u64 - 1;
        conn.send(&Message::Ack(Ack {
            batch_id: batch.batch_id,
            accepted_up_to: last,
            rejections: vec![],
            retry_after_ms: None,
        }))
        .unwrap();
        let Message::EnrichQuery(query) = conn.recv().unwrap() else { panic!("expected a query") };
        let mut index = VerdictIndex::new(8, [7; 32]);
        index.add_binary(BinaryVerdict {
            sha256: Digest::from_bytes([0xab; 32]),
            threat: ThreatLevel::High,
            category: None,
        });
        index.add_domain(DomainVerdict {
            domain: Domain::new("secret-intranet.example").unwrap(),
            reputation: Reputation::LowRisk,
            category: None,
            hosting_country: Some("DE".parse().unwrap()),
        });
        conn.send(&Message::EnrichAnswer(index.answer(&query).unwrap())).unwrap();
        (hello, batch.records.len(), query)
    });

    let client_config = tls::client_config(&identity.ca_pem).unwrap();
    let written = Arc::new(Mutex::new(Vec::new()));
    let stream = tls::connect(addr, "127.0.0.1", client_config).unwrap();
    let mut conn = Connection::new(Recorder { inner: stream, written: written.clone() });
    let hello = Hello::new(
        "0.1.0",
        "acme".parse().unwrap(),
        "dev-1".parse().unwrap(),
        vec![(Program::Enrichment, true)],
        1,
    );
    let welcome = conn.client_handshake(&hello).unwrap();
    assert_eq!(welcome.version, 2);

    let records = privtel_testkit::fixtures::records("tls");
    conn.send(&Message::Batch(Batch {
        program: Program::Enrichment,
        batch_id: BatchId::from_u128(1),
        first_seq: 1,
        records: records.clone(),
        skipped: 0,
        policy_hash: [0; 32],
    }))
    .unwrap();
    let Message::Ack(ack) = conn.recv().unwrap() else { panic!("expected an ack") };
    assert_eq!(ack.accepted_up_to, records.len() as u64);

    // Private lookup: the known binary, an unknown one, the known domain.
    let unknown = Digest::from_bytes([0x11; 32]);
    written.lock().unwrap().clear();
    conn.send(&Message::EnrichQuery(privtel_wire::private_query(
        5,
        &[known, unknown],
        std::slice::from_ref(&domain),
        2,
    )))
    .unwrap();
    let Message::EnrichAnswer(answer) = conn.recv().unwrap() else { panic!("expected an answer") };
    let (b, d) = privtel_wire::verdicts_for(&answer, &[known, unknown], std::slice::from_ref(&domain));
    assert_eq!((b[0].threat, b[1].threat), (ThreatLevel::High, ThreatLevel::Unknown));
    assert_eq!(d[0].reputation, Reputation::LowRisk);
    assert_eq!(d[0].hosting_country.map(|c| c.to_string()), Some("DE".to_owned()));

    // The captured query bytes: prefixes only.
    let sent = written.lock().unwrap().clone();
    let has = |needle: &[u8]| sent.windows(needle.len()).any(|w| w == needle);
    assert!(!has(known.as_bytes()) && !has(unknown.as_bytes()), "a full binary hash went on the wire");
    assert!(!has(privtel_wire::domain_digest(&domain).as_bytes()), "a full domain hash went on the wire");
    assert!(!has(domain.as_str().as_bytes()), "the domain name went on the wire");
    assert!(has(&[0xab, 0xab]) && has(&[0x11, 0x11]), "the prefixes did");

    let (got_hello, n, query) = server.join().unwrap();
    assert_eq!(got_hello, hello);
    assert_eq!(n, records.len());
    assert!(matches!(query, privtel_wire::EnrichQuery::Private { .. }));
    // Every bucket answer is padded to the same size.
    let privtel_wire::EnrichAnswer::Private { binaries, .. } = answer else { panic!() };
    assert!(binaries.iter().all(|b| b.entries.len() == 8));
}

#[test]
fn a_client_that_does_not_trust_the_ca_fails() {
    let identity = tls::generate_identity(&["127.0.0.1"]).unwrap();
    let other = tls::generate_identity(&["127.0.0.1"]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls::server_config(&identity).unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut conn = Connection::new(tls::accept(tcp, config).unwrap());
        conn.recv().is_err()
    });
    let stream = tls::connect(addr, "127.0.0.1", tls::client_config(&other.ca_pem).unwrap()).unwrap();
    let mut conn = Connection::new(stream);
    let err = conn.send(&Message::Goodbye(privtel_wire::Goodbye { reason: "x".into() })).unwrap_err();
    assert!(err.to_string().contains("certificate") || err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(server.join().unwrap());
    assert!(tls::client_config("not a pem").is_err());
}

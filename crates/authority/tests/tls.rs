//! Real TLS on 127.0.0.1: a device enrolls without a certificate, then
//! connects with one; the service takes the identity from it alone.

use std::sync::Arc;

use privtel_authority::{Credentials, DeviceKey, ReportKind};
use privtel_model::DeviceId;
use privtel_wire::Message;
use time::Duration;

use crate::support::{Fixture, Server, der, forge, goodbye_reason, hello_with, refusal, talk};

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

/// Enrolls over a certificate-less connection.
fn enroll_over_tls(server: &Server, token: &str, fx: &Fixture, device: &str, key: &DeviceKey) -> Message {
    let request = privtel_authority::request(Some(token), &fx.acme, &dev(device), key).unwrap();
    let config = privtel_authority::enrollment_client_config(&server.server_ca_pem).unwrap();
    talk(server, config, &Message::EnrollRequest(request)).unwrap()
}

#[test]
fn enrollment_end_to_end_then_the_certificate_alone_names_the_device() {
    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let token = fx.token(&fx.acme, 1);
    let key = DeviceKey::generate().unwrap();
    let Message::Enrolled(enrolled) = enroll_over_tls(&server, &token, &fx, "pc-1", &key) else {
        panic!("expected enrolled")
    };
    let credentials = privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), enrolled).unwrap();
    let dir = tempfile::tempdir().unwrap();
    credentials.save(dir.path()).unwrap();
    let credentials = Credentials::load(dir.path()).unwrap();

    // The hello claims beta; the service answers as acme/pc-1.
    assert_eq!(goodbye_reason(hello_with(&server, &credentials, &fx.beta)), "hello acme/pc-1");

    // The token is spent; the refusal names what was expected, not the token.
    let other = DeviceKey::generate().unwrap();
    let Message::Error(e) = enroll_over_tls(&server, &token, &fx, "pc-2", &other) else {
        panic!("expected error")
    };
    assert_eq!(e.code, privtel_wire::ErrorCode::Forbidden);
    assert!(e.message.contains("used up") && !e.message.contains(&token[6..]), "{}", e.message);

    // Without a certificate, a connection may only enroll.
    let config = privtel_authority::enrollment_client_config(&server.server_ca_pem).unwrap();
    let said = refusal(talk(&server, config, &crate::support::hello(&fx.acme, "pc-1")));
    assert!(said.contains("expected an enroll request"), "{said}");
}

#[test]
fn revoked_device_is_refused_on_its_next_connection_without_restart() {
    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let (_, credentials) = fx.enroll(&fx.acme, "pc-1");
    assert_eq!(goodbye_reason(hello_with(&server, &credentials, &fx.acme)), "hello acme/pc-1");
    // The admin command line: its own handle on the file.
    fx.second_process().revoke_device(&fx.acme, &dev("pc-1"), fx.now).unwrap();
    let said = refusal(hello_with(&server, &credentials, &fx.acme));
    assert!(said.contains("revoked"), "{said}");
    let reports = fx.authority.reports(Some(&fx.acme), fx.now).unwrap();
    assert_eq!(reports[0].kind, ReportKind::RevokedConnection);
}

#[test]
fn renewal_over_the_authenticated_connection_then_the_old_certificate_is_refused() {
    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let (_, old) = fx.enroll(&fx.acme, "pc-1");
    let new_key = DeviceKey::generate().unwrap();
    let renewal = privtel_authority::request(None, &fx.acme, &dev("pc-1"), &new_key).unwrap();
    let config = privtel_authority::client_config(&server.server_ca_pem, &old).unwrap();
    let Ok(Message::Enrolled(enrolled)) = talk(&server, config, &Message::EnrollRequest(renewal)) else {
        panic!("expected enrolled")
    };
    let new = privtel_authority::accept(&new_key, &fx.acme, &dev("pc-1"), enrolled).unwrap();
    assert_eq!(goodbye_reason(hello_with(&server, &new, &fx.acme)), "hello acme/pc-1");
    let said = refusal(hello_with(&server, &old, &fx.acme));
    assert!(said.contains("clone suspected"), "{said}");
}

#[test]
fn a_clone_enrolling_with_another_key_is_refused_and_reported() {
    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let (_, credentials) = fx.enroll(&fx.acme, "pc-1");
    let clone = DeviceKey::generate().unwrap();
    let Message::Error(e) = enroll_over_tls(&server, &fx.token(&fx.acme, 1), &fx, "pc-1", &clone) else {
        panic!("expected error")
    };
    assert!(e.message.contains("already enrolled"), "{}", e.message);
    let reports = fx.authority.reports(None, fx.now - Duration::minutes(1)).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].kind, ReportKind::CloneAtEnrollment);
    // The enrolled device still works.
    assert_eq!(goodbye_reason(hello_with(&server, &credentials, &fx.acme)), "hello acme/pc-1");
}

#[test]
fn a_certificate_from_customer_a_naming_customer_b_fails_the_handshake() {
    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let key = DeviceKey::generate().unwrap();
    let forged = Credentials {
        cert_pem: forge(&fx, &fx.acme, &fx.beta, "pc-1", &key),
        key_pem: key.to_pem(),
        ca_pem: String::new(),
    };
    let answer = hello_with(&server, &forged, &fx.beta);
    assert!(answer.is_err(), "the handshake must fail: {answer:?}");
    // The same for a customer the service does not have.
    let nobody = privtel_model::CustomerId::new("nobody").unwrap();
    let forged = Credentials { cert_pem: forge(&fx, &fx.acme, &nobody, "pc-1", &key), ..forged };
    assert!(hello_with(&server, &forged, &nobody).is_err());
    // A genuine acme certificate still works on the same server.
    let (_, genuine) = fx.enroll(&fx.acme, "pc-2");
    assert_eq!(goodbye_reason(hello_with(&server, &genuine, &fx.beta)), "hello acme/pc-2");
}

/// A certificate signed by a look-alike of a customer's authority (the
/// same name, another key): the handshake fails the same way whether the
/// customer it names exists or not, so a stranger cannot list customers
/// by trying names.
#[test]
fn a_look_alike_authority_fails_the_same_for_a_customer_that_exists_and_one_that_does_not() {
    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let key = DeviceKey::generate().unwrap();
    let look_alike = |customer: &privtel_model::CustomerId| {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name.push(rcgen::DnType::OrganizationName, customer.as_str());
        ca.distinguished_name.push(rcgen::DnType::CommonName, "privtel enrollment authority");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        ca.not_before = fx.now - Duration::hours(1);
        ca.not_after = fx.now + Duration::days(1);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key).unwrap();
        let device_key = rcgen::KeyPair::from_pem(&key.to_pem()).unwrap();
        let mut params = rcgen::CertificateParams::default();
        let uri = privtel_authority::identity_uri(customer, &dev("pc-1"));
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = fx.now - Duration::hours(1);
        params.not_after = fx.now + Duration::days(1);
        let cert_pem = params.signed_by(&device_key, &issuer).unwrap().pem();
        let forged = Credentials { cert_pem, key_pem: key.to_pem(), ca_pem: String::new() };
        hello_with(&server, &forged, customer).unwrap_err().to_string()
    };
    let nobody = privtel_model::CustomerId::new("nobody").unwrap();
    let (known, unknown) = (look_alike(&fx.acme), look_alike(&nobody));
    assert_eq!(known, unknown, "the refusal tells whether the customer exists");
    assert!(unknown.contains("UnknownCA"), "{unknown}");
}

#[test]
fn every_connection_is_a_full_handshake_the_service_sends_no_session_tickets() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let (_, credentials) = fx.enroll(&fx.acme, "pc-1");
    // The agent's configuration, kept between connections as an agent
    // keeps it: its client would resume from any ticket it had stored.
    let tls13 = privtel_authority::client_config(&server.server_ca_pem, &credentials).unwrap();
    // The same device over TLS 1.2, where a server with a session cache
    // resumes by session id, tickets or not.
    let tls12 = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(server.server_ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let cert = der(&credentials.cert_pem);
        let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes()).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![cert], key)
                .unwrap();
        Arc::new(config)
    };
    for (version, config) in [("1.3", tls13), ("1.2", tls12)] {
        for round in 0..3 {
            let stream = privtel_wire::tls::connect(server.addr, "127.0.0.1", Arc::clone(&config)).unwrap();
            let mut conn = privtel_wire::Connection::new(stream);
            conn.send(&crate::support::hello(&fx.acme, "pc-1")).unwrap();
            assert_eq!(goodbye_reason(conn.recv()), "hello acme/pc-1");
            let stream = conn.into_inner();
            assert_eq!(
                stream.conn.handshake_kind(),
                Some(rustls::HandshakeKind::Full),
                "TLS {version}, connection {round}: the certificate is presented and verified every time"
            );
        }
    }
}

fn at(t: time::OffsetDateTime) -> rustls::pki_types::UnixTime {
    rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap(),
    ))
}

#[test]
fn a_remembered_chain_stands_only_for_the_same_bytes_the_same_ca_and_within_validity() {
    use privtel_authority::ChainVerifications;

    let fx = Fixture::new();
    let (key, credentials) = fx.enroll(&fx.acme, "pc-1");
    let cert = der(&credentials.cert_pem);
    let verifier = fx.authority.client_verifier();
    let counts = |full, remembered| ChainVerifications { full, remembered };

    verifier.verify_client_cert(&cert, &[], at(fx.now)).unwrap();
    assert_eq!(fx.authority.chain_verifications(), counts(1, 0));
    verifier.verify_client_cert(&cert, &[], at(fx.now + Duration::minutes(1))).unwrap();
    assert_eq!(fx.authority.chain_verifications(), counts(1, 1), "the same bytes, the same CA: remembered");

    // Validity is checked on every handshake, remembered or not (refused
    // as any chain the customer's authority does not vouch for: the
    // refusal does not say the authority looked at it).
    let expired = verifier.verify_client_cert(&cert, &[], at(fx.now + Duration::days(3650)));
    assert!(
        matches!(expired, Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))),
        "{expired:?}"
    );
    let early = verifier.verify_client_cert(&cert, &[], at(fx.now - Duration::days(1)));
    assert!(
        matches!(early, Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))),
        "{early:?}"
    );

    // At the last second of the validity (as the register recorded it),
    // and the second after.
    let not_after = fx.authority.device(&fx.acme, &dev("pc-1")).unwrap().unwrap().not_after;
    verifier.verify_client_cert(&cert, &[], at(not_after)).unwrap();
    assert_eq!(fx.authority.chain_verifications(), counts(1, 2));
    let after = verifier.verify_client_cert(&cert, &[], at(not_after + Duration::seconds(1)));
    assert!(
        matches!(after, Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))),
        "{after:?}"
    );

    // One byte of the signature changed: other bytes, verified in full, refused.
    let mut tampered = cert.to_vec();
    *tampered.last_mut().unwrap() ^= 1;
    let tampered = rustls::pki_types::CertificateDer::from(tampered);
    assert!(verifier.verify_client_cert(&tampered, &[], at(fx.now)).is_err());
    // The same customer, device and key signed by another customer's CA.
    let forged = der(&forge(&fx, &fx.beta, &fx.acme, "pc-1", &key));
    assert!(verifier.verify_client_cert(&forged, &[], at(fx.now)).is_err());
    assert_eq!(fx.authority.chain_verifications(), counts(1, 2), "nothing of that stood in");
    // With intermediates, the chain is verified whole every time (here a
    // superfluous copy of the certificate, which the path ignores).
    verifier.verify_client_cert(&cert, std::slice::from_ref(&cert), at(fx.now)).unwrap();
    assert_eq!(fx.authority.chain_verifications(), counts(2, 2));

    // Another process commits something else (a token): the register's CA
    // cache is read again, the same CA certificate still stands.
    let admin = fx.second_process();
    admin.issue_token(&fx.acme, Duration::hours(1), 1, fx.now).unwrap();
    verifier.verify_client_cert(&cert, &[], at(fx.now)).unwrap();
    assert_eq!(fx.authority.chain_verifications(), counts(2, 3));
    // Another process removes acme and adds it again with a new CA: the
    // remembered verification was made by the old CA and stands for nothing.
    admin.remove_customer(&fx.acme).unwrap();
    admin.add_customer(&fx.acme, fx.now).unwrap();
    let again = verifier.verify_client_cert(&cert, &[], at(fx.now));
    assert!(again.is_err(), "a certificate of the removed CA: {again:?}");
    assert_eq!(fx.authority.chain_verifications(), counts(2, 3));
    // This process removes beta: its devices are refused from that instant.
    let (_, beta) = fx.enroll(&fx.beta, "pc-9");
    let beta = der(&beta.cert_pem);
    verifier.verify_client_cert(&beta, &[], at(fx.now)).unwrap();
    fx.authority.remove_customer(&fx.beta).unwrap();
    assert!(verifier.verify_client_cert(&beta, &[], at(fx.now)).is_err());
    assert_eq!(fx.authority.chain_verifications(), counts(3, 3));
    // This process removes beta and adds it again: a new CA, the old
    // certificate refused.
    fx.authority.add_customer(&fx.beta, fx.now).unwrap();
    assert!(verifier.verify_client_cert(&beta, &[], at(fx.now)).is_err());
    assert_eq!(fx.authority.chain_verifications(), counts(3, 3));
}

/// A client that presents `cert` but signs the handshake with `key` (a
/// certificate is public: anyone can present a copy).
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[test]
fn over_tls_a_remembered_chain_still_needs_the_key_and_an_enrolled_unrevoked_device() {
    use privtel_authority::ChainVerifications;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;

    let fx = Fixture::new();
    let server = Server::start(&fx.authority);
    let (_, credentials) = fx.enroll(&fx.acme, "pc-1");
    for _ in 0..3 {
        assert_eq!(goodbye_reason(hello_with(&server, &credentials, &fx.acme)), "hello acme/pc-1");
    }
    assert_eq!(fx.authority.chain_verifications(), ChainVerifications { full: 1, remembered: 2 });

    // A copy of the certificate with another key: the chain is remembered,
    // the handshake signature is not the certificate's key's.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let thief = DeviceKey::generate().unwrap();
    let thief_key = PrivateKeyDer::from_pem_slice(thief.to_pem().as_bytes()).unwrap();
    let signer = provider.key_provider.load_private_key(thief_key).unwrap();
    let stolen = Arc::new(rustls::sign::CertifiedKey::new(vec![der(&credentials.cert_pem)], signer));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&server.server_ca_pem)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Presents(stolen)));
    let answer = talk(&server, Arc::new(config), &crate::support::hello(&fx.acme, "pc-1"));
    assert!(answer.is_err(), "a copied certificate without its key: {answer:?}");
    assert_eq!(
        fx.authority.chain_verifications(),
        ChainVerifications { full: 1, remembered: 3 },
        "the remembered chain stood in, and the key's proof still failed"
    );

    // Revoked by another process: refused although the chain is remembered.
    fx.second_process().revoke_device(&fx.acme, &dev("pc-1"), fx.now).unwrap();
    let answer = hello_with(&server, &credentials, &fx.acme);
    assert!(refusal(answer).contains("revoked"));
    assert_eq!(fx.authority.chain_verifications(), ChainVerifications { full: 1, remembered: 4 });
}

/// Removal takes effect at once although another thread's handshakes keep
/// reading, caching and remembering the customer's CA. (The narrower race,
/// a handshake that read the CA before the removal's commit and cached it
/// after, is closed by `customer_ca` caching under the register's lock;
/// this test does not provoke it reliably.)
#[test]
fn a_customer_removed_while_handshakes_run_is_refused_from_its_removal_on() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let fx = Fixture::new();
    let verifier = fx.authority.client_verifier();
    for round in 0..100 {
        let customer = privtel_model::CustomerId::new(format!("gone-{round}")).unwrap();
        fx.authority.add_customer(&customer, fx.now).unwrap();
        let (_, credentials) = fx.enroll(&customer, "pc-1");
        let cert = der(&credentials.cert_pem);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Handshakes of the customer's device all along, reading (and
            // caching) its CA.
            let handshakes = s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = verifier.verify_client_cert(&cert, &[], at(fx.now));
                }
            });
            std::thread::sleep(std::time::Duration::from_micros(200));
            let removed = fx.authority.remove_customer(&customer);
            // From the removal on, whatever the other thread cached.
            let after: Vec<_> =
                (0..20).map(|_| verifier.verify_client_cert(&cert, &[], at(fx.now)).is_ok()).collect();
            // Stopped before any assertion: a failure must not hang the test.
            stop.store(true, Ordering::Relaxed);
            handshakes.join().unwrap();
            removed.unwrap();
            assert!(
                after.iter().all(|ok| !ok),
                "round {round}: a removed customer's device accepted: {after:?}"
            );
        });
    }
}

/// A server presenting the service's very certificate chain, which it
/// copied, with a key of its own (it never had the service's): the one
/// connection it takes.
fn impostor(identity: &privtel_wire::tls::Identity) -> std::net::SocketAddr {
    use privtel_wire::tls::rustls;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .chain(CertificateDer::pem_slice_iter(identity.ca_pem.as_bytes()))
        .collect::<Result<_, _>>()
        .unwrap();
    let own = privtel_wire::tls::generate_identity(&["127.0.0.1"]).unwrap();
    let key = rustls::crypto::ring::sign::any_ecdsa_type(
        &PrivateKeyDer::from_pem_slice(own.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(rustls::sign::CertifiedKey::new(chain, key)))));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    std::thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else { return };
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                return;
            }
        }
    });
    addr
}

#[test]
fn a_device_that_remembered_the_services_certificate_still_refuses_an_impostor() {
    let fx = Fixture::new();
    let identity = privtel_wire::tls::generate_identity(&["127.0.0.1"]).unwrap();
    let server = Server::start_with(&fx.authority, identity.clone());
    let (_, credentials) = fx.enroll(&fx.acme, "pc-1");
    // One configuration, as an agent keeps it: the second connection stands
    // on the chain its first verified.
    let config = privtel_authority::client_config(&server.server_ca_pem, &credentials).unwrap();
    for _ in 0..2 {
        let answer = talk(&server, Arc::clone(&config), &crate::support::hello(&fx.acme, "pc-1"));
        assert_eq!(goodbye_reason(answer), "hello acme/pc-1");
    }
    // The same certificate bytes without the service's key: the handshake
    // signature does not verify, and nothing is sent.
    let addr = impostor(&identity);
    let sent = privtel_wire::tls::connect(addr, "127.0.0.1", Arc::clone(&config))
        .map_err(|e| e.to_string())
        .and_then(|s| {
            privtel_wire::Connection::new(s)
                .send(&crate::support::hello(&fx.acme, "pc-1"))
                .map_err(|e| e.to_string())
        });
    let e = sent.unwrap_err();
    assert!(e.contains("BadSignature") || e.contains("signature"), "{e}");
    // Another service for the same address, of another CA: refused.
    let other = Server::start(&fx.authority);
    let e = talk(&other, Arc::clone(&config), &crate::support::hello(&fx.acme, "pc-1")).unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    // The service itself, still.
    let answer = talk(&server, config, &crate::support::hello(&fx.acme, "pc-1"));
    assert_eq!(goodbye_reason(answer), "hello acme/pc-1");
}

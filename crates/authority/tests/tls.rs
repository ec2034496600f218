//! Real TLS on 127.0.0.1: a device enrolls without a certificate, then
//! connects with one; the service takes the identity from it alone.

use privtel_authority::{Credentials, DeviceKey, ReportKind};
use privtel_model::DeviceId;
use privtel_wire::Message;
use time::Duration;

use crate::support::{Fixture, Server, forge, goodbye_reason, hello_with, refusal, talk};

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

#[test]
fn every_connection_is_a_full_handshake_the_service_sends_no_session_tickets() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;

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
        let cert = CertificateDer::from_pem_slice(credentials.cert_pem.as_bytes()).unwrap();
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

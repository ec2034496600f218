//! The register through its API: tokens, enrollment, identify, renewal,
//! revocation, reset, reports, files.

use std::sync::{Arc, Barrier};

use privtel_authority::rustls::pki_types::CertificateDer;
use privtel_authority::{
    AuthError, Authority, Credentials, DeviceKey, EnrollError, Error, ReportKind, TOKEN_PREFIX,
    certificate_der,
};
use privtel_model::{CustomerId, DeviceId};
use time::Duration;

use crate::support::{Fixture, forge};

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn chain(credentials: &Credentials) -> Vec<CertificateDer<'static>> {
    vec![certificate_der(&credentials.cert_pem).unwrap()]
}

#[test]
fn authority_is_send_and_sync() {
    fn both<T: Send + Sync + 'static>() {}
    both::<Authority>();
}

#[test]
fn database_is_private_and_add_customer_is_idempotent() {
    let fx = Fixture::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let path = fx.dir.path().join("authority.db");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Authority::open(&path), Err(Error::TooOpen { mode: 0o644, .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let first = fx.authority.customer_ca_pem(&fx.acme).unwrap().unwrap();
    assert_eq!(fx.authority.add_customer(&fx.acme, fx.now).unwrap(), first);
    assert_eq!(fx.second_process().add_customer(&fx.acme, fx.now).unwrap(), first);
    assert_ne!(fx.authority.customer_ca_pem(&fx.beta).unwrap().unwrap(), first);
    assert_eq!(fx.authority.customer_ca_pem(&CustomerId::new("nobody").unwrap()).unwrap(), None);
}

#[test]
fn tokens_are_shown_once_and_stored_as_digests() {
    let fx = Fixture::new();
    let token = fx.token(&fx.acme, 3);
    assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64, "{token}");
    assert_ne!(fx.token(&fx.acme, 3), token);
    let bytes = std::fs::read(fx.dir.path().join("authority.db")).unwrap();
    let wal = std::fs::read(fx.dir.path().join("authority.db-wal")).unwrap_or_default();
    let hex = token.strip_prefix(TOKEN_PREFIX).unwrap().as_bytes();
    for file in [&bytes, &wal] {
        assert!(!file.windows(hex.len()).any(|w| w == hex), "the token is not stored");
    }
    let nobody = CustomerId::new("nobody").unwrap();
    assert!(matches!(
        fx.authority.issue_token(&nobody, Duration::hours(1), 1, fx.now),
        Err(Error::UnknownCustomer { .. })
    ));
    assert!(matches!(
        fx.authority.issue_token(&fx.acme, Duration::hours(1), 0, fx.now),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        fx.authority.issue_token(&fx.acme, Duration::ZERO, 1, fx.now),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn enrollment_names_the_requested_identity_and_identify_reads_it_back() {
    let fx = Fixture::new();
    let (key, credentials) = fx.enroll(&fx.acme, "pc:1");
    let identity = fx.authority.identify(&chain(&credentials), fx.now).unwrap();
    assert_eq!(identity.customer, fx.acme);
    assert_eq!(identity.device, dev("pc:1"));
    assert_eq!(identity.key_fingerprint, key.fingerprint());
    let record = fx.authority.device(&fx.acme, &dev("pc:1")).unwrap().unwrap();
    assert_eq!(record.key_fingerprint, key.fingerprint());
    assert_eq!(record.revoked, None);
    assert_eq!(record.serial.len(), 16);
    let days = (record.not_after - fx.now).whole_days();
    assert!((29..=30).contains(&days), "{days}");
    assert!(fx.authority.reports(None, fx.now - Duration::days(1)).unwrap().is_empty());
}

#[test]
fn the_csr_subject_and_names_are_ignored() {
    let fx = Fixture::new();
    let key = DeviceKey::generate().unwrap();
    // A CSR that claims customer beta, sent as a request of acme's.
    let mut request =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-1"), &key).unwrap();
    request.csr_der = key.csr_der(&fx.beta, &dev("other")).unwrap();
    let enrolled = fx.authority.enroll(&request, fx.now).unwrap();
    let credentials = privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), enrolled).unwrap();
    let identity = fx.authority.identify(&chain(&credentials), fx.now).unwrap();
    assert_eq!((identity.customer, identity.device), (fx.acme, dev("pc-1")));
}

#[test]
fn token_checks_name_what_was_expected_and_never_echo_the_token() {
    let fx = Fixture::new();
    let key = DeviceKey::generate().unwrap();
    let enroll = |token: Option<&str>, customer: &CustomerId, now| {
        let request = privtel_authority::request(token, customer, &dev("pc-1"), &key).unwrap();
        fx.authority.enroll(&request, now)
    };
    let check = |result: Result<_, EnrollError>, token: &str| {
        let e = result.unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains(token.strip_prefix(TOKEN_PREFIX).unwrap_or(token)), "{shown}");
        assert!(!format!("{e:?}").contains(&token[TOKEN_PREFIX.len().min(token.len())..]), "{e:?}");
        assert_eq!(shown, shown.to_lowercase(), "lowercase: {shown}");
        e
    };

    assert!(matches!(enroll(None, &fx.acme, fx.now), Err(EnrollError::TokenMissing)));
    let malformed = "ptenr_not-a-token";
    assert!(matches!(
        check(enroll(Some(malformed), &fx.acme, fx.now), malformed),
        EnrollError::TokenMalformed
    ));
    let unknown = format!("{TOKEN_PREFIX}{}", "0".repeat(64));
    assert!(matches!(check(enroll(Some(&unknown), &fx.acme, fx.now), &unknown), EnrollError::TokenUnknown));

    // Expiry: valid just before, refused at the instant and after.
    let short = fx.authority.issue_token(&fx.acme, Duration::minutes(10), 5, fx.now).unwrap();
    let at_expiry = fx.now + Duration::minutes(10);
    assert!(matches!(check(enroll(Some(&short), &fx.acme, at_expiry), &short), EnrollError::TokenExpired));
    enroll(Some(&short), &fx.acme, at_expiry - Duration::seconds(1)).unwrap();

    // Wrong customer: acme's token cannot enroll a beta device.
    let token = fx.token(&fx.acme, 5);
    let e = check(enroll(Some(&token), &fx.beta, fx.now), &token);
    assert!(matches!(e, EnrollError::TokenWrongCustomer { .. }), "{e}");
    assert_eq!(e.code(), privtel_wire::ErrorCode::Forbidden);

    // Revocation.
    assert!(fx.authority.revoke_token(&token, fx.now).unwrap());
    assert!(!fx.authority.revoke_token(&token, fx.now).unwrap(), "already revoked");
    assert!(matches!(check(enroll(Some(&token), &fx.acme, fx.now), &token), EnrollError::TokenRevoked));
}

#[test]
fn a_token_serves_its_uses_and_a_refusal_costs_none() {
    let fx = Fixture::new();
    let token = fx.token(&fx.acme, 2);
    let key = DeviceKey::generate().unwrap();
    // A bad CSR is refused before the token is spent.
    let mut bad = privtel_authority::request(Some(&token), &fx.acme, &dev("pc-0"), &key).unwrap();
    bad.csr_der.truncate(bad.csr_der.len() - 3);
    assert!(matches!(fx.authority.enroll(&bad, fx.now), Err(EnrollError::Csr { .. })));
    // A CSR whose signature does not match its key.
    let mut forged = privtel_authority::request(Some(&token), &fx.acme, &dev("pc-0"), &key).unwrap();
    let last = forged.csr_der.len() - 1;
    forged.csr_der[last] ^= 1;
    let e = fx.authority.enroll(&forged, fx.now).unwrap_err();
    assert!(matches!(e, EnrollError::Csr { .. }), "{e}");
    for device in ["pc-1", "pc-2"] {
        let key = DeviceKey::generate().unwrap();
        let request = privtel_authority::request(Some(&token), &fx.acme, &dev(device), &key).unwrap();
        fx.authority.enroll(&request, fx.now).unwrap();
    }
    let request = privtel_authority::request(Some(&token), &fx.acme, &dev("pc-3"), &key).unwrap();
    assert!(matches!(fx.authority.enroll(&request, fx.now), Err(EnrollError::TokenUsedUp)));
}

#[test]
fn two_racing_devices_on_the_last_use_exactly_one_wins() {
    let fx = Fixture::new();
    for round in 0..8 {
        let token = fx.token(&fx.acme, 1);
        let barrier = Arc::new(Barrier::new(2));
        // One handle each: two connections to the file, as two service
        // processes would have.
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (authority, barrier, token, acme) =
                    (fx.second_process(), barrier.clone(), token.clone(), fx.acme.clone());
                let now = fx.now;
                std::thread::spawn(move || {
                    let key = DeviceKey::generate().unwrap();
                    let device = dev(&format!("race-{round}-{i}"));
                    let request = privtel_authority::request(Some(&token), &acme, &device, &key).unwrap();
                    barrier.wait();
                    authority.enroll(&request, now)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(EnrollError::TokenUsedUp))), "round {round}");
    }
}

#[test]
fn a_second_enrollment_with_another_key_is_refused_and_reported() {
    let fx = Fixture::new();
    let (first_key, credentials) = fx.enroll(&fx.acme, "pc-1");
    let clone_key = DeviceKey::generate().unwrap();
    let token = fx.token(&fx.acme, 1);
    let request = privtel_authority::request(Some(&token), &fx.acme, &dev("pc-1"), &clone_key).unwrap();
    for _ in 0..2 {
        let e = fx.authority.enroll(&request, fx.now).unwrap_err();
        assert!(matches!(e, EnrollError::AlreadyEnrolled { .. }), "{e}");
    }
    // The first device is untouched and the token not spent.
    assert_eq!(
        fx.authority.identify(&chain(&credentials), fx.now).unwrap().key_fingerprint,
        first_key.fingerprint()
    );
    let reports = fx.authority.reports(Some(&fx.acme), fx.now - Duration::minutes(1)).unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].kind, ReportKind::CloneAtEnrollment);
    assert_eq!(reports[0].device, dev("pc-1"));
    assert_eq!(reports[0].key_fingerprint, clone_key.fingerprint());
    assert_eq!(reports[0].count, 2);
    assert!(fx.authority.reports(Some(&fx.beta), fx.now - Duration::minutes(1)).unwrap().is_empty());
    let other = privtel_authority::request(Some(&token), &fx.acme, &dev("pc-2"), &clone_key).unwrap();
    fx.authority.enroll(&other, fx.now).unwrap();

    // The same key enrolling again (a lost answer) is no clone.
    let again =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-1"), &first_key).unwrap();
    fx.authority.enroll(&again, fx.now).unwrap();
}

/// A device whose enrollment answer was lost (the connection dropped, the
/// service stopped after its commit) asks again with the same key and the
/// same token: served, even when that was the token's last use, and it
/// costs none.
#[test]
fn an_enrollment_asked_again_with_the_same_key_needs_and_costs_no_use() {
    let fx = Fixture::new();
    let key = DeviceKey::generate().unwrap();
    let token = fx.token(&fx.acme, 2);
    let ask = |device: &str, key: &DeviceKey| {
        fx.authority
            .enroll(&privtel_authority::request(Some(&token), &fx.acme, &dev(device), key).unwrap(), fx.now)
    };
    ask("pc-1", &key).unwrap();
    for _ in 0..3 {
        ask("pc-1", &key).unwrap();
    }
    // One use spent so far: another device takes the second.
    ask("pc-2", &DeviceKey::generate().unwrap()).unwrap();
    let e = ask("pc-3", &DeviceKey::generate().unwrap()).unwrap_err();
    assert!(matches!(e, EnrollError::TokenUsedUp), "{e}");
    // With none left, pc-1's own key is still answered; another key for
    // pc-1 is a clone, as ever.
    let answer = ask("pc-1", &key).unwrap();
    privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), answer).unwrap();
    let e = ask("pc-1", &DeviceKey::generate().unwrap()).unwrap_err();
    assert!(matches!(e, EnrollError::AlreadyEnrolled { .. }), "{e}");
}

#[test]
fn revocation_applies_at_once_from_another_process_and_reset_allows_reenrollment() {
    let fx = Fixture::new();
    let (_, credentials) = fx.enroll(&fx.acme, "pc-1");
    fx.authority.identify(&chain(&credentials), fx.now).unwrap();
    let admin = fx.second_process();
    assert!(admin.revoke_device(&fx.acme, &dev("pc-1"), fx.now).unwrap());
    assert!(!admin.revoke_device(&fx.acme, &dev("pc-1"), fx.now).unwrap());
    let e = fx.authority.identify(&chain(&credentials), fx.now).unwrap_err();
    assert!(matches!(e, AuthError::Revoked { .. }), "{e}");
    let reports = admin.reports(None, fx.now).unwrap();
    assert_eq!(reports.iter().map(|r| r.kind).collect::<Vec<_>>(), [ReportKind::RevokedConnection]);

    // A revoked device cannot enroll again, even with a new key...
    let key = DeviceKey::generate().unwrap();
    let request =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-1"), &key).unwrap();
    assert!(matches!(fx.authority.enroll(&request, fx.now), Err(EnrollError::Revoked { .. })));
    // ...until the administrator resets it; its old certificate stays refused.
    assert!(admin.reset_device(&fx.acme, &dev("pc-1")).unwrap());
    let e = fx.authority.identify(&chain(&credentials), fx.now).unwrap_err();
    assert!(matches!(e, AuthError::NotEnrolled { .. }), "{e}");
    let enrolled = fx.authority.enroll(&request, fx.now).unwrap();
    let fresh = privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), enrolled).unwrap();
    assert_eq!(fx.authority.identify(&chain(&fresh), fx.now).unwrap().key_fingerprint, key.fingerprint());
    assert!(matches!(
        fx.authority.identify(&chain(&credentials), fx.now),
        Err(AuthError::CloneSuspected { .. })
    ));
}

#[test]
fn renewal_moves_the_key_and_the_old_certificate_is_refused() {
    let fx = Fixture::new();
    let (_, old) = fx.enroll(&fx.acme, "pc-1");
    let identity = fx.authority.identify(&chain(&old), fx.now).unwrap();
    let new_key = DeviceKey::generate().unwrap();
    // Renewed a minute later (accept checks the certificate against the
    // device's real clock, so the test cannot renew weeks ahead).
    let later = fx.now + Duration::minutes(1);
    let enrolled =
        fx.authority.renew(&identity, &new_key.csr_der(&fx.acme, &dev("pc-1")).unwrap(), later).unwrap();
    assert_eq!(enrolled.not_after_unix, (later + Duration::days(30)).unix_timestamp());
    let new = privtel_authority::accept(&new_key, &fx.acme, &dev("pc-1"), enrolled).unwrap();
    assert_eq!(fx.authority.identify(&chain(&new), later).unwrap().key_fingerprint, new_key.fingerprint());
    let e = fx.authority.identify(&chain(&old), later).unwrap_err();
    assert!(matches!(e, AuthError::CloneSuspected { .. }), "{e}");
    // The old identity can no longer renew either.
    let e =
        fx.authority.renew(&identity, &new_key.csr_der(&fx.acme, &dev("pc-1")).unwrap(), later).unwrap_err();
    assert!(matches!(e, EnrollError::KeyMismatch { .. }), "{e}");
    let reports = fx.authority.reports(Some(&fx.acme), later).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].kind, ReportKind::CloneAtConnection);
    assert_eq!(reports[0].key_fingerprint, identity.key_fingerprint);
}

#[test]
fn a_device_renews_once_a_minute_at_most_and_its_first_renewal_is_never_held_back() {
    let fx = Fixture::new();
    let (_, old) = fx.enroll(&fx.acme, "pc-1");
    let identity = fx.authority.identify(&chain(&old), fx.now).unwrap();
    let key = DeviceKey::generate().unwrap();
    let csr = key.csr_der(&fx.acme, &dev("pc-1")).unwrap();
    // Right after the enrollment: served (and the key stays the same, so
    // every connection of the device could go on renewing).
    let first = fx.now + Duration::seconds(1);
    let (_, renewed) = fx.authority.renew_identity(&identity, &csr, first).unwrap();
    let serial = |fx: &Fixture| fx.authority.device(&fx.acme, &dev("pc-1")).unwrap().unwrap().serial;
    let issued = serial(&fx);
    // Again within the minute, with the same key: refused, retryable,
    // naming when; nothing is signed or written.
    for after in [0, 30, 59] {
        let e = fx.authority.renew(&renewed, &csr, first + Duration::seconds(after)).unwrap_err();
        assert!(
            matches!(e, EnrollError::RenewedTooSoon { retry_after_s, .. } if retry_after_s == (60 - after) as u64),
            "{e}"
        );
        assert!(e.retryable());
        assert_eq!(e.code(), privtel_wire::ErrorCode::Unavailable);
        assert!(e.to_string().contains("expected a renewal in"), "{e}");
        assert_eq!(serial(&fx), issued, "no certificate was issued");
    }
    // A minute on: served.
    fx.authority.renew(&renewed, &csr, first + Duration::seconds(60)).unwrap();
    assert_ne!(serial(&fx), issued);
}

#[test]
fn certificates_of_one_customer_never_identify_another() {
    let fx = Fixture::new();
    let key = DeviceKey::generate().unwrap();
    // Signed by acme's CA, naming beta: verified against beta's CA, refused.
    let forged = Credentials {
        cert_pem: forge(&fx, &fx.acme, &fx.beta, "pc-1", &key),
        key_pem: key.to_pem(),
        ca_pem: String::new(),
    };
    let e = fx.authority.identify(&chain(&forged), fx.now).unwrap_err();
    assert!(matches!(e, AuthError::Untrusted { .. }), "{e}");
    // Naming a customer the service does not have.
    let nobody = CustomerId::new("nobody").unwrap();
    let forged = Credentials {
        cert_pem: forge(&fx, &fx.acme, &nobody, "pc-1", &key),
        key_pem: key.to_pem(),
        ca_pem: String::new(),
    };
    assert!(matches!(fx.authority.identify(&chain(&forged), fx.now), Err(AuthError::UnknownCustomer)));
    // The server's own kind of certificate (no identity) and no certificate.
    let server = privtel_wire::tls::generate_identity(&["127.0.0.1"]).unwrap();
    let e = fx.authority.identify(&[certificate_der(&server.cert_pem).unwrap()], fx.now).unwrap_err();
    assert!(matches!(e, AuthError::BadCertificate { .. }), "{e}");
    assert!(matches!(fx.authority.identify(&[], fx.now), Err(AuthError::NoCertificate)));
    assert!(fx.authority.reports(None, fx.now - Duration::days(1)).unwrap().is_empty());
}

#[test]
fn an_expired_certificate_is_refused() {
    let fx = Fixture::new();
    let authority = fx.second_process().with_cert_validity(Duration::hours(1)).unwrap();
    let key = DeviceKey::generate().unwrap();
    let request =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-1"), &key).unwrap();
    let enrolled = authority.enroll(&request, fx.now).unwrap();
    assert_eq!(enrolled.not_after_unix, (fx.now + Duration::hours(1)).unix_timestamp());
    let credentials = privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), enrolled).unwrap();
    authority.identify(&chain(&credentials), fx.now + Duration::minutes(59)).unwrap();
    let e = authority.identify(&chain(&credentials), fx.now + Duration::minutes(61)).unwrap_err();
    assert!(matches!(e, AuthError::Untrusted { .. }), "{e}");
    assert!(matches!(
        fx.second_process().with_cert_validity(Duration::seconds(5)),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn accept_checks_key_identity_and_issuer() {
    let fx = Fixture::new();
    let key = DeviceKey::generate().unwrap();
    let request =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-1"), &key).unwrap();
    let enrolled = fx.authority.enroll(&request, fx.now).unwrap();
    let other_key = DeviceKey::generate().unwrap();
    let e = privtel_authority::accept(&other_key, &fx.acme, &dev("pc-1"), enrolled.clone()).unwrap_err();
    assert!(e.to_string().contains("this device's key"), "{e}");
    let e = privtel_authority::accept(&key, &fx.acme, &dev("pc-2"), enrolled.clone()).unwrap_err();
    assert!(e.to_string().contains("this customer and device"), "{e}");
    let mut wrong_ca = enrolled.clone();
    wrong_ca.ca_pem = fx.authority.customer_ca_pem(&fx.beta).unwrap().unwrap();
    let e = privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), wrong_ca).unwrap_err();
    assert!(e.to_string().contains("authority in the answer"), "{e}");
    privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), enrolled).unwrap();
}

#[test]
fn credentials_files_are_private_whole_and_checked() {
    let fx = Fixture::new();
    let (key, credentials) = fx.enroll(&fx.acme, "pc-1");
    let dir = tempfile::tempdir().unwrap();
    let path = credentials.save(dir.path()).unwrap();
    let loaded = Credentials::load(dir.path()).unwrap();
    assert_eq!(loaded, credentials);
    assert_eq!(loaded.key().unwrap().fingerprint(), key.fingerprint());
    // Saved again (a renewal): replaced whole, no temporary file left.
    credentials.save(dir.path()).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Credentials::load(dir.path()).unwrap_err();
        assert!(matches!(e, privtel_authority::ClientError::TooOpen { mode: 0o640, .. }), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(&path, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();
    assert!(matches!(Credentials::load(dir.path()), Err(privtel_authority::ClientError::Pem { .. })));
}

#[test]
fn a_handshake_verification_stands_in_once_and_the_register_is_still_read() {
    use privtel_authority::rustls::pki_types::UnixTime;
    let fx = Fixture::new();
    let authority = fx.second_process().with_cert_validity(Duration::hours(1)).unwrap();
    let key = DeviceKey::generate().unwrap();
    let request =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-1"), &key).unwrap();
    let credentials =
        privtel_authority::accept(&key, &fx.acme, &dev("pc-1"), authority.enroll(&request, fx.now).unwrap())
            .unwrap();
    let end_entity = &chain(&credentials)[0];
    let later = time::OffsetDateTime::now_utc() + Duration::hours(2);
    // A chain the verifier accepted in a handshake whose signature check
    // never came (a replayed public certificate) does not stand in:
    // identify verifies it (two hours later it has expired).
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(fx.now.unix_timestamp() as u64));
    authority.client_verifier().verify_client_cert(end_entity, &[], at).unwrap();
    assert!(matches!(authority.identify(&chain(&credentials), later), Err(AuthError::Untrusted { .. })));
    // A real handshake, the device proving its key: its verification
    // stands in once (identify two hours later accepts it), then not.
    let handshake = || {
        let identity = privtel_wire::tls::generate_identity(&["127.0.0.1"]).unwrap();
        let config = privtel_authority::server_config(&authority, &identity).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(privtel_wire::DEADLINE_TICK)).unwrap();
            privtel_wire::tls::accept_within(tcp, config, std::time::Duration::from_secs(10)).map(drop)
        });
        let client = privtel_authority::client_config(&identity.ca_pem, &credentials).unwrap();
        let mut stream = privtel_wire::tls::connect(addr, "127.0.0.1", client).unwrap();
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        server.join().unwrap().unwrap();
    };
    handshake();
    authority.identify(&chain(&credentials), later).unwrap();
    let e = authority.identify(&chain(&credentials), later).unwrap_err();
    assert!(matches!(e, AuthError::Untrusted { .. }), "{e}");
    // The register is read every time: revoked after the handshake proved
    // the key, the device is refused.
    handshake();
    assert!(authority.revoke_device(&fx.acme, &dev("pc-1"), fx.now).unwrap());
    let e = authority.identify(&chain(&credentials), time::OffsetDateTime::now_utc()).unwrap_err();
    assert!(matches!(e, AuthError::Revoked { .. }), "{e}");
}

#[test]
fn removing_a_customer_ends_its_trust_and_leaves_none_of_it_in_the_files() {
    let fx = Fixture::new();
    let (_, acme_cert) = fx.enroll(&fx.acme, "pc-canary-4471");
    let (_, beta_cert) = fx.enroll(&fx.beta, "pc-2");
    let unused = fx.token(&fx.acme, 5);
    // A clone report, so every table holds a row of acme's.
    let (_, _) = fx.enroll(&fx.acme, "pc-clone");
    let clone_key = DeviceKey::generate().unwrap();
    let request =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-clone"), &clone_key)
            .unwrap();
    assert!(fx.authority.enroll(&request, fx.now).is_err());
    let ca_pem = fx.authority.customer_ca_pem(&fx.acme).unwrap().unwrap();
    fx.authority.identify(&chain(&acme_cert), fx.now).unwrap();

    let removed = fx.authority.remove_customer(&fx.acme).unwrap();
    assert!(removed.authority);
    assert_eq!((removed.devices, removed.reports), (2, 1));
    assert_eq!(removed.tokens, 4, "one token per enrollment above, and the unused one");
    // Trust ends at once, in this process and in another one.
    let e = fx.authority.identify(&chain(&acme_cert), fx.now).unwrap_err();
    assert!(matches!(e, AuthError::UnknownCustomer), "{e}");
    assert!(matches!(
        fx.second_process().identify(&chain(&acme_cert), fx.now),
        Err(AuthError::UnknownCustomer)
    ));
    let key = DeviceKey::generate().unwrap();
    let request = privtel_authority::request(Some(&unused), &fx.acme, &dev("pc-9"), &key).unwrap();
    assert!(fx.authority.enroll(&request, fx.now).is_err(), "its tokens no longer enroll");
    assert_eq!(fx.authority.customer_ca_pem(&fx.acme).unwrap(), None);
    // The other customer is untouched; removing again removes nothing.
    fx.authority.identify(&chain(&beta_cert), fx.now).unwrap();
    assert_eq!(
        fx.authority.remove_customer(&fx.acme).unwrap(),
        privtel_authority::RemovedCustomer::default()
    );

    // No byte of acme's CA, key or devices stays in the register's files.
    let mut bytes = std::fs::read(fx.dir.path().join("authority.db")).unwrap();
    bytes.extend(std::fs::read(fx.dir.path().join("authority.db-wal")).unwrap_or_default());
    let ca_lines: Vec<&str> = ca_pem.lines().filter(|l| l.len() == 64).collect();
    assert!(ca_lines.len() >= 2);
    for canary in [ca_lines[0], ca_lines[1], "pc-canary-4471", "pc-clone"] {
        assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()), "{canary} remains");
    }
}

#[test]
fn a_process_that_cached_a_removed_customers_ca_trusts_it_no_longer() {
    let fx = Fixture::new();
    // The running service: its own handle on the register.
    let service = fx.second_process();
    let (old_key, old) = fx.enroll(&fx.acme, "pc-canary-5512");
    service.identify(&chain(&old), fx.now).unwrap();
    // Contract end, removed by the console or an admin command in another process.
    fx.authority.remove_customer(&fx.acme).unwrap();
    let mut failures = Vec::new();
    match service.identify(&chain(&old), fx.now) {
        Err(AuthError::UnknownCustomer) => {}
        other => failures.push(format!("removed customer's certificate in the running service: {other:?}")),
    }
    let reports = fx.authority.reports(Some(&fx.acme), time::OffsetDateTime::UNIX_EPOCH).unwrap();
    if !reports.is_empty() {
        failures.push(format!("rows of the removed customer written back: {reports:?}"));
    }
    // The customer signs again: a new CA.
    let new_ca = fx.authority.add_customer(&fx.acme, fx.now).unwrap();
    if service.customer_ca_pem(&fx.acme).unwrap().as_deref() != Some(new_ca.as_str()) {
        failures.push("the running service still names the removed CA as acme's".into());
    }
    let (_, fresh) = fx.enroll(&fx.acme, "pc-new");
    if let Err(e) = service.identify(&chain(&fresh), fx.now) {
        failures.push(format!("a device of the new CA refused by the running service: {e}"));
    }
    // The old device re-enrolls (same key) under the new CA; its certificate
    // of the removed CA is accepted by the running service.
    let request =
        privtel_authority::request(Some(&fx.token(&fx.acme, 1)), &fx.acme, &dev("pc-canary-5512"), &old_key)
            .unwrap();
    fx.authority.enroll(&request, fx.now).unwrap();
    if let Ok(id) = service.identify(&chain(&old), fx.now) {
        failures.push(format!("a certificate of the removed CA accepted as {id}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_token_with_one_use_left_cannot_grow_the_register_without_bound() {
    let fx = Fixture::new();
    let (_, _) = fx.enroll(&fx.acme, "pc-1");
    let token = fx.token(&fx.acme, 1);
    for _ in 0..200 {
        let key = DeviceKey::generate().unwrap();
        let request = privtel_authority::request(Some(&token), &fx.acme, &dev("pc-1"), &key).unwrap();
        assert!(matches!(fx.authority.enroll(&request, fx.now), Err(EnrollError::AlreadyEnrolled { .. })));
    }
    let reports = fx.authority.reports(Some(&fx.acme), time::OffsetDateTime::UNIX_EPOCH).unwrap();
    assert_eq!(reports.len(), 16, "report rows from 200 refused requests of one token");
    // Every attempt is still counted, the keys beyond 16 on the newest row.
    assert_eq!(reports.iter().map(|r| r.count).sum::<u64>(), 200);
    // A refused enrollment spends no use of the token.
    let key = DeviceKey::generate().unwrap();
    let request = privtel_authority::request(Some(&token), &fx.acme, &dev("pc-2"), &key).unwrap();
    fx.authority.enroll(&request, fx.now).unwrap();
}

//! Policy files: every mistake names the field and the line.

use privtel_filter::{Error, Manifest, Policy};
use privtel_model::{Program, Treatment, fields};

#[track_caller]
fn error(text: &str) -> String {
    Policy::from_toml(text).unwrap_err().to_string()
}

#[test]
fn wrong_policies_name_the_field_and_line() {
    let cases = [
        (
            "version = 1\n[fields]\n\"user.emial\" = \"withhold\"\n",
            "policy line 3: unknown field 'user.emial' (not a personal field of the model)",
        ),
        ("[programs]\n\nenrichmnt = true\n", "policy line 3: unknown program 'enrichmnt'"),
        (
            "[fields]\n\"user.email\" = \"hash\"\n",
            "policy line 2: unknown treatment 'hash' for field 'user.email' (expected clear, pseudonymise, generalise or drop)",
        ),
        (
            "[fields]\n\"user.first_name\" = \"generalise\"\n",
            "policy line 2: field 'user.first_name' has no coarser form and cannot be generalised",
        ),
        (
            "[programs]\nversion_check = false\n",
            "policy line 2: program 'version_check' is required and cannot be switched off",
        ),
        ("[links]\n", "policy line 1: invalid type: map, expected a sequence"),
        (
            "links = [[\"user.email\", \"user.nope\"]]\n",
            "policy line 1: unknown field 'user.nope' (not a personal field of the model)",
        ),
        (
            "[generalise]\nipv4_prefix = 40\n",
            "policy line 2: ipv4_prefix = 40 is out of range: expected 0 to 32",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "{text}");
    }
    // Unknown settings and syntax errors carry the line and the name.
    let unknown = error("version = 2\n\n[scrub]\nemails = true\n");
    assert!(unknown.starts_with("policy line 4: unknown field `emails`"), "{unknown}");
    let syntax = error("[fields]\n\"user.email\" = drop\n");
    assert!(syntax.starts_with("policy line 2: "), "{syntax}");
    assert!(matches!(
        Policy::from_toml("[programs]\nx = true\n"),
        Err(Error::UnknownProgram { line: 2, .. })
    ));
}

#[test]
fn defaults_are_the_models_and_the_design_tables() {
    let p = Policy::from_toml("").unwrap();
    for f in fields::ALL {
        assert_eq!(p.treatment(f), f.default_treatment, "{}", f.path);
    }
    for prog in Program::ALL {
        assert_eq!(p.enabled(prog), prog.default_enabled());
    }
    assert!(!p.enabled(Program::PersonalisedUsage));
    assert_eq!(p.generalise.ipv4_prefix, 24);
    assert_eq!(p.retention.events, 30);
    let p = Policy::from_toml(
        "[fields]\n\"web_request.url\" = \"generalise\"\n[generalise]\ntime_unit = \"day\"\n",
    )
    .unwrap();
    assert_eq!(p.treatment(&fields::WEB_REQUEST_URL), Treatment::Generalise);
}

#[test]
fn manifest_says_what_goes_where_in_what_form() {
    let p = Policy::from_toml(
        "service = \"https://t.example\"\n[programs]\nenrichment = true\npersonalised_usage = true\nbenchmarking = false\n[fields]\n\"web_request.url\" = \"generalise\"\n",
    )
    .unwrap();
    let m = Manifest::from_policy(&p);
    // Enhance: no personal field at all, only sightings.
    let enrichment = m.programs.iter().find(|e| e.program == Program::Enrichment).unwrap();
    assert!(enrichment.enabled);
    assert_eq!(enrichment.endpoint, "https://t.example/v1/enrichment");
    assert_eq!(enrichment.fields, []);
    assert!(enrichment.sightings.contains(&"registrable domain"));
    // Web requests are the person's: personalised usage.
    let personalised = m.programs.iter().find(|e| e.program == Program::PersonalisedUsage).unwrap();
    assert_eq!(personalised.endpoint, "https://t.example/v1/usage/personalised");
    let url = personalised.fields.iter().find(|f| f.path == "web_request.url").unwrap();
    assert_eq!(url.form, "registrable domain only");
    let benchmarking = m.programs.iter().find(|e| e.program == Program::Benchmarking).unwrap();
    assert!(!benchmarking.enabled && benchmarking.fields.is_empty(), "an off program sends nothing");
    let md = m.to_markdown();
    assert!(md.contains("## benchmarking — off: nothing is sent"), "{md}");
    assert!(md.contains("| `web_request.url` | network_activity | registrable domain only |"));
    assert!(md.contains("## enrichment — on\n\nSent to `https://t.example/v1/enrichment`"), "{md}");
    assert!(md.contains("Sends, with no device, user, path or time of day: binary SHA-256"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(json["programs"].as_array().unwrap().len(), 7);
    assert_eq!(json["inactive_device_purge_days"], 45);
}

#[test]
fn a_clear_field_that_reveals_what_the_policy_removes_is_refused_naming_both_fields() {
    let cases = [
        (
            "[fields]\n\"web_request.url\" = \"generalise\"\n\"web_request.host\" = \"clear\"\n",
            "policy line 3: field 'web_request.host' cannot be clear while 'web_request.url' is generalise: \
             it holds the url's host",
        ),
        // The url is dropped by default.
        (
            "[fields]\n\"web_request.host\" = \"clear\"\n",
            "policy line 2: field 'web_request.host' cannot be clear while 'web_request.url' is withhold: \
             it holds the url's host",
        ),
        (
            "[fields]\n\"execution.username\" = \"clear\"\n\"event.username\" = \"pseudonymise\"\n",
            "policy line 2: field 'execution.username' cannot be clear while 'event.username' is pseudonymise: \
             it holds the login name of the person the user id stands for",
        ),
        (
            "[fields]\n\"binary.path\" = \"pseudonymise\"\n\"binary.file_name\" = \"clear\"\n",
            "policy line 3: field 'binary.file_name' is taken from 'binary.path' and always has its treatment \
             (pseudonymise), not clear: set 'binary.path' instead",
        ),
    ];
    for (text, expected) in cases {
        let err = Policy::from_toml(text).unwrap_err();
        assert!(matches!(err, Error::Reveals { .. } | Error::Follows { .. }), "{err:?}");
        assert_eq!(err.to_string(), expected, "{text}");
    }
    // What the rule allows: a clear host with a clear url, a generalised
    // host under a dropped url (the default), a follower spelled as its
    // source, a login kept clear with a clear user id.
    for text in [
        "[fields]\n\"web_request.url\" = \"clear\"\n\"web_request.host\" = \"clear\"\n",
        "",
        "[fields]\n\"binary.path\" = \"clear\"\n\"binary.file_name\" = \"clear\"\n",
        "[fields]\n\"execution.username\" = \"clear\"\n",
    ] {
        let p = Policy::from_toml(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(p.check(), Ok(()));
    }
    // A policy built in code is checked by `check`, and never leaks if not.
    let mut p = Policy::default();
    p.treatments.insert("web_request.host", Treatment::Clear);
    p.treatments.insert("web_request.url", Treatment::Pseudonymise);
    let err = p.check().unwrap_err();
    assert!(matches!(
        err,
        Error::Reveals { line: 0, field: "web_request.host", from: "web_request.url", .. }
    ));
    assert_eq!(p.treatment(&fields::WEB_REQUEST_HOST), Treatment::Pseudonymise);
    // Through a filter, the host leaves as a pseudonym, like the url.
    p.programs.insert(Program::PersonalisedUsage, true);
    let filter = privtel_filter::FilterBuilder::new()
        .policy(p)
        .key(privtel_filter::PseudonymKey::new(privtel_model::KeyId::new(1), [2; 32]))
        .build();
    let record = privtel_testkit::fixtures::records("x")
        .into_iter()
        .find(|r| r.body.kind_name() == "web_request")
        .unwrap();
    let out = filter.apply(record, &mut Default::default()).unwrap().into_record();
    let privtel_model::RecordBody::Event(e) = &out.body else { unreachable!() };
    let privtel_model::EventBody::WebRequest(w) = &e.body else { unreachable!() };
    assert!(
        matches!(w.host, privtel_model::Personal::Pseudonym(_))
            && matches!(w.url, privtel_model::Personal::Pseudonym(_))
    );
}

#[test]
fn the_file_name_follows_its_path_and_the_instant_its_coarsest_time_field() {
    use privtel_model::{EventBody, TimeUnit};
    for t in ["clear", "pseudonymise", "withhold"] {
        let p = Policy::from_toml(&format!("[fields]\n\"binary.path\" = \"{t}\"\n")).unwrap();
        assert_eq!(p.treatment(&fields::BINARY_FILE_NAME).as_str(), t);
    }
    let body = |kind: &str| {
        privtel_testkit::fixtures::event_bodies("x").into_iter().find(|b| b.kind_name() == kind).unwrap()
    };
    let unit = |text: &str, kind: &str| Policy::from_toml(text).unwrap().instant_unit(&body(kind));
    let fields = |a: &str, b: &str| {
        format!("[fields]\n\"licence_session.start\" = \"{a}\"\n\"licence_session.end\" = \"{b}\"\n")
    };
    assert_eq!(unit(&fields("clear", "clear"), "licence_session"), None);
    assert_eq!(unit(&fields("clear", "generalise"), "licence_session"), Some(TimeUnit::Hour));
    assert_eq!(unit(&fields("generalise", "pseudonymise"), "licence_session"), Some(TimeUnit::Day));
    assert_eq!(
        unit(&fields("withhold", "withhold"), "licence_session"),
        Some(TimeUnit::Day),
        "the coarsest bucket"
    );
    let minute = "[generalise]\ntime_unit = \"minute\"\n";
    assert_eq!(unit(minute, "login"), Some(TimeUnit::Minute), "login.time is generalised by default");
    assert_eq!(unit(minute, "web_request"), Some(TimeUnit::Minute), "no time field: the policy's unit");
    assert_eq!(unit("", "crash_report"), Some(TimeUnit::Hour));
    assert!(matches!(body("login"), EventBody::Login(_)));
}

#[test]
fn the_service_refuses_an_instant_finer_than_the_policy_and_the_manifest_lists_the_user() {
    use privtel_filter::{FilterBuilder, Inadmissible};
    use privtel_model::{RecordBody, TimeUnit, Timestamp};
    let p = Policy::from_toml("[programs]\npersonalised_usage = true\n").unwrap();
    let mut record = privtel_testkit::fixtures::records("x")
        .into_iter()
        .find(|r| r.body.kind_name() == "web_request")
        .unwrap();
    if let RecordBody::Event(e) = &mut record.body {
        e.recorded_at = Timestamp::from_parts(1_795_752_061, 0).unwrap();
    }
    let filter = FilterBuilder::new().policy(p.clone()).build();
    let mut out = filter.apply(record.clone(), &mut Default::default()).unwrap().into_record();
    assert_eq!(p.admits(&mut out), Ok(()));
    // The same record, its url and host withheld, but its instant exact.
    let mut raw = record;
    if let RecordBody::Event(e) = &mut raw.body {
        e.user = None;
        let privtel_model::EventBody::WebRequest(w) = &mut e.body else { unreachable!() };
        w.url.take();
        w.host.take();
        w.destination_ip.take();
        w.page_load.take();
    }
    let err = p.admits(&mut raw).unwrap_err();
    assert_eq!(err, Inadmissible::Instant { kind: "web_request", unit: TimeUnit::Hour });
    assert_eq!(
        err.to_string(),
        "a web_request event's instant arrived finer than the policy keeps it (to the hour)"
    );

    let m = Manifest::from_policy(&p);
    let personalised = m.programs.iter().find(|e| e.program == Program::PersonalisedUsage).unwrap();
    let user = personalised.fields.iter().find(|f| f.path == "event.username").unwrap();
    assert_eq!(user.treatment, Treatment::Clear);
    let name = personalised.fields.iter().find(|f| f.path == "binary.file_name").unwrap();
    assert_eq!(name.treatment, Treatment::Withhold, "the path is dropped by default");
    assert!(personalised.event_times.contains(&("web_request", Some(TimeUnit::Hour))));
    assert!(!personalised.event_times.iter().any(|(k, _)| *k == "binary"), "events only");
    let md = m.to_markdown();
    assert!(
        md.contains(
            "Event times kept: feature_usage to the hour, execution to the hour, web_request to the hour, \
             interaction to the hour."
        ),
        "{md}"
    );
}

#[test]
fn old_spellings_still_read_and_are_reported_with_their_line() {
    let old = "version = 2\n[fields]\n\"user.email\" = \"drop\"\n\"user.phone\" = \"clear\"\n\"device.name\" = \"drop\"\n";
    let new = old.replace("\"drop\"", "\"withhold\"");
    let (from_old, warnings) = Policy::from_toml_with_warnings(old).unwrap();
    let (from_new, none) = Policy::from_toml_with_warnings(&new).unwrap();
    assert_eq!(from_old, from_new, "the old spelling means the new one");
    assert!(none.is_empty(), "{none:?}");
    let lines: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "policy line 3: 'drop' is deprecated: write 'withhold'",
            "policy line 5: 'drop' is deprecated: write 'withhold'"
        ]
    );
    assert_eq!(from_old.treatment(&fields::USER_EMAIL), Treatment::Withhold);
    // Serialized forms: the new name is written, the old one still reads.
    assert_eq!(serde_json::to_string(&Treatment::Withhold).unwrap(), "\"withhold\"");
    assert_eq!(serde_json::from_str::<Treatment>("\"drop\"").unwrap(), Treatment::Withhold);
    assert_eq!("drop".parse::<Treatment>().unwrap(), Treatment::Withhold);
}

/// The first record of the fixtures of `kind`.
fn fixture(kind: &str) -> privtel_model::Record {
    privtel_testkit::fixtures::records("g").into_iter().find(|r| r.body.kind_name() == kind).unwrap()
}

/// A web request event's host.
fn web_host(r: &mut privtel_model::Record) -> &mut privtel_model::Personal<String> {
    use privtel_model::{EventBody, RecordBody};
    let RecordBody::Event(e) = &mut r.body else { unreachable!() };
    let EventBody::WebRequest(w) = &mut e.body else { unreachable!() };
    &mut w.host
}

/// A crash report event's message.
fn crash_message(r: &mut privtel_model::Record) -> &mut privtel_model::Personal<String> {
    use privtel_model::{EventBody, RecordBody};
    let RecordBody::Event(e) = &mut r.body else { unreachable!() };
    let EventBody::CrashReport(c) = &mut e.body else { unreachable!() };
    &mut c.message
}

/// A value that arrives generalised is kept (by the filter) and admitted
/// (by the service) only as the policy generalises: the variant of the
/// field's kind, as coarse as the policy keeps it.
#[test]
fn a_generalised_value_passes_only_as_the_policy_generalises() {
    use privtel_filter::{FilterBuilder, Inadmissible};
    use privtel_model::{Generalised, Personal};
    let policy = Policy::from_toml("[programs]\npersonalised_usage = true\n").unwrap();
    let filter = FilterBuilder::new().policy(policy.clone()).build();
    let web = fixture("web_request");
    let with_host = |host: Generalised| {
        let mut r = filter.apply(web.clone(), &mut Default::default()).unwrap().into_record();
        *web_host(&mut r) = Personal::Generalised(host);
        r
    };
    let registrable = Generalised::Domain("example.com".parse().unwrap());
    let mut ok = with_host(registrable.clone());
    assert_eq!(policy.admits(&mut ok), Ok(()));
    let mut kept = filter.apply(ok, &mut Default::default()).unwrap().into_record();
    assert_eq!(*web_host(&mut kept), Personal::Generalised(registrable));
    for fine in [
        Generalised::Domain("alice.home.dyndns.example.com".parse().unwrap()),
        Generalised::Text("https://example.com/?who=alice".into()),
        Generalised::IpPrefix(privtel_model::IpPrefix::new("203.0.113.77".parse().unwrap(), 32).unwrap()),
    ] {
        let mut r = with_host(fine);
        assert_eq!(policy.admits(&mut r), Err(Inadmissible::Generalised { field: "web_request.host" }));
        // The filter withholds it rather than pass on what the service refuses.
        let mut out = filter.apply(r, &mut Default::default()).unwrap().into_record();
        assert_eq!(*web_host(&mut out), Personal::Withheld);
    }
    // A /24 of an address is how this policy generalises a host that is one.
    let mut net = with_host(Generalised::IpPrefix(
        privtel_model::IpPrefix::new("203.0.113.0".parse().unwrap(), 24).unwrap(),
    ));
    assert_eq!(policy.admits(&mut net), Ok(()));
}

/// The filter scrubs free text until it settles, so the service, which
/// checks that one more pass changes nothing, admits what the filter made;
/// a card number next to other digits is still found.
#[test]
fn the_filters_scrubbed_text_is_admitted_and_holds_no_card() {
    use privtel_filter::FilterBuilder;
    use privtel_model::{Generalised, Personal};
    let policy = Policy::from_toml("").unwrap();
    let filter = FilterBuilder::new().policy(policy.clone()).build();
    let crash = fixture("crash_report");
    for (clear, scrubbed) in [
        // One pass took "3 4111 …" (no card) and left the card after the IP.
        ("connect to 10.1.2.3 4111 1111 1111 1111 failed", "connect to [ip] [card] failed"),
        // The address is seen only once the email before it is replaced.
        ("mail a@b.cc::1 bounced", "mail [email][ip] bounced"),
        // A digit after the card made the whole run fail the check.
        ("paid with 4111 1111 1111 1111 2", "paid with [card] 2"),
        // The number is seen only once the email glued to it is replaced.
        ("mail a@b.example+33612345678 now", "mail [email][phone] now"),
    ] {
        let mut raw = crash.clone();
        *crash_message(&mut raw) = Personal::Clear(clear.to_owned());
        let mut out = filter.apply(raw, &mut Default::default()).unwrap().into_record();
        assert_eq!(
            *crash_message(&mut out),
            Personal::Generalised(Generalised::Text(scrubbed.into())),
            "{clear}"
        );
        assert_eq!(policy.admits(&mut out), Ok(()), "{clear}");
    }
}

/// Phone numbers are scrubbed by default, also under a policy file
/// written before the detector existed (no `phone` key); `phone = false`
/// leaves them. The switch is part of the digest, so every digest changed
/// with it (format 4): a device on an older agent is reported as running
/// another policy (counted, never refused), and its texts are checked
/// against the customer's detectors, phone numbers among them.
#[test]
fn phone_numbers_are_scrubbed_by_default_and_the_switch_is_in_the_digest() {
    use privtel_filter::{Detector, FilterBuilder};
    use privtel_model::{Generalised, Personal};
    let old_file = "version = 2\n[scrub]\nemail = true\nip = true\ncard = true\nhome_path = true\n\
                    url_credentials = true\ntoken = true\n";
    let old = Policy::from_toml(old_file).unwrap();
    assert!(old.scrub.phone, "on when the file does not name it");
    assert!(old.scrub.detectors().contains(&Detector::Phone));
    let explicit = Policy::from_toml(&format!("{old_file}phone = true\n")).unwrap();
    assert_eq!(old, explicit);
    assert_eq!(old.digest(), explicit.digest(), "spelling out the default changes nothing");
    let off = Policy::from_toml(&format!("{old_file}phone = false\n")).unwrap();
    assert!(!off.scrub.detectors().contains(&Detector::Phone));
    assert_ne!(off.digest(), old.digest());
    // The default policy's digest, pinned: it changes with the canonical
    // form (`format` in `Policy::digest`) and with any default, and every
    // device then reports another policy until its agent is updated.
    assert_eq!(
        hex(&Policy::default().digest()),
        DEFAULT_DIGEST,
        "the default policy's digest changed: bump the digest's format and this pin together"
    );
    assert_ne!(DEFAULT_DIGEST, FORMAT_3_DEFAULT_DIGEST);

    let crash = fixture("crash_report");
    for (policy, expected) in
        [(old, "works well, call me on [phone]"), (off, "works well, call me on +33 6 12 34 56 78")]
    {
        let filter = FilterBuilder::new().policy(policy.clone()).build();
        let mut raw = crash.clone();
        *crash_message(&mut raw) = Personal::Clear("works well, call me on +33 6 12 34 56 78".into());
        let mut out = filter.apply(raw, &mut Default::default()).unwrap().into_record();
        assert_eq!(*crash_message(&mut out), Personal::Generalised(Generalised::Text(expected.into())));
        assert_eq!(policy.admits(&mut out), Ok(()));
    }
}

/// [`Policy::default`]'s digest (format 4, the `phone` switch on).
const DEFAULT_DIGEST: &str = "a2c43284dff619524d701f627a6b1513647870a9f9d99dc785900b0eaa1d77a6";
/// What an agent from before the phone detector sends for the same policy
/// (format 3, no `phone` switch): the service counts it as outdated.
const FORMAT_3_DEFAULT_DIGEST: &str = "192aa2d3b73ed89e9a4af587cad4b17fdb31381125eb3e9bafcdfc0b4808473a";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 6to4 address (`2002::/16`) holds a whole IPv4 address in bits 16 to
/// 48: it is generalised, and admitted, only as far as the IPv4 prefix
/// keeps that address (a /40 under the default /24), never as a /48.
#[test]
fn a_6to4_address_keeps_no_more_of_its_ipv4_address_than_the_ipv4_prefix() {
    use privtel_filter::{FilterBuilder, Inadmissible};
    use privtel_model::{Generalised, IpPrefix, Personal};
    let policy = Policy::from_toml("[programs]\npersonalised_usage = true\n").unwrap();
    let filter = FilterBuilder::new().policy(policy.clone()).build();
    let web = fixture("web_request");
    let generalised = |clear: &str| {
        let mut raw = web.clone();
        *web_host(&mut raw) = Personal::Clear(clear.into());
        filter.apply(raw, &mut Default::default()).unwrap().into_record()
    };
    // 2002:cb00:714d:: is 203.0.113.77.
    let mut out = generalised("[2002:cb00:714d::1]");
    let expected = IpPrefix::new("2002:cb00:7100::".parse().unwrap(), 40).unwrap();
    assert_eq!(*web_host(&mut out), Personal::Generalised(Generalised::IpPrefix(expected)));
    assert_eq!(policy.admits(&mut out), Ok(()));
    let mut forged = out.clone();
    *web_host(&mut forged) = Personal::Generalised(Generalised::IpPrefix(
        IpPrefix::new("2002:cb00:714d::".parse().unwrap(), 48).unwrap(),
    ));
    assert_eq!(policy.admits(&mut forged), Err(Inadmissible::Generalised { field: "web_request.host" }));
    // Another IPv6 address keeps its /48; an IPv4-mapped one is its IPv4.
    for (clear, prefix) in
        [("[2001:db8:1234:5678::1]", "2001:db8:1234::/48"), ("[::ffff:203.0.113.77]", "203.0.113.0/24")]
    {
        let mut out = generalised(clear);
        let Personal::Generalised(Generalised::IpPrefix(p)) = web_host(&mut out).clone() else {
            panic!("{clear}: {:?}", web_host(&mut out))
        };
        assert_eq!(p.to_string(), prefix, "{clear}");
        assert_eq!(policy.admits(&mut out), Ok(()), "{clear}");
    }
}

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
            "version = 1\n[fields]\n\"user.emial\" = \"drop\"\n",
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
        "service = \"https://t.example\"\n[programs]\nenrichment = true\n[fields]\n\"web_request.url\" = \"generalise\"\n",
    )
    .unwrap();
    let m = Manifest::from_policy(&p);
    let enrichment = m.programs.iter().find(|e| e.program == Program::Enrichment).unwrap();
    assert!(enrichment.enabled);
    assert_eq!(enrichment.endpoint, "https://t.example/v1/enrichment");
    let url = enrichment.fields.iter().find(|f| f.path == "web_request.url").unwrap();
    assert_eq!(url.form, "registrable domain only");
    let personalised = m.programs.iter().find(|e| e.program == Program::PersonalisedUsage).unwrap();
    assert!(!personalised.enabled && personalised.fields.is_empty(), "an off program sends nothing");
    let md = m.to_markdown();
    assert!(md.contains("## personalised_usage — off: nothing is sent"));
    assert!(md.contains("| `web_request.url` | network_activity | registrable domain only |"));
    let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(json["programs"].as_array().unwrap().len(), 7);
    assert_eq!(json["inactive_device_purge_days"], 45);
}

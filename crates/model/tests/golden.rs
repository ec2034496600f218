//! Golden files of the shapes personal fields took in issue #14: a file
//! name in each form (clear is the plain text rows always had; the other
//! forms are marked), and an event's user clear, pseudonymised and dropped.
//! Each file must decode to its sample and re-encode to the same bytes;
//! changing one means old rows no longer read. `PRIVTEL_BLESS=1` writes
//! missing files (never overwrites). `*.pairs.json` files are JSON written
//! before durations became ISO 8601 text: decode only.
//!
//! Rows written before the change (a `file_name` of plain text, a `user`
//! that is an id or null) are the `*-clear` files: their bytes are what
//! the earlier model wrote, which the store's and the wire's own golden
//! files also pin.

use std::path::PathBuf;

use privtel_model::{KeyId, Personal, Pseudonym, Record, RecordBody, UserId};
use privtel_testkit::fixtures;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn samples() -> Vec<(&'static str, Record)> {
    let records = fixtures::golden_records("golden");
    let binary = records.iter().find(|r| r.body.kind_name() == "binary").unwrap().clone();
    let event = records.iter().find(|r| r.body.kind_name() == "web_request").unwrap().clone();
    let ps = Pseudonym::new(KeyId::new(7), *b"0123456789abcdef");
    let with_name = |name: Personal<String>| {
        let mut r = binary.clone();
        if let RecordBody::Binary(b) = &mut r.body {
            b.file_name = name;
        }
        r
    };
    let with_user = |user: Option<UserId>| {
        let mut r = event.clone();
        if let RecordBody::Event(e) = &mut r.body {
            e.user = user;
        }
        r
    };
    vec![
        ("file-name-clear", with_name(Personal::Clear("tool".into()))),
        ("file-name-pseudonym", with_name(Personal::Pseudonym(ps))),
        ("file-name-withheld", with_name(Personal::Withheld)),
        ("event-user-clear", with_user(Some(UserId::new("u-1042").unwrap()))),
        ("event-user-pseudonym", with_user(Some(UserId::from_pseudonym(&ps)))),
        ("event-user-dropped", with_user(None)),
        // Issue #14 point 5: the benchmarking summary, a record kind
        // appended after `event` (binary variant 8).
        ("device-summary", fixtures::device_summary()),
        // Issue #16 point 6: the interaction event, an event kind appended
        // after `experience_score` (binary variant 11).
        ("interaction", fixtures::interaction()),
    ]
}

fn check(file: PathBuf, fresh: Vec<u8>, decode: impl Fn(&[u8]) -> Record, sample: &Record) {
    if !file.exists() && std::env::var_os("PRIVTEL_BLESS").is_some() {
        std::fs::write(&file, &fresh).unwrap();
    }
    let golden = std::fs::read(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (run once with PRIVTEL_BLESS=1)", file.display()));
    assert_eq!(&decode(&golden), sample, "{}: decodes to the sample", file.display());
    assert_eq!(fresh, golden, "{}: encoding changed bytes", file.display());
}

#[test]
fn golden_rows_of_the_new_personal_fields_decode_and_re_encode_byte_for_byte() {
    let cfg = bincode::config::standard().with_limit::<{ 1 << 20 }>();
    for (name, sample) in samples() {
        let bin = bincode::serde::encode_to_vec(&sample, cfg).unwrap();
        let decode_bin = |b: &[u8]| {
            let (r, used): (Record, usize) = bincode::serde::decode_from_slice(b, cfg).unwrap();
            assert_eq!(used, b.len());
            r
        };
        check(path(&format!("{name}.bin")), bin, decode_bin, &sample);
        let json = serde_json::to_vec(&sample).unwrap();
        check(path(&format!("{name}.json")), json, |b| serde_json::from_slice(b).unwrap(), &sample);
        // Written before durations were ISO 8601 text (`[0, 840000000]`):
        // they still decode to the same record.
        let pairs = path(&format!("{name}.pairs.json"));
        if pairs.exists() {
            let old: Record = serde_json::from_slice(&std::fs::read(&pairs).unwrap()).unwrap();
            assert_eq!(&old, &sample, "{}: decodes to the sample", pairs.display());
        }
    }
}

#[test]
fn json_durations_are_iso_8601_text_and_the_old_pairs_still_read() {
    let old = std::fs::read_to_string(path("event-user-clear.pairs.json")).unwrap();
    assert!(old.contains(r#""page_load":{"clear":[0,840000000]}"#), "{old}");
    let new = std::fs::read_to_string(path("event-user-clear.json")).unwrap();
    assert!(new.contains(r#""page_load":{"clear":"PT0.84S"}"#), "{new}");
    let summary = std::fs::read_to_string(path("device-summary.json")).unwrap();
    assert!(summary.contains(r#""login_time":"PT40S""#), "{summary}");
    assert_eq!(std::fs::read_dir(path("")).unwrap().count(), 20, "a golden file appeared or vanished");
}

#[test]
fn an_interaction_is_binary_variant_11_and_names_its_fields_in_json() {
    let json = std::fs::read_to_string(path("interaction.json")).unwrap();
    assert!(
        json.contains(r#""interaction":{"application":"crm.example.com","action":"create_ticket""#),
        "{json}"
    );
    assert!(json.contains(r#""keys":212,"clicks":9,"duration":{"clear":"PT48S"}"#), "{json}");
    let bin = std::fs::read(path("interaction.bin")).unwrap();
    let cfg = bincode::config::standard();
    // program (personalised usage, variant 6), record body `event` (variant
    // 7), then the event's id, device, user and instant, then the body.
    let head: &[u8] = &[6, 7];
    assert_eq!(&bin[..2], head);
    let tail =
        bincode::serde::encode_to_vec(privtel_model::Domain::new("crm.example.com").unwrap(), cfg).unwrap();
    let at = bin.windows(tail.len()).position(|w| w == tail).expect("the application is in the row");
    assert_eq!(bin[at - 1], 11, "the event body's variant number");
}

#[test]
fn clear_rows_are_the_shape_earlier_versions_wrote() {
    let json = std::fs::read_to_string(path("file-name-clear.json")).unwrap();
    assert!(json.contains(r#""file_name":"tool""#), "{json}");
    let json = std::fs::read_to_string(path("event-user-clear.pairs.json")).unwrap();
    assert!(json.contains(r#""user":"u-1042""#), "{json}");
    let json = std::fs::read_to_string(path("event-user-dropped.pairs.json")).unwrap();
    assert!(json.contains(r#""user":null"#), "{json}");
    let json = std::fs::read_to_string(path("file-name-withheld.json")).unwrap();
    assert!(json.contains(r#""file_name":null"#), "{json}");
}

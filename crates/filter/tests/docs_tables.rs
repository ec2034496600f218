//! The tables of `docs/PROGRAMS.md` are generated from the code — which
//! program carries which record kinds (`allowed_kinds`), and every personal
//! field with its category, shape and default treatment (`fields::ALL`) —
//! and this test keeps them equal. After a change to either, run it once
//! with `PRIVTEL_BLESS=1` to rewrite the tables, and read the diff.

use privtel_filter::allowed_kinds;
use privtel_model::{Program, fields};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROGRAMS.md");

/// The snake_case name serde gives a unit variant.
fn name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn programs_table() -> String {
    let mut t = String::from(
        "| program | code | on by default | can be switched off | endpoint | record kinds |\n|---|---|---|---|---|---|\n",
    );
    let yes = |b: bool| if b { "yes" } else { "no" };
    for p in Program::ALL {
        let kinds: Vec<String> = allowed_kinds(p).iter().map(|k| format!("`{k}`")).collect();
        t.push_str(&format!(
            "| `{p}` | {} | {} | {} | `{}` | {} |\n",
            p.code(),
            yes(p.default_enabled()),
            yes(p.can_switch_off()),
            p.endpoint(),
            kinds.join(", ")
        ));
    }
    t
}

fn fields_table() -> String {
    let mut t = String::from(
        "| field | category | shape | default | programs that can carry it | why |\n|---|---|---|---|---|---|\n",
    );
    for f in fields::ALL {
        let programs: Vec<String> = Program::ALL
            .into_iter()
            .filter(|p| allowed_kinds(*p).iter().any(|k| fields::carried_by(f, k)))
            .map(|p| format!("`{p}`"))
            .collect();
        t.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            f.path,
            f.category,
            name(f.kind),
            f.default_treatment,
            if programs.is_empty() { "none".to_owned() } else { programs.join(", ") },
            f.purpose
        ));
    }
    t
}

/// `doc` with the text between `<!-- begin NAME -->` and `<!-- end NAME -->`
/// replaced by `table`.
fn with_table(doc: &str, name: &str, table: &str) -> String {
    let (begin, end) = (format!("<!-- begin {name} -->\n"), format!("<!-- end {name} -->"));
    let start = doc.find(&begin).unwrap_or_else(|| panic!("docs/PROGRAMS.md has no {begin:?}")) + begin.len();
    let stop = doc[start..].find(&end).unwrap_or_else(|| panic!("docs/PROGRAMS.md has no {end:?}")) + start;
    format!("{}{table}{}", &doc[..start], &doc[stop..])
}

#[test]
fn the_programs_and_fields_tables_are_the_code_s() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let fresh = with_table(&with_table(&doc, "programs", &programs_table()), "fields", &fields_table());
    if std::env::var_os("PRIVTEL_BLESS").is_some() {
        std::fs::write(DOC, &fresh).unwrap();
    }
    assert!(
        fresh == doc,
        "docs/PROGRAMS.md's tables differ from the code: run `PRIVTEL_BLESS=1 cargo test -p privtel-filter --test integration docs_tables` and read the diff"
    );
}

#[test]
fn every_record_kind_has_a_program_and_every_field_a_kind() {
    // One record of every kind.
    let mut records = privtel_testkit::fixtures::records("x");
    records.push(privtel_testkit::fixtures::device_summary());
    records.push(privtel_testkit::fixtures::interaction());
    assert_eq!(records.len(), 20);
    for kind in records.iter().map(|r| r.body.kind_name()) {
        assert!(
            Program::ALL.iter().any(|p| allowed_kinds(*p).contains(&kind)),
            "{kind}: no program carries it"
        );
    }
    assert!(fields_table().lines().count() == fields::ALL.len() + 2);
}

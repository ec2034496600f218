//! Golden files pin protocol version 2: each must decode and re-encode to
//! the same bytes. Changing one means a version bump. `PRIVTEL_BLESS=1`
//! writes missing files (never overwrites). The version 1 files stay, as
//! proof that a version 1 frame is refused by its version, not misread.

use std::path::PathBuf;

use privtel_wire::{Message, decode_frame, encode_frame};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(format!("v2-{name}.bin"))
}

#[test]
fn golden_frames_decode_and_re_encode_byte_for_byte() {
    let mut checked = 0;
    for (name, msg) in super::samples() {
        let file = path(name);
        let mut fresh = Vec::new();
        encode_frame(&msg.to_frame(2, false).unwrap(), privtel_wire::DEFAULT_MAX_PAYLOAD, &mut fresh)
            .unwrap();
        if !file.exists() && std::env::var_os("PRIVTEL_BLESS").is_some() {
            std::fs::write(&file, &fresh).unwrap();
        }
        let golden = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (run once with PRIVTEL_BLESS=1)", file.display()));
        let (frame, used) = decode_frame(&golden, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(used, golden.len(), "{name}");
        let decoded = Message::from_frame(&frame, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(decoded, msg, "{name}: the golden file decodes to the sample");
        let mut again = Vec::new();
        encode_frame(&decoded.to_frame(2, false).unwrap(), privtel_wire::DEFAULT_MAX_PAYLOAD, &mut again)
            .unwrap();
        assert_eq!(again, golden, "{name}: re-encoding changed bytes: the format changed, bump the version");
        checked += 1;
    }
    assert_eq!(checked, 18);
}

#[test]
fn version_1_frames_are_refused_by_their_version() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut refused = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if !file.file_name().unwrap().to_string_lossy().starts_with("v1-") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        let err = decode_frame(&bytes, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap_err();
        assert!(
            matches!(err, privtel_wire::Error::UnsupportedVersion { version: 1, .. }),
            "{}: {err}",
            file.display()
        );
        refused += 1;
    }
    assert_eq!(refused, 11);
}

//! Arbitrary text as `/etc/passwd`, searched for arbitrary user numbers
//! (`privtel_agent::login_of_uid`, how the scan names a file's owner): no
//! panic; a name found is the non-empty first column of a line of the text,
//! without `:` or a line break, whose third column is that number.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((uid, text)) = data.split_first_chunk::<4>() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    for uid in [u32::from_le_bytes(*uid), 0, 1000] {
        if let Some(name) = privtel_agent::login_of_uid(text, uid) {
            assert!(!name.is_empty() && !name.contains([':', '\n', '\r']), "{name:?}");
            let line = text.lines().find(|l| l.starts_with(&format!("{name}:"))).expect("a line of the text");
            assert!(text.lines().any(|l| {
                let cols: Vec<&str> = l.split(':').collect();
                cols.len() >= 3 && cols[0] == name && cols[2].parse() == Ok(uid)
            }), "{line:?}");
        }
    }
});

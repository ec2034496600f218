//! Arbitrary file heads through executable detection: never a panic, and
//! the answer depends only on the first `FORMAT_PROBE_LEN` bytes (what a scan
//! reads before deciding to skip a file).
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_hash::{FORMAT_PROBE_LEN, detect_format};
use privtel_model::ExecutableFormat;

fuzz_target!(|data: &[u8]| {
    let format = detect_format(data);
    let head = &data[..data.len().min(FORMAT_PROBE_LEN)];
    assert_eq!(detect_format(head), format);
    if let Some(ExecutableFormat::Script { interpreter }) = &format {
        assert!(interpreter.len() <= 4 * 256, "interpreter line is bounded");
        assert!(!interpreter.contains('\n'));
    }
});

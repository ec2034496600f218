//! Arbitrary text through the free-text scrubber with every detector on,
//! and with each detector alone: never a panic; findings are in order, do
//! not overlap and lie on character boundaries; what `scrub_settled` gives
//! back (the text the filter stores and the service checks) is a fixed
//! point of `scrub`, its counts at least the first pass's.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use privtel_filter::{Detector, Scrubber};

fn scrubbers() -> &'static [Scrubber] {
    static SCRUBBERS: OnceLock<Vec<Scrubber>> = OnceLock::new();
    SCRUBBERS.get_or_init(|| {
        std::iter::once(Scrubber::default())
            .chain(Detector::ALL.iter().map(|d| Scrubber::new(&[*d])))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for s in scrubbers() {
        let found = s.find(text);
        let mut at = 0;
        for f in &found {
            assert!(at <= f.range.start && f.range.start < f.range.end, "{found:?}");
            assert!(text.is_char_boundary(f.range.start) && text.is_char_boundary(f.range.end));
            assert!(s.is_enabled(f.detector));
            at = f.range.end;
        }
        let once = s.scrub(text);
        assert_eq!(once.counts.iter().sum::<u32>() as usize, found.len());
        if let Some(settled) = s.scrub_settled(text) {
            assert_eq!(s.scrub(&settled.text).text, settled.text, "not settled");
            for d in Detector::ALL {
                assert!(settled.count(d) >= once.count(d), "{d}");
            }
        }
    }
});

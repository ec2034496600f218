//! The IDN labels the list spells, with their ASCII (punycode) form, so the
//! fast path answers hosts under IDN suffixes (`img.спб.рус`,
//! `a.xn--p1ai`) without the URL parser and idna.
//!
//! A label is kept only if the URL parser's own host parser gives its
//! ASCII form after a label `1a`, which takes more than validity: `1a`
//! breaks the bidi rule (a label must not start with a digit) in a domain
//! with a right-to-left label, so a kept label has none, and a host made of
//! kept labels and plain ASCII labels is never a bidi domain. Every other
//! check of UTS 46 is on one label at a time, so such a host's ASCII form
//! is its labels' ASCII forms, joined; the tests run it against the full
//! path on generated hosts.

use std::collections::HashSet;

use crate::suffixes::{START, extend};

/// Labels (ASCII lowercased, as the fast path reads them) to their ASCII
/// form; open addressing over `u32` slots (the index of an entry plus one;
/// 0 is empty).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdnLabels {
    slots: Vec<u32>,
    entries: Vec<(Box<[u8]>, Box<str>)>,
}

impl IdnLabels {
    /// The non-ASCII and `xn--` labels of the rules of `text` (the format
    /// of `public_suffix_list.dat`, both sections), each in the form the
    /// list spells it and in its ASCII form.
    pub(crate) fn parse(text: &str) -> Self {
        let mut seen = HashSet::new();
        let mut entries: Vec<(Box<[u8]>, Box<str>)> = Vec::new();
        for line in text.lines() {
            let Some(rule) = line.split_whitespace().next().filter(|r| !r.starts_with("//")) else {
                continue;
            };
            let name = rule.trim_start_matches('!').trim_start_matches("*.");
            for label in name.split('.') {
                let key = label.to_ascii_lowercase();
                let idn = key.starts_with("xn--") || !key.is_ascii();
                if !idn || !seen.insert(key.clone()) {
                    continue;
                }
                let Some(ascii) = ascii_alone(&key) else { continue };
                // The ASCII form is a label of its own, kept if it passes
                // the same test (it does when the parser round-trips).
                if ascii != key && seen.insert(ascii.clone()) && ascii_alone(&ascii).as_ref() == Some(&ascii)
                {
                    entries.push((ascii.as_bytes().into(), ascii.clone().into()));
                }
                entries.push((key.into_bytes().into(), ascii.into()));
            }
        }
        let size = (entries.len() * 2 + 1).next_power_of_two();
        let mut slots = vec![0u32; size];
        for (n, (key, _)) in entries.iter().enumerate() {
            let mut i = extend(START, key) as usize & (size - 1);
            while slots[i] != 0 {
                i = (i + 1) & (size - 1);
            }
            // At most one entry per label of a list: far fewer than 2^32.
            slots[i] = u32::try_from(n + 1).unwrap_or(u32::MAX);
        }
        Self { slots, entries }
    }

    /// The ASCII form of `label` (ASCII letters in lowercase), if the list
    /// spells it and it is kept (see the module docs).
    pub(crate) fn ascii(&self, label: &[u8]) -> Option<&str> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = extend(START, label) as usize & mask;
        loop {
            let n = usize::try_from(*self.slots.get(i)?).ok()?.checked_sub(1)?;
            let (key, ascii) = self.entries.get(n)?;
            if **key == *label {
                return Some(ascii);
            }
            i = (i + 1) & mask;
        }
    }

    /// How many labels are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The ASCII form of one label as the URL parser gives it after the label
/// `1a`; `None` if it fails there (invalid, or right-to-left) or is not an
/// `xn--` label of the host characters.
fn ascii_alone(label: &str) -> Option<String> {
    let host = format!("1a.{label}");
    let url::Host::Domain(d) = url::Host::parse(&host).ok()? else { return None };
    let ascii = d.strip_prefix("1a.")?;
    let plain = ascii.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (plain && ascii.starts_with("xn--")).then(|| ascii.to_owned())
}

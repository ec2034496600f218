//! The Public Suffix List as one flat hash table of suffixes.
//!
//! Every rule is stored under its suffix in ASCII (punycode) form without
//! its `*.` or `!` prefix, with what the rule says there: a suffix, a
//! wildcard (one more label is a suffix) or an exception (one label fewer
//! is). Every shorter suffix of a stored one is stored too, as a mark with
//! no rule, so a lookup stops at the first candidate the table lacks:
//! nothing deeper can match. A lookup walks the host's labels from the top
//! one down, extending the candidate's hash by one label at a time (one
//! probe per label, a key compared only when its 64-bit hash is equal).
//! The answers follow the list's format rules; they are the `publicsuffix`
//! crate's but for one shape where that crate departs from them (see the
//! tests). This table is what makes hosts spread over the whole list fast
//! (docs/PERFORMANCE.md, "Domains").

use crate::{ListError, Section};

/// What the list says about one suffix.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Entry {
    /// A rule `suffix`.
    normal: Option<Section>,
    /// A rule `*.suffix`.
    wildcard: Option<Section>,
    /// A rule `!suffix`.
    exception: Option<Section>,
}

/// The public suffix a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its length in bytes, at the end of the host.
    pub(crate) len: usize,
    /// The section of the rule that gave it; `None` under the implicit
    /// rule `*` (an unknown top-level label is a suffix).
    pub(crate) section: Option<Section>,
    /// Whether the top label is in the list: the section of this answer
    /// when the suffix is the top label, else whether the top label alone
    /// has a rule of its own (the answer `find` gives for it alone).
    pub(crate) tld_known: bool,
}

/// The table: open addressing over 8-byte slots (the upper half of the
/// key's hash, and where its record starts in `keys`; 0 is empty), so the
/// slots of the whole list fit in a core's second-level cache.
#[derive(Clone, Debug)]
pub(crate) struct Suffixes {
    slots: Vec<u64>,
    /// Each key's record, one after the other: its entry (one byte), its
    /// length (one byte), its bytes. Starts with one unused byte, so no
    /// record starts at 0.
    keys: Vec<u8>,
}

/// An entry in one byte: two bits per rule kind (0 none, 1 ICANN, 2 private).
fn pack(e: Entry) -> u8 {
    let code = |s: Option<Section>| match s {
        None => 0,
        Some(Section::Icann) => 1,
        Some(Section::Private) => 2,
    };
    code(e.normal) | code(e.wildcard) << 2 | code(e.exception) << 4
}

fn unpack(b: u8) -> Entry {
    let section = |c: u8| match c & 3 {
        1 => Some(Section::Icann),
        2 => Some(Section::Private),
        _ => None,
    };
    Entry { normal: section(b), wildcard: section(b >> 2), exception: section(b >> 4) }
}

/// The hash of a candidate suffix one label longer: `h` is the hash of the
/// labels to the right of `label` (`START` for none).
pub(crate) fn extend(h: u64, label: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = h ^ (label.len() as u64).wrapping_mul(K);
    let mut chunks = label.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    h ^ (h >> 29)
}

/// The hash of the empty suffix.
pub(crate) const START: u64 = 0x243f_6a88_85a3_08d3;

/// The hash of a whole suffix, label by label from the top one.
fn hash(suffix: &str) -> u64 {
    suffix.rsplit('.').fold(START, |h, label| extend(h, label.as_bytes()))
}

impl Suffixes {
    /// The rules of `text` (the format of `public_suffix_list.dat`): both
    /// sections, or the ICANN section only.
    pub(crate) fn parse(text: &str, icann_only: bool) -> Result<Self, ListError> {
        let mut rules: std::collections::BTreeMap<String, Entry> = std::collections::BTreeMap::new();
        let mut section = Section::Icann;
        for line in text.lines() {
            let line = line.trim();
            if line.contains("===BEGIN PRIVATE DOMAINS===") {
                section = Section::Private;
            }
            let Some(rule) = line.split_whitespace().next().filter(|r| !r.starts_with("//")) else {
                continue;
            };
            if icann_only && section == Section::Private {
                continue;
            }
            let (kind, name) = if let Some(name) = rule.strip_prefix('!') {
                (2, name)
            } else if let Some(name) = rule.strip_prefix("*.") {
                (1, name)
            } else {
                (0, rule)
            };
            let name = ascii(name)
                .ok_or_else(|| ListError { reason: "a rule is not a valid domain name".into() })?;
            if name.len() > usize::from(u8::MAX) {
                return Err(ListError { reason: "a rule is longer than a domain name can be".into() });
            }
            // Marks for every shorter suffix, so lookups can stop early.
            let mut rest = name.as_str();
            while let Some((_, shorter)) = rest.split_once('.') {
                rules.entry(shorter.to_owned()).or_default();
                rest = shorter;
            }
            let entry = rules.entry(name).or_default();
            let slot = match kind {
                0 => &mut entry.normal,
                1 => &mut entry.wildcard,
                _ => &mut entry.exception,
            };
            // The first rule of a suffix wins, as in the list's own order.
            slot.get_or_insert(section);
        }
        if rules.values().all(|e| *e == Entry::default()) {
            let reason = if icann_only { "no icann rules" } else { "no rules" };
            return Err(ListError { reason: reason.into() });
        }
        // At most 40 % full: short probe runs.
        let size = (rules.len() * 5 / 2).next_power_of_two();
        let mask = size - 1;
        let mut slots = vec![0u64; size];
        let mut keys = vec![0u8];
        for (name, entry) in rules {
            let h = hash(&name);
            let at = u32::try_from(keys.len())
                .map_err(|_| ListError { reason: "the list is larger than 4 GiB".into() })?;
            keys.push(pack(entry));
            keys.push(name.len() as u8);
            keys.extend_from_slice(name.as_bytes());
            let mut i = (h as usize) & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = (h & !0xffff_ffff) | u64::from(at);
        }
        Ok(Self { slots, keys })
    }

    /// The entry of `suffix` (of hash `h`), if the table holds it; `first`
    /// is the slot `h` falls on, read beforehand.
    fn get(&self, h: u64, first: u64, suffix: &[u8]) -> Option<Entry> {
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        let tag = h & !0xffff_ffff;
        let mut slot = first;
        loop {
            if slot == 0 {
                return None;
            }
            if slot & !0xffff_ffff == tag {
                let at = (slot & 0xffff_ffff) as usize;
                let len = usize::from(self.keys[at + 1]);
                if self.keys.get(at + 2..at + 2 + len) == Some(suffix) {
                    return Some(unpack(self.keys[at]));
                }
            }
            i = (i + 1) & mask;
            slot = self.slots[i];
        }
    }

    /// The public suffix of `host` (a canonical ASCII domain) under the
    /// list's rules: the longest matching rule, an exception before any
    /// other, and the top label alone when no rule matches.
    pub(crate) fn find(&self, host: &str) -> Found {
        let bytes = host.as_bytes();
        let mask = self.slots.len() - 1;
        // The two top candidates (most hosts need no more), their slots
        // read together: the two cache misses overlap instead of queueing.
        let start1 = label_start(bytes, bytes.len());
        let h1 = extend(START, &bytes[start1..]);
        let (start2, h2) = match start1.checked_sub(1) {
            Some(end) => {
                let start = label_start(bytes, end);
                (start, extend(h1, &bytes[start..end]))
            }
            None => (0, 0),
        };
        let read = std::hint::black_box([self.slots[h1 as usize & mask], self.slots[h2 as usize & mask]]);
        // The label being added spans `start..end`; the candidate is `start..`.
        let (mut start, mut end, mut h, mut first) = (start1, bytes.len(), h1, read[0]);
        let mut best = Found { len: bytes.len() - start1, section: None, tld_known: false };
        // What the top label alone has: a rule of its own or an exception.
        let mut top_alone = false;
        loop {
            let suffix = &bytes[start..];
            // Not even a mark: no rule is this deep under this suffix.
            let Some(e) = self.get(h, first, suffix) else { break };
            if start == start1 {
                top_alone = e.normal.is_some() || e.exception.is_some();
            }
            if let Some(section) = e.exception {
                // One label fewer than the exception.
                let len = if end < bytes.len() { bytes.len() - end - 1 } else { 0 };
                return Found { len, section: Some(section), tld_known: false }
                    .with_top(bytes, start1, top_alone);
            }
            if let Some(section) = e.normal {
                best = Found { len: suffix.len(), section: Some(section), tld_known: false };
            }
            if let Some(section) = e.wildcard
                && start > 0
            {
                let next = label_start(bytes, start - 1);
                best = Found { len: bytes.len() - next, section: Some(section), tld_known: false };
            }
            if start == 0 {
                break;
            }
            end = start - 1;
            if start == start1 {
                (start, h, first) = (start2, h2, read[1]);
            } else {
                start = label_start(bytes, end);
                h = extend(h, &bytes[start..end]);
                first = self.slots[h as usize & mask];
            }
        }
        best.with_top(bytes, start1, top_alone)
    }
}

impl Found {
    /// Sets `tld_known` for a host whose top label starts at `start1` and
    /// has a rule of its own (`top_alone`) or not.
    fn with_top(mut self, bytes: &[u8], start1: usize, top_alone: bool) -> Self {
        self.tld_known = if bytes.len() - start1 == self.len { self.section.is_some() } else { top_alone };
        self
    }
}

/// Where the label that ends at `end` starts (after the dot before it).
pub(crate) fn label_start(bytes: &[u8], end: usize) -> usize {
    let mut i = end;
    while i > 0 && bytes[i - 1] != b'.' {
        i -= 1;
    }
    i
}

/// A rule's name in ASCII lowercase (punycode for Unicode labels).
fn ascii(name: &str) -> Option<String> {
    if name.is_ascii() {
        return (!name.is_empty()).then(|| name.to_ascii_lowercase());
    }
    match url::Host::parse(name).ok()? {
        url::Host::Domain(d) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use publicsuffix::{IcannList, List, Psl as _};

    use super::*;

    /// Hosts made from every rule of the embedded list — the suffix, one
    /// and two labels under it, the labels a wildcard or exception names —
    /// and odd shapes (empty labels, a trailing dot, unknown tops).
    fn hosts() -> Vec<String> {
        let mut out: Vec<String> =
            ["", ".", "com.", "example.com.", "a..com", "localhost", "x.unknowntld", "..."]
                .map(str::to_owned)
                .to_vec();
        for line in crate::EMBEDDED_LIST.lines() {
            let Some(rule) = line.split_whitespace().next().filter(|r| !r.starts_with("//")) else {
                continue;
            };
            let name = rule.trim_start_matches('!').trim_start_matches("*.");
            let Some(name) = ascii(name) else { continue };
            for host in [name.clone(), format!("a.{name}"), format!("b.a.{name}"), format!("{name}.")] {
                out.push(host);
            }
        }
        out
    }

    /// The `publicsuffix` crate's answers, but for one shape where it
    /// departs from the list's format rules (and from Python's
    /// `publicsuffixlist`): under `*.cloud.int.apple` and
    /// `*.r.cloud.int.apple`, the host `r.cloud.int.apple` is matched by
    /// the first wildcard (the rules say so: a wildcard matches any label),
    /// but that crate follows its explicit `r` node, finds no rule there and
    /// falls back to `int.apple`. Every difference must be of that shape:
    /// ours longer, and the wildcard rule over our suffix in the list.
    #[test]
    fn every_rule_answers_as_the_publicsuffix_crate_does_but_its_wildcard_shadowing() {
        let wildcards: std::collections::HashSet<String> = crate::EMBEDDED_LIST
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|r| r.strip_prefix("*.").and_then(ascii))
            .collect();
        for icann_only in [false, true] {
            let ours = Suffixes::parse(crate::EMBEDDED_LIST, icann_only).unwrap();
            let all: List = crate::EMBEDDED_LIST.parse().unwrap();
            let icann: IcannList = crate::EMBEDDED_LIST.parse().unwrap();
            let (mut checked, mut shadowed) = (0, 0);
            for host in hosts() {
                let labels = host.as_bytes().rsplit(|&b| b == b'.');
                let info = if icann_only { icann.find(labels) } else { all.find(labels) };
                let theirs = Found {
                    len: info.len,
                    section: info.typ.map(|t| match t {
                        publicsuffix::Type::Icann => Section::Icann,
                        publicsuffix::Type::Private => Section::Private,
                    }),
                    tld_known: false,
                };
                let mut found = ours.find(&host);
                // `tld_known` as two lookups give it: the host's, and the
                // top label's alone when the suffix is longer.
                let tld = host.rsplit('.').next().unwrap_or(&host);
                let tld_known = if tld.len() == found.len {
                    found.section.is_some()
                } else {
                    ours.find(tld).section.is_some()
                };
                assert_eq!(found.tld_known, tld_known, "{host:?} (icann only: {icann_only})");
                found.tld_known = false;
                checked += 1;
                if found == theirs {
                    continue;
                }
                let suffix = &host[host.len() - found.len..];
                let parent = suffix.split_once('.').map_or("", |(_, p)| p);
                assert!(
                    found.len > theirs.len && wildcards.contains(parent),
                    "{host:?} (icann only: {icann_only}): ours {found:?}, publicsuffix {theirs:?}"
                );
                shadowed += 1;
            }
            assert!(checked > 40_000, "{checked}");
            assert!(shadowed < 100, "{shadowed} hosts answered otherwise than the publicsuffix crate");
        }
    }

    #[test]
    fn a_wildcard_matches_a_label_that_also_names_a_deeper_rule() {
        let ours = Suffixes::parse(crate::EMBEDDED_LIST, false).unwrap();
        let len = |h: &str| ours.find(h).len;
        assert_eq!(len("r.cloud.int.apple"), "r.cloud.int.apple".len());
        assert_eq!(len("x.r.cloud.int.apple"), "x.r.cloud.int.apple".len());
        assert_eq!(len("y.x.r.cloud.int.apple"), "x.r.cloud.int.apple".len());
        assert_eq!(len("a.b.cloud.int.apple"), "b.cloud.int.apple".len());
        // An exception beats the wildcard over it: `!www.ck` under `*.ck`.
        assert_eq!(len("www.ck"), "ck".len());
        assert_eq!(len("a.www.ck"), "ck".len());
        assert_eq!(len("a.b.ck"), "b.ck".len());
        // No rule: the top label.
        assert_eq!(
            ours.find("a.b.nosuchtld"),
            Found { len: "nosuchtld".len(), section: None, tld_known: false }
        );
        // `ck` has no rule of its own (`*.ck` only), but is the suffix of
        // `www.ck` under `!www.ck`.
        assert!(!ours.find("a.b.ck").tld_known);
        assert!(ours.find("www.ck").tld_known);
        assert!(ours.find("a.co.uk").tld_known);
    }

    #[test]
    fn a_list_without_rules_is_refused() {
        assert!(Suffixes::parse("// nothing\n\n", false).is_err());
        let private_only = "// ===BEGIN PRIVATE DOMAINS===\ngithub.io\n";
        assert!(Suffixes::parse(private_only, true).is_err());
        assert!(Suffixes::parse(private_only, false).is_ok());
    }

    #[test]
    fn odd_lists_are_refused_or_answer_within_the_host() {
        // A rule with an empty name, a Unicode rule, a rule longer than a
        // label can be, rules that only mark: each is refused or answered.
        assert!(Suffixes::parse("!\n", false).is_err());
        assert!(Suffixes::parse("*.\n", false).is_err());
        let long = format!("{}.com\n", "a".repeat(300));
        assert!(Suffixes::parse(&long, false).is_err());
        let list = Suffixes::parse("com\n*.ck\n!www.ck\n\u{5546}\u{5e97}\na.b.c.d.e\n", false).unwrap();
        assert_eq!(list.find("xn--czrs0t").section, Some(Section::Icann));
        assert_eq!(list.find("x.xn--czrs0t").len, "xn--czrs0t".len());
        // `d.e`, `c.d.e`, `b.c.d.e` are marks, not rules.
        assert_eq!(list.find("x.d.e"), Found { len: 1, section: None, tld_known: false });
        assert_eq!(list.find("x.a.b.c.d.e").len, "a.b.c.d.e".len());
        for host in ["", ".", "..", "com.", ".com", "a..ck"] {
            assert!(list.find(host).len <= host.len(), "{host:?}");
        }
    }
}

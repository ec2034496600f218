//! Free-text scrubbing: detectors for identifiers in crash messages and
//! feedback, each match replaced by a typed placeholder.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A kind of identifier the scrubber finds in free text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Detector {
    /// Email addresses → `[email]`.
    Email,
    /// IPv4 and IPv6 addresses → `[ip]`.
    Ip,
    /// Payment card numbers of 13 to 19 digits that pass the Luhn check
    /// (so order numbers and the like are left alone) → `[card]`.
    Card,
    /// The user name in home folders (`/home/NAME`, `/Users/NAME`,
    /// `C:\Users\NAME`) → `[user]`.
    HomePath,
    /// The `user:password` part of URLs → `[credentials]`.
    UrlCredentials,
    /// Bearer tokens, JWTs, well-known API key shapes and `key=value`
    /// secrets → `[token]`.
    Token,
}

impl Detector {
    /// Every detector, in the order overlapping matches are preferred.
    pub const ALL: [Self; 6] =
        [Self::UrlCredentials, Self::Token, Self::Email, Self::HomePath, Self::Card, Self::Ip];

    /// The placeholder a match becomes.
    pub fn placeholder(self) -> &'static str {
        match self {
            Self::Email => "[email]",
            Self::Ip => "[ip]",
            Self::Card => "[card]",
            Self::HomePath => "[user]",
            Self::UrlCredentials => "[credentials]",
            Self::Token => "[token]",
        }
    }

    /// The snake_case name used in policy files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Ip => "ip",
            Self::Card => "card",
            Self::HomePath => "home_path",
            Self::UrlCredentials => "url_credentials",
            Self::Token => "token",
        }
    }

    /// The detector's place in [`Self::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Self::UrlCredentials => 0,
            Self::Token => 1,
            Self::Email => 2,
            Self::HomePath => 3,
            Self::Card => 4,
            Self::Ip => 5,
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One match: which detector, and the byte range in the input. Never the
/// matched text.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Finding {
    /// The detector that matched.
    pub detector: Detector,
    /// Where, in bytes of the input.
    pub range: Range<usize>,
}

/// What scrubbing one text did.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct Scrubbed {
    /// The text with every match replaced by its placeholder.
    pub text: String,
    /// Matches per detector, indexed like [`Detector::ALL`].
    pub counts: [u32; 6],
}

impl Scrubbed {
    /// Matches of one detector.
    pub fn count(&self, d: Detector) -> u32 {
        self.counts[d.index()]
    }
}

/// Finds and replaces identifiers in free text. Build once (the patterns are
/// compiled then), use from any thread.
///
/// ```
/// use privtel_filter::Scrubber;
///
/// let s = Scrubber::default();
/// let out = s.scrub("crash in /home/alice/app: mail bob@corp.example, card 4111 1111 1111 1111, order 1234567890123");
/// assert_eq!(out.text, "crash in /home/[user]/app: mail [email], card [card], order 1234567890123");
/// ```
#[derive(Clone, Debug)]
pub struct Scrubber {
    enabled: [bool; 6],
    email: Regex,
    ipv4: Regex,
    ipv6: Regex,
    card: Regex,
    home: Regex,
    url_credentials: Regex,
    token: Regex,
}

impl Default for Scrubber {
    /// Every detector on.
    fn default() -> Self {
        Self::new(&Detector::ALL)
    }
}

fn re(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(r) => r,
        // The patterns are constants checked by the tests.
        Err(e) => unreachable!("built-in pattern {pattern} is valid: {e}"),
    }
}

impl Scrubber {
    /// A scrubber with only `detectors` switched on.
    pub fn new(detectors: &[Detector]) -> Self {
        let mut enabled = [false; 6];
        for d in detectors {
            enabled[d.index()] = true;
        }
        Self {
            enabled,
            email: re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            ipv4: re(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
            // Candidates only; `Ipv6Addr` decides.
            ipv6: re(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?"),
            card: re(r"\b\d(?:[ -]?\d){12,18}\b"),
            home: re(r"(?:/home/|/Users/|[A-Za-z]:\\Users\\)([^/\\\s:]+)"),
            url_credentials: re(r"[A-Za-z][A-Za-z0-9+.-]*://([^/\s:@]+:[^/\s@]*)@"),
            token: re(concat!(
                r"(?i:bearer)\s+([A-Za-z0-9\-._~+/]{8,}=*)",
                r"|\b(eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,})",
                r"|\b((?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[baprs]-[A-Za-z0-9-]{10,})\b",
                r"|(?i:api[_-]?key|access[_-]?token|secret|password|passwd)\s*[:=]\s*([^\s,;]+)",
            )),
        }
    }

    /// Whether a detector is on.
    pub fn is_enabled(&self, d: Detector) -> bool {
        self.enabled[d.index()]
    }

    /// Dry run: every match that [`Scrubber::scrub`] would replace, in order,
    /// without changing anything (and without copying any matched text).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut found: Vec<Finding> = Vec::new();
        let mut add = |detector: Detector, range: Range<usize>| found.push(Finding { detector, range });
        let on = |d: Detector| self.enabled[d.index()];
        // Cheap checks first: most messages hold none of the trigger bytes.
        if on(Detector::UrlCredentials) && text.contains("://") {
            for c in self.url_credentials.captures_iter(text) {
                if let Some(m) = c.get(1) {
                    add(Detector::UrlCredentials, m.range());
                }
            }
        }
        if on(Detector::Token) {
            for c in self.token.captures_iter(text) {
                if let Some(m) = c.iter().skip(1).flatten().next() {
                    add(Detector::Token, m.range());
                }
            }
        }
        if on(Detector::Email) && text.contains('@') {
            for m in self.email.find_iter(text) {
                add(Detector::Email, m.range());
            }
        }
        if on(Detector::HomePath) && (text.contains("/home/") || text.contains("Users")) {
            for c in self.home.captures_iter(text) {
                if let Some(m) = c.get(1) {
                    add(Detector::HomePath, m.range());
                }
            }
        }
        let (may_card, may_ipv4) =
            if on(Detector::Card) || on(Detector::Ip) { may_hold(text) } else { (false, false) };
        if on(Detector::Card) && may_card {
            for m in self.card.find_iter(text) {
                if luhn(m.as_str()) {
                    add(Detector::Card, m.range());
                } else {
                    // The longest run is taken first and is not a card (an
                    // IP's last number before it, a digit after it): the
                    // cards among its groups of digits.
                    for r in cards_within(m.as_str()) {
                        add(Detector::Card, m.start() + r.start..m.start() + r.end);
                    }
                }
            }
        }
        if on(Detector::Ip) {
            if may_ipv4 {
                for m in self.ipv4.find_iter(text) {
                    if m.as_str().parse::<Ipv4Addr>().is_ok() {
                        add(Detector::Ip, m.range());
                    }
                }
            }
            if text.contains(':') {
                for m in self.ipv6.find_iter(text) {
                    let candidate = m.as_str().split('%').next().unwrap_or_default();
                    // Inside a word (`std::mem` holds `d::`) it is not an address.
                    let word = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
                    let glued = word(text.as_bytes().get(m.start().wrapping_sub(1)))
                        || word(text.as_bytes().get(m.end()));
                    if !glued && candidate.matches(':').count() >= 2 && candidate.parse::<Ipv6Addr>().is_ok()
                    {
                        add(Detector::Ip, m.range());
                    }
                }
            }
        }
        // Overlaps: the earliest match wins; at equal starts the longer;
        // at equal spans the detector listed first in `Detector::ALL`.
        found.sort_by(|a, b| {
            (a.range.start, b.range.end, a.detector.index()).cmp(&(
                b.range.start,
                a.range.end,
                b.detector.index(),
            ))
        });
        let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            if kept.last().is_none_or(|last| f.range.start >= last.range.end) {
                kept.push(f);
            }
        }
        kept
    }

    /// [`Scrubber::scrub`] again until a pass changes nothing (a
    /// placeholder can uncover a match: `a@b.cc::1` holds an address only
    /// once the email before it is `[email]`), its counts summed; `None`
    /// when eight passes do not settle it. What it gives back, scrubbed
    /// once more, is the same text: what a service checks a generalised
    /// text against.
    ///
    /// ```
    /// use privtel_filter::{Detector, Scrubber};
    ///
    /// let s = Scrubber::new(&Detector::ALL);
    /// let once = s.scrub("mail a@b.cc::1 bounced");
    /// assert_ne!(s.scrub(&once.text).text, once.text, "one pass uncovers an address");
    /// let settled = s.scrub_settled("mail a@b.cc::1 bounced").unwrap();
    /// assert_eq!(settled.text, "mail [email][ip] bounced");
    /// assert_eq!(s.scrub(&settled.text).text, settled.text);
    /// ```
    pub fn scrub_settled(&self, text: &str) -> Option<Scrubbed> {
        let mut out = self.scrub(text);
        if out.counts == [0; 6] {
            // Nothing found: the text as it was, settled.
            return Some(out);
        }
        for _ in 0..8 {
            let again = self.scrub(&out.text);
            if again.text == out.text {
                return Some(out);
            }
            out.text = again.text;
            out.counts.iter_mut().zip(again.counts).for_each(|(a, b)| *a += b);
        }
        None
    }

    /// Replaces every match with its placeholder.
    pub fn scrub(&self, text: &str) -> Scrubbed {
        let findings = self.find(text);
        let mut out = Scrubbed::default();
        if findings.is_empty() {
            out.text = text.to_owned();
            return out;
        }
        out.text.reserve(text.len());
        let mut at = 0;
        for f in findings {
            out.text.push_str(&text[at..f.range.start]);
            out.text.push_str(f.detector.placeholder());
            out.counts[f.detector.index()] += 1;
            at = f.range.end;
        }
        out.text.push_str(&text[at..]);
        out
    }
}

/// Whether `text` may hold a match of the card expression and of the IPv4
/// expression: the first needs 13 digits, the second 4 digits and 3 dots;
/// a text with fewer holds none and their expressions need not run (most
/// texts). `\d` is any Unicode decimal digit: a text that is not ASCII
/// counts characters (`char::is_numeric` is a superset of those digits).
fn may_hold(text: &str) -> (bool, bool) {
    let (digits, dots) = if text.is_ascii() {
        text.bytes().fold((0usize, 0usize), |(d, p), b| {
            (d + usize::from(b.is_ascii_digit()), p + usize::from(b == b'.'))
        })
    } else {
        text.chars()
            .fold((0usize, 0usize), |(d, p), c| (d + usize::from(c.is_numeric()), p + usize::from(c == '.')))
    };
    (digits >= 13, digits >= 4 && dots >= 3)
}

/// The card numbers inside a run of digit groups (`3 4111 1111 1111 1111`)
/// that is not one itself: spans of whole groups, 13 to 19 digits that pass
/// the Luhn check, the earliest and then the longest first, not
/// overlapping.
fn cards_within(run: &str) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let bytes = run.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(start..i);
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    let mut first = 0;
    'start: while first < groups.len() {
        for last in (first..groups.len()).rev() {
            let span = groups[first].start..groups[last].end;
            if luhn(&run[span.clone()]) {
                out.push(span);
                first = last + 1;
                continue 'start;
            }
        }
        first += 1;
    }
    out
}

/// Whether the digits of `s` (separators ignored) are 13 to 19 long and pass
/// the Luhn check.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.bytes().filter(u8::is_ascii_digit).map(|b| u32::from(b - b'0')).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The shortcut never skips an expression that would match: texts
        /// of digits (ASCII and others), dots, separators and letters.
        #[test]
        fn may_hold_never_skips_a_match(
            text in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => "[0-9]{1,4}",
                    1 => "[\u{660}-\u{669}\u{ff10}-\u{ff19}]{1,4}",
                    4 => "[ .\\-]",
                    1 => "[a-f:]",
                    1 => "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,3}",
                ],
                0..16,
            )
            .prop_map(|parts: Vec<String>| parts.concat()),
        ) {
            let s = Scrubber::default();
            let (card, ipv4) = may_hold(&text);
            proptest::prop_assert!(card || !s.card.is_match(&text), "card skipped in {text:?}");
            proptest::prop_assert!(ipv4 || !s.ipv4.is_match(&text), "ipv4 skipped in {text:?}");
        }
    }

    #[test]
    fn may_hold_counts_other_digits_too() {
        let s = Scrubber::default();
        let arabic =
            "\u{664}\u{661}\u{661}\u{661} \u{661}\u{661}\u{661}\u{661} \u{661}\u{661}\u{661}\u{661} \u{661}";
        assert!(s.card.is_match(arabic));
        assert!(may_hold(arabic).0);
        assert_eq!(may_hold("1.2.3"), (false, false));
        assert_eq!(may_hold("1.2.3.4"), (false, true));
        assert_eq!(may_hold("4111 1111 1111 1"), (true, false));
    }

    #[test]
    fn index_is_the_place_in_all() {
        for (i, d) in Detector::ALL.into_iter().enumerate() {
            assert_eq!(d.index(), i, "{d}");
        }
        for (i, r) in crate::Rule::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    /// (detector, text, expected output).
    const CASES: &[(Detector, &str, &str)] = &[
        (Detector::Email, "contact alice.martin+x@corp.example.com now", "contact [email] now"),
        (Detector::Email, "no email here @ all, user@localhost", "no email here @ all, user@localhost"),
        (Detector::Ip, "from 192.168.1.20 to 10.0.0.1:443", "from [ip] to [ip]:443"),
        (Detector::Ip, "version 1.2.3.4000 and 999.1.1.1", "version 1.2.3.4000 and 999.1.1.1"),
        (Detector::Ip, "peer fe80::1%eth0 and 2001:db8::8a2e:370:7334.", "peer [ip] and [ip]."),
        (Detector::Ip, "at 12:30:45 on std::mem", "at 12:30:45 on std::mem"),
        (Detector::Card, "paid with 4111-1111-1111-1111 ok", "paid with [card] ok"),
        (Detector::Card, "card 5500 0000 0000 0004", "card [card]"),
        (
            Detector::Card,
            "order 4111111111111112 and id 1234567890123",
            "order 4111111111111112 and id 1234567890123",
        ),
        (
            Detector::HomePath,
            "at /home/alice/src and /Users/Bob/Library",
            "at /home/[user]/src and /Users/[user]/Library",
        ),
        (Detector::HomePath, r"C:\Users\carol\AppData", r"C:\Users\[user]\AppData"),
        (Detector::HomePath, "/homeless/alice and /usr/share", "/homeless/alice and /usr/share"),
        (
            Detector::UrlCredentials,
            "fetch https://bob:hunter2@repo.example/x",
            "fetch https://[credentials]@repo.example/x",
        ),
        (Detector::UrlCredentials, "fetch https://repo.example/x@y", "fetch https://repo.example/x@y"),
        (Detector::Token, "Authorization: Bearer abcdEFGH1234.xyz", "Authorization: Bearer [token]"),
        (Detector::Token, "key AKIAIOSFODNN7EXAMPLE used", "key [token] used"),
        (Detector::Token, "password=s3cr3t; api_key: 12345", "password=[token]; api_key: [token]"),
        (Detector::Token, "jwt eyJhbGciOi.eyJzdWIiOi.SflKxwRJSM", "jwt [token]"),
        (Detector::Token, "the bearer of news, token count 5", "the bearer of news, token count 5"),
    ];

    #[test]
    fn every_detector_alone() {
        for (d, input, expected) in CASES {
            let s = Scrubber::new(&[*d]);
            assert_eq!(s.scrub(input).text, *expected, "{d}: {input}");
        }
    }

    #[test]
    fn switched_off_detectors_change_nothing() {
        let others: Vec<_> = Detector::ALL.into_iter().filter(|d| *d != Detector::Email).collect();
        let s = Scrubber::new(&others);
        assert!(!s.is_enabled(Detector::Email));
        assert_eq!(s.scrub("a@b.example").text, "a@b.example");
    }

    #[test]
    fn dry_run_reports_without_values() {
        let s = Scrubber::default();
        let text = "mail alice@corp.example from 10.1.2.3";
        let found = s.find(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].detector, Detector::Email);
        assert_eq!(&text[found[0].range.clone()], "alice@corp.example");
        let out = s.scrub(text);
        assert_eq!((out.count(Detector::Email), out.count(Detector::Ip)), (1, 1));
    }

    #[test]
    fn luhn_check() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("411111111111"));
    }
}

//! Free-text scrubbing: detectors for identifiers in crash messages and
//! feedback, each match replaced by a typed placeholder.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// How many detectors there are: the length of [`Detector::ALL`].
pub(crate) const DETECTORS: usize = Detector::ALL.len();

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
    /// Telephone numbers → `[phone]`: international ones (`+` or `00`,
    /// then 7 to 15 digits, the first not a 0, in groups apart by a space,
    /// dot or dash, or a parenthesised group: `+33 6 12 34 56 78`,
    /// `+1 (555) 123-4567`, `0033 6 12 34 56 78`, `00 33 6 12 34 56 78`
    /// after a space, `+4915112345678`), and
    /// the national forms `06 12 34 56 78` (a leading 0, then 9 digits, in
    /// pairs apart by spaces, dots or dashes, or none) and
    /// `(555) 123-4567`, `(555) 123 4567`, `555-123-4567`, `555.123.4567`.
    /// A space is one or two spaces or a no-break space (U+00A0, U+202F).
    /// Digits glued to letters or to further digits are not a phone, nor
    /// a long run of digits glued to `_`, nor digits after a dot after a
    /// word other than a phone label (`Tel.`, `Mob.`, …). Where a card or
    /// an IP address holds the same digits, those win.
    Phone,
}

impl Detector {
    /// Every detector, in the order overlapping matches are preferred.
    ///
    /// [`Detector::Phone`] is last: a card or an address that holds the
    /// same digits is replaced as it was before phones were detected (the
    /// stronger sign: a Luhn check, an address that parses), and a new
    /// detector takes its place after the others so that their
    /// [indices](Self::index), and the counts indexed by them, keep theirs.
    pub const ALL: [Self; 7] =
        [Self::UrlCredentials, Self::Token, Self::Email, Self::HomePath, Self::Card, Self::Ip, Self::Phone];

    /// The placeholder a match becomes.
    pub fn placeholder(self) -> &'static str {
        match self {
            Self::Email => "[email]",
            Self::Ip => "[ip]",
            Self::Card => "[card]",
            Self::HomePath => "[user]",
            Self::UrlCredentials => "[credentials]",
            Self::Token => "[token]",
            Self::Phone => "[phone]",
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
            Self::Phone => "phone",
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
            Self::Phone => 6,
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
    pub counts: [u32; DETECTORS],
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
/// use privtel_filter::{Detector, Scrubber};
///
/// let s = Scrubber::default();
/// let out = s.scrub(
///     "crash in /home/alice/app: mail bob@corp.example, card 4111 1111 1111 1111, \
///      call +33 6 12 34 56 78, order 1234567890123 at 2026-12-04 14:00:00",
/// );
/// assert_eq!(
///     out.text,
///     "crash in /home/[user]/app: mail [email], card [card], \
///      call [phone], order 1234567890123 at 2026-12-04 14:00:00",
/// );
/// assert_eq!(out.count(Detector::Phone), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Scrubber {
    enabled: [bool; DETECTORS],
    email: Regex,
    ipv4: Regex,
    ipv6: Regex,
    card: Regex,
    home: Regex,
    url_credentials: Regex,
    token: Regex,
    phone: Regex,
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
        let mut enabled = [false; DETECTORS];
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
            // Candidates only; `phone_span` decides. ASCII digits: `\d`
            // would take any script's. International: `+` or `00`, then a
            // digit other than 0 (no country code starts with one) and
            // digits and parenthesised groups, one separator at most
            // between them (bounded, so a retry after a refused candidate
            // reads a bounded span). Then the national forms.
            // A space is one or two spaces, or a no-break space (U+00A0,
            // or U+202F, which French typography puts between the pairs).
            phone: re(concat!(
                r"(?:\+|00(?: {1,2}|\u{A0}|\u{202F})?)(?:[1-9]|\([0-9]{1,4}\))",
                r"(?:(?:[.\-]| {1,2}|\u{A0}|\u{202F})?(?:[0-9]|\([0-9]{1,4}\))){0,31}",
                r"|0[1-9](?:[0-9]{8}|(?:(?: {1,2}|\u{A0}|\u{202F})[0-9]{2}){4}|(?:\.[0-9]{2}){4}|(?:-[0-9]{2}){4})",
                r"|\([2-9][0-9]{2}\)(?: {1,2}|\u{A0}|\u{202F})?[0-9]{3}(?:[-.]| {1,2}|\u{A0}|\u{202F})[0-9]{4}",
                r"|[2-9][0-9]{2}(?:-[0-9]{3}-|\.[0-9]{3}\.)[0-9]{4}",
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
        // `captures_iter` allocates its groups before it searches: most
        // texts hold no token, and `is_match` finds that without them.
        if on(Detector::Token) && self.token.is_match(text) {
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
        let (may_card, may_ipv4, may_phone) = if on(Detector::Card) || on(Detector::Ip) || on(Detector::Phone)
        {
            may_hold(text)
        } else {
            (false, false, false)
        };
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
        if on(Detector::Phone) && may_phone {
            add_phones(&mut found, self.phones(text));
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
        if out.counts == [0; DETECTORS] {
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

    /// Whether [`Scrubber::scrub`] would give `text` back unchanged (a
    /// generalised text as the filter leaves it), without building the
    /// scrubbed text: each match's placeholder is compared in place.
    ///
    /// ```
    /// use privtel_filter::Scrubber;
    ///
    /// let s = Scrubber::default();
    /// assert!(s.is_settled("mail [email] about [card]"));
    /// assert!(s.is_settled("password=[token]"), "a match that is its own placeholder changes nothing");
    /// assert!(!s.is_settled("mail bob@corp.example"));
    /// ```
    pub fn is_settled(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        // The scrubbed text, piece by piece (the text between matches, a
        // placeholder), against the text itself from its start.
        let mut at = 0;
        let mut same = |piece: &[u8]| {
            let fits = bytes.get(at..at + piece.len()) == Some(piece);
            at += piece.len();
            fits
        };
        let mut from = 0;
        for f in self.find(text) {
            if !same(&bytes[from..f.range.start]) || !same(f.detector.placeholder().as_bytes()) {
                return false;
            }
            from = f.range.end;
        }
        same(&bytes[from..]) && at == bytes.len()
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

/// Whether `text` may hold a match of the card expression, of the IPv4
/// expression and a phone number: the first needs 13 digits, the second 4
/// digits and 3 dots, a phone 7; a text with fewer holds none and their
/// expressions need not run (most texts). `\d` is any Unicode decimal
/// digit: a text that is not ASCII counts characters (`char::is_numeric`
/// is a superset of those digits).
fn may_hold(text: &str) -> (bool, bool, bool) {
    let (digits, dots) = if text.is_ascii() {
        text.bytes().fold((0usize, 0usize), |(d, p), b| {
            (d + usize::from(b.is_ascii_digit()), p + usize::from(b == b'.'))
        })
    } else {
        text.chars()
            .fold((0usize, 0usize), |(d, p), c| (d + usize::from(c.is_numeric()), p + usize::from(c == '.')))
    };
    (digits >= 13, digits >= 4 && dots >= 3, digits >= MIN_PHONE_DIGITS)
}

/// The fewest digits of a phone number (after an international prefix).
const MIN_PHONE_DIGITS: usize = 7;
/// The most digits of a phone number (after an international prefix): an
/// E.164 number has 15 at most.
const MAX_PHONE_DIGITS: usize = 15;

impl Scrubber {
    /// The phone numbers in `text`: each span, and the span of its digits
    /// (after the `+` or `00` of an international number). A candidate
    /// refused is searched again one byte further, so one that is glued
    /// to a word does not hide a number inside it (candidates start with
    /// an ASCII byte, so one byte further is a character boundary).
    fn phones(&self, text: &str) -> Vec<(Range<usize>, Range<usize>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(m) = self.phone.find_at(text, at) {
            match phone_span(text.as_bytes(), m.range()) {
                Some((span, digits)) => {
                    at = span.end;
                    out.push((span, digits));
                }
                None => at = m.start() + 1,
            }
        }
        out
    }
}

/// Whether the byte is part of a word: a letter, a digit or `_`.
fn wordy(b: Option<&u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Whether a space starts at `i`: an ASCII space, or a no-break space
/// (U+00A0 or U+202F) in UTF-8.
fn spacey(bytes: &[u8], i: usize) -> bool {
    matches!(bytes.get(i..), Some([b' ', ..] | [0xc2, 0xa0, ..] | [0xe2, 0x80, 0xaf, ..]))
}

/// The words that label a telephone number, lowercase.
const PHONE_LABELS: &[&str] =
    &["tel", "tél", "phone", "ph", "tfn", "fax", "mob", "mobile", "cell", "gsm", "port", "no", "nr", "num"];

/// Whether the word that ends at the dot `bytes[dot]` labels a telephone
/// number (`Tel.`, `Tél.`, `Mob.`): the letters before the dot, at most
/// 12 bytes, after a byte that is not part of a word.
fn phone_label(bytes: &[u8], dot: usize) -> bool {
    let letter = |b: &u8| b.is_ascii_alphabetic() || *b >= 0x80;
    // At most 13 bytes back: a longer word is no label, and the cost of a
    // candidate stays bounded whatever precedes it.
    let len = bytes[..dot].iter().rev().take(13).take_while(|b| letter(b)).count();
    (1..=12).contains(&len)
        && !bytes[..dot - len].last().is_some_and(letter)
        && std::str::from_utf8(&bytes[dot - len..dot])
            .is_ok_and(|w| PHONE_LABELS.contains(&&*w.to_lowercase()))
}

/// Where the space that ends just before `end` starts (an ASCII space or
/// line break, or a no-break space in UTF-8), if one does.
fn space_before(bytes: &[u8], end: usize) -> Option<usize> {
    let head = &bytes[..end];
    if head.last().is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        Some(end - 1)
    } else if head.ends_with(&[0xc2, 0xa0]) {
        Some(end - 2)
    } else if head.ends_with(&[0xe2, 0x80, 0xaf]) {
        Some(end - 3)
    } else {
        None
    }
}

/// The phone number a candidate of the phone expression holds, if any,
/// and the span of its digits. International (`+` or `00`): the longest
/// run of its groups that holds at most 15 digits and ends where the
/// candidate ends or before a space (a number followed by other numbers:
/// `+33 6 12 34 56 78 2026`), with 7 digits at least. National: the
/// candidate as it is. Either way not glued to what is around it: no
/// letter or digit just before or after it, nor `_` unless it is written
/// with a `+` or apart (emphasis), nor a dot between it and a word before
/// other than a phone label (`1.0012345678` is a decimal, `Tel.0612…` a
/// label), nor a dash or `+` between it and a word before (`v2-0612…` a
/// code), nor a dot or dash and a digit after it (a longer run of
/// numbers: a version, an address, a uuid). `00` and a space is a prefix
/// only where a country code follows and a space, a bracket or a label
/// comes before.
fn phone_span(bytes: &[u8], candidate: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
    let text = &bytes[candidate.clone()];
    // The international prefix (`+`, `00`, `00 `): up to the first digit
    // or parenthesised group.
    let lead = match text {
        [b'+', ..] => 1,
        [b'0', b'0', ..] => 2 + text[2..].iter().take_while(|b| !b.is_ascii_digit() && **b != b'(').count(),
        _ => 0,
    };
    // `00` and a space is a prefix only before a country code (1 to 3
    // digits, then a space) and after a bracket, a label, or a space that
    // follows no digit: not a time's seconds or a decimal's zeros before a
    // count (`14:32:00 4194304`, `12,00 1234567`), nor a column of numbers
    // (`00 00 12 34 56 78`).
    if lead > 2 {
        let code = text[lead..].iter().take_while(|b| b.is_ascii_digit()).count();
        let after_space = match candidate.start.checked_sub(1) {
            None => true,
            Some(i) => match space_before(bytes, candidate.start) {
                Some(s) => !s.checked_sub(1).is_some_and(|j| bytes[j].is_ascii_digit()),
                None => bytes[i] == b'(' || (bytes[i] == b'.' && phone_label(bytes, i)),
            },
        };
        if !(1..=3).contains(&code) || lead + code == text.len() || !after_space {
            return None;
        }
    }
    let end = if lead == 0 {
        candidate.end
    } else {
        // Group by group: a run of digits, or a parenthesised group.
        let (mut i, mut digits, mut end) = (candidate.start + lead, 0, None);
        while i < candidate.end {
            let group = if bytes[i] == b'(' {
                let close = i + bytes[i..candidate.end].iter().position(|&b| b == b')')?;
                (i..close + 1, close - i - 1)
            } else if bytes[i].is_ascii_digit() {
                let len = bytes[i..candidate.end].iter().take_while(|b| b.is_ascii_digit()).count();
                (i..i + len, len)
            } else {
                // A separator.
                i += 1;
                continue;
            };
            digits += group.1;
            if digits > MAX_PHONE_DIGITS {
                break;
            }
            i = group.0.end;
            if digits >= MIN_PHONE_DIGITS && (i == candidate.end || spacey(bytes, i)) {
                end = Some(i);
            }
        }
        end?
    };
    // A number written with a `+` or apart (`06 12 34 56 78`, `0033 6 …`:
    // its first run of digits is short) is no word: `_` around it is
    // emphasis (`_+33 6 12 34 56 78_`), not an identifier, which starts
    // with a long run of digits (`id_0612345678`, `user_0012345678 1`).
    let apart = bytes[candidate.start] == b'+'
        || bytes[candidate.start..end].iter().take_while(|b| b.is_ascii_digit()).count() <= 4;
    let word = |b: Option<&u8>| wordy(b) && !(apart && b == Some(&b'_'));
    if let Some(i) = candidate.start.checked_sub(1) {
        let b2 = i.checked_sub(1).and_then(|j| bytes.get(j));
        let glued = match bytes[i] {
            // After a word, a dot makes a decimal (`1.0012345678`) or a
            // name (`app.log.0612345678`), unless the word is a phone
            // label (`Tel.0612345678`).
            b'.' => wordy(b2) && !phone_label(bytes, i),
            // A dash or `+` after a word makes a code (`v2-0612345678`).
            b'-' | b'+' => wordy(b2),
            b => word(Some(&b)),
        };
        if glued {
            return None;
        }
    }
    let after = bytes.get(end);
    if word(after)
        || (matches!(after, Some(b'.' | b'-')) && bytes.get(end + 1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    Some((candidate.start..end, candidate.start + lead..end))
}

/// Adds the phone numbers `phones` (each span and the span of its digits,
/// in the order of the text, not overlapping) to `found`, where the cards
/// and IP addresses found before meet them: a card or an address that
/// holds every digit of a phone wins (what was replaced before phones were
/// detected still is); otherwise the phone wins and takes in the cards and
/// addresses it meets, so that none of its digits, nor of theirs, is left
/// in the text.
///
/// One pass over both, the cards and addresses by start: a phone looks
/// only at those around it, not at every finding, so a text of many
/// phones and addresses costs in proportion to its length (comparing each
/// phone with every finding made a 1 MiB text cost seconds).
fn add_phones(found: &mut Vec<Finding>, phones: Vec<(Range<usize>, Range<usize>)>) {
    if phones.is_empty() {
        return;
    }
    let mut marks: Vec<Range<usize>> = Vec::new();
    let mut kinds: Vec<Detector> = Vec::new();
    found.retain(|f| {
        let mark = matches!(f.detector, Detector::Card | Detector::Ip);
        if mark {
            marks.push(f.range.clone());
            kinds.push(f.detector);
        }
        !mark
    });
    let mut order: Vec<usize> = (0..marks.len()).collect();
    order.sort_by_key(|&i| marks[i].start);
    let mut taken = vec![false; marks.len()];
    // The marks that start before the end of a span seen so far and are
    // not taken, the latest ending first: those that meet a span are the
    // ones ending after its start (and starting before its end).
    let mut open: std::collections::BinaryHeap<(usize, usize)> = std::collections::BinaryHeap::new();
    let mut next = 0;
    let mut open_up_to = |end: usize, open: &mut std::collections::BinaryHeap<(usize, usize)>| {
        while next < order.len() && marks[order[next]].start < end {
            open.push((marks[order[next]].end, order[next]));
            next += 1;
        }
    };
    // The open marks that meet `span`, taken off the heap.
    let meeting = |span: &Range<usize>, open: &mut std::collections::BinaryHeap<(usize, usize)>| {
        let (mut meet, mut later) = (Vec::new(), Vec::new());
        while let Some(&(end, i)) = open.peek() {
            if end <= span.start {
                break;
            }
            open.pop();
            if marks[i].start < span.end { meet.push(i) } else { later.push(i) }
        }
        open.extend(later.into_iter().map(|i| (marks[i].end, i)));
        meet
    };
    for (span, digits) in phones {
        open_up_to(span.end, &mut open);
        let meet = meeting(&span, &mut open);
        if meet.iter().any(|&i| marks[i].start <= digits.start && digits.end <= marks[i].end) {
            // A card or an address holds every digit: it stays.
            open.extend(meet.into_iter().map(|i| (marks[i].end, i)));
            continue;
        }
        // The phone takes in what it meets, and what meets it grown, until
        // nothing more does.
        let mut span = span;
        let mut meet = meet;
        while !meet.is_empty() {
            for i in meet {
                taken[i] = true;
                span = span.start.min(marks[i].start)..span.end.max(marks[i].end);
            }
            open_up_to(span.end, &mut open);
            meet = meeting(&span, &mut open);
        }
        found.push(Finding { detector: Detector::Phone, range: span });
    }
    found.extend(
        marks
            .into_iter()
            .zip(kinds)
            .zip(taken)
            .filter(|(_, t)| !t)
            .map(|((range, detector), _)| Finding { detector, range }),
    );
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

/// Whether the digits of `s` (separators ignored) are 13 to 19 long, do
/// not start with 0 (no card number does: its first digit names the
/// industry, and 0 was never issued; a run of zeros, such as the nil
/// uuid's, passes the Luhn check) and pass the Luhn check.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.bytes().filter(u8::is_ascii_digit).map(|b| u32::from(b - b'0')).collect();
    if !(13..=19).contains(&digits.len()) || digits[0] == 0 {
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

    /// The rule `add_phones` applies, one phone at a time against every
    /// finding (as it was first written): the reference its tests hold it to.
    fn add_phone_reference(found: &mut Vec<Finding>, span: Range<usize>, digits: Range<usize>) {
        let meets = |f: &Finding, span: &Range<usize>| {
            matches!(f.detector, Detector::Card | Detector::Ip)
                && f.range.start < span.end
                && span.start < f.range.end
        };
        if found.iter().any(|f| meets(f, &span) && f.range.start <= digits.start && digits.end <= f.range.end)
        {
            return;
        }
        let mut span = span;
        while let Some(i) = found.iter().position(|f| meets(f, &span)) {
            let f = found.swap_remove(i);
            span = span.start.min(f.range.start)..span.end.max(f.range.end);
        }
        found.push(Finding { detector: Detector::Phone, range: span });
    }

    #[test]
    fn many_phones_beside_addresses_and_cards_cost_in_proportion_to_the_text() {
        // 64 KiB and 1 MiB of phones next to addresses: each phone was
        // compared with every finding before it (3.7 s for 1 MiB in a
        // release build). Timed against the small text, so a slow machine
        // slows both: sixteen times the text may take at most 48 times the
        // time (the quadratic rule took about 256 times).
        let s = Scrubber::default();
        let unit = "1.2.3.4 +33612345678 4111 1111 1111 1111 ";
        let time = |bytes: usize| {
            let text = unit.repeat(bytes / unit.len());
            let start = std::time::Instant::now();
            assert!(!s.is_settled(&text));
            start.elapsed()
        };
        let small = (0..3).map(|_| time(64 << 10)).min().unwrap();
        let large = time(1 << 20);
        assert!(
            large < small * 48 + std::time::Duration::from_millis(50),
            "64 KiB {small:?}, 1 MiB {large:?}"
        );
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// add_phones is the phone-by-phone rule it replaced (each phone
        /// against every finding), on random cards, addresses, others and
        /// phones: the same findings.
        #[test]
        fn add_phones_is_the_rule_applied_phone_by_phone(
            marks in proptest::collection::vec((0usize..300, 1usize..60, 0u8..3), 0..40),
            gaps in proptest::collection::vec((0usize..30, 1usize..40, 0usize..5, 0usize..5), 0..20),
        ) {
            let found: Vec<Finding> = marks
                .iter()
                .map(|&(start, len, d)| Finding {
                    detector: [Detector::Card, Detector::Ip, Detector::Email][usize::from(d)],
                    range: start..start + len,
                })
                .collect();
            let mut phones = Vec::new();
            let mut at = 0;
            for (gap, len, lead, trail) in gaps {
                let start = at + gap;
                let end = start + len;
                let digits = (start + lead.min(len - 1))..(end - trail.min(end - start - lead.min(len - 1) - 1));
                phones.push((start..end, digits));
                at = end;
            }
            let mut reference = found.clone();
            for (span, digits) in phones.clone() {
                add_phone_reference(&mut reference, span, digits);
            }
            let mut ours = found;
            add_phones(&mut ours, phones);
            let key = |f: &Finding| (f.range.start, f.range.end, f.detector.index());
            reference.sort_by_key(key);
            ours.sort_by_key(key);
            proptest::prop_assert_eq!(ours, reference);
        }

        #[test]
        fn is_settled_is_scrub_giving_the_text_back(text in "(password=|[a-z]{1,6}@[a-z]{1,5}\\.com|\\[token\\]|\\[email\\]|\\+33 6 12 34 56 78|\\[phone\\]|4111 1111 1111 1111|10\\.0\\.0\\.1|/home/[a-z]{1,5}|[ a-z0-9.:-]{0,8}){0,8}") {
            let s = Scrubber::default();
            proptest::prop_assert_eq!(s.is_settled(&text), s.scrub(&text).text == text, "{:?}", text);
        }

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
            let (card, ipv4, phone) = may_hold(&text);
            proptest::prop_assert!(card || !s.card.is_match(&text), "card skipped in {text:?}");
            proptest::prop_assert!(ipv4 || !s.ipv4.is_match(&text), "ipv4 skipped in {text:?}");
            proptest::prop_assert!(phone || s.phones(&text).is_empty(), "phone skipped in {text:?}");
        }
    }

    #[test]
    fn may_hold_counts_other_digits_too() {
        let s = Scrubber::default();
        let arabic =
            "\u{664}\u{661}\u{661}\u{661} \u{661}\u{661}\u{661}\u{661} \u{661}\u{661}\u{661}\u{661} \u{661}";
        assert!(s.card.is_match(arabic));
        assert!(may_hold(arabic).0);
        assert_eq!(may_hold("1.2.3"), (false, false, false));
        assert_eq!(may_hold("1.2.3.4"), (false, true, false));
        assert_eq!(may_hold("4111 1111 1111 1"), (true, false, true));
        assert_eq!(may_hold("+123 456"), (false, false, false));
        assert_eq!(may_hold("+1234567"), (false, false, true));
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
        (Detector::Phone, "call me on +33 6 12 34 56 78-bench", "call me on [phone]-bench"),
        (Detector::Phone, "build 1.2.3 took 182.5 ms", "build 1.2.3 took 182.5 ms"),
    ];

    /// Every form a phone number is found in, with every detector on.
    const PHONES: &[(&str, &str)] = &[
        ("call +33 6 12 34 56 78 now", "call [phone] now"),
        ("call +33.6.12.34.56.78 now", "call [phone] now"),
        ("call +33-6-12-34-56-78 now", "call [phone] now"),
        ("office +1 (555) 123-4567.", "office [phone]."),
        ("office +1(555)123-4567.", "office [phone]."),
        ("london +44 20 7946 0958, ok", "london [phone], ok"),
        ("london +44 (0)20 7946 0958", "london [phone]"),
        ("from abroad 0033 6 12 34 56 78", "from abroad [phone]"),
        ("mobile +4915112345679", "mobile [phone]"),
        ("tel:+4915112345679;ext", "tel:[phone];ext"),
        ("(+33 6 12 34 56 78)", "([phone])"),
        ("portable 06 12 34 56 78", "portable [phone]"),
        ("portable 06.12.34.56.78", "portable [phone]"),
        ("portable 06-12-34-56-78", "portable [phone]"),
        ("portable 0612345678", "portable [phone]"),
        ("us (555) 123-4567 and (555)123-4567", "us [phone] and [phone]"),
        ("us 555-123-4567 or 555.123.4567!", "us [phone] or [phone]!"),
        // Followed by other numbers: the number is its first 15 digits at
        // most, cut before a space.
        ("+33 6 12 34 56 78 2026 12 04", "[phone] 12 04"),
        ("+33 6 12 34 56 78 2026-12-04", "[phone] 2026-12-04"),
        // Two in a row.
        ("+33612345678,+33612345679", "[phone],[phone]"),
        // A label glued with a dot.
        ("Tel.+33 6 12 34 56 78", "Tel.[phone]"),
        ("Tel.0612345678 ou tél.06 12 34 56 78", "Tel.[phone] ou tél.[phone]"),
        // No-break spaces (U+202F between French pairs, U+00A0) and
        // double spaces.
        ("appeler le +33\u{202f}6\u{202f}12\u{202f}34\u{202f}56\u{202f}78.", "appeler le [phone]."),
        ("appeler le 06\u{202f}12\u{202f}34\u{202f}56\u{202f}78.", "appeler le [phone]."),
        ("+33\u{a0}6\u{a0}12\u{a0}34\u{a0}56\u{a0}78 ok", "[phone] ok"),
        ("06\u{a0}12\u{a0}34\u{a0}56\u{a0}78 ok", "[phone] ok"),
        ("call +33 6  12  34  56  78 or 06  12  34  56  78", "call [phone] or [phone]"),
        ("+33\u{202f}6\u{202f}12\u{202f}34\u{202f}56\u{202f}78\u{202f}2026\u{202f}12", "[phone]\u{202f}12"),
        // A space after `00`.
        ("depuis 00 33 6 12 34 56 78", "depuis [phone]"),
        ("depuis 00\u{a0}33 6 12 34 56 78", "depuis [phone]"),
        // Emphasis around a number written apart.
        ("_+33 6 12 34 56 78_ or *06 12 34 56 78*", "_[phone]_ or *[phone]*"),
        ("_06.12.34.56.78_", "_[phone]_"),
        // An American area code in parentheses, then a space.
        ("us (555) 123 4567", "us [phone]"),
        ("us (555)\u{a0}123\u{a0}4567 or (555)  123  4567", "us [phone] or [phone]"),
        // Labels, any case, and an ellipsis.
        (
            "TÉL.06 12 34 56 78, Mob.+33612345678, Fax.0033 1 23 45 67 89",
            "TÉL.[phone], Mob.[phone], Fax.[phone]",
        ),
        ("call me...06 12 34 56 78", "call me...[phone]"),
        ("(00 33 6 12 34 56 78)", "([phone])"),
    ];

    /// Texts that hold no phone number: each comes out as it went in, but
    /// for the other detectors' placeholders where theirs win.
    const NOT_PHONES: &[(&str, &str)] = &[
        (
            "at 2026-12-04 14:00:00 and 2026-12-04T14:00:00Z",
            "at 2026-12-04 14:00:00 and 2026-12-04T14:00:00Z",
        ),
        ("at 2026-12-04T14:00:00.0012345+01:00", "at 2026-12-04T14:00:00.0012345+01:00"),
        ("on 04.12.2026 at 14.00.00", "on 04.12.2026 at 14.00.00"),
        ("versions 1.2.3, 10.0.19045.3803 and 01.02.03", "versions 1.2.3, 10.0.19045.3803 and 01.02.03"),
        ("from 192.168.100.200 and 10.0.0.1", "from [ip] and [ip]"),
        ("card 4111 1111 1111 1111 and +4111111111111111", "card [card] and +[card]"),
        ("paid +4111-1111-1111-1111", "paid +[card]"),
        // A phone number that passes the Luhn check (one in ten of 13 to
        // 15 digits) is a card, as it was: its digits are replaced all the same.
        ("mobile +4915112345678 or +49 151 1234 5678", "mobile +[card] or +[card]"),
        ("order 1234567890123 and 0012345678901234567", "order 1234567890123 and 0012345678901234567"),
        ("startup_time 182.5 ms, ratio 0.0012345678", "startup_time 182.5 ms, ratio 0.0012345678"),
        (
            "id d41d8cd98f00b204e9800998ecf8427e at 0x00007fff12345678",
            "id d41d8cd98f00b204e9800998ecf8427e at 0x00007fff12345678",
        ),
        ("uuid 123e4567-e89b-12d3-a456-426614174000", "uuid 123e4567-e89b-12d3-a456-426614174000"),
        // Zeros pass the Luhn check, but no card starts with 0.
        ("nil 00000000-0000-0000-0000-000000000000", "nil 00000000-0000-0000-0000-000000000000"),
        (
            "glued a0612345678 0612345678b x+33612345678 +33612345678y",
            "glued a0612345678 0612345678b x+33612345678 +33612345678y",
        ),
        (
            "glued abc555-123-4567 555-123-4567-89 06.12.34.56.78.90",
            "glued abc555-123-4567 555-123-4567-89 06.12.34.56.78.90",
        ),
        ("codes v2-0612345678 and 1.0612345678", "codes v2-0612345678 and 1.0612345678"),
        ("short +33 6 12, offset +0100, +1 = 2, 1+1", "short +33 6 12, offset +0100, +1 = 2, 1+1"),
        (
            "too long +1234567890123456 and 00612345678901234567",
            "too long +1234567890123456 and 00612345678901234567",
        ),
        ("at 12:30:45 on std::mem, 1/2/3", "at 12:30:45 on std::mem, 1/2/3"),
        ("area 155-123-4567 and 0012-34", "area 155-123-4567 and 0012-34"),
        // Identifiers: one run of digits glued to `_` on either side, or
        // after a dot after a digit or `_`.
        ("ids x_0612345678 0612345678_y a_.0612345678", "ids x_0612345678 0612345678_y a_.0612345678"),
        ("runs 00 12 and 00\u{a0}3, at 14:00  00", "runs 00 12 and 00\u{a0}3, at 14:00  00"),
        // `00` and a space after a sign that a space precedes.
        (
            "sum =00 33 6 12 34 56 78 and x +=00 33 6 12 34 56 78",
            "sum =00 33 6 12 34 56 78 and x +=00 33 6 12 34 56 78",
        ),
        // Zeros before a count: a time's seconds, a decimal, a value.
        ("14:32:00 4194304 bytes at 14:00 1500000", "14:32:00 4194304 bytes at 14:00 1500000"),
        ("12,00 1234567 and count=00 1234567", "12,00 1234567 and count=00 1234567"),
        ("2026-12-04 17:27:00 12345678 events", "2026-12-04 17:27:00 12345678 events"),
        // Thousands apart by no-break spaces, as French typography writes
        // them, and zeros in a dump.
        (
            "2\u{202f}000\u{202f}000\u{202f}000 € and 8\u{a0}000\u{a0}000\u{a0}000",
            "2\u{202f}000\u{202f}000\u{202f}000 € and 8\u{a0}000\u{a0}000\u{a0}000",
        ),
        ("10 000 100 000 1 000 000, id=00 00 12 34 56 78", "10 000 100 000 1 000 000, id=00 00 12 34 56 78"),
        // An identifier whatever follows it, and names that are no label.
        ("user_0012345678 1 and id_0033612345678 9 rows", "user_0012345678 1 and id_0033612345678 9 rows"),
        (
            "backup.0012345678.tar app.log.0612345678 build.0612345678 failed",
            "backup.0012345678.tar app.log.0612345678 build.0612345678 failed",
        ),
    ];

    #[test]
    fn phone_numbers_in_every_form_are_replaced() {
        let s = Scrubber::default();
        for (input, expected) in PHONES {
            let out = s.scrub(input);
            assert_eq!(out.text, *expected, "{input}");
            assert_eq!(out.count(Detector::Phone) as usize, expected.matches("[phone]").count(), "{input}");
            // Settled at once: a placeholder uncovers nothing.
            assert_eq!(s.scrub(&out.text).text, out.text, "{input}");
        }
    }

    #[test]
    fn what_is_not_a_phone_number_is_left_alone() {
        let s = Scrubber::default();
        for (input, expected) in NOT_PHONES {
            let out = s.scrub(input);
            assert_eq!(out.text, *expected, "{input}");
            assert_eq!(out.count(Detector::Phone), 0, "{input}");
        }
        // The phone detector alone (no card to take the digits first)
        // finds only the numbers with a `+` that pass the Luhn check.
        let alone = Scrubber::new(&[Detector::Phone]);
        for (input, _) in NOT_PHONES {
            let found = alone.find(input);
            assert_eq!(found.len(), 2 * usize::from(input.contains("+491")), "{input}: {found:?}");
        }
    }

    #[test]
    fn a_phone_number_that_meets_a_card_takes_it_in() {
        let s = Scrubber::default();
        // The phone number's first 15 digits end inside a card: neither
        // holds the other's digits, so one placeholder holds both.
        let text = "call +1 4111 1111 1111 1111 now";
        let card = Scrubber::new(&[Detector::Card]).find(text);
        assert_eq!(card.len(), 1, "{card:?}");
        assert_eq!(&text[card[0].range.clone()], "4111 1111 1111 1111");
        let phone = Scrubber::new(&[Detector::Phone]).find(text);
        assert_eq!(phone.len(), 1, "{phone:?}");
        assert_eq!(&text[phone[0].range.clone()], "+1 4111 1111 1111");
        let out = s.scrub(text);
        assert!(!out.text.bytes().any(|b| b.is_ascii_digit()), "{}", out.text);
        assert_eq!((out.count(Detector::Phone), out.count(Detector::Card)), (1, 0), "{}", out.text);
    }

    #[test]
    fn a_placeholder_can_uncover_a_phone_number() {
        // Glued to the email's last letter, the number is found once the
        // email is a placeholder: the filter scrubs until a pass changes
        // nothing.
        let s = Scrubber::default();
        let text = "mail a@b.example+33612345678";
        assert_eq!(s.scrub(text).text, "mail [email]+33612345678");
        let settled = s.scrub_settled(text).unwrap();
        assert_eq!(settled.text, "mail [email][phone]");
        assert_eq!((settled.count(Detector::Email), settled.count(Detector::Phone)), (1, 1));
    }

    #[test]
    fn phone_counts_and_switch() {
        let text = "call +33 6 12 34 56 78 or 06 12 34 56 78, mail a@b.example";
        let out = Scrubber::default().scrub(text);
        assert_eq!(out.text, "call [phone] or [phone], mail [email]");
        assert_eq!(out.count(Detector::Phone), 2);
        assert_eq!(out.count(Detector::Email), 1);
        assert_eq!(out.counts.iter().sum::<u32>(), 3);
        assert_eq!(Detector::Phone.to_string(), "phone");
        assert_eq!(serde_json::to_string(&Detector::Phone).unwrap(), "\"phone\"");
        let others: Vec<_> = Detector::ALL.into_iter().filter(|d| *d != Detector::Phone).collect();
        let off = Scrubber::new(&others).scrub(text);
        assert_eq!(off.text, "call +33 6 12 34 56 78 or 06 12 34 56 78, mail [email]");
        assert_eq!(off.count(Detector::Phone), 0);
    }

    /// Text around a number, without digits or `+`, so that it cannot
    /// lengthen the number (one glued to other digits is not one).
    fn words() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec("[A-Za-z,;:!?'()/_.@-]{0,10}", 0..6).prop_map(|w| w.join(" "))
    }

    /// A phone number in one of the forms the detector knows, its digits
    /// (after an international prefix), and that prefix.
    fn phone() -> impl proptest::strategy::Strategy<Value = (String, String, String)> {
        use proptest::strategy::Just;
        let sep = || {
            proptest::prop_oneof![
                Just(" "),
                Just("."),
                Just("-"),
                Just(""),
                Just("  "),
                Just("\u{a0}"),
                Just("\u{202f}")
            ]
        };
        let international =
            ("[+]|00|00 |00\u{a0}", "[1-9][0-9]{0,2}", proptest::collection::vec("[0-9]{1,4}", 2..5), sep())
                .prop_filter_map("7 to 15 digits", |(lead, country, groups, sep)| {
                    let digits = format!("{country}{}", groups.concat());
                    (7..=15)
                        .contains(&digits.len())
                        .then(|| (format!("{lead}{country} {}", groups.join(sep)), digits, lead))
                });
        let french =
            ("0[1-9]", proptest::collection::vec("[0-9]{2}", 4), sep()).prop_map(|(first, pairs, sep)| {
                (
                    format!("{first}{sep}{}", pairs.join(sep)),
                    format!("{first}{}", pairs.concat()),
                    String::new(),
                )
            });
        let american = ("[2-9][0-9]{2}", "[0-9]{3}", "[0-9]{4}", 0..3usize).prop_map(|(a, b, c, form)| {
            let text = match form {
                0 => format!("({a}) {b}-{c}"),
                1 => format!("{a}-{b}-{c}"),
                _ => format!("{a}.{b}.{c}"),
            };
            (text, format!("{a}{b}{c}"), String::new())
        });
        proptest::prop_oneof![international, french, american]
    }

    proptest::proptest! {
        /// A phone number amid other text never survives: none of its
        /// digits is left once scrubbed (settled, as the filter does), and
        /// the settled text is a fixed point.
        #[test]
        fn a_phone_number_amid_text_never_survives(
            before in words(),
            (number, digits, lead) in phone(),
            after in words(),
        ) {
            let s = Scrubber::default();
            let text = format!("{before} {number} {after}");
            let out = s.scrub_settled(&text).expect("settles");
            // Where a card holds every digit, the prefix stays before it
            // (`+[card]`, `00 [card]`): no digit of the number is left.
            let left = out.text.bytes().filter(u8::is_ascii_digit).count();
            let prefix = lead.starts_with("00") && out.text.contains(&format!("{lead}[card]"));
            proptest::prop_assert!(left == 0 || (prefix && left == 2), "{text:?} -> {:?}", out.text);
            proptest::prop_assert!(!out.text.contains(&digits));
            proptest::prop_assert!(out.count(Detector::Phone) + out.count(Detector::Card) >= 1);
            let again = s.scrub(&out.text).text;
            proptest::prop_assert_eq!(again, out.text);
        }

        /// On any text the phone detector's spans are on character
        /// boundaries, and a settled text is a fixed point.
        #[test]
        fn any_text_settles(text in "[ -~\u{e9}\u{660}-\u{669}]{0,60}") {
            let s = Scrubber::default();
            for (span, digits) in s.phones(&text) {
                proptest::prop_assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
                proptest::prop_assert!(span.start <= digits.start && digits.end == span.end);
            }
            if let Some(out) = s.scrub_settled(&text) {
                let again = s.scrub(&out.text).text;
            proptest::prop_assert_eq!(again, out.text);
            }
        }
    }

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
        assert!(!luhn("0000000000000000"), "zeros pass the sum, but no card starts with 0");
        assert!(!luhn("0378282246310005"));
    }
}

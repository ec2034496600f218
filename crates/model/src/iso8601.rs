//! Durations as ISO 8601 text (`PT1.5S`), the form JSON carries them in.
//!
//! [`format()`] writes seconds only, with as many fraction digits as the value
//! needs (`PT0S`, `PT90S`, `PT0.000001S`, `-PT2.5S`), so the text is exact and
//! one value has one text. [`parse()`] reads that and the wider form people
//! write: days, hours and minutes (`P1DT2H3M4.5S`). Years, months and weeks
//! are refused: their length depends on a calendar.
//!
//! ```
//! use privtel_model::{Duration, iso8601};
//!
//! assert_eq!(iso8601::format(Duration::milliseconds(1_234)), "PT1.234S");
//! assert_eq!(iso8601::parse("PT1H30M")?, Duration::minutes(90));
//! assert_eq!(iso8601::parse("-PT0.5S")?, Duration::milliseconds(-500));
//! assert!(iso8601::parse("P1M").is_err(), "a month has no fixed length");
//! # Ok::<(), privtel_model::Error>(())
//! ```
//!
//! In serde, model types write their durations this way to human-readable
//! formats (JSON), and read both this text and the `[seconds, nanoseconds]`
//! pair earlier versions wrote; binary formats (bincode) are unchanged.

use time::Duration;

use crate::error::{Error, Result};

const WHAT: &str = "duration";
const EXPECTED: &str = "an ISO 8601 duration in days, hours, minutes and seconds (PT1.5S, P1DT2H)";

/// The ISO 8601 text of `d`: seconds only, the fraction as short as exact.
pub fn format(d: Duration) -> String {
    let sign = if d.is_negative() { "-" } else { "" };
    let secs = d.whole_seconds().unsigned_abs();
    let nanos = d.subsec_nanoseconds().unsigned_abs();
    if nanos == 0 {
        return format!("{sign}PT{secs}S");
    }
    let frac = format!("{nanos:09}");
    format!("{sign}PT{secs}.{}S", frac.trim_end_matches('0'))
}

/// Reads an ISO 8601 duration: an optional `-`, `P`, optional days, then
/// `T` and optional hours, minutes and seconds (the seconds may have up to
/// nine fraction digits, after `.` or `,`).
///
/// # Errors
///
/// [`Error::Rejected`] (the text is not repeated: its length and first
/// unexpected character are) for anything else, an empty duration (`P`,
/// `PT`), or a value beyond `time::Duration`'s range.
pub fn parse(text: &str) -> Result<Duration> {
    parse_inner(text).ok_or_else(|| Error::Rejected {
        what: WHAT,
        description: describe(text),
        expected: EXPECTED,
    })
}

fn describe(text: &str) -> String {
    let ok = |c: char| c.is_ascii_digit() || matches!(c, 'P' | 'T' | 'D' | 'H' | 'M' | 'S' | '.' | ',' | '-');
    match text.char_indices().find(|(_, c)| !ok(*c)) {
        _ if text.is_empty() => "empty".to_owned(),
        Some((at, c)) => format!("{} bytes, {c:?} at byte {at}", text.len()),
        None => format!("{} bytes", text.len()),
    }
}

fn parse_inner(text: &str) -> Option<Duration> {
    const NANOS: i128 = 1_000_000_000;
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let rest = rest.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    // Whole nanoseconds: at most 20 digits a part, so no sum overflows.
    let mut total: i128 = 0;
    let mut parts = 0;
    if !date.is_empty() {
        total += whole(date.strip_suffix('D')?)? * 86_400 * NANOS;
        parts += 1;
    }
    if let Some(mut t) = time {
        if t.is_empty() {
            return None;
        }
        // Each unit at most once, in order: H, M, S.
        for (unit, seconds) in [('H', 3_600), ('M', 60)] {
            if let Some(at) = t.find(unit) {
                total += whole(&t[..at])? * seconds * NANOS;
                t = &t[at + 1..];
                parts += 1;
            }
        }
        if !t.is_empty() {
            total += seconds(t.strip_suffix('S')?)?;
            parts += 1;
        }
    }
    if parts == 0 {
        return None;
    }
    if negative {
        total = -total;
    }
    let secs = i64::try_from(total / NANOS).ok()?;
    let nanos = i32::try_from(total % NANOS).ok()?;
    Some(Duration::new(secs, nanos))
}

/// A whole number of 1 to 20 digits (no sign, no fraction).
fn whole(digits: &str) -> Option<i128> {
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Seconds with an optional fraction of up to nine digits, in nanoseconds.
fn seconds(text: &str) -> Option<i128> {
    let (int, frac) = match text.find(['.', ',']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let secs = whole(int)?;
    let nanos = match frac {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) => return None,
        Some(f) => f.parse::<i128>().ok()? * 10_i128.pow(9 - f.len() as u32),
    };
    Some(secs * 1_000_000_000 + nanos)
}

/// Serde for a [`Duration`] field: ISO 8601 text in human-readable formats
/// (and the old `[seconds, nanoseconds]` pair read), `time`'s own form in
/// binary ones.
pub(crate) mod serde_duration {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::Duration;

    /// What a human-readable duration may be written as.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(crate) enum Readable {
        Text(String),
        Pair(i64, i32),
    }

    impl Readable {
        pub(crate) fn into_duration<E: serde::de::Error>(self) -> Result<Duration, E> {
            match self {
                Self::Text(t) => super::parse(&t).map_err(E::custom),
                Self::Pair(secs, nanos) if nanos.unsigned_abs() < 1_000_000_000 => {
                    Ok(Duration::new(secs, nanos))
                }
                Self::Pair(..) => Err(E::custom("a duration's nanoseconds are out of range")),
            }
        }
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&super::format(*d)) } else { d.serialize(s) }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        if d.is_human_readable() {
            Readable::deserialize(d)?.into_duration()
        } else {
            Duration::deserialize(d)
        }
    }
}

/// [`serde_duration`] for an `Option<Duration>` (`null` when absent).
pub(crate) mod serde_option_duration {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::Duration;

    use super::serde_duration::Readable;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) if s.is_human_readable() => s.serialize_some(&super::format(*d)),
            other => other.serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        if d.is_human_readable() {
            Option::<Readable>::deserialize(d)?.map(Readable::into_duration).transpose()
        } else {
            Option::<Duration>::deserialize(d)
        }
    }
}

/// [`serde_duration`] for a `Personal<Duration>`: the clear value as text
/// (`{"clear": "PT1.5S"}`), every other form as `Personal` writes it.
pub(crate) mod serde_personal_duration {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::Duration;

    use super::serde_duration::Readable;
    use crate::Personal;

    /// A duration written as ISO 8601 text.
    struct Text(Duration);

    impl Serialize for Text {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serde_duration::serialize(&self.0, s)
        }
    }

    pub(crate) fn serialize<S: Serializer>(p: &Personal<Duration>, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return p.serialize(s);
        }
        let text = match p {
            Personal::Clear(d) => Personal::Clear(Text(*d)),
            Personal::Pseudonym(ps) => Personal::Pseudonym(*ps),
            Personal::Generalised(g) => Personal::Generalised(g.clone()),
            Personal::Withheld => Personal::Withheld,
        };
        text.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Personal<Duration>, D::Error> {
        if !d.is_human_readable() {
            return Personal::<Duration>::deserialize(d);
        }
        Ok(match Personal::<Readable>::deserialize(d)? {
            Personal::Clear(r) => Personal::Clear(r.into_duration()?),
            Personal::Pseudonym(ps) => Personal::Pseudonym(ps),
            Personal::Generalised(g) => Personal::Generalised(g),
            Personal::Withheld => Personal::Withheld,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_exact_and_short() {
        for (d, text) in [
            (Duration::ZERO, "PT0S"),
            (Duration::seconds(90), "PT90S"),
            (Duration::milliseconds(1_234), "PT1.234S"),
            (Duration::nanoseconds(1), "PT0.000000001S"),
            (Duration::milliseconds(-2_500), "-PT2.5S"),
            (Duration::MAX, "PT9223372036854775807.999999999S"),
            (Duration::MIN, "-PT9223372036854775808.999999999S"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text).unwrap(), d, "{text}");
        }
    }

    #[test]
    fn parse_reads_days_hours_minutes_and_refuses_the_rest() {
        assert_eq!(parse("P1DT2H3M4.5S").unwrap(), Duration::new(86_400 + 7_200 + 180 + 4, 500_000_000));
        assert_eq!(parse("P2D").unwrap(), Duration::days(2));
        assert_eq!(parse("PT0,25S").unwrap(), Duration::milliseconds(250));
        for bad in [
            "",
            "P",
            "PT",
            "P1DT",
            "1S",
            "PT1",
            "PT1.S",
            "PT.5S",
            "PT1.0000000001S",
            "P1M",
            "P1Y",
            "P1W",
            "PT1M1H",
            "PT1H1H",
            "PT-1S",
            "--PT1S",
            "PT1S ",
            "P1D2D",
            "PT9223372036854775808S",
            "PT9223372036854775807H",
            "PT123456789012345678901S",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(matches!(err, Error::Rejected { what: "duration", .. }), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_duration_reads_back_from_its_text(secs in proptest::num::i64::ANY, nanos in 0..1_000_000_000i32) {
            let d = if secs < 0 { Duration::new(secs, -nanos) } else { Duration::new(secs, nanos) };
            proptest::prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }

    #[test]
    fn errors_do_not_repeat_the_text() {
        let err = parse("PT1S alice@example.com").unwrap_err().to_string();
        assert!(!err.contains("alice"), "{err}");
        assert!(err.starts_with("invalid duration (22 bytes, ' ' at byte 4)"), "{err}");
    }
}

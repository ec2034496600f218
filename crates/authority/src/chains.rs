//! Certificate chains verified in full, remembered by the digest of their
//! bytes, so that the same bytes from the same peer are not verified again
//! on every connection. Both ends use it: the service for each device's
//! certificate (`server::verifier`), a device for the service's
//! certificate (`client::ServiceVerifier`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::UnixTime;

/// The validity of a DER certificate, in seconds since the Unix epoch, as
/// webpki reads and checks it (`not_before <= now <= not_after`); `None`
/// when it cannot be read (then nothing is remembered, and the chain is
/// verified in full on every connection).
///
/// Read by hand, so that a device's build holds no certificate parser of
/// its own (webpki keeps its reading to itself): the `tbsCertificate`'s
/// fifth element, after an optional explicit version, the serial number,
/// the signature algorithm and the issuer, is a sequence of two times, each
/// a `UTCTime` (`YYMMDDHHMMSSZ`, years 1950–2049 as RFC 5280 reads them)
/// or a `GeneralizedTime` (`YYYYMMDDHHMMSSZ`), in UTC, with DER's lengths
/// (the shortest form). Anything else (another tag, a fraction of a second,
/// a time zone, a day the month does not have, a year before 1970) is
/// `None`. Only certificates webpki has just accepted are read, and
/// [`Chains::remember`] keeps nothing whose window misses the time of
/// that verification; a test and a fuzz target hold it to x509-parser's
/// reading.
pub(crate) fn validity(der: &[u8]) -> Option<(u64, u64)> {
    const SEQUENCE: u8 = 0x30;
    let (cert, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        (_, rest) = element(rest, 0xa0)?;
    }
    for tag in [0x02, SEQUENCE, SEQUENCE] {
        (_, rest) = element(rest, tag)?;
    }
    let (window, _) = element(rest, SEQUENCE)?;
    let (not_before, rest) = time(window)?;
    let (not_after, rest) = time(rest)?;
    rest.is_empty().then_some((not_before, not_after))
}

/// The DER element of tag `tag` that `bytes` starts with: its content and
/// what follows it.
fn element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = bytes.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let (digits, after) = rest.split_at(n);
        rest = after;
        // DER: no leading zero byte, and the long form only from 128 on.
        if digits[0] == 0 {
            return None;
        }
        let len = digits.iter().fold(0usize, |len, &d| len << 8 | usize::from(d));
        if len < 0x80 {
            return None;
        }
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// One `UTCTime` or `GeneralizedTime` at the start of `bytes`, as seconds
/// since the Unix epoch, and what follows it.
fn time(bytes: &[u8]) -> Option<(u64, &[u8])> {
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    let tag = *bytes.first()?;
    let (text, rest) = element(bytes, tag)?;
    let (year, text) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = number(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (number(&text[..4])?, &text[4..]),
        _ => return None,
    };
    // MMDDHHMMSS then Z.
    if text[10] != b'Z' {
        return None;
    }
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|at| number(&text[at..at + 2]));
    let (month, day, hour, minute, second) = (month?, day?, hour?, minute?, second?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

/// ASCII decimal digits as a number; `None` for anything else.
fn number(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar from
/// 1970 on (Howard Hinnant's `days_from_civil`, for years that are not
/// negative).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Chains whose signatures were verified in full, by a digest of their
/// bytes, with the trust anchor that verified them (a digest of its
/// certificate) and their validity. A peer presents the same certificate
/// on every connection for the certificate's life; verifying the issuer's
/// signature on it again each time (an ECDSA verification: about a
/// seventh of the service's instructions a session, a sixth of a
/// device's CPU) learns nothing new: the signature on those exact bytes under
/// that key was valid and stays valid.
///
/// A remembered verification stands for a new one only when
///
/// * the bytes are exactly the ones verified (their digest: the caller
///   puts in it everything the verification looked at);
/// * the trust anchor is, as the caller holds it now, the very one that
///   verified them;
/// * the handshake's time is within the validity (expiry is checked on
///   every connection, as webpki checks it).
///
/// What every handshake still does: the handshake signature (proof that
/// the peer holds the certificate's key), and whatever the caller checks
/// after (the service: the register's revocation and registered key).
/// Only verifications that succeeded are remembered, so nothing a peer
/// sends can make a certificate trusted. Bounded by the `max` given to
/// [`Chains::new`]: when it is reached, the expired entries are forgotten,
/// and all of them if that frees less than a quarter (each peer is then
/// verified in full once more).
pub(crate) struct Chains {
    map: Mutex<HashMap<[u8; 32], Chain>>,
    max: usize,
    full: AtomicU64,
    remembered: AtomicU64,
}

struct Chain {
    /// The digest of the trust anchor that verified it.
    anchor: [u8; 32],
    not_before: u64,
    not_after: u64,
}

/// How often a verifier verified a peer certificate's chain in full, and
/// how often a remembered verification of the same bytes stood for one (a
/// handshake whose key proof then fails counts too): what the service's
/// `Authority::chain_verifications` answers (feature `server`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ChainVerifications {
    /// Chains verified in full (signatures checked) that passed.
    pub full: u64,
    /// Lookups where a remembered verification stood for a full one.
    pub remembered: u64,
}

impl Chains {
    /// Remembers at most `max` chains (about 100 bytes each).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
            full: AtomicU64::new(0),
            remembered: AtomicU64::new(0),
        }
    }

    pub(crate) fn stands_for(&self, digest: &[u8; 32], anchor: &[u8; 32], now: UnixTime) -> bool {
        let now = now.as_secs();
        let hit = lock(&self.map)
            .get(digest)
            .is_some_and(|c| c.anchor == *anchor && c.not_before <= now && now <= c.not_after);
        if hit {
            self.remembered.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub(crate) fn count_full(&self) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remember(
        &self,
        digest: [u8; 32],
        anchor: &[u8; 32],
        (not_before, not_after): (u64, u64),
        now: UnixTime,
    ) {
        // A verification that just passed at `now` lies within the window;
        // one that does not was read otherwise than webpki read it.
        if !(not_before..=not_after).contains(&now.as_secs()) {
            return;
        }
        let mut map = lock(&self.map);
        if map.len() >= self.max && !map.contains_key(&digest) {
            // Each pass over the map frees at least a quarter of it, so the
            // passes cost O(1) an insertion over time (one that freed a
            // single expired entry would run again at the next insertion).
            let now = now.as_secs();
            map.retain(|_, c| c.not_after >= now);
            if map.len() > self.max / 4 * 3 {
                map.clear();
            }
        }
        map.insert(digest, Chain { anchor: *anchor, not_before, not_after });
    }

    /// Forgets every remembered verification.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn clear(&self) {
        lock(&self.map).clear();
    }

    pub(crate) fn counts(&self) -> ChainVerifications {
        ChainVerifications {
            full: self.full.load(Ordering::Relaxed),
            remembered: self.remembered.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A map of digests stays consistent whatever panicked while holding it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;

    const MAX: usize = 1_000;

    fn digest(i: usize) -> [u8; 32] {
        Sha256::digest(i.to_le_bytes()).into()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    /// A self-signed certificate valid from `from` to `to` (unix seconds).
    fn certificate(from: i64, to: i64) -> Vec<u8> {
        let at = |secs| time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["service.example".to_string()]).unwrap();
        (params.not_before, params.not_after) = (at(from), at(to));
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    /// 1970-01-01 to 9999-12-31 23:59:59: rcgen writes years before 2050
    /// as `UTCTime`, the others as `GeneralizedTime`.
    const LAST: i64 = 253_402_300_799;

    #[test]
    fn the_validity_read_by_hand_is_the_one_written() {
        let edges = [
            (0, 1),
            (951_782_400, 951_868_799),     // 2000-02-29, a leap day of a century
            (2_524_607_999, 2_524_608_000), // 2049-12-31 23:59:59 | 2050-01-01 (UTCTime | GeneralizedTime)
            (4_107_542_399, 4_107_542_400), // 2100-02-28 23:59:59 | 2100-03-01 (no leap day)
            (1_800_000_000, LAST),
        ];
        // And pseudo-random pairs over the whole range (a fixed LCG).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            i64::try_from((x >> 11) % (LAST as u64 + 1)).unwrap()
        };
        let random: Vec<(i64, i64)> = (0..200).map(|_| (next(), next())).collect();
        for (from, to) in edges.into_iter().chain(random) {
            let der = certificate(from, to);
            assert_eq!(validity(&der), Some((from as u64, to as u64)), "{from} to {to}");
            // Cut anywhere: nothing, never a panic.
            let cut = der.len() * (from as usize % 7 + 1) / 8;
            assert_eq!(validity(&der[..cut]), None);
        }
    }

    #[test]
    fn a_time_is_read_only_in_the_forms_der_allows() {
        let utc = |text: &str| {
            let mut der = vec![0x17, text.len() as u8];
            der.extend(text.as_bytes());
            time(&der).map(|(t, _)| t)
        };
        let generalized = |text: &str| {
            let mut der = vec![0x18, text.len() as u8];
            der.extend(text.as_bytes());
            time(&der).map(|(t, _)| t)
        };
        assert_eq!(utc("700101000000Z"), Some(0));
        assert_eq!(utc("240229235959Z"), Some(1_709_251_199));
        assert_eq!(utc("491231235959Z"), Some(2_524_607_999));
        assert_eq!(generalized("20500101000000Z"), Some(2_524_608_000));
        assert_eq!(generalized("99991231235959Z"), Some(LAST as u64));
        for refused in [
            "500101000000Z", // 1950: before 1970
            "250229000000Z", // no 29 February in 2025
            "260431000000Z", // no 31 April
            "261301000000Z", // month 13
            "260100000000Z", // day 0
            "260101240000Z", // hour 24
            "260101006000Z", // minute 60
            "260101000060Z", // second 60
            "2601010000Z",   // no seconds
            "260101000000",  // no zone
            "260101000000+0100Z",
            "2601010000001",
            "26010100000aZ",
            "26-101000000Z",
        ] {
            assert_eq!(utc(refused), None, "{refused}");
        }
        assert_eq!(generalized("19691231235959Z"), None);
        assert_eq!(generalized("21000229000000Z"), None);
        assert_eq!(generalized("20260101000000.5Z"), None);
        assert_eq!(generalized("260101000000Z"), None, "a UTCTime's text under the other tag");
        // Lengths: the long form only from 128 on, without leading zeros.
        let mut long = vec![0x17, 0x81, 13];
        long.extend(b"260101000000Z");
        assert_eq!(time(&long), None);
        assert_eq!(element(&[0x30, 0x82, 0x00, 0x80], 0x30), None);
        assert_eq!(element(&[0x30, 0x85, 1, 0, 0, 0, 0], 0x30), None);
        assert_eq!(element(&[0x30, 0x03, 1, 2], 0x30), None, "shorter than it says");
        assert_eq!(element(&[0x31, 0x00], 0x30), None, "another tag");
        assert_eq!(element(&[0x30, 0x00, 9], 0x30), Some((&[][..], &[9][..])));
    }

    #[test]
    fn a_window_that_misses_the_time_of_its_verification_is_not_remembered() {
        let (chains, anchor) = (Chains::new(MAX), digest(100));
        chains.remember(digest(1), &anchor, (1_000, 2_000), at(2_001));
        chains.remember(digest(2), &anchor, (1_000, 2_000), at(999));
        assert!(!chains.stands_for(&digest(1), &anchor, at(1_500)));
        assert!(!chains.stands_for(&digest(2), &anchor, at(1_500)));
        assert_eq!(lock(&chains.map).len(), 0);
    }

    #[test]
    fn a_remembered_chain_stands_in_exactly_within_its_validity_and_for_its_anchor() {
        let (chains, anchor, other) = (Chains::new(MAX), digest(100), digest(101));
        chains.remember(digest(1), &anchor, (1_000, 2_000), at(1_500));
        // As webpki: refused when `now < not_before` or `now > not_after`.
        for (now, stands) in [(999, false), (1_000, true), (1_500, true), (2_000, true), (2_001, false)] {
            assert_eq!(chains.stands_for(&digest(1), &anchor, at(now)), stands, "at {now}");
        }
        // Another anchor's verification of the same bytes, or other bytes.
        assert!(!chains.stands_for(&digest(1), &other, at(1_500)));
        assert!(!chains.stands_for(&digest(2), &anchor, at(1_500)));
        assert_eq!(chains.counts(), ChainVerifications { full: 0, remembered: 3 });
    }

    #[test]
    fn what_is_remembered_stays_within_its_bound_expired_entries_go_first() {
        let (chains, anchor) = (Chains::new(MAX), digest(100_000));
        let now = at(1_000);
        // Half of them expired by `now`.
        for i in 0..MAX {
            let not_after = if i % 2 == 0 { 999 } else { 2_000 };
            chains.remember(digest(i), &anchor, (0, not_after), at(500));
        }
        assert_eq!(lock(&chains.map).len(), MAX);
        // Remembering one already there forgets nothing.
        chains.remember(digest(1), &anchor, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), MAX);
        // A new one: the expired half goes, the valid half stays.
        chains.remember(digest(MAX), &anchor, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), MAX / 2 + 1);
        assert!(chains.stands_for(&digest(1), &anchor, now));
        assert!(chains.stands_for(&digest(MAX), &anchor, now));
        // Fewer than a quarter expired: all go but the new one (else each
        // insertion would scan the whole map to free one entry).
        let chains = Chains::new(MAX);
        for i in 0..MAX {
            let not_after = if i % 8 == 0 { 999 } else { 2_000 };
            chains.remember(digest(i), &anchor, (0, not_after), at(500));
        }
        chains.remember(digest(MAX), &anchor, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), 1);
        // All valid and full: all go but the new one.
        let chains = Chains::new(MAX);
        for i in 0..MAX {
            chains.remember(digest(i), &anchor, (0, 2_000), now);
        }
        assert_eq!(lock(&chains.map).len(), MAX);
        chains.remember(digest(MAX + 1), &anchor, (0, 2_000), now);
        assert_eq!(lock(&chains.map).len(), 1);
        assert!(chains.stands_for(&digest(MAX + 1), &anchor, now));
    }
}

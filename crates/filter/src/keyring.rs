//! A customer's pseudonym key ring: every key it has made, by id, with
//! when it was created, retired (a newer key took over) and destroyed (its
//! secret erased). The newest live key pseudonymises; every live key can
//! still compute a person's pseudonym for export and erasure; a destroyed
//! key can compute nothing, so the tokens made with it are unlinkable to
//! any value from then on (docs/KEYS.md).
//!
//! The ring is pure data: randomness and files are the caller's (the
//! agent's `privtel_agent::rotate_key_ring` writes one 0600).
//!
//! ```
//! use privtel_filter::KeyRing;
//! use privtel_model::{KeyId, Timestamp};
//!
//! let t0 = Timestamp::from_unix_seconds(1_800_000_000)?;
//! let t1 = Timestamp::from_unix_seconds(1_800_086_400)?;
//! let mut ring = KeyRing::new();
//! let first = ring.rotate([1; 32], t0)?;
//! let second = ring.rotate([2; 32], t1)?;
//! assert_eq!(ring.current().map(|k| k.id()), Some(second));
//! assert_eq!(ring.live().count(), 2, "the retired key still computes pseudonyms");
//! ring.destroy(first, t1)?;
//! assert!(ring.key(first).is_none(), "its secret is gone");
//! assert_eq!(KeyRing::from_text(&ring.to_text())?, ring);
//! assert!(!ring.to_text().contains(&"01".repeat(32)), "no destroyed secret is written");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use privtel_model::{KeyId, Timestamp};
use time::Duration;

use crate::filter::PseudonymKey;

/// First line of a key ring's text form: the format and its version.
pub const KEY_RING_HEADER: &str = "privtel key ring v1";

/// What went wrong with a key ring. Names a key id or a line, never a
/// secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// No key of that id was ever in the ring.
    #[error("key ring: no key {0}")]
    Unknown(KeyId),
    /// The current key cannot be destroyed: devices pseudonymise with it.
    /// Rotate first.
    #[error("key ring: key {0} is the current key; rotate before destroying it")]
    Current(KeyId),
    /// Key ids are exhausted (more than 4 billion rotations).
    #[error("key ring: no key id left after {0}")]
    Exhausted(KeyId),
    /// The text form does not parse.
    #[error("key ring line {line}: expected {expected}")]
    Syntax {
        /// The line (1-based).
        line: usize,
        /// What the line should have held.
        expected: &'static str,
    },
}

/// One key of a ring.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    /// `None` once destroyed.
    secret: Option<[u8; 32]>,
    created: i64,
    retired: Option<i64>,
    destroyed: Option<i64>,
}

/// A customer's pseudonym keys by id. `Debug` shows ids and dates, never
/// a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: BTreeMap<u32, Entry>,
}

/// What [`KeyRing::maintain`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// The new current key, if the schedule asked for one.
    pub rotated: Option<KeyId>,
    /// Retired keys destroyed because their last records have expired.
    pub destroyed: Vec<KeyId>,
}

/// The state of one key, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyState {
    /// The key's id.
    pub id: KeyId,
    /// When it was made.
    pub created: Timestamp,
    /// When a newer key took over, if one did.
    pub retired: Option<Timestamp>,
    /// When its secret was erased, if it was.
    pub destroyed: Option<Timestamp>,
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(secs).unwrap_or_else(|_| Timestamp::new(time::OffsetDateTime::UNIX_EPOCH))
}

impl KeyRing {
    /// An empty ring (no current key: pseudonymised fields are withheld).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `secret` (32 bytes from a CSPRNG) the current key under the
    /// next id, retiring the previous one at `now`; returns the new id.
    ///
    /// # Errors
    ///
    /// [`KeyRingError::Exhausted`] when no id is left.
    pub fn rotate(&mut self, secret: [u8; 32], now: Timestamp) -> Result<KeyId, KeyRingError> {
        let now = now.unix_seconds();
        let next = match self.keys.keys().next_back() {
            Some(&last) => last.checked_add(1).ok_or(KeyRingError::Exhausted(KeyId::new(last)))?,
            None => 1,
        };
        for entry in self.keys.values_mut() {
            entry.retired.get_or_insert(now);
        }
        self.keys.insert(next, Entry { secret: Some(secret), created: now, retired: None, destroyed: None });
        Ok(KeyId::new(next))
    }

    /// The key devices pseudonymise with: the newest, if it is live.
    pub fn current(&self) -> Option<PseudonymKey> {
        let (&id, entry) = self.keys.iter().next_back()?;
        entry.secret.map(|s| PseudonymKey::new(KeyId::new(id), s))
    }

    /// The ring a device needs: the current key alone. A device never
    /// needs a retired key (it only pseudonymises), so a device that is
    /// taken holds no key of an earlier period (docs/KEYS.md).
    pub fn for_devices(&self) -> Self {
        let keys = self.keys.iter().next_back().filter(|(_, e)| e.secret.is_some());
        Self { keys: keys.map(|(&id, e)| (id, e.clone())).into_iter().collect() }
    }

    /// A live key by id; `None` if unknown or destroyed.
    pub fn key(&self, id: KeyId) -> Option<PseudonymKey> {
        let n = id.get();
        self.keys.get(&n)?.secret.map(|s| PseudonymKey::new(id, s))
    }

    /// Every key that still has its secret, oldest first.
    pub fn live(&self) -> impl Iterator<Item = PseudonymKey> + '_ {
        self.keys.iter().filter_map(|(&id, e)| e.secret.map(|s| PseudonymKey::new(KeyId::new(id), s)))
    }

    /// Every key ever made, oldest first, without secrets.
    pub fn states(&self) -> impl Iterator<Item = KeyState> + '_ {
        self.keys.iter().map(|(&id, e)| KeyState {
            id: KeyId::new(id),
            created: at(e.created),
            retired: e.retired.map(at),
            destroyed: e.destroyed.map(at),
        })
    }

    /// Erases the secret of a retired key at `now` (recorded; the id is
    /// never reused). Returns `false` if it was already destroyed.
    ///
    /// # Errors
    ///
    /// [`KeyRingError::Unknown`] for an id never made,
    /// [`KeyRingError::Current`] for the current key.
    pub fn destroy(&mut self, id: KeyId, now: Timestamp) -> Result<bool, KeyRingError> {
        let n = id.get();
        let newest = self.keys.keys().next_back().copied();
        let entry = self.keys.get_mut(&n).ok_or(KeyRingError::Unknown(id))?;
        if entry.destroyed.is_some() {
            return Ok(false);
        }
        if newest == Some(n) {
            return Err(KeyRingError::Current(id));
        }
        entry.secret = None;
        entry.destroyed = Some(now.unix_seconds());
        Ok(true)
    }

    /// Runs the customer's schedule at `now`: rotates (to `fresh()`) when
    /// there is no key or the current one is older than `rotate_every`,
    /// then destroys every retired key retired longer ago than
    /// `keep_after_retired` — the records made with it have expired by then
    /// when that is the longest retention plus the time a device may take
    /// to pick up a new key.
    ///
    /// # Errors
    ///
    /// [`KeyRingError::Exhausted`] when no id is left to rotate to.
    pub fn maintain(
        &mut self,
        now: Timestamp,
        rotate_every: Option<Duration>,
        keep_after_retired: Duration,
        fresh: impl FnOnce() -> [u8; 32],
    ) -> Result<Maintenance, KeyRingError> {
        let mut done = Maintenance::default();
        let secs = now.unix_seconds();
        let due = match (self.keys.iter().next_back(), rotate_every) {
            (None, _) => true,
            (Some((_, e)), _) if e.secret.is_none() => true,
            (Some((_, e)), Some(every)) => secs.saturating_sub(e.created) >= every.whole_seconds(),
            (Some(_), None) => false,
        };
        if due {
            done.rotated = Some(self.rotate(fresh(), now)?);
        }
        let keep = keep_after_retired.whole_seconds();
        let expired: Vec<u32> = self
            .keys
            .iter()
            .filter(|(_, e)| e.destroyed.is_none())
            .filter(|(_, e)| e.retired.is_some_and(|r| secs.saturating_sub(r) >= keep))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if self.destroy(KeyId::new(id), now)? {
                done.destroyed.push(KeyId::new(id));
            }
        }
        Ok(done)
    }

    /// The text form (a file the caller keeps 0600): the header line, then
    /// one line a key: `k<id> <created> <retired|-> <destroyed|->
    /// <secret in hex|->`, times in Unix seconds. A destroyed key's secret
    /// is not written.
    pub fn to_text(&self) -> String {
        let mut out = format!("{KEY_RING_HEADER}\n");
        let opt = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
        for (id, e) in &self.keys {
            let secret = e.secret.map_or_else(
                || "-".to_owned(),
                |s| {
                    s.iter().fold(String::with_capacity(64), |mut h, b| {
                        let _ = write!(h, "{b:02x}");
                        h
                    })
                },
            );
            let _ = writeln!(out, "k{id} {} {} {} {secret}", e.created, opt(e.retired), opt(e.destroyed));
        }
        out
    }

    /// Reads the text form of [`KeyRing::to_text`].
    ///
    /// # Errors
    ///
    /// [`KeyRingError::Syntax`] naming the first line that does not parse
    /// (a missing or other header, a field out of place, ids not
    /// increasing, a secret on a destroyed key or none on a live one).
    pub fn from_text(text: &str) -> Result<Self, KeyRingError> {
        let mut lines = text.lines();
        if lines.next() != Some(KEY_RING_HEADER) {
            return Err(KeyRingError::Syntax { line: 1, expected: "the header 'privtel key ring v1'" });
        }
        let mut ring = Self::new();
        for (i, line) in lines.enumerate() {
            let line_no = i + 2;
            let bad = |expected| KeyRingError::Syntax { line: line_no, expected };
            if line.trim().is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            let [id, created, retired, destroyed, secret] = parts[..] else {
                return Err(bad("5 fields: k<id> <created> <retired|-> <destroyed|-> <secret|->"));
            };
            let id: u32 = id
                .strip_prefix('k')
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .ok_or(bad("a key id k<1..>"))?;
            if ring.keys.keys().next_back().is_some_and(|last| *last >= id) {
                return Err(bad("key ids in increasing order"));
            }
            let time = |s: &str| s.parse::<i64>().ok().filter(|t| Timestamp::from_unix_seconds(*t).is_ok());
            let opt_time = |s: &str| if s == "-" { Some(None) } else { time(s).map(Some) };
            let created = time(created).ok_or(bad("a creation time in Unix seconds"))?;
            let retired = opt_time(retired).ok_or(bad("a retirement time or '-'"))?;
            let destroyed = opt_time(destroyed).ok_or(bad("a destruction time or '-'"))?;
            let secret =
                if secret == "-" { None } else { Some(hex32(secret).ok_or(bad("64 hex digits or '-'"))?) };
            if secret.is_some() == destroyed.is_some() {
                return Err(bad("a secret exactly when the key is not destroyed"));
            }
            ring.keys.insert(id, Entry { secret, created, retired, destroyed });
        }
        Ok(ring)
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *o = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.states()).finish()
    }
}

/// docs/KEYS.md's examples, compiled and run as doctests.
#[doc = include_str!("../../../docs/KEYS.md")]
#[cfg(doctest)]
pub struct KeysDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(days: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_800_000_000 + days * 86_400).unwrap()
    }

    #[test]
    fn rotation_retires_the_previous_key_and_destruction_erases_its_secret() {
        let mut ring = KeyRing::new();
        assert!(ring.current().is_none());
        let k1 = ring.rotate([1; 32], t(0)).unwrap();
        let k2 = ring.rotate([2; 32], t(90)).unwrap();
        assert_eq!((k1, k2), (KeyId::new(1), KeyId::new(2)));
        let states: Vec<_> = ring.states().collect();
        assert_eq!(states[0].retired, Some(t(90)));
        assert_eq!(states[1].retired, None);
        assert_eq!(ring.destroy(k2, t(91)), Err(KeyRingError::Current(k2)));
        assert_eq!(ring.destroy(KeyId::new(9), t(91)), Err(KeyRingError::Unknown(KeyId::new(9))));
        assert_eq!(ring.destroy(k1, t(91)), Ok(true));
        assert_eq!(ring.destroy(k1, t(92)), Ok(false), "destroyed once, recorded once");
        assert!(ring.key(k1).is_none());
        assert_eq!(ring.live().map(|k| k.id()).collect::<Vec<_>>(), vec![k2]);
        assert_eq!(ring.states().next().unwrap().destroyed, Some(t(91)));
        let devices = ring.for_devices();
        assert_eq!(devices.live().map(|k| k.id()).collect::<Vec<_>>(), vec![k2]);
        assert_eq!(devices.states().count(), 1, "nothing of the earlier keys");
        assert_eq!(devices.current().map(|k| k.id()), ring.current().map(|k| k.id()));
        // Ids are never reused, even after a destruction.
        assert_eq!(ring.rotate([3; 32], t(180)).unwrap(), KeyId::new(3));
    }

    #[test]
    fn the_schedule_rotates_when_due_and_destroys_keys_whose_records_expired() {
        let mut ring = KeyRing::new();
        let every = Some(Duration::days(90));
        let keep = Duration::days(37);
        let m = ring.maintain(t(0), every, keep, || [1; 32]).unwrap();
        assert_eq!(m.rotated, Some(KeyId::new(1)), "no key: one is made");
        assert_eq!(ring.maintain(t(89), every, keep, || [2; 32]).unwrap(), Maintenance::default());
        let m = ring.maintain(t(90), every, keep, || [2; 32]).unwrap();
        assert_eq!(m, Maintenance { rotated: Some(KeyId::new(2)), destroyed: vec![] });
        assert_eq!(ring.maintain(t(126), every, keep, || [3; 32]).unwrap().destroyed, vec![]);
        let m = ring.maintain(t(127), every, keep, || [3; 32]).unwrap();
        assert_eq!(m.destroyed, vec![KeyId::new(1)]);
        assert!(ring.key(KeyId::new(1)).is_none());
        // On demand only: no schedule never rotates a live key.
        assert_eq!(ring.maintain(t(900), None, keep, || [4; 32]).unwrap().rotated, None);
    }

    #[test]
    fn the_text_form_round_trips_and_refuses_what_it_cannot_read() {
        let mut ring = KeyRing::new();
        ring.rotate([0xab; 32], t(0)).unwrap();
        ring.rotate([0xcd; 32], t(1)).unwrap();
        ring.destroy(KeyId::new(1), t(2)).unwrap();
        let text = ring.to_text();
        assert!(!text.contains(&"ab".repeat(32)), "{text}");
        assert!(text.contains(&"cd".repeat(32)), "{text}");
        assert_eq!(KeyRing::from_text(&text).unwrap(), ring);
        let live = format!("k1 1800000000 - - {}", "00".repeat(32));
        for (bad, line) in [
            (String::new(), 1),
            ("privtel key ring v2\n".to_owned(), 1),
            (format!("{KEY_RING_HEADER}\nk1 1800000000 - -"), 2),
            (format!("{KEY_RING_HEADER}\nk0 1800000000 - - {}", "00".repeat(32)), 2),
            (format!("{KEY_RING_HEADER}\n{live}\n{live}"), 3),
            (format!("{KEY_RING_HEADER}\nk1 1800000000 - - {}", "0g".repeat(32)), 2),
            (format!("{KEY_RING_HEADER}\nk1 1800000000 - 1800000001 {}", "00".repeat(32)), 2),
            (format!("{KEY_RING_HEADER}\nk1 1800000000 - - -"), 2),
            (format!("{KEY_RING_HEADER}\nk1 x - - -"), 2),
        ] {
            match KeyRing::from_text(&bad) {
                Err(KeyRingError::Syntax { line: l, .. }) => assert_eq!(l, line, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut ring = KeyRing::new();
        ring.rotate([0xee; 32], t(0)).unwrap();
        let debug = format!("{ring:?}");
        assert!(debug.contains("KeyId(1)"), "{debug}");
        assert!(!debug.contains("238") && !debug.to_lowercase().contains("eeee"), "{debug}");
    }
}

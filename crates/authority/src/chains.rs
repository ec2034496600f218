//! Certificate chains verified in full, remembered by the digest of their
//! bytes, so that the same bytes from the same peer are not verified again
//! on every connection. Both ends use it: the service for each device's
//! certificate (`server::verifier`), a device for the service's
//! certificate (`client::ServiceVerifier`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::UnixTime;

/// The validity of a certificate, in seconds since the Unix epoch, as
/// webpki checks it (`not_before <= now <= not_after`); `None` when it
/// cannot be read (then nothing is remembered).
pub(crate) fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = cert.validity();
    let not_before = u64::try_from(validity.not_before.timestamp()).ok()?;
    let not_after = u64::try_from(validity.not_after.timestamp()).ok()?;
    Some((not_before, not_after))
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

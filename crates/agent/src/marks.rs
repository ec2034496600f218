//! What the agent remembers between runs besides read positions, kept in
//! the spool as [`privtel_store::Mark`]s: the processes already reported,
//! when each binary last ran and was last evaluated, when each domain was
//! last looked up. Enhance's timing is a function of these marks and the
//! [`Schedule`], so it survives a restart.
//!
//! Keys are BLAKE3 hashes keyed with the agent's mark key
//! (`PATH.marks.key`, 0600, beside the spool), truncated to 16 bytes:
//! the spool file holds no path, digest or domain name for them. Which
//! sites a person visited is not written down in a form that can be read
//! back without that key; the agent only needs to recognise a domain it is
//! asked about again, never to list them, so a keyed hash is all it keeps.

use privtel_model::{Digest, Domain, Timestamp};
use privtel_store::{Mark, MarkChange};

use crate::error::AgentError;
use crate::outbox::Outbox;
use crate::schedule::Schedule;

/// The scope of the marks of processes already reported.
pub(crate) const PROCESS: &str = "process";
/// The scope of the marks of binaries (last active, last evaluated).
pub(crate) const BINARY: &str = "binary";
/// The scope of the marks of domains (last evaluated).
pub(crate) const DOMAIN: &str = "domain";

/// How long a binary's mark is kept after it last ran and was last
/// evaluated (90 days): past the seven days that make it active, so a
/// binary that stopped running is recognised, and not looked up again as
/// if new, for a season.
pub(crate) const BINARY_MARK_DAYS: i64 = 90;
/// How long a domain's mark is kept after its last lookup (30 days).
pub(crate) const DOMAIN_MARK_DAYS: i64 = 30;

/// The secret the marks' keys are derived with. `Debug` shows no byte.
pub(crate) struct MarkKey([u8; 32]);

impl MarkKey {
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        Self(secret)
    }

    /// The key of `parts` in `scope`: keyed BLAKE3 of the scope and the
    /// length-prefixed parts, 16 bytes.
    pub(crate) fn key(&self, scope: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(scope.as_bytes()).update(&[0]);
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes()).update(part);
        }
        h.finalize().as_bytes()[..16].to_vec()
    }
}

impl std::fmt::Debug for MarkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MarkKey(<secret>)")
    }
}

/// Something enrichment looks up.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lookup<'a> {
    Binary(&'a Digest),
    Domain(&'a Domain),
}

impl Lookup<'_> {
    fn scoped(self, key: &MarkKey) -> (&'static str, Vec<u8>) {
        match self {
            Self::Binary(d) => (BINARY, binary_key(key, d)),
            Self::Domain(d) => (DOMAIN, key.key(DOMAIN, &[d.as_str().as_bytes()])),
        }
    }
}

/// The mark key of a binary.
pub(crate) fn binary_key(key: &MarkKey, sha256: &Digest) -> Vec<u8> {
    key.key(BINARY, &[sha256.as_bytes()])
}

/// `at` to the hour, toward the past: when a binary last ran is kept no
/// finer (an hour early at most: the seven-day window may close up to an
/// hour sooner).
pub(crate) fn hour(at: Timestamp) -> Timestamp {
    let secs = at.unix_seconds();
    Timestamp::from_unix_seconds(secs - secs.rem_euclid(3600)).unwrap_or(at)
}

/// Whether `lookup` is due at `now`: never evaluated, or evaluated at
/// least [`Schedule::reevaluate_every`] ago and active within
/// [`Schedule::active_within`]. When the agent does not know when it was
/// last active (a binary only seen by a scan, a domain), the sighting it
/// is asked about counts as activity now — the behaviour before the
/// marks were kept.
pub(crate) fn is_due(
    outbox: &Outbox,
    key: &MarkKey,
    schedule: &Schedule,
    lookup: Lookup<'_>,
    now: Timestamp,
) -> Result<bool, AgentError> {
    let (scope, k) = lookup.scoped(key);
    Ok(match outbox.mark(scope, &k)? {
        None | Some(Mark { last_evaluated: None, .. }) => true,
        Some(Mark { last_evaluated: Some(done), last_active, .. }) => {
            schedule.needs_evaluation(last_active.unwrap_or(now), Some(done), now)
        }
    })
}

/// The change recording that `lookup` was evaluated at `now`.
pub(crate) fn evaluated(key: &MarkKey, lookup: Lookup<'_>, now: Timestamp) -> MarkChange {
    let (scope, key) = lookup.scoped(key);
    MarkChange::Evaluated { scope, key, at: now }
}

/// The changes that forget long-unused binaries and domains.
pub(crate) fn forget_old(now: Timestamp) -> [MarkChange; 2] {
    let before = |days| now.checked_sub(time::Duration::days(days)).unwrap_or(Timestamp::UNIX_EPOCH);
    [
        MarkChange::ForgetBefore { scope: BINARY, before: before(BINARY_MARK_DAYS) },
        MarkChange::ForgetBefore { scope: DOMAIN, before: before(DOMAIN_MARK_DAYS) },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_scope_part_and_secret() {
        let (a, b) = (MarkKey::new([1; 32]), MarkKey::new([2; 32]));
        let k = a.key(DOMAIN, &[b"example.com"]);
        assert_eq!(k.len(), 16);
        assert_eq!(k, a.key(DOMAIN, &[b"example.com"]));
        assert_ne!(k, a.key(BINARY, &[b"example.com"]));
        assert_ne!(k, a.key(DOMAIN, &[b"example.org"]));
        assert_ne!(k, b.key(DOMAIN, &[b"example.com"]));
        // Length prefixes: moving a byte between parts changes the key.
        assert_ne!(a.key(PROCESS, &[b"ab", b"c"]), a.key(PROCESS, &[b"a", b"bc"]));
        assert_eq!(format!("{a:?}"), "MarkKey(<secret>)");
    }

    #[test]
    fn hours_round_toward_the_past() {
        let t: Timestamp = "2026-11-27T10:59:59Z".parse().unwrap();
        assert_eq!(hour(t).to_string(), "2026-11-27T10:00:00Z");
        assert_eq!(hour(hour(t)), hour(t));
    }
}

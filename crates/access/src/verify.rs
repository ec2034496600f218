//! What a customer runs: the log against a checkpoint it holds, and two
//! checkpoints against each other.

use crate::checkpoint::{Checkpoint, PublicKey};
use crate::entry::{Entry, GENESIS};
use crate::error::VerifyError;
use crate::log::decode_log;

/// What a log that verified holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Entries the checkpoint covers (all checked against it).
    pub covered: u64,
    /// Entries after it (their chain checked; they are vouched for only by
    /// a later checkpoint).
    pub beyond: u64,
}

/// Checks `entries` (the whole log, from sequence number 0) against a
/// checkpoint signed by `key`: the signature, every entry at its place,
/// every entry carrying the hash of the one before, and the hash of the
/// last covered entry equal to the checkpoint's head. Entries after the
/// checkpoint must chain on too.
///
/// Detects any edited, deleted, inserted or reordered entry among those
/// the checkpoint covers, and a log cut below the checkpoint's size.
///
/// # Errors
///
/// The first problem found ([`VerifyError`]).
pub fn verify(entries: &[Entry], checkpoint: &Checkpoint, key: &PublicKey) -> Result<Verified, VerifyError> {
    if !checkpoint.signed_by(key) {
        return Err(VerifyError::Signature);
    }
    let heads = chain(entries)?;
    let have = entries.len() as u64;
    if have < checkpoint.size {
        return Err(VerifyError::Truncated { have, expected: checkpoint.size });
    }
    let head = head_at(&heads, checkpoint.size);
    if head != checkpoint.head {
        return Err(VerifyError::Head { size: checkpoint.size });
    }
    Ok(Verified { covered: checkpoint.size, beyond: have - checkpoint.size })
}

/// [`verify`] of a log file's raw bytes.
///
/// # Errors
///
/// [`VerifyError::Decode`] if they are not a log; else as [`verify`].
pub fn verify_bytes(log: &[u8], checkpoint: &Checkpoint, key: &PublicKey) -> Result<Verified, VerifyError> {
    verify(&decode_log(log)?, checkpoint, key)
}

/// Checks that `later` extends `earlier`: both signed by `key`, the later
/// no smaller and not dated before, and `entries` (the log as of `later`
/// or after) verifying against `later` and holding, at the earlier size,
/// the earlier head. A log rewritten between the two checkpoints, or cut
/// and regrown, fails.
///
/// # Errors
///
/// The first problem found ([`VerifyError`]).
pub fn consistent(
    entries: &[Entry],
    earlier: &Checkpoint,
    later: &Checkpoint,
    key: &PublicKey,
) -> Result<(), VerifyError> {
    if !earlier.signed_by(key) || !later.signed_by(key) {
        return Err(VerifyError::Signature);
    }
    if later.size < earlier.size {
        return Err(VerifyError::Shrunk { earlier: earlier.size, later: later.size });
    }
    if later.at < earlier.at {
        return Err(VerifyError::Backdated { earlier: earlier.at, later: later.at });
    }
    verify(entries, later, key)?;
    // `verify` checked the whole chain: only the earlier head remains.
    let heads = chain(entries)?;
    if head_at(&heads, earlier.size) != earlier.head {
        return Err(VerifyError::Head { size: earlier.size });
    }
    Ok(())
}

/// Checks every entry's place and link; returns each entry's hash.
fn chain(entries: &[Entry]) -> Result<Vec<[u8; 32]>, VerifyError> {
    let mut hashes = Vec::with_capacity(entries.len());
    let mut prev = GENESIS;
    for (position, e) in (0u64..).zip(entries) {
        if e.seq != position {
            return Err(VerifyError::Sequence { position, found: e.seq });
        }
        if e.prev_hash != prev {
            return Err(VerifyError::Chain { seq: e.seq });
        }
        prev = e.hash();
        hashes.push(prev);
    }
    Ok(hashes)
}

/// The head after `size` entries.
fn head_at(hashes: &[[u8; 32]], size: u64) -> [u8; 32] {
    usize::try_from(size)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| hashes.get(i))
        .copied()
        .unwrap_or(GENESIS)
}

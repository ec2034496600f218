//! Event ids derived from what identifies an event at its source.

use privtel_model::EventId;

/// The event id for `parts` under `context`: the same parts always give the
/// same id, so the service recognises an event sent twice as a replay
/// (where [`EventId::random`] would make it a second event).
///
/// `context` is a BLAKE3 key-derivation context that names the collector
/// and is fixed in its source code (`"privtel-agent 2026-11 scan event
/// id"`): collectors with different contexts never derive the same id from
/// the same parts. Each part is prefixed with its length, so no two lists
/// of parts hash alike by moving bytes from one part to the next.
///
/// The id is the first 16 bytes of
/// `BLAKE3-derive_key(context, len(p1) ‖ p1 ‖ len(p2) ‖ p2 ‖ …)`, each
/// length a little-endian `u64`. Stored ids depend on this: it never
/// changes (the agent's ids are pinned by tests).
///
/// ```
/// use privtel_hash::derive_event_id;
///
/// let line = |offset: u64| {
///     derive_event_id("example 2026-11 log line", &[b"app.log", &offset.to_le_bytes()])
/// };
/// assert_eq!(line(42), line(42));
/// assert_ne!(line(42), line(43));
/// ```
pub fn derive_event_id(context: &str, parts: &[&[u8]]) -> EventId {
    id_of(blake3::Hasher::new_derive_key(context), parts)
}

/// The id of `parts` through `h`: each part after its length (a
/// little-endian `u64`), the first 16 bytes of the digest.
fn id_of(mut h: blake3::Hasher, parts: &[&[u8]]) -> EventId {
    for part in parts {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    EventId::from_bytes(b)
}

/// The event id for `parts` under `context`, keyed with a secret `key`:
/// like [`derive_event_id`], the same key and parts always give the same
/// id (so a replay from the device that holds the key is recognised), but
/// nobody without the key can compute it. An unkeyed id over something the
/// policy withholds (a path, a login, an exact instant) would give it back
/// to whoever tests guesses with one hash each; this one does not.
///
/// The id is the first 16 bytes of
/// `BLAKE3-keyed(key, len(context) ‖ context ‖ len(p1) ‖ p1 ‖ len(p2) ‖ p2 ‖ …)`,
/// each length a little-endian `u64`. It never changes (pinned by a test).
///
/// ```
/// use privtel_hash::{derive_event_id, derive_keyed_event_id};
///
/// let (key, other) = ([7u8; 32], [8u8; 32]);
/// let id = |key: &[u8; 32]| derive_keyed_event_id(key, "example 2027-01 log line", &[b"app.log"]);
/// assert_eq!(id(&key), id(&key));
/// assert_ne!(id(&key), id(&other));
/// assert_ne!(id(&key), derive_event_id("example 2027-01 log line", &[b"app.log"]));
/// ```
pub fn derive_keyed_event_id(key: &[u8; 32], context: &str, parts: &[&[u8]]) -> EventId {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&(context.len() as u64).to_le_bytes());
    h.update(context.as_bytes());
    id_of(h, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyed ids are stored by the service (its duplicate check): the
    /// derivation must never change.
    #[test]
    fn keyed_ids_are_pinned_and_depend_on_the_key() {
        let id = derive_keyed_event_id(&[1; 32], "x", &[b"a"]);
        assert_eq!(id.to_string(), "8f649ded99d8144aec4d9cd3ee977c26");
        assert_ne!(id, derive_keyed_event_id(&[2; 32], "x", &[b"a"]));
        assert_ne!(id, derive_keyed_event_id(&[1; 32], "y", &[b"a"]));
        assert_ne!(id, derive_event_id("x", &[b"a"]));
        // The context is length-prefixed too: no bytes move between it
        // and the first part.
        assert_ne!(
            derive_keyed_event_id(&[1; 32], "xa", &[b""]),
            derive_keyed_event_id(&[1; 32], "x", &[b"a"])
        );
    }

    /// The ids the agent stored before this function moved here: they must
    /// never change.
    #[test]
    fn ids_are_pinned() {
        let line = derive_event_id("privtel-agent 2026-11 source line event id", &[b"web-log:a", b"42", b""]);
        assert_eq!(line.to_string(), "065f725f9e4b936a66624a69ae0a9da1");
        let scan =
            derive_event_id("privtel-agent 2026-11 scan event id", &[b"/usr/bin/ls", &7u64.to_le_bytes()]);
        assert_eq!(scan.to_string(), "f768adf582ec389a4de6628d64fc0f33");
        assert_eq!(derive_event_id("x", &[]).to_string(), "6e14701f13ec737635fe3b13f8f006cf");
    }

    #[test]
    fn parts_are_length_prefixed_and_contexts_apart() {
        let ab_c = derive_event_id("c", &[b"ab", b"c"]);
        assert_ne!(ab_c, derive_event_id("c", &[b"a", b"bc"]));
        assert_ne!(ab_c, derive_event_id("c", &[b"abc"]));
        assert_ne!(ab_c, derive_event_id("d", &[b"ab", b"c"]));
    }
}

//! Event ids derived from what identifies an event at its source.

use privtel_model::EventId;

/// The event id for `fields` under `context` (a BLAKE3 key-derivation
/// context naming the collector): the same fields always give the same id,
/// so the service recognises a replay. Each field is length-prefixed, so
/// no two field lists hash alike by moving bytes between fields.
pub(crate) fn derive(context: &str, fields: &[&[u8]]) -> EventId {
    let mut h = blake3::Hasher::new_derive_key(context);
    for field in fields {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field);
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    EventId::from_bytes(b)
}

//! Event ids derived from what identifies an event at its source.

use privtel_model::EventId;

/// The event id for `fields` under `context` (a BLAKE3 key-derivation
/// context naming the collector): the same fields always give the same id,
/// so the service recognises a replay. The derivation is
/// [`privtel_hash::derive_event_id`], public so that collectors outside the
/// agent derive ids the same way; the pins below hold the ids the agent
/// stored before it moved there.
pub(crate) fn derive(context: &str, fields: &[&[u8]]) -> EventId {
    privtel_hash::derive_event_id(context, fields)
}

#[cfg(test)]
mod tests {
    /// Ids the agent derived before the derivation moved to `privtel-hash`:
    /// stored events carry them, so they must never change.
    #[test]
    fn ids_are_pinned() {
        let pins: [(&str, &[&[u8]], &str); 3] = [
            (
                "privtel-agent 2026-11 source line event id",
                &[b"web-log:a", b"42", b""],
                "065f725f9e4b936a66624a69ae0a9da1",
            ),
            (
                "privtel-agent 2026-11 scan event id",
                &[b"/usr/bin/ls", &7u64.to_le_bytes()],
                "f768adf582ec389a4de6628d64fc0f33",
            ),
            ("x", &[], "6e14701f13ec737635fe3b13f8f006cf"),
        ];
        for (context, parts, id) in pins {
            assert_eq!(super::derive(context, parts).to_string(), id, "{context}");
        }
    }
}

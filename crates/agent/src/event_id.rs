//! Event ids derived from what identifies an event at its source.

use privtel_filter::{Filter, Filtered, RedactionReport};
use privtel_model::{EventId, Record, RecordBody};

/// The context of the agent's keyed event ids.
const DEVICE_ID_CONTEXT: &str = "privtel-agent 2027-01 device event id";

/// The device's event-id key (`PATH.ids.key`, 0600, beside the spool, made
/// on first run like the sealing and marks keys; it never leaves the
/// device). Every event the agent spools gets its id through it, so an id
/// reads back nothing of what it was derived from (a path, a login, an
/// exact instant) to anyone without the key. `Debug` shows no byte.
pub(crate) struct EventIdKey([u8; 32]);

impl EventIdKey {
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        Self(secret)
    }

    /// The id an event with the collector's id `id` is spooled under:
    /// `privtel_hash::derive_keyed_event_id(key, "privtel-agent 2027-01
    /// device event id", [id])`. The same collector id always gives the same
    /// spooled id, so a replay (also after a restart with the same key file)
    /// is still recognised by the service.
    pub(crate) fn keyed(&self, id: EventId) -> EventId {
        privtel_hash::derive_keyed_event_id(&self.0, DEVICE_ID_CONTEXT, &[&id.to_bytes()])
    }

    /// Gives every event of `records` its keyed id.
    pub(crate) fn rekey(&self, records: &mut [Record]) {
        for record in records {
            if let RecordBody::Event(event) = &mut record.body {
                event.id = self.keyed(event.id);
            }
        }
    }

    /// Keys the events' ids, then filters: what the agent does with every
    /// batch of raw records before it reaches the outbox.
    pub(crate) fn filter(
        &self,
        filter: &Filter,
        mut records: Vec<Record>,
    ) -> (Vec<Filtered>, RedactionReport) {
        self.rekey(&mut records);
        filter.apply_batch(records)
    }
}

impl std::fmt::Debug for EventIdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventIdKey(<secret>)")
    }
}

/// The event id for `fields` under `context` (a BLAKE3 key-derivation
/// context naming the collector): the same fields always give the same id,
/// so the service recognises a replay. The derivation is
/// [`privtel_hash::derive_event_id`], public so that collectors outside the
/// agent derive ids the same way; the pins below hold the ids the agent
/// stored before it moved there. These are the collectors' ids: the agent
/// spools an event under its keyed form ([`EventIdKey::keyed`]), never
/// this one.
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

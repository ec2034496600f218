//! The enrichment schedule, as pure functions of an injected clock.

use privtel_model::Timestamp;
use time::Duration;

/// When the enrichment cycle acts: the first upload five minutes after
/// start-up, binaries active in the last seven days re-evaluated every 24
/// hours, new binaries and domains looked up within five minutes. Pure:
/// every decision takes `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Delay of the first upload after start-up (5 minutes; 0 in the demo).
    pub first_upload_after: Duration,
    /// How often active binaries are re-evaluated (24 hours).
    pub reevaluate_every: Duration,
    /// A binary counts as active if it ran within this (7 days).
    pub active_within: Duration,
    /// A new binary or domain gets a lookup within this (5 minutes).
    pub new_lookup_within: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            first_upload_after: Duration::minutes(5),
            reevaluate_every: Duration::hours(24),
            active_within: Duration::days(7),
            new_lookup_within: Duration::minutes(5),
        }
    }
}

impl Schedule {
    /// Whether the first upload is due.
    pub fn first_upload_due(&self, started: Timestamp, now: Timestamp) -> bool {
        now - started >= self.first_upload_after
    }

    /// Whether a binary last active at `last_active` and last evaluated at
    /// `last_evaluated` (if ever) needs a verdict now.
    pub fn needs_evaluation(
        &self,
        last_active: Timestamp,
        last_evaluated: Option<Timestamp>,
        now: Timestamp,
    ) -> bool {
        match last_evaluated {
            None => true,
            Some(done) => now - last_active <= self.active_within && now - done >= self.reevaluate_every,
        }
    }

    /// The latest instant a lookup for something first seen at `first_seen`
    /// may be sent.
    pub fn lookup_deadline(&self, first_seen: Timestamp) -> Option<Timestamp> {
        first_seen.checked_add(self.new_lookup_within)
    }
}

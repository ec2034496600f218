//! Retries: exponential backoff with jitter, within a budget.

use std::time::Duration;

/// How hard delivery tries before it gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryBudget {
    /// Attempts at most (connect + upload), `None` for no end (an agent
    /// that runs for days). Default 5: about half a minute of trying with
    /// the default backoff, enough to ride out a restarting service.
    pub max_attempts: Option<u32>,
    /// First wait (default 500 ms), doubled after every failed attempt.
    pub initial: Duration,
    /// Longest wait (default 5 minutes: the enrichment schedule's lookup
    /// deadline).
    pub max: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { max_attempts: Some(5), initial: Duration::from_millis(500), max: Duration::from_secs(300) }
    }
}

impl RetryBudget {
    /// A budget of `n` attempts (at least 1) with the default waits.
    pub fn attempts(n: u32) -> Self {
        Self { max_attempts: Some(n.max(1)), ..Self::default() }
    }

    /// No end to the attempts, with the default waits.
    pub fn forever() -> Self {
        Self { max_attempts: None, ..Self::default() }
    }

    /// The wait after failed attempt `attempt` (1-based): `initial × 2^(attempt-1)`
    /// capped at `max`, then drawn uniformly from its upper half (jitter, so
    /// a fleet that lost the service together does not return together),
    /// and never shorter than what the service asked for.
    pub fn wait(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX));
        let base = exp.min(self.max);
        let half = base / 2;
        let jitter = half.mul_f64(unit_random());
        (half + jitter).max(asked.unwrap_or(Duration::ZERO).min(self.max))
    }
}

/// A number in [0, 1) from the operating system's randomness (0.5 if it
/// has none: jitter is a courtesy, not a secret).
fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

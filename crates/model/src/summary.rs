//! [`DeviceSummary`]: what a device sends for benchmarking ("cloud
//! intelligence"), and the Digital Experience Score ([`dex`]).
//!
//! A summary is counts, durations and a score for a period: no user, no
//! device id, no event. The service folds it into its customer's aggregates
//! on arrival and keeps no row of it (docs/BENCHMARKS.md).

use serde::{Deserialize, Serialize};
use time::Duration;

use crate::error::{Error, Result};
use crate::timestamp::Timestamp;
use crate::values::Score;

/// The longest period one summary covers, in days.
pub const MAX_SUMMARY_DAYS: u8 = 31;

/// One device's benchmarking summary for a period of whole days.
///
/// Build it with [`DeviceSummary::new`], which computes its
/// [`score`](DeviceSummary::score) from the counts; the service refuses a summary
/// whose score does not follow from its counts ([`DeviceSummary::check`]).
///
/// ```
/// use privtel_model::{DeviceSummary, Timestamp};
///
/// let day = Timestamp::from_unix_seconds(1_795_737_600)?; // 2026-11-27T00:00:00Z
/// let mut s = DeviceSummary::new(day, 7);
/// s.crashes = 1;
/// (s.performance_samples, s.slow_samples) = (4, 1);
/// (s.ratings, s.rating_sum) = (2, 160);
/// let s = s.scored()?;
/// assert_eq!(s.score.get(), 78, "7.8 out of 10");
/// s.check()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeviceSummary {
    /// The first day the summary covers: midnight UTC.
    pub day: Timestamp,
    /// Days covered, 1 to [`MAX_SUMMARY_DAYS`].
    pub days: u8,
    /// Product crashes in the period.
    pub crashes: u32,
    /// Performance measurements taken (startup times, login times).
    pub performance_samples: u32,
    /// Of those, the slow ones (above the thresholds of docs/BENCHMARKS.md).
    pub slow_samples: u32,
    /// Ratings given by the device's people.
    pub ratings: u32,
    /// The sum of those ratings, each 0–100.
    pub rating_sum: u64,
    /// Logins.
    pub logins: u32,
    /// Their total duration.
    #[serde(with = "crate::iso8601::serde_duration")]
    pub login_time: Duration,
    /// Binaries run.
    pub executions: u32,
    /// The device's Digital Experience Score in tenths: 0–100 stands for
    /// 0.0–10.0 ([`dex`] of the counts above).
    pub score: Score,
}

impl DeviceSummary {
    /// An empty summary of `days` days from `day` (score 10.0: nothing went
    /// wrong). Set the counts, then call [`DeviceSummary::scored`].
    pub fn new(day: Timestamp, days: u8) -> Self {
        Self {
            day,
            days,
            crashes: 0,
            performance_samples: 0,
            slow_samples: 0,
            ratings: 0,
            rating_sum: 0,
            logins: 0,
            login_time: Duration::ZERO,
            executions: 0,
            score: Score::MAX,
        }
    }

    /// The summary with its score computed from its counts.
    ///
    /// # Errors
    ///
    /// As [`DeviceSummary::check_counts`].
    pub fn scored(mut self) -> Result<Self> {
        self.check_counts()?;
        self.score = dex(&self.inputs());
        Ok(self)
    }

    /// The score's inputs.
    pub fn inputs(&self) -> DexInputs {
        DexInputs {
            days: self.days,
            crashes: self.crashes,
            performance_samples: self.performance_samples,
            slow_samples: self.slow_samples,
            ratings: self.ratings,
            rating_sum: self.rating_sum,
        }
    }

    /// Whether the counts are possible: 1 to 31 days, no more slow samples
    /// than samples, no rating above 100 on average, a non-negative login
    /// time, and `day` at midnight UTC.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] naming the count.
    pub fn check_counts(&self) -> Result<()> {
        let range = |what, value: i128, expected| Err(Error::OutOfRange { what, value, expected });
        if !(1..=MAX_SUMMARY_DAYS).contains(&self.days) {
            return range("summary days", i128::from(self.days), "1 to 31");
        }
        if self.day.unix_seconds().rem_euclid(86_400) != 0 || self.day.subsec_nanos() != 0 {
            return range("summary day", i128::from(self.day.unix_seconds()), "midnight UTC");
        }
        if self.slow_samples > self.performance_samples {
            return range("slow samples", i128::from(self.slow_samples), "at most the samples taken");
        }
        if self.rating_sum > 100 * u64::from(self.ratings) {
            return range("rating sum", i128::from(self.rating_sum), "at most 100 per rating");
        }
        if self.login_time.is_negative() {
            return range("login time", self.login_time.whole_seconds().into(), "0 or more seconds");
        }
        Ok(())
    }

    /// [`DeviceSummary::check_counts`], and the score is the one the counts
    /// give.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] naming what is wrong.
    pub fn check(&self) -> Result<()> {
        self.check_counts()?;
        let expected = dex(&self.inputs());
        if self.score != expected {
            return Err(Error::OutOfRange {
                what: "experience score",
                value: i128::from(self.score.get()),
                expected: "the score its counts give",
            });
        }
        Ok(())
    }
}

/// What the Digital Experience Score is computed from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DexInputs {
    /// Days covered (at least 1 is assumed).
    pub days: u8,
    /// Product crashes.
    pub crashes: u32,
    /// Performance measurements.
    pub performance_samples: u32,
    /// Slow ones among them.
    pub slow_samples: u32,
    /// Ratings.
    pub ratings: u32,
    /// Their sum, each 0–100.
    pub rating_sum: u64,
}

/// Weight of the crash sub-score.
pub const DEX_CRASH_WEIGHT: f64 = 0.40;
/// Weight of the performance sub-score.
pub const DEX_PERFORMANCE_WEIGHT: f64 = 0.35;
/// Weight of the feedback sub-score.
pub const DEX_FEEDBACK_WEIGHT: f64 = 0.25;

/// The Digital Experience Score, 0.0–10.0, in tenths (docs/BENCHMARKS.md):
///
/// * crashes: `C = max(0, 10 − 2 × crashes per 7 days)`;
/// * performance: `P = 10 × (1 − slow / samples)`, absent without samples;
/// * feedback: `F = mean rating / 10`, absent without ratings;
/// * `DEX = (0.40·C + 0.35·P + 0.25·F) / (sum of the weights present)`,
///   rounded to the nearest tenth (halves up).
///
/// ```
/// use privtel_model::{DexInputs, dex};
///
/// // One crash in a week (C = 8), one slow sample in four (P = 7.5), two
/// // ratings of 80 (F = 8): 0.4·8 + 0.35·7.5 + 0.25·8 = 7.825 -> 7.8.
/// let i = DexInputs { days: 7, crashes: 1, performance_samples: 4, slow_samples: 1, ratings: 2, rating_sum: 160 };
/// assert_eq!(dex(&i).get(), 78);
/// ```
pub fn dex(i: &DexInputs) -> Score {
    let days = f64::from(i.days.max(1));
    let per_week = f64::from(i.crashes) * 7.0 / days;
    let crash = (10.0 - 2.0 * per_week).max(0.0);
    let mut weighted = DEX_CRASH_WEIGHT * crash;
    let mut weights = DEX_CRASH_WEIGHT;
    if i.performance_samples > 0 {
        let slow = f64::from(i.slow_samples.min(i.performance_samples));
        weighted += DEX_PERFORMANCE_WEIGHT * 10.0 * (1.0 - slow / f64::from(i.performance_samples));
        weights += DEX_PERFORMANCE_WEIGHT;
    }
    if i.ratings > 0 {
        let mean = (i.rating_sum as f64 / f64::from(i.ratings)).min(100.0);
        weighted += DEX_FEEDBACK_WEIGHT * mean / 10.0;
        weights += DEX_FEEDBACK_WEIGHT;
    }
    // Tenths, halves up; the tiny epsilon keeps a half computed as
    // x.4999… (the weights' sum is not exact in binary) a half.
    let tenths = (weighted / weights * 10.0 + 0.5 + 1e-9).floor();
    Score::new(tenths.clamp(0.0, 100.0) as u8).unwrap_or(Score::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(days: u8, crashes: u32, samples: u32, slow: u32, ratings: u32, sum: u64) -> DexInputs {
        DexInputs {
            days,
            crashes,
            performance_samples: samples,
            slow_samples: slow,
            ratings,
            rating_sum: sum,
        }
    }

    /// Each case computed by hand in docs/BENCHMARKS.md.
    #[test]
    fn dex_of_hand_computed_cases() {
        let cases = [
            // Nothing went wrong, nothing measured: C = 10 alone.
            (inputs(1, 0, 0, 0, 0, 0), 100),
            // C = 8, P = 7.5, F = 8: 3.2 + 2.625 + 2 = 7.825 -> 7.8.
            (inputs(7, 1, 4, 1, 2, 160), 78),
            // 3 crashes in a day: 21 a week, C = 0; F = 5:
            // 0.25·5 / 0.65 = 1.923 -> 1.9.
            (inputs(1, 3, 0, 0, 1, 50), 19),
            // 2 crashes in 14 days: 1 a week, C = 8; P = 10:
            // (3.2 + 3.5) / 0.75 = 8.933 -> 8.9.
            (inputs(14, 2, 10, 0, 0, 0), 89),
            // Everything bad: C = 0, P = 0, F = 0.
            (inputs(7, 35, 3, 3, 4, 0), 0),
            // C = 10, P = 5, F = 10: (4 + 1.75 + 2.5) / 1 = 8.25 -> 8.3 (half up).
            (inputs(7, 0, 2, 1, 1, 100), 83),
        ];
        for (i, expected) in cases {
            assert_eq!(dex(&i).get(), expected, "{i:?}");
        }
    }

    #[test]
    fn a_summary_whose_score_does_not_follow_from_its_counts_is_refused() {
        let day = Timestamp::from_unix_seconds(86_400 * 20_000).unwrap();
        let mut s = DeviceSummary::new(day, 7);
        s.crashes = 1;
        let s = s.scored().unwrap();
        assert_eq!(s.score.get(), 80);
        s.check().unwrap();
        let mut lying = s.clone();
        lying.score = Score::MAX;
        assert!(lying.check().unwrap_err().to_string().contains("experience score"));
        let mut slow = s.clone();
        slow.slow_samples = 1;
        assert!(slow.check().unwrap_err().to_string().contains("slow samples"));
        let mut noon = s;
        noon.day = Timestamp::from_unix_seconds(86_400 * 20_000 + 43_200).unwrap();
        assert!(noon.check().unwrap_err().to_string().contains("midnight"));
        assert!(DeviceSummary::new(day, 0).scored().is_err());
        assert!(DeviceSummary::new(day, 32).scored().is_err());
        let mut rated = DeviceSummary::new(day, 1);
        (rated.ratings, rated.rating_sum) = (1, 101);
        assert!(rated.scored().is_err());
    }
}

//! Benchmarking aggregates: per customer, industry and day, the sums of the
//! device summaries the customer's devices sent. No device, no user, no
//! record: a summary is folded into its row on arrival, in the transaction
//! that moves its stream's high-water mark (so a retried batch, at or below
//! the mark, is never folded twice), and nothing else of it is kept.
//! docs/BENCHMARKS.md describes the table and what reads it.

use privtel_model::{CustomerId, Record, RecordBody, Timestamp};
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::engine::SqliteEngine;
use crate::error::{Context as _, Result};

/// Version 5: the aggregates table. Counts are integers (scores in tenths,
/// durations in milliseconds), so sums are exact.
pub(crate) const V5: &str = "
    CREATE TABLE benchmark_aggregates (
        customer INTEGER NOT NULL,          -- customers.id
        industry TEXT NOT NULL,             -- the customer's industry when folded; '' none
        day INTEGER NOT NULL,               -- the summary's first day: days since 1970-01-01 UTC
        summaries INTEGER NOT NULL,         -- device summaries folded
        device_days INTEGER NOT NULL,       -- days they cover, summed
        score_sum INTEGER NOT NULL,         -- device experience scores, tenths, summed
        score_min INTEGER,                  -- lowest and highest device score (tenths)
        score_max INTEGER,
        crashes INTEGER NOT NULL,
        performance_samples INTEGER NOT NULL,
        slow_samples INTEGER NOT NULL,
        ratings INTEGER NOT NULL,
        rating_sum INTEGER NOT NULL,
        logins INTEGER NOT NULL,
        login_ms INTEGER NOT NULL,
        executions INTEGER NOT NULL,
        other_records INTEGER NOT NULL,     -- benchmarking records of older kinds: counted, nothing else
        PRIMARY KEY (customer, industry, day)
    ) WITHOUT ROWID;
";

/// How long aggregate rows are kept, in days from the day they describe
/// (the benchmarking class's time to live): two quarters, so the last
/// complete quarter can always be reported. They name no person and no
/// device; the events' and objects' TTLs (7–30 days) do not apply to them.
pub const AGGREGATE_TTL_DAYS: i64 = 184;

const DAY_SECONDS: i64 = 86_400;

/// The day (since 1970-01-01 UTC) an instant falls in.
pub(crate) fn day_of(t: Timestamp) -> i64 {
    t.unix_seconds().div_euclid(DAY_SECONDS)
}

/// What one benchmarking record adds to its customer's row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fold {
    industry: String,
    day: i64,
    summaries: i64,
    device_days: i64,
    score: Option<i64>,
    crashes: i64,
    performance_samples: i64,
    slow_samples: i64,
    ratings: i64,
    rating_sum: i64,
    logins: i64,
    login_ms: i64,
    executions: i64,
    other_records: i64,
}

impl Fold {
    /// The fold of `record` for a customer in `industry`: a device summary
    /// adds its counts; any other benchmarking record (an older agent's
    /// events and objects) only counts as one, dated by its own time or
    /// `received`.
    pub(crate) fn of(record: &Record, industry: &str, received: Timestamp) -> Self {
        let industry = industry.to_owned();
        match &record.body {
            RecordBody::DeviceSummary(s) => Self {
                industry,
                day: day_of(s.day),
                summaries: 1,
                device_days: i64::from(s.days),
                score: Some(i64::from(s.score.get())),
                crashes: i64::from(s.crashes),
                performance_samples: i64::from(s.performance_samples),
                slow_samples: i64::from(s.slow_samples),
                ratings: i64::from(s.ratings),
                rating_sum: i64::try_from(s.rating_sum).unwrap_or(i64::MAX),
                logins: i64::from(s.logins),
                login_ms: i64::try_from(s.login_time.whole_milliseconds()).unwrap_or(i64::MAX).max(0),
                executions: i64::from(s.executions),
                other_records: 0,
            },
            _ => Self {
                industry,
                day: day_of(crate::codec::record_time(record, received)),
                other_records: 1,
                ..Self::default()
            },
        }
    }
}

/// Adds `f` to the customer's row of its industry and day: one statement.
pub(crate) fn fold(conn: &Connection, customer: i64, f: &Fold) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO benchmark_aggregates (customer, industry, day, summaries, device_days, score_sum,
             score_min, score_max, crashes, performance_samples, slow_samples, ratings, rating_sum,
             logins, login_ms, executions, other_records)
         VALUES (?1, ?2, ?3, ?4, ?5, ifnull(?6, 0), ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT(customer, industry, day) DO UPDATE SET
             summaries = summaries + excluded.summaries,
             device_days = device_days + excluded.device_days,
             score_sum = score_sum + excluded.score_sum,
             score_min = CASE WHEN excluded.score_min IS NULL THEN score_min
                              ELSE min(ifnull(score_min, excluded.score_min), excluded.score_min) END,
             score_max = CASE WHEN excluded.score_max IS NULL THEN score_max
                              ELSE max(ifnull(score_max, excluded.score_max), excluded.score_max) END,
             crashes = crashes + excluded.crashes,
             performance_samples = performance_samples + excluded.performance_samples,
             slow_samples = slow_samples + excluded.slow_samples,
             ratings = ratings + excluded.ratings,
             rating_sum = rating_sum + excluded.rating_sum,
             logins = logins + excluded.logins,
             login_ms = login_ms + excluded.login_ms,
             executions = executions + excluded.executions,
             other_records = other_records + excluded.other_records",
    )
    .and_then(|mut s| {
        s.execute(params![
            customer,
            f.industry,
            f.day,
            f.summaries,
            f.device_days,
            f.score,
            f.crashes,
            f.performance_samples,
            f.slow_samples,
            f.ratings,
            f.rating_sum,
            f.logins,
            f.login_ms,
            f.executions,
            f.other_records
        ])
    })
    .op("folding a benchmarking record")?;
    Ok(())
}

/// Removes a customer's rows of days older than [`AGGREGATE_TTL_DAYS`]
/// before `now`; returns how many.
pub(crate) fn sweep(conn: &Connection, customer: i64, now: Timestamp) -> Result<u64> {
    let first_kept = day_of(now) - AGGREGATE_TTL_DAYS;
    let n = conn
        .execute(
            "DELETE FROM benchmark_aggregates WHERE customer = ?1 AND day < ?2",
            params![customer, first_kept],
        )
        .op("sweeping benchmarking aggregates")?;
    Ok(n as u64)
}

/// One customer's benchmarking aggregates over a period, in one industry:
/// sums of its devices' summaries. Holds no device and no person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CustomerAggregate {
    /// The customer.
    pub customer: CustomerId,
    /// The industry its summaries were folded under ('' for none).
    pub industry: String,
    /// Device summaries folded.
    pub summaries: u64,
    /// Days they cover, summed (device-days).
    pub device_days: u64,
    /// Device experience scores in tenths, summed.
    pub score_sum: u64,
    /// The lowest device score (tenths), if any summary.
    pub score_min: Option<u8>,
    /// The highest device score (tenths), if any summary.
    pub score_max: Option<u8>,
    /// Crashes.
    pub crashes: u64,
    /// Performance samples.
    pub performance_samples: u64,
    /// Slow ones among them.
    pub slow_samples: u64,
    /// Ratings.
    pub ratings: u64,
    /// Their sum (each 0–100).
    pub rating_sum: u64,
    /// Logins.
    pub logins: u64,
    /// Their total duration, milliseconds.
    pub login_ms: u64,
    /// Binaries run.
    pub executions: u64,
    /// Benchmarking records of older kinds, counted only.
    pub other_records: u64,
}

impl CustomerAggregate {
    /// The customer's Digital Experience Score over the period in tenths:
    /// the mean of its devices' scores, rounded half up (`None` without a
    /// summary).
    pub fn score_tenths(&self) -> Option<u8> {
        (self.summaries > 0).then(|| {
            let mean = (2 * self.score_sum + self.summaries) / (2 * self.summaries);
            u8::try_from(mean.min(100)).unwrap_or(100)
        })
    }
}

impl SqliteEngine {
    /// Every customer's aggregates over the days from `from` (inclusive) to
    /// `to` (exclusive), one per (customer, industry), by customer.
    ///
    /// ```
    /// use privtel_store::{EngineOptions, SqliteEngine};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let engine = SqliteEngine::open(&dir.path().join("engine.db"), EngineOptions::default())?;
    /// let day: privtel_store::Timestamp = "2026-11-27T00:00:00Z".parse()?;
    /// assert!(engine.aggregates(day, day)?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn aggregates(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CustomerAggregate>> {
        let mut stmt = self
            .connection()
            .prepare(
                "SELECT c.customer, a.industry, sum(summaries), sum(device_days), sum(score_sum),
                        min(score_min), max(score_max), sum(crashes), sum(performance_samples),
                        sum(slow_samples), sum(ratings), sum(rating_sum), sum(logins), sum(login_ms),
                        sum(executions), sum(other_records)
                 FROM benchmark_aggregates a JOIN customers c ON c.id = a.customer
                 WHERE a.day >= ?1 AND a.day < ?2
                 GROUP BY a.customer, a.industry ORDER BY c.customer, a.industry",
            )
            .op("reading benchmarking aggregates")?;
        let rows = stmt
            .query_map(params![day_of(from), day_of(to)], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                let score = |i: usize| {
                    r.get::<_, Option<i64>>(i)
                        .map(|v| v.map(|v| u8::try_from(v.clamp(0, 100)).unwrap_or(100)))
                };
                let customer = CustomerId::new(r.get::<_, String>(0)?).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
                })?;
                Ok(CustomerAggregate {
                    customer,
                    industry: r.get(1)?,
                    summaries: n(2)?,
                    device_days: n(3)?,
                    score_sum: n(4)?,
                    score_min: score(5)?,
                    score_max: score(6)?,
                    crashes: n(7)?,
                    performance_samples: n(8)?,
                    slow_samples: n(9)?,
                    ratings: n(10)?,
                    rating_sum: n(11)?,
                    logins: n(12)?,
                    login_ms: n(13)?,
                    executions: n(14)?,
                    other_records: n(15)?,
                })
            })
            .op("reading benchmarking aggregates")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().op("reading benchmarking aggregates")
    }
}

//! Cross-customer benchmarks per industry, and the quarterly report that
//! places one customer against its industry (docs/BENCHMARKS.md).
//!
//! The service keeps no benchmarking row per device or person: each device
//! summary is folded, on arrival, into its customer's aggregates of the day,
//! tagged with the customer's industry from its settings
//! ([`privtel_store::Encoder::encode_folding`]). From those, each customer
//! gives one value per figure ([`FIGURES`]), clamped to 0–100, and the
//! [`Aggregator`] publishes a cell (industry × figure) only if at least
//! `k` customers (5 by default) gave one; noise, when on, is Laplace noise
//! seeded per quarter. Cells are computed when asked and never stored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use privtel_filter::{Aggregator, Cell, Metric};
use privtel_model::{CustomerId, Timestamp};
use privtel_store::{CustomerAggregate, SqliteEngine};
use serde::Serialize;
use time::{Date, Month};

use crate::settings::Settings;

/// The figures each customer gives to its industry's benchmarks, all on a
/// 0–100 scale, with what they mean:
///
/// * `experience_score` — the mean of its devices' Digital Experience
///   Scores, in tenths (0–100 is 0.0–10.0);
/// * `crashes_per_device_week` — crashes per 7 device-days (clamped at
///   100);
/// * `slow_sample_percent` — slow performance samples, in percent of the
///   samples;
/// * `rating` — the mean rating (0–100).
///
/// A figure without data (no samples, no ratings) is not given.
pub const FIGURES: [&str; 4] =
    ["experience_score", "crashes_per_device_week", "slow_sample_percent", "rating"];

/// A customer's figures from its aggregates, in [`FIGURES`] order.
fn figures(a: &CustomerAggregate) -> [Option<f64>; 4] {
    let ratio = |num: u64, den: u64, scale: f64| (den > 0).then(|| num as f64 * scale / den as f64);
    [
        a.score_tenths().map(f64::from),
        ratio(a.crashes, a.device_days, 7.0),
        ratio(a.slow_samples, a.performance_samples, 100.0),
        ratio(a.rating_sum, a.ratings, 1.0),
    ]
}

/// How benchmarks are computed.
///
/// ```
/// use privtel_service::BenchmarkOptions;
///
/// let options = BenchmarkOptions::default();
/// assert_eq!((options.k, options.epsilon), (5, Some(1.0)));
/// let exact = BenchmarkOptions::default().without_noise();
/// assert_eq!(exact.epsilon, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct BenchmarkOptions {
    /// Fewest customers behind a published cell (default 5; below 5 is
    /// raised to 5).
    pub k: u64,
    /// Laplace noise of scale `sensitivity / epsilon` on every published
    /// count, sum and bin (default 1.0); `None`: exact numbers.
    pub epsilon: Option<f64>,
    /// The noise's seed (default 0). Production sets a secret one: anyone
    /// who knows the seed can subtract the noise. The seed of a quarter is
    /// derived from it and the quarter, so a report of the same quarter
    /// always carries the same noise (asking again and averaging gains
    /// nothing).
    pub seed: u64,
}

impl Default for BenchmarkOptions {
    fn default() -> Self {
        Self { k: 5, epsilon: Some(1.0), seed: 0 }
    }
}

impl BenchmarkOptions {
    /// With noise seeded by `seed` (see [`BenchmarkOptions::seed`]).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Exact numbers (tests, a single-tenant deployment).
    #[must_use]
    pub fn without_noise(mut self) -> Self {
        self.epsilon = None;
        self
    }

    /// With noise of this epsilon.
    #[must_use]
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = Some(epsilon);
        self
    }
}

/// The cross-customer benchmark cells of `aggregates` (one entry per
/// customer and industry, as [`SqliteEngine::aggregates`] gives them): per
/// industry and figure, only cells of at least `k` customers; customers
/// without an industry give none. `noise_seed` seeds the noise (see
/// [`quarterly_report`] for the per-quarter seed).
///
/// ```
/// use privtel_service::{BenchmarkOptions, benchmarks};
///
/// assert!(benchmarks(&[], &BenchmarkOptions::default(), 1).is_empty());
/// ```
pub fn benchmarks(
    aggregates: &[CustomerAggregate],
    options: &BenchmarkOptions,
    noise_seed: u64,
) -> Vec<Cell> {
    let mut agg = Aggregator::new(options.k.max(5)).max_per_customer(1);
    if let Some(epsilon) = options.epsilon {
        agg = agg.with_noise(epsilon, noise_seed);
    }
    for a in aggregates.iter().filter(|a| !a.industry.is_empty()) {
        for (name, value) in FIGURES.iter().zip(figures(a)) {
            if let Some(v) = value {
                agg.add_figure(&a.customer, &a.industry, name, v);
            }
        }
    }
    agg.finish()
}

/// A calendar quarter (UTC), written `2026-Q4`.
///
/// ```
/// use privtel_service::Quarter;
///
/// let q: Quarter = "2026-Q4".parse()?;
/// assert_eq!(q.to_string(), "2026-Q4");
/// assert_eq!(q.start().to_string(), "2026-10-01T00:00:00Z");
/// assert_eq!(q.end().to_string(), "2027-01-01T00:00:00Z");
/// assert!("2026-Q5".parse::<Quarter>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Quarter {
    year: i32,
    quarter: u8,
}

impl Quarter {
    /// The quarter `quarter` (1–4) of `year` (1970–9998).
    ///
    /// # Errors
    ///
    /// [`BenchmarkError::Quarter`] out of those ranges.
    pub fn new(year: i32, quarter: u8) -> Result<Self, BenchmarkError> {
        if !(1..=4).contains(&quarter) || !(1970..=9998).contains(&year) {
            return Err(BenchmarkError::Quarter { expected: "a year 1970-9998 and a quarter 1-4" });
        }
        Ok(Self { year, quarter })
    }

    /// The quarter `t` falls in.
    pub fn of(t: Timestamp) -> Self {
        let d = t.as_offset_date_time();
        Self { year: d.year(), quarter: (u8::from(d.month()) - 1) / 3 + 1 }
    }

    /// Its first instant.
    pub fn start(self) -> Timestamp {
        Self::first_day(self.year, self.quarter)
    }

    /// The first instant after it.
    pub fn end(self) -> Timestamp {
        if self.quarter == 4 {
            Self::first_day(self.year + 1, 1)
        } else {
            Self::first_day(self.year, self.quarter + 1)
        }
    }

    fn first_day(year: i32, quarter: u8) -> Timestamp {
        let month = Month::try_from((quarter - 1) * 3 + 1).unwrap_or(Month::January);
        Date::from_calendar_date(year, month, 1)
            .map(|d| Timestamp::new(d.midnight().assume_utc()))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// The noise seed of this quarter under `seed`: a quarter always gets
    /// the same noise, two quarters unrelated noise.
    pub fn noise_seed(self, seed: u64) -> u64 {
        let index = (self.year as u64).wrapping_mul(4).wrapping_add(u64::from(self.quarter));
        let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl std::fmt::Display for Quarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-Q{}", self.year, self.quarter)
    }
}

impl FromStr for Quarter {
    type Err = BenchmarkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = BenchmarkError::Quarter { expected: "a quarter written like 2026-Q4" };
        let (year, q) = s.split_once("-Q").ok_or(bad.clone())?;
        let year = year.parse().map_err(|_| bad.clone())?;
        let q = q.parse().map_err(|_| bad)?;
        Self::new(year, q)
    }
}

impl Serialize for Quarter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a quarterly report cannot be made of.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BenchmarkError {
    /// A quarter out of range or badly written.
    #[error("invalid quarter: expected {expected}")]
    Quarter {
        /// What a quarter is.
        expected: &'static str,
    },
    /// The customer has no settings.
    #[error("no settings for the customer: expected a customer of the settings file")]
    UnknownCustomer,
    /// The store could not be read.
    #[error("benchmarks: {0}")]
    Store(String),
}

/// One figure of the customer against its industry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Comparison {
    /// The figure ([`FIGURES`]).
    pub figure: String,
    /// The customer's own value (`None`: no data for it); the experience
    /// score on its 0.0–10.0 scale, the other figures as [`FIGURES`] says.
    pub customer: Option<f64>,
    /// The industry's cell, if it has at least k customers; `None`: the
    /// cell is suppressed and nothing of it is shown.
    pub industry: Option<IndustryCell>,
}

/// What is shown of an industry's cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct IndustryCell {
    /// Customers behind it, rounded down to a multiple of k.
    pub customers_at_least: u64,
    /// The mean of the customers' values (noised when noise is on), on the
    /// scale of [`Comparison::customer`].
    pub mean: f64,
    /// The customers' values by tens of the 0–100 scale: 0–9, 10–19, …
    /// 90–100 (for the experience score: 0.0–0.9, 1.0–1.9, … 9.0–10.0),
    /// noised.
    pub histogram: Vec<f64>,
}

/// One customer's quarter against its industry: its own figures (its own
/// data) and, per figure, the industry's cell where it may be shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QuarterlyReport {
    /// The customer.
    pub customer: CustomerId,
    /// Its industry (from its settings); `None`: no benchmark.
    pub industry: Option<String>,
    /// The quarter.
    pub quarter: Quarter,
    /// Device summaries the customer's devices sent in the quarter.
    pub device_summaries: u64,
    /// Its Digital Experience Score over the quarter, 0.0–10.0.
    pub experience_score: Option<f64>,
    /// k.
    pub k: u64,
    /// The noise's epsilon, if any.
    pub epsilon: Option<f64>,
    /// Each figure against the industry.
    pub comparisons: Vec<Comparison>,
}

/// The quarterly report of `customer`: its aggregates over `quarter` against
/// the benchmarks of its industry (from `settings`) over the same quarter,
/// noise seeded by [`Quarter::noise_seed`] of `options.seed`.
///
/// ```
/// use privtel_service::{BenchmarkOptions, Quarter, Settings, quarterly_report};
/// use privtel_store::{EngineOptions, SqliteEngine};
///
/// let dir = tempfile::tempdir()?;
/// let engine = SqliteEngine::open(&dir.path().join("engine.db"), EngineOptions::default())?;
/// let settings = Settings::from_toml("[customers.acme]\nindustry = \"retail\"\n")?;
/// let report = quarterly_report(&engine, &settings, &"acme".parse()?, "2026-Q4".parse()?, &BenchmarkOptions::default())?;
/// assert_eq!(report.device_summaries, 0);
/// assert!(report.comparisons.iter().all(|c| c.industry.is_none()), "no industry cell of fewer than 5");
/// assert!(report.to_markdown().contains("# Benchmark report: acme, 2026-Q4"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`BenchmarkError::UnknownCustomer`] for a customer without settings;
/// [`BenchmarkError::Store`] if the aggregates cannot be read.
pub fn quarterly_report(
    engine: &SqliteEngine,
    settings: &Settings,
    customer: &CustomerId,
    quarter: Quarter,
    options: &BenchmarkOptions,
) -> Result<QuarterlyReport, BenchmarkError> {
    let cs = settings.customer(customer).ok_or(BenchmarkError::UnknownCustomer)?;
    let industry = cs.industry().map(str::to_owned);
    let aggregates = engine
        .aggregates(quarter.start(), quarter.end())
        .map_err(|e| BenchmarkError::Store(e.to_string()))?;
    let cells = benchmarks(&aggregates, options, quarter.noise_seed(options.seed));
    // The customer's own figures: all its rows of the quarter, whatever
    // industry they were folded under.
    let own = aggregates.iter().filter(|a| &a.customer == customer).fold(None, |acc, a| {
        Some(match acc {
            None => a.clone(),
            Some(t) => merged(t, a),
        })
    });
    let own_figures = own.as_ref().map_or([None; 4], figures);
    let by_figure: BTreeMap<&str, &Cell> = cells
        .iter()
        .filter(|c| Some(&c.industry) == industry.as_ref())
        .filter_map(|c| match &c.metric {
            Metric::Figure(f) => Some((f.as_str(), c)),
            _ => None,
        })
        .collect();
    let comparisons = FIGURES
        .iter()
        .zip(own_figures)
        .map(|(name, value)| {
            // The experience score is shown as people know it, 0.0–10.0.
            let scale = if *name == "experience_score" { 0.1 } else { 1.0 };
            Comparison {
                figure: (*name).to_owned(),
                customer: value.map(|v| round1(v * scale)),
                industry: by_figure.get(name).map(|c| IndustryCell {
                    customers_at_least: c.customers_at_least,
                    mean: round1(c.mean.unwrap_or(0.0) * scale),
                    histogram: c.histogram.clone().unwrap_or_default().into_iter().map(round1).collect(),
                }),
            }
        })
        .collect();
    Ok(QuarterlyReport {
        customer: customer.clone(),
        industry,
        quarter,
        device_summaries: own.as_ref().map_or(0, |a| a.summaries),
        experience_score: own.as_ref().and_then(CustomerAggregate::score_tenths).map(|t| f64::from(t) / 10.0),
        k: options.k.max(5),
        epsilon: options.epsilon,
        comparisons,
    })
}

/// Two rows of one customer summed (scores' extremes kept).
fn merged(mut a: CustomerAggregate, b: &CustomerAggregate) -> CustomerAggregate {
    a.summaries += b.summaries;
    a.device_days += b.device_days;
    a.score_sum += b.score_sum;
    a.score_min = a.score_min.into_iter().chain(b.score_min).min();
    a.score_max = a.score_max.into_iter().chain(b.score_max).max();
    a.crashes += b.crashes;
    a.performance_samples += b.performance_samples;
    a.slow_samples += b.slow_samples;
    a.ratings += b.ratings;
    a.rating_sum += b.rating_sum;
    a.logins += b.logins;
    a.login_ms += b.login_ms;
    a.executions += b.executions;
    a.other_records += b.other_records;
    a
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

impl QuarterlyReport {
    /// The report as JSON (one object; the fields of this type).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// The report as Markdown: a heading, the customer's score, and a
    /// table of each figure against its industry ("suppressed" where the
    /// industry's cell has fewer than k customers).
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmark report: {}, {}\n", self.customer, self.quarter);
        let industry = self.industry.as_deref().unwrap_or("none (no benchmark)");
        let _ = writeln!(md, "* Industry: {industry}");
        let _ = writeln!(md, "* Device summaries: {}", self.device_summaries);
        match self.experience_score {
            Some(s) => {
                let _ = writeln!(md, "* Digital Experience Score: {s:.1} / 10");
            }
            None => {
                let _ = writeln!(md, "* Digital Experience Score: no data");
            }
        }
        let noise = self.epsilon.map_or("none".to_owned(), |e| format!("Laplace, epsilon {e}"));
        let _ = writeln!(md, "* Industry cells shown only from {} customers; noise: {noise}\n", self.k);
        md.push_str(
            "| Figure | You | Industry mean | Customers | Industry customers by tenth of the scale |\n",
        );
        md.push_str("|---|---|---|---|---|\n");
        for c in &self.comparisons {
            let you = c.customer.map_or("–".to_owned(), |v| format!("{v:.1}"));
            match &c.industry {
                Some(i) => {
                    let bins: Vec<String> = i.histogram.iter().map(|b| format!("{b:.1}")).collect();
                    let _ = writeln!(
                        md,
                        "| {} | {you} | {:.1} | ≥ {} | {} |",
                        c.figure,
                        i.mean,
                        i.customers_at_least,
                        bins.join(" ")
                    );
                }
                None => {
                    let _ = writeln!(md, "| {} | {you} | suppressed | fewer than {} | – |", c.figure, self.k);
                }
            }
        }
        md
    }
}

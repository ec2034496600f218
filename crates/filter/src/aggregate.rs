//! k-anonymous benchmark aggregates across customers, with optional Laplace
//! noise.
//!
//! # What the protections guarantee, and what they do not
//!
//! * **Suppression (k-anonymity).** A cell (one industry × one metric × one
//!   key, such as "finance, binary X") is published only if at least `k`
//!   distinct customers contributed to it; customer ids never appear in the
//!   output. This stops a cell from describing one customer. It does not
//!   stop inference from differences between releases (publish, add a
//!   customer, publish again) and is not differential privacy: whether a
//!   cell appears at all depends on the data.
//! * **Noise (optional).** With `epsilon`, every published count, sum and
//!   histogram bin gets Laplace noise of scale `sensitivity / epsilon`,
//!   where the sensitivity is what one customer can change: each
//!   customer's contribution to a cell is clamped (counts to
//!   [`Aggregator::max_per_customer`] records, scores to 0–100) before it is
//!   added. Under those bounds each released number is ε-differentially
//!   private with respect to one customer; numbers in one release add up
//!   (a customer in `m` cells is protected at `m·ε` overall), and so do
//!   releases over time. The noise source is a seeded generator so that
//!   tests repeat; production use must seed it from a secret random value,
//!   or the noise can be subtracted.

use std::collections::BTreeMap;

use privtel_model::{CustomerId, EventBody, Record, RecordBody};
use serde::Serialize;

/// What a cell counts.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "metric", content = "key")]
#[non_exhaustive]
pub enum Metric {
    /// Executions of a binary (by SHA-256).
    Binary(String),
    /// Visits to a registrable domain.
    Domain(String),
    /// Installations of a package.
    Package(String),
    /// Devices by OS family and type.
    Device(String),
    /// Experience scores (count, sum, mean, histogram of tens).
    ExperienceScore,
    /// A figure of each customer, one value on a 0–100 scale per customer
    /// (added with [`Aggregator::add_figure`]): its experience score in
    /// tenths, its share of slow samples… Count, sum, mean and histogram of
    /// tens, as for experience scores.
    Figure(String),
}

/// One published cell.
#[derive(Clone, PartialEq, Debug, Serialize)]
#[non_exhaustive]
pub struct Cell {
    /// The industry the customers belong to.
    pub industry: String,
    /// What is counted.
    #[serde(flatten)]
    pub metric: Metric,
    /// Distinct customers behind the cell (at least k; not noised, it is the
    /// suppression threshold's input and is rounded down to a multiple of k).
    pub customers_at_least: u64,
    /// Records counted (noised when noise is on).
    pub count: f64,
    /// Sum of the values (scores), where the metric has values.
    pub sum: Option<f64>,
    /// `sum / count`, where the metric has values.
    pub mean: Option<f64>,
    /// Scores in bins 0–9, 10–19, … 90–100, for the experience score.
    pub histogram: Option<Vec<f64>>,
}

#[derive(Default)]
struct Acc {
    /// Per customer: records counted and the sum of values, before clamping.
    per_customer: BTreeMap<CustomerId, (u64, f64, [u64; 10])>,
}

/// Collects records from many customers and publishes k-anonymous cells.
///
/// ```
/// use privtel_filter::{Aggregator, Metric};
/// use privtel_model::{CustomerId, Package, PackageManager, Program, Record, RecordBody};
///
/// let package = |name: &str| Record {
///     program: Program::Benchmarking,
///     body: RecordBody::Package(Package {
///         name: name.into(), version: "1".into(), manager: PackageManager::Apt, installed_at: None,
///     }),
/// };
/// let mut agg = Aggregator::new(3);
/// for c in ["a", "b", "c"] {
///     agg.add(&CustomerId::new(c)?, "finance", &package("openssl"));
/// }
/// agg.add(&CustomerId::new("a")?, "finance", &package("rare-tool"));
/// let cells = agg.finish();
/// assert_eq!(cells.len(), 1, "rare-tool has one customer: suppressed");
/// assert_eq!(cells[0].metric, Metric::Package("openssl".into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct Aggregator {
    k: u64,
    epsilon: Option<f64>,
    max_per_customer: u64,
    seed: u64,
    cells: BTreeMap<(String, Metric), Acc>,
}

impl Aggregator {
    /// An aggregator suppressing cells of fewer than `k` customers (the
    /// design's default is 5), without noise.
    pub fn new(k: u64) -> Self {
        Self { k: k.max(1), epsilon: None, max_per_customer: 1_000, seed: 0x5eed, cells: BTreeMap::new() }
    }

    /// Adds Laplace noise with this epsilon, from a generator seeded with
    /// `seed` (see the module docs).
    #[must_use]
    pub fn with_noise(mut self, epsilon: f64, seed: u64) -> Self {
        self.epsilon = (epsilon.is_finite() && epsilon > 0.0).then_some(epsilon);
        self.seed = seed;
        self
    }

    /// Caps each customer's records counted per cell (default 1,000): the
    /// bound the noise's sensitivity rests on.
    #[must_use]
    pub fn max_per_customer(mut self, n: u64) -> Self {
        self.max_per_customer = n.max(1);
        self
    }

    /// Adds one figure of `customer` in `industry`: `value` is clamped to
    /// 0–100 (a NaN counts as 0). With [`Aggregator::max_per_customer`] of
    /// 1, each customer then weighs exactly one value in the cell, which is
    /// what the noise's sensitivity assumes.
    ///
    /// ```
    /// use privtel_filter::{Aggregator, Metric};
    /// use privtel_model::CustomerId;
    ///
    /// let mut agg = Aggregator::new(5).max_per_customer(1);
    /// for (i, score) in [70.0, 80.0, 90.0, 60.0, 100.0, 250.0].into_iter().enumerate() {
    ///     agg.add_figure(&CustomerId::new(format!("c{i}"))?, "retail", "experience_score", score);
    /// }
    /// agg.add_figure(&CustomerId::new("alone")?, "mining", "experience_score", 10.0);
    /// let cells = agg.finish();
    /// assert_eq!(cells.len(), 1, "mining has one customer: suppressed");
    /// assert_eq!(cells[0].metric, Metric::Figure("experience_score".into()));
    /// // 250 is clamped to 100: (70 + 80 + 90 + 60 + 100 + 100) / 6.
    /// assert_eq!(cells[0].mean, Some(500.0 / 6.0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_figure(&mut self, customer: &CustomerId, industry: &str, figure: &str, value: f64) {
        let value = if value.is_nan() { 0.0 } else { value };
        self.push(customer, industry, Metric::Figure(figure.to_owned()), Some(value));
    }

    /// Counts one record of `customer`, in `industry`. Records that feed no
    /// metric are ignored.
    pub fn add(&mut self, customer: &CustomerId, industry: &str, record: &Record) {
        let (metric, value) = match &record.body {
            RecordBody::Event(e) => match &e.body {
                EventBody::Execution(x) => (Metric::Binary(x.sha256.to_string()), None),
                EventBody::WebRequest(w) => match w.host.clone() {
                    privtel_model::Personal::Generalised(privtel_model::Generalised::Domain(d)) => {
                        (Metric::Domain(d.into_string()), None)
                    }
                    _ => return,
                },
                EventBody::ExperienceScore(s) => (Metric::ExperienceScore, Some(f64::from(s.score.get()))),
                _ => return,
            },
            RecordBody::Package(p) => (Metric::Package(p.name.clone()), None),
            RecordBody::Device(d) => {
                (Metric::Device(format!("{:?}/{:?}", d.os.family, d.device_type).to_lowercase()), None)
            }
            RecordBody::Binary(b) => (Metric::Binary(b.sha256.to_string()), None),
            _ => return,
        };
        self.push(customer, industry, metric, value);
    }

    fn push(&mut self, customer: &CustomerId, industry: &str, metric: Metric, value: Option<f64>) {
        let acc = self.cells.entry((industry.to_owned(), metric)).or_default();
        let entry = acc.per_customer.entry(customer.clone()).or_insert((0, 0.0, [0; 10]));
        entry.0 += 1;
        if let Some(v) = value {
            let v = v.clamp(0.0, 100.0);
            entry.1 += v;
            // 100 goes in the last bin with 90–99.
            entry.2[((v / 10.0) as usize).min(9)] += 1;
        }
    }

    /// The published cells: every cell of at least k customers, with
    /// contributions clamped and noise added if asked; nothing else.
    pub fn finish(self) -> Vec<Cell> {
        let mut rng = SplitMix(self.seed);
        let cap = self.max_per_customer;
        let mut out = Vec::new();
        for ((industry, metric), acc) in self.cells {
            let customers = acc.per_customer.len() as u64;
            if customers < self.k {
                continue;
            }
            let mut count = 0.0;
            let mut sum = 0.0;
            let mut hist = [0.0f64; 10];
            for (n, s, h) in acc.per_customer.values() {
                // Clamp each customer's share to `cap` records, scaling the
                // sum and histogram by the same factor.
                let scale = if *n > cap { cap as f64 / *n as f64 } else { 1.0 };
                count += *n as f64 * scale;
                sum += s * scale;
                hist.iter_mut().zip(h).for_each(|(a, b)| *a += *b as f64 * scale);
            }
            if let Some(eps) = self.epsilon {
                let c = cap as f64;
                count += rng.laplace(c / eps);
                sum += rng.laplace(100.0 * c / eps);
                hist.iter_mut().for_each(|b| *b += rng.laplace(c / eps));
            }
            let has_values = matches!(metric, Metric::ExperienceScore | Metric::Figure(_));
            out.push(Cell {
                industry,
                metric,
                customers_at_least: customers / self.k * self.k,
                count,
                sum: has_values.then_some(sum),
                mean: (has_values && count > 0.0).then(|| sum / count),
                histogram: has_values.then(|| hist.to_vec()),
            });
        }
        out
    }
}

/// SplitMix64: a small, well-mixed generator; enough for seeded noise in
/// tests (see the module docs for production seeding).
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits in (0, 1).
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Laplace(0, scale) by inverse CDF.
    fn laplace(&mut self, scale: f64) -> f64 {
        let u = self.next_f64() - 0.5;
        -scale * u.signum() * (1.0 - 2.0 * u.abs()).ln()
    }
}

//! Cloud intelligence anonymised at the customer level: twelve customers in
//! two industries send device summaries (and an older agent's benchmarking
//! events) through the service; nothing of a device or a person is kept,
//! cells of fewer than five customers are never shown, and one customer's
//! quarterly report places it against its industry.

use std::collections::BTreeSet;
use std::path::Path;

use privtel_filter::Metric;
use privtel_model::{DeviceSummary, DexInputs, Program, Record, RecordBody, Timestamp, dex};
use privtel_service::{BenchmarkOptions, Quarter, Settings, benchmarks, quarterly_report};
use privtel_store::EngineStore as _;
use privtel_wire::RejectCode;

use super::{admissible, batch, connect, hello, id, now, peer, send, service_with};

const RETAIL: [&str; 7] = ["r1", "r2", "r3", "r4", "r5", "r6", "r7"];
const MINING: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];

fn settings() -> Settings {
    let mut toml = String::new();
    for c in RETAIL {
        toml.push_str(&format!("[customers.{c}]\nindustry = \"retail\"\n"));
    }
    for c in MINING {
        toml.push_str(&format!("[customers.{c}]\nindustry = \"mining\"\n"));
    }
    Settings::from_toml(&toml).unwrap()
}

/// 2026-11-27T00:00:00Z, the day of the fixtures' instants.
fn day() -> Timestamp {
    Timestamp::from_unix_seconds(1_795_737_600).unwrap()
}

/// The inputs of every device summary of `customer` (a week each):
/// retail `ri` has i−1 crashes and i−1 slow samples of 10, and r1–r3 a
/// rating of 60 + 10·i; mining `mj` has 2j crashes, 1 slow sample of 4
/// (m5 none measured), no rating.
fn inputs(customer: &str) -> DexInputs {
    let n: u32 = customer[1..].parse().unwrap();
    if customer.starts_with('r') {
        let rated = n <= 3;
        DexInputs {
            days: 7,
            crashes: n - 1,
            performance_samples: 10,
            slow_samples: n - 1,
            ratings: u32::from(rated),
            rating_sum: if rated { u64::from(60 + 10 * n) } else { 0 },
        }
    } else {
        let samples = if n == 5 { 0 } else { 4 };
        DexInputs {
            days: 7,
            crashes: 2 * n,
            performance_samples: samples,
            slow_samples: samples.min(1),
            ratings: 0,
            rating_sum: 0,
        }
    }
}

fn summary(customer: &str) -> Record {
    let i = inputs(customer);
    let mut s = DeviceSummary::new(day(), i.days);
    s.crashes = i.crashes;
    (s.performance_samples, s.slow_samples) = (i.performance_samples, i.slow_samples);
    (s.ratings, s.rating_sum) = (i.ratings, i.rating_sum);
    s.executions = 12;
    Record { program: Program::Benchmarking, body: RecordBody::DeviceSummary(s.scored().unwrap()) }
}

fn device(customer: &str, d: usize) -> String {
    format!("dev-canary{customer}x{d}")
}

fn in_engine_files(dir: &Path, needle: &str) -> bool {
    ["engine.db", "engine.db-wal"].iter().any(|f| {
        std::fs::read(dir.join(f)).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

fn customers() -> impl Iterator<Item = &'static str> {
    RETAIL.into_iter().chain(MINING)
}

#[test]
fn twelve_customers_in_two_industries_give_cells_only_of_five_or_more_and_keep_no_device_or_person() {
    let dir = tempfile::tempdir().unwrap();
    let service = service_with(dir.path(), settings());
    let mut people = BTreeSet::new();
    for c in customers() {
        for d in 0..2 {
            let dev = device(c, d);
            let mut conn = connect(&service, peer(c, &dev));
            conn.client_handshake(&hello(c, &dev, 1)).unwrap();
            let mut records = vec![summary(c)];
            if d == 0 {
                // An older agent's benchmarking events and objects (logins
                // with a user id, an experience score, applications).
                let old = admissible(&service, c, "old", Program::Benchmarking);
                people.extend(old.iter().filter_map(|r| r.body.user()).map(|u| u.as_str().to_owned()));
                records.extend(old);
            }
            let n = records.len() as u64;
            let b = batch(&service, c, 1, records);
            let ack = send(&mut conn, b.clone());
            assert_eq!((ack.accepted_up_to, ack.rejections.len()), (n, 0), "{:?}", ack.rejections);
            // A retry of the same batch is acknowledged and not folded again.
            let again = send(&mut conn, b);
            assert_eq!(again.accepted_up_to, n);
        }
    }
    assert!(!people.is_empty(), "the older agent's records name a person: the scan proves something");
    let engine = service.engine();
    assert_eq!(engine.record_count().unwrap(), 0, "no benchmarking record is a row");
    // Each customer's row: two summaries, not four (the retries).
    let quarter = Quarter::of(now());
    let aggregates = engine.aggregates(quarter.start(), quarter.end()).unwrap();
    assert_eq!(aggregates.len(), 12);
    for a in &aggregates {
        assert_eq!((a.summaries, a.executions), (2, 24), "{}", a.customer);
        let industry = if a.customer.as_str().starts_with('r') { "retail" } else { "mining" };
        assert_eq!(a.industry, industry, "tagged with the customer's industry");
        assert_eq!(a.score_tenths(), Some(dex(&inputs(a.customer.as_str())).get()));
        assert!(a.other_records > 0);
    }
    // Nobody the older agent's events named is in the files.
    for person in &people {
        assert!(!in_engine_files(dir.path(), person), "a person's id is in the engine files");
    }
    assert!(!in_engine_files(dir.path(), "dev-0001"), "an event's device id is in the engine files");

    // Exact cells (no noise): only industry × figure of five or more.
    let exact = benchmarks(&aggregates, &BenchmarkOptions::default().without_noise(), 0);
    let shown: BTreeSet<(String, String, u64)> = exact
        .iter()
        .map(|c| {
            let Metric::Figure(f) = &c.metric else { panic!("figures only") };
            (c.industry.clone(), f.clone(), c.count as u64)
        })
        .collect();
    let expected: BTreeSet<(String, String, u64)> = [
        ("mining", "crashes_per_device_week", 5),
        ("mining", "experience_score", 5),
        ("retail", "crashes_per_device_week", 7),
        ("retail", "experience_score", 7),
        ("retail", "slow_sample_percent", 7),
        // Suppressed: retail's ratings (3 customers), mining's slow samples
        // (4: m5 measured none) and ratings (none).
    ]
    .into_iter()
    .map(|(i, f, n)| (i.to_owned(), f.to_owned(), n))
    .collect();
    assert_eq!(shown, expected);
    for cell in &exact {
        assert!(cell.customers_at_least >= 5);
    }
    let retail_score = exact
        .iter()
        .find(|c| c.industry == "retail" && c.metric == Metric::Figure("experience_score".into()))
        .unwrap();
    let mean = RETAIL.iter().map(|c| f64::from(dex(&inputs(c)).get())).sum::<f64>() / 7.0;
    assert!((retail_score.mean.unwrap() - mean).abs() < 1e-9);

    // With noise (the default): the same cells, other numbers, the same
    // numbers for the same seed and quarter.
    let noisy = |seed| {
        benchmarks(&aggregates, &BenchmarkOptions::default().with_seed(seed), quarter.noise_seed(seed))
    };
    let cells = noisy(7);
    assert_eq!(cells.len(), exact.len());
    assert_eq!(cells, noisy(7));
    assert_ne!(cells, noisy(8));

    // The quarterly report of r1: its score by hand (C = 10, P = 10, F = 7:
    // 4 + 3.5 + 1.75 = 9.25 -> 9.3), its industry's shown cells, retail's
    // ratings suppressed.
    let settings = service.settings();
    let options = BenchmarkOptions::default().without_noise();
    let report = quarterly_report(&engine, &settings, &id("r1"), quarter, &options).unwrap();
    assert_eq!((report.device_summaries, report.experience_score), (2, Some(9.3)));
    assert_eq!(report.industry.as_deref(), Some("retail"));
    let of = |f: &str| report.comparisons.iter().find(|c| c.figure == f).unwrap();
    assert_eq!(of("experience_score").customer, Some(9.3), "on the 0-10 scale");
    let industry = of("experience_score").industry.as_ref().unwrap();
    assert_eq!((industry.customers_at_least, industry.mean), (5, (mean).round() / 10.0));
    assert_eq!(industry.histogram.iter().sum::<f64>(), 7.0);
    assert_eq!(of("rating").customer, Some(70.0), "its own rating is its own data");
    assert!(of("rating").industry.is_none(), "3 retail customers rated: suppressed");
    let json = report.to_json();
    assert!(json.contains("\"quarter\": \"2026-Q4\"") && json.contains("\"customer\": \"r1\""), "{json}");
    for other in customers().filter(|c| *c != "r1") {
        assert!(!json.contains(&format!("\"{other}\"")), "another customer named in the report");
    }
    let md = report.to_markdown();
    println!("{md}");
    assert!(md.contains("# Benchmark report: r1, 2026-Q4"));
    assert!(md.contains("Digital Experience Score: 9.3 / 10"));
    assert!(md.contains("| rating | 70.0 | suppressed | fewer than 5 | – |"), "{md}");
    // A mining customer's slow samples: suppressed (4 customers).
    let m1 = quarterly_report(&engine, &settings, &id("m1"), quarter, &options).unwrap();
    assert!(m1.comparisons.iter().find(|c| c.figure == "slow_sample_percent").unwrap().industry.is_none());
    assert!(m1.comparisons.iter().find(|c| c.figure == "experience_score").unwrap().industry.is_some());
    drop(engine);

    // The devices live on in the streams' bookkeeping only: purged as
    // inactive (45 days), no byte of their ids remains, and the
    // aggregates, which never held them, do.
    let later = now().checked_add(time::Duration::days(60)).unwrap();
    service.sweep(later).unwrap();
    for c in customers() {
        for d in 0..2 {
            assert!(!in_engine_files(dir.path(), &device(c, d)), "{} in the files", device(c, d));
        }
    }
    let engine = service.engine();
    let kept = engine.aggregates(quarter.start(), quarter.end()).unwrap();
    assert_eq!(kept, aggregates, "the aggregates outlive the devices");
}

#[test]
fn a_summary_whose_score_does_not_follow_from_its_counts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let service = service_with(dir.path(), settings());
    let mut conn = connect(&service, peer("r1", "dev-1"));
    conn.client_handshake(&hello("r1", "dev-1", 1)).unwrap();
    let mut lying = summary("r4");
    if let RecordBody::DeviceSummary(s) = &mut lying.body {
        s.score = privtel_model::Score::MAX;
    }
    let ack = send(&mut conn, batch(&service, "r1", 1, vec![lying, summary("r1")]));
    assert_eq!(ack.rejections.len(), 1);
    assert_eq!((ack.rejections[0].seq, ack.rejections[0].code), (1, RejectCode::FIELD_FORM));
    assert!(ack.rejections[0].reason.contains("device summary"), "{}", ack.rejections[0].reason);
    let quarter = Quarter::of(now());
    let aggregates = service.engine().aggregates(quarter.start(), quarter.end()).unwrap();
    assert_eq!(aggregates[0].summaries, 1, "only the honest one");
}

//! k-anonymous aggregates: a cell of fewer than k customers never appears.

use std::collections::{BTreeMap, BTreeSet};

use privtel_filter::{Aggregator, Metric};
use privtel_model::{CustomerId, Package, PackageManager, Program, Record, RecordBody};
use proptest::prelude::*;

fn package(name: &str) -> Record {
    Record {
        program: Program::Benchmarking,
        body: RecordBody::Package(Package {
            name: name.into(),
            version: "1".into(),
            manager: PackageManager::Apt,
            installed_at: None,
        }),
    }
}

proptest! {
    #[test]
    fn suppressed_cells_never_appear(
        // (customer, industry, package, repeats)
        rows in prop::collection::vec((0u8..12, 0u8..3, 0u8..6, 1u8..4), 0..200),
        k in 1u64..7,
        noise in any::<bool>(),
    ) {
        let mut agg = Aggregator::new(k);
        if noise {
            agg = agg.with_noise(1.0, 42);
        }
        let mut truth: BTreeMap<(String, String), BTreeSet<u8>> = BTreeMap::new();
        for (c, i, p, n) in &rows {
            let customer = CustomerId::new(format!("c{c}")).unwrap();
            let industry = format!("industry{i}");
            for _ in 0..*n {
                agg.add(&customer, &industry, &package(&format!("pkg{p}")));
            }
            truth.entry((industry, format!("pkg{p}"))).or_default().insert(*c);
        }
        let cells = agg.finish();
        for cell in &cells {
            let Metric::Package(name) = &cell.metric else { panic!("only packages were added") };
            let customers = truth[&(cell.industry.clone(), name.clone())].len() as u64;
            prop_assert!(customers >= k, "cell of {customers} customers published with k={k}");
            prop_assert!(cell.customers_at_least <= customers && cell.customers_at_least >= k);
            if !noise {
                let records: u64 = rows.iter().filter(|(_, i, p, _)| format!("industry{i}") == cell.industry && format!("pkg{p}") == *name).map(|(.., n)| u64::from(*n)).sum();
                prop_assert_eq!(cell.count, records as f64);
            }
        }
        let published = cells.len();
        let eligible = truth.values().filter(|c| c.len() as u64 >= k).count();
        prop_assert_eq!(published, eligible, "every cell of k or more customers is published");
        let json = serde_json::to_string(&cells).unwrap();
        prop_assert!(!json.contains("\"c1"), "no customer id in the output");
    }
}

#[test]
fn experience_scores_give_mean_and_histogram() {
    let mut agg = Aggregator::new(2);
    for (c, score) in [("a", 50u8), ("b", 100), ("b", 90)] {
        let mut r = privtel_testkit::fixtures::records("x").pop().unwrap();
        if let RecordBody::Event(e) = &mut r.body
            && let privtel_model::EventBody::ExperienceScore(s) = &mut e.body
        {
            s.score = privtel_model::Score::new(score).unwrap();
        }
        agg.add(&CustomerId::new(c).unwrap(), "retail", &r);
    }
    let cells = agg.finish();
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0].count, 3.0);
    assert_eq!(cells[0].mean, Some(80.0));
    let h = cells[0].histogram.as_ref().unwrap();
    assert_eq!((h[5], h[9]), (1.0, 2.0));
}

#[test]
fn noise_is_seeded_and_bounded_contributions_are_clamped() {
    let run = |seed| {
        let mut agg = Aggregator::new(1).with_noise(0.5, seed).max_per_customer(10);
        for _ in 0..1000 {
            agg.add(&CustomerId::new("big").unwrap(), "x", &package("p"));
        }
        agg.finish()[0].count
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    // 1,000 records of one customer count as at most 10 (plus noise of
    // scale 20: far below 1,000).
    assert!(run(1) < 200.0, "{}", run(1));
}

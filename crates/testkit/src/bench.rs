//! What the benchmarks and figure-printing examples share: the record they
//! fill stores with, and the `RATIO` line they report a goal with.

use privtel_model::{
    DeviceId, Event, EventBody, EventId, FeatureUsage, Program, Record, RecordBody, Timestamp, UserId,
};

/// Feature-usage event number `i` (its id too) of one of 100 devices and
/// one of `users` users, recorded at `at`: a small record with a user id
/// and no other personal field.
///
/// # Panics
///
/// If `users` is 0.
pub fn feature_event(i: u64, at: Timestamp, users: u64) -> Record {
    Record {
        program: Program::AnonymousUsage,
        body: RecordBody::Event(Event {
            id: EventId::from_u128(u128::from(i)),
            device: DeviceId::new(format!("dev-{}", i % 100)).expect("valid"),
            user: Some(UserId::new(format!("u-{}", i % users)).expect("valid")),
            recorded_at: at,
            body: EventBody::FeatureUsage(FeatureUsage {
                product: "agent".into(),
                feature: format!("f{}", i % 40),
                count: 1,
            }),
        }),
    }
}

/// Prints `RATIO name r (measured unit, goal …; met)`, r being measured /
/// goal when higher is better, goal / measured otherwise: r ≥ 1 meets it.
pub fn ratio(name: &str, measured: f64, goal: f64, higher_is_better: bool, unit: &str) {
    let r = if higher_is_better { measured / goal } else { goal / measured };
    let met = if r >= 1.0 { "met" } else { "NOT MET" };
    println!(
        "RATIO {name} {r:.2}  ({measured:.3} {unit}, goal {} {goal} {unit}; {met})",
        if higher_is_better { ">=" } else { "<=" }
    );
}

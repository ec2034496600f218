//! Writes sample records as the engines store them (the model's JSON, one
//! file each) into a folder: the training set of the dictionary that row
//! format 3 compresses with (`scripts/train-record-dictionary.sh`).
//!
//! Every record kind of the fixtures, each in three forms (personal fields
//! in clear, pseudonymised, withheld), with varied tags, ids, users and
//! times. None of the benchmarks' records is among them. The dictionary
//! made from them is frozen once rows use it: a later one gets a new
//! format code.
//!
//! `cargo run -p privtel-store --example record-samples -- DIR [COUNT]`

use privtel_model::{EventId, KeyId, Pseudonym, Record, RecordBody, Timestamp, VisitPersonal as _};
use privtel_testkit::fixtures;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: record-samples DIR [COUNT]")?);
    let count: u64 = args.next().map_or(Ok(200), |s| s.parse())?;
    std::fs::create_dir_all(&dir)?;
    let mut n = 0u64;
    let mut write = |r: &Record| -> Result<(), Box<dyn std::error::Error>> {
        std::fs::write(dir.join(format!("{n:06}.json")), serde_json::to_vec(r)?)?;
        n += 1;
        Ok(())
    };
    let base = fixtures::base_time();
    for i in 0..count {
        let tag = format!("t{}", i * 7_919 % 100_003);
        let mut records = fixtures::records_of(&format!("u-{}", i * 31 % 9_973), &tag, u128::from(i) << 20);
        records.push(fixtures::interaction());
        records.push(fixtures::device_summary());
        for (k, mut r) in records.into_iter().enumerate() {
            if let RecordBody::Event(e) = &mut r.body {
                e.recorded_at =
                    Timestamp::from_unix_nanos(base.unix_nanos() - i128::from(i) * 3_600_000_000_123)?;
                e.id = EventId::from_u128(e.id.as_u128() ^ u128::from(i * 1_000_003 + k as u64));
            }
            match (i + k as u64) % 3 {
                0 => {}
                1 => r.visit_personal(&mut |mut f| {
                    let mut token = [0u8; 16];
                    for (j, b) in token.iter_mut().enumerate() {
                        *b = (i as u8).wrapping_mul(31).wrapping_add((j * k) as u8);
                    }
                    f.value.set_pseudonym(Pseudonym::new(KeyId::new(1 + (i % 3) as u32), token));
                }),
                _ => r.visit_personal(&mut |mut f| f.value.withhold()),
            }
            write(&r)?;
        }
    }
    println!("{n} samples in {}", dir.display());
    Ok(())
}

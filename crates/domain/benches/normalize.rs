//! Inputs per second of `Normalizer::normalize` on the inputs the fast path
//! takes (bare hosts, `host:port`, http(s) URLs) and on a few the full path
//! takes, median of 7 runs. No harness: `cargo bench -p privtel-domain`
//! prints one line per corpus.

use std::hint::black_box;
use std::time::Instant;

use privtel_domain::Normalizer;

const WORDS: [&str; 12] =
    ["www", "mail", "cdn", "api", "login", "static", "news", "shop", "acme", "cloud", "eu-west-1", "app"];
const SUFFIXES: [&str; 10] =
    ["com", "org", "net", "co.uk", "de", "io", "github.io", "com.au", "s3.amazonaws.com", "example"];

/// A fixed-seed generator (xorshift), so every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn host(rng: &mut Rng) -> String {
    let mut labels: Vec<String> =
        (0..rng.below(3)).map(|_| WORDS[rng.below(WORDS.len())].to_owned()).collect();
    labels.push(format!("site{}", rng.below(50_000)));
    labels.push(SUFFIXES[rng.below(SUFFIXES.len())].to_owned());
    labels.join(".")
}

fn fast_corpus(n: usize) -> Vec<String> {
    let mut rng = Rng(20_261_127);
    (0..n)
        .map(|i| {
            let h = host(&mut rng);
            match i % 4 {
                0 => h,
                1 => format!("{h}:8443"),
                2 => format!("https://{h}/path?q=1"),
                _ => format!("HTTP://{h}/"),
            }
        })
        .collect()
}

fn full_corpus(n: usize) -> Vec<String> {
    let mut rng = Rng(7);
    (0..n)
        .map(|i| {
            let h = host(&mut rng);
            match i % 4 {
                0 => format!("https://user@{h}/"),
                1 => format!("mailto:bob@{h}"),
                2 => format!("wss://{h}/socket"),
                _ => format!("http://{h}:8080/%61"),
            }
        })
        .collect()
}

fn measure(name: &str, inputs: &[String]) {
    let n = Normalizer::shared();
    let mut rates: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let mut ok = 0usize;
            for input in inputs {
                ok += usize::from(black_box(n.normalize(black_box(input))).is_ok());
            }
            black_box(ok);
            inputs.len() as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!("{name}: {:.0} inputs/s ({:.0} ns each), median of 7", median, 1e9 / median);
}

fn main() {
    // `cargo test --benches` runs this too: keep that quick.
    let size = if std::env::args().any(|a| a == "--bench") { 400_000 } else { 1_000 };
    measure("fast path (hosts, host:port, http(s) URLs)", &fast_corpus(size));
    measure("full path (userinfo, mailto, wss, percent)", &full_corpus(size / 4));
}

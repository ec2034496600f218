//! Domain normalization on a generated corpus of realistic hosts and URLs,
//! one core: our `Normalizer` against the straightforward pipeline (trim,
//! `Url::parse`, dot cleanup, `publicsuffix` lookup) on the same inputs, and
//! the cost of loading the embedded list.
//!
//! Not measured: reading input, printing output (see
//! `scripts/bench-domain.sh` for the comparison with Python's
//! `publicsuffixlist` through the `normalize` example).

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use privtel::domain::Normalizer;
use publicsuffix::Psl as _;

/// A fixed-seed corpus: hosts of 1 to 4 labels under common suffixes, with
/// some upper case and trailing dots, as proxies and browser logs show them.
fn hosts(n: usize) -> Vec<String> {
    const WORDS: [&str; 16] = [
        "www",
        "mail",
        "cdn",
        "api",
        "login",
        "static",
        "news",
        "shop",
        "example",
        "acme",
        "cloud",
        "files",
        "media",
        "portal",
        "img",
        "eu-west-1",
    ];
    const SUFFIXES: [&str; 12] = [
        "com",
        "org",
        "net",
        "co.uk",
        "de",
        "io",
        "github.io",
        "com.au",
        "fr",
        "s3.amazonaws.com",
        "jp",
        "blogspot.com",
    ];
    let mut x: u64 = 0x2026_1127;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let labels = 1 + next() % 3;
            let mut host: Vec<String> =
                (0..labels).map(|_| WORDS[(next() % 16) as usize].to_owned()).collect();
            host.push(format!("site{}", next() % 5000));
            host.push(SUFFIXES[(next() % 12) as usize].to_owned());
            let mut h = host.join(".");
            if next() % 10 == 0 {
                h = h.to_uppercase();
            }
            h
        })
        .collect()
}

fn urls(hosts: &[String]) -> Vec<String> {
    hosts.iter().enumerate().map(|(i, h)| format!("https://{h}/path/{i}/index.html?q={i}&lang=en")).collect()
}

/// The straightforward pipeline the issue compares against.
fn baseline(list: &publicsuffix::List, input: &str) -> Option<(String, Option<String>)> {
    let trimmed = input.trim_matches(|c: char| c <= ' ');
    let url = if trimmed.contains("://") {
        url::Url::parse(trimmed)
    } else {
        url::Url::parse(&format!("http://{trimmed}"))
    }
    .ok()?;
    let host = url.host_str()?.trim_matches('.').to_owned();
    let registrable =
        list.domain(host.as_bytes()).map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned());
    Some((host, registrable))
}

fn domain(c: &mut Criterion) {
    let n = Normalizer::default();
    let list: publicsuffix::List = privtel::domain::EMBEDDED_LIST.parse().expect("embedded list parses");
    let hosts = hosts(10_000);
    let urls = urls(&hosts);

    let mut g = c.benchmark_group("domain");
    g.throughput(Throughput::Elements(hosts.len() as u64));
    g.bench_function("normalize/bare-hosts", |b| {
        b.iter(|| hosts.iter().filter(|h| n.normalize(black_box(h)).is_ok()).count())
    });
    g.bench_function("baseline/bare-hosts", |b| {
        b.iter(|| hosts.iter().filter(|h| baseline(&list, black_box(h)).is_some()).count())
    });
    g.bench_function("normalize/https-urls", |b| {
        b.iter(|| urls.iter().filter(|u| n.normalize(black_box(u)).is_ok()).count())
    });
    g.bench_function("baseline/https-urls", |b| {
        b.iter(|| urls.iter().filter(|u| baseline(&list, black_box(u)).is_some()).count())
    });
    g.bench_function("psl-lookup-only", |b| {
        let lower: Vec<String> = hosts.iter().map(|h| h.to_lowercase()).collect();
        b.iter(|| lower.iter().filter(|h| list.domain(black_box(h.as_bytes())).is_some()).count())
    });
    g.finish();

    let mut g = c.benchmark_group("domain/load");
    g.sample_size(20);
    g.bench_function("embedded-list", |b| b.iter(Normalizer::default));
    g.finish();
}

criterion_group!(benches, domain);
criterion_main!(benches);

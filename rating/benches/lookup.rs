//! Longest-prefix rate lookups on a 100,000-prefix deck (goal: ≥ 1,000,000 per second on one
//! core). Run: `cargo bench -p rating --bench lookup`.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rating::deck::{Deck, RateRow};
use rating::{Money, Tariff};
use rust_decimal::Decimal;

fn deck(n: usize, rng: &mut rand::rngs::StdRng) -> Deck {
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::with_capacity(n);
    while rows.len() < n {
        let len = rng.random_range(2..=9);
        let prefix: String = (0..len)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect();
        if !seen.insert(prefix.clone()) {
            continue;
        }
        rows.push(RateRow {
            prefix,
            description: String::new(),
            tariff: Tariff::new(Decimal::new(12, 3), Money::ZERO, 6, 6, 0).unwrap(),
            time_band: None,
            currency: "USD".into(),
            line: 0,
        });
    }
    Deck::new(rows)
}

fn lookups(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let d = deck(100_000, &mut rng);
    let numbers: Vec<String> = (0..1024)
        .map(|_| {
            (0..11)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect()
        })
        .collect();
    let at = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let mut g = c.benchmark_group("rate lookup, 100k prefixes");
    g.throughput(Throughput::Elements(numbers.len() as u64));
    g.bench_function("1024 lookups", |b| {
        b.iter(|| {
            let mut hits = 0;
            for n in &numbers {
                if d.lookup(std::hint::black_box(n), "USD", at).is_some() {
                    hits += 1;
                }
            }
            hits
        })
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);

//! Reports on a long history (goal: a daily report in under 200 ms on 10 million call
//! records, on the 2-core machine): generates the records straight into the table, spread
//! over the last 365 days and 20 tenants, rolls the closed days up once, then times the
//! reports a clerk asks for.
//!
//! Run: `cargo bench -p rating --bench reports` (SQLite in a temp file), or with
//! `B2BUA_BENCH_DB=postgres://postgres@127.0.0.1:5432/test` for PostgreSQL (a fresh schema,
//! dropped afterwards). `B2BUA_BENCH_RECORDS` sets the number of records (default 10,000,000).
//!
//! The baseline measured in the same run is one full scan of the records
//! (`SELECT COUNT(*), SUM(cost) FROM call_records`): what any report costs that reads the raw
//! records instead of the roll-up.

use chrono::{Duration, Utc};
use rating::store::{Dimension, ReportRange};
use rating::{Store, StoreConfig};
use sqlx::Connection;

mod common;
use std::time::Instant;

const DAY_MS: i64 = 86_400_000;

/// The median of `runs` timings of `f`, in milliseconds.
async fn median_ms<F, Fut>(runs: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let rows = f().await;
        assert!(rows > 0, "a report with nothing in it measures nothing");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list themselves.
    }
    let records: i64 = std::env::var("B2BUA_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let db = common::BenchDb::new("reports.db").await;
    let (url, schema) = (&db.url, &db.schema);
    let store = Store::open(url, StoreConfig::default()).await.unwrap();
    let now = Utc::now();
    // 365 days of records ending now: the first 364 are closed and rolled up, today is live.
    let start = (now.timestamp_millis() / DAY_MS - 364) * DAY_MS;
    let step = (now.timestamp_millis() - start) / records.max(1);
    let series = if schema.is_some() {
        format!("SELECT generate_series(0::bigint, {}) AS i", records - 1)
    } else {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             SELECT i FROM n",
            records - 1
        )
    };
    // One refusal in ten (code 4); the others answered, up to ten minutes at 0.25/min.
    let insert = format!(
        "INSERT INTO call_records (conf_id, session_id, account, ani, access_number, destination, \
         setup_at, connect_at, disconnect_at, billed_seconds, cost, currency, deck, rate_prefix, \
         rate_description, disconnect_cause, return_code, node, created_at, tenant, gateway) \
         SELECT 'c' || i, 's' || i, 'acct' || (i % 100000), '4085550100', '5551200', \
         '4420' || (i % 1000), {start} + i * {step}, \
         CASE WHEN i % 10 = 0 THEN NULL ELSE {start} + i * {step} END, {start} + i * {step}, \
         CASE WHEN i % 10 = 0 THEN 0 ELSE i % 600 END, \
         CASE WHEN i % 10 = 0 THEN 0 ELSE (i % 600) * 4167 END, 'USD', 'default', \
         CASE WHEN i % 10 = 0 THEN '' ELSE '44' || (i % 200) END, \
         CASE WHEN i % 10 = 0 THEN '' ELSE 'group ' || (i % 200) END, 'normal', \
         CASE WHEN i % 10 = 0 THEN 4 ELSE 0 END, 'bench', {start} + i * {step}, \
         'tenant' || (i % 20), CASE WHEN i % 10 = 0 THEN '' ELSE 'gw-' || (i % 8) END \
         FROM ({series}) g"
    );
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    let t = Instant::now();
    sqlx::query(&insert).execute(&mut c).await.unwrap();
    let generated = t.elapsed().as_secs_f64();
    if schema.is_some() {
        sqlx::query("ANALYZE call_records")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let t = Instant::now();
    let days = store.roll_up(now, 400).await.unwrap();
    let rolled = t.elapsed().as_secs_f64();
    println!(
        "{:?}: {records} records over 365 days generated in {generated:.1} s; \
         {days} closed days rolled up in {rolled:.1} s ({:.0} ms a day)",
        store.backend(),
        rolled * 1000.0 / days.max(1) as f64
    );

    // The baseline: one full scan of the raw records (the median of three).
    let mut scans = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_records WHERE cost >= 0")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n, records);
        scans.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    scans.sort_by(f64::total_cmp);
    let scan = scans[1];
    println!("  baseline: a full scan of the records takes {scan:.0} ms");

    let today = now.date_naive();
    let range = |days: i64, tenant: Option<&str>| {
        ReportRange::new(
            today - Duration::days(days - 1),
            today,
            tenant.map(str::to_string),
        )
        .unwrap()
    };
    for (name, days, tenant, by) in [
        ("summary per day, last 30 days", 30, None, Dimension::Day),
        ("summary per day, last 365 days", 365, None, Dimension::Day),
        (
            "destinations, last 30 days, one tenant",
            30,
            Some("tenant7"),
            Dimension::RateGroup,
        ),
        ("gateways, last 365 days", 365, None, Dimension::Gateway),
        (
            "refusals by code, last 30 days",
            30,
            None,
            Dimension::ReturnCode,
        ),
    ] {
        let r = range(days, tenant);
        let ms = median_ms(5, || {
            let (store, r) = (&store, &r);
            async move { store.call_totals(r, by).await.unwrap().len() }
        })
        .await;
        println!(
            "  {name}: {ms:.1} ms (goal < 200 ms; {:.3} of the full scan)",
            ms / scan
        );
    }
    // Today alone is never rolled up: what the live part costs.
    let r = range(1, None);
    let ms = median_ms(5, || {
        let (store, r) = (&store, &r);
        async move {
            store
                .call_totals(r, Dimension::Gateway)
                .await
                .unwrap()
                .len()
        }
    })
    .await;
    println!(
        "  gateways, today only (live, ~{} records): {ms:.1} ms",
        records / 365
    );
    store.close().await;
    drop(c);
    db.drop_schema().await;
}

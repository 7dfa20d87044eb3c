//! Authorize + reserve + settle throughput on the real store (goal: ≥ 5,000/s on SQLite in WAL
//! mode, ≥ 3,000/s on PostgreSQL, on the 2-core machine).
//!
//! Run: `cargo bench -p rating --bench store` (SQLite in a temp file), or with
//! `B2BUA_BENCH_DB=postgres://postgres@127.0.0.1:5432/test` for PostgreSQL (uses a fresh
//! schema, dropped afterwards). `B2BUA_BENCH_CALLS` and `B2BUA_BENCH_CONCURRENCY` tune the run.
//!
//! The machine's speed varies from day to day, so the run also measures the database's bare
//! ceiling on the same file (or schema), pool size and concurrency: single-row insert
//! transactions per second through the same driver and pragmas. The ratio of the two is what
//! the store's own work costs, and what improving the store must move.
//!
//! `B2BUA_BENCH_GROUP_COMMIT=0` runs every hold and settlement in a transaction of its own
//! (the store before group commit), `B2BUA_BENCH_BATCH_MAX` and `B2BUA_BENCH_BATCH_DELAY_US`
//! tune the batches, `B2BUA_BENCH_WRITERS` the writer connections on PostgreSQL.

use chrono::{Duration, Utc};
use rating::deck::parse_rates_csv;
use rating::store::{AuthRequest, CallEnd, CallRequest, NewAccount};
use rating::{Money, ReturnCode, Store, StoreConfig};

mod common;
use std::sync::Arc;
use std::time::Instant;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list themselves.
    }
    let calls = env_num("B2BUA_BENCH_CALLS", 20_000);
    let concurrency = env_num("B2BUA_BENCH_CONCURRENCY", 32);
    let db = common::BenchDb::new("bench.db").await;
    let url = &db.url;
    let cfg = StoreConfig {
        node_id: "bench".into(),
        max_connections: 16,
        group_commit: env_num("B2BUA_BENCH_GROUP_COMMIT", 1) != 0,
        batch_max: env_num("B2BUA_BENCH_BATCH_MAX", 128),
        batch_delay: std::time::Duration::from_micros(
            env_num("B2BUA_BENCH_BATCH_DELAY_US", 0) as u64
        ),
        writers: env_num("B2BUA_BENCH_WRITERS", StoreConfig::default().writers),
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(url, cfg).await.unwrap());
    let now = Utc::now();
    let rows = parse_rates_csv(rating::demo::RATES_CSV.as_bytes(), "USD").unwrap();
    store
        .import_rates("default", &rows, "bench", now)
        .await
        .unwrap();
    // One card per worker, so the figure is the store's, not one row's lock queue.
    let cards: Vec<NewAccount> = (0..concurrency)
        .map(|i| {
            let mut n = NewAccount::new(
                &format!("9{i:07}"),
                Some("1234"),
                Money::parse("1000000", false).unwrap(),
            );
            n.max_calls = 100;
            n
        })
        .collect();
    store.create_accounts(&cards, now).await.unwrap();

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let store = store.clone();
        let per = calls / concurrency;
        tasks.spawn(async move {
            for i in 0..per {
                let conf = format!("c-{w}-{i}");
                let req = CallRequest {
                    auth: AuthRequest {
                        account: format!("9{w:07}"),
                        pin: Some("1234".into()),
                        ani: Some("14085550000".into()),
                        access_number: "5551200".into(),
                        session_id: format!("s-{w}-{i}"),
                        tenant: None,
                        authenticated: false,
                    },
                    destination: "5555233".into(),
                    conf_id: conf.clone(),
                    whole_credit: false,
                    rate_deck: None,
                };
                let now = Utc::now();
                let a = store.authorize_call(&req, now).await;
                assert_eq!(a.code, ReturnCode::Success);
                let end = CallEnd {
                    connect_at: Some(now),
                    disconnect_at: now + Duration::seconds(42),
                    cause: "normal".into(),
                    voice_quality: None,
                    gateway: String::new(),
                };
                store.settle(&conf, &end, now).await.unwrap();
            }
            per
        });
    }
    let mut done = 0;
    while let Some(n) = tasks.join_next().await {
        done += n.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:?}: {done} authorize+reserve+settle in {secs:.2} s = {:.0}/s ({concurrency} concurrent, {} cores)",
        store.backend(),
        done as f64 / secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let report = store.ledger_check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    store.close().await;
    if let Some(w) = store.writer_stats() {
        let batches = w.batches.load(std::sync::atomic::Ordering::Relaxed).max(1);
        let ops = w.operations.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "  group commit: {} writer(s), {ops} operations in {batches} transactions ({:.1} a batch), {} reruns",
            store.writer_count(),
            ops as f64 / batches as f64,
            w.reruns.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let store_rate = done as f64 / secs;
    let (n, bare_secs) = ceiling(url, calls, concurrency).await;
    let bare = n as f64 / bare_secs;
    println!(
        "  bare ceiling: {n} single-row insert transactions in {bare_secs:.2} s = {bare:.0}/s \
         (the store: {:.3} calls per bare commit)",
        store_rate / bare
    );
    db.drop_schema().await;
}

/// The database's own commit rate here: `concurrency` tasks each inserting single rows, one
/// transaction each, on the store's database through the same driver, pool size and pragmas.
async fn ceiling(url: &str, calls: usize, concurrency: usize) -> (usize, f64) {
    let sqlite = url.starts_with("sqlite:");
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(16)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    sqlx::Executor::execute(
                        &mut *conn,
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE bench_ceiling (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per = calls / concurrency;
    for w in 0..concurrency {
        let pool = pool.clone();
        tasks.spawn(async move {
            for i in 0..per {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("INSERT INTO bench_ceiling (id, v) VALUES ($1, $2)")
                    .bind((w * per + i) as i64)
                    .bind(i as i64)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    pool.close().await;
    (per * concurrency, secs)
}

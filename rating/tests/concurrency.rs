//! The overspend test: 500 calls at once on one card, through two store instances (two
//! "nodes") on one database. Whatever the interleaving, the settlements never exceed the
//! balance, every hold is released, and the ledger checks.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::{card, money, TestDb};
use rating::deck::parse_rates_csv;
use rating::store::{AuthRequest, CallEnd, CallRequest};
use rating::{Money, ReturnCode};
use std::sync::Arc;

const CALLS: usize = 500;

async fn five_hundred_calls_never_overspend(db: &TestDb) {
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let chunky = |node: &str| rating::StoreConfig {
        chunk_seconds: 30,
        max_connections: 6,
        ..common::config(node)
    };
    let a = Arc::new(db.store_with(chunky("node-a")).await);
    let b = Arc::new(db.store_with(chunky("node-b")).await);
    local_deck_and_card(&a, "20.00", 10_000, now).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let req = call_on_card(i, "5555233");
            let conf = req.conf_id.clone();
            let answer = store.authorize_call(&req, now).await;
            let Some(res) = answer.reservation else {
                return (answer.code, Money::ZERO);
            };
            let mut granted = res.granted_seconds;
            if i % 3 == 0 {
                granted = store
                    .extend(&conf, now + Duration::seconds(20))
                    .await
                    .unwrap()
                    .granted_seconds;
            }
            // Talk somewhere between nothing and a little past the grant (a late BYE).
            let talk = (i as i64 * 7) % (granted as i64 + 5);
            let end = talked(now, talk);
            let s = store.settle(&conf, &end, now).await.unwrap();
            // A retried settlement changes nothing.
            let again = store.settle(&conf, &end, now).await.unwrap();
            assert!(again.already_settled && again.cost == s.cost);
            (answer.code, s.cost)
        });
    }
    let mut spent = Money::ZERO;
    let mut codes = std::collections::BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (code, cost) = r.unwrap();
        *codes.entry(code.code()).or_insert(0) += 1;
        spent = spent.checked_add(cost).unwrap();
    }
    let acct = a.account("000070").await.unwrap();
    eprintln!("codes {codes:?}, spent {spent}, left {}", acct.balance);
    assert!(spent <= money("20.00"), "overspent: {spent}");
    assert_eq!(acct.balance, money("20.00").checked_sub(spent).unwrap());
    assert_eq!((acct.reserved, acct.active_calls), (Money::ZERO, 0));
    assert!(
        codes.get(&0).copied().unwrap_or(0) > 10,
        "too few calls got through: {codes:?}"
    );
    for code in codes.keys() {
        assert!(
            [
                ReturnCode::Success,
                ReturnCode::InsufficientFunds,
                ReturnCode::ZeroBalance
            ]
            .iter()
            .any(|c| c.code() == *code),
            "unexpected code {code}: {codes:?}"
        );
    }
    let report = a.ledger_check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
on_both!(five_hundred_calls_never_overspend);

/// A store whose batches wait long enough that operations sent together share one.
async fn batching_store(db: &TestDb, now: chrono::DateTime<Utc>) -> rating::Store {
    let store = db
        .store_with(rating::StoreConfig {
            batch_delay: std::time::Duration::from_millis(100),
            ..common::config("node-a")
        })
        .await;
    local_deck_and_card(&store, "100.00", 100, now).await;
    store
}

/// A deck with one local prefix (1.00 a minute, 0.02 to connect, per second) and the card
/// 000070 (PIN 1234) that every test here calls on.
async fn local_deck_and_card(
    store: &rating::Store,
    balance: &str,
    max_calls: i64,
    now: chrono::DateTime<Utc>,
) {
    let deck = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n5555,Local,1.00,0.02,1,1,0\n";
    store
        .import_rates(
            "default",
            &parse_rates_csv(deck.as_bytes(), "USD").unwrap(),
            "t",
            now,
        )
        .await
        .unwrap();
    let mut c = card("000070", "1234", balance);
    c.max_calls = max_calls;
    store.create_account(&c, now).await.unwrap();
}

fn call_on_card(i: usize, destination: &str) -> CallRequest {
    CallRequest {
        auth: AuthRequest {
            account: "000070".into(),
            pin: Some("1234".into()),
            ani: None,
            access_number: "5551200".into(),
            session_id: format!("s-{i}"),
            tenant: None,
            authenticated: false,
        },
        destination: destination.into(),
        conf_id: format!("conf-{i}"),
        whole_credit: false,
        rate_deck: None,
    }
}

/// A call answered at `now` that talked `seconds` and ended normally.
fn talked(now: chrono::DateTime<Utc>, seconds: i64) -> CallEnd {
    CallEnd {
        connect_at: Some(now),
        disconnect_at: now + Duration::seconds(seconds),
        cause: "normal".into(),
        voice_quality: None,
        gateway: String::new(),
    }
}

fn stats(s: &rating::Store) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let w = s.writer_stats().expect("group commit is on by default");
    (
        w.batches.load(Relaxed),
        w.operations.load(Relaxed),
        w.reruns.load(Relaxed),
    )
}

/// Group commit: twenty settlements in one batch, one of which fails in the database (its
/// call record's id is taken). The other nineteen commit; only its own caller hears of the
/// failure, and its money stays held (nothing half-done) for a retry or the sweeper.
async fn one_failing_operation_fails_only_its_own_caller(db: &TestDb) {
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let store = Arc::new(batching_store(db, now).await);
    // A refused attempt under conf-7 leaves a call record with that id …
    let refused = store.authorize_call(&call_on_card(7, "12"), now).await;
    assert_ne!(refused.code, ReturnCode::Success);
    // … and then the same conference id is authorized for real (the hold does not mind).
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = store.clone();
        tasks.spawn(async move { s.authorize_call(&call_on_card(i, "5555233"), now).await });
    }
    while let Some(a) = tasks.join_next().await {
        assert_eq!(a.unwrap().code, ReturnCode::Success);
    }
    let before = stats(&store);
    let end = talked(now, 60);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (s, end) = (store.clone(), end.clone());
        tasks.spawn(async move { (i, s.settle(&format!("conf-{i}"), &end, now).await) });
    }
    let mut settled = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (7, Err(e)) => assert!(e.is_database(), "{e}"),
            (7, Ok(s)) => panic!("conf-7 settled over its refused attempt's record: {s:?}"),
            (i, r) => {
                let s = r.unwrap_or_else(|e| panic!("conf-{i} failed with its neighbour: {e}"));
                assert!(!s.already_settled && s.cost.is_positive());
                settled += 1;
            }
        }
    }
    assert_eq!(settled, 19);
    let after = stats(&store);
    assert_eq!(
        after.0 - before.0,
        1,
        "the settlements shared one transaction"
    );
    assert_eq!(after.1 - before.1, 19);
    assert!(
        after.2 > before.2,
        "the batch ran again without the failing settlement"
    );
    let acct = store.account("000070").await.unwrap();
    let held = store
        .reservation("conf-7")
        .await
        .unwrap()
        .expect("still held");
    assert_eq!((acct.active_calls, acct.reserved), (1, held.amount));
    // 19 calls of a minute at 1.00 plus 0.02 each.
    assert_eq!(
        acct.balance,
        money("100.00").checked_sub(money("19.38")).unwrap()
    );
    let report = store.ledger_check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
on_both!(one_failing_operation_fails_only_its_own_caller);

/// A caller that stops waiting before its hold's batch runs gets no hold at all; and closing
/// the store finishes what was already waiting instead of dropping it.
async fn given_up_holds_are_not_taken_and_close_finishes_the_queue(db: &TestDb) {
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let store = Arc::new(batching_store(db, now).await);
    let s = store.clone();
    let gone =
        tokio::spawn(async move { s.authorize_call(&call_on_card(1, "5555233"), now).await });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    gone.abort();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let acct = store.account("000070").await.unwrap();
    assert_eq!((acct.active_calls, acct.reserved), (0, Money::ZERO));
    assert!(store.reservation("conf-1").await.unwrap().is_none());

    for i in 2..12 {
        let a = store.authorize_call(&call_on_card(i, "5555233"), now).await;
        assert_eq!(a.code, ReturnCode::Success);
    }
    let end = CallEnd {
        connect_at: None,
        disconnect_at: now,
        cause: "shutdown".into(),
        voice_quality: None,
        gateway: String::new(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 2..12 {
        let (s, end) = (store.clone(), end.clone());
        tasks.spawn(async move { s.settle(&format!("conf-{i}"), &end, now).await });
    }
    // The settlements are queued (the batch waits 100 ms); closing must not lose them.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(store.queue_depth() > 0);
    store.close().await;
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("a queued settlement finishes on close");
    }
    let reopened = db.store().await;
    let acct = reopened.account("000070").await.unwrap();
    assert_eq!((acct.active_calls, acct.reserved), (0, Money::ZERO));
}
on_both!(given_up_holds_are_not_taken_and_close_finishes_the_queue);

/// SQLite: while another process (the CLI topping up a card, a second node on the same file)
/// holds the database's write lock, the writer's batches wait for it and land once it is
/// free; neither the hold nor the settlement waiting in them fails.
#[tokio::test]
async fn a_batch_waits_for_a_locked_sqlite_file() {
    use sqlx::Connection;
    let db = TestDb::sqlite();
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let store = Arc::new(batching_store(&db, now).await);
    let a = store.authorize_call(&call_on_card(1, "5555233"), now).await;
    assert_eq!(a.code, ReturnCode::Success);
    let mut other = sqlx::SqliteConnection::connect(&format!("{}?mode=rw", db.url))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let s = store.clone();
    let end = talked(now, 60);
    let settling = tokio::spawn(async move { s.settle("conf-1", &end, now).await });
    let s = store.clone();
    let holding =
        tokio::spawn(async move { s.authorize_call(&call_on_card(2, "5555233"), now).await });
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        !settling.is_finished(),
        "the batch waits while the lock is held"
    );
    assert!(
        !holding.is_finished(),
        "the hold waits while the lock is held"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    assert_eq!(holding.await.unwrap().code, ReturnCode::Success);
    let settled = settling
        .await
        .unwrap()
        .expect("lands once the lock is free");
    assert_eq!(settled.cost, money("1.02"));
    let acct = store.account("000070").await.unwrap();
    assert_eq!(acct.active_calls, 1, "the second call holds");
}

/// Writer lanes: two nodes with four writers each, cards split among the lanes by id, calls
/// on many cards at once. Every batch takes its row locks in account order, so no two
/// transactions of the two nodes deadlock (no batch runs again); a call held on one node is
/// extended and settled on the other, whose lanes learn the call's card from the database;
/// and the ledger checks.
async fn lanes_split_cards_without_deadlocks(db: &TestDb) {
    const CARDS: usize = 16;
    const CALLS: usize = 960;
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let node = |n: &str| rating::StoreConfig {
        writers: 4,
        batch_delay: std::time::Duration::from_millis(2),
        ..common::config(n)
    };
    let a = Arc::new(db.store_with(node("node-a")).await);
    let b = Arc::new(db.store_with(node("node-b")).await);
    local_deck_and_card(&a, "100.00", 100, now).await;
    let cards: Vec<_> = (0..CARDS)
        .map(|i| {
            let mut c = card(&format!("1{i:05}"), "1234", "1000.00");
            c.max_calls = 100;
            c
        })
        .collect();
    a.create_accounts(&cards, now).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let (first, second) = if i % 2 == 0 {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        tasks.spawn(async move {
            let mut req = call_on_card(i, "5555233");
            req.auth.account = format!("1{:05}", (i * 7) % CARDS);
            let held = first.authorize_call(&req, now).await;
            assert_eq!(held.code, ReturnCode::Success, "call {i}");
            // The other node carries the rest of the call.
            second
                .extend(&req.conf_id, now + Duration::seconds(20))
                .await
                .unwrap();
            let end = talked(now, 30);
            second.settle(&req.conf_id, &end, now).await.unwrap().cost
        });
    }
    let mut spent = Money::ZERO;
    while let Some(cost) = tasks.join_next().await {
        spent = spent.checked_add(cost.unwrap()).unwrap();
    }
    // 30 s at 1.00 a minute plus 0.02 to connect: 0.52 a call, 960 calls.
    assert_eq!(spent, money("499.20"));
    for s in [&a, &b] {
        let lanes = match s.backend() {
            rating::store::Backend::Sqlite => 1,
            rating::store::Backend::Postgres => 4,
        };
        assert_eq!(s.writer_count(), lanes);
        let (_, ops, reruns) = stats(s);
        assert!(ops >= CALLS as u64, "{ops}");
        assert_eq!(reruns, 0, "no batch deadlocked or failed");
    }
    for i in 0..CARDS {
        let acct = a.account(&format!("1{i:05}")).await.unwrap();
        assert_eq!(acct.active_calls, 0);
        assert_eq!(acct.reserved, Money::ZERO);
    }
    let report = a.ledger_check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    a.close().await;
    b.close().await;
}
on_both!(lanes_split_cards_without_deadlocks);

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
    let deck = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n5555,Local,1.00,0.02,1,1,0\n";
    a.import_rates(
        "default",
        &parse_rates_csv(deck.as_bytes(), "USD").unwrap(),
        "t",
        now,
    )
    .await
    .unwrap();
    let mut c = card("000070", "1234", "20.00");
    c.max_calls = 10_000;
    a.create_account(&c, now).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let conf = format!("conf-{i}");
            let req = CallRequest {
                auth: AuthRequest {
                    account: "000070".into(),
                    pin: Some("1234".into()),
                    ani: None,
                    access_number: "5551200".into(),
                    session_id: format!("s-{i}"),
                    tenant: None,
                },
                destination: "5555233".into(),
                conf_id: conf.clone(),
                whole_credit: false,
            };
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
            let end = CallEnd {
                connect_at: Some(now),
                disconnect_at: now + Duration::seconds(talk),
                cause: "normal".into(),
                voice_quality: None,
                gateway: String::new(),
            };
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

//! Reports on real SQLite and PostgreSQL databases: the totals a clerk reads are the ones the
//! records and the ledger hold, before and after a day is rolled up, per tenant, and a
//! summary that no longer matches its records is found.

mod common;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use common::{card, money, TestDb};
use rating::deck::parse_rates_csv;
use rating::store::{
    AuthRequest, CallEnd, CallRequest, CallTotals, Dimension, LedgerKind, ReportRange, Store,
};
use rating::ReturnCode;

const DECK: &str =
    "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds
44,UK,0.60,0,60,60,0
1,North America,0.06,0,1,1,0
";

/// Noon on the first of three days; the third is "today".
fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap() + Duration::days(n)
}

fn date(n: i64) -> NaiveDate {
    day(n).date_naive()
}

fn call(account: &str, tenant: &str, dest: &str, conf: &str) -> CallRequest {
    CallRequest {
        auth: AuthRequest {
            account: account.into(),
            pin: Some("1234".into()),
            ani: Some("14085550000".into()),
            access_number: "5551200".into(),
            session_id: conf.into(),
            tenant: Some(tenant.into()),
            authenticated: false,
        },
        destination: dest.into(),
        conf_id: conf.into(),
        whole_credit: false,
        rate_deck: None,
    }
}

/// A call answered at `at` that talks `talk` seconds through `gateway`; `None` talk: it
/// rang and was never answered.
async fn place(s: &Store, req: CallRequest, at: DateTime<Utc>, talk: Option<i64>, gateway: &str) {
    let conf = req.conf_id.clone();
    let a = s.authorize_call(&req, at).await;
    assert_eq!(a.code, ReturnCode::Success, "{conf}");
    if talk.is_some() {
        s.mark_connected(&conf, at).await.unwrap();
    }
    let end_at = at + Duration::seconds(talk.unwrap_or(20));
    let end = CallEnd {
        connect_at: talk.map(|_| at),
        disconnect_at: end_at,
        cause: "normal".into(),
        voice_quality: None,
        gateway: gateway.into(),
    };
    s.settle(&conf, &end, end_at).await.unwrap();
}

fn find<'a>(rows: &'a [CallTotals], key: &str) -> &'a CallTotals {
    rows.iter()
        .find(|t| t.key == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows:?}"))
}

async fn setup(db: &TestDb) -> Store {
    let s = db.store().await;
    s.import_rates(
        "default",
        &parse_rates_csv(DECK.as_bytes(), "USD").unwrap(),
        "test",
        day(0) - Duration::days(1),
    )
    .await
    .unwrap();
    let mut a = card("000070", "1234", "50");
    a.tenant = "acme".into();
    a.max_calls = 5;
    let mut b = card("000080", "1234", "20");
    b.tenant = "zeta".into();
    s.create_account(&a, day(0)).await.unwrap();
    s.create_account(&b, day(0)).await.unwrap();
    // Day 0: acme calls the UK for 61 s (billed 120 s, 1.20) over gw-a, and North America
    // unanswered over gw-b; zeta calls North America for 30 s (0.03) over gw-b.
    place(
        &s,
        call("000070", "acme", "447700900123", "c1"),
        day(0),
        Some(61),
        "gw-a",
    )
    .await;
    place(
        &s,
        call("000070", "acme", "12125550100", "c2"),
        day(0),
        None,
        "gw-b",
    )
    .await;
    place(
        &s,
        call("000080", "zeta", "12125550100", "c3"),
        day(0),
        Some(30),
        "gw-b",
    )
    .await;
    // Day 1: a wrong PIN on acme's card (a refused attempt, code 2), and a top-up and a
    // refund on it.
    let mut wrong = call("000070", "acme", "447700900123", "c4");
    wrong.auth.pin = Some("9999".into());
    assert_eq!(
        s.authorize_call(&wrong, day(1)).await.code,
        ReturnCode::InvalidPin
    );
    s.top_up("000070", money("10"), "receipt-1", day(1))
        .await
        .unwrap();
    s.post(
        "000070",
        LedgerKind::Refund,
        money("0.50"),
        "ticket-7",
        "dropped call",
        day(1),
    )
    .await
    .unwrap();
    // Day 2 (today): acme talks 90 s to North America over gw-a (0.09).
    place(
        &s,
        call("000070", "acme", "12125550100", "c5"),
        day(2),
        Some(90),
        "gw-a",
    )
    .await;
    s
}

async fn the_totals_are_the_records_before_and_after_the_roll_up(db: &TestDb) {
    let s = setup(db).await;
    let all = ReportRange::new(date(0), date(2), None).unwrap();
    let before = (
        s.call_totals(&all, Dimension::Day).await.unwrap(),
        s.call_totals(&all, Dimension::Gateway).await.unwrap(),
        s.call_totals(&all, Dimension::RateGroup).await.unwrap(),
        s.call_totals(&all, Dimension::ReturnCode).await.unwrap(),
        s.money_totals(&all).await.unwrap(),
    );
    let (days, gateways, groups, codes, ledger) = &before;
    let d0 = find(days, "2026-11-30");
    assert_eq!((d0.attempts, d0.answered), (3, 2));
    assert_eq!(d0.billed_seconds, 120 + 30);
    assert_eq!(d0.revenue, money("1.23"));
    assert_eq!(d0.acd_seconds(), Some(46), "(61 + 30) / 2");
    assert_eq!(find(days, "2026-12-01").attempts, 1);
    assert_eq!(find(days, "2026-12-02").revenue, money("0.09"));
    let gw_a = find(gateways, "gw-a");
    assert_eq!(
        (gw_a.attempts, gw_a.answered, gw_a.revenue),
        (2, 2, money("1.29"))
    );
    let gw_b = find(gateways, "gw-b");
    assert_eq!(gw_b.asr_percent().unwrap().to_string(), "50.0");
    assert_eq!(
        find(gateways, "").attempts,
        1,
        "the refused attempt had none"
    );
    assert_eq!(find(groups, "UK").revenue, money("1.20"));
    assert_eq!(find(groups, "North America").attempts, 3);
    assert_eq!(find(codes, "2").attempts, 1);
    assert_eq!(find(codes, "0").attempts, 4);
    let kinds: Vec<_> = ledger
        .iter()
        .map(|m| (m.day.to_string(), m.kind.as_str(), m.amount.to_string()))
        .collect();
    assert!(
        kinds.contains(&("2026-11-30".into(), "issued", "70.00".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("2026-12-01".into(), "topup", "10.00".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("2026-12-01".into(), "refund", "0.50".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("2026-11-30".into(), "call", "-1.23".into())),
        "{kinds:?}"
    );

    // Too early for day 1: it closes with a margin after midnight.
    let just_after_midnight = Utc.with_ymd_and_hms(2026, 12, 2, 0, 5, 0).unwrap();
    assert_eq!(s.roll_up(just_after_midnight, 10).await.unwrap(), 1);
    assert_eq!(s.roll_up(day(2), 10).await.unwrap(), 1, "day 1 now");
    assert_eq!(
        s.roll_up(day(2), 10).await.unwrap(),
        0,
        "today is not closed"
    );
    let other = db.store_with(common::config("node-b")).await;
    assert_eq!(other.roll_up(day(2), 10).await.unwrap(), 0, "already done");
    let after = (
        s.call_totals(&all, Dimension::Day).await.unwrap(),
        s.call_totals(&all, Dimension::Gateway).await.unwrap(),
        s.call_totals(&all, Dimension::RateGroup).await.unwrap(),
        s.call_totals(&all, Dimension::ReturnCode).await.unwrap(),
        s.money_totals(&all).await.unwrap(),
    );
    assert_eq!(before, after, "the roll-up says what the records say");
    for n in 0..3 {
        assert_eq!(s.recount_day(date(n)).await.unwrap(), Vec::<String>::new());
    }

    // One tenant sees its own records only, rolled up or not.
    let zeta = ReportRange::new(date(0), date(2), Some("zeta".into())).unwrap();
    let z = s.call_totals(&zeta, Dimension::Gateway).await.unwrap();
    assert_eq!(z.len(), 1);
    assert_eq!((z[0].key.as_str(), z[0].revenue), ("gw-b", money("0.03")));
    let zm = s.money_totals(&zeta).await.unwrap();
    assert!(zm.iter().all(|m| m.currency == "USD"));
    assert_eq!(
        zm.iter().map(|m| m.amount.micros()).sum::<i64>(),
        money("19.97").micros(),
        "issued 20, spent 0.03"
    );
    let acme_today = ReportRange::new(date(2), date(2), Some("acme".into())).unwrap();
    let t = s.call_totals(&acme_today, Dimension::Day).await.unwrap();
    assert_eq!((t.len(), t[0].revenue), (1, money("0.09")));

    // A record that lands in a day already rolled up (a node whose clock was far behind) is
    // found by the recount.
    let late = call("000070", "acme", "447700900123", "c6");
    place(&s, late, day(0) + Duration::hours(6), Some(10), "gw-a").await;
    let problems = s.recount_day(date(0)).await.unwrap();
    assert!(!problems.is_empty());
    assert!(problems.iter().any(|p| p.contains("4 and")), "{problems:?}");
}
on_both!(the_totals_are_the_records_before_and_after_the_roll_up);

async fn nothing_to_report(db: &TestDb) {
    let s = db.store().await;
    assert_eq!(s.roll_up(day(2), 10).await.unwrap(), 0);
    let r = ReportRange::new(date(0), date(2), None).unwrap();
    assert!(s.call_totals(&r, Dimension::Day).await.unwrap().is_empty());
    assert!(s.money_totals(&r).await.unwrap().is_empty());
}
on_both!(nothing_to_report);

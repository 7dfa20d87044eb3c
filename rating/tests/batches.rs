//! Batches as objects on real SQLite and PostgreSQL: created all or nothing with their cards,
//! counted (used, unused, expired, blocked, money left), blocked and unblocked whole in one
//! audited change that leaves other batches and PIN-locked cards alone, and exported without
//! PINs.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{card, money, TestDb};
use rating::deck::parse_rates_csv;
use rating::rules::CardStatus;
use rating::store::{AuditEntry, AuthRequest, CallEnd, CallRequest, NewAccount, NewBatch};
use rating::{ReturnCode, StoreError};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
}

fn cards(prefix: &str, n: usize, balance: &str, tenant: &str) -> Vec<NewAccount> {
    (0..n)
        .map(|i| {
            let mut c = card(&format!("{prefix}{i:03}"), "1234", balance);
            c.tenant = tenant.into();
            c
        })
        .collect()
}

fn audit(action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        at: t0(),
        actor: "desk".into(),
        role: "finance".into(),
        action: action.into(),
        target: target.into(),
        detail: String::new(),
        allowance: None,
    }
}

async fn batches_are_counted_blocked_whole_and_exported(db: &TestDb) {
    let s = db.store().await;
    s.import_rates(
        "default",
        &parse_rates_csv(
            "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n1,NA,0.60,0,60,60,0\n"
                .as_bytes(),
            "USD",
        )
        .unwrap(),
        "test",
        t0() - Duration::days(1),
    )
    .await
    .unwrap();
    let new = |name: &str| NewBatch {
        name: name.into(),
        created_by: "desk".into(),
    };
    let mut retail = cards("700", 5, "5", "acme");
    for c in &mut retail[3..] {
        c.expires_at = Some(t0() + Duration::days(30));
    }
    // Cards that differ are not one batch.
    let e = s
        .create_batch(&new("mixed"), &retail, t0(), || {}, None)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    let retail = cards("700", 5, "5", "acme");
    let id = s
        .create_batch(
            &new("December retail"),
            &retail,
            t0(),
            || {},
            Some(&audit("batch", "700000")),
        )
        .await
        .unwrap();
    assert!(id.starts_with("B-20261201-"), "{id}");
    let mut old = cards("800", 2, "10", "zeta");
    for c in &mut old {
        c.expires_at = Some(t0() + Duration::days(1));
    }
    let other = s
        .create_batch(&new(""), &old, t0(), || {}, None)
        .await
        .unwrap();
    // A batch that would reuse a number is refused whole: neither it nor its cards exist.
    let clash = cards("700", 1, "5", "acme");
    assert!(s
        .create_batch(&new("again"), &clash, t0(), || {}, None)
        .await
        .is_err());
    assert_eq!(s.batches(None, 10, t0()).await.unwrap().len(), 2);

    // One card makes a call (0.60 for a minute); another is locked by wrong PINs.
    let conf = "batch-call";
    let req = CallRequest {
        auth: AuthRequest {
            account: "700001".into(),
            pin: Some("1234".into()),
            ani: None,
            access_number: "5551200".into(),
            session_id: conf.into(),
            tenant: Some("acme".into()),
            authenticated: false,
        },
        destination: "12125550100".into(),
        conf_id: conf.into(),
        whole_credit: false,
        rate_deck: None,
    };
    assert_eq!(s.authorize_call(&req, t0()).await.code, ReturnCode::Success);
    s.mark_connected(conf, t0()).await.unwrap();
    let end = t0() + Duration::seconds(30);
    s.settle(
        conf,
        &CallEnd {
            connect_at: Some(t0()),
            disconnect_at: end,
            cause: "normal".into(),
            voice_quality: None,
            gateway: "gw".into(),
        },
        end,
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let mut wrong = req.clone();
        wrong.auth.account = "700004".into();
        wrong.auth.pin = Some("9999".into());
        wrong.conf_id = "wrong".into();
        s.authorize_call(&wrong, t0()).await;
    }
    let locked = s.account("700004").await.unwrap().status;
    assert_eq!(locked, CardStatus::Locked);

    let b = s.batch(&id, t0()).await.unwrap();
    assert_eq!(
        (b.name.as_str(), b.tenant.as_str(), b.cards, b.used),
        ("December retail", "acme", 5, 1)
    );
    assert_eq!(b.face_value, money("5"));
    assert_eq!((b.blocked, b.expired, b.unused()), (1, 0, 3));
    assert_eq!(
        b.money_left,
        money("19.40"),
        "three at 5, one at 4.40; the locked one out"
    );
    // Expiry counts once it has passed; an expired card's money is not left to spend.
    let later = t0() + Duration::days(2);
    let z = s.batch(&other, later).await.unwrap();
    assert_eq!(
        (z.name.as_str(), z.expired, z.money_left),
        (other.as_str(), 2, money("0"))
    );
    assert_eq!(s.batches(Some("zeta"), 10, later).await.unwrap(), vec![z]);

    // Block the whole batch: one change, one audit entry; the other batch untouched.
    let n = s
        .set_batch_blocked(&id, true, Some(&audit("batch-block", &id)))
        .await
        .unwrap();
    assert_eq!(n, 4, "the locked card is not active");
    for c in &retail {
        assert_ne!(
            s.account(&c.account).await.unwrap().status,
            CardStatus::Active
        );
    }
    assert_eq!(
        s.account("800000").await.unwrap().status,
        CardStatus::Active
    );
    let mut blocked = req.clone();
    blocked.conf_id = "after-block".into();
    assert_eq!(
        s.authorize_call(&blocked, t0()).await.code,
        ReturnCode::UserDenied
    );
    let log = s.audit_log(Some(&id), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].detail, "cards=4");
    assert_eq!(s.batch(&id, t0()).await.unwrap().money_left, money("0"));
    // Unblocking brings back what blocking took, and leaves the PIN-locked card locked.
    assert_eq!(s.set_batch_blocked(&id, false, None).await.unwrap(), 4);
    assert_eq!(
        s.account("700004").await.unwrap().status,
        CardStatus::Locked
    );
    assert_eq!(
        s.account("700000").await.unwrap().status,
        CardStatus::Active
    );
    // Again: nothing left to change.
    assert_eq!(s.set_batch_blocked(&id, false, None).await.unwrap(), 0);

    let list = s.batch_cards(&id, t0()).await.unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[1].account, "700001");
    assert!(list[1].used && !list[0].used);
    assert_eq!(list[1].balance, money("4.40"));

    for bad in [
        "B-nope",
        "B-20261201-000000",
        "x; DROP TABLE batches",
        "B-../../etc",
    ] {
        assert!(
            matches!(s.batch(bad, t0()).await, Err(StoreError::NoBatch(_))),
            "{bad}"
        );
        assert!(matches!(
            s.set_batch_blocked(bad, true, None).await,
            Err(StoreError::NoBatch(_))
        ));
    }
    let check = s.ledger_check().await.unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}
on_both!(batches_are_counted_blocked_whole_and_exported);

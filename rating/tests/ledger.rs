//! Top-ups, adjustments and the ledger check, on real SQLite and PostgreSQL.

mod common;

use chrono::{TimeZone, Utc};
use common::{card, money, TestDb};
use rating::deck::parse_rates_csv;
use rating::store::{LedgerKind, Posting, StoreError};

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

async fn top_ups_are_idempotent_by_reference(db: &TestDb) {
    let s = db.store().await;
    s.create_account(&card("000070", "1234", "32.91"), now())
        .await
        .unwrap();
    let first = s
        .top_up("000070", money("10.00"), "RCPT-1", now())
        .await
        .unwrap();
    let Posting::Applied(entry) = first else {
        panic!("first top-up not applied")
    };
    assert_eq!(entry.balance_after, money("42.91"));
    let again = s
        .top_up("000070", money("10.00"), "RCPT-1", now())
        .await
        .unwrap();
    assert_eq!(again, Posting::AlreadyApplied(entry.clone()));
    assert_eq!(s.account("000070").await.unwrap().balance, money("42.91"));
    // The same reference for a different amount is a mistake, not a repeat; the answer names
    // neither another card nor the first amount.
    let e = s
        .top_up("000070", money("20.00"), "RCPT-1", now())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict(ref m) if m.contains("already used") && !m.contains("10") && !m.contains("000070")),
        "{e}"
    );
    // References are each card's own: another card's receipt RCPT-1 is its own top-up, and
    // tells nothing about the first card's.
    s.create_account(&card("100001", "1111", "0"), now())
        .await
        .unwrap();
    assert!(matches!(
        s.top_up("100001", money("7.00"), "RCPT-1", now()).await,
        Ok(Posting::Applied(_))
    ));
    assert_eq!(s.account("100001").await.unwrap().balance, money("7.00"));
    assert_eq!(s.account("000070").await.unwrap().balance, money("42.91"));
    // Refused outright.
    assert!(matches!(
        s.top_up("000070", money("-1"), "R2", now()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.top_up("000070", money("0"), "R3", now()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.top_up("000070", money("1"), "", now()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.top_up("000070", money("1"), "a\nb", now()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.top_up("999999", money("1"), "R4", now()).await,
        Err(StoreError::NoAccount(_))
    ));
    // An adjustment may not take a card below zero.
    let e = s
        .post(
            "000070",
            LedgerKind::Adjustment,
            money("-50"),
            "ADJ-1",
            "",
            now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ref m) if m.contains("below")),
        "{e}"
    );
    s.post(
        "000070",
        LedgerKind::Adjustment,
        money("-2.91"),
        "ADJ-2",
        "goodwill reversal",
        now(),
    )
    .await
    .unwrap();
    s.post(
        "000070",
        LedgerKind::Refund,
        money("1.50"),
        "REF-1",
        "dropped call",
        now(),
    )
    .await
    .unwrap();
    let ledger = s.ledger("000070", 100).await.unwrap();
    let kinds: Vec<&str> = ledger.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["topup", "topup", "adjustment", "refund"]);
    assert_eq!(ledger.last().unwrap().balance_after, money("41.50"));
    let report = s.ledger_check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        (report.accounts, report.entries),
        (2, 5),
        "100001 has its own RCPT-1"
    );
}
on_both!(top_ups_are_idempotent_by_reference);

async fn concurrent_duplicate_top_ups_apply_once(db: &TestDb) {
    let s = std::sync::Arc::new(db.store().await);
    s.create_account(&card("000070", "1234", "0"), now())
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let s = s.clone();
        tasks.spawn(async move {
            s.top_up("000070", money("5"), &format!("BATCH-{}", i % 4), now())
                .await
        });
    }
    let mut applied = 0;
    while let Some(r) = tasks.join_next().await {
        if let Posting::Applied(_) = r.unwrap().unwrap() {
            applied += 1;
        }
    }
    assert_eq!(applied, 4);
    assert_eq!(s.account("000070").await.unwrap().balance, money("20"));
    assert!(s.ledger_check().await.unwrap().problems.is_empty());
}
on_both!(concurrent_duplicate_top_ups_apply_once);

async fn ledger_check_finds_tampering(db: &TestDb) {
    let s = db.store().await;
    s.create_account(&card("000070", "1234", "32.91"), now())
        .await
        .unwrap();
    assert!(s.ledger_check().await.unwrap().problems.is_empty());
    // Somebody edits a balance behind the ledger's back.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE accounts SET balance = balance + 1000000")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let problems = s.ledger_check().await.unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("balance 33.91 but ledger sums to 32.91"),
        "{problems:?}"
    );
}
on_both!(ledger_check_finds_tampering);

async fn deck_imports_replace_atomically_and_reach_other_nodes(db: &TestDb) {
    let a = db.store().await;
    let b = db.store_with(common::config("node-b")).await;
    a.create_account(&card("000070", "1234", "10"), now())
        .await
        .unwrap();
    let v1 = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n44,UK,1.00,0,60,60,0\n";
    a.import_rates(
        "default",
        &parse_rates_csv(v1.as_bytes(), "USD").unwrap(),
        "v1",
        now(),
    )
    .await
    .unwrap();
    assert_eq!(
        b.quote("000070", "4420", now()).await.unwrap().credit_time,
        600
    );
    let v2 = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n44,UK,2.00,0,60,60,0\n33,France,1.00,0,60,60,0\n";
    let summary = a
        .import_rates(
            "default",
            &parse_rates_csv(v2.as_bytes(), "USD").unwrap(),
            "v2",
            now(),
        )
        .await
        .unwrap();
    assert_eq!((summary.rows, summary.version), (2, 2));
    // Node b keeps its copy until its refresh interval passes, then sees the whole new deck.
    assert_eq!(
        b.quote("000070", "4420", now()).await.unwrap().credit_time,
        600
    );
    let later = now() + chrono::Duration::seconds(2);
    assert_eq!(
        b.quote("000070", "4420", later).await.unwrap().credit_time,
        300
    );
    assert!(b
        .quote("000070", "3312", later)
        .await
        .unwrap()
        .rate
        .is_some());
    // A large deck: 20,000 rows in one transaction.
    let mut big = String::from("prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n");
    for i in 0..20_000 {
        big.push_str(&format!("9{i:05},Row {i},0.01,0,1,1,0\n"));
    }
    let rows = parse_rates_csv(big.as_bytes(), "USD").unwrap();
    assert_eq!(
        a.import_rates("big", &rows, "big", now())
            .await
            .unwrap()
            .rows,
        20_000
    );
}
on_both!(deck_imports_replace_atomically_and_reach_other_nodes);

/// The accounting client's queue: a record written twice is queued once, a node reads its
/// own records in order, and a silent node's records are taken over by a live one.
async fn the_accounting_outbox_keeps_records_until_acknowledged(db: &TestDb) {
    use rating::radius::acct::{Leg, Record, Status};
    let a = db.store_with(common::config("node-a")).await;
    let b = db.store_with(common::config("node-b")).await;
    let rec = |conf: &str, status| Record {
        conf_id: conf.into(),
        leg: Leg::Originate,
        status,
        attributes: vec![
            ("User-Name".into(), "000070".into()),
            ("h323-conf-id".into(), conf.into()),
        ],
    };
    a.enqueue_accounting(&[rec("c1", Status::Start)], now())
        .await
        .unwrap();
    a.enqueue_accounting(&[rec("c1", Status::Start), rec("c1", Status::Stop)], now())
        .await
        .unwrap();
    assert_eq!(a.accounting_queue_depth().await.unwrap(), 2);
    let q = a.pending_accounting(0, 10).await.unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].record.as_ref().unwrap(), &rec("c1", Status::Start));
    assert_eq!(q[1].record.as_ref().unwrap(), &rec("c1", Status::Stop));
    assert_eq!(q[0].event_at, now());
    // Paging by queue order.
    let rest = a.pending_accounting(q[0].id, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    // Node b does not take a live node's records …
    a.heartbeat(now()).await.unwrap();
    b.heartbeat(now()).await.unwrap();
    assert_eq!(b.claim_orphaned_accounting(now()).await.unwrap(), 0);
    assert!(b.pending_accounting(0, 10).await.unwrap().is_empty());
    a.ack_accounting(q[0].id).await.unwrap();
    assert_eq!(a.accounting_queue_depth().await.unwrap(), 1);
    // … but takes a silent node's, once the grace has passed.
    let later = now() + chrono::Duration::minutes(10);
    b.heartbeat(later).await.unwrap();
    assert_eq!(b.claim_orphaned_accounting(later).await.unwrap(), 1);
    let taken = b.pending_accounting(0, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].record.as_ref().unwrap(), &rec("c1", Status::Stop));
    assert_eq!(a.claim_orphaned_accounting(later).await.unwrap(), 0);
    assert!(a.pending_accounting(0, 10).await.unwrap().is_empty());
}
on_both!(the_accounting_outbox_keeps_records_until_acknowledged);

/// Managed access numbers: written and read back whole on either database, an owner's write
/// lands only on a number that is still its own, and a removal says what it removed.
async fn access_numbers_are_kept_and_an_owners_write_is_guarded(db: &TestDb) {
    use rating::store::AccessRow;
    let a = db.store().await;
    let b = db.store_with(common::config("node-b")).await;
    let row = AccessRow {
        number: "5551299".into(),
        tenant: "acme".into(),
        flow: Some("debitcard".into()),
        languages: vec!["es".into(), "en".into()],
        trust_ani: false,
        trusted_only: true,
        pinless: false,
        all_tenants: false,
        subscriber: None,
        updated_at: now(),
        updated_by: "root".into(),
    };
    a.put_access_number(&row, None).await.unwrap();
    // Written twice (a retry) is the same one row; another node reads it.
    a.put_access_number(&row, None).await.unwrap();
    assert_eq!(b.access_numbers().await.unwrap(), vec![row.clone()]);
    // The owner changes its own number …
    let mut mine = row.clone();
    mine.languages = vec!["en".into()];
    mine.updated_by = "acme".into();
    b.put_access_number(&mine, Some("acme")).await.unwrap();
    assert_eq!(
        a.access_number("5551299").await.unwrap(),
        Some(mine.clone())
    );
    // … but not once an admin has moved it, nor a number that does not exist.
    let mut moved = mine.clone();
    moved.tenant = "globex".into();
    a.put_access_number(&moved, None).await.unwrap();
    let late = b.put_access_number(&mine, Some("acme")).await.unwrap_err();
    assert!(matches!(late, StoreError::Conflict(_)), "{late}");
    let mut absent = mine.clone();
    absent.number = "5551300".into();
    let e = b
        .put_access_number(&absent, Some("acme"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    assert_eq!(
        a.access_number("5551299").await.unwrap().unwrap().tenant,
        "globex"
    );
    assert!(a.access_number("5551300").await.unwrap().is_none());
    // Rows no node could use are refused before the database sees them.
    for bad in [
        AccessRow {
            number: "55x".into(),
            ..row.clone()
        },
        AccessRow {
            tenant: " ".into(),
            ..row.clone()
        },
        AccessRow {
            languages: vec![],
            ..row.clone()
        },
        AccessRow {
            languages: vec!["en,es".into()],
            ..row.clone()
        },
        AccessRow {
            languages: vec!["en".into(), "en".into()],
            ..row.clone()
        },
        AccessRow {
            flow: None,
            ..row.clone()
        },
    ] {
        let e = a.put_access_number(&bad, None).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    }
    let pinless = AccessRow {
        number: "5551201".into(),
        flow: None,
        pinless: true,
        ..row.clone()
    };
    a.put_access_number(&pinless, None).await.unwrap();
    assert_eq!(a.access_numbers().await.unwrap().len(), 2);
    // Removal answers what was there, once.
    assert_eq!(
        a.delete_access_number("5551299").await.unwrap(),
        Some(moved)
    );
    assert_eq!(b.delete_access_number("5551299").await.unwrap(), None);
    assert_eq!(b.access_numbers().await.unwrap(), vec![pinless]);
}
on_both!(access_numbers_are_kept_and_an_owners_write_is_guarded);

/// A card change made through the admin API and its audit-log entry commit together: with the
/// audit log unwritable, the top-up, the block and the new card are all refused and nothing
/// moves, and the top-up's reference is still free afterwards.
async fn a_change_and_its_audit_entry_commit_together(db: &TestDb) {
    use rating::store::AuditEntry;
    use sqlx::Connection;
    let s = db.store().await;
    s.create_account(&card("000070", "1234", "10.00"), now())
        .await
        .unwrap();
    let entry = |action: &str, target: &str| AuditEntry {
        at: now(),
        actor: "desk".into(),
        role: "finance".into(),
        action: action.into(),
        target: target.into(),
        detail: String::new(),
        allowance: None,
    };
    let top_up = |reference: &'static str| {
        let (s, e) = (&s, entry("topup", "000070"));
        async move {
            s.post_audited(
                "000070",
                LedgerKind::TopUp,
                money("5.00"),
                reference,
                "",
                now(),
                &e,
            )
            .await
        }
    };
    assert!(matches!(top_up("R1").await.unwrap(), Posting::Applied(_)));
    assert!(matches!(
        top_up("R1").await.unwrap(),
        Posting::AlreadyApplied(_)
    ));
    assert_eq!(s.audit_log(Some("000070"), 10).await.unwrap().len(), 1);

    // The audit log cannot be written (here: renamed away behind the store's back).
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query("ALTER TABLE audit_log RENAME TO audit_log_away")
        .execute(&mut conn)
        .await
        .unwrap();
    let e = top_up("R2").await.unwrap_err();
    assert!(matches!(e, StoreError::Database(_)), "{e}");
    let e = s
        .set_blocked_audited("000070", true, &entry("block", "000070"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Database(_)), "{e}");
    let e = s
        .create_accounts_audited(
            &[card("000071", "1234", "1.00")],
            now(),
            &entry("batch", "000071"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Database(_)), "{e}");
    sqlx::query("ALTER TABLE audit_log_away RENAME TO audit_log")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let a = s.account("000070").await.unwrap();
    assert_eq!(a.balance, money("15.00"));
    assert_eq!(a.status.as_str(), "active");
    assert!(matches!(
        s.account("000071").await,
        Err(StoreError::NoAccount(_))
    ));
    assert_eq!(s.ledger("000070", 10).await.unwrap().len(), 2);
    assert!(matches!(top_up("R2").await.unwrap(), Posting::Applied(_)));
    assert_eq!(s.audit_log(Some("000070"), 10).await.unwrap().len(), 2);
    assert!(s.ledger_check().await.unwrap().problems.is_empty());
}
on_both!(a_change_and_its_audit_entry_commit_together);

/// References made before they were per card (keys `topup:REF`) are rewritten by migration 0008,
/// so a clerk's retry of an old top-up is still recognised and not applied twice.
async fn old_top_up_references_are_still_recognised_after_the_migration(db: &TestDb) {
    use sqlx::Connection;
    let s = db.store().await;
    s.create_account(&card("000070", "1234", "0"), now())
        .await
        .unwrap();
    s.top_up("000070", money("5"), "RCPT-OLD", now())
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    // As the row was written before the migration.
    sqlx::query(
        "UPDATE ledger SET idempotency_key = 'topup:RCPT-OLD' WHERE reference = 'RCPT-OLD'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // The migration's statement, as both databases run it.
    let statement = |migration: &'static str| {
        let from = &migration[migration.find("UPDATE ledger").unwrap()..];
        &from[..=from.find(';').unwrap()]
    };
    let rewrite = statement(include_str!("../../schema/sqlite/0008_edge_hardening.sql"));
    assert_eq!(
        rewrite,
        statement(include_str!(
            "../../schema/postgres/0008_edge_hardening.sql"
        )),
        "one statement for both databases"
    );
    sqlx::query(rewrite).execute(&mut conn).await.unwrap();
    assert!(matches!(
        s.top_up("000070", money("5"), "RCPT-OLD", now())
            .await
            .unwrap(),
        Posting::AlreadyApplied(_)
    ));
    assert_eq!(s.account("000070").await.unwrap().balance, money("5"));
    conn.close().await.unwrap();
}
on_both!(old_top_up_references_are_still_recognised_after_the_migration);

/// An ITSP's daily allowance holds across parallel requests (two nodes, one database): the
/// charge is made in each change's own transaction.
async fn a_tenants_daily_allowance_holds_under_parallel_top_ups(db: &TestDb) {
    use rating::store::{Allowance, AuditEntry};
    let itsp = |at, amount: &str| AuditEntry {
        at,
        actor: "acme".into(),
        role: "itsp:acme".into(),
        action: "topup".into(),
        target: "000070".into(),
        detail: String::new(),
        allowance: Some(Allowance {
            tenant: "acme".into(),
            amount: money(amount),
            per_day: money("55"),
        }),
    };
    let s = std::sync::Arc::new(db.store().await);
    let other = std::sync::Arc::new(db.store_with(common::config("node-b")).await);
    let mut c = card("000070", "1234", "0");
    c.tenant = "acme".into();
    s.create_account(&c, now()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        let audit = itsp(now(), "10");
        tasks.spawn(async move {
            store
                .post_audited(
                    "000070",
                    LedgerKind::TopUp,
                    money("10"),
                    &format!("P-{i}"),
                    "",
                    now(),
                    &audit,
                )
                .await
        });
    }
    let mut applied = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(Posting::Applied(_)) => applied += 1,
            Err(StoreError::OverAllowance(m)) => assert!(m.contains("55.00"), "{m}"),
            // SQLite may refuse a writer that waited too long; it moved nothing either.
            Err(StoreError::Database(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(applied <= 5, "{applied} top-ups of 10 within 55");
    assert_eq!(
        s.account("000070").await.unwrap().balance,
        money(&(applied * 10).to_string())
    );
    // The next UTC day starts again.
    let tomorrow = now() + chrono::Duration::days(1);
    let audit = itsp(tomorrow, "50");
    assert!(matches!(
        s.post_audited(
            "000070",
            LedgerKind::TopUp,
            money("50"),
            "NEXT",
            "",
            tomorrow,
            &audit
        )
        .await,
        Ok(Posting::Applied(_))
    ));
}
on_both!(a_tenants_daily_allowance_holds_under_parallel_top_ups);

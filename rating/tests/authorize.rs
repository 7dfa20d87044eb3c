//! Every return code an internal store can produce, through both authorization phases, on real
//! SQLite and PostgreSQL databases.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{card, money, TestDb};
use rating::deck::parse_rates_csv;
use rating::store::{AuthRequest, CallEnd, CallRequest, NewAccount, Redirect, Store};
use rating::{Money, ReturnCode};

const DECK: &str =
    "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds
5555,Local,0.094478,0,1,1,0
44,UK,0.60,0.05,60,60,0
1,North America,0.015,0,6,6,0
";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

async fn setup(db: &TestDb) -> Store {
    let s = db.store().await;
    s.import_rates(
        "default",
        &parse_rates_csv(DECK.as_bytes(), "USD").unwrap(),
        "test",
        now(),
    )
    .await
    .unwrap();
    s.import_prefix_list("blocked", &[("1900".into(), "premium".into())])
        .await
        .unwrap();
    s.import_prefix_list("tollfree", &[("1800".into(), "toll-free".into())])
        .await
        .unwrap();
    s.create_account(&card("000070", "1234", "32.91"), now())
        .await
        .unwrap();
    s
}

fn auth(account: &str, pin: &str) -> AuthRequest {
    AuthRequest {
        account: account.into(),
        pin: Some(pin.into()),
        ani: Some("14085550000".into()),
        access_number: "5551200".into(),
        session_id: "session-1".into(),
        tenant: None,
        authenticated: false,
    }
}

fn call(account: &str, pin: &str, dest: &str, conf: &str) -> CallRequest {
    CallRequest {
        auth: auth(account, pin),
        destination: dest.into(),
        conf_id: conf.into(),
        whole_credit: false,
        rate_deck: None,
    }
}

async fn phase1(s: &Store, account: &str, pin: &str) -> ReturnCode {
    s.authorize_account(&auth(account, pin), now()).await.code
}

async fn phase2(s: &Store, account: &str, pin: &str, dest: &str) -> ReturnCode {
    let conf = uuid::Uuid::new_v4().to_string();
    s.authorize_call(&call(account, pin, dest, &conf), now())
        .await
        .code
}

async fn the_seeds_walk_through(db: &TestDb) {
    let s = setup(db).await;
    let a = s.authorize_account(&auth("000070", "1234"), now()).await;
    assert_eq!(a.code, ReturnCode::Success);
    assert_eq!(a.available, money("32.91"));
    assert_eq!((a.currency.as_str(), a.language.as_str()), ("USD", "en"));
    let c = s
        .authorize_call(&call("000070", "1234", "5555233", "conf-1"), now())
        .await;
    assert_eq!(c.code, ReturnCode::Success);
    assert_eq!(c.credit_time, 20_900, "the seed's 5 h 48 min");
    let r = c.reservation.unwrap();
    assert_eq!(r.granted_seconds, 300, "first chunk");
    assert_eq!(r.amount, money("0.472390"));
    assert_eq!(c.rate.unwrap().prefix, "5555");
    let acct = s.account("000070").await.unwrap();
    assert_eq!((acct.reserved, acct.active_calls), (money("0.47239"), 1));
    // Talk 61.2 s: billed 62 s at 0.094478/min = 0.09762727 -> 0.097628.
    s.mark_connected("conf-1", now()).await.unwrap();
    let end = CallEnd {
        connect_at: None,
        disconnect_at: now() + Duration::milliseconds(61_200),
        cause: "normal".into(),
        voice_quality: None,
        gateway: String::new(),
    };
    let st = s.settle("conf-1", &end, now()).await.unwrap();
    assert_eq!(
        (st.billed_seconds, st.cost, st.already_settled),
        (62, money("0.097628"), false)
    );
    let again = s.settle("conf-1", &end, now()).await.unwrap();
    assert!(again.already_settled);
    assert_eq!(again.cost, st.cost);
    let acct = s.account("000070").await.unwrap();
    assert_eq!(
        (acct.balance, acct.reserved, acct.active_calls),
        (money("32.812372"), Money::ZERO, 0)
    );
    let records = s.call_records(&Default::default()).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].billed_seconds, records[0].return_code), (62, 0));
    assert_eq!(records[0].session_id, "session-1");
    let report = s.ledger_check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, 2);
}
on_both!(the_seeds_walk_through);

async fn codes_for_bad_cards(db: &TestDb) {
    let s = setup(db).await;
    assert_eq!(
        phase1(&s, "999999", "1234").await,
        ReturnCode::InvalidAccount
    );
    assert_eq!(phase1(&s, "000070", "9999").await, ReturnCode::InvalidPin);
    assert_eq!(
        phase1(&s, "12", "1234").await,
        ReturnCode::InvalidCardNumber
    );
    assert_eq!(
        phase1(&s, "0000\r\n70", "1234").await,
        ReturnCode::InvalidArgument
    );
    assert_eq!(
        phase1(&s, "000070", "12a4").await,
        ReturnCode::InvalidArgument
    );
    assert_eq!(
        phase1(&s, &"1".repeat(40), "1234").await,
        ReturnCode::InvalidArgument
    );
    let mut expired = card("100001", "1111", "5");
    expired.expires_at = Some(now() - Duration::days(1));
    s.create_account(&expired, now()).await.unwrap();
    assert_eq!(phase1(&s, "100001", "1111").await, ReturnCode::CardExpired);
    s.create_account(&card("100002", "2222", "5"), now())
        .await
        .unwrap();
    s.set_blocked("100002", true).await.unwrap();
    assert_eq!(phase1(&s, "100002", "2222").await, ReturnCode::UserDenied);
    // A blocked card only tells its status to someone who knows the PIN.
    assert_eq!(phase1(&s, "100002", "0000").await, ReturnCode::InvalidPin);
    s.set_blocked("100002", false).await.unwrap();
    assert_eq!(phase1(&s, "100002", "2222").await, ReturnCode::Success);
    s.create_account(&card("100003", "3333", "0"), now())
        .await
        .unwrap();
    assert_eq!(phase1(&s, "100003", "3333").await, ReturnCode::ZeroBalance);
    let mut limit = card("100004", "4444", "0");
    limit.credit_limit = money("5");
    s.create_account(&limit, now()).await.unwrap();
    assert_eq!(phase1(&s, "100004", "4444").await, ReturnCode::Success);
    rating::store::Store::post(
        &s,
        "100004",
        rating::store::LedgerKind::Adjustment,
        money("-5"),
        "adj-1",
        "test",
        now(),
    )
    .await
    .unwrap();
    assert_eq!(phase1(&s, "100004", "4444").await, ReturnCode::CreditLimit);
    let records = s.call_records(&Default::default()).await.unwrap();
    let codes: Vec<u8> = records.iter().map(|r| r.return_code).collect();
    for c in [1, 2, 14, 11, 5, 7, 4, 6] {
        assert!(
            codes.contains(&c),
            "no record of refused attempt with code {c}: {codes:?}"
        );
    }
}
on_both!(codes_for_bad_cards);

async fn codes_for_destinations(db: &TestDb) {
    let s = setup(db).await;
    assert_eq!(
        phase2(&s, "000070", "1234", "19005551234").await,
        ReturnCode::CalledNumberBlocked
    );
    assert_eq!(
        phase2(&s, "000070", "1234", "3312345").await,
        ReturnCode::CalledNumberBlocked,
        "no rate"
    );
    assert_eq!(
        phase2(&s, "000070", "1234", "55a5").await,
        ReturnCode::InvalidArgument
    );
    assert_eq!(
        phase2(&s, "000070", "1234", "").await,
        ReturnCode::InvalidArgument
    );
    // 0.64 left: UK costs 0.65 for its first minute -> insufficient funds; local still works.
    s.create_account(&card("100005", "5555", "0.64"), now())
        .await
        .unwrap();
    assert_eq!(
        phase2(&s, "100005", "5555", "4420123").await,
        ReturnCode::InsufficientFunds
    );
    assert_eq!(
        phase2(&s, "100005", "5555", "5555233").await,
        ReturnCode::Success
    );
    // A toll-free-only card: toll-free numbers connect with no money, others answer 13.
    let mut free = card("100006", "6666", "0");
    free.tollfree_only = true;
    s.create_account(&free, now()).await.unwrap();
    assert_eq!(phase1(&s, "100006", "6666").await, ReturnCode::Success);
    assert_eq!(
        phase2(&s, "100006", "6666", "5555233").await,
        ReturnCode::TollFreeOnly
    );
    let c = s
        .authorize_call(&call("100006", "6666", "18005551234", "free-1"), now())
        .await;
    assert_eq!(c.code, ReturnCode::Success);
    assert_eq!(c.reservation.unwrap().amount, Money::ZERO);
    let st = s
        .settle(
            "free-1",
            &CallEnd {
                connect_at: Some(now()),
                disconnect_at: now() + Duration::seconds(600),
                cause: "normal".into(),
                voice_quality: None,
                gateway: String::new(),
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(st.cost, Money::ZERO);
    assert!(s.ledger_check().await.unwrap().problems.is_empty());
}
on_both!(codes_for_destinations);

async fn redirected_cards(db: &TestDb) {
    let s = setup(db).await;
    // 52: right after the PIN, to customer service, whatever the balance.
    s.create_account(&card("100007", "7777", "0"), now())
        .await
        .unwrap();
    let to_service = Redirect {
        code: ReturnCode::RedirectCustomerService,
        number: "18005550100".into(),
    };
    let a = s
        .set_redirect("100007", Some(to_service.clone()))
        .await
        .unwrap();
    assert_eq!(a.redirect, Some(to_service));
    let p1 = s.authorize_account(&auth("100007", "7777"), now()).await;
    assert_eq!(p1.code, ReturnCode::RedirectCustomerService);
    assert_eq!(p1.redirect_number, "18005550100");
    // A wrong PIN is still a wrong PIN: the redirect is not a way around it.
    assert_eq!(phase1(&s, "100007", "0000").await, ReturnCode::InvalidPin);
    // 51: a hotline card needs no balance and every call goes to its number, unreserved.
    s.set_redirect(
        "100007",
        Some(Redirect {
            code: ReturnCode::RedirectCalledParty,
            number: "14085550199".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(phase1(&s, "100007", "7777").await, ReturnCode::Success);
    let p2 = s
        .authorize_call(&call("100007", "7777", "4420123", "hot-1"), now())
        .await;
    assert_eq!(p2.code, ReturnCode::RedirectCalledParty);
    assert_eq!(p2.redirect_number, "14085550199");
    assert!(p2.reservation.is_none());
    // Only 51 and 52 are redirects, to a digit string; a missing card is named.
    for bad in [
        Redirect {
            code: ReturnCode::RedirectIp,
            number: "1".into(),
        },
        Redirect {
            code: ReturnCode::RedirectCalledParty,
            number: "1800\r\n".into(),
        },
    ] {
        assert!(s.set_redirect("100007", Some(bad)).await.is_err());
    }
    assert!(s.set_redirect("999999", None).await.is_err());
    // Cleared: the card is an ordinary one with no money again.
    let a = s.set_redirect("100007", None).await.unwrap();
    assert_eq!(a.redirect, None);
    assert_eq!(phase1(&s, "100007", "7777").await, ReturnCode::ZeroBalance);
    // The redirected attempts are on record with their codes.
    let codes: Vec<u8> = s
        .call_records(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.return_code)
        .collect();
    assert!(codes.contains(&51) && codes.contains(&52), "{codes:?}");
    assert!(s.ledger_check().await.unwrap().problems.is_empty());
}
on_both!(redirected_cards);

async fn account_in_use_and_retransmissions(db: &TestDb) {
    let s = setup(db).await;
    let first = s
        .authorize_call(&call("000070", "1234", "5555233", "c1"), now())
        .await;
    assert_eq!(first.code, ReturnCode::Success);
    assert_eq!(phase1(&s, "000070", "1234").await, ReturnCode::AccountInUse);
    assert_eq!(
        phase2(&s, "000070", "1234", "5555233").await,
        ReturnCode::AccountInUse
    );
    // The same request again (a retransmission) gets the same reservation, not a refusal.
    let again = s
        .authorize_call(&call("000070", "1234", "5555233", "c1"), now())
        .await;
    assert_eq!(again.code, ReturnCode::Success);
    assert_eq!(again.reservation, first.reservation);
    assert_eq!(
        s.account("000070").await.unwrap().reserved,
        first.reservation.unwrap().amount
    );
    // With two calls allowed, a second conference id gets its own hold.
    let mut two = card("100007", "7777", "10");
    two.max_calls = 2;
    s.create_account(&two, now()).await.unwrap();
    assert_eq!(
        phase2(&s, "100007", "7777", "5555233").await,
        ReturnCode::Success
    );
    assert_eq!(
        phase2(&s, "100007", "7777", "5555233").await,
        ReturnCode::Success
    );
    assert_eq!(
        phase2(&s, "100007", "7777", "5555233").await,
        ReturnCode::AccountInUse
    );
}
on_both!(account_in_use_and_retransmissions);

async fn pin_guessing_locks_the_card_then_the_number(db: &TestDb) {
    let s = setup(db).await;
    let no_ani = |pin: &str| AuthRequest {
        ani: None,
        ..auth("000070", pin)
    };
    for _ in 0..5 {
        assert_eq!(
            s.authorize_account(&no_ani("0000"), now()).await.code,
            ReturnCode::InvalidPin
        );
    }
    // Locked: even the right PIN is refused until staff unblock the card, with the answer a
    // wrong PIN gets, so a guesser cannot tell the lock from a miss.
    assert_eq!(
        s.authorize_account(&no_ani("1234"), now()).await.code,
        ReturnCode::InvalidPin
    );
    assert_eq!(
        s.account("000070").await.unwrap().status,
        rating::rules::CardStatus::Locked
    );
    s.set_blocked("000070", false).await.unwrap();
    assert_eq!(
        s.authorize_account(&no_ani("1234"), now()).await.code,
        ReturnCode::Success
    );
    // Wrong PINs from one calling number also count against that number, which is told.
    for _ in 0..4 {
        assert_eq!(phase1(&s, "000070", "0000").await, ReturnCode::InvalidPin);
    }
    assert_eq!(
        phase1(&s, "000070", "0000").await,
        ReturnCode::RetriesExceeded
    );
    s.set_blocked("000070", false).await.unwrap();
    assert_eq!(
        phase1(&s, "000070", "1234").await,
        ReturnCode::RetriesExceeded,
        "the number is still locked"
    );
    assert_eq!(
        s.authorize_account(&no_ani("1234"), now()).await.code,
        ReturnCode::Success
    );
    // One calling number guessing account numbers is locked out on its own.
    let guess = |n: u32| AuthRequest {
        ani: Some("15550001111".into()),
        ..auth(&format!("55500{n}"), "1234")
    };
    for n in 0..4 {
        assert_eq!(
            s.authorize_account(&guess(n), now()).await.code,
            ReturnCode::InvalidAccount
        );
    }
    assert_eq!(
        s.authorize_account(&guess(9), now()).await.code,
        ReturnCode::RetriesExceeded
    );
    let good_card_bad_number = AuthRequest {
        ani: Some("15550001111".into()),
        ..auth("000070", "1234")
    };
    assert_eq!(
        s.authorize_account(&good_card_bad_number, now()).await.code,
        ReturnCode::RetriesExceeded
    );
    let later = now() + Duration::minutes(16);
    s.sweep(later).await.unwrap();
    assert_eq!(
        s.authorize_account(&good_card_bad_number, later).await.code,
        ReturnCode::Success
    );
}
on_both!(pin_guessing_locks_the_card_then_the_number);

/// Wrong PINs add up from the last good one, whatever time passes between them: a guesser
/// who spaces four guesses past the window still meets the lock at the fifth.
async fn the_pin_lockout_counts_since_the_last_good_pin_not_in_a_window(db: &TestDb) {
    let s = setup(db).await;
    let req = |pin: &str| AuthRequest {
        ani: None,
        ..auth("000070", pin)
    };
    let mut t = now();
    for _ in 0..4 {
        assert_eq!(
            s.authorize_account(&req("0000"), t).await.code,
            ReturnCode::InvalidPin
        );
        // Long past the failure window each time.
        t += Duration::hours(2);
        s.sweep(t).await.unwrap();
    }
    assert_eq!(
        s.authorize_account(&req("0000"), t).await.code,
        ReturnCode::InvalidPin
    );
    assert_eq!(
        s.authorize_account(&req("1234"), t).await.code,
        ReturnCode::InvalidPin,
        "locked at the fifth, days apart or not"
    );
    // A good PIN forgives what came before it.
    s.set_blocked("000070", false).await.unwrap();
    for _ in 0..4 {
        s.authorize_account(&req("0000"), t).await;
    }
    assert_eq!(
        s.authorize_account(&req("1234"), t).await.code,
        ReturnCode::Success
    );
    for _ in 0..4 {
        s.authorize_account(&req("0000"), t).await;
    }
    assert_eq!(
        s.authorize_account(&req("1234"), t).await.code,
        ReturnCode::Success,
        "4 + 4 with a good one between is not 5"
    );
}
on_both!(the_pin_lockout_counts_since_the_last_good_pin_not_in_a_window);

/// The PINs of a burst of sixty guesses: the last one is right.
fn guess(i: u32) -> String {
    if i == 59 {
        "1234".to_string()
    } else {
        format!("{:04}", 5000 + i)
    }
}

/// A burst of guesses in parallel gets no more than the limit: the good PIN among them is
/// recognised only if it came before the fifth wrong one.
async fn parallel_guesses_cannot_pass_the_pin_limit(db: &TestDb) {
    let s = std::sync::Arc::new(setup(db).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60u32 {
        let s = s.clone();
        tasks.spawn(async move {
            let pin = guess(i);
            let req = AuthRequest {
                ani: None,
                ..auth("000070", &pin)
            };
            (i, s.authorize_account(&req, now()).await.code)
        });
    }
    let mut wrong_answers = 0;
    let mut good_accepted = false;
    while let Some(r) = tasks.join_next().await {
        let (i, code) = r.unwrap();
        match (i, code) {
            (59, ReturnCode::Success) => good_accepted = true,
            (_, ReturnCode::InvalidPin) => wrong_answers += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let a = s.account("000070").await.unwrap();
    if good_accepted {
        // The good one came in before the limit and forgave what was counted before it.
        assert!(wrong_answers >= 59 - 4, "{wrong_answers}");
    } else {
        assert_eq!(a.status, rating::rules::CardStatus::Locked);
    }
    // However the race went, the card never counted more than the limit.
    let counted = s.pin_failures("000070").await.unwrap();
    assert!(counted <= 5, "{counted} failures counted");
}
on_both!(parallel_guesses_cannot_pass_the_pin_limit);

/// The same race through phase 2, where a good PIN is counted in the hold itself rather than
/// by a write of its own: still no more than the limit of guesses, whatever the interleaving.
async fn parallel_guesses_in_phase_two_cannot_pass_the_pin_limit(db: &TestDb) {
    let s = std::sync::Arc::new(setup(db).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60u32 {
        let s = s.clone();
        tasks.spawn(async move {
            let pin = guess(i);
            let mut req = call("000070", &pin, "5555233", &format!("guess-{i}"));
            req.auth.ani = None;
            (i, s.authorize_call(&req, now()).await)
        });
    }
    let mut good_accepted = false;
    while let Some(r) = tasks.join_next().await {
        let (i, a) = r.unwrap();
        match (i, a.code) {
            (59, ReturnCode::Success) => {
                assert!(a.reservation.is_some());
                good_accepted = true;
            }
            (_, ReturnCode::InvalidPin) => assert!(a.reservation.is_none()),
            other => panic!("unexpected {other:?}"),
        }
    }
    let a = s.account("000070").await.unwrap();
    let counted = s.pin_failures("000070").await.unwrap();
    assert!(counted <= 5, "{counted} failures counted");
    if good_accepted {
        assert_eq!(a.active_calls, 1);
    } else {
        assert_eq!(
            (a.status, a.active_calls),
            (rating::rules::CardStatus::Locked, 0)
        );
    }
    // A locked card, good PIN or not, says only "wrong PIN" in phase 2 too.
    if !good_accepted {
        let again = s
            .authorize_call(&call("000070", "1234", "5555233", "after"), now())
            .await;
        assert_eq!(again.code, ReturnCode::InvalidPin);
    }
}
on_both!(parallel_guesses_in_phase_two_cannot_pass_the_pin_limit);

/// A card belongs to its tenant: on another tenant's access number (or RADIUS client) it is
/// no card at all, unless the card or the number takes every tenant's.
async fn cards_authorize_only_on_their_own_tenants_numbers(db: &TestDb) {
    let s = setup(db).await;
    let mut acme = card("300001", "1111", "5");
    acme.tenant = "acme".into();
    s.create_account(&acme, now()).await.unwrap();
    let mut roaming = card("300002", "2222", "5");
    roaming.tenant = "acme".into();
    roaming.any_tenant = true;
    s.create_account(&roaming, now()).await.unwrap();
    let on = |account: &str, pin: &str, tenant: Option<&str>| AuthRequest {
        tenant: tenant.map(str::to_string),
        ani: None,
        ..auth(account, pin)
    };
    for (account, pin, tenant, want) in [
        ("300001", "1111", Some("acme"), ReturnCode::Success),
        (
            "300001",
            "1111",
            Some("default"),
            ReturnCode::InvalidAccount,
        ),
        (
            "300001",
            "0000",
            Some("default"),
            ReturnCode::InvalidAccount,
        ),
        ("300001", "1111", None, ReturnCode::Success),
        ("300002", "2222", Some("default"), ReturnCode::Success),
        ("000070", "1234", Some("acme"), ReturnCode::InvalidAccount),
        ("000070", "1234", Some("default"), ReturnCode::Success),
    ] {
        assert_eq!(
            s.authorize_account(&on(account, pin, tenant), now())
                .await
                .code,
            want,
            "{account} on {tenant:?}"
        );
    }
    // Phase 2 the same: no hold on another tenant's card.
    let c = s
        .authorize_call(
            &CallRequest {
                auth: on("300001", "1111", Some("default")),
                destination: "5555233".into(),
                conf_id: "tenant-conf".into(),
                whole_credit: false,
                rate_deck: None,
            },
            now(),
        )
        .await;
    assert_eq!(c.code, ReturnCode::InvalidAccount);
    assert!(c.reservation.is_none());
    // Wrong PINs tried on the wrong tenant's number do not count against the card.
    assert_eq!(s.pin_failures("300001").await.unwrap(), 0);
}
on_both!(cards_authorize_only_on_their_own_tenants_numbers);

/// A gateway's Stop settles only what that gateway held, with its times kept to the call's
/// life: no answer before the setup, no end after now.
async fn a_stop_settles_only_its_own_clients_reservation_within_the_calls_life(db: &TestDb) {
    let s = setup(db).await;
    let mut c = call("000070", "1234", "5555233", "radius-conf-1");
    c.auth.access_number = "radius 192.0.2.1".into();
    c.whole_credit = true;
    let a = s.authorize_call(&c, now()).await;
    assert_eq!(a.code, ReturnCode::Success);
    let end = CallEnd {
        connect_at: Some(now() - Duration::days(30)),
        disconnect_at: now() + Duration::days(30),
        cause: "q850:16".into(),
        voice_quality: None,
        gateway: String::new(),
    };
    // Another client (or a node of ours) cannot mark it answered or end it.
    assert!(s
        .mark_connected_as("radius-conf-1", now(), Some("radius 192.0.2.2"))
        .await
        .is_err());
    assert!(s
        .settle_as("radius-conf-1", &end, now(), Some("radius 192.0.2.2"))
        .await
        .is_err());
    assert!(s.reservation("radius-conf-1").await.unwrap().is_some());
    // Its own client can; an answer before the setup counts from the setup (the RADIUS edge
    // keeps the end from the future): 30 days at most is what the whole credit held.
    let done = s
        .settle_as("radius-conf-1", &end, now(), Some("radius 192.0.2.1"))
        .await
        .unwrap();
    assert!(done.billed_seconds <= a.credit_time, "{done:?}");
    // The settled call is not another client's to ask about either.
    assert!(s
        .settle_as("radius-conf-1", &end, now(), Some("radius 192.0.2.2"))
        .await
        .is_err());
}
on_both!(a_stop_settles_only_its_own_clients_reservation_within_the_calls_life);

async fn pinless_cards(db: &TestDb) {
    let s = setup(db).await;
    let mut p = NewAccount::new("4085551234", None, money("10"));
    p.pinless = true;
    s.create_account(&p, now()).await.unwrap();
    let req = AuthRequest {
        pin: None,
        ..auth("4085551234", "")
    };
    assert_eq!(
        s.authorize_account(&req, now()).await.code,
        ReturnCode::Success
    );
    // A normal card cannot be used without its PIN.
    let req = AuthRequest {
        pin: None,
        ..auth("000070", "")
    };
    assert_eq!(
        s.authorize_account(&req, now()).await.code,
        ReturnCode::InvalidPin
    );
}
on_both!(pinless_cards);

async fn extension_cutoff_and_sweeper(db: &TestDb) {
    let s = setup(db).await;
    s.create_account(&card("100008", "8888", "1.00"), now())
        .await
        .unwrap();
    // 1.00 at 0.094478/min buys 635 s: a 300 s chunk, extended to 600, then to 635, then no more.
    let c = s
        .authorize_call(&call("100008", "8888", "5555233", "ext-1"), now())
        .await;
    assert_eq!((c.code, c.credit_time), (ReturnCode::Success, 635));
    s.mark_connected("ext-1", now()).await.unwrap();
    let e = s
        .extend("ext-1", now() + Duration::seconds(250))
        .await
        .unwrap();
    assert_eq!((e.granted_seconds, e.extended), (600, true));
    let e = s
        .extend("ext-1", now() + Duration::seconds(550))
        .await
        .unwrap();
    assert_eq!((e.granted_seconds, e.extended), (635, true));
    let e = s
        .extend("ext-1", now() + Duration::seconds(600))
        .await
        .unwrap();
    assert_eq!((e.granted_seconds, e.extended), (635, false));
    // The B2BUA cuts off at 635 s; a late BYE 2 s after is not charged beyond the grant.
    let end = CallEnd {
        connect_at: None,
        disconnect_at: now() + Duration::seconds(637),
        cause: "cutoff".into(),
        voice_quality: None,
        gateway: String::new(),
    };
    let st = s.settle("ext-1", &end, now()).await.unwrap();
    assert_eq!(st.billed_seconds, 635);
    assert!(st.cost <= money("1.00"));
    let acct = s.account("100008").await.unwrap();
    assert_eq!(acct.balance, money("1.00").checked_sub(st.cost).unwrap());

    // A node that dies mid-call: the sweeper (on another node) charges up to its last heartbeat.
    let other = db.store_with(common::config("node-b")).await;
    s.create_account(&card("100009", "9999", "5.00"), now())
        .await
        .unwrap();
    let c = s
        .authorize_call(&call("100009", "9999", "5555233", "dead-1"), now())
        .await;
    assert_eq!(c.code, ReturnCode::Success);
    let u = s
        .authorize_call(&call("000070", "1234", "5555233", "dead-2"), now())
        .await;
    assert_eq!(u.code, ReturnCode::Success);
    s.mark_connected("dead-1", now()).await.unwrap();
    s.heartbeat(now() + Duration::seconds(100)).await.unwrap();
    assert_eq!(
        other.sweep(now() + Duration::seconds(200)).await.unwrap(),
        Default::default(),
        "not expired yet"
    );
    let r = other.sweep(now() + Duration::seconds(500)).await.unwrap();
    assert_eq!((r.settled, r.released), (1, 1));
    let rec = other
        .call_records(&rating::store::RecordFilter {
            account: Some("100009".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rec[0].billed_seconds, 100);
    assert!(rec[0].disconnect_cause.starts_with("swept"));
    let report = other.ledger_check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.reservations, 0);
    // A node that sends no accounting queues no records for what it sweeps.
    assert_eq!(other.accounting_queue_depth().await.unwrap(), 0);
}
on_both!(extension_cutoff_and_sweeper);

/// A node that dies mid-call never writes its Stop records; the node that sweeps the call
/// writes them, saying what the call record says, so the operator's RADIUS billing learns that
/// the call ended and for how long.
async fn the_sweeper_writes_the_stop_records_a_dead_node_never_did(db: &TestDb) {
    use rating::radius::acct::{Leg, Status};
    let s = setup(db).await;
    let sweeper = db
        .store_with(rating::store::StoreConfig {
            account_swept_calls: true,
            ..common::config("node-b")
        })
        .await;
    s.create_account(&card("100009", "9999", "5.00"), now())
        .await
        .unwrap();
    let c = s
        .authorize_call(&call("100009", "9999", "5555233", "dead-1"), now())
        .await;
    assert_eq!(c.code, ReturnCode::Success);
    s.mark_connected("dead-1", now() + Duration::seconds(5))
        .await
        .unwrap();
    s.heartbeat(now() + Duration::seconds(65)).await.unwrap();
    let r = sweeper.sweep(now() + Duration::seconds(500)).await.unwrap();
    assert_eq!((r.settled, r.released), (1, 0));
    let queued = sweeper.pending_accounting(0, 10).await.unwrap();
    assert_eq!(queued.len(), 2, "{queued:?}");
    let attr = |i: usize, name: &str| -> String {
        let rec = queued[i].record.as_ref().unwrap();
        rec.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} in {rec:?}"))
    };
    let (orig, answer) = (
        queued[0].record.as_ref().unwrap(),
        queued[1].record.as_ref().unwrap(),
    );
    assert_eq!((orig.leg, orig.status), (Leg::Originate, Status::Stop));
    assert_eq!((answer.leg, answer.status), (Leg::Answer, Status::Stop));
    assert_eq!(orig.conf_id, "dead-1");
    assert_eq!(answer.conf_id, "session-1");
    // Billed from the connect to the dead node's last heartbeat: 60 s, as the call record.
    assert_eq!(attr(0, "Acct-Session-Time"), "60");
    assert_eq!(attr(0, "User-Name"), "100009");
    assert_eq!(attr(0, "Called-Station-Id"), "5555233");
    assert_eq!(attr(0, "h323-gw-id"), "node-a");
    assert_eq!(attr(0, "h323-disconnect-cause"), "29");
    assert_eq!(attr(1, "Called-Station-Id"), "5551200");
    assert_eq!(attr(1, "Acct-Session-Time"), "60");
    assert_eq!(queued[0].event_at, now() + Duration::seconds(65));
    let rec = sweeper
        .call_records(&rating::store::RecordFilter {
            account: Some("100009".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rec[0].billed_seconds, 60);
    // A second sweep finds nothing, and queues nothing more.
    sweeper.sweep(now() + Duration::seconds(600)).await.unwrap();
    assert_eq!(sweeper.accounting_queue_depth().await.unwrap(), 2);
}
on_both!(the_sweeper_writes_the_stop_records_a_dead_node_never_did);

async fn store_down_fails_closed(db: &TestDb) {
    let s = setup(db).await;
    s.close().await;
    assert_eq!(
        phase1(&s, "000070", "1234").await,
        ReturnCode::ServiceNotAvailable
    );
    assert_eq!(
        phase2(&s, "000070", "1234", "5555233").await,
        ReturnCode::ServiceNotAvailable
    );
}
on_both!(store_down_fails_closed);

/// PostgreSQL reached through a TCP relay that is then cut: the store is unreachable for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_fails_closed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    setup(&db).await;
    let target = "127.0.0.1:5432";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            conns.spawn(async move {
                let mut out = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    let url = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
    let cfg = rating::StoreConfig {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..common::config("node-r")
    };
    let s = Store::open(&url, cfg).await.unwrap();
    assert_eq!(phase1(&s, "000070", "1234").await, ReturnCode::Success);
    relay.abort();
    let _ = relay.await;
    assert_eq!(
        phase1(&s, "000070", "1234").await,
        ReturnCode::ServiceNotAvailable
    );
    assert_eq!(
        phase2(&s, "000070", "1234", "5555233").await,
        ReturnCode::ServiceNotAvailable
    );
    db.cleanup().await;
}

/// A call *to* a card's softphone subscriber, priced by the tenant's deck for its numbers:
/// the card's money is held by that deck's row for the number called, whatever the card's
/// own deck or the prefix lists (which are about where cards dial) say; a number the deck
/// does not price, or a card with no money or only toll-free calls, is refused.
async fn a_call_to_a_subscriber_is_priced_by_the_deck_it_names(db: &TestDb) {
    let s = setup(db).await;
    let incoming =
        "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds
1900,Premium DID,0.50,0,60,60,0
5559,Our DIDs,0.60,0.01,60,60,0
";
    s.import_rates(
        "incoming",
        &parse_rates_csv(incoming.as_bytes(), "USD").unwrap(),
        "test",
        now(),
    )
    .await
    .unwrap();
    let rung = |dest: &str, conf: &str| CallRequest {
        auth: AuthRequest {
            pin: None,
            authenticated: true,
            ..auth("000070", "")
        },
        destination: dest.into(),
        conf_id: conf.into(),
        whole_credit: false,
        rate_deck: Some("incoming".into()),
    };
    let c = s.authorize_call(&rung("5559000", "in-1"), now()).await;
    assert_eq!(c.code, ReturnCode::Success);
    let rate = c.rate.unwrap();
    assert_eq!(
        (rate.deck.as_str(), rate.prefix.as_str()),
        ("incoming", "5559")
    );
    // 32.91 less the 0.01 connect fee buys 54 whole minutes at 0.60.
    assert_eq!(c.credit_time, 54 * 60);
    assert!(c.reservation.is_some());
    let end = CallEnd {
        connect_at: None,
        disconnect_at: now(),
        cause: "normal".into(),
        voice_quality: None,
        gateway: String::new(),
    };
    s.settle("in-1", &end, now()).await.unwrap();
    // The blocked list's 1900 is where cards may not dial, not what a subscriber is called on.
    let c = s.authorize_call(&rung("19005550100", "in-2"), now()).await;
    assert_eq!(c.code, ReturnCode::Success);
    assert_eq!(c.rate.unwrap().description, "Premium DID");
    s.settle("in-2", &end, now()).await.unwrap();
    let c = s.authorize_call(&rung("4420", "in-3"), now()).await;
    assert_eq!(
        c.code,
        ReturnCode::CalledNumberBlocked,
        "a number it does not price"
    );
    let mut free = card("000071", "1234", "0");
    free.tollfree_only = false;
    s.create_account(&free, now()).await.unwrap();
    let broke = CallRequest {
        auth: AuthRequest {
            account: "000071".into(),
            ..rung("5559000", "in-4").auth
        },
        ..rung("5559000", "in-4")
    };
    let c = s.authorize_call(&broke, now()).await;
    assert_eq!(c.code, ReturnCode::ZeroBalance);
    // Without the deck, the same number is the card's own deck's to price: not there.
    let c = s
        .authorize_call(&call("000070", "1234", "5559000", "in-5"), now())
        .await;
    assert_eq!(c.code, ReturnCode::CalledNumberBlocked);
}
on_both!(a_call_to_a_subscriber_is_priced_by_the_deck_it_names);

//! SIP accounts on real SQLite and PostgreSQL: made on a card in its tenant, unique per
//! domain, the secret kept only as HA1s that a new password replaces, blocked (which drops
//! their bindings), barred, listed by card and tenant, deleted without touching the card; and
//! the bindings a REGISTER makes, refreshed, expired and swept.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{card, TestDb};
use rating::store::{Binding, DigestAlgorithm, NewSipAccount, SipStatus};
use rating::StoreError;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap()
}

fn alice(card: &str) -> NewSipAccount {
    NewSipAccount {
        username: "alice".into(),
        domain: "voip.example.com".into(),
        password: "correct horse".into(),
        card: card.into(),
        caller_id: Some("+14085551234".into()),
        max_calls: 2,
    }
}

async fn sip_accounts_live_on_cards(db: &TestDb) {
    let s = db.store().await;
    let mut family = card("4000000001", "1234", "10");
    family.tenant = "acme".into();
    s.create_account(&family, t0()).await.unwrap();
    // No card, no account.
    let e = s
        .create_sip_account(&alice("4999999999"), "cli", t0())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NoAccount(_)), "{e}");

    let a = s
        .create_sip_account(&alice("4000000001"), "cli", t0())
        .await
        .unwrap();
    assert_eq!(
        (
            a.aor().as_str(),
            a.card.as_str(),
            a.tenant.as_str(),
            a.status
        ),
        (
            "alice@voip.example.com",
            "4000000001",
            "acme",
            SipStatus::Active
        )
    );
    assert_eq!(
        a.ha1(DigestAlgorithm::Md5),
        DigestAlgorithm::Md5.ha1("alice", "voip.example.com", "correct horse")
    );
    assert_eq!(
        a.ha1(DigestAlgorithm::Sha256),
        DigestAlgorithm::Sha256.ha1("alice", "voip.example.com", "correct horse")
    );
    // Unique per domain; the same name in another domain is another account.
    let e = s
        .create_sip_account(&alice("4000000001"), "cli", t0())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    let mut other = alice("4000000001");
    other.domain = "voip.example.net".into();
    other.username = "bob".into();
    s.create_sip_account(&other, "cli", t0()).await.unwrap();
    // Bad input is refused, saying what is wrong, and nothing is written.
    for (tweak, what) in [
        (
            Box::new(|n: &mut NewSipAccount| n.username = "a:b".into()) as Box<dyn Fn(&mut _)>,
            "username",
        ),
        (
            Box::new(|n: &mut NewSipAccount| n.domain = "Bad..x".into()),
            "domain",
        ),
        (
            Box::new(|n: &mut NewSipAccount| n.password = "short".into()),
            "password",
        ),
        (
            Box::new(|n: &mut NewSipAccount| n.caller_id = Some("x".into())),
            "caller ID",
        ),
        (
            Box::new(|n: &mut NewSipAccount| n.max_calls = 0),
            "max_calls",
        ),
    ] {
        let mut n = alice("4000000001");
        n.username = "carol".into();
        tweak(&mut n);
        let e = s.create_sip_account(&n, "cli", t0()).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::Invalid(m) if m.contains(what)),
            "{what}: {e}"
        );
    }
    assert_eq!(s.sip_accounts_of_card("4000000001").await.unwrap().len(), 2);
    assert_eq!(s.sip_accounts(Some("acme")).await.unwrap().len(), 2);
    assert!(s.sip_accounts(Some("other")).await.unwrap().is_empty());

    // A new password: new HA1s, the old ones gone.
    let later = t0() + Duration::minutes(5);
    let changed = s
        .set_sip_password("alice", "voip.example.com", "battery staple", "desk", later)
        .await
        .unwrap();
    assert_ne!(changed.ha1_md5, a.ha1_md5);
    assert_eq!(
        changed.ha1_sha256,
        DigestAlgorithm::Sha256.ha1("alice", "voip.example.com", "battery staple")
    );
    assert_eq!(
        (changed.updated_by.as_str(), changed.updated_at),
        ("desk", later)
    );
    assert!(s
        .set_sip_password("alice", "voip.example.com", "alice", "desk", later)
        .await
        .is_err());

    // Bindings: refreshed in place, expired ones not reachable, swept.
    let b = |contact: &str, secs: i64| Binding {
        contact: contact.into(),
        source: "udp:127.0.0.1:5070".into(),
        call_id: "reg-1".into(),
        cseq: 1,
        expires_at: t0() + Duration::seconds(secs),
        node: "node-a".into(),
    };
    s.put_binding(a.id, &b("sip:alice@127.0.0.1:5070", 60), t0())
        .await
        .unwrap();
    s.put_binding(a.id, &b("sip:alice@127.0.0.1:5072", 3600), t0())
        .await
        .unwrap();
    let mut refreshed = b("sip:alice@127.0.0.1:5070", 600);
    refreshed.cseq = 2;
    s.put_binding(a.id, &refreshed, t0()).await.unwrap();
    let now = s.bindings(a.id, t0()).await.unwrap();
    assert_eq!(now.len(), 2);
    assert_eq!(now[1], refreshed);
    assert_eq!(
        s.bindings(a.id, t0() + Duration::seconds(601))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.sweep_bindings(t0() + Duration::seconds(601))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.remove_bindings(a.id, Some("sip:alice@127.0.0.1:5072"))
            .await
            .unwrap(),
        1
    );
    s.put_binding(a.id, &b("sip:alice@127.0.0.1:5070", 60), t0())
        .await
        .unwrap();

    // Barring, one flag at a time; blocking drops the bindings.
    let barred = s
        .set_sip_barring(
            "alice",
            "voip.example.com",
            Some(true),
            None,
            "acme-token",
            later,
        )
        .await
        .unwrap();
    assert!(barred.bar_international && !barred.bar_premium);
    let barred = s
        .set_sip_barring(
            "alice",
            "voip.example.com",
            None,
            Some(true),
            "acme-token",
            later,
        )
        .await
        .unwrap();
    assert!(barred.bar_international && barred.bar_premium);
    let blocked = s
        .set_sip_blocked("alice", "voip.example.com", true, "desk", later)
        .await
        .unwrap();
    assert_eq!(blocked.status, SipStatus::Blocked);
    assert!(s.bindings(a.id, t0()).await.unwrap().is_empty());
    let unblocked = s
        .set_sip_blocked("alice", "voip.example.com", false, "desk", later)
        .await
        .unwrap();
    assert_eq!(unblocked.status, SipStatus::Active);
    let e = s
        .set_sip_blocked("nobody", "voip.example.com", true, "desk", later)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NoAccount(_)), "{e}");

    // Deleting takes the account and its bindings; the card and its money stay.
    s.put_binding(a.id, &b("sip:alice@127.0.0.1:5070", 60), t0())
        .await
        .unwrap();
    let gone = s
        .delete_sip_account("alice", "voip.example.com")
        .await
        .unwrap()
        .expect("it was there");
    assert_eq!(gone.id, a.id);
    assert!(s
        .sip_account("alice", "voip.example.com")
        .await
        .unwrap()
        .is_none());
    assert!(s
        .delete_sip_account("alice", "voip.example.com")
        .await
        .unwrap()
        .is_none());
    assert!(s.bindings(a.id, t0()).await.unwrap().is_empty());
    let card = s.account("4000000001").await.unwrap();
    assert_eq!(card.balance, common::money("10"));
}
on_both!(sip_accounts_live_on_cards);

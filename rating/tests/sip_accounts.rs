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
        path: Vec::new(),
    };
    s.put_binding(a.id, &b("sip:alice@127.0.0.1:5070", 60), t0())
        .await
        .unwrap();
    s.put_binding(a.id, &b("sip:alice@127.0.0.1:5072", 3600), t0())
        .await
        .unwrap();
    // Refreshed through two proxies (RFC 3327 Path): kept as they came, in order.
    let mut refreshed = b("sip:alice@127.0.0.1:5070", 600);
    refreshed.cseq = 2;
    refreshed.path = vec![
        "<sip:127.0.0.1:5080;lr;received=sip:192.0.2.7:40312>".into(),
        "<sip:edge.example.net;lr>".into(),
    ];
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

/// A REGISTER applied as one operation, through the group-commit writer and without it:
/// contacts added, refreshed (their CSeq counting up) and removed, the answer listing what is
/// bound; a retransmission (same Call-ID, CSeq not higher) and a request past the contact
/// limit are refused with nothing written; `Contact: *` removes all. Many REGISTERs for many
/// accounts at once (one writer batch holds many of them) each bind their own contact.
async fn a_register_is_one_operation_whichever_way_the_store_writes(db: &TestDb) {
    use rating::store::{BindingChange, RegisterRefusal, Registration};
    for group_commit in [true, false] {
        let s = db
            .store_with(rating::StoreConfig {
                group_commit,
                ..common::config("node-a")
            })
            .await;
        let number = if group_commit {
            "4000000011"
        } else {
            "4000000012"
        };
        s.create_account(&card(number, "1234", "10"), t0())
            .await
            .unwrap();
        let mut n = alice(number);
        n.username = format!("alice{}", u8::from(group_commit));
        let a = s.create_sip_account(&n, "cli", t0()).await.unwrap();
        let reg = |change: BindingChange, cseq: i64| Registration {
            sip_account_id: a.id,
            change,
            source: "udp:127.0.0.1:5070".into(),
            node: "node-a".into(),
            call_id: "reg-1".into(),
            cseq,
            max_contacts: 2,
            path: vec!["<sip:127.0.0.1:5080;lr>".into()],
        };
        let set = |pairs: &[(&str, u32)]| {
            BindingChange::Set(pairs.iter().map(|(c, s)| (c.to_string(), *s)).collect())
        };
        let (desk, laptop, phone) = (
            "sip:a@127.0.0.1:5070",
            "sip:a@127.0.0.1:5072",
            "sip:a@127.0.0.1:5074",
        );
        let got = s
            .register(&reg(set(&[(desk, 60), (laptop, 3600)]), 1), t0())
            .await
            .unwrap()
            .unwrap();
        let contacts: Vec<&str> = got.iter().map(|b| b.contact.as_str()).collect();
        assert_eq!(contacts, [laptop, desk], "the longest-lived first");
        assert_eq!(got[1].expires_at, t0() + Duration::seconds(60));
        assert_eq!(s.bindings(a.id, t0()).await.unwrap(), got, "as stored");
        // The same request again: a retransmission, refused, nothing changed.
        let again = s.register(&reg(set(&[(desk, 600)]), 1), t0()).await;
        assert_eq!(again.unwrap(), Err(RegisterRefusal::OutOfOrder));
        assert_eq!(s.bindings(a.id, t0()).await.unwrap(), got);
        // A third phone is one too many; refreshing one and adding one is not.
        let more = s.register(&reg(set(&[(phone, 600)]), 2), t0()).await;
        assert_eq!(more.unwrap(), Err(RegisterRefusal::TooManyContacts));
        let swap = s
            .register(&reg(set(&[(desk, 0), (phone, 600)]), 3), t0())
            .await
            .unwrap()
            .unwrap();
        let contacts: Vec<&str> = swap.iter().map(|b| b.contact.as_str()).collect();
        assert_eq!(contacts, [laptop, phone]);
        assert_eq!(s.bindings(a.id, t0()).await.unwrap(), swap);
        // A query lists; an expired binding neither counts nor is listed.
        let later = t0() + Duration::seconds(601);
        let q = s.register(&reg(BindingChange::Query, 4), later).await;
        assert_eq!(q.unwrap().unwrap().len(), 1, "the laptop's alone is left");
        let gone = s.register(&reg(BindingChange::RemoveAll, 5), later).await;
        assert_eq!(gone.unwrap(), Ok(Vec::new()));
        assert!(s.bindings(a.id, t0()).await.unwrap().is_empty());

        // Fifty accounts registering at once.
        let mut ids = Vec::new();
        for i in 0..50 {
            let mut n = alice(number);
            n.username = format!("bulk{i}-{}", u8::from(group_commit));
            ids.push(s.create_sip_account(&n, "cli", t0()).await.unwrap().id);
        }
        let s = std::sync::Arc::new(s);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().copied().enumerate() {
            let s = s.clone();
            tasks.spawn(async move {
                let r = Registration {
                    sip_account_id: id,
                    change: BindingChange::Set(vec![(
                        format!("sip:b@127.0.0.1:{}", 6000 + i),
                        600,
                    )]),
                    source: "udp:127.0.0.1:6000".into(),
                    node: "node-a".into(),
                    path: Vec::new(),
                    call_id: format!("bulk-{i}"),
                    cseq: 1,
                    max_contacts: 2,
                };
                s.register(&r, t0()).await.unwrap().unwrap()
            });
        }
        while let Some(done) = tasks.join_next().await {
            assert_eq!(done.unwrap().len(), 1);
        }
        for (i, id) in ids.iter().enumerate() {
            let b = s.bindings(*id, t0()).await.unwrap();
            assert_eq!(b.len(), 1);
            assert_eq!(b[0].contact, format!("sip:b@127.0.0.1:{}", 6000 + i));
        }
        s.close().await;
    }
}
on_both!(a_register_is_one_operation_whichever_way_the_store_writes);

/// A SIP account's calls at once, counted on the database for every node: two nodes share an
/// account's limit, a call asked again counts once, a release frees its place (twice changes
/// nothing), the calls of a node whose heartbeat stopped stop counting and are swept by the
/// others, and a node starting again forgets its own. With group commit on and off.
async fn calls_at_once_are_counted_across_nodes(db: &TestDb) {
    use rating::store::CallSlot;
    for group_commit in [true, false] {
        let node = |id: &str| rating::StoreConfig {
            group_commit,
            ..common::config(id)
        };
        let a = db.store_with(node("node-a")).await;
        let b = db.store_with(node("node-b")).await;
        let number = if group_commit {
            "4000000021"
        } else {
            "4000000022"
        };
        a.create_account(&card(number, "1234", "10"), t0())
            .await
            .unwrap();
        let mut n = alice(number);
        n.username = format!("calls{}", u8::from(group_commit));
        let acct = a.create_sip_account(&n, "cli", t0()).await.unwrap();
        let slot = |key: &str| CallSlot {
            sip_account_id: acct.id,
            key: key.into(),
        };
        a.heartbeat(t0()).await.unwrap();
        b.heartbeat(t0()).await.unwrap();
        assert!(a.claim_sip_call(&slot("a1"), 2, t0()).await.unwrap());
        assert!(b.claim_sip_call(&slot("b1"), 2, t0()).await.unwrap());
        assert!(
            !a.claim_sip_call(&slot("a2"), 2, t0()).await.unwrap(),
            "the third call is one too many, whichever node takes it"
        );
        assert!(!b.claim_sip_call(&slot("b2"), 2, t0()).await.unwrap());
        assert!(
            b.claim_sip_call(&slot("b1"), 2, t0()).await.unwrap(),
            "asked again: still counted, once"
        );
        b.release_sip_call(&slot("b1")).await.unwrap();
        b.release_sip_call(&slot("b1")).await.unwrap();
        assert!(a.claim_sip_call(&slot("a2"), 2, t0()).await.unwrap());
        // Node A goes silent past the grace (120 s): its two calls no longer count for B, and
        // B's sweep removes them; A's own are not B's to count until then.
        let later = t0() + Duration::seconds(121);
        b.heartbeat(later).await.unwrap();
        assert!(b.claim_sip_call(&slot("b3"), 2, later).await.unwrap());
        assert!(b.claim_sip_call(&slot("b4"), 2, later).await.unwrap());
        assert!(!b.claim_sip_call(&slot("b5"), 2, later).await.unwrap());
        assert_eq!(b.sweep_sip_calls(later).await.unwrap(), 2, "A's two");
        assert_eq!(b.sweep_sip_calls(later).await.unwrap(), 0);
        // B restarts: its calls went with it.
        assert_eq!(b.forget_own_sip_calls().await.unwrap(), 2);
        assert!(b.claim_sip_call(&slot("b6"), 2, later).await.unwrap());
        // An account with a call counted can still be deleted.
        let gone = a.delete_sip_account(&n.username, "voip.example.com").await;
        assert!(gone.unwrap().is_some());
        a.close().await;
        b.close().await;
    }
}
on_both!(calls_at_once_are_counted_across_nodes);

//! The prepaid call end to end through the IVR: a caller (the test user agent, speaking SIP and
//! RTP with RFC 4733 digits) dials the debit-card access number, enters the card, hears the
//! balance, dials the destination, is bridged to the gateway, and the money is settled.

mod ua;

use b2bua::config::Config;
use b2bua::routing::Proto;
use b2bua::sip::message::SipExt;
use chrono::Utc;
use rating::store::{NewAccount, RecordFilter, Store, StoreConfig};
use rating::Money;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use ua::{sdp_addr, Ua};

const S: Duration = Duration::from_secs(20);

async fn start(
    gw: SocketAddr,
    flows: &Path,
) -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    start_t1(gw, flows, 500).await
}

/// As [`start`], with the SIP timer T1 (every transaction timer scales with it).
async fn start_t1(
    gw: SocketAddr,
    flows: &Path,
    t1_ms: u64,
) -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    start_with(gw, flows, t1_ms, None).await
}

/// As [`start_t1`]; with a store configuration the demo data is not loaded (its cards may not
/// fit that configuration's card policy).
async fn start_with(
    gw: SocketAddr,
    flows: &Path,
    t1_ms: u64,
    store_cfg: Option<StoreConfig>,
) -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    let (dir, store) = store_in_tempdir(store_cfg).await;
    let yaml = format!(
        "flows: {}\nsip:\n  listen: [\"udp:127.0.0.1:0\"]\n  t1_ms: {t1_ms}\ntrusted_peers: [127.0.0.1]\naccess_numbers:\n  - {{number: \"5551200\", flow: debitcard}}\n\
media: {{bind: 127.0.0.1, ports: 44000-44999}}\n\
gateways:\n  - {{name: gw, address: \"{gw}\"}}\nroutes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n\
radius:\n  accounting: {{server: \"127.0.0.1:9\", secret: s, gw_id: ivr-test}}\n",
        flows.display()
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    (dir, store, running)
}

/// A fresh SQLite store in its own directory: with the demo data unless `store_cfg` is given.
async fn store_in_tempdir(store_cfg: Option<StoreConfig>) -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let demo = store_cfg.is_none();
    let store = Arc::new(
        Store::open(&url, store_cfg.unwrap_or_default())
            .await
            .unwrap(),
    );
    if demo {
        rating::demo::seed(&store, Utc::now()).await.unwrap();
    }
    (dir, store)
}

/// Dials the access number; returns the 200 and our RTP address.
async fn dial(
    caller: &mut Ua,
    b2b: SocketAddr,
    call_id: &str,
) -> (b2bua::sip::message::Response, SocketAddr) {
    caller.dial_ivr(b2b, "5551200", call_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_debit_card_call_through_the_ivr() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("b2bua=debug")
        .with_test_writer()
        .try_init();
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, "ivr1").await;
    // Card and PIN typed ahead during the welcome prompt, the destination during the balance.
    caller.send_digits(a_leg, "0000701234", 101).await;
    let heard = caller.recv_rtp(Duration::from_millis(2500)).await;
    assert!(
        heard.len() > 50,
        "prompts reach the caller: {} packets",
        heard.len()
    );
    assert!(heard.iter().all(|(_, from)| *from == a_leg));
    caller.send_digits(a_leg, "5555233#", 101).await;
    let (inv, from) = gw.expect_request("INVITE", S).await;
    assert!(
        inv.uri.to_string().starts_with("sip:5555233@"),
        "{}",
        inv.uri
    );
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    gw.send(from, &gw.response(&inv, 200, "gw1", Some(&answer)))
        .await;
    gw.expect_request("ACK", S).await;
    // Talk a little, then the caller hangs up.
    let b_leg = sdp_addr(&inv.body);
    gw.send_rtp(b_leg, 0, 9, 50, &[0xff; 160]).await;
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    let (gw_bye, from) = gw.expect_request("BYE", S).await;
    gw.send(from, &gw.response(&gw_bye, 200, "gw1", None)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let card = store.account("000070").await.unwrap();
    assert!(
        card.balance < Money::parse("32.91", false).unwrap(),
        "charged: {}",
        card.balance
    );
    assert_eq!(card.reserved, Money::ZERO);
    let recs = store
        .call_records(&RecordFilter {
            account: Some("000070".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].destination, "5555233");
    assert!(recs[0].billed_seconds >= 1);
    assert!(store.ledger_check().await.unwrap().problems.is_empty());
    running.stop().await;
    store.close().await;
}

/// Answers the next INVITE at the gateway; returns it, where it came from and our RTP address.
async fn answer(gw: &Ua) -> (b2bua::sip::message::Request, SocketAddr, SocketAddr) {
    let (inv, from) = gw.expect_request("INVITE", S).await;
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    gw.send(from, &gw.response(&inv, 200, "gw1", Some(&answer)))
        .await;
    gw.expect_request("ACK", S).await;
    let b_leg = sdp_addr(&inv.body);
    (inv, from, b_leg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pound_ends_the_bridge_and_the_caller_dials_again_without_the_card() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("b2bua=debug")
        .with_test_writer()
        .try_init();
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, "ivr2").await;
    caller.send_digits(a_leg, "0000701234", 101).await;
    caller.send_digits(a_leg, "5555233#", 101).await;
    let (inv, from, _) = answer(&gw).await;
    assert!(inv.uri.to_string().starts_with("sip:5555233@"));
    caller.hold_key(a_leg, '#', 2300, 101).await;
    let (gw_bye, _) = gw.expect_request("BYE", S).await;
    gw.send(from, &gw.response(&gw_bye, 200, "gw1", None)).await;
    // Back at destination entry, after a fresh balance: no card this time.
    caller.send_digits(a_leg, "5555234#", 101).await;
    let (inv2, from2, _) = answer(&gw).await;
    assert!(
        inv2.uri.to_string().starts_with("sip:5555234@"),
        "{}",
        inv2.uri
    );
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    let (gw_bye, _) = gw.expect_request("BYE", S).await;
    gw.send(from2, &gw.response(&gw_bye, 200, "gw1", None))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recs = store
        .call_records(&RecordFilter {
            account: Some("000070".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].session_id, recs[1].session_id, "one session");
    assert_ne!(recs[0].conf_id, recs[1].conf_id, "two conferences");
    let causes: Vec<&str> = recs.iter().map(|r| r.disconnect_cause.as_str()).collect();
    assert!(causes.contains(&"long_pound"), "{causes:?}");
    assert!(store.ledger_check().await.unwrap().problems.is_empty());
    // The metrics saw the authorizations (phase 1 and two phase 2s, all code 0).
    let metrics = b2bua::metrics::get().render();
    let ok = metrics
        .lines()
        .find(|l| l.starts_with("b2bua_authorizations_total{source=\"sip\",code=\"0\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: u64 = ok.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3, "{ok}");
    running.stop().await;
    // Accounting (queued: no sender runs here): the caller's leg once for the session, and a
    // Start and Stop per gateway call, all under the session's incoming conference id.
    let queued: Vec<_> = store
        .pending_accounting(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.record.unwrap())
        .collect();
    let get = |r: &rating::radius::acct::Record, k: &str| {
        r.attributes
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let keys: Vec<(String, &str, &str)> = queued
        .iter()
        .map(|r| {
            (
                get(r, "Called-Station-Id"),
                r.leg.as_str(),
                r.status.as_str(),
            )
        })
        .collect();
    let want = |d: &str, l, s| (d.to_string(), l, s);
    for k in [
        want("5551200", "answer", "start"),
        want("5555233", "originate", "start"),
        want("5555233", "originate", "stop"),
        want("5555234", "originate", "start"),
        want("5555234", "originate", "stop"),
        want("5551200", "answer", "stop"),
    ] {
        assert_eq!(
            keys.iter().filter(|x| **x == k).count(),
            1,
            "{k:?} in {keys:?}"
        );
    }
    assert_eq!(keys.len(), 6, "{keys:?}");
    let incoming: std::collections::HashSet<String> = queued
        .iter()
        .map(|r| get(r, "h323-incoming-conf-id"))
        .collect();
    assert_eq!(
        incoming.len(),
        1,
        "one incoming conference id: {incoming:?}"
    );
    for r in &queued {
        // The caller's leg starts before the card is known: it is named by the caller's number.
        let user = if (r.leg.as_str(), r.status.as_str()) == ("answer", "start") {
            "4085550000"
        } else {
            "000070"
        };
        assert_eq!(get(r, "User-Name"), user);
        assert_eq!(get(r, "h323-gw-id"), "ivr-test");
    }
    let first_stop = queued
        .iter()
        .find(|r| get(r, "Called-Station-Id") == "5555233" && r.status.as_str() == "stop")
        .unwrap();
    assert_eq!(
        get(first_stop, "h323-disconnect-cause"),
        "10",
        "long pound: normal clearing"
    );
    assert_eq!(
        get(first_stop, "Acct-Session-Id"),
        recs.iter()
            .find(|c| c.destination == "5555233")
            .unwrap()
            .conf_id
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_money_running_out_plays_the_warning_then_cuts_the_gateway_and_the_caller_off() {
    // The shipped debitcard flow with the warning 3 s before the end instead of 60.
    let flows = ua::flows_warning_at(3);
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), flows.path()).await;
    // 0.01 USD buys 6 s to 5555233.
    store
        .create_account(
            &NewAccount::new("123456", Some("1111"), Money::parse("0.01", false).unwrap()),
            Utc::now(),
        )
        .await
        .unwrap();
    let b2b = running.addr(Proto::Udp).unwrap();
    let (_ok, a_leg) = dial(&mut caller, b2b, "ivr3").await;
    caller.send_digits(a_leg, "1234561111", 101).await;
    caller.send_digits(a_leg, "5555233#", 101).await;
    let (_inv, from, b_leg) = answer(&gw).await;
    // The gateway talks (µ-law silence); the caller hears it, then the warning prompt, then
    // the gateway is cut off and the caller hears "disconnected" and gets BYE.
    let t0 = std::time::Instant::now();
    let talk = async {
        gw.send_rtp(b_leg, 0, 9, 200, &[0xff; 160]).await;
    };
    let listen = caller.recv_rtp_for(Duration::from_secs(9));
    let bye = async {
        let (gw_bye, _) = gw.expect_request("BYE", S).await;
        gw.send(from, &gw.response(&gw_bye, 200, "gw1", None)).await;
        t0.elapsed()
    };
    let (_, heard, cut_after) = tokio::join!(talk, listen, bye);
    assert!(
        cut_after >= Duration::from_millis(5500) && cut_after < Duration::from_secs(8),
        "gateway cut after {cut_after:?}"
    );
    let speech = heard
        .iter()
        .filter(|(p, _)| {
            b2bua::media::rtp::read(p).is_some_and(|r| r.payload.iter().any(|b| *b != 0xff))
        })
        .count();
    assert!(
        speech > 25,
        "the warning (and disconnected) prompts reached the caller: {speech} frames of speech"
    );
    let (caller_bye, from) = caller.expect_request("BYE", S).await;
    caller
        .send(from, &caller.response(&caller_bye, 200, "c", None))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = &store
        .call_records(&RecordFilter {
            account: Some("123456".into()),
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(rec.billed_seconds, 6);
    assert_eq!(rec.disconnect_cause, "credit_exhausted");
    assert_eq!(
        store.account("123456").await.unwrap().balance,
        Money::parse("0.000552", false).unwrap()
    );
    assert!(store.ledger_check().await.unwrap().problems.is_empty());
    running.stop().await;
    store.close().await;
}

/// Whether the caller heard a prompt (see [`ua::carries_prompt`]).
fn heard(packets: &[(Vec<u8>, SocketAddr)], name: &str) -> bool {
    ua::carries_prompt(packets.iter().map(|(b, _)| b.as_slice()), name)
}

/// One caller refused somewhere in the flow: dials, enters the card and (if given) a
/// destination, and must hear `prompt`; `then_bye` says whether the call then ends.
async fn refused(
    card: NewAccount,
    keys: &str,
    destination: Option<&str>,
    prompt: &str,
    then_bye: bool,
) {
    refused_while(card, false, keys, destination, prompt, then_bye).await
}

/// As [`refused`]; with `busy_card` another call already holds the card.
async fn refused_while(
    card: NewAccount,
    busy_card: bool,
    keys: &str,
    destination: Option<&str>,
    prompt: &str,
    then_bye: bool,
) {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    store.create_account(&card, Utc::now()).await.unwrap();
    if busy_card {
        let auth = rating::store::AuthRequest {
            account: card.account.clone(),
            pin: Some("1111".into()),
            ani: None,
            access_number: "5551200".into(),
            session_id: "other-call".into(),
            tenant: None,
            authenticated: false,
        };
        let req = rating::store::CallRequest {
            auth,
            destination: "5555233".into(),
            conf_id: "other-conf".into(),
            whole_credit: false,
            rate_deck: None,
        };
        assert!(store
            .authorize_call(&req, Utc::now())
            .await
            .code
            .is_success());
    }
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, &format!("refused-{prompt}")).await;
    caller.send_digits(a_leg, keys, 101).await;
    if let Some(d) = destination {
        // After the balance: type the destination, then listen.
        caller.recv_rtp_for(Duration::from_secs(4)).await;
        caller.send_digits(a_leg, d, 101).await;
    }
    let packets = caller.recv_rtp_for(Duration::from_secs(7)).await;
    assert!(heard(&packets, prompt), "the caller heard `{prompt}`");
    if then_bye {
        let (bye, from) = caller.expect_request("BYE", S).await;
        caller
            .send(from, &caller.response(&bye, 200, "c", None))
            .await;
    } else {
        let bye = caller.in_dialog("BYE", b2b, &ok, None);
        caller.send(b2b, &bye).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recs = store
        .call_records(&RecordFilter {
            account: Some(card.account.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!recs.is_empty(), "the refused attempt is recorded");
    assert!(store.ledger_check().await.unwrap().problems.is_empty());
    running.stop().await;
    store.close().await;
}

fn card(account: &str, balance: &str) -> NewAccount {
    NewAccount::new(account, Some("1111"), Money::parse(balance, false).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_2_a_wrong_pin_is_asked_again() {
    refused(card("200001", "5"), "2000019999", None, "auth_fail", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_4_zero_balance_is_told_and_hung_up() {
    refused(card("200002", "0"), "2000021111", None, "zero_bal", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_5_an_expired_card_is_told_and_hung_up() {
    let mut c = card("200003", "5");
    c.expires_at = Some(Utc::now() - chrono::Duration::days(2));
    refused(c, "2000031111", None, "card_expired", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_3_a_card_in_use_is_told_and_hung_up() {
    refused_while(
        card("200004", "5"),
        true,
        "2000041111",
        None,
        "account_in_use",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_9_a_blocked_destination_returns_to_destination_entry() {
    refused(
        card("200005", "5"),
        "2000051111",
        Some("1900555#"),
        "dest_collect_fail",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_12_too_little_for_the_destination_returns_to_destination_entry() {
    // The premium line costs 0.10 to connect plus a 60 s first increment.
    refused(
        card("200006", "0.05"),
        "2000061111",
        Some("5555234#"),
        "insufficient_funds",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_13_a_toll_free_only_card_is_told() {
    let mut c = card("200007", "5");
    c.tollfree_only = true;
    refused(c, "2000071111", Some("5555233#"), "toll_free", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_destination_is_told_and_the_caller_dials_again() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, "busy1").await;
    caller.send_digits(a_leg, "0000701234", 101).await;
    caller.send_digits(a_leg, "5555233#", 101).await;
    let (inv, from) = gw.expect_request("INVITE", S).await;
    caller.drain_rtp();
    gw.send(from, &gw.response(&inv, 486, "gw1", None)).await;
    gw.expect_request("ACK", S).await;
    let packets = caller.recv_rtp_for(Duration::from_secs(7)).await;
    assert!(heard(&packets, "dest_busy"));
    assert!(heard(&packets, "enter_dest"), "back at destination entry");
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let card = store.account("000070").await.unwrap();
    assert_eq!(
        card.balance,
        Money::parse("32.91", false).unwrap(),
        "a busy call costs nothing"
    );
    assert_eq!(card.reserved, Money::ZERO);
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_1_an_unknown_card_is_asked_again() {
    // No card 999999 exists: the caller hears the authentication-failed prompt and may retry.
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, "unknown1").await;
    caller.send_digits(a_leg, "9999991111", 101).await;
    let packets = caller.recv_rtp_for(Duration::from_secs(7)).await;
    assert!(heard(&packets, "auth_fail"));
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recs = store
        .call_records(&RecordFilter {
            account: Some("999999".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs[0].return_code, 1, "{recs:?}");
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_10_a_caller_whose_number_is_locked_out_gets_the_final_prompt_and_is_hung_up() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    store
        .create_account(&card("200010", "5"), Utc::now())
        .await
        .unwrap();
    // Five wrong PINs earlier from this caller's own number lock the number out (a locked
    // card alone answers as a wrong PIN does: see the next test).
    for i in 0..5 {
        let auth = rating::store::AuthRequest {
            account: "200010".into(),
            pin: Some("0000".into()),
            ani: Some("4085550000".into()),
            access_number: "5551200".into(),
            session_id: format!("earlier-{i}"),
            tenant: None,
            authenticated: false,
        };
        store.authorize_account(&auth, Utc::now()).await;
    }
    let b2b = running.addr(Proto::Udp).unwrap();
    let (_ok, a_leg) = dial(&mut caller, b2b, "locked1").await;
    caller.send_digits(a_leg, "2000101111", 101).await;
    let packets = caller.recv_rtp_for(Duration::from_secs(6)).await;
    assert!(heard(&packets, "final"));
    let (bye, from) = caller.expect_request("BYE", S).await;
    caller
        .send(from, &caller.response(&bye, 200, "c", None))
        .await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_card_answers_as_a_wrong_pin_even_with_the_right_one() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    store
        .create_account(&card("200011", "5"), Utc::now())
        .await
        .unwrap();
    // Five wrong PINs from five numbers lock the card itself.
    for i in 0..5 {
        let auth = rating::store::AuthRequest {
            account: "200011".into(),
            pin: Some("0000".into()),
            ani: Some(format!("40855501{i:02}")),
            access_number: "5551200".into(),
            session_id: format!("earlier-{i}"),
            tenant: None,
            authenticated: false,
        };
        store.authorize_account(&auth, Utc::now()).await;
    }
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, "locked2").await;
    // The right PIN: told "wrong" and asked again, as for any wrong PIN; nothing says locked.
    caller.send_digits(a_leg, "2000111111", 101).await;
    let packets = caller.recv_rtp_for(Duration::from_secs(6)).await;
    assert!(heard(&packets, "auth_fail"), "asked again");
    assert!(!heard(&packets, "final"));
    let recs = store
        .call_records(&RecordFilter {
            account: Some("200011".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs.last().unwrap().return_code, 2, "{recs:?}");
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_8_an_unreachable_store_gets_the_technical_problem_prompt() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let (_ok, a_leg) = dial(&mut caller, b2b, "nostore1").await;
    // The database goes away while the caller is in the flow: authorization fails closed.
    store.close().await;
    caller.send_digits(a_leg, "0000701234", 101).await;
    let packets = caller.recv_rtp_for(Duration::from_secs(7)).await;
    assert!(heard(&packets, "technical_problem"));
    let (bye, from) = caller.expect_request("BYE", S).await;
    caller
        .send(from, &caller.response(&bye, 200, "c", None))
        .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_14_a_mistyped_card_number_is_asked_again_then_works() {
    // Cards carry a Luhn check digit: a mistyped number is refused by its form (14), before
    // any database lookup, and the caller types it again.
    let policy = rating::rules::CardPolicy {
        min_len: 6,
        max_len: 6,
        luhn: true,
    };
    let cfg = StoreConfig {
        card_policy: policy,
        ..Default::default()
    };
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) =
        start_with(gw.sip_addr(), ivr::shipped_dir(), 500, Some(cfg)).await;
    let good = format!("12345{}", rating::rules::luhn_check_digit("12345"));
    let typo = format!("12354{}", rating::rules::luhn_check_digit("12345"));
    store
        .create_account(&card(&good, "5"), Utc::now())
        .await
        .unwrap();
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, "typo1").await;
    caller.send_digits(a_leg, &format!("{typo}1111"), 101).await;
    let packets = caller.recv_rtp_for(Duration::from_secs(6)).await;
    assert!(heard(&packets, "auth_fail"), "asked again");
    caller.send_digits(a_leg, &format!("{good}1111"), 101).await;
    let packets = caller.recv_rtp_for(Duration::from_secs(5)).await;
    assert!(heard(&packets, "you_have"), "the balance is announced");
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recs = store
        .call_records(&RecordFilter {
            account: Some(typo.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].return_code, 14);
    running.stop().await;
    store.close().await;
}

/// A redirected card: the caller is connected, free of charge, to the card's redirect number
/// (after the "connecting you to customer service" prompt for 52).
async fn redirected(code: rating::ReturnCode, account: &str, prompt: Option<&str>) {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), ivr::shipped_dir()).await;
    store
        .create_account(&card(account, "0"), Utc::now())
        .await
        .unwrap();
    let to = rating::store::Redirect {
        code,
        number: "18005550100".into(),
    };
    store.set_redirect(account, Some(to)).await.unwrap();
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial(&mut caller, b2b, &format!("redirect-{account}")).await;
    caller
        .send_digits(a_leg, &format!("{account}1111"), 101)
        .await;
    if prompt.is_none() {
        // A hotline card asks for a destination like any other, then ignores it.
        caller.recv_rtp_for(Duration::from_secs(3)).await;
        caller.send_digits(a_leg, "4420123#", 101).await;
    }
    if let Some(name) = prompt {
        // The gateway's INVITE waits in its socket while the caller listens.
        let packets = caller.recv_rtp_for(Duration::from_secs(5)).await;
        assert!(heard(&packets, name), "the caller heard `{name}`");
    }
    let (inv, from) = gw.expect_request("INVITE", S).await;
    assert!(
        inv.uri.to_string().starts_with("sip:18005550100@"),
        "{}",
        inv.uri
    );
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    gw.send(from, &gw.response(&inv, 200, "gw1", Some(&answer)))
        .await;
    gw.expect_request("ACK", S).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    let (gw_bye, from) = gw.expect_request("BYE", S).await;
    gw.send(from, &gw.response(&gw_bye, 200, "gw1", None)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = store.account(account).await.unwrap();
    assert_eq!(a.balance, Money::ZERO, "a redirected call is free");
    assert_eq!(a.reserved, Money::ZERO);
    let recs = store
        .call_records(&RecordFilter {
            account: Some(account.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        recs.iter().any(|r| r.return_code == code.code()),
        "{recs:?}"
    );
    assert!(store.ledger_check().await.unwrap().problems.is_empty());
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_52_a_card_for_customer_service_is_connected_there() {
    redirected(
        rating::ReturnCode::RedirectCustomerService,
        "200052",
        Some("connect_cust_ser"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_51_a_hotline_card_is_connected_to_its_number() {
    redirected(rating::ReturnCode::RedirectCalledParty, "200051", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_ack_never_comes_is_hung_up_and_nothing_is_held() {
    // T1 of 50 ms: the 200 is retransmitted and given up on after 64 × T1 = 3.2 s.
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start_t1(gw.sip_addr(), ivr::shipped_dir(), 50).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let invite = caller.invite(b2b, "5551200", "noack1", &offer);
    caller.send(b2b, &invite).await;
    caller.expect_response(200, S).await;
    // No ACK: the signalling path is gone. The B2BUA gives up and hangs up.
    let t0 = std::time::Instant::now();
    let (bye, _) = caller.expect_request("BYE", S).await;
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert_eq!(bye.call_id(), "noack1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.account("000070").await.unwrap().reserved, Money::ZERO);
    running.stop().await;
    store.close().await;
}

/// A zip of an ITSP's prompt set: `en_welcome.au` and `en_enter_card_num.au`, each a steady
/// level (one µ-law byte repeated), so which set a caller hears shows in every packet.
fn prompt_zip(welcome: i16, enter_card: i16) -> Vec<u8> {
    use std::io::Write;
    let au = |level: i16, ms: usize| {
        prompts::audio::write_au(&prompts::audio::Audio {
            samples: vec![level; ms * 8],
        })
    };
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in [
        ("en_welcome.au", au(welcome, 1200)),
        ("en_enter_card_num.au", au(enter_card, 1500)),
    ] {
        z.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(&data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// How many packets from `heard` carry nothing but `byte`.
fn packets_of(heard: &[(Vec<u8>, SocketAddr)], byte: u8) -> usize {
    heard
        .iter()
        .filter_map(|(p, _)| b2bua::media::rtp::read(p))
        .filter(|r| !r.payload.is_empty() && r.payload.iter().all(|b| *b == byte))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_keeps_the_prompt_set_it_started_with_while_its_itsp_uploads_another() {
    let gw = Ua::new("gw").await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let yaml = format!(
        "flows: {}\ntenant_prompts: {}\nsip:\n  listen: [\"udp:127.0.0.1:0\"]\n  t1_ms: 500\n\
trusted_peers: [127.0.0.1]\n\
access_numbers:\n  - {{number: \"5551300\", flow: debitcard, tenant: acme}}\n\
media: {{bind: 127.0.0.1, ports: 45000-45999}}\n\
gateways:\n  - {{name: gw, address: \"{}\"}}\nroutes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n",
        ivr::shipped_dir().display(),
        dir.path().join("tenant-prompts").display(),
        gw.sip_addr()
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    let b2b = running.addr(Proto::Udp).unwrap();
    let upload = |zip: Vec<u8>| {
        let assets = running.assets.clone();
        async move {
            assets
                .upload_prompts("acme", zip, |_| String::new())
                .await
                .unwrap();
            let set = assets.live().prompts("acme");
            let level = |name: &str| set.get("en", name).unwrap().ulaw[0];
            (level("welcome"), level("enter_card_num"))
        }
    };
    let (welcome1, card1) = upload(prompt_zip(1000, 2000)).await;
    // The first caller is welcomed by version 1; version 2 arrives while it plays.
    let mut first = Ua::new("4085550001").await;
    let offer = first.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let invite = first.invite(b2b, "5551300", "swap-1", &offer);
    first.send(b2b, &invite).await;
    let ok1 = first.expect_response(200, S).await;
    let ack = first.in_dialog("ACK", b2b, &ok1, None);
    first.send(b2b, &ack).await;
    let (welcome2, card2) = upload(prompt_zip(-1000, -2000)).await;
    assert!(
        [welcome1, card1, welcome2, card2]
            .iter()
            .all(|b| *b != 0xff && *b != 0x7f),
        "levels distinct from silence"
    );
    let heard1 = first.recv_rtp_for(Duration::from_millis(3200)).await;
    let bye = first.in_dialog("BYE", b2b, &ok1, None);
    first.send(b2b, &bye).await;
    first.expect_response(200, S).await;
    // A caller arriving after the upload hears version 2.
    let mut second = Ua::new("4085550002").await;
    let offer = second.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let invite = second.invite(b2b, "5551300", "swap-2", &offer);
    second.send(b2b, &invite).await;
    let ok2 = second.expect_response(200, S).await;
    let ack = second.in_dialog("ACK", b2b, &ok2, None);
    second.send(b2b, &ack).await;
    let heard2 = second.recv_rtp_for(Duration::from_millis(3200)).await;
    let bye = second.in_dialog("BYE", b2b, &ok2, None);
    second.send(b2b, &bye).await;
    second.expect_response(200, S).await;
    let counts =
        |h: &[(Vec<u8>, SocketAddr)]| [welcome1, card1, welcome2, card2].map(|b| packets_of(h, b));
    let (c1, c2) = (counts(&heard1), counts(&heard2));
    // Version 1's card prompt follows its welcome on the first call, though version 2 was
    // live by then; the second call hears only version 2.
    assert!(
        c1[1] > 20,
        "first call heard version 1's card prompt: {c1:?}"
    );
    assert_eq!((c1[2], c1[3]), (0, 0), "nothing of version 2: {c1:?}");
    assert!(
        c2[2] > 20 && c2[3] > 20,
        "second call heard version 2: {c2:?}"
    );
    assert_eq!((c2[0], c2[1]), (0, 0), "nothing of version 1: {c2:?}");
    running.stop().await;
    store.close().await;
}

/// A softphone subscriber dials the short code `*100`: challenged 407, then answered by the
/// `balance` flow on its SIP account's card (no PIN asked: its digest proved the card), which
/// says the balance and hangs up, charging nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_dialling_star_100_hears_its_cards_balance() {
    let (_dir, store) = store_in_tempdir(None).await;
    let yaml = format!(
        "flows: {}\nsip:\n  listen: [\"udp:127.0.0.1:0\"]\n  t1_ms: 500\n\
media: {{bind: 127.0.0.1, ports: 44000-44999}}\nsubscribers:\n  domains: [demo.invalid]\n",
        ivr::shipped_dir().display()
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    let b2b = running.addr(Proto::Udp).unwrap();
    let mut phone = Ua::new("demo").await;
    let me = phone.sip_addr();
    let offer = phone.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let invite = |cseq: u32, auth: &str| {
        format!(
            "INVITE sip:*100@demo.invalid SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbal{cseq}\r\n\
From: <sip:demo@demo.invalid>;tag=p1\r\nTo: <sip:*100@demo.invalid>\r\nCall-ID: balance-1\r\n\
CSeq: {cseq} INVITE\r\nContact: <sip:demo@{me}>\r\nMax-Forwards: 70\r\n{auth}\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        )
    };
    phone.send(b2b, &invite(1, "")).await;
    let challenge = phone.expect_response(407, S).await;
    phone
        .send(
            b2b,
            &format!(
                "ACK sip:*100@demo.invalid SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbal1\r\n\
From: <sip:demo@demo.invalid>;tag=p1\r\nTo: {}\r\nCall-ID: balance-1\r\nCSeq: 1 ACK\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                challenge.header("To").unwrap()
            ),
        )
        .await;
    let ch = b2bua::sip::digest::Challenge::parse(challenge.header("Proxy-Authenticate").unwrap())
        .expect("a challenge");
    let auth = b2bua::sip::digest::authorization(
        &ch,
        b2bua::sip::digest::Credentials {
            username: rating::demo::SIP_USER,
            password: rating::demo::SIP_PASSWORD,
        },
        "INVITE",
        "sip:*100@demo.invalid",
        "c1",
        1,
    );
    phone
        .send(b2b, &invite(2, &format!("Proxy-Authorization: {auth}\r\n")))
        .await;
    let ok = phone.expect_response(200, S).await;
    let ack = phone.in_dialog("ACK", b2b, &ok, None);
    phone.send(b2b, &ack).await;
    let packets = phone.recv_rtp_for(Duration::from_secs(4)).await;
    assert!(heard(&packets, "you_have"), "{} packets", packets.len());
    let (bye, from) = phone.expect_request("BYE", S).await;
    phone
        .send(from, &phone.response(&bye, 200, "p2", None))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let card = store.account(rating::demo::CARD).await.unwrap();
    assert_eq!(
        card.balance,
        Money::parse("32.91", false).unwrap(),
        "nothing charged"
    );
    assert_eq!(card.reserved, Money::ZERO);
    running.stop().await;
    store.close().await;
}

//! The prepaid call end to end through the IVR: a caller (the test user agent, speaking SIP and
//! RTP with RFC 4733 digits) dials the debit-card access number, enters the card, hears the
//! balance, dials the destination, is bridged to the gateway, and the money is settled.

mod ua;

use b2bua::config::Config;
use b2bua::routing::Proto;
use chrono::Utc;
use rating::store::{RecordFilter, Store, StoreConfig};
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
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let yaml = format!(
        "flows: {}\nsip:\n  listen: [\"udp:127.0.0.1:0\"]\ntrusted_peers: [127.0.0.1]\naccess_numbers:\n  - {{number: \"5551200\", flow: debitcard}}\n\
media: {{bind: 127.0.0.1, ports: 44000-44999}}\n\
gateways:\n  - {{name: gw, address: \"{gw}\"}}\nroutes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n",
        flows.display()
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    (dir, store, running)
}

/// Dials the access number; returns the 200 and our RTP address.
async fn dial(
    caller: &mut Ua,
    b2b: SocketAddr,
    call_id: &str,
) -> (b2bua::sip::message::Response, SocketAddr) {
    let offer = caller.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let invite = caller.invite(b2b, "5551200", call_id, &offer);
    caller.send(b2b, &invite).await;
    let ok = caller.expect_response(200, S).await;
    let ack = caller.in_dialog("ACK", b2b, &ok, None);
    caller.send(b2b, &ack).await;
    let a_leg = sdp_addr(&ok.body);
    (ok, a_leg)
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

//! The network is hostile: attacks on a running B2BUA over real sockets, each checked for the
//! answer a careful SBC would give, and for the service carrying on afterwards.

mod ua;

use b2bua::config::Config;
use b2bua::routing::Proto;
use b2bua::sip::message::SipExt;
use chrono::Utc;
use rating::store::{Store, StoreConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use ua::{sdp_addr, Ua};

const S: Duration = Duration::from_secs(20);

/// A node with the demo data, the shipped flows, the debit-card number 5551200 and the pinless
/// number 5551201, trusting only 127.0.0.1; `extra` is appended to the configuration.
async fn start(
    gw: SocketAddr,
    extra: &str,
) -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let yaml = format!(
        "sip:\n  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\ntrusted_peers: [127.0.0.1]\n\
access_numbers:\n  - {{number: \"5551200\", flow: debitcard, trust_ani: false, trusted_only: false}}\n  - {{number: \"5551201\", pinless: true}}\n\
media: {{bind: 127.0.0.1, ports: 45000-45999}}\n\
gateways:\n  - {{name: gw, address: \"{gw}\"}}\nroutes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n{extra}"
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    (dir, store, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_payload_type_200_gets_488_and_the_service_carries_on() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let b2b = running.addr(Proto::Udp).unwrap();
    for (n, (formats, maps)) in [
        ("200", vec!["200 PCMU/8000"]),
        ("0 200", vec!["0 PCMU/8000", "200 telephone-event/8000"]),
    ]
    .into_iter()
    .enumerate()
    {
        let offer = caller.sdp(formats, &maps);
        let invite = caller.invite(b2b, "5551200", &format!("pt200-{n}"), &offer);
        caller.send(b2b, &invite).await;
        let r = caller.expect_response(488, S).await;
        let w = r.header("Warning").unwrap_or("");
        assert!(w.contains("is not an RTP payload type"), "{w}");
    }
    // The next caller is answered and hears the welcome prompt: nothing died.
    let offer = caller.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let invite = caller.invite(b2b, "5551200", "pt-ok", &offer);
    caller.send(b2b, &invite).await;
    let ok = caller.expect_response(200, S).await;
    let ack = caller.in_dialog("ACK", b2b, &ok, None);
    caller.send(b2b, &ack).await;
    let a_leg = sdp_addr(&ok.body);
    caller.send_rtp(a_leg, 0, 7, 5, &[0xff; 160]).await;
    let heard = caller.recv_rtp(Duration::from_millis(500)).await;
    assert!(
        heard.len() > 10,
        "the welcome prompt plays: {}",
        heard.len()
    );
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    caller.expect_response(200, S).await;
    running.stop().await;
    store.close().await;
}

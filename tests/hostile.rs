//! The network is hostile: attacks on a running B2BUA over real sockets, each checked for the
//! answer a careful SBC would give, and for the service carrying on afterwards.

#[path = "support/certs.rs"]
mod certs;
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
    start_t1(gw, 500, extra).await
}

/// As [`start`], with the SIP timer T1 (every transaction timer scales with it).
async fn start_t1(
    gw: SocketAddr,
    t1_ms: u64,
    extra: &str,
) -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let yaml = format!(
        "sip:\n  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n  t1_ms: {t1_ms}\ntrusted_peers: [127.0.0.1]\n\
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

fn options(branch: &str, via: &str) -> String {
    format!(
        "OPTIONS sip:5551201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK{branch}\r\n\
From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:5551201@127.0.0.1>\r\nCall-ID: {branch}@t\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Reads until the peer closes; `None` if it is still open after `wait`.
async fn read_to_close(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let end = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_at_the_top_of_usize_is_answered_400_and_the_connection_closed() {
    use tokio::io::AsyncWriteExt;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let to = running.addr(Proto::Tcp).unwrap();
    for cl in ["18446744073709551615", "18446744073709551616", "70000"] {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        let msg = options("huge", "TCP 127.0.0.1:5999")
            .replace("Content-Length: 0", &format!("Content-Length: {cl}"));
        s.write_all(msg.as_bytes()).await.unwrap();
        let got = read_to_close(&mut s, S).await.expect("closed");
        assert!(
            got.starts_with("SIP/2.0 400 Bad Request\r\n"),
            "{cl}: {got}"
        );
        assert!(got.contains("Call-ID: huge@t"), "{got}");
    }
    // Still serving.
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    s.write_all(options("after", "TCP 127.0.0.1:5999").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(S, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"));
    running.stop().await;
    store.close().await;
}

/// A client keeps its TCP connection (and its NAT binding) alive with CRLF CRLF pings and
/// learns it stands from our CRLF pong (RFC 5626 §4.4.1); a ping split across two writes is
/// still one, and a flood of pings in one write gets one pong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crlf_ping_on_tcp_gets_a_pong() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let to = running.addr(Proto::Tcp).unwrap();
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    let mut buf = [0u8; 64];
    s.write_all(b"\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(S, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"\r\n");
    s.write_all(b"\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"\r\n").await.unwrap();
    let n = tokio::time::timeout(S, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"\r\n", "a ping in two writes");
    s.write_all(&b"\r\n\r\n".repeat(50)).await.unwrap();
    let mut pongs = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        pongs.extend_from_slice(&buf[..n]);
    }
    // One pong per read of ours, and the 200 bytes come in one read or two.
    assert!(
        pongs == b"\r\n" || pongs == b"\r\n\r\n",
        "fifty pings, not fifty pongs: {pongs:?}"
    );
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_per_source_and_idle_ones_closed() {
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(
        gw.sip_addr(),
        "limits: {tcp_connections_per_source: 2, tcp_idle_s: 1}\n",
    )
    .await;
    let to = running.addr(Proto::Tcp).unwrap();
    let mut a = tokio::net::TcpStream::connect(to).await.unwrap();
    let _b = tokio::net::TcpStream::connect(to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The third from the same address is closed at once.
    let mut c = tokio::net::TcpStream::connect(to).await.unwrap();
    assert!(
        read_to_close(&mut c, Duration::from_millis(500))
            .await
            .is_some(),
        "over the cap: closed"
    );
    // The first two fall idle and are closed after a second; then there is room again.
    let t0 = std::time::Instant::now();
    assert!(read_to_close(&mut a, Duration::from_secs(5))
        .await
        .is_some());
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "not before the idle time"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = tokio::net::TcpStream::connect(to).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut d, options("room", "TCP 127.0.0.1:5999").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(S, tokio::io::AsyncReadExt::read(&mut d, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"));
    let metrics = b2bua::metrics::get().render();
    assert!(
        metrics.contains("b2bua_limit_hits_total{limit=\"tcp_connections_per_source\"}"),
        "{metrics}"
    );
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_disconnected_instead_of_queued_for() {
    use tokio::io::AsyncWriteExt;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "limits: {tcp_write_queue: 8}\n").await;
    let to = running.addr(Proto::Tcp).unwrap();
    // A small receive window, and then we only write: every answer piles up at the B2BUA.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&to.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut s = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    let mut sent = 0;
    let mut batch = String::new();
    for i in 0..20_000 {
        batch.push_str(&options(&format!("nr{i}"), "TCP 127.0.0.1:5999"));
        if i % 100 == 99 {
            // Once the B2BUA has given up on us, writing fails.
            if tokio::time::timeout(Duration::from_secs(2), s.write_all(batch.as_bytes()))
                .await
                .map_or(true, |r| r.is_err())
            {
                break;
            }
            sent += 100;
            batch.clear();
        }
    }
    let got = read_to_close(&mut s, S)
        .await
        .expect("the B2BUA closed the connection");
    let answered = got.matches("SIP/2.0 200 OK").count();
    assert!(answered < sent, "answered {answered} of {sent}");
    let metrics = b2bua::metrics::get().render();
    assert!(
        metrics.contains("b2bua_limit_hits_total{limit=\"tcp_write_queue\"}"),
        "{metrics}"
    );
    running.stop().await;
    store.close().await;
}

/// Sends `n` OPTIONS with fresh branches from `sock`; counts the answers by status code.
async fn burst(sock: &tokio::net::UdpSocket, to: SocketAddr, n: usize, tag: &str) -> Vec<u16> {
    let me = sock.local_addr().unwrap();
    for i in 0..n {
        let m = options(&format!("{tag}{i}"), &format!("UDP {me}"));
        sock.send_to(m.as_bytes(), to).await.unwrap();
    }
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok((len, _))) =
        tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        codes.push(text[8..11].parse().unwrap());
        if codes.last() == Some(&503) {
            assert!(text.contains("Retry-After: "), "{text}");
        }
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_dropped_from_strangers_and_answered_503_to_trusted_peers() {
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(
        gw.sip_addr(),
        "limits: {requests: {per_second: 1, burst: 5}, trusted_requests: {per_second: 1, burst: 8}}\n",
    )
    .await;
    let to = running.addr(Proto::Udp).unwrap();
    // 127.0.0.2 is not a trusted peer: five answers, then silence (no amplification).
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let codes = burst(&stranger, to, 40, "st").await;
    assert_eq!(codes, vec![200; 5], "{codes:?}");
    // The trusted peer gets its burst, then 503 with Retry-After for each one over.
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let codes = burst(&peer, to, 20, "tr").await;
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 8, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 12, "{codes:?}");
    // Another stranger is unaffected by the first one's flood.
    let other = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
    assert_eq!(burst(&other, to, 1, "ot").await, vec![200]);
    let metrics = b2bua::metrics::get().render();
    assert!(
        metrics.contains("b2bua_limit_hits_total{limit=\"requests\"}"),
        "{metrics}"
    );
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_table_and_the_calls_have_caps() {
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(
        gw.sip_addr(),
        "limits: {transactions: 16, lingering_transactions: 16, calls: 1}\n",
    )
    .await;
    let to = running.addr(Proto::Udp).unwrap();
    // A call that rings holds the one call slot (and two transactions).
    let mut caller = Ua::new("4085551234").await;
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    let invite = caller.invite(to, "55512015555233", "cap1", &offer);
    caller.send(to, &invite).await;
    let (inv, from) = gw.expect_request("INVITE", S).await;
    gw.send(from, &gw.response(&inv, 180, "gwcap", None)).await;
    caller.expect_response(180, S).await;
    let invite = caller.invite(to, "55512015555233", "cap2", &offer);
    caller.send(to, &invite).await;
    let r = caller.expect_response(503, S).await;
    assert_eq!(r.header("Retry-After"), Some("5"));
    // Answered OPTIONS only wait out Timer J: they take no room from work in progress, and
    // past their own cap the oldest are forgotten, so every one of them is answered.
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let codes = burst(&peer, to, 40, "tx").await;
    assert_eq!(codes, vec![200; 40], "{codes:?}");
    let metrics = b2bua::metrics::get().render();
    for limit in ["lingering_transactions", "calls"] {
        assert!(
            metrics.contains(&format!("b2bua_limit_hits_total{{limit=\"{limit}\"}}")),
            "{limit}: {metrics}"
        );
    }
    running.stop().await;
    store.close().await;
}

/// A pinless card that takes many calls at once (the demo's takes one).
const MANY_CALLS: &str = "4085559876";

/// The transaction cap counts the work in progress: calls whose gateway has not answered hold
/// two transactions each, and once they fill the table a new INVITE is refused with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_in_progress_fill_the_table() {
    let gw = Ua::new("gw").await;
    let (_dir, store, running) =
        start(gw.sip_addr(), "limits: {transactions: 16, calls: 100}\n").await;
    let to = running.addr(Proto::Udp).unwrap();
    let mut card = rating::store::NewAccount::new(
        MANY_CALLS,
        None,
        rating::Money::parse("10", false).unwrap(),
    );
    card.pinless = true;
    card.max_calls = 100;
    store.create_account(&card, Utc::now()).await.unwrap();
    let mut caller = Ua::new(MANY_CALLS).await;
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    for i in 0..8 {
        let invite = caller.invite(to, "55512015555233", &format!("live{i}"), &offer);
        caller.send(to, &invite).await;
        // The gateway hears it and says nothing: both transactions stay in progress.
        gw.expect_request("INVITE", S).await;
    }
    let invite = caller.invite(to, "55512015555233", "live8", &offer);
    caller.send(to, &invite).await;
    let r = caller.expect_response(503, S).await;
    assert_eq!(r.header("Retry-After"), Some("1"));
    let metrics = b2bua::metrics::get().render();
    assert!(
        metrics.contains("b2bua_limit_hits_total{limit=\"transactions\"}"),
        "{metrics}"
    );
    running.stop().await;
    store.close().await;
}

/// Dials the debit-card number from `caller`; returns the 200 and our RTP address.
async fn dial_ivr(
    caller: &mut Ua,
    b2b: SocketAddr,
    call_id: &str,
) -> (b2bua::sip::message::Response, SocketAddr) {
    caller.dial_ivr(b2b, "5551200", call_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_sprayed_at_a_callers_media_port_by_a_third_party_are_not_heard() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let before = b2bua::metrics::get().rtp_foreign.get();
    let (ok, a_leg) = dial_ivr(&mut caller, b2b, "spray1").await;
    // The attacker sprays a wrong card and an expensive destination, from another address
    // before the caller's first packet, and from the caller's own address (another port) after.
    let far = tokio::net::UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let spray = |sock: tokio::net::UdpSocket| async move {
        for i in 0..200u16 {
            for key in [9u8, 0, 0] {
                let mut p = vec![0x80, 101 | 0x80];
                p.extend_from_slice(&(i * 3 + key as u16).to_be_bytes());
                p.extend_from_slice(&(u32::from(i) * 800).to_be_bytes());
                p.extend_from_slice(&0xbad0u32.to_be_bytes());
                p.extend_from_slice(&[key, 0x80, 3, 32]);
                let _ = sock.send_to(&p, a_leg).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let near = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = tokio::spawn(spray(far));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The caller's own audio latches its leg; then its own digits.
    caller.send_rtp(a_leg, 0, 7, 3, &[0xff; 160]).await;
    let second = tokio::spawn(spray(near));
    caller.send_digits(a_leg, "0000701234", 101).await;
    caller.send_digits(a_leg, "5555233#", 101).await;
    let (inv, from) = gw.expect_request("INVITE", S).await;
    assert!(
        inv.uri.to_string().starts_with("sip:5555233@"),
        "{}",
        inv.uri
    );
    let _ = first.await;
    let _ = second.await;
    gw.send(from, &gw.response(&inv, 486, "gwbusy", None)).await;
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    assert!(
        b2bua::metrics::get().rtp_foreign.get() > before + 100,
        "the sprayed packets were dropped and counted"
    );
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_are_not_streamed_to_an_sdp_address_that_has_not_spoken() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let b2b = running.addr(Proto::Udp).unwrap();
    // A forged INVITE names a victim's address in its SDP.
    let victim = tokio::net::UdpSocket::bind("127.0.0.7:0").await.unwrap();
    let offer = caller
        .sdp("0", &["0 PCMU/8000"])
        .replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.7")
        .replace(
            &format!("m=audio {}", caller.rtp_addr().port()),
            &format!("m=audio {}", victim.local_addr().unwrap().port()),
        );
    let invite = caller.invite(b2b, "5551200", "victim1", &offer);
    caller.send(b2b, &invite).await;
    let ok = caller.expect_response(200, S).await;
    let mut buf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_millis(1500), victim.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the victim got RTP: {got:?}");
    // Once the leg's peer speaks from that address, it hears the flow.
    let mut s = b2bua::media::rtp::Sender::new(5, 1, 1);
    let pkt = s
        .prompt_frame(0, &[0xff; 160], std::time::Instant::now())
        .unwrap();
    let a_leg = sdp_addr(&ok.body);
    victim.send_to(&pkt, a_leg).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), victim.recv_from(&mut buf)).await;
    assert!(got.is_ok(), "prompts after latching");
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    running.stop().await;
    store.close().await;
}

/// Every datagram that arrives at `sock` within `span`.
async fn gather(sock: &tokio::net::UdpSocket, span: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65535];
    let end = tokio::time::Instant::now() + span;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(end, sock.recv_from(&mut buf)).await {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_response_to_a_stranger_is_sent_once_and_stray_2xx_are_only_answered_for_gateways()
{
    let gw = Ua::new("gw").await;
    // T1 of 100 ms: RFC 3261 would resend a final response at 0.1, 0.3, 0.7, 1.5 s …
    let (_dir, store, running) = start_t1(gw.sip_addr(), 100, "").await;
    let to = running.addr(Proto::Udp).unwrap();
    let invite = |sock: &tokio::net::UdpSocket, id: &str| {
        let me = sock.local_addr().unwrap();
        format!(
            "INVITE sip:999@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{id}\r\nFrom: <sip:a@{me}>;tag={id}\r\n\
To: <sip:999@127.0.0.1>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    stranger
        .send_to(invite(&stranger, "quiet1").as_bytes(), to)
        .await
        .unwrap();
    let got = gather(&stranger, Duration::from_millis(2500)).await;
    let finals: Vec<_> = got
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 404"))
        .collect();
    assert_eq!(finals.len(), 1, "{got:?}");
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    peer.send_to(invite(&peer, "loud1").as_bytes(), to)
        .await
        .unwrap();
    let got = gather(&peer, Duration::from_millis(2500)).await;
    assert!(
        got.iter().filter(|m| m.starts_with("SIP/2.0 404")).count() >= 4,
        "a trusted peer keeps RFC 3261's resends: {got:?}"
    );
    // A 2xx for no call of ours: a stranger's is ignored, a gateway's is ACKed and hung up.
    let ok = |sock: &tokio::net::UdpSocket, id: &str| {
        let me = sock.local_addr().unwrap();
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {to};branch=z9hG4bK{id}\r\nFrom: <sip:b2bua@{to}>;tag=x{id}\r\n\
To: <sip:5555233@{me}>;tag=y{id}\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@{me}>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    stranger
        .send_to(ok(&stranger, "stray1").as_bytes(), to)
        .await
        .unwrap();
    let got = gather(&stranger, Duration::from_millis(800)).await;
    assert!(got.is_empty(), "nothing back to a stranger: {got:?}");
    gw.sip
        .send_to(ok(&gw.sip, "stray2").as_bytes(), to)
        .await
        .unwrap();
    gw.expect_request("ACK", S).await;
    gw.expect_request("BYE", S).await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_behind_nat_latches_to_its_real_address_and_responses_find_it() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let b2b = running.addr(Proto::Udp).unwrap();
    // The phone puts its private address in Via and SDP, and asks for rport.
    let offer = caller
        .sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"])
        .replace("c=IN IP4 127.0.0.1", "c=IN IP4 10.1.2.3");
    let invite = caller
        .invite(b2b, "5551200", "nat1", &offer)
        .replace(
            &format!("Via: SIP/2.0/UDP {}", caller.sip_addr()),
            "Via: SIP/2.0/UDP 10.1.2.3:5060",
        )
        .replace(";branch=z9hG4bKnat1i", ";branch=z9hG4bKnat1i;rport");
    caller.send(b2b, &invite).await;
    let ok = caller.expect_response(200, S).await;
    let via = ok.header("Via").unwrap();
    assert!(
        via.ends_with(&format!(
            ";rport={};received=127.0.0.1",
            caller.sip_addr().port()
        )),
        "{via}"
    );
    let ack = caller.in_dialog("ACK", b2b, &ok, None);
    caller.send(b2b, &ack).await;
    // Its RTP comes from the NAT's public side, which is where its SIP came from: latched.
    let a_leg = sdp_addr(&ok.body);
    caller.send_rtp(a_leg, 0, 7, 3, &[0xff; 160]).await;
    let heard = caller.recv_rtp(Duration::from_millis(500)).await;
    assert!(
        heard.len() > 10,
        "prompts reach the real address: {}",
        heard.len()
    );
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_from_anyone_but_the_caller_does_not_stop_our_200() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start_t1(gw.sip_addr(), 100, "").await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let invite = caller.invite(b2b, "5551200", "ack1", &offer);
    caller.send(b2b, &invite).await;
    let ok = caller.expect_response(200, S).await;
    // The right ACK from the wrong address, and a wrong-tag ACK from the right one.
    let ack = caller.in_dialog("ACK", b2b, &ok, None);
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.send_to(ack.as_bytes(), b2b).await.unwrap();
    let wrong_tag = ack.replacen(";tag=uaack1", ";tag=forged", 1);
    caller.send(b2b, &wrong_tag).await;
    // So the 200 is still resent (T1 = 100 ms: at 0.1, 0.3, 0.7 s …).
    caller.expect_response(200, Duration::from_secs(2)).await;
    caller.expect_response(200, Duration::from_secs(2)).await;
    // The caller's own ACK stops it.
    caller.send(b2b, &ack).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while caller.recv(Duration::from_millis(10)).await.is_some() {}
    let more = caller.recv(Duration::from_millis(1500)).await;
    assert!(
        !more.is_some_and(|(m, _)| matches!(m, b2bua::sip::message::SipMessage::Response(_))),
        "no 200 after the real ACK"
    );
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_requests_and_headers_cross_from_the_caller_to_the_carrier() {
    let mut caller = Ua::new("4085551234").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    let invite = caller.invite(b2b, "55512015555233", "cross1", &offer);
    caller.send(b2b, &invite).await;
    let (inv, from) = gw.expect_request("INVITE", S).await;
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    gw.send(from, &gw.response(&inv, 200, "gwx", Some(&answer)))
        .await;
    gw.expect_request("ACK", S).await;
    let ok = caller.expect_response(200, S).await;
    let ack = caller.in_dialog("ACK", b2b, &ok, None);
    caller.send(b2b, &ack).await;
    // MESSAGE and REFER in the dialog are ours to refuse, not the carrier's to see.
    for method in ["MESSAGE", "REFER", "NOTIFY"] {
        let req = caller.in_dialog(method, b2b, &ok, Some(("text/plain", "hello")));
        caller.send(b2b, &req).await;
        let r = caller.expect_response(405, S).await;
        assert!(r.header("Allow").is_some_and(|a| a.contains("INVITE")));
    }
    // A re-INVITE that changes the session (a hold) crosses, but not the caller's Route,
    // identity or private headers. (One with the same SDP is a refresh, answered by us.)
    let hold = offer.replace("o=ua 1 1", "o=ua 1 2") + "a=sendonly\r\n";
    let reinvite = caller
        .in_dialog("INVITE", b2b, &ok, Some(("application/sdp", &hold)))
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nP-Asserted-Identity: <sip:18005550100@evil>\r\nX-Evil: 1\r\nRoute: <sip:10.0.0.66;lr>\r\nPrivacy: none\r\n",
        );
    caller.send(b2b, &reinvite).await;
    let (re, _) = gw.expect_request("INVITE", S).await;
    for h in ["P-Asserted-Identity", "X-Evil", "Route", "Privacy"] {
        assert!(re.header(h).is_none(), "{h} crossed: {re:?}");
    }
    let got = gw.recv(Duration::from_millis(300)).await;
    assert!(
        !got.as_ref().is_some_and(|(m, _)| matches!(m, b2bua::sip::message::SipMessage::Request(r) if r.method.to_string() != "INVITE")),
        "{got:?}"
    );
    running.stop().await;
    store.close().await;
}

/// The refused attempts the store recorded for a card.
async fn refusals(store: &Store, account: &str) -> Vec<u8> {
    store
        .call_records(&rating::store::RecordFilter {
            account: Some(account.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|r| r.return_code)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_card_is_no_card_on_this_number() {
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), "").await;
    let mut acme = rating::store::NewAccount::new(
        "300001",
        Some("1111"),
        rating::Money::parse("5", false).unwrap(),
    );
    acme.tenant = "acme".into();
    store.create_account(&acme, Utc::now()).await.unwrap();
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial_ivr(&mut caller, b2b, "tenant1").await;
    caller.send_digits(a_leg, "3000011111", 101).await;
    caller.send_digits(a_leg, "5555233#", 101).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        gw.recv(Duration::from_millis(200)).await.is_none(),
        "no call on another tenant's card"
    );
    assert_eq!(
        refusals(&store, "300001").await,
        vec![1],
        "no such card here"
    );
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_guessing_from_one_address_is_refused_before_the_store() {
    // 127.0.0.2 is not trusted: its failures count against its address.
    let mut caller = Ua::new_at("4085550000", "127.0.0.2").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) =
        start(gw.sip_addr(), "limits: {auth_failures_per_source: 2}\n").await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let (ok, a_leg) = dial_ivr(&mut caller, b2b, "guess1").await;
    // Three wrong PINs for the demo card: the store hears two; the third is refused by us.
    for _ in 0..3 {
        caller.send_digits(a_leg, "0000700000", 101).await;
        caller.recv_rtp_for(Duration::from_millis(2500)).await;
    }
    let codes = refusals(&store, "000070").await;
    assert_eq!(codes, vec![2, 2], "the store saw two guesses: {codes:?}");
    assert_eq!(store.pin_failures("000070").await.unwrap(), 2);
    let metrics = b2bua::metrics::get().render();
    assert!(
        metrics.contains("b2bua_limit_hits_total{limit=\"auth_failures_per_source\"}"),
        "{metrics}"
    );
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_bridges_without_authorizing_gives_no_free_call() {
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("debitcard.yaml"),
        "name: debitcard\ndescription: a broken upload that bridges without authorizing\nstart: destination\nstates:\n  destination:\n    collect:\n      into: destination\n      prompt: [enter_dest]\n      min: 1\n      max: 32\n      no_input: [enter_dest]\n      wrong_length: [enter_dest]\n      next: connect\n      fail: bye\n  connect:\n    bridge:\n      destination: destination\n      on: {failed: bye}\n  bye:\n    hangup: {cause: normal}\n",
    )
    .unwrap();
    let mut caller = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(
        gw.sip_addr(),
        &format!("flows: {}\n", flows.path().display()),
    )
    .await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let (_ok, a_leg) = dial_ivr(&mut caller, b2b, "free1").await;
    caller.send_digits(a_leg, "5555233#", 101).await;
    // The flow ends the call; the gateway never hears of it.
    let (bye, from) = caller.expect_request("BYE", S).await;
    caller
        .send(from, &caller.response(&bye, 200, "c", None))
        .await;
    assert!(gw.recv(Duration::from_millis(300)).await.is_none());
    running.stop().await;
    store.close().await;
}

/// The TLS listener meets a peer that speaks plain SIP to it (the handshake fails: closed,
/// counted), one that connects and never says anything (given up after
/// `limits.tls_handshake_ms`, counted), and then a real TLS client, which is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_port_drops_plain_text_and_silent_handshakes_and_serves_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::write(dir.path());
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let yaml = format!(
        "sip:\n  listen: [\"udp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n  tls: {{cert: \"{}\", key: \"{}\"}}\n\
trusted_peers: [127.0.0.1]\naccess_numbers:\n  - {{number: \"5551201\", pinless: true}}\n\
limits: {{tls_handshake_ms: 300}}\n",
        pki.cert.display(),
        pki.key.display()
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    let to = running.addr(Proto::Tls).unwrap();
    let count = |what: &str| -> u64 {
        let m = b2bua::metrics::get().render();
        m.lines()
            .find(|l| l.starts_with(what))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let failed = "b2bua_tls_handshake_failures_total{direction=\"inbound\"}";
    let timed_out = "b2bua_limit_hits_total{limit=\"tls_handshake\"}";
    let (failed0, timed_out0) = (count(failed), count(timed_out));

    let mut plain = tokio::net::TcpStream::connect(to).await.unwrap();
    plain
        .write_all(options("plain", "TCP 127.0.0.1:5999").as_bytes())
        .await
        .unwrap();
    let got = read_to_close(&mut plain, S).await.expect("closed");
    assert!(
        !got.contains("SIP/2.0"),
        "no SIP answer in clear text: {got}"
    );
    // rustls drops the socket inside the failed handshake, a moment before the server counts
    // it: the close can reach us first (a CI run read the metric in between).
    let deadline = std::time::Instant::now() + S;
    while count(failed) == failed0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(count(failed), failed0 + 1);

    let t0 = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(to).await.unwrap();
    assert!(read_to_close(&mut silent, S).await.is_some(), "closed");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "not before the limit"
    );
    assert_eq!(count(timed_out), timed_out0 + 1);

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read_to_string(&pki.ca).unwrap();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the handshake succeeds against the test CA");
    tls.write_all(options("tls", "TLS 127.0.0.1:5999").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(S, tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");
    assert!(
        answer.contains("Via: SIP/2.0/TLS 127.0.0.1:5999"),
        "{answer}"
    );
    running.stop().await;
    store.close().await;
}

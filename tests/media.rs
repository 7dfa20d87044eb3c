//! The call's audio through the B2BUA: RTP anchored on our sockets, relayed both ways with our
//! own SSRC and sequence numbers, transcoded between µ-law and A-law when the legs differ,
//! latched to where the caller's packets really come from, and a silent caller hung up.
//! The caller and the gateway are the test user agent in `tests/ua`.

mod ua;

use b2bua::config::Config;
use b2bua::media::{rtp, sdp};
use b2bua::routing::Proto;
use b2bua::sip::message::SipExt;
use chrono::Utc;
use prompts::g711;
use rating::store::{RecordFilter, Store, StoreConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use ua::{sdp_addr, Ua};

const S: Duration = Duration::from_secs(5);

async fn start(
    gw: SocketAddr,
    inactivity_s: u64,
    max_calls: usize,
) -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    let media = format!("inactivity_s: {inactivity_s}, max_calls: {max_calls}");
    start_with(gw, &media, "").await
}

/// The pinless demo on a SQLite file the test can also open: `media` adds to the media
/// section, `extra` is more YAML.
async fn start_with(
    gw: SocketAddr,
    media: &str,
    extra: &str,
) -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let media = if media.is_empty() {
        String::new()
    } else {
        format!(", {media}")
    };
    let yaml = format!(
        "sip:\n  listen: [\"udp:127.0.0.1:0\"]\ntrusted_peers: [127.0.0.1]\naccess_numbers:\n  - {{number: \"5551201\", pinless: true}}\n\
media: {{bind: 127.0.0.1, ports: 42000-42999{media}}}\n{extra}\n\
gateways:\n  - {{name: gw, address: \"{gw}\"}}\nroutes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n"
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    (dir, store, running)
}

/// Places a call from `caller` (offering `offer`) answered by `gw` (answering `answer`);
/// returns the caller's 200 and the B2BUA's RTP addresses on both legs.
async fn connect(
    caller: &mut Ua,
    gw: &Ua,
    b2b: SocketAddr,
    call_id: &str,
    offer: &str,
    answer: &str,
) -> (b2bua::sip::message::Response, SocketAddr, SocketAddr) {
    let invite = caller.invite(b2b, "55512015555233", call_id, offer);
    caller.send(b2b, &invite).await;
    let (inv, from) = gw.expect_request("INVITE", S).await;
    let b_leg = sdp_addr(&inv.body);
    gw.send(from, &gw.response(&inv, 200, "gw1", Some(answer)))
        .await;
    gw.expect_request("ACK", S).await;
    let ok = caller.expect_response(200, S).await;
    let a_leg = sdp_addr(&ok.body);
    let ack = caller.in_dialog("ACK", b2b, &ok, None);
    caller.send(b2b, &ack).await;
    (ok, a_leg, b_leg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_is_anchored_relayed_both_ways_transcoded_and_latched() {
    let mut caller = Ua::new("4085551234").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), 60, 100).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("8 101", &["8 PCMA/8000", "101 telephone-event/8000"]);
    let answer = gw.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
    let (ok, a_leg, b_leg) = connect(&mut caller, &gw, b2b, "media1", &offer, &answer).await;
    assert_ne!(a_leg, b_leg);
    assert_ne!(
        a_leg,
        gw.rtp_addr(),
        "the caller sends to us, not to the gateway"
    );
    let ours = sdp::parse(&ok.body).unwrap();
    assert_eq!(
        ours.codecs,
        vec![(8, sdp::Codec::Pcma)],
        "the caller keeps its codec"
    );
    assert_eq!(ours.telephone_event, Some(101));

    // Caller → gateway: A-law in, µ-law out, our SSRC, contiguous sequence numbers.
    let alaw: Vec<u8> = (0..160)
        .map(|i| g711::linear_to_alaw((i as i16 - 80) * 200))
        .collect();
    let want: Vec<u8> = alaw
        .iter()
        .map(|b| g711::linear_to_ulaw(g711::alaw_to_linear(*b)))
        .collect();
    let (_, got) = tokio::join!(
        caller.send_rtp(a_leg, 8, 0x1111, 25, &alaw),
        gw.recv_rtp(Duration::from_millis(400))
    );
    assert!(got.len() >= 24, "{} packets relayed", got.len());
    let mut seqs = Vec::new();
    for (bytes, from) in &got {
        assert_eq!(*from, b_leg, "sent from our gateway-side socket");
        let p = rtp::read(bytes).unwrap();
        assert_eq!(p.pt, 0);
        assert_ne!(p.ssrc, 0x1111, "our own SSRC");
        assert_eq!(p.payload, &want[..], "transcoded A-law → µ-law");
        seqs.push(p.seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );

    // Gateway → caller. The caller's leg latched to where its packets came from; another
    // address sending with the caller's SSRC (a hijack, or a NAT rebinding mid-call) is not
    // followed: the gateway's audio keeps going to the latched address. (A caller behind NAT
    // latches to its real address from its first packet: tests/hostile.rs.)
    let nat = Ua::new("nat").await;
    let ulaw = vec![g711::linear_to_ulaw(1000); 160];
    nat.send_rtp(a_leg, 8, 0x1111, 2, &alaw).await;
    let (_, back, stolen) = tokio::join!(
        gw.send_rtp(b_leg, 0, 0x2222, 10, &ulaw),
        caller.recv_rtp(Duration::from_millis(400)),
        nat.recv_rtp(Duration::from_millis(400))
    );
    assert!(
        back.len() >= 9,
        "{} packets reached the caller's latched address",
        back.len()
    );
    assert!(stolen.is_empty(), "{} packets went astray", stolen.len());
    let p = rtp::read(&back[0].0).unwrap();
    assert_eq!((p.pt, back[0].1), (8, a_leg));
    assert_eq!(
        p.payload[0],
        g711::linear_to_alaw(g711::ulaw_to_linear(ulaw[0]))
    );

    // The caller hangs up: the gateway gets BYE, the call is billed.
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    caller.expect_response(200, S).await;
    let (gw_bye, from) = gw.expect_request("BYE", S).await;
    gw.send(from, &gw.response(&gw_bye, 200, "gw1", None)).await;
    running.stop().await;
    let recs = store
        .call_records(&RecordFilter {
            account: Some("4085551234".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs[0].disconnect_cause, "caller hung up");
    assert_eq!(
        recs[0].voice_quality,
        Some(0),
        "no loss, no jitter to speak of"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_silent_is_hung_up() {
    let mut caller = Ua::new("4085551234").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), 1, 100).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    let (_ok, a_leg, _) = connect(&mut caller, &gw, b2b, "silent1", &offer, &answer).await;
    caller.send_rtp(a_leg, 0, 7, 5, &[0xff; 160]).await;
    // Then nothing: within the inactivity time (1 s) both legs get BYE.
    let (bye_a, from) = caller.expect_request("BYE", S).await;
    caller
        .send(from, &caller.response(&bye_a, 200, "x", None))
        .await;
    let (bye_b, from) = gw.expect_request("BYE", S).await;
    gw.send(from, &gw.response(&bye_b, 200, "gw1", None)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recs = store
        .call_records(&RecordFilter {
            account: Some("4085551234".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs[0].disconnect_cause, "RTP inactivity");
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_we_cannot_answer_get_488() {
    let mut caller = Ua::new("4085551234").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), 60, 100).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let g729 = caller.sdp("18", &["18 G729/8000"]);
    let invite = caller.invite(b2b, "55512015555233", "g729", &g729);
    caller.send(b2b, &invite).await;
    let r = caller.expect_response(488, S).await;
    assert!(r.header("Warning").unwrap().contains("no codec in common"));
    let invite = caller
        .invite(b2b, "55512015555233", "nosdp", "")
        .replace("Content-Type: application/sdp\r\n", "");
    caller.send(b2b, &invite).await;
    let r = caller.expect_response(488, S).await;
    assert!(r
        .header("Warning")
        .unwrap()
        .contains("SDP offer is required"));
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_media_limit_are_refused_with_503() {
    let mut caller = Ua::new("4085551234").await;
    let mut other = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), 60, 1).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    let (ok, _, _) = connect(&mut caller, &gw, b2b, "first", &offer, &answer).await;
    let invite = other.invite(
        b2b,
        "55512015555233",
        "second",
        &other.sdp("0", &["0 PCMU/8000"]),
    );
    other.send(b2b, &invite).await;
    let r = other.expect_response(503, S).await;
    assert!(r
        .header("Warning")
        .unwrap()
        .contains("media at its call limit"));
    // Full, not broken: come back shortly (or try another node now).
    assert_eq!(r.header("Retry-After"), Some("5"));
    // The first call is untouched and ends normally.
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    caller.expect_response(200, S).await;
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_play_as_paced_rtp_then_say_done() {
    use b2bua::media::engine::{Media, MediaConfig, MediaEvent, A};
    let (media, mut events) = Media::start(MediaConfig {
        ports: (43000, 43100),
        ..MediaConfig::default()
    });
    let caller = Ua::new("c").await;
    let s = media.session(7).unwrap();
    s.set_remote(A, caller.rtp_addr(), (8, sdp::Codec::Pcma), None, None);
    // Prompts go to an SDP address only when it is where the leg's SIP came from (or once
    // the leg has latched), so the media layer is told.
    s.set_signalling(A, caller.rtp_addr().ip());
    let (set, _) = prompts::set::PromptSet::load(prompts::set::default_dir()).unwrap();
    let names = prompts::say::say_money(prompts::say::Lang::En, 32, 91);
    let seq = set.sequence("en", &names);
    let samples: usize = seq.iter().map(|p| p.alaw.len()).sum();
    let frames: usize = seq.iter().map(|p| p.alaw.len().div_ceil(160)).sum();
    let t0 = std::time::Instant::now();
    s.play(A, seq);
    let got = caller.recv_rtp(Duration::from_millis(300)).await;
    let took = t0.elapsed();
    assert_eq!(got.len(), frames, "{samples} samples in 20 ms frames");
    assert!(
        took >= Duration::from_millis(frames as u64 * 20 - 40),
        "paced, not bursted: {took:?} for {frames} frames"
    );
    let first = rtp::read(&got[0].0).unwrap();
    assert!(first.marker && first.pt == 8);
    assert_eq!(got[0].1, s.local(A), "sent from the leg's own socket");
    for w in got.windows(2) {
        let (a, b) = (rtp::read(&w[0].0).unwrap(), rtp::read(&w[1].0).unwrap());
        assert_eq!(b.seq, a.seq.wrapping_add(1));
        assert_eq!(b.ts, a.ts.wrapping_add(160));
        assert_eq!(a.ssrc, b.ssrc);
        assert!(!b.marker);
    }
    assert_eq!(events.recv().await, Some((7, MediaEvent::PromptDone)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_digits_and_long_pound_arrive_as_events() {
    use b2bua::media::engine::{Media, MediaConfig, MediaEvent, A};
    let (media, mut events) = Media::start(MediaConfig {
        ports: (43200, 43300),
        ..MediaConfig::default()
    });
    let caller = Ua::new("c").await;
    let s = media.session(9).unwrap();
    s.set_remote(A, caller.rtp_addr(), (0, sdp::Codec::Pcmu), Some(101), None);
    let to = s.local(A);
    let mut tx = rtp::Sender::new(5, 0, 0);
    // "5" as a short telephone-event, then "#" held for 2.3 s, start retransmitted, end sent three times.
    let ev = |code: u8, end: bool, dur: u16| {
        [
            code,
            if end { 0x80 } else { 0 },
            (dur >> 8) as u8,
            dur as u8,
        ]
    };
    let t0 = std::time::Instant::now();
    for (i, end) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
        let p = tx
            .relay(101, i == 0, 8000, 8000, &ev(5, end, 160 * (i + 1)), t0)
            .unwrap();
        caller.rtp.send_to(&p, to).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..48u16 {
        let p = tx
            .relay(101, i == 0, 16000, 8000, &ev(11, false, 400 * (i + 1)), t0)
            .unwrap();
        caller.rtp.send_to(&p, to).await.unwrap();
        if i == 0 {
            caller.rtp.send_to(&p, to).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let p = tx
            .relay(101, false, 16000, 8000, &ev(11, true, 19200), t0)
            .unwrap();
        caller.rtp.send_to(&p, to).await.unwrap();
    }
    let mut got = Vec::new();
    while let Ok(Some((_, e))) =
        tokio::time::timeout(Duration::from_millis(300), events.recv()).await
    {
        got.push(e);
    }
    assert_eq!(
        got,
        vec![
            MediaEvent::Digit('5'),
            MediaEvent::Digit('#'),
            MediaEvent::LongPound
        ]
    );
    // And by SIP INFO.
    // And by SIP INFO, through the same merger, as an event like the others.
    assert!(b2bua::media::engine::info_digits(
        &s,
        "Signal=7\r\nDuration=120\r\n"
    ));
    assert!(!b2bua::media::engine::info_digits(&s, "Signal=\r\n"));
    let info = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
    assert_eq!(info.unwrap(), Some((9, MediaEvent::Digit('7'))));
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g711_caller_and_an_opus_gateway_are_transcoded() {
    use b2bua::media::codec::LegCodec;
    let mut caller = Ua::new("4085551234").await;
    let gw = Ua::new("gw").await;
    let (_dir, store, running) = start(gw.sip_addr(), 60, 100).await;
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    let answer = gw.sdp("111", &["111 opus/48000/2"]);
    let (ok, a_leg, b_leg) = connect(&mut caller, &gw, b2b, "opus1", &offer, &answer).await;
    assert_eq!(
        sdp::parse(&ok.body).unwrap().codecs,
        vec![(0, sdp::Codec::Pcmu)]
    );
    let tone: Vec<i16> = (0..160)
        .map(|i| ((i as f64 * 0.35).sin() * 8000.0) as i16)
        .collect();
    let ulaw: Vec<u8> = tone.iter().map(|s| g711::linear_to_ulaw(*s)).collect();
    let (_, got) = tokio::join!(
        caller.send_rtp(a_leg, 0, 1, 20, &ulaw),
        gw.recv_rtp(Duration::from_millis(400))
    );
    assert!(got.len() >= 19, "{}", got.len());
    let mut dec = LegCodec::new(sdp::Codec::Opus);
    // Two consecutive relayed packets: the first of the stream, or of a new feed when the
    // relay restarted it (a marker; the timestamp then follows the time that passed), is not
    // the spacing the clock rate sets.
    let packets: Vec<_> = got.iter().map(|g| rtp::read(&g.0).unwrap()).collect();
    let i = (1..packets.len())
        .find(|&i| !packets[i].marker && packets[i].seq == packets[i - 1].seq.wrapping_add(1))
        .expect("two consecutive packets of one feed");
    let (p0, p1) = (&packets[i - 1], &packets[i]);
    assert_eq!(p0.pt, 111);
    assert_eq!(
        p1.ts.wrapping_sub(p0.ts),
        960,
        "Opus runs on a 48 kHz RTP clock"
    );
    assert_eq!(dec.decode(p1.payload).len(), 160);
    // And back: Opus from the gateway reaches the caller as µ-law.
    let mut enc = LegCodec::new(sdp::Codec::Opus);
    let packet = enc.encode(&tone);
    let (_, back) = tokio::join!(
        gw.send_rtp(b_leg, 111, 2, 10, &packet),
        caller.recv_rtp(Duration::from_millis(400))
    );
    assert!(back.len() >= 9);
    let p = rtp::read(&back[0].0).unwrap();
    assert_eq!((p.pt, p.payload.len()), (0, 160));
    running.stop().await;
    store.close().await;
}

/// A slow database is shed at the door: with another writer holding the SQLite file, the
/// first call's authorization waits in the store, and the next INVITE (beyond
/// `limits.store_queue`) gets 503 with Retry-After at once instead of queueing into a pool
/// timeout that would refuse it with code 8 as if the database were gone. When the database
/// is free the first call goes through as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_store_queue_are_refused_with_503_while_the_database_is_slow() {
    use sqlx::Connection;
    let mut caller = Ua::new("4085551234").await;
    let mut other = Ua::new("4085550000").await;
    let gw = Ua::new("gw").await;
    let (dir, store, running) = start_with(gw.sip_addr(), "", "limits: {store_queue: 1}").await;
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let b2b = running.addr(Proto::Udp).unwrap();
    let mut writer = sqlx::SqliteConnection::connect(&format!("{url}?mode=rw"))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut writer)
        .await
        .unwrap();
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    let invite = caller.invite(b2b, "55512015555233", "slow1", &offer);
    caller.send(b2b, &invite).await;
    caller.expect_response(100, S).await;
    // Its hold is waiting on the database now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let invite = other.invite(
        b2b,
        "55512015555233",
        "slow2",
        &other.sdp("0", &["0 PCMU/8000"]),
    );
    other.send(b2b, &invite).await;
    let r = other.expect_response(503, S).await;
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(r.header("Warning").is_none(), "no refusal code: {r:?}");
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    let (inv, from) = gw.expect_request("INVITE", S).await;
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    gw.send(from, &gw.response(&inv, 200, "gw1", Some(&answer)))
        .await;
    let ok = caller.expect_response(200, S).await;
    let ack = caller.in_dialog("ACK", b2b, &ok, None);
    caller.send(b2b, &ack).await;
    let bye = caller.in_dialog("BYE", b2b, &ok, None);
    caller.send(b2b, &bye).await;
    caller.expect_response(200, S).await;
    running.stop().await;
    let recs = store.call_records(&RecordFilter::default()).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert!(store.ledger_check().await.unwrap().problems.is_empty());
    store.close().await;
}

/// A stop finishes the money of the calls it ends, however slow the database is then: the
/// settlement of a call hung up by the stop waits four seconds for another writer (longer
/// than the calls' own three-second deadline), and the stop waits with it, so no card is
/// left holding a hold for the sweeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_the_settlements_a_slow_database_takes() {
    use sqlx::Connection;
    let mut caller = Ua::new("4085551234").await;
    let gw = Ua::new("gw").await;
    let (dir, store, running) = start_with(gw.sip_addr(), "", "").await;
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let b2b = running.addr(Proto::Udp).unwrap();
    let offer = caller.sdp("0", &["0 PCMU/8000"]);
    let answer = gw.sdp("0", &["0 PCMU/8000"]);
    connect(&mut caller, &gw, b2b, "stop1", &offer, &answer).await;
    let held = store.account(rating::demo::PINLESS).await.unwrap();
    assert_eq!(held.active_calls, 1);
    let mut writer = sqlx::SqliteConnection::connect(&format!("{url}?mode=rw"))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut writer)
        .await
        .unwrap();
    let stopping = tokio::spawn(running.stop());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!stopping.is_finished(), "the stop waits for the settlement");
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the stop ends once the settlement is in")
        .unwrap();
    let card = store.account(rating::demo::PINLESS).await.unwrap();
    assert_eq!(card.active_calls, 0);
    assert_eq!(card.reserved, rating::Money::ZERO);
    let recs = store.call_records(&RecordFilter::default()).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert!(store.ledger_check().await.unwrap().problems.is_empty());
    store.close().await;
}

//! Full IVR calls under load: each caller dials the debit-card access number, keys card and
//! PIN (RFC 4733) over the welcome prompt, keys the destination over the balance prompt, is
//! bridged to the gateway, talks until its credit runs out, and is cut off. This measures new
//! IVR calls per second, calls in IVR or bridged at once, and the cutoff latency: the time from
//! the moment the credit ends (the gateway's 200 OK plus the granted seconds) to the gateway
//! receiving BYE. Measured that way the latency includes the 200 OK's trip into the B2BUA, so
//! it is an upper bound.
//!
//! `cargo bench -p b2bua --bench ivr_load`. Knobs: `B2BUA_BENCH_RATE` (new calls per second,
//! default 200), `B2BUA_BENCH_SECONDS` (how long new calls keep coming, default 30),
//! `B2BUA_BENCH_BALANCE` (each card's money, default 0.02 = 12 s of talk), `B2BUA_BENCH_DB`
//! (default a temporary SQLite file). Callers and the gateway run in this process, sharing the
//! machine with the B2BUA; the gateway sends no audio, so a bridged call costs the relay
//! nothing (the relay is measured on its own by the `media` bench).

use b2bua::config::Config;
use b2bua::routing::Proto;
use b2bua::sip::message::{self, SipExt, SipMessage};
use chrono::Utc;
use rating::store::{NewAccount, RecordFilter, Store, StoreConfig};
use rating::Money;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One shared SIP socket for every caller, its answers handed out by Call-ID (a socket per
/// caller would spend the file descriptors the B2BUA's media ports need).
struct Callers {
    sip: Arc<UdpSocket>,
    rtp: Arc<UdpSocket>,
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<SipMessage>>>,
}

impl Callers {
    async fn start() -> Arc<Callers> {
        let c = Arc::new(Callers {
            sip: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            rtp: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            routes: Mutex::new(HashMap::new()),
        });
        let me = c.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, _)) = me.sip.recv_from(&mut buf).await {
                let Ok(m) = message::parse_datagram(&buf[..n]) else {
                    continue;
                };
                let id = match &m {
                    SipMessage::Request(r) => r.call_id().to_string(),
                    SipMessage::Response(r) => r.call_id().to_string(),
                };
                let tx = me.routes.lock().unwrap().get(&id).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(m);
                }
            }
        });
        c
    }
}

#[derive(Default)]
struct Tally {
    started: AtomicU64,
    answered: AtomicU64,
    cut_off: AtomicU64,
    failed: AtomicU64,
    active: AtomicU64,
    peak: AtomicU64,
}

/// RFC 4733 events for `keys`, 100 ms per key, as a phone sends them.
async fn send_keys(rtp: &UdpSocket, to: SocketAddr, keys: &str, ts0: u32) {
    let mut seq: u16 = (ts0 / 1000) as u16;
    for (k, d) in keys.chars().enumerate() {
        let code = match d {
            '#' => 11,
            '*' => 10,
            c => c.to_digit(10).unwrap() as u8,
        };
        let ts = ts0.wrapping_add(k as u32 * 8000);
        for (n, (end, dur)) in [(false, 160u16), (false, 480), (true, 800), (true, 800)]
            .into_iter()
            .enumerate()
        {
            seq = seq.wrapping_add(1);
            let mut p = vec![0x80, 101 | if n == 0 { 0x80 } else { 0 }];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&0x5eed_0000u32.to_be_bytes());
            p.extend_from_slice(&[code, if end { 0x80 } else { 0 }]);
            p.extend_from_slice(&dur.to_be_bytes());
            let _ = rtp.send_to(&p, to).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One caller's whole call; true when it ended with our BYE after the bridge.
async fn call(c: Arc<Callers>, b2b: SocketAddr, n: u64, card: String, tally: Arc<Tally>) -> bool {
    let call_id = format!("ivr-load-{n}");
    let (tx, mut rx) = mpsc::unbounded_channel();
    c.routes.lock().unwrap().insert(call_id.clone(), tx);
    let me = c.sip.local_addr().unwrap();
    let rtp = c.rtp.local_addr().unwrap();
    let sdp = format!(
        "v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        rtp.port()
    );
    let invite = format!(
        "INVITE sip:5551200@{b2b} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\n\
From: <sip:1408{n:07}@{me}>;tag=c{n}\r\nTo: <sip:5551200@{b2b}>\r\nCall-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let _ = c.sip.send_to(invite.as_bytes(), b2b).await;
    let give_up = Instant::now() + Duration::from_secs(10);
    let ok = loop {
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(SipMessage::Response(r))) if r.status_code.code() >= 200 => break Some(r),
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(_) if Instant::now() > give_up => break None,
            Err(_) => {
                let _ = c.sip.send_to(invite.as_bytes(), b2b).await;
            }
        }
    };
    let Some(ok) = ok.filter(|r| r.status_code.code() == 200) else {
        c.routes.lock().unwrap().remove(&call_id);
        return false;
    };
    let ack = format!(
        "ACK sip:b2bua@{b2b} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}a\r\n\
From: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ok.header("From").unwrap_or_default(),
        ok.header("To").unwrap_or_default()
    );
    let _ = c.sip.send_to(ack.as_bytes(), b2b).await;
    tally.answered.fetch_add(1, Ordering::Relaxed);
    let now = tally.active.fetch_add(1, Ordering::Relaxed) + 1;
    tally.peak.fetch_max(now, Ordering::Relaxed);
    let a_leg = b2bua::media::sdp::parse(&ok.body).map(|s| s.rtp);
    let mut done = false;
    if let Ok(a_leg) = a_leg {
        send_keys(&c.rtp, a_leg, &format!("{card}1111"), (n as u32) << 12).await;
        send_keys(&c.rtp, a_leg, "5555233#", ((n as u32) << 12) + 0x800).await;
        // Now wait for the cutoff's BYE (the balance prompt, the bridge, the talk time and the
        // "disconnected" prompt).
        let bye = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(m) = rx.recv().await {
                if let SipMessage::Request(r) = m {
                    if r.method.to_string() == "BYE" {
                        return Some(r);
                    }
                }
            }
            None
        })
        .await;
        if let Ok(Some(bye)) = bye {
            let resp = message::response_to(&bye, 200, None);
            let _ = c.sip.send_to(&message::response_bytes(&resp), b2b).await;
            done = true;
        }
    }
    tally.active.fetch_sub(1, Ordering::Relaxed);
    c.routes.lock().unwrap().remove(&call_id);
    done
}

/// The gateway: answers every INVITE at once and notes when; notes when each BYE arrives.
struct Gateway {
    sock: Arc<UdpSocket>,
    answered: Mutex<HashMap<String, Instant>>,
    byes: Mutex<Vec<(String, Instant)>>,
}

impl Gateway {
    async fn start() -> Arc<Gateway> {
        let g = Arc::new(Gateway {
            sock: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            answered: Mutex::new(HashMap::new()),
            byes: Mutex::new(Vec::new()),
        });
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rtp_port = rtp.local_addr().unwrap().port();
        let me = g.clone();
        tokio::spawn(async move {
            let _keep = rtp;
            let addr = me.sock.local_addr().unwrap();
            let sdp = format!(
                "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            );
            let mut buf = vec![0u8; 65535];
            while let Ok((n, from)) = me.sock.recv_from(&mut buf).await {
                let Ok(SipMessage::Request(r)) = message::parse_datagram(&buf[..n]) else {
                    continue;
                };
                let method = r.method.to_string();
                let reply = match method.as_str() {
                    "INVITE" => {
                        let mut resp = message::response_to(&r, 200, Some("gw"));
                        resp.headers
                            .push(message::hdr("Contact", format!("<sip:gw@{addr}>")));
                        resp.headers
                            .push(message::hdr("Content-Type", "application/sdp"));
                        resp.body = sdp.as_bytes().to_vec();
                        me.answered
                            .lock()
                            .unwrap()
                            .entry(r.call_id().to_string())
                            .or_insert_with(Instant::now);
                        Some(resp)
                    }
                    "BYE" => {
                        me.byes
                            .lock()
                            .unwrap()
                            .push((r.call_id().to_string(), Instant::now()));
                        Some(message::response_to(&r, 200, None))
                    }
                    "ACK" => None,
                    _ => Some(message::response_to(&r, 200, None)),
                };
                if let Some(resp) = reply {
                    let _ = me.sock.send_to(&message::response_bytes(&resp), from).await;
                }
            }
        });
        g
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rate: u64 = env("B2BUA_BENCH_RATE", 200);
    let seconds: u64 = env("B2BUA_BENCH_SECONDS", 30);
    let balance: String = env("B2BUA_BENCH_BALANCE", "0.02".to_string());
    let total = rate * seconds;
    // Card numbers are the debit-card flow's six digits: two for the run, four for the call.
    assert!(total <= 10_000, "at most 10,000 calls per run");
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("B2BUA_BENCH_DB")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = Arc::new(
        Store::open(
            &db,
            StoreConfig {
                max_connections: 16,
                ..StoreConfig::default()
            },
        )
        .await
        .expect("store opens"),
    );
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    // Fresh cards for every run (a rerun on the same database gets new numbers).
    let run = Utc::now().timestamp() % 90 + 10;
    let cards: Vec<String> = (0..total).map(|i| format!("{run}{i:04}")).collect();
    let news: Vec<NewAccount> = cards
        .iter()
        .map(|c| NewAccount::new(c, Some("1111"), Money::parse(&balance, false).unwrap()))
        .collect();
    store.create_accounts(&news, Utc::now()).await.unwrap();

    let gw = Gateway::start().await;
    let yaml = format!(
        "flows: {}\nprompts: {}\nsip:\n  listen: [\"udp:127.0.0.1:0\"]\ntrusted_peers: [127.0.0.1]\n\
access_numbers:\n  - {{number: \"5551200\", flow: debitcard}}\n\
media: {{bind: 127.0.0.1, ports: 20000-59999, max_calls: 20000, inactivity_s: 600}}\n\
gateways:\n  - {{name: gw, address: \"{}\", channels: 100000}}\n\
routes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n",
        ivr::shipped_dir().display(),
        prompts::set::default_dir().display(),
        gw.sock.local_addr().unwrap()
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "bench.yaml").unwrap(), store.clone())
        .await
        .expect("the B2BUA starts");
    let b2b = running.addr(Proto::Udp).unwrap();
    let callers = Callers::start().await;
    let tally = Arc::new(Tally::default());
    println!(
        "ivr_load: {rate} new IVR calls/s for {seconds} s ({total} calls), cards of {balance}"
    );
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let watcher = {
        let t = tally.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                println!(
                    "  t={:>3}s started {} answered {} in call {} (peak {})",
                    t0.elapsed().as_secs(),
                    t.started.load(Ordering::Relaxed),
                    t.answered.load(Ordering::Relaxed),
                    t.active.load(Ordering::Relaxed),
                    t.peak.load(Ordering::Relaxed)
                );
            }
        })
    };
    for (n, card) in cards.iter().enumerate() {
        tick.tick().await;
        tally.started.fetch_add(1, Ordering::Relaxed);
        let (c, t, card) = (callers.clone(), tally.clone(), card.clone());
        tasks.push(tokio::spawn(async move {
            let ok = call(c, b2b, n as u64, card, t.clone()).await;
            if ok {
                t.cut_off.fetch_add(1, Ordering::Relaxed);
            } else {
                t.failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let offered = t0.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    watcher.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Cutoff latency: BYE at the gateway minus (its 200 OK + the seconds the call was granted).
    let recs = store
        .call_records(&RecordFilter {
            limit: Some(1_000_000),
            ..Default::default()
        })
        .await
        .unwrap();
    // Every card has the same money and calls the same number: one grant for all.
    let talk = recs
        .iter()
        .filter(|r| r.disconnect_cause == "credit_exhausted")
        .map(|r| r.billed_seconds)
        .max()
        .unwrap_or(0);
    let answered = gw.answered.lock().unwrap().clone();
    let mut lat: Vec<f64> = gw
        .byes
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(id, at)| {
            let a = answered.get(id)?;
            let due = *a + Duration::from_secs(talk as u64);
            Some(at.saturating_duration_since(due).as_secs_f64() * 1000.0)
        })
        .collect();
    let cut = recs
        .iter()
        .filter(|r| r.disconnect_cause == "credit_exhausted")
        .count();
    let check = store.ledger_check().await.unwrap();
    println!(
        "  offered {:.0} calls/s; {} calls cut off by credit after {talk} s, {} failed; peak {} calls in IVR or bridged",
        total as f64 / offered.as_secs_f64(),
        tally.cut_off.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.peak.load(Ordering::Relaxed)
    );
    println!(
        "  cutoff latency (ms, {} calls, {cut} records): p50 {:.1}  p99 {:.1}  max {:.1}",
        lat.len(),
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        percentile(&mut lat, 1.0)
    );
    println!(
        "  ledger check: {}",
        if check.problems.is_empty() {
            "balanced".to_string()
        } else {
            format!("{:?}", check.problems)
        }
    );
    running.stop().await;
    store.close().await;
}

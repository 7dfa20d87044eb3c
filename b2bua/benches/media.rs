//! Media benchmarks: prompt-playback streams from the one pacing task, and relayed RTP.
//!
//! `cargo bench -p b2bua --bench media` runs both; `-- playback` or `-- relay` runs one.
//! Playback: N calls each playing a long prompt to a sink, started spread over one 20 ms period
//! as calls arriving at random moments would be; reports how late frames left (p50 and p99 of
//! send time minus due time) and how many arrived. Relay: N bridged calls with
//! G.711 at 50 packets a second in each direction from generator tasks in the same process;
//! reports packets relayed per second and loss. Step sizes come from `B2BUA_BENCH_STREAMS`
//! and `B2BUA_BENCH_CALLS`; each step runs `B2BUA_BENCH_SECONDS` (default 5).

use b2bua::media::engine::{Media, MediaConfig, A, B};
use b2bua::media::rtp::Sender;
use b2bua::media::sdp::Codec;
use prompts::set::Prompt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

fn config(max: usize) -> MediaConfig {
    MediaConfig {
        ports: (20000, 60000),
        max_calls: max,
        ..MediaConfig::default()
    }
}

fn steps(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// A socket that counts what it receives.
async fn sink() -> (SocketAddr, Arc<AtomicU64>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let _ = socket2_buffers(&s);
    let addr = s.local_addr().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while s.recv_from(&mut buf).await.is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    (addr, n)
}

fn socket2_buffers(_s: &UdpSocket) -> std::io::Result<()> {
    Ok(())
}

async fn playback(n: usize, secs: u64) {
    let (media, _events) = Media::start(config(n + 10));
    let mut sinks = Vec::new();
    for _ in 0..8 {
        sinks.push(sink().await);
    }
    let prompt = Arc::new(Prompt {
        name: "long".into(),
        ulaw: vec![0x55; 8000 * 60],
        alaw: vec![0x55; 8000 * 60],
    });
    let mut sessions = Vec::new();
    for i in 0..n {
        let s = media.session(i as u64).expect("session");
        s.set_remote(A, sinks[i % sinks.len()].0, (0, Codec::Pcmu), None, None);
        // As a call's SIP and RTP from one host: prompts may go to its SDP address at once.
        s.set_signalling(A, sinks[i % sinks.len()].0.ip());
        sessions.push(s);
    }
    // Calls start at random moments, so their frames fall at random phases of the 20 ms
    // period: start the streams spread over one period, not all at the same instant.
    let per_ms = n.div_ceil(20);
    for chunk in sessions.chunks(per_ms) {
        for s in chunk {
            s.play(A, vec![prompt.clone()]);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let received: u64 = sinks.iter().map(|(_, c)| c.load(Ordering::Relaxed)).sum();
    let expected = n as u64 * secs * 50;
    println!(
        "{:>6} {:>12.1} {:>12.1} {:>10} {:>9.2}%",
        n,
        media.pacing_lateness(0.5).as_secs_f64() * 1000.0,
        media.pacing_lateness(0.99).as_secs_f64() * 1000.0,
        received,
        received as f64 * 100.0 / expected as f64
    );
    drop(sessions);
}

async fn relay(n: usize, secs: u64) {
    let (media, _events) = Media::start(config(n + 10));
    let generators = 4;
    let mut legs: Vec<Vec<(SocketAddr, SocketAddr)>> = vec![Vec::new(); generators];
    let mut sessions = Vec::new();
    for i in 0..n {
        let s = media.session(i as u64).expect("session");
        // Addresses are latched from the generators' packets.
        s.set_remote(
            A,
            "127.0.0.1:9".parse().unwrap(),
            (0, Codec::Pcmu),
            None,
            None,
        );
        s.set_remote(
            B,
            "127.0.0.1:9".parse().unwrap(),
            (0, Codec::Pcmu),
            None,
            None,
        );
        s.bridge(true);
        legs[i % generators].push((s.local(A), s.local(B)));
        sessions.push(s);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for targets in legs {
        let sock_a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let sock_b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        for s in [sock_a.clone(), sock_b.clone()] {
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while s.recv_from(&mut buf).await.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let (sent, stop) = (sent.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut senders: Vec<(Sender, Sender)> = (0..targets.len())
                .map(|i| (Sender::new(i as u32, 0, 0), Sender::new(!(i as u32), 0, 0)))
                .collect();
            let payload = [0xffu8; 160];
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = Instant::now();
                for (i, (a, b)) in targets.iter().enumerate() {
                    let (sa, sb) = &mut senders[i];
                    let _ = sock_a.try_send_to(&sa.prompt_frame(0, &payload, now).unwrap(), *a);
                    let _ = sock_b.try_send_to(&sb.prompt_frame(0, &payload, now).unwrap(), *b);
                    sent.fetch_add(2, Ordering::Relaxed);
                }
            }
        }));
    }
    // Let latching settle, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s0, r0, t0) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let el = t0.elapsed();
    // Packets in flight when the generators stop still count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s1, r1) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let (s, r) = (s1 - s0, r1 - r0);
    println!(
        "{:>6} {:>12.0} {:>12.0} {:>9.3}%",
        n,
        s as f64 / el.as_secs_f64(),
        r as f64 / el.as_secs_f64(),
        (s.saturating_sub(r)) as f64 * 100.0 / s.max(1) as f64
    );
    for t in tasks {
        t.abort();
    }
    drop(sessions);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let secs: u64 = std::env::var("B2BUA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if which.is_empty() || which.iter().any(|w| w == "playback") {
        println!("prompt playback, one pacing task, {secs} s per step");
        println!(
            "{:>6} {:>12} {:>12} {:>10} {:>10}",
            "calls", "late p50 ms", "late p99 ms", "frames", "arrived"
        );
        for n in steps("B2BUA_BENCH_STREAMS", "500,1000,2000,3000,4000") {
            playback(n, secs).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if which.is_empty() || which.iter().any(|w| w == "relay") {
        println!("RTP relay, both directions at 50 packets/s per call, {secs} s per step");
        println!(
            "{:>6} {:>12} {:>12} {:>10}",
            "calls", "sent pps", "relayed pps", "loss"
        );
        for n in steps("B2BUA_BENCH_CALLS", "500,1000,1500,2000,2500") {
            relay(n, secs).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

//! Media benchmarks: prompt-playback streams from the one pacing task, and relayed RTP.
//!
//! `cargo bench -p b2bua --bench media` runs both; `-- playback` or `-- relay` runs one;
//! `-- overload` offers more calls than the relay can carry, arriving over two seconds, and
//! reports how many admission by load took and the loss on those.
//! Playback: N calls each playing a long prompt to a sink, started spread over one 20 ms period
//! as calls arriving at random moments would be; reports how late frames left (p50 and p99 of
//! send time minus due time) and how many arrived. Relay: N bridged calls with
//! G.711 at 50 packets a second in each direction from generator tasks in the same process;
//! reports packets relayed per second, loss, and the relay threads' CPU per packet, beside the
//! kernel's floor measured in the same run: the same sockets and traffic through a bare
//! recv+send loop, and through rtpengine (`B2BUA_BENCH_RTPENGINE` names its binary, default
//! `/usr/bin/rtpengine`; the column is left empty when it cannot start). Step sizes come
//! from `B2BUA_BENCH_STREAMS` and `B2BUA_BENCH_CALLS`; each step runs `B2BUA_BENCH_SECONDS`
//! (default 5); `B2BUA_BENCH_WORKERS` sets `media.workers` (default one per core).

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
        workers: std::env::var("B2BUA_BENCH_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0),
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

/// As large a receive buffer as the kernel allows (`net.core.rmem_max`): a sink takes a
/// share of every relayed packet, and a scheduling delay must not drop them there.
fn socket2_buffers(s: &UdpSocket) -> std::io::Result<()> {
    socket2::SockRef::from(s).set_recv_buffer_size(8 << 20)
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

/// What one relay step measured.
struct Step {
    offered: f64,
    relayed: f64,
    loss: f64,
    /// CPU of the relaying threads per relayed packet.
    cpu_per_packet: Duration,
}

/// The calls one generator group sends to: (leg A, leg B) addresses, growing as calls are
/// admitted.
type Group = Arc<std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>>>;

/// The load generators: groups of calls, each with one socket per side that sends both legs'
/// 50 packets a second to every call of the group and counts what comes back. Many groups,
/// so that no one socket of ours receives more than a few thousand packets a second: a sink
/// that overflows would be counted as the relay's loss.
struct Generators {
    groups: Vec<Group>,
    /// Each group's two socket addresses (where relayed packets come back to).
    sockets: Vec<(SocketAddr, SocketAddr)>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    added: usize,
}

/// Generator groups.
const GROUPS: usize = 32;

impl Generators {
    async fn start() -> Generators {
        let mut g = Generators {
            groups: Vec::new(),
            sockets: Vec::new(),
            sent: Arc::new(AtomicU64::new(0)),
            received: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            tasks: Vec::new(),
            added: 0,
        };
        for _ in 0..GROUPS {
            let group: Group = Default::default();
            let sock_a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let sock_b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let _ = socket2_buffers(&sock_a);
            let _ = socket2_buffers(&sock_b);
            g.sockets
                .push((sock_a.local_addr().unwrap(), sock_b.local_addr().unwrap()));
            for s in [sock_a.clone(), sock_b.clone()] {
                let received = g.received.clone();
                g.tasks.push(tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    while s.recv_from(&mut buf).await.is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            let (sent, stop, targets) = (g.sent.clone(), g.stop.clone(), group.clone());
            g.tasks.push(tokio::spawn(async move {
                let mut senders: Vec<(Sender, Sender)> = Vec::new();
                let mut now_targets = Vec::new();
                let payload = [0xffu8; 160];
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    now_targets.clone_from(&*targets.lock().unwrap());
                    while senders.len() < now_targets.len() {
                        let i = senders.len() as u32;
                        senders.push((Sender::new(i, 0, 0), Sender::new(!i, 0, 0)));
                    }
                    let now = Instant::now();
                    for (i, (a, b)) in now_targets.iter().enumerate() {
                        let (sa, sb) = &mut senders[i];
                        // Only what left counts as offered.
                        for (sock, tx, to) in [(&sock_a, sa, a), (&sock_b, sb, b)] {
                            let pkt = tx.prompt_frame(0, &payload, now).unwrap();
                            if sock.try_send_to(&pkt, *to).is_ok() {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }));
            g.groups.push(group);
        }
        g
    }

    /// The group the next call goes to, and that group's sockets (where its relayed packets
    /// must go).
    fn next(&self) -> (usize, (SocketAddr, SocketAddr)) {
        let i = self.added % self.groups.len();
        (i, self.sockets[i])
    }

    /// Starts sending to one more call.
    fn add(&mut self, legs: (SocketAddr, SocketAddr)) {
        let (i, _) = self.next();
        self.groups[i].lock().unwrap().push(legs);
        self.added += 1;
    }

    /// Measures over `secs` after a settling second; `cpu` reads the relaying threads' CPU.
    async fn measure(&self, secs: u64, cpu: impl Fn() -> Duration) -> Step {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (s0, r0, c0, t0) = (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            cpu(),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
        self.stop.store(true, Ordering::Relaxed);
        let el = t0.elapsed();
        // Packets in flight when the generators stop still count.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (s1, r1, c1) = (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            cpu(),
        );
        let (s, r) = (s1 - s0, r1 - r0);
        Step {
            offered: s as f64 / el.as_secs_f64(),
            relayed: r as f64 / el.as_secs_f64(),
            loss: (s.saturating_sub(r)) as f64 * 100.0 / s.max(1) as f64,
            cpu_per_packet: (c1.saturating_sub(c0)) / r.max(1) as u32,
        }
    }
}

impl Drop for Generators {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// CPU time so far of this process's threads whose name starts with `prefix`, from the
/// scheduler's own count (`/proc/self/task/*/schedstat`, nanoseconds on the CPU).
fn thread_cpu(prefix: &str) -> Duration {
    process_cpu("self", prefix)
}

/// CPU time so far of process `pid`'s threads whose name starts with `prefix` ("" for all).
fn process_cpu(pid: &str, prefix: &str) -> Duration {
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

/// A bridged call's session with both legs' addresses to be latched from the generator.
fn bridged(media: &Media, i: usize) -> std::io::Result<b2bua::media::engine::Session> {
    let s = media.session(i as u64)?;
    for leg in [A, B] {
        s.set_remote(
            leg,
            "127.0.0.1:9".parse().unwrap(),
            (0, Codec::Pcmu),
            None,
            None,
        );
    }
    s.bridge(true);
    Ok(s)
}

async fn relay(n: usize, secs: u64) -> Step {
    let (media, _events) = Media::start(config(n + 10));
    let mut gens = Generators::start().await;
    let mut sessions = Vec::new();
    for i in 0..n {
        let s = bridged(&media, i).expect("session");
        gens.add((s.local(A), s.local(B)));
        sessions.push(s);
    }
    let step = gens.measure(secs, || thread_cpu("media-relay")).await;
    drop(sessions);
    step
}

/// Calls offered beyond what the relay can carry: `n` calls arrive over two seconds and each
/// starts its audio as soon as it is admitted, while admission by load refuses the excess.
/// Reports how many were admitted and the loss on those.
async fn overload(n: usize, secs: u64) -> (usize, Step) {
    let (media, _events) = Media::start(config(n + 10));
    let mut gens = Generators::start().await;
    let mut sessions = Vec::new();
    let per_tick = n.div_ceil(100);
    let mut i = 0;
    while i < n {
        for _ in 0..per_tick.min(n - i) {
            if let Ok(s) = bridged(&media, i) {
                gens.add((s.local(A), s.local(B)));
                sessions.push(s);
            }
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admitted = sessions.len();
    let step = gens.measure(secs, || thread_cpu("media-relay")).await;
    eprintln!("relay load at the end: {:?}", media.relay_load());
    drop(sessions);
    (admitted, step)
}

/// The kernel's floor for the same traffic: one thread per core, each with its share of the
/// same number of socket pairs in one level-triggered epoll, that receives each packet and
/// sends it from the pair's other socket to the generator's other side — no RTP, no checks,
/// no rewriting. What our relay costs per packet beyond this is ours.
async fn floor(n: usize, secs: u64) -> Step {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut gens = Generators::start().await;
    let mut shares: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..n {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let (_, back) = gens.next();
        gens.add((a.local_addr().unwrap(), b.local_addr().unwrap()));
        shares[i % threads].push(((a, b), back));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("relay-floor".into())
                .spawn(move || {
                    let ep = Epoll::new(EpollCreateFlags::empty()).unwrap();
                    for (i, ((a, b), _)) in share.iter().enumerate() {
                        let ev =
                            |leg: u64| EpollEvent::new(EpollFlags::EPOLLIN, (i as u64) << 1 | leg);
                        ep.add(a, ev(0)).unwrap();
                        ep.add(b, ev(1)).unwrap();
                    }
                    let mut ready = vec![EpollEvent::empty(); 512];
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        let k = ep.wait(&mut ready, EpollTimeout::from(100u16)).unwrap_or(0);
                        for e in &ready[..k] {
                            let ((a, b), (to_a, to_b)) = &share[(e.data() >> 1) as usize];
                            let (from, out, to) = match e.data() & 1 {
                                0 => (a, b, to_b),
                                _ => (b, a, to_a),
                            };
                            if let Ok((len, _)) = from.recv_from(&mut buf) {
                                let _ = out.send_to(&buf[..len], to);
                            }
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    let step = gens.measure(secs, || thread_cpu("relay-floor")).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    step
}

/// rtpengine (Debian's `rtpengine-daemon`, forwarding in userspace) carrying the same calls and
/// traffic as our relay, so the README can state the ratio from one run. It runs as a child
/// process with one worker thread per core, driven over its ng control protocol (bencoded
/// dictionaries over UDP): one `offer` and one `answer` per call, as a SIP proxy would send.
struct Rtpengine {
    child: std::process::Child,
    ng: std::net::UdpSocket,
    cookie: u64,
}

/// Where the ng protocol listens: a port no test uses.
const RTPENGINE_NG: &str = "127.0.0.1:22999";

impl Rtpengine {
    /// Starts the daemon, or says why it cannot (not installed, did not answer a ping).
    fn start(threads: usize) -> Result<Rtpengine, String> {
        let bin = std::env::var("B2BUA_BENCH_RTPENGINE").unwrap_or("/usr/bin/rtpengine".into());
        let child = std::process::Command::new(&bin)
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=3",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={RTPENGINE_NG}"),
                "--port-min=20000",
                "--port-max=60000",
                &format!("--num-threads={threads}"),
                "--delete-delay=0",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("{bin}: {e}"))?;
        let ng = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        ng.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut engine = Rtpengine {
            child,
            ng,
            cookie: 0,
        };
        for _ in 0..50 {
            if let Ok(reply) = engine.command(&[("command", "ping")]) {
                if bdict_get(&reply, "result") == Some(b"pong".as_slice()) {
                    return Ok(engine);
                }
            }
        }
        Err(format!("{bin} did not answer a ping on {RTPENGINE_NG}"))
    }

    /// Sends one command and returns the reply's dictionary.
    fn command(&mut self, pairs: &[(&str, &str)]) -> Result<Vec<u8>, String> {
        self.cookie += 1;
        let mut msg = format!("{} d", self.cookie).into_bytes();
        for (k, v) in pairs {
            msg.extend(format!("{}:{k}{}:{v}", k.len(), v.len()).bytes());
        }
        msg.push(b'e');
        let prefix = format!("{} ", self.cookie);
        let mut buf = vec![0u8; 65536];
        // Under load a reply can be late: resend with the same cookie, which rtpengine
        // answers from its cache of replies rather than doing the command twice.
        for _ in 0..10 {
            self.ng
                .send_to(&msg, RTPENGINE_NG)
                .map_err(|e| e.to_string())?;
            while let Ok(n) = self.ng.recv(&mut buf) {
                if let Some(dict) = buf[..n].strip_prefix(prefix.as_bytes()) {
                    return Ok(dict.to_vec());
                }
            }
        }
        Err(format!("no reply to {pairs:?}"))
    }

    /// Sets up one call between the generator's sockets `a` and `b`; returns the addresses
    /// rtpengine gave each side to send to.
    fn call(
        &mut self,
        i: usize,
        a: SocketAddr,
        b: SocketAddr,
    ) -> Result<(SocketAddr, SocketAddr), String> {
        let sdp = |to: SocketAddr| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
                 m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
                ip = to.ip(),
                port = to.port()
            )
        };
        let call_id = format!("bench-{i}");
        let offer = self.command(&[
            ("command", "offer"),
            ("call-id", &call_id),
            ("from-tag", "a"),
            ("sdp", &sdp(a)),
        ])?;
        // The offer as B receives it names where B must send.
        let to_b = sdp_address(&offer)?;
        let answer = self.command(&[
            ("command", "answer"),
            ("call-id", &call_id),
            ("from-tag", "a"),
            ("to-tag", "b"),
            ("sdp", &sdp(b)),
        ])?;
        Ok((sdp_address(&answer)?, to_b))
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The media address of the SDP in an ng reply.
fn sdp_address(reply: &[u8]) -> Result<SocketAddr, String> {
    let why = || String::from_utf8_lossy(reply).into_owned();
    let sdp = bdict_get(reply, "sdp").ok_or_else(why)?;
    let sdp = String::from_utf8_lossy(sdp);
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .ok_or_else(why)?;
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .ok_or_else(why)?;
    format!("{}:{}", ip.trim(), port).parse().map_err(|_| why())
}

/// The byte string under `key` in a bencoded dictionary.
fn bdict_get<'a>(s: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut s = s.strip_prefix(b"d")?;
    while s.first()? != &b'e' {
        let (k, rest) = bstring(s)?;
        let (v, rest) = bvalue(rest)?;
        if k == key.as_bytes() {
            return bstring(v).map(|(v, _)| v);
        }
        s = rest;
    }
    None
}

/// A bencoded byte string at the start of `s`, and what follows it.
fn bstring(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = s.iter().position(|&c| c == b':')?;
    let n: usize = std::str::from_utf8(&s[..colon]).ok()?.parse().ok()?;
    let body = s.get(colon + 1..colon + 1 + n)?;
    Some((body, &s[colon + 1 + n..]))
}

/// Any bencoded value at the start of `s` (as it is written), and what follows it.
fn bvalue(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = match s.first()? {
        b'i' => &s[s.iter().position(|&c| c == b'e')? + 1..],
        b'l' | b'd' => {
            let mut rest = &s[1..];
            while rest.first()? != &b'e' {
                rest = bvalue(rest)?.1;
            }
            &rest[1..]
        }
        _ => bstring(s)?.1,
    };
    Some((&s[..s.len() - rest.len()], rest))
}

/// The same calls and traffic through rtpengine, its whole process's CPU per packet.
async fn rtpengine(n: usize, secs: u64) -> Result<Step, String> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut engine = Rtpengine::start(threads)?;
    let mut gens = Generators::start().await;
    for i in 0..n {
        let (_, (a, b)) = gens.next();
        gens.add(engine.call(i, a, b)?);
    }
    let pid = engine.pid();
    let step = gens.measure(secs, || process_cpu(&pid, "")).await;
    drop(engine);
    Ok(step)
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
    if which.iter().any(|w| w == "overload") {
        println!("calls offered over 2 s, each sending 50 packets/s both ways once admitted;");
        println!("admission by relay load (media.max_load_percent 85) refuses the excess");
        println!(
            "{:>8} {:>9} {:>9} {:>11} {:>11} {:>8}",
            "offered", "admitted", "refused", "sent pps", "relayed", "loss"
        );
        for n in steps("B2BUA_BENCH_CALLS", "2000,3000,4000") {
            let (admitted, step) = overload(n, secs).await;
            println!(
                "{:>8} {:>9} {:>9} {:>11.0} {:>11.0} {:>7.3}%",
                n,
                admitted,
                n - admitted,
                step.offered,
                step.relayed,
                step.loss
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if which.is_empty() || which.iter().any(|w| w == "relay") {
        println!("RTP relay, both directions at 50 packets/s per call, {secs} s per step;");
        println!(
            "beside it the kernel's floor: the same sockets and traffic, a bare recv+send loop"
        );
        println!("and rtpengine (userspace forwarding, one thread per core, ng protocol)");
        println!(
            "{:>6} {:>11} {:>11} {:>8} {:>7} | {:>11} {:>8} {:>7} | {:>11} {:>8} {:>7}",
            "calls",
            "sent pps",
            "relayed",
            "loss",
            "µs/pkt",
            "floor pps",
            "loss",
            "µs/pkt",
            "rtpengine",
            "loss",
            "µs/pkt"
        );
        let mut note = None;
        for n in steps("B2BUA_BENCH_CALLS", "500,1000,1500,2000,2500") {
            let ours = relay(n, secs).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let bare = floor(n, secs).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let theirs = rtpengine(n, secs).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
            let theirs = match theirs {
                Ok(t) => format!(
                    "{:>11.0} {:>7.3}% {:>7.2}",
                    t.relayed,
                    t.loss,
                    us(t.cpu_per_packet)
                ),
                Err(e) => {
                    note = Some(e);
                    format!("{:>11} {:>8} {:>7}", "-", "-", "-")
                }
            };
            println!(
                "{:>6} {:>11.0} {:>11.0} {:>7.3}% {:>7.2} | {:>11.0} {:>7.3}% {:>7.2} | {theirs}",
                n,
                ours.offered,
                ours.relayed,
                ours.loss,
                us(ours.cpu_per_packet),
                bare.relayed,
                bare.loss,
                us(bare.cpu_per_packet)
            );
        }
        if let Some(e) = note {
            println!("rtpengine was not measured: {e}");
        }
    }
}

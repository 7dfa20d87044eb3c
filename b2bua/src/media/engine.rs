//! The media sockets: two RTP legs per call (caller side and gateway side), each with its RTCP
//! port, from a configured port range. A receiving task per leg latches the peer's address
//! (symmetric RTP, for callers behind NAT), counts packets, loss and jitter, turns the caller's
//! digits into events, and, once the call is bridged, relays to the other leg through that
//! leg's own sequence and timestamp space (transcoding between µ-law and A-law only when the
//! legs differ). Prompt playback for every call runs from one pacing task per core (a timer
//! service, not a sleeping task per call).

use super::codec::{self, LegCodec};
use super::dtmf::{self, DigitEvent, DigitMerger, InBandDetector, Rfc4733Receiver, Source};
use super::pacer::{Pacer, Playback};
use super::rtp::{self, ReceiverStats, Sender};
use super::sdp::Codec;
use crate::sync::Lock;
use prompts::g711;
use prompts::set::Prompt;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Media settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the RTP sockets bind to and the SDP announces.
    pub bind: IpAddr,
    /// RTP port range (even ports for RTP, the next odd one for RTCP), `min..max`.
    pub ports: (u16, u16),
    /// A bridged call whose caller sends nothing for this long is reported inactive.
    pub inactivity: Duration,
    /// How long `#` must be held for a long pound.
    pub long_pound: Duration,
    /// Calls with media at once; beyond it new calls are refused (503) rather than every
    /// call's audio degrading. Set it from the relay benchmark on the machine.
    pub max_calls: usize,
    /// A port that another process held when we tried to bind it is left out of the pool for
    /// this long, then tried again.
    pub port_rest: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            ports: (30000, 40000),
            inactivity: Duration::from_secs(60),
            long_pound: Duration::from_secs(2),
            max_calls: 1000,
            port_rest: Duration::from_secs(30),
        }
    }
}

/// What the media layer tells the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// The caller pressed a key.
    Digit(char),
    /// The caller held `#`.
    LongPound,
    /// A prompt sequence finished playing.
    PromptDone,
    /// No RTP from the caller for the inactivity time.
    Inactive,
}

/// Which leg: 0 the caller's, 1 the gateway's.
pub type Leg = usize;
/// The caller's leg.
pub const A: Leg = 0;
/// The gateway's leg.
pub const B: Leg = 1;

struct LegState {
    /// Where this leg's SDP says to send.
    sdp: Option<SocketAddr>,
    /// The address its SIP came from: a phone behind NAT sends RTP from there.
    signalling: Option<IpAddr>,
    /// The address its first acceptable packet came from; from then on the only one heard.
    latched: Option<SocketAddr>,
    codec: Option<(u8, Codec)>,
    coder: Option<LegCodec>,
    telephone_event: Option<u8>,
    sender: Sender,
    stats: ReceiverStats,
    /// SRTP, when the leg's SDP negotiated it: its packets are decrypted on the way in and
    /// ours encrypted on the way out.
    srtp: Option<super::srtp::Leg>,
}

struct State {
    legs: [LegState; 2],
    bridged: bool,
    merger: DigitMerger,
    events4733: Rfc4733Receiver,
    inband: InBandDetector,
    seen_4733: bool,
    playback: Option<(Leg, Playback)>,
    /// When the caller's leg last received RTP, and whether its silence was reported.
    last_rx: Instant,
    inactive_told: bool,
}

/// A call's media.
pub struct Session {
    call: u64,
    state: Arc<Mutex<State>>,
    sockets: [Arc<LegSockets>; 2],
    local: [SocketAddr; 2],
    /// Our SRTP key on each leg, offered or answered in its SDP when the leg speaks SRTP.
    keys: [super::srtp::KeySalt; 2],
    tasks: Vec<tokio::task::JoinHandle<()>>,
    media: Media,
}

/// A leg's RTP and RTCP sockets and the port pair they are bound to. The session, its
/// receiving tasks and the pacer each hold it; the pair goes back to the pool only when the
/// last of them has let go and both sockets are closed, so the next call to draw the pair can
/// bind it. (Returning ports when the session ended, while aborted tasks still held the
/// sockets, made the next bind fail and cost the pool that pair for good.)
struct LegSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    // Declared after the sockets: dropped once they are closed.
    _lease: Lease,
}

/// An even port drawn from the pool (its odd neighbour comes with it).
struct Lease {
    port: u16,
    pool: Arc<PortPool>,
    /// Someone else held it: rest it instead of handing it straight out again.
    taken_elsewhere: Option<Instant>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut p = self.pool.ports.locked();
        match self.taken_elsewhere {
            Some(until) => p.resting.push_back((until, self.port)),
            None => p.free.push(self.port),
        }
    }
}

/// The RTP port pairs of the configured range that no call holds.
struct PortPool {
    ports: Mutex<Ports>,
}

#[derive(Default)]
struct Ports {
    free: Vec<u16>,
    /// Pairs another process held when we bound them, oldest first, with when to try again.
    resting: std::collections::VecDeque<(Instant, u16)>,
}

impl PortPool {
    /// A pair at random from the free ones (after taking back those whose rest is over), so
    /// that a call's ports cannot be guessed from the last call's: an attacker spraying the
    /// next port would otherwise hit it.
    fn draw(self: &Arc<Self>, now: Instant) -> Option<Lease> {
        let mut p = self.ports.locked();
        p.wake(now);
        if p.free.is_empty() {
            return None;
        }
        let i = rand::random_range(0..p.free.len());
        let port = p.free.swap_remove(i);
        Some(Lease {
            port,
            pool: self.clone(),
            taken_elsewhere: None,
        })
    }
}

impl Ports {
    /// Takes back the pairs whose rest is over.
    fn wake(&mut self, now: Instant) {
        while self.resting.front().is_some_and(|(at, _)| *at <= now) {
            let (_, port) = self.resting.pop_front().expect("looked at");
            self.free.push(port);
        }
    }
}

/// How many taken pairs one leg tries before it gives up.
const BIND_TRIES: usize = 8;

/// A stream handed to a pacing task: the call, its state and the leg to send from.
type PlayStart = (u64, Arc<Mutex<State>>, Arc<LegSockets>);

struct Inner {
    cfg: MediaConfig,
    pool: Arc<PortPool>,
    sessions: std::sync::atomic::AtomicUsize,
    /// Every open session, for the inactivity check.
    registry: Mutex<HashMap<u64, std::sync::Weak<Mutex<State>>>>,
    /// Frame lateness (send time minus due time) in 100 µs buckets, the last one open-ended.
    lateness: Arc<Mutex<Vec<u64>>>,
    events: mpsc::UnboundedSender<(u64, MediaEvent)>,
    /// One pacing task per core; a call's prompts always go to the same one.
    play: Vec<mpsc::UnboundedSender<PlayStart>>,
}

/// The media layer; cheap to clone.
#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

/// Quality figures of a finished call, for its record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Packets received per leg.
    pub packets: [u64; 2],
    /// Packets lost per leg.
    pub lost: [u64; 2],
    /// Jitter per leg.
    pub jitter: [Duration; 2],
    /// The ICPIF-style figure of the caller's leg (lower is better).
    pub icpif: u32,
}

impl Media {
    /// Starts the media layer; events for calls arrive on the returned receiver.
    pub fn start(cfg: MediaConfig) -> (Media, mpsc::UnboundedReceiver<(u64, MediaEvent)>) {
        let (events, rx) = mpsc::unbounded_channel();
        let shards = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let lateness = Arc::new(Mutex::new(vec![0; LATENESS_BUCKETS]));
        let mut play = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = mpsc::unbounded_channel();
            crate::supervise::spawn(
                "pacer",
                playback_service(rx, events.clone(), lateness.clone()),
            );
            play.push(tx);
        }
        let start = cfg.ports.0 + cfg.ports.0 % 2;
        let free: Vec<u16> = (start..cfg.ports.1.saturating_sub(1))
            .step_by(2)
            .rev()
            .collect();
        let pool = Arc::new(PortPool {
            ports: Mutex::new(Ports {
                free,
                ..Ports::default()
            }),
        });
        let media = Media {
            inner: Arc::new(Inner {
                cfg,
                pool,
                sessions: Default::default(),
                registry: Default::default(),
                lateness,
                events: events.clone(),
                play,
            }),
        };
        crate::supervise::spawn(
            "media-inactivity",
            inactivity_check(Arc::downgrade(&media.inner)),
        );
        (media, rx)
    }

    /// Port pairs free to be drawn now (not held by a call, not resting after a conflict).
    pub fn free_ports(&self) -> usize {
        let mut p = self.inner.pool.ports.locked();
        p.wake(Instant::now());
        p.free.len()
    }

    /// Binds one leg's pair. A pair another process holds rests for `port_rest` and the next
    /// is tried, a few times at most, so a crowded range costs one call a few binds rather
    /// than emptying the pool.
    fn bind_leg(&self) -> std::io::Result<LegSockets> {
        let ip = self.inner.cfg.bind;
        for _ in 0..BIND_TRIES {
            let now = Instant::now();
            let Some(mut lease) = self.inner.pool.draw(now) else {
                crate::metrics::get().limit_hit("media_ports");
                return Err(std::io::Error::other("no free RTP ports"));
            };
            let port = lease.port;
            match (
                std::net::UdpSocket::bind((ip, port)),
                std::net::UdpSocket::bind((ip, port + 1)),
            ) {
                (Ok(rtp), Ok(rtcp)) => {
                    rtp.set_nonblocking(true)?;
                    rtcp.set_nonblocking(true)?;
                    return Ok(LegSockets {
                        rtp: UdpSocket::from_std(rtp)?,
                        rtcp: UdpSocket::from_std(rtcp)?,
                        _lease: lease,
                    });
                }
                (Err(e), _) | (_, Err(e)) => {
                    crate::metrics::get().rtp_port_conflicts.inc();
                    tracing::debug!(port, error = %e, "RTP port held elsewhere; resting it");
                    lease.taken_elsewhere = Some(now + self.inner.cfg.port_rest);
                }
            }
        }
        Err(std::io::Error::other(
            "RTP ports in the range are held by another process",
        ))
    }

    /// The given quantile (0–1) of how far from their due time prompt frames were sent (early
    /// or late), over all frames so far.
    pub fn pacing_lateness(&self, q: f64) -> Duration {
        let h = self.inner.lateness.locked();
        let total: u64 = h.iter().sum();
        let target = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in h.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Duration::from_micros(i as u64 * 100);
            }
        }
        Duration::ZERO
    }

    /// Calls with media now.
    pub fn sessions(&self) -> usize {
        self.inner
            .sessions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens the two legs of a call's media, unless `max_calls` are already open.
    pub fn session(&self, call: u64) -> std::io::Result<Session> {
        use std::sync::atomic::Ordering;
        if self.inner.sessions.fetch_add(1, Ordering::AcqRel) >= self.inner.cfg.max_calls {
            self.inner.sessions.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::get().limit_hit("media_calls");
            return Err(std::io::Error::other("media at its call limit"));
        }
        let opened = self.open(call);
        if opened.is_err() {
            self.inner.sessions.fetch_sub(1, Ordering::AcqRel);
        }
        opened
    }

    fn open(&self, call: u64) -> std::io::Result<Session> {
        let sockets = [Arc::new(self.bind_leg()?), Arc::new(self.bind_leg()?)];
        let local = [sockets[0].rtp.local_addr()?, sockets[1].rtp.local_addr()?];
        let ssrc = || rand::random::<u32>();
        let leg = || LegState {
            sdp: None,
            signalling: None,
            latched: None,
            codec: None,
            coder: None,
            telephone_event: None,
            sender: Sender::new(ssrc(), rand::random(), rand::random()),
            stats: ReceiverStats::default(),
            srtp: None,
        };
        let state = Arc::new(Mutex::new(State {
            legs: [leg(), leg()],
            bridged: false,
            merger: DigitMerger::new(self.inner.cfg.long_pound),
            events4733: Rfc4733Receiver::default(),
            inband: InBandDetector::default(),
            seen_4733: false,
            playback: None,
            last_rx: Instant::now(),
            inactive_told: false,
        }));
        self.inner
            .registry
            .locked()
            .insert(call, Arc::downgrade(&state));
        let mut tasks = Vec::new();
        for leg in [A, B] {
            tasks.push(tokio::spawn(receive(
                call,
                leg,
                sockets.clone(),
                state.clone(),
                self.inner.events.clone(),
            )));
        }
        for leg in sockets.clone() {
            // RTCP is received and dropped: the port is held so nothing else takes it.
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while leg.rtcp.recv_from(&mut buf).await.is_ok() {}
            }));
        }
        Ok(Session {
            call,
            state,
            sockets,
            local,
            keys: [super::srtp::new_key(), super::srtp::new_key()],
            tasks,
            media: self.clone(),
        })
    }
}

impl LegState {
    /// Whether a packet from `from` belongs to this leg (RFC 3550 gives no authentication, so
    /// the address is all there is): before latching, the SDP's address or the signalling
    /// source; after, only the latched address.
    fn accepts(&self, from: SocketAddr) -> bool {
        match self.latched {
            Some(l) => l == from,
            None => {
                self.sdp.is_some_and(|s| s.ip() == from.ip()) || self.signalling == Some(from.ip())
            }
        }
    }

    /// Where relayed audio goes: where the peer's packets come from, else its SDP.
    fn remote(&self) -> Option<SocketAddr> {
        self.latched.or(self.sdp)
    }

    /// Where our prompts may go: a latched peer, or an SDP address that is the signalling
    /// source. A forged INVITE naming a victim's address gets no audio stream sent there.
    fn prompt_remote(&self) -> Option<SocketAddr> {
        self.latched
            .or(self.sdp.filter(|s| self.signalling == Some(s.ip())))
    }
}

impl Session {
    /// Our RTP address on a leg, for its SDP.
    pub fn local(&self, leg: Leg) -> SocketAddr {
        self.local[leg]
    }

    /// Our SRTP key on a leg, for its SDP (used only if the leg negotiates SRTP).
    pub fn srtp_key(&self, leg: Leg) -> super::srtp::KeySalt {
        self.keys[leg]
    }

    /// What a leg's SDP settled: where to send (until the peer's packets say otherwise), the
    /// codec and telephone-event numbers, and the key the peer encrypts with if it speaks
    /// SRTP (a new key starts a new context; none turns SRTP off).
    pub fn set_remote(
        &self,
        leg: Leg,
        remote: SocketAddr,
        codec: (u8, Codec),
        telephone_event: Option<u8>,
        srtp: Option<super::srtp::KeySalt>,
    ) {
        let mut st = self.state.locked();
        let l = &mut st.legs[leg];
        match (srtp, l.srtp.as_mut()) {
            (Some(theirs), Some(s)) if !s.receives_with(&theirs) => s.rekey(&theirs),
            (Some(_), Some(_)) => {}
            (Some(theirs), None) => l.srtp = Some(super::srtp::Leg::new(&theirs, &self.keys[leg])),
            (None, _) => l.srtp = None,
        }
        if l.sdp != Some(remote) {
            // The media moved (a re-INVITE): latch again, to the new address.
            l.sdp = Some(remote);
            l.latched = None;
        }
        if l.codec.map(|c| c.1) != Some(codec.1) {
            l.coder = Some(LegCodec::new(codec.1));
            l.sender.set_clock_rate(codec.1.clock_rate());
        }
        l.codec = Some(codec);
        l.telephone_event = telephone_event;
    }

    /// The address a leg's SIP comes from; its RTP may come from there too (NAT).
    pub fn set_signalling(&self, leg: Leg, ip: IpAddr) {
        self.state.locked().legs[leg].signalling = Some(ip);
    }

    /// Whether a leg's SDP has been taken (its codec is known).
    pub fn has_codec(&self, leg: Leg) -> bool {
        self.state.locked().legs[leg].codec.is_some()
    }

    /// Starts or stops relaying between the legs.
    pub fn bridge(&self, on: bool) {
        let mut st = self.state.locked();
        if on && !st.bridged {
            st.last_rx = Instant::now();
        }
        st.bridged = on;
        for l in &mut st.legs {
            l.sender.pause();
        }
    }

    /// Plays prompts to a leg; a [`MediaEvent::PromptDone`] follows when they end.
    pub fn play(&self, leg: Leg, prompts: Vec<Arc<Prompt>>) {
        self.state.locked().playback = Some((leg, Playback::new(prompts)));
        let shards = &self.media.inner.play;
        let shard = &shards[self.call as usize % shards.len()];
        let _ = shard.send((self.call, self.state.clone(), self.sockets[leg].clone()));
    }

    /// Stops a playing prompt (barge-in).
    pub fn stop_playback(&self) {
        self.state.locked().playback = None;
    }

    /// Counters and the quality figure so far.
    pub fn quality(&self) -> Quality {
        let st = self.state.locked();
        let a = &st.legs[A].stats;
        Quality {
            packets: [a.packets, st.legs[B].stats.packets],
            lost: [a.lost(), st.legs[B].stats.lost()],
            jitter: [a.jitter(), st.legs[B].stats.jitter()],
            icpif: rtp::icpif(a.loss_fraction(), a.jitter()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // The ports go back when the tasks have let go of the sockets (see `LegSockets`).
        self.state.locked().playback = None;
        self.media.inner.registry.locked().remove(&self.call);
        self.media
            .inner
            .sessions
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// True for RTCP on a multiplexed port (RFC 5761 §4: payload types 64–95 after the marker bit).
fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

async fn receive(
    call: u64,
    leg: Leg,
    sockets: [Arc<LegSockets>; 2],
    state: Arc<Mutex<State>>,
    events: mpsc::UnboundedSender<(u64, MediaEvent)>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = sockets[leg].rtp.recv_from(&mut buf).await else {
            continue;
        };
        let now = Instant::now();
        if is_rtcp(&buf[..n]) {
            continue;
        }
        let mut out: Option<(Vec<u8>, SocketAddr)> = None;
        let mut digits = Vec::new();
        let decrypted;
        {
            let mut st = state.locked();
            let st = &mut *st;
            let me = &mut st.legs[leg];
            // Nobody else's packets: not counted, not opened, not relayed, no digits read
            // from them.
            if !me.accepts(from) {
                crate::metrics::get().rtp_foreign.inc();
                continue;
            }
            // An SRTP leg's packets must open with its peer's key before anything is read.
            let packet: &[u8] = match me.srtp.as_mut() {
                None => &buf[..n],
                Some(s) => match s.unprotect(&buf[..n]) {
                    Ok(plain) => {
                        decrypted = plain;
                        &decrypted
                    }
                    Err(_) => {
                        crate::metrics::get().srtp_refused.inc();
                        continue;
                    }
                },
            };
            let Some(p) = rtp::read(packet) else {
                me.stats.malformed += 1;
                continue;
            };
            // Symmetric RTP: send to where the packets come from.
            me.latched.get_or_insert(from);
            me.stats.on_packet(p.seq, p.ts, now);
            if leg == A {
                st.last_rx = now;
                st.inactive_told = false;
            }
            let codec = me.codec;
            let te = me.telephone_event;
            if leg == A {
                let keys = if te == Some(p.pt) {
                    st.seen_4733 = true;
                    st.events4733
                        .on_packet(p.ts, p.payload, now)
                        .into_iter()
                        .map(|k| (Source::Rfc4733, k))
                        .collect()
                } else if !st.seen_4733 {
                    match codec {
                        // In-band tones are looked for in G.711 only (an Opus caller that sends
                        // digits sends telephone-events).
                        Some((pt, c @ (Codec::Pcmu | Codec::Pcma))) if pt == p.pt => {
                            let linear: Vec<i16> = match c {
                                Codec::Pcmu => {
                                    p.payload.iter().map(|b| g711::ulaw_to_linear(*b)).collect()
                                }
                                _ => p.payload.iter().map(|b| g711::alaw_to_linear(*b)).collect(),
                            };
                            st.inband
                                .push(&linear, now)
                                .into_iter()
                                .map(|k| (Source::InBand, k))
                                .collect()
                        }
                        _ => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                for (src, k) in keys {
                    digits.extend(st.merger.key(src, k));
                }
                digits.extend(st.merger.tick(now));
            }
            // While a prompt plays to a leg (the credit warning), the other leg's audio waits.
            let prompting_other = st.playback.as_ref().is_some_and(|(l, _)| *l != leg);
            if st.bridged && !prompting_other {
                let other = 1 - leg;
                let (to_codec, to_te, to_remote) = (
                    st.legs[other].codec,
                    st.legs[other].telephone_event,
                    st.legs[other].remote(),
                );
                if let Some(remote) = to_remote {
                    let src_rate = codec.map(|c| c.1.clock_rate()).unwrap_or(8000);
                    let packet = if te.is_some() && te == Some(p.pt) {
                        to_te.and_then(|pt| {
                            st.legs[other]
                                .sender
                                .relay(pt, p.marker, p.ts, src_rate, p.payload, now)
                        })
                    } else {
                        match (codec, to_codec) {
                            (Some((pt, _)), Some((to_pt, _))) if pt == p.pt => {
                                let (from, to) = pair(&mut st.legs, leg);
                                let payload = match (from.coder.as_mut(), to.coder.as_mut()) {
                                    (Some(f), Some(t)) => codec::transcode(p.payload, f, t),
                                    _ => p.payload.to_vec(),
                                };
                                to.sender
                                    .relay(to_pt, p.marker, p.ts, src_rate, &payload, now)
                            }
                            _ => None,
                        }
                    };
                    let packet = match (packet, st.legs[other].srtp.as_mut()) {
                        (Some(b), Some(s)) => s.protect(&b),
                        (b, None) => b,
                        (None, Some(_)) => None,
                    };
                    out = packet.map(|b| (b, remote));
                }
            }
        }
        if let Some((bytes, to)) = out {
            let _ = sockets[1 - leg].rtp.try_send_to(&bytes, to);
        }
        for d in digits {
            let ev = match d {
                DigitEvent::Digit(c) => MediaEvent::Digit(c),
                DigitEvent::LongPound => MediaEvent::LongPound,
            };
            let _ = events.send((call, ev));
        }
    }
}

/// The leg a packet came in on and the other one, both mutable.
fn pair(legs: &mut [LegState; 2], from: Leg) -> (&mut LegState, &mut LegState) {
    let (a, b) = legs.split_at_mut(1);
    if from == A {
        (&mut a[0], &mut b[0])
    } else {
        (&mut b[0], &mut a[0])
    }
}

/// Digits from SIP INFO for a session (`application/dtmf-relay` bodies).
pub fn info_digits(session: &Session, body: &str) -> Vec<MediaEvent> {
    let Some((digit, duration)) = dtmf::parse_dtmf_relay(body) else {
        return Vec::new();
    };
    let mut st = session.state.locked();
    st.merger
        .key(
            Source::Info,
            dtmf::KeyEvent::Press {
                digit,
                at: Instant::now(),
                duration,
            },
        )
        .into_iter()
        .map(|d| match d {
            DigitEvent::Digit(c) => MediaEvent::Digit(c),
            DigitEvent::LongPound => MediaEvent::LongPound,
        })
        .collect()
}

/// The one pacing task: every playing stream's frames, on its own 20 ms grid.
/// Reports bridged calls whose caller has sent nothing for the inactivity time: one scan a
/// half second for all calls, rather than a timer on every packet.
async fn inactivity_check(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let sessions: Vec<(u64, std::sync::Weak<Mutex<State>>)> = inner
            .registry
            .locked()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (call, weak) in sessions {
            let Some(state) = weak.upgrade() else {
                continue;
            };
            let mut st = state.locked();
            if st.bridged
                && !st.inactive_told
                && now.saturating_duration_since(st.last_rx) >= inner.cfg.inactivity
            {
                st.inactive_told = true;
                let _ = inner.events.send((call, MediaEvent::Inactive));
            }
        }
    }
}

const LATENESS_BUCKETS: usize = 1000;
const EARLY: Duration = Duration::from_millis(1);

async fn playback_service(
    mut starts: mpsc::UnboundedReceiver<PlayStart>,
    events: mpsc::UnboundedSender<(u64, MediaEvent)>,
    lateness: Arc<Mutex<Vec<u64>>>,
) {
    let mut pacer = Pacer::default();
    let mut streams: HashMap<u64, (Arc<Mutex<State>>, Arc<LegSockets>)> = HashMap::new();
    let mut scheduled: HashSet<u64> = HashSet::new();
    loop {
        // The runtime's timers tick in whole milliseconds and round up, so wake a millisecond
        // early and send what is due within it: frames leave within about a millisecond of
        // their time, either side, instead of always one to two late.
        let wake = pacer
            .next_wake()
            .map(|w| tokio::time::Instant::from_std(w.checked_sub(EARLY).unwrap_or(w)));
        tokio::select! {
            cmd = starts.recv() => {
                let Some((id, state, sock)) = cmd else { return };
                streams.insert(id, (state, sock));
                if scheduled.insert(id) {
                    pacer.start(id, Instant::now());
                }
            }
            _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {
                let now = Instant::now();
                let due_now = pacer.due(now + EARLY);
                let mut late = Vec::with_capacity(due_now.len());
                for (id, due) in due_now {
                    let Some((state, sock)) = streams.get(&id) else {
                        scheduled.remove(&id);
                        continue;
                    };
                    let sent = {
                        let mut st = state.locked();
                        let st = &mut *st;
                        match st.playback.as_mut() {
                            Some((leg, pb)) => {
                                let leg = *leg;
                                let codec = st.legs[leg].codec;
                                let remote = st.legs[leg].prompt_remote();
                                match (codec, pb.next_frame(codec.map(|c| c.1).unwrap_or(Codec::Pcmu))) {
                                    (Some((pt, _)), Some(frame)) => {
                                        let l = &mut st.legs[leg];
                                        let payload = match l.coder.as_mut() {
                                            Some(coder) => coder.prompt_payload(&frame),
                                            None => frame.to_vec(),
                                        };
                                        let pkt = l.sender.prompt_frame(pt, &payload, now);
                                        let pkt = match (pkt, l.srtp.as_mut()) {
                                            (Some(b), Some(s)) => s.protect(&b),
                                            (b, _) => b,
                                        };
                                        if let (Some(r), Some(pkt)) = (remote, pkt) {
                                            let _ = sock.rtp.try_send_to(&pkt, r);
                                            let sent_at = Instant::now();
                                            late.push(sent_at.saturating_duration_since(due).max(due.saturating_duration_since(sent_at)));
                                        }
                                        true
                                    }
                                    (None, Some(_)) => true,
                                    (_, None) => {
                                        st.playback = None;
                                        st.legs[leg].sender.pause();
                                        let _ = events.send((id, MediaEvent::PromptDone));
                                        false
                                    }
                                }
                            }
                            None => false,
                        }
                    };
                    if sent {
                        pacer.again(id, due, now);
                    } else {
                        scheduled.remove(&id);
                        streams.remove(&id);
                    }
                }
                let mut h = lateness.locked();
                for l in late {
                    h[((l.as_micros() / 100) as usize).min(LATENESS_BUCKETS - 1)] += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ports_are_handed_out_at_random_and_come_back() {
        let (media, _events) = Media::start(MediaConfig {
            ports: (46000, 46400),
            ..MediaConfig::default()
        });
        let free = media.free_ports();
        let sessions: Vec<Session> = (0..20).map(|i| media.session(i).unwrap()).collect();
        let ports: Vec<u16> = sessions.iter().map(|s| s.local(A).port()).collect();
        assert!(ports
            .iter()
            .all(|p| (46000..46400).contains(p) && p % 2 == 0));
        // Lowest-first (or any fixed order) would make the next call's port a guess.
        let ascending = ports.windows(2).all(|w| w[0] < w[1]);
        let descending = ports.windows(2).all(|w| w[0] > w[1]);
        assert!(!ascending && !descending, "{ports:?}");
        drop(sessions);
        assert_eq!(until_free(&media, free).await, free);
    }

    /// Waits (two seconds at most) for aborted tasks to let go of their sockets and so give
    /// their ports back, until at least `want` pairs are free; says how many are.
    async fn until_free(media: &Media, want: usize) -> usize {
        for _ in 0..2000 {
            if media.free_ports() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        media.free_ports()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_stays_whole_under_call_churn() {
        // 16 port pairs: room for 8 calls. 500 short calls, never more than 6 at once, each
        // with a packet in flight so its receiving tasks are busy when the call ends.
        let (media, _events) = Media::start(MediaConfig {
            ports: (46500, 46532),
            ..MediaConfig::default()
        });
        let total = media.free_ports();
        assert_eq!(total, 16);
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut open = std::collections::VecDeque::new();
        for i in 0..500 {
            if open.len() == 6 {
                open.pop_front();
                // A pair lost to the pool would never come back; a returning one is back as
                // soon as the ended call's tasks are gone.
                let want = total - 2 * open.len();
                assert_eq!(until_free(&media, want).await, want, "before call {i}");
            }
            let s = media
                .session(i)
                .unwrap_or_else(|e| panic!("call {i} with {} open: {e}", open.len()));
            s.set_remote(A, probe.local_addr().unwrap(), (0, Codec::Pcmu), None, None);
            probe
                .send_to(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], s.local(A))
                .unwrap();
            open.push_back(s);
        }
        drop(open);
        assert_eq!(until_free(&media, total).await, total);
        assert_eq!(media.sessions(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pair_held_by_another_process_rests_then_comes_back() {
        // Three pairs, one of them (its RTCP half) held by someone else.
        let squatter = std::net::UdpSocket::bind("127.0.0.1:46601").unwrap();
        let (media, _events) = Media::start(MediaConfig {
            ports: (46600, 46606),
            port_rest: Duration::from_millis(200),
            ..MediaConfig::default()
        });
        assert_eq!(media.free_ports(), 3);
        let conflicts = crate::metrics::get().rtp_port_conflicts.get();
        let first = media.session(1).expect("two pairs can be bound");
        // The third pair, if the first call did not already draw it, is the held one.
        let second = media.session(2);
        assert!(second.is_err());
        assert!(crate::metrics::get().rtp_port_conflicts.get() > conflicts);
        // Resting, not lost: neither free now nor gone for good.
        assert_eq!(media.free_ports(), 0);
        drop(first);
        assert_eq!(until_free(&media, 2).await, 2);
        drop(squatter);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(media.free_ports(), 3);
        let again: Vec<Session> = (3..4).map(|i| media.session(i).unwrap()).collect();
        assert_eq!(media.free_ports(), 1);
        drop(again);
        assert_eq!(until_free(&media, 3).await, 3);
    }

    /// An SRTP caller leg bridged to a plain gateway leg, over real sockets: the caller's
    /// packets arrive decrypted at the gateway; forged or replayed ones go nowhere (counted);
    /// the gateway's audio reaches the caller encrypted with our key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_srtp_leg_is_decrypted_and_encrypted_and_forgeries_stop_at_it() {
        use super::super::srtp;
        let (media, _events) = Media::start(MediaConfig {
            ports: (46700, 46720),
            ..MediaConfig::default()
        });
        let caller = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let gateway = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s = media.session(1).unwrap();
        let theirs = srtp::new_key();
        s.set_remote(
            A,
            caller.local_addr().unwrap(),
            (0, Codec::Pcmu),
            None,
            Some(theirs),
        );
        s.set_remote(
            B,
            gateway.local_addr().unwrap(),
            (0, Codec::Pcmu),
            None,
            None,
        );
        s.bridge(true);
        // The caller's side of the crypto: it sends with its key, reads with ours.
        let mut phone = srtp::Leg::new(&s.srtp_key(A), &theirs);
        let rtp = |seq: u16| {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 42];
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0x55; 160]);
            p
        };
        let refused = crate::metrics::get().srtp_refused.get();
        let mut buf = [0u8; 2048];
        let wait = Duration::from_secs(2);
        let sealed = phone.protect(&rtp(1)).unwrap();
        caller.send_to(&sealed, s.local(A)).await.unwrap();
        let (n, _) = tokio::time::timeout(wait, gateway.recv_from(&mut buf))
            .await
            .expect("relayed")
            .unwrap();
        assert_eq!(n, 12 + 160, "plain RTP toward the gateway");
        assert_eq!(&buf[12..n], &[0x55; 160][..]);
        // A replay, a forgery under the wrong key and plain RTP: none crosses.
        caller.send_to(&sealed, s.local(A)).await.unwrap();
        let mut stranger = srtp::Leg::new(&srtp::new_key(), &srtp::new_key());
        let forged = stranger.protect(&rtp(2)).unwrap();
        caller.send_to(&forged, s.local(A)).await.unwrap();
        caller.send_to(&rtp(3), s.local(A)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), gateway.recv_from(&mut buf))
                .await
                .is_err(),
            "nothing relayed"
        );
        assert!(crate::metrics::get().srtp_refused.get() >= refused + 3);
        // The gateway's audio reaches the phone sealed with our key.
        let mut from_gw = rtp(7);
        from_gw[12..].fill(0x66);
        gateway.send_to(&from_gw, s.local(B)).await.unwrap();
        let (n, _) = tokio::time::timeout(wait, caller.recv_from(&mut buf))
            .await
            .expect("relayed")
            .unwrap();
        assert_eq!(n, 12 + 160 + 10, "an SRTP packet with its tag");
        let opened = phone
            .unprotect(&buf[..n])
            .expect("authenticates with our key");
        assert_eq!(&opened[12..], &[0x66; 160][..]);
    }
}

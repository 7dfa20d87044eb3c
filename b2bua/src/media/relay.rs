//! The relay workers: where every call's RTP is received, looked at and sent on, and where its
//! prompts are paced out.
//!
//! A worker is one OS thread (one per core by default, `media.workers`) that owns its calls
//! outright — their sockets, each leg's RTP state, the digit detectors, the prompt playing —
//! and waits for all of them at once in one level-triggered `epoll`. A packet is read by the
//! thread that was woken for it, checked, rewritten in place in the receive buffer (our header
//! over its header, the payload where it arrived) and sent on: no lock, no task to wake, no
//! allocation, unless the packet must go through linear audio (Opus) or be sealed with SRTP.
//! Each readable socket is read with one `recvmmsg` (up to 16 datagrams, without waiting) and
//! what it carried goes out of the other leg's socket with one `sendmmsg`; at 50 packets a
//! second a socket rarely holds more than one, so the batches pay off when they are needed:
//! under a burst or overload, where they cut the calls into the kernel per packet.
//! Level-triggered readiness means nothing is read just to learn that a socket is empty.
//!
//! The engine reaches a call only through its worker's command queue (and an `eventfd` that
//! wakes the worker), and reads the call's reception figures from counters the worker
//! publishes as it goes. The same loop sends each playing stream's next frame when it is due
//! (its `epoll_wait` timeout is the next frame's time) and scans its calls for silent callers
//! twice a second.

use super::codec::{self, LegCodec};
use super::dtmf::{DigitEvent, DigitMerger, InBandDetector, KeyEvent, Rfc4733Receiver, Source};
use super::engine::{Leg, MediaEvent, A};
use super::pacer::{Pacer, Playback};
use super::ports::LegSockets;
use super::rtp::{self, ReceiverStats, Sender, HEADER};
use super::sdp::Codec;
use super::srtp;
use crate::sync::Lock;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use prompts::g711;
use prompts::set::Prompt;
use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the engine asks of a call's worker.
pub(super) enum Cmd {
    /// A new call's media: its sockets become this worker's.
    Open(Box<Open>),
    /// What a leg's SDP settled.
    Remote {
        call: u64,
        leg: Leg,
        remote: SocketAddr,
        codec: (u8, Codec),
        telephone_event: Option<u8>,
        srtp: Option<srtp::KeySalt>,
    },
    /// Where a leg's SIP comes from.
    Signalling { call: u64, leg: Leg, ip: IpAddr },
    /// Relay between the legs, or stop.
    Bridge { call: u64, on: bool },
    /// Play prompts to a leg.
    Play {
        call: u64,
        leg: Leg,
        prompts: Vec<Arc<Prompt>>,
    },
    /// Barge-in.
    StopPlayback { call: u64 },
    /// A key from SIP INFO, merged with the RTP digits.
    Key {
        call: u64,
        digit: char,
        duration: Duration,
    },
    /// The call is over: its sockets close and its ports go back.
    Close { call: u64 },
    /// The media layer is gone.
    Shutdown,
}

/// A new call for a worker.
pub(super) struct Open {
    pub call: u64,
    pub sockets: [LegSockets; 2],
    /// Our SRTP key on each leg.
    pub keys: [srtp::KeySalt; 2],
    pub figures: Arc<Figures>,
}

/// A call's reception figures, published by its worker as packets arrive, read by the engine
/// for the call record.
#[derive(Default)]
pub(super) struct Figures {
    pub legs: [LegFigures; 2],
}

/// One leg's published counters.
#[derive(Default)]
pub(super) struct LegFigures {
    pub packets: AtomicU64,
    pub expected: AtomicU64,
    pub jitter_us: AtomicU64,
}

/// The engine's end of a worker.
pub(super) struct Handle {
    tx: std_mpsc::Sender<Cmd>,
    wake: Arc<EventFd>,
    /// Calls this worker carries now (for spreading new calls).
    pub calls: Arc<AtomicU64>,
    /// The share of its time the worker spent working, lately, in millionths.
    pub load: Arc<AtomicU64>,
}

impl Handle {
    /// Queues a command and wakes the worker.
    pub fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            // A full counter (2^64 - 2 wakes unread) cannot happen: each wake reads it to zero.
            let _ = self.wake.write(1);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.send(Cmd::Shutdown);
    }
}

/// What a worker is told at its start.
pub(super) struct Settings {
    pub long_pound: Duration,
    pub inactivity: Duration,
    pub events: mpsc::UnboundedSender<(u64, MediaEvent)>,
    /// Frame lateness (send time minus due time, either way) in 100 µs buckets.
    pub lateness: Arc<Mutex<Vec<u64>>>,
}

/// Starts a worker thread.
pub(super) fn start(settings: Settings) -> std::io::Result<Handle> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let wake = Arc::new(EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
    )?);
    epoll.add(&*wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
    let (tx, rx) = std_mpsc::channel();
    let calls = Arc::new(AtomicU64::new(0));
    let load = Arc::new(AtomicU64::new(0));
    let (mine, counted, published) = (wake.clone(), calls.clone(), load.clone());
    crate::supervise::thread("media-relay", move || {
        // Built on its own thread: the kernel's message headers hold pointers and stay there.
        Worker {
            epoll,
            wake: mine,
            rx,
            slots: Vec::new(),
            vacant: Vec::new(),
            index: HashMap::new(),
            pacer: Pacer::default(),
            next_scan: Instant::now() + SCAN,
            late: Vec::new(),
            calls: counted,
            io: Batches::new(),
            meter: LoadMeter::new(Instant::now()),
            load: published,
            settings,
        }
        .run()
    })?;
    Ok(Handle {
        tx,
        wake,
        calls,
        load,
    })
}

/// The token of the worker's own wake-up; socket tokens are `slot << 2 | leg << 1 | rtcp`.
const WAKE: u64 = u64::MAX;
/// Readiness events taken from the kernel per wait.
const EVENTS: usize = 512;
/// How often bridged calls are checked for a silent caller.
const SCAN: Duration = Duration::from_millis(500);
/// The runtime's timers tick in whole milliseconds, as `epoll_wait` does: wake a millisecond
/// early and send what is due within it, so frames leave within about a millisecond of their
/// time either side instead of always one to two late.
const EARLY: Duration = Duration::from_millis(1);
/// Buckets of the lateness histogram, 100 µs each, the last one open-ended.
pub(super) const LATENESS_BUCKETS: usize = 1000;
/// The largest datagram read; RTP on a LAN or the Internet is far below it.
const MAX_DATAGRAM: usize = 2048;

struct Worker {
    epoll: Epoll,
    wake: Arc<EventFd>,
    rx: std_mpsc::Receiver<Cmd>,
    /// The calls, by slot; a slot's number is in its sockets' tokens.
    slots: Vec<Option<CallMedia>>,
    vacant: Vec<usize>,
    index: HashMap<u64, usize>,
    /// Due times of every playing stream, by call.
    pacer: Pacer,
    next_scan: Instant,
    /// Lateness of the frames of one pacing round, added to the shared histogram at its end.
    late: Vec<Duration>,
    calls: Arc<AtomicU64>,
    io: Batches,
    meter: LoadMeter,
    load: Arc<AtomicU64>,
    settings: Settings,
}

/// How busy a worker is: the share of wall time it spent working rather than waiting in
/// `epoll_wait`, over windows of [`LoadMeter::WINDOW`], smoothed. Time the thread was ready
/// but had no core counts as working, so a relay starved by the rest of the machine reads as
/// loaded, which it is. I/O-free: the loop tells it when each working stretch began and ended.
#[derive(Debug)]
pub(super) struct LoadMeter {
    window_start: Instant,
    busy: Duration,
    /// Millionths.
    value: u64,
}

impl LoadMeter {
    /// The measuring window.
    pub const WINDOW: Duration = Duration::from_millis(250);

    pub fn new(now: Instant) -> LoadMeter {
        LoadMeter {
            window_start: now,
            busy: Duration::ZERO,
            value: 0,
        }
    }

    /// The worker worked from `from` to `to`; a new figure when a window closes.
    pub fn worked(&mut self, from: Instant, to: Instant) -> Option<u64> {
        self.busy += to.saturating_duration_since(from);
        let span = to.saturating_duration_since(self.window_start);
        if span < Self::WINDOW {
            return None;
        }
        let sample =
            (self.busy.as_nanos() * 1_000_000 / span.as_nanos().max(1)).min(1_000_000) as u64;
        // Half the last window, half the one before: a burst shows within a window or two,
        // and one slow stretch does not shut the door.
        self.value = (self.value + sample) / 2;
        self.window_start = to;
        self.busy = Duration::ZERO;
        Some(self.value)
    }
}

/// Datagrams taken from one socket per readiness, at most.
const BATCH: usize = 16;

/// A worker's batches: the buffers datagrams are read into (and rewritten and sent from), the
/// kernel's message headers for `recvmmsg` and `sendmmsg`, all allocated once.
struct Batches {
    bufs: Box<[u8]>,
    /// Length and source of each datagram of the last read.
    got: [(usize, Option<SocketAddr>); BATCH],
    rx: MultiHeaders<SockaddrStorage>,
    tx: MultiHeaders<SockaddrStorage>,
    /// Rewritten datagrams waiting to go out: which buffer, where in it, to whom.
    out: Vec<(usize, Range<usize>, SocketAddr)>,
}

impl Batches {
    fn new() -> Batches {
        Batches {
            bufs: vec![0u8; BATCH * MAX_DATAGRAM].into_boxed_slice(),
            got: [(0, None); BATCH],
            rx: MultiHeaders::preallocate(BATCH, None),
            tx: MultiHeaders::preallocate(BATCH, None),
            out: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what the socket holds, up to [`BATCH`] datagrams, without waiting.
    fn recv(&mut self, sock: &UdpSocket) -> usize {
        let mut chunks = self.bufs.chunks_exact_mut(MAX_DATAGRAM);
        let mut iov: [[IoSliceMut; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                chunks.next().expect("BATCH buffers of MAX_DATAGRAM"),
            )]
        });
        let Ok(read) = recvmmsg(
            sock.as_raw_fd(),
            &mut self.rx,
            iov.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) else {
            return 0;
        };
        let mut n = 0;
        for r in read {
            self.got[n] = (r.bytes, r.address.and_then(std_addr));
            n += 1;
        }
        n
    }

    /// The `i`th buffer of the last read, its datagram's length long.
    fn datagram(&mut self, i: usize) -> &mut [u8] {
        let at = i * MAX_DATAGRAM;
        &mut self.bufs[at..at + self.got[i].0]
    }

    /// Sends the rewritten datagrams from `sock`, in one call.
    fn flush(&mut self, sock: &UdpSocket) {
        let k = self.out.len();
        if k == 1 {
            let (i, r, to) = &self.out[0];
            let at = i * MAX_DATAGRAM;
            let _ = sock.send_to(&self.bufs[at + r.start..at + r.end], to);
        } else if k > 1 {
            let bufs = &self.bufs;
            let out = &self.out;
            let iov: [[IoSlice; 1]; BATCH] = std::array::from_fn(|j| match out.get(j) {
                Some((i, r, _)) => {
                    let at = i * MAX_DATAGRAM;
                    [IoSlice::new(&bufs[at + r.start..at + r.end])]
                }
                None => [IoSlice::new(&[])],
            });
            let to: [Option<SockaddrStorage>; BATCH] =
                std::array::from_fn(|j| out.get(j).map(|o| SockaddrStorage::from(o.2)));
            let none: [ControlMessage; 0] = [];
            let _ = sendmmsg(
                sock.as_raw_fd(),
                &mut self.tx,
                iov[..k].iter(),
                &to[..k],
                none,
                MsgFlags::MSG_DONTWAIT,
            );
        }
        self.out.clear();
    }
}

/// A kernel socket address as the standard library's.
fn std_addr(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// One leg of a call as its worker keeps it.
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
    srtp: Option<srtp::Leg>,
}

/// A call's media as its worker keeps it.
struct CallMedia {
    call: u64,
    sockets: [LegSockets; 2],
    keys: [srtp::KeySalt; 2],
    legs: [LegState; 2],
    bridged: bool,
    merger: DigitMerger,
    events4733: Rfc4733Receiver,
    inband: InBandDetector,
    seen_4733: bool,
    playback: Option<(Leg, Playback)>,
    /// Whether the pacer has a frame of this call scheduled.
    scheduled: bool,
    /// When the caller's leg last received RTP, and whether its silence was reported.
    last_rx: Instant,
    inactive_told: bool,
    figures: Arc<Figures>,
}

impl LegState {
    fn new() -> LegState {
        LegState {
            sdp: None,
            signalling: None,
            latched: None,
            codec: None,
            coder: None,
            telephone_event: None,
            sender: Sender::new(rand::random(), rand::random(), rand::random()),
            stats: ReceiverStats::default(),
            srtp: None,
        }
    }

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

impl Worker {
    fn run(mut self) {
        let mut ready = vec![EpollEvent::empty(); EVENTS];
        let mut woke = Instant::now();
        loop {
            let slept = Instant::now();
            if let Some(load) = self.meter.worked(woke, slept) {
                self.load.store(load, Ordering::Relaxed);
            }
            let timeout = self.timeout(slept);
            let n = match self.epoll.wait(&mut ready, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                // Only a broken epoll descriptor gets here: the relay cannot go on.
                Err(e) => panic!("epoll_wait: {e}"),
            };
            let now = Instant::now();
            woke = now;
            // Commands first: a packet that arrived beside a call's new SDP is judged by it.
            if ready[..n].iter().any(|e| e.data() == WAKE) {
                let _ = self.wake.read();
                if !self.commands(now) {
                    return;
                }
            }
            for ev in &ready[..n] {
                let token = ev.data();
                if token != WAKE {
                    self.readable(token, now);
                }
            }
            self.pace(Instant::now());
            if now >= self.next_scan {
                self.scan(now);
                self.next_scan = now + SCAN;
            }
        }
    }

    /// How long to wait: until the next frame due (a millisecond early) or the next scan.
    fn timeout(&self, now: Instant) -> EpollTimeout {
        let mut next = self.next_scan;
        if let Some(w) = self.pacer.next_wake() {
            next = next.min(w.checked_sub(EARLY).unwrap_or(w));
        }
        let wait = next.saturating_duration_since(now);
        let ms = wait.as_micros().div_ceil(1000).min(SCAN.as_millis()) as u16;
        EpollTimeout::from(ms)
    }

    /// Applies every queued command; false when the media layer is gone.
    fn commands(&mut self, now: Instant) -> bool {
        loop {
            let cmd = match self.rx.try_recv() {
                Ok(c) => c,
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            };
            match cmd {
                Cmd::Shutdown => return false,
                Cmd::Open(open) => self.open(*open, now),
                Cmd::Close { call } => self.close(call),
                cmd => self.apply(cmd, now),
            }
        }
    }

    fn open(&mut self, open: Open, now: Instant) {
        let slot = self.vacant.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        for (leg, s) in open.sockets.iter().enumerate() {
            for (rtcp, sock) in [(0, &s.rtp), (1, &s.rtcp)] {
                let token = (slot as u64) << 2 | (leg as u64) << 1 | rtcp;
                if let Err(e) = self
                    .epoll
                    .add(sock, EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    // Only the kernel's memory running out gets here; the call has no audio.
                    tracing::error!(call = open.call, error = %e, "cannot watch an RTP socket");
                }
            }
        }
        self.index.insert(open.call, slot);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.slots[slot] = Some(CallMedia {
            call: open.call,
            sockets: open.sockets,
            keys: open.keys,
            legs: [LegState::new(), LegState::new()],
            bridged: false,
            merger: DigitMerger::new(self.settings.long_pound),
            events4733: Rfc4733Receiver::default(),
            inband: InBandDetector::default(),
            seen_4733: false,
            playback: None,
            scheduled: false,
            last_rx: now,
            inactive_told: false,
            figures: open.figures,
        });
    }

    fn close(&mut self, call: u64) {
        let Some(slot) = self.index.remove(&call) else {
            return;
        };
        if let Some(c) = self.slots[slot].take() {
            for s in &c.sockets {
                let _ = self.epoll.delete(&s.rtp);
                let _ = self.epoll.delete(&s.rtcp);
            }
            self.calls.fetch_sub(1, Ordering::Relaxed);
            // The sockets close here, and then the pairs go back to the pool.
        }
        self.vacant.push(slot);
    }

    fn apply(&mut self, cmd: Cmd, now: Instant) {
        let call = match &cmd {
            Cmd::Remote { call, .. }
            | Cmd::Signalling { call, .. }
            | Cmd::Bridge { call, .. }
            | Cmd::Play { call, .. }
            | Cmd::StopPlayback { call }
            | Cmd::Key { call, .. } => *call,
            Cmd::Open(_) | Cmd::Close { .. } | Cmd::Shutdown => return,
        };
        let Some(c) = self.index.get(&call).and_then(|s| self.slots[*s].as_mut()) else {
            return;
        };
        match cmd {
            Cmd::Remote {
                leg,
                remote,
                codec,
                telephone_event,
                srtp,
                ..
            } => {
                let ours = c.keys[leg];
                let l = &mut c.legs[leg];
                match (srtp, l.srtp.as_mut()) {
                    (Some(theirs), Some(s)) if !s.receives_with(&theirs) => s.rekey(&theirs),
                    (Some(_), Some(_)) => {}
                    (Some(theirs), None) => l.srtp = Some(srtp::Leg::new(&theirs, &ours)),
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
            Cmd::Signalling { leg, ip, .. } => c.legs[leg].signalling = Some(ip),
            Cmd::Bridge { on, .. } => {
                if on && !c.bridged {
                    c.last_rx = now;
                }
                c.bridged = on;
                for l in &mut c.legs {
                    l.sender.pause();
                }
            }
            Cmd::Play { leg, prompts, .. } => {
                c.playback = Some((leg, Playback::new(prompts)));
                if !c.scheduled {
                    c.scheduled = true;
                    self.pacer.start(call, now);
                }
            }
            Cmd::StopPlayback { .. } => c.playback = None,
            Cmd::Key {
                digit, duration, ..
            } => {
                let press = KeyEvent::Press {
                    digit,
                    at: now,
                    duration,
                };
                let digits = c.merger.key(Source::Info, press);
                tell(&self.settings.events, call, digits);
            }
            Cmd::Open(_) | Cmd::Close { .. } | Cmd::Shutdown => {}
        }
    }

    /// One socket is readable: read what it holds (level-triggered, so a socket with more
    /// than a batch waiting is reported again by the next wait), and send on in one batch what
    /// is to be relayed.
    fn readable(&mut self, token: u64, now: Instant) {
        let (slot, leg, rtcp) = ((token >> 2) as usize, ((token >> 1) & 1) as Leg, token & 1);
        let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let io = &mut self.io;
        if rtcp == 1 {
            // RTCP is received and dropped: the port is held so nothing else takes it.
            io.recv(&c.sockets[leg].rtcp);
            return;
        }
        let n = io.recv(&c.sockets[leg].rtp);
        for i in 0..n {
            let Some(from) = io.got[i].1 else {
                continue;
            };
            let (digits, out) = c.on_rtp(leg, io.datagram(i), from, now);
            if let Some((range, to)) = out {
                io.out.push((i, range, to));
            }
            tell(&self.settings.events, c.call, digits);
        }
        io.flush(&c.sockets[1 - leg].rtp);
    }

    /// Sends every frame due now (within a millisecond) and reschedules the streams that go on.
    fn pace(&mut self, now: Instant) {
        if self.pacer.next_wake().is_none_or(|w| w > now + EARLY) {
            return;
        }
        for (call, due) in self.pacer.due(now + EARLY) {
            let Some(c) = self.index.get(&call).and_then(|s| self.slots[*s].as_mut()) else {
                continue;
            };
            match c.prompt_frame(now) {
                Frame::Sent => {
                    let sent_at = Instant::now();
                    self.late.push(
                        sent_at
                            .saturating_duration_since(due)
                            .max(due.saturating_duration_since(sent_at)),
                    );
                    self.pacer.again(call, due, now);
                }
                Frame::Held => self.pacer.again(call, due, now),
                Frame::Ended => {
                    c.scheduled = false;
                    let _ = self.settings.events.send((call, MediaEvent::PromptDone));
                }
                Frame::Stopped => c.scheduled = false,
            }
        }
        if !self.late.is_empty() {
            let mut h = self.settings.lateness.locked();
            for l in self.late.drain(..) {
                h[((l.as_micros() / 100) as usize).min(LATENESS_BUCKETS - 1)] += 1;
            }
        }
    }

    /// Reports bridged calls whose caller has sent nothing for the inactivity time.
    fn scan(&mut self, now: Instant) {
        for c in self.slots.iter_mut().flatten() {
            if c.bridged
                && !c.inactive_told
                && now.saturating_duration_since(c.last_rx) >= self.settings.inactivity
            {
                c.inactive_told = true;
                let _ = self.settings.events.send((c.call, MediaEvent::Inactive));
            }
        }
    }
}

/// Sends a call's digits to the engine.
fn tell(events: &mpsc::UnboundedSender<(u64, MediaEvent)>, call: u64, digits: Vec<DigitEvent>) {
    for d in digits {
        let ev = match d {
            DigitEvent::Digit(c) => MediaEvent::Digit(c),
            DigitEvent::LongPound => MediaEvent::LongPound,
        };
        let _ = events.send((call, ev));
    }
}

/// What one pacing round did for a stream.
enum Frame {
    /// A frame went out.
    Sent,
    /// Nothing could be sent this round (no codec yet, or nowhere to send), but the prompt goes on.
    Held,
    /// The prompts have all been played.
    Ended,
    /// Playback was stopped (barge-in or a new call state).
    Stopped,
}

/// True for RTCP on a multiplexed port (RFC 5761 §4: payload types 64–95 after the marker bit).
fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

/// The header fields of a received packet and where its payload lies in it.
struct Received {
    pt: u8,
    marker: bool,
    ts: u32,
    payload: std::ops::Range<usize>,
}

impl CallMedia {
    /// One RTP packet on a leg: checked, counted, searched for digits (the caller's) and,
    /// when bridged, relayed. Returns the digits it completed, and where in `buf` the packet
    /// rewritten for the other leg lies and where it goes, for the caller to send with the
    /// rest of its batch (a packet that had to be copied has been sent already).
    fn on_rtp(
        &mut self,
        leg: Leg,
        buf: &mut [u8],
        from: SocketAddr,
        now: Instant,
    ) -> (Vec<DigitEvent>, Option<(Range<usize>, SocketAddr)>) {
        if is_rtcp(buf) {
            return (Vec::new(), None);
        }
        let me = &mut self.legs[leg];
        // Nobody else's packets: not counted, not opened, not relayed, no digits read from them.
        if !me.accepts(from) {
            crate::metrics::get().rtp_foreign.inc();
            return (Vec::new(), None);
        }
        // An SRTP leg's packets must open with its peer's key before anything is read.
        let mut opened;
        let in_buf = me.srtp.is_none();
        let packet: &mut [u8] = match me.srtp.as_mut() {
            None => buf,
            Some(s) => match s.unprotect(buf) {
                Ok(plain) => {
                    opened = plain;
                    &mut opened
                }
                Err(_) => {
                    crate::metrics::get().srtp_refused.inc();
                    return (Vec::new(), None);
                }
            },
        };
        let Some(p) = rtp::read(packet) else {
            me.stats.malformed += 1;
            return (Vec::new(), None);
        };
        let start = p.payload.as_ptr() as usize - packet.as_ptr() as usize;
        let got = Received {
            pt: p.pt,
            marker: p.marker,
            ts: p.ts,
            payload: start..start + p.payload.len(),
        };
        // Symmetric RTP: send to where the packets come from.
        me.latched.get_or_insert(from);
        me.stats.on_packet(p.seq, p.ts, now);
        let f = &self.figures.legs[leg];
        f.packets.store(me.stats.packets, Ordering::Relaxed);
        f.expected.store(me.stats.expected(), Ordering::Relaxed);
        f.jitter_us
            .store(me.stats.jitter().as_micros() as u64, Ordering::Relaxed);
        let digits = if leg == A {
            self.last_rx = now;
            self.inactive_told = false;
            self.caller_digits(&got, &packet[got.payload.clone()], now)
        } else {
            Vec::new()
        };
        // While a prompt plays to a leg (the credit warning), the other leg's audio waits.
        let prompting_other = self.playback.as_ref().is_some_and(|(l, _)| *l != leg);
        let out = if self.bridged && !prompting_other {
            self.relay(leg, &got, packet, in_buf, now)
        } else {
            None
        };
        (digits, out)
    }

    /// Digits in a caller's packet: telephone-events, or tones in G.711 until the caller has
    /// shown it sends telephone-events.
    fn caller_digits(&mut self, got: &Received, payload: &[u8], now: Instant) -> Vec<DigitEvent> {
        let me = &self.legs[A];
        let keys = if me.telephone_event == Some(got.pt) {
            self.seen_4733 = true;
            self.events4733.on_packet(got.ts, payload, now)
        } else if !self.seen_4733 {
            match me.codec {
                // In-band tones are looked for in G.711 only (an Opus caller that sends digits
                // sends telephone-events).
                Some((pt, c @ (Codec::Pcmu | Codec::Pcma))) if pt == got.pt => {
                    let mut linear = [0i16; 480];
                    let mut keys = Vec::new();
                    for chunk in payload.chunks(linear.len()) {
                        for (s, b) in linear.iter_mut().zip(chunk) {
                            *s = match c {
                                Codec::Pcmu => g711::ulaw_to_linear(*b),
                                _ => g711::alaw_to_linear(*b),
                            };
                        }
                        keys.extend(self.inband.push(&linear[..chunk.len()], now));
                    }
                    return self.merge(Source::InBand, keys, now);
                }
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        self.merge(Source::Rfc4733, keys, now)
    }

    fn merge(&mut self, src: Source, keys: Vec<KeyEvent>, now: Instant) -> Vec<DigitEvent> {
        let mut digits = Vec::new();
        for k in keys {
            digits.extend(self.merger.key(src, k));
        }
        digits.extend(self.merger.tick(now));
        digits
    }

    /// Carries a packet from `leg` on to the other leg, in that leg's sequence and timestamp
    /// space and codec. Our header is written over the packet's own, just before its payload,
    /// and the range to send is returned when the packet is the receive buffer (`in_buf`);
    /// a packet that must be re-encoded through linear audio, sealed with SRTP, or was opened
    /// from SRTP into a copy is sent from here.
    fn relay(
        &mut self,
        leg: Leg,
        got: &Received,
        packet: &mut [u8],
        in_buf: bool,
        now: Instant,
    ) -> Option<(Range<usize>, SocketAddr)> {
        let other = 1 - leg;
        let remote = self.legs[other].remote()?;
        let codec = self.legs[leg].codec;
        let te = self.legs[leg].telephone_event;
        let src_rate = codec.map(|c| c.1.clock_rate()).unwrap_or(8000);
        let mut reencoded = None;
        let header = if te.is_some() && te == Some(got.pt) {
            let to_pt = self.legs[other].telephone_event?;
            self.legs[other]
                .sender
                .relay_header(to_pt, got.marker, got.ts, src_rate, now)
        } else {
            let (Some((pt, from_codec)), Some((to_pt, to_codec))) = (codec, self.legs[other].codec)
            else {
                return None;
            };
            if pt != got.pt {
                return None;
            }
            if codec::transcode_in_place(&mut packet[got.payload.clone()], from_codec, to_codec) {
                self.legs[other]
                    .sender
                    .relay_header(to_pt, got.marker, got.ts, src_rate, now)
            } else {
                let (from, to) = pair(&mut self.legs, leg);
                let payload = &packet[got.payload.clone()];
                let payload = match (from.coder.as_mut(), to.coder.as_mut()) {
                    (Some(f), Some(t)) => codec::transcode(payload, f, t),
                    _ => payload.to_vec(),
                };
                reencoded = to
                    .sender
                    .relay(to_pt, got.marker, got.ts, src_rate, &payload, now);
                reencoded.as_ref()?;
                None
            }
        };
        let out: &[u8] = match (&reencoded, header) {
            (Some(p), _) => p,
            (None, Some(h)) => {
                let at = got.payload.start - HEADER;
                packet[at..got.payload.start].copy_from_slice(&h);
                if in_buf && self.legs[other].srtp.is_none() {
                    return Some((at..got.payload.end, remote));
                }
                &packet[at..got.payload.end]
            }
            (None, None) => return None,
        };
        let sealed;
        let out = match self.legs[other].srtp.as_mut() {
            None => out,
            Some(s) => {
                sealed = s.protect(out)?;
                &sealed
            }
        };
        let _ = self.sockets[other].rtp.send_to(out, remote);
        None
    }

    /// The next frame of the prompt playing to a leg, if one is.
    fn prompt_frame(&mut self, now: Instant) -> Frame {
        let Some((leg, pb)) = self.playback.as_mut() else {
            return Frame::Stopped;
        };
        let leg = *leg;
        let l = &mut self.legs[leg];
        let Some(frame) = pb.next_frame(l.codec.map(|c| c.1).unwrap_or(Codec::Pcmu)) else {
            self.playback = None;
            l.sender.pause();
            return Frame::Ended;
        };
        let (Some((pt, _)), Some(remote)) = (l.codec, l.prompt_remote()) else {
            return Frame::Held;
        };
        let payload = match l.coder.as_mut() {
            Some(coder) => coder.prompt_payload(&frame),
            None => frame.to_vec(),
        };
        let pkt = l.sender.prompt_frame(pt, &payload, now);
        let pkt = match (pkt, l.srtp.as_mut()) {
            (Some(b), Some(s)) => s.protect(&b),
            (b, _) => b,
        };
        match pkt {
            Some(pkt) => {
                let _ = self.sockets[leg].rtp.send_to(&pkt, remote);
                Frame::Sent
            }
            None => Frame::Held,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_is_the_busy_share_of_each_window_smoothed() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = LoadMeter::new(t0);
        // Busy 100 ms of the first 250: 40 %, halved by the smoothing from zero.
        assert_eq!(m.worked(ms(0), ms(100)), None);
        assert_eq!(m.worked(ms(200), ms(200)), None);
        assert_eq!(m.worked(ms(240), ms(250)), Some(220_000));
        // Saturated for a window: climbs toward it.
        assert_eq!(m.worked(ms(250), ms(500)), Some(610_000));
        assert_eq!(m.worked(ms(500), ms(750)), Some(805_000));
        // Idle: one long wait, then a moment of work.
        assert_eq!(m.worked(ms(1999), ms(2000)), Some(402_500 + 400));
    }
}

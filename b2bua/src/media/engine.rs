//! The media layer as the engine sees it: a call's [`Session`] has two RTP legs (caller side
//! and gateway side), each with its RTCP port from the configured range. The session is a
//! handle: the call's sockets and state belong to one relay worker ([`super::relay`]), which
//! latches each peer's address (symmetric RTP, for callers behind NAT), counts packets, loss
//! and jitter, turns the caller's digits into events, plays prompts on a 20 ms grid and, once
//! the call is bridged, relays each packet to the other leg through that leg's own sequence
//! and timestamp space (transcoding only when the legs differ). What the engine asks of the
//! call travels to its worker as a command; events come back on one channel.

use super::dtmf;
use super::ports::PortPool;
use super::relay::{self, Cmd, Figures, Handle, Open};
use super::rtp;
use super::sdp::Codec;
use crate::sync::Lock;
use prompts::set::Prompt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// Relay worker threads; 0 is one per core.
    pub workers: usize,
    /// New calls are refused (503) while every relay worker has been busier than this share
    /// of its time (percent), so the calls already up keep their audio.
    pub max_load_percent: u8,
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
            workers: 0,
            max_load_percent: 85,
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

/// A call's media: the engine's handle on what its relay worker keeps.
pub struct Session {
    call: u64,
    worker: usize,
    local: [SocketAddr; 2],
    /// Our SRTP key on each leg, offered or answered in its SDP when the leg speaks SRTP.
    keys: [super::srtp::KeySalt; 2],
    /// Whether each leg's SDP has been taken, as told to the worker.
    codec_known: [AtomicBool; 2],
    figures: Arc<Figures>,
    media: Media,
}

struct Inner {
    cfg: MediaConfig,
    pool: Arc<PortPool>,
    sessions: AtomicUsize,
    /// Frame lateness (send time minus due time) in 100 µs buckets, the last one open-ended.
    lateness: Arc<Mutex<Vec<u64>>>,
    workers: Vec<Handle>,
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
    /// Starts the media layer and its relay workers; events for calls arrive on the returned
    /// receiver. The workers stop when the last clone of the layer and its sessions are gone.
    pub fn start(cfg: MediaConfig) -> (Media, mpsc::UnboundedReceiver<(u64, MediaEvent)>) {
        let (events, rx) = mpsc::unbounded_channel();
        let workers = match cfg.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 64),
            n => n,
        };
        let lateness = Arc::new(Mutex::new(vec![0; relay::LATENESS_BUCKETS]));
        let workers = (0..workers)
            .map(|_| {
                relay::start(relay::Settings {
                    long_pound: cfg.long_pound,
                    inactivity: cfg.inactivity,
                    events: events.clone(),
                    lateness: lateness.clone(),
                })
                // Only a process out of threads or descriptors at its start gets here.
                .expect("cannot start a media relay worker")
            })
            .collect();
        let media = Media {
            inner: Arc::new(Inner {
                pool: PortPool::new(cfg.bind, cfg.ports, cfg.port_rest),
                cfg,
                sessions: Default::default(),
                lateness,
                workers,
            }),
        };
        (media, rx)
    }

    /// Port pairs free to be drawn now (not held by a call, not resting after a conflict).
    pub fn free_ports(&self) -> usize {
        self.inner.pool.free()
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

    /// Each relay worker's recent load: the share of its time spent working, 0 to 1.
    pub fn relay_load(&self) -> Vec<f64> {
        self.inner
            .workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed) as f64 / 1e6)
            .collect()
    }

    /// Calls with media now.
    pub fn sessions(&self) -> usize {
        self.inner.sessions.load(Ordering::Relaxed)
    }

    /// Whether a new call would get media now (below `max_calls`, a worker under the load
    /// limit): asked when an INVITE arrives, before the call costs the store any work.
    /// [`session`](Self::session) decides for good.
    pub fn has_room(&self) -> std::io::Result<()> {
        if self.inner.sessions.load(Ordering::Relaxed) >= self.inner.cfg.max_calls {
            crate::metrics::get().limit_hit("media_calls");
            return Err(std::io::Error::other(MEDIA_FULL));
        }
        self.worker().map(|_| ())
    }

    /// Opens the two legs of a call's media, unless `max_calls` are already open.
    pub fn session(&self, call: u64) -> std::io::Result<Session> {
        if self.inner.sessions.fetch_add(1, Ordering::AcqRel) >= self.inner.cfg.max_calls {
            self.inner.sessions.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::get().limit_hit("media_calls");
            return Err(std::io::Error::other(MEDIA_FULL));
        }
        let opened = self.open(call);
        if opened.is_err() {
            self.inner.sessions.fetch_sub(1, Ordering::AcqRel);
        }
        opened
    }

    /// The relay worker for a new call: the least busy (then the one with the fewest calls),
    /// or none when even that one is past `max_load_percent`.
    fn worker(&self) -> std::io::Result<usize> {
        let loads: Vec<(u64, u64)> = self
            .inner
            .workers
            .iter()
            .map(|w| {
                (
                    w.load.load(Ordering::Relaxed),
                    w.calls.load(Ordering::Relaxed),
                )
            })
            .collect();
        admit(&loads, self.inner.cfg.max_load_percent).ok_or_else(|| {
            crate::metrics::get().limit_hit("media_load");
            std::io::Error::other(RELAY_BUSY)
        })
    }

    fn open(&self, call: u64) -> std::io::Result<Session> {
        let worker = self.worker()?;
        let sockets = [self.inner.pool.bind_leg()?, self.inner.pool.bind_leg()?];
        let local = [sockets[0].rtp.local_addr()?, sockets[1].rtp.local_addr()?];
        let keys = [super::srtp::new_key(), super::srtp::new_key()];
        let figures = Arc::new(Figures::default());
        self.inner.workers[worker].send(Cmd::Open(Box::new(Open {
            call,
            sockets,
            keys,
            figures: figures.clone(),
        })));
        Ok(Session {
            call,
            worker,
            local,
            keys,
            codec_known: Default::default(),
            figures,
            media: self.clone(),
        })
    }
}

/// What [`Media::session`] says when every relay worker is past its load limit.
pub const RELAY_BUSY: &str = "media relay busy";

/// What [`Media::session`] says when `max_calls` calls have media.
pub const MEDIA_FULL: &str = "media at its call limit";

/// The Warning a caller refused for media capacity reads: the load, the call limit, or (any
/// other failure to open sockets) the port range.
pub fn refusal(e: &std::io::Error) -> &'static str {
    match e.to_string().as_str() {
        RELAY_BUSY => RELAY_BUSY,
        MEDIA_FULL => MEDIA_FULL,
        _ => "no media ports free",
    }
}

/// The admission rule: of the workers' (load in millionths, calls), the least loaded (then
/// fewest calls) takes the call, unless it is past `max_percent`.
fn admit(workers: &[(u64, u64)], max_percent: u8) -> Option<usize> {
    let (i, (load, _)) = workers
        .iter()
        .enumerate()
        .min_by_key(|(_, (load, calls))| (*load, *calls))?;
    (*load <= max_percent as u64 * 10_000).then_some(i)
}

impl Session {
    fn send(&self, cmd: Cmd) {
        self.media.inner.workers[self.worker].send(cmd);
    }

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
        self.codec_known[leg].store(true, Ordering::Relaxed);
        self.send(Cmd::Remote {
            call: self.call,
            leg,
            remote,
            codec,
            telephone_event,
            srtp,
        });
    }

    /// The address a leg's SIP comes from; its RTP may come from there too (NAT).
    pub fn set_signalling(&self, leg: Leg, ip: IpAddr) {
        self.send(Cmd::Signalling {
            call: self.call,
            leg,
            ip,
        });
    }

    /// Whether a leg's SDP has been taken (its codec is known).
    pub fn has_codec(&self, leg: Leg) -> bool {
        self.codec_known[leg].load(Ordering::Relaxed)
    }

    /// Starts or stops relaying between the legs.
    pub fn bridge(&self, on: bool) {
        self.send(Cmd::Bridge {
            call: self.call,
            on,
        });
    }

    /// Plays prompts to a leg; a [`MediaEvent::PromptDone`] follows when they end.
    pub fn play(&self, leg: Leg, prompts: Vec<Arc<Prompt>>) {
        self.send(Cmd::Play {
            call: self.call,
            leg,
            prompts,
        });
    }

    /// Stops a playing prompt (barge-in).
    pub fn stop_playback(&self) {
        self.send(Cmd::StopPlayback { call: self.call });
    }

    /// Counters and the quality figure so far.
    pub fn quality(&self) -> Quality {
        let leg = |l: Leg| {
            let f = &self.figures.legs[l];
            let packets = f.packets.load(Ordering::Relaxed);
            let expected = f.expected.load(Ordering::Relaxed);
            let jitter = Duration::from_micros(f.jitter_us.load(Ordering::Relaxed));
            (packets, expected.saturating_sub(packets), expected, jitter)
        };
        let (a, b) = (leg(A), leg(B));
        let loss = match a.2 {
            0 => 0.0,
            e => a.1 as f64 / e as f64,
        };
        Quality {
            packets: [a.0, b.0],
            lost: [a.1, b.1],
            jitter: [a.3, b.3],
            icpif: rtp::icpif(loss, a.3),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The worker closes the sockets; their ports go back to the pool then.
        self.send(Cmd::Close { call: self.call });
        self.media.inner.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Digits from SIP INFO for a session (`application/dtmf-relay` bodies): merged with the
/// digits from RTP by the call's worker, they arrive as [`MediaEvent`]s like those. False
/// when the body names no digit.
pub fn info_digits(session: &Session, body: &str) -> bool {
    let Some((digit, duration)) = dtmf::parse_dtmf_relay(body) else {
        return false;
    };
    session.send(Cmd::Key {
        call: session.call,
        digit,
        duration,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Call 1, bridged: a µ-law caller at `caller` (SRTP under `srtp` if given) and a gateway
    /// at `gateway` speaking `codec`.
    fn bridged(
        media: &Media,
        caller: SocketAddr,
        srtp: Option<super::super::srtp::KeySalt>,
        gateway: SocketAddr,
        codec: (u8, Codec),
    ) -> Session {
        let s = media.session(1).unwrap();
        s.set_remote(A, caller, (0, Codec::Pcmu), None, srtp);
        s.set_remote(B, gateway, codec, None, None);
        s.bridge(true);
        s
    }

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

    #[test]
    fn a_call_goes_to_the_least_busy_worker_and_none_past_the_limit() {
        // (load in millionths, calls)
        assert_eq!(admit(&[(500_000, 3), (200_000, 9)], 85), Some(1));
        assert_eq!(
            admit(&[(200_000, 3), (200_000, 2)], 85),
            Some(1),
            "a tie: fewer calls"
        );
        assert_eq!(
            admit(&[(850_000, 1)], 85),
            Some(0),
            "at the limit is still in"
        );
        assert_eq!(admit(&[(850_001, 1), (900_000, 0)], 85), None);
        assert_eq!(admit(&[], 85), None);
    }

    /// A relay kept busy refuses new calls, counted, while the call in progress keeps
    /// flowing, and takes them again once the load has passed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_relay_refuses_new_calls_then_takes_them_again() {
        let (media, _events) = Media::start(MediaConfig {
            ports: (46900, 46990),
            workers: 1,
            max_load_percent: 2,
            ..MediaConfig::default()
        });
        let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let gateway = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        gateway
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let s = bridged(
            &media,
            caller.local_addr().unwrap(),
            None,
            gateway.local_addr().unwrap(),
            (0, Codec::Pcmu),
        );
        let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        pkt.extend_from_slice(&[0x55; 160]);
        let hits = || {
            crate::metrics::get()
                .limit_hits
                .get_or_create(&crate::metrics::LimitLabels {
                    limit: "media_load",
                })
                .get()
        };
        let before = hits();
        // Flood the call until the worker's load shows (a window or two).
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let refused = loop {
            for seq in 0..500u16 {
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                let _ = caller.send_to(&pkt, s.local(A));
            }
            match media.session(2) {
                Err(e) => break e,
                Ok(_) if std::time::Instant::now() > until => panic!("never refused"),
                Ok(_) => {}
            }
        };
        assert_eq!(refused.to_string(), RELAY_BUSY);
        assert!(hits() > before);
        let mut buf = [0u8; 2048];
        assert!(
            gateway.recv_from(&mut buf).is_ok(),
            "the call up still flows"
        );
        // Quiet again: within a few windows the door opens.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while media.session(3).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "still refusing when idle"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A burst queued on one socket before its worker reads it goes through as batches, in
    /// order, each packet rewritten where it arrived: our SSRC and sequence, the caller's
    /// µ-law as A-law for the gateway, a CSRC list and header extension dropped (our header
    /// goes just before the payload).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_relayed_in_batches_in_order_and_rewritten_in_place() {
        let (media, _events) = Media::start(MediaConfig {
            ports: (46800, 46820),
            workers: 1,
            ..MediaConfig::default()
        });
        let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let gateway = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s = bridged(
            &media,
            caller.local_addr().unwrap(),
            None,
            gateway.local_addr().unwrap(),
            (8, Codec::Pcma),
        );
        // One CSRC and a one-word extension before a payload of distinct µ-law bytes.
        let packet = |seq: u16| {
            let mut p = vec![0x91, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 42, 0, 0, 0, 7];
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
            p.extend((0..160u16).map(|i| (i as u8).wrapping_mul(3)));
            p
        };
        let alaw: Vec<u8> = (0..160u16)
            .map(|i| {
                prompts::g711::linear_to_alaw(prompts::g711::ulaw_to_linear(
                    (i as u8).wrapping_mul(3),
                ))
            })
            .collect();
        // Let the worker take the call's sockets and SDP, then send faster than it reads.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for seq in 0..100u16 {
            caller.send_to(&packet(seq), s.local(A)).unwrap();
        }
        let mut buf = [0u8; 2048];
        let mut seqs = Vec::new();
        let mut ssrc = None;
        while seqs.len() < 100 {
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(2), gateway.recv_from(&mut buf))
                    .await
                    .expect("every packet relayed")
                    .unwrap();
            assert_eq!(from, s.local(B), "sent from the gateway leg's socket");
            assert_eq!(n, 12 + 160, "our plain header, then the payload");
            let p = rtp::read(&buf[..n]).unwrap();
            assert_eq!(p.pt, 8);
            assert_eq!(p.payload, &alaw[..], "µ-law turned into A-law");
            assert_ne!(p.ssrc, 42, "our SSRC, not the caller's");
            assert_eq!(*ssrc.get_or_insert(p.ssrc), p.ssrc);
            seqs.push(p.seq);
        }
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "in order, none lost: {seqs:?}"
        );
        assert_eq!(s.quality().packets[A], 100);
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
        let theirs = srtp::new_key();
        let s = bridged(
            &media,
            caller.local_addr().unwrap(),
            Some(theirs),
            gateway.local_addr().unwrap(),
            (0, Codec::Pcmu),
        );
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

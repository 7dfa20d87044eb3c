//! RTP for one leg without I/O: what we send ([`Sender`]: one SSRC, our own sequence and
//! timestamp space, continuous across switches between prompt audio and relayed audio, with the
//! marker bit on each new talkspurt), what we receive ([`ReceiverStats`]: packets, loss and
//! jitter as RFC 3550 counts them), and a voice-quality figure for the call record
//! ([`icpif`]).

use rtp_rs::RtpReader;
use std::time::{Duration, Instant};

/// RTP clock ticks per millisecond at 8 kHz (G.711, telephone-event, the receive statistics).
const CLOCK_PER_MS: u64 = 8;

/// The fixed RTP header we send: no CSRC list, no extension.
pub const HEADER: usize = 12;

/// Where the audio we are sending comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Idle,
    Prompt,
    /// Relaying: the source's timestamp and ours at the switch, to map the source's spacing
    /// (rescaled when the clocks differ) into ours.
    Relay {
        src_base: u32,
        our_base: u32,
        src_rate: u32,
    },
}

/// The sending side of one leg.
#[derive(Debug)]
pub struct Sender {
    ssrc: u32,
    seq: u16,
    ts: u32,
    last: Option<Instant>,
    feed: Feed,
    /// Our RTP clock in ticks per millisecond (8 for G.711, 48 for Opus).
    per_ms: u32,
}

impl Sender {
    /// A sender with its SSRC and random starting sequence and timestamp (RFC 3550 §5.1).
    pub fn new(ssrc: u32, seq: u16, ts: u32) -> Sender {
        Sender {
            ssrc,
            seq,
            ts,
            last: None,
            feed: Feed::Idle,
            per_ms: 8,
        }
    }

    /// Sets the leg's RTP clock rate (the codec's), 8 kHz unless told.
    pub fn set_clock_rate(&mut self, hz: u32) {
        self.per_ms = (hz / 1000).max(1);
    }

    /// The SSRC, stable for the whole call.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Our timestamp for a packet sent at `now` after a gap (a switch of feed): the last one
    /// plus the time that passed, so the receiver's clock sees no jump.
    fn resume_ts(&self, now: Instant, frame: u32) -> u32 {
        match self.last {
            Some(last) => {
                let gap =
                    now.saturating_duration_since(last).as_millis() as u64 * self.per_ms as u64;
                self.ts.wrapping_add((gap as u32).max(frame))
            }
            None => self.ts,
        }
    }

    /// The packet, or `None` for a payload type RTP cannot carry (above 127): SDP with one is
    /// refused, so this is the last line of defence, and a packet lost is all it costs.
    fn build(
        &mut self,
        pt: u8,
        marker: bool,
        ts: u32,
        payload: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let header = self.header(pt, marker, ts, now)?;
        let mut packet = Vec::with_capacity(HEADER + payload.len());
        packet.extend_from_slice(&header);
        packet.extend_from_slice(payload);
        Some(packet)
    }

    /// The next packet's fixed header (no CSRC, no extension), counted as sent.
    fn header(&mut self, pt: u8, marker: bool, ts: u32, now: Instant) -> Option<[u8; HEADER]> {
        if pt > 127 {
            return None;
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = ts;
        self.last = Some(now);
        let mut h = [0u8; HEADER];
        h[0] = 0x80;
        h[1] = pt | if marker { 0x80 } else { 0 };
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Some(h)
    }

    /// One 20 ms frame of prompt audio (`None` only for a payload type above 127).
    pub fn prompt_frame(&mut self, pt: u8, payload: &[u8], now: Instant) -> Option<Vec<u8>> {
        let frame = 20 * self.per_ms;
        let (ts, marker) = match self.feed {
            Feed::Prompt => (self.ts.wrapping_add(frame), false),
            _ => (self.resume_ts(now, frame), true),
        };
        self.feed = Feed::Prompt;
        self.build(pt, marker, ts, payload, now)
    }

    /// A packet relayed from the other leg, rewritten into our sequence and timestamp space:
    /// its timestamps keep their spacing (telephone-events keep one timestamp per event).
    pub fn relay(
        &mut self,
        pt: u8,
        marker: bool,
        src_ts: u32,
        src_rate: u32,
        payload: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let header = self.relay_header(pt, marker, src_ts, src_rate, now)?;
        let mut packet = Vec::with_capacity(HEADER + payload.len());
        packet.extend_from_slice(&header);
        packet.extend_from_slice(payload);
        Some(packet)
    }

    /// The header [`Sender::relay`] would put on the packet, for the relay to write over the
    /// received one in place (the payload stays where it arrived).
    pub fn relay_header(
        &mut self,
        pt: u8,
        marker: bool,
        src_ts: u32,
        src_rate: u32,
        now: Instant,
    ) -> Option<[u8; HEADER]> {
        let (src_base, our_base, switched) = match self.feed {
            Feed::Relay {
                src_base,
                our_base,
                src_rate: r,
            } if r == src_rate => (src_base, our_base, false),
            _ => (src_ts, self.resume_ts(now, 20 * self.per_ms), true),
        };
        self.feed = Feed::Relay {
            src_base,
            our_base,
            src_rate,
        };
        // The source's distance from the switch (signed, for reordered packets), in our clock.
        let delta = src_ts.wrapping_sub(src_base) as i32 as i64 * (self.per_ms as i64 * 1000)
            / src_rate.max(1) as i64;
        let ts = our_base.wrapping_add(delta as i32 as u32);
        self.header(pt, marker || switched, ts, now)
    }

    /// The source stopped (a prompt ended, the bridge paused): the next packet starts a talkspurt.
    pub fn pause(&mut self) {
        self.feed = Feed::Idle;
    }
}

/// The fields of a received packet the media engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Payload type.
    pub pt: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Sender's SSRC.
    pub ssrc: u32,
    /// Payload.
    pub payload: &'a [u8],
}

/// A received packet, or `None` for something that is not RTP version 2.
pub fn read(buf: &[u8]) -> Option<Packet<'_>> {
    let r = RtpReader::new(buf).ok()?;
    if r.version() != 2 {
        return None;
    }
    Some(Packet {
        pt: r.payload_type(),
        marker: r.mark(),
        seq: u16::from(r.sequence_number()),
        ts: r.timestamp(),
        ssrc: r.ssrc(),
        payload: r.payload(),
    })
}

/// Reception counters of one leg (RFC 3550 §6.4.1 and appendix A.3, A.8).
#[derive(Debug, Default, Clone)]
pub struct ReceiverStats {
    /// Packets received.
    pub packets: u64,
    /// Packets that were not RTP.
    pub malformed: u64,
    base_seq: Option<u32>,
    max_seq: u32,
    /// Interarrival jitter in RTP clock units (scaled by 16 as in RFC 3550 A.8).
    jitter16: u64,
    last_transit: Option<i64>,
    origin: Option<Instant>,
}

impl ReceiverStats {
    /// One packet with its sequence number and timestamp, arrived at `now`.
    pub fn on_packet(&mut self, seq: u16, ts: u32, now: Instant) {
        self.packets += 1;
        let origin = *self.origin.get_or_insert(now);
        match self.base_seq {
            None => {
                self.base_seq = Some(seq as u32);
                self.max_seq = seq as u32;
            }
            Some(_) => {
                // Extend the 16-bit sequence across wraps.
                let cycles = self.max_seq & !0xffff;
                let mut ext = cycles | seq as u32;
                if ext + 0x8000 < self.max_seq {
                    ext += 0x10000;
                } else if ext > self.max_seq + 0x8000 && ext >= 0x10000 {
                    ext -= 0x10000;
                }
                self.max_seq = self.max_seq.max(ext);
            }
        }
        let arrival = now.duration_since(origin).as_micros() as i64 * CLOCK_PER_MS as i64 / 1000;
        let transit = arrival - ts as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs();
            // J += (|D| - J) / 16, kept ×16 to stay in integers.
            self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        self.base_seq
            .map(|b| (self.max_seq - b) as u64 + 1)
            .unwrap_or(0)
    }

    /// Packets lost (never negative: duplicates do not earn credit).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// Loss as a fraction of what was expected.
    pub fn loss_fraction(&self) -> f64 {
        match self.expected() {
            0 => 0.0,
            e => self.lost() as f64 / e as f64,
        }
    }

    /// Interarrival jitter.
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.jitter16 / 16 * 1000 / CLOCK_PER_MS)
    }
}

/// An ICPIF-style impairment figure (ITU-T G.113; lower is better: under 5 very good, over 20
/// poor) from packet loss and jitter: the loss impairment of G.711 with concealment
/// (Ie = 0, Bpl = 25.1) plus the delay impairment of a jitter buffer twice the jitter on top of
/// 20 ms packetization, with advantage factor 0.
pub fn icpif(loss_fraction: f64, jitter: Duration) -> u32 {
    let ppl = (loss_fraction * 100.0).clamp(0.0, 100.0);
    let ie = 95.0 * ppl / (ppl + 25.1);
    let ta = 20.0 + 2.0 * jitter.as_secs_f64() * 1000.0;
    let idd = if ta <= 100.0 {
        0.0
    } else {
        let x = (ta / 100.0).log2();
        25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
            + 2.0)
    };
    (ie + idd).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn hdr(p: Option<Vec<u8>>) -> (u8, bool, u16, u32, u32) {
        let p = p.expect("a packet");
        let p = read(&p).unwrap();
        (p.pt, p.marker, p.seq, p.ts, p.ssrc)
    }

    #[test]
    fn prompt_then_relay_then_prompt_stays_continuous() {
        let t0 = Instant::now();
        let mut s = Sender::new(0xabc, 65534, 1000);
        let a = hdr(s.prompt_frame(0, &[0xff; 160], t0));
        assert_eq!(
            a,
            (0, true, 65535, 1000, 0xabc),
            "first packet: marker, our ssrc"
        );
        let b = hdr(s.prompt_frame(0, &[0xff; 160], t0 + MS(20)));
        assert_eq!(
            (b.1, b.2, b.3),
            (false, 0, 1160),
            "sequence wraps, timestamp +160"
        );
        // Relayed audio with the other leg's own timestamps: ours continue from the time passed.
        let c = hdr(s.relay(0, false, 555_000, 8000, &[1; 160], t0 + MS(40)));
        assert_eq!((c.1, c.2, c.3, c.4), (true, 1, 1320, 0xabc));
        let d = hdr(s.relay(0, false, 555_160, 8000, &[1; 160], t0 + MS(60)));
        assert_eq!((d.1, d.2, d.3), (false, 2, 1480));
        // A telephone-event keeps one timestamp for its packets.
        let e1 = hdr(s.relay(101, true, 555_320, 8000, &[11, 0, 0, 160], t0 + MS(80)));
        let e2 = hdr(s.relay(101, false, 555_320, 8000, &[11, 0, 1, 64], t0 + MS(100)));
        assert_eq!((e1.3, e2.3, e1.1), (1640, 1640, true));
        // Back to a prompt 200 ms later: the timestamp jumps by the time that passed.
        s.pause();
        let f = hdr(s.prompt_frame(0, &[0xff; 160], t0 + MS(300)));
        assert_eq!((f.1, f.2, f.3), (true, 5, 1640 + 200 * 8));
    }

    #[test]
    fn relaying_between_clocks_rescales_the_spacing() {
        let t0 = Instant::now();
        let mut s = Sender::new(1, 0, 0);
        s.set_clock_rate(48000);
        let a = hdr(s.relay(111, false, 1000, 8000, &[0; 10], t0)).3;
        let b = hdr(s.relay(111, false, 1160, 8000, &[0; 10], t0 + MS(20))).3;
        assert_eq!(
            b.wrapping_sub(a),
            960,
            "20 ms at 8 kHz is 960 ticks at 48 kHz"
        );
        let f = hdr(s.prompt_frame(111, &[0; 10], t0 + MS(40)));
        assert_eq!(
            f.3.wrapping_sub(b),
            960,
            "prompt frames are 20 ms of our clock"
        );
    }

    #[test]
    fn a_payload_type_above_127_gives_no_packet_and_no_panic() {
        let t0 = Instant::now();
        let mut s = Sender::new(1, 10, 0);
        assert!(s.prompt_frame(200, &[0xff; 160], t0).is_none());
        assert!(s.relay(128, false, 0, 8000, &[0xff; 160], t0).is_none());
        // Nothing was counted: the next good packet follows on.
        assert_eq!(hdr(s.prompt_frame(0, &[0xff; 160], t0)).2, 11);
    }

    #[test]
    fn loss_and_jitter() {
        let t0 = Instant::now();
        let mut r = ReceiverStats::default();
        for i in 0..100u16 {
            if i % 10 == 3 {
                continue; // 10 % lost
            }
            r.on_packet(i, i as u32 * 160, t0 + MS(i as u64 * 20));
        }
        assert_eq!(r.expected(), 100);
        assert_eq!(r.lost(), 10);
        assert!((r.loss_fraction() - 0.1).abs() < 1e-9);
        assert_eq!(r.jitter(), Duration::ZERO, "perfectly paced");
        let mut j = ReceiverStats::default();
        for i in 0..200u16 {
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            j.on_packet(i, i as u32 * 160, t0 + MS(i as u64 * 20 + wobble));
        }
        assert!(
            j.jitter() > MS(5) && j.jitter() < MS(15),
            "{:?}",
            j.jitter()
        );
        // Sequence wrap.
        let mut w = ReceiverStats::default();
        for i in 0..20u32 {
            w.on_packet((65530 + i) as u16, i * 160, t0 + MS(i as u64 * 20));
        }
        assert_eq!((w.expected(), w.lost()), (20, 0));
        assert!(read(&[0u8; 4]).is_none());
        assert!(read(&[0x40u8; 12]).is_none(), "version 1 is not RTP");
    }

    #[test]
    fn icpif_grows_with_loss_and_jitter() {
        assert_eq!(icpif(0.0, Duration::ZERO), 0);
        assert!(icpif(0.01, Duration::ZERO) > 0 && icpif(0.01, Duration::ZERO) < 5);
        assert!(icpif(0.05, Duration::ZERO) > 10);
        assert!(icpif(0.0, MS(100)) > 0);
        assert!(icpif(0.2, MS(100)) > icpif(0.2, Duration::ZERO));
    }
}

//! Digits from the caller, from three sources merged into one stream: RFC 4733 telephone-events,
//! in-band tones in G.711 audio (Goertzel), and SIP INFO `application/dtmf-relay`. Holding `#`
//! past a configured time raises one long-pound event while the key is still down.
//!
//! Everything here is I/O-free: packets, samples and INFO bodies go in with the current time,
//! key events and digits come out, and [`DigitMerger::next_wake`] says when the long-pound
//! timer needs a tick.

use std::time::{Duration, Instant};

/// Where a key event was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// Tones detected in the audio.
    InBand,
    /// SIP INFO with `application/dtmf-relay`.
    Info,
}

/// A key going down or up, as one source saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// The key went down.
    Down { digit: char, at: Instant },
    /// The key came up.
    Up { digit: char, at: Instant },
    /// A whole press reported at once (SIP INFO), with its length.
    Press {
        digit: char,
        at: Instant,
        duration: Duration,
    },
}

/// What the call hears from the merged stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitEvent {
    /// A key was pressed (reported when it goes down, so type-ahead is immediate).
    Digit(char),
    /// `#` has been held for the long-pound time; reported once per press.
    LongPound,
}

/// RFC 4733 event code to key.
pub fn event_digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some((b'0' + code) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + code - 12) as char),
        _ => None,
    }
}

/// Reads one RFC 4733 event stream (one RTP SSRC). An event instance is identified by its RTP
/// timestamp: a new timestamp is a new key press; packets for the same timestamp continue it,
/// retransmitted starts included; the end bit ends it, and the repeated end packets after it
/// (sent three times for robustness) are ignored.
#[derive(Debug, Default)]
pub struct Rfc4733Receiver {
    current: Option<(u32, char, bool)>,
    recent_ends: [Option<u32>; 4],
    /// Packets that were too short or carried no key event.
    pub malformed: u64,
}

impl Rfc4733Receiver {
    /// One telephone-event packet's payload and RTP timestamp.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8], now: Instant) -> Vec<KeyEvent> {
        let mut out = Vec::new();
        if payload.len() < 4 {
            self.malformed += 1;
            return out;
        }
        let Some(digit) = event_digit(payload[0]) else {
            self.malformed += 1;
            return out;
        };
        let end = payload[1] & 0x80 != 0;
        if self.recent_ends.contains(&Some(timestamp)) {
            return out;
        }
        match self.current {
            Some((ts, _, _)) if ts == timestamp => {
                if end {
                    self.finish(now, &mut out);
                }
            }
            _ => {
                // A new instance: a previous one whose end was lost ends here.
                if self.current.is_some() {
                    self.finish(now, &mut out);
                }
                self.current = Some((timestamp, digit, false));
                out.push(KeyEvent::Down { digit, at: now });
                if end {
                    self.finish(now, &mut out);
                }
            }
        }
        out
    }

    fn finish(&mut self, now: Instant, out: &mut Vec<KeyEvent>) {
        if let Some((ts, digit, _)) = self.current.take() {
            self.recent_ends.rotate_right(1);
            self.recent_ends[0] = Some(ts);
            out.push(KeyEvent::Up { digit, at: now });
        }
    }
}

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Goertzel block: 205 samples at 8 kHz (25.6 ms), the classic choice for the DTMF grid.
const BLOCK: usize = 205;

/// In-band DTMF detection on 8 kHz audio (Goertzel). A block counts as a key only when one row
/// and one column tone each stand well above the others in their group, their levels are
/// within the allowed twist, and together they carry most of the block's energy (speech and
/// music spread theirs). A key must hold for two blocks (over 40 ms) to go down and be absent
/// for two to come up.
#[derive(Debug)]
pub struct InBandDetector {
    block: Vec<f32>,
    coeffs: [f32; 8],
    down: Option<char>,
    candidate: Option<(char, u32)>,
    misses: u32,
}

impl Default for InBandDetector {
    fn default() -> Self {
        let mut coeffs = [0.0; 8];
        for (i, f) in ROWS.iter().chain(COLS.iter()).enumerate() {
            let k = (0.5 + BLOCK as f32 * f / 8000.0).floor();
            coeffs[i] = 2.0 * (2.0 * std::f32::consts::PI * k / BLOCK as f32).cos();
        }
        InBandDetector {
            block: Vec::with_capacity(BLOCK),
            coeffs,
            down: None,
            candidate: None,
            misses: 0,
        }
    }
}

impl InBandDetector {
    /// Feeds linear samples (decoded G.711) that arrived at `now`.
    pub fn push(&mut self, samples: &[i16], now: Instant) -> Vec<KeyEvent> {
        let mut out = Vec::new();
        for s in samples {
            self.block.push(*s as f32);
            if self.block.len() == BLOCK {
                let key = self.analyse();
                self.block.clear();
                self.step(key, now, &mut out);
            }
        }
        out
    }

    fn analyse(&self) -> Option<char> {
        let energy: f32 = self.block.iter().map(|x| x * x).sum();
        // About -35 dBm0 for the pair: quieter than that is line noise.
        if energy < BLOCK as f32 * 400.0 * 400.0 {
            return None;
        }
        let mut power = [0.0f32; 8];
        for (i, c) in self.coeffs.iter().enumerate() {
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for x in &self.block {
                let s0 = x + c * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            power[i] = s1 * s1 + s2 * s2 - c * s1 * s2;
        }
        let best = |p: &[f32]| {
            let (i, m) = p
                .iter()
                .enumerate()
                .fold((0, 0.0f32), |a, (i, v)| if *v > a.1 { (i, *v) } else { a });
            // Each must beat every other tone of its group by 6 dB.
            let clear = p.iter().enumerate().all(|(j, v)| j == i || *v * 4.0 < m);
            (i, m, clear)
        };
        let (r, rp, rclear) = best(&power[..4]);
        let (c, cp, cclear) = best(&power[4..]);
        if !rclear || !cclear {
            return None;
        }
        // Twist: up to 8 dB either way.
        let twist = cp / rp.max(f32::MIN_POSITIVE);
        if !(0.16..=6.3).contains(&twist) {
            return None;
        }
        // The two tones must carry most of the energy (Goertzel power × 2/N is a tone's energy).
        if (rp + cp) * 2.0 / (BLOCK as f32) < 0.6 * energy {
            return None;
        }
        Some(KEYS[r][c])
    }

    fn step(&mut self, key: Option<char>, now: Instant, out: &mut Vec<KeyEvent>) {
        match (self.down, key) {
            (Some(d), Some(k)) if d == k => self.misses = 0,
            (Some(d), _) => {
                self.misses += 1;
                if self.misses >= 2 {
                    self.down = None;
                    self.misses = 0;
                    out.push(KeyEvent::Up { digit: d, at: now });
                }
            }
            (None, Some(k)) => {
                let n = match self.candidate {
                    Some((c, n)) if c == k => n + 1,
                    _ => 1,
                };
                self.candidate = Some((k, n));
                if n >= 2 {
                    self.down = Some(k);
                    self.candidate = None;
                    out.push(KeyEvent::Down { digit: k, at: now });
                }
            }
            (None, None) => self.candidate = None,
        }
    }
}

/// Reads a SIP INFO `application/dtmf-relay` body (`Signal=5`, `Duration=160` in ms).
pub fn parse_dtmf_relay(body: &str) -> Option<(char, Duration)> {
    let mut signal = None;
    let mut duration = Duration::from_millis(250);
    for line in body.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                signal = match v {
                    "10" => Some('*'),
                    "11" => Some('#'),
                    s if s.len() == 1
                        && matches!(s.as_bytes()[0], b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D' | b'a'..=b'd') =>
                    {
                        Some(s.as_bytes()[0].to_ascii_uppercase() as char)
                    }
                    _ => None,
                }
            }
            "duration" => duration = Duration::from_millis(v.parse().ok()?),
            _ => {}
        }
    }
    signal.map(|s| (s, duration))
}

struct Held {
    digit: char,
    since: Instant,
    long_fired: bool,
}

/// Merges the sources into one de-duplicated digit stream with long pound.
///
/// One physical press can be reported by several sources (an endpoint sending telephone-events
/// and leaving the tones in the audio, or INFO as well), and one long press can arrive as
/// several events (RFC 4733 splits events past 8 s; some endpoints end and restart). A `Down`
/// for the digit already held is the same press; a `Down` for the digit just released, within
/// 30 ms, continues that press. (Two real presses of one key are at least 40 ms apart, ITU-T
/// Q.24, and auto-dialers send a key every 100 ms: "00" must stay two digits.) So each press gives one `Digit`, and one held `#` gives one
/// `LongPound`.
pub struct DigitMerger {
    long_after: Duration,
    rejoin: Duration,
    held: Option<Held>,
    released: Option<(Held, Instant)>,
}

impl DigitMerger {
    /// `long_after` is the long-pound time (default 2 s).
    pub fn new(long_after: Duration) -> DigitMerger {
        DigitMerger {
            long_after,
            rejoin: Duration::from_millis(30),
            held: None,
            released: None,
        }
    }

    /// A key event from one source.
    pub fn key(&mut self, _source: Source, ev: KeyEvent) -> Vec<DigitEvent> {
        let mut out = Vec::new();
        match ev {
            KeyEvent::Down { digit, at } => {
                if self.held.as_ref().is_some_and(|h| h.digit == digit) {
                    return out;
                }
                if let Some(h) = self.held.take() {
                    // A new key while another is down: the other was released.
                    self.released = Some((h, at));
                }
                match self.released.take() {
                    Some((h, up))
                        if h.digit == digit && at.saturating_duration_since(up) <= self.rejoin =>
                    {
                        self.held = Some(h)
                    }
                    _ => {
                        self.held = Some(Held {
                            digit,
                            since: at,
                            long_fired: false,
                        });
                        out.push(DigitEvent::Digit(digit));
                    }
                }
                out.extend(self.tick(at));
            }
            KeyEvent::Up { digit, at } => {
                out.extend(self.tick(at));
                if self.held.as_ref().is_some_and(|h| h.digit == digit) {
                    let h = self.held.take().expect("checked");
                    self.released = Some((h, at));
                }
            }
            KeyEvent::Press {
                digit,
                at,
                duration,
            } => {
                let same = self.held.as_ref().is_some_and(|h| h.digit == digit)
                    || self.released.as_ref().is_some_and(|(h, up)| {
                        h.digit == digit
                            && at.saturating_duration_since(*up) <= self.rejoin + duration
                    });
                if same {
                    return out;
                }
                out.push(DigitEvent::Digit(digit));
                let long = digit == '#' && duration >= self.long_after;
                if long {
                    out.push(DigitEvent::LongPound);
                }
                self.released = Some((
                    Held {
                        digit,
                        since: at,
                        long_fired: long,
                    },
                    at,
                ));
            }
        }
        out
    }

    /// Time passes: a `#` held long enough becomes a long pound now, key still down.
    pub fn tick(&mut self, now: Instant) -> Vec<DigitEvent> {
        match self.held.as_mut() {
            Some(h)
                if h.digit == '#'
                    && !h.long_fired
                    && now.saturating_duration_since(h.since) >= self.long_after =>
            {
                h.long_fired = true;
                vec![DigitEvent::LongPound]
            }
            _ => Vec::new(),
        }
    }

    /// When [`DigitMerger::tick`] must run for a long pound to be on time.
    pub fn next_wake(&self) -> Option<Instant> {
        self.held
            .as_ref()
            .filter(|h| h.digit == '#' && !h.long_fired)
            .map(|h| h.since + self.long_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn ev(code: u8, end: bool, dur: u16) -> Vec<u8> {
        let d = dur.to_be_bytes();
        vec![code, if end { 0x8a } else { 0x0a }, d[0], d[1]]
    }

    #[test]
    fn telephone_events_start_continue_and_end_once() {
        let t0 = Instant::now();
        let mut r = Rfc4733Receiver::default();
        assert_eq!(
            r.on_packet(1000, &ev(5, false, 160), t0),
            vec![KeyEvent::Down { digit: '5', at: t0 }]
        );
        // A retransmitted start and continuation packets say nothing new.
        assert!(r.on_packet(1000, &ev(5, false, 160), t0 + MS(5)).is_empty());
        assert!(r
            .on_packet(1000, &ev(5, false, 320), t0 + MS(20))
            .is_empty());
        assert_eq!(
            r.on_packet(1000, &ev(5, true, 800), t0 + MS(100)),
            vec![KeyEvent::Up {
                digit: '5',
                at: t0 + MS(100)
            }]
        );
        // The end is sent three times.
        assert!(r
            .on_packet(1000, &ev(5, true, 800), t0 + MS(105))
            .is_empty());
        assert!(r
            .on_packet(1000, &ev(5, true, 800), t0 + MS(110))
            .is_empty());
        // The same digit again is a new press (new timestamp).
        assert_eq!(r.on_packet(2000, &ev(5, false, 160), t0 + MS(300)).len(), 1);
        // A new event while one is open ends the first (its end was lost).
        let out = r.on_packet(3000, &ev(11, false, 160), t0 + MS(500));
        assert_eq!(
            out,
            vec![
                KeyEvent::Up {
                    digit: '5',
                    at: t0 + MS(500)
                },
                KeyEvent::Down {
                    digit: '#',
                    at: t0 + MS(500)
                }
            ]
        );
        // Only end packets (a short press whose start was lost): down and up at once.
        let out = r.on_packet(4000, &ev(1, true, 400), t0 + MS(900));
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(r.on_packet(5000, &[1, 2], t0).is_empty());
        assert!(r.on_packet(5000, &ev(200, false, 1), t0).is_empty());
        assert_eq!(r.malformed, 2);
    }

    fn tones(f1: f32, f2: f32, ms: u32, amp: f32) -> Vec<i16> {
        (0..8 * ms)
            .map(|i| {
                let t = i as f32 / 8000.0;
                ((2.0 * std::f32::consts::PI * f1 * t).sin() * amp
                    + (2.0 * std::f32::consts::PI * f2 * t).sin() * amp) as i16
            })
            .collect()
    }

    fn detect(samples: &[i16]) -> Vec<KeyEvent> {
        let mut d = InBandDetector::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (i, chunk) in samples.chunks(160).enumerate() {
            // Through G.711, as it arrives.
            let coded: Vec<i16> = chunk
                .iter()
                .map(|s| prompts::g711::ulaw_to_linear(prompts::g711::linear_to_ulaw(*s)))
                .collect();
            out.extend(d.push(&coded, t0 + MS(20 * i as u64)));
        }
        out
    }

    fn digits(events: &[KeyEvent]) -> String {
        events
            .iter()
            .filter_map(|e| {
                if let KeyEvent::Down { digit, .. } = e {
                    Some(*digit)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn in_band_tones_are_detected_through_g711() {
        let mut audio = Vec::new();
        for (r, c) in [
            (697.0, 1209.0),
            (941.0, 1477.0),
            (852.0, 1336.0),
            (941.0, 1336.0),
        ] {
            audio.extend(tones(r, c, 80, 4000.0));
            audio.extend(vec![0i16; 8 * 80]);
        }
        assert_eq!(digits(&detect(&audio)), "1#80");
        let events = detect(&audio);
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, KeyEvent::Up { .. }))
                .count(),
            4
        );
    }

    #[test]
    fn in_band_rejects_short_tones_single_tones_twist_and_noise() {
        // 30 ms is under the minimum duration.
        assert_eq!(
            digits(&detect(
                &[tones(697.0, 1209.0, 30, 4000.0), vec![0; 800]].concat()
            )),
            ""
        );
        // One tone only.
        assert_eq!(digits(&detect(&tones(697.0, 697.0, 200, 4000.0))), "");
        // 12 dB of twist.
        let twisted: Vec<i16> = (0..1600)
            .map(|i| {
                let t = i as f32 / 8000.0;
                ((2.0 * std::f32::consts::PI * 697.0 * t).sin() * 8000.0
                    + (2.0 * std::f32::consts::PI * 1209.0 * t).sin() * 2000.0)
                    as i16
            })
            .collect();
        assert_eq!(digits(&detect(&twisted)), "");
        // Pseudo-random noise.
        let mut x = 12345u32;
        let noise: Vec<i16> = (0..16000)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                ((x >> 16) as i16) / 4
            })
            .collect();
        assert_eq!(digits(&detect(&noise)), "");
    }

    #[test]
    fn no_false_digits_on_the_shipped_prompts() {
        let (set, _) = prompts::set::PromptSet::load(prompts::set::default_dir()).unwrap();
        let mut heard = String::new();
        for lang in set.languages() {
            for name in prompts::catalogue::names(prompts::say::Lang::from_code(lang).unwrap()) {
                let p = set.get(lang, name).unwrap();
                let linear: Vec<i16> = p
                    .ulaw
                    .iter()
                    .map(|b| prompts::g711::ulaw_to_linear(*b))
                    .collect();
                let mut d = InBandDetector::default();
                let got = digits(&d.push(&linear, Instant::now()));
                if !got.is_empty() {
                    heard.push_str(&format!("{lang}_{name}: {got}\n"));
                }
            }
        }
        assert!(heard.is_empty(), "false digits in speech:\n{heard}");
    }

    #[test]
    fn info_bodies() {
        assert_eq!(
            parse_dtmf_relay("Signal=5\r\nDuration=160\r\n"),
            Some(('5', MS(160)))
        );
        assert_eq!(
            parse_dtmf_relay("Signal= #\nDuration= 2500"),
            Some(('#', MS(2500)))
        );
        assert_eq!(parse_dtmf_relay("Signal=11\r\n"), Some(('#', MS(250))));
        assert_eq!(parse_dtmf_relay("Signal=x\r\n"), None);
        assert_eq!(parse_dtmf_relay("Duration=100"), None);
        assert_eq!(parse_dtmf_relay("Signal=1\r\nDuration=abc"), None);
    }

    #[test]
    fn one_press_seen_by_two_sources_is_one_digit() {
        let t0 = Instant::now();
        let mut m = DigitMerger::new(Duration::from_secs(2));
        assert_eq!(
            m.key(Source::Rfc4733, KeyEvent::Down { digit: '5', at: t0 }),
            vec![DigitEvent::Digit('5')]
        );
        assert!(m
            .key(
                Source::InBand,
                KeyEvent::Down {
                    digit: '5',
                    at: t0 + MS(30)
                }
            )
            .is_empty());
        assert!(m
            .key(
                Source::Rfc4733,
                KeyEvent::Up {
                    digit: '5',
                    at: t0 + MS(100)
                }
            )
            .is_empty());
        assert!(m
            .key(
                Source::InBand,
                KeyEvent::Up {
                    digit: '5',
                    at: t0 + MS(130)
                }
            )
            .is_empty());
        assert!(m
            .key(
                Source::Info,
                KeyEvent::Press {
                    digit: '5',
                    at: t0 + MS(150),
                    duration: MS(100)
                }
            )
            .is_empty());
        // A later press of the same key is a new digit.
        assert_eq!(
            m.key(
                Source::Rfc4733,
                KeyEvent::Down {
                    digit: '5',
                    at: t0 + MS(600)
                }
            ),
            vec![DigitEvent::Digit('5')]
        );
        assert_eq!(
            m.key(
                Source::Info,
                KeyEvent::Press {
                    digit: '7',
                    at: t0 + MS(900),
                    duration: MS(100)
                }
            ),
            vec![DigitEvent::Digit('7')]
        );
    }

    #[test]
    fn the_same_key_twice_is_two_digits() {
        let t0 = Instant::now();
        let mut m = DigitMerger::new(Duration::from_secs(2));
        let mut got = Vec::new();
        for i in 0..3u64 {
            let at = t0 + MS(i * 100);
            got.extend(m.key(Source::Rfc4733, KeyEvent::Down { digit: '0', at }));
            got.extend(m.key(
                Source::Rfc4733,
                KeyEvent::Up {
                    digit: '0',
                    at: at + MS(50),
                },
            ));
        }
        assert_eq!(got, vec![DigitEvent::Digit('0'); 3]);
    }

    #[test]
    fn a_held_pound_gives_one_long_pound_while_still_down() {
        let t0 = Instant::now();
        let mut m = DigitMerger::new(Duration::from_secs(2));
        assert_eq!(
            m.key(Source::Rfc4733, KeyEvent::Down { digit: '#', at: t0 }),
            vec![DigitEvent::Digit('#')]
        );
        assert_eq!(m.next_wake(), Some(t0 + Duration::from_secs(2)));
        assert!(m.tick(t0 + MS(1999)).is_empty());
        assert_eq!(m.tick(t0 + MS(2000)), vec![DigitEvent::LongPound]);
        assert!(m.tick(t0 + MS(3000)).is_empty());
        assert_eq!(m.next_wake(), None);
        // The endpoint splits the long event: end, then a new event right away.
        assert!(m
            .key(
                Source::Rfc4733,
                KeyEvent::Up {
                    digit: '#',
                    at: t0 + MS(8000)
                }
            )
            .is_empty());
        assert!(m
            .key(
                Source::Rfc4733,
                KeyEvent::Down {
                    digit: '#',
                    at: t0 + MS(8020)
                }
            )
            .is_empty());
        assert!(m.tick(t0 + MS(12000)).is_empty());
        assert!(m
            .key(
                Source::Rfc4733,
                KeyEvent::Up {
                    digit: '#',
                    at: t0 + MS(12000)
                }
            )
            .is_empty());
        // A short # is just a digit.
        assert_eq!(
            m.key(
                Source::Rfc4733,
                KeyEvent::Down {
                    digit: '#',
                    at: t0 + MS(20000)
                }
            ),
            vec![DigitEvent::Digit('#')]
        );
        assert!(m
            .key(
                Source::Rfc4733,
                KeyEvent::Up {
                    digit: '#',
                    at: t0 + MS(20200)
                }
            )
            .is_empty());
        assert!(m.tick(t0 + MS(30000)).is_empty());
        // INFO reports a long press whole.
        assert_eq!(
            m.key(
                Source::Info,
                KeyEvent::Press {
                    digit: '#',
                    at: t0 + MS(40000),
                    duration: MS(2500)
                }
            ),
            vec![DigitEvent::Digit('#'), DigitEvent::LongPound]
        );
    }

    #[test]
    fn a_long_pound_through_the_rtp_receiver_and_merger() {
        // 2.5 s of # as telephone-events every 50 ms, the start retransmitted, the end sent 3 times.
        let t0 = Instant::now();
        let mut r = Rfc4733Receiver::default();
        let mut m = DigitMerger::new(Duration::from_secs(2));
        let mut got = Vec::new();
        let mut step = |ts: u32, p: Vec<u8>, at: Instant, got: &mut Vec<DigitEvent>| {
            for k in r.on_packet(ts, &p, at) {
                got.extend(m.key(Source::Rfc4733, k));
            }
            got.extend(m.tick(at));
        };
        step(8000, ev(11, false, 400), t0, &mut got);
        step(8000, ev(11, false, 400), t0 + MS(1), &mut got);
        for i in 1..50u64 {
            step(
                8000,
                ev(11, false, (400 + i * 400) as u16),
                t0 + MS(i * 50),
                &mut got,
            );
        }
        for k in 0..3 {
            step(8000, ev(11, true, 20000), t0 + MS(2500 + k), &mut got);
        }
        assert_eq!(got, vec![DigitEvent::Digit('#'), DigitEvent::LongPound]);
    }
}

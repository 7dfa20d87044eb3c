//! Prompt playback timing without I/O: [`Playback`] cuts a prompt sequence into 20 ms frames of
//! the leg's codec, and [`Pacer`] is the one timer service for every playing stream. A stream
//! is rescheduled on its own 20 ms grid (due + 20 ms, not now + 20 ms), so a late wake-up does
//! not make the stream drift; a stream more than a few frames behind skips ahead instead of
//! sending a burst the receiver's jitter buffer would have to drop.

use crate::media::sdp::Codec;
use prompts::set::Prompt;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One frame: 20 ms at 8 kHz.
pub const FRAME: usize = 160;
/// The frame period.
pub const PERIOD: Duration = Duration::from_millis(20);
/// How far behind a stream may fall before it skips ahead.
const MAX_BEHIND: u32 = 3;

/// A sequence of prompts being played on one leg.
#[derive(Debug, Default)]
pub struct Playback {
    queue: VecDeque<Arc<Prompt>>,
    pos: usize,
}

impl Playback {
    /// Plays these prompts in order.
    pub fn new(prompts: Vec<Arc<Prompt>>) -> Playback {
        Playback {
            queue: prompts.into(),
            pos: 0,
        }
    }

    /// Whether everything has been played.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next 20 ms of audio in `codec` (µ-law for codecs other than G.711, to be re-encoded
    /// by the leg), the last frame of a prompt padded with silence; `None` when the sequence
    /// has ended.
    pub fn next_frame(&mut self, codec: Codec) -> Option<[u8; FRAME]> {
        let prompt = self.queue.front()?;
        let (data, silence) = match codec {
            Codec::Pcma => (&prompt.alaw, 0xd5),
            _ => (&prompt.ulaw, 0xff),
        };
        let mut frame = [silence; FRAME];
        let end = (self.pos + FRAME).min(data.len());
        frame[..end - self.pos].copy_from_slice(&data[self.pos..end]);
        self.pos = end;
        if self.pos >= data.len() {
            self.queue.pop_front();
            self.pos = 0;
        }
        Some(frame)
    }

    /// Stops playing (barge-in).
    pub fn stop(&mut self) {
        self.queue.clear();
        self.pos = 0;
    }
}

/// The timer service: due times of every playing stream.
#[derive(Debug, Default)]
pub struct Pacer {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Pacer {
    /// Schedules stream `id`'s first frame.
    pub fn start(&mut self, id: u64, at: Instant) {
        self.heap.push(Reverse((at, id)));
    }

    /// When the next frame of any stream is due.
    pub fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Every stream whose frame is due at `now`, with the time it was due. The caller sends
    /// each frame and calls [`Pacer::again`] for streams that go on.
    pub fn due(&mut self, now: Instant) -> Vec<(u64, Instant)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            out.push((id, at));
        }
        out
    }

    /// Reschedules a stream one period after its last due time (or, when it has fallen more
    /// than a few frames behind, one period from now).
    pub fn again(&mut self, id: u64, due: Instant, now: Instant) {
        let mut next = due + PERIOD;
        if now.saturating_duration_since(next) > PERIOD * MAX_BEHIND {
            next = now + PERIOD;
        }
        self.heap.push(Reverse((next, id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(n: usize) -> Arc<Prompt> {
        Arc::new(Prompt {
            name: "t".into(),
            ulaw: vec![1; n],
            alaw: vec![2; n],
        })
    }

    #[test]
    fn frames_cross_prompts_and_pad_the_last() {
        let mut p = Playback::new(vec![prompt(200), prompt(160)]);
        let a = p.next_frame(Codec::Pcmu).unwrap();
        assert_eq!(a, [1; FRAME]);
        let b = p.next_frame(Codec::Pcmu).unwrap();
        assert_eq!(&b[..40], &[1; 40]);
        assert_eq!(&b[40..], &[0xff; 120], "µ-law silence");
        let c = p.next_frame(Codec::Pcma).unwrap();
        assert_eq!(c, [2; FRAME]);
        assert!(p.next_frame(Codec::Pcmu).is_none());
        assert!(p.is_done());
        let mut q = Playback::new(vec![prompt(1000)]);
        q.next_frame(Codec::Pcmu);
        q.stop();
        assert!(q.next_frame(Codec::Pcmu).is_none());
    }

    #[test]
    fn streams_keep_their_grid_and_skip_ahead_when_far_behind() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        pacer.start(1, t0);
        pacer.start(2, t0 + Duration::from_millis(7));
        assert_eq!(pacer.next_wake(), Some(t0));
        // Woken 5 ms late: stream 1 is due, and its next frame stays on the grid.
        let now = t0 + Duration::from_millis(5);
        assert_eq!(pacer.due(now), vec![(1, t0)]);
        pacer.again(1, t0, now);
        assert_eq!(pacer.next_wake(), Some(t0 + Duration::from_millis(7)));
        let now = t0 + Duration::from_millis(20);
        assert_eq!(
            pacer.due(now),
            vec![
                (2, t0 + Duration::from_millis(7)),
                (1, t0 + Duration::from_millis(20))
            ]
        );
        pacer.again(1, t0 + Duration::from_millis(20), now);
        // Stream 2 stopped (not rescheduled). Stream 1 is stalled for 200 ms: it skips ahead.
        let now = t0 + Duration::from_millis(240);
        assert_eq!(pacer.due(now), vec![(1, t0 + Duration::from_millis(40))]);
        pacer.again(1, t0 + Duration::from_millis(40), now);
        assert_eq!(pacer.next_wake(), Some(now + PERIOD));
    }
}

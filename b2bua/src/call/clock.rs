//! The money clock of one bridged call: when the held money runs out, when to ask the store
//! for the next chunk, and when to warn the caller.
//!
//! The store holds money in chunks (a reservation of `granted` seconds out of the `credit`
//! seconds the card could buy). The call must be cut off exactly when what is held runs out,
//! ask for more early enough that a slow store does not cut a caller who has money, and never
//! run past the configured maximum duration. Those three instants, and the warning before the
//! credit ends, move together; keeping them in one type means no caller of it can move one
//! and forget another.

use std::time::{Duration, Instant};

/// What the store held for a call before it was answered: seconds held now, and seconds the
/// card's whole balance would buy at this rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grant {
    /// Seconds of talk the current reservation pays for.
    pub granted: u64,
    /// Seconds of talk the card could pay for in all (the "credit time" a flow announces).
    pub credit: u64,
}

/// Why a call was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// The money held ran out and no more was granted.
    Credit,
    /// The configured maximum call duration was reached.
    MaxDuration,
}

impl Cutoff {
    /// The cause written to the call record.
    pub fn cause(self) -> &'static str {
        match self {
            Cutoff::Credit => "cutoff",
            Cutoff::MaxDuration => "max duration",
        }
    }
}

/// What the clock asks for when it is polled at or after one of its instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// End the call now; it talked for `talk` (exactly what was held, not when the timer
    /// happened to fire).
    Cutoff {
        /// Talk time from the answer to the cutoff instant.
        talk: Duration,
        /// Why.
        why: Cutoff,
    },
    /// Tell the caller the credit is about to end.
    Warn,
    /// Ask the store to extend the hold.
    Extend,
}

/// The clock of one answered bridge; see the module documentation.
#[derive(Debug, Clone)]
pub struct MoneyClock {
    answered: Instant,
    max: Duration,
    /// `None` for a free call: nothing is held, so nothing can be extended.
    grant: Option<Grant>,
    cutoff: Option<Instant>,
    extend_at: Option<Instant>,
    warning_at: Option<Instant>,
}

/// How long before the held money runs out the next chunk is asked for: half the chunk, at
/// most 30 seconds, so a short first chunk is still extended in time.
fn extension_margin(granted: u64) -> Duration {
    Duration::from_secs((granted / 2).min(30))
}

impl MoneyClock {
    /// A paid call answered at `answered`: cut off when `grant.granted` runs out (or at
    /// `max`), extended while the card has more, and warned `warn_before` the credit ends
    /// (flows warn; pinless calls have no one to hear it).
    pub fn paid(
        answered: Instant,
        grant: Grant,
        max: Duration,
        warn_before: Option<Duration>,
    ) -> MoneyClock {
        let mut clock = MoneyClock {
            answered,
            max,
            grant: Some(grant),
            cutoff: None,
            extend_at: None,
            warning_at: None,
        };
        clock.plan(grant, true, answered);
        let credit = Duration::from_secs(grant.credit);
        clock.warning_at = warn_before
            .filter(|w| credit > *w)
            .map(|w| answered + (credit - w));
        clock
    }

    /// A call that costs nothing (the customer-service number a redirect code sends the
    /// caller to): it ends only at the maximum duration.
    pub fn free(answered: Instant, max: Duration) -> MoneyClock {
        MoneyClock {
            answered,
            max,
            grant: None,
            cutoff: Some(answered + max),
            extend_at: None,
            warning_at: None,
        }
    }

    /// When the call was answered.
    pub fn answered(&self) -> Instant {
        self.answered
    }

    /// Seconds held so far (none for a free call).
    pub fn granted(&self) -> u64 {
        self.grant.map_or(0, |g| g.granted)
    }

    /// The store extended the hold to `granted` seconds in all; `more` says whether the card
    /// has more still. An answer that holds no more than before (a retry, a late duplicate)
    /// changes nothing. Returns whether the clock moved.
    pub fn extended(&mut self, granted: u64, more: bool, now: Instant) -> bool {
        let Some(mut grant) = self.grant.filter(|g| granted > g.granted) else {
            return false;
        };
        if self.cutoff.is_none() {
            return false;
        }
        grant.granted = granted;
        self.grant = Some(grant);
        self.plan(grant, more, now);
        true
    }

    /// The earliest instant at which [`MoneyClock::poll`] has something to say.
    pub fn next_wake(&self) -> Option<Instant> {
        [self.cutoff, self.extend_at, self.warning_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// What is due at `now`, one thing at a time: the cutoff first (after it nothing else
    /// is), then the warning, then the extension. Poll until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Tick> {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.cutoff) {
            let at = self.cutoff.take().expect("due");
            self.extend_at = None;
            self.warning_at = None;
            let talk = at - self.answered;
            let why = if talk >= self.max {
                Cutoff::MaxDuration
            } else {
                Cutoff::Credit
            };
            return Some(Tick::Cutoff { talk, why });
        }
        if due(self.warning_at) {
            self.warning_at = None;
            return Some(Tick::Warn);
        }
        if due(self.extend_at) {
            // Asked once per chunk; the answer (`extended`) plans the next.
            self.extend_at = None;
            return Some(Tick::Extend);
        }
        None
    }

    /// The cutoff for what is held, and the next extension while there is more to hold.
    fn plan(&mut self, grant: Grant, extendable: bool, now: Instant) {
        let held = Duration::from_secs(grant.granted);
        self.cutoff = Some(self.answered + held.min(self.max));
        let more = grant.credit > grant.granted && held < self.max;
        self.extend_at = (extendable && more)
            .then(|| (self.answered + held - extension_margin(grant.granted)).max(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(4 * 3600);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn grant(granted: u64, credit: u64) -> Grant {
        Grant { granted, credit }
    }

    /// The ticks of a cutoff after `talk` seconds.
    fn cut(talk: u64, why: Cutoff) -> Vec<Tick> {
        vec![Tick::Cutoff { talk: s(talk), why }]
    }

    /// Every tick due at `now`, in order.
    fn drain(c: &mut MoneyClock, now: Instant) -> Vec<Tick> {
        std::iter::from_fn(|| c.poll(now)).collect()
    }

    #[test]
    fn a_call_with_all_its_money_held_is_cut_off_exactly_when_it_runs_out() {
        let t0 = Instant::now();
        let mut c = MoneyClock::paid(t0, grant(300, 300), MAX, None);
        assert_eq!(c.next_wake(), Some(t0 + s(300)));
        assert_eq!(drain(&mut c, t0 + s(299)), vec![]);
        // The timer fired late: the talk time is still what was held.
        let ticks = drain(&mut c, t0 + s(302));
        assert_eq!(ticks, cut(300, Cutoff::Credit));
        assert_eq!(c.next_wake(), None);
    }

    #[test]
    fn the_next_chunk_is_asked_for_before_the_held_one_runs_out() {
        let t0 = Instant::now();
        let mut c = MoneyClock::paid(t0, grant(120, 1000), MAX, None);
        // 30 s before the end of the 120 s held.
        assert_eq!(c.next_wake(), Some(t0 + s(90)));
        assert_eq!(drain(&mut c, t0 + s(90)), vec![Tick::Extend]);
        // Asked once: nothing more until the cutoff.
        assert_eq!(c.next_wake(), Some(t0 + s(120)));
        assert!(c.extended(240, true, t0 + s(91)));
        assert_eq!(c.granted(), 240);
        assert_eq!(c.next_wake(), Some(t0 + s(210)));
        assert_eq!(drain(&mut c, t0 + s(119)), vec![]);
    }

    #[test]
    fn a_short_chunk_is_extended_at_half_its_length() {
        let t0 = Instant::now();
        let c = MoneyClock::paid(t0, grant(20, 100), MAX, None);
        assert_eq!(c.next_wake(), Some(t0 + s(10)));
    }

    #[test]
    fn a_refused_or_repeated_extension_leaves_the_cutoff_where_it_was() {
        let t0 = Instant::now();
        let mut c = MoneyClock::paid(t0, grant(120, 1000), MAX, None);
        assert_eq!(drain(&mut c, t0 + s(90)), vec![Tick::Extend]);
        // The same 120 s again (a retried answer) moves nothing.
        assert!(!c.extended(120, true, t0 + s(91)));
        let ticks = drain(&mut c, t0 + s(120));
        assert_eq!(ticks, cut(120, Cutoff::Credit));
        // An answer after the cutoff cannot revive the call.
        assert!(!c.extended(600, true, t0 + s(121)));
        assert_eq!(c.next_wake(), None);
    }

    #[test]
    fn the_last_chunk_is_not_extended() {
        let t0 = Instant::now();
        let mut c = MoneyClock::paid(t0, grant(120, 1000), MAX, None);
        assert_eq!(drain(&mut c, t0 + s(90)), vec![Tick::Extend]);
        // The store held the rest of the card: nothing more to ask.
        assert!(c.extended(1000, false, t0 + s(91)));
        assert_eq!(c.next_wake(), Some(t0 + s(1000)));
    }

    #[test]
    fn a_late_extension_is_asked_for_at_once_rather_than_in_the_past() {
        let t0 = Instant::now();
        let mut c = MoneyClock::paid(t0, grant(120, 1000), MAX, None);
        assert_eq!(drain(&mut c, t0 + s(90)), vec![Tick::Extend]);
        // The store answered very late with a small chunk whose own margin has passed.
        assert!(c.extended(150, true, t0 + s(140)));
        assert_eq!(c.next_wake(), Some(t0 + s(140)));
    }

    #[test]
    fn the_maximum_duration_caps_a_card_with_more_money() {
        let t0 = Instant::now();
        let max = s(300);
        let mut c = MoneyClock::paid(t0, grant(600, 100_000), max, None);
        assert_eq!(c.next_wake(), Some(t0 + s(300)));
        let ticks = drain(&mut c, t0 + s(300));
        assert_eq!(ticks, cut(300, Cutoff::MaxDuration));
        assert_eq!(Cutoff::MaxDuration.cause(), "max duration");
    }

    #[test]
    fn the_warning_comes_before_the_credit_ends_and_not_for_a_short_credit() {
        let t0 = Instant::now();
        let mut c = MoneyClock::paid(t0, grant(300, 300), MAX, Some(s(60)));
        assert_eq!(c.next_wake(), Some(t0 + s(240)));
        assert_eq!(drain(&mut c, t0 + s(240)), vec![Tick::Warn]);
        assert_eq!(c.next_wake(), Some(t0 + s(300)));
        // Less credit than the warning: no warning at all.
        let short = grant(50, 50);
        let c = MoneyClock::paid(t0, short, MAX, Some(s(60)));
        assert_eq!(c.next_wake(), Some(t0 + s(50)));
    }

    #[test]
    fn a_cutoff_due_with_a_warning_ends_the_call_without_the_warning() {
        let t0 = Instant::now();
        let mut c = MoneyClock::paid(t0, grant(100, 100), MAX, Some(s(10)));
        let ticks = drain(&mut c, t0 + s(200));
        assert_eq!(ticks, cut(100, Cutoff::Credit));
    }

    #[test]
    fn a_free_call_runs_to_the_maximum_duration_only() {
        let t0 = Instant::now();
        let mut c = MoneyClock::free(t0, s(3600));
        assert_eq!(c.next_wake(), Some(t0 + s(3600)));
        assert!(!c.extended(10, true, t0));
        assert_eq!(drain(&mut c, t0 + s(3600)), cut(3600, Cutoff::MaxDuration));
    }
}

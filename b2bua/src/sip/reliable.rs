//! The headers of reliable provisional responses (RFC 3262): a gateway that sends its `183`
//! with `Require: 100rel` numbers it with `RSeq` and retransmits it until our `PRACK` names it
//! back in `RAck`. Carriers use it so that early media (announcements, ringback) is known to
//! have reached the caller's side before they start charging for it or give up. We do the
//! same toward a caller that asks for it: [`Sender`] numbers, resends and retires our own.

use super::message::{hdr, Method, Response, SipExt};
use super::session_timer::has_option;
use std::fmt;
use std::time::{Duration, Instant};

/// The option tag in `Supported`/`Require`.
pub const TAG: &str = "100rel";

/// Whether a provisional response asks to be acknowledged with PRACK.
pub fn is_reliable(resp: &impl SipExt) -> bool {
    resp.header_values("Require")
        .iter()
        .any(|v| v.trim().eq_ignore_ascii_case(TAG))
}

/// Whether the message's sender can send or acknowledge reliable provisional responses.
pub fn supports(msg: &impl SipExt) -> bool {
    has_option(msg, TAG)
}

/// A response's `RSeq` (RFC 3262 §7.1: 1 to 2**32-1), if it has one; a malformed one is an
/// error for the log.
pub fn rseq(resp: &impl SipExt) -> Option<Result<u32, String>> {
    resp.header("RSeq").map(|v| {
        let t = v.trim();
        match t.parse::<u32>() {
            Ok(n) if n > 0 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!("RSeq {v:?} is not a response number")),
        }
    })
}

/// The `RAck` of a PRACK (RFC 3262 §7.2): which reliable response of which request it
/// acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RAck {
    /// The response's `RSeq`.
    pub rseq: u32,
    /// The CSeq number of the request it answered.
    pub cseq: u32,
    /// That request's method.
    pub method: Method,
}

impl RAck {
    /// Reads a PRACK's `RAck` value (`response-num CSeq-num Method`, RFC 3262 §7.2).
    pub fn parse(value: &str) -> Result<RAck, String> {
        let bad = || format!("RAck {value:?} is not `RSeq CSeq method`");
        let mut words = value.split_ascii_whitespace();
        let (Some(rseq), Some(cseq), Some(method), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let number = |w: &str| {
            w.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| w.parse::<u32>().ok())
                .flatten()
        };
        match (number(rseq), number(cseq), method.parse::<Method>()) {
            (Some(rseq), Some(cseq), Ok(method)) if rseq > 0 => Ok(RAck { rseq, cseq, method }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for RAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.rseq, self.cseq, self.method)
    }
}

/// What to do with one provisional response to our INVITE, given the `RSeq` of the last
/// reliable one we took on this early dialog (RFC 3262 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisional {
    /// An ordinary provisional response: pass it on.
    Unreliable,
    /// The next reliable response: acknowledge it with this RAck and pass it on.
    Prack(RAck),
    /// A retransmission, or one out of order: neither acknowledged nor passed on.
    Ignore,
}

/// Classifies a provisional response to our INVITE numbered `invite_cseq`. A reliable one
/// without a readable `RSeq` is taken as unreliable: it cannot be acknowledged, and the early
/// media it may carry is still worth relaying.
pub fn classify(resp: &impl SipExt, invite_cseq: u32, last: Option<u32>) -> Provisional {
    if !is_reliable(resp) {
        return Provisional::Unreliable;
    }
    let Some(Ok(rseq)) = rseq(resp) else {
        return Provisional::Unreliable;
    };
    let next = match last {
        None => true,
        Some(l) => l.checked_add(1) == Some(rseq),
    };
    if !next {
        return Provisional::Ignore;
    }
    Provisional::Prack(RAck {
        rseq,
        cseq: invite_cseq,
        method: Method::Invite,
    })
}

/// Our reliable provisional responses on one server INVITE (RFC 3262 §3): each numbered in
/// `RSeq`, resent from T1 doubling until its PRACK comes, one out at a time (a later one
/// waits, only the newest kept). The transaction layer resends only final responses; these
/// are the call's own to keep alive, so the type is I/O-free and told the time.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The `RSeq` of the next one.
    next: u32,
    t1: Duration,
    out: Option<Outstanding>,
    waiting: Option<Response>,
}

#[derive(Debug, Clone)]
struct Outstanding {
    resp: Response,
    rseq: u32,
    resend_at: Instant,
    interval: Duration,
    give_up_at: Instant,
}

/// What a [`Sender`] says is due.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Send this again.
    Resend(Response),
    /// No PRACK within 64·T1: the caller cannot be reached reliably (RFC 3262 §3 says reject
    /// the INVITE with a 5xx).
    GaveUp,
}

impl Sender {
    /// A sender whose first response is numbered `first` (RFC 3262 §3: chosen at random,
    /// below 2**31, so the numbers never wrap during the call).
    pub fn new(first: u32, t1: Duration) -> Sender {
        Sender {
            next: (first % (1 << 31)).max(1),
            t1,
            out: None,
            waiting: None,
        }
    }

    /// Makes `resp` reliable (`Require: 100rel`, its `RSeq`) and returns it when it can go
    /// now; while another is unacknowledged it waits, replacing any older one waiting.
    pub fn send(&mut self, mut resp: Response, now: Instant) -> Option<Response> {
        if self.out.is_some() {
            self.waiting = Some(resp);
            return None;
        }
        let rseq = self.next;
        self.next = self.next.saturating_add(1);
        resp.headers.push(hdr("Require", TAG));
        resp.headers.push(hdr("RSeq", rseq.to_string()));
        self.out = Some(Outstanding {
            resp: resp.clone(),
            rseq,
            resend_at: now + self.t1,
            interval: self.t1,
            give_up_at: now + self.t1 * 64,
        });
        Some(resp)
    }

    /// A PRACK for our INVITE numbered `invite_cseq`: `None` when it acknowledges nothing
    /// outstanding (answered 481), else the response that was waiting for it, now to send.
    pub fn prack(
        &mut self,
        rack: &RAck,
        invite_cseq: u32,
        now: Instant,
    ) -> Option<Option<Response>> {
        let out = self.out.as_ref()?;
        if rack.rseq != out.rseq || rack.cseq != invite_cseq || rack.method != Method::Invite {
            return None;
        }
        self.out = None;
        Some(self.waiting.take().and_then(|r| self.send(r, now)))
    }

    /// Whether an unacknowledged response carries SDP: then no 2xx may follow until it is
    /// acknowledged (RFC 3262 §3), or the answer in it might never have arrived.
    pub fn holds_final(&self) -> bool {
        self.out.as_ref().is_some_and(|o| !o.resp.body.is_empty())
    }

    /// The final response went out: nothing more is sent or waited for.
    pub fn finish(&mut self) {
        self.out = None;
        self.waiting = None;
    }

    /// When [`Sender::poll`] next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        self.out.as_ref().map(|o| o.resend_at.min(o.give_up_at))
    }

    /// What is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        let out = self.out.as_mut()?;
        if now >= out.give_up_at {
            self.finish();
            return Some(Due::GaveUp);
        }
        if now < out.resend_at {
            return None;
        }
        out.interval *= 2;
        out.resend_at = (now + out.interval).min(out.give_up_at);
        Some(Due::Resend(out.resp.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse_datagram, SipMessage};

    fn resp(extra: &str) -> crate::sip::message::Response {
        let t = format!(
            "SIP/2.0 183 Session Progress\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 4 INVITE\r\n{extra}\
Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(t.as_bytes()).unwrap() {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_first_reliable_response_and_each_next_one_are_acknowledged() {
        let first = resp("Require: 100rel\r\nRSeq: 7\r\n");
        let rack = RAck {
            rseq: 7,
            cseq: 4,
            method: Method::Invite,
        };
        assert_eq!(classify(&first, 4, None), Provisional::Prack(rack));
        assert_eq!(rack.to_string(), "7 4 INVITE");
        assert_eq!(classify(&first, 4, Some(7)), Provisional::Ignore, "resent");
        let second = resp("Require: 100rel\r\nRSeq: 8\r\n");
        assert!(matches!(
            classify(&second, 4, Some(7)),
            Provisional::Prack(RAck { rseq: 8, .. })
        ));
        let skipped = resp("Require: 100rel\r\nRSeq: 10\r\n");
        assert_eq!(classify(&skipped, 4, Some(7)), Provisional::Ignore);
        let wrapped = resp(&format!("Require: 100rel\r\nRSeq: {}\r\n", u32::MAX));
        assert_eq!(classify(&wrapped, 4, Some(u32::MAX)), Provisional::Ignore);
    }

    #[test]
    fn rack_reads_back_and_refuses_what_is_not_one() {
        let r = RAck::parse(" 7  4 INVITE ").unwrap();
        assert_eq!(
            r,
            RAck {
                rseq: 7,
                cseq: 4,
                method: Method::Invite
            }
        );
        assert_eq!(RAck::parse(&r.to_string()), Ok(r));
        for bad in [
            "",
            "7",
            "7 4",
            "7 4 INVITE x",
            "0 4 INVITE",
            "-7 4 INVITE",
            "+7 4 INVITE",
            "7 99999999999 INVITE",
            "7 4 FROB",
            "x 4 INVITE",
        ] {
            assert!(RAck::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn our_reliable_responses_are_numbered_resent_and_acknowledged_one_at_a_time() {
        let t1 = Duration::from_millis(500);
        let t0 = Instant::now();
        let mut s = Sender::new(41, t1);
        let mut ringing = resp("");
        ringing.body = b"v=0".to_vec();
        let first = s.send(ringing, t0).expect("nothing out: sent now");
        assert!(is_reliable(&first));
        assert_eq!(rseq(&first), Some(Ok(41)));
        assert!(s.holds_final(), "its SDP must be acknowledged before a 2xx");
        // A second waits for the first's PRACK.
        assert_eq!(s.send(resp(""), t0), None);
        // Resent at T1, 2·T1 after that, 4·T1 …
        assert_eq!(s.next_wake(), Some(t0 + t1));
        assert_eq!(s.poll(t0 + t1 / 2), None);
        assert_eq!(s.poll(t0 + t1), Some(Due::Resend(first.clone())));
        assert_eq!(s.next_wake(), Some(t0 + t1 * 3));
        // A PRACK for something else acknowledges nothing.
        let wrong = RAck {
            rseq: 40,
            cseq: 1,
            method: Method::Invite,
        };
        assert_eq!(s.prack(&wrong, 1, t0), None);
        let other_invite = RAck {
            rseq: 41,
            cseq: 2,
            method: Method::Invite,
        };
        assert_eq!(s.prack(&other_invite, 1, t0), None);
        let right = RAck {
            rseq: 41,
            cseq: 1,
            method: Method::Invite,
        };
        let second = s
            .prack(&right, 1, t0 + t1)
            .expect("acknowledged")
            .expect("the next goes");
        assert_eq!(rseq(&second), Some(Ok(42)));
        assert!(!s.holds_final(), "no SDP in the second");
        assert_eq!(s.prack(&right, 1, t0 + t1), None, "acknowledged already");
        // Unacknowledged for 64·T1: given up.
        let start = t0 + t1;
        let mut resent = 0;
        let now = loop {
            let now = s.next_wake().expect("something out");
            match s.poll(now) {
                Some(Due::Resend(_)) => resent += 1,
                Some(Due::GaveUp) => break now,
                None => unreachable!("woken for nothing"),
            }
        };
        assert_eq!(now, start + t1 * 64);
        assert!(resent >= 5, "resent {resent} times");
        assert_eq!(s.next_wake(), None);
        s.finish();
        assert!(
            s.send(resp(""), now).is_some(),
            "after the end, nothing waits"
        );
    }

    #[test]
    fn unreliable_and_unnumbered_responses_pass_unacknowledged() {
        assert_eq!(classify(&resp(""), 4, None), Provisional::Unreliable);
        assert_eq!(
            classify(&resp("Supported: 100rel\r\nRSeq: 1\r\n"), 4, None),
            Provisional::Unreliable,
            "Supported is not Require"
        );
        for bad in ["", "0", "x", "-1", "1.5", "99999999999"] {
            let r = resp(&format!("Require: 100rel\r\nRSeq: {bad}\r\n"));
            assert_eq!(classify(&r, 4, None), Provisional::Unreliable, "{bad:?}");
        }
        assert!(rseq(&resp("RSeq: 0\r\n")).unwrap().is_err());
        assert!(supports(&resp("Supported: timer, 100rel\r\n")));
        assert!(!supports(&resp("Supported: timer\r\n")));
    }
}

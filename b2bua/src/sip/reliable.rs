//! The headers of reliable provisional responses (RFC 3262): a gateway that sends its `183`
//! with `Require: 100rel` numbers it with `RSeq` and retransmits it until our `PRACK` names it
//! back in `RAck`. Carriers use it so that early media (announcements, ringback) is known to
//! have reached the caller's side before they start charging for it or give up.

use super::message::{Method, SipExt};
use super::session_timer::has_option;
use std::fmt;

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

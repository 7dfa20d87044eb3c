//! Session timers (RFC 4028) on one leg: what each side agreed, when the next refresh is due
//! and when the leg is dead. Each leg keeps its own, since the caller and the carrier each
//! negotiate with us and not with each other. Whoever refreshes sends a re-INVITE or UPDATE
//! at half the interval; if the refresh does not come (or ours is not answered), the leg is
//! over, and so is the call: that is what ends a call whose BYE was lost instead of letting it
//! run — and spend — until its cutoff.

use crate::config::SessionTimers;
use crate::sip::message::{hdr, Header, Request, Response};
use crate::sip::session_timer::{
    allows, min_se, supports_timer, Refresher, SessionExpires, MIN_SE_FLOOR,
};
use crate::sip::transaction::TxKey;
use std::time::{Duration, Instant};

/// What a leg agreed: the interval, who refreshes, and what the peer can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// Session-Expires, in seconds.
    pub interval: u32,
    /// Whether we refresh (else the peer does, and we only watch).
    pub we_refresh: bool,
    /// Whether the peer takes part (said `timer`): our answers then Require it.
    pub peer_supports: bool,
    /// Whether the peer accepts UPDATE, a refresh without SDP.
    pub update: bool,
}

/// Why a request's session timer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 422: the session asked for is shorter than ours; the `Min-SE` to send back.
    TooSmall(u32),
    /// 400: a header we cannot read.
    Malformed(String),
}

/// As the answerer of `req` (the caller's INVITE, or a peer's refresh): what our 2xx agrees
/// (RFC 4028 §9). `None`: no session timer on this leg (ours are off).
pub fn as_uas(req: &Request, cfg: &SessionTimers) -> Result<Option<Agreed>, Refusal> {
    if !cfg.enabled() {
        return Ok(None);
    }
    let asked = SessionExpires::of(req)
        .transpose()
        .map_err(Refusal::Malformed)?;
    let their_min = min_se(req).transpose().map_err(Refusal::Malformed)?;
    let supports = supports_timer(req);
    let floor = cfg.min_se.max(their_min.unwrap_or(0));
    let (interval, we_refresh) = match asked {
        // A UAC that takes part can ask again with more; one that does not (a proxy put the
        // header there) cannot, so its session is simply made longer.
        Some(se) if se.delta < cfg.min_se && supports => return Err(Refusal::TooSmall(cfg.min_se)),
        Some(se) => {
            let we = match se.refresher {
                Some(Refresher::Uac) => false,
                Some(Refresher::Uas) => true,
                None => !supports,
            };
            (se.delta.min(cfg.expires).max(floor), we)
        }
        // Nobody asked: a UAC that takes part refreshes its own leg; for one that does not we
        // do (any UA answers a re-INVITE or UPDATE, timer or not).
        None => (cfg.expires.max(floor), !supports),
    };
    Ok(Some(Agreed {
        interval,
        we_refresh,
        peer_supports: supports,
        update: allows(req, "UPDATE"),
    }))
}

/// As the sender of a request that asked for `asked` seconds: what its 2xx agreed (RFC 4028
/// §7.2). `None`: the answerer did not take it up, so the leg has no session timer.
pub fn as_uac(resp: &Response, asked: u32) -> Option<Agreed> {
    let se = match SessionExpires::of(resp)? {
        Ok(se) => se,
        Err(why) => {
            // The peer meant to have a timer and we cannot read it: keep the one we asked for
            // and refresh it ourselves, which is always safe.
            tracing::warn!(error = %why, "unreadable Session-Expires in a 2xx; we refresh");
            SessionExpires {
                delta: asked,
                refresher: Some(Refresher::Uac),
            }
        }
    };
    Some(Agreed {
        interval: se.delta.max(MIN_SE_FLOOR.min(asked)),
        we_refresh: se.refresher != Some(Refresher::Uas),
        peer_supports: supports_timer(resp),
        update: allows(resp, "UPDATE"),
    })
}

/// The headers that ask for a session timer in a new INVITE of ours (unless ours are off):
/// the `Session-Expires` we want and the least we accept, which after a 422 is the peer's
/// (RFC 4028 §7.4). The INVITE's one `Supported` header, which lists `timer` whenever these
/// are sent, is the caller's to write beside its other options.
pub fn offer_headers(cfg: &SessionTimers, expires: u32, min_se: u32) -> Vec<Header> {
    if !cfg.enabled() {
        return Vec::new();
    }
    vec![
        hdr("Session-Expires", expires.to_string()),
        hdr("Min-SE", min_se.to_string()),
    ]
}

/// What a 2xx to our refresh (or to a session change we relayed) leaves agreed on a leg whose
/// timer stood at `before` (RFC 4028 §7.2). A peer that takes part and leaves the header out
/// wants no timer any more; one that never took part never sends it, and the timer we run for
/// it goes on as it was.
pub fn after_refresh(resp: &Response, before: Agreed) -> Option<Agreed> {
    match as_uac(resp, before.interval) {
        Some(agreed) => Some(agreed),
        None if !before.peer_supports => Some(before),
        None => None,
    }
}

/// Where a leg's refresh stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refresh {
    /// Nothing out.
    Idle,
    /// Our refresh is out on this transaction.
    Sent(TxKey),
    /// Our refresh failed; the session ends when it expires unless the peer refreshes.
    Failed,
    /// Our refresh crossed the peer's own re-INVITE (491): sent again at this time.
    RetryAt(Instant),
}

/// What a leg's session timer says is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// We refresh now.
    Refresh,
    /// The session expired: end the call.
    Expired,
}

/// One leg's session timer.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    /// What was agreed last.
    pub agreed: Agreed,
    /// The last refresh (or the 2xx that started the session).
    refreshed: Instant,
    refresh: Refresh,
    /// The refresh in flight, kept to answer a challenge to it.
    request: Option<Request>,
}

impl SessionTimer {
    /// A session agreed (or refreshed) at `now`.
    pub fn new(agreed: Agreed, now: Instant) -> SessionTimer {
        SessionTimer {
            agreed,
            refreshed: now,
            refresh: Refresh::Idle,
            request: None,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.agreed.interval))
    }

    /// When the session expires for us: the watcher gives up a little before the end (RFC
    /// 4028 §10: a third of the interval or 32 s, whichever is less), so its BYE gets there
    /// while the peer's state still stands; the refresher at the end itself.
    fn expiry(&self) -> Instant {
        let interval = self.interval();
        if self.agreed.we_refresh {
            self.refreshed + interval
        } else {
            self.refreshed + interval - (interval / 3).min(Duration::from_secs(32))
        }
    }

    /// When this leg next needs the clock.
    pub fn next_wake(&self) -> Instant {
        match self.refresh {
            Refresh::Idle if self.agreed.we_refresh => self.refreshed + self.interval() / 2,
            Refresh::RetryAt(at) => at.min(self.expiry()),
            _ => self.expiry(),
        }
    }

    /// What is due at `now`, if anything. A refresh is asked once; [`SessionTimer::sent`]
    /// records it.
    pub fn poll(&self, now: Instant) -> Option<Due> {
        let refresh_due = match self.refresh {
            Refresh::Idle => self.agreed.we_refresh && now >= self.next_wake(),
            Refresh::RetryAt(at) => now >= at,
            Refresh::Sent(_) | Refresh::Failed => false,
        };
        if now >= self.expiry() {
            Some(Due::Expired)
        } else if refresh_due {
            Some(Due::Refresh)
        } else {
            None
        }
    }

    /// Our refresh `req` went out on `tx` (or went out again, answering a challenge).
    pub fn sent(&mut self, tx: TxKey, req: Request) {
        self.refresh = Refresh::Sent(tx);
        self.request = Some(req);
    }

    /// Our refresh in flight.
    pub fn in_flight(&self) -> Option<&Request> {
        self.request
            .as_ref()
            .filter(|_| matches!(self.refresh, Refresh::Sent(_)))
    }

    /// Whether `tx` is our refresh in flight.
    pub fn is_ours(&self, tx: &TxKey) -> bool {
        self.refresh == Refresh::Sent(tx.clone())
    }

    /// Our refresh met the peer's own session change (491, RFC 3261 §14.1): it goes again
    /// at `at`, unless the peer's change refreshes the session first.
    pub fn retry_at(&mut self, at: Instant) {
        self.refresh = Refresh::RetryAt(at);
        self.request = None;
    }

    /// Our refresh was refused (not with 408 or 481, which end the call): the session runs
    /// out unless the peer refreshes it.
    pub fn failed(&mut self) {
        self.refresh = Refresh::Failed;
        self.request = None;
    }

    /// The session was refreshed at `now` with `agreed` (a 2xx either way).
    pub fn refreshed(&mut self, agreed: Agreed, now: Instant) {
        self.agreed = agreed;
        self.refreshed = now;
        self.refresh = Refresh::Idle;
        self.request = None;
    }

    /// The `Session-Expires` (and `Require`) of a message on this leg: in a request of ours
    /// (`in_request`) the refresher is `uac` when it is us, in our answer to theirs it is `uac`
    /// when it is them.
    pub fn headers(&self, in_request: bool) -> Vec<Header> {
        let refresher = match (self.agreed.we_refresh, in_request) {
            (true, true) | (false, false) => Refresher::Uac,
            _ => Refresher::Uas,
        };
        let se = SessionExpires {
            delta: self.agreed.interval,
            refresher: Some(refresher),
        };
        let mut out = vec![hdr("Session-Expires", se.to_string())];
        if self.agreed.peer_supports && !in_request {
            out.push(hdr("Require", "timer"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse_datagram, response_to, SipMessage};

    const CFG: SessionTimers = SessionTimers {
        expires: 1800,
        min_se: 90,
    };

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn the_answerer_honours_lowers_or_refuses_what_the_caller_asks() {
        let agreed = |extra: &str| as_uas(&invite(extra), &CFG);
        // A caller that takes part and names itself refresher.
        let a = agreed("Supported: timer\r\nSession-Expires: 600;refresher=uac\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.interval, a.we_refresh, a.peer_supports),
            (600, false, true)
        );
        // Longer than ours: lowered to ours. Compact forms, as the framer expands them.
        let a = agreed("k: timer\r\nx: 7200\r\nAllow: INVITE, UPDATE\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((a.interval, a.we_refresh, a.update), (1800, false, true));
        // Too short from one that takes part: 422 with our minimum.
        assert_eq!(
            agreed("Supported: timer\r\nSession-Expires: 30\r\n"),
            Err(Refusal::TooSmall(90))
        );
        // Too short from one that does not (a proxy's header): made longer, and we refresh.
        let a = agreed("Session-Expires: 30\r\n").unwrap().unwrap();
        assert_eq!((a.interval, a.we_refresh), (90, true));
        // Nothing asked, no support: we still watch the leg, refreshing it ourselves.
        let a = agreed("").unwrap().unwrap();
        assert_eq!(
            (a.interval, a.we_refresh, a.peer_supports),
            (1800, true, false)
        );
        // Their Min-SE raises the floor.
        let a = agreed("Supported: timer\r\nSession-Expires: 100\r\nMin-SE: 120\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(a.interval, 120);
        assert!(matches!(
            agreed("Session-Expires: soon\r\n"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            agreed("Min-SE: -1\r\n"),
            Err(Refusal::Malformed(_))
        ));
        let off = SessionTimers {
            expires: 0,
            min_se: 90,
        };
        assert_eq!(as_uas(&invite("Session-Expires: 30\r\n"), &off), Ok(None));
    }

    #[test]
    fn the_offerer_takes_what_the_answer_says() {
        let mut ok = response_to(&invite(""), 200, Some("t"));
        assert_eq!(as_uac(&ok, 1800), None, "no Session-Expires: no timer");
        ok.headers.push(hdr("Session-Expires", "900;refresher=uas"));
        ok.headers.push(hdr("Require", "timer"));
        let a = as_uac(&ok, 1800).unwrap();
        assert_eq!(
            (a.interval, a.we_refresh, a.peer_supports),
            (900, false, true)
        );
        let mut garbled = response_to(&invite(""), 200, Some("t"));
        garbled.headers.push(hdr("Session-Expires", "x;y"));
        let a = as_uac(&garbled, 1800).unwrap();
        assert_eq!((a.interval, a.we_refresh), (1800, true));
    }

    #[test]
    fn a_refresher_refreshes_at_half_and_a_watcher_gives_up_before_the_end() {
        let t0 = Instant::now();
        let s = |we_refresh| Agreed {
            interval: 90,
            we_refresh,
            peer_supports: true,
            update: true,
        };
        let mut ours = SessionTimer::new(s(true), t0);
        assert_eq!(ours.next_wake(), t0 + Duration::from_secs(45));
        assert_eq!(ours.poll(t0 + Duration::from_secs(44)), None);
        assert_eq!(ours.poll(t0 + Duration::from_secs(45)), Some(Due::Refresh));
        let tx = crate::sip::transaction::key(&invite("")).unwrap();
        ours.sent(tx.clone(), invite(""));
        assert!(ours.is_ours(&tx));
        assert!(ours.in_flight().is_some());
        assert_eq!(ours.poll(t0 + Duration::from_secs(46)), None, "asked once");
        assert_eq!(ours.next_wake(), t0 + Duration::from_secs(90));
        ours.refreshed(s(true), t0 + Duration::from_secs(46));
        assert_eq!(ours.next_wake(), t0 + Duration::from_secs(91));
        ours.failed();
        assert_eq!(ours.poll(t0 + Duration::from_secs(135)), None);
        assert_eq!(ours.poll(t0 + Duration::from_secs(136)), Some(Due::Expired));

        // Watching a 90 s session: the BYE goes 30 s before its end.
        let theirs = SessionTimer::new(s(false), t0);
        assert_eq!(theirs.next_wake(), t0 + Duration::from_secs(60));
        assert_eq!(theirs.poll(t0 + Duration::from_secs(59)), None);
        assert_eq!(
            theirs.poll(t0 + Duration::from_secs(60)),
            Some(Due::Expired)
        );
        // A long one: 32 s before.
        let long = SessionTimer::new(
            Agreed {
                interval: 1800,
                ..s(false)
            },
            t0,
        );
        assert_eq!(long.next_wake(), t0 + Duration::from_secs(1768));
    }

    #[test]
    fn the_refresher_parameter_is_named_from_each_transaction() {
        let t0 = Instant::now();
        let agreed = Agreed {
            interval: 600,
            we_refresh: true,
            peer_supports: true,
            update: false,
        };
        let ours = SessionTimer::new(agreed, t0);
        let value = |h: Vec<Header>| format!("{:?}", h);
        assert!(value(ours.headers(true)).contains("600;refresher=uac"));
        assert!(value(ours.headers(false)).contains("600;refresher=uas"));
        assert!(value(ours.headers(false)).contains("timer"));
        let theirs = SessionTimer::new(
            Agreed {
                we_refresh: false,
                ..agreed
            },
            t0,
        );
        assert!(value(theirs.headers(false)).contains("600;refresher=uac"));
    }
}

//! RFC 3261 §17 transactions as state machines without I/O.
//!
//! Each transaction takes messages and the current time and answers with [`Output`]s: bytes to
//! send, messages to hand to the call layer, and timeouts. It never touches a socket or a clock;
//! its owner asks [`Transaction::next_wake`] when to call [`Transaction::on_timer`] again. That
//! is what lets every timer (A–K, plus RFC 6026's L and M) be tested with plain `Instant`
//! arithmetic, and lets one task drive thousands of transactions from a single timer queue.

use super::message::{
    hdr, name_value, new_request, request_bytes, response_bytes, Headers, Method, Request,
    Response, SipExt, StatusCode,
};
use std::time::{Duration, Instant};

/// The RFC 3261 timer base values.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// Round-trip estimate (500 ms).
    pub t1: Duration,
    /// Cap on non-INVITE request and INVITE response retransmission intervals (4 s).
    pub t2: Duration,
    /// How long a message may stay in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    fn t64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the transaction's peer.
    Send(Vec<u8>),
    /// Hand this response (client side) to the call layer.
    Response(Response),
    /// The peer never answered (Timer B or F): the call layer treats it as a 408.
    Timeout,
    /// A final non-2xx response we sent was never acknowledged (Timer H).
    NoAck,
    /// A 2xx we sent to an INVITE was not acknowledged within 64·T1 (RFC 3261 §13.3.1.4):
    /// the call layer should end the dialog with BYE.
    No2xxAck,
    /// The transaction is over and may be forgotten.
    Terminated,
}

/// Where a transaction stands (RFC 3261 figures 5–8, with RFC 6026's Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Client INVITE sent, nothing heard yet.
    Calling,
    /// Client non-INVITE sent or server non-INVITE received, nothing answered yet.
    Trying,
    /// A provisional response is in.
    Proceeding,
    /// A final response is in (client) or out (server); absorbing retransmissions.
    Completed,
    /// A 2xx to an INVITE is in or out (RFC 6026).
    Accepted,
    /// The ACK to our non-2xx final response arrived.
    Confirmed,
    /// Done.
    Terminated,
}

/// Which of the four RFC 3261 machines this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// We sent an INVITE.
    ClientInvite,
    /// We sent another request.
    ClientNonInvite,
    /// We received an INVITE.
    ServerInvite,
    /// We received another request.
    ServerNonInvite,
}

/// One transaction. The request is kept so that retransmissions, the ACK of a non-2xx and a
/// CANCEL can be built from it.
#[derive(Debug)]
pub struct Transaction {
    kind: Kind,
    state: State,
    reliable: bool,
    timers: Timers,
    request: Request,
    request_bytes: Vec<u8>,
    /// The last response sent (server side), resent on request retransmissions.
    last_response: Option<Vec<u8>>,
    /// The ACK we sent for a non-2xx (client INVITE), resent on response retransmissions.
    ack: Option<Vec<u8>>,
    /// Retransmission timer (A, E, G or the 2xx retransmission) and its current interval.
    retransmit: Option<(Instant, Duration)>,
    /// The timer that ends the current state (B, D, F, H, I, J, K, L or M).
    deadline: Option<Instant>,
    /// Timer-driven resends of a final response still allowed (server side, see
    /// [`Transaction::quiet`]); `None` for RFC 3261's unbounded schedule.
    resends_left: Option<u32>,
    /// Our 2xx is out and its ACK has not come (server INVITE, unreliable transport).
    awaiting_ack: bool,
}

/// How many times a 2xx to a peer we do not trust is resent by the timer before we only wait
/// for its ACK: three resends cover a lost packet or two, without an eleven-fold echo.
const QUIET_2XX_RESENDS: u32 = 3;

impl Transaction {
    /// A client transaction for `request`; the first output sends it.
    pub fn client(
        request: Request,
        reliable: bool,
        timers: Timers,
        now: Instant,
    ) -> (Transaction, Vec<Output>) {
        let invite = request.method == Method::Invite;
        let bytes = request_bytes(&request);
        let tx = Transaction {
            kind: if invite {
                Kind::ClientInvite
            } else {
                Kind::ClientNonInvite
            },
            state: if invite {
                State::Calling
            } else {
                State::Trying
            },
            reliable,
            timers,
            request,
            request_bytes: bytes.clone(),
            last_response: None,
            ack: None,
            retransmit: (!reliable).then_some((now + timers.t1, timers.t1)),
            deadline: Some(now + timers.t64()),
            resends_left: None,
            awaiting_ack: false,
        };
        (tx, vec![Output::Send(bytes)])
    }

    /// A server transaction for a new request. An INVITE is answered with 100 Trying at once,
    /// so the caller stops retransmitting while the call is authorized.
    pub fn server(
        request: Request,
        reliable: bool,
        timers: Timers,
        _now: Instant,
    ) -> (Transaction, Vec<Output>) {
        let invite = request.method == Method::Invite;
        let mut tx = Transaction {
            kind: if invite {
                Kind::ServerInvite
            } else {
                Kind::ServerNonInvite
            },
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            reliable,
            timers,
            request_bytes: Vec::new(),
            request,
            last_response: None,
            ack: None,
            retransmit: None,
            deadline: None,
            resends_left: None,
            awaiting_ack: false,
        };
        let mut out = Vec::new();
        if invite {
            let trying = response_bytes(&super::message::response_to(&tx.request, 100, None));
            tx.last_response = Some(trying.clone());
            out.push(Output::Send(trying));
        }
        (tx, out)
    }

    /// For a request from a source we do not trust (its address may be forged): our final
    /// response is not resent on a timer but only when the request is (a non-2xx), or at most
    /// a few times (a 2xx), so that a spoofed request cannot make us echo eleven times at a
    /// victim. The deadlines (Timer H, the wait for the 2xx's ACK) stay as RFC 3261 has them.
    pub fn quiet(&mut self) {
        self.resends_left = Some(0);
    }

    /// Which machine this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where it stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The request that started it.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// When [`Transaction::on_timer`] must next be called, if ever.
    pub fn next_wake(&self) -> Option<Instant> {
        match (self.retransmit.map(|r| r.0), self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn terminate(&mut self, out: &mut Vec<Output>) {
        self.state = State::Terminated;
        self.retransmit = None;
        self.deadline = None;
        out.push(Output::Terminated);
    }

    /// Ends the current state `after` from now, or at once on a reliable transport when the
    /// timer exists only to absorb retransmissions.
    fn linger(&mut self, after: Duration, now: Instant, out: &mut Vec<Output>) {
        self.retransmit = None;
        if after.is_zero() {
            self.terminate(out);
        } else {
            self.deadline = Some(now + after);
        }
    }

    /// Time passes: fire whichever timers are due.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            match (self.kind, self.state) {
                // Timer B and F: no answer at all.
                (Kind::ClientInvite, State::Calling)
                | (Kind::ClientNonInvite, State::Trying | State::Proceeding) => {
                    out.push(Output::Timeout)
                }
                // Timer H: our final response was never acknowledged.
                (Kind::ServerInvite, State::Completed) => out.push(Output::NoAck),
                // The 2xx was never acknowledged.
                (Kind::ServerInvite, State::Accepted) if self.awaiting_ack => {
                    out.push(Output::No2xxAck)
                }
                // Client INVITE in Proceeding has no timer B (RFC 3261 §17.1.1.2); the call
                // layer's own ring timeout cancels it.
                (Kind::ClientInvite, State::Proceeding) => return out,
                // D, I, J, K, L, M: the absorbing period is over.
                _ => {}
            }
            self.terminate(&mut out);
            return out;
        }
        if let Some((at, interval)) = self.retransmit {
            if at <= now && self.resends_left == Some(0) {
                self.retransmit = None;
            } else if at <= now {
                if let Some(n) = self.resends_left.as_mut() {
                    *n -= 1;
                }
                let next = match (self.kind, self.state) {
                    // Timer A doubles without cap; E, G and the 2xx retransmission cap at T2.
                    (Kind::ClientInvite, _) => interval * 2,
                    (Kind::ClientNonInvite, State::Proceeding) => self.timers.t2,
                    _ => (interval * 2).min(self.timers.t2),
                };
                self.retransmit = Some((now + next, next));
                let bytes = match self.kind {
                    Kind::ClientInvite | Kind::ClientNonInvite => self.request_bytes.clone(),
                    _ => self.last_response.clone().unwrap_or_default(),
                };
                out.push(Output::Send(bytes));
            }
        }
        out
    }

    /// A response for this client transaction arrived.
    pub fn on_response(&mut self, resp: Response, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let code = resp.status_code.code();
        match (self.kind, self.state) {
            (Kind::ClientInvite, State::Calling | State::Proceeding) => {
                if code < 200 {
                    self.state = State::Proceeding;
                    self.retransmit = None;
                    self.deadline = None;
                    out.push(Output::Response(resp));
                } else if code < 300 {
                    // RFC 6026: stay to pass 2xx retransmissions up for the call to ACK again.
                    self.state = State::Accepted;
                    self.retransmit = None;
                    self.deadline = Some(now + self.timers.t64());
                    out.push(Output::Response(resp));
                } else {
                    self.state = State::Completed;
                    let ack = request_bytes(&self.ack_for(&resp));
                    self.ack = Some(ack.clone());
                    out.push(Output::Send(ack));
                    out.push(Output::Response(resp));
                    // Timer D.
                    let d = if self.reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    };
                    self.linger(d, now, &mut out);
                }
            }
            (Kind::ClientInvite, State::Accepted) if (200..300).contains(&code) => {
                out.push(Output::Response(resp))
            }
            (Kind::ClientInvite, State::Completed) if code >= 300 => {
                if let Some(ack) = &self.ack {
                    out.push(Output::Send(ack.clone()));
                }
            }
            (Kind::ClientNonInvite, State::Trying | State::Proceeding) => {
                if code < 200 {
                    if self.state == State::Trying && !self.reliable {
                        self.retransmit = Some((now + self.timers.t2, self.timers.t2));
                    }
                    self.state = State::Proceeding;
                    out.push(Output::Response(resp));
                } else {
                    self.state = State::Completed;
                    out.push(Output::Response(resp));
                    // Timer K.
                    let k = if self.reliable {
                        Duration::ZERO
                    } else {
                        self.timers.t4
                    };
                    self.linger(k, now, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// The ACK for a non-2xx final response: same branch, Request-URI, From, Call-ID and CSeq
    /// number as the INVITE, the response's To (RFC 3261 §17.1.1.3).
    fn ack_for(&self, resp: &Response) -> Request {
        let mut headers = Headers::default();
        let (seq, _) = self.request.cseq().unwrap_or((1, Method::Invite));
        for h in self.request.headers.iter() {
            let (n, _) = name_value(h);
            match n {
                "Via" | "From" | "Call-ID" | "Route" | "Max-Forwards" => headers.push(h.clone()),
                "To" => headers.push(hdr("To", resp.header("To").unwrap_or_default())),
                "CSeq" => headers.push(hdr("CSeq", format!("{seq} ACK"))),
                _ => {}
            }
        }
        new_request(Method::Ack, self.request.uri.clone(), headers, Vec::new())
    }

    /// A retransmission of the request (server side), or for a server INVITE the ACK of our
    /// non-2xx final response.
    pub fn on_request(&mut self, req: &Request, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if req.method == Method::Ack {
            if self.kind == Kind::ServerInvite && self.state == State::Completed {
                self.state = State::Confirmed;
                // Timer I.
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.linger(i, now, &mut out);
            }
            return out;
        }
        match self.state {
            State::Proceeding | State::Completed => {
                if let Some(r) = &self.last_response {
                    out.push(Output::Send(r.clone()));
                }
            }
            // Trying absorbs; Accepted leaves 2xx retransmission to its own timer; Confirmed absorbs.
            _ => {}
        }
        out
    }

    /// The call layer answers this server transaction.
    pub fn respond(&mut self, resp: &Response, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let code = resp.status_code.code();
        if !matches!(self.state, State::Trying | State::Proceeding) {
            return out;
        }
        let bytes = response_bytes(resp);
        self.last_response = Some(bytes.clone());
        out.push(Output::Send(bytes));
        match self.kind {
            Kind::ServerInvite if code < 200 => {}
            Kind::ServerInvite if code < 300 => {
                // RFC 6026 Accepted, with the UAS core's 2xx retransmission (§13.3.1.4) kept
                // here so that one timer queue drives everything; the call reports the ACK.
                self.state = State::Accepted;
                self.retransmit =
                    (!self.reliable).then_some((now + self.timers.t1, self.timers.t1));
                self.deadline = Some(now + self.timers.t64());
                self.awaiting_ack = !self.reliable;
                if self.resends_left.is_some() {
                    self.resends_left = Some(QUIET_2XX_RESENDS);
                }
            }
            Kind::ServerInvite => {
                self.state = State::Completed;
                // Timer G (unreliable only) and H.
                self.retransmit =
                    (!self.reliable).then_some((now + self.timers.t1, self.timers.t1));
                self.deadline = Some(now + self.timers.t64());
            }
            _ if code < 200 => self.state = State::Proceeding,
            _ => {
                self.state = State::Completed;
                // Timer J.
                let j = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t64()
                };
                self.linger(j, now, &mut out);
            }
        }
        out
    }

    /// The ACK for our 2xx arrived (matched by dialog, not by this transaction): stop resending.
    pub fn acked_2xx(&mut self) {
        if self.kind == Kind::ServerInvite && self.state == State::Accepted {
            self.retransmit = None;
            self.awaiting_ack = false;
        }
    }

    /// Whether all that is left is waiting out a timer to absorb retransmissions: no resend
    /// is due and nothing is awaited (a non-2xx's ACK, a 2xx's ACK). Such a transaction may be
    /// forgotten early at the cost of only that absorbing, which is what lets the owner keep
    /// many of them without counting them as work in progress.
    pub fn lingering(&self) -> bool {
        let waiting = match (self.kind, self.state) {
            (Kind::ServerInvite, State::Completed) => true,
            (_, State::Accepted) => self.awaiting_ack,
            (_, State::Completed | State::Confirmed) => false,
            _ => true,
        };
        !waiting && self.retransmit.is_none()
    }

    /// Drops what a lingering transaction no longer needs: its request is never resent again.
    pub fn shed(&mut self) {
        if self.lingering() {
            self.request_bytes = Vec::new();
        }
    }

    /// The response code this server transaction last sent, if any beyond 100.
    pub fn answered(&self) -> bool {
        matches!(
            self.state,
            State::Completed | State::Accepted | State::Confirmed | State::Terminated
        )
    }

    /// Builds a CANCEL for this client INVITE (RFC 3261 §9.1).
    pub fn cancel_request(&self) -> Request {
        crate::sip::message::cancel_for(&self.request)
    }
}

/// What a message is matched to its transaction by (RFC 3261 §17.1.3 and §17.2.3): the top
/// Via's branch and sent-by and the method, with ACK matching its INVITE and CANCEL kept
/// apart. The sent-by keeps two clients that chose the same branch from sharing a transaction
/// (one would be answered with the other's response); a response's top Via is the one we
/// sent, so our client transactions match as before.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey {
    branch: String,
    sent_by: String,
    method: String,
}

impl TxKey {
    /// The key of the INVITE transaction a CANCEL with this key belongs to (same branch and
    /// sent-by, RFC 3261 §9.2); `None` when this is not a CANCEL's key.
    pub fn cancelled_invite(&self) -> Option<TxKey> {
        (self.method == Method::Cancel.to_string()).then(|| TxKey {
            method: Method::Invite.to_string(),
            ..self.clone()
        })
    }
}

impl std::fmt::Display for TxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}|{}", self.branch, self.sent_by, self.method)
    }
}

/// The transaction key of a message; `None` without a Via branch or CSeq.
pub fn key(msg: &impl SipExt) -> Option<TxKey> {
    let branch = msg.branch()?;
    let sent_by = msg.sent_by()?;
    let (_, method) = msg.cseq()?;
    let method = if method == Method::Ack {
        Method::Invite
    } else {
        method
    };
    Some(TxKey {
        branch: branch.to_string(),
        sent_by: sent_by.to_string(),
        method: method.to_string(),
    })
}

/// A status code as rsip carries it.
pub fn status(code: u16) -> StatusCode {
    StatusCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::SipMessage;
    use crate::sip::message::{parse_datagram, response_to};

    fn req(method: &str) -> Request {
        let text = format!(
            "{method} sip:5555233@127.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKt1\r\n\
             From: <sip:a@h>;tag=f1\r\nTo: <sip:5555233@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n\r\n"
        );
        match parse_datagram(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn sends(out: &[Output]) -> usize {
        out.iter().filter(|o| matches!(o, Output::Send(_))).count()
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_cancel_finds_its_invite_by_key_and_nothing_else_does() {
        let key_of = |m: &str| key(&SipMessage::Request(req(m))).unwrap();
        let invite = key_of("INVITE");
        assert_eq!(key_of("CANCEL").cancelled_invite(), Some(invite.clone()));
        // The ACK of a non-2xx belongs to its INVITE's transaction.
        assert_eq!(key_of("ACK"), invite);
        assert_eq!(invite.cancelled_invite(), None);
        assert_eq!(key_of("BYE").cancelled_invite(), None);
        assert_ne!(key_of("CANCEL"), invite);
    }

    #[test]
    fn timer_a_doubles_and_timer_b_times_out() {
        let t0 = Instant::now();
        let (mut tx, out) = Transaction::client(req("INVITE"), false, Timers::default(), t0);
        assert_eq!(sends(&out), 1);
        let mut at = t0;
        let mut gaps = Vec::new();
        while let Some(w) = tx.next_wake() {
            let out = tx.on_timer(w);
            if out.contains(&Output::Timeout) {
                assert_eq!(w - t0, MS(32_000), "timer B is 64*T1");
                assert!(out.contains(&Output::Terminated));
                break;
            }
            assert_eq!(sends(&out), 1);
            gaps.push((w - at).as_millis());
            at = w;
        }
        assert_eq!(gaps, vec![500, 1000, 2000, 4000, 8000, 16000]);
    }

    #[test]
    fn reliable_client_invite_does_not_retransmit() {
        let t0 = Instant::now();
        let (tx, _) = Transaction::client(req("INVITE"), true, Timers::default(), t0);
        assert_eq!(tx.next_wake(), Some(t0 + MS(32_000)));
    }

    #[test]
    fn provisional_stops_timer_a_and_b() {
        let t0 = Instant::now();
        let r = req("INVITE");
        let (mut tx, _) = Transaction::client(r.clone(), false, Timers::default(), t0);
        let out = tx.on_response(response_to(&r, 180, Some("g")), t0 + MS(100));
        assert!(matches!(out[0], Output::Response(_)));
        assert_eq!(tx.state(), State::Proceeding);
        assert_eq!(tx.next_wake(), None);
    }

    #[test]
    fn non_2xx_is_acked_in_the_transaction_and_timer_d_absorbs() {
        let t0 = Instant::now();
        let r = req("INVITE");
        let (mut tx, _) = Transaction::client(r.clone(), false, Timers::default(), t0);
        let busy = response_to(&r, 486, Some("g"));
        let out = tx.on_response(busy.clone(), t0);
        let Output::Send(ack) = &out[0] else {
            panic!("{out:?}")
        };
        let ack = parse_datagram(ack).unwrap();
        assert_eq!(ack.cseq(), Some((1, Method::Ack)));
        assert_eq!(ack.branch(), Some("z9hG4bKt1"));
        assert_eq!(ack.to_tag(), Some("g"));
        assert!(matches!(out[1], Output::Response(_)));
        // A retransmitted 486 is ACKed again and not passed up.
        let again = tx.on_response(busy, t0 + MS(600));
        assert_eq!(again.len(), 1);
        assert_eq!(sends(&again), 1);
        assert_eq!(tx.next_wake(), Some(t0 + MS(32_000)), "timer D");
        assert!(tx.on_timer(t0 + MS(32_000)).contains(&Output::Terminated));
    }

    #[test]
    fn client_2xx_is_accepted_and_retransmissions_go_up() {
        let t0 = Instant::now();
        let r = req("INVITE");
        let (mut tx, _) = Transaction::client(r.clone(), false, Timers::default(), t0);
        let ok = response_to(&r, 200, Some("g"));
        assert!(matches!(
            tx.on_response(ok.clone(), t0)[0],
            Output::Response(_)
        ));
        assert_eq!(tx.state(), State::Accepted);
        assert!(matches!(
            tx.on_response(ok, t0 + MS(500))[0],
            Output::Response(_)
        ));
        assert_eq!(tx.next_wake(), Some(t0 + MS(32_000)), "timer M");
        assert_eq!(tx.on_timer(t0 + MS(32_000)), vec![Output::Terminated]);
    }

    #[test]
    fn timer_e_caps_at_t2_and_f_times_out() {
        let t0 = Instant::now();
        let (mut tx, _) = Transaction::client(req("BYE"), false, Timers::default(), t0);
        let mut at = t0;
        let mut gaps = Vec::new();
        while let Some(w) = tx.next_wake() {
            let out = tx.on_timer(w);
            if out.contains(&Output::Timeout) {
                assert_eq!(w - t0, MS(32_000), "timer F");
                break;
            }
            gaps.push((w - at).as_millis());
            at = w;
        }
        assert_eq!(&gaps[..6], &[500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn timer_e_in_proceeding_is_t2_and_k_absorbs() {
        let t0 = Instant::now();
        let r = req("BYE");
        let (mut tx, _) = Transaction::client(r.clone(), false, Timers::default(), t0);
        tx.on_response(response_to(&r, 100, None), t0 + MS(10));
        assert_eq!(tx.next_wake(), Some(t0 + MS(4010)));
        let out = tx.on_response(response_to(&r, 200, Some("x")), t0 + MS(20));
        assert!(matches!(out[0], Output::Response(_)));
        assert_eq!(tx.next_wake(), Some(t0 + MS(5020)), "timer K is T4");
        assert!(tx
            .on_response(response_to(&r, 200, Some("x")), t0 + MS(30))
            .is_empty());
        assert_eq!(tx.on_timer(t0 + MS(5020)), vec![Output::Terminated]);
        // Reliable: K is zero.
        let (mut tx, _) = Transaction::client(r.clone(), true, Timers::default(), t0);
        assert!(tx
            .on_response(response_to(&r, 200, Some("x")), t0)
            .contains(&Output::Terminated));
    }

    #[test]
    fn server_invite_sends_trying_and_absorbs_retransmissions() {
        let t0 = Instant::now();
        let r = req("INVITE");
        let (mut tx, out) = Transaction::server(r.clone(), false, Timers::default(), t0);
        let Output::Send(trying) = &out[0] else {
            panic!()
        };
        assert!(trying.starts_with(b"SIP/2.0 100 Trying\r\n"));
        // A retransmitted INVITE gets the last response again.
        assert_eq!(
            tx.on_request(&r, t0 + MS(500)),
            vec![Output::Send(trying.clone())]
        );
        tx.respond(&response_to(&r, 180, Some("b")), t0);
        let out = tx.on_request(&r, t0 + MS(600));
        let Output::Send(ringing) = &out[0] else {
            panic!()
        };
        assert!(ringing.starts_with(b"SIP/2.0 180 Ringing\r\n"));
    }

    #[test]
    fn timer_g_and_h_until_ack_then_timer_i() {
        let t0 = Instant::now();
        let r = req("INVITE");
        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.respond(&response_to(&r, 486, Some("b")), t0);
        let mut at = t0;
        let mut gaps = Vec::new();
        loop {
            let w = tx.next_wake().unwrap();
            let out = tx.on_timer(w);
            if out.contains(&Output::NoAck) {
                assert_eq!(w - t0, MS(32_000), "timer H");
                break;
            }
            gaps.push((w - at).as_millis());
            at = w;
        }
        assert_eq!(&gaps[..5], &[500, 1000, 2000, 4000, 4000]);

        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.respond(&response_to(&r, 486, Some("b")), t0);
        let mut ack = req("ACK");
        ack.method = Method::Ack;
        assert!(tx.on_request(&ack, t0 + MS(100)).is_empty());
        assert_eq!(tx.state(), State::Confirmed);
        assert_eq!(tx.next_wake(), Some(t0 + MS(5100)), "timer I is T4");
        assert_eq!(tx.on_timer(t0 + MS(5100)), vec![Output::Terminated]);
    }

    #[test]
    fn server_2xx_is_resent_until_acked() {
        let t0 = Instant::now();
        let r = req("INVITE");
        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.respond(&response_to(&r, 200, Some("b")), t0);
        assert_eq!(sends(&tx.on_timer(t0 + MS(500))), 1);
        assert_eq!(tx.next_wake(), Some(t0 + MS(1500)));
        tx.acked_2xx();
        assert_eq!(tx.next_wake(), Some(t0 + MS(32_000)), "timer L");
        assert_eq!(tx.on_timer(t0 + MS(32_000)), vec![Output::Terminated]);
        // Never acknowledged: the call layer is told to hang up.
        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.respond(&response_to(&r, 200, Some("b")), t0);
        let mut seen = false;
        while let Some(w) = tx.next_wake() {
            seen |= tx.on_timer(w).contains(&Output::No2xxAck);
        }
        assert!(seen);
    }

    #[test]
    fn a_quiet_transaction_does_not_echo_its_final_response() {
        let t0 = Instant::now();
        let r = req("INVITE");
        // A non-2xx: sent once, resent only when the INVITE is, and Timer H still ends it.
        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.quiet();
        assert_eq!(sends(&tx.respond(&response_to(&r, 403, Some("b")), t0)), 1);
        let mut timer_sends = 0;
        let mut no_ack = false;
        while let Some(w) = tx.next_wake() {
            let out = tx.on_timer(w);
            timer_sends += sends(&out);
            no_ack |= out.contains(&Output::NoAck);
        }
        assert_eq!(timer_sends, 0, "no Timer G resends");
        assert!(no_ack, "Timer H");
        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.quiet();
        tx.respond(&response_to(&r, 403, Some("b")), t0);
        assert_eq!(
            sends(&tx.on_request(&r, t0 + MS(300))),
            1,
            "resent for a resent INVITE"
        );
        // A 2xx: three resends, and a missing ACK still ends the call.
        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.quiet();
        tx.respond(&response_to(&r, 200, Some("b")), t0);
        let (mut timer_sends, mut no_ack) = (0, false);
        while let Some(w) = tx.next_wake() {
            let out = tx.on_timer(w);
            timer_sends += sends(&out);
            no_ack |= out.contains(&Output::No2xxAck);
        }
        assert_eq!(timer_sends, 3);
        assert!(no_ack);
        // Without quiet, RFC 3261's schedule: ten resends in 32 s.
        let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), t0);
        tx.respond(&response_to(&r, 486, Some("b")), t0);
        let mut n = 0;
        while let Some(w) = tx.next_wake() {
            n += sends(&tx.on_timer(w));
        }
        assert_eq!(n, 10);
    }

    /// Lingering means nothing is left to do but absorb: what the engine may forget early.
    #[test]
    fn lingering_is_only_absorbing() {
        let t0 = Instant::now();
        let bye = req("BYE");
        let (mut tx, _) = Transaction::server(bye.clone(), false, Timers::default(), t0);
        assert!(!tx.lingering(), "not answered yet");
        tx.respond(&response_to(&bye, 200, Some("b")), t0);
        assert!(tx.lingering(), "Timer J only absorbs");
        let inv = req("INVITE");
        let (mut tx, _) = Transaction::server(inv.clone(), false, Timers::default(), t0);
        tx.respond(&response_to(&inv, 200, Some("b")), t0);
        assert!(!tx.lingering(), "the 2xx is resent until its ACK");
        tx.acked_2xx();
        assert!(tx.lingering(), "acknowledged: Timer L only absorbs");
        let (mut tx, _) = Transaction::server(inv.clone(), false, Timers::default(), t0);
        tx.respond(&response_to(&inv, 486, Some("b")), t0);
        assert!(!tx.lingering(), "a non-2xx waits for its ACK");
        let (mut tx, _) = Transaction::client(inv.clone(), false, Timers::default(), t0);
        assert!(!tx.lingering(), "calling");
        tx.on_response(response_to(&inv, 486, Some("g")), t0);
        assert!(tx.lingering(), "Timer D only absorbs");
        tx.shed();
        assert_eq!(
            sends(&tx.on_response(response_to(&inv, 486, Some("g")), t0 + MS(10))),
            1,
            "the ACK is still resent after shedding the request"
        );
    }

    #[test]
    fn server_non_invite_timer_j() {
        let t0 = Instant::now();
        let r = req("BYE");
        let (mut tx, out) = Transaction::server(r.clone(), false, Timers::default(), t0);
        assert!(out.is_empty(), "no 100 Trying for non-INVITE");
        assert!(tx.on_request(&r, t0).is_empty(), "Trying absorbs");
        tx.respond(&response_to(&r, 200, Some("b")), t0);
        assert_eq!(
            sends(&tx.on_request(&r, t0 + MS(100))),
            1,
            "Completed resends"
        );
        assert_eq!(tx.next_wake(), Some(t0 + MS(32_000)), "timer J");
        let (mut tx, _) = Transaction::server(r.clone(), true, Timers::default(), t0);
        assert!(tx
            .respond(&response_to(&r, 200, Some("b")), t0)
            .contains(&Output::Terminated));
    }

    #[test]
    fn cancel_matches_the_invite_but_keys_apart() {
        let t0 = Instant::now();
        let (tx, _) = Transaction::client(req("INVITE"), false, Timers::default(), t0);
        let cancel = SipMessage::Request(tx.cancel_request());
        let invite = SipMessage::Request(tx.request().clone());
        assert_eq!(cancel.branch(), invite.branch());
        assert_ne!(key(&cancel), key(&invite));
        let mut ack = req("ACK");
        ack.method = Method::Ack;
        assert_eq!(key(&SipMessage::Request(ack)), key(&invite));
    }

    #[test]
    fn the_same_branch_from_two_clients_is_two_transactions() {
        let bye = |via: &str| {
            crate::sip::message::parse_datagram(
                format!(
                    "BYE sip:b2bua@127.0.0.1 SIP/2.0\r\nVia: {via};branch=z9hG4bKbye2\r\n\
                     From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\n\
                     CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let a = bye("SIP/2.0/UDP 127.0.0.1:40001");
        let b = bye("SIP/2.0/UDP 127.0.0.1:40002");
        assert_eq!(a.sent_by().as_deref(), Some("127.0.0.1:40001"));
        assert_ne!(key(&a), key(&b));
        // LWS where the grammar allows it, and case, do not make another transaction.
        let spaced = bye("SIP/2.0/UDP  127.0.0.1 : 40001");
        assert_eq!(key(&spaced), key(&a));
        let v6 = bye("SIP/2.0/TCP [::1]:5060");
        assert_eq!(v6.sent_by().as_deref(), Some("[::1]:5060"));
        let host = bye("SIP/2.0/UDP PBX.Example.com");
        assert_eq!(host.sent_by().as_deref(), Some("pbx.example.com"));
        let odd_transport = bye("SIP/2.0/TLS-SCTP h.example.net:5061");
        assert_eq!(
            odd_transport.sent_by().as_deref(),
            Some("h.example.net:5061")
        );
    }
}

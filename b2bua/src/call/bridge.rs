//! The gateway leg: phase 2's answer turned into a route, dialled gateway by gateway with
//! fail-over, relayed to the caller while it rings, and answered — when the money clock
//! starts and, each chunk, asks the store for more.

use super::clock::{Grant, MoneyClock, Tick};
use super::io::{Ask, MediaCmd, Output};
use super::legs::{add_contact, attach_sdp, is_sdp, sip_code_for, subscriber_phrase, BLeg, Side};
use super::{Call, Env, State};
use crate::media::sdp;
use crate::routing::{CallerId, Candidate};
use crate::sip::dialog::Dialog;
use crate::sip::message::{
    cancel_for, hdr, new_request, parse_uri, Headers, Method, Response, SipExt,
};
use crate::sip::transaction::TxKey;
use crate::transport::Peer;
use chrono::{DateTime, Utc};
use rating::radius::acct::Leg;
use rating::store::{CallAnswer, Extension, Reservation};
use std::net::SocketAddr;
use std::time::Instant;

/// What phase 2 held for one destination: the money a bridge spends.
#[derive(Debug)]
pub(super) struct Hold {
    /// The conference id that names the hold, the call record and the gateway leg.
    pub conf_id: String,
    pub destination: String,
    /// `None`: a free call (a redirect the store granted), ended only by the maximum duration.
    pub reservation: Option<Reservation>,
    pub grant: Grant,
}

/// Where and how a B-leg INVITE goes: its Request-URI and To, the transport, how the caller
/// is presented, whether SRTP is offered, and whether reliable provisionals may come back.
pub(super) struct Dial {
    pub uri: String,
    pub to: String,
    pub proto: crate::routing::Proto,
    pub identity: crate::sip::identity::Identity,
    pub srtp: bool,
    pub reliable: bool,
}

/// One bridge to a gateway: its money, its route, and the attempt now.
#[derive(Debug)]
pub(super) struct Bridge {
    pub hold: Hold,
    route: Vec<Candidate>,
    next: usize,
    /// The last gateway's failure, for the caller when none is left.
    last_code: u16,
    /// When the first gateway was dialled, and the last one tried.
    pub setup: Option<DateTime<Utc>>,
    pub remote: Option<SocketAddr>,
    pub attempt: Attempt,
}

/// Where the gateway leg stands.
#[derive(Debug)]
pub(super) enum Attempt {
    /// No gateway being tried (between attempts).
    Idle,
    /// An INVITE is out; the first deadline is for a gateway that says nothing, the second
    /// for a destination that rings and rings.
    Dialing {
        b: BLeg,
        setup_deadline: Option<Instant>,
        ring_deadline: Option<Instant>,
    },
    /// A subscriber's contacts ringing at once (`fork.rs`); the first to answer becomes the
    /// attempt.
    Forking(super::fork::Forks),
    /// The gateway answered; the money runs.
    Up {
        b: BLeg,
        clock: MoneyClock,
        connected: DateTime<Utc>,
    },
}

impl Bridge {
    pub fn new(hold: Hold, route: Vec<Candidate>) -> Bridge {
        Bridge {
            hold,
            route,
            next: 0,
            last_code: 0,
            setup: None,
            remote: None,
            attempt: Attempt::Idle,
        }
    }

    pub fn b(&self) -> Option<&BLeg> {
        match &self.attempt {
            Attempt::Dialing { b, .. } | Attempt::Up { b, .. } => Some(b),
            Attempt::Idle | Attempt::Forking(_) => None,
        }
    }

    pub fn b_mut(&mut self) -> Option<&mut BLeg> {
        match &mut self.attempt {
            Attempt::Dialing { b, .. } | Attempt::Up { b, .. } => Some(b),
            Attempt::Idle | Attempt::Forking(_) => None,
        }
    }

    /// Ends the attempt, handing its leg back.
    pub fn take_b(&mut self) -> Option<BLeg> {
        match std::mem::replace(&mut self.attempt, Attempt::Idle) {
            Attempt::Dialing { b, .. } | Attempt::Up { b, .. } => Some(b),
            Attempt::Idle | Attempt::Forking(_) => None,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.attempt, Attempt::Up { .. })
    }

    /// When the gateway answered.
    pub fn connected(&self) -> Option<DateTime<Utc>> {
        match &self.attempt {
            Attempt::Up { connected, .. } => Some(*connected),
            _ => None,
        }
    }

    pub fn next_wake(&self) -> Option<Instant> {
        match &self.attempt {
            Attempt::Idle => None,
            Attempt::Dialing {
                setup_deadline,
                ring_deadline,
                ..
            } => setup_deadline.iter().chain(ring_deadline).min().copied(),
            Attempt::Forking(forks) => forks.next_wake(),
            Attempt::Up { clock, .. } => clock.next_wake(),
        }
    }
}

impl Call {
    /// Phase 2 answered a pinless call: dial its route, or tell the caller why not.
    pub(super) fn authorized(&mut self, answer: CallAnswer, env: &mut Env) {
        let State::Authorizing {
            conf_id,
            destination,
            ring,
        } = std::mem::replace(
            &mut self.state,
            State::Ended {
                b: None,
                settling: false,
            },
        )
        else {
            return;
        };
        if !answer.code.is_success() {
            let paid_ring = ring.is_some();
            self.state = State::Authorizing {
                conf_id,
                destination,
                ring,
            };
            let code = answer.code;
            // The return code explains a refusal to the proxy or SBC in front; to anyone else
            // it would say which numbers are cards and which have money.
            let warning = self
                .trusted
                .then(|| format!("return code {}: {}", code.code(), code.meaning()));
            let cause = format!("refused {}", code.code());
            if paid_ring {
                // Whoever calls a subscriber whose card cannot pay for it hears only that the
                // subscriber cannot be reached; the carrier in front reads why.
                let phrase = Some("the subscriber cannot take calls now");
                return self.fail_told(480, phrase, warning.as_deref(), &cause, env);
            }
            // A subscriber is told about its own account in words its softphone shows.
            let phrase = self.card.is_some().then(|| subscriber_phrase(code));
            return self.fail_told(sip_code_for(code), phrase, warning.as_deref(), &cause, env);
        }
        let grant = Grant {
            granted: answer
                .reservation
                .as_ref()
                .map(|r| r.granted_seconds)
                .unwrap_or(answer.credit_time),
            credit: answer.credit_time,
        };
        let hold = Hold {
            conf_id,
            destination,
            reservation: answer.reservation,
            grant,
        };
        if let Some(ring) = ring {
            return self.fork(hold, *ring, env);
        }
        let route = self.settings.cfg.router.candidates(&hold.destination);
        let empty = route.is_empty();
        self.state = State::Direct(Box::new(Bridge::new(hold, route)));
        if empty {
            let phrase = self.card.is_some().then_some("no route");
            let why = Some("no route to the destination");
            return self.fail_told(404, phrase, why, "no route", env);
        }
        self.dial_next(env);
    }

    /// Tries the next gateway with a free channel, or gives up.
    pub(super) fn dial_next(&mut self, env: &mut Env) {
        loop {
            let Some(bridge) = self.bridge_mut() else {
                return;
            };
            let Some(cand) = bridge.route.get(bridge.next).cloned() else {
                let code = match bridge.last_code {
                    // A challenge or a session timer was for us to settle; the caller could
                    // do nothing about either.
                    0 | 401 | 407 | 422 => 503,
                    408 => 408,
                    c if c >= 500 => 503,
                    c => c,
                };
                return self.fail(
                    code,
                    Some("no gateway took the call"),
                    "gateways failed",
                    env,
                );
            };
            bridge.next += 1;
            let Some(channel) = env.channels.take(cand.gateway) else {
                bridge.last_code = 503;
                continue;
            };
            let gw = &self.settings.cfg.router.gateways[cand.gateway];
            let peer = Peer {
                proto: gw.proto,
                addr: gw.addr,
                conn: None,
            };
            let srtp = gw.srtp;
            let invite = self.b_invite(&cand, env);
            self.sdp_sent[Side::B.index()] = invite.body.clone();
            let Some(tx) = self.send(invite.clone(), peer) else {
                env.channels.release(channel);
                return;
            };
            self.emit(Output::Media(MediaCmd::Signalling {
                side: Side::B,
                ip: peer.addr.ip(),
            }));
            let setup_deadline = Some(env.now + self.settings.cfg.calls.setup_timeout);
            let wall = self.wall(env.now);
            let bridge = self.bridge_mut().expect("still bridging");
            bridge.setup.get_or_insert(wall);
            bridge.remote = Some(peer.addr);
            bridge.attempt = Attempt::Dialing {
                b: BLeg::dialled(Some(channel), peer, tx, invite, srtp),
                setup_deadline,
                ring_deadline: None,
            };
            return;
        }
    }

    /// The B-leg INVITE to a gateway: the route's number there, presenting the caller as the
    /// route and the gateway say.
    fn b_invite(&self, cand: &Candidate, env: &mut Env) -> crate::sip::message::Request {
        let gw = &self.settings.cfg.router.gateways[cand.gateway];
        // The route's `caller_id: pai` is the older spelling of a gateway's identity
        // {pai: true, from: anonymous}.
        let mut identity = gw.identity;
        if cand.caller_id == CallerId::Pai {
            identity.pai = true;
            identity.anonymous_from = true;
        }
        let transport = gw.proto.uri_param();
        self.leg_invite(
            Dial {
                uri: format!("sip:{}@{}{transport}", cand.number, gw.addr),
                to: format!("<sip:{}@{}>", cand.number, gw.addr),
                proto: gw.proto,
                identity,
                srtp: gw.srtp,
                reliable: true,
            },
            env,
        )
    }

    /// A B-leg INVITE: a new dialog of ours, carrying the caller's offer and the caller's
    /// number as `dial` says, and nothing else of the A-leg.
    pub(super) fn leg_invite(&self, dial: Dial, env: &mut Env) -> crate::sip::message::Request {
        let local = &self.settings.local;
        let host = local.hostport(dial.proto).to_string();
        let tag = env.ids.tag();
        let mut headers = Headers::default();
        headers.push(hdr("Via", local.via_with(dial.proto, &env.ids.branch())));
        let hops = self
            .a
            .invite
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(70);
        headers.push(hdr(
            "Max-Forwards",
            hops.saturating_sub(1).min(70).to_string(),
        ));
        let withheld = crate::sip::identity::withheld(&self.a.invite);
        let shown = crate::sip::identity::present(dial.identity, &self.ani, withheld, &host);
        headers.push(hdr("From", format!("{};tag={tag}", shown.from)));
        if let Some(pai) = shown.pai {
            headers.push(hdr("P-Asserted-Identity", pai));
        }
        if let Some(privacy) = shown.privacy {
            headers.push(hdr("Privacy", privacy));
        }
        headers.push(hdr("To", dial.to));
        headers.push(hdr("Call-ID", env.ids.call_id(&host)));
        headers.push(hdr("CSeq", "1 INVITE"));
        headers.push(hdr("Contact", local.contact(dial.proto)));
        headers.push(hdr("Allow", crate::sip::message::ALLOW));
        // One Supported header listing both: some carriers (and SIPp) read only the first.
        let timers = &self.settings.cfg.calls.session;
        let offer = super::session::offer_headers(timers, timers.expires, timers.min_se);
        let supported: Vec<&str> = [
            dial.reliable.then_some(crate::sip::reliable::TAG),
            (!offer.is_empty()).then_some("timer"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !supported.is_empty() {
            headers.push(hdr("Supported", supported.join(", ")));
        }
        headers.extend(offer);
        headers.push(hdr("Content-Type", "application/sdp"));
        let body = sdp::offer(
            self.media_local[Side::B.index()],
            self.a.offer.codecs[0].1,
            sdp::Direction::SendRecv,
            dial.srtp.then_some(&self.media_keys[Side::B.index()]),
            self.id,
        )
        .into_bytes();
        let uri = parse_uri(&dial.uri).unwrap_or_default();
        new_request(Method::Invite, uri, headers, body)
    }

    /// A response to one of the call's client transactions.
    pub(super) fn on_response(&mut self, tx: &TxKey, resp: Response, from: Peer, env: &mut Env) {
        if let Some(i) = self.relays.iter().position(|r| r.tx == *tx) {
            return self.relay_response(i, resp, env);
        }
        if let Some(side) = self.refreshing(tx) {
            return self.refresh_answered(side, &resp, env);
        }
        let is_invite = resp.cseq().is_some_and(|(_, m)| m == Method::Invite);
        if is_invite {
            self.b_response(tx, resp, from, env);
        }
        // Answers to our BYEs and CANCELs change nothing.
    }

    /// A response to a B-leg INVITE.
    fn b_response(&mut self, tx: &TxKey, resp: Response, from: Peer, env: &mut Env) {
        if self.is_fork(tx) {
            return self.fork_response(tx, resp, env);
        }
        let code = resp.status_code.code();
        let current = self.b().is_some_and(|b| b.tx == *tx);
        if !current || self.is_ended() {
            if (200..300).contains(&code) {
                if current && self.bridge().is_some_and(Bridge::is_up) {
                    return self.reack(Side::B, &resp, env);
                }
                // An answer after we gave up on the attempt: ACK it and hang it up.
                let local = self.settings.local.clone();
                for o in super::hang_up(&resp, from, &local, env.ids) {
                    self.emit(o);
                }
            }
            return;
        }
        if let Some(Attempt::Dialing {
            setup_deadline, b, ..
        }) = self.bridge_mut().map(|br| &mut br.attempt)
        {
            b.heard = true;
            *setup_deadline = None;
        }
        match code {
            100 => {}
            101..=199 if self.b_provisional(&resp, env) => self.b_ringing(resp, env),
            101..=199 => {}
            200..=299 if self.bridge().is_some_and(Bridge::is_up) => {
                self.reack(Side::B, &resp, env)
            }
            200..=299 => self.b_answered(resp, env),
            401 | 407 if self.b_challenged(&resp, env) => {}
            422 if self.b_session_too_small(&resp, env) => {}
            _ => {
                if let Some(b) = self.b_mut() {
                    b.done = true;
                }
                self.b_failed(code, env)
            }
        }
    }

    /// The configured name of the gateway a B-leg dialled, for the call's record.
    pub(super) fn gateway_name(&self, b: Option<&BLeg>) -> String {
        b.and_then(|b| b.channel.as_ref())
            .map(|c| self.settings.cfg.router.gateways[c.gateway()].name.clone())
            .unwrap_or_default()
    }

    /// A gateway that wants credentials (401, or 407 from a proxy in front of it): answered
    /// once, on the same call — same Call-ID and From tag, the next CSeq, a new branch. A
    /// second challenge, a realm other than the configured one or a challenge we cannot answer
    /// is a failure like any other, and the next gateway is tried. Whether it was answered.
    fn b_challenged(&mut self, resp: &Response, env: &mut Env) -> bool {
        let Some(b) = self.b() else {
            return false;
        };
        let invite = b.invite.clone();
        match self.b_authorized(&invite, resp, env) {
            Ok(again) => self.b_ask_again(again, env),
            Err(why) => {
                tracing::warn!(call = self.id, "{why}");
                false
            }
        }
    }

    /// Sends the attempt's INVITE again as a new transaction on the same call (after a
    /// challenge or a 422), with a fresh setup timeout. Whether it went out.
    fn b_ask_again(&mut self, invite: crate::sip::message::Request, env: &mut Env) -> bool {
        let Some(peer) = self.b().map(|b| b.peer) else {
            return false;
        };
        let Some(tx) = self.send(invite.clone(), peer) else {
            return false;
        };
        let setup = env.now + self.settings.cfg.calls.setup_timeout;
        if let Some(Attempt::Dialing {
            b, setup_deadline, ..
        }) = self.bridge_mut().map(|br| &mut br.attempt)
        {
            b.tx = tx;
            b.invite = invite;
            *setup_deadline = Some(setup);
        }
        true
    }

    /// A gateway that wants a longer session than we asked for (422, RFC 4028 §7.4): asked
    /// again once with its `Min-SE`, on the same call. A minimum past our own most, or a second
    /// 422, fails over. Whether it was asked again.
    fn b_session_too_small(&mut self, resp: &Response, env: &mut Env) -> bool {
        use crate::sip::session_timer::{min_se, SessionExpires};
        let timers = self.settings.cfg.calls.session;
        let Some(b) = self.b() else {
            return false;
        };
        let asked = SessionExpires::of(&b.invite)
            .and_then(Result::ok)
            .map(|se| se.delta);
        let wanted = min_se(resp).and_then(Result::ok);
        let (Some(asked), Some(wanted)) = (asked, wanted) else {
            tracing::warn!(
                call = self.id,
                "a 422 without a Min-SE we can read; failing over"
            );
            return false;
        };
        // Our INVITE says whether it already answered a 422: its Min-SE is then the peer's.
        let asked_again = min_se(&b.invite)
            .and_then(Result::ok)
            .is_some_and(|m| m > timers.min_se);
        if asked_again || wanted <= asked || wanted > 86_400 {
            tracing::warn!(
                call = self.id,
                asked,
                wanted,
                "the gateway's Min-SE cannot be met; failing over"
            );
            return false;
        }
        // Our INVITE already says it supports timers (and 100rel); only the values change.
        let headers = super::session::offer_headers(&timers, wanted, wanted);
        let invite = crate::sip::message::resent(
            &b.invite,
            &env.ids.branch(),
            &["Session-Expires", "Min-SE"],
            headers,
        );
        self.b_ask_again(invite, env)
    }

    /// The gateway rings (or plays early media): tell the caller, and start the ring timer.
    fn b_ringing(&mut self, resp: Response, env: &mut Env) {
        let ring = env.now + self.settings.cfg.calls.ring_timeout;
        if let Some(Attempt::Dialing { ring_deadline, .. }) =
            self.bridge_mut().map(|br| &mut br.attempt)
        {
            ring_deadline.get_or_insert(ring);
        }
        let mut out = self.a.response(resp.status_code.code());
        add_contact(&mut out, &self.settings.local, self.a.peer.proto, false);
        // Early media: the gateway's ringback or announcements reach the caller through us.
        if is_sdp(&resp) {
            match self.b_media(&resp) {
                Ok(body) => attach_sdp(&mut out, body),
                Err(e) => {
                    tracing::info!(call = self.id, error = %e, "unusable early-media SDP; relaying without media")
                }
            }
        }
        self.provisional_to_caller(out, env.now);
    }

    /// Takes the gateway's SDP: where and how to send to it, relayed from now on; returns our
    /// answer for the caller (made once, the same in the 18x and the 200).
    pub(super) fn b_media(&mut self, resp: &Response) -> Result<String, String> {
        let theirs = sdp::parse(&resp.body).map_err(|e| e.to_string())?;
        let codec = *theirs
            .codecs
            .first()
            .ok_or_else(|| sdp::SdpError::NoCommonCodec.to_string())?;
        // Offered SRTP, the gateway must answer with its key: plain RTP there would leave the
        // leg unprotected against what the carrier was configured for.
        let srtp = match (self.srtp_on(Side::B), &theirs.srtp) {
            (true, Some(s)) => Some(crate::media::srtp::Key(s.key)),
            (true, None) => return Err(sdp::SdpError::NoCommonCrypto.to_string()),
            (false, _) => None,
        };
        self.emit(Output::Media(MediaCmd::Remote {
            side: Side::B,
            addr: theirs.rtp,
            codec,
            telephone_event: theirs.telephone_event,
            srtp,
        }));
        self.b_has_codec = true;
        self.sdp_heard[Side::B.index()] = resp.body.clone();
        if self.a.answer.is_none() {
            let local = self.media_local[Side::A.index()];
            let key = &self.media_keys[Side::A.index()];
            let (body, _) =
                sdp::answer(&self.a.offer, local, key, self.id).map_err(|e| e.to_string())?;
            self.sdp_sent[Side::A.index()] = body.clone().into_bytes();
            self.a.answer = Some(body);
        }
        self.emit(Output::Media(MediaCmd::Bridge(true)));
        Ok(self.a.answer.clone().unwrap_or_default())
    }

    /// Our 200 to the caller's INVITE (without its SDP), and the dialog, the wait for the ACK
    /// and the session timer that it starts.
    pub(super) fn ok_to_caller(&mut self, now: Instant) -> Response {
        let mut ok = self.a.response(200);
        add_contact(&mut ok, &self.settings.local, self.a.peer.proto, true);
        if let Some(agreed) = self.a.agreed {
            let timer = super::session::SessionTimer::new(agreed, now);
            ok.headers.push(hdr("Supported", "timer"));
            ok.headers.extend(timer.headers(false));
            self.a.session = Some(timer);
        }
        self.a.dialog = Some(Dialog::uas(&self.a.invite, &self.a.tag));
        let seq = self.a.invite.cseq().map(|c| c.0).unwrap_or(0);
        self.awaiting_ack[Side::A.index()] = Some((self.a.tx.clone(), seq));
        ok
    }

    /// A pinless call's gateway (or a subscriber's contact) answered: ACK it, answer the
    /// caller, start the clock.
    pub(super) fn b_answered(&mut self, resp: Response, env: &mut Env) {
        if self.is_ivr() {
            return self.flow_answered(resp, env);
        }
        // The gateway's answer (or, without SDP in the 2xx, what its 18x said).
        let answer = if is_sdp(&resp) {
            self.b_media(&resp)
        } else {
            self.a
                .answer
                .clone()
                .ok_or_else(|| "the answer has no SDP".to_string())
        };
        self.b_leg_up(&resp, env);
        let body = match answer {
            Ok(body) => body,
            Err(e) => {
                // The gateway answered with media we cannot use: hang it up, tell the caller.
                tracing::warn!(call = self.id, error = %e, "gateway answer unusable");
                self.bye(Side::B, env);
                return self.fail(488, Some(&e), "gateway media unusable", env);
            }
        };
        let mut ok = self.ok_to_caller(env.now);
        attach_sdp(&mut ok, body);
        let connected = self.wall(env.now);
        let max = self.settings.cfg.calls.max_duration;
        // A subscriber hears that its money is running out; a card's pinless caller has no
        // one configured to tell it.
        let warning = self.subscriber_warning().and_then(|(_, w, _)| w);
        let bridge = self.bridge_mut().expect("answered a bridge");
        // Nothing held: a call to a subscriber, which costs nothing.
        let clock = match bridge.hold.reservation {
            Some(_) => MoneyClock::paid(env.now, bridge.hold.grant, max, warning),
            None => MoneyClock::free(env.now, max),
        };
        let paid = bridge.hold.reservation.is_some();
        let conf_id = bridge.hold.conf_id.clone();
        self.set_up(clock, connected);
        // The caller's leg is answered only now that it gets its 200.
        self.a.connect = Some(connected);
        env.stats.answered += 1;
        self.answer_caller(ok);
        self.emit(Output::Media(MediaCmd::Bridge(true)));
        self.account(&[Leg::Answer, Leg::Originate], None, connected);
        if paid {
            self.emit(Output::Store(Ask::MarkConnected { conf_id }));
        }
    }

    /// The attempt becomes the call's talking leg.
    pub(super) fn set_up(&mut self, clock: MoneyClock, connected: DateTime<Utc>) {
        if let Some(bridge) = self.bridge_mut() {
            if let Some(b) = bridge.take_b() {
                bridge.attempt = Attempt::Up {
                    b,
                    clock,
                    connected,
                };
            }
        }
    }

    /// The gateway's 2xx established the B-leg dialog: keep it, ACK it (end to end, no
    /// transaction), and route its in-dialog requests to this call.
    pub(super) fn b_leg_up(&mut self, resp: &Response, env: &mut Env) {
        let local = self.settings.local.clone();
        let Some(b) = self.b_mut() else {
            return;
        };
        let asked = crate::sip::session_timer::SessionExpires::of(&b.invite)
            .and_then(Result::ok)
            .map(|se| se.delta);
        b.session = asked
            .and_then(|asked| super::session::as_uac(resp, asked))
            .map(|agreed| super::session::SessionTimer::new(agreed, env.now));
        let mut dialog = Dialog::uac(&b.invite, resp);
        let ack = dialog.request(
            Method::Ack,
            &local.via(b.peer.proto),
            &env.ids.branch(),
            &local.contact(b.peer.proto),
            Some(dialog.local_seq),
        );
        // PRACKs went out on the early dialog this answer confirms: our next request counts on.
        if let Some((early, _)) = b.early.take() {
            if early.remote_tag == dialog.remote_tag {
                dialog.local_seq = dialog.local_seq.max(early.local_seq);
            }
        }
        let (peer, call_id) = (b.peer, dialog.call_id.clone());
        b.dialog = Some(dialog);
        b.done = true;
        self.emit(Output::Ack { req: ack, peer });
        self.emit(Output::Route {
            call_id,
            side: Side::B,
        });
    }

    /// This attempt failed with `code`: fail over on 408 and 5xx, otherwise tell the caller.
    pub(super) fn b_failed(&mut self, code: u16, env: &mut Env) {
        let Some(bridge) = self.bridge_mut() else {
            return;
        };
        let b = bridge.take_b();
        bridge.last_code = code;
        if let Some(channel) = b.and_then(|b| b.channel) {
            env.channels.release(channel);
        }
        // A challenge left unanswered is this gateway's trouble (our credentials there), as is
        // a session timer we could not agree, not the destination's: the next gateway may take
        // the call.
        if matches!(code, 401 | 407 | 408 | 422) || (500..600).contains(&code) {
            self.dial_next(env);
        } else {
            self.fail(code, None, &format!("gateway {code}"), env);
        }
    }

    /// Stops a B-leg INVITE that has not been answered.
    pub(super) fn cancel_b(&mut self, env: &mut Env) {
        let _ = env;
        self.cancel_forks();
        let Some(b) = self.b_mut() else {
            return;
        };
        if b.dialog.is_some() || b.done {
            return;
        }
        b.done = true;
        if !b.heard {
            // Nothing heard: a CANCEL could overtake the INVITE (RFC 3261 §9.1). Stop
            // retransmitting; a late answer is hung up as a stray.
            let tx = b.tx.clone();
            return self.emit(Output::Abandon(tx));
        }
        let (cancel, peer) = (cancel_for(&b.invite), b.peer);
        self.send(cancel, peer);
    }

    /// A client transaction got no answer in time.
    pub(super) fn on_timeout(&mut self, tx: &TxKey, env: &mut Env) {
        if let Some(i) = self.relays.iter().position(|r| r.tx == *tx) {
            let relay = self.relays.remove(i);
            return self.reply(&relay.origin, &relay.origin_req, 408, None, env);
        }
        if let Some(side) = self.refreshing(tx) {
            return self.session_lost(side, "session refresh unanswered", env);
        }
        if self.is_fork(tx) {
            return self.fork_timeout(tx, env);
        }
        let current = self.b().is_some_and(|b| b.tx == *tx && b.dialog.is_none());
        if current && !self.is_ended() {
            self.b_failed(408, env);
        }
    }

    /// The gateway leg's deadlines: a gateway silent past the setup timeout is skipped; a
    /// destination that rings past the ring timeout is given up.
    pub(super) fn dial_timers(&mut self, env: &mut Env) {
        let (now, id) = (env.now, self.id);
        let Some(Attempt::Dialing {
            b,
            setup_deadline,
            ring_deadline,
        }) = self.bridge_mut().map(|br| &mut br.attempt)
        else {
            return;
        };
        let due = |t: &Option<Instant>| t.is_some_and(|t| t <= now);
        if due(setup_deadline) {
            *setup_deadline = None;
            if !b.heard {
                tracing::info!(
                    call = id,
                    "gateway silent past the setup timeout; failing over"
                );
                let tx = b.tx.clone();
                self.emit(Output::Abandon(tx));
                return self.b_failed(408, env);
            }
        }
        if due(ring_deadline) {
            *ring_deadline = None;
            self.cancel_b(env);
            self.fail(480, Some("no answer"), "no answer", env);
        }
    }

    /// What the money clock says is due: the cutoff, the credit warning, the next hold.
    pub(super) fn money_ticks(&mut self, env: &mut Env) {
        loop {
            let Some(Attempt::Up {
                clock, connected, ..
            }) = self.bridge_mut().map(|br| &mut br.attempt)
            else {
                return;
            };
            let connected = *connected;
            let Some(tick) = clock.poll(env.now) else {
                return;
            };
            match tick {
                Tick::Cutoff { talk, why } => {
                    let end_at = connected + chrono::Duration::from_std(talk).unwrap_or_default();
                    let cause = why.cause();
                    tracing::info!(
                        call = self.id,
                        seconds = talk.as_secs(),
                        "cutting the call off: {cause}"
                    );
                    env.stats.cutoffs += 1;
                    crate::metrics::get().cutoffs.inc();
                    if self.is_ivr() {
                        // The gateway leg ends; the flow tells the caller ("disconnected")
                        // and hangs up.
                        self.bye(Side::B, env);
                        let end = ivr::BridgeEnd::CreditExhausted;
                        return self.bridge_ended(end, Some(end_at), env);
                    }
                    self.bye(Side::A, env);
                    self.bye(Side::B, env);
                    return self.end(cause, end_at, env);
                }
                Tick::Warn if self.is_ivr() => self.feed(ivr::Event::CreditWarning, env),
                Tick::Warn => self.warn_subscriber(),
                Tick::Extend => {
                    let conf_id = self
                        .bridge()
                        .map(|b| b.hold.conf_id.clone())
                        .unwrap_or_default();
                    self.emit(Output::Store(Ask::Extend { conf_id }));
                }
            }
        }
    }

    /// A call a subscriber pays for: on which leg the subscriber is, when before the cutoff
    /// it is warned, and with what. On its call out it is the caller; on a paid call to its
    /// DID (its card pays, by its tenant's incoming deck), the phone that answered.
    fn subscriber_warning(&self) -> Option<(Side, Option<std::time::Duration>, &[String])> {
        let side = if self.card.is_some() {
            Side::A
        } else if self.access.subscriber.is_some() {
            Side::B
        } else {
            return None;
        };
        let rules = self.settings.cfg.subscribers.as_ref()?;
        Some((side, rules.warning, &rules.warning_prompts))
    }

    /// The subscriber's money is about to run out: it hears the warning over the call (the
    /// other party does not).
    fn warn_subscriber(&mut self) {
        let Some((side, _, names)) = self.subscriber_warning() else {
            return;
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let seq = self.prompts.sequence(&self.lang, &names);
        tracing::info!(
            call = self.id,
            ?side,
            "warning the subscriber: its money is running out"
        );
        if !seq.is_empty() {
            self.emit(Output::Media(MediaCmd::Play { side, prompts: seq }));
        }
    }

    /// The store held (or could not hold) the next chunk of a running call.
    pub(super) fn extended(&mut self, result: Result<Extension, String>, env: &mut Env) {
        let Ok(ext) = result else { return };
        if let Some(Attempt::Up { clock, .. }) = self.bridge_mut().map(|br| &mut br.attempt) {
            clock.extended(ext.granted_seconds, ext.extended, env.now);
        }
    }
}

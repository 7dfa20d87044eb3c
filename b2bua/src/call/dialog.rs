//! Requests inside a call's two dialogs: BYE from either side, the caller's DTMF in INFO,
//! session changes (re-INVITE, UPDATE) relayed across with our media kept in the middle,
//! and the ACKs of our 2xx, which count only from the dialog's own peer.

use super::io::{MediaCmd, Output};
use super::legs::{attach_sdp, copy_body, is_sdp, usable_offer, Side};
use super::{Bridge, Call, Env, Relay, State};
use crate::media::sdp;
use crate::media::srtp::Key;
use crate::routing::Proto;
use crate::sip::dialog::Dialog;
use crate::sip::message::{hdr, response_to, Method, Request, Response, SipExt};
use crate::sip::transaction::TxKey;
use crate::transport::Peer;

impl Call {
    /// One leg's dialog (once established) and where its requests go.
    fn leg(&mut self, side: Side) -> Option<(&mut Dialog, Peer)> {
        match side {
            Side::A => {
                let peer = self.a.peer;
                self.a.dialog.as_mut().map(|d| (d, peer))
            }
            Side::B => {
                let b = self.b_mut()?;
                let peer = b.peer;
                b.dialog.as_mut().map(|d| (d, peer))
            }
        }
    }

    /// A new request on one leg's dialog, with a branch of its own.
    pub(super) fn dialog_request(
        &mut self,
        side: Side,
        method: Method,
        ack_seq: Option<u32>,
        env: &mut Env,
    ) -> Option<(Request, Peer)> {
        let local = self.settings.local.clone();
        let (dialog, peer) = self.leg(side)?;
        let req = dialog.request(
            method,
            &local.via(peer.proto),
            &env.ids.branch(),
            &local.contact(peer.proto),
            ack_seq,
        );
        Some((req, peer))
    }

    /// Sends BYE on one leg, if it is answered.
    pub(super) fn bye(&mut self, side: Side, env: &mut Env) {
        if side == Side::A {
            self.release_held_ok();
        }
        if let Some((req, peer)) = self.dialog_request(side, Method::Bye, None, env) {
            self.send(req, peer);
        }
    }

    /// ACKs a 2xx from `side` (the first answer was ACKed when it came; this covers
    /// retransmissions and relayed re-INVITEs).
    pub(super) fn reack(&mut self, side: Side, resp: &Response, env: &mut Env) {
        let seq = resp.cseq().map(|c| c.0).unwrap_or(1);
        if let Some((req, peer)) = self.dialog_request(side, Method::Ack, Some(seq), env) {
            self.emit(Output::Ack { req, peer });
        }
    }

    /// A request inside one of the call's dialogs.
    pub(super) fn on_request(&mut self, side: Side, tx: TxKey, req: Request, env: &mut Env) {
        if Call::is_caller_prack(side, &req) {
            return self.caller_prack(tx, req, env);
        }
        let a_tag = self.a.tag.clone();
        let Some((dialog, _)) = self.leg(side) else {
            // An early dialog (we sent 18x): only BYE (as a cancel) makes sense here.
            if side == Side::A && req.method == Method::Bye && req.to_tag() == Some(a_tag.as_str())
            {
                self.reply(&tx, &req, 200, None, env);
                self.cancel_b(env);
                return self.fail(487, None, "caller hung up while ringing", env);
            }
            return self.reply(&tx, &req, 481, None, env);
        };
        if req.to_tag() != Some(dialog.local_tag.as_str())
            || req.from_tag() != Some(dialog.remote_tag.as_str())
        {
            return self.reply(&tx, &req, 481, None, env);
        }
        if !dialog.accept_remote_cseq(req.cseq().map(|c| c.0).unwrap_or(0)) {
            return self.reply(&tx, &req, 500, Some("CSeq out of order"), env);
        }
        let talking = self.bridge().is_some_and(Bridge::is_up);
        let ended = self.is_ended();
        let at = self.wall(env.now);
        match req.method {
            Method::Bye if ended => self.reply(&tx, &req, 200, None, env),
            Method::Bye if self.is_ivr() && side == Side::B => {
                // The called party hung up: the caller goes back to the flow.
                self.reply(&tx, &req, 200, None, env);
                self.bridge_ended(ivr::BridgeEnd::CalledHangup, None, env);
            }
            Method::Bye if self.is_ivr() => {
                self.reply(&tx, &req, 200, None, env);
                self.bye(Side::B, env);
                self.cancel_b(env);
                self.end("caller hung up", at, env);
            }
            Method::Bye => {
                self.reply(&tx, &req, 200, None, env);
                if talking {
                    self.bye(side.other(), env);
                    let cause = match side {
                        Side::A => "caller hung up",
                        Side::B => "called party hung up",
                    };
                    self.end(cause, at, env);
                }
            }
            Method::Options => self.reply(&tx, &req, 200, None, env),
            Method::Info
                if side == Side::A
                    && req
                        .header("Content-Type")
                        .is_some_and(|c| c.eq_ignore_ascii_case("application/dtmf-relay")) =>
            {
                // The caller's digits are ours (the IVR listens to them), not the gateway's.
                self.reply(&tx, &req, 200, None, env);
                let body = String::from_utf8_lossy(&req.body).into_owned();
                self.emit(Output::Media(MediaCmd::InfoDigits(body)));
            }
            // We send the gateway no reliable provisional response: a PRACK names nothing.
            Method::PRack => self.reply(&tx, &req, 481, None, env),
            // What may cross from one leg to the other: session changes (re-INVITE, UPDATE)
            // and INFO; BYE, ACK and PRACK are ours to answer. Anything else (MESSAGE, REFER,
            // NOTIFY, SUBSCRIBE …) stops here, so a caller cannot reach the carrier with
            // requests we never meant to carry.
            // Glare (RFC 3261 §14.2, RFC 3311 §5.2): our own offer is out on this leg, so
            // theirs waits; they try again after a random pause.
            Method::Invite | Method::Update
                if !ended && is_offer_or_asks(&req) && self.offer_pending(side) =>
            {
                self.reply(&tx, &req, 491, None, env)
            }
            // A refresh changes nothing across the call: it is this leg's own business.
            Method::Invite | Method::Update if !ended && self.is_refresh(side, &req) => {
                self.answer_refresh(side, tx, req, env)
            }
            Method::Invite | Method::Update | Method::Info if !talking => {
                self.reply(&tx, &req, 491, None, env)
            }
            Method::Invite | Method::Update | Method::Info => self.relay(side, req, tx, env),
            _ => self.reply(&tx, &req, 405, None, env),
        }
    }

    /// Whether a leg speaks SRTP, so every offer we make there carries our key: the caller's
    /// leg when its INVITE offered SDES, the gateway's when it is configured `srtp: true`.
    pub(super) fn srtp_on(&self, side: Side) -> bool {
        match side {
            Side::A => self.a.offer.srtp.is_some(),
            Side::B => self.b().is_some_and(|b| b.srtp),
        }
    }

    /// Whether a session change of ours is out on `side`: a re-INVITE (ours or relayed) or
    /// an UPDATE with an offer, not yet answered.
    fn offer_pending(&self, side: Side) -> bool {
        let refresh = self
            .sessions()
            .any(|(s, t)| s == side && t.in_flight().is_some_and(is_offer_or_asks));
        let relayed = self
            .relays
            .iter()
            .any(|r| r.to == side && is_offer_or_asks(&r.sent));
        refresh || relayed
    }

    /// Passes an in-dialog request (re-INVITE and UPDATE for hold and unhold, INFO for DTMF)
    /// to the other leg as that leg's own request; the answer comes back the same way.
    fn relay(&mut self, from: Side, req: Request, tx: TxKey, env: &mut Env) {
        let to = from.other();
        // The media stays anchored: an SDP offer (hold, unhold) reaches the other leg as our
        // own offer from our socket, with the offerer's direction.
        let offer = if is_sdp(&req) {
            match usable_offer(&req.body) {
                Ok(o) => Some(o),
                Err(why) => return self.reply(&tx, &req, 488, Some(&why), env),
            }
        } else {
            None
        };
        let Some((mut out, peer)) = self.dialog_request(to, req.method, None, env) else {
            return self.reply(&tx, &req, 481, None, env);
        };
        match &offer {
            Some(parsed) => {
                self.emit(Output::Media(MediaCmd::Remote {
                    side: from,
                    addr: parsed.rtp,
                    codec: parsed.codecs[0],
                    telephone_event: parsed.telephone_event,
                    srtp: parsed.srtp.as_ref().map(|s| Key(s.key)),
                }));
                self.sdp_heard[from.index()] = req.body.clone();
                let ours = self.media_local[to.index()];
                let key = self.srtp_on(to).then_some(&self.media_keys[to.index()]);
                out.headers.push(hdr("Content-Type", "application/sdp"));
                out.body = sdp::offer(ours, parsed.codecs[0].1, parsed.direction, key, self.id)
                    .into_bytes();
                self.sdp_sent[to.index()] = out.body.clone();
            }
            None => copy_body(&req, &mut out.headers, &mut out.body),
        }
        // A session change refreshes the leg it crosses to, as our own request there.
        if matches!(req.method, Method::Invite | Method::Update) {
            if let Some((_, timer)) = self.sessions().find(|(s, _)| *s == to) {
                out.headers.push(hdr("Supported", "timer"));
                out.headers.extend(timer.headers(true));
            }
        }
        if let Some(key) = self.send(out.clone(), peer) {
            self.relays.push(Relay {
                tx: key,
                sent: out,
                origin: tx,
                origin_req: req,
                to,
                offer,
            });
        }
    }

    /// The other leg answered a relayed request: the answer goes back as ours.
    pub(super) fn relay_response(&mut self, i: usize, resp: Response, env: &mut Env) {
        let code = resp.status_code.code();
        if code == 100 {
            return;
        }
        // The carrier wants our credentials for it: asked again, the originator none the wiser.
        if self.relays[i].to == Side::B {
            let sent = self.relays[i].sent.clone();
            if let Some((tx, again)) = self.b_in_dialog_challenged(&sent, &resp, env) {
                let r = &mut self.relays[i];
                (r.tx, r.sent) = (tx, again);
                return;
            }
        }
        let relay = if code >= 200 {
            self.relays.remove(i)
        } else {
            self.relays[i].clone()
        };
        let method = relay.origin_req.method;
        let is_invite = method == Method::Invite;
        // A challenge we could not answer is the carrier refusing us, not a question for the
        // caller (who holds no credentials there, and would get none of its headers).
        let refused = matches!(code, 401 | 407) && relay.to == Side::B;
        let code = if refused { 500 } else { code };
        let mut out = response_to(&relay.origin_req, code, None);
        if refused {
            out.headers.push(hdr(
                "Warning",
                "399 b2bua \"the carrier refused our credentials\"",
            ));
        }
        if is_invite || method == Method::Update {
            let proto = match relay.to.other() {
                Side::A => self.a.peer.proto,
                Side::B => self.b().map(|b| b.peer.proto).unwrap_or(Proto::Udp),
            };
            out.headers
                .push(hdr("Contact", self.settings.local.contact(proto)));
        }
        match (&relay.offer, is_sdp(&resp)) {
            // Our answer to the originator's offer, from our socket on its leg; the other
            // leg's answer tells us where and how to send there.
            (Some(offer), true) if (200..300).contains(&code) => {
                if let Ok(theirs) = sdp::parse(&resp.body) {
                    if let Some(codec) = theirs.codecs.first() {
                        self.emit(Output::Media(MediaCmd::Remote {
                            side: relay.to,
                            addr: theirs.rtp,
                            codec: *codec,
                            telephone_event: theirs.telephone_event,
                            srtp: theirs
                                .srtp
                                .as_ref()
                                .filter(|_| self.srtp_on(relay.to))
                                .map(|s| Key(s.key)),
                        }));
                        self.sdp_heard[relay.to.index()] = resp.body.clone();
                        let ours = self.media_local[relay.to.other().index()];
                        let key = &self.media_keys[relay.to.other().index()];
                        if let Ok((body, _)) = sdp::answer(offer, ours, key, self.id) {
                            self.sdp_sent[relay.to.other().index()] = body.clone().into_bytes();
                            attach_sdp(&mut out, body);
                        }
                    }
                }
            }
            (Some(_), _) => {}
            (None, _) => copy_body(&resp, &mut out.headers, &mut out.body),
        }
        if (is_invite || method == Method::Update) && (200..300).contains(&code) {
            // Both legs' sessions are refreshed: the far one by its 2xx to us, the near one
            // by ours.
            let far = self
                .sessions()
                .find(|(s, _)| *s == relay.to)
                .map(|(_, t)| t.agreed);
            if let Some(agreed) =
                far.and_then(|before| super::session::after_refresh(&resp, before))
            {
                self.session_agreed(relay.to, agreed, true, env);
            }
            let timers = self.settings.cfg.calls.session;
            if let Ok(Some(agreed)) = super::session::as_uas(&relay.origin_req, &timers) {
                let headers = self.session_agreed(relay.to.other(), agreed, false, env);
                out.headers.extend(headers);
            }
        }
        if is_invite && (200..300).contains(&code) {
            self.reack(relay.to, &resp, env);
            let seq = relay.origin_req.cseq().map(|c| c.0).unwrap_or(0);
            self.awaiting_ack[relay.to.other().index()] = Some((relay.origin.clone(), seq));
            self.answer_in_ack[relay.to.other().index()] = false;
        }
        self.respond(&relay.origin, out);
    }

    /// The ACK of a 2xx we sent (it has no transaction of its own). It counts only if it
    /// belongs to the dialog (Call-ID, both tags, the INVITE's CSeq) and comes from the peer
    /// the INVITE came from: anyone else's ACK would stop our retransmissions and leave a
    /// caller who never got the 200 talking to no one.
    pub(super) fn on_ack(&mut self, side: Side, req: &Request, from: Peer) {
        let Some((key, seq)) = self.awaiting_ack[side.index()].clone() else {
            return;
        };
        let id = self.id;
        let Some((dialog, peer)) = self.leg(side) else {
            return;
        };
        let tags_match = req.to_tag() == Some(dialog.local_tag.as_str())
            && req.from_tag() == Some(dialog.remote_tag.as_str());
        let same_peer = match from.proto {
            Proto::Udp => from.addr == peer.addr,
            Proto::Tcp | Proto::Tls => from.addr.ip() == peer.addr.ip(),
        };
        let seq_match = req.cseq().map(|c| c.0) == Some(seq);
        if !(tags_match && same_peer && seq_match) {
            tracing::info!(call = id, from = %from.addr, "an ACK that is not the dialog's ignored");
            crate::metrics::get().limit_hit("foreign_ack");
            return;
        }
        self.awaiting_ack[side.index()] = None;
        self.emit(Output::Acked(key));
        if std::mem::take(&mut self.answer_in_ack[side.index()]) {
            self.answer_from_ack(side, req);
        }
    }

    /// The answer to the offer our 2xx made to a re-INVITE without SDP: where and how that
    /// leg's media goes from now on (a third party may have moved it). The other leg keeps
    /// talking to our socket, so nothing crosses. An ACK without a usable answer leaves the
    /// media as it was.
    fn answer_from_ack(&mut self, side: Side, ack: &Request) {
        if !is_sdp(ack) {
            tracing::info!(
                call = self.id,
                ?side,
                "ACK without the answer to our offer; media unchanged"
            );
            return;
        }
        if ack.body == self.sdp_heard[side.index()] {
            return;
        }
        let theirs = match sdp::parse(&ack.body) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(call = self.id, ?side, error = %e, "unusable answer in an ACK; media unchanged");
                return;
            }
        };
        let Some(codec) = theirs.codecs.first().copied() else {
            tracing::info!(
                call = self.id,
                ?side,
                "answer in an ACK with no codec of ours; media unchanged"
            );
            return;
        };
        let srtp = match (self.srtp_on(side), &theirs.srtp) {
            (true, Some(s)) => Some(Key(s.key)),
            (true, None) => {
                tracing::info!(
                    call = self.id,
                    ?side,
                    "answer in an ACK without the SRTP key; media unchanged"
                );
                return;
            }
            (false, _) => None,
        };
        self.emit(Output::Media(MediaCmd::Remote {
            side,
            addr: theirs.rtp,
            codec,
            telephone_event: theirs.telephone_event,
            srtp,
        }));
        self.sdp_heard[side.index()] = ack.body.clone();
    }

    /// Our 2xx was never acknowledged: the caller is gone, so end the call, whatever it was
    /// doing (talking, or in its IVR flow).
    pub(super) fn on_no_ack(&mut self, tx: &TxKey, env: &mut Env) {
        let ours = self.awaiting_ack.iter().flatten().any(|(k, _)| k == tx);
        if !ours || self.is_ended() {
            return;
        }
        tracing::warn!(call = self.id, "2xx never acknowledged; hanging up");
        self.cancel_b(env);
        self.bye(Side::A, env);
        self.bye(Side::B, env);
        let at = self.wall(env.now);
        self.end("no ACK", at, env);
    }

    /// The caller cancelled its INVITE: only one not answered yet is cancelled.
    pub(super) fn on_cancel(&mut self, invite: &TxKey, env: &mut Env) {
        if self.a.tx != *invite || self.a.answered || matches!(self.state, State::Ended { .. }) {
            return;
        }
        self.cancel_b(env);
        self.fail(487, None, "caller cancelled", env);
    }
}

/// Whether a request opens an offer/answer exchange: every INVITE (one without SDP asks for
/// an offer), an UPDATE only when it carries one.
fn is_offer_or_asks(req: &Request) -> bool {
    req.method == Method::Invite || (req.method == Method::Update && !req.body.is_empty())
}

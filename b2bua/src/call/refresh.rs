//! Keeping each leg's session alive (RFC 4028): our refreshes where we are the refresher, our
//! answers to the peer's, and the end of a call whose leg was not refreshed in time. A
//! refresh carries no change, so it stays on its own leg; only a real session change (new
//! SDP) crosses to the other leg, and then it refreshes both.

use super::io::Output;
use super::legs::{attach_sdp, Side};
use super::session::{after_refresh, as_uas, Agreed, Due, Refusal, SessionTimer};
use super::{Call, Env};
use crate::sip::message::{hdr, reply_to, response_to, Method, Request, Response, SipExt};
use crate::sip::transaction::TxKey;

impl Call {
    /// The legs' running session timers (a leg's only once its dialog stands).
    pub(super) fn sessions(&self) -> impl Iterator<Item = (Side, &SessionTimer)> {
        let a = self
            .a
            .session
            .as_ref()
            .filter(|_| self.a.dialog.is_some())
            .map(|s| (Side::A, s));
        let b = self
            .b()
            .filter(|b| b.dialog.is_some())
            .and_then(|b| b.session.as_ref())
            .map(|s| (Side::B, s));
        a.into_iter().chain(b)
    }

    fn session_slot(&mut self, side: Side) -> Option<&mut Option<SessionTimer>> {
        match side {
            Side::A => Some(&mut self.a.session),
            Side::B => self.b_mut().map(|b| &mut b.session),
        }
    }

    /// Records a session agreed (or refreshed) on `side` now; the headers that say so in our
    /// message on that leg (`in_request`: a request of ours, else our answer to theirs).
    pub(super) fn session_agreed(
        &mut self,
        side: Side,
        agreed: Agreed,
        in_request: bool,
        env: &Env,
    ) -> Vec<crate::sip::message::Header> {
        let now = env.now;
        let Some(slot) = self.session_slot(side) else {
            return Vec::new();
        };
        match slot {
            Some(timer) => timer.refreshed(agreed, now),
            None => *slot = Some(SessionTimer::new(agreed, now)),
        }
        let mut headers = vec![hdr("Supported", "timer")];
        if let Some(timer) = slot {
            headers.extend(timer.headers(in_request));
        }
        headers
    }

    /// The leg whose refresh of ours is out on `tx`.
    pub(super) fn refreshing(&self, tx: &TxKey) -> Option<Side> {
        self.sessions()
            .find(|(_, s)| s.is_ours(tx))
            .map(|(side, _)| side)
    }

    /// What the legs' session timers say is due: our refreshes, or the end.
    pub(super) fn session_ticks(&mut self, env: &mut Env) {
        let due: Vec<(Side, Due)> = self
            .sessions()
            .filter_map(|(side, s)| s.poll(env.now).map(|d| (side, d)))
            .collect();
        for (side, due) in due {
            match due {
                Due::Refresh => self.send_refresh(side, env),
                Due::Expired => return self.session_lost(side, "session expired", env),
            }
        }
    }

    /// Refreshes one leg's session: UPDATE without a body where the peer allows it, else a
    /// re-INVITE with the SDP we last sent there (unchanged, so it changes nothing).
    fn send_refresh(&mut self, side: Side, env: &mut Env) {
        let Some((timer, agreed)) = self
            .sessions()
            .find(|(s, _)| *s == side)
            .map(|(_, t)| (t.clone(), t.agreed))
        else {
            return;
        };
        let method = if agreed.update {
            Method::Update
        } else {
            Method::Invite
        };
        let Some((mut req, peer)) = self.dialog_request(side, method, None, env) else {
            return;
        };
        req.headers.push(hdr("Supported", "timer"));
        req.headers.extend(timer.headers(true));
        req.headers.push(hdr(
            "Min-SE",
            self.settings.cfg.calls.session.min_se.to_string(),
        ));
        if method == Method::Invite && !self.sdp_sent[side.index()].is_empty() {
            req.headers.push(hdr("Content-Type", "application/sdp"));
            req.body = self.sdp_sent[side.index()].clone();
        }
        tracing::debug!(call = self.id, ?side, %method, "refreshing the session");
        if let Some(tx) = self.send(req.clone(), peer) {
            if let Some(Some(timer)) = self.session_slot(side) {
                timer.sent(tx, req);
            }
        }
    }

    /// The peer answered our refresh: a 2xx restarts the session (as it now says); 408 or
    /// 481 means the peer is gone (RFC 4028 §10), anything else leaves the session to run out
    /// unless the peer refreshes it.
    pub(super) fn refresh_answered(&mut self, side: Side, resp: &Response, env: &mut Env) {
        let code = resp.status_code.code();
        let Some(before) = self
            .sessions()
            .find(|(s, _)| *s == side)
            .map(|(_, t)| t.agreed)
        else {
            return;
        };
        // A carrier that wants our credentials for the refresh, too.
        if side == Side::B {
            let sent = self
                .sessions()
                .find(|(s, _)| *s == side)
                .and_then(|(_, t)| t.in_flight().cloned());
            if let Some(sent) = sent {
                if let Some((tx, again)) = self.b_in_dialog_challenged(&sent, resp, env) {
                    if let Some(Some(timer)) = self.session_slot(side) {
                        timer.sent(tx, again);
                    }
                    return;
                }
            }
        }
        match code {
            100..=199 => {}
            200..=299 => {
                if resp.cseq().is_some_and(|(_, m)| m == Method::Invite) {
                    self.reack(side, resp, env);
                }
                match after_refresh(resp, before) {
                    Some(agreed) => {
                        self.session_agreed(side, agreed, true, env);
                    }
                    // The peer no longer wants a timer (RFC 4028 §7.2): none on this leg.
                    None => {
                        if let Some(slot) = self.session_slot(side) {
                            *slot = None;
                        }
                    }
                }
            }
            408 | 481 => self.session_lost(side, "session refresh refused", env),
            // Glare: the peer is changing the session itself. As the dialog's owner of the
            // Call-ID we wait 2.1 to 4 s, anyone else up to 2 s (RFC 3261 §14.1).
            491 => {
                let owner = side == Side::B;
                let spread = self.id % 1900;
                let wait = if owner {
                    2100 + spread
                } else {
                    spread * 2000 / 1900
                };
                let at = env.now + std::time::Duration::from_millis(wait);
                tracing::info!(
                    call = self.id,
                    ?side,
                    wait_ms = wait,
                    "session refresh crossed the peer's; trying again"
                );
                if let Some(Some(timer)) = self.session_slot(side) {
                    timer.retry_at(at);
                }
            }
            _ => {
                tracing::info!(
                    call = self.id,
                    ?side,
                    code,
                    "session refresh refused; the session runs out unless the peer refreshes it"
                );
                if let Some(Some(timer)) = self.session_slot(side) {
                    timer.failed();
                }
            }
        }
    }

    /// A leg's session is over without a BYE: the call ends on both legs and is settled. An
    /// IVR caller whose destination went away is back in the flow instead, like after any
    /// hang-up of the called party.
    pub(super) fn session_lost(&mut self, side: Side, why: &str, env: &mut Env) {
        if self.is_ended() {
            return;
        }
        tracing::warn!(call = self.id, ?side, "{why}; ending the call");
        crate::metrics::get().sessions_expired.inc();
        if side == Side::B && self.is_ivr() {
            self.bye(Side::B, env);
            return self.bridge_ended(ivr::BridgeEnd::CalledHangup, None, env);
        }
        self.cancel_b(env);
        self.bye(Side::A, env);
        self.bye(Side::B, env);
        let at = self.wall(env.now);
        self.end(why, at, env);
    }

    /// Whether an in-dialog INVITE or UPDATE only refreshes the session: no SDP, or the very
    /// SDP this leg last sent us.
    pub(super) fn is_refresh(&self, side: Side, req: &Request) -> bool {
        req.body.is_empty() || req.body == self.sdp_heard[side.index()]
    }

    /// Answers a peer's refresh on its own leg: 200 with the session as now agreed and, to a
    /// re-INVITE, the SDP we last sent there (our answer again, or our offer when it had none).
    pub(super) fn answer_refresh(&mut self, side: Side, tx: TxKey, req: Request, env: &mut Env) {
        let timers = self.settings.cfg.calls.session;
        let standing = self
            .sessions()
            .find(|(s, _)| *s == side)
            .map(|(_, t)| t.agreed);
        let agreed = match as_uas(&req, &timers) {
            // A refresh that does not restate the session keeps the one agreed.
            Ok(_) if req.header("Session-Expires").is_none() && standing.is_some() => standing,
            Ok(a) => a,
            Err(Refusal::TooSmall(min)) => {
                let mut r = reply_to(&req, 422, None, &env.ids.tag());
                r.headers.push(hdr("Min-SE", min.to_string()));
                return self.respond(&tx, r);
            }
            Err(Refusal::Malformed(why)) => return self.reply(&tx, &req, 400, Some(&why), env),
        };
        let mut ok = response_to(&req, 200, None);
        let proto = match side {
            Side::A => self.a.peer.proto,
            Side::B => self
                .b()
                .map(|b| b.peer.proto)
                .unwrap_or(crate::routing::Proto::Udp),
        };
        ok.headers
            .push(hdr("Contact", self.settings.local.contact(proto)));
        if let Some(agreed) = agreed {
            let headers = self.session_agreed(side, agreed, false, env);
            ok.headers.extend(headers);
        }
        if req.method == Method::Invite {
            let ours = self.sdp_sent[side.index()].clone();
            // Without SDP the re-INVITE asks us for an offer: the media as it stands, and
            // the ACK brings the answer (RFC 3261 §14.2).
            self.answer_in_ack[side.index()] = req.body.is_empty() && !ours.is_empty();
            if !ours.is_empty() {
                attach_sdp(&mut ok, String::from_utf8_lossy(&ours).into_owned());
            }
            let seq = req.cseq().map(|c| c.0).unwrap_or(0);
            self.awaiting_ack[side.index()] = Some((tx.clone(), seq));
        }
        tracing::debug!(call = self.id, ?side, method = %req.method, "session refreshed by the peer");
        self.emit(Output::Respond { tx, resp: ok });
    }
}

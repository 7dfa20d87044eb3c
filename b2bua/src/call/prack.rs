//! Reliable provisional responses (RFC 3262), on each leg on its own. A carrier that sends
//! its `183` with `Require: 100rel` retransmits it until we acknowledge it with a PRACK, and
//! some give up on the call when none comes; we acknowledge each one once, in order, on the
//! early dialog it opens, and pass its early media to the caller as any other 18x.
//!
//! Toward the caller, the 18x we relay are reliable when its INVITE requires that (an access
//! provider's SBC that starts early media only on a reliable 183), or merely supports it and
//! `calls.caller_100rel` is on: we number them, resend them until the caller's PRACK, and
//! hold our 200 while the SDP in one is unacknowledged. PRACKs are each leg's own business
//! and never cross the call.

use super::legs::Side;
use super::{Call, Env};
use crate::sip::dialog::Dialog;
use crate::sip::message::{hdr, Method, Request, Response, SipExt};
use crate::sip::reliable::{classify, Due, Provisional, RAck, Sender};
use crate::sip::transaction::TxKey;
use std::time::Instant;

/// The reliable-provisional sender for a caller whose INVITE asks for one: always when it
/// requires 100rel, when it only supports it as configured.
pub(super) fn for_caller(
    invite: &Request,
    configured: bool,
    t1: std::time::Duration,
    tag: &str,
) -> Option<Sender> {
    use crate::sip::reliable::{is_reliable, supports};
    let wanted = is_reliable(invite) || (configured && supports(invite));
    // RFC 3262 §3 wants the first RSeq picked at random; our To tag already is.
    let first = tag.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    wanted.then(|| Sender::new(first, t1))
}

impl Call {
    /// A provisional response to the attempt's INVITE, acknowledged with PRACK when the
    /// gateway asks for it. Whether it is to be passed on: a retransmission (or a response out
    /// of order) is not.
    pub(super) fn b_provisional(&mut self, resp: &Response, env: &mut Env) -> bool {
        let local = self.settings.local.clone();
        let id = self.id;
        let Some(b) = self.b_mut() else {
            return false;
        };
        let invite_seq = b.invite.cseq().map(|c| c.0).unwrap_or(1);
        // Another To tag is another early dialog (a fork), numbered afresh.
        let same = b
            .early
            .as_ref()
            .is_some_and(|(d, _)| Some(d.remote_tag.as_str()) == resp.to_tag());
        let last = if same {
            b.early.as_ref().map(|(_, r)| *r)
        } else {
            None
        };
        let rack = match classify(resp, invite_seq, last) {
            Provisional::Unreliable => return true,
            Provisional::Ignore => return false,
            Provisional::Prack(rack) => rack,
        };
        if resp.to_tag().is_none() {
            tracing::info!(
                call = id,
                "a reliable provisional response without a To tag opens no dialog to PRACK in"
            );
            return true;
        }
        let mut early = match b.early.take() {
            Some((d, _)) if same => d,
            _ => Dialog::uac(&b.invite, resp),
        };
        let mut prack = early.request(
            Method::PRack,
            &local.via(b.peer.proto),
            &env.ids.branch(),
            &local.contact(b.peer.proto),
            None,
        );
        prack.headers.push(hdr("RAck", rack.to_string()));
        b.early = Some((early, rack.rseq));
        let peer = b.peer;
        self.send(prack, peer);
        true
    }
}

impl Call {
    /// A provisional response to the caller's INVITE, reliable if the caller asked for that.
    pub(super) fn provisional_to_caller(&mut self, resp: Response, now: Instant) {
        if self.a.answered {
            return;
        }
        let resp = match self.a.reliable.as_mut() {
            Some(sender) => sender.send(resp, now),
            None => Some(resp),
        };
        if let Some(resp) = resp {
            let tx = self.a.tx.clone();
            self.respond(&tx, resp);
        }
    }

    /// Our 2xx to the caller's INVITE: held while a reliable 18x with SDP waits for its
    /// PRACK (the caller may not have our answer yet), sent now otherwise.
    pub(super) fn answer_caller(&mut self, ok: Response) {
        let tx = self.a.tx.clone();
        match self.a.reliable.as_mut() {
            Some(sender) if sender.holds_final() => {
                tracing::debug!(call = self.id, "200 held for the caller's PRACK");
                self.a.answered = true;
                self.a.held_ok = Some(ok);
            }
            Some(sender) => {
                sender.finish();
                self.respond(&tx, ok);
            }
            None => self.respond(&tx, ok),
        }
    }

    /// Sends the 2xx held for a PRACK, if one is: the PRACK came, the caller never sent it,
    /// or the call ends (the caller must have its 200 before our BYE makes sense).
    pub(super) fn release_held_ok(&mut self) {
        if let Some(ok) = self.a.held_ok.take() {
            if let Some(sender) = self.a.reliable.as_mut() {
                sender.finish();
            }
            let tx = self.a.tx.clone();
            self.emit(super::io::Output::Respond { tx, resp: ok });
        }
    }

    /// The caller's PRACK, in its early dialog or its confirmed one: 200 when it names the
    /// reliable response we wait on, 481 when it names nothing of ours (RFC 3262 §3).
    pub(super) fn caller_prack(&mut self, tx: TxKey, req: Request, env: &mut Env) {
        if req.to_tag() != Some(self.a.tag.as_str()) {
            return self.reply(&tx, &req, 481, None, env);
        }
        let rack = match req.header("RAck").map(RAck::parse) {
            Some(Ok(rack)) => rack,
            Some(Err(why)) => return self.reply(&tx, &req, 400, Some(&why), env),
            None => return self.reply(&tx, &req, 400, Some("PRACK without RAck"), env),
        };
        let invite_seq = self.a.invite.cseq().map(|c| c.0).unwrap_or(1);
        let next = self
            .a
            .reliable
            .as_mut()
            .and_then(|s| s.prack(&rack, invite_seq, env.now));
        let Some(next) = next else {
            return self.reply(&tx, &req, 481, None, env);
        };
        self.reply(&tx, &req, 200, None, env);
        if self.a.held_ok.is_some() {
            return self.release_held_ok();
        }
        if let Some(next) = next {
            let a = self.a.tx.clone();
            self.respond(&a, next);
        }
    }

    /// When our reliable 18x to the caller is next resent or given up.
    pub(super) fn reliable_wake(&self) -> Option<Instant> {
        self.a.reliable.as_ref().and_then(Sender::next_wake)
    }

    /// Resends our unacknowledged reliable 18x; after 64·T1 without a PRACK the caller cannot
    /// be reached reliably: a held 200 goes anyway (its ACK, or the lack of one, decides the
    /// call), an unanswered call is refused with 500 and its gateway leg cancelled.
    pub(super) fn reliable_ticks(&mut self, env: &mut Env) {
        let Some(due) = self.a.reliable.as_mut().and_then(|s| s.poll(env.now)) else {
            return;
        };
        match due {
            Due::Resend(resp) => {
                let tx = self.a.tx.clone();
                self.emit(super::io::Output::Respond { tx, resp });
            }
            Due::GaveUp if self.a.held_ok.is_some() => {
                tracing::info!(
                    call = self.id,
                    "no PRACK from the caller; sending the 200 anyway"
                );
                self.release_held_ok();
            }
            Due::GaveUp => {
                tracing::info!(
                    call = self.id,
                    "no PRACK from the caller; refusing the call"
                );
                self.cancel_b(env);
                self.fail(
                    500,
                    Some("reliable provisional response never acknowledged"),
                    "no PRACK",
                    env,
                );
            }
        }
    }

    /// Whether a request is the caller's PRACK (answered by us, whatever the state).
    pub(super) fn is_caller_prack(side: Side, req: &Request) -> bool {
        side == Side::A && req.method == Method::PRack
    }
}

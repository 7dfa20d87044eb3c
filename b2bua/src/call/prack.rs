//! Reliable provisional responses from a gateway (RFC 3262). A carrier that sends its `183`
//! with `Require: 100rel` retransmits it until we acknowledge it with a PRACK, and some give
//! up on the call when none comes; we acknowledge each one once, in order, on the early
//! dialog it opens, and pass its early media to the caller as any other 18x. The caller's leg
//! keeps plain provisional responses: nothing a caller does depends on them being reliable.

use super::{Call, Env};
use crate::sip::dialog::Dialog;
use crate::sip::message::{hdr, Method, Response, SipExt};
use crate::sip::reliable::{classify, Provisional};

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

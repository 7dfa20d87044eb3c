//! Our credentials on the gateway leg (RFC 3261 §22.2). A carrier may challenge any request
//! we send it, not only the INVITE: a re-INVITE for hold, an UPDATE that refreshes the
//! session, a relayed INFO. Each is answered once with the gateway's credentials as a new
//! transaction on the same dialog; a second challenge is a refusal like any other. (The BYE's
//! challenge is answered by the engine from its transaction, because the call has usually
//! been settled and forgotten by the time it comes back.)

use super::{Call, Env};
use crate::sip::digest::{answer, Credentials, Unanswered};
use crate::sip::message::{hdr, name_value, Request, Response, SipExt};
use crate::sip::transaction::TxKey;

impl Call {
    /// `sent` again, answering the challenge `resp` with the credentials of the gateway the
    /// B leg dialled; why not, in words for the log, when it cannot be.
    pub(super) fn b_authorized(
        &self,
        sent: &Request,
        resp: &Response,
        env: &mut Env,
    ) -> Result<Request, String> {
        let b = self.b().ok_or("no gateway leg")?;
        let gateway = b
            .channel
            .as_ref()
            .map(|c| c.gateway())
            .ok_or("no gateway leg")?;
        let gw = &self.settings.cfg.router.gateways[gateway];
        let auth = gw.auth.as_ref().ok_or_else(|| {
            format!(
                "gateway {} challenged us and has no auth configured",
                gw.name
            )
        })?;
        let credentials = Credentials {
            username: &auth.username,
            password: &auth.password,
        };
        let (cnonce, branch) = (env.ids.tag(), env.ids.branch());
        answer(
            sent,
            resp,
            credentials,
            auth.realm.as_deref(),
            &cnonce,
            &branch,
        )
        .map_err(|why| {
            let why = match why {
                Unanswered::Refused => "refused our credentials",
                Unanswered::Unsupported => "sent a challenge we cannot answer",
                Unanswered::OtherRealm => "challenged for a realm we hold no credentials for",
            };
            format!("gateway {} {why}", gw.name)
        })
    }

    /// A challenge (401 or 407) to `sent`, our request inside the gateway's dialog: sent again
    /// with credentials, numbered on from the dialog's CSeq so that later requests stay in
    /// order. The new request and its transaction, or `None` when it is not to be answered
    /// (and the challenge stands as the request's answer).
    pub(super) fn b_in_dialog_challenged(
        &mut self,
        sent: &Request,
        resp: &Response,
        env: &mut Env,
    ) -> Option<(TxKey, Request)> {
        if !matches!(resp.status_code.code(), 401 | 407) {
            return None;
        }
        let mut again = match self.b_authorized(sent, resp, env) {
            Ok(again) => again,
            Err(why) => {
                tracing::warn!(call = self.id, method = %sent.method, "{why}");
                return None;
            }
        };
        let b = self.b_mut()?;
        let peer = b.peer;
        let dialog = b.dialog.as_mut()?;
        // Another request may have gone out on the dialog while this one was challenged.
        let seq = again.cseq().map(|c| c.0).unwrap_or(0);
        let next = seq.max(dialog.local_seq + 1);
        dialog.local_seq = next;
        if next != seq {
            again.headers.retain(|h| name_value(h).0 != "CSeq");
            again
                .headers
                .push(hdr("CSeq", format!("{next} {}", again.method)));
        }
        let tx = self.send(again.clone(), peer)?;
        Some((tx, again))
    }
}

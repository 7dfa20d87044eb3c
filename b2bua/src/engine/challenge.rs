//! A carrier that challenges our BYE (401 or 407) gets it again with our credentials for that
//! gateway, once. The shell answers it from the transaction alone, because by the time the
//! challenge is back, the call has often been settled and forgotten; without an answer the
//! carrier would keep its leg (and its meter) running. The INVITE's challenge belongs to the
//! call (`call/bridge.rs`), where fail-over is decided.

use super::Engine;
use crate::sip::digest::{answer, Credentials};
use crate::sip::message::{new_branch, new_tag, Method, Response};
use crate::sip::transaction::{self, TxKey};
use crate::transport::Peer;
use std::time::Instant;

impl Engine {
    /// Answers a challenge to our BYE on client transaction `key`; whether it did.
    pub(super) fn answer_bye_challenge(
        &mut self,
        key: &TxKey,
        resp: &Response,
        peer: Peer,
        now: Instant,
    ) -> bool {
        let code = resp.status_code.code();
        if !matches!(code, 401 | 407) {
            return false;
        }
        let Some(c) = self.client.get(key) else {
            return false;
        };
        let req = c.tx.request();
        let call = c.call;
        if req.method != Method::Bye {
            return false;
        }
        let Some(gw) = self
            .cfg
            .router
            .gateways
            .iter()
            .find(|g| g.addr == peer.addr)
        else {
            return false;
        };
        let Some(auth) = &gw.auth else {
            return false;
        };
        let credentials = Credentials {
            username: &auth.username,
            password: &auth.password,
        };
        let realm = auth.realm.as_deref();
        let bye = match answer(req, resp, credentials, realm, &new_tag(), &new_branch()) {
            Ok(bye) => bye,
            Err(why) => {
                tracing::warn!(gateway = %gw.name, ?why, "a challenge to our BYE left unanswered");
                return false;
            }
        };
        let Some(again) = transaction::key(&bye) else {
            return false;
        };
        self.send_request(again, bye, peer, call, now);
        true
    }
}

//! A carrier that challenges our BYE (401 or 407) gets it again with our credentials for that
//! gateway, once. The shell answers it from the transaction alone, because by the time the
//! challenge is back, the call has often been settled and forgotten; without an answer the
//! carrier would keep its leg (and its meter) running. The INVITE's challenge belongs to the
//! call (`call/bridge.rs`), where fail-over is decided.

use super::Engine;
use crate::sip::digest::{authorization, Challenge, Credentials};
use crate::sip::message::{hdr, new_branch, new_tag, resent_with, Method, Response, SipExt};
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
        let answered_before =
            req.header("Authorization").is_some() || req.header("Proxy-Authorization").is_some();
        if req.method != Method::Bye || answered_before {
            return false;
        }
        let Some((name, auth)) = self
            .cfg
            .router
            .gateways
            .iter()
            .find(|g| g.addr == peer.addr)
            .and_then(|g| g.auth.as_ref().map(|a| (g.name.clone(), a.clone())))
        else {
            return false;
        };
        let (offered, answer) = if code == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let Some(ch) = Challenge::best(resp.header_lines(offered)) else {
            tracing::warn!(gateway = %name, "a challenge to our BYE we cannot answer");
            return false;
        };
        if auth.realm.as_ref().is_some_and(|r| *r != ch.realm) {
            tracing::warn!(gateway = %name, realm = %ch.realm, "our BYE challenged for a realm we hold no credentials for");
            return false;
        }
        let credentials = Credentials {
            username: &auth.username,
            password: &auth.password,
        };
        let value = authorization(&ch, credentials, "BYE", &req.uri.to_string(), &new_tag(), 1);
        let bye = resent_with(req, &new_branch(), hdr(answer, value));
        let Some(again) = transaction::key(&bye) else {
            return false;
        };
        self.send_request(again, bye, peer, call, now);
        true
    }
}

//! Gateway health, as Kamailio's dispatcher keeps it: a gateway configured with `ping_s` is
//! sent an OPTIONS every so often; `ping_failures` pings in a row left unanswered take it out
//! of routing (it offers no channels), and the first answer, whatever its status, puts it
//! back. A dead gateway then costs new calls nothing, instead of each one waiting out its
//! setup timeout before failing over.

use super::{Engine, Wake};
use crate::sip::message::{hdr, new_request, parse_uri, Headers, Method};
use crate::sip::transaction::{self, TxKey};
use crate::transport::Peer;
use std::collections::HashMap;
use std::time::Instant;

/// The pings in flight and each gateway's unanswered ones in a row.
#[derive(Default)]
pub(super) struct Pings {
    pending: HashMap<TxKey, usize>,
    missed: Vec<u32>,
}

impl Engine {
    /// Schedules the first ping of every gateway that wants them.
    pub(super) fn start_pings(&mut self, now: Instant) {
        let n = self.cfg.router.gateways.len();
        self.pings.missed = vec![0; n];
        for (i, g) in self.cfg.router.gateways.iter().enumerate() {
            if g.ping.is_some() {
                crate::metrics::get().gateway_up(&g.name, true);
                self.wakeups.push(std::cmp::Reverse((now, Wake::Ping(i))));
            }
        }
    }

    /// Sends gateway `i` its OPTIONS and schedules the next one.
    pub(super) fn ping(&mut self, i: usize, now: Instant) {
        let Some(gw) = self.cfg.router.gateways.get(i).cloned() else {
            return;
        };
        let Some(every) = gw.ping else {
            return;
        };
        self.schedule(Some(now + every), Wake::Ping(i));
        if self.lent.stopping {
            return;
        }
        let local = &self.settings.local;
        let host = local.hostport(gw.proto).to_string();
        let mut headers = Headers::default();
        headers.push(hdr(
            "Via",
            local.via_with(gw.proto, &crate::sip::message::new_branch()),
        ));
        headers.push(hdr("Max-Forwards", "70"));
        headers.push(hdr(
            "From",
            format!("<sip:ping@{host}>;tag={}", crate::sip::message::new_tag()),
        ));
        headers.push(hdr("To", format!("<sip:{}>", gw.addr)));
        headers.push(hdr("Call-ID", crate::sip::message::new_call_id(&host)));
        headers.push(hdr("CSeq", "1 OPTIONS"));
        headers.push(hdr("Contact", local.contact(gw.proto)));
        let transport = gw.proto.uri_param();
        let uri = parse_uri(&format!("sip:{}{transport}", gw.addr)).unwrap_or_default();
        let req = new_request(Method::Options, uri, headers, Vec::new());
        let Some(key) = transaction::key(&req) else {
            return;
        };
        self.pings.pending.insert(key.clone(), i);
        let peer = Peer {
            proto: gw.proto,
            addr: gw.addr,
            conn: None,
        };
        self.send_request(key, req, peer, None, now);
    }

    /// A response to one of our pings: the gateway is there. Whether `key` was a ping.
    pub(super) fn ping_answered(&mut self, key: &TxKey) -> bool {
        let Some(i) = self.pings.pending.remove(key) else {
            return false;
        };
        self.pings.missed[i] = 0;
        if !self.lent.channels.answers_pings(i) {
            let name = &self.cfg.router.gateways[i].name;
            tracing::info!(gateway = %name, "the gateway answers its pings again: back in routing");
            self.lent.channels.set_up(i, true);
            crate::metrics::get().gateway_up(name, true);
        }
        true
    }

    /// A ping that got no answer at all. Whether `key` was a ping.
    pub(super) fn ping_unanswered(&mut self, key: &TxKey) -> bool {
        let Some(i) = self.pings.pending.remove(key) else {
            return false;
        };
        self.pings.missed[i] += 1;
        let gw = &self.cfg.router.gateways[i];
        if self.pings.missed[i] >= gw.ping_failures && self.lent.channels.answers_pings(i) {
            tracing::warn!(gateway = %gw.name, missed = self.pings.missed[i], "the gateway does not answer its pings: out of routing");
            self.lent.channels.set_up(i, false);
            crate::metrics::get().gateway_up(&gw.name, false);
        }
        true
    }
}

//! The subscriber leg of a call to a DID (phone-to-PC): a carrier's call to a number that names
//! a SIP account rings every contact the account has registered at once, as a B2BUA forking in
//! parallel (RFC 3261 §16.7 is the proxy's version of the same choice). The first contact to
//! answer wins and the others are cancelled; if none answers, the caller hears the best of
//! their refusals. The winner then is the call's B-leg like a gateway's, so everything after
//! the answer — the dialogs, re-INVITEs, BYE, the records, the end — is the common path.

use super::bridge::{Attempt, Bridge, Dial, Hold};
use super::clock::Grant;
use super::io::{MediaCmd, Output};
use super::legs::{add_contact, BLeg, Side};
use super::{Call, Env, State};
use crate::routing::Proto;
use crate::sip::message::{cancel_for, hdr, Response};
use crate::sip::transaction::TxKey;
use crate::transport::Peer;
use std::time::Instant;

/// One registered contact an incoming call rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The Contact URI the client registered: our INVITE's Request-URI.
    pub uri: String,
    /// Where the INVITE goes: where the REGISTER came from, so that a client behind NAT is
    /// reached through the mapping it opened (RFC 3581), on the connection it opened. Through
    /// an edge proxy, that is the proxy (the first of `route`).
    pub peer: Peer,
    /// The REGISTER's Path (RFC 3327), our INVITE's Route: the way back through the proxies
    /// it came by. Empty when it registered with us directly.
    pub route: Vec<String>,
}

/// A call to a subscriber: whom it rings and where.
#[derive(Debug, Clone)]
pub struct Ring {
    /// The SIP account's address of record (`user@domain`): our INVITEs' To.
    pub aor: String,
    /// The card it spends from, which the call's records name.
    pub card: String,
    /// Its registered contacts, every one rung at once.
    pub contacts: Vec<Contact>,
    /// The deck the subscriber's tenant prices calls to it with: the card pays, authorized
    /// (phase 2, by the number called) before anyone rings. `None`: the call is free.
    pub rate_deck: Option<String>,
}

/// The contacts being rung, and what those that gave up said.
#[derive(Debug)]
pub(super) struct Forks {
    legs: Vec<BLeg>,
    /// Contacts that say nothing by then are dropped (a binding left behind by a client
    /// that went away without unregistering).
    setup_deadline: Option<Instant>,
    /// Set when the first contact rings: the caller is not kept waiting past it.
    ring_deadline: Option<Instant>,
    /// The final statuses of the contacts that refused.
    refusals: Vec<u16>,
}

impl Forks {
    pub fn next_wake(&self) -> Option<Instant> {
        self.setup_deadline
            .iter()
            .chain(&self.ring_deadline)
            .min()
            .copied()
    }

    fn position(&self, tx: &TxKey) -> Option<usize> {
        self.legs.iter().position(|b| b.tx == *tx)
    }
}

/// The status a caller hears when no contact answered: a 6xx is the subscriber's own word for
/// every contact (RFC 3261 §16.7 step 6); busy anywhere is busy; anything else is
/// "temporarily unavailable".
pub fn best_refusal(refusals: &[u16]) -> u16 {
    if let Some(&global) = refusals.iter().find(|c| (600..700).contains(*c)) {
        return global;
    }
    if refusals.contains(&486) {
        return 486;
    }
    480
}

impl Call {
    /// Rings every contact of the subscriber a DID names: at once when the call is free (it
    /// then ends only at the maximum duration), else once the card's money is held.
    pub(super) fn ring(&mut self, conf_id: String, ring: Ring, env: &mut Env) {
        if ring.rate_deck.is_some() {
            let number = self.access.number.clone();
            return self.ask_phase2(conf_id, number, Some(ring));
        }
        let hold = Hold {
            conf_id,
            destination: ring.aor.clone(),
            reservation: None,
            grant: Grant::default(),
        };
        self.fork(hold, ring, env);
    }

    /// Rings the contacts, the call's money (if any) held by `hold`.
    pub(super) fn fork(&mut self, hold: Hold, ring: Ring, env: &mut Env) {
        let mut bridge = Bridge::new(hold, Vec::new());
        bridge.setup = Some(self.wall(env.now));
        self.state = State::Direct(Box::new(bridge));
        let mut legs = Vec::new();
        for contact in ring.contacts {
            // A client that registered over TLS expects its media kept as private.
            let srtp = contact.peer.proto == Proto::Tls;
            let dial = Dial {
                uri: contact.uri,
                to: format!("<sip:{}>", ring.aor),
                proto: contact.peer.proto,
                identity: Default::default(),
                srtp,
                // One early dialog per contact to acknowledge is not worth it: a softphone
                // rings without reliable provisionals.
                reliable: false,
            };
            let mut invite = self.leg_invite(dial, env);
            for r in contact.route {
                invite.headers.push(hdr("Route", r));
            }
            let Some(tx) = self.send(invite.clone(), contact.peer) else {
                continue;
            };
            self.sdp_sent[Side::B.index()] = invite.body.clone();
            legs.push(BLeg::dialled(None, contact.peer, tx, invite, srtp));
        }
        if legs.is_empty() {
            let why = Some("the subscriber has no reachable contact");
            return self.fail(480, why, "not registered", env);
        }
        let forks = Forks {
            legs,
            setup_deadline: Some(env.now + self.settings.cfg.calls.setup_timeout),
            ring_deadline: None,
            refusals: Vec::new(),
        };
        if let Some(bridge) = self.bridge_mut() {
            bridge.attempt = Attempt::Forking(forks);
        }
    }

    fn forks_mut(&mut self) -> Option<&mut Forks> {
        match self.bridge_mut().map(|b| &mut b.attempt) {
            Some(Attempt::Forking(f)) => Some(f),
            _ => None,
        }
    }

    /// Whether `tx` is the INVITE of a contact still being rung.
    pub(super) fn is_fork(&self, tx: &TxKey) -> bool {
        match self.bridge().map(|b| &b.attempt) {
            Some(Attempt::Forking(f)) => f.position(tx).is_some(),
            _ => false,
        }
    }

    /// A contact's answer to our INVITE.
    pub(super) fn fork_response(&mut self, tx: &TxKey, resp: Response, env: &mut Env) {
        let ring = env.now + self.settings.cfg.calls.ring_timeout;
        let Some(forks) = self.forks_mut() else {
            return;
        };
        let Some(i) = forks.position(tx) else {
            return;
        };
        forks.legs[i].heard = true;
        match resp.status_code.code() {
            100 => {}
            101..=199 => {
                if forks.ring_deadline.is_none() {
                    forks.ring_deadline = Some(ring);
                    // Ringing, without anyone's early media: which contact's would it be?
                    let mut out = self.a.response(180);
                    add_contact(&mut out, &self.settings.local, self.a.peer.proto, false);
                    self.provisional_to_caller(out, env.now);
                }
            }
            200..=299 => self.fork_answered(i, resp, env),
            code => {
                let leg = forks.legs.remove(i);
                tracing::info!(call = self.id, code, contact = %leg.invite.uri, "a contact refused the call");
                self.fork_gone(code, env);
            }
        }
    }

    /// A contact answered: it is the call's leg from now on; the others stop ringing.
    fn fork_answered(&mut self, i: usize, resp: Response, env: &mut Env) {
        let Some(bridge) = self.bridge_mut() else {
            return;
        };
        let Attempt::Forking(mut forks) = std::mem::replace(&mut bridge.attempt, Attempt::Idle)
        else {
            return;
        };
        let winner = forks.legs.remove(i);
        bridge.remote = Some(winner.peer.addr);
        let ip = winner.peer.addr.ip();
        bridge.attempt = Attempt::Dialing {
            b: winner,
            setup_deadline: None,
            ring_deadline: None,
        };
        for leg in forks.legs {
            self.cancel_leg(leg);
        }
        self.emit(Output::Media(MediaCmd::Signalling { side: Side::B, ip }));
        self.b_answered(resp, env);
    }

    /// A contact dropped out with `code`; with none left, the caller hears the best refusal.
    fn fork_gone(&mut self, code: u16, env: &mut Env) {
        let Some(forks) = self.forks_mut() else {
            return;
        };
        forks.refusals.push(code);
        if !forks.legs.is_empty() {
            return;
        }
        let best = best_refusal(&forks.refusals);
        let cause = if best == 486 {
            "subscriber busy"
        } else {
            "subscriber unavailable"
        };
        self.fail(best, None, cause, env);
    }

    /// A contact's INVITE got no answer at all.
    pub(super) fn fork_timeout(&mut self, tx: &TxKey, env: &mut Env) {
        let Some(forks) = self.forks_mut() else {
            return;
        };
        if let Some(i) = forks.position(tx) {
            forks.legs.remove(i);
            self.fork_gone(408, env);
        }
    }

    /// The forks' deadlines: silent contacts are dropped at the setup timeout; a subscriber
    /// who lets every contact ring past the ring timeout is not there.
    pub(super) fn fork_timers(&mut self, env: &mut Env) {
        let now = env.now;
        let Some(forks) = self.forks_mut() else {
            return;
        };
        let due = |t: &Option<Instant>| t.is_some_and(|t| t <= now);
        if due(&forks.ring_deadline) {
            forks.ring_deadline = None;
            self.cancel_b(env);
            return self.fail(480, Some("no answer"), "no answer", env);
        }
        if due(&forks.setup_deadline) {
            forks.setup_deadline = None;
            let (silent, heard): (Vec<BLeg>, Vec<BLeg>) = std::mem::take(&mut forks.legs)
                .into_iter()
                .partition(|b| !b.heard);
            forks.legs = heard;
            let dropped = silent.len();
            for leg in silent {
                self.emit(Output::Abandon(leg.tx));
            }
            if dropped > 0 {
                tracing::info!(
                    call = self.id,
                    dropped,
                    "contacts silent past the setup timeout"
                );
                self.fork_gone(408, env);
            }
        }
    }

    /// Stops ringing every contact (the caller gave up, or the node stops).
    pub(super) fn cancel_forks(&mut self) {
        let Some(forks) = self.forks_mut() else {
            return;
        };
        for leg in std::mem::take(&mut forks.legs) {
            self.cancel_leg(leg);
        }
    }

    /// Stops one contact's INVITE: a CANCEL once it has said something, else the INVITE's
    /// retransmissions stop (a CANCEL could overtake it, RFC 3261 §9.1) and a late answer is
    /// hung up as a stray.
    fn cancel_leg(&mut self, leg: BLeg) {
        if leg.heard {
            self.send(cancel_for(&leg.invite), leg.peer);
        } else {
            self.emit(Output::Abandon(leg.tx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::best_refusal;

    #[test]
    fn the_caller_hears_the_best_refusal() {
        assert_eq!(best_refusal(&[408, 486, 480]), 486);
        assert_eq!(best_refusal(&[486, 603]), 603);
        assert_eq!(best_refusal(&[408, 404]), 480);
        assert_eq!(best_refusal(&[]), 480);
    }
}

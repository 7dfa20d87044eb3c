//! Admitting a new call: the checks an INVITE passes before it becomes a
//! [`Call`](crate::call::Call) — capacity, the access number and its flow, the caller's
//! number, the SDP offer, loops — and the RTP ports it gets.

use super::{Engine, Slot};
use crate::access::AccessNumber;
use crate::call::{self, legs::usable_offer, Setup, Side};
use crate::media::sdp;
use crate::sip::message::{hdr, Header, Request, SipExt};
use crate::sip::transaction::TxKey;
use crate::transport::Peer;
use chrono::Utc;
use rating::store::CallSlot;
use std::sync::Arc;
use std::time::Instant;

/// Why an INVITE is refused: the status, the Warning that explains it, and a header the
/// status calls for (422's Min-SE, 420's Unsupported).
pub(super) struct Refusal {
    code: u16,
    why: Option<String>,
    header: Option<Header>,
}

fn refuse(code: u16, why: &str) -> Refusal {
    Refusal {
        code,
        why: Some(why.to_string()),
        header: None,
    }
}

/// The Retry-After of a 503 for capacity: full, not broken, so come back shortly (or try
/// another node now).
pub(super) fn retry_after() -> Header {
    hdr("Retry-After", "5")
}

/// A refusal that says nothing more than its status.
fn bare(code: u16) -> Refusal {
    Refusal {
        code,
        why: None,
        header: None,
    }
}

/// A subscriber's account and its bindings now, as a store task read them, and whether the
/// call counts among the account's calls at once.
pub(super) struct Found {
    pub account: Option<rating::store::SipAccount>,
    pub bindings: Vec<rating::store::Binding>,
    pub count: Counted,
}

/// A call's place among its SIP account's calls at once, counted across the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Counted {
    /// Not asked: the account cannot take the call anyway (there is none, it is blocked, it
    /// has no phone registered).
    Unasked,
    /// Its calls at once are all in use, on one node or several.
    Full,
    /// Counted: released when the call ends (or is refused after all).
    In(CallSlot),
}

/// The extensions we implement, which a caller may Require (RFC 3261 §8.2.2.3).
const EXTENSIONS: [&str; 2] = ["timer", crate::sip::reliable::TAG];

/// What an admitted INVITE brings to its call.
pub(super) struct Admitted {
    access: AccessNumber,
    destination: String,
    flow: Option<Arc<ivr::Flow>>,
    prompts: Arc<prompts::set::PromptSet>,
    ani: String,
    /// A subscriber's card (see [`Setup::card`]).
    card: Option<String>,
    /// The call's place among the subscriber's calls at once, released when it ends.
    counted: Option<CallSlot>,
    offer: sdp::Audio,
    session: Option<call::session::Agreed>,
    /// A call to a subscriber's DID: the contacts it rings.
    ring: Option<call::Ring>,
}

impl Engine {
    /// An INVITE outside any dialog: a new call, if it passes.
    pub(super) fn new_call(&mut self, req: Request, from: Peer, key: TxKey, now: Instant) {
        if self.is_subscriber_call(&req) {
            return self.subscriber_invite(req, from, key, now);
        }
        match self.check_call(&req, from) {
            Ok(a) => match a.access.subscriber.clone() {
                Some(aor) => self.ring_subscriber(aor, a, req, from, key, now),
                None => self.place(a, req, from, key, now),
            },
            Err(r) => self.refuse(&key, r, now),
        }
    }

    /// Answers an INVITE that is not admitted.
    pub(super) fn refuse(&mut self, key: &TxKey, r: Refusal, now: Instant) {
        self.refuse_as(key, r, false, now)
    }

    /// [`refuse`](Self::refuse); `told`: a subscriber's refusal, its reason also on the status
    /// line, which its softphone shows.
    fn refuse_as(&mut self, key: &TxKey, r: Refusal, told: bool, now: Instant) {
        let Refusal { code, why, header } = r;
        if code == 503 && why.is_none() {
            return self.reply_retry_after(key, None, now);
        }
        self.reply_with(key, code, why.as_deref(), header, told, now);
    }

    /// An admitted INVITE becomes a call: its RTP ports, its dialog, its start.
    fn place(&mut self, admitted: Admitted, req: Request, from: Peer, key: TxKey, now: Instant) {
        let id = self.next_call;
        let session = match self.media.session(id) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no media for a new call");
                if let Some(slot) = admitted.counted {
                    self.release_call_slot(slot);
                }
                // Capacity, not a fault: the caller (or the dispatcher in front) may try again
                // here shortly or another node now.
                let why = crate::media::engine::refusal(&e);
                return self.reply_retry_after(&key, Some(why), now);
            }
        };
        self.next_call += 1;
        crate::metrics::get().calls.inc();
        self.dialogs
            .insert(req.call_id().to_string(), (id, Side::A));
        if let Some(s) = self.server.get_mut(&key) {
            s.call = Some(id);
        }
        let setup = Setup {
            id,
            peer: from,
            invite: req,
            tx: key,
            offer: admitted.offer,
            media_local: [
                session.local(crate::media::engine::A),
                session.local(crate::media::engine::B),
            ],
            media_keys: [
                session.srtp_key(crate::media::engine::A),
                session.srtp_key(crate::media::engine::B),
            ],
            trusted: self.cfg.trusted(from.addr.ip()),
            ani: admitted.ani,
            destination: admitted.destination,
            card: admitted.card,
            access: admitted.access,
            prompts: admitted.prompts,
            flow: admitted.flow,
            ring: admitted.ring,
            session: admitted.session,
            arrived: (now, Utc::now()),
        };
        let quality = || Some(session.quality());
        let mut env = self.lent.env(now, &quality);
        let call = call::Call::start(setup, self.settings.clone(), &mut env);
        self.calls.insert(
            id,
            Slot {
                call,
                media: Some(session),
                counted: admitted.counted,
            },
        );
        self.drain(id, now);
    }

    /// Whether the node can take one more call now.
    pub(super) fn check_capacity(&self) -> Result<(), Refusal> {
        if self.lent.stopping {
            return Err(refuse(503, "shutting down"));
        }
        if self.calls.len() >= self.cfg.limits.calls {
            crate::metrics::get().limit_hit("calls");
            return Err(bare(503));
        }
        // The database is slow (not gone): shed new calls here rather than queue them into
        // pool timeouts, which would refuse them with 8 as if it were unreachable.
        if self.tasks.len() >= self.cfg.limits.store_queue {
            crate::metrics::get().limit_hit("store_queue");
            return Err(bare(503));
        }
        // A call the relay could not carry is refused before the store works for it.
        if let Err(e) = self.media.has_room() {
            return Err(Refusal {
                code: 503,
                why: Some(crate::media::engine::refusal(&e).to_string()),
                header: Some(retry_after()),
            });
        }
        Ok(())
    }

    /// The checks, in the order a caller would want to hear about them.
    fn check_call(&self, req: &Request, from: Peer) -> Result<Admitted, Refusal> {
        self.check_capacity()?;
        let user = req.uri.user().unwrap_or("").to_string();
        // The access number, prompts and flow current now are this call's until it ends,
        // whatever is uploaded or changed meanwhile.
        let live = self.assets.live();
        let Some((access, rest)) = live.access.lookup(&user) else {
            return Err(refuse(404, "unknown access number"));
        };
        if access.trusted_only && !self.cfg.trusted(from.addr.ip()) {
            return Err(refuse(403, "source is not a trusted peer"));
        }
        let flow = match (&access.flow, access.pinless) {
            (Some(name), false) => match live.flows.get(name) {
                Some(f) => Some(f.clone()),
                None => return Err(refuse(503, "the access number's flow is not loaded")),
            },
            _ => None,
        };
        // A pinless number's digits after it are the destination; a subscriber's DID rings
        // the subscriber.
        let pinless = flow.is_none() && access.subscriber.is_none();
        if pinless && rest.is_empty() {
            return Err(refuse(484, "no destination after the access number"));
        }
        let session = self.check_headers(req)?;
        let ani = if access.trust_ani {
            req.header("P-Asserted-Identity")
                .map(crate::sip::message::addr_uri)
                .and_then(crate::sip::message::uri_user)
                .or_else(|| req.from_user())
                .unwrap_or("")
                .to_string()
        } else {
            String::new()
        };
        if ani.is_empty() && pinless {
            return Err(refuse(403, "a pinless call needs a trusted caller number"));
        }
        let offer = self.check_offer(req)?;
        Ok(Admitted {
            prompts: live.prompts(&access.tenant),
            access: access.clone(),
            destination: rest.to_string(),
            flow,
            ani,
            card: None,
            offer,
            session,
            ring: None,
            counted: None,
        })
    }

    /// What every INVITE's headers must pass, whoever sends it: Max-Forwards, the
    /// extensions it requires, its session timer (the one agreed, if any).
    fn check_headers(&self, req: &Request) -> Result<Option<call::session::Agreed>, Refusal> {
        if req
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            == Some(0)
        {
            return Err(bare(483));
        }
        let unsupported: Vec<&str> = req
            .header_values("Require")
            .into_iter()
            .map(str::trim)
            .filter(|t| !EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            return Err(Refusal {
                code: 420,
                why: None,
                header: Some(hdr("Unsupported", unsupported.join(", "))),
            });
        }
        let session = match call::session::as_uas(req, &self.cfg.calls.session) {
            Ok(s) => s,
            Err(call::session::Refusal::TooSmall(min)) => {
                return Err(Refusal {
                    code: 422,
                    why: None,
                    header: Some(hdr("Min-SE", min.to_string())),
                })
            }
            Err(call::session::Refusal::Malformed(why)) => return Err(refuse(400, &why)),
        };
        Ok(session)
    }

    /// The SDP offer every INVITE must carry, and no loop.
    fn check_offer(&self, req: &Request) -> Result<sdp::Audio, Refusal> {
        let offer = match req.header("Content-Type").map(|c| c.to_ascii_lowercase()) {
            Some(ct) if ct.starts_with("application/sdp") => {
                usable_offer(&req.body).map_err(|why| refuse(488, &why))?
            }
            _ => {
                return Err(refuse(
                    488,
                    "an SDP offer is required (delayed offer is not supported)",
                ))
            }
        };
        if self.dialogs.contains_key(req.call_id()) {
            // A second INVITE with a Call-ID we already carry, but a new branch: a loop or a fork.
            return Err(bare(482));
        }
        Ok(offer)
    }

    /// A subscriber's INVITE whose credentials proved right: placed as a pinless call on
    /// its SIP account's card, presenting its caller ID, unless a rule of its own refuses it.
    pub(super) fn subscriber_call(
        &mut self,
        req: Request,
        from: Peer,
        key: TxKey,
        account: rating::store::SipAccount,
        counted: CallSlot,
        now: Instant,
    ) {
        // The caller may have given up (CANCEL, answered 487) while its account was read.
        if self.server.get(&key).is_none_or(|s| s.tx.answered()) {
            return self.release_call_slot(counted);
        }
        match self.check_subscriber(&req, &account) {
            Ok(mut a) => {
                a.counted = Some(counted);
                self.place(a, req, from, key, now)
            }
            Err(r) => {
                self.release_call_slot(counted);
                self.refuse_as(&key, r, true, now)
            }
        }
    }

    /// A call to a subscriber's DID, once its account and bindings are read: placed ringing
    /// every contact it can reach, unless the account is not there to ring.
    pub(super) fn subscriber_rung(
        &mut self,
        req: Request,
        from: Peer,
        key: TxKey,
        mut admitted: Admitted,
        found: Result<Box<Found>, String>,
        now: Instant,
    ) {
        let counted = match found.as_ref().map(|f| &f.count) {
            Ok(Counted::In(slot)) => Some(slot.clone()),
            _ => None,
        };
        // The carrier may have given up (CANCEL, answered 487) while the account was read.
        if self.server.get(&key).is_none_or(|s| s.tx.answered()) {
            if let Some(slot) = counted {
                self.release_call_slot(slot);
            }
            return;
        }
        match self.check_ring(found) {
            Ok(ring) => {
                admitted.ring = Some(ring);
                admitted.counted = counted;
                self.place(admitted, req, from, key, now)
            }
            Err(r) => {
                if let Some(slot) = counted {
                    self.release_call_slot(slot);
                }
                self.refuse(&key, r, now)
            }
        }
    }

    /// Whom a call to a subscriber rings: the account's registered contacts this node can
    /// reach (UDP ones and those behind an edge proxy from anywhere; one over TCP or TLS
    /// only through the node holding its connection), if the account may take a call now.
    fn check_ring(&self, found: Result<Box<Found>, String>) -> Result<call::Ring, Refusal> {
        self.check_capacity()?;
        let Found {
            account,
            bindings,
            count,
        } = *found.map_err(|e| {
            tracing::warn!(error = %e, "call to a subscriber: the store is unreachable");
            bare(503)
        })?;
        let Some(account) = account else {
            return Err(refuse(404, "the number's subscriber does not exist"));
        };
        if account.status != rating::store::SipStatus::Active {
            return Err(refuse(480, "the subscriber is not available"));
        }
        let aor = account.aor();
        if count == Counted::Full {
            crate::metrics::get().limit_hit("subscriber_calls_at_once");
            return Err(refuse(486, "the subscriber's calls at once are all in use"));
        }
        let node = &self.store.config().node_id;
        let contacts: Vec<call::Contact> = bindings
            .iter()
            .filter_map(|b| {
                let peer = crate::registrar::peer_of(&b.source)?;
                crate::sip::message::parse_uri(&b.contact)?;
                // Through an edge proxy (a Path), any node can open the way to it.
                let here = peer.proto == crate::routing::Proto::Udp
                    || b.node == *node
                    || !b.path.is_empty();
                here.then(|| call::Contact {
                    uri: b.contact.clone(),
                    peer,
                    route: b.path.clone(),
                })
            })
            .collect();
        if contacts.is_empty() {
            return Err(refuse(480, "the subscriber is not registered"));
        }
        let rate_deck = self
            .cfg
            .subscribers
            .as_ref()
            .and_then(|s| s.incoming_deck(&account.tenant))
            .map(str::to_string);
        Ok(call::Ring {
            aor,
            card: account.card,
            contacts,
            rate_deck,
        })
    }

    fn check_subscriber(
        &self,
        req: &Request,
        account: &rating::store::SipAccount,
    ) -> Result<Admitted, Refusal> {
        self.check_capacity()?;
        let dialled = req.uri.user().unwrap_or("");
        let rules = self.cfg.subscribers.as_ref();
        let live = self.assets.live();
        if let Some(name) = rules.and_then(|r| r.short_codes.get(dialled)) {
            // A short code (`*100`): its flow, answered by us, on the account's card (which
            // the flow may name as `card` without a PIN: the digest proved it).
            let Some(flow) = live.flows.get(name).cloned() else {
                return Err(refuse(503, "the short code's flow is not loaded"));
            };
            let flow = Some((name.clone(), flow));
            return self.subscriber_admitted(req, account, &live, String::new(), flow);
        }
        let Some(read) = rules.and_then(|r| r.numbering.plan(&account.tenant).read(dialled)) else {
            return Err(refuse(484, "the number dialled is not a phone number"));
        };
        if read.international && account.bar_international {
            return Err(refuse(
                403,
                "international calls are barred on this account",
            ));
        }
        if read.premium && account.bar_premium {
            return Err(refuse(403, "premium-rate calls are barred on this account"));
        }
        self.subscriber_admitted(req, account, &live, read.number, None)
    }

    /// A subscriber's call as it comes in: to `destination` on its card as a pinless call,
    /// or into a short code's flow, presenting its caller ID, once its headers and offer pass.
    fn subscriber_admitted(
        &self,
        req: &Request,
        account: &rating::store::SipAccount,
        live: &crate::assets::Live,
        destination: String,
        flow: Option<(String, Arc<ivr::Flow>)>,
    ) -> Result<Admitted, Refusal> {
        let session = self.check_headers(req)?;
        let offer = self.check_offer(req)?;
        let (name, flow) = flow.unzip();
        Ok(Admitted {
            prompts: live.prompts(&account.tenant),
            access: crate::access::AccessNumber {
                number: format!("sip:{}", account.aor()),
                pinless: flow.is_none(),
                flow: name,
                tenant: account.tenant.clone(),
                languages: vec!["en".into()],
                trust_ani: false,
                trusted_only: false,
                all_tenants: false,
                subscriber: None,
            },
            destination,
            flow,
            ani: account.caller_id.clone().unwrap_or_default(),
            card: Some(account.card.clone()),
            offer,
            session,
            ring: None,
            counted: None,
        })
    }

    /// Answers 503 with Retry-After: come back in a moment (we are full).
    fn reply_retry_after(&mut self, key: &TxKey, warning: Option<&str>, now: Instant) {
        let Some(s) = self.server.get(key) else {
            return;
        };
        let tag = crate::sip::message::new_tag();
        let mut resp = crate::sip::message::reply_to(s.tx.request(), 503, warning, &tag);
        resp.headers.push(retry_after());
        self.respond(key, resp, now);
    }
}

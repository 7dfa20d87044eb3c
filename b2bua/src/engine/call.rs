//! One prepaid call through the B2BUA: the caller's leg (A), the gateway leg (B), and the
//! money between them.
//!
//! A call is created by an INVITE to an access number, authorized against the store (phase 2,
//! which holds the first chunk of money), dialled out over the route's gateways with fail-over,
//! bridged when a gateway answers, kept alive by extending the hold, and ended by either side,
//! by CANCEL, or by the cutoff when the money runs out; every ending settles the hold exactly
//! once. Each leg is its own dialog: nothing of the caller's Via, Record-Route or Contact
//! reaches the gateway, and nothing of the gateway's reaches the caller.

use super::accounting::LegEnd;
use super::{Engine, Event, Purpose, Side, Wake};
use crate::call::{Channel, Grant, MoneyClock, Tick};
use crate::media::engine::{self as media, MediaEvent, Session};
use crate::media::sdp;
use crate::routing::{CallerId, Candidate, Proto};
use crate::sip::dialog::Dialog;
use crate::sip::message::{
    hdr, new_branch, new_call_id, new_request, new_tag, parse_uri, response_to, Headers, Method,
    Request, Response, SipExt,
};
use crate::sip::transaction::TxKey;
use crate::transport::Peer;
use chrono::{DateTime, Utc};
use rating::codes::ReturnCode;
use rating::radius::acct::Leg;
use rating::store::{AuthRequest, CallAnswer, CallEnd, CallRequest, Extension, Reservation};
use std::sync::Arc;
use std::time::Instant;

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the store's phase 2 answer.
    Authorizing,
    /// Trying gateways.
    Dialing,
    /// Both legs are up; the money runs.
    Answered,
    /// Ended; waiting for the settlement to be written.
    Ended,
    /// Answered by us; the IVR flow is talking to the caller (no gateway leg up).
    Ivr,
}

/// The gateway leg of a call: one attempt at one gateway.
pub(crate) struct BLeg {
    /// The gateway channel this attempt holds, until [`Engine::release_channel`] gives it back.
    pub(super) channel: Option<Channel>,
    pub(super) peer: Peer,
    /// The client INVITE transaction's key.
    pub(super) tx: TxKey,
    pub(super) invite: Request,
    pub(super) dialog: Option<Dialog>,
    /// Whether the gateway has said anything (a gateway that says nothing is dead).
    pub(super) heard: bool,
}

/// The caller's leg of a call: where it came from, its INVITE and our answer to it.
pub(crate) struct ALeg {
    pub(super) peer: Peer,
    pub(super) invite: Request,
    /// The server INVITE transaction's key.
    pub(super) tx: TxKey,
    /// Our To tag, the same in every response to the INVITE.
    pub(super) tag: String,
    /// The dialog, once we (or the gateway, through us) answered.
    pub(super) dialog: Option<Dialog>,
    /// The caller's SDP offer.
    pub(super) offer: Option<sdp::Audio>,
    /// Our SDP answer to the caller, made once and sent in the 18x and the 200.
    pub(super) answer: Option<String>,
    /// When the caller's INVITE arrived, and when it was answered.
    pub(super) setup: DateTime<Utc>,
    pub(super) connect: Option<DateTime<Utc>>,
}

/// One call; see the module documentation.
pub(crate) struct Call {
    pub(super) session_id: String,
    pub(super) conf_id: String,
    pub(super) ani: String,
    pub(super) destination: String,
    /// The caller's leg.
    pub(super) a: ALeg,
    pub(super) b: Option<BLeg>,
    pub(super) candidates: Vec<Candidate>,
    pub(super) next_candidate: usize,
    pub(super) last_code: u16,
    pub(super) phase: Phase,
    pub(super) reservation: Option<Reservation>,
    /// What the reservation holds, until the answer starts the clock.
    pub(super) grant: Grant,
    /// When the gateway answered (wall time, for the records).
    pub(super) connected: Option<DateTime<Utc>>,
    /// The money running since the answer: cutoff, extensions, warning.
    pub(super) clock: Option<MoneyClock>,
    pub(super) setup_deadline: Option<Instant>,
    pub(super) ring_deadline: Option<Instant>,
    /// Server INVITE transactions whose 2xx awaits its ACK, per side.
    pub(super) awaiting_ack: [Option<TxKey>; 2],
    /// The call's RTP: the caller's leg and the gateway's leg.
    pub(super) media: Option<Session>,
    /// The IVR flow run for this call (access numbers with a flow).
    pub(super) ivr: Option<ivr::Session>,
    /// The prompts' language.
    pub(super) lang: String,
    /// The access number's tenant's prompt set, as it was when the call came in.
    pub(super) prompts: Arc<prompts::set::PromptSet>,
    /// The access number dialled.
    pub(super) access_number: String,
    /// Whose cards the access number takes (`None`: every tenant's).
    pub(super) card_tenant: Option<String>,
    /// Whether the caller's number was believed (the access number's `trust_ani`).
    pub(super) trust_ani: bool,
    /// The number a redirect code (51, 52) sends this caller to for free, once the store said
    /// so: the only bridge allowed without a reservation.
    pub(super) free_to: Option<String>,
    /// The card, once the flow (or a pinless caller's number) named it; for accounting.
    pub(super) account: String,
    /// When the current gateway leg was first dialled, and the gateway last tried.
    pub(super) b_setup: Option<DateTime<Utc>>,
    pub(super) b_remote: Option<std::net::SocketAddr>,
    /// Every log line about this call is inside this span: session id, conference id (one
    /// per gateway call) and account, filled in as they become known.
    pub(super) span: tracing::Span,
    /// An IVR call's current bridge (its conference id), inside the call's span.
    pub(super) bridge_span: Option<tracing::Span>,
}

impl Call {
    /// One leg's dialog (once established) and where its requests go.
    fn leg(&mut self, side: Side) -> (Option<&mut Dialog>, Peer) {
        match side {
            Side::A => (self.a.dialog.as_mut(), self.a.peer),
            Side::B => match self.b.as_mut() {
                Some(b) => (b.dialog.as_mut(), b.peer),
                None => (None, self.a.peer),
            },
        }
    }
}

/// The SIP answer a refused authorization gives a pinless caller (there is no IVR to explain).
fn sip_code_for(code: ReturnCode) -> u16 {
    match code {
        ReturnCode::AccountInUse => 486,
        ReturnCode::ZeroBalance | ReturnCode::InsufficientFunds | ReturnCode::CreditLimit => 402,
        ReturnCode::ServiceNotAvailable => 503,
        ReturnCode::InvalidArgument => 484,
        _ => 403,
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

/// The only headers that cross from one leg to the other with a relayed request or response:
/// what describes the body. Everything else (Route, Contact, P-Asserted-Identity, Privacy,
/// X- headers …) is each leg's own, so a caller cannot steer or impersonate toward the
/// carrier, and a carrier's topology does not reach the caller.
const RELAYED_HEADERS: [&str; 3] = ["Content-Type", "Content-Disposition", "Content-Language"];

/// Copies a body and its allow-listed headers from one message to another.
fn copy_body(from: &impl SipExt, headers: &mut Headers, body: &mut Vec<u8>) {
    if !from.body_bytes().is_empty() {
        for name in RELAYED_HEADERS {
            if let Some(v) = from.header(name) {
                headers.push(hdr(name, v));
            }
        }
        *body = from.body_bytes().to_vec();
    }
}

/// An SDP offer with a codec we have, or why not (for a 488).
fn usable_offer(body: &[u8]) -> Result<sdp::Audio, String> {
    match sdp::parse(body) {
        Ok(o) if !o.codecs.is_empty() => Ok(o),
        Ok(_) => Err(sdp::SdpError::NoCommonCodec.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Our 200 to the caller's INVITE (without its SDP), and the dialog and the wait for the ACK
/// that it starts.
pub(super) fn ok_to_caller(local: &super::Local, call: &mut Call) -> Response {
    let mut ok = response_to(&call.a.invite, 200, Some(&call.a.tag));
    ok.headers
        .push(hdr("Contact", local.contact(call.a.peer.proto)));
    ok.headers.push(hdr("Allow", super::ALLOW));
    call.a.dialog = Some(Dialog::uas(&call.a.invite, &call.a.tag));
    call.awaiting_ack[0] = Some(call.a.tx.clone());
    ok
}

pub(super) fn is_sdp(m: &impl SipExt) -> bool {
    !m.body_bytes().is_empty()
        && m.header("Content-Type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
}

pub(super) fn attach_sdp(resp: &mut Response, body: String) {
    resp.headers.push(hdr("Content-Type", "application/sdp"));
    resp.body = body.into_bytes();
}

impl Engine {
    /// Takes the gateway's SDP: where and how to send to it, relayed from now on; returns our
    /// answer for the caller (made once, the same in the 18x and the 200).
    pub(super) fn b_media(&mut self, id: u64, resp: &Response) -> Result<String, String> {
        let call = self.calls.get_mut(&id).ok_or("call gone")?;
        let theirs = sdp::parse(&resp.body).map_err(|e| e.to_string())?;
        let codec = *theirs
            .codecs
            .first()
            .ok_or_else(|| sdp::SdpError::NoCommonCodec.to_string())?;
        let (Some(m), Some(offer)) = (&call.media, &call.a.offer) else {
            return Err("no media session".into());
        };
        m.set_remote(media::B, theirs.rtp, codec, theirs.telephone_event);
        if call.a.answer.is_none() {
            let (body, _) = sdp::answer(offer, m.local(media::A), id).map_err(|e| e.to_string())?;
            call.a.answer = Some(body);
        }
        m.bridge(true);
        Ok(call.a.answer.clone().expect("just set"))
    }

    /// Events from the call's media.
    pub(super) fn on_media(&mut self, id: u64, ev: MediaEvent, now: Instant) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.ivr.is_some() && !matches!(ev, MediaEvent::Inactive) {
            let ev = match ev {
                MediaEvent::Digit(d) => ivr::Event::Digit(d),
                MediaEvent::LongPound => ivr::Event::LongPound,
                _ => ivr::Event::PromptDone,
            };
            return self.ivr_feed(id, ev, now);
        }
        match ev {
            MediaEvent::Inactive if matches!(call.phase, Phase::Answered | Phase::Ivr) => {
                tracing::info!(call = id, "no RTP from the caller; ending the call");
                self.bye(id, Side::A, now);
                self.bye(id, Side::B, now);
                self.end(id, "RTP inactivity", Utc::now());
            }
            // Pinless calls have no IVR to hear digits; the IVR issue gives them meaning.
            MediaEvent::Digit(d) => tracing::debug!(call = id, digit = %d, "digit"),
            MediaEvent::LongPound => tracing::debug!(call = id, "long pound"),
            MediaEvent::Inactive | MediaEvent::PromptDone => {}
        }
    }

    pub(super) fn dispatch_request(&mut self, req: Request, from: Peer, key: TxKey, now: Instant) {
        let in_dialog = req.to_tag().is_some();
        match req.method {
            Method::Invite if !in_dialog => self.new_call(req, from, key, now),
            Method::Cancel => self.on_cancel(&req, &key, now),
            Method::Options if !in_dialog => self.reply(&key, 200, None, now),
            _ if in_dialog => self.in_dialog(req, key, now),
            Method::Bye | Method::Info | Method::Update | Method::PRack => {
                self.reply(&key, 481, None, now)
            }
            Method::Register
            | Method::Subscribe
            | Method::Notify
            | Method::Publish
            | Method::Message
            | Method::Refer => self.reply(&key, 405, None, now),
            _ => self.reply(&key, 501, None, now),
        }
    }

    fn new_call(&mut self, req: Request, from: Peer, key: TxKey, now: Instant) {
        if self.stopping {
            return self.reply(&key, 503, Some("shutting down"), now);
        }
        if self.calls.len() >= self.cfg.limits.calls {
            crate::metrics::get().limit_hit("calls");
            return self.reply_retry_after(&key, 503, now);
        }
        let user = req.uri.user().unwrap_or("").to_string();
        // The access number, prompts and flow current now are this call's until it ends,
        // whatever is uploaded or changed meanwhile.
        let live = self.assets.live();
        let Some((access, rest)) = live.access.lookup(&user) else {
            return self.reply(&key, 404, Some("unknown access number"), now);
        };
        if access.trusted_only && !self.cfg.trusted(from.addr.ip()) {
            return self.reply(&key, 403, Some("source is not a trusted peer"), now);
        }
        let flow = match (&access.flow, access.pinless) {
            (Some(name), false) => match live.flows.get(name) {
                Some(f) => Some(f.clone()),
                None => {
                    return self.reply(
                        &key,
                        503,
                        Some("the access number's flow is not loaded"),
                        now,
                    )
                }
            },
            _ => None,
        };
        if flow.is_none() && rest.is_empty() {
            return self.reply(
                &key,
                484,
                Some("no destination after the access number"),
                now,
            );
        }
        if req
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            == Some(0)
        {
            return self.reply(&key, 483, None, now);
        }
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
        if ani.is_empty() && flow.is_none() {
            return self.reply(
                &key,
                403,
                Some("a pinless call needs a trusted caller number"),
                now,
            );
        }
        let offer = match req.header("Content-Type").map(|c| c.to_ascii_lowercase()) {
            Some(ct) if ct.starts_with("application/sdp") => match usable_offer(&req.body) {
                Ok(o) => o,
                Err(why) => return self.reply(&key, 488, Some(&why), now),
            },
            _ => {
                return self.reply(
                    &key,
                    488,
                    Some("an SDP offer is required (delayed offer is not supported)"),
                    now,
                )
            }
        };
        if self.dialogs.contains_key(req.call_id()) {
            // A second INVITE with a Call-ID we already carry, but a new branch: a loop or a fork.
            return self.reply(&key, 482, None, now);
        }
        let id = self.next_call;
        let session = match self.media.session(id) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no RTP ports for a new call");
                return self.reply(&key, 503, Some("no media ports free"), now);
            }
        };
        session.set_remote(media::A, offer.rtp, offer.codecs[0], offer.telephone_event);
        session.set_signalling(media::A, from.addr.ip());
        self.next_call += 1;
        self.stats.calls += 1;
        crate::metrics::get().calls.inc();
        let session_id = uuid::Uuid::new_v4().to_string();
        let conf_id = uuid::Uuid::new_v4().to_string();
        let account = if flow.is_some() {
            String::new()
        } else {
            ani.clone()
        };
        // Each field once: a pinless call knows its card and conference now; an IVR call
        // learns its card from the caller, and each of its bridges gets a span of its own.
        let span = if flow.is_some() {
            tracing::info_span!(
                "call",
                id = self.next_call - 1,
                session = %session_id,
                account = tracing::field::Empty,
                access = %access.number,
            )
        } else {
            tracing::info_span!(
                "call",
                id = self.next_call - 1,
                session = %session_id,
                conf = %conf_id,
                account = %account,
                access = %access.number,
            )
        };
        let _in_call = span.clone().entered();
        let call = Call {
            a: ALeg {
                peer: from,
                invite: req,
                tx: key,
                tag: new_tag(),
                dialog: None,
                offer: Some(offer),
                answer: None,
                setup: Utc::now(),
                connect: None,
            },
            span,
            bridge_span: None,
            session_id,
            conf_id,
            ani: ani.clone(),
            destination: rest.to_string(),
            b: None,
            candidates: Vec::new(),
            next_candidate: 0,
            last_code: 0,
            phase: Phase::Authorizing,
            reservation: None,
            grant: Grant::default(),
            connected: None,
            clock: None,
            setup_deadline: None,
            ring_deadline: None,
            awaiting_ack: [None, None],
            media: Some(session),
            ivr: None,
            prompts: live.prompts(&access.tenant),
            lang: access
                .languages
                .first()
                .cloned()
                .unwrap_or_else(|| "en".into()),
            access_number: access.number.clone(),
            card_tenant: access.card_tenant(),
            trust_ani: access.trust_ani,
            free_to: None,
            account,
            b_setup: None,
            b_remote: None,
        };
        if let Some(flow) = flow {
            let ctx = ivr::Context {
                ani: ani.clone(),
                access_number: access.number.clone(),
                languages: access.languages.clone(),
                uri_destination: rest.to_string(),
            };
            self.dialogs
                .insert(call.a.invite.call_id().to_string(), (id, Side::A));
            self.calls.insert(id, call);
            return self.start_ivr(id, flow, ctx, now);
        }
        let request = CallRequest {
            auth: AuthRequest {
                account: ani.clone(),
                pin: None,
                ani: Some(ani),
                access_number: access.number.clone(),
                session_id: call.session_id.clone(),
                tenant: access.card_tenant(),
            },
            destination: call.destination.clone(),
            conf_id: call.conf_id.clone(),
            whole_credit: false,
        };
        self.dialogs
            .insert(call.a.invite.call_id().to_string(), (id, Side::A));
        self.calls.insert(id, call);
        self.spawn_store(move |store| async move {
            let answer = store.authorize_call(&request, Utc::now()).await;
            Some(Event::Authorized {
                call: id,
                answer: Box::new(answer),
            })
        });
    }

    pub(super) fn authorized(&mut self, id: u64, answer: CallAnswer, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return self.release_orphan(answer.reservation);
        };
        if call.phase != Phase::Authorizing {
            // Cancelled while the store was thinking.
            return self.release_orphan(answer.reservation);
        }
        if !answer.code.is_success() {
            let code = answer.code;
            // The return code explains a refusal to the proxy or SBC in front; to anyone else
            // it would say which numbers are cards and which have money.
            let warning = self
                .cfg
                .trusted(call.a.peer.addr.ip())
                .then(|| format!("return code {}: {}", code.code(), code.meaning()));
            return self.fail(
                id,
                sip_code_for(code),
                warning.as_deref(),
                &format!("refused {}", code.code()),
                now,
            );
        }
        call.reservation = answer.reservation;
        call.grant = Grant {
            granted: call
                .reservation
                .as_ref()
                .map(|r| r.granted_seconds)
                .unwrap_or(answer.credit_time),
            credit: answer.credit_time,
        };
        call.candidates = self.cfg.router.candidates(&call.destination);
        if call.candidates.is_empty() {
            return self.fail(
                id,
                404,
                Some("no route to the destination"),
                "no route",
                now,
            );
        }
        call.phase = Phase::Dialing;
        self.dial_next(id, now);
    }

    /// Settles a hold whose call is already gone (cancelled during authorization).
    pub(super) fn release_orphan(&mut self, reservation: Option<Reservation>) {
        if let Some(r) = reservation {
            self.spawn_store(move |store| async move {
                let end = CallEnd {
                    connect_at: None,
                    disconnect_at: Utc::now(),
                    cause: "cancelled".into(),
                    voice_quality: None,
                };
                let result = store
                    .settle(&r.conf_id, &end, Utc::now())
                    .await
                    .map_err(|e| e.to_string());
                if let Err(e) = result {
                    tracing::error!(error = %e, "releasing a cancelled call's hold failed; the sweeper will");
                }
                None
            });
        }
    }

    /// Tries the next gateway with a free channel, or gives up.
    pub(super) fn dial_next(&mut self, id: u64, now: Instant) {
        loop {
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            let Some(cand) = call.candidates.get(call.next_candidate).cloned() else {
                let code = match call.last_code {
                    0 => 503,
                    408 => 408,
                    c if c >= 500 => 503,
                    c => c,
                };
                return self.fail(
                    id,
                    code,
                    Some("no gateway took the call"),
                    "gateways failed",
                    now,
                );
            };
            call.next_candidate += 1;
            let Some(channel) = self.channels.take(cand.gateway) else {
                call.last_code = 503;
                continue;
            };
            let gw = &self.cfg.router.gateways[cand.gateway];
            let invite = self.b_invite(id, &cand);
            let peer = Peer {
                proto: gw.proto,
                addr: gw.addr,
                conn: None,
            };
            let Some(tx) = self.send_request(invite.clone(), peer, Purpose::BInvite(id), now)
            else {
                self.release_channel(Some(channel));
                return;
            };
            let setup = self.cfg.calls.setup_timeout;
            let call = self.calls.get_mut(&id).expect("still here");
            if let Some(m) = &call.media {
                m.set_signalling(media::B, peer.addr.ip());
            }
            call.b_setup.get_or_insert_with(Utc::now);
            call.b_remote = Some(peer.addr);
            call.b = Some(BLeg {
                channel: Some(channel),
                peer,
                tx,
                invite,
                dialog: None,
                heard: false,
            });
            call.setup_deadline = Some(now + setup);
            self.schedule(Some(now + setup), Wake::Call(id));
            return;
        }
    }

    /// The B-leg INVITE: a new dialog of ours, carrying the caller's offer and the caller's
    /// number as the route says, and nothing else of the A-leg.
    fn b_invite(&self, id: u64, cand: &Candidate) -> Request {
        let call = &self.calls[&id];
        let gw = &self.cfg.router.gateways[cand.gateway];
        let host = self.local.hostport(gw.proto).to_string();
        let tag = new_tag();
        // An IVR caller may have no (trusted) number.
        let caller = if call.ani.is_empty() {
            "anonymous"
        } else {
            call.ani.as_str()
        };
        let mut headers = Headers::default();
        headers.push(hdr(
            "Via",
            format!("{};branch={};rport", self.local.via(gw.proto), new_branch()),
        ));
        let hops = call
            .a
            .invite
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(70);
        headers.push(hdr(
            "Max-Forwards",
            hops.saturating_sub(1).min(70).to_string(),
        ));
        match cand.caller_id {
            CallerId::From => {
                headers.push(hdr("From", format!("<sip:{}@{host}>;tag={tag}", caller)))
            }
            CallerId::Pai => {
                headers.push(hdr(
                    "From",
                    format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={tag}"),
                ));
                headers.push(hdr(
                    "P-Asserted-Identity",
                    format!("<sip:{}@{host}>", caller),
                ));
            }
        }
        headers.push(hdr("To", format!("<sip:{}@{}>", cand.number, gw.addr)));
        headers.push(hdr("Call-ID", new_call_id(&host)));
        headers.push(hdr("CSeq", "1 INVITE"));
        headers.push(hdr("Contact", self.local.contact(gw.proto)));
        headers.push(hdr("Allow", super::ALLOW));
        let mut body = Vec::new();
        if let (Some(m), Some(offer)) = (&call.media, &call.a.offer) {
            headers.push(hdr("Content-Type", "application/sdp"));
            body = sdp::offer(
                m.local(media::B),
                offer.codecs[0].1,
                sdp::Direction::SendRecv,
                id,
            )
            .into_bytes();
        }
        let transport = if gw.proto == Proto::Tcp {
            ";transport=tcp"
        } else {
            ""
        };
        let uri =
            parse_uri(&format!("sip:{}@{}{transport}", cand.number, gw.addr)).unwrap_or_default();
        new_request(Method::Invite, uri, headers, body)
    }

    pub(super) fn client_response(
        &mut self,
        purpose: &Purpose,
        key: &TxKey,
        resp: Response,
        now: Instant,
    ) {
        match purpose {
            Purpose::BInvite(id) => self.b_response(*id, key, resp, now),
            Purpose::Relay {
                call,
                origin,
                to,
                offer,
            } => self.relay_response(*call, origin, *to, offer.as_ref(), resp, now),
            Purpose::Fire => {}
        }
    }

    pub(super) fn client_timeout(&mut self, purpose: &Purpose, key: &TxKey, now: Instant) {
        match purpose {
            Purpose::BInvite(id) => {
                let current = self
                    .calls
                    .get(id)
                    .and_then(|c| c.b.as_ref())
                    .is_some_and(|b| b.tx == *key);
                if current {
                    self.b_failed(*id, 408, now);
                }
            }
            Purpose::Relay { origin, .. } => self.reply(&origin.clone(), 408, None, now),
            Purpose::Fire => {}
        }
    }

    /// A response to a B-leg INVITE.
    fn b_response(&mut self, id: u64, key: &TxKey, resp: Response, now: Instant) {
        let code = resp.status_code.code();
        let Some(call) = self.calls.get_mut(&id) else {
            if (200..300).contains(&code) {
                let peer = self.client.get(key).map(|c| c.peer);
                if let Some(peer) = peer {
                    self.hang_up_stray(&resp, peer, now);
                }
            }
            return;
        };
        let current = call.b.as_ref().is_some_and(|b| b.tx == *key);
        if !current || call.phase == Phase::Ended {
            if (200..300).contains(&code) {
                let peer = self.client.get(key).map(|c| c.peer);
                if call.phase == Phase::Answered && current {
                    self.reack(id, Side::B, &resp);
                } else if let Some(peer) = peer {
                    self.hang_up_stray(&resp, peer, now);
                }
            }
            return;
        }
        if let Some(b) = call.b.as_mut() {
            b.heard = true;
        }
        call.setup_deadline = None;
        if code < 200 {
            if code == 100 {
                return;
            }
            let mut ring = None;
            if call.ring_deadline.is_none() {
                ring = Some(now + self.cfg.calls.ring_timeout);
                call.ring_deadline = ring;
            }
            let mut out = response_to(&call.a.invite, code, Some(&call.a.tag));
            out.headers
                .push(hdr("Contact", self.local.contact(call.a.peer.proto)));
            let a_tx = call.a.tx.clone();
            self.schedule(ring, Wake::Call(id));
            // Early media: the gateway's ringback or announcements reach the caller through us.
            if is_sdp(&resp) {
                match self.b_media(id, &resp) {
                    Ok(body) => attach_sdp(&mut out, body),
                    Err(e) => {
                        tracing::info!(call = id, error = %e, "unusable early-media SDP; relaying without media")
                    }
                }
            }
            return self.respond(&a_tx, out, now);
        }
        if code < 300 {
            if call.phase == Phase::Answered {
                return self.reack(id, Side::B, &resp);
            }
            return self.answered(id, resp, now);
        }
        self.b_failed(id, code, now);
    }

    /// The gateway answered: ACK it, answer the caller, start the clock.
    fn answered(&mut self, id: u64, resp: Response, now: Instant) {
        if self.calls[&id].ivr.is_some() {
            return self.ivr_answered(id, resp, now);
        }
        // The gateway's answer (or, without SDP in the 2xx, what its 18x said).
        let answer = if is_sdp(&resp) {
            self.b_media(id, &resp)
        } else {
            self.calls[&id]
                .a
                .answer
                .clone()
                .ok_or_else(|| "the answer has no SDP".to_string())
        };
        self.b_leg_up(id, &resp);
        let call = self.calls.get_mut(&id).expect("caller checked");
        let mut ok = ok_to_caller(&self.local, call);
        call.phase = Phase::Answered;
        call.connected = Some(Utc::now());
        call.setup_deadline = None;
        call.ring_deadline = None;
        call.clock = Some(MoneyClock::paid(
            now,
            call.grant,
            self.cfg.calls.max_duration,
            None,
        ));
        let a_tx = call.a.tx.clone();
        let answer = match answer {
            Ok(body) => body,
            Err(e) => {
                // The gateway answered with media we cannot use: hang it up, tell the caller.
                tracing::warn!(call = id, error = %e, "gateway answer unusable");
                self.bye(id, Side::B, now);
                if let Some(c) = self.calls.get_mut(&id) {
                    c.phase = Phase::Dialing;
                    c.connected = None;
                    c.clock = None;
                }
                return self.fail(id, 488, Some(&e), "gateway media unusable", now);
            }
        };
        attach_sdp(&mut ok, answer);
        if let Some(m) = &call.media {
            m.bridge(true);
        }
        // The caller's leg is answered only now that it gets its 200.
        call.a.connect = call.connected;
        let conf = call.conf_id.clone();
        let wake = call.clock.as_ref().and_then(MoneyClock::next_wake);
        self.stats.answered += 1;
        self.respond(&a_tx, ok, now);
        self.schedule(wake, Wake::Call(id));
        self.account(id, &[Leg::Answer, Leg::Originate], None);
        self.spawn_mark_connected(conf);
    }

    /// Records the answer in the store, so that the sweeper charges this call if its node dies.
    pub(super) fn spawn_mark_connected(&self, conf: String) {
        self.spawn_store(move |store| async move {
            if let Err(e) = store.mark_connected(&conf, Utc::now()).await {
                tracing::warn!(error = %e, "could not mark the call connected");
            }
            None
        });
    }

    /// The gateway's 2xx established the B-leg dialog: keep it, ACK it (end to end, no
    /// transaction), and route its in-dialog requests to this call.
    pub(super) fn b_leg_up(&mut self, id: u64, resp: &Response) {
        let Some(b) = self.calls.get_mut(&id).and_then(|c| c.b.as_mut()) else {
            return;
        };
        let mut dialog = Dialog::uac(&b.invite, resp);
        let ack = dialog.request(
            Method::Ack,
            &self.local.via(b.peer.proto),
            &self.local.contact(b.peer.proto),
            Some(dialog.local_seq),
        );
        let (peer, call_id) = (b.peer, dialog.call_id.clone());
        b.dialog = Some(dialog);
        self.send_stateless(&ack, &peer);
        self.dialogs.insert(call_id, (id, Side::B));
    }

    /// This attempt failed with `code`: fail over on 408 and 5xx, otherwise tell the caller.
    fn b_failed(&mut self, id: u64, code: u16, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let channel = call.b.take().and_then(|b| b.channel);
        call.setup_deadline = None;
        call.ring_deadline = None;
        call.last_code = code;
        self.release_channel(channel);
        if code == 408 || (500..600).contains(&code) {
            self.dial_next(id, now);
        } else {
            self.fail(id, code, None, &format!("gateway {code}"), now);
        }
    }

    /// Ends a call that never answered, telling the caller `code`.
    fn fail(&mut self, id: u64, code: u16, warning: Option<&str>, cause: &str, now: Instant) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.ivr.is_some() && !self.stopping {
            // The caller stays with the flow, which hears how the bridge attempt ended.
            return self.ivr_bridge_ended(id, ivr::BridgeEnd::for_status(code), None, now);
        }
        let answered = self.server.get(&call.a.tx).is_some_and(|s| s.tx.answered());
        if !answered {
            let mut resp = response_to(&call.a.invite, code, Some(&call.a.tag));
            if let Some(w) = warning {
                resp.headers.push(hdr(
                    "Warning",
                    format!("399 b2bua \"{}\"", w.replace('"', "'")),
                ));
            }
            let a_tx = call.a.tx.clone();
            self.respond(&a_tx, resp, now);
        }
        self.end(id, cause, Utc::now());
    }

    /// Marks a call ended, frees its gateway channel and settles its hold.
    pub(super) fn end(&mut self, id: u64, cause: &str, disconnect_at: DateTime<Utc>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.phase == Phase::Ended {
            return;
        }
        let legs: &[Leg] = if call.b_setup.is_some() {
            &[Leg::Originate, Leg::Answer]
        } else {
            &[Leg::Answer]
        };
        let quality = call.media.as_ref().map(|m| m.quality());
        // Only a call that carried media through us has a figure.
        let voice_quality = quality.filter(|q| q.packets[0] > 0).map(|q| q.icpif);
        let leg_end = LegEnd {
            cause,
            disconnect_at,
            voice_quality,
        };
        self.account(id, legs, Some(&leg_end));
        let call = self.calls.get_mut(&id).expect("just found");
        // The B-leg stays (its dialog still routes the gateway's BYE); its channel does not.
        let channel = call.b.as_mut().and_then(|b| b.channel.take());
        self.release_channel(channel);
        let call = self.calls.get_mut(&id).expect("just found");
        call.phase = Phase::Ended;
        call.clock = None;
        call.setup_deadline = None;
        call.ring_deadline = None;
        let connect_at = call.connected;
        // Its RTP sockets close now.
        call.media = None;
        if let Some(q) = &quality {
            let m = crate::metrics::get();
            for (i, leg) in ["caller", "gateway"].into_iter().enumerate() {
                let l = crate::metrics::LegLabels { leg };
                m.rtp_packets.get_or_create(&l).inc_by(q.packets[i]);
                m.rtp_lost.get_or_create(&l).inc_by(q.lost[i]);
            }
        }
        tracing::info!(destination = %call.destination, cause, ?quality, "call ended");
        match call.reservation.take() {
            Some(r) => {
                let end = CallEnd {
                    connect_at,
                    disconnect_at,
                    cause: cause.to_string(),
                    voice_quality,
                };
                self.spawn_store(move |store| async move {
                    let result = store
                        .settle(&r.conf_id, &end, Utc::now())
                        .await
                        .map_err(|e| e.to_string());
                    Some(Event::Settled { call: id, result })
                });
            }
            None => self.forget(id),
        }
    }

    /// Gives a B-leg's gateway channel back: the one place a channel is released, whether the
    /// attempt failed, its bridge ended or the call did.
    pub(super) fn release_channel(&mut self, channel: Option<Channel>) {
        if let Some(channel) = channel {
            self.channels.release(channel);
        }
    }

    /// Drops a finished call; its transactions finish on their own.
    pub(super) fn forget(&mut self, id: u64) {
        if let Some(call) = self.calls.remove(&id) {
            if call.ivr.is_some() {
                crate::metrics::get().ivr_sessions.dec();
            }
            self.dialogs.remove(call.a.invite.call_id());
            if let Some(d) = call.b.as_ref().and_then(|b| b.dialog.as_ref()) {
                self.dialogs.remove(&d.call_id);
            }
        }
    }

    /// Sends BYE on one leg of an answered call.
    pub(super) fn bye(&mut self, id: u64, side: Side, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (dialog, peer) = call.leg(side);
        let Some(dialog) = dialog else { return };
        let req = dialog.request(
            Method::Bye,
            &self.local.via(peer.proto),
            &self.local.contact(peer.proto),
            None,
        );
        self.send_request(req, peer, Purpose::Fire, now);
    }

    /// Stops a B-leg INVITE that has not been answered.
    pub(super) fn cancel_b(&mut self, id: u64, now: Instant) {
        let Some(b) = self.calls.get(&id).and_then(|c| c.b.as_ref()) else {
            return;
        };
        if b.dialog.is_some() {
            return;
        }
        let (key, peer, heard) = (b.tx.clone(), b.peer, b.heard);
        let Some(c) = self.client.get(&key) else {
            return;
        };
        if !heard {
            // Nothing heard: a CANCEL could overtake the INVITE (RFC 3261 §9.1). Stop
            // retransmitting; a late answer is hung up as a stray.
            return self.abandon(&key);
        }
        let cancel = c.tx.cancel_request();
        self.send_request(cancel, peer, Purpose::Fire, now);
    }

    pub(super) fn call_timers(&mut self, id: u64, now: Instant) {
        self.ivr_timers(id, now);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(call.setup_deadline) {
            call.setup_deadline = None;
            if let Some(key) = call.b.as_ref().filter(|b| !b.heard).map(|b| b.tx.clone()) {
                tracing::info!(
                    call = id,
                    "gateway silent past the setup timeout; failing over"
                );
                self.abandon(&key);
                return self.b_failed(id, 408, now);
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if due(call.ring_deadline) && call.phase == Phase::Dialing {
            call.ring_deadline = None;
            self.cancel_b(id, now);
            return self.fail(id, 480, Some("no answer"), "no answer", now);
        }
        if call.phase == Phase::Answered {
            self.money_ticks(id, now);
        }
    }

    /// What the money clock says is due: the cutoff, the credit warning, the next hold.
    fn money_ticks(&mut self, id: u64, now: Instant) {
        loop {
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            let Some(clock) = call.clock.as_mut() else {
                return;
            };
            let Some(tick) = clock.poll(now) else {
                let wake = clock.next_wake();
                return self.schedule(wake, Wake::Call(id));
            };
            match tick {
                Tick::Cutoff { talk, why } => {
                    let t0 = call.connected.unwrap_or_else(Utc::now);
                    let end_at = t0 + chrono::Duration::from_std(talk).unwrap_or_default();
                    let cause = why.cause();
                    tracing::info!(
                        call = id,
                        seconds = talk.as_secs(),
                        "cutting the call off: {cause}"
                    );
                    self.stats.cutoffs += 1;
                    crate::metrics::get().cutoffs.inc();
                    if call.ivr.is_some() {
                        // The gateway leg ends; the flow tells the caller ("disconnected")
                        // and hangs up.
                        self.bye(id, Side::B, now);
                        let end = ivr::BridgeEnd::CreditExhausted;
                        return self.ivr_bridge_ended(id, end, Some(end_at), now);
                    }
                    self.bye(id, Side::A, now);
                    self.bye(id, Side::B, now);
                    return self.end(id, cause, end_at);
                }
                Tick::Warn => self.ivr_feed(id, ivr::Event::CreditWarning, now),
                Tick::Extend => {
                    let conf = call.conf_id.clone();
                    self.spawn_store(move |store| async move {
                        let result = store
                            .extend(&conf, Utc::now())
                            .await
                            .map_err(|e| e.to_string());
                        Some(Event::Extended { call: id, result })
                    });
                }
            }
        }
    }

    pub(super) fn extended(&mut self, id: u64, result: Result<Extension, String>, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Ok(ext) = result else { return };
        if call.phase != Phase::Answered {
            return;
        }
        let Some(clock) = call.clock.as_mut() else {
            return;
        };
        if clock.extended(ext.granted_seconds, ext.extended, now) {
            let wake = clock.next_wake();
            self.schedule(wake, Wake::Call(id));
        }
    }

    pub(super) fn on_cancel(&mut self, req: &Request, key: &TxKey, now: Instant) {
        let Some(invite_key) = key.cancelled_invite() else {
            return self.reply(key, 481, None, now);
        };
        if !self.server.contains_key(&invite_key) {
            return self.reply(key, 481, None, now);
        }
        self.reply(key, 200, None, now);
        let Some((id, Side::A)) = self.dialogs.get(req.call_id()).copied() else {
            return;
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.a.tx != invite_key || matches!(call.phase, Phase::Answered | Phase::Ended) {
            return;
        }
        self.cancel_b(id, now);
        self.fail(id, 487, None, "caller cancelled", now);
    }

    /// A request inside one of our dialogs.
    fn in_dialog(&mut self, req: Request, key: TxKey, now: Instant) {
        let Some((id, side)) = self.dialogs.get(req.call_id()).copied() else {
            return self.reply(&key, 481, None, now);
        };
        let _in_call = self.span(id).entered();
        let Some(call) = self.calls.get_mut(&id) else {
            return self.reply(&key, 481, None, now);
        };
        let dialog = match side {
            Side::A => call.a.dialog.as_mut(),
            Side::B => call.b.as_mut().and_then(|b| b.dialog.as_mut()),
        };
        let Some(dialog) = dialog else {
            // An early dialog (we sent 180): only BYE (as a cancel) makes sense here.
            if side == Side::A
                && req.method == Method::Bye
                && req.to_tag() == Some(call.a.tag.as_str())
            {
                self.reply(&key, 200, None, now);
                self.cancel_b(id, now);
                return self.fail(id, 487, None, "caller hung up while ringing", now);
            }
            return self.reply(&key, 481, None, now);
        };
        if req.to_tag() != Some(dialog.local_tag.as_str())
            || req.from_tag() != Some(dialog.remote_tag.as_str())
        {
            return self.reply(&key, 481, None, now);
        }
        if !dialog.accept_remote_cseq(req.cseq().map(|c| c.0).unwrap_or(0)) {
            return self.reply(&key, 500, Some("CSeq out of order"), now);
        }
        let answered = call.phase == Phase::Answered;
        let ivr_call = call.ivr.is_some();
        match req.method {
            Method::Bye if ivr_call && side == Side::B => {
                // The called party hung up: the caller goes back to the flow.
                self.reply(&key, 200, None, now);
                self.ivr_bridge_ended(id, ivr::BridgeEnd::CalledHangup, None, now);
            }
            Method::Bye if ivr_call => {
                self.reply(&key, 200, None, now);
                self.bye(id, Side::B, now);
                self.cancel_b(id, now);
                self.end(id, "caller hung up", Utc::now());
            }
            Method::Bye => {
                self.reply(&key, 200, None, now);
                if answered {
                    self.bye(id, other(side), now);
                    let cause = if side == Side::A {
                        "caller hung up"
                    } else {
                        "called party hung up"
                    };
                    self.end(id, cause, Utc::now());
                }
            }
            Method::Options => self.reply(&key, 200, None, now),
            Method::Info
                if side == Side::A
                    && req
                        .header("Content-Type")
                        .is_some_and(|c| c.eq_ignore_ascii_case("application/dtmf-relay")) =>
            {
                // The caller's digits are ours (the IVR listens to them), not the gateway's.
                self.reply(&key, 200, None, now);
                let body = String::from_utf8_lossy(&req.body).into_owned();
                let events = self
                    .calls
                    .get(&id)
                    .and_then(|c| c.media.as_ref())
                    .map(|m| media::info_digits(m, &body))
                    .unwrap_or_default();
                for ev in events {
                    self.on_media(id, ev, now);
                }
            }
            // What may cross from one leg to the other: session changes (re-INVITE, UPDATE),
            // INFO and PRACK; BYE and ACK are ours to answer. Anything else (MESSAGE, REFER,
            // NOTIFY, SUBSCRIBE …) stops here, so a caller cannot reach the carrier with
            // requests we never meant to carry.
            Method::Invite | Method::Update | Method::Info | Method::PRack if !answered => {
                self.reply(&key, 491, None, now)
            }
            Method::Invite | Method::Update | Method::Info | Method::PRack => {
                self.relay(id, side, req, key, now)
            }
            _ => self.reply(&key, 405, None, now),
        }
    }

    /// Passes an in-dialog request (re-INVITE and UPDATE for hold and unhold, INFO for DTMF)
    /// to the other leg as that leg's own request; the answer comes back the same way.
    fn relay(&mut self, id: u64, from: Side, req: Request, key: TxKey, now: Instant) {
        let to = other(from);
        let call = self.calls.get_mut(&id).expect("checked");
        let (dialog, peer) = call.leg(to);
        let Some(dialog) = dialog else {
            return self.reply(&key, 481, None, now);
        };
        let mut out = dialog.request(
            req.method,
            &self.local.via(peer.proto),
            &self.local.contact(peer.proto),
            None,
        );
        // The media stays anchored: an SDP offer (hold, unhold) reaches the other leg as our
        // own offer from our socket, with the offerer's direction.
        let mut offer = None;
        if is_sdp(&req) {
            let parsed = match usable_offer(&req.body) {
                Ok(o) => o,
                Err(why) => return self.reply(&key, 488, Some(&why), now),
            };
            let call = &self.calls[&id];
            let Some(m) = &call.media else {
                return self.reply(&key, 500, Some("no media session"), now);
            };
            let leg = if to == Side::A { media::A } else { media::B };
            let from_leg = 1 - leg;
            m.set_remote(
                from_leg,
                parsed.rtp,
                parsed.codecs[0],
                parsed.telephone_event,
            );
            out.headers.push(hdr("Content-Type", "application/sdp"));
            out.body =
                sdp::offer(m.local(leg), parsed.codecs[0].1, parsed.direction, id).into_bytes();
            offer = Some(parsed);
        } else {
            copy_body(&req, &mut out.headers, &mut out.body);
        }
        self.send_request(
            out,
            peer,
            Purpose::Relay {
                call: id,
                origin: key,
                to,
                offer,
            },
            now,
        );
    }

    fn relay_response(
        &mut self,
        id: u64,
        origin: &TxKey,
        to: Side,
        offer: Option<&sdp::Audio>,
        resp: Response,
        now: Instant,
    ) {
        let code = resp.status_code.code();
        if code == 100 {
            return;
        }
        let Some(s) = self.server.get(origin) else {
            return;
        };
        let is_invite = s.tx.request().method == Method::Invite;
        let mut out = response_to(s.tx.request(), code, None);
        if is_invite || s.tx.request().method == Method::Update {
            let proto = s.peer.proto;
            out.headers.push(hdr("Contact", self.local.contact(proto)));
        }
        match (offer, is_sdp(&resp)) {
            // Our answer to the originator's offer, from our socket on its leg; the other
            // leg's answer tells us where and how to send there.
            (Some(offer), true) if (200..300).contains(&code) => {
                if let (Some(call), Ok(theirs)) = (self.calls.get(&id), sdp::parse(&resp.body)) {
                    if let (Some(m), Some(codec)) = (&call.media, theirs.codecs.first()) {
                        let leg = if to == Side::A { media::A } else { media::B };
                        m.set_remote(leg, theirs.rtp, *codec, theirs.telephone_event);
                        if let Ok((body, _)) = sdp::answer(offer, m.local(1 - leg), id) {
                            attach_sdp(&mut out, body);
                        }
                    }
                }
            }
            (Some(_), _) => {}
            (None, _) => copy_body(&resp, &mut out.headers, &mut out.body),
        }
        if is_invite && (200..300).contains(&code) {
            self.reack(id, to, &resp);
            if let Some(call) = self.calls.get_mut(&id) {
                call.awaiting_ack[idx(other(to))] = Some(origin.clone());
            }
        }
        self.respond(origin, out, now);
    }

    /// ACKs a 2xx from `side` (the first answer was ACKed in `answered`; this covers
    /// retransmissions and relayed re-INVITEs).
    pub(super) fn reack(&mut self, id: u64, side: Side, resp: &Response) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let seq = resp.cseq().map(|c| c.0).unwrap_or(1);
        let (dialog, peer) = call.leg(side);
        let Some(dialog) = dialog else { return };
        let ack = dialog.request(
            Method::Ack,
            &self.local.via(peer.proto),
            &self.local.contact(peer.proto),
            Some(seq),
        );
        self.send_stateless(&ack, &peer);
    }

    /// ACKs and hangs up a 2xx that belongs to no call of ours.
    pub(super) fn hang_up_stray(&mut self, resp: &Response, peer: Peer, now: Instant) {
        let mut d = Dialog::from_response(resp);
        let seq = d.local_seq;
        let via = self.local.via(peer.proto);
        let contact = self.local.contact(peer.proto);
        let ack = d.request(Method::Ack, &via, &contact, Some(seq));
        self.send_stateless(&ack, &peer);
        let bye = d.request(Method::Bye, &via, &contact, None);
        self.send_request(bye, peer, Purpose::Fire, now);
    }

    /// The ACK of a 2xx we sent (it has no transaction of its own). It counts only if it
    /// belongs to the dialog (Call-ID, both tags, the INVITE's CSeq) and comes from the peer
    /// the INVITE came from: anyone else's ACK would stop our retransmissions and leave a
    /// caller who never got the 200 talking to no one.
    pub(super) fn on_ack(&mut self, req: &Request, from: Peer) {
        let Some((id, side)) = self.dialogs.get(req.call_id()).copied() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(key) = call.awaiting_ack[idx(side)].clone() else {
            return;
        };
        let (dialog, peer) = call.leg(side);
        let Some(dialog) = dialog else {
            return;
        };
        let tags_match = req.to_tag() == Some(dialog.local_tag.as_str())
            && req.from_tag() == Some(dialog.remote_tag.as_str());
        let same_peer = match from.proto {
            Proto::Udp => from.addr == peer.addr,
            Proto::Tcp => from.addr.ip() == peer.addr.ip(),
        };
        let Some(s) = self.server.get_mut(&key) else {
            return;
        };
        let seq_match = req.cseq().map(|c| c.0) == s.tx.request().cseq().map(|c| c.0);
        if !(tags_match && same_peer && seq_match) {
            tracing::info!(call = id, from = %from.addr, "an ACK that is not the dialog's ignored");
            crate::metrics::get().limit_hit("foreign_ack");
            return;
        }
        s.tx.acked_2xx();
        if let Some(call) = self.calls.get_mut(&id) {
            call.awaiting_ack[idx(side)] = None;
        }
    }

    /// Our 2xx was never acknowledged: the caller is gone, so end the call.
    pub(super) fn no_ack(&mut self, key: &TxKey, now: Instant) {
        let found = self
            .calls
            .iter()
            .find(|(_, c)| c.awaiting_ack.iter().any(|k| k.as_ref() == Some(key)))
            .map(|(id, c)| (*id, c.phase));
        // Whatever the call was doing (talking, or in its IVR flow), the caller is gone.
        if let Some((id, phase)) = found.filter(|(_, p)| *p != Phase::Ended) {
            tracing::warn!(call = id, ?phase, "2xx never acknowledged; hanging up");
            self.cancel_b(id, now);
            self.bye(id, Side::A, now);
            self.bye(id, Side::B, now);
            self.end(id, "no ACK", Utc::now());
        }
    }

    /// Ends every call, for shutdown.
    pub(super) fn end_all(&mut self, now: Instant) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let ivr_call = self.calls.get(&id).is_some_and(|c| c.ivr.is_some());
            match self.calls.get(&id).map(|c| c.phase) {
                Some(_) if ivr_call => {
                    self.cancel_b(id, now);
                    self.bye(id, Side::A, now);
                    self.bye(id, Side::B, now);
                    self.end(id, "shutdown", Utc::now());
                }
                Some(Phase::Answered) => {
                    self.bye(id, Side::A, now);
                    self.bye(id, Side::B, now);
                    self.end(id, "shutdown", Utc::now());
                }
                Some(Phase::Authorizing | Phase::Dialing) => {
                    self.cancel_b(id, now);
                    self.fail(id, 503, Some("shutting down"), "shutdown", now);
                }
                _ => {}
            }
        }
    }
}

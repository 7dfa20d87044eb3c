//! The call itself, without I/O: what a prepaid call decides, given what happened and when.
//!
//! Nothing in here reads a clock, opens a socket or spawns a task. A [`Call`] is fed
//! [`Input`]s with [`Call::handle`] (each with the current time, in [`Env`]) and says what it
//! wants done through [`Call::poll`] as [`Output`]s; the engine (`crate::engine`) is the shell
//! that feeds it from the network, the store and the media and carries its outputs out. So a
//! whole call — dialled, failed over, answered, cut off, long-pounded back to its flow — is a
//! unit test that runs in microseconds (`tests.rs`).
//!
//! Follow one call: [`Call::start`] answers an IVR caller and starts its flow (`flow.rs`) or
//! asks phase 2 for a pinless one; the store's answer dials the route's gateways with
//! fail-over (`bridge.rs`); the gateway's 2xx starts the money clock (`clock.rs`); requests
//! inside either dialog are answered or relayed across (`dialog.rs`); and every way a call or
//! a bridge ends settles its hold exactly once (`ending.rs`). Each leg's session timer
//! (`session.rs`) ends a call whose other end went away without a BYE. Where a call stands is
//! one [`State`], whose variants hold only their own data.

mod auth;
mod bridge;
pub mod channels;
pub mod clock;
mod dialog;
mod ending;
mod flow;
pub mod fork;
pub mod ids;
pub mod io;
pub mod legs;
mod prack;
mod refresh;
pub mod session;
#[cfg(test)]
mod tests;

pub use channels::{Channel, Channels};
pub use clock::{Cutoff, Grant, MoneyClock, Tick};
pub use fork::{Contact, Ring};
pub use ids::{CountedIds, Ids, RandomIds};
pub use io::{Answer, Ask, Input, MediaCmd, Output};
pub use ivr::BridgeEnd;
pub use legs::{Local, Side};

use crate::access::AccessNumber;
use crate::config::Config;
use crate::media::engine::Quality;
use crate::media::sdp;
use crate::media::srtp::Key;
use crate::sip::message::{reply_to, Request, Response, SipExt};
use crate::sip::transaction::{self, TxKey};
use crate::transport::Peer;
use bridge::Bridge;
use chrono::{DateTime, Utc};
use legs::{ALeg, BLeg};
use rating::store::{AuthRequest, CallRequest};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What every call of a node shares: the configuration, our addresses, and the NAS id of our
/// accounting records (`None`: no accounting server configured, no records).
#[derive(Debug)]
pub struct Settings {
    /// Routes, gateways, timers and limits.
    pub cfg: Arc<Config>,
    /// Our Via and Contact addresses.
    pub local: Local,
    /// The `h323-gw-id` of our accounting records, when they are written.
    pub gw_id: Option<String>,
}

/// Counters for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Calls started (INVITEs accepted for processing).
    pub calls: u64,
    /// Calls (and IVR bridges) answered end to end.
    pub answered: u64,
    /// Calls cut off because the money ran out.
    pub cutoffs: u64,
}

/// What the engine lends a call while it handles one input: the time, the node's gateway
/// channels, where identifiers come from, and the call's media figures.
pub struct Env<'a> {
    /// Now.
    pub now: Instant,
    /// Every gateway's channels; a B-leg holds one as a token.
    pub channels: &'a mut Channels,
    /// Tags, branches, Call-IDs and conference ids.
    pub ids: &'a mut dyn Ids,
    /// The node's counters.
    pub stats: &'a mut Stats,
    /// Whether the node is stopping (an IVR call then ends instead of going back to its flow).
    pub stopping: bool,
    /// The call's RTP counters so far (`None` once its media is closed).
    pub quality: &'a dyn Fn() -> Option<Quality>,
}

/// How a call came in, as the engine admitted it: the INVITE, who sent it, the access number
/// and what it runs, and the RTP ports opened for it.
pub struct Setup {
    /// The engine's number for this call (it names our SDP sessions too).
    pub id: u64,
    /// Where the INVITE came from.
    pub peer: Peer,
    /// The INVITE.
    pub invite: Request,
    /// Its server transaction.
    pub tx: TxKey,
    /// Its usable SDP offer.
    pub offer: sdp::Audio,
    /// Our RTP addresses, toward the caller and toward the gateway.
    pub media_local: [SocketAddr; 2],
    /// Our SRTP key on each leg (caller, gateway), used if the leg negotiates SRTP.
    pub media_keys: [crate::media::srtp::KeySalt; 2],
    /// Whether the caller is a trusted peer (return codes are explained only to those).
    pub trusted: bool,
    /// The caller's number, when the access number believes it (empty otherwise).
    pub ani: String,
    /// The digits after the access number (a pinless call's destination).
    pub destination: String,
    /// A softphone subscriber's call: the card its SIP account spends from (its digest
    /// proved it may; no PIN is asked). `ani` is then the caller ID it presents.
    pub card: Option<String>,
    /// The access number dialled, as it was when the call came in.
    pub access: AccessNumber,
    /// Its tenant's prompts, as they were when the call came in.
    pub prompts: Arc<prompts::set::PromptSet>,
    /// Its flow (`None`: a pinless call, or one to a subscriber).
    pub flow: Option<Arc<ivr::Flow>>,
    /// A call to a DID that names a SIP account: the contacts it rings (no flow, no phase 2).
    pub ring: Option<Ring>,
    /// The session timer our 2xx to the INVITE agrees (`None`: none on the caller's leg).
    pub session: Option<session::Agreed>,
    /// When it came in: the instant and the wall time, from which the call reckons its records'
    /// timestamps.
    pub arrived: (Instant, DateTime<Utc>),
}

/// Where a call stands.
enum State {
    /// A pinless call waiting for phase 2 for its destination.
    Authorizing {
        conf_id: String,
        destination: String,
        /// A paid call to a subscriber: whom it rings once authorized.
        ring: Option<Box<Ring>>,
    },
    /// A pinless call's gateway leg, dialling or up.
    Direct(Box<Bridge>),
    /// An IVR call: the flow talks to the caller, and may have a bridge.
    InFlow(Box<flow::InFlow>),
    /// Over. The dialogs still answer a late BYE until the settlement (if any) is written.
    Ended {
        b: Option<Box<BLeg>>,
        settling: bool,
    },
}

/// A relayed request waiting for the other leg's answer.
#[derive(Clone)]
struct Relay {
    /// Our client transaction on the other leg.
    tx: TxKey,
    /// What we sent there, kept to answer a challenge to it.
    sent: Request,
    /// The originator's server transaction and request.
    origin: TxKey,
    origin_req: Request,
    /// The leg it was relayed to.
    to: Side,
    /// The originator's SDP offer, which we answered ourselves.
    offer: Option<sdp::Audio>,
}

/// One call; see the module documentation.
pub struct Call {
    id: u64,
    settings: Arc<Settings>,
    a: ALeg,
    state: State,
    session_id: String,
    ani: String,
    /// The card, once the flow (or a pinless caller's number) named it; for accounting.
    account: String,
    /// A subscriber's card (see [`Setup::card`]).
    card: Option<String>,
    access: AccessNumber,
    trusted: bool,
    lang: String,
    prompts: Arc<prompts::set::PromptSet>,
    media_local: [SocketAddr; 2],
    media_keys: [crate::media::srtp::KeySalt; 2],
    /// Whether the gateway leg's SDP has been taken.
    b_has_codec: bool,
    /// Server INVITE transactions whose 2xx awaits its ACK (and its CSeq), per side.
    awaiting_ack: [Option<(TxKey, u32)>; 2],
    /// Whether that 2xx made an offer (to a re-INVITE without SDP), so its ACK brings the
    /// answer.
    answer_in_ack: [bool; 2],
    /// The SDP we last sent on each leg: what a session refresh of ours carries again, and
    /// our answer to a peer's refresh.
    sdp_sent: [Vec<u8>; 2],
    /// The SDP each leg last sent us: an offer identical to it changes nothing, so it is a
    /// session refresh we answer ourselves rather than relay.
    sdp_heard: [Vec<u8>; 2],
    relays: Vec<Relay>,
    epoch: (Instant, DateTime<Utc>),
    /// The wake-up last asked of the engine.
    armed: Option<Instant>,
    out: VecDeque<Output>,
    span: tracing::Span,
    /// An IVR call's current bridge (its conference id), inside the call's span.
    bridge_span: Option<tracing::Span>,
}

impl Call {
    /// A new call: a pinless one asks phase 2; an IVR one is answered and its flow starts.
    pub fn start(setup: Setup, settings: Arc<Settings>, env: &mut Env) -> Call {
        let session_id = env.ids.uuid();
        let pinless = setup.flow.is_none();
        let conf_id = env.ids.uuid();
        let access = setup.access;
        let setup_body = setup.invite.body.clone();
        // Each field once: a pinless call knows its card and conference now; an IVR call
        // learns its card from the caller, and each of its bridges gets a span of its own.
        let span = if pinless {
            tracing::info_span!("call", id = setup.id, session = %session_id, conf = %conf_id,
                account = %setup.card.as_deref().unwrap_or(&setup.ani), access = %access.number)
        } else {
            tracing::info_span!("call", id = setup.id, session = %session_id,
                account = tracing::field::Empty, access = %access.number)
        };
        let mut call = Call {
            id: setup.id,
            settings,
            a: ALeg {
                peer: setup.peer,
                invite: setup.invite,
                tx: setup.tx,
                tag: env.ids.tag(),
                dialog: None,
                offer: setup.offer,
                answer: None,
                answered: false,
                setup: setup.arrived.1,
                connect: None,
                agreed: setup.session,
                session: None,
                reliable: None,
                held_ok: None,
            },
            state: State::Ended {
                b: None,
                settling: false,
            },
            session_id,
            account: match (&setup.ring, &setup.card, pinless) {
                (Some(ring), _, _) => ring.card.clone(),
                (None, Some(card), _) => card.clone(),
                (None, None, true) => setup.ani.clone(),
                (None, None, false) => String::new(),
            },
            card: setup.card,
            ani: setup.ani,
            lang: access
                .languages
                .first()
                .cloned()
                .unwrap_or_else(|| "en".into()),
            access,
            trusted: setup.trusted,
            prompts: setup.prompts,
            media_local: setup.media_local,
            media_keys: setup.media_keys,
            b_has_codec: false,
            awaiting_ack: [None, None],
            answer_in_ack: [false, false],
            sdp_sent: [Vec::new(), Vec::new()],
            sdp_heard: [setup_body, Vec::new()],
            relays: Vec::new(),
            epoch: setup.arrived,
            armed: None,
            out: VecDeque::new(),
            span,
            bridge_span: None,
        };
        call.a.reliable = prack::for_caller(
            &call.a.invite,
            call.settings.cfg.calls.caller_100rel,
            call.settings.cfg.timers.t1,
            &call.a.tag,
        );
        env.stats.calls += 1;
        let _in_call = call.span.clone().entered();
        let offer = &call.a.offer;
        call.out.push_back(Output::Media(MediaCmd::Remote {
            side: Side::A,
            addr: offer.rtp,
            codec: offer.codecs[0],
            telephone_event: offer.telephone_event,
            srtp: offer.srtp.as_ref().map(|s| Key(s.key)),
        }));
        call.out.push_back(Output::Media(MediaCmd::Signalling {
            side: Side::A,
            ip: call.a.peer.addr.ip(),
        }));
        match (setup.flow, setup.ring) {
            (Some(flow), _) => call.start_flow(flow, setup.destination, env),
            (None, Some(ring)) => call.ring(conf_id, ring, env),
            (None, None) => call.ask_phase2(conf_id, setup.destination, None),
        }
        call.arm();
        call
    }

    /// A pinless call's phase 2: the caller's number is the card, or a subscriber's SIP
    /// account names it; or, for a paid call to a subscriber (`ring`), the card of the
    /// account rung pays, by its tenant's deck.
    fn ask_phase2(&mut self, conf_id: String, destination: String, ring: Option<Ring>) {
        let request = CallRequest {
            auth: AuthRequest {
                // `account` is the card that pays, whichever way the call goes.
                account: self.account.clone(),
                pin: None,
                ani: (!self.ani.is_empty()).then(|| self.ani.clone()),
                access_number: self.access.number.clone(),
                session_id: self.session_id.clone(),
                tenant: self.access.card_tenant(),
                // We chose to charge the subscriber's card: no PIN is anyone's to give.
                authenticated: self.card.is_some() || ring.is_some(),
            },
            destination: destination.clone(),
            conf_id: conf_id.clone(),
            whole_credit: false,
            rate_deck: ring.as_ref().and_then(|r| r.rate_deck.clone()),
        };
        self.state = State::Authorizing {
            conf_id,
            destination,
            ring: ring.map(Box::new),
        };
        self.emit(Output::Store(Ask::AuthorizeCall(request)));
    }

    /// Takes one input; what it leads to is then waiting in [`Call::poll`].
    pub fn handle(&mut self, input: Input, env: &mut Env) {
        let _in_call = self.span().entered();
        match input {
            Input::Request { side, tx, req } => self.on_request(side, tx, req, env),
            Input::Cancel { invite } => self.on_cancel(&invite, env),
            Input::Ack { side, req, from } => self.on_ack(side, &req, from),
            Input::Response { tx, resp, from } => self.on_response(&tx, resp, from, env),
            Input::Timeout { tx } => self.on_timeout(&tx, env),
            Input::NoAck { tx } => self.on_no_ack(&tx, env),
            Input::Stray2xx { side, resp } => self.reack(side, &resp, env),
            Input::Store(answer) => self.on_store(answer, env),
            Input::Media(ev) => self.on_media(ev, env),
            Input::Timer => self.on_timer(env),
            Input::Shutdown => self.shutdown(env),
        }
        self.arm();
    }

    /// The next thing the call wants done.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The span every log line about this call belongs in: its bridge's while an IVR call has
    /// one up.
    pub fn span(&self) -> tracing::Span {
        self.bridge_span.as_ref().unwrap_or(&self.span).clone()
    }

    /// Whether the call runs an IVR flow.
    pub fn is_ivr(&self) -> bool {
        matches!(self.state, State::InFlow(_))
    }

    /// The access number dialled.
    pub fn access_number(&self) -> &str {
        &self.access.number
    }

    /// The caller's number, when it is believed (empty otherwise).
    pub fn ani(&self) -> &str {
        &self.ani
    }

    /// Where the caller's signalling comes from.
    pub fn caller(&self) -> Peer {
        self.a.peer
    }

    /// The Call-IDs that route to this call: the caller's, and the gateway leg's if any.
    pub fn call_ids(&self) -> Vec<String> {
        let mut ids = vec![self.a.invite.call_id().to_string()];
        if let Some(d) = self.b().and_then(|b| b.dialog.as_ref()) {
            ids.push(d.call_id.clone());
        }
        ids
    }

    /// When the call next needs [`Input::Timer`].
    pub fn next_wake(&self) -> Option<Instant> {
        let call = match &self.state {
            State::Direct(b) => b.next_wake(),
            State::InFlow(f) => {
                let flow = f.ivr.next_wake();
                let bridge = f.bridge.as_ref().and_then(Bridge::next_wake);
                flow.into_iter().chain(bridge).min()
            }
            State::Authorizing { .. } | State::Ended { .. } => return None,
        };
        let sessions = self.sessions().map(|(_, s)| s.next_wake());
        call.into_iter()
            .chain(sessions)
            .chain(self.reliable_wake())
            .min()
    }

    /// Asks the engine for a wake-up when the next one moved.
    fn arm(&mut self) {
        let next = self.next_wake();
        if let Some(at) = next.filter(|_| next != self.armed) {
            self.out.push_back(Output::Timer(at));
        }
        self.armed = next;
    }

    fn emit(&mut self, o: Output) {
        self.out.push_back(o);
    }

    /// The wall time at `now`, reckoned from when the call came in.
    fn wall(&self, now: Instant) -> DateTime<Utc> {
        let since = now.saturating_duration_since(self.epoch.0);
        self.epoch.1 + chrono::Duration::from_std(since).unwrap_or_default()
    }

    /// Answers a server transaction.
    fn respond(&mut self, tx: &TxKey, resp: Response) {
        if *tx == self.a.tx && resp.status_code.code() >= 200 {
            self.a.answered = true;
        }
        self.emit(Output::Respond {
            tx: tx.clone(),
            resp,
        });
    }

    /// Answers `req` (on transaction `tx`) with a bare status.
    fn reply(
        &mut self,
        tx: &TxKey,
        req: &Request,
        code: u16,
        warning: Option<&str>,
        env: &mut Env,
    ) {
        let resp = reply_to(req, code, warning, &env.ids.tag());
        self.respond(tx, resp);
    }

    /// Starts a client transaction for `req` toward `peer`; its key.
    fn send(&mut self, req: Request, peer: Peer) -> Option<TxKey> {
        let tx = transaction::key(&req)?;
        self.emit(Output::Send {
            tx: tx.clone(),
            req,
            peer,
        });
        Some(tx)
    }

    /// The gateway leg now, dialling or up (or kept after the end for a late BYE).
    fn b(&self) -> Option<&BLeg> {
        match &self.state {
            State::Direct(bridge) => bridge.b(),
            State::InFlow(f) => f.bridge.as_ref().and_then(Bridge::b),
            State::Ended { b, .. } => b.as_deref(),
            State::Authorizing { .. } => None,
        }
    }

    fn b_mut(&mut self) -> Option<&mut BLeg> {
        match &mut self.state {
            State::Direct(bridge) => bridge.b_mut(),
            State::InFlow(f) => f.bridge.as_mut().and_then(Bridge::b_mut),
            State::Ended { b, .. } => b.as_deref_mut(),
            State::Authorizing { .. } => None,
        }
    }

    /// The call's bridge to a gateway, if it has one.
    fn bridge(&self) -> Option<&Bridge> {
        match &self.state {
            State::Direct(b) => Some(b),
            State::InFlow(f) => f.bridge.as_ref(),
            _ => None,
        }
    }

    fn bridge_mut(&mut self) -> Option<&mut Bridge> {
        match &mut self.state {
            State::Direct(b) => Some(b),
            State::InFlow(f) => f.bridge.as_mut(),
            _ => None,
        }
    }

    fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended { .. })
    }

    /// The store answered.
    fn on_store(&mut self, answer: Answer, env: &mut Env) {
        match (answer, &mut self.state) {
            (Answer::Call(a), State::Authorizing { .. }) => self.authorized(*a, env),
            (Answer::Call(a), State::InFlow(_)) => self.flow_phase2(*a, env),
            (Answer::Call(a), _) => {
                if let Some(r) = a.reservation {
                    self.emit(Output::Release(r));
                }
            }
            (Answer::Account(a), State::InFlow(_)) => self.flow_phase1(*a, env),
            (Answer::Refused(code), State::InFlow(_)) => self.flow_refused(code, env),
            (Answer::Extended(result), _) => self.extended(result, env),
            (Answer::Settled(result), State::Ended { settling: true, .. }) => {
                if let Err(e) = result {
                    tracing::error!(call = self.id, error = %e, "settlement failed; the sweeper will settle it");
                }
                self.emit(Output::Ended);
            }
            (Answer::Settled(result), State::InFlow(_)) => self.bridge_settled(result, env),
            _ => {}
        }
    }

    /// Events from the call's media.
    fn on_media(&mut self, ev: crate::media::engine::MediaEvent, env: &mut Env) {
        use crate::media::engine::MediaEvent as M;
        if self.is_ivr() && !matches!(ev, M::Inactive) {
            let ev = match ev {
                M::Digit(d) => ivr::Event::Digit(d),
                M::LongPound => ivr::Event::LongPound,
                _ => ivr::Event::PromptDone,
            };
            return self.feed(ev, env);
        }
        let talking = self.bridge().is_some_and(Bridge::is_up);
        match ev {
            M::Inactive if talking || self.is_ivr() => {
                tracing::info!(call = self.id, "no RTP from the caller; ending the call");
                self.bye(Side::A, env);
                self.bye(Side::B, env);
                let at = self.wall(env.now);
                self.end("RTP inactivity", at, env);
            }
            // Pinless calls have no IVR to hear digits.
            M::Digit(d) => tracing::debug!(call = self.id, digit = %d, "digit"),
            M::LongPound => tracing::debug!(call = self.id, "long pound"),
            M::Inactive | M::PromptDone => {}
        }
    }

    /// A timer is due: the flow's, the gateway leg's, the money clock's, or a session's.
    fn on_timer(&mut self, env: &mut Env) {
        self.flow_timers(env);
        self.dial_timers(env);
        self.fork_timers(env);
        if self.bridge().is_some_and(Bridge::is_up) {
            self.money_ticks(env);
        }
        self.session_ticks(env);
        self.reliable_ticks(env);
    }

    /// The node is stopping: every call ends now, settled.
    fn shutdown(&mut self, env: &mut Env) {
        let at = self.wall(env.now);
        match &self.state {
            State::Ended { .. } => {}
            State::InFlow(_) => {
                self.cancel_b(env);
                self.bye(Side::A, env);
                self.bye(Side::B, env);
                self.end("shutdown", at, env);
            }
            State::Direct(b) if b.is_up() => {
                self.bye(Side::A, env);
                self.bye(Side::B, env);
                self.end("shutdown", at, env);
            }
            State::Authorizing { .. } | State::Direct(_) => {
                self.cancel_b(env);
                self.fail(503, Some("shutting down"), "shutdown", env);
            }
        }
    }
}

/// ACKs and hangs up a 2xx that belongs to no call of ours (a gateway that answered after we
/// gave up on it), so it is not left holding a call.
pub fn hang_up(resp: &Response, peer: Peer, local: &Local, ids: &mut dyn Ids) -> Vec<Output> {
    use crate::sip::message::Method;
    let mut d = crate::sip::dialog::Dialog::from_response(resp);
    let seq = d.local_seq;
    let via = local.via(peer.proto);
    let contact = local.contact(peer.proto);
    let ack = d.request(Method::Ack, &via, &ids.branch(), &contact, Some(seq));
    let bye = d.request(Method::Bye, &via, &ids.branch(), &contact, None);
    let mut out = vec![Output::Ack { req: ack, peer }];
    if let Some(tx) = transaction::key(&bye) {
        out.push(Output::Send { tx, req: bye, peer });
    }
    out
}

//! Calls that run an IVR flow: we answer the caller ourselves, play the flow's prompts, feed
//! it the caller's digits and the authorizer's answers, and bridge to the gateway when the
//! flow says so. When the bridge ends (the called party hangs up, a long pound, the credit
//! runs out, busy, no answer) the gateway leg is settled on its own and the caller goes back
//! to the flow, with the same session and a new conference id for the next call.

use super::bridge::{Bridge, Hold};
use super::clock::{Grant, MoneyClock};
use super::io::{Ask, MediaCmd, Output};
use super::legs::{attach_sdp, is_sdp, Side};
use super::{Call, Env, State};
use crate::media::sdp;
use crate::sip::message::Response;
use chrono::{DateTime, Utc};
use ivr::BridgeEnd;
use rating::radius::acct::Leg;
use rating::radius::legs::LegEnd;
use rating::store::{AccountAnswer, AuthRequest, CallAnswer, CallRequest, Settlement};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// An IVR call's own state: its flow, the money phase 2 held for the next bridge, and the
/// bridge itself while one is up.
pub(super) struct InFlow {
    pub ivr: ivr::Session,
    /// The latest phase 2 asked: its conference id and destination.
    asked: Option<(String, String)>,
    /// What that phase 2 held; a bridge to its destination spends it.
    pub hold: Option<Hold>,
    /// The number a redirect code (51, 52) sends this caller to for free, once the store said
    /// so: the only bridge allowed without a hold.
    free_to: Option<String>,
    pub bridge: Option<Bridge>,
    /// A bridge's settlement being written: the flow hears how it ended once it is, so that
    /// its next authorization sees the charge (and the card no longer in use).
    settling: Option<BridgeEnd>,
}

impl Call {
    fn in_flow(&mut self) -> Option<&mut InFlow> {
        match &mut self.state {
            State::InFlow(f) => Some(f),
            _ => None,
        }
    }

    /// Answers the caller with our SDP and starts its flow.
    pub(super) fn start_flow(
        &mut self,
        flow: Arc<ivr::Flow>,
        uri_destination: String,
        env: &mut Env,
    ) {
        let local = self.media_local[Side::A.index()];
        let key = &self.media_keys[Side::A.index()];
        let body = match sdp::answer(&self.a.offer, local, key, self.id) {
            Ok((b, _)) => b,
            Err(e) => {
                let (tx, req) = (self.a.tx.clone(), self.a.invite.clone());
                self.reply(&tx, &req, 488, Some(&e.to_string()), env);
                self.emit(Output::Media(MediaCmd::Close));
                return self.emit(Output::Ended);
            }
        };
        self.a.answer = Some(body.clone());
        self.sdp_sent[Side::A.index()] = body.clone().into_bytes();
        let mut ok = self.ok_to_caller(env.now);
        attach_sdp(&mut ok, body);
        let now = self.wall(env.now);
        self.a.connect = Some(now);
        let tx = self.a.tx.clone();
        self.respond(&tx, ok);
        let ctx = ivr::Context {
            ani: self.ani.clone(),
            access_number: self.access.number.clone(),
            languages: self.access.languages.clone(),
            uri_destination,
            card: self.card.clone().unwrap_or_default(),
        };
        let (session, actions) = ivr::Session::start(flow, &ctx, env.now);
        crate::metrics::get().ivr_sessions.inc();
        self.state = State::InFlow(Box::new(InFlow {
            ivr: session,
            asked: None,
            hold: None,
            free_to: None,
            bridge: None,
            settling: None,
        }));
        self.account(&[Leg::Answer], None, now);
        self.run_actions(actions, env);
    }

    /// An event for the call's flow.
    pub(super) fn feed(&mut self, ev: ivr::Event, env: &mut Env) {
        tracing::debug!(call = self.id, ?ev, "flow event");
        let Some(f) = self.in_flow() else {
            return;
        };
        let actions = f.ivr.on_event(ev, env.now);
        self.run_actions(actions, env);
    }

    /// The flow's timers (collect and menu timeouts).
    pub(super) fn flow_timers(&mut self, env: &mut Env) {
        let Some(f) = self.in_flow() else {
            return;
        };
        if f.ivr.next_wake().is_some_and(|w| w <= env.now) {
            let actions = f.ivr.on_timer(env.now);
            self.run_actions(actions, env);
        }
    }

    /// Carries out what the flow asks for.
    fn run_actions(&mut self, actions: Vec<ivr::Action>, env: &mut Env) {
        let id = self.id;
        let mut queue: VecDeque<ivr::Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(f) = self.in_flow() else {
                return;
            };
            tracing::debug!(call = id, state = f.ivr.state(), ?action, "flow");
            match action {
                ivr::Action::Play { prompts, .. } => {
                    let names: Vec<&str> = prompts.iter().map(String::as_str).collect();
                    let seq = self.prompts.sequence(&self.lang, &names);
                    if seq.is_empty() {
                        // Nothing to play (all missing): the prompt is over at once.
                        if let Some(f) = self.in_flow() {
                            queue.extend(f.ivr.on_event(ivr::Event::PromptDone, env.now));
                        }
                    } else {
                        self.emit(Output::Media(MediaCmd::Play {
                            side: super::legs::Side::A,
                            prompts: seq,
                        }));
                    }
                }
                ivr::Action::StopPlayback => self.emit(Output::Media(MediaCmd::StopPlayback)),
                ivr::Action::SetLanguage(l) => self.lang = l,
                ivr::Action::Authorize {
                    phase,
                    account,
                    pin,
                    destination,
                } => self.authorize(phase, account, pin, destination, env),
                ivr::Action::Bridge { destination } => self.flow_bridge(destination, env),
                ivr::Action::EndBridge => {
                    if self.bridge().is_some_and(Bridge::is_up) {
                        self.bye(Side::B, env);
                    } else {
                        self.cancel_b(env);
                    }
                    self.bridge_ended(BridgeEnd::LongPound, None, env);
                }
                ivr::Action::Hangup { cause } => {
                    self.cancel_b(env);
                    self.bye(Side::A, env);
                    self.bye(Side::B, env);
                    let at = self.wall(env.now);
                    return self.end(&cause, at, env);
                }
            }
        }
    }

    /// The flow asks the store: phase 1 (the card and PIN) or phase 2 (the destination).
    fn authorize(
        &mut self,
        phase: u8,
        account: String,
        pin: Option<String>,
        destination: Option<String>,
        env: &mut Env,
    ) {
        if self.account != account {
            self.account = account.clone();
            self.span.record("account", account.as_str());
        }
        // A subscriber's digest stands for its own card's PIN, and for no other card a flow
        // may ask about.
        let authenticated = self.card.as_deref() == Some(account.as_str());
        let auth = AuthRequest {
            account,
            pin: pin.filter(|p| !p.is_empty()),
            ani: (!self.ani.is_empty()).then(|| self.ani.clone()),
            access_number: self.access.number.clone(),
            session_id: self.session_id.clone(),
            tenant: self.access.card_tenant(),
            authenticated,
        };
        if phase == 1 {
            return self.emit(Output::Store(Ask::AuthorizeAccount(auth)));
        }
        // Each phase-2 authorization is a new call leg with its own conference id.
        let conf_id = env.ids.uuid();
        let destination = destination.unwrap_or_default();
        self.bridge_span = Some(tracing::info_span!(parent: &self.span, "bridge", conf = %conf_id));
        if let Some(f) = self.in_flow() {
            f.asked = Some((conf_id.clone(), destination.clone()));
        }
        self.emit(Output::Store(Ask::AuthorizeCall(CallRequest {
            auth,
            destination,
            conf_id,
            whole_credit: false,
            rate_deck: None,
        })));
    }

    /// Phase 1 answered.
    pub(super) fn flow_phase1(&mut self, a: AccountAnswer, env: &mut Env) {
        let result = ivr::AuthResult {
            code: a.code.code(),
            amount: a.available.floor_cents().to_string(),
            credit_seconds: 0,
            language: a.language,
            redirect: a.redirect_number,
        };
        self.note_redirect(&result);
        self.feed(ivr::Event::Auth(result), env);
    }

    /// A redirect code (51, 52, from either phase) names the one number this caller may be
    /// bridged to for free.
    fn note_redirect(&mut self, result: &ivr::AuthResult) {
        if matches!(result.code, 51 | 52) && !result.redirect.is_empty() {
            if let Some(f) = self.in_flow() {
                f.free_to = Some(result.redirect.clone());
            }
        }
    }

    /// The engine refused an authorization before the store (card or PIN guessing).
    pub(super) fn flow_refused(&mut self, code: rating::ReturnCode, env: &mut Env) {
        let result = ivr::AuthResult {
            code: code.code(),
            ..Default::default()
        };
        self.feed(ivr::Event::Auth(result), env);
    }

    /// Phase 2 answered: keep its hold for the bridge to its destination.
    pub(super) fn flow_phase2(&mut self, a: CallAnswer, env: &mut Env) {
        let result = ivr::AuthResult {
            code: a.code.code(),
            amount: a.available.floor_cents().to_string(),
            credit_seconds: a.credit_time,
            language: a.language.clone(),
            redirect: a.redirect_number.clone(),
        };
        self.note_redirect(&result);
        let Some(f) = self.in_flow() else {
            return;
        };
        let mut stale = None;
        match (a.reservation, f.asked.clone()) {
            (Some(r), Some((conf_id, destination))) => {
                let grant = Grant {
                    granted: r.granted_seconds,
                    credit: a.credit_time,
                };
                let hold = Hold {
                    conf_id,
                    destination,
                    reservation: Some(r),
                    grant,
                };
                stale = f.hold.replace(hold);
            }
            (Some(r), None) => {
                stale = Some(Hold {
                    conf_id: r.conf_id.clone(),
                    destination: String::new(),
                    reservation: Some(r),
                    grant: Grant::default(),
                })
            }
            (None, _) => {}
        }
        // A hold the flow never bridged is given back, not left for the sweeper.
        if let Some(r) = stale.and_then(|h| h.reservation) {
            self.emit(Output::Release(r));
        }
        self.feed(ivr::Event::Auth(result), env);
    }

    /// The flow bridges to `destination`.
    fn flow_bridge(&mut self, destination: String, env: &mut Env) {
        let router = self.settings.cfg.clone();
        let id = self.id;
        let fresh_conf = env.ids.uuid();
        let Some(f) = self.in_flow() else {
            return;
        };
        // Money first: a bridge needs the hold phase 2 made for this very destination, or a
        // redirect the store granted to it. A flow that bridges otherwise (a mistake in an
        // uploaded YAML) gets "failed", never a free call.
        let paid = f
            .hold
            .as_ref()
            .is_some_and(|h| h.destination == destination);
        let free = f.free_to.as_deref() == Some(destination.as_str());
        let hold = if paid {
            f.hold.take().expect("checked")
        } else if free {
            // A free call is a call leg of its own, with its own conference id.
            Hold {
                conf_id: fresh_conf,
                destination: destination.clone(),
                reservation: None,
                grant: Grant::default(),
            }
        } else {
            tracing::error!(
                call = id,
                %destination,
                "the flow asked to bridge without an authorization for that destination; refused"
            );
            return self.bridge_ended(BridgeEnd::Failed, None, env);
        };
        let route = router.router.candidates(&destination);
        let empty = route.is_empty();
        f.bridge = Some(Bridge::new(hold, route));
        if empty {
            return self.bridge_ended(BridgeEnd::Unreachable, None, env);
        }
        self.dial_next(env);
    }

    /// The gateway answered an IVR call's bridge: ACK it, join the media, start the clock.
    pub(super) fn flow_answered(&mut self, resp: Response, env: &mut Env) {
        // The gateway's SDP is in the 2xx, or came earlier in an 18x (early media).
        let media_ok = if is_sdp(&resp) {
            self.b_media(&resp).map(|_| ())
        } else if self.b_has_codec {
            Ok(())
        } else {
            Err("the answer has no SDP".to_string())
        };
        self.b_leg_up(&resp, env);
        if let Err(e) = media_ok {
            tracing::warn!(call = self.id, error = %e, "gateway answer unusable");
            self.bye(Side::B, env);
            return self.bridge_ended(BridgeEnd::Failed, None, env);
        }
        self.emit(Output::Media(MediaCmd::Bridge(true)));
        let max = self.settings.cfg.calls.max_duration;
        let Some(f) = self.in_flow() else {
            return;
        };
        let warn = f.ivr.flow().param("warning_seconds", 60) as u64;
        let Some(bridge) = f.bridge.as_ref() else {
            return;
        };
        let paid = bridge.hold.reservation.is_some();
        let clock = if paid {
            MoneyClock::paid(
                env.now,
                bridge.hold.grant,
                max,
                Some(Duration::from_secs(warn)),
            )
        } else {
            // A free call (the customer-service redirect) ends only at the maximum duration.
            MoneyClock::free(env.now, max)
        };
        let conf_id = bridge.hold.conf_id.clone();
        let connected = self.wall(env.now);
        self.set_up(clock, connected);
        env.stats.answered += 1;
        self.account(&[Leg::Originate], None, connected);
        if paid {
            self.emit(Output::Store(Ask::MarkConnected { conf_id }));
        }
    }

    /// The gateway leg is over: settle it, free its gateway, and let the flow go on.
    pub(super) fn bridge_ended(
        &mut self,
        reason: BridgeEnd,
        disconnect_at: Option<DateTime<Utc>>,
        env: &mut Env,
    ) {
        if !self.is_ivr() {
            return;
        }
        let disconnect_at = disconnect_at.unwrap_or_else(|| self.wall(env.now));
        let connected = self.bridge().and_then(Bridge::connected);
        let quality = (env.quality)();
        let voice_quality = quality
            .filter(|q| q.packets[0] > 0 && connected.is_some())
            .map(|q| q.icpif);
        if self.bridge().is_some_and(|b| b.setup.is_some()) {
            let leg_end = LegEnd {
                cause: reason.name(),
                disconnect_at,
                voice_quality,
            };
            self.account(&[Leg::Originate], Some(&leg_end), disconnect_at);
        }
        let Some(f) = self.in_flow() else {
            return;
        };
        let Some(mut bridge) = f.bridge.take() else {
            return self.feed(ivr::Event::BridgeEnded(reason), env);
        };
        let b = bridge.take_b();
        self.emit(Output::Media(MediaCmd::Bridge(false)));
        tracing::info!(call = self.id, %reason, "bridge ended; back to the flow");
        self.bridge_span = None;
        let gateway = self.gateway_name(b.as_ref());
        if let Some(b) = b {
            if let Some(d) = &b.dialog {
                self.emit(Output::Unroute {
                    call_id: d.call_id.clone(),
                });
            }
            if let Some(channel) = b.channel {
                env.channels.release(channel);
            }
        }
        match bridge.hold.reservation {
            Some(r) => {
                let end = rating::store::CallEnd {
                    connect_at: connected,
                    disconnect_at,
                    cause: reason.name().to_string(),
                    voice_quality,
                    gateway,
                };
                if let Some(f) = self.in_flow() {
                    f.settling = Some(reason);
                }
                self.emit(Output::Store(Ask::Settle {
                    conf_id: r.conf_id,
                    end,
                }));
            }
            None => self.feed(ivr::Event::BridgeEnded(reason), env),
        }
    }

    /// A bridge's settlement was written: the flow hears how the bridge ended.
    pub(super) fn bridge_settled(&mut self, result: Result<Settlement, String>, env: &mut Env) {
        let Some(reason) = self.in_flow().and_then(|f| f.settling.take()) else {
            return;
        };
        if let Err(e) = result {
            tracing::error!(call = self.id, error = %e, "settling a bridge failed; the sweeper will settle it");
        }
        self.feed(ivr::Event::BridgeEnded(reason), env);
    }
}

//! Calls that run an IVR flow: we answer the caller ourselves, play the flow's prompts through
//! the media engine, feed it the caller's digits and the authorizer's answers, and bridge to the
//! gateway when the flow says so. When the bridge ends (the called party hangs up, a long
//! pound, the credit runs out, busy, no answer) the gateway leg is settled on its own and the
//! caller goes back to the flow, with the same session and a new conference id for the next
//! call.

use super::accounting::LegEnd;
use super::call::{attach_sdp, is_sdp, ok_to_caller, Phase};
use super::{Engine, Event, Side, Wake};
use crate::call::MoneyClock;
use crate::media::engine as media;
use crate::media::sdp;
use crate::sip::message::Response;
use chrono::{DateTime, Utc};
use ivr::BridgeEnd;
use rating::radius::acct::Leg;
use rating::store::{AuthRequest, CallEnd, CallRequest, Reservation};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Engine {
    /// Answers the caller with our SDP and starts its flow.
    pub(super) fn start_ivr(
        &mut self,
        id: u64,
        flow: Arc<ivr::Flow>,
        ctx: ivr::Context,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (Some(m), Some(offer)) = (&call.media, &call.a.offer) else {
            return;
        };
        let body = match sdp::answer(offer, m.local(media::A), id) {
            Ok((b, _)) => b,
            Err(e) => {
                let a_tx = call.a.tx.clone();
                self.reply(&a_tx, 488, Some(&e.to_string()), now);
                return self.forget(id);
            }
        };
        call.a.answer = Some(body.clone());
        let mut ok = ok_to_caller(&self.local, call);
        attach_sdp(&mut ok, body);
        call.phase = Phase::Ivr;
        call.a.connect = Some(Utc::now());
        let a_tx = call.a.tx.clone();
        self.respond(&a_tx, ok, now);
        self.account(id, &[Leg::Answer], None);
        let (session, actions) = ivr::Session::start(flow, &ctx, now);
        if let Some(call) = self.calls.get_mut(&id) {
            call.ivr = Some(session);
            crate::metrics::get().ivr_sessions.inc();
        }
        self.ivr_actions(id, actions, now);
    }

    /// An event for the call's flow.
    pub(super) fn ivr_feed(&mut self, id: u64, ev: ivr::Event, now: Instant) {
        tracing::debug!(call = id, ?ev, "flow event");
        let actions = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.ivr.as_mut())
            .map(|s| s.on_event(ev, now))
            .unwrap_or_default();
        self.ivr_actions(id, actions, now);
    }

    /// Carries out what the flow asks for.
    fn ivr_actions(&mut self, id: u64, actions: Vec<ivr::Action>, now: Instant) {
        let mut queue: VecDeque<ivr::Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            tracing::debug!(
                call = id,
                state = call.ivr.as_ref().map(|s| s.state()).unwrap_or(""),
                ?action,
                "flow"
            );
            match action {
                ivr::Action::Play { prompts, .. } => {
                    let names: Vec<&str> = prompts.iter().map(String::as_str).collect();
                    let seq = call.prompts.sequence(&call.lang, &names);
                    match (&call.media, seq.is_empty()) {
                        (Some(m), false) => m.play(media::A, seq),
                        // Nothing to play (all missing): the prompt is over at once.
                        _ => {
                            if let Some(s) = call.ivr.as_mut() {
                                queue.extend(s.on_event(ivr::Event::PromptDone, now));
                            }
                        }
                    }
                }
                ivr::Action::StopPlayback => {
                    if let Some(m) = &call.media {
                        m.stop_playback();
                    }
                }
                ivr::Action::SetLanguage(l) => call.lang = l,
                ivr::Action::Authorize {
                    phase,
                    account,
                    pin,
                    destination,
                } => self.ivr_authorize(id, phase, account, pin, destination),
                ivr::Action::Bridge { destination } => self.ivr_bridge(id, destination, now),
                ivr::Action::EndBridge => {
                    if call.phase == Phase::Answered {
                        self.bye(id, Side::B, now);
                    } else {
                        self.cancel_b(id, now);
                    }
                    self.ivr_bridge_ended(id, BridgeEnd::LongPound, None, now);
                }
                ivr::Action::Hangup { cause } => {
                    self.cancel_b(id, now);
                    self.bye(id, Side::A, now);
                    self.bye(id, Side::B, now);
                    self.end(id, &cause, Utc::now());
                    return;
                }
            }
        }
        let wake = self
            .calls
            .get(&id)
            .and_then(|c| c.ivr.as_ref())
            .and_then(|s| s.next_wake());
        self.schedule(wake, Wake::Call(id));
    }

    fn ivr_authorize(
        &mut self,
        id: u64,
        phase: u8,
        account: String,
        pin: Option<String>,
        destination: Option<String>,
    ) {
        let keys = self.auth_failure_keys(id);
        let limits = &self.cfg.limits;
        let blocked = keys.iter().find(|(k, per_source)| {
            let limit = if *per_source {
                limits.auth_failures_per_source
            } else {
                limits.auth_failures_per_access_number
            };
            self.auth_failures.over(k, limit, Instant::now())
        });
        if let Some((_, per_source)) = blocked {
            // Guessing from here: refused without asking the store, so a robot learns nothing
            // about which cards exist or which PIN is right.
            crate::metrics::get().limit_hit(if *per_source {
                "auth_failures_per_source"
            } else {
                "auth_failures_per_access_number"
            });
            tracing::warn!(
                call = id,
                "card or PIN guessing: refused with 10 before the store"
            );
            let result = ivr::AuthResult {
                code: rating::ReturnCode::RetriesExceeded.code(),
                ..Default::default()
            };
            return self.spawn_store(move |_| async move {
                Some(Event::IvrAuth {
                    call: id,
                    result,
                    reservation: None,
                    credit_time: 0,
                })
            });
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.account != account {
            call.account = account.clone();
            call.span.record("account", account.as_str());
        }
        let auth = AuthRequest {
            account,
            pin: pin.filter(|p| !p.is_empty()),
            ani: (!call.ani.is_empty()).then(|| call.ani.clone()),
            access_number: call.access_number.clone(),
            session_id: call.session_id.clone(),
            tenant: call.card_tenant.clone(),
        };
        let amount = |m: rating::Money| m.floor_cents().to_string();
        if phase == 1 {
            self.spawn_store(move |store| async move {
                let a = store.authorize_account(&auth, Utc::now()).await;
                let result = ivr::AuthResult {
                    code: a.code.code(),
                    amount: amount(a.available),
                    credit_seconds: 0,
                    language: a.language,
                    redirect: a.redirect_number,
                };
                Some(Event::IvrAuth {
                    call: id,
                    result,
                    reservation: None,
                    credit_time: 0,
                })
            });
            return;
        }
        // Each phase-2 authorization is a new call leg with its own conference id.
        let conf = uuid::Uuid::new_v4().to_string();
        call.conf_id = conf.clone();
        call.bridge_span = Some(tracing::info_span!(parent: &call.span, "bridge", conf = %conf));
        call.destination = destination.clone().unwrap_or_default();
        let req = CallRequest {
            auth,
            destination: destination.unwrap_or_default(),
            conf_id: conf,
            whole_credit: false,
        };
        self.spawn_store(move |store| async move {
            let a = store.authorize_call(&req, Utc::now()).await;
            let result = ivr::AuthResult {
                code: a.code.code(),
                amount: amount(a.available),
                credit_seconds: a.credit_time,
                language: a.language,
                redirect: a.redirect_number,
            };
            Some(Event::IvrAuth {
                call: id,
                result,
                reservation: a.reservation,
                credit_time: a.credit_time,
            })
        });
    }

    /// The authorizer answered an IVR call.
    pub(super) fn ivr_auth(
        &mut self,
        id: u64,
        result: ivr::AuthResult,
        reservation: Option<Reservation>,
        credit_time: u64,
        now: Instant,
    ) {
        if !self.calls.contains_key(&id) {
            return self.release_orphan(reservation);
        }
        // A wrong card or PIN counts against where the caller came from and the number.
        if matches!(result.code, 1 | 2 | 14) {
            for (key, _) in self.auth_failure_keys(id) {
                self.auth_failures.add(&key, now);
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if matches!(result.code, 51 | 52) && !result.redirect.is_empty() {
            call.free_to = Some(result.redirect.clone());
        }
        if let Some(r) = reservation {
            call.grant = crate::call::Grant {
                granted: r.granted_seconds,
                credit: credit_time,
            };
            call.reservation = Some(r);
        }
        self.ivr_feed(id, ivr::Event::Auth(result), now);
    }

    /// What a call's failed card or PIN entries count against (`true`: a per-source key): its
    /// source address, or behind a trusted peer (a proxy carrying everyone's calls) the
    /// caller's number when it is believed; and the access number, from everyone.
    fn auth_failure_keys(&self, id: u64) -> Vec<(String, bool)> {
        let Some(call) = self.calls.get(&id) else {
            return Vec::new();
        };
        let mut keys = vec![(format!("number:{}", call.access_number), false)];
        if !self.cfg.trusted(call.a.peer.addr.ip()) {
            keys.push((format!("source:{}", call.a.peer.addr.ip()), true));
        } else if call.trust_ani && !call.ani.is_empty() {
            keys.push((format!("ani:{}", call.ani), true));
        }
        keys
    }

    fn ivr_bridge(&mut self, id: u64, destination: String, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // Money first: a bridge needs the hold phase 2 made for this very destination, or a
        // redirect the store granted to it. A flow that bridges otherwise (a mistake in an
        // uploaded YAML) gets "failed", never a free call.
        let paid = call.reservation.is_some() && call.destination == destination;
        let free = call.free_to.as_deref() == Some(destination.as_str());
        if !paid && !free {
            tracing::error!(
                call = id,
                %destination,
                "the flow asked to bridge without an authorization for that destination; refused"
            );
            return self.ivr_bridge_ended(id, BridgeEnd::Failed, None, now);
        }
        call.candidates = self.cfg.router.candidates(&destination);
        call.destination = destination;
        call.next_candidate = 0;
        call.last_code = 0;
        if call.candidates.is_empty() {
            return self.ivr_bridge_ended(id, BridgeEnd::Unreachable, None, now);
        }
        call.phase = Phase::Dialing;
        self.dial_next(id, now);
    }

    /// The gateway answered an IVR call's bridge: ACK it, join the media, start the clock.
    pub(super) fn ivr_answered(&mut self, id: u64, resp: Response, now: Instant) {
        // The gateway's SDP is in the 2xx, or came earlier in an 18x (early media).
        let media_ok = if is_sdp(&resp) {
            self.b_media(id, &resp).map(|_| ())
        } else if self.calls[&id]
            .media
            .as_ref()
            .is_some_and(|m| m.has_codec(media::B))
        {
            Ok(())
        } else {
            Err("the answer has no SDP".to_string())
        };
        self.b_leg_up(id, &resp);
        if let Err(e) = media_ok {
            tracing::warn!(call = id, error = %e, "gateway answer unusable");
            self.bye(id, Side::B, now);
            return self.ivr_bridge_ended(id, BridgeEnd::Failed, None, now);
        }
        let call = self.calls.get_mut(&id).expect("checked");
        if let Some(m) = &call.media {
            m.bridge(true);
        }
        call.phase = Phase::Answered;
        call.connected = Some(Utc::now());
        call.setup_deadline = None;
        call.ring_deadline = None;
        let max = self.cfg.calls.max_duration;
        let paid = call.reservation.is_some();
        let warn = call
            .ivr
            .as_ref()
            .map(|s| s.flow().param("warning_seconds", 60) as u64)
            .unwrap_or(60);
        let clock = if paid {
            MoneyClock::paid(now, call.grant, max, Some(Duration::from_secs(warn)))
        } else {
            // A free call (the customer-service redirect) ends only at the maximum duration.
            MoneyClock::free(now, max)
        };
        let wake = clock.next_wake();
        call.clock = Some(clock);
        self.schedule(wake, Wake::Call(id));
        let conf = self.calls[&id].conf_id.clone();
        self.stats.answered += 1;
        self.account(id, &[Leg::Originate], None);
        if paid {
            self.spawn_mark_connected(conf);
        }
    }

    /// The gateway leg is over: settle it, free its gateway, and let the flow go on.
    pub(super) fn ivr_bridge_ended(
        &mut self,
        id: u64,
        reason: BridgeEnd,
        disconnect_at: Option<DateTime<Utc>>,
        now: Instant,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let quality = call.media.as_ref().map(|m| m.quality());
        if call.b_setup.is_some() {
            let leg_end = LegEnd {
                cause: reason.name(),
                disconnect_at: disconnect_at.unwrap_or_else(Utc::now),
                voice_quality: quality
                    .filter(|q| q.packets[0] > 0 && call.connected.is_some())
                    .map(|q| q.icpif),
            };
            self.account(id, &[Leg::Originate], Some(&leg_end));
        }
        let call = self.calls.get_mut(&id).expect("just found");
        call.b_setup = None;
        call.b_remote = None;
        let connected = call.connected.take();
        let settle = call.reservation.take().map(|r| {
            let end = CallEnd {
                connect_at: connected,
                disconnect_at: disconnect_at.unwrap_or_else(Utc::now),
                cause: reason.name().to_string(),
                voice_quality: quality
                    .filter(|q| q.packets[0] > 0 && connected.is_some())
                    .map(|q| q.icpif),
            };
            (r, end)
        });
        let b = call.b.take();
        if let Some(d) = b.as_ref().and_then(|b| b.dialog.as_ref()) {
            self.dialogs.remove(&d.call_id);
        }
        call.clock = None;
        call.setup_deadline = None;
        call.ring_deadline = None;
        call.phase = Phase::Ivr;
        if let Some(m) = &call.media {
            m.bridge(false);
        }
        tracing::info!(call = id, %reason, "bridge ended; back to the flow");
        call.bridge_span = None;
        self.release_channel(b.and_then(|b| b.channel));
        match settle {
            // The flow goes on once the money is settled, so that its next authorization sees
            // the charge (and the card is no longer in use).
            Some((r, end)) => {
                self.spawn_store(move |store| async move {
                    if let Err(e) = store.settle(&r.conf_id, &end, Utc::now()).await {
                        tracing::error!(error = %e, "settling a bridge failed; the sweeper will settle it");
                    }
                    Some(Event::BridgeSettled { call: id, reason })
                });
            }
            None => self.ivr_feed(id, ivr::Event::BridgeEnded(reason), now),
        }
    }

    /// The flow's timers (collect and menu timeouts).
    pub(super) fn ivr_timers(&mut self, id: u64, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .ivr
            .as_ref()
            .and_then(|s| s.next_wake())
            .is_some_and(|w| w <= now)
        {
            let actions = call
                .ivr
                .as_mut()
                .map(|s| s.on_timer(now))
                .unwrap_or_default();
            self.ivr_actions(id, actions, now);
        }
    }
}

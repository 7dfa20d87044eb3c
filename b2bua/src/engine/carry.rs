//! Carrying out what a call wants: its messages to the transactions, its media commands to
//! its RTP session, its questions to the store (each a task whose answer comes back as an
//! [`Event`]), its records to the accounting outbox, its timers to the queue. The one place
//! where a call's decisions meet sockets, tasks and clocks.

use super::{Engine, Event, Wake};
use crate::call::{Answer, Ask, Input, MediaCmd, Output};
use crate::media::engine as media;
use chrono::Utc;
use rating::radius::acct::Record;
use rating::store::{CallEnd, Reservation, Store};
use rating::ReturnCode;
use std::sync::Arc;
use std::time::Instant;

impl Engine {
    /// Hands one input to call `id` and carries out what it answers.
    pub(super) fn feed(&mut self, id: u64, input: Input, now: Instant) {
        let Some(slot) = self.calls.get_mut(&id) else {
            return;
        };
        let media = slot.media.as_ref();
        let quality = || media.map(|m| m.quality());
        let mut env = self.lent.env(now, &quality);
        slot.call.handle(input, &mut env);
        self.drain(id, now);
    }

    /// Carries out everything call `id` has asked for, in order.
    pub(super) fn drain(&mut self, id: u64, now: Instant) {
        loop {
            let Some(slot) = self.calls.get_mut(&id) else {
                return;
            };
            let Some(out) = slot.call.poll() else {
                return;
            };
            // The store's and the transactions' log lines belong to the call that asked.
            let span = slot.call.span();
            let _in_call = span.enter();
            self.carry_out(id, out, now);
        }
    }

    fn carry_out(&mut self, id: u64, out: Output, now: Instant) {
        match out {
            Output::Respond { tx, resp } => self.respond(&tx, resp, now),
            Output::Send { tx, req, peer } => self.send_request(tx, req, peer, Some(id), now),
            Output::Ack { req, peer } => self.send_stateless(&req, &peer),
            Output::Abandon(tx) => {
                self.client.remove(&tx);
            }
            Output::Acked(tx) => {
                if let Some(s) = self.server.get_mut(&tx) {
                    s.tx.acked_2xx();
                }
            }
            Output::Route { call_id, side } => {
                self.dialogs.insert(call_id, (id, side));
            }
            Output::Unroute { call_id } => {
                self.dialogs.remove(&call_id);
            }
            Output::Media(cmd) => self.media_cmd(id, cmd, now),
            Output::Store(ask) => self.ask_store(id, ask, now),
            Output::Release(r) => self.release_orphan(r),
            Output::Account { records, at } => self.account(records, at),
            Output::Timer(at) => self.schedule(Some(at), Wake::Call(id)),
            Output::Ended => self.forget(id),
        }
    }

    fn media_cmd(&mut self, id: u64, cmd: MediaCmd, now: Instant) {
        let Some(slot) = self.calls.get_mut(&id) else {
            return;
        };
        if let MediaCmd::Close = cmd {
            // Its RTP sockets close now.
            slot.media = None;
            return;
        }
        let Some(m) = &slot.media else {
            return;
        };
        match cmd {
            MediaCmd::Remote {
                side,
                addr,
                codec,
                telephone_event,
            } => m.set_remote(side.index(), addr, codec, telephone_event),
            MediaCmd::Signalling { side, ip } => m.set_signalling(side.index(), ip),
            MediaCmd::Bridge(on) => m.bridge(on),
            MediaCmd::Play(prompts) => m.play(media::A, prompts),
            MediaCmd::StopPlayback => m.stop_playback(),
            MediaCmd::InfoDigits(body) => {
                for ev in media::info_digits(m, &body) {
                    self.feed(id, Input::Media(ev), now);
                }
            }
            MediaCmd::Close => {}
        }
    }

    /// A store answer for a call; a hold whose call is gone is released.
    pub(super) fn on_event(&mut self, ev: Event, now: Instant) {
        let code = match &ev.answer {
            Answer::Call(a) => Some(a.code),
            Answer::Account(a) => Some(a.code),
            Answer::Refused(c) => Some(*c),
            _ => None,
        };
        if let Some(code) = code {
            crate::metrics::get().authorized("sip", code.code());
        }
        let Some(slot) = self.calls.get(&ev.call) else {
            if let Answer::Call(a) = ev.answer {
                if let Some(r) = a.reservation {
                    self.release_orphan(r);
                }
            }
            return;
        };
        // A wrong card or PIN counts against where the caller came from and the number.
        let wrong = matches!(
            code,
            Some(
                ReturnCode::InvalidAccount | ReturnCode::InvalidPin | ReturnCode::InvalidCardNumber
            )
        );
        if slot.call.is_ivr() && wrong {
            for (key, _) in self.guess_keys(ev.call) {
                self.auth_failures.add(&key, now);
            }
        }
        self.feed(ev.call, Input::Store(ev.answer), now);
    }

    /// Spawns what the store is asked; a guessing source's authorization is refused first.
    fn ask_store(&mut self, id: u64, ask: Ask, now: Instant) {
        let guarded = matches!(ask, Ask::AuthorizeCall(_) | Ask::AuthorizeAccount(_))
            && self.calls.get(&id).is_some_and(|s| s.call.is_ivr());
        if guarded && self.guessing(id, now) {
            let answer = Answer::Refused(ReturnCode::RetriesExceeded);
            return self.spawn_store(move |_| async move { Some(Event { call: id, answer }) });
        }
        match ask {
            Ask::AuthorizeCall(req) => self.spawn_store(move |store| async move {
                let a = store.authorize_call(&req, Utc::now()).await;
                Some(Event {
                    call: id,
                    answer: Answer::Call(Box::new(a)),
                })
            }),
            Ask::AuthorizeAccount(req) => self.spawn_store(move |store| async move {
                let a = store.authorize_account(&req, Utc::now()).await;
                Some(Event {
                    call: id,
                    answer: Answer::Account(Box::new(a)),
                })
            }),
            Ask::Extend { conf_id } => self.spawn_store(move |store| async move {
                let result = store
                    .extend(&conf_id, Utc::now())
                    .await
                    .map_err(|e| e.to_string());
                Some(Event {
                    call: id,
                    answer: Answer::Extended(result),
                })
            }),
            Ask::MarkConnected { conf_id } => self.spawn_store(move |store| async move {
                if let Err(e) = store.mark_connected(&conf_id, Utc::now()).await {
                    tracing::warn!(error = %e, "could not mark the call connected");
                }
                None
            }),
            Ask::Settle { conf_id, end } => self.spawn_store(move |store| async move {
                let result = store
                    .settle(&conf_id, &end, Utc::now())
                    .await
                    .map_err(|e| e.to_string());
                Some(Event {
                    call: id,
                    answer: Answer::Settled(result),
                })
            }),
        }
    }

    /// Whether this call's source or access number has guessed too many cards and PINs:
    /// then it is refused with 10 before the store, so a robot learns nothing about which
    /// cards exist or which PIN is right.
    fn guessing(&self, id: u64, now: Instant) -> bool {
        let limits = &self.cfg.limits;
        let keys = self.guess_keys(id);
        let Some((_, per_source)) = keys.iter().find(|(k, per_source)| {
            let limit = if *per_source {
                limits.auth_failures_per_source
            } else {
                limits.auth_failures_per_access_number
            };
            self.auth_failures.over(k, limit, now)
        }) else {
            return false;
        };
        crate::metrics::get().limit_hit(if *per_source {
            "auth_failures_per_source"
        } else {
            "auth_failures_per_access_number"
        });
        tracing::warn!(
            call = id,
            "card or PIN guessing: refused with 10 before the store"
        );
        true
    }

    /// What a call's failed card or PIN entries count against (`true`: a per-source key): its
    /// source address, or behind a trusted peer (a proxy carrying everyone's calls) the
    /// caller's number when it is believed; and the access number, from everyone.
    fn guess_keys(&self, id: u64) -> Vec<(String, bool)> {
        let Some(call) = self.calls.get(&id).map(|s| &s.call) else {
            return Vec::new();
        };
        let mut keys = vec![(format!("number:{}", call.access_number()), false)];
        let source = call.caller().addr.ip();
        if !self.cfg.trusted(source) {
            keys.push((format!("source:{source}"), true));
        } else if !call.ani().is_empty() {
            keys.push((format!("ani:{}", call.ani()), true));
        }
        keys
    }

    /// Settles a hold whose call no longer wants it (cancelled during authorization).
    pub(super) fn release_orphan(&mut self, r: Reservation) {
        self.spawn_store(move |store| async move {
            let end = CallEnd {
                connect_at: None,
                disconnect_at: Utc::now(),
                cause: "cancelled".into(),
                voice_quality: None,
            };
            let result = store.settle(&r.conf_id, &end, Utc::now()).await;
            if let Err(e) = result {
                tracing::error!(error = %e, "releasing a cancelled call's hold failed; the sweeper will");
            }
            None
        });
    }

    /// Queues accounting records in the store's outbox; `crate::radius_acct` sends them.
    fn account(&mut self, records: Vec<Record>, at: chrono::DateTime<Utc>) {
        self.spawn_store(move |store| async move {
            if let Err(e) = store.enqueue_accounting(&records, at).await {
                tracing::error!(error = %e, "could not queue accounting records; they are lost");
            }
            None
        });
    }

    /// Drops a finished call; its transactions finish on their own.
    fn forget(&mut self, id: u64) {
        if let Some(slot) = self.calls.remove(&id) {
            for call_id in slot.call.call_ids() {
                self.dialogs.remove(&call_id);
            }
        }
    }

    /// Spawns a store operation into the engine's task set; its answer, if the call needs
    /// one, comes back as an event.
    fn spawn_store<F, Fut>(&mut self, f: F)
    where
        F: FnOnce(Arc<Store>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<Event>> + Send + 'static,
    {
        let store = self.store.clone();
        let events = self.events.clone();
        let work = async move {
            let started = Instant::now();
            let ev = f(store).await;
            crate::metrics::get()
                .store_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Some(ev) = ev {
                let _ = events.send(ev).await;
            }
        };
        // The store's log lines belong to the call that asked.
        self.tasks.spawn(tracing::Instrument::instrument(
            work,
            tracing::Span::current(),
        ));
    }
}

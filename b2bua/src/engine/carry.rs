//! Carrying out what a call wants: its messages to the transactions, its media commands to
//! its RTP session, its questions to the store (each a task whose answer comes back as an
//! [`Event`]), its records to the accounting outbox, its timers to the queue. The one place
//! where a call's decisions meet sockets, tasks and clocks.

use super::{Engine, Event, Wake};
use crate::call::{Answer, Ask, Input, MediaCmd, Output};
use crate::media::engine as media;
use chrono::Utc;
use rating::radius::acct::Record;
use rating::store::{CallEnd, Reservation, Store, StoreError};
use rating::ReturnCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
                self.forget_tx(super::Table::Client, &tx);
            }
            Output::Acked(tx) => {
                if let Some(s) = self.server.get_mut(&tx) {
                    s.tx.acked_2xx();
                }
                self.note_lingering(super::Table::Server, &tx);
            }
            Output::Route { call_id, side } => {
                self.dialogs.insert(call_id, (id, side));
            }
            Output::Unroute { call_id } => {
                self.dialogs.remove(&call_id);
            }
            Output::Media(cmd) => self.media_cmd(id, cmd),
            Output::Store(ask) => self.ask_store(id, ask, now),
            Output::Release(r) => self.release_orphan(r),
            Output::Account { records, at } => self.account(records, at),
            Output::Timer(at) => self.schedule(Some(at), Wake::Call(id)),
            Output::Ended => self.forget(id),
        }
    }

    fn media_cmd(&mut self, id: u64, cmd: MediaCmd) {
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
                srtp,
            } => m.set_remote(
                side.index(),
                addr,
                codec,
                telephone_event,
                srtp.map(|k| k.0),
            ),
            MediaCmd::Signalling { side, ip } => m.set_signalling(side.index(), ip),
            MediaCmd::Bridge(on) => m.bridge(on),
            MediaCmd::Play { side, prompts } => m.play(side.index(), prompts),
            MediaCmd::StopPlayback => m.stop_playback(),
            MediaCmd::InfoDigits(body) => {
                // The digit comes back from the call's relay worker as a media event.
                media::info_digits(m, &body);
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
        let retry = self.cfg.calls.store_retry;
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
                // The connect time is the answer's, not the retry's.
                let at = Utc::now();
                let marked = persist(retry, "marking the call connected", || {
                    store.mark_connected(&conf_id, at)
                });
                if let Err(e) = marked.await {
                    tracing::warn!(error = %e, "could not mark the call connected");
                }
                None
            }),
            Ask::Settle { conf_id, end } => self.spawn_store(move |store| async move {
                let result = persist(retry, "settling the call", || {
                    store.settle(&conf_id, &end, Utc::now())
                })
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
        let retry = self.cfg.calls.store_retry;
        self.spawn_store(move |store| async move {
            let end = CallEnd {
                connect_at: None,
                disconnect_at: Utc::now(),
                cause: "cancelled".into(),
                voice_quality: None,
                gateway: String::new(),
            };
            let released = persist(retry, "releasing a cancelled call's hold", || {
                store.settle(&r.conf_id, &end, Utc::now())
            });
            if let Err(e) = released.await {
                tracing::error!(error = %e, "releasing a cancelled call's hold failed; the sweeper will");
            }
            None
        });
    }

    /// Queues accounting records in the store's outbox; `crate::radius_acct` sends them.
    fn account(&mut self, records: Vec<Record>, at: chrono::DateTime<Utc>) {
        let retry = self.cfg.calls.store_retry;
        self.spawn_store(move |store| async move {
            let queued = persist(retry, "queueing accounting records", || {
                store.enqueue_accounting(&records, at)
            });
            if let Err(e) = queued.await {
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
            if let Some(counted) = slot.counted {
                self.release_call_slot(counted);
            }
        }
    }

    /// A subscriber's call is over (or was never placed): it no longer counts among the
    /// account's calls at once. Retried while the store is away; if it still fails, the row
    /// stays until this node restarts (it forgets its own then), so the account may be one
    /// call short meanwhile, never one over.
    pub(super) fn release_call_slot(&mut self, counted: rating::store::CallSlot) {
        let retry = self.cfg.calls.store_retry;
        self.spawn_store(move |store| async move {
            let released = persist(retry, "releasing a subscriber's call", || {
                store.release_sip_call(&counted)
            });
            if let Err(e) = released.await {
                tracing::error!(error = %e, key = %counted.key, "could not release a subscriber's call; it counts until this node restarts");
            }
            None
        });
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

/// Runs an idempotent store write until it is done: a failure that may pass (the database
/// busy, slow or briefly away: [`StoreError::is_transient`]) is tried again with a growing
/// pause, for `retry_for` at most. Settling, marking connected and queueing records are safe
/// to repeat (a second settlement returns the first), so a node under load finishes its own
/// calls' money instead of leaving holds on cards for the sweeper.
async fn persist<T, F, Fut>(retry_for: Duration, what: &str, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    let mut tries = 1u32;
    loop {
        match op().await {
            Err(e) if e.is_transient() && started.elapsed() + pause < retry_for => {
                crate::metrics::get().store_retries.inc();
                if tries == 1 {
                    tracing::warn!(error = %e, "{what} failed for now; trying again");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                tries += 1;
            }
            Err(e) => {
                if tries > 1 {
                    tracing::error!(error = %e, tries, "{what} failed; giving up");
                }
                return Err(e);
            }
            Ok(v) => {
                if tries > 1 {
                    tracing::info!(tries, "{what} done after retrying");
                }
                return Ok(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rating::store::{AuthRequest, CallRequest, StoreConfig};
    use sqlx::Connection;

    /// One card per call (a card carries one call at a time).
    fn card(conf: &str) -> String {
        format!("7000{}", &conf[1..])
    }

    fn call(conf: &str) -> CallRequest {
        CallRequest {
            auth: AuthRequest {
                account: card(conf),
                pin: Some("1234".into()),
                access_number: "5551200".into(),
                session_id: format!("s-{conf}"),
                ..AuthRequest::default()
            },
            destination: "5555233".into(),
            conf_id: conf.into(),
            whole_credit: false,
            rate_deck: None,
        }
    }

    fn ended() -> CallEnd {
        CallEnd {
            connect_at: None,
            disconnect_at: Utc::now(),
            cause: "test".into(),
            voice_quality: None,
            gateway: String::new(),
        }
    }

    /// The failure the issue saw under load, made on purpose with real parts: another writer
    /// holds the SQLite file for a second, the store's only connection waits on it, and a
    /// second settlement times out in the pool. Tried once it is lost (the hold stays on the
    /// card); through `persist` it lands as soon as the database is free, exactly once.
    /// Group commit is off: its writer waits for the lock rather than the pool, so the pool's
    /// timeout is what this test makes happen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_settlement_the_pool_timed_out_on_is_retried_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        // The cards and their holds are made through an everyday store: on a busy machine the
        // seeding alone can outwait the strict pool's 200 ms.
        let setup = Store::open(&url, StoreConfig::default()).await.unwrap();
        rating::demo::seed(&setup, Utc::now()).await.unwrap();
        for conf in ["c1", "c2", "c3"] {
            let money = rating::Money::from_micros(5_000_000);
            let new = rating::store::NewAccount::new(&card(conf), Some("1234"), money);
            setup.create_account(&new, Utc::now()).await.unwrap();
            let a = setup.authorize_call(&call(conf), Utc::now()).await;
            assert!(a.reservation.is_some(), "{conf}: {:?}", a.code);
        }
        setup.close().await;
        let store = Arc::new(
            Store::open(
                &url,
                StoreConfig {
                    max_connections: 1,
                    acquire_timeout: Duration::from_millis(200),
                    group_commit: false,
                    ..StoreConfig::default()
                },
            )
            .await
            .unwrap(),
        );
        let mut other = sqlx::SqliteConnection::connect(&format!("{url}?mode=rw"))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .unwrap();
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.settle("c1", &ended(), Utc::now()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Without retrying: the pool's timeout, a transient failure.
        let once = store.settle("c2", &ended(), Utc::now()).await;
        assert!(
            once.as_ref().is_err_and(StoreError::is_transient),
            "{once:?}"
        );
        let tries = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let retried = tokio::spawn({
            let (store, tries) = (store.clone(), tries.clone());
            persist(Duration::from_secs(20), "settling", move || {
                tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let store = store.clone();
                async move { store.settle("c3", &ended(), Utc::now()).await }
            })
        });
        tokio::time::sleep(Duration::from_millis(1000)).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        assert!(first.await.unwrap().is_ok());
        let s = retried
            .await
            .unwrap()
            .expect("landed after the database was free");
        assert!(!s.already_settled);
        assert!(tries.load(std::sync::atomic::Ordering::Relaxed) > 1);
        // c2 is the one a node that does not retry leaves to the sweeper.
        assert_eq!(store.account(&card("c2")).await.unwrap().active_calls, 1);
        store.settle("c2", &ended(), Utc::now()).await.unwrap();
        for conf in ["c1", "c2", "c3"] {
            let c = store.account(&card(conf)).await.unwrap();
            assert_eq!(
                (c.active_calls, c.reserved),
                (0, rating::Money::ZERO),
                "{conf}"
            );
        }
        assert!(store.ledger_check().await.unwrap().problems.is_empty());
        store.close().await;
    }

    #[tokio::test]
    async fn a_refusal_that_will_not_pass_is_not_retried() {
        let mut tries = 0;
        let r: Result<(), StoreError> = persist(Duration::from_secs(20), "settling", || {
            tries += 1;
            async { Err(StoreError::NoReservation("c9".into())) }
        })
        .await;
        assert!(matches!(r, Err(StoreError::NoReservation(_))));
        assert_eq!(tries, 1);
    }

    #[tokio::test]
    async fn retrying_stops_at_the_window() {
        let started = Instant::now();
        let mut tries = 0;
        let r: Result<(), StoreError> = persist(Duration::from_millis(300), "settling", || {
            tries += 1;
            async { Err(StoreError::Database(sqlx::Error::PoolTimedOut)) }
        })
        .await;
        assert!(r.is_err_and(|e| e.is_transient()));
        // 50 + 100 ms of pauses fit in the window; the next (200 ms) would not.
        assert_eq!(tries, 3);
        assert!(started.elapsed() < Duration::from_millis(300));
    }
}

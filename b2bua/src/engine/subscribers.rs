//! The registrar's shell: a REGISTER from a softphone subscriber is looked at first by the
//! I/O-free [`Registrar`](crate::registrar::Registrar) (challenges and refusals that need no
//! database are answered here, at once), and only a REGISTER with a good-looking answer to a
//! fresh nonce costs a store task: the account, the bindings it changes, the 200 listing them.
//! The answer comes back to the engine on its own channel and leaves through the REGISTER's
//! server transaction.

use super::admit::{Admitted, Counted, Found};
use super::Engine;
use crate::registrar::{changes, ok, told, FirstLook, Registrar};
use crate::sip::message::{Request, Response};
use crate::sip::transaction::TxKey;
use crate::sync::Lock;
use crate::transport::Peer;
use chrono::Utc;
use rating::store::{CallSlot, RegisterRefusal, Registration, SipAccount, SipStatus, Store};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// What a registrar task found, for the engine to carry out.
pub(super) enum Reply {
    /// Send this on the request's transaction.
    Respond(TxKey, Response),
    /// A subscriber's INVITE with the right credentials, counted among its account's calls
    /// at once: place the call.
    Call {
        key: TxKey,
        req: Box<Request>,
        from: Peer,
        account: Box<SipAccount>,
        counted: CallSlot,
    },
    /// A call to a subscriber's DID, with the account and bindings it rings.
    Ring {
        key: TxKey,
        req: Box<Request>,
        from: Peer,
        admitted: Box<Admitted>,
        found: Result<Box<Found>, String>,
    },
}

/// The registrar, when subscribers are configured, and where its tasks answer.
pub(super) struct Subscribers {
    pub(super) registrar: Arc<Mutex<Registrar>>,
    pub(super) replies: mpsc::Sender<Reply>,
}

/// What a store task needs of a subscriber's request the registrar could not answer at once.
struct Lookup {
    registrar: Arc<Mutex<Registrar>>,
    replies: mpsc::Sender<Reply>,
    tag: String,
    username: String,
    domain: String,
    answer: crate::sip::digest_server::Answer,
}

impl Engine {
    /// The registrar's first look at a subscriber's REGISTER or INVITE: answered here and now
    /// (`None`), or the account to read.
    fn first_look(&mut self, req: &Request, key: &TxKey, now: Instant) -> Option<Lookup> {
        let subs = self.subscribers.as_ref()?;
        let registrar = subs.registrar.clone();
        let replies = subs.replies.clone();
        let tag = crate::sip::message::new_tag();
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let look = registrar.locked().first_look(req, now_ms, &tag);
        match look {
            FirstLook::Answer(r) => {
                self.respond(key, r, now);
                None
            }
            FirstLook::Lookup {
                username,
                domain,
                answer,
            } => Some(Lookup {
                registrar,
                replies,
                tag,
                username,
                domain,
                answer,
            }),
        }
    }

    /// A REGISTER: for our registrar when subscribers are configured, else not a method we
    /// take.
    pub(super) fn on_register(&mut self, req: Request, from: Peer, key: TxKey, now: Instant) {
        if self.subscribers.is_none() {
            return self.reply(&key, 405, None, now);
        }
        let Some(Lookup {
            registrar,
            replies,
            tag,
            username,
            domain,
            answer,
        }) = self.first_look(&req, &key, now)
        else {
            return;
        };
        let store = self.store.clone();
        let node = store.config().node_id.clone();
        let source = crate::registrar::source_of(&from);
        let udp = (from.proto == crate::routing::Proto::Udp).then_some(from.addr);
        let trusted = self.cfg.trusted(from.addr.ip());
        let work = async move {
            let at = Source {
                text: &source,
                udp,
                trusted,
            };
            let resp = match register(
                &store, &registrar, &req, &username, &domain, &answer, at, &node, &tag,
            )
            .await
            {
                Ok(r) | Err(r) => r,
            };
            let _ = replies.send(Reply::Respond(key, resp)).await;
        };
        self.tasks.spawn(work);
    }

    /// A registrar task's answer.
    pub(super) fn on_register_reply(&mut self, reply: Reply, now: Instant) {
        match reply {
            Reply::Respond(key, resp) => self.respond(&key, resp, now),
            Reply::Call {
                key,
                req,
                from,
                account,
                counted,
            } => self.subscriber_call(*req, from, key, *account, counted, now),
            Reply::Ring {
                key,
                req,
                from,
                admitted,
                found,
            } => self.subscriber_rung(*req, from, key, *admitted, found, now),
        }
    }

    /// A call to a DID that rings a subscriber: its account and bindings are read in a store
    /// task, and the call is placed when they come back.
    pub(super) fn ring_subscriber(
        &mut self,
        aor: String,
        admitted: Admitted,
        req: Request,
        from: Peer,
        key: TxKey,
        now: Instant,
    ) {
        let Some(subs) = self.subscribers.as_ref() else {
            let why = Some("no subscribers are served here");
            return self.reply_with(&key, 480, why, None, false, now);
        };
        let replies = subs.replies.clone();
        let store = self.store.clone();
        let work = async move {
            let found = account_and_bindings(&store, &aor)
                .await
                .map(Box::new)
                .map_err(|e| e.to_string());
            let reply = Reply::Ring {
                key,
                req: Box::new(req),
                from,
                admitted: Box::new(admitted),
                found,
            };
            let _ = replies.send(reply).await;
        };
        self.tasks.spawn(work);
    }

    /// Whether an INVITE is a subscriber's: subscribers are configured and its From is in
    /// one of our domains.
    pub(super) fn is_subscriber_call(&self, req: &Request) -> bool {
        self.subscribers.as_ref().is_some_and(|s| {
            s.registrar
                .locked()
                .serves(&crate::registrar::domain_of(req))
        })
    }

    /// A subscriber's INVITE: challenged (407) until its credentials come, then the account
    /// is read and checked in a store task, and a good one's call is placed.
    pub(super) fn subscriber_invite(&mut self, req: Request, from: Peer, key: TxKey, now: Instant) {
        // A node that cannot take the call says so before the account is read.
        if let Err(r) = self.check_capacity() {
            return self.refuse(&key, r, now);
        }
        let Some(Lookup {
            registrar,
            replies,
            tag,
            username,
            domain,
            answer,
        }) = self.first_look(&req, &key, now)
        else {
            return;
        };
        let store = self.store.clone();
        let work = async move {
            let now_ms = Utc::now().timestamp_millis().max(0) as u64;
            let reply = match store.sip_account(&username, &domain).await {
                Err(e) => Reply::Respond(key, store_unreachable(&req, 503, &tag, &e)),
                Ok(account) => {
                    let checked = registrar.locked().authorized(
                        &req,
                        &answer,
                        account.as_ref(),
                        now_ms,
                        &tag,
                    );
                    match (checked, account) {
                        (Err(r), _) => Reply::Respond(key, r),
                        (Ok(()), Some(account)) => match count_call(&store, &account).await {
                            Err(e) => Reply::Respond(key, store_unreachable(&req, 503, &tag, &e)),
                            Ok(None) => {
                                crate::metrics::get().limit_hit("subscriber_calls_at_once");
                                let why = Some("the account's calls at once are all in use");
                                Reply::Respond(key, told(&req, 486, why, &tag))
                            }
                            Ok(Some(counted)) => Reply::Call {
                                key,
                                req: Box::new(req),
                                from,
                                account: Box::new(account),
                                counted,
                            },
                        },
                        (Ok(()), None) => Reply::Respond(key, told(&req, 500, None, &tag)),
                    }
                }
            };
            let _ = replies.send(reply).await;
        };
        self.tasks.spawn(work);
    }
}

/// A SIP account (`user@domain`) and its bindings now; a call to an active one with a phone
/// registered is counted among its calls at once.
async fn account_and_bindings(store: &Store, aor: &str) -> Result<Found, rating::StoreError> {
    let (user, domain) = aor.split_once('@').unwrap_or((aor, ""));
    let Some(account) = store.sip_account(user, domain).await? else {
        return Ok(Found {
            account: None,
            bindings: Vec::new(),
            count: Counted::Unasked,
        });
    };
    let bindings = store.bindings(account.id, Utc::now()).await?;
    let count = if account.status != SipStatus::Active || bindings.is_empty() {
        Counted::Unasked
    } else {
        match count_call(store, &account).await? {
            Some(slot) => Counted::In(slot),
            None => Counted::Full,
        }
    };
    Ok(Found {
        account: Some(account),
        bindings,
        count,
    })
}

/// The answer to a subscriber's request when the store cannot be reached: `code` (500 to a
/// REGISTER, 503 to a call) with Retry-After, so the client tries again shortly.
fn store_unreachable(req: &Request, code: u16, tag: &str, e: &rating::StoreError) -> Response {
    tracing::warn!(error = %e, method = %req.method, "subscriber request: the store is unreachable");
    let mut r = told(req, code, Some("the subscriber store is unreachable"), tag);
    r.headers.push(super::admit::retry_after());
    r
}

/// Counts a new call of `account` among its calls at once, on every node; `None`: they are
/// all in use.
async fn count_call(
    store: &Store,
    account: &SipAccount,
) -> Result<Option<CallSlot>, rating::StoreError> {
    let slot = CallSlot {
        sip_account_id: account.id,
        key: uuid::Uuid::new_v4().simple().to_string(),
    };
    match store
        .claim_sip_call(&slot, account.max_calls, Utc::now())
        .await
    {
        Ok(counted) => Ok(counted.then_some(slot)),
        Err(e) => {
            // It may have been counted before the answer was lost: give the place back.
            let _ = store.release_sip_call(&slot).await;
            Err(e)
        }
    }
}

/// Where a REGISTER came from: as its bindings keep it, the address if it came over UDP, and
/// whether it is a peer we trust (an edge proxy, whose Path we keep).
#[derive(Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    udp: Option<std::net::SocketAddr>,
    trusted: bool,
}

/// The database half of a REGISTER: the account, its credentials, the bindings changed, the
/// 200. A store that cannot be reached is a 500 with Retry-After: the client tries again.
#[allow(clippy::too_many_arguments)]
async fn register(
    store: &Store,
    registrar: &Mutex<Registrar>,
    req: &Request,
    username: &str,
    domain: &str,
    answer: &crate::sip::digest_server::Answer,
    source: Source<'_>,
    node: &str,
    tag: &str,
) -> Result<Response, Response> {
    let unavailable = |e: rating::StoreError| store_unreachable(req, 500, tag, &e);
    let account = store
        .sip_account(username, domain)
        .await
        .map_err(unavailable)?;
    let now = Utc::now();
    let now_ms = now.timestamp_millis().max(0) as u64;
    let rules = {
        let mut reg = registrar.locked();
        reg.authorized(req, answer, account.as_ref(), now_ms, tag)?;
        reg.rules().clone()
    };
    let Some(account) = account else {
        return Err(told(req, 500, None, tag));
    };
    let path = crate::registrar::path(req, source.trusted, &rules, tag)?;
    // Through a proxy, where the REGISTER came from says nothing of the phone's NAT: keeping
    // the mapping open is the edge proxy's business.
    let udp = source.udp.filter(|_| path.is_empty());
    let change = changes(req, &rules, tag, udp)?;
    let registration = Registration {
        sip_account_id: account.id,
        change,
        source: source.text.to_string(),
        node: node.to_string(),
        call_id: crate::sip::message::SipExt::call_id(req).to_string(),
        cseq: crate::sip::message::SipExt::cseq(req)
            .map(|c| c.0)
            .unwrap_or(0) as i64,
        max_contacts: rules.max_contacts,
        path: path.clone(),
    };
    let current = match store.register(&registration, now).await {
        Err(e) => return Err(unavailable(e)),
        Ok(Ok(current)) => current,
        Ok(Err(RegisterRefusal::OutOfOrder)) => {
            return Err(told(req, 500, Some("REGISTER out of order"), tag))
        }
        Ok(Err(RegisterRefusal::TooManyContacts)) => {
            crate::metrics::get().limit_hit("subscriber_contacts");
            let why = format!(
                "at most {} registered contacts per account",
                rules.max_contacts
            );
            return Err(told(req, 403, Some(&why), tag));
        }
    };
    tracing::info!(aor = %account.aor(), bindings = current.len(), "registered");
    Ok(ok(req, &current, &path, now, tag))
}

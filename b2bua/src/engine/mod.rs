//! The engine: one task that owns every transaction and every call, fed by the transports and
//! by the store tasks it spawns, and woken by one timer queue.
//!
//! Nothing in here blocks: parsing happened in the transports, sending is non-blocking, and
//! every database call runs in its own task that posts its answer back as an [`Event`]. The
//! transactions ([`crate::sip::transaction`]) are pure state machines; this module routes their
//! outputs to sockets and to the call logic in [`call`].

mod accounting;
mod call;
mod ivr_call;

use crate::assets::Assets;
use crate::config::Config;
use crate::media::engine::{Media, MediaEvent};
use crate::routing::Proto;
use crate::sip::message::{response_to, Method, Request, Response, SipExt, SipMessage};
use crate::sip::transaction::{self, Output, Transaction, TxKey};
use crate::transport::{Inbound, Peer, Transports};
use call::Call;
use rating::store::{CallAnswer, Extension, Settlement, Store};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The methods we take, in every Allow we send.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// Answers from the store tasks.
#[derive(Debug)]
pub enum Event {
    /// Phase 2 authorization of a call finished.
    Authorized { call: u64, answer: Box<CallAnswer> },
    /// More talk time was (or was not) held for a running call.
    Extended {
        call: u64,
        result: Result<Extension, String>,
    },
    /// A call's money was settled.
    Settled {
        call: u64,
        result: Result<Settlement, String>,
    },
    /// An IVR call's bridge was settled; its flow goes on.
    BridgeSettled { call: u64, reason: ivr::BridgeEnd },
    /// An IVR call's authorization finished; phase 2 brings its hold.
    IvrAuth {
        call: u64,
        result: ivr::AuthResult,
        reservation: Option<rating::store::Reservation>,
        credit_time: u64,
    },
}

/// What a timer in the queue belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Server(TxKey),
    Client(TxKey),
    Call(u64),
}

/// Which side of a call a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The caller's leg.
    A,
    /// The gateway's leg.
    B,
}

/// What a client transaction was started for, so its responses reach the right handler.
#[derive(Debug, Clone)]
enum Purpose {
    /// The B-leg INVITE of a call.
    BInvite(u64),
    /// A BYE or CANCEL we send; its answer changes nothing.
    Fire,
    /// A request relayed from one leg to the other; the answer goes back on `origin`, with
    /// our answer to the originator's SDP offer when it carried one.
    Relay {
        call: u64,
        origin: TxKey,
        to: Side,
        offer: Option<crate::media::sdp::Audio>,
    },
}

struct ServerTx {
    tx: Transaction,
    peer: Peer,
}

struct ClientTx {
    tx: Transaction,
    peer: Peer,
    purpose: Purpose,
}

/// Counters for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Calls started (INVITEs accepted for processing).
    pub calls: u64,
    /// Calls answered end to end.
    pub answered: u64,
    /// Calls cut off because the money ran out.
    pub cutoffs: u64,
}

/// Our own addresses as they appear in Via and Contact.
struct Local {
    udp: Option<String>,
    tcp: Option<String>,
}

impl Local {
    fn hostport(&self, proto: Proto) -> &str {
        match proto {
            Proto::Udp => self
                .udp
                .as_deref()
                .or(self.tcp.as_deref())
                .unwrap_or("127.0.0.1"),
            Proto::Tcp => self
                .tcp
                .as_deref()
                .or(self.udp.as_deref())
                .unwrap_or("127.0.0.1"),
        }
    }

    fn via(&self, proto: Proto) -> String {
        format!("SIP/2.0/{proto} {}", self.hostport(proto))
    }

    fn contact(&self, proto: Proto) -> String {
        match proto {
            Proto::Udp => format!("<sip:b2bua@{}>", self.hostport(proto)),
            Proto::Tcp => format!("<sip:b2bua@{};transport=tcp>", self.hostport(proto)),
        }
    }
}

/// The engine's state; see the module documentation.
pub struct Engine {
    cfg: Arc<Config>,
    store: Arc<Store>,
    transports: Transports,
    media: Media,
    /// Prompt sets and flows; each call takes its own from the snapshot current at its start.
    assets: Arc<Assets>,
    events: mpsc::Sender<Event>,
    local: Local,
    server: HashMap<TxKey, ServerTx>,
    client: HashMap<TxKey, ClientTx>,
    calls: HashMap<u64, Call>,
    /// Call-ID → call and side, for in-dialog requests and the 2xx ACK.
    dialogs: HashMap<String, (u64, Side)>,
    wakeups: BinaryHeap<Reverse<(Instant, Wake)>>,
    /// Each gateway's channels in use; a B-leg holds one as a token.
    channels: crate::call::Channels,
    next_call: u64,
    stats: Stats,
    stopping: bool,
    /// Accounting records being written to the outbox; a stop waits for them.
    accounting_writes: Arc<std::sync::atomic::AtomicUsize>,
    /// Per-source request rates, checked before a request makes any state.
    flood: crate::limits::FloodGate,
    /// Wrong cards and PINs per source and per access number, this minute.
    auth_failures: crate::limits::FailureWindows,
}

/// A running engine: its bound addresses and the handle that stops it.
pub struct Running {
    /// The prompt sets and flows calls use, for the admin API to swap.
    pub assets: Arc<Assets>,
    /// Every bound socket.
    pub bound: Vec<(Proto, SocketAddr)>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Stats>,
}

impl Running {
    /// The first bound address of a transport.
    pub fn addr(&self, proto: Proto) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(p, _)| *p == proto)
            .map(|(_, a)| *a)
    }

    /// Ends every call (BYE to both legs, settled), then stops.
    pub async fn stop(mut self) -> Stats {
        crate::supervise::stopping();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap_or_default()
    }
}

/// Binds the configured sockets and starts the engine.
pub async fn start(cfg: Config, store: Arc<Store>) -> std::io::Result<Running> {
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(16_384);
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(16_384);
    // Prompts and flows first: a flow that does not load stops the start, with every error.
    let assets = Arc::new(Assets::load(&cfg).map_err(|e| std::io::Error::other(e.to_string()))?);
    // The database's access numbers too, so none is answered 404 before the first refresh.
    assets
        .refresh_access(&store)
        .await
        .map_err(|e| std::io::Error::other(format!("reading the access numbers: {e}")))?;
    let (transports, addrs) = Transports::bind(&cfg.listen, &cfg.limits, in_tx).await?;
    let (media, media_rx) = Media::start(cfg.media.clone());
    let bound: Vec<(Proto, SocketAddr)> = cfg.listen.iter().map(|l| l.proto).zip(addrs).collect();
    let host_of = |p: Proto| {
        cfg.advertise.clone().or_else(|| {
            bound
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, a)| a.to_string())
        })
    };
    let local = Local {
        udp: host_of(Proto::Udp),
        tcp: host_of(Proto::Tcp),
    };
    let cfg_channels: Vec<u32> = cfg.router.gateways.iter().map(|g| g.channels).collect();
    let flood = crate::limits::FloodGate::new(&cfg.limits, Instant::now());
    let failure_keys = cfg.limits.flood_sources;
    let engine = Engine {
        cfg: Arc::new(cfg),
        store,
        transports,
        media,
        assets: assets.clone(),
        events: ev_tx,
        local,
        server: HashMap::new(),
        client: HashMap::new(),
        calls: HashMap::new(),
        dialogs: HashMap::new(),
        wakeups: BinaryHeap::new(),
        channels: crate::call::Channels::new(cfg_channels),
        next_call: 1,
        stats: Stats::default(),
        stopping: false,
        accounting_writes: Arc::default(),
        flood,
        auth_failures: crate::limits::FailureWindows::new(failure_keys),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = crate::supervise::spawn("engine", engine.run(in_rx, ev_rx, media_rx, stop_rx));
    Ok(Running {
        assets,
        bound,
        stop: Some(stop_tx),
        task,
    })
}

impl Engine {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut events: mpsc::Receiver<Event>,
        mut media: mpsc::UnboundedReceiver<(u64, MediaEvent)>,
        mut stop: oneshot::Receiver<()>,
    ) -> Stats {
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        let mut stop_deadline: Option<Instant> = None;
        loop {
            let wake = self
                .wakeups
                .peek()
                .map(|Reverse((at, _))| tokio::time::Instant::from_std(*at))
                .unwrap_or(far);
            tokio::select! {
                biased;
                _ = &mut stop, if !self.stopping => {
                    self.stopping = true;
                    self.end_all(Instant::now());
                    stop_deadline = Some(Instant::now() + std::time::Duration::from_secs(3));
                }
                Some(ev) = events.recv() => self.on_event(ev, Instant::now()),
                Some((call, ev)) = media.recv() => {
                    let _in_call = self.span(call).entered();
                    self.on_media(call, ev, Instant::now())
                }
                Some(m) = inbound.recv() => self.on_sip(m.msg, m.from, Instant::now()),
                _ = tokio::time::sleep_until(wake) => self.on_timers(Instant::now()),
            }
            crate::metrics::get()
                .calls_active
                .set(self.calls.len() as i64);
            let idle = self.calls.is_empty()
                && self
                    .accounting_writes
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 0;
            if self.stopping && (idle || stop_deadline.is_some_and(|d| Instant::now() >= d)) {
                return self.stats;
            }
        }
    }

    fn schedule(&mut self, at: Option<Instant>, what: Wake) {
        if let Some(at) = at {
            self.wakeups.push(Reverse((at, what)));
        }
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.wakeups.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, what)) = self.wakeups.pop().expect("peeked");
            match what {
                Wake::Server(k) => {
                    let Some(s) = self.server.get_mut(&k) else {
                        continue;
                    };
                    if s.tx.next_wake().is_some_and(|w| w <= now) {
                        let out = s.tx.on_timer(now);
                        self.server_outputs(&k, out, now);
                    }
                }
                Wake::Client(k) => {
                    let Some(c) = self.client.get_mut(&k) else {
                        continue;
                    };
                    if c.tx.next_wake().is_some_and(|w| w <= now) {
                        let out = c.tx.on_timer(now);
                        self.client_outputs(&k, out, now);
                    }
                }
                Wake::Call(id) => {
                    let _in_call = self.span(id).entered();
                    self.call_timers(id, now)
                }
            }
        }
    }

    fn on_sip(&mut self, msg: SipMessage, from: Peer, now: Instant) {
        let Some(key) = transaction::key(&msg) else {
            // The parser insists on Via and CSeq, so only a Via without a branch lands here.
            tracing::debug!("message without branch or CSeq dropped");
            return;
        };
        match msg {
            SipMessage::Response(resp) => {
                let Some(c) = self.client.get_mut(&key) else {
                    // A 2xx retransmitted after its transaction ended: ACK it again if we know
                    // the dialog; anything else is stray.
                    self.stray_response(resp, from, now);
                    return;
                };
                let out = c.tx.on_response(resp, now);
                self.client_outputs(&key, out, now);
            }
            SipMessage::Request(req) => {
                if let Some(s) = self.server.get_mut(&key) {
                    let out = s.tx.on_request(&req, now);
                    self.server_outputs(&key, out, now);
                    return;
                }
                if self.admit(&req, from, now) {
                    self.new_request(req, from, key, now);
                }
            }
        }
    }

    /// Flood control and the transaction cap, before a request makes any state. A request
    /// refused here is answered 503 with Retry-After, statelessly, when that cannot amplify a
    /// flood (a trusted peer, or the table being full), and otherwise not at all.
    fn admit(&mut self, req: &Request, from: Peer, now: Instant) -> bool {
        let trusted = self.cfg.trusted(from.addr.ip());
        let invite = req.method == Method::Invite && req.to_tag().is_none();
        let verdict = self
            .flood
            .admit(&self.cfg.limits, from.addr.ip(), trusted, invite, now);
        let answer = match verdict {
            crate::limits::Verdict::Over => trusted,
            // An ACK makes no transaction: it is never refused for the table being full.
            crate::limits::Verdict::Pass
                if req.method != Method::Ack
                    && self.server.len() + self.client.len() >= self.cfg.limits.transactions =>
            {
                crate::metrics::get().limit_hit("transactions");
                true
            }
            crate::limits::Verdict::Pass => return true,
        };
        if answer && req.method != Method::Ack {
            let mut resp = response_to(req, 503, Some(&crate::sip::message::new_tag()));
            resp.headers
                .push(crate::sip::message::hdr("Retry-After", "1"));
            self.transports
                .send(&from, crate::sip::message::response_bytes(&resp));
        }
        false
    }

    /// Starts a server transaction (except for ACK, which has none) and hands the request to
    /// the call logic.
    fn new_request(&mut self, req: Request, from: Peer, key: TxKey, now: Instant) {
        if req.method == Method::Ack {
            self.on_ack(&req, from);
            return;
        }
        let reliable = from.proto == Proto::Tcp;
        let (mut tx, out) = Transaction::server(req.clone(), reliable, self.cfg.timers, now);
        if !self.cfg.trusted(from.addr.ip()) {
            // Its source address may be forged: answer, but do not echo at it.
            tx.quiet();
        }
        self.server.insert(key.clone(), ServerTx { tx, peer: from });
        self.server_outputs(&key, out, now);
        self.dispatch_request(req, from, key, now);
    }

    /// Answers a server transaction.
    fn respond(&mut self, key: &TxKey, resp: Response, now: Instant) {
        let Some(s) = self.server.get_mut(key) else {
            return;
        };
        let out = s.tx.respond(&resp, now);
        self.server_outputs(key, out, now);
    }

    /// Answers a server transaction with a bare status, optionally explaining it in Warning.
    fn reply(&mut self, key: &TxKey, code: u16, warning: Option<&str>, now: Instant) {
        let Some(s) = self.server.get(key) else {
            return;
        };
        let mut resp = response_to(s.tx.request(), code, Some(&crate::sip::message::new_tag()));
        if let Some(w) = warning {
            resp.headers.push(crate::sip::message::hdr(
                "Warning",
                format!("399 b2bua \"{}\"", w.replace('"', "'")),
            ));
        }
        if code == 405 || code == 501 || (code == 200 && s.tx.request().method == Method::Options) {
            resp.headers.push(crate::sip::message::hdr("Allow", ALLOW));
        }
        self.respond(key, resp, now);
    }

    /// Answers with `code` and Retry-After: come back in a moment (we are full).
    fn reply_retry_after(&mut self, key: &TxKey, code: u16, now: Instant) {
        let Some(s) = self.server.get(key) else {
            return;
        };
        let mut resp = response_to(s.tx.request(), code, Some(&crate::sip::message::new_tag()));
        resp.headers
            .push(crate::sip::message::hdr("Retry-After", "5"));
        self.respond(key, resp, now);
    }

    fn server_outputs(&mut self, key: &TxKey, out: Vec<Output>, now: Instant) {
        let Some(peer) = self.server.get(key).map(|s| s.peer) else {
            return;
        };
        for o in out {
            match o {
                Output::Send(b) => self.transports.send(&peer, b),
                Output::No2xxAck => self.no_ack(key, now),
                Output::NoAck | Output::Timeout | Output::Response(_) => {}
                Output::Terminated => {
                    self.server.remove(key);
                    return;
                }
            }
        }
        let wake = self.server.get(key).and_then(|s| s.tx.next_wake());
        self.schedule(wake, Wake::Server(key.clone()));
    }

    /// Starts a client transaction to `peer`.
    fn send_request(
        &mut self,
        req: Request,
        peer: Peer,
        purpose: Purpose,
        now: Instant,
    ) -> Option<TxKey> {
        let key = transaction::key(&SipMessage::Request(req.clone()))?;
        let (tx, out) = Transaction::client(req, peer.proto == Proto::Tcp, self.cfg.timers, now);
        self.client
            .insert(key.clone(), ClientTx { tx, peer, purpose });
        self.client_outputs(&key, out, now);
        Some(key)
    }

    /// Sends a request that has no transaction (the ACK of a 2xx).
    fn send_stateless(&self, req: &Request, peer: &Peer) {
        self.transports
            .send(peer, crate::sip::message::request_bytes(req));
    }

    fn client_outputs(&mut self, key: &TxKey, out: Vec<Output>, now: Instant) {
        let Some((peer, purpose)) = self.client.get(key).map(|c| (c.peer, c.purpose.clone()))
        else {
            return;
        };
        let _in_call = match &purpose {
            Purpose::BInvite(id) | Purpose::Relay { call: id, .. } => self.span(*id).entered(),
            Purpose::Fire => tracing::Span::none().entered(),
        };
        let mut terminated = false;
        for o in out {
            match o {
                Output::Send(b) => self.transports.send(&peer, b),
                Output::Response(r) => self.client_response(&purpose, key, r, now),
                Output::Timeout => self.client_timeout(&purpose, key, now),
                Output::NoAck | Output::No2xxAck => {}
                Output::Terminated => terminated = true,
            }
        }
        if terminated {
            self.client.remove(key);
            return;
        }
        let wake = self.client.get(key).and_then(|c| c.tx.next_wake());
        self.schedule(wake, Wake::Client(key.clone()));
    }

    /// Forgets a client transaction without waiting for it (a gateway that never answered).
    fn abandon(&mut self, key: &TxKey) {
        self.client.remove(key);
    }

    /// A response no transaction wants. A 2xx to an INVITE is acknowledged again if its dialog
    /// is one of our calls (a retransmission), and otherwise acknowledged and hung up, so a
    /// gateway that answers after we gave up on it is not left holding a call.
    fn stray_response(&mut self, resp: Response, from: Peer, now: Instant) {
        let code = resp.status_code.code();
        if !(200..300).contains(&code) || resp.cseq().is_none_or(|(_, m)| m != Method::Invite) {
            return;
        }
        if let Some((id, side)) = self.dialogs.get(resp.call_id()).copied() {
            self.reack(id, side, &resp);
            return;
        }
        // Only a gateway could have been sent an INVITE by us; anyone else's "2xx" is a probe
        // or a reflection, and an ACK and a BYE back would do its work for it.
        let from_gateway = self
            .cfg
            .router
            .gateways
            .iter()
            .any(|g| g.addr.ip() == from.addr.ip());
        if from_gateway {
            self.hang_up_stray(&resp, from, now);
        } else {
            crate::metrics::get().limit_hit("stray_2xx");
        }
    }

    /// The span of a call's log lines: its bridge's while an IVR call has one up (none once
    /// the call is gone).
    fn span(&self, id: u64) -> tracing::Span {
        self.calls
            .get(&id)
            .map(|c| c.bridge_span.as_ref().unwrap_or(&c.span).clone())
            .unwrap_or_else(tracing::Span::none)
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        let id = match &ev {
            Event::Authorized { call, .. }
            | Event::Extended { call, .. }
            | Event::BridgeSettled { call, .. }
            | Event::IvrAuth { call, .. }
            | Event::Settled { call, .. } => *call,
        };
        let _in_call = self.span(id).entered();
        match ev {
            Event::Authorized { call, answer } => {
                crate::metrics::get().authorized("sip", answer.code.code());
                self.authorized(call, *answer, now)
            }
            Event::Extended { call, result } => self.extended(call, result, now),
            Event::BridgeSettled { call, reason } => {
                self.ivr_feed(call, ivr::Event::BridgeEnded(reason), now)
            }
            Event::IvrAuth {
                call,
                result,
                reservation,
                credit_time,
            } => {
                crate::metrics::get().authorized("sip", result.code);
                self.ivr_auth(call, result, reservation, credit_time, now)
            }
            Event::Settled { call, result } => {
                if let Err(e) = result {
                    tracing::error!(call, error = %e, "settlement failed; the sweeper will settle it");
                }
                self.forget(call);
            }
        }
    }

    /// Spawns a store operation; its answer, if the engine needs one, comes back as an event.
    fn spawn_store<F, Fut>(&self, f: F)
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
        tokio::spawn(tracing::Instrument::instrument(
            work,
            tracing::Span::current(),
        ));
    }
}

//! The engine: the shell around the calls. One task owns every transaction and every
//! [`Call`](crate::call::Call), fed by the transports, the media and the store tasks it
//! spawns, and woken by one timer queue.
//!
//! Nothing in here decides anything about a call: the transactions
//! ([`crate::sip::transaction`]) and the calls ([`crate::call`]) are pure state machines, and
//! this module only routes messages to them by transaction key and Call-ID (`mod.rs`), admits
//! new calls (`admit.rs`), and carries out what they answer (`carry.rs`). Nothing in here
//! blocks: parsing happened in the transports, sending is non-blocking, and every database
//! call runs in a task of its own, kept in one set that a stop waits for.

mod admit;
pub mod board;
mod carry;
mod challenge;
mod health;
mod register;
mod subscribers;

use crate::assets::Assets;
use crate::call::{self, Channels, Env, Input, RandomIds, Settings, Side};
use crate::config::Config;
use crate::media::engine::{Media, MediaEvent, Quality, Session};
use crate::routing::Proto;
use crate::sip::message::{response_to, Method, Request, Response, SipExt, SipMessage};
use crate::sip::transaction::{self, Output, Transaction, TxKey};
use crate::transport::{Inbound, Peer, Transports};
use rating::store::Store;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

pub use crate::call::Stats;
pub use crate::sip::message::ALLOW;

/// A store task's answer for a call.
#[derive(Debug)]
pub struct Event {
    /// The call that asked.
    pub call: u64,
    /// What the store said.
    pub answer: call::Answer,
}

/// What a timer in the queue belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Server(TxKey),
    Client(TxKey),
    Call(u64),
    /// Time to ping gateway `i` (its index in the router's list).
    Ping(usize),
    /// Time for gateway `i`'s REGISTER.
    Register(usize),
    /// Time to copy the gateways' state out for the admin API.
    Board,
}

/// A transaction in one of the two tables: where its peer is (whence a server transaction's
/// requests came, whither a client transaction's go) and the call it belongs to (none for a
/// request outside any call, or a stray's BYE).
struct TxEntry {
    tx: Transaction,
    peer: Peer,
    call: Option<u64>,
    /// Counted among the lingering (see [`Lingering`]).
    lingering: bool,
}

/// Which table a transaction is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Server,
    Client,
}

/// Transactions that only wait out a timer to absorb retransmissions (RFC 3261's J, K, D,
/// RFC 6026's L and M: 32 s on UDP). Every call leaves three or four of them, so at a
/// thousand calls a second they outnumber the live ones a hundredfold. They do not count
/// against `limits.transactions` (which guards the work in progress); they have their own cap,
/// `limits.lingering_transactions`, past which the oldest is forgotten early. That costs only
/// the absorbing of a late retransmission, and never turns a new call away.
#[derive(Default)]
struct Lingering {
    count: usize,
    /// In the order they began to linger; entries of transactions since gone are skipped.
    order: std::collections::VecDeque<(Table, TxKey)>,
}

/// A call and its RTP session (sockets live here, in the shell, not in the call).
struct Slot {
    call: call::Call,
    media: Option<Session>,
    /// A subscriber's call: its place among the account's calls at once (on every node),
    /// given back when it ends.
    counted: Option<rating::store::CallSlot>,
}

/// The node's parts a call borrows while it handles one input (see [`call::Env`]).
struct Lent {
    /// Each gateway's channels in use; a B-leg holds one as a token.
    channels: Channels,
    ids: RandomIds,
    stats: Stats,
    stopping: bool,
}

impl Lent {
    fn env<'a>(&'a mut self, now: Instant, quality: &'a dyn Fn() -> Option<Quality>) -> Env<'a> {
        Env {
            now,
            channels: &mut self.channels,
            ids: &mut self.ids,
            stats: &mut self.stats,
            stopping: self.stopping,
            quality,
        }
    }
}

/// The engine's state; see the module documentation.
pub struct Engine {
    cfg: Arc<Config>,
    settings: Arc<Settings>,
    store: Arc<Store>,
    transports: Transports,
    media: Media,
    /// Prompt sets and flows; each call takes its own from the snapshot current at its start.
    assets: Arc<Assets>,
    events: mpsc::Sender<Event>,
    server: HashMap<TxKey, TxEntry>,
    client: HashMap<TxKey, TxEntry>,
    lingering: Lingering,
    calls: HashMap<u64, Slot>,
    /// Call-ID → call and side, for in-dialog requests and the 2xx ACK.
    dialogs: HashMap<String, (u64, Side)>,
    wakeups: BinaryHeap<Reverse<(Instant, Wake)>>,
    /// What every call borrows while it handles an input.
    lent: Lent,
    next_call: u64,
    /// Every store task (settlements, accounting records …); a stop waits for them.
    tasks: tokio::task::JoinSet<()>,
    /// Gateway health pings in flight, and how many each gateway missed in a row.
    pings: health::Pings,
    /// Registrations with the trunks that need them.
    registrations: register::Registrations,
    /// Where the gateways' state is copied for the admin API.
    board: Arc<board::GatewayBoard>,
    /// Per-source request rates, checked before a request makes any state.
    flood: crate::limits::FloodGate,
    /// Wrong cards and PINs per source and per access number, this minute.
    auth_failures: crate::limits::FailureWindows,
    /// The subscribers' registrar, when configured.
    subscribers: Option<subscribers::Subscribers>,
}

/// A running engine: its bound addresses and the handle that stops it.
pub struct Running {
    /// The prompt sets and flows calls use, for the admin API to swap.
    pub assets: Arc<Assets>,
    /// The gateways' channels, pings and registrations, for the admin API to show.
    pub gateways: Arc<board::GatewayBoard>,
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
    let (reg_tx, reg_rx) = mpsc::channel::<subscribers::Reply>(4_096);
    // Prompts and flows first: a flow that does not load stops the start, with every error.
    let assets = Arc::new(Assets::load(&cfg).map_err(|e| std::io::Error::other(e.to_string()))?);
    // The database's access numbers too, so none is answered 404 before the first refresh.
    assets
        .refresh_access(&store)
        .await
        .map_err(|e| std::io::Error::other(format!("reading the access numbers: {e}")))?;
    let tls = crate::transport::TlsSetup {
        server: cfg.tls_server.clone(),
        peers: cfg
            .router
            .gateways
            .iter()
            .filter_map(|g| Some((g.addr, g.tls.clone()?)))
            .collect(),
    };
    let (transports, addrs) = Transports::bind(&cfg.listen, tls, &cfg.limits, in_tx).await?;
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
    let local = call::Local {
        udp: host_of(Proto::Udp),
        tcp: host_of(Proto::Tcp),
        tls: host_of(Proto::Tls),
    };
    let gw_id = cfg.radius_accounting.as_ref().map(|a| {
        a.gw_id
            .clone()
            .unwrap_or_else(|| store.config().node_id.clone())
    });
    let cfg_channels: Vec<u32> = cfg.router.gateways.iter().map(|g| g.channels).collect();
    let flood = crate::limits::FloodGate::new(&cfg.limits, Instant::now());
    let failure_keys = cfg.limits.flood_sources;
    let cfg = Arc::new(cfg);
    let mut engine = Engine {
        settings: Arc::new(Settings {
            cfg: cfg.clone(),
            local,
            gw_id,
        }),
        cfg,
        store,
        transports,
        media,
        assets: assets.clone(),
        events: ev_tx,
        server: HashMap::new(),
        client: HashMap::new(),
        lingering: Lingering::default(),
        calls: HashMap::new(),
        dialogs: HashMap::new(),
        wakeups: BinaryHeap::new(),
        lent: Lent {
            channels: Channels::new(cfg_channels),
            ids: RandomIds,
            stats: Stats::default(),
            stopping: false,
        },
        next_call: 1,
        tasks: tokio::task::JoinSet::new(),
        pings: Default::default(),
        registrations: Default::default(),
        board: Default::default(),
        flood,
        auth_failures: crate::limits::FailureWindows::new(failure_keys),
        subscribers: None,
    };
    engine.subscribers = engine
        .cfg
        .subscribers
        .clone()
        .map(|s| subscribers::Subscribers {
            registrar: Arc::new(std::sync::Mutex::new(crate::registrar::Registrar::new(s))),
            replies: reg_tx,
        });
    let (stop_tx, stop_rx) = oneshot::channel();
    engine.start_pings(Instant::now());
    engine.start_registrations(Instant::now());
    let gateways = engine.board.clone();
    engine.post_board(&gateways.clone(), Instant::now());
    let task = crate::supervise::spawn(
        "engine",
        engine.run(in_rx, ev_rx, reg_rx, media_rx, stop_rx),
    );
    Ok(Running {
        assets,
        gateways,
        bound,
        stop: Some(stop_tx),
        task,
    })
}

/// A stop in progress: calls get a few seconds to hang up, their money as long as the store
/// needs to take it (up to the retry window), so no card is left holding a hold.
struct Stop {
    calls_until: Instant,
    store_until: Instant,
}

impl Stop {
    fn new(now: Instant, store_retry: std::time::Duration) -> Stop {
        Stop {
            calls_until: now + std::time::Duration::from_secs(3),
            store_until: now + store_retry + std::time::Duration::from_secs(1),
        }
    }

    /// When to look again even if nothing happens: the next deadline not yet passed.
    fn next_deadline(&self, now: Instant) -> Instant {
        if now < self.calls_until {
            self.calls_until
        } else {
            self.store_until
        }
    }

    /// Whether the engine may return: every call gone (or out of time) and every store
    /// write finished (or out of time, said in the log).
    fn done(&self, now: Instant, calls: usize, store_tasks: usize) -> bool {
        let calls_done = calls == 0 || now >= self.calls_until;
        let store_done = store_tasks == 0 || now >= self.store_until;
        if calls_done && store_done && store_tasks > 0 {
            tracing::error!(
                store_tasks,
                "stopping with store writes unfinished; the sweeper will settle their holds"
            );
        }
        calls_done && store_done
    }
}

impl Engine {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut events: mpsc::Receiver<Event>,
        mut registrations: mpsc::Receiver<subscribers::Reply>,
        mut media: mpsc::UnboundedReceiver<(u64, MediaEvent)>,
        mut stop_rx: oneshot::Receiver<()>,
    ) -> Stats {
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        let mut stop: Option<Stop> = None;
        loop {
            let wake = self
                .wakeups
                .peek()
                .map(|Reverse((at, _))| *at)
                .unwrap_or(far)
                .min(
                    stop.as_ref()
                        .map_or(far, |s| s.next_deadline(Instant::now())),
                );
            tokio::select! {
                biased;
                _ = &mut stop_rx, if stop.is_none() => {
                    self.lent.stopping = true;
                    self.end_all(Instant::now());
                    self.unregister_all(Instant::now());
                    stop = Some(Stop::new(Instant::now(), self.cfg.calls.store_retry));
                }
                Some(ev) = events.recv() => self.on_event(ev, Instant::now()),
                Some(r) = registrations.recv() => self.on_register_reply(r, Instant::now()),
                Some((call, ev)) = media.recv() => self.feed(call, Input::Media(ev), Instant::now()),
                Some(m) = inbound.recv() => self.on_sip(m.msg, m.from, Instant::now()),
                // While running, finished store tasks are reaped below without waking the loop
                // (each already woke it with its answer); only shutdown waits on them.
                Some(_) = self.tasks.join_next(), if stop.is_some() && !self.tasks.is_empty() => {}
                _ = tokio::time::sleep_until(wake.into()) => self.on_timers(Instant::now()),
            }
            while self.tasks.try_join_next().is_some() {}
            crate::metrics::get()
                .calls_active
                .set(self.calls.len() as i64);
            if let Some(s) = &stop {
                if s.done(Instant::now(), self.calls.len(), self.tasks.len()) {
                    return self.lent.stats;
                }
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
                Wake::Call(id) => self.feed(id, Input::Timer, now),
                Wake::Ping(i) => self.ping(i, now),
                Wake::Register(i) => self.register(i, now),
                Wake::Board => {
                    let board = self.board.clone();
                    self.post_board(&board, now);
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
                    && self.server.len() + self.client.len() - self.lingering.count
                        >= self.cfg.limits.transactions =>
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

    /// Starts a server transaction (except for ACK, which has none) and routes the request:
    /// a new call, a CANCEL, or a request inside a call's dialog.
    fn new_request(&mut self, req: Request, from: Peer, key: TxKey, now: Instant) {
        if req.method == Method::Ack {
            return self.on_ack(req, from, now);
        }
        let reliable = from.proto.reliable();
        let (mut tx, out) = Transaction::server(req.clone(), reliable, self.cfg.timers, now);
        if !self.cfg.trusted(from.addr.ip()) {
            // Its source address may be forged: answer, but do not echo at it.
            tx.quiet();
        }
        let server = TxEntry {
            tx,
            peer: from,
            call: None,
            lingering: false,
        };
        self.server.insert(key.clone(), server);
        self.server_outputs(&key, out, now);
        let in_dialog = req.to_tag().is_some();
        match req.method {
            Method::Invite if !in_dialog => self.new_call(req, from, key, now),
            Method::Cancel => self.on_cancel(&req, &key, now),
            Method::Options if !in_dialog => self.reply(&key, 200, None, now),
            _ if in_dialog => self.in_dialog(req, key, now),
            Method::Bye | Method::Info | Method::Update | Method::PRack => {
                self.reply(&key, 481, None, now)
            }
            Method::Register if !in_dialog => self.on_register(req, from, key, now),
            Method::Register
            | Method::Subscribe
            | Method::Notify
            | Method::Publish
            | Method::Message
            | Method::Refer => self.reply(&key, 405, None, now),
            _ => self.reply(&key, 501, None, now),
        }
    }

    /// A request inside one of our dialogs goes to its call.
    fn in_dialog(&mut self, req: Request, key: TxKey, now: Instant) {
        let Some((id, side)) = self.dialogs.get(req.call_id()).copied() else {
            return self.reply(&key, 481, None, now);
        };
        if let Some(s) = self.server.get_mut(&key) {
            s.call = Some(id);
        }
        self.feed(id, Input::Request { side, tx: key, req }, now);
    }

    /// A CANCEL is answered by its transaction (RFC 3261 §9.2); the call it cancels decides
    /// what that means for it.
    fn on_cancel(&mut self, req: &Request, key: &TxKey, now: Instant) {
        let Some(invite) = key.cancelled_invite() else {
            return self.reply(key, 481, None, now);
        };
        if !self.server.contains_key(&invite) {
            return self.reply(key, 481, None, now);
        }
        self.reply(key, 200, None, now);
        match self.dialogs.get(req.call_id()).copied() {
            Some((id, Side::A)) => self.feed(id, Input::Cancel { invite }, now),
            Some(_) => {}
            // No call yet, nor an answer: a subscriber's INVITE whose account is being read.
            None if self.server.get(&invite).is_some_and(|s| !s.tx.answered()) => {
                self.reply(&invite, 487, None, now)
            }
            None => {}
        }
    }

    /// An ACK has no transaction: its dialog's call checks that it is the one it waits for.
    fn on_ack(&mut self, req: Request, from: Peer, now: Instant) {
        if let Some((id, side)) = self.dialogs.get(req.call_id()).copied() {
            self.feed(id, Input::Ack { side, req, from }, now);
        }
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
        self.reply_with(key, code, warning, None, false, now);
    }

    /// Answers a server transaction with a bare status and one more header the status calls
    /// for (a 422's Min-SE, a 420's Unsupported); `told`: the warning goes on the status line
    /// too, for a subscriber's softphone to show.
    fn reply_with(
        &mut self,
        key: &TxKey,
        code: u16,
        warning: Option<&str>,
        header: Option<crate::sip::message::Header>,
        told: bool,
        now: Instant,
    ) {
        let Some(s) = self.server.get(key) else {
            return;
        };
        let tag = crate::sip::message::new_tag();
        let mut resp = if told {
            crate::registrar::told(s.tx.request(), code, warning, &tag)
        } else {
            crate::sip::message::reply_to(s.tx.request(), code, warning, &tag)
        };
        if let Some(h) = header {
            resp.headers.push(h);
        }
        self.respond(key, resp, now);
    }

    fn server_outputs(&mut self, key: &TxKey, out: Vec<Output>, now: Instant) {
        let Some((peer, call)) = self.server.get(key).map(|s| (s.peer, s.call)) else {
            return;
        };
        for o in out {
            match o {
                Output::Send(b) => self.transports.send(&peer, b),
                Output::No2xxAck => {
                    if let Some(id) = call {
                        self.feed(id, Input::NoAck { tx: key.clone() }, now);
                    }
                }
                Output::NoAck | Output::Timeout | Output::Response(_) => {}
                Output::Terminated => {
                    self.forget_tx(Table::Server, key);
                    return;
                }
            }
        }
        let wake = self.server.get(key).and_then(|s| s.tx.next_wake());
        self.schedule(wake, Wake::Server(key.clone()));
        self.note_lingering(Table::Server, key);
    }

    fn table(&self, table: Table) -> &HashMap<TxKey, TxEntry> {
        match table {
            Table::Server => &self.server,
            Table::Client => &self.client,
        }
    }

    fn table_mut(&mut self, table: Table) -> &mut HashMap<TxKey, TxEntry> {
        match table {
            Table::Server => &mut self.server,
            Table::Client => &mut self.client,
        }
    }

    /// Removes a transaction from its table.
    fn forget_tx(&mut self, table: Table, key: &TxKey) {
        if self
            .table_mut(table)
            .remove(key)
            .is_some_and(|t| t.lingering)
        {
            self.lingering.count -= 1;
        }
    }

    /// Counts a transaction that has just begun to linger, and forgets the oldest lingering
    /// ones beyond their cap (see [`Lingering`]).
    fn note_lingering(&mut self, table: Table, key: &TxKey) {
        let Some(t) = self.table_mut(table).get_mut(key) else {
            return;
        };
        if t.lingering || !t.tx.lingering() {
            return;
        }
        t.lingering = true;
        t.tx.shed();
        self.lingering.count += 1;
        self.lingering.order.push_back((table, key.clone()));
        while self.lingering.count > self.cfg.limits.lingering_transactions {
            let Some((table, key)) = self.lingering.order.pop_front() else {
                break;
            };
            if self.is_lingering(table, &key) {
                crate::metrics::get().limit_hit("lingering_transactions");
                self.forget_tx(table, &key);
            }
        }
        // Entries of transactions that ended on their own are dropped now and then, so the
        // order never holds many more than the lingering themselves.
        if self.lingering.order.len() > 2 * self.lingering.count + 1024 {
            let order = std::mem::take(&mut self.lingering.order);
            self.lingering.order = order
                .into_iter()
                .filter(|(table, key)| self.is_lingering(*table, key))
                .collect();
        }
    }

    fn is_lingering(&self, table: Table, key: &TxKey) -> bool {
        self.table(table).get(key).is_some_and(|t| t.lingering)
    }

    /// Starts a client transaction to `peer` (`key` is the request's own).
    fn send_request(
        &mut self,
        key: TxKey,
        req: Request,
        peer: Peer,
        call: Option<u64>,
        now: Instant,
    ) {
        let (tx, out) = Transaction::client(req, peer.proto.reliable(), self.cfg.timers, now);
        self.client.insert(
            key.clone(),
            TxEntry {
                tx,
                peer,
                call,
                lingering: false,
            },
        );
        self.client_outputs(&key, out, now);
    }

    fn client_outputs(&mut self, key: &TxKey, out: Vec<Output>, now: Instant) {
        let Some((peer, call)) = self.client.get(key).map(|c| (c.peer, c.call)) else {
            return;
        };
        let mut terminated = false;
        for o in out {
            match o {
                Output::Send(b) => self.transports.send(&peer, b),
                Output::Response(resp) if self.answer_bye_challenge(key, &resp, peer, now) => {}
                Output::Response(resp) => match call.filter(|id| self.calls.contains_key(id)) {
                    Some(id) => {
                        let input = Input::Response {
                            tx: key.clone(),
                            resp,
                            from: peer,
                        };
                        self.feed(id, input, now)
                    }
                    None if self.ping_answered(key) => {}
                    None if self.register_answered(key, &resp, now) => {}
                    // The call is gone: an answer to its INVITE is hung up.
                    None => self.hang_up_if_answer(&resp, peer, now),
                },
                Output::Timeout => match call {
                    Some(id) => self.feed(id, Input::Timeout { tx: key.clone() }, now),
                    None => {
                        let _ = self.ping_unanswered(key) || self.register_unanswered(key, now);
                    }
                },
                Output::NoAck | Output::No2xxAck => {}
                Output::Terminated => terminated = true,
            }
        }
        if terminated {
            self.forget_tx(Table::Client, key);
            return;
        }
        let wake = self.client.get(key).and_then(|c| c.tx.next_wake());
        self.schedule(wake, Wake::Client(key.clone()));
        self.note_lingering(Table::Client, key);
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
            return self.feed(id, Input::Stray2xx { side, resp }, now);
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
            self.hang_up_if_answer(&resp, from, now);
        } else {
            crate::metrics::get().limit_hit("stray_2xx");
        }
    }

    /// ACKs and hangs up a 2xx to an INVITE that belongs to no call.
    fn hang_up_if_answer(&mut self, resp: &Response, peer: Peer, now: Instant) {
        let code = resp.status_code.code();
        if !(200..300).contains(&code) || resp.cseq().is_none_or(|(_, m)| m != Method::Invite) {
            return;
        }
        for o in call::hang_up(resp, peer, &self.settings.local, &mut self.lent.ids) {
            match o {
                call::Output::Ack { req, peer } => self.send_stateless(&req, &peer),
                call::Output::Send { tx, req, peer } => self.send_request(tx, req, peer, None, now),
                _ => {}
            }
        }
    }

    /// Sends a request that has no transaction (the ACK of a 2xx).
    fn send_stateless(&self, req: &Request, peer: &Peer) {
        self.transports
            .send(peer, crate::sip::message::request_bytes(req));
    }

    /// Ends every call, for shutdown.
    fn end_all(&mut self, now: Instant) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            self.feed(id, Input::Shutdown, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Stop;
    use std::time::{Duration, Instant};

    #[test]
    fn a_stop_gives_calls_three_seconds_and_the_store_its_retry_window() {
        let t0 = Instant::now();
        let stop = Stop::new(t0, Duration::from_secs(30));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(stop.done(at(0), 0, 0));
        assert!(!stop.done(at(1), 2, 0), "calls still hanging up");
        assert!(stop.done(at(3), 2, 0), "calls out of time");
        assert!(!stop.done(at(3), 0, 1), "a settlement still going");
        assert!(!stop.done(at(30), 0, 1));
        assert!(stop.done(at(31), 0, 1), "the store out of time too");
        assert_eq!(stop.next_deadline(at(1)), at(3));
        assert_eq!(stop.next_deadline(at(4)), at(31));
    }
}

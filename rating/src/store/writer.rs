//! Group commit: one writer per store takes the holds, connects, extensions and settlements
//! that are waiting and applies them in one transaction, each with its own outcome, so a
//! thousand calls a second cost a few dozen commits instead of three thousand, and on SQLite
//! no two connections of ours fight over the database's one write lock.
//!
//! Callers await their own answer; nothing is answered before its batch has committed. A
//! batch closes when it is full, or when nothing more is waiting (after `batch_delay`, if
//! that is set), so at low load an operation waits for no one. A refusal writes nothing (see
//! `ops`), so it fails only its own caller; a database error in one operation rolls the batch
//! back and the batch runs again without it; an error the database may get over (busy,
//! deadlock, a dropped connection) runs the whole batch again a few times before every caller
//! is told. A hold whose caller stopped waiting is released by the writer itself, in its next
//! batch, so money is never held for a call nobody will settle.

use super::exec::{AnyExec, Exec, LiteExec};
use super::ops::{self, Done, Op, Params, Reserved};
use super::{CallEnd, StoreError};
use chrono::Utc;
use sqlx::Connection;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How a writer batches.
#[derive(Debug, Clone)]
pub(crate) struct Batching {
    /// Operations in one transaction at most.
    pub max: usize,
    /// How long a batch that is not full waits for more (zero: not at all).
    pub delay: Duration,
    /// Operations waiting at most; past it callers are told the store is busy.
    pub queue: usize,
}

struct Job {
    op: Op,
    /// The account the operation locks: batches run in account order, so two transactions
    /// (two lanes, two nodes) always take row locks in the same order and cannot deadlock.
    account: i64,
    reply: Option<oneshot::Sender<Result<Done, StoreError>>>,
}

/// What the writers did, for the metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Operations answered (refusals included).
    pub operations: AtomicU64,
    /// Batches run again after a database error.
    pub reruns: AtomicU64,
    /// Operations sent and not yet answered (queued or in the running batch).
    pub waiting: AtomicU64,
}

/// The queue to a writer, and how to wait for it to finish.
pub(crate) struct Writer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    capacity: usize,
    done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    stats: Arc<WriterStats>,
}

/// Several writers, each with its own connection, for a database that commits in parallel
/// (PostgreSQL). Accounts are split among them by id, so one card's operations queue behind
/// each other in one lane while other cards' commit beside them; row locks and the account
/// order inside each batch keep lanes (and nodes) from overspending or deadlocking.
pub(crate) struct Lanes {
    lanes: Vec<Writer>,
    /// Which account each call this node holds money for spends from, so a connect, an
    /// extension or a settlement finds its lane and its place in the account order without
    /// asking the database (none on SQLite, whose one writer takes no row locks).
    routes: Option<Mutex<HashMap<String, i64>>>,
    pub stats: Arc<WriterStats>,
}

/// Calls remembered for routing at most. Past it the map starts again: a call it forgot is
/// looked up in the database, which costs a round trip and nothing else.
const ROUTES_MAX: usize = 1 << 20;

impl Lanes {
    /// One SQLite writer: the file has one write lock, so a second writer would only wait.
    pub fn sqlite(path: &str, params: Params, b: Batching) -> Result<Lanes, StoreError> {
        let stats = Arc::<WriterStats>::default();
        let w = Writer::sqlite(path, params, b, stats.clone())?;
        Ok(Lanes {
            lanes: vec![w],
            routes: None,
            stats,
        })
    }

    /// `n` PostgreSQL writers, each its own connection.
    pub fn postgres(url: &str, params: Params, b: Batching, n: usize) -> Lanes {
        let stats = Arc::<WriterStats>::default();
        let lanes = (0..n.max(1))
            .map(|_| Writer::postgres(url, params.clone(), b.clone(), stats.clone()))
            .collect();
        Lanes {
            lanes,
            routes: Some(Mutex::default()),
            stats,
        }
    }

    /// How many writers there are.
    pub fn count(&self) -> usize {
        self.lanes.len()
    }

    /// The account a call spends from, if this node remembers it.
    pub fn account_of(&self, conf_id: &str) -> Option<i64> {
        let routes = self.routes.as_ref()?;
        routes
            .lock()
            .expect("the routes lock")
            .get(conf_id)
            .copied()
    }

    /// Runs `op`, which locks `account`, in its lane's next batch, and returns its outcome.
    pub async fn run(&self, op: Op, account: i64) -> Result<Done, StoreError> {
        let lane = &self.lanes[account.rem_euclid(self.lanes.len() as i64) as usize];
        let Some(routes) = &self.routes else {
            return lane.run(op, account).await;
        };
        // A hold teaches this node the call's account; a settlement (unless it may yet be
        // retried) ends the need to know it.
        let (conf_id, hold) = match &op {
            Op::Hold(h) => (h.conf_id.clone(), true),
            Op::Settle { conf_id, .. } => (conf_id.clone(), false),
            _ => return lane.run(op, account).await,
        };
        let done = lane.run(op, account).await;
        let mut routes = routes.lock().expect("the routes lock");
        match &done {
            Ok(Done::Hold(Reserved::Held { .. })) if hold => {
                if routes.len() >= ROUTES_MAX {
                    routes.clear();
                }
                routes.insert(conf_id, account);
            }
            Err(e) if e.is_transient() => {}
            _ if !hold => {
                routes.remove(&conf_id);
            }
            _ => {}
        }
        done
    }

    /// Operations sent and not yet answered, over all lanes.
    pub fn depth(&self) -> usize {
        self.stats.waiting.load(Ordering::Relaxed) as usize
    }

    /// Closes every lane (see [`Writer::close`]).
    pub async fn close(&self) {
        for w in &self.lanes {
            w.close().await;
        }
    }
}

/// A connection a writer runs its batches on.
trait Conn: Exec {
    /// Connects if the last connection broke.
    async fn ready(&mut self) -> Result<(), StoreError>;
    /// Forgets a connection that may be in a bad state.
    fn broken(&mut self);
    /// How a batch's transaction starts. On SQLite it takes the write lock at once, so a
    /// busy database is waited for (busy_timeout) instead of failing the read-to-write
    /// upgrade halfway through a batch.
    fn begin(&self) -> &'static str;
}

impl Conn for LiteExec {
    async fn ready(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn broken(&mut self) {
        // The file is local: rolling back is enough.
        let _ = self.0.execute_batch("ROLLBACK");
    }

    fn begin(&self) -> &'static str {
        "BEGIN IMMEDIATE"
    }
}

/// A writer's own sqlx connection, made again after it breaks.
struct AnyConn {
    url: String,
    conn: Option<sqlx::AnyConnection>,
}

impl Exec for AnyConn {
    async fn row(
        &mut self,
        sql: &str,
        args: &[super::exec::Val],
    ) -> Result<Option<super::exec::Cells>, StoreError> {
        let c = self.conn.as_mut().ok_or(StoreError::Closed)?;
        AnyExec(c).row(sql, args).await
    }

    async fn exec(&mut self, sql: &str, args: &[super::exec::Val]) -> Result<u64, StoreError> {
        let c = self.conn.as_mut().ok_or(StoreError::Closed)?;
        AnyExec(c).exec(sql, args).await
    }

    async fn rows(
        &mut self,
        sql: &str,
        args: &[super::exec::Val],
    ) -> Result<Vec<super::exec::Cells>, StoreError> {
        let c = self.conn.as_mut().ok_or(StoreError::Closed)?;
        AnyExec(c).rows(sql, args).await
    }
}

impl Conn for AnyConn {
    async fn ready(&mut self) -> Result<(), StoreError> {
        if self.conn.is_none() {
            self.conn = Some(sqlx::AnyConnection::connect(&self.url).await?);
        }
        Ok(())
    }

    fn broken(&mut self) {
        self.conn = None;
    }

    fn begin(&self) -> &'static str {
        "BEGIN"
    }
}

impl Writer {
    /// A writer on its own SQLite connection and thread.
    fn sqlite(
        path: &str,
        params: Params,
        b: Batching,
        stats: Arc<WriterStats>,
    ) -> Result<Writer, StoreError> {
        let conn = LiteExec::open(path)?;
        let (writer, rx, done) = Writer::new(&b, stats.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime builds");
                rt.block_on(run(conn, rx, params, b, stats));
                let _ = done.send(());
            })
            .map_err(|e| StoreError::Native {
                message: format!("starting the store writer: {e}"),
                transient: false,
            })?;
        Ok(writer)
    }

    /// A writer on its own sqlx connection (PostgreSQL), as a task.
    fn postgres(url: &str, params: Params, b: Batching, stats: Arc<WriterStats>) -> Writer {
        let (writer, rx, done) = Writer::new(&b, stats.clone());
        let conn = AnyConn {
            url: url.to_string(),
            conn: None,
        };
        tokio::spawn(async move {
            run(conn, rx, params, b, stats).await;
            let _ = done.send(());
        });
        writer
    }

    fn new(
        b: &Batching,
        stats: Arc<WriterStats>,
    ) -> (Writer, mpsc::Receiver<Job>, oneshot::Sender<()>) {
        let (tx, rx) = mpsc::channel(b.queue.max(1));
        let (done_tx, done_rx) = oneshot::channel();
        let w = Writer {
            tx: Mutex::new(Some(tx)),
            capacity: b.queue.max(1),
            done: tokio::sync::Mutex::new(Some(done_rx)),
            stats,
        };
        (w, rx, done_tx)
    }

    /// Runs `op` in the next batch and returns its own outcome.
    async fn run(&self, op: Op, account: i64) -> Result<Done, StoreError> {
        let sender = self
            .tx
            .lock()
            .expect("the writer's sender lock")
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        sender
            .try_send(Job {
                op,
                account,
                reply: Some(reply),
            })
            .map_err(|e| {
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Busy(format!(
                        "{} store operations already waiting",
                        self.capacity
                    )),
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                }
            })?;
        drop(sender);
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Takes no new operations, finishes the waiting ones (and the releases they cause), and
    /// returns when the writer has stopped.
    async fn close(&self) {
        self.tx.lock().expect("the writer's sender lock").take();
        if let Some(done) = self.done.lock().await.take() {
            let _ = done.await;
        }
    }
}

/// The writer's loop: wait for work, gather a batch, run it; until the queue closes and every
/// operation in it, and every release it caused, is done.
async fn run<C: Conn>(
    mut conn: C,
    mut rx: mpsc::Receiver<Job>,
    params: Params,
    b: Batching,
    stats: Arc<WriterStats>,
) {
    let mut carry: VecDeque<Job> = VecDeque::new();
    let max = b.max.max(1);
    loop {
        let mut batch: Vec<Job> = Vec::with_capacity(max);
        while batch.len() < max {
            let Some(j) = carry.pop_front() else { break };
            batch.push(j);
        }
        if batch.is_empty() {
            match rx.recv().await {
                Some(j) => batch.push(j),
                None => return,
            }
        }
        fill(&mut rx, &mut batch, max);
        if batch.len() < max && !b.delay.is_zero() {
            let until = tokio::time::Instant::now() + b.delay;
            while batch.len() < max {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(j)) => batch.push(j),
                    _ => break,
                }
                fill(&mut rx, &mut batch, max);
            }
        }
        run_batch(&mut conn, &params, batch, &mut carry, &stats).await;
    }
}

fn fill(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
}

/// Transient failures of a whole batch tried again before its callers are told.
const BATCH_TRIES: u32 = 3;

/// Runs one batch to its commit and answers each caller.
async fn run_batch<C: Conn>(
    conn: &mut C,
    params: &Params,
    mut jobs: Vec<Job>,
    carry: &mut VecDeque<Job>,
    stats: &WriterStats,
) {
    // A hold nobody waits for any more is not taken at all.
    jobs.retain(|j| {
        let given_up =
            matches!(j.op, Op::Hold(_)) && j.reply.as_ref().is_some_and(|r| r.is_closed());
        if given_up {
            stats.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        !given_up
    });
    // Stable: one call's operations keep their order.
    jobs.sort_by_key(|j| j.account);
    let mut tries = 0;
    while !jobs.is_empty() {
        let outcome = attempt(conn, params, &jobs).await;
        match outcome {
            Attempt::Committed(results) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .operations
                    .fetch_add(results.len() as u64, Ordering::Relaxed);
                for (job, result) in jobs.into_iter().zip(results) {
                    answer(job, result, carry, stats);
                }
                return;
            }
            Attempt::Failed(i, e) => {
                // One operation's own error: it alone fails; the rest run again without it.
                stats.reruns.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, call = jobs[i].op.conf_id(), "store operation failed; its batch runs again without it");
                let job = jobs.remove(i);
                answer(job, Err(e), carry, stats);
            }
            Attempt::Transient(e) if tries + 1 < BATCH_TRIES => {
                tries += 1;
                stats.reruns.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, tries, "store batch failed; trying it again");
                tokio::time::sleep(Duration::from_millis(20 << tries)).await;
            }
            Attempt::Transient(e) => {
                tracing::error!(error = %e, operations = jobs.len(), "store batch failed");
                let message = e.to_string();
                for job in jobs {
                    answer(job, Err(StoreError::Busy(message.clone())), carry, stats);
                }
                return;
            }
        }
    }
}

enum Attempt {
    Committed(Vec<Result<Done, StoreError>>),
    /// Operation `i` hit a database error of its own.
    Failed(usize, StoreError),
    /// The batch as a whole failed, but may not next time.
    Transient(StoreError),
}

async fn attempt<C: Conn>(conn: &mut C, params: &Params, jobs: &[Job]) -> Attempt {
    if let Err(e) = conn.ready().await {
        return Attempt::Transient(e);
    }
    if let Err(e) = conn.exec(conn.begin(), &[]).await {
        conn.broken();
        return Attempt::Transient(e);
    }
    let mut results = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        match ops::apply(conn, params, &job.op).await {
            Err(e) if e.is_database() => {
                if conn.exec("ROLLBACK", &[]).await.is_err() {
                    conn.broken();
                }
                return if e.is_transient() {
                    Attempt::Transient(e)
                } else {
                    Attempt::Failed(i, e)
                };
            }
            r => results.push(r),
        }
    }
    match conn.exec("COMMIT", &[]).await {
        Ok(_) => Attempt::Committed(results),
        Err(e) => {
            conn.broken();
            Attempt::Transient(e)
        }
    }
}

/// Hands an operation its outcome; a hold whose caller is gone is released next batch.
fn answer(
    job: Job,
    result: Result<Done, StoreError>,
    carry: &mut VecDeque<Job>,
    stats: &WriterStats,
) {
    stats.waiting.fetch_sub(1, Ordering::Relaxed);
    let held = match &result {
        Ok(Done::Hold(Reserved::Held { reservation, .. })) => Some(reservation.conf_id.clone()),
        _ => None,
    };
    let delivered = match job.reply {
        Some(reply) => reply.send(result).is_ok(),
        None => true,
    };
    if let (false, Some(conf_id)) = (delivered, held) {
        tracing::info!(
            call = conf_id,
            "a hold's caller stopped waiting: releasing it"
        );
        let now = Utc::now();
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        carry.push_back(Job {
            account: job.account,
            op: Op::Settle {
                conf_id,
                end: Box::new(CallEnd {
                    connect_at: None,
                    disconnect_at: now,
                    cause: "cancelled".into(),
                    voice_quality: None,
                    gateway: String::new(),
                }),
                now_ms: now.timestamp_millis(),
                origin: None,
            },
            reply: None,
        });
    }
}

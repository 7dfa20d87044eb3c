//! The accounting client's edge: one UDP socket to the operator's RADIUS accounting server,
//! fed from the store's outbox (`rating::store::Queued`). The engine writes a record when a
//! leg starts or stops; this task sends it, resends it with backoff until an authentic
//! Accounting-Response arrives, and only then deletes it. A server that is down, or a node
//! that restarts, therefore delays records but loses none; the protocol rules are in
//! `rating::radius::acct`.

use crate::config::RadiusAccounting;
use chrono::Utc;
use rating::radius::acct::{Backoff, Sender};
use rating::Store;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the outbox is looked at for new records while there is room to send.
const POLL: Duration = Duration::from_millis(200);
/// How often records of silent nodes are taken over.
const CLAIM: Duration = Duration::from_secs(10);

/// The running client.
pub struct Running {
    /// Our socket's address (the server sees records come from here).
    pub local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops sending; records not yet acknowledged stay queued for the next start.
    pub async fn stop(self) {
        crate::supervise::stopping();
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts sending the outbox to `cfg.server`.
pub async fn start(cfg: &RadiusAccounting, store: Arc<Store>) -> std::io::Result<Running> {
    // A server on loopback is reached from loopback; otherwise the kernel picks the source.
    let ip = match cfg.server.ip() {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((ip, 0)).await?;
    let local = sock.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let sender = Sender::new(
        cfg.secret.as_bytes(),
        Backoff {
            first: cfg.retry_first,
            max: cfg.retry_max,
        },
        cfg.window,
    );
    tracing::info!(server = %cfg.server, %local, "RADIUS accounting client sending");
    let task = crate::supervise::spawn(
        "radius-accounting",
        run(sock, cfg.server, sender, store, stopped),
    );
    Ok(Running { local, stop, task })
}

async fn run(
    sock: UdpSocket,
    server: SocketAddr,
    mut sender: Sender,
    store: Arc<Store>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    // Records are read in queue order past `cursor`; a take-over starts again from the top.
    let mut cursor = 0i64;
    // Acknowledged records whose deletion failed (the database was away): retried, never resent.
    let mut acked: Vec<i64> = Vec::new();
    let mut next_poll = Instant::now();
    let mut next_claim = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_claim {
            next_claim = now + CLAIM;
            match store.claim_orphaned_accounting(Utc::now()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(records = n, "took over a silent node's accounting records");
                    cursor = 0;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for orphaned accounting records")
                }
            }
        }
        if !acked.is_empty() {
            let mut left = Vec::new();
            for id in acked.drain(..) {
                if store.ack_accounting(id).await.is_err() {
                    left.push(id);
                }
            }
            acked = left;
        }
        if now >= next_poll && sender.room() > 0 {
            next_poll = now + POLL;
            fill(&sock, server, &mut sender, &store, &mut cursor, &acked).await;
        }
        let wake = [Some(next_poll), Some(next_claim), sender.next_due()]
            .into_iter()
            .flatten()
            .min()
            .expect("polling is always due");
        tokio::select! {
            got = sock.recv_from(&mut buf) => match got {
                Ok((n, from)) if from == server => match sender.on_response(&buf[..n]) {
                    Ok(id) => {
                        if let Err(e) = store.ack_accounting(id).await {
                            tracing::warn!(error = %e, "acknowledged record not yet deleted; retrying");
                            acked.push(id);
                        }
                        // Room again: look for more at once.
                        next_poll = Instant::now();
                    }
                    Err(e) => tracing::warn!(%from, error = %e, "RADIUS accounting response ignored"),
                },
                Ok((_, from)) => tracing::warn!(%from, "datagram from a stranger ignored"),
                // An ICMP error from a server that is down: the backoff resends.
                Err(e) => tracing::debug!(error = %e, "RADIUS accounting socket"),
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                for (id, sends, packet) in sender.due(Instant::now()) {
                    tracing::debug!(record = id, sends, "resending accounting record");
                    send(&sock, server, &packet).await;
                }
            }
            _ = stopped.changed() => break,
        }
    }
    tracing::info!(
        in_flight = sender.in_flight(),
        "RADIUS accounting client stopped; unacknowledged records stay queued"
    );
}

/// Puts as many queued records in flight as the window allows.
async fn fill(
    sock: &UdpSocket,
    server: SocketAddr,
    sender: &mut Sender,
    store: &Store,
    cursor: &mut i64,
    acked: &[i64],
) {
    let rows = match store.pending_accounting(*cursor, sender.room()).await {
        Ok(rows) => rows,
        Err(e) => return tracing::warn!(error = %e, "could not read the accounting outbox"),
    };
    for q in rows {
        *cursor = q.id;
        if sender.holds(q.id) || acked.contains(&q.id) {
            continue;
        }
        let record = match q.record {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(record = q.id, error = %e, "unreadable accounting record left in the outbox");
                continue;
            }
        };
        let age = (Utc::now() - q.event_at).to_std().unwrap_or_default();
        match sender.send(q.id, &record, age, Instant::now()) {
            Ok(packet) => send(sock, server, &packet).await,
            Err(e) => {
                tracing::error!(record = q.id, error = %e, "accounting record cannot be encoded; left in the outbox")
            }
        }
    }
}

async fn send(sock: &UdpSocket, server: SocketAddr, packet: &[u8]) {
    if let Err(e) = sock.send_to(packet, server).await {
        tracing::debug!(error = %e, "sending an accounting record failed; it will be resent");
    }
}

//! The RADIUS AAA server's sockets: gateways that run Cisco's debit-card application send
//! their Access-Requests and Accounting-Requests here, and the store answers them
//! (`rating::radius::aaa`). This module is the edge: it knows the clients and their secrets,
//! drops what it cannot trust, and answers a retransmission from a cache of recent replies so
//! that no request is authorized or billed twice.

use crate::config::RadiusServer;
use crate::sync::Lock;
use chrono::Utc;
use radius::core::code::Code;
use rating::radius::cache::{Key, ReplyCache, Seen};
use rating::radius::{aaa, decode_request, encode_reply, Request};
use rating::Store;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How long answers are kept for retransmissions: longer than a gateway keeps retrying
/// (Cisco's default is 3 tries, 5 s apart).
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 100_000;

/// The running AAA server.
pub struct Running {
    pub auth: SocketAddr,
    pub acct: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops both sockets; requests being answered finish on their own.
    pub async fn stop(self) {
        crate::supervise::stopping();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct Shared {
    store: Arc<Store>,
    /// Each client's secret and whose cards it may use.
    clients: HashMap<IpAddr, (Vec<u8>, aaa::Cards)>,
    require_ma: bool,
    cache: Mutex<ReplyCache>,
}

/// Binds the auth and accounting sockets and starts answering.
pub async fn start(cfg: &RadiusServer, store: Arc<Store>) -> std::io::Result<Running> {
    let auth = Arc::new(UdpSocket::bind(cfg.auth).await?);
    let acct = Arc::new(UdpSocket::bind(cfg.acct).await?);
    let shared = Arc::new(Shared {
        store,
        clients: cfg
            .clients
            .iter()
            .map(|c| (c.address, (c.secret.as_bytes().to_vec(), c.cards.clone())))
            .collect(),
        require_ma: cfg.require_message_authenticator,
        cache: Mutex::new(ReplyCache::new(CACHE_TTL, CACHE_MAX)),
    });
    let running = Running {
        auth: auth.local_addr()?,
        acct: acct.local_addr()?,
        tasks: vec![
            crate::supervise::spawn(
                "radius-auth",
                serve(auth, shared.clone(), Code::AccessRequest),
            ),
            crate::supervise::spawn("radius-acct", serve(acct, shared, Code::AccountingRequest)),
        ],
    };
    tracing::info!(auth = %running.auth, acct = %running.acct, "RADIUS AAA server listening");
    Ok(running)
}

/// One socket's receive loop; each request is answered in its own task.
async fn serve(sock: Arc<UdpSocket>, shared: Arc<Shared>, expect: Code) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier replies surface here on some systems; keep serving.
                tracing::debug!(error = %e, "RADIUS receive error");
                continue;
            }
        };
        let Some((secret, _)) = shared.clients.get(&from.ip()).cloned() else {
            tracing::warn!(client = %from, "RADIUS request from an unknown client ignored");
            continue;
        };
        let req = match decode_request(&buf[..n], &secret, shared.require_ma) {
            Ok(r) if r.code == expect => r,
            Ok(r) => {
                tracing::warn!(client = %from, code = ?r.code, "RADIUS request on the wrong port dropped");
                continue;
            }
            Err(e) => {
                tracing::warn!(client = %from, error = %e, "RADIUS request dropped");
                continue;
            }
        };
        let key = Key {
            client: from,
            identifier: req.identifier,
            authenticator: req.authenticator,
        };
        let seen = shared.cache.locked().arrive(key.clone(), Instant::now());
        match seen {
            Seen::Answered(bytes) => {
                tracing::debug!(client = %from, id = req.identifier, "RADIUS retransmission answered from the cache");
                let _ = sock.send_to(&bytes, from).await;
            }
            Seen::InProgress => {
                tracing::debug!(client = %from, id = req.identifier, "RADIUS retransmission while answering: dropped");
            }
            Seen::New => {
                let (sock, shared) = (sock.clone(), shared.clone());
                tokio::spawn(async move {
                    match answer(&shared, &req, from, &secret).await {
                        Some(bytes) => {
                            // Cached before it is sent, so that a resend arriving right after
                            // the answer finds it.
                            shared.cache.locked().answered(&key, bytes.clone());
                            let _ = sock.send_to(&bytes, from).await;
                        }
                        None => shared.cache.locked().abandon(&key),
                    }
                });
            }
        }
    }
}

/// The reply's bytes, or `None` when the request must go unanswered (the store failed to keep
/// an accounting record: the client resends).
async fn answer(
    shared: &Shared,
    req: &Request,
    from: SocketAddr,
    secret: &[u8],
) -> Option<Vec<u8>> {
    let now = Utc::now();
    let client = from.ip().to_string();
    let (code, attrs) = match req.code {
        Code::AccessRequest => {
            let cards = shared
                .clients
                .get(&from.ip())
                .map(|(_, c)| c.clone())
                .unwrap_or(aaa::Cards::Tenant(String::new()));
            let a = aaa::access(&shared.store, req, &client, &cards, now).await;
            tracing::info!(
                client = %from,
                account = req.user_name.as_deref().unwrap_or(""),
                called = req.called.as_deref().unwrap_or(""),
                code = a.code.code(),
                "RADIUS authorization"
            );
            crate::metrics::get().authorized("radius", a.code.code());
            aaa::access_reply(&a)
        }
        _ => match aaa::accounting(&shared.store, req, &client, now).await {
            Ok(outcome) => {
                tracing::info!(
                    client = %from,
                    conf_id = req.cisco("h323-conf-id").unwrap_or(""),
                    status = ?req.acct_status,
                    outcome,
                    "RADIUS accounting"
                );
                (Code::AccountingResponse, Vec::new())
            }
            Err(e) => {
                tracing::error!(client = %from, error = %e, "RADIUS accounting not kept: not answered");
                return None;
            }
        },
    };
    match encode_reply(req, code, attrs, secret) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "RADIUS reply could not be encoded");
            None
        }
    }
}

//! The sockets: UDP, TCP and TLS listeners, outbound TCP and TLS connections, and the one
//! place bytes leave the process.
//!
//! Receiving tasks frame and parse what arrives and hand good messages to the engine over a
//! channel; what cannot be parsed is answered 400 right here when the message says enough to
//! address a reply (and dropped otherwise), so a malformed packet never reaches call logic and
//! never creates a transaction. Sending is synchronous and non-blocking so that the engine's
//! single task never waits on a socket.

use crate::limits::Limits;
use crate::routing::Proto;
use crate::sip::framer::{self, StreamFramer};
use crate::sip::message::{self, ParseError, SipMessage};
use crate::sync::Lock;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};

/// Where a message came from or goes to. On TCP and TLS the connection is part of the
/// address, so responses and in-dialog requests go back over the connection the peer opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// UDP, TCP or TLS.
    pub proto: Proto,
    /// The remote address.
    pub addr: SocketAddr,
    /// The connection, when there is one.
    pub conn: Option<u64>,
}

/// A parsed message and where it came from.
#[derive(Debug)]
pub struct Inbound {
    /// The message.
    pub msg: SipMessage,
    /// Its source.
    pub from: Peer,
}

/// One open TCP connection as the senders see it: its bounded write queue, and the way to
/// close it from outside (its writer fell behind).
#[derive(Clone)]
struct Conn {
    queue: mpsc::Sender<Vec<u8>>,
    close: Arc<Notify>,
}

type Conns = Arc<Mutex<HashMap<u64, Conn>>>;

/// Accepted connections, in all and per source address, against `limits.tcp_connections*`.
#[derive(Default)]
struct Admitted {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// What TLS needs at the sockets: the certificate we present on `tls:` listen addresses, and
/// how each gateway we connect to over TLS is checked.
#[derive(Clone, Default)]
pub struct TlsSetup {
    /// Ours, for accepted connections.
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Each TLS gateway's trust roots and name, by its address.
    pub peers: HashMap<SocketAddr, crate::tls::Peer>,
}

/// The bound sockets and the open connections.
#[derive(Clone)]
pub struct Transports {
    udp: Vec<Arc<UdpSocket>>,
    conns: Conns,
    /// The connection open to each peer address, reused for every request to it: the one we
    /// opened to a gateway, or the one a subscriber's client opened to us to register (the
    /// only way to reach a client behind NAT, RFC 5626 §3.3).
    outbound: Arc<Mutex<HashMap<(Proto, SocketAddr), u64>>>,
    tls: Arc<TlsSetup>,
    admitted: Arc<Mutex<Admitted>>,
    next_conn: Arc<AtomicU64>,
    inbound: mpsc::Sender<Inbound>,
    limits: Arc<Limits>,
    /// Shared by every socket: answers to what cannot be parsed, see `limits.error_replies`.
    error_replies: Arc<Mutex<crate::limits::Bucket>>,
}

const NEEDED: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// A reply to a request we could not take: the error's status (400, or 416, 501 with Allow,
/// 505) with the reason in Warning, addressed from the request's own Via, From, To, Call-ID
/// and CSeq when it has them all. Responses and ACKs get nothing, and neither does a request
/// with a CR inside one of those values (it would be echoed into our reply as a line break).
pub fn bad_request_reply(raw: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let text = match framer::normalize_datagram(raw) {
        Ok(n) => String::from_utf8(n).ok()?,
        Err(_) => String::from_utf8_lossy(raw).into_owned(),
    };
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.lines();
    let start = lines.next()?.trim();
    let method = start.split_whitespace().next()?;
    let version = start.split_whitespace().last()?;
    if start.starts_with("SIP/")
        || method.eq_ignore_ascii_case("ACK")
        || !version.starts_with("SIP/")
    {
        return None;
    }
    let mut keep: Vec<String> = Vec::new();
    let mut seen = [false; 5];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let value = value.trim();
        let Some(i) = NEEDED.iter().position(|h| h.eq_ignore_ascii_case(name)) else {
            continue;
        };
        if value.contains('\r') {
            return None;
        }
        seen[i] = true;
        if i == 2 && message::param(value, "tag").is_none() {
            keep.push(format!("To: {value};tag={}", message::new_tag()));
        } else {
            keep.push(format!("{}: {value}", NEEDED[i]));
        }
    }
    if !seen.iter().all(|s| *s) {
        return None;
    }
    let reason = err.to_string().replace(['"', '\\', '\r', '\n'], " ");
    let code = err.status();
    let mut out = format!("SIP/2.0 {code} {}\r\n", message::reason(code));
    for k in keep {
        out.push_str(&k);
        out.push_str("\r\n");
    }
    if code == 501 {
        out.push_str(&format!("Allow: {}\r\n", crate::sip::message::ALLOW));
    }
    out.push_str(&format!(
        "Warning: 399 b2bua \"{reason}\"\r\nContent-Length: 0\r\n\r\n"
    ));
    Some(out.into_bytes())
}

impl Transports {
    /// Binds every listen address and starts receiving; parsed messages go to `inbound`.
    pub async fn bind(
        listen: &[crate::config::Listen],
        tls: TlsSetup,
        limits: &Limits,
        inbound: mpsc::Sender<Inbound>,
    ) -> std::io::Result<(Transports, Vec<SocketAddr>)> {
        let mut t = Transports {
            udp: Vec::new(),
            conns: Arc::default(),
            outbound: Arc::default(),
            tls: Arc::new(tls),
            admitted: Arc::default(),
            next_conn: Arc::new(AtomicU64::new(1)),
            inbound,
            limits: Arc::new(limits.clone()),
            error_replies: Arc::new(Mutex::new(crate::limits::Bucket::full(
                limits.error_replies,
                std::time::Instant::now(),
            ))),
        };
        let mut bound = Vec::new();
        for l in listen {
            match l.proto {
                Proto::Udp => {
                    let s = Arc::new(UdpSocket::bind(l.addr).await?);
                    bound.push(s.local_addr()?);
                    t.udp.push(s.clone());
                    crate::supervise::spawn("sip-udp", udp_loop(s, t.clone()));
                }
                Proto::Tcp => {
                    let s = TcpListener::bind(l.addr).await?;
                    bound.push(s.local_addr()?);
                    crate::supervise::spawn("sip-tcp", tcp_accept(s, t.clone(), None));
                }
                Proto::Tls => {
                    let Some(server) = t.tls.server.clone() else {
                        return Err(std::io::Error::other(format!(
                            "tls:{} needs a certificate (sip.tls)",
                            l.addr
                        )));
                    };
                    let s = TcpListener::bind(l.addr).await?;
                    bound.push(s.local_addr()?);
                    let acceptor = tokio_rustls::TlsAcceptor::from(server);
                    crate::supervise::spawn("sip-tls", tcp_accept(s, t.clone(), Some(acceptor)));
                }
            }
        }
        Ok((t, bound))
    }

    /// Sends bytes without waiting. A full UDP socket buffer or a closed connection loses the
    /// message, as the network could; transactions retransmit.
    pub fn send(&self, to: &Peer, bytes: Vec<u8>) {
        match to.proto {
            Proto::Udp => {
                let sock = self
                    .udp
                    .iter()
                    .find(|s| {
                        s.local_addr()
                            .is_ok_and(|a| a.is_ipv4() == to.addr.is_ipv4())
                    })
                    .or(self.udp.first());
                let Some(sock) = sock else {
                    tracing::warn!(to = %to.addr, "no UDP socket to send from");
                    return;
                };
                if let Err(e) = sock.try_send_to(&bytes, to.addr) {
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        let sock = sock.clone();
                        let addr = to.addr;
                        tokio::spawn(async move {
                            let _ = sock.send_to(&bytes, addr).await;
                        });
                    } else {
                        tracing::debug!(to = %to.addr, error = %e, "UDP send failed");
                    }
                }
            }
            Proto::Tcp | Proto::Tls => {
                let id = match to.conn {
                    Some(id) => id,
                    None => self.connect(to.proto, to.addr),
                };
                let conn = self.conns.locked().get(&id).cloned();
                match conn {
                    Some(c) => {
                        if let Err(mpsc::error::TrySendError::Full(_)) = c.queue.try_send(bytes) {
                            // The peer does not read what we send: it goes, not our memory.
                            crate::metrics::get().limit_hit("tcp_write_queue");
                            c.close.notify_one();
                        }
                    }
                    None => tracing::debug!(to = %to.addr, proto = %to.proto, "connection is gone"),
                }
            }
        }
    }

    /// The connection to a gateway, opened on first use and reused after. What is sent
    /// while it is being opened waits in its queue; if it cannot be opened, that is lost as
    /// on a dead network and the call's setup timer fails it over.
    fn connect(&self, proto: Proto, addr: SocketAddr) -> u64 {
        let mut out = self.outbound.locked();
        if let Some(id) = out.get(&(proto, addr)) {
            if self.conns.locked().contains_key(id) {
                return *id;
            }
        }
        let (id, rx, close) = self.open_conn();
        out.insert((proto, addr), id);
        let me = self.clone();
        tokio::spawn(async move {
            let stream = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%addr, %proto, error = %e, "connecting to a gateway failed");
                    me.conns.locked().remove(&id);
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            if proto != Proto::Tls {
                return me.run_conn(stream, proto, addr, id, rx, close).await;
            }
            let Some(peer) = me.tls.peers.get(&addr).cloned() else {
                tracing::warn!(%addr, "no TLS settings for this address; not connecting");
                me.conns.locked().remove(&id);
                return;
            };
            let connector = tokio_rustls::TlsConnector::from(peer.config);
            let handshake = connector.connect(peer.name.clone(), stream);
            match me.handshake(id, "outbound", handshake).await {
                Ok(tls) => me.run_conn(tls, proto, addr, id, rx, close).await,
                Err(why) => {
                    tracing::warn!(%addr, name = ?peer.name, "TLS handshake with a gateway {why}")
                }
            }
        });
        id
    }

    /// Waits for a TLS handshake on connection `id` for `limits.tls_handshake` at most. One
    /// that fails is counted by `direction`, one that runs out as the limit; either gives the
    /// connection's slot back and says why, for the caller's log line.
    async fn handshake<S>(
        &self,
        id: u64,
        direction: &'static str,
        handshake: impl std::future::Future<Output = std::io::Result<S>>,
    ) -> Result<S, String> {
        let why = match tokio::time::timeout(self.limits.tls_handshake, handshake).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                crate::metrics::get().tls_handshake_failed(direction);
                format!("failed: {e}")
            }
            Err(_) => {
                crate::metrics::get().limit_hit("tls_handshake");
                "timed out".to_string()
            }
        };
        self.conns.locked().remove(&id);
        Err(why)
    }

    /// Whether one more answer to an unparseable message fits `limits.error_replies`.
    fn may_answer_error(&self) -> bool {
        let ok = self
            .error_replies
            .locked()
            .take(self.limits.error_replies, std::time::Instant::now());
        if !ok {
            crate::metrics::get().limit_hit("error_replies");
        }
        ok
    }

    /// A new connection's id and write queue, registered for senders.
    fn open_conn(&self) -> (u64, mpsc::Receiver<Vec<u8>>, Arc<Notify>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (queue, rx) = mpsc::channel(self.limits.tcp_write_queue);
        let close = Arc::new(Notify::new());
        self.conns.locked().insert(
            id,
            Conn {
                queue,
                close: close.clone(),
            },
        );
        (id, rx, close)
    }

    /// Reads and frames one connection (TCP, or TLS once its handshake is done) until it
    /// closes, falls silent for `tcp_idle`, cannot be framed, or is closed because its peer
    /// stopped reading.
    async fn run_conn<S>(
        self,
        stream: S,
        proto: Proto,
        addr: SocketAddr,
        id: u64,
        mut rx: mpsc::Receiver<Vec<u8>>,
        close: Arc<Notify>,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.outbound.locked().insert((proto, addr), id);
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let peer = Peer {
            proto,
            addr,
            conn: Some(id),
        };
        let mut framer = StreamFramer::new();
        let mut buf = vec![0u8; 16 * 1024];
        let idle = self.limits.tcp_idle;
        // Whether what we queued last (a 400) should still reach the peer before we close.
        let mut flush = false;
        'read: loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = close.notified() => {
                    tracing::info!(%addr, "closing a TCP connection whose peer does not read");
                    break;
                }
                _ = tokio::time::sleep(idle) => {
                    crate::metrics::get().limit_hit("tcp_idle");
                    break;
                }
            };
            framer.push(&buf[..n]);
            loop {
                let message = framer.next_message();
                if framer.take_pings() {
                    // One pong answers every ping of this read: a flood of pings costs one.
                    self.send(&peer, b"\r\n".to_vec());
                }

                match message {
                    Ok(None) => break,
                    Ok(Some(frame)) => match message::parse_normalized(&frame) {
                        Ok(mut msg) => {
                            if let SipMessage::Request(r) = &mut msg {
                                message::stamp_received(r, addr);
                            }
                            if self
                                .inbound
                                .send(Inbound { msg, from: peer })
                                .await
                                .is_err()
                            {
                                break 'read;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "unparseable SIP on TCP");
                            if let Some(reply) =
                                bad_request_reply(&frame, &e).filter(|_| self.may_answer_error())
                            {
                                self.send(&peer, reply);
                            }
                        }
                    },
                    Err(e) => {
                        tracing::info!(%addr, error = %e, "closing a TCP connection that cannot be framed");
                        // Answered when the head says enough (a Content-Length too large to
                        // take), then closed: what follows cannot be told from a message.
                        if let Some(reply) =
                            bad_request_reply(framer.pending(), &ParseError::Frame(e))
                        {
                            self.send(&peer, reply);
                            flush = true;
                        }
                        break 'read;
                    }
                }
            }
        }
        self.conns.locked().remove(&id);
        {
            let mut out = self.outbound.locked();
            if out.get(&(proto, addr)) == Some(&id) {
                out.remove(&(proto, addr));
            }
        }
        // With the queue's last sender gone, the writer ends once it has written what is
        // queued; a peer that does not read gets a second, then the socket is dropped.
        if !flush
            || tokio::time::timeout(Duration::from_secs(1), &mut writer)
                .await
                .is_err()
        {
            writer.abort();
        }
    }
}

/// Accepts connections within the limits, with a TLS handshake first on a `tls:` listener;
/// an error from `accept` (out of descriptors, most often) backs off instead of spinning on
/// a socket that stays readable.
async fn tcp_accept(listener: TcpListener, t: Transports, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                crate::metrics::get().limit_hit("tcp_accept");
                tracing::debug!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        let Some(admission) = Admission::take(&t, addr.ip()) else {
            // Closed at once: the peer learns nothing but that we are full.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (id, rx, close) = t.open_conn();
        let t = t.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _admission = admission;
            let Some(acceptor) = tls else {
                return t.run_conn(stream, Proto::Tcp, addr, id, rx, close).await;
            };
            match t.handshake(id, "inbound", acceptor.accept(stream)).await {
                Ok(s) => t.run_conn(s, Proto::Tls, addr, id, rx, close).await,
                Err(why) => tracing::info!(%addr, "TLS handshake with a peer {why}"),
            }
        });
    }
}

/// One accepted connection's place under the limits, given back when it closes.
struct Admission {
    admitted: Arc<Mutex<Admitted>>,
    ip: IpAddr,
}

impl Admission {
    fn take(t: &Transports, ip: IpAddr) -> Option<Admission> {
        let mut a = t.admitted.locked();
        if a.total >= t.limits.tcp_connections {
            crate::metrics::get().limit_hit("tcp_connections");
            return None;
        }
        let n = a.per_source.entry(ip).or_insert(0);
        if *n >= t.limits.tcp_connections_per_source {
            crate::metrics::get().limit_hit("tcp_connections_per_source");
            return None;
        }
        *n += 1;
        a.total += 1;
        Some(Admission {
            admitted: t.admitted.clone(),
            ip,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut a = self.admitted.locked();
        a.total -= 1;
        if let Some(n) = a.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                a.per_source.remove(&self.ip);
            }
        }
    }
}

async fn udp_loop(sock: Arc<UdpSocket>, t: Transports) {
    let inbound = t.inbound.clone();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, addr) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP port unreachable surfaces here on some systems; it is not fatal.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        let raw = &buf[..n];
        if framer::is_keepalive(raw) {
            continue;
        }
        match message::parse_datagram(raw) {
            Ok(mut msg) => {
                if let SipMessage::Request(r) = &mut msg {
                    message::stamp_received(r, addr);
                }
                let from = Peer {
                    proto: Proto::Udp,
                    addr,
                    conn: None,
                };
                if inbound.send(Inbound { msg, from }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "unparseable SIP datagram");
                if let Some(reply) = bad_request_reply(raw, &e).filter(|_| t.may_answer_error()) {
                    let _ = sock.send_to(&reply, addr).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_are_answered_when_addressable() {
        let raw = b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n";
        let e = message::parse_datagram(raw).unwrap_err();
        let reply = String::from_utf8(bad_request_reply(raw, &e).unwrap()).unwrap();
        assert!(reply.starts_with("SIP/2.0 400 Bad Request\r\n"), "{reply}");
        assert!(reply.contains("Call-ID: c\r\n") && reply.contains("To: <sip:x@y>;tag="));
        assert!(reply.contains("Warning: 399 b2bua \"CSeq method does not match"));
        // A response or an ACK gets nothing; so does a request without the headers to answer it.
        assert!(bad_request_reply(b"SIP/2.0 200 OK\r\nCSeq: x\r\n\r\n", &e).is_none());
        assert!(bad_request_reply(b"ACK sip:x@y SIP/2.0\r\nVia: x\r\n\r\n", &e).is_none());
        assert!(bad_request_reply(b"INVITE sip:x@y SIP/2.0\r\nCall-ID: c\r\n\r\n", &e).is_none());
    }
}

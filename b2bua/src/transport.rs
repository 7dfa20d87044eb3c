//! The sockets: UDP and TCP listeners, outbound TCP connections, and the one place bytes
//! leave the process.
//!
//! Receiving tasks frame and parse what arrives and hand good messages to the engine over a
//! channel; what cannot be parsed is answered 400 right here when the message says enough to
//! address a reply (and dropped otherwise), so a malformed packet never reaches call logic and
//! never creates a transaction. Sending is synchronous and non-blocking so that the engine's
//! single task never waits on a socket.

use crate::routing::Proto;
use crate::sip::framer::{self, StreamFramer};
use crate::sip::message::{self, ParseError, SipMessage};
use crate::sync::Lock;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// Where a message came from or goes to. On TCP the connection is part of the address, so
/// responses and in-dialog requests go back over the connection the peer opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// UDP or TCP.
    pub proto: Proto,
    /// The remote address.
    pub addr: SocketAddr,
    /// The TCP connection, when there is one.
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

type Conns = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>>>;

/// The bound sockets and the open connections.
#[derive(Clone)]
pub struct Transports {
    udp: Vec<Arc<UdpSocket>>,
    conns: Conns,
    outbound: Arc<Mutex<HashMap<SocketAddr, u64>>>,
    next_conn: Arc<AtomicU64>,
    inbound: mpsc::Sender<Inbound>,
}

const NEEDED: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// A reply to a request we could not parse: 400 with the reason, addressed from the request's
/// own Via, From, To, Call-ID and CSeq when it has them all. Responses and ACKs get nothing.
pub fn bad_request_reply(raw: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let text = match framer::normalize_datagram(raw) {
        Ok(n) => String::from_utf8(n).ok()?,
        Err(_) => String::from_utf8_lossy(raw).into_owned(),
    };
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.lines();
    let start = lines.next()?.trim();
    let method = start.split_whitespace().next()?;
    if start.starts_with("SIP/")
        || method.eq_ignore_ascii_case("ACK")
        || !start.ends_with("SIP/2.0")
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
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    for k in keep {
        out.push_str(&k);
        out.push_str("\r\n");
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
        inbound: mpsc::Sender<Inbound>,
    ) -> std::io::Result<(Transports, Vec<SocketAddr>)> {
        let mut t = Transports {
            udp: Vec::new(),
            conns: Arc::default(),
            outbound: Arc::default(),
            next_conn: Arc::new(AtomicU64::new(1)),
            inbound,
        };
        let mut bound = Vec::new();
        for l in listen {
            match l.proto {
                Proto::Udp => {
                    let s = Arc::new(UdpSocket::bind(l.addr).await?);
                    bound.push(s.local_addr()?);
                    t.udp.push(s.clone());
                    crate::supervise::spawn("sip-udp", udp_loop(s, t.inbound.clone()));
                }
                Proto::Tcp => {
                    let s = TcpListener::bind(l.addr).await?;
                    bound.push(s.local_addr()?);
                    crate::supervise::spawn("sip-tcp", tcp_accept(s, t.clone()));
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
            Proto::Tcp => {
                let id = match to.conn {
                    Some(id) => id,
                    None => self.connect(to.addr),
                };
                let sender = self.conns.locked().get(&id).cloned();
                match sender {
                    Some(s) => {
                        let _ = s.send(bytes);
                    }
                    None => tracing::debug!(to = %to.addr, "TCP connection is gone"),
                }
            }
        }
    }

    /// The connection to a gateway, opened on first use and reused after.
    fn connect(&self, addr: SocketAddr) -> u64 {
        let mut out = self.outbound.locked();
        if let Some(id) = out.get(&addr) {
            if self.conns.locked().contains_key(id) {
                return *id;
            }
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.conns.locked().insert(id, tx);
        out.insert(addr, id);
        let me = self.clone();
        tokio::spawn(async move {
            match TcpStream::connect(addr).await {
                Ok(stream) => me.run_conn(stream, addr, id, rx).await,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "TCP connect failed");
                    me.conns.locked().remove(&id);
                }
            }
        });
        id
    }

    async fn run_conn(
        self,
        stream: TcpStream,
        addr: SocketAddr,
        id: u64,
        mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let peer = Peer {
            proto: Proto::Tcp,
            addr,
            conn: Some(id),
        };
        let mut framer = StreamFramer::new();
        let mut buf = vec![0u8; 16 * 1024];
        'read: loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            framer.push(&buf[..n]);
            loop {
                match framer.next_message() {
                    Ok(None) => break,
                    Ok(Some(frame)) => match message::parse_normalized(&frame) {
                        Ok(msg) => {
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
                            if let Some(reply) = bad_request_reply(&frame, &e) {
                                self.send(&peer, reply);
                            }
                        }
                    },
                    Err(e) => {
                        tracing::info!(%addr, error = %e, "closing a TCP connection that cannot be framed");
                        break 'read;
                    }
                }
            }
        }
        self.conns.locked().remove(&id);
        writer.abort();
    }
}

async fn tcp_accept(listener: TcpListener, t: Transports) {
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            continue;
        };
        let id = t.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        t.conns.locked().insert(id, tx);
        tokio::spawn(t.clone().run_conn(stream, addr, id, rx));
    }
}

async fn udp_loop(sock: Arc<UdpSocket>, inbound: mpsc::Sender<Inbound>) {
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
            Ok(msg) => {
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
                if let Some(reply) = bad_request_reply(raw, &e) {
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

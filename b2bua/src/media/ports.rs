//! The RTP port pairs of the configured range: which are free, which a call holds, which
//! another process turned out to hold. A call's two legs each draw a pair at random (so the
//! next call's ports cannot be guessed from the last one's) and bind it; the pair goes back
//! only when its sockets are closed, so the next call to draw it can bind it.

use crate::sync::Lock;
use std::collections::VecDeque;
use std::net::{IpAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many taken pairs one leg tries before it gives up.
const BIND_TRIES: usize = 8;

/// A leg's RTP and RTCP sockets (non-blocking) and the pair they are bound to. The relay
/// worker that carries the call owns them; when it lets go, both sockets close and then the
/// pair returns to the pool. (Returning ports when the session ended, while tasks still held
/// the sockets, made the next bind fail and cost the pool that pair for good.)
pub struct LegSockets {
    /// The RTP socket, on the even port.
    pub rtp: UdpSocket,
    /// The RTCP socket, on the odd port: received and dropped, held so nothing else takes it.
    pub rtcp: UdpSocket,
    // Declared after the sockets: dropped once they are closed.
    _lease: Lease,
}

/// An even port drawn from the pool (its odd neighbour comes with it).
struct Lease {
    port: u16,
    pool: Arc<PortPool>,
    /// Someone else held it: rest it instead of handing it straight out again.
    taken_elsewhere: Option<Instant>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut p = self.pool.ports.locked();
        match self.taken_elsewhere {
            Some(until) => p.resting.push_back((until, self.port)),
            None => p.free.push(self.port),
        }
    }
}

/// The port pairs of the configured range that no call holds.
pub struct PortPool {
    ports: Mutex<Ports>,
    bind: IpAddr,
    rest: Duration,
}

#[derive(Default)]
struct Ports {
    free: Vec<u16>,
    /// Pairs another process held when we bound them, oldest first, with when to try again.
    resting: VecDeque<(Instant, u16)>,
}

impl Ports {
    /// Takes back the pairs whose rest is over.
    fn wake(&mut self, now: Instant) {
        while self.resting.front().is_some_and(|(at, _)| *at <= now) {
            let (_, port) = self.resting.pop_front().expect("looked at");
            self.free.push(port);
        }
    }
}

impl PortPool {
    /// The pairs of `min..max` (even RTP ports, the next odd one for RTCP) on `bind`; a pair
    /// found held by another process rests for `rest` before it is tried again.
    pub fn new(bind: IpAddr, (min, max): (u16, u16), rest: Duration) -> Arc<PortPool> {
        let start = min + min % 2;
        let free = (start..max.saturating_sub(1)).step_by(2).rev().collect();
        Arc::new(PortPool {
            ports: Mutex::new(Ports {
                free,
                ..Ports::default()
            }),
            bind,
            rest,
        })
    }

    /// Pairs free to be drawn now (not held by a call, not resting after a conflict).
    pub fn free(&self) -> usize {
        let mut p = self.ports.locked();
        p.wake(Instant::now());
        p.free.len()
    }

    /// A pair at random from the free ones (after taking back those whose rest is over).
    fn draw(self: &Arc<Self>, now: Instant) -> Option<Lease> {
        let mut p = self.ports.locked();
        p.wake(now);
        if p.free.is_empty() {
            return None;
        }
        let i = rand::random_range(0..p.free.len());
        let port = p.free.swap_remove(i);
        Some(Lease {
            port,
            pool: self.clone(),
            taken_elsewhere: None,
        })
    }

    /// Binds one leg's pair. A pair another process holds rests and the next is tried, a few
    /// times at most, so a crowded range costs one call a few binds rather than emptying the
    /// pool.
    pub fn bind_leg(self: &Arc<Self>) -> std::io::Result<LegSockets> {
        for _ in 0..BIND_TRIES {
            let now = Instant::now();
            let Some(mut lease) = self.draw(now) else {
                crate::metrics::get().limit_hit("media_ports");
                return Err(std::io::Error::other("no free RTP ports"));
            };
            let port = lease.port;
            match (
                UdpSocket::bind((self.bind, port)),
                UdpSocket::bind((self.bind, port + 1)),
            ) {
                (Ok(rtp), Ok(rtcp)) => {
                    rtp.set_nonblocking(true)?;
                    rtcp.set_nonblocking(true)?;
                    return Ok(LegSockets {
                        rtp,
                        rtcp,
                        _lease: lease,
                    });
                }
                (Err(e), _) | (_, Err(e)) => {
                    crate::metrics::get().rtp_port_conflicts.inc();
                    tracing::debug!(port, error = %e, "RTP port held elsewhere; resting it");
                    lease.taken_elsewhere = Some(now + self.rest);
                }
            }
        }
        Err(std::io::Error::other(
            "RTP ports in the range are held by another process",
        ))
    }
}
